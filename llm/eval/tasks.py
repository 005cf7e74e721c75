r"""Evaluation tasks declared in lm-evaluation-harness's YAML vocabulary, on local data.

A task file is a harness task YAML whose data are local JSONL / CSV / TSV files::

    task: arc_local
    dataset_path: json                      # or csv; TSV is csv with delimiter "\t"
    dataset_kwargs:
      data_files: {train: train.jsonl, test: test.jsonl}   # relative to this file's folder
    training_split: train
    test_split: test
    output_type: multiple_choice
    doc_to_text: "Question: {{question}}\nAnswer:"
    doc_to_target: label                    # a field, a Jinja2 template, a list or !function
    doc_to_choice: "{{choices}}"
    metadata: {version: 1.0, breakdown: category}   # breakdown: our per-field sub-scores

``load_task(path).build_requests()`` gives the very (context, continuation) pairs the harness's
``ConfigurableTask`` builds for the same file (plain text, no chat template), with few-shot
examples drawn as its ``ContextSampler`` draws them; ``evaluate_task`` scores and aggregates
as its evaluator does (see ``llm/eval/metrics.py``). ``tests/test_eval_tasks.py`` checks the
three against the installed harness. Harness behaviour kept on purpose, though surprising:

- The evaluated doc is kept out of its own few-shot examples only when the few-shot split
  *equals test_split* (then ``num_fewshot + 1`` docs are drawn and the doc removed). With a
  test split and no fewshot_split, examples come from training, else validation, else test;
  so a test-only task may show a doc its own answer. With no test_split and no
  fewshot_split, ``None == None`` and the draw is ``num_fewshot + 1`` even from training.
- One ``random.Random(seed)`` serves all docs in order, so a doc's examples depend on the
  docs before it (``limit`` keeps a prefix, so its prompts match the full run's).
- ``description`` is a template rendered per doc and joined to the first example with
  nothing between; a few-shot example is ``text + target_delimiter + answer +
  fewshot_delimiter``; an example whose target is "" gets neither delimiter.
- ``loglikelihood`` continuations are ``doc_to_target`` as is (no target_delimiter);
  ``multiple_choice`` ones are ``target_delimiter + choice``.
- A template that renders digits becomes an int when ``doc_to_choice`` is set; an int
  ``doc_to_text`` means WinoGrande-style partial scoring (the choices are contexts, the gold
  is that int, and acc_norm divides by the *context* lengths).
- ``num_fewshot: 0`` written in the file is never overridden by the caller's num_fewshot.
- Tasks are evaluated on test_split, else validation_split; the harness refuses a task with
  only training_split, and so does this module.
- The harness hands relative ``data_files`` to ``datasets``, which reads them from the
  working directory; here they are relative to the task file, so run the harness from the
  task's folder (or write absolute paths) to make it read the same files.

Data are read without ``datasets`` but typed as ``datasets`` would type them, because the
prompt depends on it: JSON columns missing from a row are None and a column mixing ints and
floats is all floats; CSV columns are int / float / bool / str as pandas infers them, the
cells pandas reads as missing ("", "NA", "N/A", "None", "null", "nan", ...) are None, and a
blank header cell is the column "Unnamed: <i>" (so `doc_to_text: ""` stays a template).
"""

from __future__ import annotations

import ast
import copy
import csv
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jinja2
import jinja2.meta
import numpy as np
import yaml

from llm.eval import metrics as M

log = logging.getLogger(__name__)


class TaskError(ValueError):
  """A task file, its data or its functions are wrong; the message says where and how to fix."""


OUTPUT_TYPES = ('loglikelihood', 'multiple_choice', 'loglikelihood_rolling', 'generate_until')

# The task-file keys this module understands (a subset of the harness's TaskConfig).
TASK_KEYS: dict[str, str] = {
    'task': 'the task name (required)',
    'task_alias': 'the name shown in results (default: task)',
    'tag': 'a tag or a list of tags',
    'include': 'a base task file (relative path) whose keys this file overrides',
    'dataset_path': '"json" (JSON lines) or "csv" (CSV, or TSV with a delimiter)',
    'dataset_kwargs': '{data_files: {<split>: <path>}, delimiter: "\\t"}',
    'training_split': 'split of data_files to draw few-shot examples from',
    'validation_split': 'split evaluated when there is no test_split',
    'test_split': 'split evaluated',
    'fewshot_split': 'split to draw few-shot examples from (default: training, validation, test)',
    'process_docs': '!function taking and returning a split\'s docs',
    'output_type': ' / '.join(OUTPUT_TYPES),
    'doc_to_text': 'the prompt: a field, a Jinja2 template or !function',
    'doc_to_target': 'the answer: a field, a template, a list or !function',
    'doc_to_choice': 'the choices: a field, a template rendering a list, a list or !function',
    'target_delimiter': 'between prompt and answer (default " ")',
    'fewshot_delimiter': 'after each few-shot example (default "\\n\\n")',
    'num_fewshot': 'few-shot examples per prompt (default 0)',
    'fewshot_config': '{sampler: default | first_n, split, samples, doc_to_*, *_delimiter}',
    'description': 'a template rendered before the examples',
    'generation_kwargs': '{until, max_gen_toks, temperature, do_sample, top_k, top_p}',
    'metric_list': 'a list of {metric, aggregation, higher_is_better}',
    'process_results': '!function (doc, results) -> {metric: value}',
    'repeats': 'must be 1',
    'metadata': 'a free dict; we read version and breakdown (a field to score by value)',
}
# Harness keys we refuse with a reason rather than as unknown.
_REFUSED_KEYS = {
    'doc_to_decontamination_query': 'decontamination is not supported',
    'should_decontaminate': 'decontamination is not supported',
    'filter_list': 'answer filters are not supported; extract the answer in process_results',
    'gen_prefix': 'gen_prefix is not supported',
    'use_prompt': 'promptsource prompts are not supported',
    'dataset_name': 'data are local files; remove dataset_name',
    'custom_dataset': 'data are local files named in dataset_kwargs.data_files',
}
FEWSHOT_CONFIG_KEYS = ('sampler', 'split', 'samples', 'doc_to_text', 'doc_to_target',
                       'doc_to_choice', 'target_delimiter', 'fewshot_delimiter')
SAMPLERS = ('default', 'first_n')
GENERATION_KEYS = ('until', 'max_gen_toks', 'temperature', 'do_sample', 'top_k', 'top_p')
DATASET_KWARGS_KEYS = ('data_files', 'delimiter', 'sep')
DEFAULT_MAX_GEN_TOKS = 256  # the harness's default when generation_kwargs is absent


# ---------------------------------------------------------------------------------------------
# The LM interface and the request / result records.
# ---------------------------------------------------------------------------------------------


class LM(Protocol):
  """What a task needs from a model: the harness LM's three request kinds, on plain tuples."""

  def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    """(context, continuation) -> (sum log p(continuation | context), continuation is greedy)."""
    ...

  def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
    """text -> sum log p(text), over as many windows as the text needs."""
    ...

  def generate_until(self, requests: list[tuple[str, dict]]) -> list[str]:
    """(context, generation_kwargs) -> generation, already cut at the first `until` string.

    generation_kwargs always holds ``until`` (a list); the rest is as the task file wrote it
    (absent keys take the harness model's defaults: max_gen_toks 256, greedy decoding).
    """
    ...


@dataclasses.dataclass(frozen=True)
class Request:
  """One LM call, like the harness's Instance: ``args`` goes to ``LM.<kind>``."""
  doc_id: int  # index of the doc in Task.docs()
  index: int  # position among this doc's requests (a choice, for multiple_choice)
  kind: str  # 'loglikelihood', 'loglikelihood_rolling' or 'generate_until'
  args: tuple  # (context, continuation) / (text,) / (context, generation_kwargs)


@dataclasses.dataclass
class TaskResult:
  """A task's scores, per-example records and config, ready for eval_results.json."""
  name: str
  num_fewshot: int
  n: int  # docs scored
  metrics: dict[str, float]
  stderrs: dict[str, float | None]  # None where the harness writes "N/A"
  higher_is_better: dict[str, bool | None]
  # Per doc: doc_id, doc, prompt (first request's context), arguments, target, prediction, gold,
  # metrics, and the answers: loglikelihood(s) + is_greedy, or generation (JSON-safe).
  samples: list[dict]
  config: dict
  subtasks: list[TaskResult] = dataclasses.field(default_factory=list)  # metadata.breakdown

  def results_entry(self) -> dict[str, Any]:
    """The harness's ``results[task]`` layout: {"alias", "acc,none", "acc_stderr,none", ...}."""
    entry: dict[str, Any] = {'name': self.name, 'alias': self.config.get('task_alias', self.name),
                             'sample_len': self.n}
    for metric, value in self.metrics.items():
      entry[f'{metric},none'] = value
      se = self.stderrs.get(metric)
      entry[f'{metric}_stderr,none'] = 'N/A' if se is None else se
    return entry


# ---------------------------------------------------------------------------------------------
# YAML with `!function`, as the harness loads it.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _FunctionRef:
  """A `!function` left unresolved (discover only reads task names)."""
  spec: str


_MODULES: dict[tuple[str, int], Any] = {}  # (resolved path, mtime_ns) -> module


def _load_module(path: Path, where: str) -> Any:
  key = (str(path), path.stat().st_mtime_ns)
  if key in _MODULES:
    return _MODULES[key]
  digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
  name = f'_llm_eval_task_fns.{path.stem}_{digest}'
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  # Registered before running so dataclasses/pickle inside the module can find it.
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    del sys.modules[name]
    raise TaskError(f'{where}: importing {path} failed: {type(e).__name__}: {e}. '
                    'Fix that module.') from e
  _MODULES[key] = module
  return module


def _import_function(spec: str, yaml_path: Path, line: int) -> Callable:
  """``module.fn`` from ``module.py`` beside the task file, else an importable module."""
  where = f'{yaml_path}:{line}'
  module_name, _, fn_name = spec.rpartition('.')
  if not module_name or not fn_name:
    raise TaskError(f'{where}: `!function {spec}` names no module; write `!function '
                    f'utils.{spec or "fn"}` for a function in utils.py beside the task file.')
  local = (yaml_path.parent / f'{module_name.replace(".", "/")}.py').resolve()
  if local.exists():
    module, origin = _load_module(local, where), str(local)
  else:
    try:
      module, origin = importlib.import_module(module_name), f'module {module_name!r}'
    except ImportError as e:
      raise TaskError(f'{where}: `!function {spec}`: there is no {local} beside the task file '
                      f'and no importable module {module_name!r} ({e}). Create {local.name} '
                      'next to the task file or fix the name.') from e
  fn = getattr(module, fn_name, None)
  if not callable(fn):
    defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith('_'))
    raise TaskError(f'{where}: `!function {spec}`: {origin} has no function {fn_name!r} '
                    f'(it defines {defined}). Fix the name or define it there.')
  return fn


def _yaml_loader(yaml_path: Path, resolve: bool) -> type:
  base = getattr(yaml, 'CSafeLoader', yaml.SafeLoader)

  class Loader(base):  # a fresh class per file: the constructor knows the file's folder
    pass

  def construct(loader: Any, node: yaml.Node) -> Any:
    spec = loader.construct_scalar(node).strip()
    if not resolve:
      return _FunctionRef(spec)
    return _import_function(spec, yaml_path, node.start_mark.line + 1)

  Loader.add_constructor('!function', construct)
  return Loader


def _load_yaml(path: Path, resolve: bool, seen: tuple[Path, ...] = ()) -> dict:
  """A task file's dict, `include` merged (the including file's keys win), as the harness."""
  path = path.expanduser().resolve()
  if path in seen:
    raise TaskError(f'{path}: include cycle through {[str(p) for p in seen]}; remove one include.')
  if not path.is_file():
    raise TaskError(f'{path}: no such task file.' if not seen else
                    f'{seen[-1]}: include {path} does not exist (relative to the including '
                    'file\'s folder).')
  try:
    with path.open('rb') as f:
      cfg = yaml.load(f, Loader=_yaml_loader(path, resolve))  # noqa: S506 (safe loader + !function)
  except yaml.YAMLError as e:
    raise TaskError(f'{path}: not valid YAML: {e}') from e
  if not isinstance(cfg, dict):
    raise TaskError(f'{path}: a task file must be a mapping of keys, got {type(cfg).__name__}.')
  if 'include' not in cfg:
    return cfg
  includes = cfg.pop('include')
  merged: dict = {}
  for inc in includes if isinstance(includes, list) else [includes]:
    inc_path = Path(inc) if Path(inc).is_absolute() else path.parent / inc
    merged.update(_load_yaml(inc_path, resolve, seen + (path,)))
  merged.update(cfg)
  return merged


# ---------------------------------------------------------------------------------------------
# Local data, typed as `datasets` types it.
# ---------------------------------------------------------------------------------------------

# pandas.read_csv's default missing-value strings (keep_default_na=True).
_CSV_NA = frozenset(['', '#N/A', '#N/A N/A', '#NA', '-1.#IND', '-1.#QNAN', '-NaN', '-nan',
                     '1.#IND', '1.#QNAN', '<NA>', 'N/A', 'NA', 'NULL', 'NaN', 'None', 'n/a',
                     'nan', 'null'])
_CSV_TRUE, _CSV_FALSE = frozenset(['True', 'TRUE', 'true']), frozenset(['False', 'FALSE', 'false'])
# pandas parses numbers with blanks around them (the strings keep theirs).
_INT_RE = re.compile(r'[ \t]*[+-]?\d+[ \t]*')
_FLOAT_RE = re.compile(
    r'[ \t]*[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity)[ \t]*', re.IGNORECASE)


def _csv_column(values: list[str]) -> list[Any]:
  """One column's cells typed as pandas would type them (then None for missing, as Arrow)."""
  present = [v for v in values if v not in _CSV_NA]
  missing = len(present) < len(values)
  if present and all(_INT_RE.fullmatch(v) for v in present):
    # pandas has no missing int: a column with a gap becomes float.
    cast: Callable[[str], Any] = float if missing else int
  elif present and all(_FLOAT_RE.fullmatch(v) for v in present):
    cast = float
  elif present and all(v in _CSV_TRUE or v in _CSV_FALSE for v in present):
    cast = lambda v: v in _CSV_TRUE  # noqa: E731
  else:
    cast = str
  return [None if v in _CSV_NA else cast(v) for v in values]


def _pandas_header(names: list[str]) -> list[str]:
  """Column names as pandas gives them: a blank one is "Unnamed: <i>", a repeat gets ".<k>"."""
  out: list[str] = []
  for i, name in enumerate(names):
    name = name or f'Unnamed: {i}'
    base, k = name, 0
    while name in out:
      k += 1
      name = f'{base}.{k}'
    out.append(name)
  return out


def _read_csv(path: Path, delimiter: str, where: str) -> list[dict]:
  with path.open(newline='', encoding='utf-8') as f:
    reader = csv.reader(f, delimiter=delimiter)
    header: list[str] | None = None
    rows: list[list[str]] = []
    try:
      for fields in reader:
        if not fields:  # pandas skips blank lines
          continue
        if header is None:
          header = _pandas_header(fields)
          continue
        if len(fields) != len(header):
          raise TaskError(
              f'{where}: {path}: row {len(rows) + 1} (line {reader.line_num}) has {len(fields)} '
              f'fields but the header has {len(header)} ({header}); quote fields that contain '
              f'the delimiter {delimiter!r} or fix the row.')
        rows.append(fields)
    except csv.Error as e:
      raise TaskError(f'{where}: {path}: row {len(rows) + 1} (line {reader.line_num}) is not '
                      f'valid CSV: {e}. Fix its quoting.') from e
  if header is None:
    return []
  columns = [_csv_column([r[j] for r in rows]) for j in range(len(header))]
  return [dict(zip(header, (col[i] for col in columns))) for i in range(len(rows))]


def _read_json(path: Path, where: str) -> list[dict]:
  text = path.read_text(encoding='utf-8')
  if text.lstrip().startswith('['):  # one JSON array of objects, which `datasets` also reads
    try:
      rows = json.loads(text)
    except json.JSONDecodeError as e:
      raise TaskError(f'{where}: {path}: not valid JSON at line {e.lineno}: {e.msg}.') from e
    numbered = list(enumerate(rows, 1))
  else:
    numbered = []
    for line_no, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      try:
        numbered.append((line_no, json.loads(line)))
      except json.JSONDecodeError as e:
        raise TaskError(f'{where}: {path}: row {line_no} is not valid JSON ({e.msg} at column '
                        f'{e.colno}); each line must hold one JSON object.') from e
  for row_no, row in numbered:
    if not isinstance(row, dict):
      raise TaskError(f'{where}: {path}: row {row_no} is a {type(row).__name__}, not a JSON '
                      'object; each row must be {"field": value, ...}.')
  rows = [row for _, row in numbered]
  # As Arrow: every row has every column (None where absent); ints in a float column are floats.
  columns = list(dict.fromkeys(k for row in rows for k in row))
  floats = {k for row in rows for k, v in row.items() if isinstance(v, float)}
  out = []
  for row in rows:
    full = {k: row.get(k) for k in columns}
    for k in floats:
      if isinstance(full[k], int) and not isinstance(full[k], bool):
        full[k] = float(full[k])
    out.append(full)
  return out


class Docs(list):
  """A split's docs: a list of dicts with the ``datasets.Dataset`` methods process_docs uses."""

  @property
  def column_names(self) -> list[str]:
    """Fields of the docs, in first-seen order."""
    return list(dict.fromkeys(k for doc in self for k in doc))

  def map(self, function: Callable, with_indices: bool = False,
          remove_columns: str | Sequence[str] | None = None, batched: bool = False,
          **_: Any) -> Docs:
    """Row-by-row ``Dataset.map``: the returned dict updates each doc (other kwargs ignored)."""
    if batched:
      raise TaskError('process_docs: Docs.map(batched=True) is not supported; map one doc at a '
                      'time.')
    drop = {remove_columns} if isinstance(remove_columns, str) else set(remove_columns or ())
    out = Docs()
    for i, doc in enumerate(self):
      new = function(dict(doc), i) if with_indices else function(dict(doc))
      merged = {**doc, **(new or {})}
      out.append({k: v for k, v in merged.items() if k not in drop})
    return out

  def filter(self, function: Callable, with_indices: bool = False, **_: Any) -> Docs:
    """Row-by-row ``Dataset.filter``."""
    return Docs(d for i, d in enumerate(self) if (function(d, i) if with_indices else function(d)))


# ---------------------------------------------------------------------------------------------
# Templates: the harness's Jinja2 environment.
# ---------------------------------------------------------------------------------------------


def _regex_replace(s: str, pattern: str, repl: str, count: int = 0) -> str:
  return re.sub(pattern, repl, s, count=count)


_ENV = jinja2.Environment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined,
                          keep_trailing_newline=True)
_ENV.filters['regex_replace'] = _regex_replace


@functools.lru_cache(maxsize=4096)
def _compile(template: str) -> jinja2.Template:
  return _ENV.from_string(template)


def _template_fields(template: str) -> set[str]:
  return jinja2.meta.find_undeclared_variables(_ENV.parse(template)) - set(_ENV.globals)


# ---------------------------------------------------------------------------------------------
# Few-shot sampling: the harness's ContextSampler / FirstNSampler.
# ---------------------------------------------------------------------------------------------


class _Sampler:
  """Draws few-shot docs with one ``random.Random(seed)`` shared by all evaluated docs."""

  def __init__(self, pool: list[dict], kind: str, seed: int | None, where: str):
    self.pool, self.kind, self.rng, self.where = pool, kind, random.Random(seed), where

  def sample(self, n: int, eval_doc: dict | None) -> list[dict]:
    if n == 0:
      return []
    if self.kind == 'first_n':
      pool = [x for x in self.pool if x != eval_doc] if eval_doc is not None else self.pool
      if n > len(pool):
        raise TaskError(f'{self.where}: num_fewshot={n} but the few-shot split has only '
                        f'{len(pool)} docs besides the evaluated one; lower num_fewshot.')
      return pool[:n]
    if not eval_doc:
      return self.rng.sample(self.pool, n)
    # One spare draw so that removing the evaluated doc still leaves n.
    drawn = [x for x in self.rng.sample(self.pool, n + 1) if x != eval_doc][:n]
    if len(drawn) < n:  # the doc had duplicates in the pool: draw again without any copy
      rest = [x for x in self.pool if x != eval_doc]
      if n > len(rest):
        raise TaskError(f'{self.where}: num_fewshot={n} but only {len(rest)} few-shot docs '
                        'differ from the evaluated one; lower num_fewshot or deduplicate.')
      drawn = self.rng.sample(rest, n)
    return drawn


# ---------------------------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
  """``value`` as JSON types; a function becomes its source (as the harness dumps configs)."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return _json_safe(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, _FunctionRef):
    return f'!function {value.spec}'
  if callable(value):
    try:
      return inspect.getsource(value)
    except (TypeError, OSError):
      return str(value)
  if value is None or isinstance(value, (str, int, float, bool)):
    return value
  return str(value)


def _slug(value: Any) -> str:
  return re.sub(r'[^0-9a-z]', '_', str(value).lower())


@dataclasses.dataclass(frozen=True)
class _FewshotConfig:
  sampler: str
  split: str | None
  samples: Any
  doc_to_text: Any
  doc_to_target: Any
  doc_to_choice: Any
  target_delimiter: str
  fewshot_delimiter: str


class Task:
  """A loaded task file: its docs, its prompts and its scoring. Build with ``load_task``."""

  name: str
  output_type: str
  num_fewshot: int
  path: str

  def __init__(self, path: str, cfg: dict, num_fewshot: int | None = None,
               seed: int | None = 1234):
    self.path = str(path)
    self.seed = seed
    self._cfg = cfg
    self._check_keys(cfg)
    name = cfg.get('task')
    if not isinstance(name, str) or not name:
      raise TaskError(f'{path}: key `task` must name the task (a string), got {name!r}.')
    self.name = name
    self.alias = str(cfg.get('task_alias') or name)
    self.output_type = cfg.get('output_type', 'generate_until')  # the harness's default
    if self.output_type not in OUTPUT_TYPES:
      raise TaskError(f'{path}: output_type {self.output_type!r} is unknown; use one of '
                      f'{list(OUTPUT_TYPES)}.')
    for key in ('doc_to_text', 'doc_to_target'):
      if cfg.get(key) is None:
        hint = ' (write doc_to_text: "" for a rolling task)' if key == 'doc_to_text' else ''
        raise TaskError(f'{path}: key `{key}` is required{hint}.')
    if self.output_type == 'multiple_choice' and cfg.get('doc_to_choice') is None:
      raise TaskError(f'{path}: output_type multiple_choice needs `doc_to_choice` (a field, a '
                      'template rendering a list, a list or !function).')
    self.target_delimiter = self._string(cfg, 'target_delimiter', ' ')
    self.fewshot_delimiter = self._string(cfg, 'fewshot_delimiter', '\n\n')
    self.description = cfg.get('description') or ''
    if cfg.get('repeats', 1) != 1:
      raise TaskError(f'{path}: repeats={cfg["repeats"]!r}: only repeats: 1 is supported.')
    for key in ('process_docs', 'process_results'):
      if cfg.get(key) is not None and not callable(cfg[key]):
        raise TaskError(f'{path}: `{key}` must be a `!function module.fn`, got {cfg[key]!r}.')
    self.num_fewshot = self._resolve_num_fewshot(cfg.get('num_fewshot'), num_fewshot)
    self.generation_kwargs = self._generation_kwargs(cfg.get('generation_kwargs'))
    self._parse_metrics(cfg.get('metric_list'))
    metadata = cfg.get('metadata') or {}
    if not isinstance(metadata, dict):
      raise TaskError(f'{path}: metadata must be a mapping, got {metadata!r}.')
    self.breakdown: str | None = metadata.get('breakdown')
    self.version = metadata.get('version')

    self._splits = self._load_splits(cfg)
    self.test_split = cfg.get('test_split')
    self.eval_split = self.test_split or cfg.get('validation_split')
    if self.eval_split is None:
      raise TaskError(f'{path}: set test_split (or validation_split) to the split to evaluate; '
                      'the harness never evaluates training_split.')
    self._docs = self._split_docs(self.eval_split)
    if not self._docs:
      raise TaskError(f'{path}: split {self.eval_split!r} has no docs.')
    self._columns = set(Docs(self._docs).column_names)
    self._fewshot = self._parse_fewshot_config(cfg)
    self._pool, self._exclude_eval_doc = self._fewshot_pool(cfg)

    # As the harness, the first doc decides the shape: an int doc_to_text means the choices
    # are contexts (WinoGrande), a list doc_to_target means several gold answers.
    first = self._docs[0]
    where = self._doc_where(0)
    self.multiple_input = (isinstance(self._text(first, where), int)
                           and cfg.get('doc_to_choice') is not None)
    self.multiple_target = isinstance(self._target(first, where), list)
    if cfg.get('doc_to_choice') is not None:
      self._choice(first, where)
    if self.breakdown is not None and self.breakdown not in self._columns:
      raise TaskError(f'{path}: metadata.breakdown names field {self.breakdown!r}, which the '
                      f'docs of split {self.eval_split!r} lack (fields: {sorted(self._columns)}).')
    self._check_pool_size()

  # ----------------------------------------------------------------------------- config parsing

  def _check_keys(self, cfg: dict) -> None:
    for key in cfg:
      if key in _REFUSED_KEYS:
        raise TaskError(f'{self.path}: key `{key}`: {_REFUSED_KEYS[key]}.')
      if key not in TASK_KEYS:
        known = ', '.join(TASK_KEYS)
        raise TaskError(f'{self.path}: unknown key `{key}`; the known keys are: {known}. '
                        'Fix its spelling or remove it.')

  def _string(self, cfg: dict, key: str, default: str) -> str:
    value = cfg.get(key, default)
    if not isinstance(value, str):
      raise TaskError(f'{self.path}: `{key}` must be a string, got {value!r}.')
    return value

  def _resolve_num_fewshot(self, in_file: Any, requested: int | None) -> int:
    for where, n in (('num_fewshot', in_file), ('the num_fewshot argument', requested)):
      if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise TaskError(f'{self.path}: {where} must be an integer >= 0, got {n!r}.')
    if requested is None:
      return in_file or 0
    if in_file == 0 and requested != 0:
      # The harness treats an explicit 0 in the file as pinned.
      log.warning('%s: num_fewshot is 0 in the task file; ignoring num_fewshot=%d (as the '
                  'harness does).', self.path, requested)
      return 0
    return requested

  def _generation_kwargs(self, given: Any) -> dict:
    if given is None:
      return {'temperature': 0.0, 'do_sample': False, 'max_gen_toks': DEFAULT_MAX_GEN_TOKS,
              'until': [self.fewshot_delimiter]}
    if not isinstance(given, dict):
      raise TaskError(f'{self.path}: generation_kwargs must be a mapping, got {given!r}.')
    for key in given:
      if key not in GENERATION_KEYS:
        raise TaskError(f'{self.path}: generation_kwargs.{key} is unknown; the known keys are '
                        f'{list(GENERATION_KEYS)}.')
    kwargs = copy.deepcopy(given)
    if 'temperature' in kwargs:
      kwargs['temperature'] = float(kwargs['temperature'])
    until = kwargs.get('until', [self.fewshot_delimiter])
    # The harness passes a lone string on and its models wrap it; we wrap it here.
    kwargs['until'] = [until] if isinstance(until, str) else until
    if not isinstance(kwargs['until'], list) or not all(isinstance(u, str) for u in kwargs['until']):
      raise TaskError(f'{self.path}: generation_kwargs.until must be a string or a list of '
                      f'strings, got {until!r}.')
    return kwargs

  def _parse_metrics(self, metric_list: Any) -> None:
    custom = self._cfg.get('process_results') is not None
    self._aggregations: dict[str, str | Callable] = {}
    self.higher_is_better: dict[str, bool | None] = {}
    self._metric_options: dict[str, dict] = {}
    if metric_list is None:
      for name in M.DEFAULT_METRICS[self.output_type]:
        self._aggregations[name] = M.METRICS[name].aggregation
        self.higher_is_better[name] = M.METRICS[name].higher_is_better
        self._metric_options[name] = {}
      return
    if not isinstance(metric_list, list):
      raise TaskError(f'{self.path}: metric_list must be a list of {{metric: ...}} items.')
    valid = M.metrics_for(self.output_type)
    for i, item in enumerate(metric_list):
      where = f'{self.path}: metric_list[{i}]'
      if not isinstance(item, dict) or not isinstance(item.get('metric'), str):
        raise TaskError(f'{where}: each item needs `metric: <name>`, got {item!r}.')
      name = item['metric']
      known = M.METRICS.get(name)
      if not custom and name not in valid:
        raise TaskError(f'{where}: metric {name!r} is not computed for output_type '
                        f'{self.output_type!r}; valid metrics: {valid}. (A process_results '
                        '!function may return any metric.)')
      options = {k: v for k, v in item.items()
                 if k not in ('metric', 'aggregation', 'higher_is_better')}
      allowed = known.options if known and not custom else ()
      for k in options:
        if k not in allowed:
          raise TaskError(f'{where}: key `{k}` is not an option of metric {name!r}; known keys: '
                          f'metric, aggregation, higher_is_better{"".join(", " + a for a in allowed)}.')
      agg = item.get('aggregation', known.aggregation if known else 'mean')
      if not callable(agg) and agg not in M.AGGREGATIONS:
        raise TaskError(f'{where}: aggregation {agg!r} is unknown; use one of '
                        f'{list(M.AGGREGATIONS)} or a !function.')
      hib = item.get('higher_is_better', known.higher_is_better if known else None)
      if hib is not None and not isinstance(hib, bool):
        raise TaskError(f'{where}: higher_is_better must be true or false, got {hib!r}.')
      self._aggregations[name], self.higher_is_better[name] = agg, hib
      self._metric_options[name] = options

  def _mapping(self, cfg: dict, key: str, known) -> dict:
    """cfg[key] as a dict (absent = {}), every sub-key one of ``known``; else TaskError."""
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
      raise TaskError(f'{self.path}: {key} must be a mapping, got {value!r}.')
    for sub in value:
      if sub not in known:
        raise TaskError(f'{self.path}: {key}.{sub} is unknown; the known keys are {list(known)}.')
    return value

  def _parse_fewshot_config(self, cfg: dict) -> _FewshotConfig:
    fs = self._mapping(cfg, 'fewshot_config', FEWSHOT_CONFIG_KEYS)
    sampler = fs.get('sampler', 'default')
    if sampler not in SAMPLERS:
      raise TaskError(f'{self.path}: fewshot_config.sampler {sampler!r} is unknown; use one of '
                      f'{list(SAMPLERS)}.')
    # Unset fields fall back to the task's own (the harness's FewshotConfig.from_dict).
    return _FewshotConfig(
        sampler=sampler,
        split=fs.get('split', cfg.get('fewshot_split')),
        samples=fs.get('samples'),
        doc_to_text=fs.get('doc_to_text', cfg.get('doc_to_text')),
        doc_to_target=fs.get('doc_to_target', cfg.get('doc_to_target')),
        doc_to_choice=fs.get('doc_to_choice', cfg.get('doc_to_choice')),
        target_delimiter=fs.get('target_delimiter', self.target_delimiter),
        fewshot_delimiter=fs.get('fewshot_delimiter', self.fewshot_delimiter))

  # ----------------------------------------------------------------------------- data

  def _load_splits(self, cfg: dict) -> dict[str, list[Path]]:
    fmt = cfg.get('dataset_path')
    if fmt not in ('json', 'csv'):
      raise TaskError(f'{self.path}: dataset_path {fmt!r} is not supported; data are local files: '
                      'use dataset_path: json (JSON lines) or csv (CSV; TSV with '
                      'dataset_kwargs.delimiter: "\\t").')
    self._format = fmt
    kwargs = self._mapping(cfg, 'dataset_kwargs', DATASET_KWARGS_KEYS)
    if fmt == 'json' and ('delimiter' in kwargs or 'sep' in kwargs):
      raise TaskError(f'{self.path}: dataset_kwargs.delimiter is for dataset_path: csv.')
    self._delimiter = kwargs.get('delimiter') or kwargs.get('sep') or ','
    files = kwargs.get('data_files')
    if files is None:
      raise TaskError(f'{self.path}: dataset_kwargs.data_files is required: '
                      '{<split>: <path relative to the task file>}.')
    if not isinstance(files, dict):  # the `datasets` convention: bare files are split "train"
      files = {'train': files}
    base = Path(self.path).resolve().parent
    splits = {}
    for split, paths in files.items():
      paths = [paths] if isinstance(paths, str) else paths
      if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise TaskError(f'{self.path}: dataset_kwargs.data_files.{split} must be a path or a list '
                        f'of paths, got {paths!r}.')
      resolved = []
      for p in paths:
        full = Path(p).expanduser()
        full = full if full.is_absolute() else base / full
        if not full.is_file():
          raise TaskError(f'{self.path}: dataset_kwargs.data_files.{split}: data file {full} does '
                          f'not exist (paths are relative to the task file\'s folder {base}).')
        resolved.append(full)
      splits[str(split)] = resolved
    for key in ('test_split', 'validation_split', 'training_split', 'fewshot_split'):
      if cfg.get(key) is not None and cfg[key] not in splits:
        raise TaskError(f'{self.path}: {key}: {cfg[key]!r} is not a split of '
                        f'dataset_kwargs.data_files (splits: {list(splits)}).')
    self._split_cache: dict[str, list[dict]] = {}
    return splits

  def _split_docs(self, split: str) -> list[dict]:
    """A split's docs after process_docs (read once)."""
    if split not in self._split_cache:
      where = f'{self.path}: split {split!r}'
      rows: list[dict] = []
      for path in self._splits[split]:
        rows += (_read_json(path, where) if self._format == 'json'
                 else _read_csv(path, self._delimiter, where))
      docs = Docs(rows)
      process = self._cfg.get('process_docs')
      if process is not None:
        try:
          docs = process(docs)
        except TaskError:
          raise
        except Exception as e:
          raise TaskError(f'{where}: process_docs failed: {type(e).__name__}: {e}') from e
        docs = Docs(docs)
        for i, d in enumerate(docs):
          if not isinstance(d, dict):
            raise TaskError(f'{where}: process_docs returned a {type(d).__name__} at doc {i}; it '
                            'must return dicts.')
      self._split_cache[split] = docs
    return self._split_cache[split]

  def _fewshot_pool(self, cfg: dict) -> tuple[list[dict], bool]:
    """The docs examples are drawn from, and whether the evaluated doc is kept out of them."""
    fs = self._fewshot
    if fs.split is not None and fs.split not in self._splits:
      raise TaskError(f'{self.path}: fewshot_config.split {fs.split!r} is not a split of '
                      f'dataset_kwargs.data_files (splits: {list(self._splits)}).')
    # The harness compares the few-shot split with test_split, not with the evaluated split.
    exclude = fs.split == self.test_split
    if self.num_fewshot == 0:  # never drawn from, so not read (the harness reads it anyway)
      return [], exclude
    if fs.split is not None:
      pool = self._split_docs(fs.split)
    elif fs.samples is not None:
      pool = fs.samples() if callable(fs.samples) else fs.samples
      if not isinstance(pool, list) or not all(isinstance(d, dict) for d in pool):
        raise TaskError(f'{self.path}: fewshot_config.samples must be a list of docs (dicts) or a '
                        '!function returning one.')
    else:
      split = cfg.get('training_split') or cfg.get('validation_split') or self.test_split
      pool = self._split_docs(split)
    return list(pool), exclude

  def _check_pool_size(self) -> None:
    n = self.num_fewshot
    if n == 0:
      return
    need = n + 1 if self._exclude_eval_doc and self._fewshot.sampler == 'default' else n
    if len(self._pool) < need:
      spare = ' (one more than num_fewshot: the evaluated doc is drawn and dropped)' if need > n else ''
      raise TaskError(f'{self.path}: num_fewshot={n} needs {need} few-shot docs{spare} but the '
                      f'few-shot split has {len(self._pool)}; lower num_fewshot or add docs.')

  # ----------------------------------------------------------------------------- doc_to_*

  def _doc_where(self, doc_id: int) -> str:
    return f'doc {doc_id} of split {self.eval_split!r}'

  def _render(self, key: str, template: str, doc: dict, where: str) -> str:
    try:
      return _compile(template).render(**doc)
    except jinja2.UndefinedError as e:
      missing = sorted(_template_fields(template) - set(doc)) or [str(e)]
      raise TaskError(f'{self.path}: {key} template {template!r} refers to missing field(s) '
                      f'{missing} on {where} (fields: {sorted(doc)}). Fix the template or add '
                      'the field in the data or process_docs.') from e
    except jinja2.TemplateSyntaxError as e:
      raise TaskError(f'{self.path}: {key} template {template!r} is not valid Jinja2: {e}') from e
    except Exception as e:
      raise TaskError(f'{self.path}: {key} template {template!r} failed on {where}: '
                      f'{type(e).__name__}: {e}') from e

  def _call(self, key: str, fn: Callable, doc: dict, where: str) -> Any:
    try:
      return fn(doc)
    except TaskError:
      raise
    except Exception as e:
      raise TaskError(f'{self.path}: {key} (!function {getattr(fn, "__name__", fn)}) failed on '
                      f'{where}: {type(e).__name__}: {e}') from e

  def _has_choices(self) -> bool:
    return self._cfg.get('doc_to_choice') is not None

  def _text(self, doc: dict, where: str, spec: Any = None) -> str | int:
    spec = self._cfg['doc_to_text'] if spec is None else spec
    if isinstance(spec, int):
      return spec
    if isinstance(spec, str):
      if spec in self._columns:
        return doc[spec]
      text = self._render('doc_to_text', spec, doc, where)
      return ast.literal_eval(text) if text.isdigit() and self._has_choices() else text
    if callable(spec):
      return self._call('doc_to_text', spec, doc, where)
    raise TaskError(f'{self.path}: doc_to_text must be a field, a template or !function, got '
                    f'{spec!r}.')

  def _target(self, doc: dict, where: str, spec: Any = None) -> str | int | list:
    spec = self._cfg['doc_to_target'] if spec is None else spec
    if isinstance(spec, (int, list)):
      return spec
    if isinstance(spec, str):
      if spec in self._columns:
        return doc[spec]
      text = self._render('doc_to_target', spec, doc, where)
      if text.isdigit() and self._has_choices():
        return ast.literal_eval(text)
      if len(text) >= 2 and text[0] == '[' and text[-1] == ']':
        try:
          return ast.literal_eval(text)  # a rendered list: several gold answers
        except (SyntaxError, ValueError):
          return text
      return text
    if callable(spec):
      return self._call('doc_to_target', spec, doc, where)
    raise TaskError(f'{self.path}: doc_to_target must be a field, a template, a list or '
                    f'!function, got {spec!r}.')

  def _choice(self, doc: dict, where: str, spec: Any = None) -> list:
    spec = self._cfg['doc_to_choice'] if spec is None else spec
    if isinstance(spec, str):
      if spec in self._columns:
        choices = doc[spec]
      else:
        text = self._render('doc_to_choice', spec, doc, where)
        try:
          choices = ast.literal_eval(text)
        except (SyntaxError, ValueError) as e:
          raise TaskError(f'{self.path}: doc_to_choice template {spec!r} must render a Python '
                          f'list literal (e.g. "{{{{[a, b]}}}}"); on {where} it rendered '
                          f'{text!r}.') from e
    elif isinstance(spec, list):
      choices = spec
    elif isinstance(spec, dict):
      choices = list(spec.values())
    elif callable(spec):
      choices = self._call('doc_to_choice', spec, doc, where)
    else:
      raise TaskError(f'{self.path}: doc_to_choice must be a field, a template, a list or '
                      f'!function, got {spec!r}.')
    if not isinstance(choices, list):
      raise TaskError(f'{self.path}: doc_to_choice gave a {type(choices).__name__} on {where}; it '
                      'must give a list.')
    return choices

  def _description(self, doc: dict, where: str) -> str:
    d = self.description
    if not d:
      return ''
    if callable(d):
      return self._call('description', d, doc, where) or ''
    if d in doc:
      return doc[d] or ''
    return self._render('description', d, doc, where) or ''

  # ----------------------------------------------------------------------------- prompts

  def _example(self, q: Any, c: list | None, a: Any, where: str) -> str:
    """One few-shot example as text: the harness's build_qa_turn, plain-text rendering."""
    if not isinstance(q, str):
      raise TaskError(f'{self.path}: doc_to_text must give a string on {where}, got {q!r}.')
    if a is None or (isinstance(a, str) and a == ''):
      return q  # no answer: no delimiters either
    if c and isinstance(a, int):
      if not -len(c) <= a < len(c):
        raise TaskError(f'{self.path}: doc_to_target gave index {a} on {where} but there are '
                        f'{len(c)} choices.')
      answer = c[a]
    elif isinstance(a, list):
      answer = a[0]  # several golds: the first is shown
    else:
      answer = a
    if not isinstance(answer, str):
      raise TaskError(f'{self.path}: the answer of {where} is {answer!r}, not a string; an int '
                      'doc_to_target needs doc_to_choice.')
    return q + self._fewshot.target_delimiter + answer + self._fewshot.fewshot_delimiter

  def _context(self, doc: dict, doc_id: int, sampler: _Sampler) -> str | list[str]:
    """The prompt for ``doc`` (one per choice for a multiple-input task)."""
    where = self._doc_where(doc_id)
    prefix = self._description(doc, where)
    fs = self._fewshot
    for shot in sampler.sample(self.num_fewshot, doc if self._exclude_eval_doc else None):
      shot_where = f'a few-shot doc ({shot!r:.80})'
      q = self._text(shot, shot_where, fs.doc_to_text)
      c = self._choice(shot, shot_where, fs.doc_to_choice) if fs.doc_to_choice else None
      a = self._target(shot, shot_where, fs.doc_to_target)
      if self.multiple_input:  # the example's text is its gold context
        q, c = c[q], None
      prefix += self._example(q, c, a, shot_where)
    if self.multiple_input:
      return [prefix + ctx for ctx in self._choice(doc, where)]
    q = self._text(doc, where)
    if not isinstance(q, str):
      raise TaskError(f'{self.path}: doc_to_text must give a string on {where}, got {q!r}.')
    return prefix + q

  # ----------------------------------------------------------------------------- public API

  def docs(self) -> list[dict]:
    """The evaluated split's docs, after process_docs."""
    return list(self._docs)

  def config(self) -> dict:
    """The resolved task config, JSON-safe (functions as their source), like the harness's dump."""
    cfg = {k: v for k, v in self._cfg.items() if v is not None}
    cfg.update(
        task=self.name, output_type=self.output_type, num_fewshot=self.num_fewshot,
        target_delimiter=self.target_delimiter, fewshot_delimiter=self.fewshot_delimiter,
        description=self.description, fewshot_seed=self.seed, repeats=1,
        fewshot_config={f.name: getattr(self._fewshot, f.name)
                        for f in dataclasses.fields(self._fewshot)
                        if getattr(self._fewshot, f.name) is not None},
        metric_list=[{'metric': m, 'aggregation': self._aggregations[m],
                      'higher_is_better': self.higher_is_better[m], **self._metric_options[m]}
                     for m in self._aggregations])
    if self.output_type == 'generate_until':
      cfg['generation_kwargs'] = self.generation_kwargs
    return _json_safe(cfg)

  def supervised_pairs(self, split: str | None = None, limit: int = 0) -> list[tuple[str, str]]:
    """(prompt, completion) per doc of ``split`` (default the task's training_split), for fine-tuning.

    The prompt is what the zero-shot evaluation shows (description + doc_to_text) and the
    completion the gold answer as the evaluation scores it (target_delimiter + the gold
    choice, or the first gold target), so a model fine-tuned on these pairs is evaluated
    on exactly the strings it was trained on. ``limit`` > 0 renders only the first docs.
    """
    split = split or self._cfg.get('training_split')
    if split is None:
      raise TaskError(f'{self.path}: no training_split to fine-tune on; name one in the task file or pass a split '
                      f'of dataset_kwargs.data_files ({list(self._splits)}).')
    if split not in self._splits:
      raise TaskError(f'{self.path}: split {split!r} is not in dataset_kwargs.data_files ({list(self._splits)}).')
    if self.multiple_input:
      raise TaskError(f'{self.path}: a task whose choices are contexts (multiple inputs) has no single prompt '
                      'to fine-tune on; cast it as prompt/completion records instead.')
    pairs = []
    docs = self._split_docs(split)
    for i, doc in enumerate(docs[:limit] if limit > 0 else docs):
      where = f'{split} doc {i}'
      prompt = self._description(doc, where) + self._text(doc, where)
      target = self._target(doc, where)
      if self._has_choices():
        choices = self._choice(doc, where)
        if isinstance(target, str) and target in choices:
          target = choices.index(target)
        if not isinstance(target, int) or not -len(choices) <= target < len(choices):
          raise TaskError(f'{self.path}: doc_to_target gave {target!r} on {where}, not a choice index.')
        answer = choices[target]
      else:
        answer = target[0] if isinstance(target, list) else target
      if not isinstance(answer, str):
        raise TaskError(f'{self.path}: the answer of {where} is {answer!r}, not a string.')
      pairs.append((prompt, self.target_delimiter + answer))
    return pairs

  def class_names(self) -> list[str]:
    """The choices every doc shares, by index: the classes of a classifier fine-tuned on this task.

    Raises TaskError for a task without choices or whose choices differ between docs.
    """
    split = self._cfg.get('training_split') or self.eval_split
    docs = self._split_docs(split)
    if not self._has_choices() or not docs:
      raise TaskError(f'{self.path}: a classifier needs a multiple-choice task with fixed choices; this task has '
                      f'{"none" if docs else "no docs"}')
    first = [str(c).strip() for c in self._choice(docs[0], f'{split} doc 0')]
    for i, doc in enumerate(docs[:1000]):
      if [str(c).strip() for c in self._choice(doc, f'{split} doc {i}')] != first:
        raise TaskError(f'{self.path}: the choices of {split} doc {i} differ from doc 0\'s {first}; a classifier '
                        'needs the same classes for every doc')
    return first

  def build_requests(self, limit: int | None = None) -> list[Request]:
    """The LM requests for the first ``limit`` docs, in doc order (sampler seeded afresh)."""
    sampler = _Sampler(self._pool, self._fewshot.sampler, self.seed, self.path)
    requests = []
    docs = self._docs if limit is None else self._docs[:limit]
    for doc_id, doc in enumerate(docs):
      where = self._doc_where(doc_id)
      ctx = self._context(doc, doc_id, sampler)
      if self.output_type == 'multiple_choice':
        delim = self.target_delimiter
        choices = self._choice(doc, where)
        if self.multiple_input:
          target = self._target(doc, where)
          args = [(c, f'{delim}{target}') for c in ctx]
        else:
          args = [(ctx, f'{delim}{choice}') for choice in choices]
        if 'acc_mutual_info' in self._aggregations:  # log p(choice) with no context
          args += [('', f'{delim}{choice}') for choice in choices]
        requests += [Request(doc_id, i, 'loglikelihood', a) for i, a in enumerate(args)]
        continue
      if self.output_type == 'generate_until':
        args = (ctx, copy.deepcopy(self.generation_kwargs))
      else:
        target = self._target(doc, where)
        if not isinstance(target, str):
          raise TaskError(f'{self.path}: doc_to_target must give a string for '
                          f'{self.output_type} on {where}, got {target!r}.')
        args = (ctx, target) if self.output_type == 'loglikelihood' else (target,)
      requests.append(Request(doc_id, 0, self.output_type, args))
    return requests

  def process_results(self, doc: dict, results: list) -> dict[str, Any]:
    """Per-doc metric values from the LM's answers to this doc's requests (in index order)."""
    return self._score(doc, results, 'the doc')[0]

  def _score(self, doc: dict, results: list, where: str) -> tuple[dict[str, Any], dict]:
    """(per-doc metrics, what the sample record shows of the answers)."""
    custom = self._cfg.get('process_results')
    if custom is not None:
      out = self._call_results(custom, doc, results, where)
      return out, {'answers': list(results), 'prediction': None, 'gold': None}
    kind = self.output_type
    if kind == 'loglikelihood':
      ll, greedy = results[0]
      score: Any = M.LoglikelihoodScore(float(ll), bool(greedy))
      shown = {'loglikelihood': float(ll), 'is_greedy': bool(greedy), 'prediction': bool(greedy),
               'gold': self._target(doc, where)}
    elif kind == 'loglikelihood_rolling':
      (ll,) = results
      text = self._target(doc, where)
      score = M.RollingScore(float(ll), len(re.split(r'\s+', text)), len(text.encode('utf-8')))
      shown = {'loglikelihood': float(ll), 'words': score.words, 'bytes': score.bytes,
               'prediction': None, 'gold': None}
    elif kind == 'multiple_choice':
      score = self._choice_scores(doc, results, where)
      shown = {'loglikelihoods': score.lls.tolist(), 'is_greedy': list(score.is_greedy),
               'prediction': int(np.argmax(score.lls)), 'gold': score.gold}
    else:
      score = self._generation_score(doc, results[0], where)
      shown = {'generation': score.prediction, 'prediction': score.prediction, 'gold': score.gold}
    values = {name: M.METRICS[name].compute[kind](score, **self._metric_options[name])
              for name in self._aggregations}
    return values, shown

  def _call_results(self, fn: Callable, doc: dict, results: list, where: str) -> dict:
    try:
      out = fn(doc, results)
    except Exception as e:
      raise TaskError(f'{self.path}: process_results (!function {getattr(fn, "__name__", fn)}) '
                      f'failed on {where}: {type(e).__name__}: {e}') from e
    if not isinstance(out, dict):
      raise TaskError(f'{self.path}: process_results must return {{metric: value}}, got {out!r}.')
    return out

  def _choice_scores(self, doc: dict, results: list, where: str) -> M.ChoiceScores:
    lls, greedy = zip(*results)
    choices = self._choice(doc, where)
    lls_unconditional = None
    if 'acc_mutual_info' in self._aggregations and len(lls) == 2 * len(choices):
      lls, lls_unconditional = lls[:len(choices)], np.array(lls[len(choices):], dtype=float)
    gold = self._text(doc, where) if self.multiple_input else self._target(doc, where)
    # Out-of-range and unknown labels become the harness's -100 (scored wrong, with a warning).
    if isinstance(gold, list):
      gold = [g if g < len(choices) else M.NO_GOLD for g in gold]
      bad = M.NO_GOLD in gold
    else:
      if isinstance(gold, int):
        gold = gold if gold < len(choices) else M.NO_GOLD
      elif isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else M.NO_GOLD
      bad = gold == M.NO_GOLD
    if bad:
      log.warning('%s: the gold label of %s is not among its %d choices; it scores 0.',
                  self.path, where, len(choices))
    return M.ChoiceScores(np.array(lls, dtype=float), tuple(bool(g) for g in greedy[:len(lls)]),
                          [str(c) for c in choices], gold, lls_unconditional)

  def _generation_score(self, doc: dict, result: str, where: str) -> M.GenerationScore:
    gold = self._target(doc, where)
    if self._has_choices():  # doc_to_target is then an index into the choices
      gold = self._choice(doc, where)[gold]
    elif self.multiple_target:
      gold = list(gold)
    elif type(gold) is not type(result) and not isinstance(result, list):
      gold = type(result)(gold)  # the harness casts the gold to the generation's type
    if isinstance(gold, list):
      gold = [str(g) for g in gold]
    return M.GenerationScore(result, gold)

  def aggregate(self, per_doc: list[dict[str, Any]],
                bootstrap_iters: int = 100000) -> dict[str, tuple[float, float | None]]:
    """metric -> (value, stderr or None), over the docs that report that metric.

    ``bootstrap_iters`` (the harness's default, 100000) sets the seeded bootstrap of
    perplexity / median stderrs; 0 skips every stderr, as the harness's does.
    """
    items: dict[str, list] = {}
    for values in per_doc:
      for name, value in values.items():
        items.setdefault(name, []).append(value)
    out = {}
    for name, values in items.items():
      agg = self._aggregations.get(name, 'mean')  # the harness's fallback for unlisted metrics
      fn = agg if callable(agg) else M.AGGREGATIONS[agg]
      value = fn(values)
      value = float(value) if isinstance(value, (int, float, np.number)) else value
      out[name] = (value, M.stderr(agg, values, bootstrap_iters))
    return out

  def __repr__(self) -> str:
    return (f'Task(name={self.name!r}, output_type={self.output_type!r}, '
            f'num_fewshot={self.num_fewshot}, docs={len(self._docs)}, path={self.path!r})')


# ---------------------------------------------------------------------------------------------
# Entry points.
# ---------------------------------------------------------------------------------------------

_SKIP_DIRS = {'__pycache__', '.ipynb_checkpoints'}


def discover(dirs: Sequence[str]) -> dict[str, str]:
  """Task name -> task file, over every *.yaml / *.yml under ``dirs`` that has a ``task`` key."""
  found: dict[str, str] = {}
  for d in dirs:
    root = Path(d)
    if not root.is_dir():
      raise TaskError(f'{d}: not a folder of task files.')
    for path in sorted(root.rglob('*')):
      if path.suffix not in ('.yaml', '.yml') or not path.is_file():
        continue
      if any(part in _SKIP_DIRS or part.startswith('.') for part in path.relative_to(root).parts):
        continue
      name = _load_yaml(path, resolve=False).get('task')
      if not isinstance(name, str):  # a group file or a template meant for `include`
        continue
      if name in found and Path(found[name]).resolve() != path.resolve():
        raise TaskError(f'task {name!r} is defined twice: {found[name]} and {path}; rename one.')
      found.setdefault(name, str(path))
  return found


def load_task(path: str, num_fewshot: int | None = None, seed: int | None = 1234) -> Task:
  """The task in ``path``; ``num_fewshot`` overrides the file's (unless it pins 0).

  ``seed`` seeds the few-shot sampler as the harness's ``fewshot_random_seed`` (default 1234).
  """
  return Task(str(path), _load_yaml(Path(path), resolve=True), num_fewshot=num_fewshot, seed=seed)


def evaluate_task(task: Task, lm: LM, limit: int | None = None,
                  bootstrap_iters: int = 100000) -> TaskResult:
  """Score ``task`` with ``lm``: one LM call per request kind, then per-doc metrics and means."""
  requests = task.build_requests(limit)
  by_kind: dict[str, list[int]] = {}
  for i, r in enumerate(requests):
    by_kind.setdefault(r.kind, []).append(i)
  answers: list[Any] = [None] * len(requests)
  for kind, idx in by_kind.items():
    if kind == 'loglikelihood':
      out = lm.loglikelihood([requests[i].args for i in idx])
    elif kind == 'loglikelihood_rolling':
      out = lm.loglikelihood_rolling([requests[i].args[0] for i in idx])
    else:
      out = lm.generate_until([requests[i].args for i in idx])
    out = list(out)
    if len(out) != len(idx):
      raise ValueError(f'{task.name}: lm.{kind} returned {len(out)} results for {len(idx)} '
                       'requests.')
    for i, a in zip(idx, out):
      answers[i] = a
  per_request: dict[int, list[int]] = {}
  for i, r in enumerate(requests):
    per_request.setdefault(r.doc_id, []).append(i)
  docs = task.docs()
  per_doc, samples = [], []
  for doc_id, idx in per_request.items():
    idx = sorted(idx, key=lambda i: requests[i].index)
    doc = docs[doc_id]
    values, shown = task._score(doc, [answers[i] for i in idx], task._doc_where(doc_id))
    per_doc.append(values)
    samples.append(_json_safe({
        'doc_id': doc_id, 'doc': doc, 'prompt': requests[idx[0]].args[0],
        'arguments': [requests[i].args for i in idx],
        'target': task._target(doc, task._doc_where(doc_id)), **shown, 'metrics': values}))
  config = task.config()
  result = _result(task, task.name, per_doc, samples, config, bootstrap_iters)
  if task.breakdown is not None:
    groups: dict[str, list[int]] = {}
    values_of: dict[str, Any] = {}
    for k, s in enumerate(samples):
      value = docs[s['doc_id']].get(task.breakdown)
      key = _slug(value)
      if key in values_of and values_of[key] != value:
        raise TaskError(f'{task.path}: metadata.breakdown values {values_of[key]!r} and {value!r} '
                        f'both name subtask {task.name}_{key}; make them differ in letters or '
                        'digits.')
      values_of[key] = value
      groups.setdefault(key, []).append(k)
    for key in sorted(groups):
      name = f'{task.name}_{key}'
      ks = groups[key]
      sub_config = {k: v for k, v in config.items() if k != 'task_alias'}
      result.subtasks.append(_result(task, name, [per_doc[k] for k in ks],
                                     [samples[k] for k in ks], {**sub_config, 'task': name},
                                     bootstrap_iters))
  return result


def _result(task: Task, name: str, per_doc: list[dict], samples: list[dict], config: dict,
            bootstrap_iters: int) -> TaskResult:
  agg = task.aggregate(per_doc, bootstrap_iters) if per_doc else {}
  return TaskResult(
      name=name, num_fewshot=task.num_fewshot, n=len(per_doc),
      metrics={m: v for m, (v, _) in agg.items()},
      stderrs={m: s for m, (_, s) in agg.items()},
      higher_is_better={m: task.higher_is_better.get(m) for m in agg},
      samples=samples, config=config)
