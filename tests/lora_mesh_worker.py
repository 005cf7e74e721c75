"""LoRA on an 8-device mesh against one device (tests/test_finetune.py reads the last line, JSON).

Run as a subprocess: the 8 simulated CPU devices must be set before JAX starts. Three
LoRA steps from the same parameters on a data 2 x fsdp 2 x tensor 2 mesh and on one
device; prints the largest parameter difference and how far the adapters moved.
"""

import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  import jax
  import numpy as np
  from flax import nnx, traverse_util

  from llm import lora, sharding, trainer
  from llm.models import Transformer, config_for_size
  cfg = lora.with_adapters(config_for_size('smoke', 259), 4, 16.0, 0.0, 'q,k,v,o,gate,up,down')
  opt = trainer.OptimConfig(lr=1e-2, warmup_steps=1, decay_steps=10)
  params = nnx.to_pure_dict(nnx.split(Transformer(cfg, jax.random.key(0)))[1])
  x = np.random.default_rng(0).integers(3, 250, (8, 16)).astype(np.int32)
  batch = dict(inputs=x, targets=np.roll(x, -1, 1), segments=np.ones_like(x),
               positions=np.tile(np.arange(16, dtype=np.int32), (8, 1)))
  out = []
  for shape, devices in (({'data': 2, 'fsdp': 2, 'tensor': 2}, jax.devices()), ({'data': 1}, jax.devices()[:1])):
    mesh = sharding.make_mesh(shape, devices)
    setup = trainer.setup_model(cfg, opt, mesh, trainable=lora.trainable_fn(cfg, 'lora'))
    state = trainer.state_from_params(setup, params)
    step = trainer.make_train_step(setup, opt, 0, donate=False)
    for _ in range(3):
      state, m = step(state, trainer.shard_batch(batch, mesh))
      jax.block_until_ready(m['train_loss'])  # CPU collectives: one step in flight
    out.append(traverse_util.flatten_dict(jax.device_get(state.params)))
  start = traverse_util.flatten_dict(params)
  print(json.dumps({'diff': max(float(np.abs(out[0][k] - out[1][k]).max()) for k in out[0]),
                    'moved': max(float(np.abs(out[1][k] - start[k]).max()) for k in out[1] if lora.is_adapter(k)),
                    'base_moved': max(float(np.abs(out[0][k] - start[k]).max()) for k in out[0]
                                      if not lora.is_adapter(k))}))


if __name__ == '__main__':
  main()
