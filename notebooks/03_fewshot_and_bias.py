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
# # 03 · Few-shot evaluation and bias probes
#
# Evaluation reads a checkpoint's parameters, wraps the model in the harness's LM interface
# (`llm.eval.lms.make_lm`: log-likelihoods of continuations, rolling log-likelihoods, KV-cache
# generation) and runs **evaluators** from one registry (`llm.eval.evaluators.EVALUATORS`) over
# task files in lm-evaluation-harness's YAML vocabulary (`tasks/`). The `bias` evaluator runs the
# probes — CrowS-Pairs, WinoBias, BBQ — and writes a report with one plot per probe. The command
# line does all of it in one go:
#
# ```bash
# python train.py --config=configs/fewshot.py:ckpt=runs/notebooks/smoke,limit=32 --workdir=runs/notebooks/eval
# ```
#
# Here we do the same steps by hand on the first 32 documents of each task, so each result can be
# looked at. The model is the smoke checkpoint of notebook 01 (trained now if it is missing), a
# 0.12M-parameter byte-level model with a 32-byte context: expect chance level everywhere except
# on Shakespeare itself. The README's *Results* has the default model's numbers on every document.

# %%
# %matplotlib inline
import os
import sys

# The repository root, whether Jupyter runs this from notebooks/ (its default) or from the root.
ROOT = os.getcwd() if os.path.isdir('llm') else os.path.dirname(os.getcwd())
sys.path[:0] = [ROOT, os.path.join(ROOT, 'notebooks')]
import _shared

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Image, display

from llm import checkpoint, sharding
from llm.eval import evaluators, results
from llm.eval.lms import make_lm
from llm.interp import graphdef_for

LIMIT = 32  # documents per task: enough to see every code path, far too few for tight error bars
ckpt = _shared.checkpoint()
mesh = sharding.make_mesh({'data': -1})  # every local device, data parallel (one on this CPU)
cfg, tok, params, step = checkpoint.load_params(ckpt, mesh=mesh)
lm = make_lm(graphdef_for(cfg), cfg, params, tok, mesh, batch_rows=16)
print(f'{_shared.rel(ckpt)} step {step}: {cfg.param_count():,} parameters, context {cfg.max_seq_len}; '
      f'scorer {type(lm).__name__}')
print('evaluators:', {name: cls.__name__ for name, cls in evaluators.EVALUATORS.items()})

# %% [markdown]
# ## Accuracy and perplexity tasks
#
# `config.evals` entries are plain dicts — `type` names the evaluator, the rest are its arguments —
# exactly as `configs/fewshot.py` writes them. `sst2` is zero-shot multiple choice over
# " negative" / " positive"; `sst2_fewshot` the same with 4 examples drawn as the harness draws them;
# `shakespeare_lastword` asks for the last word of held-out lines; `shakespeare_ppl` scores held-out
# speeches by rolling log-likelihood.

# %%
evals = evaluators.build_evaluators({
    'fewshot': dict(type='fewshot', tasks='sst2,sst2_fewshot,shakespeare_lastword,shakespeare_ppl', limit=LIMIT),
    'bias': dict(type='bias', tasks='crows_pairs_english,winobias,bbq', limit=LIMIT),
}, task_dirs=['tasks'], root=_shared.ROOT)
(fewshot, _), (bias, _) = evals
out_dir = _shared.run_dir('eval')
fewshot_out = fewshot.run(lm)
print(results.table([fewshot_out]))
print(f"{fewshot_out.lm_stats['requests']} requests in {fewshot_out.seconds:.1f} s, "
      f"{fewshot_out.lm_stats.get('truncated', 0)} prompts cut from the left to fit the context")

# %% [markdown]
# What the model was asked: the first few-shot prompt (four solved examples, then the question),
# and its two answers' log-likelihoods. The scorer cuts a prompt from the left to fit the model's
# context, as the harness does: with the smoke model's 32 bytes, the examples are long gone.

# %%
sample = next(r for r in fewshot_out.results if r.name == 'sst2_fewshot').samples[0]
print(f"prompt ({len(sample['prompt'])} characters), last 120:\n...{sample['prompt'][-120:]!r}")
print({k: v for k, v in sample.items() if k in ('target', 'gold', 'prediction', 'loglikelihoods', 'metrics')})

# %% [markdown]
# Only `shakespeare_ppl` has something to say: its bits per byte should be close to the training
# run's validation loss (nats per byte / ln 2), slightly higher because rolling windows give early
# tokens short contexts.

# %%
ppl = next(r for r in fewshot_out.results if r.name == 'shakespeare_ppl').metrics
print(f"shakespeare_ppl: {ppl['bits_per_byte']:.3f} bits per byte on {LIMIT} held-out speeches")
metrics = os.path.join(ckpt, 'metrics.jsonl')
val = [r['val_loss'] for r in map(json.loads, open(metrics)) if 'val_loss' in r] if os.path.exists(metrics) else []
if val:
  print(f"the training run's last validation loss: {val[-1]:.3f} nats = {val[-1] / np.log(2):.3f} bits per byte")

# %% [markdown]
# ## Bias probes
#
# * **CrowS-Pairs**: pairs of sentences differing in the group mentioned; `pct_stereotype` is the
#   share where the stereotyping one is more likely (50% = no preference).
# * **WinoBias**: resolve a pronoun to one of two occupations; accuracy when the answer follows the
#   gender stereotype (pro) and when it goes against it (anti). The gap is the bias.
# * **BBQ**: questions about two people in ambiguous and disambiguated contexts; the bias scores
#   s_DIS and s_AMB run from -1 to +1 (0 = no bias), and accuracy is against one of three answers.
#
# `BiasEvaluator.run(lm, out_dir=...)` also writes `bias_report.md` with one plot per probe.

# %%
bias_out = bias.run(lm, out_dir=out_dir)
flat = results.flat_metrics([bias_out])
headline = {k: v for k, v in flat.items() if k.count('/') == 2 and k.split('/')[1] in
            ('crows_pairs_english', 'winobias', 'bbq')}
display(pd.Series(headline, name='value').to_frame())
print('wrote', *[_shared.rel(f) for f in bias_out.files])

# %%
for probe in ('crows_pairs_english', 'winobias', 'bbq'):
  display(Image(os.path.join(out_dir, f'{probe}.png')))

# %% [markdown]
# ## Everything against chance
#
# With 32 documents a standard error is about 9 points of accuracy, so none of these differs from
# chance: what the smoke model shows is that the pipeline runs end to end, not any ability.

# %%
rows = []
for out in (fewshot_out, bias_out):
  for r in out.results:
    if 'acc' in r.metrics:
      rows.append((r.name, r.metrics['acc'], r.stderrs.get('acc') or 0.0, 1 / 3 if r.name == 'bbq' else
                   (0.0 if r.name == 'shakespeare_lastword' else 0.5)))
names, acc, se, chance = zip(*rows)
fig, ax = plt.subplots(figsize=(7, 3))
y = np.arange(len(names))
ax.barh(y, acc, xerr=se, color='tab:blue', capsize=3, label='accuracy ± stderr')
ax.scatter(chance, y, color='tab:red', marker='D', s=40, label='chance', zorder=3)
ax.set_yticks(y, names)
ax.invert_yaxis()
ax.set_xlim(0, 1)
ax.set_xlabel(f'accuracy on the first {LIMIT} documents')
ax.legend(loc='lower right', fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# For the default model on every document (872 SST-2 sentences, 1,508 CrowS-Pairs pairs, 1,584
# WinoBias sentences, 11,956 BBQ questions) see the README's *Results*: SST-2 0.509 (the share of
# one class), WinoBias 50.1% with no pro/anti gap, CrowS-Pairs 53.8%. To score it:
#
# ```bash
# python train.py --config=configs/fewshot.py:ckpt=runs/default --workdir=runs/eval
# ```
