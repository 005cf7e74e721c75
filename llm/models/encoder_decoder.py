"""Encoder-decoder transformer in Flax NNX: T5 (Raffel et al., 2020), every task as text to text.

One embedding table shared by both sides; a bidirectional encoder stack and a causal
decoder stack whose blocks add cross-attention to the encoder's output; RMS norms
without bias, pre-norm; no position embeddings but learned relative-position biases
(bucketed, bidirectional in the encoder and causal in the decoder, one table per stack
shared by its layers as T5 does); unscaled attention; a gated-GELU (T5 v1.1) or ReLU
(v1.0) MLP; tied (v1.0, logits scaled by d_model^-0.5) or untied (v1.1) output.

Decoding computes the encoder output once: ``memory`` projects it into every decoder
layer's cross-attention keys and values, and a ``KVCache`` holds the decoder's
self-attention keys, so each new token costs one decoder step. The building blocks live
in ``llm/models/layers.py`` (axis letters are explained there).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.config import ModelConfig
from llm.models.decoder import TrunkOutput
from llm.models.encoder import lora_keys
from llm.models.layers import (MLP, Attention, KVCache, LayerCache, Memory, Norm, RelativeBias, constrain, dropout,
                               embed_tokens, layer_keys, mask_padded_vocab, padded_vocab_param, run_stack, stack)

_ACT = ('act_batch', 'act_length', 'act_embed')


class EncoderLayer(nnx.Module):
  """x + attn(norm(x)) with the relative bias, then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    ka, km = jax.random.split(key)
    self.cfg = cfg
    self.attn_norm, self.attn = Norm(cfg), Attention(cfg, ka)
    self.mlp_norm, self.mlp = Norm(cfg), MLP(cfg, km)

  def __call__(self, x_btd, positions_bt, segments_bt, bias_fn, dropout_key=None, with_weights=False):
    k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    la, lm = lora_keys(dropout_key, self.cfg, 2)
    a_btd, _, weights = self.attn(self.attn_norm(x_btd), positions_bt, segments_bt, with_weights=with_weights,
                                  lora_key=la, bias_fn=bias_fn)
    x_btd = x_btd + dropout(a_btd, self.cfg.dropout, k1)
    x_btd = x_btd + dropout(self.mlp(self.mlp_norm(x_btd), lm), self.cfg.dropout, k2)
    return constrain(x_btd, _ACT), weights


class DecoderLayer(nnx.Module):
  """Causal self-attention (relative bias), cross-attention to the encoder, MLP; each pre-norm residual."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    ka, kc, km = jax.random.split(key, 3)
    self.cfg = cfg
    n = cfg.n_decoder_layers
    self.attn_norm, self.attn = Norm(cfg), Attention(cfg, ka, n)
    self.cross_norm, self.cross = Norm(cfg), Attention(cfg, kc, n)
    self.mlp_norm, self.mlp = Norm(cfg), MLP(cfg, km, n)

  def __call__(self, x_btd, positions_bt, segments_bt, bias_fn, memory: Memory, cache=None, dropout_key=None,
               with_weights=False, with_cross_weights=False):
    """(output, cache, self-attention weights or None); ``with_cross_weights`` appends the
    cross-attention's weights [b, n, t, s]."""
    k1, k2, k3 = jax.random.split(dropout_key, 3) if dropout_key is not None else (None,) * 3
    la, lc, lm = lora_keys(dropout_key, self.cfg, 3)
    a_btd, cache, weights = self.attn(self.attn_norm(x_btd), positions_bt, segments_bt, cache=cache,
                                      with_weights=with_weights, lora_key=la, bias_fn=bias_fn)
    x_btd = x_btd + dropout(a_btd, self.cfg.dropout, k1)
    c_btd, _, cross_weights = self.cross(self.cross_norm(x_btd), positions_bt, segments_bt,
                                         with_weights=with_cross_weights, lora_key=lc, memory=memory)
    x_btd = x_btd + dropout(c_btd, self.cfg.dropout, k2)
    x_btd = x_btd + dropout(self.mlp(self.mlp_norm(x_btd), lm), self.cfg.dropout, k3)
    out = constrain(x_btd, _ACT), cache, weights
    return out + (cross_weights,) if with_cross_weights else out


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeOutput(TrunkOutput):
  """What ``EncoderDecoder.decode`` returns: a TrunkOutput plus the cross-attention weights."""

  cross_attention_lbnts: jax.Array | None = None  # each layer's cross-attention weights (collect='cross_attention')


class EncoderDecoder(nnx.Module):
  """T5: shared embeddings, encoder stack, decoder stack with cross-attention, LM head."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    self.cfg = cfg
    # One config per side: the encoder attends both ways, the decoder's self-attention is causal.
    self.enc_cfg = dataclasses.replace(cfg, causal=False)
    self.dec_cfg = dataclasses.replace(cfg, causal=True)
    V, d = cfg.padded_vocab, cfg.d_model
    k_emb, k_er, k_enc, k_dr, k_dec, k_head = jax.random.split(key, 6)
    self.embed_vd = padded_vocab_param(k_emb, cfg, (V, d), ('vocab', 'embed'), 0)
    self.enc_rel = RelativeBias(cfg, k_er, bidirectional=True)
    self.enc_blocks = stack(cfg.n_layers, k_enc, lambda k: EncoderLayer(self.enc_cfg, k))
    self.enc_norm = Norm(cfg)
    self.dec_rel = RelativeBias(cfg, k_dr, bidirectional=False)
    self.dec_blocks = stack(cfg.n_decoder_layers, k_dec, lambda k: DecoderLayer(self.dec_cfg, k))
    self.dec_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.head_dv = padded_vocab_param(k_head, cfg, (d, V), ('embed', 'vocab'), 1)

  # ------------------------------------------------------------------------------ encoder

  def encode(self, tokens_bs: jax.Array, positions_bs: jax.Array | None = None,
             segments_bs: jax.Array | None = None, dropout_key: jax.Array | None = None,
             collect: tuple[str, ...] = ()) -> TrunkOutput:
    """Encoder hidden states [b, s, d] (after its final norm) of input ids [b, s].

    positions_bs: position inside its document (default 0..s-1); segments_bs: document id
    per token (0 = padding); collect: 'residuals' and/or 'attention', as the decoder's trunk.
    """
    cfg = self.cfg
    b, s = tokens_bs.shape
    if positions_bs is None:
      positions_bs = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    emb_key, layers_key = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    x = dropout(embed_tokens(self.embed_vd, tokens_bs, jnp.dtype(cfg.dtype)), cfg.dropout, emb_key)
    x = constrain(x, _ACT)
    bias_bnss = self.enc_rel(positions_bs, positions_bs)  # once for every layer, as T5 shares it
    with_weights = 'attention' in collect

    def body(block, x, key):
      x, weights = block(x, positions_bs, segments_bs, lambda q, k: bias_bnss, key, with_weights)
      return x, (x if 'residuals' in collect else None, weights)

    x, (residuals, weights) = run_stack(self.enc_blocks, cfg, x, layer_keys(layers_key, cfg.n_layers), body,
                                        cfg.n_layers)
    x = dropout(self.enc_norm(x), cfg.dropout, None if dropout_key is None else jax.random.fold_in(dropout_key, 1))
    return TrunkOutput(x, None, residuals, weights)

  def memory(self, enc_bsd: jax.Array, segments_bs: jax.Array | None = None) -> Memory:
    """Every decoder layer's cross-attention keys and values [l, b, s, k, h] of the encoder output, once.

    Projected before the decoder's layers run, so adapter dropout (``lora_dropout``) does not
    reach the cross-attention's key and value adapters; their queries' and outputs' it does.
    """
    graph, stacked = nnx.split(self.dec_blocks)

    def one(state):
      return nnx.merge(graph, state).cross.keys_values(enc_bsd)

    k_lbskh, v_lbskh = jax.vmap(one)(stacked)
    if segments_bs is None:
      segments_bs = jnp.ones(enc_bsd.shape[:2], jnp.int32)
    return Memory(k_lbskh, v_lbskh, segments_bs)

  # ------------------------------------------------------------------------------ decoder

  def decode(self, tokens_bt: jax.Array, memory: Memory, positions_bt: jax.Array | None = None,
             segments_bt: jax.Array | None = None, *, cache: KVCache | None = None,
             dropout_key: jax.Array | None = None, collect: tuple[str, ...] = ()) -> DecodeOutput:
    """Decoder hidden states [b, t, d] of target-side ids [b, t] attending to ``memory``.

    With ``cache`` (decoding) the chunk attends to the cached slots too and is written
    into them; the returned cache's index has advanced by t. collect: 'residuals' and/or
    'attention' (the self-attention), as the decoder's trunk, and 'cross_attention' each
    layer's attention weights over the encoder's positions [l, b, n, t, s].
    """
    cfg = self.cfg
    b, t = tokens_bt.shape
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if segments_bt is None and cache is not None:
      segments_bt = jnp.ones((b, t), jnp.int32)
    emb_key, layers_key = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    x = dropout(embed_tokens(self.embed_vd, tokens_bt, jnp.dtype(cfg.dtype)), cfg.dropout, emb_key)
    x = constrain(x, _ACT)
    table_rn = self.dec_rel.b_rel_rn[...]
    rel = self.dec_rel
    if cache is None:
      bias_bntt = rel(positions_bt, positions_bt)
      bias_fn = lambda q, k: bias_bntt  # noqa: E731 - computed once, shared by the layers
    else:  # the cache's slots have their own positions: a bias per part, from the table
      bias_fn = lambda q, k: rel.from_table(table_rn, q, k)  # noqa: E731
    shared = None if cache is None else dict(positions_bs=cache.positions_bs, segments_bs=cache.segments_bs,
                                             index=cache.index)
    with_weights = 'attention' in collect
    with_cross = 'cross_attention' in collect
    n = cfg.n_decoder_layers

    def body(block, x, layer):
      key, kv, mk, mv = layer
      layer_cache = None if kv is None else LayerCache(kv[0], kv[1], **shared)
      x, layer_cache, weights, *cross = block(x, positions_bt, segments_bt, bias_fn,
                                              Memory(mk, mv, memory.segments_bs), layer_cache, key, with_weights,
                                              with_cross)
      kv = None if layer_cache is None else (layer_cache.k_bskh, layer_cache.v_bskh)
      return x, (kv, x if 'residuals' in collect else None, weights, cross[0] if cross else None)

    kvs = None if cache is None else (cache.k_lbskh, cache.v_lbskh)
    x, (kvs, residuals, weights, cross) = run_stack(
        self.dec_blocks, cfg, x, (layer_keys(layers_key, n), kvs, memory.k_bskh, memory.v_bskh), body, n)
    if cache is not None:
      cache = cache.written(kvs, positions_bt, segments_bt)
    x = dropout(self.dec_norm(x), cfg.dropout, None if dropout_key is None else jax.random.fold_in(dropout_key, 1))
    return DecodeOutput(x, cache, residuals, weights, cross_attention_lbnts=cross)

  def empty_cache(self, batch: int, length: int) -> KVCache:
    """A decoder self-attention cache of ``length`` slots per row."""
    return KVCache.empty(self.cfg, batch, length, self.cfg.n_decoder_layers)

  # ------------------------------------------------------------------------------ both

  def hidden(self, batch: dict[str, jax.Array], dropout_key: jax.Array | None = None) -> jax.Array:
    """Decoder hidden states [b, t, d] aligned with batch['targets'].

    Encoder side: 'inputs' and optional 'positions', 'segments' [b, s]; decoder side:
    'dec_inputs' and optional 'dec_positions', 'dec_segments' [b, t].
    """
    ke, kd = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    enc = self.encode(batch['inputs'], batch.get('positions'), batch.get('segments'), ke).hidden_btd
    memory = self.memory(enc, batch.get('segments'))
    return self.decode(batch['dec_inputs'], memory, batch.get('dec_positions'), batch.get('dec_segments'),
                       dropout_key=kd).hidden_btd

  def __call__(self, enc_tokens_bs: jax.Array, dec_tokens_bt: jax.Array) -> jax.Array:
    """Logits [b, t, padded_vocab] in float32 of unpacked rows (every token real)."""
    return self.head(self.hidden({'inputs': enc_tokens_bs, 'dec_inputs': dec_tokens_bt}))

  def head(self, x_btd: jax.Array) -> jax.Array:
    """Decoder hidden states [b, t, d] -> logits [b, t, padded_vocab] in float32, padding rows masked."""
    cfg, dt = self.cfg, x_btd.dtype
    if cfg.tie_embeddings:  # T5 v1.0 rescales before the tied projection
      logits_btv = jnp.einsum('btd,vd->btv', x_btd * (cfg.d_model ** -0.5), self.embed_vd[...].astype(dt))
    else:
      logits_btv = jnp.einsum('btd,dv->btv', x_btd, self.head_dv[...].astype(dt))
    logits_btv = constrain(logits_btv, ('act_batch', 'act_length', 'act_vocab'))
    return mask_padded_vocab(logits_btv.astype(jnp.float32), cfg.vocab_size)
