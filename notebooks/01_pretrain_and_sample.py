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
# # 01 · Pre-train a small decoder and sample from it
#
# `train.py` is the pre-training recipe: a Llama-style decoder (`llm/models/decoder.py`) on the
# bundled Tiny Shakespeare with a byte vocabulary, configured by `configs/default.py`. Here we run
# its **smoke** variant — a 0.12M-parameter model on rows of 32 bytes — for 300 steps, which takes
# about half a minute on two CPU cores, then look at what the run wrote: the loss curves in
# `metrics.jsonl`, the end-of-training sample, and fresh samples from the KV-cache decoder.
#
# The same run, on the command line (rerunning it resumes from the newest checkpoint):
#
# ```bash
# python train.py --config=configs/default.py:smoke=True --config.train.steps=300 \
#     --config.train.log_every=25 --config.train.eval_every=50 --config.train.checkpoint_every=300 \
#     --config.sample.num_tokens=24 --workdir=runs/notebooks/smoke
# ```
#
# The full default run (`--config=configs/default.py`, 0.9M parameters, 1,000 steps of 16 × 128
# bytes) takes about 4.5 minutes on 2 cores and reaches a validation loss of 1.50 nats per byte
# (README, *Quickstart*). Notebooks 03-05 study the checkpoint trained here; whichever of them runs
# first trains it (`notebooks/_shared.py`), into `$LLM_NOTEBOOK_RUNS/smoke`
# (default `runs/notebooks/smoke`).

# %%
# %matplotlib inline
import os
import sys

# The repository root, whether Jupyter runs this from notebooks/ (its default) or from the root.
ROOT = os.getcwd() if os.path.isdir('llm') else os.path.dirname(os.getcwd())
sys.path[:0] = [ROOT, os.path.join(ROOT, 'notebooks')]
import _shared

# %% [markdown]
# ## Train (or find the finished run)
#
# `train.py` runs as a subprocess, exactly as on the command line, so its absl flags and one-line
# errors behave as documented. A finished run in the workdir is reused.

# %%
workdir = _shared.smoke_checkpoint()
sorted(os.listdir(workdir))

# %% [markdown]
# The workdir holds `checkpoints/` (Orbax; the final step here), `metrics.jsonl` (one JSON object
# per logged step), the TensorBoard event files, `config.json` (the full resolved config) and
# `sample.txt`.
#
# ## Loss curves
#
# Training loss every 25 steps and validation loss every 50, in nats per byte. A uniform guess
# over the 259 byte-level tokens costs ln 259 ≈ 5.56 nats; the smoke model learns letter and
# word statistics quickly and flattens out near 2.4, far from the default run's 1.50 (a seventh
# of its parameters and a quarter of its context).

# %%
import json

import matplotlib.pyplot as plt
import numpy as np

with open(os.path.join(workdir, 'metrics.jsonl')) as f:
  rows = [json.loads(line) for line in f]
train = [(r['step'], r['train_loss']) for r in rows]
val = [(r['step'], r['val_loss']) for r in rows if 'val_loss' in r]

fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.4))
ax.plot(*zip(*train), label='train loss')
ax.plot(*zip(*val), 'o-', label='validation loss')
ax.axhline(np.log(259), color='gray', ls=':', label='uniform over 259 tokens')
ax.set_xlabel('step')
ax.set_ylabel('nats per byte')
ax.legend()
ax_lr.plot([r['step'] for r in rows], [r['learning_rate'] for r in rows])
ax_lr.set_xlabel('step')
ax_lr.set_ylabel('learning rate (warmup, cosine decay)')
fig.tight_layout()
plt.show()
print(f'final validation loss {val[-1][1]:.3f} nats per byte at step {val[-1][0]}; '
      f'{rows[-1]["tokens_per_sec"]:,.0f} tokens/s at the last logged step')

# %% [markdown]
# ## The end-of-training sample
#
# `train.py` ends by continuing `config.sample.prompt` ("ROMEO:") with temperature 0.8 and top-k 50.

# %%
print(open(os.path.join(workdir, 'sample.txt')).read())

# %% [markdown]
# ## Sampling with the KV-cache decoder
#
# `llm.eval.decoding.generate` left-pads a ragged batch of prompts, prefills a per-layer KV cache
# in one pass and decodes inside one jitted `lax.while_loop`; greedy decoding with the cache equals
# recomputing the whole prefix for every token (tested). `llm.checkpoint.load_params` reads the
# parameters only (no optimizer state) and the tokenizer the run recorded. The smoke model's
# context is 32 tokens, so prompt plus new tokens must fit in 32; longer prompts are cut from the
# left and counted in `truncated`.

# %%
from llm import checkpoint
from llm.eval import decoding
from llm.interp import graphdef_for

cfg, tok, params, step = checkpoint.load_params(workdir)
graphdef = graphdef_for(cfg)  # the model's structure; the weights are `params`
print(f'step {step}: {cfg.param_count():,} parameters, {cfg.n_layers} layers, d_model {cfg.d_model}, '
      f'context {cfg.max_seq_len}, {type(tok).__name__} ({tok.vocab_size} ids)')

texts = ['ROMEO:', 'KING HENRY:\n', 'To be']
prompts = [[tok.bos_id] + list(tok.encode(t)) for t in texts]
for name, kw in [('greedy', dict(temperature=0.0)), ('sampled, temperature 0.8, top-k 50',
                                                     dict(temperature=0.8, top_k=50, seed=0))]:
  gen = decoding.generate(graphdef, cfg, params, prompts, 20, eos_id=tok.eos_id, **kw)
  print(f'--- {name} ({gen.seconds:.2f} s, compilation included; prompts cut to fit: {gen.truncated})')
  for text, new, why in zip(texts, gen.tokens, gen.finish_reasons):
    print(repr(text + tok.decode(new)), f'[{why}]')

# %% [markdown]
# Greedy decoding of an undertrained model falls into loops of its most frequent bytes; sampling
# gives Shakespeare-shaped gibberish. Both are what a 0.12M-parameter model after 300 steps can do.
#
# ## TensorBoard
#
# The same scalars (and the final sample) are in the TensorBoard event files, written by CLU's
# metric writers. Not started here; from the repository root run:

# %%
print(f'tensorboard --logdir {_shared.rel(workdir)}')
