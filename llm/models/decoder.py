"""Decoder-only transformer in Flax NNX: the Llama and GPT-2 families in one file.

Token embedding (plus learned positions for GPT-2), a stack of pre-norm blocks, final
norm, LM head; the building blocks live in ``llm/models/layers.py`` (axis letters are
explained there). The forward pass is split in two: ``Transformer.trunk`` returns the
final hidden states (and, on request, every layer's residual stream and attention
weights) and ``Transformer.head`` turns hidden states into logits. Attention masks are
built from query and key positions and segment ids (``attention_mask``), so the same code
serves packed training rows, left-padded prompts decoded with a ``KVCache``, and scoring
rows where several continuations share one context (``branches``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.config import ModelConfig
from llm.models.layers import (MLP, Attention, KVCache, LayerCache, Norm, constrain, dropout, embed_tokens,
                               layer_keys, mask_padded_vocab, padded_vocab_param, param, run_stack, stack)


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
               with_weights=False, with_parts=False):
    """(output, cache, attention weights or None); ``with_parts`` appends
    (per-head outputs [b, t, n, d], MLP output [b, t, d])."""
    k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    # Adapter dropout draws from its own stream, so the residual dropout masks do not change.
    la, lm = (jax.random.split(jax.random.fold_in(dropout_key, 0x10a))
              if dropout_key is not None and self.cfg.lora_dropout > 0 else (None, None))
    a_btd, cache, weights, *heads = self.attn(self.attn_norm(x_btd), positions_bt, segments_bt, branches_bt, cache,
                                              with_weights, la, with_heads=with_parts)
    x_btd = x_btd + dropout(a_btd, self.cfg.dropout, k1)
    m_btd = self.mlp(self.mlp_norm(x_btd), lm)
    x_btd = x_btd + dropout(m_btd, self.cfg.dropout, k2)
    out = constrain(x_btd, ('act_batch', 'act_length', 'act_embed')), cache, weights
    return out + ((heads[0], m_btd),) if with_parts else out


class Transformer(nnx.Module):
  """Token embedding, a stack of blocks (stacked on a leading 'layers' axis), final norm, LM head."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    self.cfg = cfg
    V, d, pd = cfg.padded_vocab, cfg.d_model, cfg.param_dtype
    k_emb, k_pos, k_blocks, k_head = jax.random.split(key, 4)
    # Rows (and head columns) past vocab_size are padding: zero, and they stay zero in training
    # (never looked up, logits masked: no gradient, no decay), so exports drop nothing.
    self.embed_vd = padded_vocab_param(k_emb, cfg, (V, d), ('vocab', 'embed'), 0)
    if cfg.positions == 'learned':
      self.pos_td = param(k_pos, (cfg.max_seq_len, d), (None, 'embed'), cfg.init_std, pd)
    self.blocks = stack(cfg.n_layers, k_blocks, lambda k: Block(cfg, k))
    self.final_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.head_dv = padded_vocab_param(k_head, cfg, (d, V), ('embed', 'vocab'), 1)

  def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None,
               segments_bt: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
    """Logits [b, t, padded_vocab] in float32 (``head(trunk(...))``; see ``trunk`` for the inputs)."""
    return self.head(self.trunk(tokens_bt, positions_bt, segments_bt, dropout_key=dropout_key).hidden_btd)

  def hidden(self, batch: dict[str, jax.Array], dropout_key: jax.Array | None = None) -> jax.Array:
    """Final hidden states [b, t, d] of a training or scoring batch, aligned with its 'targets'.

    Reads 'inputs' and, when present, 'positions', 'segments' and 'branches' (all [b, t]).
    """
    return self.trunk(batch['inputs'], batch.get('positions'), batch.get('segments'),
                      branches_bt=batch.get('branches'), dropout_key=dropout_key).hidden_btd

  def trunk(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None,
            segments_bt: jax.Array | None = None, *, branches_bt: jax.Array | None = None,
            cache: KVCache | None = None, dropout_key: jax.Array | None = None,
            collect: tuple[str, ...] = (), embeds_btd: jax.Array | None = None,
            patch: tuple[jax.Array, jax.Array, jax.Array] | None = None) -> 'TrunkOutput':
    """Embeddings and blocks up to the final norm.

    tokens_bt: int token ids [b, t]. positions_bt: position of each token inside its
    document (default 0..t-1). segments_bt: document id of each token for packed rows
    (tokens of different segments never attend to each other; 0 = padding); None = one
    document a row. branches_bt: continuations sharing a context (see attention_mask).
    cache: a KVCache to attend to and extend (decoding); its ``index`` advances by t.
    dropout_key: enables dropout when given (training). collect: 'residuals' returns
    each block's output [l, b, t, d], 'attention' each layer's weights [l, b, n, t, s],
    'heads' each head's output projected by its slice of w_o [l, b, t, n, d] and 'mlp'
    each MLP's output [l, b, t, d] (both before residual dropout).

    For interpretability (``llm/interp``): embeds_btd replaces the token embedding lookup
    (tokens_bt may then be None; learned positions are still added). patch = (layer
    index, mask [b, t] bool, values [b, t, d]) replaces that layer's block output where
    the mask is set, before the next layer reads it; the index may be traced, so one
    compiled program patches any layer (e.g. under vmap).
    """
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    b, t = (tokens_bt if embeds_btd is None else embeds_btd).shape[:2]
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if cache is not None and segments_bt is None:
      segments_bt = jnp.ones((b, t), jnp.int32)
    unknown = set(collect) - {'residuals', 'attention', 'heads', 'mlp'}
    if unknown:
      raise ValueError(f"collect takes 'residuals', 'attention', 'heads' and 'mlp', got {sorted(unknown)}")
    with_weights = 'attention' in collect
    with_parts = 'heads' in collect or 'mlp' in collect
    x_btd = embed_tokens(self.embed_vd, tokens_bt, dt) if embeds_btd is None else embeds_btd.astype(dt)
    if cfg.positions == 'learned':
      x_btd = x_btd + jnp.take(self.pos_td[...], positions_bt, axis=0).astype(dt)
    emb_key, layers_key = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    x_btd = dropout(x_btd, cfg.dropout, emb_key)
    x_btd = constrain(x_btd, ('act_batch', 'act_length', 'act_embed'))

    shared = None
    if cache is not None:  # every layer sees the slots as they were; this chunk is written after the scan
      shared = dict(positions_bs=cache.positions_bs, segments_bs=cache.segments_bs, index=cache.index)

    def body(block, x_btd, layer):
      key, kv, index = layer
      layer_cache = None if kv is None else LayerCache(kv[0], kv[1], **shared)
      x_btd, layer_cache, weights, *parts = block(x_btd, positions_bt, segments_bt, key, branches_bt, layer_cache,
                                                  with_weights, with_parts)
      if patch is not None:
        at, mask_bt, values_btd = patch
        x_btd = jnp.where((index == at) & mask_bt[..., None], values_btd.astype(x_btd.dtype), x_btd)
      heads_btnd, mlp_btd = parts[0] if parts else (None, None)
      kv = None if layer_cache is None else (layer_cache.k_bskh, layer_cache.v_bskh)
      return x_btd, (kv, x_btd if 'residuals' in collect else None, weights,
                     heads_btnd if 'heads' in collect else None, mlp_btd if 'mlp' in collect else None)

    kvs = None if cache is None else (cache.k_lbskh, cache.v_lbskh)
    index_l = None if patch is None else jnp.arange(cfg.n_layers)
    x_btd, (kvs, residuals, weights, heads, mlps) = run_stack(
        self.blocks, cfg, x_btd, (layer_keys(layers_key, cfg.n_layers), kvs, index_l), body, cfg.n_layers)

    if cache is not None:  # one in-place write of the chunk for all layers
      cache = cache.written(kvs, positions_bt, segments_bt)
    return TrunkOutput(self.final_norm(x_btd), cache, residuals, weights, heads, mlps)

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
  heads_lbtnd: jax.Array | None = None  # each head's output through its slice of w_o (collect='heads')
  mlp_lbtd: jax.Array | None = None  # each MLP's output (collect='mlp')


