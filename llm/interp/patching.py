"""Activation patching (causal tracing; Meng et al., 2022) on a decoder (llama, gpt2 families;
encoders and T5 are refused: their trunks take no patch, see ``llm.interp.common``).

Run a corrupted prompt with one layer's residual stream (its block's output) at one
position replaced by the clean prompt's, and measure how much of the clean behaviour
comes back. All (layer, position) pairs run through one compiled program: the patch's
layer index and position mask are traced inputs, vmapped over a chunk of pairs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from llm.interp.common import InterpError, Params, Tokens, index, model_for, prompt, token_id, token_labels


@dataclasses.dataclass
class Patching:
  """What ``activation_patching`` returns."""

  effect_lt: np.ndarray  # float32 [l, t]: metric(corrupted with (layer, position) patched) - metric(corrupted)
  clean_metric: float
  corrupted_metric: float
  metric: str  # what was measured at the last position


def activation_patching(graphdef: nnx.GraphDef, params: Params, clean: Tokens, corrupted: Tokens, answer: int, *,
                        wrong: int | None = None, batch: int = 64) -> Patching:
  """Patch every (layer, position) of ``corrupted`` with ``clean``'s residual, one at a time.

  Metric at the last position: logit(answer) - logit(wrong) when ``wrong`` is given,
  else log p(answer). batch: (layer, position) pairs per compiled call.
  """
  model = model_for(graphdef, params, 'activation_patching')
  cfg = model.cfg
  clean_bt, corrupted_bt = prompt(clean, cfg, 'clean'), prompt(corrupted, cfg, 'corrupted')
  t = clean_bt.shape[1]
  if corrupted_bt.shape[1] != t:
    raise InterpError(f'clean and corrupted prompts must have the same length (positions are patched one to one); '
                      f'got {t} and {corrupted_bt.shape[1]} tokens')
  answer = token_id(answer, cfg, 'answer')
  wrong_id = -1 if wrong is None else token_id(wrong, cfg, 'wrong')
  l = cfg.n_layers
  clean_res_lbtd, clean_metric = _clean(graphdef, params, clean_bt, answer, wrong_id)
  layers, positions = (a.ravel() for a in np.meshgrid(np.arange(l), np.arange(t), indexing='ij'))
  batch = max(1, min(batch, l * t))
  pad = -len(layers) % batch  # repeats of pair 0, dropped below: every call has one shape
  layers, positions = np.pad(layers, (0, pad)), np.pad(positions, (0, pad))
  metrics = [_patched(graphdef, params, corrupted_bt, clean_res_lbtd, jnp.asarray(layers[i:i + batch]),
                      jnp.asarray(positions[i:i + batch]), answer, wrong_id)
             for i in range(0, len(layers), batch)]
  patched_lt = np.concatenate([np.asarray(m) for m in metrics])[:l * t].reshape(l, t)
  corrupted_metric = float(_metric(model.head(model.trunk(corrupted_bt).hidden_btd[:, -1:])[0, 0], answer, wrong_id))
  name = f'logit[{answer}] - logit[{wrong}]' if wrong is not None else f'log p({answer})'
  return Patching(patched_lt - corrupted_metric, float(clean_metric), corrupted_metric, name)


def patched_logits(graphdef: nnx.GraphDef, params: Params, clean: Tokens, corrupted: Tokens, layer: int,
                   positions: Sequence[int]) -> jax.Array:
  """Logits [t, padded_vocab] of ``corrupted`` with ``layer``'s residual at ``positions`` taken from ``clean``."""
  cfg = model_for(graphdef, params, 'patched_logits').cfg
  clean_bt, corrupted_bt = prompt(clean, cfg, 'clean'), prompt(corrupted, cfg, 'corrupted')
  t = clean_bt.shape[1]
  if corrupted_bt.shape[1] != t:
    raise InterpError(f'clean and corrupted prompts must have the same length; got {t} and {corrupted_bt.shape[1]}')
  layer = index(layer, cfg.n_layers, 'layer')
  mask_t = np.zeros(t, bool)
  mask_t[[index(p, t, 'position') for p in positions]] = True
  clean_res_lbtd, _ = _clean(graphdef, params, clean_bt, 0, -1)
  return _patched_logits(graphdef, params, corrupted_bt, clean_res_lbtd, jnp.asarray(layer), jnp.asarray(mask_t))


def _metric(logits_v, answer, wrong):
  if wrong >= 0:
    return logits_v[answer] - logits_v[wrong]
  return jax.nn.log_softmax(logits_v)[answer]


@functools.partial(jax.jit, static_argnames=('graphdef', 'answer', 'wrong'))
def _clean(graphdef, params, clean_bt, answer, wrong):
  model = nnx.merge(graphdef, params)
  out = model.trunk(clean_bt, collect=('residuals',))
  return out.residuals_lbtd, _metric(model.head(out.hidden_btd[:, -1:])[0, 0], answer, wrong)


@functools.partial(jax.jit, static_argnames='graphdef')
def _patched_logits(graphdef, params, corrupted_bt, clean_res_lbtd, layer, mask_t):
  model = nnx.merge(graphdef, params)
  patch = (layer, mask_t[None], clean_res_lbtd[layer])
  return model.head(model.trunk(corrupted_bt, patch=patch).hidden_btd)[0]


@functools.partial(jax.jit, static_argnames=('graphdef', 'answer', 'wrong'))
def _patched(graphdef, params, corrupted_bt, clean_res_lbtd, layers_p, positions_p, answer, wrong):
  """The metric [p] for each (layer, position) pair, vmapped: one program for every pair."""
  model = nnx.merge(graphdef, params)
  t = corrupted_bt.shape[1]

  def one(layer, position):
    patch = (layer, (jnp.arange(t) == position)[None], clean_res_lbtd[layer])
    hidden_btd = model.trunk(corrupted_bt, patch=patch).hidden_btd
    return _metric(model.head(hidden_btd[:, -1:])[0, 0], answer, wrong)

  return jax.vmap(one)(layers_p, positions_p)


def plot_patching(result: Patching, tokens_text: Sequence[str] | None = None) -> Figure:
  """Heatmap, layers up and positions across, of each patch's change in the metric."""
  l, t = result.effect_lt.shape
  labels = token_labels(tokens_text, t)
  fig = Figure(figsize=(2.0 + 0.5 * t, 1.5 + 0.4 * l))
  ax = fig.add_subplot()
  lim = float(np.abs(result.effect_lt).max()) or 1.0
  im = ax.imshow(result.effect_lt, cmap='RdBu', vmin=-lim, vmax=lim, origin='lower', aspect='auto')
  ax.set_xticks(range(t), labels, rotation=90, fontsize=8)
  ax.set_yticks(range(l), [str(i) for i in range(l)], fontsize=8)
  ax.set_xlabel('patched position (clean token)')
  ax.set_ylabel('patched layer (block output)')
  ax.set_title(f'activation patching: change in {result.metric}\n'
               f'clean {result.clean_metric:.3f}, corrupted {result.corrupted_metric:.3f}', fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  return fig
