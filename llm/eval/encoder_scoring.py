"""The harness's LM interface over an encoder (masked LM) and an encoder-decoder (T5).

Both answer lm-evaluation-harness's three request kinds on plain tuples, as
``llm.eval.scorer.ModelLM`` does for the decoder, keep its ``stats`` counters, and follow
the harness's tokenisation and truncation rules where they apply.

``MaskedLM``: pseudo-log-likelihood (PLL; Salazar et al., 2020, "Masked Language Model
Scoring"). A request (context, continuation) is framed as the tokenizer frames a document,
``[BOS] context continuation [EOS]`` (BOS when the tokenizer adds one; BERT's [CLS] and
[SEP] are its BOS and EOS), and

    PLL(continuation | context) = sum over the continuation's tokens t_i of
                                  log p(t_i | the framed sequence with only t_i masked)

Context tokens are visible and never scored; the special tokens are never scored. Each
scored token is one masked copy of the sequence (one row), and the copies of all requests
are deduplicated, sorted by length and run in bucketed batches; the head runs only at the
masked position. ``is_greedy``: the argmax at every masked position is the token.
Truncation: a window holds max_length tokens with its BOS/EOS, so W = max_length - 2
tokens of text (fewer specials, more text). A context is cut from the left so that context + continuation fit W
(counted in ``truncated``); a continuation longer than W is scored in windows of W
tokens, each with as much preceding text as fits (the harness's rolling rule, as ModelLM
scores such a continuation); a window does not see the text after it.
``loglikelihood_rolling`` is the PLL of the whole text by the same windows: the first
predicts up to W tokens, each later one the next W tokens with as much preceding text as
fits, so the last window is full-size (``get_rolling_token_windows`` + ``make_disjoint_window``
with the BOS of the harness's first window replaced by the framing). A masked LM does not
generate: ``generate_until`` raises.

CrowS-Pairs with a masked LM: ``score_sentence_pairs`` gives Nangia et al.'s (2020) metric
(``llm.eval.bias.lm_for_task`` routes the task's requests to it): for the two sentences
of a pair, the tokens the two share (``difflib.SequenceMatcher`` 'equal' blocks over the
framed token ids, as their ``get_span``) are masked one at a time and scored with the
modified tokens visible; the framing tokens are never masked.

``Seq2SeqLM``: what the harness's HFLM computes with a seq2seq model. loglikelihood(context,
continuation) = log p(continuation | encoder input = context), decoder input = [start] +
continuation[:-1] (T5's start token is the pad id). Tokenisation as the harness's seq2seq
branch: trailing whitespace of the context moves to the continuation, the context is
encoded with the tokenizer's special tokens (BOS when it adds one, then EOS, as T5's
tokenizer appends </s>), the continuation without; an empty context is the prefix token
(BOS, else EOS). The context is cut from the left to max_length tokens (counted); a
continuation longer than max_length is scored in windows, each encoding the text before
it. Requests that share a context share one encoder pass: a batch encodes each distinct
context once and the decoder rows gather their memory by index. ``loglikelihood_rolling``
uses the harness's windows over ``encode_text(text)`` (text then EOS) after the prefix
token: each window's context is the encoder input (the first: the prefix token alone,
i.e. EOS for T5's tokenizer), its tokens the decoder targets. ``generate_until`` decodes
with ``llm.eval.seq2seq.generate`` (KV cache, encoder once) and cuts at the ``until``
strings as the decoder path does; contexts are cut to max_length (the harness gives a
seq2seq encoder its whole max_length).

Rows are split over the mesh's data axes (``trainer.shard_batch``); on CPU the host waits
for each batch before laying out the next (simulated devices share the cores), elsewhere
one batch stays in flight. Single host, as ModelLM.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from llm import sharding, trainer
from llm.eval import seq2seq
from llm.eval.scorer import (DEFAULT_MAX_GEN_TOKS, MIN_WIDTH, ScorerBase, Tokens, _bucket, _on_mesh, cut_at_stop,
                             normalise_gen_kwargs, rolling_windows, split_context)
from llm.models import ModelConfig
from llm.models.layers import Memory
from llm.tokenizer import Tokenizer, prefix_token

_log = logging.getLogger(__name__)


class MaskedLMCannotGenerate(NotImplementedError):
  """generate_until asked of a masked LM."""


# ---------------------------------------------------------------------------------------------
# Shared: statistics, tokenisation helpers, windows.
# ---------------------------------------------------------------------------------------------


class _Scorer(ScorerBase):
  """What the encoder scorers share: framing settings, batch size, placement; ModelLM's counters."""

  def __init__(self, cfg: ModelConfig, tokenizer: Tokenizer, mesh: Mesh, max_length: int | None, batch_rows: int,
               add_bos_token: bool | None):
    self.cfg, self.tokenizer, self.mesh = cfg, tokenizer, mesh
    self.max_length = int(max_length or cfg.max_seq_len)
    if self.max_length < 1:
      raise ValueError(f'max_length must be positive, got {self.max_length}')
    if cfg.positions == 'learned' and self.max_length > cfg.max_seq_len:
      raise ValueError(f'max_length={self.max_length} exceeds the learned position table of '
                       f'{cfg.max_seq_len} positions; pass max_length <= {cfg.max_seq_len}')
    self.add_bos = (tokenizer.add_bos if add_bos_token is None else bool(add_bos_token)) \
        and tokenizer.bos_id is not None
    self.prefix = prefix_token(tokenizer)
    self.dp = int(mesh.shape['data'] * mesh.shape['fsdp'])
    self.batch_rows = -(-max(int(batch_rows), 1) // self.dp) * self.dp
    # See ModelLM: on CPU wait for each batch; on accelerators keep one in flight.
    self._block_each = mesh.devices.flat[0].platform == 'cpu'
    self.reset_stats()

  def _encode(self, text: str) -> Tokens:
    """Tokens of ``text`` without special tokens."""
    return tuple(np.asarray(self.tokenizer.encode(text)).tolist())

  def _dispatch(self, fn, host: dict[str, np.ndarray]):
    with sharding.activate(self.mesh):
      return fn(self.params, trainer.shard_batch(host, self.mesh))


def _windows(ctx: Tokens, cont: Tokens, width: int) -> list[tuple[Tokens, int]]:
  """(window, offset) pairs scoring ``cont`` after ``ctx`` in windows of at most ``width`` tokens.

  Window k holds continuation tokens [s, e) of ctx + cont (s from len(ctx) in steps of
  width) preceded by as much text as fits; its scored part starts at ``offset`` and runs to
  its end. One window (the context cut from the left) when the continuation fits.
  """
  full, c = ctx + cont, len(ctx)
  out = []
  for s in range(c, len(full), width):
    e = min(s + width, len(full))
    b = max(0, e - width)
    out.append((full[b:e], s - b))
  return out


def _run_batches(scorer: _Scorer, fn, batches, collect) -> None:
  """Dispatch each (host arrays, extra) batch; ``collect(out, extra)`` its results, one batch in flight at most."""
  pending = None
  for host, extra in batches:
    out = scorer._dispatch(fn, host)
    if pending is not None:
      collect(*pending)
    pending = (out, extra)
    if scorer._block_each:
      collect(*pending)
      pending = None
  if pending is not None:
    collect(*pending)


# ---------------------------------------------------------------------------------------------
# Masked LM: pseudo-log-likelihood.
# ---------------------------------------------------------------------------------------------


def _scored(logits_btv: jax.Array, targets_bt: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log p(target) [b, t], target is the argmax [b, t]) of logits [b, t, v]."""
  return trainer.target_logprobs(logits_btv, targets_bt), jnp.argmax(logits_btv, axis=-1) == targets_bt


@functools.lru_cache(maxsize=8)
def _pll_fn(graphdef: nnx.GraphDef, mesh: Mesh):
  """jit (params, batch) -> (log p(target) [R, 1], argmax == target [R, 1]) at each row's masked position."""
  del mesh  # a compile key: activation constraints are fixed at trace time under sharding.activate(mesh)

  def fn(params, batch):
    model = nnx.merge(graphdef, params)
    h_btd = model.trunk(batch['inputs'], None, batch['segments']).hidden_btd
    # The head (a d x V projection) only where it is read: one position per row.
    h_b1d = jnp.take_along_axis(h_btd, batch['mask_pos'][:, :, None], axis=1)
    return _scored(model.head(h_b1d), batch['targets'])

  return jax.jit(fn)


class MaskedLM(_Scorer):
  """A masked LM (``model.arch=encoder``) behind the harness's LM interface, by pseudo-log-likelihood.

  Requests are plain tuples: ``(context, continuation)``, a text, ``(context, gen_kwargs)``.
  See the module docstring for the framing, windows and truncation.
  """

  @staticmethod
  def skip_reason(task) -> str | None:
    """Why an evaluator should leave ``task`` out (None: score it): a masked LM does not generate."""
    if task.output_type == 'generate_until':
      return 'a generation task; a masked LM does not generate'
    return None

  def __init__(self, graphdef: nnx.GraphDef, cfg: ModelConfig, params: trainer.Params, tokenizer: Tokenizer,
               mesh: Mesh, *, max_length: int | None = None, batch_rows: int = 16,
               add_bos_token: bool | None = None, add_eos: bool = True):
    """max_length: tokens per row, framing included (default cfg.max_seq_len). batch_rows:
    masked copies per forward pass (rounded up to a multiple of the data-parallel size).
    add_bos_token: frame with BOS (None = as the tokenizer does); add_eos: end with EOS
    when the tokenizer has one (BERT's [SEP])."""
    if cfg.arch != 'encoder':
      raise ValueError(f'MaskedLM scores a masked LM (model.arch=encoder), got {cfg.arch!r}; use make_lm')
    mask_id = getattr(tokenizer, 'mask_id', None)
    if mask_id is None:
      raise ValueError(f'{type(tokenizer).__name__} has no mask token: pseudo-log-likelihood masks each scored '
                       'token; use the tokenizer the model was trained with (e.g. ByteTokenizer(mask=True))')
    super().__init__(cfg, tokenizer, mesh, max_length, batch_rows, add_bos_token)
    self.mask_id = int(mask_id)
    self.bos: Tokens = (tokenizer.bos_id,) if self.add_bos else ()
    self.eos: Tokens = (tokenizer.eos_id,) if add_eos and tokenizer.eos_id is not None else ()
    self.width = self.max_length - len(self.bos) - len(self.eos)  # text tokens per window
    if self.width < 1:
      raise ValueError(f'max_length={self.max_length} leaves no room for text between BOS and EOS')
    self.params = _on_mesh(params, mesh)
    self._fn = _pll_fn(graphdef, mesh)

  # ----- Tokenisation ---------------------------------------------------------------------

  def encode_pair(self, context: str, continuation: str,
                  cache: dict[str, Tokens] | None = None) -> tuple[Tokens, Tokens]:
    """(context tokens, continuation tokens) of text, no special tokens (the framing adds them).

    The harness's split: trailing whitespace of the context moves to the continuation, the
    pair is encoded whole and the continuation is what follows the context's encoding.
    """
    if context == '':
      return (), self._encode(continuation)
    ctx, context, continuation = split_context(context, continuation, cache, self._encode)
    return ctx, self._encode(context + continuation)[len(ctx):]

  def frame(self, tokens: Sequence[int]) -> Tokens:
    """BOS? + tokens + EOS?: a row as the model saw documents in training."""
    return self.bos + tuple(tokens) + self.eos

  # ----- The harness's three request types ------------------------------------------------

  def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
    """PLL of each whole text, over the rolling windows of the module docstring."""
    t0 = time.perf_counter()
    lls, _ = self.score_pairs([((), self._encode(t)) for t in texts], count_truncated=False)
    self._stats['requests'] += len(texts)
    self._stats['seconds'] += time.perf_counter() - t0
    return [float(x) for x in lls]

  def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    raise MaskedLMCannotGenerate(
        'a masked LM (model.arch=encoder) does not generate text: generate_until tasks need a decoder or an '
        'encoder-decoder; evaluate this model on loglikelihood / multiple_choice / loglikelihood_rolling tasks')

  # ----- Scoring --------------------------------------------------------------------------

  def score_pairs(self, pairs: Sequence[tuple[Tokens, Tokens]], count_truncated: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """PLL float64 [n] and is_greedy bool [n] of each (context tokens, continuation tokens), no specials."""
    copies: list[tuple[int, Tokens, int]] = []  # (pair, framed window, masked position)
    n_truncated = 0
    for i, (ctx, cont) in enumerate(pairs):
      if not cont:  # log 1 = 0, vacuously greedy
        continue
      n_truncated += len(ctx) + len(cont) > self.width
      for window, offset in _windows(tuple(ctx), tuple(cont), self.width):
        framed, first = self.frame(window), len(self.bos) + offset
        copies += [(i, framed, p) for p in range(first, first + len(window) - offset)]
    if count_truncated and n_truncated:
      _log.warning('%d of %d requests exceed max_length=%d tokens with their framing: contexts cut from the left',
                   n_truncated, len(pairs), self.max_length)
      self._stats['truncated'] += n_truncated
    return self._score_copies(copies, len(pairs))

  def score_sentence_pairs(self, pairs: Sequence[tuple[str, str]]
                           ) -> list[tuple[tuple[float, bool], tuple[float, bool]]]:
    """Nangia et al.'s (2020) CrowS-Pairs scores: per (sentence a, sentence b), ((PLL_a, greedy_a), (PLL_b, greedy_b)).

    Each sentence's score is the PLL of the tokens it shares with the other (the 'equal'
    blocks of difflib over the framed token ids, as their metric.py's ``get_span``; the
    framing tokens, which they skip as [CLS]/[SEP], are never masked), each masked alone
    with the modified tokens visible. ``autojunk`` is off: their sentences (WordPiece,
    under 200 tokens) never trigger it, byte-level ones would. A sentence longer than a
    window keeps its last tokens (counted in ``truncated``).
    """
    t0 = time.perf_counter()
    copies: list[tuple[int, Tokens, int]] = []
    for k, (a, b) in enumerate(pairs):
      ta, tb = self._encode(a), self._encode(b)
      self._stats['truncated'] += (len(ta) > self.width) + (len(tb) > self.width)
      fa, fb = self.frame(ta[-self.width:]), self.frame(tb[-self.width:])
      lo_a, hi_a, lo_b, hi_b = len(self.bos), len(fa) - len(self.eos), len(self.bos), len(fb) - len(self.eos)
      matcher = difflib.SequenceMatcher(None, fa, fb, autojunk=False)
      for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == 'equal':
          copies += [(2 * k, fa, p) for p in range(i1, i2) if lo_a <= p < hi_a]
          copies += [(2 * k + 1, fb, p) for p in range(j1, j2) if lo_b <= p < hi_b]
    lls, greedy = self._score_copies(copies, 2 * len(pairs))
    self._stats['requests'] += 2 * len(pairs)
    self._stats['seconds'] += time.perf_counter() - t0
    return [((float(lls[2 * k]), bool(greedy[2 * k])), (float(lls[2 * k + 1]), bool(greedy[2 * k + 1])))
            for k in range(len(pairs))]

  def _score_copies(self, copies: list[tuple[int, Tokens, int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed log p(token | its masked copy) float64 [n] and all-greedy bool [n] per owner."""
    uid: dict[tuple[Tokens, int], int] = {}
    copy_uid = np.asarray([uid.setdefault((w, p), len(uid)) for _, w, p in copies], np.int64)
    owner = np.asarray([i for i, _, _ in copies], np.int64)
    unique = list(uid)
    u_lp, u_greedy = np.zeros(len(unique), np.float64), np.ones(len(unique), bool)
    order = sorted(range(len(unique)), key=lambda u: -len(unique[u][0]))  # equal widths batch together

    def batches():
      for b0 in range(0, len(order), self.batch_rows):
        idx = order[b0:b0 + self.batch_rows]
        W = _bucket(len(unique[idx[0]][0]), MIN_WIDTH, self.max_length)
        R = _bucket(len(idx), self.dp, self.batch_rows)
        host = {'inputs': np.full((R, W), self.tokenizer.pad_id, np.int32),
                'segments': np.zeros((R, W), np.int32), 'mask_pos': np.zeros((R, 1), np.int32),
                'targets': np.zeros((R, 1), np.int32)}
        for r, u in enumerate(idx):
          window, p = unique[u]
          host['inputs'][r, :len(window)] = window
          host['inputs'][r, p] = self.mask_id
          host['segments'][r, :len(window)] = 1
          host['mask_pos'][r, 0], host['targets'][r, 0] = p, window[p]
        self._stats['forward_rows'] += R
        self._stats['forward_batches'] += 1
        self._stats['row_slots'] += R * W
        self._stats['tokens_forward'] += sum(len(unique[u][0]) for u in idx)
        yield host, np.asarray(idx, np.int64)

    def collect(out, idx):
      lp, greedy = (np.asarray(x)[:len(idx), 0] for x in out)
      u_lp[idx], u_greedy[idx] = lp, greedy

    _run_batches(self, self._fn, batches(), collect)
    lls, greedy = np.zeros(n, np.float64), np.ones(n, bool)
    np.add.at(lls, owner, u_lp[copy_uid])
    np.logical_and.at(greedy, owner, u_greedy[copy_uid])
    self._stats['unique_sequences'] += len({w for w, _ in unique})
    self._stats['tokens_scored'] += len(unique)
    return lls, greedy


# ---------------------------------------------------------------------------------------------
# Encoder-decoder.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _seq2seq_fn(graphdef: nnx.GraphDef, mesh: Mesh):
  """jit (params, batch) -> (log p(target) [R, T], argmax == target [R, T]).

  The batch's encoder rows ('inputs', 'segments' [Re, S]) are encoded once; decoder row r
  reads the memory of encoder row ctx_index[r] ('dec_inputs', 'dec_positions',
  'dec_segments', 'targets' [R, T]; 'ctx_index' [R, 1]).
  """
  del mesh

  def fn(params, batch):
    model = nnx.merge(graphdef, params)
    segments_bs = batch['segments']
    memory = model.memory(model.encode(batch['inputs'], None, segments_bs).hidden_btd, segments_bs)
    idx = batch['ctx_index'][:, 0]
    memory = Memory(jnp.take(memory.k_bskh, idx, axis=1), jnp.take(memory.v_bskh, idx, axis=1),  # [l, b, s, k, h]
                    jnp.take(memory.segments_bs, idx, axis=0))
    h_btd = model.decode(batch['dec_inputs'], memory, batch['dec_positions'], batch['dec_segments']).hidden_btd
    return _scored(model.head(h_btd), batch['targets'])

  return jax.jit(fn)


class Seq2SeqLM(_Scorer):
  """An encoder-decoder (``model.arch=encoder_decoder``) behind the harness's LM interface.

  Requests are plain tuples: ``(context, continuation)``, a text, ``(context, gen_kwargs)``.
  See the module docstring for the tokenisation, truncation and windows.
  """

  def __init__(self, graphdef: nnx.GraphDef, cfg: ModelConfig, params: trainer.Params, tokenizer: Tokenizer,
               mesh: Mesh, *, max_length: int | None = None, batch_rows: int = 16, share_context: bool = True,
               max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, add_bos_token: bool | None = None,
               decoder_start_id: int | None = None):
    """max_length: the longest encoder input and decoder window (default cfg.max_seq_len).
    batch_rows: decoder rows per forward pass. share_context: encode a context once for all
    its continuations in a batch (False: once per row, the reference). max_gen_toks: the
    generation budget when a request names none. add_bos_token: BOS before the text (None =
    as the tokenizer does). decoder_start_id: default the pad id, as T5."""
    if cfg.arch != 'encoder_decoder':
      raise ValueError(f'Seq2SeqLM scores an encoder-decoder (model.arch=encoder_decoder), got {cfg.arch!r}; '
                       'use make_lm')
    super().__init__(cfg, tokenizer, mesh, max_length, batch_rows, add_bos_token)
    self.graphdef = graphdef
    self.share_context, self.max_gen_toks = share_context, int(max_gen_toks)
    self.start_id = int(tokenizer.pad_id if decoder_start_id is None else decoder_start_id)
    self.params = _on_mesh(params, mesh)
    self._fn = _seq2seq_fn(graphdef, mesh)

  # ----- Tokenisation ---------------------------------------------------------------------

  def encode_text(self, text: str) -> Tokens:
    """Encoder-side tokens of ``text``: BOS when add_bos, the text, EOS (T5's tokenizer appends </s>)."""
    eos = () if self.tokenizer.eos_id is None else (self.tokenizer.eos_id,)
    return ((self.tokenizer.bos_id,) if self.add_bos else ()) + self._encode(text) + eos

  def encode_pair(self, context: str, continuation: str,
                  cache: dict[str, Tokens] | None = None) -> tuple[Tokens, Tokens]:
    """(encoder tokens, decoder target tokens), split as the harness's seq2seq branch (module docstring)."""
    if context == '':
      cont = self._encode(continuation)
      if cont and cont[0] == self.prefix:
        return cont[:1], cont[1:]
      return (self.prefix,), cont
    ctx, context, continuation = split_context(context, continuation, cache, self.encode_text)
    return ctx, self._encode(continuation)

  # ----- The harness's three request types ------------------------------------------------

  def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
    """log p(text) over the harness's windows: window context -> encoder, window tokens -> decoder."""
    t0 = time.perf_counter()
    pairs, owner = [], []
    for i, text in enumerate(texts):
      for w in rolling_windows(self.encode_text(text), self.prefix, self.max_length):
        pairs.append(w)
        owner.append(i)
    lls, _ = self.score_pairs(pairs, count_truncated=False)
    out = np.zeros(len(texts), np.float64)
    np.add.at(out, np.asarray(owner, np.int64), lls)
    self._stats['requests'] += len(texts)
    self._stats['seconds'] += time.perf_counter() - t0
    return [float(x) for x in out]

  def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Generated text per (context, gen_kwargs), cut at the 'until' strings (as ModelLM's).

    Requests with equal gen_kwargs decode together; the encoder reads ``encode_text(context)``
    cut from the left to max_length. Greedy unless the task asks for sampling (``do_sample``
    or temperature > 0), as the harness's Hugging Face backend.
    """
    t0 = time.perf_counter()
    tok = self.tokenizer
    eos = tok.decode([tok.eos_id]) if tok.eos_id is not None else ''
    groups: dict[str, list[int]] = {}
    for i, (_, kw) in enumerate(requests):
      groups.setdefault(json.dumps(kw, sort_keys=True, default=repr), []).append(i)
    out: list[str | None] = [None] * len(requests)
    for idx in groups.values():
      kwargs = normalise_gen_kwargs(requests[idx[0]][1], self.max_gen_toks)
      if eos and eos not in kwargs['until']:
        kwargs['until'].append(eos)
      temperature = float(kwargs.get('temperature', 0.0) or 0.0)
      if not kwargs.get('do_sample', temperature > 0):
        temperature = 0.0
      order = sorted(idx, key=lambda i: -len(requests[i][0]))
      inputs = [list(self.encode_text(requests[i][0])) or [self.prefix] for i in order]
      gen = seq2seq.generate(self.graphdef, self.cfg, self.params, inputs, kwargs['max_gen_toks'],
                             temperature=temperature, top_k=int(kwargs.get('top_k', 0) or 0),
                             top_p=float(kwargs.get('top_p', 1.0) or 1.0), eos_id=tok.eos_id,
                             start_id=self.start_id,
                             stop_sequences=[list(tok.encode(s)) for s in kwargs['until'] if s],
                             seed=int(kwargs.get('seed', 0) or 0), mesh=self.mesh, max_length=self.max_length)
      self._stats['truncated'] += gen.truncated
      for i, t in zip(order, gen.tokens):
        out[i] = cut_at_stop(tok.decode(t), kwargs['until'])
    out = self.monitored(requests, out)  # type: ignore[arg-type]
    self._stats['generate_requests'] += len(requests)
    self._stats['generate_seconds'] += time.perf_counter() - t0
    return out

  # ----- Scoring --------------------------------------------------------------------------

  def score_pairs(self, pairs: Sequence[tuple[Tokens, Tokens]], count_truncated: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Summed log p(continuation | encoder input) float64 [n] and is_greedy bool [n] per (encoder tokens,
    decoder target tokens) pair; the encoder input is cut from the left to max_length, longer
    continuations go in windows (module docstring)."""
    L = self.max_length
    parts: list[tuple[int, Tokens, Tokens]] = []
    n_truncated = 0
    for i, (ctx, cont) in enumerate(pairs):
      ctx, cont = tuple(ctx), tuple(cont)
      if not cont:
        continue
      n_truncated += len(ctx) > L or len(cont) > L
      if len(cont) <= L:
        parts.append((i, ctx[-L:], cont))
        continue
      for s in range(0, len(cont), L):
        parts.append((i, (ctx + cont[:s])[-L:], cont[s:s + L]))
    if count_truncated and n_truncated:
      _log.warning('%d of %d requests exceed max_length=%d tokens: contexts cut from the left', n_truncated,
                   len(pairs), L)
      self._stats['truncated'] += n_truncated
    uid: dict[tuple[Tokens, Tokens], int] = {}
    part_uid = np.asarray([uid.setdefault((c, x), len(uid)) for _, c, x in parts], np.int64)
    owner = np.asarray([i for i, _, _ in parts], np.int64)
    unique = list(uid)
    u_ll, u_greedy = self._run(unique)
    lls, greedy = np.zeros(len(pairs), np.float64), np.ones(len(pairs), bool)
    np.add.at(lls, owner, u_ll[part_uid])
    np.logical_and.at(greedy, owner, u_greedy[part_uid])
    self._stats['unique_sequences'] += len(unique)
    self._stats['tokens_scored'] += sum(len(x) for _, x in unique)
    return lls, greedy

  def _run(self, unique: list[tuple[Tokens, Tokens]]) -> tuple[np.ndarray, np.ndarray]:
    """Forward passes over the unique (encoder input, targets) pairs; summed log-prob and greedy flag of each."""
    # Longest contexts first, a context's continuations together (longest first), so that a
    # batch's encoder rows are few and of similar widths.
    by_ctx: dict[Tokens, list[int]] = {}
    for u, (ctx, _) in enumerate(unique):
      by_ctx.setdefault(ctx, []).append(u)
    order = [u for ctx in sorted(by_ctx, key=lambda c: -len(c))
             for u in sorted(by_ctx[ctx], key=lambda u: -len(unique[u][1]))]
    lls, greedy = np.zeros(len(unique), np.float64), np.ones(len(unique), bool)

    def batches():
      for b0 in range(0, len(order), self.batch_rows):
        idx = order[b0:b0 + self.batch_rows]
        ctxs: dict[Tokens, int] = {}
        ctx_index = [ctxs.setdefault(unique[u][0], len(ctxs)) if self.share_context else r
                     for r, u in enumerate(idx)]
        enc_rows = list(ctxs) if self.share_context else [unique[u][0] for u in idx]
        S = _bucket(max(len(c) for c in enc_rows), MIN_WIDTH, self.max_length)
        T = _bucket(max(len(unique[u][1]) for u in idx), MIN_WIDTH, self.max_length)
        Re, R = _bucket(len(enc_rows), self.dp, self.batch_rows), _bucket(len(idx), self.dp, self.batch_rows)
        host = {'inputs': np.full((Re, S), self.tokenizer.pad_id, np.int32), 'segments': np.zeros((Re, S), np.int32),
                'ctx_index': np.zeros((R, 1), np.int32)}
        for k in ('dec_inputs', 'dec_positions', 'dec_segments', 'targets'):
          host[k] = np.zeros((R, T), np.int32)
        for e, ctx in enumerate(enc_rows):
          host['inputs'][e, :len(ctx)] = ctx
          host['segments'][e, :len(ctx)] = 1
        for r, (u, e) in enumerate(zip(idx, ctx_index)):
          cont = unique[u][1]
          k = len(cont)
          host['ctx_index'][r, 0] = e
          host['dec_inputs'][r, :k] = (self.start_id,) + cont[:-1]
          host['dec_positions'][r, :k] = np.arange(k)
          host['dec_segments'][r, :k] = 1
          host['targets'][r, :k] = cont
        self._stats['forward_rows'] += R
        self._stats['forward_batches'] += 1
        self._stats['row_slots'] += Re * S + R * T
        self._stats['tokens_forward'] += sum(map(len, enc_rows)) + sum(len(unique[u][1]) for u in idx)
        yield host, (np.asarray(idx, np.int64), np.asarray([len(unique[u][1]) for u in idx], np.int64))

    def collect(out, extra):
      idx, lengths = extra
      lp_bt, greedy_bt = (np.asarray(x)[:len(idx)] for x in out)
      real = np.arange(lp_bt.shape[1])[None, :] < lengths[:, None]
      lls[idx] = np.where(real, lp_bt.astype(np.float64), 0.0).sum(1)
      greedy[idx] = np.all(greedy_bt | ~real, axis=1)

    _run_batches(self, self._fn, batches(), collect)
    return lls, greedy


# ---------------------------------------------------------------------------------------------
# A fine-tuned classifier behind the same interface.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _classify_fn(graphdef: nnx.GraphDef, mesh: Mesh):
  """jit (params, batch) -> class log-probabilities [R, C] of each row's first-token classifier."""
  del mesh  # a compile key, as _pll_fn's

  def fn(params, batch):
    model = nnx.merge(graphdef, params)
    return jax.nn.log_softmax(model.classify(model.hidden(batch)))

  return jax.jit(fn)


class ClassifierLM(_Scorer):
  """An encoder fine-tuned with a classifier (``model.num_labels``) answering a multiple-choice
  task's requests: log p(continuation | context) is the log-probability of the class whose
  name the continuation spells (``labels``, the task's choices: what finetune.py trained), so
  fine-tuned accuracy comes from the same task file and metric as the zero- and few-shot ones.

  A row is [BOS] context [EOS] as ``llm.sft.classification_rows`` lays out training rows
  (longer contexts keep their start, as there); each distinct context is classified once.
  """

  def skip_reason(self, task) -> str | None:
    """Why an evaluator should leave ``task`` out: a classifier answers multiple-choice tasks over its classes."""
    if task.output_type != 'multiple_choice':
      return f'{task.output_type}; a classifier answers multiple-choice tasks over its classes only'
    try:
      names = task.class_names()
    except ValueError as e:
      return str(e)
    if [n.strip() for n in names] != self.labels:
      return f'its choices {names} are not the classifier\'s classes {self.labels}'
    return None

  def __init__(self, graphdef: nnx.GraphDef, cfg: ModelConfig, params: trainer.Params, tokenizer: Tokenizer,
               mesh: Mesh, labels: Sequence[str], *, max_length: int | None = None, batch_rows: int = 16):
    super().__init__(cfg, tokenizer, mesh, max_length, batch_rows, None)
    if not cfg.num_labels or cfg.num_labels != len(labels):
      raise ValueError(f'the model has a classifier of {cfg.num_labels} classes, not one for {list(labels)} '
                       '(a checkpoint fine-tuned before class names were recorded: fine-tune it again)')
    self.labels = [str(x).strip() for x in labels]
    self.params = _on_mesh(params, mesh)
    self._fn = _classify_fn(graphdef, mesh)

  def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
    t0 = time.perf_counter()
    contexts = sorted({c for c, _ in requests})
    logp = self._classify(contexts)
    where = {c: i for i, c in enumerate(contexts)}
    out = []
    for context, continuation in requests:
      name = continuation.strip()
      if name not in self.labels:
        raise ValueError(f'the continuation {continuation!r} names no class of this classifier ({self.labels})')
      row = logp[where[context]]
      k = self.labels.index(name)
      out.append((float(row[k]), bool(np.argmax(row) == k)))
    self._stats['requests'] += len(requests)
    self._stats['seconds'] += time.perf_counter() - t0
    return out

  def _classify(self, contexts: list[str]) -> np.ndarray:
    tok, width = self.tokenizer, self.max_length
    head = [tok.bos_id] if tok.bos_id is not None else []
    tail = [tok.eos_id] if tok.eos_id is not None else []
    rows = []
    for c in contexts:
      body = list(self._encode(c))
      if len(head) + len(body) + len(tail) > width:
        body = body[:width - len(head) - len(tail)]
        self._stats['truncated'] += 1
      rows.append(head + body + tail)
    out = np.zeros((len(contexts), len(self.labels)), np.float32)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))

    def batches():
      for i in range(0, len(order), self.batch_rows):
        idx = order[i:i + self.batch_rows]
        w = _bucket(max(len(rows[j]) for j in idx), MIN_WIDTH, width)
        host = {k: np.zeros((self.batch_rows, w), np.int32) for k in ('inputs', 'positions', 'segments')}
        for r, j in enumerate(idx):
          n = len(rows[j])
          host['inputs'][r, :n], host['positions'][r, :n], host['segments'][r, :n] = rows[j], np.arange(n), 1
          self._stats['tokens_forward'] += n
        self._stats['forward_rows'] += self.batch_rows
        self._stats['forward_batches'] += 1
        self._stats['row_slots'] += self.batch_rows * w
        yield host, idx

    def collect(logp, idx):
      out[idx] = np.asarray(jax.device_get(logp))[:len(idx)]

    _run_batches(self, self._fn, batches(), collect)
    self._stats['unique_sequences'] += len(contexts)
    return out

  def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
    raise NotImplementedError('a classifier scores its classes only: evaluate perplexity with the masked LM '
                              'it was fine-tuned from')

  def generate_until(self, requests: list[tuple[str, dict]]) -> list[str]:
    raise NotImplementedError('a classifier does not generate; evaluate it on multiple-choice tasks')
