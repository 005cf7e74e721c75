"""The corpus pipeline's stage functions, shared by both runners.

The in-process runner (``pipeline``) and the Beam runner (``beam``) both import these and
nothing of each other: per file, ``FileProcessor`` (read, rules, dedup keys); per
surviving document, ``finalize`` (line dedup, PII, identity terms, split); per shard,
``write_shard`` (sorted by id, byte-stable gzip). Global decisions are "smallest id wins"
in both runners, so their outputs are byte-identical.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
from typing import Iterable

import xxhash

from llm.data.clean import dedup, pii, readers, rules
from llm.data.clean.document import Doc, DocOutcome, FileStats

DEDUP_STAGES = ('exact_dedup', 'near_dedup', 'line_dedup_empty')
PIPELINE_VERSION = 2  # part of every cache key, with the code and data hashes below
PREVIEW_CHARS = 300
SPLITS = ('train', 'validation')
RUNNERS = ('local', 'beam')


@dataclasses.dataclass(frozen=True)
class DedupConfig:
  exact: bool = True
  near: bool = True
  lines: bool = True  # C4-style repeated lines across documents
  minhash: dedup.MinHashConfig = dedup.MinHashConfig()


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  inputs: str  # comma-separated globs
  output: str  # output folder
  name: str = 'default'  # TFDS builder config name
  version: str = '1.0.0'  # TFDS version of the produced dataset
  reader: readers.ReaderConfig = readers.ReaderConfig()
  rules: rules.RulesConfig = rules.RulesConfig()
  dedup: DedupConfig = DedupConfig()
  pii: pii.PIIConfig = pii.PIIConfig()
  val_fraction: float = 0.01  # documents sent to validation, by a hash of their text
  shards: int = 8  # output shards per split
  workers: int = 0  # processes for stage 1; 0 = one per CPU
  all_rules: bool = True  # evaluate every rule on every document (the report's rule overlap)
  examples_per_rule: int = 3  # removed examples per stage in the report
  identity_terms_dir: str = ''  # '' = data/identity_terms
  write_tfds: bool = True
  write_outcomes: bool = False  # also write outcomes.jsonl.gz: one decision row per input document
  runner: str = 'local'  # 'local' (processes on this machine) or 'beam' (Apache Beam)
  beam_args: str = '--runner=DirectRunner'  # Beam pipeline options when runner='beam'


def stages(cfg: 'PipelineConfig') -> list[str]:
  """The report's stages, in order: the enabled rules, then the enabled dedup steps."""
  on = {'exact_dedup': cfg.dedup.exact, 'near_dedup': cfg.dedup.near, 'line_dedup_empty': cfg.dedup.lines}
  return rules.RuleChain(cfg.rules).names + [s for s in DEDUP_STAGES if on[s]]


# ------------------------------------------------------------------ stage 1: per file


@dataclasses.dataclass
class Item:
  """A document that survived the rules, with its deduplication keys."""
  outcome: DocOutcome
  text: str
  exact: bytes
  bands: list[bytes]
  lines: list[int]
  url: str = ''


class FileProcessor:
  """Stage 1 for one file: read, run the rules, compute dedup keys. Picklable."""

  def __init__(self, cfg: PipelineConfig):
    from llm.data.clean.audit import TermCounter  # pylint: disable=import-outside-toplevel
    self.cfg = cfg
    self.chain = rules.RuleChain(cfg.rules)
    self.minhash = dedup.MinHasher(cfg.dedup.minhash)
    self.terms = TermCounter(cfg.identity_terms_dir or None)

  def process_doc(self, doc: Doc) -> tuple[DocOutcome, Item | None]:
    text = doc.text
    res = self.chain(text, all_rules=self.cfg.all_rules)
    o = DocOutcome(id=doc.id, source=doc.source, chars_in=len(text), words_in=_count_words(text),
                   failed=res.failed, edits=dict(res.edits), signals=res.signals,
                   terms_in=self.terms.count(text), preview=text[:PREVIEW_CHARS])
    if res.removed_by:
      o.kept, o.removed_by, o.reason = False, res.removed_by, res.reason
      return o, None
    out = res.text
    bands = self.minhash.band_keys(self.minhash.signature_from_text(out)) if self.cfg.dedup.near else []
    return o, Item(o, out, dedup.exact_key(out) if self.cfg.dedup.exact else b'', bands,
                   dedup.line_keys(out) if self.cfg.dedup.lines else [], str(doc.meta.get('url', '')))

  def process_file(self, path: str) -> tuple[FileStats, list[DocOutcome], list[Item]]:
    """Stage 1 of one input file; ``path`` as ``readers.list_files`` gives it (it starts every id)."""
    stats = FileStats(path=path)
    outcomes, items = [], []
    for doc in readers.read_file(path, path, self.cfg.reader, stats):
      o, item = self.process_doc(doc)
      outcomes.append(o)
      if item is not None:
        items.append(item)
    return stats, outcomes, items


def _count_words(text: str) -> int:
  return len(text.split())


# ---------------------------------------------------------- stage 2-3: global + per doc


def drop(item: Item, stage: str, reason: str) -> DocOutcome:
  """Marks a surviving document as removed by a global stage; returns its outcome."""
  o = item.outcome
  o.kept, o.removed_by, o.reason = False, stage, reason
  return o


def _survivors(items: list[Item], drops: set[str], stage: str, reason: str) -> list[Item]:
  for it in items:
    if it.outcome.id in drops:
      drop(it, stage, reason)
  return [it for it in items if it.outcome.kept]


def is_validation(text: str, val_fraction: float) -> bool:
  """Train/validation by a hash of the final text (stable across runs and runners)."""
  return xxhash.xxh64_intdigest(text.encode('utf-8', 'surrogatepass'), seed=17) % 1_000_000 < val_fraction * 1_000_000


def shard_of(doc_id: str, shards: int) -> int:
  return xxhash.xxh64_intdigest(doc_id.encode(), seed=29) % shards


def finalize(item: Item, owners: dict[int, str] | None, cfg: PipelineConfig, terms) -> tuple[DocOutcome, str | None]:
  """Line dedup, PII scrubbing and identity-term counts for one surviving document."""
  o, text = item.outcome, item.text
  if owners is not None:
    text, _, removed_chars = dedup.remove_repeated_lines(o.id, text, owners)
    if removed_chars:
      o.edits['line_dedup'] = o.edits.get('line_dedup', 0) + removed_chars
    if not text.strip():
      o.kept, o.removed_by, o.reason = False, 'line_dedup_empty', 'all_lines_repeated'
      return o, None
  if cfg.pii.enabled:
    text, counts = pii.scrub(text, cfg.pii)
    o.pii = {k: v for k, v in counts.items() if v}
  o.chars_out, o.words_out = len(text), _count_words(text)
  o.terms_out = terms.count(text)
  o.split = 'validation' if is_validation(text, cfg.val_fraction) else 'train'
  return o, text


# ------------------------------------------------------------------------ writing


TMP_MARK = '.tmp-'  # every temporary file or folder the pipeline writes has this in its name


def _atomic_write_jsonl_gz(path: str, rows: Iterable[dict]) -> None:
  tmp = f'{path}{TMP_MARK}{os.getpid()}'
  try:
    # No name, mtime=0: identical content gives identical bytes (runs and runners are comparable).
    with open(tmp, 'wb') as raw, gzip.GzipFile(filename='', fileobj=raw, mode='wb', mtime=0) as f:
      for r in rows:
        f.write(json.dumps(r, ensure_ascii=False).encode('utf-8', 'surrogatepass') + b'\n')
    os.replace(tmp, path)
  finally:
    _remove(tmp)


def _remove(path: str) -> None:
  """Removes a file or folder if it exists."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


def shard_path(out_dir: str, split: str, shard: int, shards: int) -> str:
  return os.path.join(out_dir, f'{split}-{shard:05d}-of-{shards:05d}.jsonl.gz')


def write_shard(out_dir: str, split: str, shard: int, shards: int, docs: Iterable[tuple[str, str, str]]) -> str:
  """docs: (id, text, url) of one shard -> its file, sorted by id; returns the path."""
  path = shard_path(out_dir, split, shard, shards)
  _atomic_write_jsonl_gz(path, ({'id': i, 'text': t, 'url': u} for i, t, u in sorted(docs)))
  return path


def write_shards(out_dir: str, docs: Iterable[tuple[str, str, str, str]], cfg: PipelineConfig) -> dict[str, list[str]]:
  """docs: (split, id, text, url) -> ``{split}-NNNNN-of-NNNNN.jsonl.gz``, each sorted by id."""
  os.makedirs(out_dir, exist_ok=True)
  buckets: dict[tuple[str, int], list[tuple[str, str, str]]] = {}
  for split, doc_id, text, url in docs:
    buckets.setdefault((split, shard_of(doc_id, cfg.shards)), []).append((doc_id, text, url))
  return {split: [write_shard(out_dir, split, s, cfg.shards, buckets.get((split, s), []))
                  for s in range(cfg.shards)] for split in SPLITS}
