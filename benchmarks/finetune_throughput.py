"""LoRA against full fine-tuning, back to back: tokens/s, MFU, trainable parameters, optimizer and peak memory.

  python benchmarks/finetune_throughput.py --size=tiny --seq_len=128 --batch=16            # CPU
  python benchmarks/finetune_throughput.py --size=1b --seq_len=2048 --batch=8 --rank=16    # one GPU

Both methods train the same model (random weights, synthetic tokens; the data pipeline is
not measured) with the jitted step finetune.py uses (``trainer.make_train_step`` with the
trainable mask of ``llm.lora.trainable_fn``). MFU counts the full model's 6N-style FLOPs
(``llm.perf``) for both, so a LoRA step, which skips the frozen weights' gradients, shows
how much of that work it saves as a higher figure. Imports only jax, flax, optax and numpy:
it runs on accelerator hosts without TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(method: str, size: str, seq_len: int, batch: int, steps: int, rank: int, targets: str) -> dict:
  import jax
  import numpy as np

  from llm import lora, perf, sharding, trainer
  from llm.models import config_for_size
  backend = jax.default_backend()
  cfg = config_for_size(size, 32000 if size not in ('tiny', 'smoke') else 259, max_seq_len=seq_len,
                        dtype='float32' if backend == 'cpu' else 'bfloat16',
                        attention='cudnn' if backend == 'gpu' else 'xla',
                        dense_grad='pretransposed' if backend == 'cpu' else 'xla')
  if method == 'lora':
    cfg = lora.with_adapters(cfg, rank, 16.0, 0.0, targets)
  mesh = sharding.make_mesh({'data': -1})
  opt = trainer.OptimConfig(lr=1e-4, warmup_steps=1, decay_steps=steps + 10)
  setup = trainer.setup_model(cfg, opt, mesh, trainable=lora.trainable_fn(cfg, method))
  state = trainer.init_state(setup, 0)
  step = trainer.make_train_step(setup, opt, 0)
  rng = np.random.default_rng(0)
  x = rng.integers(3, cfg.vocab_size, (batch, seq_len)).astype(np.int32)
  mask = np.zeros_like(x, bool)
  mask[:, seq_len // 2:] = True  # a completion: the second half of every row
  host = dict(inputs=x, targets=np.roll(x, -1, 1), segments=np.ones_like(x),
              positions=np.tile(np.arange(seq_len, dtype=np.int32), (batch, 1)), loss_mask=mask)
  b = trainer.shard_batch(host, mesh)
  t0 = time.perf_counter()
  state, m = step(state, b)
  jax.block_until_ready(m['train_loss'])
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m['train_loss'])
    times.append(time.perf_counter() - t0)
  t = float(np.median(times))
  tps = batch * seq_len / t
  abstract = setup.abstract_state()
  trainable = sum(x.size for x in jax.tree.leaves(setup.split(abstract.params)[0]))
  total = sum(x.size for x in jax.tree.leaves(abstract.params))
  stats = jax.devices()[0].memory_stats() or {}
  return dict(method=method, size=size, seq_len=seq_len, batch=batch, step_s=t, tokens_per_sec=tps,
              mfu=perf.mfu(tps, cfg, seq_len, jax.device_count()), compile_s=compile_s,
              trainable_params=int(trainable), total_params=int(total),
              optimizer_state_mib=sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.opt_state)) / 2**20,
              peak_device_mib=stats.get('peak_bytes_in_use', 0) / 2**20 or None)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--size', default='tiny')
  p.add_argument('--seq_len', type=int, default=128)
  p.add_argument('--batch', type=int, default=16)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--rank', type=int, default=8)
  p.add_argument('--targets', default='q,k,v,o')
  p.add_argument('--out', default='')
  args = p.parse_args()
  import jax
  rows = [measure(m, args.size, args.seq_len, args.batch, args.steps, args.rank, args.targets) for m in ('full', 'lora')]
  print(f'{jax.devices()[0].device_kind} ({platform.processor() or platform.machine()}), size {args.size}, '
        f'seq {args.seq_len}, batch {args.batch}, LoRA rank {args.rank} on {args.targets}')
  print(f'{"method":6s} {"tokens/s":>10s} {"mfu":>6s} {"step ms":>8s} {"compile s":>9s} {"trainable":>12s} '
        f'{"opt MiB":>9s} {"peak MiB":>9s}')
  for r in rows:
    mfu = f'{r["mfu"]:.1%}' if r['mfu'] is not None else 'n/a'
    peak = f'{r["peak_device_mib"]:.0f}' if r['peak_device_mib'] else 'n/a'
    print(f'{r["method"]:6s} {r["tokens_per_sec"]:10,.0f} {mfu:>6s} {r["step_s"] * 1e3:8.1f} {r["compile_s"]:9.1f} '
          f'{r["trainable_params"]:12,d} {r["optimizer_state_mib"]:9.2f} {peak:>9s}')
  print(f'LoRA / full tokens/s: {rows[1]["tokens_per_sec"] / rows[0]["tokens_per_sec"]:.2f}x')
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(rows, f, indent=2)


if __name__ == '__main__':
  main()
