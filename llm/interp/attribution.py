"""Attributions of one output: direct logit attribution of a decoder's (llama, gpt2) heads and
MLPs; integrated gradients of a decoder or an encoder (bert). Neither covers T5, and direct
logit attribution not BERT either (``llm.interp.common`` says why).

Direct logit attribution: the final residual stream at a position is a sum of parts,
the input embeddings (token, plus learned positions for gpt2), every attention head's
output (its slice of w_o applied to its values), each layer's attention output bias,
and every MLP's output. The final norm is linear in its input once its statistics are
fixed, so with the statistics of the final residual frozen (the standard convention,
e.g. TransformerLens) each part's direct effect on the logit difference is

  ((part - mean(part)) / sigma) * scale . (u[target] - u[baseline])     LayerNorm
  (part / rms) * scale . (u[target] - u[baseline])                     RMSNorm

with u the unembedding and sigma, rms the final residual's. The parts plus the norm's
bias term sum exactly (up to rounding) to the model's own logit difference. The
baseline is a second token or, by default, the mean unembedding over the vocabulary
(the target's logit minus the mean logit). Direct effects only: a head's influence
through later layers is not counted (use ``llm.interp.patching`` for that).

Integrated gradients (Sundararajan et al., 2017): the log-probability of a target token
at a position, attributed to the input token embeddings by integrating its gradient
along the straight path from a baseline (zero embeddings by default) to the prompt's
embeddings. Learned positions (gpt2, bert) and BERT's token types are added inside the
model on every point of the path (and BERT's embedding LayerNorm applied to the sum), so
they are part of the function, not of the input. On BERT the output is log p(target) from
the masked-LM head at ``position``, typically a [MASK]; every token, before and after it,
can take part.

Zero embeddings are a degenerate baseline for models that add nothing to the token
embeddings (llama: no learned positions, no token types):
the first norm's input is then exactly zero, so along the path its output jumps from 0
to full scale within alpha ~ sqrt(norm_eps) / rms(embedding) (and each later norm does
the same even closer to 0; measured on the smoke model: between alpha 1e-6 and 1e-3).
Uniform steps miss that jump entirely (completeness error 0.42 on a difference of 0.41 at
256 steps), so ``spacing='auto'`` places the steps log-uniformly in alpha from 1e-8 to 1
there (error 1e-3 at 64 steps) and uniformly otherwise (gpt2, bert).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from matplotlib.figure import Figure

from llm.interp.common import InterpError, Params, Tokens, index, inputs, model_for, prompt, token_id, token_labels
from llm.models.layers import embed_tokens


# ----------------------------------------------------------------------------- direct logit attribution


@dataclasses.dataclass
class DirectAttribution:
  """What ``direct_logit_attribution`` returns: each part's direct effect on the logit difference."""

  embed: float  # token embedding (plus learned positions)
  heads_ln: np.ndarray  # float32 [l, n]: each attention head
  attn_bias_l: np.ndarray  # float32 [l]: each layer's attention output bias (zero without biases)
  mlp_l: np.ndarray  # float32 [l]: each MLP (its output bias included)
  norm_bias: float  # the final LayerNorm's bias term (0 for RMSNorm)
  total: float  # the sum of all the above
  logit_diff: float  # the model's own logit(target) - logit(baseline or mean), which total reproduces
  residual_error: float  # max |embeddings + heads + biases + MLPs - final residual| over d (a self-check)
  target: int
  baseline: int | None  # None: the mean over the vocabulary
  position: int


def direct_logit_attribution(graphdef: nnx.GraphDef, params: Params, tokens: Tokens, target: int, *,
                             position: int = -1, baseline: int | None = None) -> DirectAttribution:
  """Direct effect of every head and MLP on logit(target) - logit(baseline) at ``position``
  (default the last; negative counts from the end). See the module docstring for the convention."""
  cfg = model_for(graphdef, params, 'direct_logit_attribution').cfg
  tokens_bt = prompt(tokens, cfg)
  position = index(position, tokens_bt.shape[1], 'position')
  target = token_id(target, cfg, 'target')
  base = -1 if baseline is None else token_id(baseline, cfg, 'baseline')
  out = jax.device_get(_dla(graphdef, params, tokens_bt, position, target, max(base, 0), baseline is None))
  return DirectAttribution(float(out['embed']), out['heads'], out['attn_bias'], out['mlp'], float(out['norm_bias']),
                           float(out['total']), float(out['logit_diff']), float(out['residual_error']),
                           target, baseline, position)


def embeddings(model, tokens_bt: jax.Array) -> jax.Array:
  """The residual stream before the first block [b, t, d]: token embeddings plus learned positions."""
  dt = jnp.dtype(model.cfg.dtype)
  x_btd = embed_tokens(model.embed_vd, tokens_bt, dt)
  if model.cfg.positions == 'learned':
    x_btd = x_btd + model.pos_td[: tokens_bt.shape[1]].astype(dt)[None]
  return x_btd


def unembedding(model) -> jax.Array:
  """The unembedding [d, padded_vocab] (the embedding's transpose when tied)."""
  return model.embed_vd[...].T if model.cfg.tie_embeddings else model.head_dv[...]


@functools.partial(jax.jit, static_argnames=('graphdef', 'mean'))
def _dla(graphdef, params, tokens_bt, position, target, base, mean):
  """Position, target and baseline are traced (one program for all of them); ``mean``: baseline is the mean."""
  model = nnx.merge(graphdef, params)
  cfg = model.cfg
  out = model.trunk(tokens_bt, collect=('residuals', 'heads', 'mlp'))
  f32 = lambda a: a.astype(jnp.float32)
  at = lambda a, axis: jax.lax.dynamic_index_in_dim(a, position, axis, keepdims=False)
  heads_lnd = f32(at(out.heads_lbtnd[:, 0], 1))
  mlp_ld = f32(at(out.mlp_lbtd[:, 0], 1))
  embed_d = f32(at(embeddings(model, tokens_bt)[0], 0))
  l = cfg.n_layers
  bias_ld = (jnp.broadcast_to(f32(model.blocks.attn.b_o_d[...]), (l, cfg.d_model)) if cfg.use_bias
             else jnp.zeros((l, cfg.d_model)))
  final_d = f32(at(out.residuals_lbtd[-1, 0], 0))
  residual_error = jnp.abs(embed_d + heads_lnd.sum((0, 1)) + bias_ld.sum(0) + mlp_ld.sum(0) - final_d).max()

  w_dv = f32(unembedding(model))
  u_d = w_dv[:, target] - (w_dv[:, :cfg.vocab_size].mean(-1) if mean else w_dv[:, base])
  norm = model.final_norm
  # The final residual's statistics, frozen: every part is centred (LayerNorm) and divided by the same number.
  if cfg.norm == 'layer':
    centre = lambda x: x - x.mean(-1, keepdims=True)
    inv = jax.lax.rsqrt(jnp.square(centre(final_d)).mean() + norm.eps)
  else:
    centre = lambda x: x
    inv = jax.lax.rsqrt(jnp.square(final_d).mean() + norm.eps)
  v_d = inv * f32(norm.scale[...]) * u_d
  effect = lambda x: centre(x) @ v_d
  norm_bias = f32(norm.bias[...]) @ u_d if cfg.norm == 'layer' else jnp.zeros(())
  parts = dict(embed=effect(embed_d), heads=effect(heads_lnd), attn_bias=effect(bias_ld), mlp=effect(mlp_ld))
  total = parts['embed'] + parts['heads'].sum() + parts['attn_bias'].sum() + parts['mlp'].sum() + norm_bias
  logits_v = model.head(jax.lax.dynamic_slice_in_dim(out.hidden_btd, position, 1, axis=1))[0, 0]
  logit_diff = logits_v[target] - (logits_v[:cfg.vocab_size].mean() if mean else logits_v[base])
  return dict(parts, norm_bias=norm_bias, total=total, logit_diff=logit_diff, residual_error=residual_error)


def plot_direct_attribution(dla: DirectAttribution) -> Figure:
  """Heads as a [layer, head] heatmap beside a bar per layer for the MLPs (and embeddings, biases)."""
  l, n = dla.heads_ln.shape
  fig = Figure(figsize=(4.0 + 0.5 * n + 0.4 * l, 1.5 + 0.45 * l))
  ax_h, ax_m = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[max(n, 2), max(l, 3) + 2]))
  lim = float(np.abs(dla.heads_ln).max()) or 1.0
  im = ax_h.imshow(dla.heads_ln, cmap='RdBu', vmin=-lim, vmax=lim, origin='lower', aspect='auto')
  ax_h.set_xticks(range(n))
  ax_h.set_yticks(range(l))
  ax_h.set_xlabel('head')
  ax_h.set_ylabel('layer')
  ax_h.set_title('heads')
  fig.colorbar(im, ax=ax_h, fraction=0.05)
  names = ['embed'] + [f'mlp{i}' for i in range(l)] + ['attn bias', 'norm bias']
  values = [dla.embed, *dla.mlp_l, float(dla.attn_bias_l.sum()), dla.norm_bias]
  ax_m.bar(range(len(values)), values, color=['tab:blue' if v >= 0 else 'tab:red' for v in values])
  ax_m.set_xticks(range(len(values)), names, rotation=90, fontsize=8)
  ax_m.axhline(0, color='black', lw=0.5)
  ax_m.set_title('other parts')
  base = 'mean' if dla.baseline is None else str(dla.baseline)
  fig.suptitle(f'direct logit attribution: logit[{dla.target}] - logit[{base}] at position {dla.position} '
               f'= {dla.logit_diff:.3f}', fontsize=9)
  fig.tight_layout()
  return fig


# ----------------------------------------------------------------------------- integrated gradients


@dataclasses.dataclass
class IntegratedGradients:
  """What ``integrated_gradients`` returns."""

  attributions_t: np.ndarray  # float32 [t]: each input token's attribution, summed over d
  attributions_td: np.ndarray  # float32 [t, d]: per embedding coordinate
  f_input: float  # log p(target) at position on the prompt
  f_baseline: float  # ... on the baseline embeddings
  completeness_error: float  # |sum(attributions_t) - (f_input - f_baseline)|
  target: int
  position: int
  steps: int
  rule: str  # 'midpoint' or 'trapezoid'
  spacing: str  # 'uniform' or 'log'


def integrated_gradients(graphdef: nnx.GraphDef, params: Params, tokens: Tokens, target: int, *,
                         position: int = -1, baseline_td: jax.Array | None = None, steps: int = 64,
                         batch: int | None = None, rule: Literal['midpoint', 'trapezoid'] = 'midpoint',
                         spacing: Literal['auto', 'uniform', 'log'] = 'auto',
                         types: Tokens | None = None) -> IntegratedGradients:
  """Integrated gradients of log p(target at ``position``) w.r.t. the token embeddings: a decoder's
  next token given the prompt up to ``position``, an encoder's (bert) masked-LM prediction at
  ``position`` given the whole prompt (``types``: its token types, default all 0).

  baseline_td: embeddings [t, d] at the path's start (default zeros). steps: Riemann
  steps along the path (midpoint: ``steps`` gradients; trapezoid: ``steps + 1``),
  evaluated ``batch`` points at a time (default all in one batch). spacing: the steps'
  knots in alpha, 'uniform' or 'log' (0, then log-uniform from 1e-8 to 1); 'auto' is
  'log' for a zero baseline of a model that adds neither learned positions nor token
  types to the embeddings (see the module docstring) and 'uniform' otherwise. The
  completeness error measures how well the steps approximate the path integral.
  """
  model = model_for(graphdef, params, 'integrated_gradients')
  cfg = model.cfg
  x = inputs(model, tokens, types=types)
  tokens_bt, types_bt = x['tokens'], x.get('types')
  t = tokens_bt.shape[1]
  position = index(position, t, 'position')
  target = token_id(target, cfg, 'target')
  if steps < 1:
    raise InterpError(f'steps must be >= 1, got {steps}')
  if spacing == 'auto':
    spacing = 'log' if baseline_td is None and cfg.positions != 'learned' and not cfg.type_vocab_size else 'uniform'
  if spacing == 'uniform':
    knots = np.linspace(0.0, 1.0, steps + 1)
  elif spacing == 'log':
    knots = np.concatenate([[0.0], np.geomspace(1e-8, 1.0, steps)])
  else:
    raise InterpError(f"spacing must be 'auto', 'uniform' or 'log', got {spacing!r}")
  widths = np.diff(knots)
  if rule == 'midpoint':  # one gradient per step, at its middle
    alphas, weights = (knots[1:] + knots[:-1]) / 2, widths
  elif rule == 'trapezoid':  # one per knot, each weighted by half of its two neighbouring steps
    alphas, weights = knots, (np.pad(widths, (0, 1)) + np.pad(widths, (1, 0))) / 2
  else:
    raise InterpError(f"rule must be 'midpoint' or 'trapezoid', got {rule!r}")
  if baseline_td is None:
    baseline_td = jnp.zeros((t, cfg.d_model), jnp.float32)
  elif tuple(baseline_td.shape) != (t, cfg.d_model):
    raise InterpError(f'baseline_td must be [t={t}, d={cfg.d_model}], got shape {tuple(baseline_td.shape)}')
  batch = min(batch or len(alphas), len(alphas))
  pad = -len(alphas) % batch  # padded points carry weight 0, so every chunk has one shape (one compile)
  alphas, weights = np.pad(alphas, (0, pad)), np.pad(weights, (0, pad))
  input_td = _embed(graphdef, params, tokens_bt)
  grads_td = jnp.zeros((t, cfg.d_model), jnp.float32)
  for i in range(0, len(alphas), batch):
    grads_td = grads_td + _path_grads(graphdef, params, input_td, baseline_td, jnp.asarray(alphas[i:i + batch]),
                                      jnp.asarray(weights[i:i + batch], jnp.float32), position, target, types_bt)
  attr_td = np.asarray((input_td - baseline_td) * grads_td)
  f_in, f_base = np.asarray(_logprob(graphdef, params, jnp.stack([input_td, baseline_td]).astype(jnp.float32),
                                     position, target, types_bt))
  attr_t = attr_td.sum(-1)
  error = abs(float(attr_t.sum()) - float(f_in - f_base))
  return IntegratedGradients(attr_t, attr_td, float(f_in), float(f_base), error, target, position, steps, rule,
                             spacing)


@functools.partial(jax.jit, static_argnames='graphdef')
def _embed(graphdef, params, tokens_bt):
  model = nnx.merge(graphdef, params)
  return embed_tokens(model.embed_vd, tokens_bt, jnp.float32)[0]


def _f(model, embeds_btd, position, target, types_bt=None):
  """log p(target) at ``position`` for each row of embeddings: [b] (position and target may be traced;
  types_bt [1, t]: a BERT's token types)."""
  extra = {} if types_bt is None else dict(types_bt=jnp.broadcast_to(types_bt, embeds_btd.shape[:2]))
  hidden_btd = model.trunk(None, embeds_btd=embeds_btd, **extra).hidden_btd
  hidden_b1d = jax.lax.dynamic_slice_in_dim(hidden_btd, position, 1, axis=1)
  logprobs_bv = jax.nn.log_softmax(model.head(hidden_b1d)[:, 0], axis=-1)
  return jax.lax.dynamic_index_in_dim(logprobs_bv, target, axis=1, keepdims=False)


@functools.partial(jax.jit, static_argnames='graphdef')
def _logprob(graphdef, params, embeds_btd, position, target, types_bt=None):
  return _f(nnx.merge(graphdef, params), embeds_btd, position, target, types_bt)


@functools.partial(jax.jit, static_argnames='graphdef')
def _path_grads(graphdef, params, input_td, baseline_td, alphas_b, weights_b, position, target, types_bt=None):
  """Sum over the batch's path points of weight * gradient [t, d] (rows are independent, so
  the gradient of the rows' sum holds each row's own gradient)."""
  model = nnx.merge(graphdef, params)
  points_btd = baseline_td + alphas_b[:, None, None] * (input_td - baseline_td)
  grads_btd = jax.grad(lambda e: _f(model, e, position, target, types_bt).sum())(points_btd)
  return jnp.einsum('b,btd->td', weights_b, grads_btd.astype(jnp.float32))


def plot_integrated_gradients(ig: IntegratedGradients, tokens_text: Sequence[str] | None = None) -> Figure:
  """Bar chart of each input token's attribution."""
  t = ig.attributions_t.shape[0]
  labels = token_labels(tokens_text, t)
  fig = Figure(figsize=(2.0 + 0.4 * t, 3.0))
  ax = fig.add_subplot()
  ax.bar(range(t), ig.attributions_t, color=['tab:blue' if a >= 0 else 'tab:red' for a in ig.attributions_t])
  ax.axhline(0, color='black', lw=0.5)
  ax.set_xticks(range(t), labels, rotation=90, fontsize=8)
  ax.set_ylabel('attribution')
  ax.set_title(f'integrated gradients of log p({ig.target}) at position {ig.position}: '
               f'{ig.f_input - ig.f_baseline:.3f} (completeness error {ig.completeness_error:.1e})', fontsize=9)
  fig.tight_layout()
  return fig
