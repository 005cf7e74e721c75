"""Run by tests/test_multihost.py in a subprocess: train.py as two processes against one.

Prepares a small corpus into token shards, trains the smoke model for 4 steps once as one
process with 8 simulated CPU devices and once as two processes (``jax.distributed`` with a
localhost coordinator, gloo collectives) with 4 devices each, both on the same mesh, then
compares their metrics and final parameters. Prints one JSON object.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

STEPS = 4


def train(workdir: str, tokens: str, devices: int, env: dict) -> subprocess.Popen:
  cmd = [sys.executable, 'train.py', '--config=configs/default.py:smoke=True', f'--workdir={workdir}',
         f'--config.data.sources=tokens:{tokens}', f'--config.cpu_devices={devices}',
         f'--config.train.steps={STEPS}', f'--config.train.checkpoint_every={STEPS}', '--config.sample.num_tokens=4']
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
  out, _ = proc.communicate(timeout=900)
  if proc.returncode:
    raise SystemExit(f'train.py failed ({proc.returncode}):\n{out[-4000:]}')
  return out


def main():
  from llm.data import prepare
  tmp = tempfile.mkdtemp(prefix='llm-multihost-')
  with open(os.path.join(ROOT, 'data', 'tinyshakespeare.txt'), encoding='utf-8') as f:
    text = f.read(200_000)
  with open(os.path.join(tmp, 'plays.txt'), 'w', encoding='utf-8') as f:
    f.write(text)
  tokens = os.path.join(tmp, 'tokens')
  prepare.run(prepare.PrepareConfig(sources=os.path.join(tmp, 'plays.txt'), output=tokens, runner='local',
                                    split='tail', val_fraction=0.1), log=lambda *a: None)
  # -O0: compiling is most of these runs; both sides compile alike.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'
  single = os.path.join(tmp, 'single')
  finish(train(single, tokens, 8, env))
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  multi = os.path.join(tmp, 'multi')
  procs = [train(multi, tokens, 4, {**env, 'JAX_COORDINATOR_ADDRESS': f'localhost:{port}', 'JAX_NUM_PROCESSES': '2',
                                     'JAX_PROCESS_ID': str(i)}) for i in range(2)]
  logs = [finish(p) for p in procs]

  import jax
  import numpy as np
  from llm.checkpoint import load_params

  def rows(workdir):
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      return [json.loads(line) for line in f]

  params = [load_params(w)[2] for w in (single, multi)]
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in
             zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])))
  print(json.dumps({'single': rows(single), 'multi': rows(multi), 'param_max_abs_diff': diff,
                    'param_max_abs': max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree.leaves(params[0])),
                    'multi_logs': [log[-3000:] for log in logs],
                    'checkpoint_files': sorted(os.listdir(os.path.join(multi, 'checkpoints', str(STEPS), 'state')))}))


if __name__ == '__main__':
  main()
