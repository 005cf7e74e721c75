"""The harness's LM interface over our model: log-likelihoods, rolling perplexity, generation.

``ModelLM`` answers the three request types of lm-evaluation-harness 0.4.13 with the
harness's tokenisation and truncation rules (``HFLM._encode_pair``, ``_loglikelihood_tokens``,
``get_rolling_token_windows``), so a task scores the same documents the same way, but it
computes them in far fewer forward passes:

* Packing. Requests are sorted longest first and packed best-fit into rows of up to
  ``max_length`` tokens, each request its own segment (segment ids keep attention inside
  a request, positions restart at 0), instead of one right-padded request per row. A row
  is only as wide as its longest request needs, or ``pack_width_floor`` if wider: dense
  attention costs a row's full width squared, so shorter requests fill gaps rather than
  widen rows beyond what attention can afford.
* Shared contexts. The choices of a multiple-choice question share one context. They go
  into ONE segment: the context once (branch 0), then each choice as its own branch whose
  positions continue from the context's end (``llm.models.attention_mask``: a branch sees
  the context and itself, never another choice). The context's last token predicts every
  choice's first token but a position has one target, so each branch starts with its own
  copy of that token: one extra token per choice instead of a whole context.
* Deduplication. Identical (context, continuation) token pairs are scored once.

``pack=False`` (one request per row) and ``share_context=False`` compute the same numbers
the slow way; they are the references of ``tests/test_scorer.py`` and
``benchmarks/scoring.py``. The rows are summed on the host in float64 from the model's
float32 log-probabilities (``trainer.token_logprobs``).

Batches have bucketed shapes (row count: a power of two times the data-parallel size, up
to ``batch_rows``; width: a power of two from 16 up to ``max_length``) so a whole task
compiles a handful of programs, and they are split over the mesh's data axes. Single
host: every process would need its own rows (``trainer.shard_batch``) in a multi-host run.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from llm import sharding, trainer
from llm.models import ModelConfig
from llm.tokenizer import Tokenizer, prefix_token

if TYPE_CHECKING:
  from llm.eval.monitor import Monitor

# (prompt token lists, normalised gen_kwargs) -> generated texts, one per prompt. gen_kwargs
# always holds 'until' (list of str) and 'max_gen_toks' (int), as the harness normalises them.
GenerateFn = Callable[[list[list[int]], dict[str, Any]], list[str]]
Tokens = tuple[int, ...]

_log = logging.getLogger(__name__)
MIN_WIDTH = 16  # narrowest row bucket: below this the per-batch overhead dominates anyway
ATTENTION_SHARE = 0.25  # packed rows stop widening where attention reaches this share (pack_width_floor)
DEFAULT_MAX_GEN_TOKS = 256  # the harness's HFLM default when a task names none
_MAX_TOKEN_ALIASES = ('max_gen_toks', 'max_new_tokens', 'max_tokens', 'max_completion_tokens')  # by priority


# ---------------------------------------------------------------------------------------------
# The harness's windows for loglikelihood_rolling (lm_eval/utils.py), on token lists.
# ---------------------------------------------------------------------------------------------


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_seq_len: int) -> list[tuple[Tokens, Tokens]]:
  """Disjoint (context, continuation) windows covering ``tokens``, as the harness builds them.

  ``get_rolling_token_windows(..., context_len=1)`` then ``make_disjoint_window``: the first
  window predicts up to ``max_seq_len`` tokens after ``prefix_token``; each later one predicts
  the next ``max_seq_len`` tokens with as much preceding text as context as fits, so every
  token is predicted exactly once and the last window still sees a full-length input.
  """
  tokens = tuple(int(t) for t in tokens)
  if not tokens:
    return []
  first = min(max_seq_len, len(tokens))
  windows = [((prefix_token,), tokens[:first])]
  predicted = first
  while predicted < len(tokens):
    pred_len = min(len(tokens) - predicted, max_seq_len)
    end = predicted + pred_len
    inputs = tokens[max(end - max_seq_len - 1, 0):end - 1]
    # make_disjoint_window: drop the part of the input that is also predicted.
    windows.append((inputs[:len(inputs) - (pred_len - 1)], tokens[predicted:end]))
    predicted = end
  return windows


def cut_at_stop(text: str, until: Sequence[str]) -> str:
  """The harness's ``postprocess_generated_text``: keep what precedes each stop string in turn.

  Applied term after term as the harness does (not "earliest of all"), so the two agree
  even when stop strings overlap; an empty stop string is ignored.
  """
  for term in until:
    if term:
      text = text.split(term)[0]
  return text


def normalise_gen_kwargs(gen_kwargs: dict[str, Any], default_max_gen_toks: int) -> dict[str, Any]:
  """A copy with 'until' a list of strings and 'max_gen_toks' set from the harness's aliases.

  Mirrors ``lm_eval.models.utils.normalize_gen_kwargs`` (max_gen_toks > max_new_tokens >
  max_tokens > max_completion_tokens); llm/ does not depend on the harness.
  """
  kwargs = dict(gen_kwargs)
  until = kwargs.get('until')
  until = [] if until is None else [until] if isinstance(until, str) else list(until)
  given = [kwargs.pop(k) for k in _MAX_TOKEN_ALIASES if kwargs.get(k) is not None]
  for k in _MAX_TOKEN_ALIASES:
    kwargs.pop(k, None)
  kwargs['until'] = until
  kwargs['max_gen_toks'] = int(given[0]) if given else int(default_max_gen_toks)
  return kwargs


# ---------------------------------------------------------------------------------------------
# Host-side layout: segments (one request, or one context with several branches) and rows.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Segment:
  """One attention-isolated stretch of a row and where its continuations' targets sit in it."""

  inputs: list[int]
  targets: list[int]
  positions: list[int]
  branches: list[int]
  spans: list[tuple[int, int, int]]  # (pair id, offset in the segment, length)

  def __len__(self) -> int:
    return len(self.inputs)


def _single_segment(pid: int, ctx: Tokens, cont: Tokens, max_length: int) -> _Segment:
  """ctx + cont, cut from the left to the last max_length + 1 tokens (the harness's window)."""
  seq = (ctx + cont)[-(max_length + 1):]
  n = len(seq) - 1
  return _Segment(list(seq[:-1]), list(seq[1:]), list(range(n)), [0] * n, [(pid, n - len(cont), len(cont))])


def _shared_segment(ctx: Tokens, conts: list[tuple[int, Tokens]]) -> _Segment:
  """ctx[:-1] once (branch 0); branch j = ctx[-1] + cont_j[:-1] predicting cont_j.

  Branch j's positions run from len(ctx) - 1, exactly where the request alone would put
  them, so each choice's logits are those of scoring it by itself.
  """
  c = len(ctx) - 1
  seg = _Segment(list(ctx[:-1]), list(ctx[1:]), list(range(c)), [0] * c, [])
  for j, (pid, cont) in enumerate(conts, start=1):
    k = len(cont)
    seg.spans.append((pid, len(seg), k))
    seg.inputs += [ctx[-1], *cont[:-1]]
    seg.targets += cont
    seg.positions += range(c, c + k)
    seg.branches += [j] * k
  return seg


def _first_fit(sizes: Sequence[int], capacity: int) -> list[list[int]]:
  """Indices grouped so that each group's sizes sum to <= capacity (first fit, largest first)."""
  bins: list[list[int]] = []
  free: list[int] = []
  for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
    b = next((b for b, f in enumerate(free) if f >= sizes[i]), None)
    if b is None:
      bins.append([])
      free.append(capacity)
      b = len(bins) - 1
    bins[b].append(i)
    free[b] -= sizes[i]
  return bins


def pack_rows(lengths: Sequence[int], max_width: int, min_width: int | None = None
              ) -> tuple[list[list[int]], list[int]]:
  """Best-fit decreasing bin packing of items into rows; (item ids per row, row widths).

  Items go longest first into the row whose free space fits them most tightly. A new row
  is as wide as the item that opens it rounded up to a bucket (``_bucket``), but at least
  ``min_width`` (default: every row ``max_width``), so a row is never much wider than its
  longest item and a short item never widens a row: it fills a gap or opens a narrow one.
  Rows are kept in lists by free space, so a fit is found by scanning free sizes, not rows.
  """
  min_width = max_width if min_width is None else min(min_width, max_width)
  rows: list[list[int]] = []
  widths: list[int] = []
  by_free: list[list[int]] = [[] for _ in range(max_width + 1)]  # free space -> row ids
  for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
    n = lengths[i]
    if n > max_width:
      raise ValueError(f'item of {n} tokens does not fit a row of {max_width}')
    f = next((f for f in range(n, max_width + 1) if by_free[f]), None)
    if f is None:
      rows.append([])
      widths.append(_bucket(max(n, min_width), MIN_WIDTH, max_width))
      r, f = len(rows) - 1, widths[-1]
    else:
      r = by_free[f].pop()
    rows[r].append(i)
    if f - n > 0:
      by_free[f - n].append(r)
  return rows, widths


def pack_width_floor(cfg: ModelConfig, max_length: int) -> int:
  """Narrowest row the packer opens: the widest bucket whose attention stays cheap.

  A packed row's dense attention costs every query every key of the row, masked or not
  (and on CPU its [t, s] logits are memory-bound), so a row much wider than its requests
  spends more there than packing saves on padding: full 512-token rows made CrowS-Pairs
  0.6x as fast as one request per row on the tiny model (benchmarks/scoring.py). Rows may
  grow until attention's matmul FLOPs per token reach ATTENTION_SHARE of the rest
  (projections, MLP, head): 128 for the tiny model, max_length for 124M and up.
  """
  d, h = cfg.d_model, cfg.d_head
  per_token = 2 * cfg.n_layers * (d * h * (cfg.n_heads + 2 * cfg.n_kv_heads) + cfg.n_heads * h * d
                                  + d * cfg.d_ff * (3 if cfg.mlp == 'swiglu' else 2)) + 2 * d * cfg.padded_vocab
  per_key = 4 * cfg.n_layers * cfg.n_heads * h  # q.k and p.v per query-key pair
  w = MIN_WIDTH
  while w * 2 <= max_length and per_key * w * 2 <= ATTENTION_SHARE * per_token:
    w *= 2
  return min(w, max_length)


def _bucket(n: int, lo: int, hi: int) -> int:
  """Smallest lo * 2^k >= n, capped at hi."""
  b = lo
  while b < n:
    b *= 2
  return min(b, hi)


@functools.lru_cache(maxsize=8)
def _scoring_fn(graphdef: nnx.GraphDef, mesh: Mesh) -> Callable:
  """One jitted (params, batch) -> (logprob_bt, is_greedy_bt) per model graph and mesh.

  Cached so that a scorer built at every evaluation during training reuses the programs
  compiled the first time. The mesh is part of the key because the activations' sharding
  constraints are fixed at trace time under ``sharding.activate(mesh)``.
  """
  del mesh
  return jax.jit(functools.partial(trainer.token_logprobs, graphdef, with_greedy=True))


# ---------------------------------------------------------------------------------------------
# The LM.
# ---------------------------------------------------------------------------------------------


def split_context(context: str, continuation: str, cache: dict[str, Tokens] | None,
                  encode: Callable[[str], Tokens]) -> tuple[Tokens, str, str]:
  """The harness's split of a (non-empty) context and its continuation: the context's trailing
  whitespace moves to the continuation. Returns (the context's tokens by ``encode``, read from
  or written to ``cache`` (context -> tokens) so that a call encodes each context once, the
  context, the continuation)."""
  n_spaces = len(context) - len(context.rstrip())
  if n_spaces:
    context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
  ctx = None if cache is None else cache.get(context)
  if ctx is None:
    ctx = encode(context)
    if cache is not None:
      cache[context] = ctx
  return ctx, context, continuation


class ScorerBase:
  """What every scorer shares (ModelLM, and the encoder and encoder-decoder scorers of
  ``llm.eval.encoder_scoring``): the counters, so results files and evaluators read them
  alike, and the harness's ``loglikelihood`` over the scorer's ``encode_pair`` and
  ``score_pairs``."""

  # An llm.eval.monitor.Monitor that generate_until hands its texts to (None: none); the
  # recipes attach the run's monitor (config.monitor) to the scorer they build.
  monitor: Monitor | None = None

  def monitored(self, requests: Sequence[tuple[str, dict[str, Any]]], texts: list[str]) -> list[str]:
    """``generate_until``'s texts as its caller receives them: through ``self.monitor`` when attached."""
    if self.monitor is None:
      return texts
    return self.monitor.apply(texts, prompts=[context for context, _ in requests], source=type(self).__name__)

  def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
    """(log-likelihood of the continuation given the context, whether the model's greedy choice
    produces it) per request, as the scorer defines both."""
    t0 = time.perf_counter()
    cache: dict[str, Tokens] = {}  # per call: a question's choices share one context encoding
    lls, greedy = self.score_pairs([self.encode_pair(c, x, cache) for c, x in requests])
    self._stats['requests'] += len(requests)
    self._stats['seconds'] += time.perf_counter() - t0
    return [(float(l), bool(g)) for l, g in zip(lls, greedy)]

  def reset_stats(self) -> None:
    self._stats = dict(requests=0, unique_sequences=0, tokens_scored=0, tokens_forward=0, forward_rows=0,
                       forward_batches=0, row_slots=0, seconds=0.0, truncated=0, generate_requests=0,
                       generate_seconds=0.0)

  def count(self, requests: int, seconds: float) -> None:
    """Add requests answered through ``score_pairs`` by a caller (the harness adapter) to the stats."""
    self._stats['requests'] += int(requests)
    self._stats['seconds'] += float(seconds)

  @property
  def stats(self) -> dict[str, Any]:
    """Counters since construction (or reset_stats), for the results file.

    requests: loglikelihood pairs + rolling texts; unique_sequences: scored after
    deduplication (rolling windows included); tokens_scored: continuation tokens whose
    log-probability was computed; tokens_forward / row_slots: real / all token slots
    passed through the model (row_fill is their ratio); truncated: requests and prompts
    cut from the left to fit max_length; seconds: wall time of the scoring calls.
    """
    s = dict(self._stats)
    s['requests_per_sec'] = s['requests'] / s['seconds'] if s['seconds'] else 0.0
    s['row_fill'] = s['tokens_forward'] / s['row_slots'] if s['row_slots'] else 0.0
    return s


class ModelLM(ScorerBase):
  """lm-evaluation-harness's LM interface (loglikelihood, loglikelihood_rolling, generate_until).

  Requests are plain tuples rather than harness ``Instance``s: ``(context, continuation)``,
  a text, ``(context, gen_kwargs)``. Results come back in the input order.
  """

  def __init__(self, graphdef: nnx.GraphDef, cfg: ModelConfig, params: trainer.Params, tokenizer: Tokenizer,
               mesh: Mesh, *, max_length: int | None = None, batch_rows: int = 16, pack: bool = True,
               share_context: bool = True, generate_fn: GenerateFn | None = None,
               max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, add_bos_token: bool | None = None):
    """max_length: tokens the model sees (default cfg.max_seq_len). batch_rows: rows per
    forward pass, rounded up to a multiple of the data-parallel size. pack / share_context:
    see the module docstring; False/False is the one-request-per-row reference. generate_fn:
    the decoder ``generate_until`` delegates to. max_gen_toks: generation budget when a
    request names none (the harness's default), which also bounds the prompt length.
    add_bos_token: the harness's HFLM argument of that name: whether texts are encoded
    with BOS in front (None = as the tokenizer does, ``Tokenizer.add_bos``). ``pack_floor``
    (set here from ``pack_width_floor``) is the narrowest packed row."""
    self.cfg, self.tokenizer, self.mesh = cfg, tokenizer, mesh
    self.add_bos = (tokenizer.add_bos if add_bos_token is None else bool(add_bos_token)) \
        and tokenizer.bos_id is not None
    self.prefix = prefix_token(tokenizer)
    self.max_length = int(max_length or cfg.max_seq_len)
    if self.max_length < 1:
      raise ValueError(f'max_length must be positive, got {self.max_length}')
    if cfg.positions == 'learned' and self.max_length > cfg.max_seq_len:
      raise ValueError(f'max_length={self.max_length} exceeds the learned position table of '
                       f'{cfg.max_seq_len} positions; pass max_length <= {cfg.max_seq_len}')
    self.dp = int(mesh.shape['data'] * mesh.shape['fsdp'])
    self.batch_rows = -(-max(int(batch_rows), 1) // self.dp) * self.dp
    self.pack, self.share_context = pack, share_context
    self.pack_floor = pack_width_floor(cfg, self.max_length)
    self.generate_fn, self.max_gen_toks = generate_fn, int(max_gen_toks)
    self.params = _on_mesh(params, mesh)
    self._fn = _scoring_fn(graphdef, mesh)
    # On CPU, block on each batch before dispatching the next: simulated devices share the
    # host's cores, and programs queued behind each other only compete for them (and for
    # the cross-device transfers). On accelerators one batch stays in flight while the
    # host lays out the next.
    self._block_each = mesh.devices.flat[0].platform == 'cpu'
    self.reset_stats()

  # ----- Tokenisation ---------------------------------------------------------------------

  def _encode(self, text: str) -> Tokens:
    """Tokens of ``text`` without special tokens."""
    return tuple(np.asarray(self.tokenizer.encode(text)).tolist())

  def encode_text(self, text: str) -> Tokens:
    """Tokens of ``text`` as the harness's ``tok_encode`` gives them: BOS first when add_bos."""
    return ((self.tokenizer.bos_id,) if self.add_bos else ()) + self._encode(text)

  def encode_pair(self, context: str, continuation: str,
                  cache: dict[str, Tokens] | None = None) -> tuple[Tokens, Tokens]:
    """(context tokens, continuation tokens), split as the harness splits them.

    Trailing whitespace of the context moves to the continuation, the pair is encoded
    whole and the continuation is what follows the context's own encoding (a tokenizer
    may merge across the boundary); both start with BOS when ``add_bos``. An empty
    context is the prefix token alone (BOS, else EOS: the harness's rule). ``cache``
    (context -> tokens) lets a call encode each distinct context once.
    """
    if context == '':
      cont = self._encode(continuation)
      if cont and cont[0] == self.prefix:  # the harness: a continuation that starts with the prefix token
        return cont[:1], cont[1:]
      return (self.prefix,), cont
    ctx, context, continuation = split_context(context, continuation, cache, self.encode_text)
    return ctx, self.encode_text(context + continuation)[len(ctx):]

  # ----- The harness's three request types ------------------------------------------------

  def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
    """log p(text) of each whole text over the harness's disjoint windows after the prefix token.

    As in the harness, the text is encoded by ``encode_text``: with ``add_bos`` its own BOS
    is the first token scored (after the prefix BOS), exactly what lm-evaluation-harness's
    HFLM computes for a tokenizer that adds BOS (Llama's, and our export's).
    """
    t0 = time.perf_counter()
    pairs, owner = [], []
    for i, text in enumerate(texts):
      for w in rolling_windows(self.encode_text(text), self.prefix, self.max_length):
        pairs.append(w)
        owner.append(i)
    lls, _ = self.score_pairs(pairs)
    out = np.zeros(len(texts), np.float64)
    np.add.at(out, np.asarray(owner, np.int64), lls)
    self._stats['requests'] += len(texts)
    self._stats['seconds'] += time.perf_counter() - t0
    return [float(x) for x in out]

  def generate_until(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Generated text per (context, gen_kwargs), cut at the first of the 'until' strings.

    Requests with equal gen_kwargs go to ``generate_fn`` together, longest prompt first
    (the harness's grouping and order). A prompt is ``encode_text(context)`` (BOS first
    when add_bos; the prefix token alone for an empty one), cut from the left to
    max_length - max_gen_toks tokens as the harness does, so the generation fits.
    """
    if self.generate_fn is None:
      raise ValueError('generate_until needs a decoder: pass generate_fn to ModelLM '
                       '(e.g. llm.eval.evaluators.make_generate_fn(...))')
    t0 = time.perf_counter()
    eos = self.tokenizer.decode([self.tokenizer.eos_id]) if self.tokenizer.eos_id is not None else ''
    groups: dict[str, list[int]] = {}
    for i, (_, kw) in enumerate(requests):
      groups.setdefault(json.dumps(kw, sort_keys=True, default=repr), []).append(i)
    out: list[str | None] = [None] * len(requests)
    for idx in groups.values():
      kwargs = normalise_gen_kwargs(requests[idx[0]][1], self.max_gen_toks)
      if eos and eos not in kwargs['until']:
        kwargs['until'].append(eos)
      room = self.max_length - kwargs['max_gen_toks']
      if room <= 0:
        raise ValueError(f"max_gen_toks={kwargs['max_gen_toks']} leaves no room for a prompt in max_length="
                         f'{self.max_length}; lower max_gen_toks in the task (or ModelLM) or raise max_length')
      prompts = {}
      for i in idx:
        toks = list(self.encode_text(requests[i][0])) or [self.prefix]
        if len(toks) > room:
          self._stats['truncated'] += 1
          toks = toks[-room:]
        prompts[i] = toks
      order = sorted(idx, key=lambda i: -len(prompts[i]))
      texts = self.generate_fn([prompts[i] for i in order], dict(kwargs))
      if len(texts) != len(order):
        raise ValueError(f'generate_fn returned {len(texts)} texts for {len(order)} prompts')
      for i, text in zip(order, texts):
        out[i] = cut_at_stop(text, kwargs['until'])
    out = self.monitored(requests, out)  # type: ignore[arg-type]
    self._stats['generate_requests'] += len(requests)
    self._stats['generate_seconds'] += time.perf_counter() - t0
    return out

  # ----- Scoring token pairs --------------------------------------------------------------

  def score_pairs(self, pairs: Sequence[tuple[Tokens, Tokens]]) -> tuple[np.ndarray, np.ndarray]:
    """Summed log-probabilities float64 [n] and is_greedy bool [n] of continuation given context.

    A pair longer than max_length + 1 tokens is cut from the left (and counted). A
    continuation longer than max_length itself, which the harness refuses (an assert), is
    scored in windows as ``loglikelihood_rolling`` scores a text: each window of at most
    max_length continuation tokens sees the tokens just before it, so every token is
    scored once with as much context as fits; it is counted as truncated too.
    """
    L = self.max_length
    parts: list[tuple[int, Tokens, Tokens]] = []  # (request, context, continuation) to score
    n_truncated = n_windowed = 0
    for i, (ctx, cont) in enumerate(pairs):
      if not cont:  # log 1 = 0, vacuously greedy
        continue
      if len(ctx) + len(cont) > L + 1:
        n_truncated += 1
      if len(cont) <= L:
        parts.append((i, ctx, cont))
        continue
      n_windowed += 1
      full, c = ctx + cont, len(ctx)
      for s in range(c, len(full), L):
        e = min(s + L, len(full))
        parts.append((i, full[max(0, e - L - 1):s], full[s:e]))
    if n_truncated:
      _log.warning('%d of %d requests exceed max_length=%d tokens: their contexts are cut from the left'
                   '%s', n_truncated, len(pairs), L,
                   f' ({n_windowed} continuations longer than max_length scored in windows)' if n_windowed else '')
    uid: dict[tuple[Tokens, Tokens], int] = {}
    part_uid = np.asarray([uid.setdefault((c, x), len(uid)) for _, c, x in parts], np.int64)
    part_owner = np.asarray([i for i, _, _ in parts], np.int64)
    unique = list(uid)
    u_ll, u_greedy = self._run(self._segments(unique), len(unique))
    lls = np.zeros(len(pairs), np.float64)
    greedy = np.ones(len(pairs), bool)
    np.add.at(lls, part_owner, u_ll[part_uid])
    np.logical_and.at(greedy, part_owner, u_greedy[part_uid])
    self._stats['truncated'] += n_truncated
    self._stats['unique_sequences'] += len(unique)
    self._stats['tokens_scored'] += sum(len(x) for _, x in unique)
    return lls, greedy

  def _segments(self, unique: list[tuple[Tokens, Tokens]]) -> list[_Segment]:
    """Requests that share a context as branched segments (when enabled), the rest alone."""
    L = self.max_length
    by_ctx: dict[Tokens, list[int]] = {}
    segments = []
    for pid, (ctx, cont) in enumerate(unique):
      # A truncated request sees its own window of the context: never shared. Nor is a
      # lone BOS (an empty context): there is nothing to share, just packing to do.
      if self.share_context and len(ctx) > 1 and len(ctx) + len(cont) <= L + 1:
        by_ctx.setdefault(ctx, []).append(pid)
      else:
        segments.append(_single_segment(pid, ctx, cont, L))
    for ctx, pids in by_ctx.items():
      # Choices that do not fit one row together split into groups that do, each with the context.
      for group in _first_fit([len(unique[p][1]) for p in pids], L - (len(ctx) - 1)):
        if len(group) == 1:
          p = pids[group[0]]
          segments.append(_single_segment(p, ctx, unique[p][1], L))
        else:
          segments.append(_shared_segment(ctx, [(pids[g], unique[pids[g]][1]) for g in sorted(group)]))
    return segments

  def _run(self, segments: list[_Segment], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward passes over the packed segments; per pair id the summed log-prob and greedy flag."""
    L = self.max_length
    lengths = [len(s) for s in segments]
    if self.pack:
      rows, widths = pack_rows(lengths, L, self.pack_floor)
    else:  # one per row, as wide as the longest of its batch (the harness's padding)
      rows = [[i] for i in range(len(segments))]
      widths = [_bucket(n, MIN_WIDTH, L) for n in lengths]
    # Widest and fullest first: batches of equal widths, the last one the smallest.
    order = sorted(range(len(rows)), key=lambda r: (-widths[r], -sum(lengths[i] for i in rows[r])))
    rows, widths = [rows[r] for r in order], [widths[r] for r in order]
    lls, greedy = np.zeros(n, np.float64), np.ones(n, bool)
    pending = None
    for b0 in range(0, len(rows), self.batch_rows):
      batch = rows[b0:b0 + self.batch_rows]
      host, spans = self._layout([[segments[i] for i in r] for r in batch], widths[b0])
      with sharding.activate(self.mesh):
        out = self._fn(self.params, trainer.shard_batch(host, self.mesh))
      if pending is not None:
        _collect(*pending, lls, greedy)
      pending = (out, spans)
      if self._block_each:
        _collect(*pending, lls, greedy)
        pending = None
    if pending is not None:
      _collect(*pending, lls, greedy)
    return lls, greedy

  def _layout(self, rows: list[list[_Segment]], W: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Host arrays int32 [R, W] of one batch, and its spans int64 [k, 4]: (pair id, row, col, len)."""
    used = [sum(len(s) for s in r) for r in rows]
    R = _bucket(len(rows), self.dp, self.batch_rows)
    arrays = {k: np.zeros((R, W), np.int32) for k in ('inputs', 'targets', 'positions', 'segments')}
    if self.share_context:
      arrays['branches'] = np.zeros((R, W), np.int32)
    spans = []
    for r, segs in enumerate(rows):
      col = 0
      for sid, seg in enumerate(segs, start=1):
        end = col + len(seg)
        arrays['inputs'][r, col:end] = seg.inputs
        arrays['targets'][r, col:end] = seg.targets
        arrays['positions'][r, col:end] = seg.positions
        arrays['segments'][r, col:end] = sid
        if self.share_context:
          arrays['branches'][r, col:end] = seg.branches
        spans += [(pid, r, col + off, k) for pid, off, k in seg.spans]
        col = end
    self._stats['forward_rows'] += R
    self._stats['forward_batches'] += 1
    self._stats['row_slots'] += R * W
    self._stats['tokens_forward'] += sum(used)
    return arrays, np.asarray(spans, np.int64).reshape(-1, 4)


def _collect(out: tuple[jax.Array, jax.Array], spans: np.ndarray, lls: np.ndarray, greedy: np.ndarray) -> None:
  """Sum each span's log-probs (float64 prefix sums over the row) and AND its greedy flags."""
  logprob_bt, greedy_bt = (np.asarray(x) for x in out)
  pid, r, c, k = spans.T
  zero = np.zeros((logprob_bt.shape[0], 1))
  cum_ll = np.concatenate([zero, np.cumsum(logprob_bt, axis=1, dtype=np.float64)], axis=1)
  cum_miss = np.concatenate([zero.astype(np.int64), np.cumsum(~greedy_bt, axis=1, dtype=np.int64)], axis=1)
  lls[pid] = cum_ll[r, c + k] - cum_ll[r, c]
  greedy[pid] = cum_miss[r, c + k] == cum_miss[r, c]


def _on_mesh(params: trainer.Params, mesh: Mesh) -> trainer.Params:
  """Params as given when they already live on the mesh's devices, else replicated onto it."""
  devices = set(mesh.devices.flat)
  leaves = jax.tree.leaves(params)
  if all(isinstance(x, jax.Array) and set(x.sharding.device_set) == devices for x in leaves):
    return params
  return jax.device_put(params, NamedSharding(mesh, P()))
