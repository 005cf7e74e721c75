"""Training batches: sources -> token streams -> rows (windows, under an objective) -> tf.data batches.

1. Sources (``DataConfig.sources``), each with a mixture weight (``'a.txt:0.7,b.jsonl.gz:0.3'``):
   * ``tokens:<dir>``: a corpus prepared once by ``python -m llm.data.prepare`` (local or
     ``gs://``). Opening it reads the manifest and stats the shard files; no data is read
     until a row is needed, so start-up time and host memory do not grow with its size.
   * globs of text or JSONL files (optionally gzipped) and ``tfds:<dir>`` datasets: small
     corpora, read, split and tokenized in memory at start-up into the same token streams
     (``llm.data.documents``: the same documents and split rule as a prepared corpus).
2. A split of a source is a token stream: documents end to end, each ``[BOS] tokens [EOS]``,
   with a bit marking where each document starts (``llm.data.tokens``).
3. Row r of a stream is a window of it, turned into fields by the objective
   (``DataConfig.objective``, ``llm.data.objectives``). For next-token prediction it is the
   window of tokens [r*T, r*T + T + 1) (T = seq_len): ``inputs`` its first T tokens,
   ``targets`` its last T. ``segments`` numbers the documents inside the row and
   ``positions`` restart at 0 for each (and at the row's start), so attention never
   crosses documents. The pair that would predict the first token of a document from the
   last token of the one before is padding (segment 0, ignored by the loss), as is the end
   of the last, partial row. Masked-LM (BERT) rows are windows of T tokens; span-corruption
   (T5) rows are windows of the raw length T5's formula gives for an encoder of T. Any row
   is one contiguous read.
4. Element i of the global stream is a pure function of (seed, i): the source is drawn by
   the mixture weights from a hash of (seed, i), the row is a seeded permutation of that
   source's rows for the epoch ``i // rows`` (a Feistel network, so no table of n entries
   is built). Resuming at step s starts at element ``s * global_batch`` with no skipping,
   and each process reads only its own rows of every global batch (``jax.process_index()``).
   An objective's randomness (masks, spans) is keyed by (seed, i) too, so it resumes exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from llm.data import counterfactual as cf
from llm.data import reweight as rw
from llm.data import tokens as T
from llm.data.documents import (DataError, check_split, glob_files, read_documents, read_tfds, resolve,
                                split_documents)
from llm.data.objectives import (END, OBJECTIVES, T5_SENTINELS, TRAIN, VALIDATION, NextToken, Objective, hash_key,
                                 make_objective, sentinels_needed, splitmix)
from llm.data.objectives import FIELDS, window_rows  # noqa: F401  (their home before llm.data.objectives)
from llm.tokenizer import ByteTokenizer, Tokenizer, TokenizerError, make_tokenizer

PREFIXES = ('tfds:', 'tokens:')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  sources: str  # 'src[:weight],...': a glob of .txt/.jsonl(.gz) files, tfds:<dir>, or tokens:<prepared dir>
  seq_len: int = 256  # tokens per row (span_corruption: the encoder's; the raw and decoder lengths follow, as in T5)
  tokenizer: str = 'byte'  # 'byte', 'sentencepiece' or 'hf'
  spm_model: str = ''  # path to a SentencePiece .model when tokenizer='sentencepiece'
  hf_tokenizer: str = ''  # tokenizer.json (or its directory) when tokenizer='hf'
  doc_separator: str = 'file'  # text files: 'file' (one document), 'blank_line', or 'line'
  jsonl_field: str = 'text'  # JSONL field holding the document text
  split: str = 'document'  # 'tail' or 'document' (llm.data.documents)
  val_fraction: float = 0.1
  decode_errors: str = 'strict'  # 'strict' (fail on bad UTF-8) or 'replace' (U+FFFD)
  seed: int = 0  # shuffling and mixture sampling
  check_sources: bool = True  # tokens: sources: fail if a file they were prepared from has changed
  objective: str = 'next_token'  # 'next_token' (causal LM), 'mlm' (BERT's masked LM) or 'span_corruption' (T5's)
  mlm_rate: float = 0.15  # mlm: fraction of each row's tokens selected for prediction (BERT: 0.15)
  whole_word: bool = False  # mlm: select whole words (byte tokenizer: whitespace-separated; WordPiece: no '##')
  noise_density: float = 0.15  # span_corruption: fraction of raw tokens in noise spans (T5: 0.15)
  mean_span: float = 3.0  # span_corruption: mean noise span length in tokens (T5: 3); seq_len is the encoder's
  # Counterfactual augmentation of the training documents (llm.data.counterfactual); text and tfds: sources only.
  counterfactual: str = ''  # categories of data/counterfactual/ ('gender,gender_names') or list paths; '' = off
  counterfactual_mode: str = 'add'  # 'add' (a swapped copy of each chosen document) or 'substitute' (replace it)
  counterfactual_rate: float = 1.0  # fraction of the documents with a swap that are chosen, by a hash of (seed, index)
  # Representation-aware reweighting of the training documents (llm.data.reweight), after augmentation.
  reweight: str = ''  # identity-group targets, e.g. 'gender:female=0.5,religion=0.2'; '' = off
  reweight_max_weight: float = 10.0  # the most a training document is up- or downsampled by data.reweight


def parse_sources(spec: str) -> list[tuple[str, float]]:
  """'a/*.txt:2,b.jsonl,tokens:gs://b/c:3' -> [('a/*.txt', 2.0), ('b.jsonl', 1.0), ('tokens:gs://b/c', 3.0)]."""
  out = []
  for part in [p.strip() for p in spec.split(',') if p.strip()]:
    pattern, weight = part, 1.0
    head, sep, tail = part.rpartition(':')
    if sep and head and head.rstrip(':') not in ('tfds', 'tokens'):
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


# ------------------------------------------------------------------------------- rows


class Rows(Protocol):
  """A table of training rows; ``rows(idx)`` gives the objective's fields as int32 [len(idx), width].

  ``elements`` (int64, one per idx; default idx) and ``seed`` key any randomness of the
  objective: ``Batches`` passes each row's global element index and data.seed, so a row's
  corruption depends on its place in the stream, not on the batch that reads it.
  """

  num_rows: int

  def rows(self, idx: np.ndarray, elements: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass
class PackedRows:
  """Rows held as arrays (fine-tuning examples packed by ``llm.sft``, with their loss mask)."""

  arrays: dict[str, np.ndarray]

  @property
  def num_rows(self) -> int:
    return len(self.arrays['inputs'])

  def rows(self, idx: np.ndarray, elements: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    del elements, seed  # packed examples are fixed
    return {k: v[idx] for k, v in self.arrays.items()}


class TokenWindows:
  """The rows of a token stream (``MemoryTokens`` or ``ShardedTokens``) under an objective.

  Row r reads the stream's tokens [r*stride, r*stride + length), (length, stride) =
  ``objective.window(seq_len)``: (seq_len + 1, seq_len) for next-token prediction. ``split``
  (TRAIN or VALIDATION) salts the objective's randomness, so validation rows, keyed by row
  index, never share a mask with training element of the same number.
  """

  def __init__(self, stream, seq_len: int, objective: Objective | None = None, split: int = TRAIN):
    self.stream, self.seq_len, self.split = stream, seq_len, split
    self.objective = objective if objective is not None else NextToken()
    self.length, self.stride = self.objective.window(seq_len)
    n, overlap = stream.num_tokens, self.length - self.stride  # a row needs a token past the overlap
    self.num_rows = -(-(n - overlap) // self.stride) if n > overlap else 0

  def rows(self, idx: np.ndarray, elements: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    idx = np.asarray(idx, np.int64).reshape(-1)
    n = self.stream.num_tokens
    spans = [(int(r) * self.stride, min(int(r) * self.stride + self.length, n)) for r in idx]
    windows = self.stream.read(spans)
    w = np.full((len(spans), self.length), END, np.int32)
    s = np.ones((len(spans), self.length), bool)  # past the stream's end: starts, so no pair there counts
    for i, (tok, st) in enumerate(windows):
      w[i, :len(tok)], s[i, :len(st)] = tok, st
    elements = idx if elements is None else np.asarray(elements, np.int64).reshape(-1)
    return self.objective.rows(w, s, elements, seed, self.split)


class ConcatRows:
  """Several row tables, one after the other (the validation rows of every source)."""

  def __init__(self, parts: Sequence[Rows]):
    self.parts = [p for p in parts if p.num_rows]
    self.offsets = np.cumsum([0] + [p.num_rows for p in self.parts])
    self.num_rows = int(self.offsets[-1])

  def rows(self, idx: np.ndarray, elements: np.ndarray | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    idx = np.asarray(idx)
    elements = idx if elements is None else np.asarray(elements)  # the index over all parts keys randomness
    part = np.searchsorted(self.offsets, idx, side='right') - 1
    out: dict[str, np.ndarray] = {}
    for p in np.unique(part):
      sel = np.nonzero(part == p)[0]
      got = self.parts[p].rows(idx[sel] - self.offsets[p], elements[sel], seed)
      for k, v in got.items():
        out.setdefault(k, np.zeros((len(idx),) + v.shape[1:], v.dtype))[sel] = v
    return out


def pack(token_docs: Sequence[np.ndarray], seq_len: int, bos: int | None, eos: int | None) -> dict[str, np.ndarray]:
  """Every row [n, seq_len] of documents laid end to end (``[bos] doc [eos]``), as training sees them."""
  stream = T.MemoryTokens(*T.concat_documents(token_docs, bos, eos))
  rows = TokenWindows(stream, seq_len)
  return rows.rows(np.arange(rows.num_rows))


# ----------------------------------------------------------------------------- corpus


@dataclasses.dataclass
class Corpus:
  """The training rows of every source, their mixture weights and the validation rows."""

  cfg: DataConfig
  tokenizer: Tokenizer
  train: list[Rows]  # one per source
  weights: list[float]
  val: Rows  # all sources' validation rows, one after the other
  names: list[str]
  objective: Objective = dataclasses.field(default_factory=NextToken)  # what a row's fields are
  counterfactual: cf.Counters | None = None  # what data.counterfactual did to the training documents (None: off)
  reweighting: list[rw.ReweightReport] = dataclasses.field(default_factory=list)  # data.reweight, per source

  @property
  def num_train_rows(self) -> int:
    return sum(t.num_rows for t in self.train)


def _text_streams(pattern: str, cfg: DataConfig, tok: Tokenizer, root: str, swapper: cf.Swapper | None = None
                  ) -> tuple[T.MemoryTokens, T.MemoryTokens, cf.Counters | None, rw.ReweightReport | None]:
  """A text or TFDS source read, split and tokenized in memory (a small corpus, no preparation);
  with a ``swapper``, its training documents (never validation's) augmented by ``cf.augment``,
  then, with ``cfg.reweight``, resampled by ``rw.reweight_documents`` (so the shares reached
  are those of the documents trained on)."""
  if pattern.startswith('tfds:'):
    tr_docs, va_docs = read_tfds(pattern[len('tfds:'):], root)
    if va_docs is None:  # no validation split: hold out documents of train, as for files
      tr_docs, va_docs = split_documents(tr_docs, cfg)
      print(f'{pattern} has no validation split; holding out {len(va_docs)} of its '
            f'{len(tr_docs) + len(va_docs)} documents (data.split={cfg.split}, '
            f'data.val_fraction={cfg.val_fraction})', flush=True)
  else:
    full = resolve(pattern, root)
    files = glob_files(full)
    if not files:
      raise DataError(f'data source {pattern!r} matches no file (looked for {full}); fix --config.data.sources')
    tr_docs, va_docs = [], []
    for path in files:
      tr, va = split_documents(read_documents(path, cfg), cfg)
      tr_docs += tr
      va_docs += va
  counters = None
  if swapper is not None:  # after the split, so a document's copy is on its side, and validation stays as it was
    tr_docs, counters = cf.augment(tr_docs, swapper, cfg.counterfactual_mode, cfg.counterfactual_rate, cfg.seed)
  bos = tok.bos_id if tok.add_bos else None
  tr_tokens = [tok.encode(d) for d in tr_docs]
  report = None
  if cfg.reweight:
    try:
      idx, report = rw.reweight_documents(tr_docs, cfg.reweight, cfg.reweight_max_weight, cfg.seed)
    except DataError as e:
      raise DataError(f'{pattern}: {e}') from None
    print('\n'.join(f'{pattern}: {line}' for line in report.lines()), flush=True)
    tr_tokens = [tr_tokens[i] for i in idx]  # each document encoded once, its tokens repeated
  tr = T.memory_tokens(tr_tokens, bos, tok.eos_id, tok.vocab_size)
  va = T.memory_tokens([tok.encode(d) for d in va_docs], bos, tok.eos_id, tok.vocab_size)  # never reweighted
  return tr, va, counters, report


def make_data_tokenizer(cfg: DataConfig) -> Tokenizer:
  """The tokenizer ``cfg`` names. The byte tokenizer comes with the extra tokens the objective
  needs: a mask token for 'mlm', T5's 100 sentinels for 'span_corruption' (more if a row of
  data.seq_len can hold more noise spans)."""
  if cfg.tokenizer == 'byte':
    sentinels = 0
    if cfg.objective == 'span_corruption':
      sentinels = max(T5_SENTINELS, sentinels_needed(cfg.seq_len, cfg.noise_density, cfg.mean_span))
    return ByteTokenizer(mask=cfg.objective == 'mlm', sentinels=sentinels)
  return make_tokenizer(cfg.tokenizer, cfg.hf_tokenizer if cfg.tokenizer == 'hf' else cfg.spm_model)


def _text_tokenizer(tok: Tokenizer) -> Tokenizer:
  """The tokenizer a prepared corpus is checked against: the byte tokenizer's mask and
  sentinels never occur in text, so a corpus prepared with the plain one serves them all."""
  return ByteTokenizer() if isinstance(tok, ByteTokenizer) else tok


def load_corpus(cfg: DataConfig, root: str = '.', tokenizer: Tokenizer | None = None) -> Corpus:
  """Open or read every source. Raises DataError on bad input.

  ``tokenizer`` replaces the one ``cfg`` names (a run initialised from a checkpoint or a
  Hugging Face model uses the tokenizer that model was trained with). Rows are made by
  ``cfg.objective``; DataError if the tokenizer lacks the tokens it needs.
  """
  if cfg.objective not in OBJECTIVES:
    raise DataError(f"data.objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
  try:
    tok = tokenizer or make_data_tokenizer(cfg)
  except TokenizerError as e:
    raise DataError(str(e)) from None
  objective = make_objective(cfg.objective, tok, cfg)
  check_split(cfg)
  cf.check_options(cfg.counterfactual_mode, cfg.counterfactual_rate)
  swapper = cf.Swapper.from_categories(cfg.counterfactual, root) if cf.split_specs(cfg.counterfactual) else None
  counters = cf.Counters(swapper.categories, cfg.counterfactual_mode, cfg.counterfactual_rate) if swapper else None
  if cfg.reweight:  # a malformed target fails before any source is read
    rw.parse_targets(cfg.reweight)
  train, weights, vals, names, reports = [], [], [], [], []
  for pattern, weight in parse_sources(cfg.sources):
    if pattern.startswith('tokens:'):
      if swapper is not None:
        raise DataError(f'data.counterfactual={cfg.counterfactual!r} cannot augment {pattern}: its documents were '
                        'tokenized when it was prepared, so augmentation belongs to preparation, which '
                        'llm.data.prepare does not do yet; train on the text (a glob or tfds:<dir>) instead, '
                        "or set --config.data.counterfactual=''")
      if cfg.reweight:
        raise DataError(f'data.reweight={cfg.reweight!r} cannot reweight {pattern}: its documents were tokenized '
                        'when it was prepared, so no text is left to count identity terms in; train on the text '
                        "(a glob or tfds:<dir>) instead, or set --config.data.reweight=''")
      tr, va, _ = T.open_prepared(pattern[len('tokens:'):], _text_tokenizer(tok), root, cfg.check_sources)
    else:
      tr, va, got, report = _text_streams(pattern, cfg, tok, root, swapper)
      if counters is not None and got is not None:
        counters.update(got)
      if report is not None:
        reports.append(report)
    rows = TokenWindows(tr, cfg.seq_len, objective, TRAIN)
    if rows.num_rows == 0:
      raise DataError(f'data source {pattern!r} has no training text after the validation split')
    train.append(rows)
    weights.append(weight)
    names.append(pattern)
    vals.append(TokenWindows(va, cfg.seq_len, objective, VALIDATION))
  if counters is not None:
    print('\n'.join(counters.lines()), flush=True)
  return Corpus(cfg, tok, train, weights, ConcatRows(vals), names, objective, counters, reports)


def write_mitigation_report(corpus: Corpus, workdir: str) -> str | None:
  """Writes ``workdir/data_mitigation.json``: what data.counterfactual and data.reweight did to
  the training documents (counters, per-target shares), for the run's record and its model
  card. Nothing (and None) when both are off."""
  if corpus.counterfactual is None and not corpus.reweighting:
    return None
  out: dict = {'sources': corpus.names}
  if corpus.counterfactual is not None:
    c = corpus.counterfactual
    out['counterfactual'] = {'categories': list(c.categories), 'mode': c.mode, 'rate': c.rate, **c.as_dict(),
                             'top_terms': dict(c.terms.most_common(20))}
  if corpus.reweighting:
    out['reweighting'] = [dataclasses.asdict(r) for r in corpus.reweighting]
  path = os.path.join(workdir, 'data_mitigation.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(out, f, indent=2, default=str)
  os.replace(tmp, path)  # never a half-written report beside the run
  return path


# ---------------------------------------------------------------------------- sampling

# The hashes (SplitMix64) live in llm.data.objectives, which keys its masks with them too.
_mix, _key = splitmix, hash_key


def permute(i: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
  """A permutation of [0, n) chosen by ``key``, applied to ``i`` (int [k], values in [0, n)).

  ``key`` is one uint64 or one per element (elements of different epochs).

  Four Feistel rounds over the smallest even-bit power-of-two domain holding n, then
  cycle walking (apply again while the value is >= n) to stay inside [0, n): a bijection
  with no table of n entries, so memory does not grow with the corpus.
  """
  bits = max(2, int(n - 1).bit_length())
  bits += bits % 2
  half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
  x = np.asarray(i, np.uint64).copy()
  key = np.broadcast_to(np.asarray(key, np.uint64), x.shape)
  todo = np.ones(len(x), bool)
  while todo.any():
    y, k = x[todo], key[todo]
    for r in range(4):
      left, right = y >> half, y & mask
      y = (right << half) | (left ^ (_mix(right ^ k ^ np.uint64(r + 1)) & mask))
    x[todo] = y
    todo = x >= np.uint64(n)
  return x.astype(np.int64)


def sample(elements: np.ndarray, sizes: Sequence[int], weights: Sequence[float], seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """(source, row) of each element index of the global stream: a pure function of (seed, element)."""
  elements = np.asarray(elements, np.int64)
  cum = np.cumsum(np.asarray(weights, np.float64))
  u = (_key(seed, 0x6D69, elements) >> np.uint64(11)).astype(np.float64) / 2.0**53
  source = np.minimum(np.searchsorted(cum / cum[-1], u, side='right'), len(sizes) - 1)
  row = np.zeros(len(elements), np.int64)
  for s in np.unique(source):
    n, sel = int(sizes[s]), np.nonzero(source == s)[0]
    row[sel] = permute(elements[sel] % n, n, _key(seed, s, elements[sel] // n))
  return source, row


class Batches:
  """This process's share of global batch ``step``: ``batches(step) -> {field: int32 [local, width]}``."""

  def __init__(self, corpus: Corpus, global_batch: int, process_index: int = 0, process_count: int = 1):
    if global_batch % process_count:
      raise DataError(f'batch size {global_batch} is not divisible by the {process_count} processes')
    self.corpus, self.global_batch = corpus, global_batch
    self.local = global_batch // process_count
    self.first = process_index * self.local
    self.sizes = [t.num_rows for t in corpus.train]

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    elements = step * self.global_batch + self.first + np.arange(self.local)
    seed = int(self.corpus.cfg.seed)
    source, row = sample(elements, self.sizes, self.corpus.weights, seed)
    out: dict[str, np.ndarray] = {}
    for s in np.unique(source):
      sel = np.nonzero(source == s)[0]
      got = self.corpus.train[s].rows(row[sel], elements[sel], seed)  # each row's masks keyed by its element
      for k, v in got.items():
        out.setdefault(k, np.zeros((self.local,) + v.shape[1:], v.dtype))[sel] = v
    return out


def train_dataset(corpus: Corpus, global_batch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1):
  """tf.data.Dataset of this process's share of each global batch, from ``start_step`` on.

  Yields dicts of int32 arrays [global_batch // process_count, width]: width is seq_len,
  but span corruption's decoder fields (dec_*, targets) have T5's targets length. The
  sequence of batches depends only on (data.seed, global_batch, corpus), so a resumed run
  sees exactly the batches an uninterrupted one would.
  """
  import tensorflow as tf
  batches = Batches(corpus, global_batch, process_index, process_count)
  probe = corpus.train[0].rows(np.zeros(1, np.int64))  # field names, dtypes and widths (which may differ)
  keys = sorted(probe)
  dtypes = [tf.as_dtype(probe[k].dtype) for k in keys]

  def read(step) -> list[np.ndarray]:
    batch = batches(int(step))
    return [batch[k] for k in keys]

  @tf.autograph.experimental.do_not_convert
  def element(step):
    values = tf.numpy_function(read, [step], dtypes, stateful=False)
    return {k: tf.ensure_shape(v, (batches.local,) + probe[k].shape[1:]) for k, v in zip(keys, values)}

  # Fixed, small parallelism and buffers: tf.data's autotuner threads compete with the
  # train step for CPU cores, and its unbounded thread pool can stall interpreter exit.
  ds = tf.data.Dataset.range(start_step, 2**62).map(element, num_parallel_calls=2, deterministic=True).prefetch(2)
  options = tf.data.Options()
  options.autotune.enabled = False
  options.threading.private_threadpool_size = 2
  return ds.with_options(options)


def train_batches(corpus: Corpus, global_batch: int, start_step: int = 0, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """``train_dataset`` as NumPy batches; a DataError raised while reading (a damaged shard)
  comes out as that DataError, not as TensorFlow's wrapper of it."""
  import tensorflow as tf
  it = train_dataset(corpus, global_batch, start_step, process_index, process_count).as_numpy_iterator()
  while True:
    try:
      yield next(it)
    except tf.errors.OpError as e:
      msg = e.message
      if 'DataError: ' in msg:
        raise DataError(msg.split('DataError: ', 1)[1].split('\n')[0]) from None
      raise


def val_batches(corpus: Corpus, global_batch: int, num_batches: int,
                process_index: int = 0, process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """The first ``num_batches`` validation batches (all of them if num_batches <= 0), this process's rows.

  Rows are always the same, so validation losses are comparable across evaluations; an
  objective's masks are keyed by the row's index and a fixed seed (not data.seed), so they
  are the same at every evaluation and in runs that differ only in data.seed.
  """
  n = corpus.val.num_rows
  total = n // global_batch
  if total == 0:
    raise DataError(f'the validation split has {n} rows of {corpus.cfg.seq_len} tokens, fewer than one '
                    f'batch of {global_batch}; raise data.val_fraction or lower the batch size')
  total = total if num_batches <= 0 else min(num_batches, total)
  local = global_batch // process_count
  return [corpus.val.rows(np.arange(local) + b * global_batch + process_index * local) for b in range(total)]


def describe(corpus: Corpus) -> list[str]:
  """The objective, then one line per source: rows, weight, where the tokens come from (for the start-up log)."""
  out = [f'objective {corpus.objective.name}: {corpus.objective.describe(corpus.cfg.seq_len)}']
  for name, rows, w in zip(corpus.names, corpus.train, corpus.weights):
    where = 'prepared shards' if name.startswith('tokens:') else 'read in memory'
    out.append(f'{name}: {rows.num_rows:,} rows of {corpus.cfg.seq_len} (weight {w:g}, {where})')
  return out
