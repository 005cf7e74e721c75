"""Bidirectional encoder in Flax NNX: BERT (Devlin et al., 2019), trained by masked language modelling.

Word, position and token-type embeddings summed and normalised; a stack of blocks whose
attention sees the whole segment, before and after each token (padding and other
segments of a packed row never); the masked-LM head (dense, GELU, norm, then the tied
word embeddings plus a vocabulary bias); and a classifier on the first token for
fine-tuning. Blocks are post-norm as BERT's (x = norm(x + f(x))) or pre-norm by
``ModelConfig.norm_position``. The building blocks live in ``llm/models/layers.py``
(axis letters are explained there).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from llm.models.config import ModelConfig
from llm.models.decoder import TrunkOutput
from llm.models.layers import (MLP, Attention, Norm, _ACTIVATIONS, constrain, dropout, embed_tokens, layer_keys,
                               mask_padded_vocab, padded_vocab_param, param, run_stack, stack)


def lora_keys(dropout_key: jax.Array | None, cfg: ModelConfig, n: int) -> tuple:
  """Adapter-dropout keys for a block's ``n`` adapted modules, from their own stream (so the
  residual dropout masks do not change), as the decoder's Block draws them; Nones without."""
  if dropout_key is None or cfg.lora_dropout == 0:
    return (None,) * n
  return tuple(jax.random.split(jax.random.fold_in(dropout_key, 0x10a), n))


class EncoderBlock(nnx.Module):
  """Self-attention then MLP, each a residual branch: post-norm (BERT) or pre-norm."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    ka, km = jax.random.split(key)
    self.cfg = cfg
    self.attn = Attention(cfg, ka)
    self.attn_norm = Norm(cfg)
    self.mlp = MLP(cfg, km)
    self.mlp_norm = Norm(cfg)

  def __call__(self, x_btd: jax.Array, positions_bt: jax.Array, segments_bt: jax.Array | None,
               dropout_key: jax.Array | None = None, with_weights: bool = False):
    k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    la, lm = lora_keys(dropout_key, self.cfg, 2)
    post = self.cfg.norm_position == 'post'
    a_btd, _, weights = self.attn(x_btd if post else self.attn_norm(x_btd), positions_bt, segments_bt,
                                  with_weights=with_weights, lora_key=la)
    x_btd = x_btd + dropout(a_btd, self.cfg.dropout, k1)
    if post:
      x_btd = self.attn_norm(x_btd)
    m_btd = self.mlp(x_btd if post else self.mlp_norm(x_btd), lm)
    x_btd = x_btd + dropout(m_btd, self.cfg.dropout, k2)
    if post:
      x_btd = self.mlp_norm(x_btd)
    return constrain(x_btd, ('act_batch', 'act_length', 'act_embed')), weights


class Encoder(nnx.Module):
  """BERT: embeddings, a stack of bidirectional blocks, the masked-LM head, a first-token classifier."""

  def __init__(self, cfg: ModelConfig, key: jax.Array):
    if cfg.causal:
      raise ValueError('model.arch=encoder needs model.causal=False (bidirectional attention)')
    self.cfg = cfg
    V, d, pd, std = cfg.padded_vocab, cfg.d_model, cfg.param_dtype, cfg.init_std
    k_emb, k_pos, k_type, k_blocks, k_head, k_cls = jax.random.split(key, 6)
    self.embed_vd = padded_vocab_param(k_emb, cfg, (V, d), ('vocab', 'embed'), 0)
    if cfg.positions == 'learned':  # BERT; rope is applied inside attention instead
      self.pos_td = param(k_pos, (cfg.max_seq_len, d), (None, 'embed'), std, pd)
    if cfg.type_vocab_size:
      self.type_td = param(k_type, (cfg.type_vocab_size, d), (None, 'embed'), std, pd)
    # Post-norm normalises the embeddings (BERT's embeddings LayerNorm); pre-norm the final output.
    self.embed_norm = Norm(cfg)
    self.blocks = stack(cfg.n_layers, k_blocks, lambda k: EncoderBlock(cfg, k))
    # Masked-LM head: transform (dense, activation, norm), then the tied embeddings plus a bias.
    self.w_mlm_dd = param(k_head, (d, d), ('embed', 'embed_out'), std, pd)
    self.b_mlm_d = param(k_head, (d,), ('embed_out',), None, pd)
    self.mlm_norm = Norm(cfg)
    self.b_vocab_v = param(k_head, (V,), ('vocab',), None, pd)
    if not cfg.tie_embeddings:
      self.head_dv = padded_vocab_param(k_head, cfg, (d, V), ('embed', 'vocab'), 1)
    if cfg.num_labels:  # fine-tuning's classifier on the first token ([CLS])
      self.w_cls_dc = param(k_cls, (d, cfg.num_labels), ('embed', None), std, pd)
      self.b_cls_c = param(k_cls, (cfg.num_labels,), (None,), None, pd)

  def __call__(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None,
               segments_bt: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
    """Masked-LM logits [b, t, padded_vocab] in float32."""
    return self.head(self.trunk(tokens_bt, positions_bt, segments_bt, dropout_key=dropout_key).hidden_btd)

  def hidden(self, batch: dict[str, jax.Array], dropout_key: jax.Array | None = None) -> jax.Array:
    """Final hidden states [b, t, d] of a batch ('inputs', optional 'positions', 'segments', 'types')."""
    if batch.get('branches') is not None:
      raise ValueError('an encoder scores no shared-context branches (they are a causal decoder\'s device)')
    return self.trunk(batch['inputs'], batch.get('positions'), batch.get('segments'), types_bt=batch.get('types'),
                      dropout_key=dropout_key).hidden_btd

  def trunk(self, tokens_bt: jax.Array, positions_bt: jax.Array | None = None, segments_bt: jax.Array | None = None,
            *, types_bt: jax.Array | None = None, dropout_key: jax.Array | None = None,
            collect: tuple[str, ...] = (), embeds_btd: jax.Array | None = None) -> TrunkOutput:
    """Embeddings and blocks; hidden states [b, t, d].

    tokens_bt: int ids [b, t]. positions_bt: position inside its document (default
    0..t-1). segments_bt: document id per token for packed rows (0 = padding: it attends
    to nothing real and nothing real attends to it). types_bt: token type (sentence A = 0,
    B = 1), default 0. collect: 'residuals' and/or 'attention', as the decoder's trunk.
    embeds_btd (interpretability, ``llm/interp``): replaces the word-embedding lookup
    (tokens_bt may then be None); positions and token types are still added (and the
    sum normed, post-norm).
    """
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    b, t = (tokens_bt if embeds_btd is None else embeds_btd).shape[:2]
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x_btd = embed_tokens(self.embed_vd, tokens_bt, dt) if embeds_btd is None else embeds_btd.astype(dt)
    if cfg.positions == 'learned':
      x_btd = x_btd + embed_tokens(self.pos_td, positions_bt, dt)
    if cfg.type_vocab_size:
      x_btd = x_btd + embed_tokens(self.type_td, jnp.zeros((b, t), jnp.int32) if types_bt is None else types_bt, dt)
    post = cfg.norm_position == 'post'
    if post:
      x_btd = self.embed_norm(x_btd)
    emb_key, layers_key = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
    x_btd = constrain(dropout(x_btd, cfg.dropout, emb_key), ('act_batch', 'act_length', 'act_embed'))
    with_weights = 'attention' in collect

    def body(block, x_btd, key):
      x_btd, weights = block(x_btd, positions_bt, segments_bt, key, with_weights)
      return x_btd, (x_btd if 'residuals' in collect else None, weights)

    x_btd, (residuals, weights) = run_stack(self.blocks, cfg, x_btd, layer_keys(layers_key, cfg.n_layers), body,
                                            cfg.n_layers)
    if not post:
      x_btd = self.embed_norm(x_btd)
    return TrunkOutput(x_btd, None, residuals, weights)

  def head(self, x_btd: jax.Array) -> jax.Array:
    """Hidden states [b, t, d] -> masked-LM logits [b, t, padded_vocab] in float32, padding rows masked."""
    cfg, dt = self.cfg, x_btd.dtype
    h_btd = jnp.einsum('btd,de->bte', x_btd, self.w_mlm_dd[...].astype(dt)) + self.b_mlm_d[...].astype(dt)
    h_btd = self.mlm_norm(_ACTIVATIONS[cfg.mlp](h_btd))
    if cfg.tie_embeddings:
      logits_btv = jnp.einsum('btd,vd->btv', h_btd, self.embed_vd[...].astype(dt))
    else:
      logits_btv = jnp.einsum('btd,dv->btv', h_btd, self.head_dv[...].astype(dt))
    logits_btv = logits_btv + self.b_vocab_v[...].astype(dt)
    logits_btv = constrain(logits_btv, ('act_batch', 'act_length', 'act_vocab'))
    return mask_padded_vocab(logits_btv.astype(jnp.float32), cfg.vocab_size)

  def classify(self, x_btd: jax.Array) -> jax.Array:
    """Class logits [b, c] in float32 from the first token's hidden state (model.num_labels > 0)."""
    first_bd = x_btd[:, 0]
    return (first_bd @ self.w_cls_dc[...].astype(x_btd.dtype) + self.b_cls_c[...]).astype(jnp.float32)
