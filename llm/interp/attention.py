"""Attention maps of a decoder (llama, gpt2 families; encoders and T5 are not covered yet)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from llm.interp.common import InterpError, Params, Tokens, decoder, index, prompt, token_labels


def attention_maps(graphdef: nnx.GraphDef, params: Params, tokens: Tokens) -> jax.Array:
  """Every layer's and head's attention weights on one prompt: float32 [l, n, t, t].

  Row i of a map is query position i's distribution over key positions 0..i (causal).
  """
  cfg = decoder(graphdef, params).cfg
  return _attention(graphdef, params, prompt(tokens, cfg))


@functools.partial(jax.jit, static_argnames='graphdef')
def _attention(graphdef, params, tokens_bt):
  model = nnx.merge(graphdef, params)
  return model.trunk(tokens_bt, collect=('attention',)).attention_lbnts[:, 0]


def plot_attention(maps: jax.Array | np.ndarray, tokens_text: Sequence[str] | None, layer: int, head: int) -> Figure:
  """Heatmap of one head's map (from ``attention_maps``: [l, n, t, t]), queries down, keys across."""
  maps = np.asarray(maps)
  if maps.ndim != 4 or maps.shape[2] != maps.shape[3]:
    raise InterpError(f'maps must be attention_maps output [l, n, t, t], got shape {maps.shape}')
  l, n, t, _ = maps.shape
  layer, head = index(layer, l, 'layer'), index(head, n, 'head')
  labels = token_labels(tokens_text, t)
  fig = Figure(figsize=(1.5 + 0.35 * t, 1.2 + 0.35 * t))
  ax = fig.add_subplot()
  im = ax.imshow(maps[layer, head], cmap='viridis', vmin=0.0, vmax=1.0)
  ax.set_xticks(range(t), labels, rotation=90, fontsize=8)
  ax.set_yticks(range(t), labels, fontsize=8)
  ax.set_xlabel('key')
  ax.set_ylabel('query')
  ax.set_title(f'attention, layer {layer} head {head}')
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  return fig
