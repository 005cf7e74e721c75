"""Building blocks shared by the decoder, the encoder and the encoder-decoder.

Norms, rotary positions, T5's relative position buckets, attention masks built from
positions and segment ids, multi-head attention (self or cross, grouped-query heads, an
optional additive bias), the MLP variants, projections with optional LoRA adapters, the
KV cache, and the scan over a stack of blocks. Tensor names carry their axes, one letter
each:

  b batch   t query position   s key position   d model width   v vocabulary
  n query heads   k key/value heads   g query heads per kv head   h head dim   f MLP width
  l layers   r relative-position buckets

Every parameter carries logical axis names in its ``axes`` metadata (e.g. ``('embed',
'mlp')``); ``llm/sharding.py`` maps those names to mesh axes with one rules table.
Parameters are float32; compute happens in ``ModelConfig.dtype`` (bfloat16 on
accelerators) with norms, softmax and the loss in float32.

This module imports only jax, flax and numpy, so the throughput benchmark runs on
machines without TensorFlow or ml_collections.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.config import ModelConfig

def param(key: jax.Array, shape: tuple[int, ...], axes: tuple[str | None, ...], std: float | None,
           dtype: str) -> nnx.Param:
  """A parameter with logical axis names; std=None means zeros, 'ones' handled by callers."""
  assert len(shape) == len(axes), (shape, axes)
  if std is None:
    value = jnp.zeros(shape, dtype)
  else:
    value = std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return nnx.Param(value, axes=axes)


def ones(shape: tuple[int, ...], axes: tuple[str | None, ...], dtype: str) -> nnx.Param:
  return nnx.Param(jnp.ones(shape, dtype), axes=axes)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when key is None (evaluation) or rate is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_pretransposed(x: jax.Array, w: jax.Array, k: int) -> jax.Array:
  """Contract the last k axes of x with the first k axes of w."""
  return _dense_fwd(x, w, k)[0]


def _dense_fwd(x, w, k):
  x2 = x.reshape(-1, math.prod(x.shape[x.ndim - k:]))
  w2 = w.reshape(x2.shape[1], -1)
  y = (x2 @ w2).reshape(x.shape[:x.ndim - k] + w.shape[k:])
  # The barrier keeps XLA from folding the transpose back into the gradient's dot.
  return y, (jax.lax.optimization_barrier(x2.T), w)


def _dense_bwd(k, res, g):
  x2t, w = res
  w2 = w.reshape(x2t.shape[0], -1)
  g2 = g.reshape(-1, w2.shape[1])
  dw = (x2t @ g2).reshape(w.shape).astype(w.dtype)
  dx = (g2 @ w2.T).reshape(g.shape[:g.ndim - (w.ndim - k)] + w.shape[:k])
  return dx.astype(g.dtype), dw


_dense_pretransposed.defvjp(_dense_fwd, _dense_bwd)


def project(eq: str, x: jax.Array, w: jax.Array, cfg: ModelConfig) -> jax.Array:
  """``jnp.einsum(eq, x, w)`` for a projection whose contracted axes end x and start w."""
  if cfg.dense_grad == 'xla':
    return jnp.einsum(eq, x, w)
  ins, out = eq.split('->')
  xs, ws = ins.split(',')
  k = len([c for c in xs if c in ws and c not in out])
  assert xs[len(xs) - k:] == ws[:k] and out == xs[:len(xs) - k] + ws[k:], eq
  return _dense_pretransposed(x, w, k)


def add_lora(module: nnx.Module, cfg: ModelConfig, key: jax.Array, target: str,
              in_shape: tuple[int, ...], in_axes: tuple[str, ...], out_shape: tuple[int, ...],
              out_axes: tuple[str, ...]) -> None:
  """Give ``module`` the adapter of projection ``target`` when the config asks for it.

  A [*in, r] is drawn as PEFT's default (Kaiming-uniform with a=sqrt(5): U(+-1/sqrt(fan_in)));
  B [r, *out] is zero, so the adapted projection starts equal to the base one.
  """
  if not cfg.lora_rank or target not in cfg.lora_targets:
    return
  r, pd = cfg.lora_rank, cfg.param_dtype
  bound = 1.0 / math.sqrt(math.prod(in_shape))
  a = jax.random.uniform(jax.random.fold_in(key, 0x10a), in_shape + (r,), pd, -bound, bound)
  setattr(module, f'lora_a_{target}', nnx.Param(a, axes=in_axes + ('lora',)))
  setattr(module, f'lora_b_{target}', nnx.Param(jnp.zeros((r,) + out_shape, pd), axes=('lora',) + out_axes))


def adapted(eq: str, x: jax.Array, w: jax.Array, module: nnx.Module, target: str, cfg: ModelConfig,
            key: jax.Array | None = None) -> jax.Array:
  """``project(eq, x, w)`` plus the low-rank update of ``target`` when the module has one.

  The update is computed unmerged, scale * (dropout(x) A) B, so the weight gradient of a
  frozen W is never formed: only dA and dB, each a rank-r product.
  """
  y = project(eq, x, w, cfg)
  a = getattr(module, f'lora_a_{target}', None)
  if a is None:
    return y
  b = getattr(module, f'lora_b_{target}')
  ins, out = eq.split('->')
  xs, ws = ins.split(',')
  contracted = ''.join(c for c in ws if c not in out)
  kept = ''.join(c for c in ws if c in out)
  lead = ''.join(c for c in xs if c not in contracted)
  dt = x.dtype
  x = dropout(x, cfg.lora_dropout, key)
  z = jnp.einsum(f'{xs},{contracted}r->{lead}r', x, a[...].astype(dt))
  return y + (cfg.lora_scale * jnp.einsum(f'{lead}r,r{kept}->{out}', z, b[...].astype(dt))).astype(dt)


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
  """Shard an activation by logical names, using the rules installed by llm.sharding."""
  from llm import sharding  # local import: sharding imports nothing from here
  return sharding.constrain(x, logical_axes)


class Norm(nnx.Module):
  """RMSNorm (Zhang & Sennrich, 2019) or LayerNorm, computed in float32."""

  def __init__(self, cfg: ModelConfig):
    self.kind, self.eps = cfg.norm, cfg.norm_eps
    self.scale = ones((cfg.d_model,), ('norm',), cfg.param_dtype)
    if cfg.norm == 'layer':
      self.bias = nnx.Param(jnp.zeros((cfg.d_model,), cfg.param_dtype), axes=('norm',))

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    x = x_btd.astype(jnp.float32)
    if self.kind == 'layer':
      x = x - x.mean(-1, keepdims=True)
    x = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + self.eps)
    x = x * self.scale[...]
    if self.kind == 'layer':
      x = x + self.bias[...]
    return x.astype(x_btd.dtype)


def rope(x_btnh: jax.Array, positions_bt: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (Su et al., 2021), rotate-half convention as in Llama/HF."""
  h = x_btnh.shape[-1]
  freq_h = 1.0 / theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h)  # [h/2]
  angle_bth = positions_bt[..., None].astype(jnp.float32) * freq_h
  sin, cos = jnp.sin(angle_bth)[:, :, None, :], jnp.cos(angle_bth)[:, :, None, :]
  x1, x2 = jnp.split(x_btnh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnh.dtype)


def relative_bucket(rel_bts: jax.Array, bidirectional: bool, num_buckets: int, max_distance: int) -> jax.Array:
  """T5's bucket of each relative position (key position - query position), int32.

  Half the buckets hold exact distances 0..max_exact-1, the rest distances up to
  ``max_distance`` on a log scale; farther ones share the last bucket. Bidirectional
  (the encoder) splits the buckets between keys before and after the query; causal (the
  decoder) uses them all for keys before it (later keys are masked anyway).
  """
  ret = jnp.zeros(rel_bts.shape, jnp.int32)
  if bidirectional:
    num_buckets //= 2
    ret += (rel_bts > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(rel_bts)
  else:
    n = -jnp.minimum(rel_bts, 0)
  max_exact = num_buckets // 2
  # log(0) never reaches the result (distances below max_exact are exact), but keep it finite.
  far = max_exact + (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
                     / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
  far = jnp.minimum(far, num_buckets - 1)
  return ret + jnp.where(n < max_exact, n, far)


class RelativeBias(nnx.Module):
  """T5's learned relative-position attention bias, one scalar per bucket and head, shared by a stack's layers."""

  def __init__(self, cfg: ModelConfig, key: jax.Array, bidirectional: bool):
    self.bidirectional, self.buckets, self.max_distance = bidirectional, cfg.rel_buckets, cfg.rel_max_distance
    # b_*: a bias, so no weight decay.
    self.b_rel_rn = param(key, (cfg.rel_buckets, cfg.n_heads), ('rel_buckets', 'heads'), cfg.init_std, cfg.param_dtype)

  def __call__(self, q_pos_bt: jax.Array, k_pos_bs: jax.Array) -> jax.Array:
    """Additive bias [b, n, t, s] from query and key positions."""
    return self.from_table(self.b_rel_rn[...], q_pos_bt, k_pos_bs)

  def from_table(self, table_rn: jax.Array, q_pos_bt: jax.Array, k_pos_bs: jax.Array) -> jax.Array:
    """The bias of a table already read (inside a layer scan, which must not touch the module)."""
    bucket_bts = relative_bucket(k_pos_bs[:, None, :] - q_pos_bt[:, :, None], self.bidirectional,
                                 self.buckets, self.max_distance)
    return jnp.take(table_rn, bucket_bts, axis=0).transpose(0, 3, 1, 2)


def attention_mask(q_pos_bt: jax.Array, k_pos_bs: jax.Array, q_seg_bt: jax.Array | None = None,
                   k_seg_bs: jax.Array | None = None, causal: bool = True, q_branch_bt: jax.Array | None = None,
                   k_branch_bs: jax.Array | None = None) -> jax.Array:
  """Which keys each query may attend to: bool [b, t, s].

  A query sees a key of the same segment (segment 0 is padding or an empty cache slot,
  so it matches only padding) at the same or an earlier position when ``causal``
  (encoders pass False). Positions, not array indices, decide causality: packed rows
  restart positions per document, left-padded prompts start at 0 after their padding,
  and a cache slot keeps the position of the token written into it. Branches let
  several continuations share one context in a single row: a key of branch 0 (the
  shared context) is visible to every branch, other keys only to their own branch.
  """
  mask = jnp.ones(q_pos_bt.shape + k_pos_bs.shape[1:], bool)
  if q_seg_bt is not None:
    mask &= q_seg_bt[:, :, None] == k_seg_bs[:, None, :]
  if causal:
    mask &= k_pos_bs[:, None, :] <= q_pos_bt[:, :, None]
  if q_branch_bt is not None:
    mask &= (k_branch_bs[:, None, :] == 0) | (k_branch_bs[:, None, :] == q_branch_bt[:, :, None])
  return mask


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Keys and values of every layer for ``S`` slots per row, written left to right.

  The prompt fills slots 0..P-1 in one pass (prefill); each decoding step writes one
  more. ``positions``/``segments`` describe the token in each slot (shared by all
  layers); an empty slot has segment 0, so no real token attends to it.
  """

  k_lbskh: jax.Array  # [l, b, S, k, h] in the compute dtype
  v_lbskh: jax.Array  # [l, b, S, k, h]
  positions_bs: jax.Array  # int32 [b, S]
  segments_bs: jax.Array  # int32 [b, S]; 0 = empty or padding
  index: jax.Array  # int32 scalar: the next slot to write

  @classmethod
  def empty(cls, cfg: ModelConfig, batch: int, length: int, n_layers: int | None = None) -> 'KVCache':
    """``length`` empty slots per row for ``n_layers`` layers (default cfg.n_layers)."""
    shape = (n_layers or cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.d_head)
    kv = constrain(jnp.zeros(shape, cfg.dtype), ('layers', 'act_batch', None, 'act_kv_heads', None))
    zeros = constrain(jnp.zeros((batch, length), jnp.int32), ('act_batch', None))
    return cls(kv, kv, zeros, zeros, jnp.zeros((), jnp.int32))

  @property
  def length(self) -> int:
    return self.k_lbskh.shape[2]

  def written(self, kvs: tuple[jax.Array, jax.Array], positions_bt: jax.Array, segments_bt: jax.Array) -> 'KVCache':
    """The cache with a chunk's keys and values ([l, b, t, k, h] each) written at ``index``, one write for all layers."""
    def write(full, new, axis):
      return jax.lax.dynamic_update_slice_in_dim(full, new.astype(full.dtype), self.index, axis)
    axes = ('layers', 'act_batch', None, 'act_kv_heads', None)
    return KVCache(constrain(write(self.k_lbskh, kvs[0], 2), axes), constrain(write(self.v_lbskh, kvs[1], 2), axes),
                   write(self.positions_bs, positions_bt, 1), write(self.segments_bs, segments_bt, 1),
                   self.index + positions_bt.shape[1])


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Memory:
  """Keys and values a cross-attention attends to (the encoder's output, projected once)."""

  k_bskh: jax.Array
  v_bskh: jax.Array
  segments_bs: jax.Array  # int32 [b, s]; 0 = padding, never attended to


# (query positions [b, t], key positions [b, s]) -> additive attention bias [b or 1, n, t, s]
BiasFn = Callable[[jax.Array, jax.Array], jax.Array]


class Attention(nnx.Module):
  """Multi-head attention with grouped-query heads (Ainslie et al., 2023): self- or cross-attention.

  Self-attention masks come from positions and segments (``attention_mask``); an optional
  ``bias_fn`` adds a bias computed from query and key positions (T5's relative positions).
  Cross-attention (``memory``) attends to another sequence's keys and values, every
  non-padding one, with no position information of its own (as in T5).
  """

  def __init__(self, cfg: ModelConfig, key: jax.Array, n_residual_layers: int | None = None):
    self.cfg = cfg
    d, n, k, h, std, pd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.init_std, cfg.param_dtype
    kq, kk, kv, ko = jax.random.split(key, 4)
    # Unscaled attention (T5) folds 1/sqrt(d_head) into the query initialisation instead.
    q_std = std if cfg.scale_attention else std / math.sqrt(h)
    self.w_q_dnh = param(kq, (d, n, h), ('embed', 'heads', 'head_dim'), q_std, pd)
    self.w_k_dkh = param(kk, (d, k, h), ('embed', 'kv_heads', 'head_dim'), std, pd)
    self.w_v_dkh = param(kv, (d, k, h), ('embed', 'kv_heads', 'head_dim'), std, pd)
    # GPT-2's residual-projection scaling: std / sqrt(2 * number of residual layers).
    layers = n_residual_layers or cfg.n_layers
    self.w_o_nhd = param(ko, (n, h, d), ('heads', 'head_dim', 'embed'), std / math.sqrt(2 * layers), pd)
    add_lora(self, cfg, kq, 'q', (d,), ('embed',), (n, h), ('heads', 'head_dim'))
    add_lora(self, cfg, kk, 'k', (d,), ('embed',), (k, h), ('kv_heads', 'head_dim'))
    add_lora(self, cfg, kv, 'v', (d,), ('embed',), (k, h), ('kv_heads', 'head_dim'))
    add_lora(self, cfg, ko, 'o', (n, h), ('heads', 'head_dim'), (d,), ('embed',))
    if cfg.use_bias:
      self.b_q_nh = param(kq, (n, h), ('heads', 'head_dim'), None, pd)
      self.b_k_kh = param(kk, (k, h), ('kv_heads', 'head_dim'), None, pd)
      self.b_v_kh = param(kv, (k, h), ('kv_heads', 'head_dim'), None, pd)
      self.b_o_d = param(ko, (d,), ('embed',), None, pd)

  def keys_values(self, x_bsd: jax.Array, kk: jax.Array | None = None, kv: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
    """Keys and values [b, s, k, h] of ``x`` (no rotary positions: callers add them); kk, kv: adapter dropout keys."""
    cfg, dt = self.cfg, x_bsd.dtype
    k_bskh = adapted('btd,dkh->btkh', x_bsd, self.w_k_dkh[...].astype(dt), self, 'k', cfg, kk)
    v_bskh = adapted('btd,dkh->btkh', x_bsd, self.w_v_dkh[...].astype(dt), self, 'v', cfg, kv)
    if cfg.use_bias:
      k_bskh += self.b_k_kh[...].astype(dt)
      v_bskh += self.b_v_kh[...].astype(dt)
    return k_bskh, v_bskh

  def __call__(self, x_btd: jax.Array, positions_bt: jax.Array, segments_bt: jax.Array | None,
               branches_bt: jax.Array | None = None, cache: 'LayerCache | None' = None,
               with_weights: bool = False, lora_key: jax.Array | None = None, *,
               bias_fn: BiasFn | None = None, memory: Memory | None = None, with_heads: bool = False
               ) -> tuple[jax.Array, 'LayerCache | None', jax.Array | None]:
    """(output [b, t, d], updated layer cache, attention weights [b, n, t, s] or None).

    ``with_heads`` appends a fourth element, each head's output [b, t, n, d] already
    projected by its slice of w_o (their sum over n is the output less the bias b_o),
    for interpretability (``llm/interp``).
    """
    cfg, dt = self.cfg, x_btd.dtype
    kq, kk, kv, ko = jax.random.split(lora_key, 4) if lora_key is not None else (None,) * 4
    q_btnh = adapted('btd,dnh->btnh', x_btd, self.w_q_dnh[...].astype(dt), self, 'q', cfg, kq)
    if cfg.use_bias:
      q_btnh += self.b_q_nh[...].astype(dt)
    if memory is None:
      k_btkh, v_btkh = self.keys_values(x_btd, kk, kv)
    if cfg.positions == 'rope':
      q_btnh = rope(q_btnh, positions_bt, cfg.rope_theta)
      k_btkh = rope(k_btkh, positions_bt, cfg.rope_theta)
    q_btnh = constrain(q_btnh, ('act_batch', 'act_length', 'act_heads', None))
    scale = cfg.scale_attention
    if memory is not None:
      seg_bt = jnp.ones(q_btnh.shape[:2], jnp.int32) if segments_bt is None else segments_bt
      # A target token sees the inputs of its own example only (same segment id on both sides;
      # padding, 0, sees nothing), so packed encoder-decoder rows keep their examples apart.
      mask_bts = (seg_bt[:, :, None] == memory.segments_bs[:, None, :]) & (memory.segments_bs[:, None, :] > 0)
      o_btnh, weights = xla_attention(q_btnh, [(memory.k_bskh, memory.v_bskh, mask_bts, None)], scale)
    elif cache is not None:
      # Attend to the slots written so far plus this chunk's own keys, as two parts of one
      # softmax; trunk writes the chunk into the cache once for all layers after the scan.
      # Writing per layer instead copies the whole cache every layer and step (~2x slower).
      k_btkh, v_btkh = k_btkh.astype(cache.k_bskh.dtype), v_btkh.astype(cache.v_bskh.dtype)
      def bias(k_pos):
        return None if bias_fn is None else bias_fn(positions_bt, k_pos)
      parts = [(cache.k_bskh, cache.v_bskh,
                attention_mask(positions_bt, cache.positions_bs, segments_bt, cache.segments_bs, cfg.causal),
                bias(cache.positions_bs)),
               (k_btkh, v_btkh, attention_mask(positions_bt, positions_bt, segments_bt, segments_bt, cfg.causal),
                bias(positions_bt))]
      o_btnh, weights = xla_attention(q_btnh, parts, scale)
      cache = dataclasses.replace(cache, k_bskh=k_btkh, v_bskh=v_btkh)  # the chunk's keys, for trunk to write
    elif cfg.attention == 'cudnn' and branches_bt is None and not with_weights and bias_fn is None:
      # Training and plain scoring: rows are causal by index, so cuDNN's causal kernel plus the
      # segment mask is the same mask as attention_mask (positions increase within a segment).
      seg_mask = None if segments_bt is None else (segments_bt[:, None, :, None] == segments_bt[:, None, None, :])
      o_btnh = jax.nn.dot_product_attention(q_btnh, k_btkh, v_btkh, mask=seg_mask, is_causal=cfg.causal,
                                            scale=None if scale else 1.0, implementation='cudnn')
      weights = None
    else:
      mask_bts = attention_mask(positions_bt, positions_bt, segments_bt, segments_bt, cfg.causal,
                                branches_bt, branches_bt)
      bias_bnts = None if bias_fn is None else bias_fn(positions_bt, positions_bt)
      o_btnh, weights = xla_attention(q_btnh, [(k_btkh, v_btkh, mask_bts, bias_bnts)], scale)
    out_btd = adapted('btnh,nhd->btd', o_btnh, self.w_o_nhd[...].astype(dt), self, 'o', cfg, ko)
    if cfg.use_bias:
      out_btd += self.b_o_d[...].astype(dt)
    if with_heads:
      w_o_nhd = self.w_o_nhd[...].astype(dt)
      if getattr(self, 'lora_a_o', None) is not None:  # the adapter merged, so the heads still sum to the output
        w_o_nhd += (cfg.lora_scale * jnp.einsum('nhr,rd->nhd', self.lora_a_o[...], self.lora_b_o[...])).astype(dt)
      heads_btnd = jnp.einsum('btnh,nhd->btnd', o_btnh, w_o_nhd)
      return out_btd, cache, (weights if with_weights else None), heads_btnd
    return out_btd, cache, (weights if with_weights else None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCache:
  """One layer's slice of a KVCache, as the layer scan hands it to a block."""

  k_bskh: jax.Array
  v_bskh: jax.Array
  positions_bs: jax.Array
  segments_bs: jax.Array
  index: jax.Array


def xla_attention(q_btnh: jax.Array, parts: list[tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]],
                  scale: bool = True) -> tuple[jax.Array, jax.Array]:
  """Softmax attention in plain einsums (runs on every backend): (output, weights [b, n, t, s]).

  ``parts`` are (keys [b, s_i, k, h], values [b, s_i, k, h], mask [b, t, s_i], additive
  bias [b or 1, n, t, s_i] or None) whose keys share one softmax, as if concatenated
  along s: a decoding step attends to the cache and to its own new keys without copying
  the cache to append them. ``scale``: divide the logits by sqrt(h) (T5 does not).
  """
  b, t, n, h = q_btnh.shape
  k = parts[0][0].shape[2]
  q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
  logits = []
  for k_bskh, _, mask_bts, bias_bnts in parts:
    l_bkgts = jnp.einsum('btkgh,bskh->bkgts', q_btkgh, k_bskh).astype(jnp.float32)
    if scale:
      l_bkgts = l_bkgts / math.sqrt(h)
    if bias_bnts is not None:
      l_bkgts = l_bkgts + bias_bnts.astype(jnp.float32).reshape(bias_bnts.shape[0], k, n // k, *bias_bnts.shape[2:])
    logits.append(jnp.where(mask_bts[:, None, None], l_bkgts, jnp.finfo(jnp.float32).min))
  m = functools.reduce(jnp.maximum, [l.max(-1, keepdims=True) for l in logits])
  exps = [jnp.exp(l - m) for l in logits]
  z = sum(e.sum(-1, keepdims=True) for e in exps)
  probs = [e / z for e in exps]
  o_btkgh = sum(jnp.einsum('bkgts,bskh->btkgh', p.astype(v.dtype), v) for p, (_, v, _, _) in zip(probs, parts))
  weights = jnp.concatenate(probs, -1) if len(probs) > 1 else probs[0]
  return o_btkgh.reshape(b, t, n, h), weights.reshape(b, n, t, -1)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'swiglu': jax.nn.silu,
    'gelu': functools.partial(jax.nn.gelu, approximate=True),  # GPT-2's gelu_new, T5 v1.1's gated-gelu
    'geglu': functools.partial(jax.nn.gelu, approximate=True),
    'gelu_exact': functools.partial(jax.nn.gelu, approximate=False),  # BERT's erf form
    'relu': jax.nn.relu,
}


class MLP(nnx.Module):
  """Feed-forward: gated (SwiGLU, Shazeer 2020; GeGLU, T5 v1.1) act(gate x) * (up x), or act(up x).

  Gated MLPs apply the activation to the gate projection (``w_gate_df``, T5's wi_0,
  Llama's gate_proj) and multiply by the up projection (``w_in_df``, wi_1, up_proj).
  """

  def __init__(self, cfg: ModelConfig, key: jax.Array, n_residual_layers: int | None = None):
    self.cfg = cfg
    d, f, std, pd = cfg.d_model, cfg.d_ff, cfg.init_std, cfg.param_dtype
    k1, k2, k3 = jax.random.split(key, 3)
    layers = n_residual_layers or cfg.n_layers
    self.w_in_df = param(k1, (d, f), ('embed', 'mlp'), std, pd)
    if cfg.gated:
      self.w_gate_df = param(k3, (d, f), ('embed', 'mlp'), std, pd)
    self.w_out_fd = param(k2, (f, d), ('mlp', 'embed'), std / math.sqrt(2 * layers), pd)
    add_lora(self, cfg, k1, 'up', (d,), ('embed',), (f,), ('mlp',))
    if cfg.gated:
      add_lora(self, cfg, k3, 'gate', (d,), ('embed',), (f,), ('mlp',))
    add_lora(self, cfg, k2, 'down', (f,), ('mlp',), (d,), ('embed',))
    if cfg.use_bias:
      self.b_in_f = param(k1, (f,), ('mlp',), None, pd)
      self.b_out_d = param(k2, (d,), ('embed',), None, pd)

  def __call__(self, x_btd: jax.Array, lora_key: jax.Array | None = None) -> jax.Array:
    cfg, dt = self.cfg, x_btd.dtype
    act = _ACTIVATIONS[cfg.mlp]
    ku, kg, kd = jax.random.split(lora_key, 3) if lora_key is not None else (None,) * 3
    h_btf = adapted('btd,df->btf', x_btd, self.w_in_df[...].astype(dt), self, 'up', cfg, ku)
    if cfg.use_bias:
      h_btf += self.b_in_f[...].astype(dt)
    if cfg.gated:
      h_btf = act(adapted('btd,df->btf', x_btd, self.w_gate_df[...].astype(dt), self, 'gate', cfg, kg)) * h_btf
    else:
      h_btf = act(h_btf)
    h_btf = constrain(h_btf, ('act_batch', 'act_length', 'act_mlp'))
    out_btd = adapted('btf,fd->btd', h_btf, self.w_out_fd[...].astype(dt), self, 'down', cfg, kd)
    if cfg.use_bias:
      out_btd += self.b_out_d[...].astype(dt)
    return out_btd


REMAT_POLICIES = {
    'full': None,  # recompute everything in the backward pass
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def mask_padded_vocab(logits_btv: jax.Array, vocab_size: int) -> jax.Array:
  """Set logits of the padding rows of the vocabulary to -inf (for sampling and scoring)."""
  if logits_btv.shape[-1] == vocab_size:
    return logits_btv
  valid = jnp.arange(logits_btv.shape[-1]) < vocab_size
  return jnp.where(valid, logits_btv, -1e9)  # finite, so 0 * logit stays 0 in the loss



def stack(n: int, key: jax.Array, build: Callable[[jax.Array], nnx.Module]) -> nnx.Module:
  """``n`` blocks built under vmap: each parameter gains a leading 'layers' axis.

  The forward pass scans over that axis (``run_stack``): one compiled block, fast compiles.
  """
  blocks = nnx.vmap(build)(jax.random.split(key, n))
  for _, var in nnx.iter_graph(blocks):
    if isinstance(var, nnx.Param):
      var.set_metadata(axes=('layers',) + tuple(var.get_metadata()['axes']))
  return blocks


def run_stack(blocks: nnx.Module, cfg: ModelConfig, x: jax.Array, per_layer, body: Callable, n: int):
  """Apply stacked ``blocks`` in order: ``body(block, x, per_layer[i]) -> (x, out_i)``; returns (x, stacked outs).

  ``per_layer`` is a pytree whose leaves have a leading layer axis (dropout keys, cache
  slices) or None. Scanned (``cfg.scan_layers``) or unrolled, rematerialised per block
  as ``cfg.remat`` says.
  """
  graph, stacked = nnx.split(blocks)

  def fn(x, state, extra):
    return body(nnx.merge(graph, state), x, extra)

  if cfg.remat != 'none':
    fn = jax.checkpoint(fn, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
  if cfg.scan_layers:
    return jax.lax.scan(lambda x, layer: fn(x, *layer), x, (stacked, per_layer))
  outs = []
  for i in range(n):
    x, out = fn(x, *jax.tree.map(lambda a: a[i], (stacked, per_layer)))
    outs.append(out)
  return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)


def layer_keys(key: jax.Array | None, n: int) -> jax.Array | None:
  """One dropout key per layer, or None (no dropout)."""
  return None if key is None else jax.random.split(key, n)


def embed_tokens(table_vd: nnx.Param, tokens_bt: jax.Array, dtype) -> jax.Array:
  """Rows of an embedding table [V, d] for token ids [b, t], in the compute dtype."""
  return jnp.take(table_vd[...], tokens_bt, axis=0).astype(dtype)


def padded_vocab_param(key: jax.Array, cfg: ModelConfig, shape: tuple[int, int], axes: tuple[str, str],
                       vocab_axis: int) -> nnx.Param:
  """An embedding or output matrix whose vocabulary rows past ``vocab_size`` are zero.

  Those rows are padding: never looked up, their logits masked, so no gradient and no
  decay reaches them and they stay zero in training; exports drop nothing.
  """
  p = param(key, shape, axes, cfg.init_std, cfg.param_dtype)
  real = jnp.arange(shape[vocab_axis]) < cfg.vocab_size
  p[...] = jnp.where(real[:, None] if vocab_axis == 0 else real[None, :], p[...], 0)
  return p
