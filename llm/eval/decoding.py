"""Batched autoregressive decoding with a KV cache, and the uncached reference it must equal.

``generate`` runs a batch of ragged prompts in two jitted pieces of one call:

1. Prefill. Prompts are LEFT-padded to a common bucketed length P, so every row's last
   prompt token sits in column P-1. Padding has segment 0 and each row's positions start
   at 0 at its first real token, so ``attention_mask`` lets a row see exactly its own
   prompt at the positions it would have alone. One ``Transformer.trunk`` pass writes
   all prompts into an empty ``KVCache`` of P + max_new_tokens slots.
2. Decode. One ``lax.while_loop`` feeds each row's last token at position
   prompt_len + i, samples the next one and stops when every row has finished or
   max_new_tokens tokens exist. A whole generation is one dispatch: nothing is in flight
   behind it, which XLA:CPU's collectives on simulated devices need (they deadlock when
   several sharded steps are queued).

``generate_uncached`` produces the same tokens by recomputing the whole prefix every step
(no cache); it is the reference for the tests and the baseline of
``benchmarks/decoding.py``. Both share the batching, the sampler (``sample_tokens``), the
stopping rule (``_advance``) and the key derivation, so they can differ only in the model
computation.

Conventions:
  * Returned tokens are the NEW tokens only. A row ends at EOS or when its generated tail
    equals one of ``stop_sequences`` (token level); neither the EOS token nor the stop
    sequence is included, so the text is cut before the stop string as
    lm-evaluation-harness cuts at ``until``. ``Generation.finish_reasons`` says which
    ('eos', 'stop' or 'length'). Token-level stops are an early exit only: a stop string
    may tokenize differently inside generated text, so callers that stop on strings should
    still cut the decoded text at the string.
  * Context limit: prompt + new tokens must fit ``max_length`` (default
    ``cfg.max_seq_len``, for both position kinds: learned positions cannot go further,
    and rope models were trained no longer). Longer prompts are truncated from the LEFT
    to their last max_length - max_new_tokens tokens, as lm-evaluation-harness does, and
    counted in ``Generation.truncated``. Rope models may pass a larger ``max_length``.
  * Sampling: temperature 0 is greedy argmax; otherwise logits / temperature, then top-k
    (0 = off), then top-p (nucleus, Holtzman et al., 2020: the smallest set of tokens
    whose probability reaches top_p, at least one). Row r's key at step i is
    fold_in(fold_in(key(seed), r), i), r being the prompt's index in ``prompts``: its
    samples do not depend on the other rows, the batch bucket or the padding.
  * Compiles: once per (batch bucket, prompt bucket, max_new_tokens, sampler kind:
    greedy / plain sampling / top-k-or-top-p sampling, stop-table shape, mesh);
    temperature, top_k, top_p, EOS, the stop sequences and the seed are traced values.
    Batches round up to a power of two (up to 8, then a multiple of 8) and to a multiple
    of the data-parallel size; prompts to a multiple of 16 (64 above 64 tokens); the stop
    table to 4 sequences of 4 tokens, or the next power of two / multiple of 4.
  * Mesh: rows are split over ('data', 'fsdp'); parameters stay as given (sharded by
    ``trainer.init_state`` or a checkpoint restore onto ``mesh``); the model's own
    constraints shard activations and the cache while ``sharding.activate(mesh)`` is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from llm import sharding
from llm.models import KVCache, ModelConfig

Params = dict[str, Any]

# Stop table sentinels. Generated tokens are ids >= 0 and the history before the first
# generated token holds NOT_GENERATED, so a stop sequence can only match generated text.
NOT_GENERATED = -1
WILDCARD = -2  # left padding of a right-aligned stop sequence: matches anything
NEVER = -3  # fills the unused rows of the stop table: matches nothing
FINISH_REASONS = ('length', 'eos', 'stop')  # indexed by Progress.reason_b
UNCACHED_CHUNK = 32  # new tokens per compiled prefix length in generate_uncached


@dataclasses.dataclass
class Generation:
  """What ``generate`` returns."""

  tokens: list[list[int]]  # each prompt's new tokens, without the EOS or stop sequence
  finish_reasons: list[str]  # per prompt: 'eos', 'stop' or 'length' (max_new_tokens reached)
  truncated: int  # prompts cut from the left to fit the context limit
  steps: int  # new tokens decoded for the batch (its longest row)
  seconds: float  # wall time of the call, compilation included on a first call


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Progress:
  """Per-row decoding state shared by the cached and uncached loops (B rows, N new tokens)."""

  history_bw: jax.Array  # int32 [B, W + N]: W = stop width - 1 columns of NOT_GENERATED, then the new tokens
  done_b: jax.Array  # bool [B]
  length_b: jax.Array  # int32 [B]: tokens kept (EOS and stop sequence cut off)
  reason_b: jax.Array  # int32 [B]: index into FINISH_REASONS


@dataclasses.dataclass(frozen=True)
class _Batch:
  """Prompts laid out for the device: left-padded, bucketed, with their stop table."""

  tokens_bp: np.ndarray  # int32 [B, P], prompts right-aligned, 0 in the padding
  lengths_b: np.ndarray  # int32 [B]: real prompt tokens per row (0 for padding rows)
  stops_sw: np.ndarray  # int32 [S, W]: stop sequences right-aligned with WILDCARD, NEVER rows
  rows: int  # real rows (the first ``rows`` of B)
  truncated: int


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def batch_bucket(rows: int, data_parallel: int = 1) -> int:
  """Padded batch size: a power of two up to 8, then a multiple of 8, then of data_parallel."""
  b = 1 << max(0, rows - 1).bit_length() if rows <= 8 else _round_up(rows, 8)
  return _round_up(b, data_parallel)


def prompt_bucket(length: int) -> int:
  """Padded prompt length: a multiple of 16, of 64 above 64 tokens (few shapes, little waste)."""
  return _round_up(max(length, 1), 64 if length > 64 else 16)


def context_limit(cfg: ModelConfig, max_length: int | None) -> int:
  """Longest prompt + generation allowed (see the module docstring)."""
  limit = cfg.max_seq_len if max_length is None else int(max_length)
  if cfg.positions == 'learned' and limit > cfg.max_seq_len:
    raise ValueError(f'max_length={limit} exceeds the {cfg.max_seq_len} learned positions of this model')
  return limit


def _stop_table(stop_sequences: Sequence[Sequence[int]]) -> np.ndarray:
  """Right-aligned stop sequences [S, W]; S and W are rounded up so task changes rarely recompile."""
  seqs = [list(map(int, s)) for s in stop_sequences if len(s)]
  if any(t < 0 for s in seqs for t in s):
    raise ValueError('stop sequences are token ids >= 0')
  width = _round_up(max([len(s) for s in seqs], default=1), 4)
  rows = max(4, 1 << max(0, len(seqs) - 1).bit_length())
  table = np.full((rows, width), WILDCARD, np.int32)
  table[:, -1] = NEVER
  for i, s in enumerate(seqs):
    table[i, width - len(s):] = s
  return table


def _layout(cfg: ModelConfig, prompts: Sequence[Sequence[int]], max_new_tokens: int,
            stop_sequences: Sequence[Sequence[int]], data_parallel: int, max_length: int | None) -> _Batch:
  """Truncate, bucket and left-pad the prompts (host side)."""
  limit = context_limit(cfg, max_length)
  if max_new_tokens >= limit:
    raise ValueError(f'max_new_tokens={max_new_tokens} leaves no room for a prompt in the {limit}-token context')
  if not prompts:
    raise ValueError('generate needs at least one prompt')
  if any(len(p) == 0 for p in prompts):
    raise ValueError('every prompt needs at least one token (e.g. BOS)')
  keep = limit - max_new_tokens
  truncated = sum(len(p) > keep for p in prompts)
  prompts = [list(p)[-keep:] for p in prompts]
  b = batch_bucket(len(prompts), data_parallel)
  p = prompt_bucket(max(len(x) for x in prompts))
  tokens_bp = np.zeros((b, p), np.int32)
  lengths_b = np.zeros((b,), np.int32)
  for r, x in enumerate(prompts):
    tokens_bp[r, p - len(x):] = x
    lengths_b[r] = len(x)
  if tokens_bp.min() < 0 or tokens_bp.max() >= cfg.vocab_size:
    raise ValueError(f'prompt token ids must lie in [0, {cfg.vocab_size})')
  return _Batch(tokens_bp, lengths_b, _stop_table(stop_sequences), len(prompts), truncated)


def prompt_layout(lengths_b: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
  """(positions, segments) [b, width] of left-padded prompts: 0, 1, ... from each first token; padding 0/0."""
  col_p = jnp.arange(width, dtype=jnp.int32)
  start_b = width - lengths_b
  positions_bp = jnp.maximum(col_p[None, :] - start_b[:, None], 0)
  segments_bp = (col_p[None, :] >= start_b[:, None]).astype(jnp.int32)
  return positions_bp, segments_bp


# ----------------------------------------------------------------------------- sampling


def filter_logits(logits_bv: jax.Array, top_k: jax.Array, top_p: jax.Array) -> jax.Array:
  """Logits [b, v] with everything outside the top-k, then outside the nucleus, set to -inf.

  top_k 0 = no top-k. The nucleus (Holtzman et al., 2020) is the smallest set of the
  most likely tokens whose probability (renormalised after top-k, as Hugging Face
  does) reaches top_p; the most likely token is always kept. One sort serves both, and
  k and p are traced, so changing them does not recompile. Tokens tied with the
  smallest kept logit are kept too.
  """
  v = logits_bv.shape[-1]
  sorted_bv = -jnp.sort(-logits_bv, axis=-1)
  rank_v = jnp.arange(v)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
  in_k_bv = rank_v < k
  probs_bv = jax.nn.softmax(jnp.where(in_k_bv, sorted_bv, -jnp.inf), axis=-1)
  mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
  keep_bv = in_k_bv & ((mass_before_bv < top_p) | (top_p >= 1.0) | (rank_v == 0))
  cutoff_b = jnp.min(jnp.where(keep_bv, sorted_bv, jnp.inf), axis=-1)
  return jnp.where(logits_bv < cutoff_b[:, None], -jnp.inf, logits_bv)


def sample_tokens(logits_bv: jax.Array, keys_b: jax.Array, temperature: jax.Array, top_k: jax.Array,
                  top_p: jax.Array, *, greedy: bool, filtered: bool) -> jax.Array:
  """Next token ids int32 [b] from float32 logits [b, v]; keys_b: one PRNG key per row [b].

  greedy: argmax (temperature, top_k and top_p unused). Otherwise a draw from
  softmax(logits / temperature), restricted by ``filter_logits`` when ``filtered``.
  """
  if greedy:
    return jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
  logits_bv = logits_bv / temperature
  if filtered:
    logits_bv = filter_logits(logits_bv, top_k, top_p)
  return jax.vmap(jax.random.categorical)(keys_b, logits_bv).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _Sampler:
  """The static sampling switches (part of the compile key); the values are traced."""

  greedy: bool
  filtered: bool  # top-k or top-p is on

  def __call__(self, logits_bv, keys_b, knobs: '_Knobs'):
    return sample_tokens(logits_bv, keys_b, knobs.temperature, knobs.top_k, knobs.top_p, greedy=self.greedy,
                         filtered=self.filtered)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Knobs:
  """Traced per-call settings: changing them reuses the compiled loop."""

  seed: jax.Array  # int32
  temperature: jax.Array  # float32
  top_k: jax.Array  # int32, 0 = off
  top_p: jax.Array  # float32
  eos_id: jax.Array  # int32, -1 = none
  stops_sw: jax.Array  # int32 [S, W], see _stop_table


def _step_keys(row_keys_b: jax.Array, step: jax.Array) -> jax.Array:
  return jax.vmap(jax.random.fold_in, (0, None))(row_keys_b, step)


def _row_keys(seed: jax.Array, batch: int) -> jax.Array:
  return jax.vmap(jax.random.fold_in, (None, 0))(jax.random.key(seed), jnp.arange(batch))


# ----------------------------------------------------------------------------- stopping


def _start(done_b: jax.Array, max_new_tokens: int, stop_width: int) -> Progress:
  b = done_b.shape[0]
  return Progress(history_bw=jnp.full((b, stop_width - 1 + max_new_tokens), NOT_GENERATED, jnp.int32),
                  done_b=done_b, length_b=jnp.zeros((b,), jnp.int32), reason_b=jnp.zeros((b,), jnp.int32))


def _advance(prog: Progress, token_b: jax.Array, step: jax.Array, knobs: _Knobs) -> Progress:
  """Record new token ``step`` of every running row; finish rows at EOS or at the end of a stop sequence."""
  b, width = token_b.shape[0], knobs.stops_sw.shape[1]
  running_b = ~prog.done_b
  history_bw = jax.lax.dynamic_update_slice(
      prog.history_bw, jnp.where(running_b, token_b, NOT_GENERATED)[:, None], (0, width - 1 + step))
  tail_bw = jax.lax.dynamic_slice(history_bw, (0, step), (b, width))  # ends with the new token
  stops_sw = knobs.stops_sw
  match_bs = jnp.all((stops_sw[None] == WILDCARD) | (tail_bw[:, None, :] == stops_sw[None]), axis=-1)
  stop_len_s = jnp.sum(stops_sw != WILDCARD, axis=-1)
  # Of several stops matching here, cut the longest (the one that starts first); a stop
  # sequence that ends in EOS counts as a stop.
  stop_cut_b = jnp.max(jnp.where(match_bs, stop_len_s[None], 0), axis=-1)
  cut_b = jnp.maximum(stop_cut_b, (token_b == knobs.eos_id).astype(jnp.int32))
  finish_b = running_b & (cut_b > 0)
  length_b = jnp.where(running_b, step + 1 - cut_b, prog.length_b)
  reason_b = jnp.where(finish_b, jnp.where(stop_cut_b > 0, 2, 1), prog.reason_b)
  return Progress(history_bw, prog.done_b | finish_b, length_b, reason_b)


def _fetch(tree):
  """Global arrays to NumPy on this host; with several processes each gathers the others' rows."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _result(batch: _Batch, prog: Progress, steps: int, t0: float) -> Generation:
  history_bw, length_b, reason_b = _fetch((prog.history_bw, prog.length_b, prog.reason_b))
  w = batch.stops_sw.shape[1] - 1
  rows = range(batch.rows)
  return Generation(tokens=[history_bw[r, w:w + length_b[r]].tolist() for r in rows],
                    finish_reasons=[FINISH_REASONS[reason_b[r]] for r in rows],
                    truncated=batch.truncated, steps=int(steps), seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- cached decoding


@functools.partial(jax.jit, static_argnames=('graphdef', 'cfg', 'mesh', 'sampler', 'max_new_tokens'))
def _decode(graphdef: nnx.GraphDef, cfg: ModelConfig, mesh: Mesh | None, sampler: _Sampler, max_new_tokens: int,
            params: Params, tokens_bp: jax.Array, lengths_b: jax.Array, knobs: _Knobs) -> tuple[Progress, jax.Array]:
  """Prefill and the whole decode loop: (progress, number of new tokens decoded)."""
  del mesh  # a compile key only: the model's constraints are traced under sharding.activate(mesh)
  model = nnx.merge(graphdef, params)
  b, p = tokens_bp.shape
  positions_bp, segments_bp = prompt_layout(lengths_b, p)
  cache = KVCache.empty(cfg, b, p + max_new_tokens)
  out = model.trunk(tokens_bp, positions_bp, segments_bp, cache=cache)
  logits_bv = model.head(out.hidden_btd[:, -1:])[:, 0]  # left padding: every row's last token is column p-1
  row_keys_b = _row_keys(knobs.seed, b)
  token_b = sampler(logits_bv, _step_keys(row_keys_b, 0), knobs)
  prog = _advance(_start(lengths_b == 0, max_new_tokens, knobs.stops_sw.shape[1]), token_b, 0, knobs)
  ones_b1 = jnp.ones((b, 1), jnp.int32)

  def cond(carry):
    step, _, _, prog = carry
    return (step < max_new_tokens) & ~jnp.all(prog.done_b)

  def body(carry):
    step, cache, token_b, prog = carry
    # Finished rows keep running (the batch has one shape) on a harmless token; _advance ignores them.
    feed_b1 = jnp.where(prog.done_b, 0, token_b)[:, None]
    out = model.trunk(feed_b1, (lengths_b + step - 1)[:, None], ones_b1, cache=cache)
    logits_bv = model.head(out.hidden_btd)[:, 0]
    token_b = sampler(logits_bv, _step_keys(row_keys_b, step), knobs)
    return step + 1, out.cache, token_b, _advance(prog, token_b, step, knobs)

  steps, _, _, prog = jax.lax.while_loop(cond, body, (jnp.int32(1), out.cache, token_b, prog))
  return prog, steps


# ----------------------------------------------------------------------------- uncached reference


@functools.partial(jax.jit, static_argnames=('graphdef', 'mesh', 'sampler', 'width', 'stop'))
def _decode_uncached_chunk(graphdef: nnx.GraphDef, mesh: Mesh | None, sampler: _Sampler, width: int, stop: int,
                           params: Params, tokens_bt: jax.Array, positions_bt: jax.Array, segments_bt: jax.Array,
                           prompt_width: jax.Array, prog: Progress, step: jax.Array,
                           knobs: _Knobs) -> tuple[jax.Array, Progress, jax.Array]:
  """New tokens step..stop-1, each from a full forward pass over the first ``width`` columns."""
  del mesh  # a compile key only
  model = nnx.merge(graphdef, params)
  row_keys_b = _row_keys(knobs.seed, tokens_bt.shape[0])
  positions_bt, segments_bt = positions_bt[:, :width], segments_bt[:, :width]

  def cond(carry):
    step, _, prog = carry
    return (step < stop) & ~jnp.all(prog.done_b)

  def body(carry):
    step, tokens_bt, prog = carry
    # Columns after the current one hold later positions, which causality hides.
    hidden_btd = model.trunk(tokens_bt[:, :width], positions_bt, segments_bt).hidden_btd
    last_b1d = jax.lax.dynamic_slice_in_dim(hidden_btd, prompt_width + step - 1, 1, axis=1)
    token_b = sampler(model.head(last_b1d)[:, 0], _step_keys(row_keys_b, step), knobs)
    prog = _advance(prog, token_b, step, knobs)
    feed_b1 = jnp.where(prog.done_b, 0, token_b)[:, None]
    tokens_bt = jax.lax.dynamic_update_slice(tokens_bt, feed_b1, (0, prompt_width + step))
    return step + 1, tokens_bt, prog

  step, tokens_bt, prog = jax.lax.while_loop(cond, body, (step, tokens_bt, prog))
  return tokens_bt, prog, step


# ----------------------------------------------------------------------------- entry points


class _Placer:
  """Puts host arrays on the mesh: batch arrays split over (data, fsdp), the rest replicated."""

  def __init__(self, mesh: Mesh | None):
    self.mesh = mesh
    self.data_parallel = 1 if mesh is None else math.prod(mesh.shape[a] for a in sharding.BATCH)

  def batch(self, tree):
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    return jax.tree.map(lambda a: jax.device_put(a, sharding.batch_sharding(self.mesh, np.ndim(a))), tree)

  def replicated(self, tree):
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def context(self):
    return sharding.activate(self.mesh) if self.mesh is not None else contextlib.nullcontext()


def _prepare(cfg: ModelConfig, prompts, max_new_tokens, temperature, top_k, top_p, eos_id, stop_sequences, seed,
             mesh, max_length) -> tuple[_Sampler, _Placer, _Batch, _Knobs]:
  """Validate the settings and lay the prompts out (shared by both entry points)."""
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 0:
    raise ValueError(f'need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 0; got '
                     f'{temperature}, {top_p}, {top_k}, {max_new_tokens}')
  greedy = temperature == 0
  sampler = _Sampler(greedy=greedy, filtered=not greedy and (top_k > 0 or top_p < 1))
  place = _Placer(mesh)
  batch = _layout(cfg, prompts, max_new_tokens, stop_sequences, place.data_parallel, max_length)
  knobs = _Knobs(np.int32(seed), np.float32(temperature if not greedy else 1.0), np.int32(top_k),
                 np.float32(top_p), np.int32(-1 if eos_id is None else eos_id), batch.stops_sw)
  return sampler, place, batch, place.replicated(knobs)


def generate(graphdef: nnx.GraphDef, cfg: ModelConfig, params: Params, prompts: Sequence[Sequence[int]],
             max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0,
             mesh: Mesh | None = None, max_length: int | None = None) -> Generation:
  """Continue every prompt (token ids) by up to ``max_new_tokens`` tokens, with a KV cache.

  See the module docstring for the stopping, truncation and sampling rules. ``params``
  is the pure parameter dict (``nnx.to_pure_dict``); with ``mesh`` it should already be
  placed on that mesh (e.g. ``trainer.init_state(...).params`` or a restored
  checkpoint). ``max_length`` overrides the context limit (default cfg.max_seq_len).
  """
  t0 = time.perf_counter()
  sampler, place, batch, knobs = _prepare(cfg, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                                          stop_sequences, seed, mesh, max_length)
  if max_new_tokens == 0:
    return Generation([[] for _ in prompts], ['length'] * len(prompts), batch.truncated, 0, 0.0)
  tokens_bp, lengths_b = place.batch((batch.tokens_bp, batch.lengths_b))
  with place.context():
    prog, steps = _decode(graphdef, cfg, mesh, sampler, max_new_tokens, params, tokens_bp, lengths_b, knobs)
    return _result(batch, prog, _fetch(steps), t0)


def generate_uncached(graphdef: nnx.GraphDef, cfg: ModelConfig, params: Params, prompts: Sequence[Sequence[int]],
                      max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                      eos_id: int | None = None, stop_sequences: Sequence[Sequence[int]] = (), seed: int = 0,
                      mesh: Mesh | None = None, max_length: int | None = None) -> Generation:
  """``generate`` without a cache: every new token reruns the model over its whole prefix.

  Same batching, sampling, keys and stopping as ``generate``, so the tokens agree up to
  floating-point ties. The prefix grows in chunks of UNCACHED_CHUNK tokens (one compile
  each), so a step costs about the prefix it needs rather than the final length: a fair
  recompute-the-prefix baseline. Each chunk is one jitted while_loop, and the host waits
  for it before dispatching the next.
  """
  t0 = time.perf_counter()
  sampler, place, batch, knobs = _prepare(cfg, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                                          stop_sequences, seed, mesh, max_length)
  if max_new_tokens == 0:
    return Generation([[] for _ in prompts], ['length'] * len(prompts), batch.truncated, 0, 0.0)
  b, p = batch.tokens_bp.shape
  tokens_bt = np.zeros((b, p + max_new_tokens), np.int32)
  tokens_bt[:, :p] = batch.tokens_bp
  positions_bp, segments_bp = jax.device_get(prompt_layout(jnp.asarray(batch.lengths_b), p))
  new_positions_bn = batch.lengths_b[:, None] + np.arange(max_new_tokens, dtype=np.int32)[None]
  positions_bt = np.concatenate([positions_bp, new_positions_bn], axis=1).astype(np.int32)
  segments_bt = np.concatenate([segments_bp, np.ones((b, max_new_tokens), np.int32)], axis=1)
  stop_width = batch.stops_sw.shape[1]
  prog = Progress(np.full((b, stop_width - 1 + max_new_tokens), NOT_GENERATED, np.int32), batch.lengths_b == 0,
                  np.zeros((b,), np.int32), np.zeros((b,), np.int32))
  tokens_bt, positions_bt, segments_bt, prog = place.batch((tokens_bt, positions_bt, segments_bt, prog))
  step = 0
  with place.context():
    for start in range(0, max_new_tokens, UNCACHED_CHUNK):
      stop = min(start + UNCACHED_CHUNK, max_new_tokens)
      tokens_bt, prog, step = _decode_uncached_chunk(
          graphdef, mesh, sampler, p + stop - 1, stop, params, tokens_bt, positions_bt, segments_bt,
          place.replicated(np.int32(p)), prog, place.replicated(np.int32(start)), knobs)
      step = int(jax.device_get(step))  # waits: one chunk in flight at a time
      if step < stop:  # every row finished
        break
    return _result(batch, prog, step, t0)
