"""Run by tests/test_sharding.py in a subprocess with 8 simulated CPU devices.

Compares loss, gradients and one optimizer step on several meshes against one device,
and reports how every parameter is actually laid out: the decoder on three meshes, the
encoder (masked LM) and the encoder-decoder (span corruption) on the fsdp x tensor mesh.
Prints one JSON object.
"""

import os
import sys

# LLVM's -O0 (as in tests/decoding_mesh_worker.py) more than halves XLA:CPU compile times, most of
# this worker's run; the sharded and the single-device programs are compiled alike, and the SPMD
# partitioning under test is the same.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llm import sharding, trainer  # noqa: E402
from llm.data import pack  # noqa: E402
from llm.models import config_for_size  # noqa: E402

MESHES = {'data8': {'data': 8}, 'fsdp4_tensor2': {'fsdp': 4, 'tensor': 2},
          'data2_fsdp2_tensor2': {'data': 2, 'fsdp': 2, 'tensor': 2}}


def arch_batches(rng) -> dict:
  """An encoder's masked-LM batch and an encoder-decoder's span-corruption batch, packed with padding."""
  segments = np.repeat(np.array([[1] * 7 + [2] * 6 + [0] * 3]), 8, 0).astype(np.int32)
  positions = np.where(segments == 2, np.arange(16) - 7, np.arange(16)) * (segments > 0)
  tokens = rng.integers(3, 259, (8, 16)).astype(np.int32)
  mlm = {'inputs': np.where(rng.random((8, 16)) < 0.15, 259, tokens), 'targets': tokens,
         'loss_mask': (rng.random((8, 16)) < 0.3).astype(np.int32), 'positions': positions.astype(np.int32),
         'segments': segments}
  dec = rng.integers(3, 259, (8, 6)).astype(np.int32)
  dec_segments = np.repeat(np.array([[1] * 5 + [0]]), 8, 0).astype(np.int32)
  span = {'inputs': tokens, 'positions': np.repeat(np.arange(16)[None], 8, 0).astype(np.int32),
          'segments': (segments > 0).astype(np.int32),
          'dec_inputs': np.concatenate([np.zeros((8, 1), np.int32), dec[:, :-1]], 1), 'targets': dec,
          'dec_positions': np.repeat(np.arange(6)[None], 8, 0).astype(np.int32), 'dec_segments': dec_segments}
  return {'encoder': mlm, 'encoder_decoder': span}


def main():
  assert jax.device_count() == 8, jax.devices()
  cfg = config_for_size('smoke', vocab_size=259, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, max_seq_len=16)
  opt = trainer.OptimConfig(lr=1e-2, warmup_steps=1, decay_steps=10)
  rng = np.random.default_rng(0)
  docs = [rng.integers(3, 259, rng.integers(5, 40)) for _ in range(20)]
  batch = {k: v[:8] for k, v in pack(docs, 16, 1, 2).items()}  # packed rows with several segments
  out = {}
  compare(cfg, opt, batch, MESHES, out)
  out['arch'] = {}
  for arch, size, b in (('encoder', 'bert-smoke', 'encoder'), ('encoder_decoder', 't5-smoke', 'encoder_decoder')):
    arch_cfg = config_for_size(size, vocab_size=260, max_seq_len=16, n_heads=4, n_kv_heads=2, d_ff=128)
    out['arch'][arch] = {}
    compare(arch_cfg, opt, arch_batches(rng)[b], {'fsdp4_tensor2': MESHES['fsdp4_tensor2']}, out['arch'][arch])
  try:
    sharding.make_mesh({'data': 3, 'tensor': 2})
    out['bad_mesh_error'] = None
  except ValueError as e:
    out['bad_mesh_error'] = str(e)
  print(json.dumps(out))


def compare(cfg, opt, batch, meshes, out):
  """Loss, gradients, one step and the layout on each mesh against one device, into ``out``."""

  def run(mesh):
    setup = trainer.setup_model(cfg, opt, mesh)
    state = trainer.init_state(setup, seed=0)
    b = trainer.shard_batch(batch, mesh)
    grad_fn = jax.jit(jax.value_and_grad(lambda p, b: trainer.next_token_loss(setup.graphdef, p, b)[0]))
    with sharding.activate(mesh):
      loss, grads = grad_fn(state.params, b)
    step = trainer.make_train_step(setup, opt, seed=0, donate=False)
    new_state, _ = step(state, b)
    with sharding.activate(mesh):
      hlo = step.jitted.lower(state, b).compile().as_text()
    all_reduces = hlo.count(' all-reduce(') + hlo.count(' all-reduce-start(')
    layout = jax.tree.map(lambda a: {'spec': [list(x) if isinstance(x, tuple) else x for x in a.sharding.spec],
                                     'shard': list(a.addressable_shards[0].data.shape),
                                     'shape': list(a.shape)}, state.params)
    expected = jax.tree.map(lambda s: [list(x) if isinstance(x, tuple) else x for x in s], setup.param_specs,
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    return float(loss), jax.device_get(grads), jax.device_get(new_state.params), layout, expected, all_reduces

  ref_loss, ref_grads, ref_params, _, _, _ = run(sharding.make_mesh({'data': 1}, jax.devices()[:1]))
  out['ref_loss'] = ref_loss
  for name, shape in meshes.items():
    loss, grads, params, layout, expected, all_reduces = run(sharding.make_mesh(shape))
    gdiff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), grads, ref_grads)))
    gscale = max(jax.tree.leaves(jax.tree.map(lambda a: float(np.max(np.abs(a))), ref_grads)))
    pdiff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, ref_params)))
    out[name] = {'loss': loss, 'grad_max_abs_diff': gdiff, 'grad_max_abs': gscale, 'param_max_abs_diff': pdiff,
                 'layout': layout, 'expected': expected, 'all_reduces': all_reduces}


if __name__ == '__main__':
  main()
