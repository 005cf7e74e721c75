"""Autoregressive sampling with temperature and top-k.

The whole generation runs in one jitted ``lax.fori_loop`` over a fixed-size token
buffer: each step runs the model over the last ``max_seq_len`` tokens and samples the
next one. This recomputes the prefix every step (no KV cache); it is meant for the
end-of-training sample and small models.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from llm.model import ModelConfig


def sample_logits(logits_bv: jax.Array, key: jax.Array, temperature: float, top_k: int) -> jax.Array:
  """Token ids [b] drawn from logits [b, v]; temperature 0 = greedy, top_k 0 = no truncation."""
  if temperature <= 0:
    return jnp.argmax(logits_bv, axis=-1)
  logits_bv = logits_bv / temperature
  if top_k > 0:
    kth = jax.lax.top_k(logits_bv, top_k)[0][:, -1:]
    logits_bv = jnp.where(logits_bv < kth, -jnp.inf, logits_bv)
  return jax.random.categorical(key, logits_bv, axis=-1)


@functools.partial(jax.jit, static_argnames=('graphdef', 'cfg', 'num_new', 'temperature', 'top_k'))
def _generate(graphdef, cfg: ModelConfig, params, prompt_bt: jax.Array, prompt_len: jax.Array,
              key: jax.Array, num_new: int, temperature: float, top_k: int) -> jax.Array:
  model = nnx.merge(graphdef, params)
  b, window = prompt_bt.shape[0], cfg.max_seq_len
  total = prompt_bt.shape[1] + num_new
  buf = jnp.zeros((b, total), jnp.int32).at[:, :prompt_bt.shape[1]].set(prompt_bt)

  def body(i, buf):
    cur = prompt_len + i  # index of the token being generated
    start = jnp.maximum(cur - window, 0)
    ctx = jax.lax.dynamic_slice_in_dim(buf, start, window, axis=1) if total >= window else buf
    logits = model(ctx)
    pos = cur - 1 - (start if total >= window else 0)
    next_logits = jax.lax.dynamic_index_in_dim(logits, pos, axis=1, keepdims=False)
    tok = sample_logits(next_logits, jax.random.fold_in(key, i), temperature, top_k)
    return jax.lax.dynamic_update_index_in_dim(buf, tok.astype(jnp.int32)[:, None], cur, axis=1)

  return jax.lax.fori_loop(0, num_new, body, buf)


def generate(graphdef: nnx.GraphDef, cfg: ModelConfig, params, prompt: list[int], num_new: int,
             temperature: float = 0.8, top_k: int = 200, seed: int = 0) -> list[int]:
  """Continue ``prompt`` (token ids) by ``num_new`` sampled tokens; returns prompt + new ids."""
  if not prompt:
    raise ValueError('generation needs a non-empty prompt (at least the BOS token)')
  params = jax.device_get(params)  # sampling is small: run it on one device
  out = _generate(graphdef, cfg, params, jnp.asarray([prompt], jnp.int32), jnp.int32(len(prompt)),
                  jax.random.key(seed), num_new, float(temperature), int(top_k))
  return [int(t) for t in out[0]]
