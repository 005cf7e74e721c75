"""Batched generation with an encoder-decoder (T5): the encoder once, then cached decoder steps.

``generate`` answers a batch of ragged encoder inputs in two jitted pieces:

1. Encode. Inputs are RIGHT-padded to a bucketed width S (padding has segment 0, so no
   real token attends to it and the cross-attention never reads it); one
   ``EncoderDecoder.encode`` pass and one ``memory`` call project the encoder output into
   every decoder layer's cross-attention keys and values, once per batch.
2. Decode. One ``lax.while_loop`` starts every row from the decoder start token (T5's is
   the pad id) at position 0, and each step feeds the last token at the next position
   through ``EncoderDecoder.decode`` with a ``KVCache`` of max_new_tokens slots (its
   self-attention keys), samples the next token and stops when every row has finished or
   max_new_tokens tokens exist. The memory is an input of the loop, never recomputed.

``generate_uncached`` is the reference: every step reruns the whole model
(``model.hidden``: encoder, memory and the decoder over the full prefix), no cache.

Both reuse ``llm.eval.decoding``'s sampler (``sample_tokens`` through its ``_Sampler``),
its stopping rule (``_advance``: EOS and token-level stop sequences, neither kept in the
output), its per-row keys (row r's key at step i is fold_in(fold_in(key(seed), r), i)),
its batch bucket and its ``Generation`` record, so the two entry points can differ only in
the model computation, and agree with the decoder path's conventions:

  * Returned tokens are the NEW tokens only (the start token is not one of them).
  * Encoder inputs longer than ``max_length`` (default cfg.max_seq_len) are cut from the
    LEFT to their last max_length tokens, as lm-evaluation-harness cuts a seq2seq model's
    contexts, and counted in ``Generation.truncated``. The decoder has no length limit
    beyond max_new_tokens (relative positions extrapolate).
  * Compiles: the encoder once per (batch bucket, input bucket, mesh); the loop once per
    (batch bucket, input bucket, max_new_tokens, sampler kind, stop-table shape, mesh).
  * Mesh: rows are split over ('data', 'fsdp'); parameters stay as given (place them on
    the mesh first); activations follow the model's constraints under
    ``sharding.activate(mesh)``. A generation is one dispatch of each piece and the host
    waits for its result, so nothing is queued behind it (XLA:CPU's collectives on
    simulated devices need that).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from llm.eval import decoding
from llm.eval.decoding import Generation, Params, batch_bucket, prompt_bucket
from llm.models import ModelConfig
from llm.models.layers import Memory


@dataclasses.dataclass
class Seq2SeqGeneration(Generation):
  """``decoding.Generation`` plus, when asked for, every step's logits (for tests)."""

  logits: np.ndarray | None = None  # float32 [rows, max_new_tokens, vocab_size] or None


def _layout(cfg: ModelConfig, inputs: Sequence[Sequence[int]], stop_sequences: Sequence[Sequence[int]],
            data_parallel: int, max_length: int | None) -> decoding._Batch:
  """Truncate (from the left), bucket and RIGHT-pad the encoder inputs (host side)."""
  limit = cfg.max_seq_len if max_length is None else int(max_length)
  if limit < 1:
    raise ValueError(f'max_length must be positive, got {limit}')
  if not inputs:
    raise ValueError('generate needs at least one input')
  if any(len(x) == 0 for x in inputs):
    raise ValueError('every encoder input needs at least one token (e.g. EOS)')
  truncated = sum(len(x) > limit for x in inputs)
  inputs = [list(x)[-limit:] for x in inputs]
  b = batch_bucket(len(inputs), data_parallel)
  s = min(prompt_bucket(max(len(x) for x in inputs)), max(limit, 1))
  tokens_bs = np.zeros((b, s), np.int32)
  lengths_b = np.zeros((b,), np.int32)
  for r, x in enumerate(inputs):
    tokens_bs[r, :len(x)] = x
    lengths_b[r] = len(x)
  if tokens_bs.min() < 0 or tokens_bs.max() >= cfg.vocab_size:
    raise ValueError(f'input token ids must lie in [0, {cfg.vocab_size})')
  return decoding._Batch(tokens_bs, lengths_b, decoding._stop_table(stop_sequences), len(inputs), truncated)


def _encoder_segments(lengths_b: jax.Array, width: int) -> jax.Array:
  """int32 [b, width]: 1 over each right-padded row's real tokens, 0 over its padding."""
  return (jnp.arange(width, dtype=jnp.int32)[None, :] < lengths_b[:, None]).astype(jnp.int32)


# ----------------------------------------------------------------------------- cached decoding


@functools.partial(jax.jit, static_argnames=('graphdef', 'mesh'))
def _encode(graphdef: nnx.GraphDef, mesh: Mesh | None, params: Params, tokens_bs: jax.Array,
            lengths_b: jax.Array) -> Memory:
  """The encoder and every decoder layer's cross keys/values [l, b, s, k, h] of a batch, once."""
  del mesh  # a compile key only: the model's constraints are traced under sharding.activate(mesh)
  model = nnx.merge(graphdef, params)
  segments_bs = _encoder_segments(lengths_b, tokens_bs.shape[1])
  enc_bsd = model.encode(tokens_bs, None, segments_bs).hidden_btd  # positions 0.. from column 0: right padding
  return model.memory(enc_bsd, segments_bs)


def _logits_buffer(with_logits: bool, b: int, n: int, v: int) -> jax.Array:
  return jnp.zeros((b, n, v) if with_logits else (b, 0, v), jnp.float32)


def _record(buf_bnv: jax.Array, logits_bv: jax.Array, step) -> jax.Array:
  if buf_bnv.shape[1] == 0:
    return buf_bnv
  return jax.lax.dynamic_update_slice_in_dim(buf_bnv, logits_bv[:, None], step, axis=1)


@functools.partial(jax.jit, static_argnames=('graphdef', 'mesh', 'sampler', 'max_new_tokens', 'with_logits'))
def _decode(graphdef: nnx.GraphDef, mesh: Mesh | None, sampler: decoding._Sampler, max_new_tokens: int,
            with_logits: bool, params: Params, memory: Memory, start_id: jax.Array, done_b: jax.Array,
            knobs: decoding._Knobs) -> tuple[decoding.Progress, jax.Array, jax.Array]:
  """The whole cached decode loop from the start token: (progress, new tokens decoded, logits [b, n|0, V])."""
  del mesh  # a compile key only
  model = nnx.merge(graphdef, params)
  b, n = done_b.shape[0], max_new_tokens
  cache = model.empty_cache(b, n)  # the start token and the first n-1 new tokens are fed: n slots
  ones_b1 = jnp.ones((b, 1), jnp.int32)

  def step_logits(token_b, step, cache):
    out = model.decode(token_b[:, None], memory, jnp.full((b, 1), step, jnp.int32), ones_b1, cache=cache)
    return model.head(out.hidden_btd)[:, 0], out.cache

  logits_bv, cache = step_logits(jnp.full((b,), start_id, jnp.int32), 0, cache)
  row_keys_b = decoding._row_keys(knobs.seed, b)
  token_b = sampler(logits_bv, decoding._step_keys(row_keys_b, 0), knobs)
  prog = decoding._advance(decoding._start(done_b, n, knobs.stops_sw.shape[1]), token_b, 0, knobs)
  buf_bnv = _record(_logits_buffer(with_logits, b, n, logits_bv.shape[-1]), logits_bv, 0)

  def cond(carry):
    step, _, _, prog, _ = carry
    return (step < n) & ~jnp.all(prog.done_b)

  def body(carry):
    step, cache, token_b, prog, buf_bnv = carry
    # Finished rows keep running (the batch has one shape) on a harmless token; _advance ignores them.
    logits_bv, cache = step_logits(jnp.where(prog.done_b, 0, token_b), step, cache)
    token_b = sampler(logits_bv, decoding._step_keys(row_keys_b, step), knobs)
    return step + 1, cache, token_b, decoding._advance(prog, token_b, step, knobs), _record(buf_bnv, logits_bv, step)

  steps, _, _, prog, buf_bnv = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, token_b, prog, buf_bnv))
  return prog, steps, buf_bnv


# ----------------------------------------------------------------------------- uncached reference


@functools.partial(jax.jit, static_argnames=('graphdef', 'mesh', 'sampler', 'max_new_tokens', 'with_logits'))
def _decode_uncached(graphdef: nnx.GraphDef, mesh: Mesh | None, sampler: decoding._Sampler, max_new_tokens: int,
                     with_logits: bool, params: Params, tokens_bs: jax.Array, lengths_b: jax.Array,
                     start_id: jax.Array, done_b: jax.Array,
                     knobs: decoding._Knobs) -> tuple[decoding.Progress, jax.Array, jax.Array]:
  """Each new token from the whole model over the encoder input and the decoder prefix (no cache, no memory kept)."""
  del mesh
  model = nnx.merge(graphdef, params)
  b, n = done_b.shape[0], max_new_tokens
  segments_bs = _encoder_segments(lengths_b, tokens_bs.shape[1])
  # Decoder columns: the start token, then each new token; a column is filled before it is
  # read, and later columns hold later positions, which causality hides.
  dec_bt = jnp.zeros((b, n + 1), jnp.int32).at[:, 0].set(start_id)
  positions_bt = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (b, n))
  ones_bt = jnp.ones((b, n), jnp.int32)
  row_keys_b = decoding._row_keys(knobs.seed, b)

  def cond(carry):
    step, _, prog, _ = carry
    return (step < n) & ~jnp.all(prog.done_b)

  def body(carry):
    step, dec_bt, prog, buf_bnv = carry
    hidden_btd = model.hidden({'inputs': tokens_bs, 'segments': segments_bs, 'dec_inputs': dec_bt[:, :n],
                               'dec_positions': positions_bt, 'dec_segments': ones_bt})
    logits_bv = model.head(jax.lax.dynamic_slice_in_dim(hidden_btd, step, 1, axis=1))[:, 0]
    token_b = sampler(logits_bv, decoding._step_keys(row_keys_b, step), knobs)
    prog = decoding._advance(prog, token_b, step, knobs)
    dec_bt = jax.lax.dynamic_update_slice(dec_bt, jnp.where(prog.done_b, 0, token_b)[:, None], (0, step + 1))
    return step + 1, dec_bt, prog, _record(buf_bnv, logits_bv, step)

  prog = decoding._start(done_b, n, knobs.stops_sw.shape[1])
  buf_bnv = _logits_buffer(with_logits, b, n, model.cfg.padded_vocab)
  steps, _, prog, buf_bnv = jax.lax.while_loop(cond, body, (jnp.int32(0), dec_bt, prog, buf_bnv))
  return prog, steps, buf_bnv


# ----------------------------------------------------------------------------- entry points


def _run(cached: bool, graphdef: nnx.GraphDef, cfg: ModelConfig, params: Params, inputs: Sequence[Sequence[int]],
         max_new_tokens: int, temperature: float, top_k: int, top_p: float, eos_id: int | None, start_id: int,
         stop_sequences: Sequence[Sequence[int]], seed: int, mesh: Mesh | None, max_length: int | None,
         with_logits: bool) -> Seq2SeqGeneration:
  t0 = time.perf_counter()
  if cfg.arch != 'encoder_decoder':
    raise ValueError(f'seq2seq generation needs an encoder-decoder (model.arch=encoder_decoder), got {cfg.arch!r}; '
                     'a decoder generates with llm.eval.decoding')
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 0:
    raise ValueError(f'need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 0; got '
                     f'{temperature}, {top_p}, {top_k}, {max_new_tokens}')
  if not 0 <= start_id < cfg.vocab_size:
    raise ValueError(f'decoder start id {start_id} is outside the vocabulary [0, {cfg.vocab_size})')
  greedy = temperature == 0
  sampler = decoding._Sampler(greedy=greedy, filtered=not greedy and (top_k > 0 or top_p < 1))
  place = decoding._Placer(mesh)
  batch = _layout(cfg, inputs, stop_sequences, place.data_parallel, max_length)
  if max_new_tokens == 0:
    return Seq2SeqGeneration([[] for _ in inputs], ['length'] * len(inputs), batch.truncated, 0, 0.0)
  knobs = place.replicated(decoding._Knobs(np.int32(seed), np.float32(temperature if not greedy else 1.0),
                                           np.int32(top_k), np.float32(top_p),
                                           np.int32(-1 if eos_id is None else eos_id), batch.stops_sw))
  # decoding._Batch names its token field for left-padded prompts; here it holds right-padded inputs.
  tokens_bs, lengths_b, done_b = place.batch((batch.tokens_bp, batch.lengths_b, batch.lengths_b == 0))
  start = place.replicated(np.int32(start_id))
  with place.context():
    if cached:
      memory = _encode(graphdef, mesh, params, tokens_bs, lengths_b)
      if mesh is not None and mesh.devices.flat[0].platform == 'cpu':
        jax.block_until_ready(memory)  # nothing queued behind a sharded program on simulated CPU devices
      prog, steps, logits = _decode(graphdef, mesh, sampler, max_new_tokens, with_logits, params, memory, start,
                                    done_b, knobs)
    else:
      prog, steps, logits = _decode_uncached(graphdef, mesh, sampler, max_new_tokens, with_logits, params,
                                             tokens_bs, lengths_b, start, done_b, knobs)
    gen = decoding._result(batch, prog, decoding._fetch(steps), t0)
    out = Seq2SeqGeneration(**dataclasses.asdict(gen))
    if with_logits:
      out.logits = np.asarray(decoding._fetch(logits))[:batch.rows, :, :cfg.vocab_size]
    out.seconds = time.perf_counter() - t0
    return out


def generate(graphdef: nnx.GraphDef, cfg: ModelConfig, params: Params, inputs: Sequence[Sequence[int]],
             max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, start_id: int = 0, stop_sequences: Sequence[Sequence[int]] = (),
             seed: int = 0, mesh: Mesh | None = None, max_length: int | None = None,
             with_logits: bool = False) -> Seq2SeqGeneration:
  """Decode up to ``max_new_tokens`` tokens for every encoder input (token ids), with a KV cache.

  inputs: one token list per row, what the encoder reads (e.g. the prompt's tokens then
  EOS, as T5's tokenizer encodes). start_id: the decoder start token (T5: the pad id).
  eos_id / stop_sequences / temperature / top_k / top_p / seed: as ``decoding.generate``.
  max_length: the longest encoder input (default cfg.max_seq_len); longer ones lose their
  first tokens. with_logits: also return every step's logits [rows, max_new_tokens, vocab]
  (tests compare them with ``generate_uncached``'s). ``params`` should already be on ``mesh``.
  """
  return _run(True, graphdef, cfg, params, inputs, max_new_tokens, temperature, top_k, top_p, eos_id, start_id,
              stop_sequences, seed, mesh, max_length, with_logits)


def generate_uncached(graphdef: nnx.GraphDef, cfg: ModelConfig, params: Params, inputs: Sequence[Sequence[int]],
                      max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                      eos_id: int | None = None, start_id: int = 0, stop_sequences: Sequence[Sequence[int]] = (),
                      seed: int = 0, mesh: Mesh | None = None, max_length: int | None = None,
                      with_logits: bool = False) -> Seq2SeqGeneration:
  """``generate`` without the cache or the kept memory: each new token reruns the encoder and the
  whole decoder prefix (``model.hidden`` over a max_new_tokens-wide decoder row). The reference:
  same layout, sampler, keys and stopping, so the tokens agree up to floating-point ties."""
  return _run(False, graphdef, cfg, params, inputs, max_new_tokens, temperature, top_k, top_p, eos_id, start_id,
              stop_sequences, seed, mesh, max_length, with_logits)
