"""Model cards generated from what a run recorded, every number traced to its file.

  python -m llm.card --workdir=runs/default                      # MODEL_CARD.md + model_card.json in the workdir
  python -m llm.card --workdir=runs/sst2_lora --notes=card_notes.md --eval=runs/sst2_eval --out=cards/sst2
  python -m llm.card --workdir=runs/default --check              # re-verify every file the card cites

The card follows Mitchell et al. (2019), "Model Cards for Model Reporting": model details,
intended use, factors, metrics, evaluation data, training data, quantitative analyses,
ethical considerations, caveats and recommendations, plus the training configuration and the
run's energy and carbon. Its facts come from the workdir's files, never from hand-written
text:

* the newest checkpoint's metadata (``checkpoints/<step>/meta/metadata``: architecture,
  tokenizer with its file's SHA-256, what it was fine-tuned, continued or imported from),
  followed recursively into every base workdir that is readable (lineage);
* ``config.json`` (training configuration), ``metrics.jsonl`` (losses at the last step),
  ``footprint.json`` (energy and carbon, llm/footprint.py), ``sample.txt``,
  ``finetune_results.json`` / ``best/best.json`` (fine-tuning), ``import.json`` (imports);
* evaluation results: ``eval_results.json`` (and ``bias_report.md``) of this workdir, of any
  ``--eval`` folder, and of every folder beside or inside the workdir whose evaluation
  recorded this workdir as its ``ckpt``;
* the training data the config names: text files (hashed when the card is made: the run
  recorded their paths only), prepared corpora (``tokens:<dir>``: the manifest's recorded
  source hashes and counts), and the corpus pipeline's report (funnel and representation
  audit) of any source that came out of ``llm.data.clean.pipeline``;
* bias mitigation of the training data: ``data_mitigation.json`` (train.py's record of
  ``data.counterfactual``, counterfactual augmentation, and ``data.reweight``,
  representation-aware reweighting: ``llm.data.stream.write_mitigation_report``) and the
  config fields that turn them on (``data.*``, or ``sft.counterfactual*`` and ``sft.debias*``
  of a fine-tuning), "none applied" when they are off;
* the generation monitor (``llm/eval/monitor.py``): ``config.json``'s ``monitor`` section,
  the newest value of each ``monitor/...`` rate in ``metrics.jsonl`` (the training run's and
  each evaluation's), and the outputs it flagged or blocked (``monitor_flags.jsonl``, a line
  each).

The sections only people can write (intended use, factors, ethical considerations, caveats
and recommendations, authors and licence) come from ``--notes`` or ``<workdir>/card_notes.md``,
under ``## <section>`` headings; a section with no text is marked **[to be filled in by the
model's authors]**.

Provenance: every number in MODEL_CARD.md is a link to the file it came from (its title is
the JSON pointer, RFC 6901, or the line of a JSONL file), and model_card.json gives each value
a ``source`` (path relative to the card, the file's SHA-256, the key or line). The card ends
with every file it cites and its SHA-256 (a folder, such as a checkpoint step: the SHA-256 of
its files' paths and hashes). ``--check`` rehashes them, re-reads every value from its source
and fails in one line naming each file that is missing or changed.

A checkpoint is required, and for a training run (not a parameters-only import, merge or
best checkpoint) its ``config.json`` and ``metrics.jsonl`` too; a file the card cites that
exists but cannot be read is an error. Everything else (evaluation, footprint, sample,
corpus report, mitigation report, monitor flags) is optional: when absent the card says so, with the command
that makes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

FORMAT = 'llm-model-card/1'
CARD_MD, CARD_JSON, NOTES_FILE = 'MODEL_CARD.md', 'model_card.json', 'card_notes.md'
TO_FILL = "**[to be filled in by the model's authors]**"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where train.py resolves data paths
MAX_LINEAGE = 16  # bases followed before giving up (a cycle of workdirs naming each other)
MITIGATION_FILE = 'data_mitigation.json'  # llm.data.stream.write_mitigation_report
FLAGS_FILE = 'monitor_flags.jsonl'  # llm.eval.monitor.FLAGS_FILE (not imported: the card needs no lexicons)
TOP_TERMS = 10  # most swapped terms of the counterfactual augmentation the card lists


class CardError(ValueError):
  """A card that cannot be made or verified as asked; the message names the file and the fix."""


# ----- Hashes and JSON pointers ---------------------------------------------------------------------------------


def file_sha256(path: str) -> str:
  from llm.data.documents import sha256  # the hash the data manifests record (gs:// too)
  return sha256(path)


def tree_sha256(directory: str) -> tuple[str, int, int]:
  """(SHA-256, files, bytes) of a folder: the hash of every file's relative path and SHA-256, sorted."""
  import hashlib
  entries = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in files:
      full = os.path.join(root, name)
      entries.append((os.path.relpath(full, directory).replace(os.sep, '/'), full))
  h, size = hashlib.sha256(), 0
  for rel, full in sorted(entries):
    h.update(f'{rel}\0{file_sha256(full)}\n'.encode())
    size += os.path.getsize(full)
  return h.hexdigest(), len(entries), size


def pointer(*keys: Any) -> str:
  """RFC 6901 JSON pointer of ``keys`` ('/results/sst2/acc,none'; '/' in a key is written '~1')."""
  return ''.join('/' + str(k).replace('~', '~0').replace('/', '~1') for k in keys)


def at_pointer(doc: Any, ptr: str) -> Any:
  """The value of ``doc`` at JSON pointer ``ptr``; KeyError/IndexError when it is not there."""
  for raw in ptr.split('/')[1:]:
    key = raw.replace('~1', '/').replace('~0', '~')
    doc = doc[int(key)] if isinstance(doc, list) else doc[key]
  return doc


def _plain(v: Any) -> Any:
  """JSON-safe and comparable: non-finite floats as strings (strict JSON has no NaN), tuples as lists."""
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  return v


def _get(doc: Any, *keys: Any) -> Any:
  try:
    return at_pointer(doc, pointer(*keys))
  except (KeyError, IndexError, TypeError, ValueError):
    return None


# ----- Provenance: the files a card cites and the values it takes from them --------------------------------------


@dataclasses.dataclass
class Artefact:
  path: str  # absolute
  role: str  # what it is, for the reader
  sha256: str
  bytes: int
  kind: str = 'file'  # or 'directory' (sha256 over its files)
  files: int = 1


class Provenance:
  """Collects the artefacts a card cites (hashed once) and every value with its source."""

  def __init__(self, card_dir: str):
    self.card_dir = os.path.abspath(card_dir)
    self.artefacts: dict[str, Artefact] = {}
    self.values: dict[str, dict[str, Any]] = {}
    self.absent: list[dict[str, str]] = []
    self.caveats: list[str] = []

  def rel(self, path: str) -> str:
    return os.path.relpath(path, self.card_dir).replace(os.sep, '/')

  def artefact(self, path: str, role: str) -> Artefact:
    path = os.path.abspath(path)
    if path not in self.artefacts:
      if os.path.isdir(path):
        sha, n, size = tree_sha256(path)
        self.artefacts[path] = Artefact(path, role, sha, size, 'directory', n)
      else:
        self.artefacts[path] = Artefact(path, role, file_sha256(path), os.path.getsize(path))
    return self.artefacts[path]

  def value(self, name: str, value: Any, art: Artefact, key: str | None = None, line: int | None = None,
            label: str = '', count: bool = False) -> Any:
    """Record ``value`` (taken from ``art`` at JSON pointer ``key``, on JSONL ``line``; ``count``: the
    number of entries there); returns it."""
    source: dict[str, Any] = {'path': self.rel(art.path), 'sha256': art.sha256}
    if line is not None:
      source['line'] = line
    if key is not None:
      source['key'] = key
    if count:
      source['count'] = True
    self.values[name] = {'value': _plain(value), **({'label': label} if label else {}), 'source': source}
    return value

  def take(self, name: str, art: Artefact, doc: Any, *keys: Any, line: int | None = None, label: str = '') -> Any:
    """The value of ``doc`` (``art``'s content) at ``keys``, recorded under ``name``; None if absent."""
    v = _get(doc, *keys)
    if v is not None:
      self.value(name, v, art, pointer(*keys), line, label)
    return v

  def derived(self, name: str, value: Any, formula: str, inputs: Sequence[str], label: str = '',
              key: str | None = None) -> Any:
    """A value computed (``formula``) from recorded ones (``inputs``: value names); its source is the first
    input's (at ``key`` when given: the part of that file the formula reads)."""
    source = dict(self.values[inputs[0]]['source'])
    if key is not None:
      source.pop('line', None)
      source['key'] = key
    self.values[name] = {'value': _plain(value), **({'label': label} if label else {}), 'derived': formula,
                         'inputs': list(inputs), 'source': source}
    return value

  def missing(self, what: str, why: str, make: str = '') -> None:
    self.absent.append({'artefact': what, 'why': why, **({'make': make} if make else {})})

  def link(self, name: str, text: str | None = None) -> str:
    """Markdown for value ``name``: its text linked to its source file, titled with the key or line."""
    if name not in self.values:
      return 'n/a'
    entry = self.values[name]
    shown = _md_escape(text if text is not None else fmt(entry['value']))
    src = entry['source']
    if 'derived' in entry:
      title = entry['derived'] + (f' of {src["key"]}' if 'key' in src else '')
    elif src.get('count') and 'key' not in src:
      title = 'number of lines'
    else:
      title = (f'line {src["line"]}' if 'line' in src else '') + (' ' if 'line' in src and 'key' in src else '') \
          + src.get('key', '') + (' (number of entries)' if src.get('count') else '')
    target = src['path'] + (f'#L{src["line"]}' if 'line' in src else '')
    if any(c in target for c in ' ()<>'):
      target = f'<{target}>'
    return f'[{shown}]({target} "{title.replace(chr(34), chr(39))}")' if title else f'[{shown}]({target})'

  def has(self, name: str) -> bool:
    return name in self.values


def fmt(v: Any) -> str:
  """A value as the card prints it: integers with thousands separators, floats to 4 significant places."""
  if v is None:
    return 'n/a'
  if isinstance(v, bool):
    return 'true' if v else 'false'
  if isinstance(v, int):
    return f'{v:,}'
  if isinstance(v, float):
    if not math.isfinite(v):
      return str(v)
    return f'{v:,.0f}' if 1e4 <= abs(v) < 1e6 else f'{v:.4g}'
  if isinstance(v, (list, tuple)):
    return ', '.join(fmt(x) for x in v) or '(none)'
  return str(v)


def _md_escape(s: str) -> str:
  return s.replace('\\', '\\\\').replace('[', '\\[').replace(']', '\\]').replace('|', '\\|').replace('\n', ' ')


# ----- Reading the run's files ----------------------------------------------------------------------------------


def read_json(path: str, what: str, make: str) -> Any:
  """JSON of ``path``; CardError naming it (and ``make``, how to produce it again) if unreadable."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise CardError(f'{path} ({what}) cannot be read ({type(e).__name__}: {" ".join(str(e).split())[:200]}); '
                    f'{make}') from None


def read_jsonl(path: str, what: str, make: str) -> list[tuple[int, dict[str, Any]]]:
  """[(line number, object)] of a JSONL file; CardError naming the file and line if one is unreadable."""
  rows = []
  try:
    with open(path, encoding='utf-8') as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rows.append((n, json.loads(line)))
          except ValueError as e:
            raise CardError(f'{path} line {n} ({what}) is not JSON ({e}); {make}') from None
  except OSError as e:
    raise CardError(f'{path} ({what}) cannot be read ({e}); {make}') from None
  return rows


@dataclasses.dataclass
class Checkpoint:
  workdir: str
  step: int
  directory: str  # checkpoints/<step>
  meta_path: str
  meta: dict[str, Any]
  steps: list[int]


def read_checkpoint(workdir: str, step: int | None = None) -> Checkpoint:
  """The checkpoint metadata of ``step`` (default: newest) of a run; CardError with the fix if there is none.

  Read straight from Orbax's layout (``<step>/meta/metadata`` is the JSON ``meta`` item that
  ``llm.checkpoint`` saves), so that a card needs neither Orbax nor an accelerator.
  """
  if not os.path.isdir(workdir):
    raise CardError(f'{workdir} does not exist; name the --workdir of a training run, e.g. runs/default after '
                    f'`python train.py --config=configs/default.py --workdir=runs/default`')
  root = os.path.join(workdir, 'checkpoints')
  root = root if os.path.isdir(root) else workdir
  steps = sorted(int(n) for n in os.listdir(root)
                 if n.isdigit() and os.path.isfile(os.path.join(root, n, 'meta', 'metadata')))
  if not steps:
    raise CardError(f'{workdir} holds no checkpoint (no {root}/<step>/meta/metadata): a model card describes a '
                    f'trained model; train one first (`python train.py --config=configs/default.py '
                    f'--workdir={workdir}`), fine-tune (`python finetune.py --config=... --workdir={workdir}`) or '
                    f'import one (`python -m llm.hf import --src=<dir> --workdir={workdir}`)')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise CardError(f'{workdir} has no checkpoint at step {step}; it has steps {steps}')
  directory = os.path.join(root, str(step))
  meta_path = os.path.join(directory, 'meta', 'metadata')
  meta = read_json(meta_path, 'checkpoint metadata', 'the checkpoint is damaged: pass --step=<an older step> or '
                   'train again')
  if not isinstance(meta, dict) or 'model' not in meta:
    raise CardError(f'{meta_path} (checkpoint metadata) has no model description; it was not written by '
                    f'llm.checkpoint: name a workdir written by train.py, finetune.py or llm.hf import')
  return Checkpoint(os.path.abspath(workdir), step, directory, meta_path, meta, steps)


def param_count(model: dict[str, Any]) -> int:
  """Parameters of the model a checkpoint records (``ModelConfig.param_count``: padded vocabulary included)."""
  from llm.models.config import ModelConfig
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  try:
    return ModelConfig(**{k: v for k, v in model.items() if k in known}).param_count()
  except (TypeError, ValueError) as e:
    raise CardError(f'the checkpoint records a model this version cannot describe ({e})') from None


def display_path(path: str) -> str:
  """A file as the card names it in text: relative to the repository when inside it, else absolute."""
  full = os.path.abspath(path)
  return os.path.relpath(full, REPO) if full.startswith(REPO + os.sep) else full


def resolve_path(recorded: str, *roots: str) -> str | None:
  """``recorded`` if absolute, else the first of ``roots``/recorded that exists; None if none does."""
  if os.path.isabs(recorded):
    return recorded if os.path.exists(recorded) else None
  for root in roots:
    p = os.path.join(root, recorded)
    if os.path.exists(p):
      return os.path.abspath(p)
  return None


# ----- The card ------------------------------------------------------------------------------------------------

# Notes sections people write: heading (lower case) -> (key, title, what belongs there).
NOTE_SECTIONS = {
    'model details': ('model_details', 'Model details',
                      'who developed the model, its licence, how to cite it, where to send questions'),
    'intended use': ('intended_use', 'Intended use', 'primary intended uses and users, and uses out of scope'),
    'factors': ('factors', 'Factors', 'the groups, instruments and environments across which performance may vary, '
                'and which of them were evaluated'),
    'metrics': ('metrics', 'Metrics', 'why these metrics, decision thresholds, how uncertainty was measured'),
    'ethical considerations': ('ethical_considerations', 'Ethical considerations',
                               'sensitive data, risks and harms, mitigations, uses that are fraught'),
    'caveats and recommendations': ('caveats', 'Caveats and recommendations',
                                    'known limitations, and recommendations for those who use the model'),
}
NOTE_ALIASES = {'limitations': 'caveats and recommendations'}
UNMARKED = ('metrics',)  # generated in full from the evaluation; people may add to it


def read_notes(path: str) -> dict[str, str]:
  """{section key: text} of a notes file's ``## <section>`` headings; CardError on an unknown heading."""
  with open(path, encoding='utf-8') as f:
    lines = f.read().splitlines()
  notes: dict[str, list[str]] = {}
  current = None
  for n, line in enumerate(lines, 1):
    if line.startswith('## '):
      head = line[3:].strip().rstrip('#').strip().lower()
      head = NOTE_ALIASES.get(head, head)
      if head not in NOTE_SECTIONS:
        raise CardError(f'{path} line {n}: unknown section {line[3:].strip()!r}; the sections are '
                        + ', '.join(f'"## {t}"' for _, t, _ in NOTE_SECTIONS.values()) + ' (or "## Limitations")')
      current = NOTE_SECTIONS[head][0]
      notes.setdefault(current, [])
    elif current is not None:
      notes[current].append(line)
    elif line.strip() and not line.startswith('# '):
      raise CardError(f'{path} line {n}: text before the first "## <section>" heading; put it under one of '
                      + ', '.join(f'"## {t}"' for _, t, _ in NOTE_SECTIONS.values()))
  return {k: '\n'.join(v).strip() for k, v in notes.items() if '\n'.join(v).strip()}


class CardBuilder:
  """Reads a workdir and everything it links to into a Provenance and the Markdown sections."""

  def __init__(self, workdir: str, out: str, *, step: int | None = None, notes: str | None = None,
               evals: Sequence[str] = ()):
    self.workdir = os.path.abspath(workdir)
    self.shown = workdir  # as the user typed it, for the commands the card prints
    self.p = Provenance(out)
    self.ckpt = read_checkpoint(workdir, step)
    self.meta = self.ckpt.meta
    self.params_only = bool(self.meta.get('params_only'))
    self.notes_path = notes
    self.notes_file = notes or os.path.join(self.workdir, NOTES_FILE)
    self.eval_dirs = list(evals)
    self.corpora: dict[str, str] = {}  # corpus pipeline output folder -> its value-name prefix
    self.out_flag = '' if os.path.abspath(out) == self.workdir else f' --out={out}'

  # -- small helpers ---------------------------------------------------------------------------------------------
  def _optional_json(self, path: str, what: str, make: str) -> tuple[Artefact, Any] | None:
    """(artefact, content) of a file the card uses when present; CardError if present but unreadable."""
    if not os.path.exists(path):
      return None
    doc = read_json(path, what, make)
    return self.p.artefact(path, what), doc

  def _cmd_train(self) -> str:
    return f'rerun the command that trained {self.shown} (it resumes and rewrites it)'

  # -- the parts -------------------------------------------------------------------------------------------------
  def build(self) -> dict[str, Any]:
    p, ck = self.p, self.ckpt
    p.artefact(ck.directory, f'checkpoint step {ck.step} (parameters and optimizer state)')
    meta_art = p.artefact(ck.meta_path, 'checkpoint metadata: model, tokenizer, lineage')
    p.value('checkpoint.step', ck.step, meta_art, pointer('step') if 'step' in self.meta else None,
            label='checkpoint step')
    stamp_path = os.path.join(ck.directory, '_CHECKPOINT_METADATA')
    if os.path.exists(stamp_path):
      stamp = read_json(stamp_path, 'Orbax checkpoint record', 'the checkpoint is damaged: pass --step=<another>')
      ns = _get(stamp, 'commit_timestamp_nsecs')
      if isinstance(ns, int):
        p.value('checkpoint.saved', ns, p.artefact(stamp_path, 'Orbax checkpoint record (save time)'),
                pointer('commit_timestamp_nsecs'), label='saved at (ns since 1970, UTC)')
    self.config = self._config()
    self.metrics = self._metrics()
    self._model(meta_art)
    self._tokenizer(meta_art)
    self.lineage = self._lineage()
    self._training(meta_art)
    self.data = self._data()
    self.mitigation = self._mitigation()
    self.footprint = self._footprint(self.workdir, 'footprint')
    self.finetune = self._finetune()
    self.evaluations = self._evaluations()
    self.monitoring = self._monitoring()
    self.sample = self._sample()
    self.notes = self._notes()
    return self.to_json()

  def _config(self) -> tuple[Artefact, dict] | None:
    path = os.path.join(self.workdir, 'config.json')
    if self.params_only:
      return self._optional_json(path, 'the run\'s config', '')
    if not os.path.exists(path):
      raise CardError(f'{path} is missing: train.py and finetune.py write the run\'s config there when they start, '
                      f'and the card takes the training configuration from it; {self._cmd_train()}')
    return self.p.artefact(path, 'the run\'s config (train.py / finetune.py)'), read_json(
        path, 'the run\'s config', self._cmd_train())

  def _metrics(self) -> tuple[Artefact, list[tuple[int, dict]]] | None:
    path = os.path.join(self.workdir, 'metrics.jsonl')
    if not os.path.exists(path):
      if self.params_only:
        return None
      raise CardError(f'{path} is missing: the training loop logs every step it reports there, and the card takes '
                      f'the final losses from it; {self._cmd_train()}')
    rows = read_jsonl(path, 'training metrics', self._cmd_train())
    if not rows and not self.params_only:
      raise CardError(f'{path} (training metrics) is empty; {self._cmd_train()}')
    return self.p.artefact(path, 'training metrics, one row per logged step'), rows

  def _model(self, meta_art: Artefact) -> None:
    p, model = self.p, self.meta['model']
    fields = ['arch', 'family', 'd_model', 'n_layers', 'n_decoder_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff',
              'max_seq_len', 'vocab_size', 'vocab_multiple', 'positions', 'norm', 'norm_position', 'mlp', 'use_bias',
              'tie_embeddings', 'param_dtype', 'lora_rank', 'lora_alpha', 'lora_targets', 'num_labels', 'labels']
    for k in fields:
      v = model.get(k)
      if k == 'n_decoder_layers' and model.get('arch') != 'encoder_decoder':
        continue
      if k.startswith('lora_') and k != 'lora_rank' and not model.get('lora_rank'):
        continue
      if k in ('num_labels', 'labels') and not model.get('num_labels'):
        continue
      if v is not None:
        p.value(f'model.{k}', v, meta_art, pointer('model', k))
    p.derived('model.params', param_count(model), 'ModelConfig(**model).param_count() (llm/models/config.py)',
              ['model.d_model'], label='parameters (padded vocabulary included)', key=pointer('model'))

  def _tokenizer(self, meta_art: Artefact) -> None:
    p, spec = self.p, self.meta.get('tokenizer') or {'kind': 'byte'}
    p.value('tokenizer.kind', spec.get('kind', 'byte'), meta_art, pointer('tokenizer', 'kind')
            if 'kind' in spec else None)
    key = 'spm_model' if spec.get('spm_model') else 'path' if spec.get('path') else None
    if key is None:
      return
    p.value('tokenizer.file', spec[key], meta_art, pointer('tokenizer', key))
    if spec.get('sha256'):
      p.value('tokenizer.recorded_sha256', spec['sha256'], meta_art, pointer('tokenizer', 'sha256'))
    found = resolve_path(spec[key], self.workdir, os.getcwd(), REPO)
    if found is None:
      raise CardError(f'{spec[key]}: the tokenizer file the checkpoint records is missing (looked beside '
                      f'{self.workdir}, here and in {REPO}); the model cannot be used without it: restore it')
    art = p.artefact(found, 'tokenizer file')
    if spec.get('sha256') and art.sha256 != spec['sha256']:
      raise CardError(f'{found} is not the tokenizer file {self.workdir} was trained with (its SHA-256 '
                      f'{art.sha256[:12]}… differs from the recorded {spec["sha256"][:12]}…); restore that file')

  def _training(self, meta_art: Artefact) -> None:
    p = self.p
    if self.config is None:
      return
    art, cfg = self.config
    loop = cfg.get('loop', 'pretrain')
    p.value('run.loop', loop, art, pointer('loop'))
    keys = [('seed',), ('init_from',), ('train', 'steps'), ('train', 'batch_size'), ('train', 'accum_steps'),
            ('train', 'lr'), ('train', 'min_lr'), ('train', 'warmup_steps'), ('train', 'decay_steps'),
            ('train', 'weight_decay'), ('train', 'grad_clip'), ('train', 'b1'), ('train', 'b2'),
            ('mesh', 'data'), ('mesh', 'fsdp'), ('mesh', 'tensor')]
    if loop == 'finetune':
      keys += [('sft', 'source'), ('sft', 'seq_len'), ('sft', 'pack'), ('sft', 'truncation'), ('finetune', 'method'),
               ('finetune', 'head')]
      if _get(cfg, 'finetune', 'method') == 'lora':
        keys += [('lora', 'rank'), ('lora', 'alpha'), ('lora', 'dropout'), ('lora', 'targets')]
    else:
      keys += [('data', 'sources'), ('data', 'seq_len'), ('data', 'objective'), ('data', 'tokenizer'),
               ('data', 'split'), ('data', 'val_fraction')]
    for k in keys:
      if _get(cfg, *k) not in (None, ''):
        p.take('config.' + '.'.join(k), art, cfg, *k)
    seq = 'config.sft.seq_len' if loop == 'finetune' else 'config.data.seq_len'
    if p.has('config.train.batch_size') and p.has(seq):
      rows, seq_len = p.values['config.train.batch_size']['value'], p.values[seq]['value']
      p.derived('train.tokens', self.ckpt.step * rows * seq_len, 'checkpoint step × train.batch_size × seq_len '
                '(rows of tokens, padding included)', ['checkpoint.step', 'config.train.batch_size', seq],
                label='tokens trained on')
    steps = _get(cfg, 'train', 'steps')
    if isinstance(steps, int) and self.ckpt.step < steps:
      p.caveats.append(f'The run stopped at step {p.link("checkpoint.step")} of {p.link("config.train.steps")} '
                       '(interrupted, or still running): this card describes that checkpoint.')
    if self.metrics is not None:
      self._final_metrics()

  def _final_metrics(self) -> None:
    p = self.p
    art, rows = self.metrics
    upto = [(n, r) for n, r in rows if r.get('step', 0) <= self.ckpt.step]
    if not upto:
      return
    n, last = max(upto, key=lambda x: (x[1].get('step', 0), x[0]))
    for k in ('step', 'train_loss', 'tokens_per_sec', 'mfu', 'energy_kwh', 'co2e_kg'):
      p.take(f'metrics.last.{k}', art, last, k, line=n)
    val = [(n, r) for n, r in upto if 'val_loss' in r]
    if val:
      n, row = max(val, key=lambda x: (x[1].get('step', 0), x[0]))
      for k in ('step', 'val_loss', 'val_perplexity'):
        p.take(f'metrics.val.{k}', art, row, k, line=n)
    evals = [(n, r) for n, r in upto if any(k.startswith('eval/') for k in r)]
    if evals:
      n, row = max(evals, key=lambda x: (x[1].get('step', 0), x[0]))
      p.take('metrics.eval.step', art, row, 'step', line=n)
      for k in sorted(row):
        if k.startswith('eval/') and not k.endswith('requests_per_sec'):
          p.take(f'metrics.eval.{k[5:]}', art, row, k, line=n)

  # -- lineage -----------------------------------------------------------------------------------------------------
  def _lineage(self) -> list[dict[str, Any]]:
    """What this model came from, and what that came from, as far as the workdirs are readable."""
    p, chain, seen = self.p, [], {self.ckpt.directory}
    meta, meta_art = self.meta, self.p.artefacts[os.path.abspath(self.ckpt.meta_path)]
    here = self.workdir
    for i in range(MAX_LINEAGE):
      link = _base_link(meta)
      if link is None:
        break
      relation, keys, base, base_step = link
      name = f'lineage.{i}'
      p.value(f'{name}.base', base, meta_art, pointer(*keys[0]), label=relation)
      if keys[1] is not None:
        p.value(f'{name}.step', base_step, meta_art, pointer(*keys[1]))
      for extra in ('method', 'data'):
        if _get(meta, keys[0][0], extra) is not None:
          p.take(f'{name}.{extra}', meta_art, meta, keys[0][0], extra)
      entry = {'relation': relation, 'base': base, 'name': name, 'readable': False}
      chain.append(entry)
      if base.startswith('hf:') or relation == 'imported from':
        self._hf_source(name, base[3:] if base.startswith('hf:') else base, here)
        break
      found = resolve_path(base, os.getcwd(), REPO, os.path.dirname(here))
      if found is None:
        p.caveats.append(f'Lineage: the base {p.link(name + ".base")} is not readable here, so what it was trained '
                         'on is not in this card.')
        break
      try:
        ck = read_checkpoint(found, base_step if isinstance(base_step, int) else None)
      except CardError:
        try:
          ck = read_checkpoint(found)  # the step it was taken at is gone (kept checkpoints rotate)
          p.caveats.append(f'Lineage: {p.link(name + ".base")} no longer has step {fmt(base_step)}; its '
                           f'step {ck.step} is described instead.')
        except CardError as e:
          p.caveats.append(f'Lineage: the base {p.link(name + ".base")} holds no readable checkpoint ({e}).')
          break
      if ck.directory in seen:
        p.caveats.append(f'Lineage: {p.link(name + ".base")} names a checkpoint already in the chain; stopped there.')
        break
      seen.add(ck.directory)
      entry.update(readable=True, workdir=ck.workdir)
      meta, here = ck.meta, ck.workdir
      meta_art = p.artefact(ck.meta_path, f'base model checkpoint metadata ({ck.workdir} step {ck.step})')
      p.value(f'{name}.base_step', ck.step, meta_art, pointer('step') if 'step' in meta else None)
      p.derived(f'{name}.params', param_count(meta['model']), 'ModelConfig(**model).param_count()',
                [f'{name}.base_step'], key=pointer('model'))
      cfg_path = os.path.join(ck.workdir, 'config.json')
      if os.path.exists(cfg_path):
        cfg = read_json(cfg_path, 'base model config', f'it belongs to the base run {ck.workdir}')
        art = p.artefact(cfg_path, f'base model config ({ck.workdir})')
        if cfg.get('loop') == 'finetune':
          p.take(f'{name}.trained_on', art, cfg, 'sft', 'source')
        else:
          p.take(f'{name}.trained_on', art, cfg, 'data', 'sources')
      fp = os.path.join(ck.workdir, 'footprint.json')
      if os.path.exists(fp):
        doc = read_json(fp, 'base model footprint', f'it belongs to the base run {ck.workdir}')
        art = p.artefact(fp, f'base model energy and carbon ({ck.workdir})')
        p.take(f'{name}.energy_kwh', art, doc, 'energy_kwh')
        p.take(f'{name}.co2e_kg', art, doc, 'co2e_kg')
    return chain

  def _hf_source(self, name: str, src: str, here: str) -> None:
    """An imported model's origin: import.json's recorded weight hashes, or the directory's files."""
    p = self.p
    record = os.path.join(here, 'import.json')
    if os.path.exists(record):
      doc = read_json(record, 'Hugging Face import record', '`python -m llm.hf import` wrote it; import again')
      art = p.artefact(record, 'Hugging Face import record (source weights and their SHA-256)')
      for i, (f, sha) in enumerate(sorted((doc.get('weights') or {}).items())):
        p.value(f'{name}.weights.{i}.sha256', sha, art, pointer('weights', f), label=f)
      p.take(f'{name}.import_params', art, doc, 'parameters')
      return
    found = resolve_path(src, os.getcwd(), REPO)
    if found is None or not os.path.isdir(found):
      p.caveats.append(f'Lineage: the Hugging Face directory {p.link(name + ".base")} is not readable here.')
      return
    for f in sorted(os.listdir(found)):
      if f.endswith('.safetensors') or f in ('pytorch_model.bin', 'config.json', 'tokenizer.json', 'spiece.model'):
        art = p.artefact(os.path.join(found, f), 'Hugging Face source file (hashed when the card was made)')
        p.value(f'{name}.files.{f}', art.sha256, art, label=f)

  # -- training data -------------------------------------------------------------------------------------------------
  def _data(self) -> list[dict[str, Any]]:
    """Each training source: its files with SHA-256, a prepared corpus' manifest, the corpus report."""
    if self.config is None:
      return []
    _, cfg = self.config
    out: list[dict[str, Any]] = []
    if cfg.get('loop') == 'finetune':
      specs = [(s.strip(), 1.0) for s in str(_get(cfg, 'sft', 'source') or '').split(',') if s.strip()]
    else:
      from llm.data.stream import parse_sources
      specs = parse_sources(str(_get(cfg, 'data', 'sources') or ''))
    for i, (spec, weight) in enumerate(specs):
      name = f'data.{i}'
      entry: dict[str, Any] = {'spec': spec, 'weight': weight, 'name': name, 'files': []}
      out.append(entry)
      if spec.startswith('tokens:'):
        self._prepared(entry, spec[len('tokens:'):])
      elif spec.startswith('task:'):
        self._task_source(entry, spec[len('task:'):], cfg)
      elif spec.startswith('tfds:'):
        self._tfds_source(entry, spec[len('tfds:'):])
      else:
        self._text_source(entry, spec)
    return out

  def _text_source(self, entry: dict[str, Any], pattern: str) -> None:
    from llm.data.documents import glob_files, resolve
    files = glob_files(resolve(pattern, REPO))
    if not files:
      self.p.missing(pattern, 'the training source the config names matches no file now (moved or deleted), so its '
                     'bytes cannot be hashed', 'restore the files')
      return
    for j, f in enumerate(files):
      art = self.p.artefact(f, 'training data (hashed when the card was made: the run recorded its path only)')
      self.p.value(f'{entry["name"]}.files.{j}.sha256', art.sha256, art, label=display_path(f))
      entry['files'].append(f'{entry["name"]}.files.{j}.sha256')
    self._corpus_of(os.path.dirname(files[0]), entry)

  def _tfds_source(self, entry: dict[str, Any], directory: str) -> None:
    full = resolve_path(directory, REPO, os.getcwd())
    if full is None:
      self.p.missing(f'tfds:{directory}', 'the TFDS dataset the config names is not there now',
                     'rerun the corpus pipeline (`python -m llm.data.clean.pipeline --config=configs/corpus.py ...`)')
      return
    art = self.p.artefact(full, 'training data: TFDS dataset (hashed when the card was made)')
    self.p.value(f'{entry["name"]}.tfds.sha256', art.sha256, art, label=f'tfds:{directory}')
    entry['files'].append(f'{entry["name"]}.tfds.sha256')
    self._corpus_of(full, entry)

  def _task_source(self, entry: dict[str, Any], task: str, cfg: dict) -> None:
    from llm.eval import tasks as tasks_lib
    dirs = [d.strip() for d in str(_get(cfg, 'eval', 'task_dirs') or 'tasks').split(',') if d.strip()]
    try:
      found = tasks_lib.discover([d if os.path.isabs(d) else os.path.join(REPO, d) for d in dirs])
      if task not in found:
        raise tasks_lib.TaskError(f'no task {task!r} in {dirs}')
      t = tasks_lib.load_task(found[task])
    except tasks_lib.TaskError as e:
      self.p.missing(f'task:{task}', f'the fine-tuning task cannot be read now ({e})', 'restore the task file')
      return
    art = self.p.artefact(found[task], 'fine-tuning task file')
    self.p.value(f'{entry["name"]}.task_file.sha256', art.sha256, art, label=display_path(found[task]))
    entry['files'].append(f'{entry["name"]}.task_file.sha256')
    files = _get(t.config(), 'dataset_kwargs', 'data_files') or {}
    files = files if isinstance(files, dict) else {'train': files}
    base = os.path.dirname(os.path.abspath(found[task]))
    for split, paths in sorted(files.items()):
      for j, f in enumerate([paths] if isinstance(paths, str) else paths):
        full = f if os.path.isabs(f) else os.path.join(base, f)
        a = self.p.artefact(full, f'fine-tuning data, {split} split (hashed when the card was made)')
        self.p.value(f'{entry["name"]}.{split}.{j}.sha256', a.sha256, a, label=f'{split}: {display_path(full)}')
        entry['files'].append(f'{entry["name"]}.{split}.{j}.sha256')

  def _prepared(self, entry: dict[str, Any], directory: str) -> None:
    p, name = self.p, entry['name']
    full = resolve_path(directory, REPO, os.getcwd())
    path = os.path.join(full or os.path.join(REPO, directory), 'manifest.json')
    make = f'`python -m llm.data.prepare --config=configs/prepare.py ... --config.output={directory}` writes it'
    if full is None or not os.path.exists(path):
      p.missing(f'tokens:{directory}/manifest.json', 'the prepared corpus the config names has no manifest here now, '
                'so its source hashes and counts are not in this card', make)
      return
    doc = read_json(path, 'prepared corpus manifest', make)
    art = p.artefact(path, 'prepared corpus manifest: tokenizer, source files with SHA-256, counts')
    entry['manifest'] = []  # [(pattern value, [file SHA-256 values])] of the sources it was prepared from
    for split in ('train', 'validation'):
      for k in ('docs', 'tokens'):
        p.take(f'{name}.{split}.{k}', art, doc, 'splits', split, k)
    for s, src in enumerate(doc.get('sources') or []):
      p.take(f'{name}.sources.{s}.pattern', art, doc, 'sources', s, 'pattern')
      files = []
      for j, f in enumerate(src.get('files') or []):
        p.value(f'{name}.sources.{s}.files.{j}.sha256', f.get('sha256'), art,
                pointer('sources', s, 'files', j, 'sha256'), label=str(f.get('path')))
        files.append(f'{name}.sources.{s}.files.{j}.sha256')
      entry['manifest'].append((f'{name}.sources.{s}.pattern', files))
      pattern = str(src.get('pattern', ''))
      located = resolve_path(pattern[len('tfds:'):], REPO, os.getcwd()) if pattern.startswith('tfds:') else (
          os.path.dirname(src['files'][0]['path']) if src.get('files') else None)
      if located:
        self._corpus_of(located, entry)

  def _corpus_of(self, path: str, entry: dict[str, Any]) -> None:
    """The corpus pipeline's report, when ``path`` lies in one of its outputs (its DONE names the dataset)."""
    src = d = os.path.abspath(path)
    for _ in range(6):
      done, report = os.path.join(d, 'DONE'), os.path.join(d, 'report', 'report.json')
      inside = any(src == os.path.join(d, sub) or src.startswith(os.path.join(d, sub) + os.sep)
                   for sub in ('clean', 'tfds'))  # the pipeline's shards or its TFDS dataset
      if inside and os.path.isfile(done) and os.path.isfile(report):
        break
      parent = os.path.dirname(d)
      if parent == d:
        return
      d = parent
    else:
      return
    if d in self.corpora:
      entry['corpus'] = self.corpora[d]
      return
    p, name = self.p, f'corpus.{len(self.corpora)}'
    self.corpora[d] = entry['corpus'] = name
    make = f'`python -m llm.data.clean.pipeline --config=configs/corpus.py --config.output={d} ...` writes it'
    read_json(done, 'corpus pipeline completion record', make)
    p.artefact(done, 'corpus pipeline completion record (fingerprint, dataset)')
    doc = read_json(report, 'corpus pipeline report', make)
    art = p.artefact(report, 'corpus pipeline report: funnel, PII, representation audit')
    md = os.path.join(d, 'report', 'report.md')
    if os.path.exists(md):
      p.artefact(md, 'corpus pipeline report (readable)')
    p.take(f'{name}.inputs', art, doc, 'config', 'inputs')
    for k in ('docs_in', 'docs_out', 'frac_docs_kept', 'frac_chars_kept', 'words_in', 'words_out'):
      p.take(f'{name}.totals.{k}', art, doc, 'totals', k)
    for i in range(len(doc.get('funnel') or [])):
      for k in ('stage', 'docs_removed', 'frac_of_input', 'docs_remaining'):
        p.take(f'{name}.funnel.{i}.{k}', art, doc, 'funnel', i, k)
    for kind in sorted(doc.get('pii') or {}):
      p.take(f'{name}.pii.{kind}', art, doc, 'pii', kind, 'count')
    rep = doc.get('representation') or {}
    for k in ('words_before', 'words_after', 'flag_ratio', 'flag_min_count'):
      p.take(f'{name}.representation.{k}', art, doc, 'representation', k)
    for cat in sorted(rep.get('categories') or {}):
      for k in ('count_before', 'rate_before', 'count_after', 'rate_after', 'change', 'most_shifting_stage'):
        p.take(f'{name}.representation.{cat}.{k}', art, doc, 'representation', 'categories', cat, k)
    for i in range(len(rep.get('flags') or [])):
      for k in ('stage', 'category', 'term', 'mentions_removed', 'share_of_mentions', 'share_of_words',
                'disproportion'):
        p.take(f'{name}.flags.{i}.{k}', art, doc, 'representation', 'flags', i, k)

  # -- bias mitigation of the training data ----------------------------------------------------------------------
  def _mitigation(self) -> dict[str, Any] | None:
    """What was done against bias in the training data: the config fields that turn it on (``data.counterfactual``,
    ``data.reweight``; a fine-tuning's ``sft.counterfactual*`` and ``sft.debias*``) and data_mitigation.json, the
    run's record of what augmentation and reweighting did. None for a checkpoint with no config."""
    if self.config is None:
      return None
    p, (art, cfg) = self.p, self.config
    section = 'sft' if cfg.get('loop') == 'finetune' else 'data'
    fields = cfg.get(section) if isinstance(cfg.get(section), dict) else {}
    if section == 'data':
      keys = [k for k in ('counterfactual', 'counterfactual_mode', 'counterfactual_rate', 'reweight',
                          'reweight_max_weight') if k in fields]
    else:
      keys = sorted(k for k in fields if k.startswith(('counterfactual', 'debias')))
    for k in keys:
      p.take(f'mitigation.config.{section}.{k}', art, cfg, section, k)
    switches = ('counterfactual', 'reweight') if section == 'data' else ('counterfactual', 'debias_weight')
    on = [k for k in switches if fields.get(k) not in (None, '', 0, False)]
    out: dict[str, Any] = {'section': section, 'switches': [k for k in switches if k in fields], 'on': on,
                           'report': None, 'reweighting': []}
    path = os.path.join(self.workdir, MITIGATION_FILE)
    make = (f'train.py writes it when data.counterfactual or data.reweight is on; {self._cmd_train()}')
    if os.path.exists(path):
      doc = read_json(path, 'bias mitigation report', make)
      if not isinstance(doc, dict):
        raise CardError(f'{path} (bias mitigation report) is not a JSON object; {make}')
      rep = p.artefact(path, 'bias mitigation report: counterfactual augmentation and reweighting of the training '
                       'data (train.py)')
      out['report'] = path
      self._mitigation_report(rep, doc, out)
      if not on:
        p.caveats.append(f'`{MITIGATION_FILE}` reports bias mitigation of the training data, but the run\'s config has '
                         f'{" and ".join(f"{section}.{k}" for k in switches)} off: the report may be left from an '
                         'earlier run in this workdir.')
    elif section == 'data' and on:
      p.missing(MITIGATION_FILE, 'the config turns on ' + ' and '.join(f'data.{k}' for k in on) + ' but the run left '
                'no record of what it did to the training documents (it predates the record, or it was deleted)', make)
    elif section == 'sft' and 'counterfactual' in on:
      p.missing(MITIGATION_FILE, 'the config turns on sft.counterfactual but the workdir holds no record of what it '
                'did to the training examples (finetune.py prints the counts in its log)')
    return out

  def _mitigation_report(self, art: Artefact, doc: dict, out: dict[str, Any]) -> None:
    p = self.p
    p.take('mitigation.sources', art, doc, 'sources')
    c = doc.get('counterfactual')
    if isinstance(c, dict):
      for k in ('categories', 'mode', 'rate', 'documents', 'with_swap', 'added', 'substituted'):
        p.take(f'mitigation.cf.{k}', art, doc, 'counterfactual', k)
      for i, k in enumerate(k for k in c if k.startswith('swaps/')):  # one per category, in the report's order
        p.take(f'mitigation.cf.swaps.{i}', art, doc, 'counterfactual', k, label=k[len('swaps/'):])
      terms = c.get('top_terms') if isinstance(c.get('top_terms'), dict) else {}
      for i, term in enumerate(list(terms)[:TOP_TERMS]):
        p.take(f'mitigation.cf.top.{i}', art, doc, 'counterfactual', 'top_terms', term, label=term)
    sources = doc.get('sources') if isinstance(doc.get('sources'), list) else []
    reports = doc.get('reweighting') if isinstance(doc.get('reweighting'), list) else []
    for r, rep in enumerate(reports):
      if not isinstance(rep, dict):
        continue
      n = f'mitigation.rw.{r}'
      for k in ('what', 'items', 'upweighted', 'downweighted', 'copies', 'dropped', 'max_weight', 'seed'):
        p.take(f'{n}.{k}', art, doc, 'reweighting', r, k)
      targets = []
      for j, t in enumerate(rep.get('targets') or []):
        tn = f'{n}.targets.{j}'
        for k in ('category', 'group', 'share'):
          p.take(f'{tn}.{k}', art, doc, 'reweighting', r, 'targets', j, 'target', k)
        for k in ('before', 'expected', 'realised', 'focus', 'factor'):
          p.take(f'{tn}.{k}', art, doc, 'reweighting', r, 'targets', j, k)
        targets.append(tn)
      # One report per training source (llm.data.stream.Corpus.reweighting), in the sources' order.
      source = str(sources[r]) if len(sources) == len(reports) else f'report {r + 1}'
      out['reweighting'].append({'name': n, 'source': source, 'targets': targets})

  # -- energy, fine-tuning, evaluation, sample ------------------------------------------------------------------
  def _footprint(self, directory: str, name: str) -> bool:
    path = os.path.join(directory, 'footprint.json')
    make = ('train.py, finetune.py and the evaluation loop keep it (llm/footprint.py); restore the file, or rerun the '
            f'command that wrote {directory}')
    if not os.path.exists(path):
      if name == 'footprint':
        self.p.missing('footprint.json', 'no energy and carbon ledger: the run predates it, or wrote none (imports and '
                       'merges do not)', '`python -m llm.footprint estimate --size=... --tokens=... --device=... '
                       '--chips=...` projects a run; train.py and finetune.py record theirs')
      return False
    doc = read_json(path, 'energy and carbon ledger', make)
    art = self.p.artefact(path, 'energy and carbon ledger (llm/footprint.py)')
    for k in ('energy_kwh', 'co2e_kg', 'it_energy_kwh', 'pue', 'region', 'intensity_g_per_kwh', 'intensity_source',
              'seconds', 'device_hours', 'cpu_core_hours'):
      self.p.take(f'{name}.{k}', art, doc, k)
    for k in ('kind', 'count', 'hosts'):
      self.p.take(f'{name}.devices.{k}', art, doc, 'devices', k)
    self.p.take(f'{name}.host_cpu', art, doc, 'host_cpu', 'model')
    for k in ('accelerators', 'host_cpu', 'not_counted'):
      self.p.take(f'{name}.method.{k}', art, doc, 'method', k)
    for phase in (doc.get('phases') or {}):
      for k in ('seconds', 'energy_kwh', 'co2e_kg'):
        self.p.take(f'{name}.phases.{phase}.{k}', art, doc, 'phases', phase, k)
    if isinstance(doc.get('runs'), list):
      self.p.value(f'{name}.runs', len(doc['runs']), art, pointer('runs'), label='processes that ran in the workdir',
                   count=True)
    return True

  def _finetune(self) -> bool:
    p, found = self.p, False
    res = self._optional_json(os.path.join(self.workdir, 'finetune_results.json'), 'fine-tuning results',
                              'finetune.py writes it when it finishes; rerun the fine-tuning command')
    if res is None and self.config is not None and self.config[1].get('loop') == 'finetune':
      p.missing('finetune_results.json', 'the fine-tuning has not finished (finetune.py writes it at the end)',
                f'rerun the fine-tuning command with --workdir={self.shown}: it resumes and finishes')
    if res is not None:
      found = True
      art, doc = res
      for k in ('method', 'head', 'metric', 'trainable_params', 'total_params', 'optimizer_state_mib', 'wall_sec'):
        p.take(f'finetune.{k}', art, doc, k)
      for shots, row in sorted((doc.get('baseline') or {}).items()):
        if isinstance(row, dict) and doc.get('metric') in row:
          p.take(f'finetune.baseline.{shots}', art, doc, 'baseline', shots, doc['metric'])
      p.take('finetune.best.value', art, doc, 'best', 'value')
      p.take('finetune.best.step', art, doc, 'best', 'step')
      for split, rep in sorted((doc.get('data') or {}).items()):
        for k in sorted(rep) if isinstance(rep, dict) else ():
          if isinstance(rep[k], (int, float)):
            p.take(f'finetune.data.{split}.{k}', art, doc, 'data', split, k)
    best = self._optional_json(os.path.join(self.workdir, 'best.json'), 'best checkpoint record',
                               'finetune.py writes it with the best checkpoint')
    if best is not None:
      found = True
      art, doc = best
      for k in ('metric', 'value', 'step'):
        p.take(f'best.{k}', art, doc, k)
    return found

  def _evaluations(self) -> list[dict[str, Any]]:
    """Evaluations of this checkpoint: ``--eval`` folders, and any folder here, inside or beside the workdir whose
    eval_results.json names this workdir as its ``ckpt``."""
    p, explicit = self.p, [os.path.abspath(d) for d in self.eval_dirs]
    candidates = list(explicit)
    parent = os.path.dirname(self.workdir)
    for d in [self.workdir, *sorted(glob.glob(os.path.join(self.workdir, '*'))),
              *sorted(glob.glob(os.path.join(parent, '*')))]:
      if os.path.isfile(os.path.join(d, 'eval_results.json')) and os.path.abspath(d) not in candidates:
        candidates.append(os.path.abspath(d))
    out = []
    for d in candidates:
      path = os.path.join(d, 'eval_results.json')
      make = f'rerun the evaluation (`python train.py --config=configs/fewshot.py:ckpt={self.shown} --workdir={d}`)'
      if not os.path.exists(path):
        raise CardError(f'--eval={d} holds no eval_results.json; {make}')
      try:
        doc = read_json(path, 'evaluation results', make)
      except CardError:
        if d in explicit or d == self.workdir:
          raise
        continue  # another run's damaged evaluation beside this one is not this card's business
      ckpt = _get(doc, 'config', 'ckpt')
      same = isinstance(ckpt, str) and os.path.realpath(ckpt) == os.path.realpath(self.workdir)
      if not same:
        if d in explicit:
          raise CardError(f'{path} is an evaluation of {ckpt}, not of {self.workdir}; pass the --eval folder of an '
                          f'evaluation of this workdir, or make one: {make}')
        continue
      out.append(self._evaluation(len(out), d, path, doc))
    if not out:
      p.missing('eval_results.json', 'no evaluation of this workdir was found (here, inside it, beside it, or --eval)',
                f'`python train.py --config=configs/fewshot.py:ckpt={self.shown} --workdir={self.shown}_eval` '
                f'(found beside the workdir next time; or pass --eval=<its workdir>)')
    return out

  def _evaluation(self, i: int, directory: str, path: str, doc: dict) -> dict[str, Any]:
    p, name = self.p, f'eval.{i}'
    art = p.artefact(path, 'evaluation results (lm-evaluation-harness layout)')
    p.take(f'{name}.step', art, doc, 'config', 'step')
    p.take(f'{name}.date', art, doc, 'date')
    p.take(f'{name}.devices', art, doc, 'config', 'devices')
    step = _get(doc, 'config', 'step')
    if isinstance(step, int) and step != self.ckpt.step:
      p.caveats.append(f'Evaluation {i + 1} scored step {p.link(name + ".step")}, not the step '
                       f'{p.link("checkpoint.step")} this card describes.')
    tasks = []
    for task, res in (doc.get('results') or {}).items():
      metrics = []
      for key in res:
        if ',' not in key or '_stderr,' in key:
          continue
        metric = key.split(',')[0]
        v = res[key]
        if not isinstance(v, (int, float)) or isinstance(v, bool):
          continue
        p.value(f'{name}.{task}.{metric}', v, art, pointer('results', task, key))
        se = res.get(key.replace(',', '_stderr,', 1))
        if isinstance(se, (int, float)) and not isinstance(se, bool):
          p.value(f'{name}.{task}.{metric}_stderr', se, art, pointer('results', task, key.replace(',', '_stderr,', 1)))
        metrics.append(metric)
      p.take(f'{name}.{task}.n', art, doc, 'n-samples', task, 'effective')
      p.take(f'{name}.{task}.k', art, doc, 'n-shot', task)
      files = _get(doc, 'configs', task, 'dataset_kwargs', 'data_files')
      tasks.append({'task': task, 'metrics': metrics, 'data_files': files,
                    'higher_is_better': _get(doc, 'higher_is_better', task) or {}})
    report = os.path.join(directory, 'bias_report.md')
    has_report = os.path.exists(report)
    if has_report:
      p.artefact(report, 'bias probes report')
    fp = None
    if os.path.abspath(directory) != self.workdir and self._footprint(directory, f'{name}.footprint'):
      fp = f'{name}.footprint'
    return {'name': name, 'dir': directory, 'path': path, 'tasks': tasks, 'bias_report': report if has_report else None,
            'footprint': fp}

  # -- generation monitor ----------------------------------------------------------------------------------------
  def _monitoring(self) -> list[dict[str, Any]]:
    """The generation monitor (llm/eval/monitor.py) of the training run and of each evaluation: the config's
    ``monitor`` section, the newest value of each ``monitor/...`` key of metrics.jsonl, the lines of
    monitor_flags.jsonl (an output each)."""
    p, out = self.p, []
    if self.config is not None:
      art, cfg = self.config
      if isinstance(cfg.get('monitor'), dict):
        for k in ('enabled', 'action', 'flag_on', 'scope'):
          p.take(f'monitor.config.{k}', art, cfg, 'monitor', k)
    out.append(self._monitor_dir(self.workdir, 'monitor.run', self.metrics, upto=self.ckpt.step))
    for e in self.evaluations:
      if os.path.abspath(e['dir']) != self.workdir:
        out.append(self._monitor_dir(e['dir'], f'{e["name"]}.monitor', None, evaluation=e))
    return out

  def _monitor_dir(self, directory: str, name: str, metrics: tuple[Artefact, list] | None, upto: int | None = None,
                   evaluation: dict[str, Any] | None = None) -> dict[str, Any]:
    p = self.p
    make = f'rerun the command that wrote {directory} with --config.monitor.enabled=True'
    entry: dict[str, Any] = {'name': name, 'dir': directory, 'evaluation': evaluation, 'keys': [], 'metrics': None,
                             'flags': None}
    path = os.path.join(directory, 'metrics.jsonl')
    if metrics is not None:
      art, rows = metrics
    elif os.path.exists(path):  # an evaluation's: the evaluate loop appends its monitor rates there
      art, rows = None, read_jsonl(path, 'evaluation metrics (generation monitor rates)', make)
    else:
      art, rows = None, []
    latest: dict[str, tuple[tuple[int, int], int, dict]] = {}
    for n, row in rows:
      step = row.get('step', 0) if isinstance(row.get('step'), int) else 0
      if upto is not None and step > upto:
        continue
      for k, value in row.items():
        if k.startswith('monitor/') and isinstance(value, (int, float)) and not isinstance(value, bool):
          if k not in latest or (step, n) >= latest[k][0]:
            latest[k] = ((step, n), n, row)
    if latest:
      art = art or p.artefact(path, 'evaluation metrics: the generation monitor\'s rates')
      entry['metrics'] = path
    for k in sorted(latest, key=_monitor_order):
      _, n, row = latest[k]
      p.take(f'{name}.rate.{k}', art, row, k, line=n, label=k)
      p.take(f'{name}.step.{k}', art, row, 'step', line=n)
      entry['keys'].append(k)
    flags = os.path.join(directory, FLAGS_FILE)
    if os.path.exists(flags):
      records = read_jsonl(flags, 'outputs the generation monitor flagged', make)
      fart = p.artefact(flags, 'outputs the generation monitor flagged or blocked (a JSON line each)')
      p.value(f'{name}.flagged', len(records), fart, label='flagged or blocked outputs', count=True)
      entry['flags'] = flags
      for action in ('flag', 'block'):
        n_action = sum(1 for _, r in records if r.get('action') == action)
        if n_action:
          p.derived(f'{name}.flagged.{action}', n_action, f'lines with "action": "{action}"', [f'{name}.flagged'])
    return entry

  def _sample(self) -> str | None:
    path = os.path.join(self.workdir, 'sample.txt')
    if not os.path.exists(path):
      if self.meta['model'].get('arch', 'decoder') == 'decoder' and self.config is not None \
          and self.config[1].get('loop', 'pretrain') == 'pretrain':
        self.p.missing('sample.txt', 'no generated sample (train.py writes one when it finishes a decoder)',
                       f'rerun the command that trained {self.shown}')
      return None
    self.p.artefact(path, 'text generated at the end of training')
    with open(path, encoding='utf-8', errors='replace') as f:
      return f.read()

  def _notes(self) -> dict[str, str]:
    path = self.notes_file
    if self.notes_path and not os.path.exists(path):
      raise CardError(f'--notes={path} does not exist; write the sections as "## Intended use" etc. (python -m '
                      f'llm.card --help lists them), or leave --notes out')
    text = {}
    if os.path.exists(path):
      text = read_notes(path)
      self.p.artefact(path, 'the authors\' notes (intended use, limitations, ...)')
    return text

  # -- output --------------------------------------------------------------------------------------------------------
  def to_json(self) -> dict[str, Any]:
    p = self.p
    notes = {}
    for head, (key, title, what) in NOTE_SECTIONS.items():
      notes[key] = {'title': title, 'text': self.notes.get(key), 'filled': key in self.notes,
                    **({'source': {'path': p.rel(self.notes_file), 'sha256': p.artefacts[
                        os.path.abspath(self.notes_file)].sha256}} if key in self.notes else {})}
    return {
        'format': FORMAT,
        'generator': 'python -m llm.card (llm/card.py)',
        'workdir': p.rel(self.workdir),
        'checkpoint_step': self.ckpt.step,
        'values': p.values,
        'notes': notes,
        'lineage': [{k: v for k, v in e.items() if k != 'workdir'} for e in self.lineage],
        'absent': p.absent,
        'caveats': p.caveats,
        'artefacts': [{'path': p.rel(a.path), 'role': a.role, 'sha256': a.sha256, 'bytes': a.bytes, 'kind': a.kind,
                       'files': a.files} for a in sorted(p.artefacts.values(), key=lambda a: p.rel(a.path))],
    }


_MONITOR_ORDER = ('outputs', 'harmful_rate', 'flagged_rate', 'sentiment_mean', 'sentiment_asymmetry/', 'sentiment/',
                  'mentions/', 'seconds')


def _monitor_order(key: str) -> tuple[bool, int, str]:
  """Sort key of a ``monitor/...`` metric: the generations of evaluators before the end-of-training sample's
  (``monitor/sample/...``), and within each the rates of llm/eval/monitor.py's docstring in its order."""
  rest = key.split('/', 1)[1]
  sample = rest.startswith('sample/')
  rest = rest[len('sample/'):] if sample else rest
  rank = next((i for i, o in enumerate(_MONITOR_ORDER) if rest == o or (o.endswith('/') and rest.startswith(o))),
              len(_MONITOR_ORDER))
  return sample, rank, rest


def _base_link(meta: dict[str, Any]) -> tuple[str, tuple, str, Any] | None:
  """(relation, (pointer keys of the base, of its step), base, base step) of a checkpoint's recorded origin."""
  ft = meta.get('finetuned_from')
  if isinstance(ft, dict) and ft.get('init'):
    keys = (('finetuned_from', 'init'), ('finetuned_from', 'init_step'))
    return f'fine-tuned ({ft.get("method", "?")}) from', keys, ft['init'], ft.get('init_step')
  if meta.get('init_from'):
    return 'continued pre-training from', (('init_from',), ('init_step',) if 'init_step' in meta else None), \
        meta['init_from'], meta.get('init_step')
  merged = meta.get('merged_from')
  if isinstance(merged, dict) and merged.get('workdir'):
    return 'LoRA adapters merged from', (('merged_from', 'workdir'), ('merged_from', 'step')), merged['workdir'], \
        merged.get('step')
  if meta.get('imported_from'):
    return 'imported from', (('imported_from',), None), meta['imported_from'], None
  return None


# ----- Markdown --------------------------------------------------------------------------------------------------

BIAS_TASKS = ('crows_pairs', 'winobias', 'bbq')


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head), *('| ' + ' | '.join(r) + ' |' for r in rows), '']


def render(b: CardBuilder, command: str) -> str:
  """MODEL_CARD.md from a built card: every number through ``Provenance.link``."""
  p = b.p
  L = p.link
  v = lambda name: p.values[name]['value'] if name in p.values else None  # noqa: E731
  name = os.path.basename(b.workdir.rstrip('/'))
  md = [f'# Model card: {name}', '',
        f'Generated by `{command}` from the files of `{b.shown}` (sections after Mitchell et al., 2019, '
        '"Model Cards for Model Reporting"). Every number links to the file it came from; [Provenance](#provenance) '
        f'lists each file with its SHA-256, and `python -m llm.card --workdir={b.shown}{b.out_flag} --check` '
        'verifies them. '
        f'Regenerate the card rather than editing it: the authors\' sections come from `{p.rel(b.notes_file)}`.', '']

  def notes(key: str, auto: list[str] | None = None) -> list[str]:
    head = next(h for h, (k, _, _) in NOTE_SECTIONS.items() if k == key)
    _, title, what = NOTE_SECTIONS[head]
    out = []
    if key in b.notes:
      out += [b.notes[key], '']
    elif head not in UNMARKED:
      out += [f'{TO_FILL} {what[0].upper() + what[1:]}: write them under `## {title}` in `{p.rel(b.notes_file)}` '
              'and generate the card again.', '']
    return out + (auto or [])

  # Model details
  loop = v('run.loop')
  made_by = {'pretrain': 'made by `train.py` (pre-training)', 'finetune': 'made by `finetune.py` (fine-tuning)'}.get(
      loop, 'a parameters-only checkpoint (an import, a LoRA merge or the best checkpoint of a fine-tuning)')
  md += ['## Model details', '']
  md += notes('model_details')
  saved = ''
  if p.has('checkpoint.saved'):
    when = datetime.datetime.fromtimestamp(v('checkpoint.saved') / 1e9, datetime.timezone.utc)
    saved = f', saved {L("checkpoint.saved", when.strftime("%Y-%m-%d %H:%M UTC"))}'
  md += [f'- **Model**: {L("model.arch")} ({L("model.family")}), {L("model.params")} parameters, checkpoint step '
         f'{L("checkpoint.step")}{saved}, {made_by}.']
  tok = f'- **Tokenizer**: {L("tokenizer.kind")}'
  if p.has('tokenizer.file'):
    tok += f', file {L("tokenizer.file")} (SHA-256 {L("tokenizer.recorded_sha256")})' if p.has(
        'tokenizer.recorded_sha256') else f', file {L("tokenizer.file")}'
  md += [tok + f', vocabulary {L("model.vocab_size")} (embedding padded to a multiple of '
         f'{L("model.vocab_multiple")}).' if p.has('model.vocab_multiple') else tok + '.']
  if b.lineage:
    md += ['- **Lineage** (what this model was made from, each base as it records its own):']
    for e in b.lineage:
      n = e['name']
      line = f'  - {e["relation"]} {L(n + ".base")}'
      if p.has(n + '.step'):
        line += f' at its step {L(n + ".step")}'
      if p.has(n + '.data'):
        line += f' on {L(n + ".data")}'
      if p.has(n + '.params'):
        line += f'; {L(n + ".params")} parameters'
      if p.has(n + '.trained_on'):
        line += f'; trained on {L(n + ".trained_on")}'
      if p.has(n + '.energy_kwh'):
        line += f'; {L(n + ".energy_kwh")} kWh, {L(n + ".co2e_kg")} kg CO2e'
      ws = [k for k in p.values if k.startswith(n + '.weights.') or k.startswith(n + '.files.')]
      if ws:
        line += '; source files ' + ', '.join(f'{p.values[k].get("label", "")} {L(k, v(k)[:16] + "…")}' for k in ws)
      if e['readable'] and e.get('workdir'):
        line += f' (its own card: `python -m llm.card --workdir={e["workdir"]}`)'
      md += [line]
  else:
    md += ['- **Lineage**: trained from random initialisation (the checkpoint records no base model).']
  rows = []
  for k in ('d_model', 'n_layers', 'n_decoder_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff', 'max_seq_len',
            'positions', 'norm', 'norm_position', 'mlp', 'use_bias', 'tie_embeddings', 'param_dtype', 'lora_rank',
            'lora_alpha', 'lora_targets', 'num_labels', 'labels'):
    if p.has(f'model.{k}'):
      rows.append([k, L(f'model.{k}')])
  md += ['', 'Architecture (from the checkpoint metadata):', ''] + _table(['field', 'value'], rows)

  # Intended use, factors
  md += ['## Intended use', ''] + notes('intended_use')
  factors = []
  groups = sorted({t['task'] for e in b.evaluations for t in e['tasks'] if t['task'].startswith(BIAS_TASKS)
                   and t['task'] not in BIAS_TASKS})
  if groups:
    factors = ['Evaluated groups (the bias probes\' breakdowns, under Quantitative analyses): '
               + ', '.join(f'`{g}`' for g in groups) + '.', '']
  md += ['## Factors', ''] + notes('factors', factors)

  # Metrics
  auto = []
  if b.metrics is not None:
    auto += ['- Training: the mean next-token (or the objective\'s) cross-entropy in nats per token on the training '
             'batches (`train_loss`) and on held-out validation rows (`val_loss`, `val_perplexity`).']
  for e in b.evaluations:
    for t in e['tasks']:
      if t['task'].startswith(BIAS_TASKS) and t['task'] not in BIAS_TASKS:
        continue
      hib = t['higher_is_better']
      auto.append(f'- `{t["task"]}`: ' + ', '.join(
          f'{m} ({"higher" if hib.get(m) else "lower" if m in hib else "?"} is better)' for m in t['metrics']))
  if b.evaluations:
    auto += ['- Standard errors are over documents, as lm-evaluation-harness computes them.']
  md += ['## Metrics', ''] + notes('metrics', auto + [''] if auto else ['No evaluation recorded.', ''])

  # Evaluation data
  md += ['## Evaluation data', '']
  if not b.evaluations:
    md += ['Not recorded: no evaluation of this checkpoint was found (see [Not recorded](#not-recorded)).', '']
  for e in b.evaluations:
    n = e['name']
    md += [f'Evaluation `{p.rel(e["path"])}` of step {L(n + ".step")} on {L(n + ".devices")} ({L(n + ".date")}). '
           'Data files as the task configs name them (relative to each task file; the evaluation recorded no hashes):',
           '']
    rows = []
    for t in e['tasks']:
      if t['data_files'] is None:
        continue
      files = t['data_files'] if isinstance(t['data_files'], dict) else {'': t['data_files']}
      rows.append([f'`{t["task"]}`', L(f'{n}.{t["task"]}.n') if p.has(f'{n}.{t["task"]}.n') else 'n/a',
                   L(f'{n}.{t["task"]}.k') if p.has(f'{n}.{t["task"]}.k') else 'n/a',
                   '; '.join((f'{s}: ' if s else '') + ', '.join(f'`{x}`' for x in ([f] if isinstance(f, str) else f))
                             for s, f in files.items())])
    md += _table(['task', 'documents', 'few-shot k', 'data files'], rows)

  # Training data
  md += ['## Training data', '']
  if not b.data:
    md += ['Not recorded: this checkpoint has no training config (a parameters-only checkpoint); see its lineage.', '']
  for e in b.data:
    n = e['name']
    weight = f' (mixture weight {e["weight"]:g})' if len(b.data) > 1 else ''
    md += [f'- `{e["spec"]}`{weight}:']
    if p.has(f'{n}.train.tokens'):
      md += [f'  - prepared corpus: train {L(n + ".train.docs")} documents, {L(n + ".train.tokens")} tokens; '
             f'validation {L(n + ".validation.docs")} documents, {L(n + ".validation.tokens")} tokens (SHA-256 of '
             'the sources as recorded when it was prepared)']
    for pattern, files in e.get('manifest') or []:
      md += [f'  - prepared from {L(pattern)}' + (':' if files else ' (a TFDS dataset: its report is below when '
                                                    'readable)')]
      md += [f'    - `{p.values[k].get("label", "")}` SHA-256 {L(k)}' for k in files]
    for k in e['files']:
      md += [f'  - `{p.values[k].get("label", "")}` SHA-256 {L(k)}']
    if not e['files'] and not e.get('manifest'):
      md += ['  - not recorded: its files are not readable now (see Not recorded)']
  for d, cname in b.corpora.items():
    md += ['', f'**Corpus pipeline report** of `{p.rel(d)}` (inputs {L(cname + ".inputs")}): '
           f'{L(cname + ".totals.docs_out")} of {L(cname + ".totals.docs_in")} documents kept '
           f'({L(cname + ".totals.frac_docs_kept")} of documents, {L(cname + ".totals.frac_chars_kept")} of '
           'characters).', '']
    rows, i = [], 0
    while p.has(f'{cname}.funnel.{i}.stage'):
      f = f'{cname}.funnel.{i}'
      rows.append([f'`{v(f + ".stage")}`', L(f + '.docs_removed'), L(f + '.frac_of_input'), L(f + '.docs_remaining')])
      i += 1
    md += ['Funnel:', ''] + _table(['stage', 'documents removed', 'share of input', 'remaining'], rows)
    pii = [k for k in p.values if k.startswith(cname + '.pii.')]
    if pii:
      md += ['PII scrubbed: ' + ', '.join(f'{L(k)} {k.rsplit(".", 1)[1]}' for k in pii) + '.', '']
    cats = sorted({k.split('.')[3] for k in p.values if k.startswith(cname + '.representation.')
                   and k.count('.') == 4})
    if cats:
      md += [f'Representation audit (identity-term mentions per million words, before: '
             f'{L(cname + ".representation.words_before")} input words; after: '
             f'{L(cname + ".representation.words_after")} kept words):', '']
      keys = ('count_before', 'rate_before', 'count_after', 'rate_after', 'change', 'most_shifting_stage')
      rows = [[f'`{c}`'] + [L(f'{cname}.representation.{c}.{k}') for k in keys] for c in cats]
      md += _table(['category', 'mentions before', 'per M before', 'mentions after', 'per M after', 'change',
                    'most shifting stage'], rows)
      flags, i = [], 0
      while p.has(f'{cname}.flags.{i}.stage'):
        f = f'{cname}.flags.{i}'
        what = f'`{v(f + ".category")}`' + (f' / `{v(f + ".term")}`' if v(f + '.term') else '')
        flags.append(f'- **`{v(f + ".stage")}` removes {what} out of proportion**: {L(f + ".share_of_mentions")} of '
                     f'its mentions for {L(f + ".share_of_words")} of the words ({L(f + ".disproportion")}×)')
        i += 1
      md += (['Flagged (a stage removing a group\'s mentions more than '
              f'{L(cname + ".representation.flag_ratio")}× its share of words):', ''] + flags + ['']) if flags else [
                  'No stage removed any category or term out of proportion.', '']
  splits = sorted({k.split('.')[2] for k in p.values if k.startswith('finetune.data.')})
  if splits:
    counts = sorted({k.split('.', 3)[3] for k in p.values if k.startswith('finetune.data.')})
    md += ['', 'Fine-tuning examples as `finetune.py` counted them:', '']
    md += _table(['split', *counts], [[s, *(L(f'finetune.data.{s}.{c}') for c in counts)] for s in splits])
  if md[-1] != '':
    md += ['']
  if any(not e['spec'].startswith('task:') for e in b.data) and not b.corpora:
    md += ['Corpus report: not recorded (the sources did not come from `llm.data.clean.pipeline`, or its output '
           'is not readable here).', '']
  md += _mitigation_md(b)

  # Training procedure
  md += ['## Training procedure', '']
  if b.config is None:
    md += ['Not recorded (a parameters-only checkpoint: see the lineage for how its weights were trained).', '']
  else:
    rows = [[f'`{k[len("config."):]}`', L(k)] for k in p.values if k.startswith('config.')]
    if p.has('train.tokens'):
      rows.append(['tokens trained on (step × batch × seq_len)', L('train.tokens')])
    md += _table(['setting', 'value'], rows)
  if p.has('metrics.last.step'):
    line = f'At step {L("metrics.last.step")}: training loss {L("metrics.last.train_loss")}'
    if p.has('metrics.val.val_loss'):
      line += (f'; validation loss {L("metrics.val.val_loss")} (perplexity {L("metrics.val.val_perplexity")}) at '
               f'step {L("metrics.val.step")}')
    if p.has('metrics.last.tokens_per_sec'):
      line += f'; {L("metrics.last.tokens_per_sec")} tokens/s'
    if p.has('metrics.last.mfu'):
      line += f', MFU {L("metrics.last.mfu")}'
    md += [line + '.', '']
  if b.sample is not None:
    md += [f'Sample generated at the end of training (`{p.rel(os.path.join(b.workdir, "sample.txt"))}`):', '',
           '```', b.sample[:600].replace('```', "'''"), '```', '']

  # Quantitative analyses
  md += ['## Quantitative analyses', '']
  if p.has('finetune.best.value') or p.has('best.value'):
    if p.has('finetune.metric'):
      rows = [[f'base model, {k.rsplit(".", 1)[1]}', L(k)] for k in p.values if k.startswith('finetune.baseline.')]
      rows.append([f'fine-tuned ({L("finetune.method")}), best at step {L("finetune.best.step")}',
                   L('finetune.best.value')])
      md += [f'Fine-tuning, `{v("finetune.metric")}`:', ''] + _table(['model', 'value'], rows)
      if p.has('finetune.trainable_params'):
        md += [f'Trainable parameters {L("finetune.trainable_params")} of {L("finetune.total_params")}.', '']
    else:
      md += [f'Best checkpoint: `{v("best.metric")}` = {L("best.value")} at step {L("best.step")}.', '']
  if p.has('metrics.eval.step'):
    rows = [[f'`{k[len("metrics.eval."):]}`', L(k)] for k in p.values
            if k.startswith('metrics.eval.') and k != 'metrics.eval.step']
    md += [f'Evaluators during training, at step {L("metrics.eval.step")}:', '']
    md += _table(['task/metric', 'value'], rows)
  for e in b.evaluations:
    n = e['name']
    rows, bias = [], []
    for t in e['tasks']:
      for m in t['metrics']:
        k = f'{n}.{t["task"]}.{m}'
        row = [f'`{t["task"]}`', m, L(k), L(k + '_stderr') if p.has(k + '_stderr') else '',
               L(f'{n}.{t["task"]}.n') if p.has(f'{n}.{t["task"]}.n') else '',
               L(f'{n}.{t["task"]}.k') if p.has(f'{n}.{t["task"]}.k') else '']
        (bias if t['task'].startswith(BIAS_TASKS) else rows).append(row)
    head = ['task', 'metric', 'value', '± stderr', 'n', 'k']
    if rows:
      md += [f'Evaluation of step {L(n + ".step")} (`{p.rel(e["path"])}`):', ''] + _table(head, rows)
    md += ['### Bias probes', '']
    if bias:
      md += ['CrowS-Pairs `pct_stereotype`: 50% = no preference for the stereotyping sentence; WinoBias '
             '`pro_anti_gap`: 0 = the stereotype does not change pronoun resolution; BBQ `s_dis`/`s_amb`: 0 = no '
             'bias, +1 always biased (Parrish et al., 2022)'
             + (f'. Readings and plots: [`{p.rel(e["bias_report"])}`]({p.rel(e["bias_report"])}).'
                if e['bias_report'] else '.'), ''] + _table(head, bias)
    else:
      md += ['Not recorded: the evaluation ran no bias probe (`configs/fewshot.py` runs CrowS-Pairs, WinoBias and BBQ '
             'unless `bias=False`).', '']
  if not b.evaluations:
    md += ['Evaluation on the shipped tasks: not recorded (no evaluation of this checkpoint was found; see '
           '[Not recorded](#not-recorded)).', '', '### Bias probes', '',
           'Not recorded: CrowS-Pairs, WinoBias and BBQ run in the evaluation (`configs/fewshot.py`).', '']

  md += _monitor_md(b)

  # Energy and carbon
  md += ['## Energy and carbon', '']
  if b.footprint:
    md += [f'{L("footprint.energy_kwh")} kWh (IT energy {L("footprint.it_energy_kwh")} kWh × PUE '
           f'{L("footprint.pue")}) and {L("footprint.co2e_kg")} kg CO2e at {L("footprint.intensity_g_per_kwh")} '
           f'gCO2e/kWh (region {L("footprint.region")}), over {L("footprint.seconds")} s in {L("footprint.runs")} '
           'process(es) on '
           + (f'{L("footprint.devices.count")} {L("footprint.devices.kind")} device(s) '
              f'({L("footprint.device_hours")} device-hours)' if v('footprint.devices.count') else
              f'CPU ({L("footprint.host_cpu")}, {L("footprint.cpu_core_hours")} thread-hours)') + '.', '']
    rows = [[ph, L(f'footprint.phases.{ph}.seconds'), L(f'footprint.phases.{ph}.energy_kwh'),
             L(f'footprint.phases.{ph}.co2e_kg')] for ph in
            sorted({k.split('.')[2] for k in p.values if k.startswith('footprint.phases.')})]
    md += _table(['phase', 'seconds', 'kWh', 'kg CO2e'], rows)
    how = [L(f'footprint.method.{k}') for k in ('accelerators', 'host_cpu') if p.has(f'footprint.method.{k}')]
    md += [f'Method: {"; ".join(how)}. Not counted: {L("footprint.method.not_counted")}.' if how else '', '']
  else:
    md += ['Not recorded (see [Not recorded](#not-recorded)).', '']
  for e in b.evaluations:
    if e['footprint']:
      f = e['footprint']
      md += [f'Its evaluation (`{p.rel(e["dir"])}`): {L(f + ".energy_kwh")} kWh, {L(f + ".co2e_kg")} kg CO2e.', '']
  if any(p.has(f'{e["name"]}.energy_kwh') for e in b.lineage):
    md += ['The base models\' own energy is listed under Lineage (not included above).', '']

  # Ethical considerations, caveats
  eth = []
  flagged = [k for k in p.values if '.flags.' in k and k.endswith('.stage')]
  if flagged:
    eth.append(f'- The corpus pipeline flagged {len(flagged)} disproportionate removal(s) of identity-term mentions '
               '(Training data).')
  if any(t['task'].startswith(BIAS_TASKS) for e in b.evaluations for t in e['tasks']):
    eth.append('- Bias probe results are under Quantitative analyses; they measure associations on three English '
               'benchmarks, not harms in use.')
  if b.mitigation is not None and b.mitigation['on']:
    kinds = {'counterfactual': 'counterfactual augmentation', 'reweight': 'representation-aware reweighting',
             'debias_weight': 'a debiasing loss'}
    eth.append('- Bias mitigation was applied in training (' + ', '.join(kinds[k] for k in b.mitigation['on'])
               + '): Training data, Bias mitigation, says what it changed.')
  for m in b.monitoring:
    if p.has(m['name'] + '.flagged'):
      where = 'training' if m['evaluation'] is None else f'evaluation `{p.rel(m["evaluation"]["path"])}`'
      eth.append(f'- The generation monitor flagged or blocked {L(m["name"] + ".flagged")} output(s) in {where} '
                 f'(`{p.rel(m["flags"])}`; Quantitative analyses, Monitored generation).')
  if p.has('monitor.config.enabled') and not v('monitor.config.enabled'):
    eth.append(f'- Generated text was not monitored in training (`monitor.enabled` {L("monitor.config.enabled")}).')
  md += ['## Ethical considerations', ''] + notes('ethical_considerations', eth + [''] if eth else [])
  md += ['## Caveats and recommendations', ''] + notes('caveats', [f'- {c}' for c in p.caveats] + ['']
                                                        if p.caveats else [])

  # Not recorded, provenance
  md += ['## Not recorded', '']
  if p.absent:
    md += _table(['artefact', 'why', 'how to make it'],
                 [[f'`{a["artefact"]}`', a['why'], a.get('make', '')] for a in p.absent])
  else:
    md += ['Every artefact the card looks for was found.', '']
  md += ['## Provenance', '', 'Every file this card cites, with its SHA-256 (a folder: the SHA-256 of its files\' '
         'relative paths and SHA-256s, sorted). Paths are relative to this card.', '']
  md += _table(['file', 'what', 'SHA-256', 'bytes'],
               [[f'[`{p.rel(a.path)}`]({p.rel(a.path)})' + (f' ({a.files} files)' if a.kind == 'directory' else ''),
                 a.role, f'`{a.sha256}`', f'{a.bytes:,}'] for a in sorted(p.artefacts.values(),
                                                                         key=lambda a: p.rel(a.path))])
  return '\n'.join(md).rstrip('\n') + '\n'


def _config_link(p: Provenance, name: str) -> str:
  """A config value's link; an empty string shown as ''."""
  return p.link(name, "''" if p.values.get(name, {}).get('value') == '' else None)


def _mitigation_md(b: CardBuilder) -> list[str]:
  """Training data, Bias mitigation: the config that turns it on and what data_mitigation.json says it did."""
  m, p = b.mitigation, b.p
  if m is None:
    return []
  L = p.link
  v = lambda name: p.values[name]['value'] if name in p.values else None  # noqa: E731
  md = ['### Bias mitigation', '']
  prefix = f'mitigation.config.{m["section"]}.'
  listing = ', '.join(f'`{k[len("mitigation.config."):]}` {_config_link(p, k)}' for k in p.values
                      if k.startswith(prefix))
  if not m['on']:
    if m['switches']:
      what = ('counterfactual augmentation (llm/data/counterfactual.py) nor representation-aware reweighting '
              '(llm/data/reweight.py)' if m['section'] == 'data' else
              'counterfactual augmentation of the fine-tuning examples nor a debiasing loss')
      md += [f'None applied: neither {what} was on in the run\'s config ({listing}); the training '
             f'{"documents" if m["section"] == "data" else "examples"} were used as read.', '']
    else:
      fields = '`data.counterfactual` or `data.reweight`' if m['section'] == 'data' else '`sft.counterfactual`'
      md += [f'None applied: the run\'s config (`{p.rel(b.config[0].path)}`) has no {fields} (it predates them).', '']
  else:
    md += [f'Configuration (`{p.rel(b.config[0].path)}`): {listing}.', '']
  if m['report'] is None:
    if m['on'] and m['section'] == 'data':
      md += [f'What they did: not recorded (no `{MITIGATION_FILE}`; see [Not recorded](#not-recorded)).', '']
    return md
  if p.has('mitigation.cf.documents'):
    md += [f'Counterfactual augmentation (llm/data/counterfactual.py) of categories {L("mitigation.cf.categories")}, '
           f'mode {L("mitigation.cf.mode")}, rate {L("mitigation.cf.rate")}: {L("mitigation.cf.with_swap")} of '
           f'{L("mitigation.cf.documents")} training documents have a term to swap; counterfactual copies added '
           f'{L("mitigation.cf.added")}, documents replaced by their counterfactual '
           f'{L("mitigation.cf.substituted")}.', '']
    swaps = [k for k in p.values if k.startswith('mitigation.cf.swaps.')]
    if swaps:
      md += ['Swaps per category, in the documents written into the corpus (the copies or the substitutes):', '']
      md += _table(['category', 'swaps'], [[f'`{p.values[k].get("label", "")}`', L(k)] for k in swaps])
    top = [k for k in p.values if k.startswith('mitigation.cf.top.')]
    if top:
      md += ['Most swapped terms: ' + ', '.join(f'`{p.values[k].get("label", "")}` {L(k)}' for k in top) + '.', '']
  for r in m['reweighting']:
    n = r['name']
    what = v(n + '.what') or 'documents'
    line = (f'Representation-aware reweighting (llm/data/reweight.py) of `{r["source"]}`: {L(n + ".items")} {what}, '
            f'{L(n + ".upweighted")} upweighted, {L(n + ".downweighted")} downweighted')
    if p.has(n + '.copies'):
      line += f'; resampled to {L(n + ".copies")} documents ({L(n + ".dropped")} dropped)'
    if p.has(n + '.max_weight'):
      line += f'; weights capped at {L(n + ".max_weight")}×'
    md += [line + '.', '']
    rows = []
    for t in r['targets']:
      group = f':{v(t + ".group")}' if p.has(t + '.group') else ''
      measure = f'{v(t + ".category")} mentions' if group else 'documents'
      rows.append([f'`{v(t + ".category")}{group}`', measure, L(t + '.before'), L(t + '.share'), L(t + '.expected'),
                   L(t + '.realised') if p.has(t + '.realised') else 'n/a',
                   L(t + '.focus') if p.has(t + '.focus') else 'n/a',
                   L(t + '.factor') if p.has(t + '.factor') else 'n/a'])
    if rows:
      md += ['Per target: the share before reweighting (after any augmentation), the target, the share the weights '
             'give (expected) and the share in the resampled documents (realised); the documents reweighted and by '
             'what factor:', '']
      md += _table(['target', 'share of', 'before', 'target', 'expected', 'realised', f'{what} reweighted',
                    'factor'], rows)
  return md


def _monitor_md(b: CardBuilder) -> list[str]:
  """Quantitative analyses, Monitored generation: the monitor's config, its newest rates and the flagged outputs."""
  p = b.p
  L = p.link
  v = lambda name: p.values[name]['value'] if name in p.values else None  # noqa: E731
  md = ['### Monitored generation', '']
  if p.has('monitor.config.enabled'):
    if v('monitor.config.enabled'):
      cfg = f'on (`monitor.enabled` {L("monitor.config.enabled")}), action {L("monitor.config.action")}'
      if p.has('monitor.config.flag_on'):
        cfg += f', flagging on {L("monitor.config.flag_on")}'
      md += [f'The generation monitor (llm/eval/monitor.py) was {cfg} in training: it scored the generations of the '
             'evaluators during training and the end-of-training sample.', '']
    else:
      md += [f'The generation monitor (llm/eval/monitor.py) was off in training (`monitor.enabled` '
             f'{L("monitor.config.enabled")}): the generations of training (evaluators, the end-of-training sample) '
             'were not scored (`--config.monitor.enabled=True` scores them).', '']
  elif b.config is not None:
    md += ['The generation monitor: not recorded (the run\'s config has no `monitor` section: it predates '
           'llm/eval/monitor.py).', '']
  for m in b.monitoring:
    n, e = m['name'], m['evaluation']
    where = 'Training run' if e is None else f'Evaluation `{p.rel(e["path"])}` of step {L(e["name"] + ".step")}'
    if not m['keys'] and m['flags'] is None:
      if e is not None:
        md += [f'{where}: no monitor rates recorded (it ran with the monitor off, or generated nothing).', '']
      continue
    if m['keys']:
      md += [f'{where}: the newest value of each monitor rate (`{p.rel(m["metrics"])}`; `monitor/sample/...`: the '
             'end-of-training sample):', '']
      md += _table(['metric', 'value', 'at step'], [[f'`{k}`', L(f'{n}.rate.{k}'), L(f'{n}.step.{k}')]
                                                     for k in m['keys']])
    elif e is None:
      md += [f'{where}: no monitor rates in `metrics.jsonl`.', '']
    if m['flags'] is not None:
      split = ', '.join(f'{L(f"{n}.flagged.{a}")} {done}' for a, done in (('flag', 'flagged'), ('block', 'blocked'))
                        if p.has(f'{n}.flagged.{a}'))
      md += [f'Outputs flagged or blocked: {L(n + ".flagged")}' + (f' ({split})' if split else '')
             + f', recorded in [`{p.rel(m["flags"])}`]({p.rel(m["flags"])}).', '']
    elif e is None and v('monitor.config.enabled') and v('monitor.config.action') != 'log':
      md += [f'Outputs flagged or blocked: none (no `{FLAGS_FILE}`).', '']
  return md


# ----- Writing and checking ----------------------------------------------------------------------------------------


def _short(v: Any) -> str:
  r = repr(v)
  return r if len(r) <= 60 else r[:57] + '...'


def _write(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)  # never a half-written card


def make_card(workdir: str, out: str | None = None, *, step: int | None = None, notes: str | None = None,
              evals: Sequence[str] = ()) -> tuple[str, str]:
  """Write MODEL_CARD.md and model_card.json for ``workdir`` into ``out`` (default: the workdir); returns both paths."""
  out = out or workdir
  if os.path.exists(out) and not os.path.isdir(out):
    raise CardError(f'--out={out} is a file; name a folder for the card')
  b = CardBuilder(workdir, out, step=step, notes=notes, evals=evals)
  os.makedirs(out, exist_ok=True)
  card = b.build()
  command = f'python -m llm.card --workdir={workdir}' + (f' --out={out}' if out != workdir else '') \
      + (f' --notes={notes}' if notes else '') + ''.join(f' --eval={e}' for e in evals) \
      + (f' --step={step}' if step is not None else '')
  md = render(b, command)
  md_path, json_path = os.path.join(out, CARD_MD), os.path.join(out, CARD_JSON)
  _write(md_path, md)
  import hashlib
  card['markdown'] = {'path': CARD_MD, 'sha256': hashlib.sha256(md.encode('utf-8')).hexdigest()}
  _write(json_path, json.dumps(card, indent=1, ensure_ascii=False, allow_nan=False) + '\n')
  return md_path, json_path


def check_card(card_dir: str, workdir: str | None = None) -> str:
  """Re-verify a card: every artefact's SHA-256, every value against its source, the Markdown's hash.

  Returns a one-line summary; raises CardError naming every file that is missing or changed.
  """
  path = os.path.join(card_dir, CARD_JSON)
  regen = f'python -m llm.card --workdir={workdir or card_dir}'
  if not os.path.exists(path):
    raise CardError(f'{card_dir} holds no model card ({CARD_JSON}); make one: `{regen}`')
  card = read_json(path, 'model card', f'regenerate it: `{regen}`')
  found = card.get('format') if isinstance(card, dict) else None
  if found != FORMAT:
    raise CardError(f'{path} is not a model card of this version (format {found!r}, expected {FORMAT!r}); '
                    f'regenerate it: `{regen}`')
  problems, current = [], {}
  for a in card.get('artefacts', []):
    full = os.path.normpath(os.path.join(card_dir, a['path']))
    if not os.path.exists(full):
      problems.append(f'{full} is missing')
      continue
    sha = tree_sha256(full)[0] if a.get('kind') == 'directory' else file_sha256(full)
    current[a['path']] = sha
    if sha != a['sha256']:
      problems.append(f'{full} changed (SHA-256 {a["sha256"][:12]}… when the card was made, {sha[:12]}… now)')
  known = {a['path'] for a in card.get('artefacts', [])}
  docs: dict[str, Any] = {}
  for name, entry in card.get('values', {}).items():
    src = entry.get('source')
    if src is None:
      continue
    if src['path'] not in known:
      problems.append(f'value {name} cites {src["path"]}, which the card does not list')
      continue
    if current.get(src['path']) != src['sha256'] or 'key' not in src or 'derived' in entry:
      continue  # a changed file is reported above; a whole file's value is its hash; a derived one, its inputs'
    full = os.path.normpath(os.path.join(card_dir, src['path']))
    try:
      if 'line' in src:
        with open(full, encoding='utf-8') as f:
          doc = json.loads(f.read().splitlines()[src['line'] - 1])
      else:
        if full not in docs:
          with open(full, encoding='utf-8') as f:
            docs[full] = json.load(f)
        doc = docs[full]
      value = at_pointer(doc, src['key'])
      value = len(value) if src.get('count') else value
    except (OSError, ValueError, KeyError, IndexError, TypeError):
      problems.append(f'value {name} is not at {src["key"]} of {full}')
      continue
    if _plain(value) != entry['value']:
      problems.append(f'value {name} is {_short(entry["value"])} in {path} but {_short(_plain(value))} in {full}')
  md = card.get('markdown') or {}
  md_path = os.path.join(card_dir, md.get('path', CARD_MD))
  if not os.path.exists(md_path):
    problems.append(f'{md_path} is missing')
  elif file_sha256(md_path) != md.get('sha256'):
    problems.append(f'{md_path} was edited after it was generated (put your text in {NOTES_FILE} and regenerate)')
  if problems:
    raise CardError(f'the model card in {card_dir} no longer matches its sources: ' + '; '.join(problems)
                    + f'. If the change is intended, regenerate the card: `{regen}`')
  return (f'{md_path}: verified {len(card.get("artefacts", []))} artefacts and '
          f'{sum(1 for e in card.get("values", {}).values() if "source" in e)} values')


def main(argv: list[str] | None = None) -> int:
  sections = ', '.join(f'"## {t}"' for _, t, _ in NOTE_SECTIONS.values())
  p = argparse.ArgumentParser(prog='python -m llm.card', description=__doc__.split('\n\n')[0],
                              epilog=f'Notes sections (--notes or <workdir>/{NOTES_FILE}): {sections}.')
  p.add_argument('--workdir', required=True, help='the run: a train.py / finetune.py / llm.hf import workdir')
  p.add_argument('--out', default=None, help='folder for MODEL_CARD.md and model_card.json (default: the workdir)')
  p.add_argument('--notes', default=None, help=f'the authors\' sections (default: <workdir>/{NOTES_FILE} if present)')
  p.add_argument('--eval', action='append', default=[], help='an evaluation workdir of this checkpoint (repeatable; '
                 'those beside or inside the workdir are found on their own)')
  p.add_argument('--step', type=int, default=None, help='the checkpoint step to describe (default: the newest)')
  p.add_argument('--check', action='store_true', help='verify an existing card against its sources instead')
  args = p.parse_args(argv)
  try:
    if args.check:
      print(check_card(args.out or args.workdir, args.workdir), flush=True)
    else:
      md, js = make_card(args.workdir, args.out, step=args.step, notes=args.notes, evals=args.eval)
      print(f'wrote {md} and {js}', flush=True)
  except CardError as e:  # bad input or a failed check: one message, no traceback
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
