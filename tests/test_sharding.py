"""Sharded loss, gradients and updates equal the single-device ones; parameters really split.

The checks run in a subprocess with 8 simulated CPU devices (tests/sharding_worker.py),
since the device count is fixed when JAX's CPU backend starts. It is started as soon as the
tests are collected (tests/conftest.py), so it runs beside the tests before these.
"""

import json

import pytest


@pytest.fixture(scope='module')
def result(worker_output):
  returncode, stdout, stderr = worker_output('sharding_worker.py')
  assert returncode == 0, stderr[-4000:]
  return json.loads(stdout.strip().splitlines()[-1])


MESHES = ['data8', 'fsdp4_tensor2', 'data2_fsdp2_tensor2']


@pytest.mark.parametrize('mesh', MESHES)
def test_loss_and_grads_match_single_device(result, mesh):
  r = result[mesh]
  assert abs(r['loss'] - result['ref_loss']) < 1e-5 * max(1.0, abs(result['ref_loss']))
  assert r['grad_max_abs_diff'] < 1e-5 * max(1.0, r['grad_max_abs']), r['grad_max_abs_diff']
  assert r['param_max_abs_diff'] < 1e-5, r['param_max_abs_diff']


@pytest.mark.parametrize('mesh', MESHES)
def test_parameters_are_laid_out_as_the_rules_say(result, mesh):
  layout, expected = result[mesh]['layout'], result[mesh]['expected']

  def walk(lay, exp, path=()):
    if 'spec' in lay and 'shard' in lay:
      spec = lay['spec'] + [None] * (len(lay['shape']) - len(lay['spec']))
      want = exp + [None] * (len(lay['shape']) - len(exp))
      assert spec == want, (path, spec, want)
      yield path, lay
      return
    for k in lay:
      yield from walk(lay[k], exp[k], path + (k,))

  leaves = dict(walk(layout, expected))
  assert leaves
  sizes = {'data8': {'data': 8}, 'fsdp4_tensor2': {'fsdp': 4, 'tensor': 2},
           'data2_fsdp2_tensor2': {'data': 2, 'fsdp': 2, 'tensor': 2}}[mesh]
  for path, lay in leaves.items():
    for dim, (axis, full, shard) in enumerate(zip(lay['spec'] + [None] * 9, lay['shape'], lay['shard'])):
      axes = [axis] if isinstance(axis, str) else (axis or [])
      div = 1
      for a in axes:
        div *= sizes.get(a, 1)
      assert shard == full // div, (path, dim, lay)
  if mesh != 'data8':  # with fsdp and tensor axes the big matrices must really be split
    q = layout['blocks']['attn']['w_q_dnh']
    assert q['spec'][1:3] == ['fsdp', 'tensor'], q
    assert q['shard'][1] * sizes['fsdp'] == q['shape'][1] and q['shard'][2] * 2 == q['shape'][2]
    mlp = layout['blocks']['mlp']['w_in_df']
    assert mlp['spec'][1:] == ['fsdp', 'tensor'], mlp
    emb = layout['embed_vd']
    assert emb['spec'] == ['tensor', 'fsdp'], emb
  else:  # pure data parallelism replicates parameters
    assert all(all(a is None for a in lay['spec']) for lay in leaves.values())


def test_mesh_that_does_not_divide_devices_is_a_clear_error(result):
  msg = result['bad_mesh_error']
  assert msg and '8 are present' in msg and 'data*fsdp*tensor = 8' in msg
