"""Decoder-only transformer in Flax NNX: the Llama and GPT-2 families in one file.

Modules are written bottom-up: norm, attention, MLP, block, transformer. Tensor names
carry their axes, one letter each:

  b batch   t query position   s key position   d model width   v vocabulary
  n query heads   k key/value heads   g query heads per kv head   h head dim   f MLP width
  l layers

Every parameter carries logical axis names in its ``axes`` metadata (e.g. ``('embed',
'mlp')``); ``llm/sharding.py`` maps those names to mesh axes with one rules table.
Parameters are float32; compute happens in ``ModelConfig.dtype`` (bfloat16 on
accelerators) with norms, softmax and the loss in float32.

The forward pass is split in two: ``Transformer.trunk`` returns the final hidden states
(and, on request, every layer's residual stream and attention weights) and
``Transformer.head`` turns hidden states into logits. Attention masks are built from
query and key positions and segment ids (``attention_mask``), so the same code serves
packed training rows, left-padded prompts decoded with a ``KVCache``, and scoring rows
where several continuations share one context (``branches``).

This module imports only jax, flax and numpy, so the throughput benchmark runs on
machines without TensorFlow or ml_collections.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

Family = Literal['llama', 'gpt2']


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of the decoder. ``family`` fills the switches it implies."""

  vocab_size: int  # tokenizer vocabulary; the embedding is padded to vocab_multiple
  d_model: int = 128  # residual stream width
  n_layers: int = 4  # transformer blocks
  n_heads: int = 4  # query heads
  n_kv_heads: int | None = None  # key/value heads (GQA); None = n_heads
  d_head: int | None = None  # per-head width; None = d_model // n_heads
  d_ff: int | None = None  # MLP width; None = 4 * d_model (gelu) or 8/3 * d_model (swiglu)
  max_seq_len: int = 1024  # longest sequence (size of the learned position table)
  family: Family = 'llama'  # defaults for the switches below
  norm: Literal['rms', 'layer'] | None = None  # None: rms (llama), layer (gpt2)
  positions: Literal['rope', 'learned'] | None = None  # None: rope (llama), learned (gpt2)
  mlp: Literal['swiglu', 'gelu'] | None = None  # None: swiglu (llama), gelu (gpt2)
  use_bias: bool | None = None  # None: False (llama), True (gpt2)
  tie_embeddings: bool | None = None  # None: False (llama), True (gpt2)
  dropout: float = 0.0  # on embeddings and residual branches
  causal: bool = True  # decoders attend to earlier positions only; False = bidirectional (encoders)
  rope_theta: float = 10_000.0  # RoPE base (Su et al., 2021)
  norm_eps: float = 1e-5
  vocab_multiple: int = 128  # pad the embedding rows to a multiple of this (MXU/tensor-core friendly)
  dtype: str = 'float32'  # compute dtype: bfloat16 on accelerators, float32 on CPU
  param_dtype: str = 'float32'
  remat: Literal['none', 'full', 'dots', 'dots_no_batch'] = 'none'  # rematerialisation policy per block
  attention: Literal['xla', 'cudnn'] = 'xla'  # cudnn = flash attention on NVIDIA GPUs
  scan_layers: bool = True  # lax.scan over stacked blocks (fast compiles) or a Python loop
  # Weight gradients of the projections: 'xla' lets XLA choose; 'pretransposed' saves each
  # projection input transposed for dW = x^T g (about 1.7x faster MLP backward on XLA:CPU,
  # which otherwise transposes g with the activation derivative fused in; costs memory).
  dense_grad: Literal['xla', 'pretransposed'] = 'xla'
  init_std: float = 0.02
  # Low-rank adapters (Hu et al., 2021) on the projections named in lora_targets (keys of
  # LORA_TARGETS): y = W x + (lora_alpha / lora_rank) * B (A dropout(x)), B zero at init
  # as PEFT does, so an adapted model starts equal to its base. lora_rank 0 = none.
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_dropout: float = 0.0
  lora_targets: tuple[str, ...] = ()

  def __post_init__(self):
    llama = self.family == 'llama'
    if self.family not in ('llama', 'gpt2'):
      raise ValueError(f"model.family must be 'llama' or 'gpt2', got {self.family!r}")
    object.__setattr__(self, 'lora_targets', tuple(self.lora_targets or ()))  # JSON gives a list
    defaults = dict(
        n_kv_heads=self.n_heads,
        d_head=self.d_model // self.n_heads,
        d_ff=_swiglu_width(self.d_model) if (self.mlp or ('swiglu' if llama else 'gelu')) == 'swiglu'
        else 4 * self.d_model,
        norm='rms' if llama else 'layer',
        positions='rope' if llama else 'learned',
        mlp='swiglu' if llama else 'gelu',
        use_bias=not llama,
        tie_embeddings=not llama,
    )
    for name, value in defaults.items():
      if getattr(self, name) is None:
        object.__setattr__(self, name, value)
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f'model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}')
    if self.positions == 'rope' and self.d_head % 2:
      raise ValueError(f'rotary positions need an even head width, got d_head={self.d_head}')
    if self.lora_rank < 0:
      raise ValueError(f'lora_rank must be >= 0, got {self.lora_rank}')
    if self.lora_rank and not self.lora_targets:
      raise ValueError(f'lora_rank={self.lora_rank} but lora_targets is empty; name the projections to '
                       f'adapt, from {self.lora_target_names()}')
    unknown = [t for t in self.lora_targets if t not in self.lora_target_names()]
    if unknown:
      raise ValueError(f'LoRA target(s) {unknown} match no projection of this model; its projections are '
                       f'{self.lora_target_names()} (gate exists only with the swiglu MLP)')

  def lora_target_names(self) -> list[str]:
    """The projections this architecture has, by LoRA target name."""
    return [t for t in LORA_TARGETS if t != 'gate' or self.mlp == 'swiglu']

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  @property
  def padded_vocab(self) -> int:
    m = max(1, self.vocab_multiple)
    return (self.vocab_size + m - 1) // m * m

  def param_count(self, embedding: bool = True) -> int:
    """Number of parameters (including the padded embedding rows)."""
    d, f, h = self.d_model, self.d_ff, self.d_head
    attn = d * h * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * h * d
    mlp = d * f * (3 if self.mlp == 'swiglu' else 2)
    norms = 2 * d * (2 if self.norm == 'layer' else 1)
    biases = (h * (self.n_heads + 2 * self.n_kv_heads) + d + f + d) if self.use_bias else 0
    total = self.n_layers * (attn + mlp + norms + biases) + d * (2 if self.norm == 'layer' else 1)
    if embedding:
      total += self.padded_vocab * d * (1 if self.tie_embeddings else 2)
      if self.positions == 'learned':
        total += self.max_seq_len * d
    return total


# LoRA target name -> (module, weight) of the projection it adapts. Names follow PEFT's
# Llama modules (q_proj ... down_proj); up is the MLP's input projection in both families.
LORA_TARGETS: dict[str, tuple[str, str]] = {
    'q': ('attn', 'w_q_dnh'), 'k': ('attn', 'w_k_dkh'), 'v': ('attn', 'w_v_dkh'), 'o': ('attn', 'w_o_nhd'),
    'gate': ('mlp', 'w_gate_df'), 'up': ('mlp', 'w_in_df'), 'down': ('mlp', 'w_out_fd'),
}


def _swiglu_width(d_model: int) -> int:
  """8/3 d rounded up to a multiple of 256, as Llama does (keeps the parameter count of a 4d GELU MLP)."""
  return int(math.ceil(8 * d_model / 3 / 256) * 256)


# One table of model sizes. Each entry is a partial ModelConfig; the tokenizer fills vocab_size.
SIZES: dict[str, dict] = {
    # nanoGPT's CPU Shakespeare model: GPT-2 style, no biases.
    'char-tiny': dict(family='gpt2', d_model=128, n_layers=4, n_heads=4, use_bias=False, max_seq_len=64),
    # Small Llama-style model for the default CPU run.
    'tiny': dict(family='llama', d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384, max_seq_len=256),
    'smoke': dict(family='llama', d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=128),
    '124m': dict(family='gpt2', d_model=768, n_layers=12, n_heads=12, max_seq_len=1024),
    '350m': dict(family='gpt2', d_model=1024, n_layers=24, n_heads=16, max_seq_len=1024),
    # Llama-3.2-1B shape with a 32k vocabulary: 1.1B parameters.
    '1b': dict(family='llama', d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
               max_seq_len=2048, rope_theta=500_000.0),
    # Llama-2-7B shape.
    '7b': dict(family='llama', d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32, d_ff=11008,
               max_seq_len=4096),
}


def config_for_size(size: str, vocab_size: int, **overrides) -> ModelConfig:
  """Look up ``size`` in SIZES and build a ModelConfig; ``overrides`` win over the table."""
  if size not in SIZES:
    raise ValueError(f'unknown model size {size!r}; choose one of {sorted(SIZES)}')
  fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
  return ModelConfig(vocab_size=vocab_size, **fields)


def _param(key: jax.Array, shape: tuple[int, ...], axes: tuple[str | None, ...], std: float | None,
           dtype: str) -> nnx.Param:
  """A parameter with logical axis names; std=None means zeros, 'ones' handled by callers."""
  assert len(shape) == len(axes), (shape, axes)
  if std is None:
    value = jnp.zeros(shape, dtype)
  else:
    value = std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return nnx.Param(value, axes=axes)


def _ones(shape: tuple[int, ...], axes: tuple[str | None, ...], dtype: str) -> nnx.Param:
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


def project(eq: str, x: jax.Array, w: jax.Array, cfg: 'ModelConfig') -> jax.Array:
  """``jnp.einsum(eq, x, w)`` for a projection whose contracted axes end x and start w."""
  if cfg.dense_grad == 'xla':
    return jnp.einsum(eq, x, w)
  ins, out = eq.split('->')
  xs, ws = ins.split(',')
  k = len([c for c in xs if c in ws and c not in out])
  assert xs[len(xs) - k:] == ws[:k] and out == xs[:len(xs) - k] + ws[k:], eq
  return _dense_pretransposed(x, w, k)


def _add_lora(module: nnx.Module, cfg: 'ModelConfig', key: jax.Array, target: str,
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


def adapted(eq: str, x: jax.Array, w: jax.Array, module: nnx.Module, target: str, cfg: 'ModelConfig',
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
    self.scale = _ones((cfg.d_model,), ('norm',), cfg.param_dtype)
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
  def empty(cls, cfg: 'ModelConfig', batch: int, length: int) -> 'KVCache':
    shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.d_head)
    kv = constrain(jnp.zeros(shape, cfg.dtype), ('layers', 'act_batch', None, 'act_kv_heads', None))
    zeros = constrain(jnp.zeros((batch, length), jnp.int32), ('act_batch', None))
    return cls(kv, kv, zeros, zeros, jnp.zeros((), jnp.int32))

  @property
  def length(self) -> int:
    return self.k_lbskh.shape[2]


class Attention(nnx.Module):
  """Multi-head attention with grouped-query heads (Ainslie et al., 2023)."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    self.cfg = cfg
    d, n, k, h, std, pd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.init_std, cfg.param_dtype
    kq, kk, kv, ko = jax.random.split(key, 4)
    self.w_q_dnh = _param(kq, (d, n, h), ('embed', 'heads', 'head_dim'), std, pd)
    self.w_k_dkh = _param(kk, (d, k, h), ('embed', 'kv_heads', 'head_dim'), std, pd)
    self.w_v_dkh = _param(kv, (d, k, h), ('embed', 'kv_heads', 'head_dim'), std, pd)
    # GPT-2's residual-projection scaling: std / sqrt(2 * n_layers).
    self.w_o_nhd = _param(ko, (n, h, d), ('heads', 'head_dim', 'embed'), std / math.sqrt(2 * cfg.n_layers), pd)
    _add_lora(self, cfg, kq, 'q', (d,), ('embed',), (n, h), ('heads', 'head_dim'))
    _add_lora(self, cfg, kk, 'k', (d,), ('embed',), (k, h), ('kv_heads', 'head_dim'))
    _add_lora(self, cfg, kv, 'v', (d,), ('embed',), (k, h), ('kv_heads', 'head_dim'))
    _add_lora(self, cfg, ko, 'o', (n, h), ('heads', 'head_dim'), (d,), ('embed',))
    if cfg.use_bias:
      self.b_q_nh = _param(kq, (n, h), ('heads', 'head_dim'), None, pd)
      self.b_k_kh = _param(kk, (k, h), ('kv_heads', 'head_dim'), None, pd)
      self.b_v_kh = _param(kv, (k, h), ('kv_heads', 'head_dim'), None, pd)
      self.b_o_d = _param(ko, (d,), ('embed',), None, pd)

  def __call__(self, x_btd: jax.Array, positions_bt: jax.Array, segments_bt: jax.Array | None,
               branches_bt: jax.Array | None = None, cache: 'LayerCache | None' = None,
               with_weights: bool = False, lora_key: jax.Array | None = None
               ) -> tuple[jax.Array, 'LayerCache | None', jax.Array | None]:
    """(output [b, t, d], updated layer cache, attention weights [b, n, t, s] or None)."""
    cfg, dt = self.cfg, x_btd.dtype
    kq, kk, kv, ko = jax.random.split(lora_key, 4) if lora_key is not None else (None,) * 4
    q_btnh = adapted('btd,dnh->btnh', x_btd, self.w_q_dnh[...].astype(dt), self, 'q', cfg, kq)
    k_btkh = adapted('btd,dkh->btkh', x_btd, self.w_k_dkh[...].astype(dt), self, 'k', cfg, kk)
    v_btkh = adapted('btd,dkh->btkh', x_btd, self.w_v_dkh[...].astype(dt), self, 'v', cfg, kv)
    if cfg.use_bias:
      q_btnh += self.b_q_nh[...].astype(dt)
      k_btkh += self.b_k_kh[...].astype(dt)
      v_btkh += self.b_v_kh[...].astype(dt)
    if cfg.positions == 'rope':
      q_btnh = rope(q_btnh, positions_bt, cfg.rope_theta)
      k_btkh = rope(k_btkh, positions_bt, cfg.rope_theta)
    q_btnh = constrain(q_btnh, ('act_batch', 'act_length', 'act_heads', None))
    if cache is not None:
      # Attend to the slots written so far plus this chunk's own keys, as two parts of one
      # softmax; trunk writes the chunk into the cache once for all layers after the scan.
      # Writing per layer instead copies the whole cache every layer and step (~2x slower).
      k_btkh, v_btkh = k_btkh.astype(cache.k_bskh.dtype), v_btkh.astype(cache.v_bskh.dtype)
      parts = [(cache.k_bskh, cache.v_bskh,
                attention_mask(positions_bt, cache.positions_bs, segments_bt, cache.segments_bs, cfg.causal)),
               (k_btkh, v_btkh, attention_mask(positions_bt, positions_bt, segments_bt, segments_bt, cfg.causal))]
      o_btnh, weights = _xla_attention(q_btnh, parts)
      cache = dataclasses.replace(cache, k_bskh=k_btkh, v_bskh=v_btkh)  # the chunk's keys, for trunk to write
    elif cfg.attention == 'cudnn' and branches_bt is None and not with_weights:
      # Training and plain scoring: rows are causal by index, so cuDNN's causal kernel plus the
      # segment mask is the same mask as attention_mask (positions increase within a segment).
      seg_mask = None if segments_bt is None else (segments_bt[:, None, :, None] == segments_bt[:, None, None, :])
      o_btnh = jax.nn.dot_product_attention(q_btnh, k_btkh, v_btkh, mask=seg_mask, is_causal=cfg.causal,
                                            implementation='cudnn')
      weights = None
    else:
      mask_bts = attention_mask(positions_bt, positions_bt, segments_bt, segments_bt, cfg.causal,
                                branches_bt, branches_bt)
      o_btnh, weights = _xla_attention(q_btnh, [(k_btkh, v_btkh, mask_bts)])
    out_btd = adapted('btnh,nhd->btd', o_btnh, self.w_o_nhd[...].astype(dt), self, 'o', cfg, ko)
    if cfg.use_bias:
      out_btd += self.b_o_d[...].astype(dt)
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


def _xla_attention(q_btnh: jax.Array, parts: list[tuple[jax.Array, jax.Array, jax.Array]]
                   ) -> tuple[jax.Array, jax.Array]:
  """Softmax attention in plain einsums (runs on every backend): (output, weights [b, n, t, s]).

  ``parts`` are (keys [b, s_i, k, h], values [b, s_i, k, h], mask [b, t, s_i]) whose keys
  share one softmax, as if concatenated along s: a decoding step attends to the cache and
  to its own new keys without copying the cache to append them.
  """
  b, t, n, h = q_btnh.shape
  k = parts[0][0].shape[2]
  q_btkgh = q_btnh.reshape(b, t, k, n // k, h)
  logits = []
  for k_bskh, _, mask_bts in parts:
    l_bkgts = jnp.einsum('btkgh,bskh->bkgts', q_btkgh, k_bskh).astype(jnp.float32) / math.sqrt(h)
    logits.append(jnp.where(mask_bts[:, None, None], l_bkgts, jnp.finfo(jnp.float32).min))
  m = functools.reduce(jnp.maximum, [l.max(-1, keepdims=True) for l in logits])
  exps = [jnp.exp(l - m) for l in logits]
  z = sum(e.sum(-1, keepdims=True) for e in exps)
  probs = [e / z for e in exps]
  o_btkgh = sum(jnp.einsum('bkgts,bskh->btkgh', p.astype(v.dtype), v) for p, (_, v, _) in zip(probs, parts))
  weights = jnp.concatenate(probs, -1) if len(probs) > 1 else probs[0]
  return o_btkgh.reshape(b, t, n, h), weights.reshape(b, n, t, -1)


class MLP(nnx.Module):
  """SwiGLU (Shazeer, 2020) or GELU feed-forward."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    self.cfg = cfg
    d, f, std, pd = cfg.d_model, cfg.d_ff, cfg.init_std, cfg.param_dtype
    k1, k2, k3 = jax.random.split(key, 3)
    self.w_in_df = _param(k1, (d, f), ('embed', 'mlp'), std, pd)
    if cfg.mlp == 'swiglu':
      self.w_gate_df = _param(k3, (d, f), ('embed', 'mlp'), std, pd)
    self.w_out_fd = _param(k2, (f, d), ('mlp', 'embed'), std / math.sqrt(2 * cfg.n_layers), pd)
    _add_lora(self, cfg, k1, 'up', (d,), ('embed',), (f,), ('mlp',))
    if cfg.mlp == 'swiglu':
      _add_lora(self, cfg, k3, 'gate', (d,), ('embed',), (f,), ('mlp',))
    _add_lora(self, cfg, k2, 'down', (f,), ('mlp',), (d,), ('embed',))
    if cfg.use_bias:
      self.b_in_f = _param(k1, (f,), ('mlp',), None, pd)
      self.b_out_d = _param(k2, (d,), ('embed',), None, pd)

  def __call__(self, x_btd: jax.Array, lora_key: jax.Array | None = None) -> jax.Array:
    cfg, dt = self.cfg, x_btd.dtype
    ku, kg, kd = jax.random.split(lora_key, 3) if lora_key is not None else (None,) * 3
    h_btf = adapted('btd,df->btf', x_btd, self.w_in_df[...].astype(dt), self, 'up', cfg, ku)
    if cfg.use_bias:
      h_btf += self.b_in_f[...].astype(dt)
    if cfg.mlp == 'swiglu':
      h_btf = jax.nn.silu(adapted('btd,df->btf', x_btd, self.w_gate_df[...].astype(dt), self, 'gate', cfg, kg)) * h_btf
    else:
      h_btf = jax.nn.gelu(h_btf, approximate=True)
    h_btf = constrain(h_btf, ('act_batch', 'act_length', 'act_mlp'))
    out_btd = adapted('btf,fd->btd', h_btf, self.w_out_fd[...].astype(dt), self, 'down', cfg, kd)
    if cfg.use_bias:
      out_btd += self.b_out_d[...].astype(dt)
    return out_btd


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    ka, km = jax.random.split(key)
    self.cfg = cfg
    self.attn_norm = Norm(cfg)
    self.attn = Attention(cfg, ka)
    self.mlp_norm = Norm(cfg)
    self.mlp = MLP(cfg, km)

  def __call__(self, x_btd, positions_bt, segments_bt, dropout_key=None, branches_bt=None, cache=None,
               with_weights=False):
    k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    # Adapter dropout draws from its own stream, so the residual dropout masks do not change.
    la, lm = (jax.random.split(jax.random.fold_in(dropout_key, 0x10a))
              if dropout_key is not None and self.cfg.lora_dropout > 0 else (None, None))
    a_btd, cache, weights = self.attn(self.attn_norm(x_btd), positions_bt, segments_bt, branches_bt, cache,
                                      with_weights, la)
    x_btd = x_btd + dropout(a_btd, self.cfg.dropout, k1)
    x_btd = x_btd + dropout(self.mlp(self.mlp_norm(x_btd), lm), self.cfg.dropout, k2)
    return constrain(x_btd, ('act_batch', 'act_length', 'act_embed')), cache, weights


_REMAT_POLICIES = {
    'full': None,  # recompute everything in the backward pass
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nnx.Module):
  """Token embedding, a stack of blocks (stacked on a leading 'layers' axis), final norm, LM head."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    self.cfg = cfg
    V, d, pd = cfg.padded_vocab, cfg.d_model, cfg.param_dtype
    k_emb, k_pos, k_blocks, k_head = jax.random.split(key, 4)
    # Rows (and head columns) past vocab_size are padding: zero, and they stay zero in training
    # (never looked up, logits masked: no gradient, no decay), so exports drop nothing.
    real_v1 = (jnp.arange(V) < cfg.vocab_size)[:, None]
    self.embed_vd = _param(k_emb, (V, d), ('vocab', 'embed'), cfg.init_std, pd)
    self.embed_vd[...] = jnp.where(real_v1, self.embed_vd[...], 0)
    if cfg.positions == 'learned':
      self.pos_td = _param(k_pos, (cfg.max_seq_len, d), (None, 'embed'), cfg.init_std, pd)
    # Blocks are built once per layer under vmap, so each parameter gains a leading
    # 'layers' axis; the forward pass scans over it (one compiled block, fast compiles).
    self.blocks = nnx.vmap(lambda k: Block(cfg, k))(jax.random.split(k_blocks, cfg.n_layers))
    for _, var in nnx.iter_graph(self.blocks):
      if isinstance(var, nnx.Param):
        var.set_metadata(axes=('layers',) + tuple(var.get_metadata()['axes']))
    self.final_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.head_dv = _param(k_head, (d, V), ('embed', 'vocab'), cfg.init_std, pd)
      self.head_dv[...] = jnp.where(real_v1.T, self.head_dv[...], 0)

  def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None,
               segments_bt: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits [b, t, padded_vocab] in float32 (``head(trunk(...))``; see ``trunk`` for the inputs)."""
    return self.head(self.trunk(tokens_bt, positions_bt, segments_bt, dropout_key=dropout_key).hidden_btd)

  def trunk(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None,
            segments_bt: jax.Array | None = None, *, branches_bt: jax.Array | None = None,
            cache: KVCache | None = None, dropout_key: jax.Array | None = None,
            collect: tuple[str, ...] = ()) -> 'TrunkOutput':
    """Embeddings and blocks up to the final norm.

    tokens_bt: int token ids [b, t]. positions_bt: position of each token inside its
    document (default 0..t-1). segments_bt: document id of each token for packed rows
    (tokens of different segments never attend to each other; 0 = padding); None = one
    document a row. branches_bt: continuations sharing a context (see attention_mask).
    cache: a KVCache to attend to and extend (decoding); its ``index`` advances by t.
    dropout_key: enables dropout when given (training). collect: 'residuals' returns
    each block's output [l, b, t, d], 'attention' each layer's weights [l, b, n, t, s].
    """
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    b, t = tokens_bt.shape
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if cache is not None and segments_bt is None:
      segments_bt = jnp.ones((b, t), jnp.int32)
    unknown = set(collect) - {'residuals', 'attention'}
    if unknown:
      raise ValueError(f"collect takes 'residuals' and 'attention', got {sorted(unknown)}")
    with_weights = 'attention' in collect
    x_btd = jnp.take(self.embed_vd[...], tokens_bt, axis=0).astype(dt)
    if cfg.positions == 'learned':
      x_btd = x_btd + jnp.take(self.pos_td[...], positions_bt, axis=0).astype(dt)
    emb_key, layers_key = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    x_btd = dropout(x_btd, cfg.dropout, emb_key)
    x_btd = constrain(x_btd, ('act_batch', 'act_length', 'act_embed'))

    shared = None
    if cache is not None:  # every layer sees the slots as they were; this chunk is written after the scan
      shared = dict(positions_bs=cache.positions_bs, segments_bs=cache.segments_bs, index=cache.index)

    def block_fn(x_btd, block_state, key, kv):
      block = nnx.merge(block_graph, block_state)
      layer_cache = None if kv is None else LayerCache(kv[0], kv[1], **shared)
      x_btd, layer_cache, weights = block(x_btd, positions_bt, segments_bt, key, branches_bt, layer_cache,
                                          with_weights)
      kv = None if layer_cache is None else (layer_cache.k_bskh, layer_cache.v_bskh)
      return x_btd, (kv, x_btd if 'residuals' in collect else None, weights)

    if cfg.remat != 'none':
      block_fn = jax.checkpoint(block_fn, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    block_graph, stacked = nnx.split(self.blocks)
    keys = (jax.random.split(layers_key, cfg.n_layers) if layers_key is not None else None)
    kvs = None if cache is None else (cache.k_lbskh, cache.v_lbskh)
    if cfg.scan_layers:
      def scan_body(x_btd, layer):
        state, key, kv = layer
        return block_fn(x_btd, state, key, kv)
      x_btd, (kvs, residuals, weights) = jax.lax.scan(scan_body, x_btd, (stacked, keys, kvs))
    else:
      outs = []
      for i in range(cfg.n_layers):
        layer = jax.tree.map(lambda a: a[i], (stacked, keys, kvs))
        x_btd, out = block_fn(x_btd, *layer)
        outs.append(out)
      kvs, residuals, weights = jax.tree.map(lambda *a: jnp.stack(a), *outs) if outs else (None, None, None)

    if cache is not None:  # one in-place write of the chunk for all layers
      def write(full, new, axis):
        return jax.lax.dynamic_update_slice_in_dim(full, new.astype(full.dtype), cache.index, axis)
      k_lbskh = constrain(write(cache.k_lbskh, kvs[0], 2), ('layers', 'act_batch', None, 'act_kv_heads', None))
      v_lbskh = constrain(write(cache.v_lbskh, kvs[1], 2), ('layers', 'act_batch', None, 'act_kv_heads', None))
      cache = KVCache(k_lbskh, v_lbskh, write(cache.positions_bs, positions_bt, 1),
                      write(cache.segments_bs, segments_bt, 1), cache.index + t)
    return TrunkOutput(self.final_norm(x_btd), cache, residuals, weights)

  def head(self, x_btd: jax.Array) -> jax.Array:
    """Final hidden states [b, t, d] -> logits [b, t, padded_vocab] in float32, padding rows masked."""
    cfg = self.cfg
    dt = x_btd.dtype
    if cfg.tie_embeddings:
      logits_btv = jnp.einsum('btd,vd->btv', x_btd, self.embed_vd[...].astype(dt))
    else:
      logits_btv = jnp.einsum('btd,dv->btv', x_btd, self.head_dv[...].astype(dt))
    logits_btv = constrain(logits_btv, ('act_batch', 'act_length', 'act_vocab'))
    # Padding rows of the vocabulary never win: every score below is a true log-likelihood.
    return mask_padded_vocab(logits_btv.astype(jnp.float32), cfg.vocab_size)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrunkOutput:
  """What ``Transformer.trunk`` returns."""

  hidden_btd: jax.Array  # final hidden states, after the final norm
  cache: KVCache | None  # the extended cache when one was given
  residuals_lbtd: jax.Array | None  # each block's output (collect='residuals')
  attention_lbnts: jax.Array | None  # each layer's attention weights (collect='attention')


def mask_padded_vocab(logits_btv: jax.Array, vocab_size: int) -> jax.Array:
  """Set logits of the padding rows of the vocabulary to -inf (for sampling and scoring)."""
  if logits_btv.shape[-1] == vocab_size:
    return logits_btv
  valid = jnp.arange(logits_btv.shape[-1]) < vocab_size
  return jnp.where(valid, logits_btv, -1e9)  # finite, so 0 * logit stays 0 in the loss
