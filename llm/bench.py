"""Throughput benchmark: time the train step on synthetic tokens.

  python -m llm.bench --size=124m --seq_len=1024 --batch=8            # CPU
  python -m llm.bench --size=1b --seq_len=2048 --batch=16             # one H100/H200
  python -m llm.bench --arch=encoder --size=bert-large --seq_len=512 --batch=32
  python -m llm.bench --arch=encoder_decoder --size=t5-base --seq_len=512 --dec_len=114 --batch=32

Prints step time, tokens/s, model TFLOP/s per device and MFU (FLOPs counted as in
llm/perf.py). The batch is what each architecture trains on: next-token rows (decoder),
rows with 15% of positions scored as masked-LM targets (encoder), or inputs of seq_len
and targets of dec_len (encoder-decoder; by default T5's span-corruption target length,
114 for 512 inputs). Imports only jax, flax, optax and numpy (and the NumPy objectives of
llm.data): it runs on accelerator hosts that have no TensorFlow, CLU or ml_collections.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import numpy as np

from llm import perf, sharding, trainer
from llm.models import ARCH_OF_FAMILY, SIZES, config_for_size


def synthetic_batch(arch: str, batch: int, seq_len: int, dec_len: int, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  """Random token rows shaped as ``arch`` trains on (see the module docstring)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab, (batch, seq_len + 1), dtype=np.int32)
  if arch == 'decoder':
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
  if arch == 'encoder':
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
            'loss_mask': (rng.random((batch, seq_len)) < 0.15).astype(np.int32)}
  targets = rng.integers(3, vocab, (batch, dec_len), dtype=np.int32)
  return {'inputs': tokens[:, :-1], 'dec_inputs': np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], 1),
          'targets': targets}


def run_benchmark(size: str, seq_len: int, batch: int, steps: int = 10, warmup: int = 2, vocab: int = 32000,
                  dtype: str = 'auto', attention: str = 'auto', remat: str = 'none', scan_layers: bool = False,
                  mesh_shape: dict | None = None, accum_steps: int = 1, arch: str = 'decoder',
                  dec_len: int = 0) -> dict:
  """Time ``steps`` train steps after ``warmup`` ones; returns the figures as a dict."""
  backend = jax.default_backend()
  dtype = dtype if dtype != 'auto' else ('float32' if backend == 'cpu' else 'bfloat16')
  attention = attention if attention != 'auto' else ('cudnn' if backend == 'gpu' else 'xla')
  dense_grad = 'pretransposed' if backend == 'cpu' else 'xla'  # as model.dense_grad=auto does
  cfg = config_for_size(size, vocab, max_seq_len=seq_len, dtype=dtype, attention=attention, remat=remat,
                        scan_layers=scan_layers, dense_grad=dense_grad)
  if cfg.arch != arch:
    raise ValueError(f'--size={size} is an {cfg.arch} model (family {cfg.family}), not --arch={arch}; pick a size of '
                     f'that architecture: {sorted(k for k, v in SIZES.items() if ARCH_OF_FAMILY[v["family"]] == arch)}')
  if not dec_len and arch == 'encoder_decoder':  # T5's target length for span corruption of seq_len inputs
    from llm.data.objectives import compute_input_and_target_lengths
    dec_len = compute_input_and_target_lengths(seq_len, 0.15, 3.0)[1]
  mesh = sharding.make_mesh(mesh_shape or {'fsdp': -1})
  opt = trainer.OptimConfig(accum_steps=accum_steps, decay_steps=10_000)
  setup = trainer.setup_model(cfg, opt, mesh)
  state = trainer.init_state(setup, 0)
  step = trainer.make_train_step(setup, opt, seed=0)
  data = trainer.shard_batch(synthetic_batch(arch, batch, seq_len, dec_len, vocab), mesh)
  sync_each = backend == 'cpu'  # CPU collectives deadlock with several steps in flight
  t0 = time.perf_counter()
  state, metrics = step(state, data)  # traces, compiles and runs once
  jax.block_until_ready(metrics)
  first_s = time.perf_counter() - t0
  for _ in range(warmup - 1):
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, data)
    if sync_each:
      jax.block_until_ready(metrics)
  jax.block_until_ready((state, metrics))
  dt = (time.perf_counter() - t0) / steps
  tps = batch * seq_len / dt
  n_dev = jax.device_count()
  enc_dec = arch == 'encoder_decoder'
  flops_tok = perf.train_flops_per_token(cfg, seq_len, dec_len if enc_dec else None)
  m = perf.mfu(tps, cfg, seq_len, n_dev, dec_len=dec_len if enc_dec else None)
  return {
      'size': size, 'arch': arch, 'params_M': round(cfg.param_count() / 1e6, 1), 'seq_len': seq_len,
      'dec_len': dec_len if enc_dec else None, 'batch': batch,
      'device': jax.devices()[0].device_kind, 'devices': n_dev, 'dtype': dtype, 'attention': attention,
      'remat': remat, 'scan_layers': scan_layers, 'mesh': dict(mesh.shape),
      'warmup_s': round(compile_s, 1), 'compile_s': round(max(first_s - dt, 0.0), 1),
      'peak_memory_gib': peak_memory_gib(), 'step_ms': round(dt * 1000, 2), 'tokens_per_sec': round(tps, 1),
      'tflops_per_device': round(tps * flops_tok / n_dev / 1e12, 2),
      'mfu': None if m is None else round(m, 4), 'loss': float(metrics['train_loss']),
  }


def peak_memory_gib() -> float | None:
  """Most memory this process has held on its first device (GiB), where the backend reports it (GPU, TPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else round(peak / 2**30, 2)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--arch', default='decoder', choices=['decoder', 'encoder', 'encoder_decoder'])
  p.add_argument('--size', default='124m', choices=sorted(SIZES))
  p.add_argument('--dec_len', type=int, default=0,
                 help="encoder_decoder target length; 0 = T5's span-corruption length for seq_len (114 for 512)")
  p.add_argument('--seq_len', type=int, default=1024)
  p.add_argument('--batch', type=int, default=8, help='global batch (rows)')
  p.add_argument('--steps', type=int, default=10, help='timed steps')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps (compilation)')
  p.add_argument('--vocab', type=int, default=32000)
  p.add_argument('--dtype', default='auto', help='compute dtype; auto = bfloat16 on accelerators, float32 on CPU')
  p.add_argument('--attention', default='auto', choices=['auto', 'xla', 'cudnn'])
  p.add_argument('--remat', default='none', choices=['none', 'full', 'dots', 'dots_no_batch'])
  layers = p.add_mutually_exclusive_group()
  layers.add_argument('--scan', action='store_true',
                      help='lax.scan over the layers (faster compiles) instead of the default unrolled loop')
  layers.add_argument('--no_scan', action='store_true', help='unrolled layers: the default, as in train.py')
  p.add_argument('--mesh', default='fsdp=-1', help="e.g. 'data=2,fsdp=2,tensor=2'")
  p.add_argument('--accum_steps', type=int, default=1)
  a = p.parse_args(argv)
  mesh = {k: int(v) for k, v in (kv.split('=') for kv in a.mesh.split(',') if kv)}
  r = run_benchmark(a.size, a.seq_len, a.batch, a.steps, a.warmup, a.vocab, a.dtype, a.attention, a.remat,
                    a.scan, mesh, a.accum_steps, a.arch, a.dec_len)
  mfu_s = 'n/a (no known peak for this device)' if r['mfu'] is None else f"{r['mfu']:.1%}"
  print(f"{r['size']} ({r['params_M']}M params) seq {r['seq_len']} batch {r['batch']} on {r['devices']}x "
        f"{r['device']}: step {r['step_ms']:.1f} ms, {r['tokens_per_sec']:,.0f} tokens/s, "
        f"{r['tflops_per_device']:.1f} TFLOP/s per device, MFU {mfu_s}, compile {r['compile_s']:.1f} s"
        + ('' if r['peak_memory_gib'] is None else f", peak memory {r['peak_memory_gib']:.1f} GiB"))
  print(json.dumps(r))


if __name__ == '__main__':
  main()
