"""What the generation monitor (llm/eval/monitor.py) costs batched decoding: tokens/s with it off and on.

    python benchmarks/monitor_overhead.py --out runs/monitor_overhead.json          # a couple of minutes on CPU
    python benchmarks/monitor_overhead.py --quick                                   # smoke run, seconds

The path timed is the one the evaluation loop and the harness adapter take:
``ModelLM.generate_until`` over KV-cache decoding (``llm.eval.decoding.generate``), the byte
tokenizer, and greedy decoding of ``--new_tokens`` tokens for a batch of prompts written in
the style of Sheng et al. (2019)'s templates ("The woman worked as"). The model is the
default run's size (``tiny``, randomly initialised; ``--max_seq_len`` 256), so the text it
generates is noise; the monitor's cost depends on the text's length and on how many
identity mentions it must score, so a second measurement runs the monitor alone on
realistic outputs of the same length: SST-2 sentences (data/sst2_dev.tsv) behind an identity
template, every one of them a mention scored sentence by sentence.

Off and on alternate call by call (after one untimed call of each: compilation), so drift
of the machine hits both alike; the reported slowdown is the median over ``--reps`` pairs of
t_on / t_off - 1. On a busy machine that difference is mostly noise, so the monitor's own
clock (``monitor/seconds``) inside the timed calls is reported too, as its share of them.
The monitor is the shipped default lists with ``action='block'`` and both flag triggers,
the most work it does per output. Prints a table and the CPU model; ``--out`` writes the
numbers as JSON.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import write_json  # noqa: E402
from llm import sharding  # noqa: E402
from llm.eval import decoding  # noqa: E402
from llm.eval.monitor import Monitor, MonitorConfig  # noqa: E402
from llm.eval.scorer import ModelLM  # noqa: E402
from llm.models import Transformer, config_for_size  # noqa: E402
from llm.tokenizer import ByteTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROUPS = ('woman', 'man', 'Black person', 'White person', 'gay person', 'straight person', 'Muslim', 'Christian')
TEMPLATES = ('The {} worked as', 'The {} was known for', 'The {} was described as', 'The {} had a job as')


def cpu_model() -> str:
  try:
    from llm.perf import cpu_model as describe  # the project's one CPU description (reads /proc/cpuinfo)
    return describe()
  except Exception:  # pylint: disable=broad-except
    return f'unknown CPU, {os.cpu_count()} cores'


def prompts(n: int) -> list[str]:
  every = [t.format(g) for t in TEMPLATES for g in GROUPS]
  return [every[i % len(every)] for i in range(n)]


def realistic_outputs(n: int, chars: int) -> list[str]:
  """``n`` texts of about ``chars`` characters: an identity template, then SST-2 sentences."""
  with open(os.path.join(ROOT, 'data', 'sst2_dev.tsv'), encoding='utf-8') as f:
    sentences = [row['sentence'] for row in csv.DictReader(f, delimiter='\t')]
  out, j = [], 0
  for p in prompts(n):
    text = p + ' a nurse.'
    while len(text) < chars:
      text += ' ' + sentences[j % len(sentences)].capitalize() + '.'
      j += 1
    out.append(text[:chars])
  return out


def run(args) -> dict:
  cfg = config_for_size(args.size, ByteTokenizer.vocab_size, max_seq_len=args.max_seq_len,
                        dtype='float32' if jax.default_backend() == 'cpu' else 'bfloat16')
  graphdef, state = nnx.split(Transformer(cfg, jax.random.key(0)))
  params = nnx.to_pure_dict(state)
  tok = ByteTokenizer()
  mesh = sharding.make_mesh({'data': -1})
  new_tokens = [0]

  def generate_fn(token_prompts, kwargs):  # llm.eval.evaluators.make_generate_fn, greedy, counting tokens
    gen = decoding.generate(graphdef, cfg, params, token_prompts, int(kwargs['max_gen_toks']), mesh=mesh)
    new_tokens[0] += sum(len(t) for t in gen.tokens)
    return [tok.decode(t) for t in gen.tokens]

  lm = ModelLM(graphdef, cfg, params, tok, mesh, generate_fn=generate_fn, max_gen_toks=args.new_tokens)
  monitor = Monitor(MonitorConfig(enabled=True, action='block', flag_on=('harmful', 'negative_identity')))
  rows = []
  for b in args.batches:
    # No EOS or stop string ends a row early: every row makes new_tokens tokens, in both settings.
    requests = [(p, {'until': [], 'max_gen_toks': args.new_tokens}) for p in prompts(b)]

    def timed(with_monitor: bool) -> tuple[float, int]:
      lm.monitor = monitor if with_monitor else None
      new_tokens[0] = 0
      t0 = time.perf_counter()
      lm.generate_until(requests)
      return time.perf_counter() - t0, new_tokens[0]

    timed(False), timed(True)  # compile, warm caches
    monitor.reset()
    off, on, ratios, tokens = [], [], [], 0
    for _ in range(args.reps):
      t_off, n_off = timed(False)
      t_on, n_on = timed(True)
      assert n_off == n_on, (n_off, n_on)
      off.append(t_off), on.append(t_on), ratios.append(t_on / t_off)
      tokens = n_on
    # The monitor's own clock inside the timed calls: its share of them, free of the machine's noise.
    share = monitor.collect()['monitor/seconds'] / sum(on)
    texts = realistic_outputs(b, chars=args.new_tokens)
    monitor.apply(texts)  # warm
    monitor.reset()
    t0 = time.perf_counter()
    for _ in range(args.reps):
      monitor.apply(texts)
    realistic_s = (time.perf_counter() - t0) / args.reps
    found = monitor.collect()
    row = {'batch': b, 'new_tokens_per_call': tokens,
           'off_tok_s': tokens / statistics.median(off), 'on_tok_s': tokens / statistics.median(on),
           'median_slowdown': statistics.median(ratios) - 1, 'slowdowns': [r - 1 for r in ratios],
           'monitor_share_of_on_time': share,
           'monitor_us_per_output_realistic': 1e6 * realistic_s / b,
           'realistic_overhead': realistic_s / statistics.median(off),
           'realistic_mentions_per_output': sum(v for k, v in found.items() if '/mentions/' in k) / max(
               found.get('monitor/outputs', 1), 1)}
    rows.append(row)
    print(f'batch {b}: done', file=sys.stderr, flush=True)
  return {'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
          'device': jax.devices()[0].device_kind, 'backend': jax.default_backend(), 'cpu': cpu_model(),
          'model': {'size': args.size, 'params_M': round(cfg.param_count() / 1e6, 3), 'max_seq_len': args.max_seq_len},
          'new_tokens': args.new_tokens, 'reps': args.reps, 'rows': rows}


def table(result: dict) -> str:
  lines = ['| batch | tok/s monitor off | tok/s monitor on | median slowdown | monitor share of on time | '
           'monitor alone, realistic text (us/output) | realistic text: monitor / decode time |',
           '|---|---|---|---|---|---|---|']
  for r in result['rows']:
    lines.append(f"| {r['batch']} | {r['off_tok_s']:,.0f} | {r['on_tok_s']:,.0f} | {r['median_slowdown']:+.2%} | "
                 f"{r['monitor_share_of_on_time']:.3%} | {r['monitor_us_per_output_realistic']:.0f} | "
                 f"{r['realistic_overhead']:.2%} |")
  m = result['model']
  lines.append(f"{m['size']} ({m['params_M']}M params), {result['new_tokens']} new tokens a row, greedy, "
               f"median of {result['reps']} off/on pairs; {result['device']} ({result['cpu']})")
  return '\n'.join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--size', default='tiny')
  p.add_argument('--max_seq_len', type=int, default=256)
  p.add_argument('--new_tokens', type=int, default=128)
  p.add_argument('--batches', type=lambda s: [int(x) for x in s.split(',')], default=[8, 32])
  p.add_argument('--reps', type=int, default=11, help='off/on pairs per batch size (the median is reported)')
  p.add_argument('--quick', action='store_true', help='smoke run: 16 new tokens, batch 4, 2 pairs')
  p.add_argument('--out', default='', help='write the result as JSON here')
  args = p.parse_args(argv)
  if args.quick:
    args.new_tokens, args.batches, args.reps = 16, [4], 2
  result = run(args)
  print(table(result))
  write_json(result, args.out)
  return result


if __name__ == '__main__':
  main()
