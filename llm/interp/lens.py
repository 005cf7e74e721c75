"""The logit lens (nostalgebraist, 2020) of any model: decoders (llama, gpt2), encoders (bert)
and the decoder side of encoder-decoders (t5).

Each layer's residual stream (its block's output) goes through the model's own final
norm and output head, as if the layers above it were skipped. The norm is applied to
each layer's residual with that residual's own statistics (RMS, or mean and variance
for LayerNorm), exactly as the final layer's output is normed; so the last layer's lens
is the model's own distribution. Per architecture:

  decoder          final_norm, then the unembedding: the next token after each layer.
  encoder (bert)   post-norm blocks end in a LayerNorm, so a block's output is already
                   normed and "the final norm" is the masked-LM head's own: its transform
                   (dense, activation, LayerNorm), then the tied unembedding plus the
                   vocabulary bias (``Encoder.head``); a pre-norm encoder's final norm
                   (``embed_norm``) comes first. The token at each position.
  encoder_decoder  the decoder's layers through dec_norm and the head (T5 v1.0's tied
                   unembedding scaled by d_model^-0.5, as ``EncoderDecoder.head`` does):
                   the next token after each decoder layer, attending to the full encoder.
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

from llm.interp.common import InterpError, Params, Tokens, inputs, model_for, token_labels


@dataclasses.dataclass
class Lens:
  """What ``logit_lens`` returns (numpy arrays; l layers, t positions, k top tokens)."""

  top_ids_ltk: np.ndarray  # int32: the k most likely tokens after each layer (a BERT's: at the position)
  top_logprobs_ltk: np.ndarray  # float32: their log-probabilities
  targets_t: np.ndarray  # int32: the token scored at each position (-1: none)
  target_logprobs_lt: np.ndarray  # float32: its log-probability after each layer (nan where targets_t is -1)
  logprobs_ltv: np.ndarray | None  # float32 [l, t, padded_vocab], only with full=True


def logit_lens(graphdef: nnx.GraphDef, params: Params, tokens: Tokens, targets: Tokens | None = None, *,
               top_k: int = 5, full: bool = False, dec_tokens: Tokens | None = None,
               types: Tokens | None = None) -> Lens:
  """Log-probabilities after every layer of one prompt.

  targets: the token scored at each position [t] (-1 = none). Default: a decoder's the
  prompt's own next token (none at the last position); an encoder's (bert) the token at
  the position itself (pass the original tokens at [MASK] positions to score them); a
  T5's the next token of ``dec_tokens``, the decoder's input [t] (``tokens`` is then the
  encoder's input, and the lens reads the decoder's layers). types: a BERT prompt's token
  types. Layers are read one at a time, so memory holds one [t, V] slice unless ``full``
  asks for all of them.
  """
  model = model_for(graphdef, params, 'logit_lens')
  cfg = model.cfg
  x = inputs(model, tokens, dec_tokens, types)
  read_bt = x['dec_tokens'] if cfg.arch == 'encoder_decoder' else x['tokens']
  t = read_bt.shape[1]
  if targets is None:
    if cfg.arch == 'encoder':
      targets_t = np.asarray(read_bt[0]).astype(np.int32)
    else:
      targets_t = np.concatenate([np.asarray(read_bt[0, 1:]), [-1]]).astype(np.int32)
  else:
    targets_t = np.asarray(targets, np.int32)
    if targets_t.shape != (t,) or targets_t.min() < -1 or targets_t.max() >= cfg.vocab_size:
      raise InterpError(f'targets must be [t={t}] token ids in 0..{cfg.vocab_size - 1} or -1 (none), '
                        f'got shape {targets_t.shape}')
  if not 1 <= top_k <= cfg.vocab_size:
    raise InterpError(f'top_k must be in 1..{cfg.vocab_size}, got {top_k}')
  ids, top, chosen, full_ltv = _lens(graphdef, params, x, jnp.asarray(targets_t), top_k, full)
  chosen = np.where(targets_t >= 0, np.asarray(chosen), np.nan).astype(np.float32)
  return Lens(np.asarray(ids), np.asarray(top), targets_t, chosen, None if full_ltv is None else np.asarray(full_ltv))


def residuals_and_readout(model, x: dict):
  """(each layer's residual [l, 1, t, d], the map from a residual to logits) of the model's own
  trunk outputs and modules (see the module docstring)."""
  arch = model.cfg.arch
  if arch == 'decoder':
    residuals_lbtd = model.trunk(x['tokens'], collect=('residuals',)).residuals_lbtd
    return residuals_lbtd, lambda x_btd: model.head(model.final_norm(x_btd))
  if arch == 'encoder':
    residuals_lbtd = model.trunk(x['tokens'], types_bt=x.get('types'), collect=('residuals',)).residuals_lbtd
    if model.cfg.norm_position == 'post':  # each block ends normed; the head's transform holds the last norm
      return residuals_lbtd, model.head
    return residuals_lbtd, lambda x_btd: model.head(model.embed_norm(x_btd))
  memory = model.memory(model.encode(x['tokens']).hidden_btd)
  residuals_lbtd = model.decode(x['dec_tokens'], memory, collect=('residuals',)).residuals_lbtd
  return residuals_lbtd, lambda x_btd: model.head(model.dec_norm(x_btd))


@functools.partial(jax.jit, static_argnames=('graphdef', 'top_k', 'full'))
def _lens(graphdef, params, x, targets_t, top_k, full):
  model = nnx.merge(graphdef, params)
  residuals_lbtd, readout = residuals_and_readout(model, x)

  def layer(x_btd):
    logprobs_tv = jax.nn.log_softmax(readout(x_btd)[0], axis=-1)
    top, ids = jax.lax.top_k(logprobs_tv, top_k)
    chosen = jnp.take_along_axis(logprobs_tv, jnp.maximum(targets_t, 0)[:, None], axis=-1)[:, 0]
    return ids.astype(jnp.int32), top, chosen, (logprobs_tv if full else None)

  return jax.lax.map(layer, residuals_lbtd)


def plot_logit_lens(lens: Lens, tokens_text: Sequence[str] | None = None,
                    id_text: Callable[[int], str] | None = None) -> Figure:
  """Heatmap, layers up and positions across, of the target's probability after each layer
  (the top token's where there is no target); ``id_text`` writes the top token in each cell.
  The positions are a T5's decoder input's."""
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
