"""Issue 14's GPU check in one script: MFU, compile time and peak memory of the default train
step for the ~1B size at sequence 2048, and whether the ~7B size trains on one GPU with remat.

  python -m benchmarks.gpu_speed --out=$OUT/gpu_speed.json            # one H200, ~8 minutes
  python -m benchmarks.gpu_speed --only=1b_default,1b_scan,1b_b24      # the 1b cases: ~4 min, at most 7
  python -m benchmarks.gpu_speed --only=7b_remat,7b_remat_scan         # the 7b cases: ~5 min, at most 7.5

Under a 10-minute limit per command (the project's lent GPU machines), run the two groups as
two commands on the same H200; the JSON is rewritten after every case, so a command cut
short still returns what finished.

Each case is ``python -m llm.bench`` in its own process (so one that runs out of memory
does not take the others with it), with a time limit; the table gives step time, tokens/s,
MFU (FLOPs counted as llm/perf.py does), compile time and peak device memory. It imports
only what llm.bench does (jax, flax, optax, numpy): it runs on accelerator hosts without
TensorFlow, CLU or ml_collections.

Cases: ``1b_default`` is what ``train.py`` runs for that size (unrolled layers, cuDNN
attention, bfloat16, no remat); ``1b_scan`` the scanned layers that were the default before
(45% MFU on an H200); ``1b_b24`` a larger batch; ``7b_*`` the 6.7B Llama-2 shape with
full remat at batch 2 (an H200's 141 GB holds float32 parameters, gradients and Adam's two
moments, 108 GB, plus rematerialised activations; an H100's 80 GB does not, and those
cases then report 'out of device memory'), unrolled and scanned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {  # name: (llm.bench arguments, seconds allowed)
    '1b_default': (['--size=1b', '--seq_len=2048', '--batch=16', '--steps=10'], 150),
    '1b_scan': (['--size=1b', '--seq_len=2048', '--batch=16', '--steps=10', '--scan'], 120),
    '1b_b24': (['--size=1b', '--seq_len=2048', '--batch=24', '--steps=10'], 150),
    '7b_remat': (['--size=7b', '--seq_len=2048', '--batch=2', '--steps=4', '--remat=full'], 240),
    '7b_remat_scan': (['--size=7b', '--seq_len=2048', '--batch=2', '--steps=4', '--remat=full', '--scan'], 200),
}


def run_case(name: str, args: list[str], limit: int) -> dict:
  cmd = [sys.executable, '-m', 'llm.bench', '--warmup=2', *args]
  t = time.perf_counter()
  try:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
  except subprocess.TimeoutExpired:
    return {'case': name, 'args': args, 'error': f'over {limit} s'}
  row = {'case': name, 'args': args, 'wall_s': round(time.perf_counter() - t, 1)}
  last = (p.stdout.strip().splitlines() or [''])[-1]
  if p.returncode or not last.startswith('{'):
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    oom = 'RESOURCE_EXHAUSTED' in p.stderr or 'out of memory' in p.stderr.lower()
    return {**row, 'error': 'out of device memory' if oom else ' | '.join(tail)[-400:]}
  return {**row, **json.loads(last)}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--only', default='', help='comma-separated case names (default: all): ' + ', '.join(CASES))
  p.add_argument('--out', default='')
  a = p.parse_args()
  names = [n for n in a.only.split(',') if n] or list(CASES)
  unknown = sorted(set(names) - set(CASES))
  if unknown:
    sys.exit(f'error: unknown case(s) {unknown}; choose from {sorted(CASES)}')
  rows = []
  for name in names:
    args, limit = CASES[name]
    rows.append(run_case(name, args, limit))
    r = rows[-1]
    if 'error' in r:
      print(f'{name:14s} {r["error"]}', flush=True)
    else:
      mfu = 'n/a' if r['mfu'] is None else f'{r["mfu"]:.1%}'
      mem = 'n/a' if r['peak_memory_gib'] is None else f'{r["peak_memory_gib"]:.1f} GiB'
      print(f'{name:14s} {r["device"]}: step {r["step_ms"]:.0f} ms, {r["tokens_per_sec"]:,.0f} tok/s, MFU {mfu}, '
            f'compile {r["compile_s"]:.0f} s, peak memory {mem}', flush=True)
    if a.out:
      from benchmarks import write_json
      write_json({'cases': rows}, a.out)


if __name__ == '__main__':
  main()
