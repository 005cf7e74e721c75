"""Corpus pipeline: files -> documents -> tokens -> packed rows -> tf.data batches.

1. Sources are globs of plain text or JSONL (``text`` field) files, optionally gzipped,
   each with a mixture weight: ``'data/a.txt:0.7,data/b.jsonl.gz:0.3'``, or prepared TFDS
   datasets with their own train/validation splits, such as the corpus pipeline's output:
   ``'tfds:runs/corpus/tfds/clean_corpus/default/1.0.0'``.
2. Documents are split into train and validation deterministically: ``split='tail'``
   keeps the last ``val_fraction`` of every document for validation (nanoGPT's split of
   one long text), ``split='document'`` sends whole documents to validation by a hash of
   their text (many short documents; duplicates land on the same side).
3. Each document becomes ``[BOS] tokens [EOS]`` (no BOS when the tokenizer's documents start
   without one, ``Tokenizer.add_bos``); inputs/targets are that shifted by one.
   Documents are packed back to back into rows of ``seq_len`` tokens. ``segments`` numbers
   the documents inside a row (1, 2, ...; 0 = padding) and ``positions`` restart at 0 for
   each, so attention never crosses documents and no target is predicted twice.
4. Batches come from tf.data. Element ``i`` of the global stream is a pure function of
   (seed, i): the source is drawn from the mixture weights and the row from a per-epoch
   permutation (``index_shuffle``). Resuming at step ``s`` therefore starts at element
   ``s * global_batch`` with no skipping, and each process reads only its own rows of
   every global batch (``jax.process_index()``).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import hashlib
import json
import os

import numpy as np

from llm.tokenizer import Tokenizer, TokenizerError, make_tokenizer

FIELDS = ('inputs', 'targets', 'positions', 'segments')


class DataError(ValueError):
  """Bad corpus input; the message names the file and what to change."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
  sources: str  # 'glob[:weight],glob[:weight]'; .jsonl/.json files are JSONL, others text; .gz allowed
  seq_len: int = 256  # tokens per row
  tokenizer: str = 'byte'  # 'byte', 'sentencepiece' or 'hf'
  spm_model: str = ''  # path to a SentencePiece .model when tokenizer='sentencepiece'
  hf_tokenizer: str = ''  # tokenizer.json (or its directory) when tokenizer='hf'
  doc_separator: str = 'file'  # text files: 'file' (one document), 'blank_line', or 'line'
  jsonl_field: str = 'text'  # JSONL field holding the document text
  split: str = 'document'  # 'tail' or 'document' (see module docstring)
  val_fraction: float = 0.1
  decode_errors: str = 'strict'  # 'strict' (fail on bad UTF-8) or 'replace' (U+FFFD)
  seed: int = 0  # shuffling and mixture sampling


def parse_sources(spec: str) -> list[tuple[str, float]]:
  """'a/*.txt:2,b.jsonl' -> [('a/*.txt', 2.0), ('b.jsonl', 1.0)]."""
  out = []
  for part in [p.strip() for p in spec.split(',') if p.strip()]:
    pattern, weight = part, 1.0
    head, sep, tail = part.rpartition(':')
    if sep and head and head != 'tfds':
      try:
        pattern, weight = head, float(tail)
      except ValueError:
        pass  # a ':' that is part of the path
    if weight <= 0:
      raise DataError(f'source {pattern!r} has weight {weight}; weights must be positive')
    out.append((pattern, weight))
  if not out:
    raise DataError('data.sources is empty; set it to a glob such as data/tinyshakespeare.txt')
  return out


def _open(path: str):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def _decode(raw: bytes, path: str, errors: str, line: int | None = None) -> str:
  try:
    return raw.decode('utf-8', errors=errors)
  except UnicodeDecodeError as e:
    where = f'line {line}' if line is not None else f'byte offset {e.start}'
    raise DataError(
        f'{path}: {where} is not valid UTF-8 ({e.reason}); fix the file or set '
        f"--config.data.decode_errors=replace to substitute U+FFFD") from None


def read_documents(path: str, cfg: DataConfig) -> list[str]:
  """The documents of one file, in order. Raises DataError naming the file on bad input."""
  name = path[:-3] if path.endswith('.gz') else path
  try:
    with _open(path) as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'{path}: cannot be read ({e}); check the file (a truncated .gz?)') from None
  if not raw.strip():
    raise DataError(f'{path}: the file is empty; remove it from data.sources or fill it')
  if name.endswith(('.jsonl', '.json')):
    docs = []
    for i, line in enumerate(raw.split(b'\n'), start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(_decode(line, path, cfg.decode_errors, i))
      except json.JSONDecodeError as e:
        raise DataError(f'{path}: line {i} is not valid JSON ({e.msg}); each line must be one object') from None
      if not isinstance(obj, dict) or not isinstance(obj.get(cfg.jsonl_field), str):
        raise DataError(f'{path}: line {i} has no string field {cfg.jsonl_field!r}; '
                        f'set --config.data.jsonl_field to the field that holds the text')
      docs.append(obj[cfg.jsonl_field])
  else:
    text = _decode(raw, path, cfg.decode_errors)
    if cfg.doc_separator == 'file':
      docs = [text]
    elif cfg.doc_separator == 'blank_line':
      docs = [d.strip('\n') for d in text.split('\n\n')]
    elif cfg.doc_separator == 'line':
      docs = text.split('\n')
    else:
      raise DataError(f"data.doc_separator must be 'file', 'blank_line' or 'line', got {cfg.doc_separator!r}")
  docs = [d for d in docs if d.strip()]
  if not docs:
    raise DataError(f'{path}: holds no non-empty document')
  return docs


def read_tfds(path: str, root: str = '.') -> tuple[list[str], list[str] | None]:
  """Train and validation texts of a prepared TFDS dataset directory.

  ``path`` is the dataset's version folder, e.g. the corpus pipeline's
  ``runs/corpus/tfds/clean_corpus/default/1.0.0``; its own splits are used as they are.
  Validation is None when the dataset has no validation split (the corpus pipeline leaves
  an empty split out: a small corpus may have no validation document).
  """
  full = path if os.path.isabs(path) else os.path.join(root, path)
  if not os.path.exists(os.path.join(full, 'dataset_info.json')):
    raise DataError(f'tfds:{path}: no prepared TFDS dataset there (no dataset_info.json in {full}); '
                    'point it at the version folder the corpus pipeline printed, e.g. '
                    'tfds:runs/corpus/tfds/clean_corpus/default/1.0.0')
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder_from_directory(full)
  out: list[list[str] | None] = []
  for split in ('train', 'validation'):
    if split not in builder.info.splits:
      if split == 'train':
        raise DataError(f'tfds:{path} has no train split (it has {list(builder.info.splits)}): nothing to '
                        'train on; the corpus pipeline\'s report says why')
      out.append(None)
      continue
    # Sorted by id: TFDS stores examples in a hashed order; training should not depend on it.
    rows = sorted((r['id'], r['text']) for r in tfds.as_numpy(builder.as_dataset(split=split)))
    out.append([t.decode('utf-8') for _, t in rows if t.strip()])
  if not out[0]:
    raise DataError(f'tfds:{path} has no training documents')
  return out[0], out[1]


def split_documents(docs: list[str], cfg: DataConfig) -> tuple[list[str], list[str]]:
  """Deterministic train/validation split (see module docstring)."""
  f = cfg.val_fraction
  if not 0 <= f < 1:
    raise DataError(f'data.val_fraction must be in [0, 1), got {f}')
  if cfg.split == 'tail':
    train, val = [], []
    for d in docs:
      cut = int(len(d) * (1 - f))
      nl = d.find('\n', cut)  # cut at a line boundary so no line is shared
      cut = nl + 1 if 0 <= nl < len(d) - 1 else cut
      train.append(d[:cut])
      if d[cut:].strip():
        val.append(d[cut:])
    return [d for d in train if d], val
  if cfg.split == 'document':
    def to_val(d: str) -> bool:
      h = hashlib.blake2b(d.encode('utf-8', 'replace'), digest_size=8).digest()
      return int.from_bytes(h, 'little') / 2**64 < f
    flags = [to_val(d) for d in docs]
    return [d for d, v in zip(docs, flags) if not v], [d for d, v in zip(docs, flags) if v]
  raise DataError(f"data.split must be 'tail' or 'document', got {cfg.split!r}")


def pack(token_docs: list[np.ndarray], seq_len: int, bos: int | None, eos: int | None) -> dict[str, np.ndarray]:
  """Pack documents into rows [n, seq_len] of inputs/targets/positions/segments (int32).

  Each document contributes the pairs (t_i, t_{i+1}) of [bos] + doc + [eos] (either left
  out when None: a tokenizer that does not start documents with BOS, e.g. GPT-2's). The
  last, partial row is padded with segment 0 (ignored by the loss).
  """
  if not token_docs:
    return {k: np.zeros((0, seq_len), np.int32) for k in FIELDS}
  head = [] if bos is None else [bos]
  tail = [] if eos is None else [eos]
  full = [np.concatenate([head, d, tail]).astype(np.int32) for d in token_docs]
  full = [d for d in full if len(d) > 1]  # a one-token document has no (input, target) pair
  if not full:
    return {k: np.zeros((0, seq_len), np.int32) for k in FIELDS}
  inputs = np.concatenate([d[:-1] for d in full])
  targets = np.concatenate([d[1:] for d in full])
  doc_id = np.concatenate([np.full(len(d) - 1, i, np.int64) for i, d in enumerate(full)])
  n = len(inputs)
  rows = -(-n // seq_len)
  pad = rows * seq_len - n
  inputs, targets = np.pad(inputs, (0, pad)), np.pad(targets, (0, pad))
  doc_id = np.pad(doc_id, (0, pad), constant_values=-1).reshape(rows, seq_len)
  # A run starts at column 0 or where the document changes; runs are numbered 1, 2, ... per row.
  start = np.ones_like(doc_id, bool)
  start[:, 1:] = doc_id[:, 1:] != doc_id[:, :-1]
  segments = np.cumsum(start, axis=1).astype(np.int32)
  col = np.broadcast_to(np.arange(seq_len), doc_id.shape)
  run_start = np.maximum.accumulate(np.where(start, col, 0), axis=1)
  positions = (col - run_start).astype(np.int32)
  valid = doc_id >= 0
  return {'inputs': inputs.reshape(rows, seq_len), 'targets': targets.reshape(rows, seq_len),
          'positions': np.where(valid, positions, 0), 'segments': np.where(valid, segments, 0)}


@dataclasses.dataclass
class Corpus:
  """Tokenized, packed train and validation rows of every source."""

  cfg: DataConfig
  tokenizer: Tokenizer
  train: list[dict[str, np.ndarray]]  # one packed array dict per source
  weights: list[float]
  val: dict[str, np.ndarray]  # all sources' validation rows, concatenated
  names: list[str]

  @property
  def num_train_rows(self) -> int:
    return sum(len(t['inputs']) for t in self.train)


def load_corpus(cfg: DataConfig, root: str = '.', tokenizer: Tokenizer | None = None) -> Corpus:
  """Read, split, tokenize and pack every source. Raises DataError on bad input.

  ``tokenizer`` replaces the one ``cfg`` names (a run initialised from a checkpoint or a
  Hugging Face model uses the tokenizer that model was trained with).
  """
  try:
    tok = tokenizer or make_tokenizer(cfg.tokenizer, cfg.hf_tokenizer if cfg.tokenizer == 'hf' else cfg.spm_model)
  except TokenizerError as e:
    raise DataError(str(e)) from None
  train, weights, vals, names = [], [], [], []
  for pattern, weight in parse_sources(cfg.sources):
    if pattern.startswith('tfds:'):
      tr_docs, va_docs = read_tfds(pattern[len('tfds:'):], root)
      if va_docs is None:  # no validation split: hold out documents of train, as for files
        tr_docs, va_docs = split_documents(tr_docs, cfg)
        print(f'{pattern} has no validation split; holding out {len(va_docs)} of its '
              f'{len(tr_docs) + len(va_docs)} documents (data.split={cfg.split}, '
              f'data.val_fraction={cfg.val_fraction})', flush=True)
    else:
      full = pattern if os.path.isabs(pattern) else os.path.join(root, pattern)
      files = sorted(glob.glob(full))
      if not files:
        raise DataError(f'data source {pattern!r} matches no file (looked for {full}); '
                        f'fix --config.data.sources')
      tr_docs, va_docs = [], []
      for path in files:
        tr, va = split_documents(read_documents(path, cfg), cfg)
        tr_docs += tr
        va_docs += va
    bos = tok.bos_id if tok.add_bos else None
    packed = pack([tok.encode(d) for d in tr_docs], cfg.seq_len, bos, tok.eos_id)
    if len(packed['inputs']) == 0:
      raise DataError(f'data source {pattern!r} has no training text after the validation split')
    train.append(packed)
    weights.append(weight)
    names.append(pattern)
    vals.append(pack([tok.encode(d) for d in va_docs], cfg.seq_len, bos, tok.eos_id))
  val = {k: np.concatenate([v[k] for v in vals]) for k in FIELDS}
  return Corpus(cfg, tok, train, weights, val, names)


def train_dataset(corpus: Corpus, global_batch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1):
  """tf.data.Dataset of this process's share of each global batch, from ``start_step`` on.

  Yields dicts of int32 arrays [global_batch // process_count, seq_len]. The sequence
  of batches depends only on (data.seed, global_batch, corpus), so a resumed run sees
  exactly the batches an uninterrupted one would.
  """
  import tensorflow as tf
  if global_batch % process_count:
    raise DataError(f'batch size {global_batch} is not divisible by the {process_count} processes')
  local = global_batch // process_count
  seed = int(corpus.cfg.seed)
  sizes = tf.constant([len(t['inputs']) for t in corpus.train], tf.int64)
  cum = np.cumsum(np.asarray(corpus.weights, np.float64))
  cum_w = tf.constant((cum / cum[-1]).astype(np.float32))
  offsets = tf.constant(np.cumsum([0] + [len(t['inputs']) for t in corpus.train])[:-1], tf.int64)
  rows = {k: tf.constant(np.concatenate([t[k] for t in corpus.train])) for k in corpus.train[0]}  # FIELDS (+ loss_mask)

  def element(c):
    step, r = c // local, c % local
    i = step * global_batch + process_index * local + r  # index in the global stream
    u = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), i]))
    s = tf.minimum(tf.searchsorted(cum_w, tf.reshape(u, [1]), side='right')[0], len(corpus.weights) - 1)
    n = sizes[s]
    epoch = i // n
    # index_shuffle reads only a few low bits of each key word on small tables: hash
    # (seed, source, epoch) into two full 64-bit words so every seed and epoch differ.
    key = tf.random.stateless_uniform([2], seed=tf.stack([tf.constant(seed, tf.int64) * 65536 + tf.cast(s, tf.int64),
                                                          epoch]), minval=None, maxval=None, dtype=tf.int64)
    row = tf.random.experimental.index_shuffle(i % n, key, n - 1) + offsets[s]
    return {k: v[row] for k, v in rows.items()}

  ds = tf.data.Dataset.range(start_step * local, 2**62)
  # Fixed, small parallelism and buffers: tf.data's autotuner threads compete with the
  # train step for CPU cores, and its unbounded thread pool can stall interpreter exit.
  ds = ds.map(element, num_parallel_calls=2, deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(2)
  options = tf.data.Options()
  options.autotune.enabled = False
  options.threading.private_threadpool_size = 2
  return ds.with_options(options)


def val_batches(corpus: Corpus, global_batch: int, num_batches: int,
                process_index: int = 0, process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """The first ``num_batches`` validation batches (all of them if num_batches <= 0), this process's rows.

  Rows are always the same, so validation losses are comparable across evaluations.
  """
  n = len(corpus.val['inputs'])
  total = n // global_batch
  if total == 0:
    raise DataError(f'the validation split has {n} rows of {corpus.cfg.seq_len} tokens, fewer than one '
                    f'batch of {global_batch}; raise data.val_fraction or lower the batch size')
  total = total if num_batches <= 0 else min(num_batches, total)
  local = global_batch // process_count
  out = []
  for b in range(total):
    lo = b * global_batch + process_index * local
    out.append({k: v[lo:lo + local] for k, v in corpus.val.items()})
  return out
