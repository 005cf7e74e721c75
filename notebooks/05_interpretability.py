# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Looking inside the smoke model
#
# `llm/interp/` reads a decoder checkpoint and one prompt's token ids and returns NumPy results,
# each with a `plot_*` function that draws a matplotlib figure. Everything comes from the model's
# own trunk (`collect=`, `embeds_btd=`, `patch=`), never from a copy of the forward pass.
#
# We take one question through five tools. The smoke checkpoint of notebook 01 is a byte-level
# model that after 300 steps knows spelling statistics: after "th" it expects "e". **How does the
# "t" one position back reach the prediction?**
#
# 1. attention maps — where each position looks;
# 2. the logit lens — what each layer would predict if it were the last;
# 3. direct logit attribution — which heads and MLPs write the answer's logit;
# 4. integrated gradients — which input tokens the prediction depends on;
# 5. activation patching — which (layer, position) carries the difference between a clean and a
#    corrupted prompt.
#
# Set `LLM_NOTEBOOK_CKPT=runs/default` to run the same on the default model (README,
# *Interpretability*).

# %%
# %matplotlib inline
import os
import sys

# The repository root, whether Jupyter runs this from notebooks/ (its default) or from the root.
ROOT = os.getcwd() if os.path.isdir('llm') else os.path.dirname(os.getcwd())
sys.path[:0] = [ROOT, os.path.join(ROOT, 'notebooks')]
import _shared

# %%
import numpy as np
from IPython.display import display

from llm import interp

subject = interp.load(_shared.checkpoint())  # float32, plain XLA attention (the weights are needed)
g, p, tok, cfg = subject.graphdef, subject.params, subject.tokenizer, subject.cfg
print(f'step {subject.step}: {cfg.family}, {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, '
      f'context {cfg.max_seq_len}')


def encode(text: str) -> list[int]:
  return ([tok.bos_id] if tok.add_bos else []) + list(tok.encode(text))


def show(ids) -> list[str]:
  """Axis labels: each token's text (BOS named)."""
  return ['<bos>' if i == tok.bos_id else tok.decode([int(i)]) for i in ids]


clean = encode('Thou art a villain, and th')
corrupted = encode('Thou art a villain, and ih')  # same length; one token differs, two from the end
print(len(clean), 'tokens:', show(clean))

# %% [markdown]
# ## 1. Attention maps
#
# `attention_maps` gives every layer's and head's weights, [layers, heads, queries, keys]. Each row
# sums to one and nothing looks ahead (causal). Below, for the last position, how much each head
# attends to the "t" one position back; then the map of the head that attends to it most.

# %%
maps = np.asarray(interp.attention_maps(g, p, clean))
to_t = maps[:, :, -1, -2]  # [layers, heads]: last query -> the "t"
print('attention from the last position to the "t", per layer (rows) and head (columns):')
print(np.round(to_t, 2))
layer, head = np.unravel_index(np.argmax(to_t), to_t.shape)
interp.plot_attention(maps, show(clean), layer=int(layer), head=int(head))

# %% [markdown]
# ## 2. The logit lens
#
# Each layer's residual stream, put through the final norm and the unembedding, as if the model
# stopped there. The colour is the probability of the actual next token (the top token where there
# is none, at the end); each cell is labelled with that layer's top guess. The last layer is the
# model's own distribution.

# %%
lens = interp.logit_lens(g, p, clean, top_k=3)
display(interp.plot_logit_lens(lens, show(clean), id_text=lambda i: tok.decode([i])))
answer = int(lens.top_ids_ltk[-1, -1, 0])  # the model's prediction after the prompt
wrong = int(interp.logit_lens(g, p, corrupted, top_k=1).top_ids_ltk[-1, -1, 0])  # ... after the corrupted one
print('next-token guesses after each layer, last position:',
      [[(tok.decode([int(i)]), round(float(np.exp(lp)), 3)) for i, lp in zip(ids, lps)]
       for ids, lps in zip(lens.top_ids_ltk[:, -1], lens.top_logprobs_ltk[:, -1])])
print(f'clean prompt -> {tok.decode([answer])!r}; corrupted prompt -> {tok.decode([wrong])!r}')

# %% [markdown]
# ## 3. Direct logit attribution
#
# The final residual is a sum: embeddings, every head's output, every MLP's output (and biases).
# With the final norm's statistics frozen, each part's direct contribution to
# logit(answer) − logit(wrong) follows; the parts add up to the model's own logit difference
# (checked: `residual_error`). "Direct" means through the residual stream to the output only: a
# head whose output later MLPs read gets no credit here for that.

# %%
dla = interp.direct_logit_attribution(g, p, clean, answer, baseline=wrong if wrong != answer else None)
print(f'parts sum to {dla.total:.4f}; the model says {dla.logit_diff:.4f}; '
      f'max |parts - final residual| = {dla.residual_error:.1e}')
print(f'embeddings {dla.embed:+.3f}, all heads {dla.heads_ln.sum():+.3f} '
      f'(per layer {np.round(dla.heads_ln.sum(1), 3)}), all MLPs {dla.mlp_l.sum():+.3f} '
      f'(per layer {np.round(dla.mlp_l, 3)})')
interp.plot_direct_attribution(dla)

# %% [markdown]
# ## 4. Integrated gradients
#
# Attribution of log p(answer) to each input token's embedding: gradients averaged along the
# straight path from a baseline (zero embeddings) to the actual ones, times the difference
# (Sundararajan et al., 2017). The attributions should add up to f(input) − f(baseline)
# (*completeness*); how far they miss measures the Riemann sum's error, so it is printed.
# From zero embeddings a rotary model's residual stream is exactly zero, so the steps are spaced
# logarithmically near the baseline (`spacing='auto'`). 64 steps here (the README measures 1e-4
# at 256 steps on the default model).

# %%
ig = interp.integrated_gradients(g, p, clean, answer, steps=64)
print(f'log p(answer): input {ig.f_input:.3f}, baseline {ig.f_baseline:.3f}; attributions sum to '
      f'{ig.attributions_t.sum():.3f}; completeness error {ig.completeness_error:.4f} '
      f'({ig.steps} steps, {ig.rule} rule, {ig.spacing} spacing)')
interp.plot_integrated_gradients(ig, show(clean))

# %% [markdown]
# ## 5. Activation patching
#
# Run the corrupted prompt, but replace one block's output at one position with the clean run's,
# and measure how much of logit(answer) − logit(wrong) comes back, for every (layer, position) —
# all in one compiled program. If the "t" matters, block 0's output at its position should
# restore the answer; and if a later block's attention carries it to the last position, that
# block's output should matter only at the last position.

# %%
patching = interp.activation_patching(g, p, clean, corrupted, answer, wrong=wrong)
print(f'{patching.metric}: clean {patching.clean_metric:.3f}, corrupted {patching.corrupted_metric:.3f}')
print('largest effects (layer, position, token, effect):')
for idx in np.argsort(-np.abs(patching.effect_lt), axis=None)[:4]:
  l, t = np.unravel_index(idx, patching.effect_lt.shape)
  print(f'  block {l}, position {t} {show(clean)[t]!r}: {patching.effect_lt[l, t]:+.3f}')
interp.plot_patching(patching, show(clean))

# %% [markdown]
# ## Reading it together
#
# On the smoke model the pieces agree. Patching says the difference lives at the "t" after block 0
# and only at the last position after the last block, so the last block's attention moves it
# across; the attention maps say which heads look back at the "t" from the last position (with
# modest weights: this head mostly watches the word boundary before it); integrated gradients put
# the most weight on the last two tokens; and direct attribution splits the logit difference
# between the last layer's heads and the MLPs that read what attention brought. This is a two-layer
# model doing bigram-and-a-bit statistics; the same five calls on a real checkpoint
# (`LLM_NOTEBOOK_CKPT=runs/default`) are where it gets interesting.
