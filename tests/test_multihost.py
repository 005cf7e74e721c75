"""Two processes (jax.distributed, 4 simulated CPU devices each) train on prepared shards
exactly as one process with 8 devices does.

The runs happen in tests/multihost_worker.py, started when the tests are collected
(tests/conftest.py), so they run beside the tests before these.
"""

import json

import pytest


@pytest.fixture(scope='module')
def result(worker_output):
  returncode, stdout, stderr = worker_output('multihost_worker.py', timeout=900)
  assert returncode == 0, (stdout + stderr)[-4000:]
  return json.loads(stdout.strip().splitlines()[-1])


def test_two_processes_log_the_losses_of_one(result):
  single, multi = result['single'], result['multi']
  assert [r['step'] for r in multi] == [r['step'] for r in single] == [1, 2, 3, 4]
  for a, b in zip(single, multi):
    for key in ('train_loss', 'grad_norm', 'param_norm', 'val_loss'):
      if key in a:  # gloo sums across processes in another order than one process does: float rounding
        assert b[key] == pytest.approx(a[key], rel=2e-6), (a['step'], key)
  assert 'val_loss' in multi[-1]


def test_two_processes_end_with_the_parameters_of_one(result):
  assert result['param_max_abs_diff'] < 1e-5 * max(1.0, result['param_max_abs']), result['param_max_abs_diff']


def test_each_process_wrote_its_part_of_the_checkpoint(result):
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(result['checkpoint_files'])
  # Only the first process writes metrics and prints the sample.
  assert sum('--- sample after' in log for log in result['multi_logs']) == 1
