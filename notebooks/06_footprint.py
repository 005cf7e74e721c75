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
# # 06 · The energy and carbon footprint of a run, and of runs not yet made
#
# Every `train.py`, `finetune.py` and evaluation run keeps a ledger (`llm/footprint.py`): the
# energy its devices used, by phase (setup, compilation, training, evaluation, checkpointing),
# times the data centre's PUE and the grid's carbon intensity. It is written to
# `<workdir>/footprint.json`, added to every row of `metrics.jsonl` (`energy_kwh`, `co2e_kg`, the
# totals so far) and to TensorBoard, and summarised in one line at the end of the run. A resumed
# run adds to the same ledger.
#
# Energy is **measured** where the hardware lets us (NVIDIA GPUs through NVML, CPU packages through
# Linux RAPL) and otherwise comes from a documented **power model**: the device's power from a table
# with its source, times the time the chips were held (accelerators) or this process's CPU time
# (CPUs). `footprint.json` says which applied and why. Here we read the ledger of the smoke run
# that notebooks 01-05 share, then project the footprint of large runs with
# `python -m llm.footprint estimate`.

# %%
# %matplotlib inline
import json
import os
import sys

ROOT = os.getcwd() if os.path.isdir('llm') else os.path.dirname(os.getcwd())
sys.path[:0] = [ROOT, os.path.join(ROOT, 'notebooks')]
import _shared
import matplotlib.pyplot as plt

from llm import footprint

# %% [markdown]
# ## The ledger of a training run
#
# The smoke checkpoint's workdir (trained now if no notebook has trained it yet) holds its
# `footprint.json`.

# %%
workdir = _shared.smoke_checkpoint()
path = _shared.require(os.path.join(workdir, 'footprint.json'),
                       f'train the smoke checkpoint again: delete {_shared.rel(workdir)} and rerun this notebook')
with open(path) as f:
  fp = json.load(f)
print(json.dumps(fp['method'], indent=2))
print(f"{fp['energy_kwh'] * 1e3:.3f} Wh x PUE {fp['pue']} -> {fp['co2e_kg'] * 1e3:.3f} g CO2e at "
      f"{fp['intensity_g_per_kwh']:g} g/kWh ({fp['region']})")

# %% [markdown]
# On this machine there is no RAPL (a virtual machine exposes no powercap counters), so the host
# CPU's energy is its power per busy hardware thread times the CPU time the run used; the
# `fallbacks` entry says why. Where each second and joule went:

# %%
phases = {k: v for k, v in fp['phases'].items() if v['seconds'] > 0}
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
a.barh(list(phases), [v['seconds'] for v in phases.values()], color='tab:blue')
a.set_xlabel('seconds')
b.barh(list(phases), [v['energy_kwh'] * 1e3 for v in phases.values()], color='tab:green')
b.set_xlabel('Wh (x PUE)')
fig.suptitle('smoke run: time and energy by phase')
fig.tight_layout()

# %% [markdown]
# On CPU, compilation is a large share of a short run: the first step traces and compiles the
# train step. On an accelerator the same table tells how much of a job's energy went to
# evaluation and checkpoints rather than training.
#
# `metrics.jsonl` carries the running totals, so the energy curve sits beside the loss curve:

# %%
with open(os.path.join(workdir, 'metrics.jsonl')) as f:
  rows = [json.loads(line) for line in f]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot([r['step'] for r in rows], [r['energy_kwh'] * 1e3 for r in rows], marker='.')
ax.set_xlabel('step')
ax.set_ylabel('energy so far (Wh)')
ax.set_title('energy_kwh in metrics.jsonl')
fig.tight_layout()

# %% [markdown]
# To count a run for another grid or data centre, set `--config.footprint.region=FRA` (an ISO
# code or country name of `python -m llm.footprint regions`), `--config.footprint.pue=1.1`, or
# your provider's own figure with `--config.footprint.intensity=<gCO2e/kWh>`. An unknown region
# is one clear error that lists the known ones:

# %%
try:
  footprint.grid_intensity('Atlantis')
except footprint.FootprintError as e:
  print(str(e)[:240], '...')

# %% [markdown]
# ## The same run on other grids
#
# The carbon of the same energy differs by a factor of twenty between grids (Ember's 2023
# intensities, shipped in `llm.footprint.REGIONS` with their source):

# %%
regions = ['NOR', 'FRA', 'GBR', 'USA', 'DEU', 'CHN', 'IND']
grams = [fp['energy_kwh'] * footprint.grid_intensity(r)[0] for r in regions]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(regions, grams, color='tab:gray')
ax.set_ylabel('g CO2e')
ax.set_title('the smoke run on other grids')
fig.tight_layout()

# %% [markdown]
# ## Projecting a planned run
#
# `python -m llm.footprint estimate` turns a plan into time, energy and carbon: training FLOPs
# (from `llm.perf`'s count for a model of the size table, or 6 x parameters per token) over the
# chips' peak times the MFU you expect (a fraction, or a workdir whose `metrics.jsonl` measured
# it), times the chips' power. First, a check against a published figure: Patterson et al. (2021)
# put GPT-3's training at 1,287 MWh and 552 t CO2e (10,000 V100s at 24.6 TFLOP/s each, 14.8 days,
# 330 W per processor with its share of the host, PUE 1.1, 429 gCO2e/kWh).

# %%
gpt3 = dict(params=175e9, tokens=300e9, device='v100', chips=10000, mfu=24.6 / 125, pue=1.1, intensity=429)
for label, watts in (("the V100's 300 W datasheet power", 0.0), ("Patterson et al.'s 330 W per processor", 330.0)):
  e = footprint.estimate(**gpt3, watts=watts)
  print(f'{label}: {e.seconds / 86400:.1f} days, {e.energy_kwh / 1e3:,.0f} MWh ({e.energy_kwh / 1e3 / 1287 - 1:+.1%}), '
        f'{e.co2e_kg / 1e3:,.0f} t CO2e ({e.co2e_kg / 1e3 / 552 - 1:+.1%})')

# %% [markdown]
# With the datasheet power alone the estimate lands 9% low: the published figure also counts the
# host's share. Now a plan of our own: a 7B Llama-style model on 2 trillion tokens, on different
# accelerators, at the 45% MFU this project measured for a 1B model on an H200 (README). The TPU
# v5e/v5p/v6e powers are estimates (Google publishes none; `python -m llm.footprint devices` says
# how each was derived), so their bars are marked.

# %%
plans = [('h100', 1024), ('h200', 1024), ('tpu-v5p', 1024), ('tpu-v6e', 1024)]
est = [footprint.estimate(size='7b', tokens=2e12, device=d, chips=n, mfu=0.45, pue=1.1, region='USA') for d, n in plans]
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
labels = [f'{d}{"*" if "estimate" in footprint.DEVICES[d].source else ""}' for d, _ in plans]
a.bar(labels, [e.seconds / 86400 for e in est], color='tab:blue')
a.set_ylabel('days on 1,024 chips')
b.bar(labels, [e.co2e_kg / 1e3 for e in est], color='tab:green')
b.set_ylabel('t CO2e (USA grid, PUE 1.1)')
fig.suptitle('7B on 2T tokens at 45% MFU (* power estimated)')
fig.tight_layout()
for (d, _), e in zip(plans, est):
  print(f'{d:8s} {e.seconds / 86400:5.1f} days  {e.energy_kwh / 1e3:6.0f} MWh  {e.co2e_kg / 1e3:6.1f} t CO2e')

# %% [markdown]
# The same command line, for the record:
#
# ```bash
# python -m llm.footprint estimate --size=7b --tokens=2e12 --device=tpu-v5p --chips=1024 --mfu=0.45 --region=USA
# ```
#
# What the ledger does not count: host memory, storage and network, cooling beyond the PUE, and
# the hardware's embodied carbon. Power-model figures for accelerators assume the chips draw their
# rated power while held, an upper bound; measured NVML figures replace it on NVIDIA GPUs.
