"""The corpus pipeline: raw files -> filtered, deduplicated, PII-scrubbed TFDS dataset + report.

    python -m llm.data.clean.pipeline --config=configs/corpus.py --config.inputs='raw/*.jsonl.gz' \\
        --config.output=runs/corpus

Stages (names as in the report):
  1. per file, in parallel: read -> rules (language, gopher_repetition, gopher_quality, c4,
     fineweb, bad_words) -> keys for deduplication (exact hash, MinHash bands, line hashes)
  2. global: ``exact_dedup`` (keep the smallest id of each normalised-text hash),
     ``near_dedup`` (MinHash LSH clusters keep their smallest id), then C4-style repeated
     lines (a line already in a document with a smaller id is removed; a document left
     empty is dropped as ``line_dedup_empty``)
  3. per document: PII scrubbing, identity-term counts, train/validation split by hash
  4. shards ``clean/{split}-NNNNN-of-NNNNN.jsonl.gz`` (sorted by id), the TFDS dataset
     ``tfds/clean_corpus/<name>/<version>`` that train.py reads as ``tfds:<that dir>``, and
     ``report/report.{json,md}`` with plots.

The same stage functions (``llm.data.clean.stages``) run in-process here and on Apache Beam
(``llm.data.clean.beam``);
every global decision is "smallest id wins", so both give identical output.

Nothing is done twice: each file's stage-1 result is cached under ``cache/`` by its path,
size, modification time, the rules' config and a hash of this code, and a run whose inputs
and config match the finished run in ``output`` returns at once. Document ids depend only on
their own file (``llm.data.clean.document.Doc``), so cached results stay valid when files are
added, removed or renamed around them.

The output folder holds exactly one run. A run that is not up to date first removes
``DONE`` and everything the previous run wrote there (except the cache and a TFDS dataset it
may reuse), so nothing stale sits beside the new ``DONE``. Outputs are written to temporary
names and renamed, temporary files are removed on failure (and swept at the next start after
a kill), and ``DONE`` is written last: an interrupted run never leaves a dataset that looks
complete.

Every input is checked before any work (files exist, are readable, have a known format and
do not lie inside the output folder); user mistakes raise ``CorpusInputError``, which the
command line prints as one message.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from typing import Any, Iterable, Iterator, Sequence

import xxhash

from llm.data.clean import dedup, readers, rules
from llm.data.clean.document import CorpusInputError, DocOutcome, FileStats
from llm.data.clean.stages import (  # noqa: F401  (re-exported as the pipeline's names)
    DEDUP_STAGES, PIPELINE_VERSION, PREVIEW_CHARS, SPLITS, RUNNERS, DedupConfig, PipelineConfig,
    stages, Item, FileProcessor, drop, _survivors, is_validation, shard_of, finalize, TMP_MARK,
    _atomic_write_jsonl_gz, _remove, write_shards)

# -------------------------------------------------------------------- fingerprints


def config_dict(cfg: Any) -> Any:
  """JSON-able form of a config dataclass (or plain value)."""
  return json.loads(json.dumps(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else cfg, default=str))


@functools.lru_cache(maxsize=64)
def _hash_files(stamped: tuple[tuple[str, int, int], ...]) -> str:
  """Content hash of files given as (path, size, mtime_ns): cached while none changes."""
  h = hashlib.sha256()
  for p, _, _ in stamped:
    h.update(p.encode() + b'\0')
    with open(p, 'rb') as f:
      h.update(f.read())
  return h.hexdigest()[:16]


def code_and_data_hash(cfg: PipelineConfig) -> str:
  """Hash of what decides the output besides the config: the pipeline's own source files,
  the identity-term lists and the bad-words list. Editing a rule or a word list therefore
  invalidates the caches instead of silently reusing results of the old code."""
  from llm.data.clean.audit import DEFAULT_LISTS_DIR  # pylint: disable=import-outside-toplevel
  here = os.path.dirname(os.path.abspath(__file__))
  files = sorted(glob.glob(os.path.join(here, '*.py')))
  files += sorted(glob.glob(os.path.join(cfg.identity_terms_dir or DEFAULT_LISTS_DIR, '*.txt')))
  if cfg.rules.bad_words.enabled:
    files.append(cfg.rules.bad_words.words_file or rules.default_badwords_file())
  stamped = []
  for f in files:
    if os.path.isfile(f):
      st = os.stat(f)
      stamped.append((os.path.abspath(f), st.st_size, st.st_mtime_ns))
  return _hash_files(tuple(stamped))


def _file_key(path: str, cfg: PipelineConfig) -> str:
  """Cache key of one file's stage-1 result: everything that result depends on.

  The path as listed is part of it because it starts every document id in the result; the
  absolute path, size and modification time stand for the file's content."""
  st = os.stat(path)
  cfg_part = {k: config_dict(getattr(cfg, k)) for k in ('reader', 'rules', 'dedup', 'identity_terms_dir', 'all_rules')}
  blob = json.dumps([PIPELINE_VERSION, code_and_data_hash(cfg), path, os.path.abspath(path), st.st_size,
                     st.st_mtime_ns, cfg_part], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:24]


def run_fingerprint(files: Sequence[str], cfg: PipelineConfig) -> str:
  d = config_dict(cfg)
  d.pop('output'), d.pop('workers'), d.pop('inputs')
  parts = [PIPELINE_VERSION, code_and_data_hash(cfg), d]
  for p in files:
    st = os.stat(p)
    parts.append([p, os.path.abspath(p), st.st_size, st.st_mtime_ns])
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------- the runner

_WORKER: FileProcessor | None = None


def _init_worker(cfg: PipelineConfig) -> None:
  global _WORKER
  _WORKER = FileProcessor(cfg)


def _cached_process(args: tuple[str, str | None]):
  import pickle  # pylint: disable=import-outside-toplevel
  path, cache_path = args
  if cache_path and os.path.exists(cache_path):
    try:
      with gzip.open(cache_path, 'rb') as f:
        return pickle.load(f)
    except Exception:  # pylint: disable=broad-except  (unreadable cache entry: recompute it)
      _remove(cache_path)
  res = _WORKER.process_file(path)
  if cache_path:
    tmp = f'{cache_path}{TMP_MARK}{os.getpid()}'
    try:
      with gzip.open(tmp, 'wb', compresslevel=1) as f:
        pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)
      os.replace(tmp, cache_path)
    finally:
      _remove(tmp)
  return res


def stage1(files: Sequence[str], cfg: PipelineConfig, cache_dir: str | None) -> Iterator[tuple[FileStats, list[DocOutcome], list[Item]]]:
  """Per-file results in file order (parallel over files when workers > 1)."""
  jobs = [(p, os.path.join(cache_dir, _file_key(p, cfg) + '.pkl.gz') if cache_dir else None) for p in files]
  workers = cfg.workers or os.cpu_count() or 1
  workers = min(workers, len(files))
  if workers <= 1:
    _init_worker(cfg)
    yield from map(_cached_process, jobs)
    return
  ctx = mp.get_context('forkserver' if sys.platform != 'win32' else 'spawn')
  with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
    yield from pool.imap(_cached_process, jobs)


def _run_local(cfg: PipelineConfig, files: Sequence[str], clean_dir: str, cache_dir: str,
               timing: dict[str, float], log) -> tuple[Any, list[DocOutcome]]:
  """Stages 1-4 (up to the clean shards) in this process and a pool of workers."""
  from llm.data.clean.audit import TermCounter  # pylint: disable=import-outside-toplevel
  from llm.data.clean.report import ReportAccumulator  # pylint: disable=import-outside-toplevel

  acc = ReportAccumulator(stages=stages(cfg), rules=rules.RuleChain(cfg.rules).names,
                          examples_per_rule=cfg.examples_per_rule)
  # Stage 1.
  t = time.time()
  outcomes: list[DocOutcome] = []
  items: list[Item] = []
  for stats, outs, its in stage1(files, cfg, cache_dir):
    acc.add_file_stats(stats)
    outcomes.extend(outs)
    items.extend(its)
  timing['read_and_rules_s'] = time.time() - t
  log(f'stage 1: {len(outcomes)} documents from {len(files)} files, {len(items)} pass the rules '
      f'({timing["read_and_rules_s"]:.1f} s)')

  # Stage 2: exact, then near duplicates, then repeated lines.
  t = time.time()
  if cfg.dedup.exact:
    items = _survivors(items, dedup.exact_duplicates((it.outcome.id, it.exact) for it in items),
                       'exact_dedup', 'exact_duplicate')
  if cfg.dedup.near:
    items = _survivors(items, dedup.near_duplicates((it.outcome.id, it.bands) for it in items),
                       'near_dedup', 'minhash_cluster')
  owners = dedup.first_owners((it.outcome.id, it.lines) for it in items) if cfg.dedup.lines else None
  timing['dedup_s'] = time.time() - t

  # Stage 3.
  t = time.time()
  terms = TermCounter(cfg.identity_terms_dir or None)
  final: list[tuple[str, str, str, str]] = []
  for it in items:
    o, text = finalize(it, owners, cfg, terms)
    if text is not None:
      final.append((o.split, o.id, text, it.url))
  for o in outcomes:
    acc.add(o)
  timing['finalize_s'] = time.time() - t
  t = time.time()
  write_shards(clean_dir, final, cfg)
  timing['write_shards_s'] = time.time() - t
  return acc, outcomes


def check_inputs(files: Sequence[str], cfg: PipelineConfig) -> None:
  """Every mistake in the inputs and output, found before any work, reported at once.

  Raises:
    CorpusInputError: the runner is unknown, the output is a file, or an input has an
      unknown format, cannot be read, or lies inside the output folder (a rerun would read
      the previous run's output as input).
  """
  if cfg.runner not in RUNNERS:
    raise CorpusInputError(f'--config.runner={cfg.runner!r} is not one of {RUNNERS}')
  out = os.path.abspath(cfg.output)
  if os.path.exists(out) and not os.path.isdir(out):
    raise CorpusInputError(f'--config.output={cfg.output!r} is a file, not a folder; pass a folder '
                           '(it is created if missing), e.g. --config.output=runs/corpus')
  problems = []
  if cfg.reader.format == 'auto':
    unknown = []
    for p in files:
      try:
        readers.detect_format(p)
      except CorpusInputError:
        unknown.append(p)
    if unknown:
      exts = sorted({os.path.splitext(p[:-3] if p.lower().endswith('.gz') else p)[1] or '(none)' for p in unknown})
      known = ', '.join(sorted({e for e, _ in readers._EXTENSIONS}))  # pylint: disable=protected-access
      problems.append(f'{len(unknown)} input file(s) with an extension of unknown format ({", ".join(exts)}): '
                      f'{_some(unknown)}; known: {known}, each optionally .gz. Narrow --config.inputs, or '
                      f'pass --config.reader.format= one of {", ".join(readers.FORMATS)} to read every input '
                      'in that format')
  unreadable = [p for p in files if not os.access(p, os.R_OK)]
  if unreadable:
    problems.append(f'{len(unreadable)} input file(s) cannot be read (permissions): {_some(unreadable)}')
  inside = [p for p in files if os.path.abspath(p).startswith(out + os.sep)]
  if inside:
    problems.append(f'{len(inside)} input file(s) lie inside the output folder {cfg.output!r}, so a run would '
                    f'read its own output: {_some(inside)}; narrow --config.inputs or choose another '
                    '--config.output')
  if problems:
    raise CorpusInputError('; '.join(problems) if len(problems) == 1 else
                           'problems with the inputs:\n' + '\n'.join(f'  - {p}' for p in problems))


def _some(paths: Sequence[str], n: int = 5) -> str:
  shown = ', '.join(repr(p) for p in paths[:n])
  return shown + (f' and {len(paths) - n} more' if len(paths) > n else '')


def _tfds_target(cfg: PipelineConfig) -> str:
  from llm.data.clean import tfds_builder  # pylint: disable=import-outside-toplevel
  return tfds_builder.dataset_dir(os.path.join(cfg.output, 'tfds'), cfg.name, cfg.version)


def _up_to_date(cfg: PipelineConfig, done: dict | None, fingerprint: str) -> bool:
  """The finished run in ``cfg.output`` is this run, and its outputs are all still there."""
  if not done or done.get('fingerprint') != fingerprint:
    return False
  needed = [os.path.join(cfg.output, 'report', 'report.json'), os.path.join(cfg.output, 'clean')]
  if done.get('tfds_dir'):
    needed.append(os.path.join(done['tfds_dir'], 'dataset_info.json'))
  if cfg.write_outcomes:
    needed.append(os.path.join(cfg.output, 'outcomes.jsonl.gz'))
  return all(os.path.exists(p) for p in needed)


def _clear_previous_run(cfg: PipelineConfig) -> None:
  """Removes what an earlier run left in ``cfg.output``, so nothing stale survives beside the
  new DONE: its outcomes, shards, report and TFDS datasets (all but the one this run may
  reuse, which is rebuilt unless it was built from identical shards), and temporary files
  of runs that were killed. The per-file cache stays (its keys say when an entry is valid).
  Call after DONE is removed."""
  out = cfg.output
  for name in ('outcomes.jsonl.gz', 'clean', 'report'):
    _remove(os.path.join(out, name))
  tfds_root = os.path.join(out, 'tfds')
  keep = os.path.abspath(_tfds_target(cfg)) if cfg.write_tfds else None
  if not keep:
    _remove(tfds_root)
  elif os.path.isdir(tfds_root):
    for dirpath, dirnames, _ in os.walk(tfds_root, topdown=True):
      for d in list(dirnames):
        full = os.path.abspath(os.path.join(dirpath, d))
        if keep and full == keep:
          dirnames.remove(d)  # kept whole
        elif keep and keep.startswith(full + os.sep) and TMP_MARK not in d:
          continue  # an ancestor of the kept dataset: descend and prune its other entries
        else:
          _remove(full)
          dirnames.remove(d)
  for folder in (out, os.path.join(out, 'cache')):
    if os.path.isdir(folder):
      for name in os.listdir(folder):
        if TMP_MARK in name or name.endswith('.tmp') or name.startswith('beam_'):
          _remove(os.path.join(folder, name))


def run(cfg: PipelineConfig, log=print) -> dict:
  """Runs the whole pipeline (``cfg.runner``); returns the report summary (report.json).

  Raises:
    CorpusInputError: a mistake in the inputs, output or config (nothing has been done).
  """
  from llm.data.clean.report import write_report  # pylint: disable=import-outside-toplevel

  t0 = time.time()
  files = readers.list_files(cfg.inputs)
  check_inputs(files, cfg)
  try:
    os.makedirs(cfg.output, exist_ok=True)
  except OSError as e:
    raise CorpusInputError(f'cannot create the output folder --config.output={cfg.output!r}: '
                           f'{e.strerror or e}') from e
  fingerprint = run_fingerprint(files, cfg)
  done_path = os.path.join(cfg.output, 'DONE')
  done = None
  if os.path.exists(done_path):
    try:
      with open(done_path) as f:
        done = json.load(f)
    except ValueError:
      done = None
  if _up_to_date(cfg, done, fingerprint):
    log(f'{cfg.output} is up to date (fingerprint {fingerprint}); nothing to do.')
    with open(os.path.join(cfg.output, 'report', 'report.json')) as f:
      return json.load(f)
  _remove(done_path)  # outputs below are about to change: no longer complete
  _clear_previous_run(cfg)
  cache_dir = os.path.join(cfg.output, 'cache')
  os.makedirs(cache_dir, exist_ok=True)
  clean_dir = os.path.join(cfg.output, 'clean')
  timing: dict[str, float] = {}
  if cfg.runner == 'beam':
    from llm.data.clean import beam  # pylint: disable=import-outside-toplevel
    t = time.time()
    acc, outcomes = beam.run_beam(cfg, files, clean_dir, cache_dir)
    timing['beam_s'] = time.time() - t
  else:
    acc, outcomes = _run_local(cfg, files, clean_dir, cache_dir, timing, log)
  docs_in = acc.docs_in
  splits = {s: acc.splits.get(s, 0) for s in SPLITS}
  t = time.time()
  if cfg.write_outcomes:
    _atomic_write_jsonl_gz(os.path.join(cfg.output, 'outcomes.jsonl.gz'),
                           (o.to_json() for o in sorted(outcomes, key=lambda o: o.id)))
  tfds_dir, notes = '', []
  if not sum(splits.values()):
    notes.append(f'Nothing to train on: all {docs_in:,} input documents were removed '
                 f'({_top_removals(acc)}); no dataset was written.' if docs_in else
                 'Nothing to train on: the inputs hold no documents; no dataset was written.')
  else:
    if not splits['validation']:
      notes.append(f'The validation split is empty: none of the {splits["train"]:,} kept documents falls in '
                   f'it at --config.val_fraction={cfg.val_fraction}. train.py then holds out '
                   '--config.data.val_fraction of the training documents itself; raise '
                   '--config.val_fraction to fix the split here.')
    if not splits['train']:
      notes.append(f'The train split is empty: all {splits["validation"]:,} kept documents fall in the '
                   f'validation split (--config.val_fraction={cfg.val_fraction}); nothing to train on.')
    if cfg.write_tfds:
      from llm.data.clean import tfds_builder  # pylint: disable=import-outside-toplevel
      tfds_dir = tfds_builder.prepare(clean_dir, os.path.join(cfg.output, 'tfds'), cfg.name, cfg.version,
                                      description=f'llm corpus pipeline, fingerprint {fingerprint}',
                                      splits=[s for s in SPLITS if splits[s]])
  timing['write_s'] = time.time() - t
  timing['total_s'] = time.time() - t0
  timing['docs_per_s'] = docs_in / max(timing['total_s'], 1e-9)
  output = {'splits': splits, 'tfds_dir': tfds_dir, 'notes': notes}
  summary = write_report(acc, os.path.join(cfg.output, 'report'), config=config_dict(cfg), timing=timing,
                         output=output)
  tmp = done_path + TMP_MARK + str(os.getpid())
  with open(tmp, 'w') as f:
    json.dump({'fingerprint': fingerprint, 'tfds_dir': tfds_dir, 'docs_in': docs_in,
               'docs_out': summary['totals']['docs_out'], 'splits': splits, 'notes': notes}, f, indent=1)
  os.replace(tmp, done_path)
  for n in notes:
    log(n)
  log(f'done: {summary["totals"]["docs_out"]} of {docs_in} documents kept ({splits["train"]} train, '
      f'{splits["validation"]} validation) in {timing["total_s"]:.1f} s ({timing["docs_per_s"]:.0f} docs/s); '
      f'report {cfg.output}/report/report.md'
      + (f'; train.py reads it with --config.data.sources=tfds:{tfds_dir}' if tfds_dir else ''))
  return summary


def _top_removals(acc) -> str:
  removed = sorted(((v[0], k) for k, v in acc.removed.items() if v[0]), reverse=True)
  return ', '.join(f'{n:,} by {stage}' for n, stage in removed[:4]) or 'none kept'


# ------------------------------------------------------------------ configuration


def _build(cls, value: Any, where: str):
  """A (nested) frozen dataclass from a dict / ConfigDict; unknown keys are an error."""
  if not dataclasses.is_dataclass(cls):
    return value
  value = dict(value)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(value) - set(fields))
  if unknown:
    raise CorpusInputError(f'unknown {where} setting(s) {unknown}; known: {sorted(fields)}')
  kwargs = {}
  hints = __import__('typing').get_type_hints(cls)
  for name, v in value.items():
    t = hints[name]
    if dataclasses.is_dataclass(t):
      kwargs[name] = _build(t, v, f'{where}.{name}')
    elif isinstance(v, list) or (getattr(t, '__origin__', None) is tuple and not isinstance(v, str)):
      kwargs[name] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
    else:
      kwargs[name] = v
  return cls(**kwargs)


def from_config(cd: Any) -> PipelineConfig:
  """PipelineConfig from the ml_collections ConfigDict of configs/corpus.py."""
  d = cd.to_dict() if hasattr(cd, 'to_dict') else dict(cd)
  if not d.get('inputs'):
    raise CorpusInputError('--config.inputs is empty: pass --config.inputs="raw/*.jsonl.gz" (comma-separated globs)')
  if not d.get('output'):
    raise CorpusInputError('--config.output is empty: pass --config.output=runs/corpus')
  return _build(PipelineConfig, d, 'config')


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    run(from_config(_CONFIG.value))
  except CorpusInputError as e:  # a user mistake: one message, no traceback
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  from absl import app  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  _CONFIG = config_flags.DEFINE_config_file('config', 'configs/corpus.py', 'corpus pipeline config',
                                            lock_config=True)
  app.run(main)
