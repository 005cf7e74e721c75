"""cuDNN flash attention (model.attention='cudnn') against the XLA einsum attention.

Runs only where JAX's first device is a GPU (skipped elsewhere, with the reason). GPU
hosts may lack TensorFlow, CLU and ml_collections, so this file imports only jax, flax,
optax, numpy and llm.models/llm.trainer/llm.sharding; the one test that runs everywhere
checks exactly that.

The batch is packed as llm.data writes it (several documents a row, positions restarting
at 0, trailing segment-0 padding), in bfloat16, so the cuDNN path sees the segment mask
and the padding a real run gives it.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import models as model, sharding, trainer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = 259
T = 128  # a multiple of cuDNN's 64-token tiles
PLATFORM = jax.devices()[0].platform
on_gpu = pytest.mark.skipif(PLATFORM != 'gpu', reason=f'cuDNN attention needs an NVIDIA GPU; '
                                                       f'jax.devices()[0].platform is {PLATFORM!r}')


def packed_batch(seed: int, rows: int = 4) -> dict[str, np.ndarray]:
  """Rows [rows, T] of documents packed back to back (as llm.data.pack does); the last row
  ends in padding (segment 0, everything 0)."""
  rng = np.random.default_rng(seed)
  out = {k: np.zeros((rows, T), np.int32) for k in ('inputs', 'targets', 'positions', 'segments')}
  for r in range(rows):
    fill = T if r < rows - 1 else T - 37
    col, seg = 0, 1
    while col < fill:
      n = min(int(rng.integers(5, 60)), fill - col)
      out['segments'][r, col:col + n] = seg
      out['positions'][r, col:col + n] = np.arange(n)
      col, seg = col + n, seg + 1
    out['inputs'][r, :fill] = rng.integers(3, VOCAB, fill)
    out['targets'][r, :fill] = rng.integers(3, VOCAB, fill)
  assert (out['segments'].max(axis=1) >= 2).all()  # several documents in every row
  return out


def configs():
  base = dict(vocab_size=VOCAB, max_seq_len=T, dtype='bfloat16')
  return (model.config_for_size('smoke', attention='xla', **base),
          model.config_for_size('smoke', attention='cudnn', **base))


def _rel(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@on_gpu
def test_cudnn_logits_match_xla_on_packed_bfloat16_batch():
  cfg_x, cfg_c = configs()
  graph_x, params = nnx.split(model.Transformer(cfg_x, jax.random.key(0)))
  graph_c, _ = nnx.split(nnx.eval_shape(lambda: model.Transformer(cfg_c, jax.random.key(0))))
  batch = {k: jnp.asarray(v) for k, v in packed_batch(0).items()}

  @jax.jit
  def logits(params, segments):
    args = (batch['inputs'], batch['positions'], segments)
    return nnx.merge(graph_x, params)(*args), nnx.merge(graph_c, params)(*args)

  lx, lc = (np.asarray(x)[..., :VOCAB] for x in logits(params, batch['segments']))
  valid = np.asarray(batch['segments']) > 0
  assert np.isfinite(lc).all()
  err = _rel(lc[valid], lx[valid])
  assert err < 2e-2, err  # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding
  assert np.abs(lc[valid] - lx[valid]).max() < 0.1 * np.abs(lx[valid]).max()
  # The tolerance is tight enough to see the segment mask: attending across documents
  # (no segments) changes the logits of every later document by much more.
  lx_unmasked = np.asarray(logits(params, jnp.ones_like(batch['segments']))[0])[..., :VOCAB]
  later = valid & (np.asarray(batch['segments']) > 1)
  assert _rel(lx_unmasked[later], lx[later]) > 5 * err


@on_gpu
def test_cudnn_train_step_matches_xla():
  cfg_x, cfg_c = configs()
  mesh = sharding.make_mesh({'data': 1}, jax.devices()[:1])
  opt = trainer.OptimConfig(lr=1e-3, warmup_steps=0, decay_steps=10)
  batch = trainer.shard_batch(packed_batch(1), mesh)
  out = {}
  for name, cfg in (('xla', cfg_x), ('cudnn', cfg_c)):
    setup = trainer.setup_model(cfg, opt, mesh)
    state = trainer.init_state(setup, seed=0)
    _, metrics = trainer.make_train_step(setup, opt, seed=0, donate=False)(state, batch)
    with sharding.activate(mesh):
      (loss, count), grads = jax.jit(jax.value_and_grad(
          lambda p: trainer.next_token_loss(setup.graphdef, p, batch), has_aux=True))(state.params)
    out[name] = dict(params=jax.device_get(state.params), metrics=jax.device_get(metrics),
                     loss=float(loss), count=float(count), grads=jax.device_get(grads))
  x, c = out['xla'], out['cudnn']
  # Same initial parameters: the attention implementation is not part of the init.
  jax.tree.map(np.testing.assert_array_equal, x['params'], c['params'])
  assert c['count'] == x['count'] == float((packed_batch(1)['segments'] > 0).sum())
  assert float(c['metrics']['tokens']) == float(x['metrics']['tokens']) == x['count']
  assert abs(c['loss'] - x['loss']) < 1e-2 * abs(x['loss'])
  assert abs(float(c['metrics']['train_loss']) - float(x['metrics']['train_loss'])) < 1e-2 * float(
      x['metrics']['train_loss'])
  assert abs(float(c['metrics']['grad_norm']) - float(x['metrics']['grad_norm'])) < 5e-2 * float(
      x['metrics']['grad_norm'])
  gx, gc = jax.tree.leaves(x['grads']), jax.tree.leaves(c['grads'])
  flat_x = np.concatenate([np.ravel(g) for g in gx]).astype(np.float64)
  flat_c = np.concatenate([np.ravel(g) for g in gc]).astype(np.float64)
  cos = float(flat_x @ flat_c / (np.linalg.norm(flat_x) * np.linalg.norm(flat_c)))
  assert cos > 0.995, cos
  paths = [p for p, _ in nnx.to_flat_state(nnx.State(x['grads']))]
  for path, a, b in zip(paths, gc, gx):
    if np.linalg.norm(np.asarray(b, np.float64)) > 1e-6 * np.linalg.norm(flat_x):
      assert _rel(a, b) < 0.1, (path, _rel(a, b))


def test_gpu_tests_import_no_tensorflow():
  """This file and the modules it uses import no TensorFlow, CLU or ml_collections."""
  code = ('import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_gpu; '
          'print(sorted({m.split(".")[0] for m in sys.modules} & '
          '{"tensorflow", "tensorflow_datasets", "clu", "ml_collections"}))')
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-c', code, ROOT, HERE], capture_output=True, text=True, env=env,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == '[]', proc.stdout
