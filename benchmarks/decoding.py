"""Cached vs uncached decoding speed (llm/eval/decoding.py), and the cached step's distance from the bandwidth bound.

    python benchmarks/decoding.py --out runs/decoding_bench.json                 # full run, a few minutes on CPU
    python benchmarks/decoding.py --quick --out runs/decoding_bench_quick.json   # smoke run, seconds
    python benchmarks/decoding.py --hbm_gbps 4800 --out runs/decoding_h200.json  # on a GPU (H200: 4.8 TB/s)

The model is the default run's (configs/default.py: ``config_for_size('tiny', 259)``,
randomly initialised) with ``max_seq_len`` raised from the 128 of data.seq_len to 512
(``--max_seq_len``), since prompt + 256 new tokens would not fit. Each batch row gets a
random prompt of ``--prompt_len`` tokens; decoding is greedy with no EOS, so every row
makes exactly ``--new_tokens`` tokens. Every timed call is preceded by an untimed one
with the same shapes, so compilation is excluded; the best of ``--reps`` is reported.

Columns: tokens/s of new tokens (prefill included) for ``generate`` and
``generate_uncached`` (a jitted recompute-the-prefix loop whose prefix grows in chunks
of 32, so each step costs about the prefix it needs), their ratio, and the cached
decode step time: (t(new_tokens) - t(1)) / (new_tokens - 1), i.e. without prefill. With
``--hbm_gbps`` also the memory-bandwidth bound of a step, (bytes of all parameters + the
whole KV cache, which every step reads) / bandwidth, and the measured step's multiple of
it. The table is printed and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import write_json  # noqa: E402
from llm.eval import decoding  # noqa: E402
from llm.models import ModelConfig, SIZES, Transformer, config_for_size  # noqa: E402


def cpu_model() -> str:
  try:
    from llm.perf import cpu_model as describe  # the project's one CPU description
    return describe()
  except Exception:  # pylint: disable=broad-except  # the corpus wing may be absent on a GPU host
    return f'unknown CPU, {os.cpu_count()} cores'


def best_time(fn, reps: int) -> tuple[float, decoding.Generation]:
  """Best wall time of ``reps`` calls after one untimed call (compilation)."""
  out = fn()
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return min(times), out


def step_bytes(cfg: ModelConfig, params, batch_rows: int, cache_len: int) -> int:
  """Bytes a cached decode step must read: every parameter and the whole cache (keys and values)."""
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  kv = 2 * cfg.n_layers * batch_rows * cache_len * cfg.n_kv_heads * cfg.d_head * np.dtype(cfg.dtype).itemsize
  return param_bytes + kv


def run(args) -> dict:
  backend = jax.default_backend()
  dtype = args.dtype if args.dtype != 'auto' else ('float32' if backend == 'cpu' else 'bfloat16')
  cfg = config_for_size(args.size, args.vocab, max_seq_len=args.max_seq_len, dtype=dtype)
  graphdef, state = nnx.split(Transformer(cfg, jax.random.key(0)))
  params = jax.device_put(nnx.to_pure_dict(state), jax.devices()[0])
  rng = np.random.default_rng(0)
  rows = []
  for b in args.batches:
    prompts = rng.integers(3, cfg.vocab_size, (b, args.prompt_len)).tolist()
    gen = lambda n, fn=decoding.generate: fn(graphdef, cfg, params, prompts, n)  # noqa: E731
    cached_s, cached = best_time(lambda: gen(args.new_tokens), args.reps)
    prefill_s, _ = best_time(lambda: gen(1), args.reps)
    step_s = (cached_s - prefill_s) / max(args.new_tokens - 1, 1)
    assert cached.steps == args.new_tokens, cached.steps
    new = b * args.new_tokens
    row = {'batch': b, 'cached_tok_s': new / cached_s, 'cached_s': cached_s, 'prefill_s': prefill_s,
           'step_ms': 1e3 * step_s}
    if not args.skip_uncached:
      uncached_s, uncached = best_time(lambda: gen(args.new_tokens, decoding.generate_uncached), args.uncached_reps)
      same = np.mean([x == y for xs, ys in zip(cached.tokens, uncached.tokens) for x, y in zip(xs, ys)])
      row.update(uncached_tok_s=new / uncached_s, uncached_s=uncached_s, speedup=uncached_s / cached_s,
                 tokens_agree=float(same))
    cache_len = decoding.prompt_bucket(args.prompt_len) + args.new_tokens
    row['step_bytes'] = step_bytes(cfg, params, decoding.batch_bucket(b), cache_len)
    if args.hbm_gbps:
      bound_s = row['step_bytes'] / (args.hbm_gbps * 1e9)
      row.update(bound_ms=1e3 * bound_s, step_over_bound=step_s / bound_s)
    rows.append(row)
    print(f'batch {b}: done', file=sys.stderr, flush=True)
  return {
      'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
      'device': jax.devices()[0].device_kind, 'backend': backend, 'cpu': cpu_model(),
      'model': {'size': args.size, 'vocab': args.vocab, 'max_seq_len': args.max_seq_len, 'dtype': dtype,
                'params_M': round(cfg.param_count() / 1e6, 3)},
      'prompt_len': args.prompt_len, 'new_tokens': args.new_tokens, 'reps': args.reps, 'hbm_gbps': args.hbm_gbps,
      'rows': rows,
  }


def table(result: dict) -> str:
  cols = [('batch', 'batch', '{:d}'), ('cached_tok_s', 'cached tok/s', '{:,.0f}'),
          ('uncached_tok_s', 'uncached tok/s', '{:,.0f}'), ('speedup', 'speed-up', '{:.1f}x'),
          ('step_ms', 'cached step ms', '{:.2f}'), ('step_bytes', 'step MB read', '{:.1f}'),
          ('bound_ms', 'bound ms', '{:.3f}'), ('step_over_bound', 'step/bound', '{:.1f}x')]
  present = [c for c in cols if any(c[0] in r for r in result['rows'])]
  head = '| ' + ' | '.join(c[1] for c in present) + ' |'
  lines = [head, '|' + '|'.join('---' for _ in present) + '|']
  for r in result['rows']:
    cells = []
    for key, _, fmt in present:
      v = r.get(key)
      v = v / 1e6 if key == 'step_bytes' and v is not None else v
      cells.append('' if v is None else fmt.format(v))
    lines.append('| ' + ' | '.join(cells) + ' |')
  m = result['model']
  lines.append(f"{m['size']} ({m['params_M']}M params, {m['dtype']}), prompt {result['prompt_len']}, "
               f"{result['new_tokens']} new tokens, greedy; {result['device']} ({result['cpu']})")
  return '\n'.join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='tiny', choices=sorted(SIZES))
  p.add_argument('--vocab', type=int, default=259, help='259 = the byte tokenizer of configs/default.py')
  p.add_argument('--max_seq_len', type=int, default=512, help='context; the default run trains at 128')
  p.add_argument('--prompt_len', type=int, default=32)
  p.add_argument('--new_tokens', type=int, default=256)
  p.add_argument('--batches', type=lambda s: [int(x) for x in s.split(',')], default=[1, 32])
  p.add_argument('--reps', type=int, default=3, help='timed cached runs per setting (best is kept)')
  p.add_argument('--uncached_reps', type=int, default=1, help='timed uncached runs (they are slow)')
  p.add_argument('--dtype', default='auto', help='compute dtype; auto = float32 on CPU, bfloat16 elsewhere')
  p.add_argument('--hbm_gbps', type=float, default=None, help='memory bandwidth in GB/s for the bound column')
  p.add_argument('--skip_uncached', action='store_true')
  p.add_argument('--quick', action='store_true', help='smoke run: 32 new tokens, batches 1 and 4, one rep')
  p.add_argument('--out', default='', help='write the result as JSON here')
  args = p.parse_args(argv)
  if args.quick:
    args.new_tokens, args.batches, args.reps = 32, [1, 4], 1
  result = run(args)
  print(table(result))
  write_json(result, args.out)
  return result


if __name__ == '__main__':
  main()
