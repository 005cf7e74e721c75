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


def test_data_parallel_cpu_step_sums_all_gradients_in_one_all_reduce(result):
  """On XLA:CPU a data-parallel step reduces one flat vector (trainer._fused_reduction), not
  one all-reduce per parameter (which XLA:CPU neither combines nor overlaps), and still
  equals one device (above); sharded meshes keep the partitioner's collectives."""
  assert result['data8']['all_reduces'] == 1, result['data8']['all_reduces']
  assert result['fsdp4_tensor2']['all_reduces'] > 1


def walk(lay, exp, path=()):
  """(path, layout) of every parameter, checking its spec is the one the rules table gives."""
  if 'spec' in lay and 'shard' in lay:
    spec = lay['spec'] + [None] * (len(lay['shape']) - len(lay['spec']))
    want = exp + [None] * (len(lay['shape']) - len(exp))
    assert spec == want, (path, spec, want)
    yield path, lay
    return
  for k in lay:
    yield from walk(lay[k], exp[k], path + (k,))


def check_shards(leaves, sizes):
  """Each parameter's local shard is its shape divided by the mesh axes its spec names."""
  for path, lay in leaves.items():
    for dim, (axis, full, shard) in enumerate(zip(lay['spec'] + [None] * 9, lay['shape'], lay['shard'])):
      axes = [axis] if isinstance(axis, str) else (axis or [])
      div = 1
      for a in axes:
        div *= sizes.get(a, 1)
      assert shard == full // div, (path, dim, lay)


@pytest.mark.parametrize('arch', ['encoder', 'encoder_decoder'])
def test_encoder_and_encoder_decoder_shard_like_the_decoder(result, arch):
  """BERT's and T5's loss, gradients and one update on fsdp=4 x tensor=2 equal one device, and every
  parameter (embeddings, relative-bias tables, cross-attention, the MLM head) is split as the rules say."""
  r = result['arch'][arch]
  m = r['fsdp4_tensor2']
  assert abs(m['loss'] - r['ref_loss']) < 1e-5 * max(1.0, abs(r['ref_loss']))
  assert m['grad_max_abs_diff'] < 1e-5 * max(1.0, m['grad_max_abs']), m['grad_max_abs_diff']
  assert m['param_max_abs_diff'] < 1e-5, m['param_max_abs_diff']
  leaves = dict(walk(m['layout'], m['expected']))
  check_shards(leaves, {'fsdp': 4, 'tensor': 2})
  blocks = 'blocks' if arch == 'encoder' else 'dec_blocks'
  assert m['layout'][blocks]['attn']['w_q_dnh']['spec'][1:3] == ['fsdp', 'tensor']
  assert m['layout']['embed_vd']['spec'] == ['tensor', 'fsdp']
  if arch == 'encoder_decoder':
    assert m['layout']['dec_blocks']['cross']['w_k_dkh']['spec'][1:3] == ['fsdp', 'tensor']
    assert m['layout']['enc_rel']['b_rel_rn']['spec'] == [None, 'tensor']
  else:
    assert m['layout']['b_vocab_v']['spec'] == ['tensor']


@pytest.mark.parametrize('mesh', MESHES)
def test_parameters_are_laid_out_as_the_rules_say(result, mesh):
  layout, expected = result[mesh]['layout'], result[mesh]['expected']

  leaves = dict(walk(layout, expected))
  assert leaves
  sizes = {'data8': {'data': 8}, 'fsdp4_tensor2': {'fsdp': 4, 'tensor': 2},
           'data2_fsdp2_tensor2': {'data': 2, 'fsdp': 2, 'tensor': 2}}[mesh]
  check_shards(leaves, sizes)
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
