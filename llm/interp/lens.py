"""The logit lens (nostalgebraist, 2020) of a decoder (llama, gpt2 families; encoders and T5 are not covered yet).

Each layer's residual stream (its block's output) goes through the model's own final
norm and unembedding, as if the layers above it were skipped. The norm is applied to
each layer's residual with that residual's own statistics (RMS, or mean and variance
for LayerNorm), exactly as the final layer's output is normed; so the last layer's lens
is the model's own next-token distribution.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from llm.interp.common import InterpError, Params, Tokens, decoder, prompt, token_labels


@dataclasses.dataclass
class Lens:
  """What ``logit_lens`` returns (numpy arrays; l layers, t positions, k top tokens)."""

  top_ids_ltk: np.ndarray  # int32: the k most likely next tokens after each layer
  top_logprobs_ltk: np.ndarray  # float32: their log-probabilities
  targets_t: np.ndarray  # int32: the token scored at each position (-1: none)
  target_logprobs_lt: np.ndarray  # float32: its log-probability after each layer (nan where targets_t is -1)
  logprobs_ltv: np.ndarray | None  # float32 [l, t, padded_vocab], only with full=True


def logit_lens(graphdef: nnx.GraphDef, params: Params, tokens: Tokens, targets: Tokens | None = None, *,
               top_k: int = 5, full: bool = False) -> Lens:
  """Next-token log-probabilities after every layer of one prompt.

  targets: the token scored at each position [t] (-1 = none); default the prompt's own
  next token (none at the last position). Layers are read one at a time, so memory
  holds one [t, V] slice unless ``full`` asks for all of them.
  """
  cfg = decoder(graphdef, params).cfg
  tokens_bt = prompt(tokens, cfg)
  t = tokens_bt.shape[1]
  if targets is None:
    targets_t = np.concatenate([np.asarray(tokens_bt[0, 1:]), [-1]]).astype(np.int32)
  else:
    targets_t = np.asarray(targets, np.int32)
    if targets_t.shape != (t,) or targets_t.min() < -1 or targets_t.max() >= cfg.vocab_size:
      raise InterpError(f'targets must be [t={t}] token ids in 0..{cfg.vocab_size - 1} or -1 (none), '
                        f'got shape {targets_t.shape}')
  if not 1 <= top_k <= cfg.vocab_size:
    raise InterpError(f'top_k must be in 1..{cfg.vocab_size}, got {top_k}')
  ids, top, chosen, full_ltv = _lens(graphdef, params, tokens_bt, jnp.asarray(targets_t), top_k, full)
  chosen = np.where(targets_t >= 0, np.asarray(chosen), np.nan).astype(np.float32)
  return Lens(np.asarray(ids), np.asarray(top), targets_t, chosen, None if full_ltv is None else np.asarray(full_ltv))


@functools.partial(jax.jit, static_argnames=('graphdef', 'top_k', 'full'))
def _lens(graphdef, params, tokens_bt, targets_t, top_k, full):
  model = nnx.merge(graphdef, params)
  residuals_lbtd = model.trunk(tokens_bt, collect=('residuals',)).residuals_lbtd

  def layer(x_btd):
    logprobs_tv = jax.nn.log_softmax(model.head(model.final_norm(x_btd))[0], axis=-1)
    top, ids = jax.lax.top_k(logprobs_tv, top_k)
    chosen = jnp.take_along_axis(logprobs_tv, jnp.maximum(targets_t, 0)[:, None], axis=-1)[:, 0]
    return ids.astype(jnp.int32), top, chosen, (logprobs_tv if full else None)

  return jax.lax.map(layer, residuals_lbtd)


def plot_logit_lens(lens: Lens, tokens_text: Sequence[str] | None = None,
                    id_text: Callable[[int], str] | None = None) -> Figure:
  """Heatmap, layers up and positions across, of the target's probability after each layer
  (the top token's where there is no target); ``id_text`` writes the top token in each cell."""
  l, t, _ = lens.top_ids_ltk.shape
  has_target = lens.targets_t >= 0
  probs_lt = np.where(has_target, np.exp(np.nan_to_num(lens.target_logprobs_lt, nan=-np.inf)),
                      np.exp(lens.top_logprobs_ltk[..., 0]))
  labels = token_labels(tokens_text, t)
  fig = Figure(figsize=(2.0 + 0.6 * t, 1.5 + 0.4 * l))
  ax = fig.add_subplot()
  im = ax.imshow(probs_lt, cmap='magma', vmin=0.0, vmax=1.0, origin='lower', aspect='auto')
  if id_text is not None:
    for i in range(l):
      for j in range(t):
        ax.text(j, i, repr(id_text(int(lens.top_ids_ltk[i, j, 0])))[1:-1][:8], ha='center', va='center',
                fontsize=6, color='white' if probs_lt[i, j] < 0.5 else 'black')
  ax.set_xticks(range(t), labels, rotation=90, fontsize=8)
  ax.set_yticks(range(l), [str(i) for i in range(l)], fontsize=8)
  ax.set_xlabel('position (input token)')
  ax.set_ylabel('layer')
  ax.set_title('logit lens: p(target) per layer' + ('' if has_target.all() else ' (p(top) where no target)'))
  fig.colorbar(im, ax=ax, fraction=0.046)
  fig.tight_layout()
  return fig
