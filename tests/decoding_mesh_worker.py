"""Run by tests/test_decoding.py in a subprocess with 8 simulated CPU devices.

Takes one JSON argument: {'model': config_for_size('smoke', ...) overrides, 'prompts',
'max_new_tokens', 'settings': {name: generate keyword arguments}}. Initialises the
parameters with ``trainer.init_state`` (seed 0) sharded on a data=2, fsdp=2, tensor=2
mesh and decodes the prompts once per setting on that mesh and once with the same
parameters gathered onto one device. Prints one JSON object: per setting the tokens of
both runs, plus the resolved layout of one matrix and a parameter checksum.
"""

import os
import sys

# LLVM's -O0 halves XLA:CPU compile times; both sides of every comparison are compiled alike.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llm import sharding, trainer  # noqa: E402
from llm.eval import decoding  # noqa: E402
from llm.models import config_for_size  # noqa: E402

MESH = {'data': 2, 'fsdp': 2, 'tensor': 2}


def checksum(params) -> float:
  return float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(jax.device_get(params))))


def main():
  assert jax.device_count() == 8, jax.devices()
  spec = json.loads(sys.argv[1])
  cfg = config_for_size('smoke', **spec['model'])
  mesh = sharding.make_mesh(MESH)
  setup = trainer.setup_model(cfg, trainer.OptimConfig(), mesh)
  params = trainer.init_state(setup, seed=0).params
  w_q = params['blocks']['attn']['w_q_dnh']
  out = {'w_q_spec': [list(a) if isinstance(a, tuple) else a for a in w_q.sharding.spec],
         'w_q_shard': list(w_q.addressable_shards[0].data.shape), 'w_q_shape': list(w_q.shape),
         'checksum': checksum(params)}
  single = jax.device_put(jax.device_get(params), jax.devices()[0])
  for name, kw in spec['settings'].items():
    run = lambda p, mesh=None: decoding.generate(setup.graphdef, cfg, p, spec['prompts'], spec['max_new_tokens'],
                                                 mesh=mesh, **kw).tokens
    out[name] = {'mesh': run(params, mesh), 'single': run(single)}
  print(json.dumps(out))


if __name__ == '__main__':
  main()
