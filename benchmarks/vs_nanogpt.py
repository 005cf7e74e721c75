"""nanoGPT's CPU Shakespeare run against ours, back to back on this machine: wall time (start-up
included) and final validation loss of each, and their ratio.

  # once: nanoGPT's source (../shared/peers/nanoGPT, MIT) with CPU torch in its own venv
  cp -r ../shared/peers/nanoGPT /tmp/nanogpt && cd /tmp/nanogpt
  python3 -m venv venv && venv/bin/pip install "torch==2.13.0+cpu" numpy requests
  cp <repo>/data/tinyshakespeare.txt data/shakespeare_char/input.txt
  venv/bin/python data/shakespeare_char/prepare.py
  # then, from the repository root:
  python -m benchmarks.vs_nanogpt --nanogpt=/tmp/nanogpt --rounds=2 --out=/tmp/vs_nanogpt.json
  python -m benchmarks.vs_nanogpt --nanogpt=/tmp/nanogpt --config.cpu_devices=1   # flags for train.py

Each round runs both, in alternating order (nanoGPT first in odd rounds), as fresh processes
timed from launch to exit: ``python train.py --config=configs/shakespeare_char.py`` in a new
workdir, and nanoGPT's README command for its CPU recipe (``--device=cpu --compile=False
--eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``; ``--log_interval=250`` so that
neither prints every step). Prints the CPU model, every run (ours with the seconds of each phase
from its ``footprint.json``: set-up, compilation, training, evaluation, checkpointing, and what
came before the ledger started), and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANOGPT_ARGS = ['config/train_shakespeare_char.py', '--device=cpu', '--compile=False', '--eval_iters=20',
                '--log_interval=250', '--block_size=64', '--batch_size=12', '--n_layer=4', '--n_head=4',
                '--n_embd=128', '--max_iters=2000', '--lr_decay_iters=2000', '--dropout=0.0']


def timed(cmd: list[str], cwd: str, log: str) -> tuple[float, int]:
  t = time.perf_counter()
  with open(log, 'w') as f:
    code = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
  return time.perf_counter() - t, code


def run_ours(work: str, extra: list[str]) -> dict:
  wd = os.path.join(work, 'ours')
  shutil.rmtree(wd, ignore_errors=True)
  log = os.path.join(work, 'ours.log')
  sec, code = timed([sys.executable, 'train.py', '--config=configs/shakespeare_char.py', f'--workdir={wd}', *extra],
                    ROOT, log)
  val, phases = None, None
  if os.path.exists(os.path.join(wd, 'metrics.jsonl')):
    with open(os.path.join(wd, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    val = next((r['val_loss'] for r in reversed(rows) if 'val_loss' in r), None)
  if os.path.exists(os.path.join(wd, 'footprint.json')):  # where the time went, by phase (llm/footprint.py)
    with open(os.path.join(wd, 'footprint.json')) as f:
      ledger = json.load(f)
    phases = {k: round(v['seconds'], 2) for k, v in ledger['phases'].items()}
    phases['before_ledger'] = round(sec - ledger['seconds'], 2)  # interpreter, imports, config
  return {'who': 'ours', 'seconds': sec, 'returncode': code, 'val_loss': val, 'phases': phases, 'log': log}


def run_nanogpt(work: str, nanogpt: str) -> dict:
  out_dir = os.path.join(work, 'nanogpt_out')
  shutil.rmtree(out_dir, ignore_errors=True)
  log = os.path.join(work, 'nanogpt.log')
  sec, code = timed([os.path.join(nanogpt, 'venv', 'bin', 'python'), 'train.py', *NANOGPT_ARGS,
                     f'--out_dir={out_dir}'], nanogpt, log)
  with open(log) as f:
    vals = re.findall(r'val loss ([0-9.]+)', f.read())
  return {'who': 'nanogpt', 'seconds': sec, 'returncode': code, 'val_loss': float(vals[-1]) if vals else None,
          'log': log}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--nanogpt', required=True, help='nanoGPT checkout with venv/ and prepared shakespeare_char data')
  p.add_argument('--rounds', type=int, default=2)
  p.add_argument('--out', default='')
  a, a.ours_args = p.parse_known_args()  # anything else goes to train.py, e.g. --config.cpu_devices=1
  for need in ('venv/bin/python', 'data/shakespeare_char/train.bin'):
    if not os.path.exists(os.path.join(a.nanogpt, need)):
      sys.exit(f'error: {os.path.join(a.nanogpt, need)} is missing; set nanoGPT up as this script\'s docstring says')
  sys.path.insert(0, ROOT)
  from llm.perf import cpu_model
  print(f'CPU: {cpu_model()}', flush=True)
  work = tempfile.mkdtemp(prefix='vs-nanogpt-')
  runs = []
  for r in range(a.rounds):
    order = (run_nanogpt, run_ours) if r % 2 == 0 else (run_ours, run_nanogpt)
    for fn in order:
      res = fn(work, a.nanogpt) if fn is run_nanogpt else fn(work, a.ours_args)
      res['round'] = r
      runs.append(res)
      print(json.dumps(res), flush=True)
  ours = [x['seconds'] for x in runs if x['who'] == 'ours']
  theirs = [x['seconds'] for x in runs if x['who'] == 'nanogpt']
  ratios = [o / t for o, t in zip(ours, theirs)]
  summary = {'cpu': cpu_model(), 'ours_seconds': ours, 'nanogpt_seconds': theirs,
             'ours_val_loss': [x['val_loss'] for x in runs if x['who'] == 'ours'],
             'nanogpt_val_loss': [x['val_loss'] for x in runs if x['who'] == 'nanogpt'],
             'ratio_per_round': ratios, 'median_ratio': statistics.median(ratios), 'ours_args': a.ours_args}
  print(json.dumps(summary, indent=2))
  if a.out:
    from benchmarks import write_json
    write_json({'summary': summary, 'runs': runs}, a.out)


if __name__ == '__main__':
  main()
