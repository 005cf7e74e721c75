"""train.py end to end on the smoke config: outputs, resume equivalence, pre-emption, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from configs import default  # noqa: E402
from llm.checkpoint import CheckpointMismatch  # noqa: E402
from llm.run import NonFiniteLoss  # noqa: E402

DETERMINISTIC = ('train_loss', 'val_loss', 'grad_norm', 'param_norm', 'update_norm', 'learning_rate')


# Every run here builds the same smoke model: with the compilation cache (tests/conftest.py) its
# init, train, eval and sampling programs are compiled once, not once per run.
pytestmark = pytest.mark.usefixtures('compile_cache')


def smoke(**train_overrides):
  c = default.get_config('smoke=True')
  c.train.decay_steps = 6  # the schedule must not depend on where a run stops
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def restore_params(workdir, step):
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  return ocp.PyTreeCheckpointer().restore(path)['params']


def test_smoke_run_writes_metrics_checkpoints_and_sample(tmp_path, capsys):
  wd = str(tmp_path / 'run')
  last = train.run(smoke(), wd)
  rows = read_metrics(wd)
  assert [r['step'] for r in rows] == [1, 2, 3, 4, 5, 6]
  for r in rows:
    assert {'step', 'train_loss', 'learning_rate', 'tokens_per_sec'} <= set(r)
  assert 'val_loss' in rows[2] and 'val_loss' in rows[5] and 'val_loss' not in rows[0]
  assert rows[-1]['train_loss'] < rows[0]['train_loss']
  assert last['step'] == 6
  assert sorted(os.listdir(os.path.join(wd, 'checkpoints'))) == ['3', '6']
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(wd))
  out = capsys.readouterr().out
  sample = open(os.path.join(wd, 'sample.txt')).read()
  assert sample.startswith('ROMEO:') and len(sample) > len('ROMEO:')
  assert '--- sample after 6 steps' in out
  # The footprint ledger: every phase charged, metrics rows carrying the totals so far, one summary line.
  with open(os.path.join(wd, 'footprint.json')) as f:
    fp = json.load(f)
  assert all(fp['phases'][p]['seconds'] > 0 for p in ('compilation', 'training', 'evaluation', 'checkpointing'))
  assert fp['energy_kwh'] == pytest.approx(sum(p['energy_kwh'] for p in fp['phases'].values()))
  assert fp['co2e_kg'] == pytest.approx(fp['energy_kwh'] * fp['intensity_g_per_kwh'] / 1e3)
  assert [(r['program'], r['start_step'], r['end_step']) for r in fp['runs']] == [('train.py', 0, 6)]
  energy = [r['energy_kwh'] for r in rows]
  assert all(0 < a <= b for a, b in zip(energy, energy[1:])) and energy[-1] <= fp['energy_kwh']
  assert all(r['co2e_kg'] > 0 for r in rows)
  assert 'footprint: ' in out and 'kWh' in out and f'-> {wd}/footprint.json' in out


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  """An uninterrupted smoke run (checkpoints at steps 3 and 6) that other runs are compared with."""
  full = str(tmp_path_factory.mktemp('full') / 'run')
  train.run(smoke(), full)
  return full


def test_interrupted_then_resumed_run_matches_uninterrupted(tmp_path, full_run):
  full, part = full_run, str(tmp_path / 'part')
  # Interrupted at step 4: lines for step 4 exist but the last checkpoint is step 3.
  train.run(smoke(steps=4, checkpoint_every=3), part)
  os.rename(os.path.join(part, 'checkpoints', '4'), os.path.join(tmp_path, 'discarded'))
  train.run(smoke(), part)  # resumes from step 3
  a, b = read_metrics(full), read_metrics(part)
  assert [r['step'] for r in b] == [1, 2, 3, 4, 5, 6]
  for ra, rb in zip(a, b):
    for k in DETERMINISTIC:
      if k in ra:
        assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (ra['step'], k)
  # The resumed run continues the ledger: both processes listed, their energy summed.
  with open(os.path.join(part, 'footprint.json')) as f:
    fp = json.load(f)
  assert [(r['start_step'], r['end_step']) for r in fp['runs']] == [(0, 4), (3, 6)]
  assert fp['energy_kwh'] == pytest.approx(sum(r['energy_kwh'] for r in fp['runs']))
  assert b[-1]['energy_kwh'] > fp['runs'][0]['energy_kwh']  # the totals in metrics.jsonl include the first run
  pa, pb = restore_params(full, 6), restore_params(part, 6)
  import jax
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), pa, pb))
  assert max(diffs) < 1e-6


@pytest.mark.parametrize('damage', ['truncated', 'flipped_bit'])
def test_damaged_newest_checkpoint_is_set_aside_and_the_one_before_resumed(tmp_path, capsys, damage, full_run):
  import shutil
  full = full_run  # checkpoints at steps 3 and 6
  wd = tmp_path / 'run'
  shutil.copytree(full, wd)
  files = [p for p in (wd / 'checkpoints' / '6' / 'state').rglob('*') if p.is_file()]
  data_file = max(files, key=lambda p: p.stat().st_size)  # the parameters and optimizer state
  blob = bytearray(data_file.read_bytes())
  if damage == 'truncated':
    data_file.write_bytes(bytes(blob[:len(blob) // 2]))
  else:  # same size, reads without error: only the recorded checksums can tell
    blob[len(blob) // 2] ^= 0x01
    data_file.write_bytes(bytes(blob))
  capsys.readouterr()
  train.run(smoke(), str(wd))
  out = capsys.readouterr().out
  assert f'checkpoint step 6 of {wd}/checkpoints is unusable' in out, out
  assert f'moved it to {wd}/unusable_checkpoints/6' in out
  assert 'steps 3..6' in out  # resumed from the newest intact checkpoint
  assert (wd / 'unusable_checkpoints' / '6' / 'state').is_dir()  # kept, not deleted
  import jax
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))),
                                       restore_params(full, 6), restore_params(str(wd), 6)))
  assert max(diffs) < 1e-6  # and it ends where the undamaged run ended


def test_when_no_checkpoint_restores_nothing_is_moved(tmp_path, full_run):
  """Every checkpoint failing is not taken for damage (a changed config fails them all alike):
  the run stops with one message and leaves them where they are."""
  import shutil
  from llm.checkpoint import CheckpointCorrupt
  wd = tmp_path / 'run'
  shutil.copytree(full_run, wd)
  for step in ('3', '6'):
    files = [p for p in (wd / 'checkpoints' / step / 'state').rglob('*') if p.is_file()]
    data_file = max(files, key=lambda p: p.stat().st_size)
    data_file.write_bytes(data_file.read_bytes()[:100])
  with pytest.raises(CheckpointCorrupt, match=r'no checkpoint of .* can be restored \(the newest, step 6'):
    train.run(smoke(), str(wd))
  assert sorted(os.listdir(wd / 'checkpoints')) == ['3', '6'] and not (wd / 'unusable_checkpoints').exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
  wd = str(tmp_path / 'run')
  train.run(smoke(steps=3), wd)
  c = smoke()
  c.model.d_model = 32
  with pytest.raises(CheckpointMismatch, match='d_model: checkpoint=64 config=32'):
    train.run(c, wd)


def test_nan_loss_stops_with_the_step_and_leaves_no_checkpoint_after_it(tmp_path):
  wd = str(tmp_path / 'run')
  c = smoke(lr=1e30, warmup_steps=0, grad_clip=0.0)
  with pytest.raises(NonFiniteLoss, match=r'at step [23]\b'):
    train.run(c, wd)
  ckpts = os.listdir(os.path.join(wd, 'checkpoints')) if os.path.exists(os.path.join(wd, 'checkpoints')) else []
  assert not [s for s in ckpts if s.isdigit()]


def test_batch_not_divisible_by_data_parallel_size(tmp_path):
  c = smoke(batch_size=8, accum_steps=3)
  with pytest.raises(ValueError, match='not divisible by the data-parallel size'):
    train.run(c, str(tmp_path / 'run'))


def test_command_line_prints_one_message_for_bad_input(tmp_path):
  (tmp_path / 'empty.txt').write_text('')
  cmd = [sys.executable, os.path.join(ROOT, 'train.py'), '--config=' + os.path.join(ROOT, 'configs/default.py:smoke=True'),
         '--workdir=' + str(tmp_path / 'run'), f'--config.data.sources={tmp_path}/empty.txt']
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
  assert 'Traceback' not in out.stdout + out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and 'empty.txt' in errors[0] and 'empty' in errors[0]


def test_sigterm_saves_and_exits_cleanly_then_resumes(tmp_path, capsys, compile_cache):
  wd = str(tmp_path / 'run')
  # decay_steps as smoke() sets it: the schedule does not depend on where a run stops, and the
  # process runs the train step the in-process runs compiled (loaded from compile_cache).
  cmd = [sys.executable, os.path.join(ROOT, 'train.py'), '--config=' + os.path.join(ROOT, 'configs/default.py:smoke=True'),
         '--workdir=' + wd, '--config.train.decay_steps=6', '--config.train.steps=100000',
         '--config.train.checkpoint_every=100000', '--config.train.log_every=1', '--config.train.eval_every=0']
  env = {**os.environ, **compile_cache}
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
  lines = []
  deadline = time.time() + 300
  for line in proc.stdout:
    lines.append(line)
    if line.startswith('step') and ' 5/' in line.split('loss')[0]:
      proc.send_signal(signal.SIGTERM)
      break
    assert time.time() < deadline, ''.join(lines[-20:])
  rest = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, ''.join(lines) + rest
  assert 'SIGTERM: saved a checkpoint at step' in rest
  saved = [int(s) for s in os.listdir(os.path.join(wd, 'checkpoints')) if s.isdigit()]
  assert len(saved) == 1 and 5 <= saved[0] < 100000, (os.listdir(os.path.join(wd, 'checkpoints')), rest[-2000:])
  # The rerun (the command's smoke config, decay_steps=6, without the other overrides) resumes
  # from there and finishes. It runs in this process, which holds nothing of the first one: a
  # second train.py process would spend ~15 s importing TensorFlow and Orbax again.
  capsys.readouterr()
  last = train.run(smoke(steps=saved[0] + 2), wd)
  out = capsys.readouterr().out
  assert f'steps {saved[0]}..{saved[0] + 2}' in out and last['step'] == saved[0] + 2, out[-3000:]
