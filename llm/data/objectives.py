"""Training objectives: how windows of a token stream become the fields of a batch.

A split of a corpus is one token stream (``llm.data.tokens``): documents end to end, each
``[BOS] doc [EOS]``, with a bit marking where each document starts. An objective says how
many stream tokens a row reads and the stride between rows (``window``), and turns those
windows into batch fields (``rows``), in pure NumPy:

  objective        window(T)   fields                                              width
  next_token       (T+1, T)    inputs targets positions segments                    T
  mlm              (T, T)      inputs targets loss_mask positions segments          T
  span_corruption  (L, L)      inputs positions segments                            T
                               dec_inputs targets dec_positions dec_segments        T_dec

For span corruption L and T_dec are T5's ``compute_input_and_target_lengths(T, ...)``
(568 and 114 for T = 512). Every field is int32 [R, width]; segment 0 marks padding.

Randomness (which tokens are masked, where spans fall) is a counter-based hash of (seed,
objective, split, element index, position): element i of the global training stream
(``llm.data.stream.Batches``) is corrupted the same way whichever batch, process or step
reads it, so a resumed run sees exactly the batches an uninterrupted one would; a row seen
again in a later epoch is a new element, so it is masked afresh (RoBERTa's dynamic
masking). Validation rows are keyed by their row index under another split salt, so they
are the same at every evaluation.

Windows given to ``rows`` hold ``END`` (-1) past the end of the stream, where the start
bits are True: NextToken never reads them, the others treat them as padding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from llm.data.documents import DataError
from llm.tokenizer import ByteTokenizer, HFTokenizer, SentencePieceTokenizer, Tokenizer, special_ids

if TYPE_CHECKING:
  from llm.data.stream import DataConfig

FIELDS = ('inputs', 'targets', 'positions', 'segments')  # next token
MLM_FIELDS = ('inputs', 'targets', 'loss_mask', 'positions', 'segments')
SPAN_FIELDS = ('inputs', 'positions', 'segments', 'dec_inputs', 'targets', 'dec_positions', 'dec_segments')
OBJECTIVES = ('next_token', 'mlm', 'span_corruption')
TRAIN, VALIDATION = 0, 1  # split salts: validation rows are keyed by row index, apart from training elements
END = -1  # a window's tokens past the end of the stream
T5_SENTINELS = 100  # T5's vocabulary has <extra_id_0> .. <extra_id_99>


# ------------------------------------------------------------------------------ hashing

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix(x: np.ndarray) -> np.ndarray:
  """SplitMix64's finaliser: a bijective hash of uint64 values (wrapping arithmetic)."""
  x = np.asarray(x, np.uint64)
  with np.errstate(over='ignore'):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def hash_key(*words) -> np.ndarray:
  """A uint64 hash of a tuple of ints or int arrays (broadcast): the key of a permutation or draw."""
  h = np.uint64(0x243F6A8885A308D3)
  for w in words:
    h = splitmix(h ^ np.asarray(w).astype(np.uint64))
  return h


def _uniform(h: np.ndarray) -> np.ndarray:
  """float64 in [0, 1) from the top 53 bits of a hash."""
  return (np.asarray(h, np.uint64) >> np.uint64(11)).astype(np.float64) / 2.0**53


def _smallest(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
  """bool [R, L]: the k[r] smallest keys of each row r of ``keys`` uint64 [R, L]."""
  order = np.argsort(keys, axis=1, kind='stable')
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.broadcast_to(np.arange(keys.shape[1]), keys.shape), axis=1)
  return rank < np.asarray(k)[:, None]


def _documents(s: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(positions, segments) int32 [R, L]: documents split at the starts ``s``, restarting at the
  row start, 0 where not ``valid``."""
  run = s.copy()
  run[:, 0] = True
  col = np.broadcast_to(np.arange(s.shape[1]), s.shape)
  positions = col - np.maximum.accumulate(np.where(run, col, 0), axis=1)
  segments = np.cumsum(run, axis=1)
  return np.where(valid, positions, 0).astype(np.int32), np.where(valid, segments, 0).astype(np.int32)


# ---------------------------------------------------------------------------- protocol


class Objective(Protocol):
  """Windows of a token stream -> batch fields; pure, and random only through (seed, element)."""

  name: ClassVar[str]  # 'next_token', 'mlm' or 'span_corruption' (DataConfig.objective)

  def window(self, seq_len: int) -> tuple[int, int]:
    """(stream tokens a row reads, stride between rows); DataError if seq_len cannot work."""

  def fields(self, seq_len: int) -> dict[str, int]:
    """{field: width} of the rows for ``seq_len``."""

  def rows(self, w: np.ndarray, s: np.ndarray, elements: np.ndarray, seed: int,
           split: int = TRAIN) -> dict[str, np.ndarray]:
    """Fields int32 [R, width] of windows ``w`` int32 [R, L] (END past the stream) whose
    document starts are ``s`` bool [R, L]; ``elements`` int64 [R] keys each row's randomness."""

  def describe(self, seq_len: int) -> str:
    """One line for the start-up log."""


# --------------------------------------------------------------------------- next token


def window_rows(w: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
  """FIELDS [R, T] of windows ``w`` int32 [R, T+1] whose document starts are ``s`` bool [R, T+1]."""
  t = w.shape[1] - 1
  valid = ~s[:, 1:]  # pair j predicts token j+1, which must not start a document
  run = s[:, :t].copy()
  run[:, 0] = True  # a row starts a run (a continued document's positions restart at 0)
  col = np.broadcast_to(np.arange(t), run.shape)
  positions = col - np.maximum.accumulate(np.where(run, col, 0), axis=1)
  segments = np.cumsum(run, axis=1)
  zero = np.int32(0)
  return {'inputs': np.where(valid, w[:, :t], zero), 'targets': np.where(valid, w[:, 1:], zero),
          'positions': np.where(valid, positions, 0).astype(np.int32),
          'segments': np.where(valid, segments, 0).astype(np.int32)}


def _check_seq_len(seq_len: int) -> None:
  if seq_len < 1:
    raise DataError(f'data.seq_len={seq_len}: rows need at least one token; set a positive data.seq_len')


@dataclasses.dataclass(frozen=True)
class NextToken:
  """Causal LM: row r is the window [r*T, r*T + T + 1); ``inputs`` its first T tokens,
  ``targets`` its last T; a pair whose target starts a document is padding."""

  name: ClassVar[str] = 'next_token'

  def window(self, seq_len: int) -> tuple[int, int]:
    _check_seq_len(seq_len)
    return seq_len + 1, seq_len

  def fields(self, seq_len: int) -> dict[str, int]:
    return {k: seq_len for k in FIELDS}

  def rows(self, w: np.ndarray, s: np.ndarray, elements: np.ndarray | None = None, seed: int = 0,
           split: int = TRAIN) -> dict[str, np.ndarray]:
    del elements, seed, split  # deterministic
    return window_rows(w, s)

  def describe(self, seq_len: int) -> str:
    return f'rows of {seq_len} tokens, each predicting the next'


# ---------------------------------------------------------------------------- masked LM

WordStarts = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (tokens [R, L], starts [R, L]) -> bool [R, L]
_WHITESPACE = np.frombuffer(b' \t\n\r\v\f', np.uint8).astype(np.int32) + ByteTokenizer.offset


def byte_word_starts(w: np.ndarray, s: np.ndarray) -> np.ndarray:
  """The byte tokenizer's words: a byte starts one when it follows whitespace or starts a
  document. UTF-8 continuation bytes never follow whitespace, so a character stays whole."""
  out = s.copy()
  out[:, 1:] |= np.isin(w[:, :-1], _WHITESPACE)
  return out


@dataclasses.dataclass(frozen=True)
class TableWordStarts:
  """Word starts read from a table over the vocabulary (``word_start_table``), plus document starts."""

  table: np.ndarray  # bool [vocab]

  def __call__(self, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    return self.table[np.clip(w, 0, len(self.table) - 1)] | s


def word_start_table(tok: Tokenizer) -> np.ndarray:
  """bool [vocab_size]: whether each token begins a word, read from its piece.

  WordPiece (BERT): a piece not starting with the continuing-subword prefix ('##');
  SentencePiece-style vocabularies: a piece starting with '▁'. Special tokens count as
  starts. The byte tokenizer has no such table (a byte starts a word by what precedes
  it): ``word_starts_for`` gives its rule.
  """
  if isinstance(tok, HFTokenizer):
    from tokenizers import models  # pylint: disable=import-outside-toplevel
    vocab = tok.tk.get_vocab(with_added_tokens=True)
    if isinstance(tok.tk.model, models.WordPiece):
      prefix = tok.tk.model.continuing_subword_prefix or '##'
      starts = {i for p, i in vocab.items() if not p.startswith(prefix)}
    elif any(p.startswith('\u2581') for p in vocab):
      starts = {i for p, i in vocab.items() if p.startswith('\u2581')}
    else:
      raise DataError(f'data.whole_word: cannot tell where words start in {tok.path} (neither WordPiece '
                      f"'##' continuations nor SentencePiece '\u2581' word starts); set data.whole_word=False")
  elif isinstance(tok, SentencePieceTokenizer):
    starts = {i for i in range(tok.vocab_size) if tok.sp.id_to_piece(i).startswith('\u2581')}
  else:
    raise DataError(f'data.whole_word: {type(tok).__name__} has no table of word starts; '
                    f'use word_starts_for(tokenizer), which knows the byte rule')
  table = np.zeros(tok.vocab_size, bool)
  table[sorted(i for i in starts if i < tok.vocab_size)] = True
  table[sorted(special_ids(tok))] = True
  return table


def word_starts_for(tok: Tokenizer) -> WordStarts:
  """The word-start rule of a tokenizer, for whole-word masking (DataError if it has none)."""
  if isinstance(tok, ByteTokenizer):
    return byte_word_starts
  return TableWordStarts(word_start_table(tok))


class MaskedLM:
  """BERT's masked-LM rows (Devlin et al., 2019; create_pretraining_data.py).

  A row is a window of T stream tokens (stride T), its documents segmented at their starts.
  Of a row's n valid tokens, ``max(1, round(rate * n))`` (at most the candidates) are
  selected among those that are not special and not padding; each selected token becomes
  ``mask_id`` with probability ``replace_mask``, a uniformly drawn non-special id with
  probability ``replace_random``, and stays itself otherwise. With ``whole_word``, words
  (``word_starts``) are taken whole, in random order, skipping a word that would overshoot
  the count, as BERT's whole-word masking does.

  Fields, int32 [R, T]: ``inputs`` (corrupted), ``targets`` (the original token at every
  position), ``loss_mask`` (1 where a token was selected), ``positions``, ``segments``.
  """

  name: ClassVar[str] = 'mlm'
  SALT: ClassVar[int] = 0x6D6C6D

  def __init__(self, mask_id: int, vocab_size: int, special_ids: Sequence[int] | set[int], rate: float = 0.15,
               replace_mask: float = 0.8, replace_random: float = 0.1, whole_word: bool = False,
               word_starts: WordStarts | None = None, pad_id: int = 0):
    if not 0 < rate < 1:
      raise DataError(f'data.mlm_rate={rate}: the fraction of tokens to mask must be in (0, 1); BERT uses 0.15')
    if replace_mask < 0 or replace_random < 0 or replace_mask + replace_random > 1:
      raise DataError(f'masked-LM replacement probabilities {replace_mask} (mask) and {replace_random} (random) '
                      f'must be non-negative and sum to at most 1; BERT uses 0.8 and 0.1')
    if whole_word and word_starts is None:
      raise DataError('whole-word masking needs the tokenizer\'s word starts: pass word_starts=word_starts_for(tok)')
    special = {int(i) for i in special_ids} | {int(mask_id)}
    if not 0 <= mask_id < vocab_size or any(not 0 <= i < vocab_size for i in special):
      raise DataError(f'mask id {mask_id} and special ids {sorted(special)} must lie in the vocabulary [0, {vocab_size})')
    self.mask_id, self.vocab_size, self.pad_id = int(mask_id), int(vocab_size), int(pad_id)
    self.rate, self.replace_mask, self.replace_random = float(rate), float(replace_mask), float(replace_random)
    self.whole_word, self.word_starts = bool(whole_word), word_starts
    self.special = np.zeros(vocab_size, bool)
    self.special[sorted(special)] = True
    self.replacements = np.flatnonzero(~self.special).astype(np.int32)  # what a random replacement draws from
    if not len(self.replacements):
      raise DataError('the vocabulary has no non-special token to mask')

  def window(self, seq_len: int) -> tuple[int, int]:
    _check_seq_len(seq_len)
    return seq_len, seq_len

  def fields(self, seq_len: int) -> dict[str, int]:
    return {k: seq_len for k in MLM_FIELDS}

  def describe(self, seq_len: int) -> str:
    keep = 1 - self.replace_mask - self.replace_random
    return (f'rows of {seq_len} tokens, {self.rate:g} of each row\'s tokens selected'
            f'{" as whole words" if self.whole_word else ""} ({self.replace_mask:g} masked, '
            f'{self.replace_random:g} random, {keep:g} kept)')

  def rows(self, w: np.ndarray, s: np.ndarray, elements: np.ndarray, seed: int,
           split: int = TRAIN) -> dict[str, np.ndarray]:
    r, length = w.shape
    valid = w != END
    tok = np.where(valid, w, 0)
    if tok.max(initial=0) >= self.vocab_size:
      raise DataError(f'token id {int(tok.max())} is outside the masked-LM vocabulary of {self.vocab_size}; '
                      f'the corpus was tokenized with another tokenizer')
    cand = valid & ~self.special[tok]
    want = np.maximum(1, np.round(self.rate * valid.sum(1))).astype(np.int64)
    k = np.minimum(cand.sum(1), want)
    base = hash_key(seed, self.SALT, split, np.asarray(elements, np.int64))  # [R]: one key per element
    col = np.arange(length, dtype=np.uint64)
    pick = np.where(cand, hash_key(base[:, None], 1, col[None, :]), _M64)  # non-candidates sort last
    selected = cand & (self._whole_words(tok, s, cand, k, pick) if self.whole_word else _smallest(pick, k))

    ri, ci = np.nonzero(selected)
    u = _uniform(hash_key(base[ri], 2, ci))
    inputs = tok.copy()
    inputs[ri[u < self.replace_mask], ci[u < self.replace_mask]] = self.mask_id
    rand = (u >= self.replace_mask) & (u < self.replace_mask + self.replace_random)
    draw = (_uniform(hash_key(base[ri[rand]], 3, ci[rand])) * len(self.replacements)).astype(np.int64)
    inputs[ri[rand], ci[rand]] = self.replacements[draw]
    positions, segments = _documents(s, valid)
    return {'inputs': np.where(valid, inputs, self.pad_id).astype(np.int32),
            'targets': np.where(valid, tok, self.pad_id).astype(np.int32),
            'loss_mask': selected.astype(np.int32), 'positions': positions, 'segments': segments}

  def _whole_words(self, tok: np.ndarray, s: np.ndarray, cand: np.ndarray, k: np.ndarray,
                   pick: np.ndarray) -> np.ndarray:
    """bool [R, L]: whole words, in the random order of their first tokens' keys, up to k[r] tokens."""
    r, length = tok.shape
    prev_cand = np.zeros_like(cand)
    prev_cand[:, 1:] = cand[:, :-1]
    # A word also starts after a special token or padding and at the row start (the part of
    # a word that the row start cuts off is taken as a word of its own).
    first = cand & (self.word_starts(tok, s) | ~prev_cand)  # type: ignore[misc]
    unit = np.cumsum(first, axis=1) - 1  # each candidate's word index in its row
    row = np.broadcast_to(np.arange(r)[:, None], tok.shape)
    sizes = np.zeros((r, length), np.int64)  # [R, words] (words <= L)
    np.add.at(sizes, (row[cand], unit[cand]), 1)
    keys = np.full((r, length), _M64)
    keys[row[first], unit[first]] = pick[first]
    order = np.argsort(keys, axis=1, kind='stable')
    ordered = np.take_along_axis(sizes, order, axis=1)
    taken, accept = np.zeros(r, np.int64), np.zeros((r, length), bool)
    for j in range(int(first.sum(1).max(initial=0))):  # BERT's greedy rule, every row at once
      ok = (ordered[:, j] > 0) & (taken + ordered[:, j] <= k)
      accept[:, j] = ok
      taken += np.where(ok, ordered[:, j], 0)
      if np.all(taken == k):
        break
    chosen = np.zeros((r, length), bool)
    np.put_along_axis(chosen, order, accept, axis=1)
    return np.take_along_axis(chosen, np.maximum(unit, 0), axis=1)


# ----------------------------------------------------------------------- span corruption


def compute_input_and_target_lengths(inputs_length: int, noise_density: float,
                                     mean_noise_span_length: float) -> tuple[int, int]:
  """(tokens_length, targets_length): T5's ``random_spans_helper`` (t5/data/preprocessors.py).

  tokens_length is the largest number of raw tokens whose corrupted input (the non-noise
  tokens, one sentinel per noise span, one EOS) fits ``inputs_length``; targets_length is
  the length of its targets (a sentinel before each noise span, the spans, one EOS).
  For 512, 0.15, 3.0: (568, 114).
  """
  def lengths(tokens_length: int) -> tuple[int, int]:
    num_noise_tokens = int(round(tokens_length * noise_density))
    num_nonnoise_tokens = tokens_length - num_noise_tokens
    num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
    return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1

  tokens_length = inputs_length - 1
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  inputs_length, targets_length = lengths(tokens_length)
  # T5's "minor hack to get the targets length to be equal to inputs length".
  if noise_density == 0.5 and targets_length > inputs_length:
    tokens_length -= 1
    targets_length -= 1
  return tokens_length, targets_length


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of ``random_spans_noise_mask`` for ``length`` tokens.

  T5's rules: round(length * density) clipped to [1, length - 1] (on at least 2 tokens),
  max(1, round(noise / mean)) spans. A single token is never noise. Spans are also capped
  at the non-noise tokens, where T5 would fail (every non-noise span has a token). Python's
  float64 rounding (half to even), as ``compute_input_and_target_lengths`` uses, so a full
  row has exactly the counts that sized it (T5's TensorFlow mask rounds in float32).
  """
  if length <= 1:
    return 0, 0
  noise = min(max(int(round(length * noise_density)), 1), length - 1)
  spans = max(int(round(noise / mean_noise_span_length)), 1)
  return noise, min(spans, length - noise)


def _partition(keys: np.ndarray, items: int, segments: int) -> np.ndarray:
  """int64 [R, segments]: ``items`` split into ``segments`` non-empty runs at random, one
  partition per key of ``keys`` uint64 [R] (T5's _random_segmentation: a uniformly random
  choice of segments - 1 of the items - 1 cut points)."""
  if segments == 1:
    return np.full((len(keys), 1), items, np.int64)
  h = hash_key(keys[:, None], np.arange(items - 1, dtype=np.uint64)[None, :])
  cuts = np.sort(np.argpartition(h, segments - 2, axis=1)[:, :segments - 1], axis=1) + 1
  edges = np.concatenate([np.zeros((len(keys), 1), np.int64), cuts, np.full((len(keys), 1), items)], axis=1)
  return np.diff(edges, axis=1)


def random_spans_noise_mask(length: int, noise_density: float, mean_noise_span_length: float,
                            keys: np.ndarray) -> np.ndarray:
  """bool [R, length]: T5's random-spans noise mask, one per key of ``keys`` uint64 [R].

  ``noise_counts`` noise tokens in as many noise spans, noise and non-noise lengths each a
  random partition, alternating and starting with non-noise (so the mask ends with noise).
  """
  keys = np.asarray(keys, np.uint64)
  noise, spans = noise_counts(length, noise_density, mean_noise_span_length)
  if spans == 0:
    return np.zeros((len(keys), length), bool)
  noise_lengths = _partition(hash_key(keys, 1), noise, spans)
  text_lengths = _partition(hash_key(keys, 2), length - noise, spans)
  runs = np.stack([text_lengths, noise_lengths], axis=2).reshape(len(keys), 2 * spans)
  starts = np.cumsum(runs, axis=1)[:, :-1]  # every run is non-empty, so these are distinct and < length
  flips = np.zeros((len(keys), length), np.int32)
  np.put_along_axis(flips, starts, 1, axis=1)
  return np.cumsum(flips, axis=1) % 2 == 1


def _compact(tokens: np.ndarray, keep: np.ndarray, width: int, eos: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """(out int32 [R, width], lengths [R]): the kept tokens of each row, then EOS, then pad."""
  out = np.full((len(tokens), width), pad, np.int32)
  ri, ci = np.nonzero(keep)
  out[ri, (np.cumsum(keep, axis=1) - 1)[ri, ci]] = tokens[ri, ci]
  n = keep.sum(1)
  out[np.arange(len(tokens)), n] = eos
  return out, n + 1


class SpanCorruption:
  """T5's span corruption (Raffel et al., 2020): noise spans out of the encoder, into the decoder.

  A row reads L raw stream tokens (stride L), L = tokens_length of
  ``compute_input_and_target_lengths(T)``: as in T5, the raw tokens hold no EOS of the
  row's own and the encoder's ``inputs`` is exactly T long (568 raw tokens for T = 512).
  The window is one stream across documents, as T5's concatenated pre-training text is
  (the documents' own EOS tokens stay in it as text). With ``random_spans_noise_mask``:

    inputs   [R, T]      the non-noise tokens, each noise span replaced by one sentinel
                         (<extra_id_0> for the first span, then <extra_id_1>, ...), then EOS
    targets  [R, T_dec]  <extra_id_0> span 0 <extra_id_1> span 1 ... EOS
    dec_inputs           decoder_start_id (default pad_id) followed by targets[:-1]
    positions, segments, dec_positions, dec_segments: 0.. and 1 over real tokens, 0 padding

  T_dec is T5's targets_length. The stream's last row may be short: it has fewer tokens
  and spans (T5's rules on its length), and is padded with pad_id.
  """

  name: ClassVar[str] = 'span_corruption'
  SALT: ClassVar[int] = 0x7370616E

  def __init__(self, sentinel_ids: Sequence[int], eos_id: int, pad_id: int, noise_density: float = 0.15,
               mean_span: float = 3.0, decoder_start_id: int | None = None):
    if not 0 < noise_density < 1:
      raise DataError(f'data.noise_density={noise_density}: the fraction of tokens in noise spans must be in '
                      f'(0, 1); T5 uses 0.15')
    if mean_span < 1:
      raise DataError(f'data.mean_span={mean_span}: the mean noise span length must be at least 1; T5 uses 3.0')
    self.sentinel_ids = np.asarray(sentinel_ids, np.int32)
    self.eos_id, self.pad_id = int(eos_id), int(pad_id)
    self.decoder_start_id = self.pad_id if decoder_start_id is None else int(decoder_start_id)
    self.noise_density, self.mean_span = float(noise_density), float(mean_span)
    self._layouts: dict[int, tuple[int, int, int]] = {}  # seq_len -> (L, T_dec, most spans)
    self._shapes: dict[int, tuple[int, int]] = {}  # L -> (seq_len, T_dec): rows() sizes its outputs by its windows

  def _try_layout(self, seq_len: int) -> tuple[int, int, int] | None:
    """(L raw tokens per row, T_dec, most noise spans of a row) for an encoder of ``seq_len``,
    None if its rows would hold no noise span or a short row would not fit."""
    if seq_len not in self._layouts:
      tokens_length, targets_length = compute_input_and_target_lengths(seq_len, self.noise_density, self.mean_span)
      noise = int(round(tokens_length * self.noise_density))
      # Short rows (the stream's last) follow T5's rules on their own length: none may overflow.
      counts = [noise_counts(n, self.noise_density, self.mean_span) for n in range(1, tokens_length + 1)]
      if (tokens_length < 2 or round(noise / self.mean_span) < 1 or noise >= tokens_length
          or max(n - c[0] + c[1] + 1 for n, c in enumerate(counts, 1)) > seq_len):
        return None
      t_dec = max(targets_length, max(c[0] + max(c[1], 1) + 1 for c in counts))  # == targets_length in practice
      self._layouts[seq_len] = tokens_length, t_dec, max(c[1] for c in counts)
      self._shapes[tokens_length] = seq_len, t_dec
    return self._layouts[seq_len]

  def _layout(self, seq_len: int) -> tuple[int, int, int]:
    layout = self._try_layout(seq_len)
    if layout is None:
      raise DataError(f'data.seq_len={seq_len} cannot be filled by span corruption at noise_density '
                      f'{self.noise_density:g} and mean_span {self.mean_span:g} (a row would hold no noise span): '
                      f'use at least data.seq_len={self.min_seq_len()}')
    return layout

  def min_seq_len(self) -> int:
    """The shortest encoder length whose rows hold at least one noise span."""
    n = 2  # the first raw length that T5's formula gives a span
    while round(int(round(n * self.noise_density)) / self.mean_span) < 1:
      n += 1
    noise = int(round(n * self.noise_density))
    seq_len = max(2, n - noise + int(round(noise / self.mean_span)) + 1 - 2)  # its encoder length, less a margin
    while self._try_layout(seq_len) is None:
      seq_len += 1
    return seq_len

  def sentinels_needed(self, seq_len: int) -> int:
    """The most noise spans a row can have for ``seq_len`` (the sentinels a tokenizer needs)."""
    return self._layout(seq_len)[2]

  def lengths(self, seq_len: int) -> tuple[int, int]:
    """(L raw tokens per row, T_dec) for an encoder of ``seq_len``; DataError if it cannot work."""
    tokens_length, t_dec, spans = self._layout(seq_len)
    if spans > len(self.sentinel_ids):
      raise DataError(f'span corruption of data.seq_len={seq_len} makes up to {spans} noise spans, but the tokenizer '
                      f'has {len(self.sentinel_ids)} sentinel tokens (<extra_id_N>); lower data.seq_len, raise '
                      f'data.mean_span, or use a tokenizer with at least {spans} sentinels')
    return tokens_length, t_dec

  def window(self, seq_len: int) -> tuple[int, int]:
    tokens_length, _ = self.lengths(seq_len)
    return tokens_length, tokens_length

  def fields(self, seq_len: int) -> dict[str, int]:
    _, t_dec = self.lengths(seq_len)
    return {k: (t_dec if k in ('dec_inputs', 'targets', 'dec_positions', 'dec_segments') else seq_len)
            for k in SPAN_FIELDS}

  def describe(self, seq_len: int) -> str:
    tokens_length, t_dec = self.lengths(seq_len)
    return (f'rows of {tokens_length} tokens -> encoder {seq_len}, decoder {t_dec} '
            f'(noise density {self.noise_density:g}, mean span {self.mean_span:g})')

  def rows(self, w: np.ndarray, s: np.ndarray, elements: np.ndarray, seed: int,
           split: int = TRAIN) -> dict[str, np.ndarray]:
    del s  # one stream across documents, as T5's pre-training text
    r, length = w.shape
    if length not in self._shapes:
      raise ValueError(f'windows of {length} tokens were not made by this objective\'s window(); call it first')
    t_enc, t_dec = self._shapes[length]
    valid = w != END
    n = valid.sum(1)  # padding is only past the stream's end, so each row's tokens are a prefix
    keys = hash_key(seed, self.SALT, split, np.asarray(elements, np.int64))
    enc = np.full((r, t_enc), self.pad_id, np.int32)
    dec = np.full((r, t_dec), self.pad_id, np.int32)
    enc_len, dec_len = np.zeros(r, np.int64), np.zeros(r, np.int64)
    for m in np.unique(n[n > 0]):  # full rows together; at most one short row per stream
      g = np.nonzero(n == m)[0]
      tok = w[g, :m]
      noise = random_spans_noise_mask(int(m), self.noise_density, self.mean_span, keys[g])
      enc[g], enc_len[g] = self._replace_spans(tok, noise, t_enc)
      dec[g], dec_len[g] = self._replace_spans(tok, ~noise, t_dec)
    seg = (np.arange(t_enc) < enc_len[:, None]).astype(np.int32)
    dec_seg = (np.arange(t_dec) < dec_len[:, None]).astype(np.int32)
    dec_in = np.full((r, t_dec), self.decoder_start_id, np.int32)
    dec_in[:, 1:] = dec[:, :-1]
    return {'inputs': enc, 'positions': seg * np.arange(t_enc, dtype=np.int32), 'segments': seg,
            'dec_inputs': np.where(dec_seg > 0, dec_in, self.pad_id).astype(np.int32), 'targets': dec,
            'dec_positions': dec_seg * np.arange(t_dec, dtype=np.int32), 'dec_segments': dec_seg}

  def _replace_spans(self, tok: np.ndarray, drop: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """T5's noise_span_to_unique_sentinel: each run of ``drop`` becomes one sentinel (the
    k-th run <extra_id_k>), then EOS; the encoder drops noise, the decoder non-noise."""
    prev = np.zeros_like(drop)
    prev[:, 1:] = drop[:, :-1]
    first = drop & ~prev
    run = np.maximum(np.cumsum(first, axis=1) - 1, 0)
    return _compact(np.where(first, self.sentinel_ids[run], tok), ~(drop & prev), width, self.eos_id, self.pad_id)


# -------------------------------------------------------------------------------- factory


def sentinels_needed(seq_len: int, noise_density: float, mean_span: float) -> int:
  """How many sentinels span corruption of ``seq_len`` needs (DataError if seq_len is too short)."""
  return SpanCorruption((), 0, 0, noise_density, mean_span).sentinels_needed(seq_len)


def make_objective(name: str, tokenizer: Tokenizer, cfg: DataConfig | Any) -> Objective:
  """The objective ``name`` ('next_token', 'mlm' or 'span_corruption') for ``tokenizer`` and the
  data config (seq_len, mlm_rate, whole_word, noise_density, mean_span); DataError naming the
  fix when the tokenizer lacks the tokens it needs or seq_len cannot work."""
  kind = {'ByteTokenizer': 'byte', 'HFTokenizer': 'Hugging Face', 'SentencePieceTokenizer': 'SentencePiece'}.get(
      type(tokenizer).__name__, type(tokenizer).__name__)
  kind += f' ({tokenizer.path})' if getattr(tokenizer, 'path', '') else ''
  if name != 'mlm' and getattr(cfg, 'whole_word', False):
    raise DataError(f"data.whole_word=True applies to data.objective='mlm', not {name!r}; unset one of them")
  if name == 'next_token':
    objective: Objective = NextToken()
  elif name == 'mlm':
    if getattr(tokenizer, 'mask_id', None) is None:
      raise DataError(f"data.objective='mlm' needs a mask token, but the {kind} tokenizer has none: use "
                      f"data.tokenizer='byte' (which then adds one) or a Hugging Face tokenizer whose "
                      f"tokenizer_config.json names mask_token (BERT's [MASK])")
    objective = MaskedLM(tokenizer.mask_id, tokenizer.vocab_size, special_ids(tokenizer), rate=cfg.mlm_rate,
                         whole_word=cfg.whole_word, word_starts=word_starts_for(tokenizer) if cfg.whole_word else None,
                         pad_id=tokenizer.pad_id)
  elif name == 'span_corruption':
    if not getattr(tokenizer, 'sentinel_ids', ()):
      raise DataError(f"data.objective='span_corruption' needs sentinel tokens (<extra_id_0>, ...), but the {kind} "
                      f"tokenizer has none: use data.tokenizer='byte' (which then adds them) or a T5 tokenizer.json "
                      f"that has them")
    if tokenizer.eos_id is None:
      raise DataError(f"data.objective='span_corruption' ends inputs and targets with EOS, but the {kind} tokenizer "
                      f"has none; use a tokenizer with an EOS token")
    objective = SpanCorruption(tokenizer.sentinel_ids, tokenizer.eos_id, tokenizer.pad_id,
                               cfg.noise_density, cfg.mean_span)
  else:
    raise DataError(f"data.objective must be 'next_token', 'mlm' or 'span_corruption', got {name!r}")
  objective.window(cfg.seq_len)  # fails now, naming the fix, if seq_len does not suit the objective
  return objective
