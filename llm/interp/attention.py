"""Attention maps of any model: a decoder's (llama, gpt2) causal self-attention, an encoder's
(bert) bidirectional self-attention, and a T5's three attentions (``kind``)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import jax
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from llm.interp.common import InterpError, Params, Tokens, index, inputs, model_for, token_labels

KINDS = {'decoder': ('self',), 'encoder': ('self',), 'encoder_decoder': ('encoder', 'decoder', 'cross')}


def attention_maps(graphdef: nnx.GraphDef, params: Params, tokens: Tokens, *, dec_tokens: Tokens | None = None,
                   kind: Literal['self', 'encoder', 'decoder', 'cross'] | None = None,
                   types: Tokens | None = None) -> jax.Array:
  """Every layer's and head's attention weights on one prompt: float32 [l, n, queries, keys].

  Decoder (llama, gpt2): [l, n, t, t], row i query position i's distribution over key
  positions 0..i (causal). Encoder (bert): [l, n, t, t] over every position (``types``:
  the token types, default all 0). Encoder-decoder (t5; ``tokens`` the encoder's input
  [s], ``dec_tokens`` the decoder's [t]) by ``kind``: 'encoder' the encoder's
  self-attention [l, n, s, s] (dec_tokens not needed), 'decoder' the decoder's causal
  self-attention [l_dec, n, t, t], 'cross' the decoder's attention to the encoder's
  output [l_dec, n, t, s]. kind None (or 'self') is the only choice for the others.
  """
  model = model_for(graphdef, params, 'attention_maps')
  arch = model.cfg.arch
  if arch != 'encoder_decoder':
    if kind not in (None, 'self'):
      raise InterpError(f"kind={kind!r}: {arch} models have one attention, kind=None or 'self'; 'encoder', "
                        "'decoder' and 'cross' choose among a T5 model's three")
    x = inputs(model, tokens, dec_tokens, types)
    if arch == 'decoder':
      return _attention(graphdef, params, x['tokens'])
    return _encoder_attention(graphdef, params, x)
  if kind not in KINDS[arch]:
    raise InterpError(f"kind={kind!r}: a T5 (encoder_decoder) model has three attentions; pass kind='encoder' (the "
                      "encoder's self-attention [l, n, s, s]), 'decoder' (the decoder's causal self-attention "
                      "[l_dec, n, t, t]) or 'cross' (the decoder's attention to the encoder [l_dec, n, t, s])")
  x = inputs(model, tokens, dec_tokens, types, need_decoder=kind != 'encoder')
  if kind == 'encoder':
    return _t5_encoder_attention(graphdef, params, x['tokens'])
  self_maps, cross_maps = _t5_decoder_attention(graphdef, params, x['tokens'], x['dec_tokens'])
  return self_maps if kind == 'decoder' else cross_maps


@functools.partial(jax.jit, static_argnames='graphdef')
def _attention(graphdef, params, tokens_bt):
  model = nnx.merge(graphdef, params)
  return model.trunk(tokens_bt, collect=('attention',)).attention_lbnts[:, 0]


@functools.partial(jax.jit, static_argnames='graphdef')
def _encoder_attention(graphdef, params, x):
  model = nnx.merge(graphdef, params)
  return model.trunk(x['tokens'], types_bt=x.get('types'), collect=('attention',)).attention_lbnts[:, 0]


@functools.partial(jax.jit, static_argnames='graphdef')
def _t5_encoder_attention(graphdef, params, tokens_bs):
  model = nnx.merge(graphdef, params)
  return model.encode(tokens_bs, collect=('attention',)).attention_lbnts[:, 0]


@functools.partial(jax.jit, static_argnames='graphdef')
def _t5_decoder_attention(graphdef, params, tokens_bs, dec_tokens_bt):
  """(decoder self-attention [l, n, t, t], cross-attention [l, n, t, s]): one program for both kinds."""
  model = nnx.merge(graphdef, params)
  memory = model.memory(model.encode(tokens_bs).hidden_btd)
  out = model.decode(dec_tokens_bt, memory, collect=('attention', 'cross_attention'))
  return out.attention_lbnts[:, 0], out.cross_attention_lbnts[:, 0]


def plot_attention(maps: jax.Array | np.ndarray, tokens_text: Sequence[str] | None, layer: int, head: int, *,
                   key_text: Sequence[str] | None = None) -> Figure:
  """Heatmap of one head's map (from ``attention_maps``: [l, n, queries, keys]), queries down, keys across.

  tokens_text labels the queries, and the keys too unless ``key_text`` is given (a T5
  cross-attention map's keys are the encoder's tokens: pass them as key_text).
  """
  maps = np.asarray(maps)
  if maps.ndim != 4:
    raise InterpError(f'maps must be attention_maps output [l, n, queries, keys], got shape {maps.shape}')
  l, n, t, s = maps.shape
  layer, head = index(layer, l, 'layer'), index(head, n, 'head')
  labels = token_labels(tokens_text, t)
  if key_text is not None:
    key_labels = token_labels(key_text, s, 'key_text')
  elif s == t:
    key_labels = labels
  else:
    key_labels = token_labels(None, s)
  fig = Figure(figsize=(1.5 + 0.35 * s, 1.2 + 0.35 * t))
  ax = fig.add_subplot()
  im = ax.imshow(maps[layer, head], cmap='viridis', vmin=0.0, vmax=1.0)
  ax.set_xticks(range(s), key_labels, rotation=90, fontsize=8)
  ax.set_yticks(range(t), labels, fontsize=8)
  ax.set_xlabel('key')
  ax.set_ylabel('query')
  ax.set_title(f'attention, layer {layer} head {head}')
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  return fig
