"""Requests per second of the scorer: packed rows + shared contexts against one request per row.

    python benchmarks/scoring.py --out runs/scoring.json            # about 4 minutes on 2 cores
    python benchmarks/scoring.py --quick                            # smoke run, under a minute
    python benchmarks/scoring.py --max_seq_len 512 --docs 200 --out runs/scoring_512.json  # 10 minutes

Workloads, tokenised as the harness would (``llm.eval.scorer.ModelLM.encode_pair``):

  * sst2: the harness's glue/sst2 prompt ("{sentence}\\nQuestion: Is this sentence positive
    or negative?\\nAnswer:"), choices " negative" / " positive": one context, two choices;
  * sst2_2shot: the same after two solved examples ("\\n\\n"-separated, the harness's
    few-shot layout); with a 128-token byte model most prompts are cut from the left;
  * crows_pairs: CrowS-Pairs sentence pairs, empty context, each sentence a continuation
    (the harness's crows_pairs_english).

Documents are SST-2 phrases from data/sst2_train.tsv (header ``label<TAB>sentence``) and
CrowS-Pairs rows from data/crows_pairs_anonymized.csv, drawn with a fixed seed. Modes:

  * packed+shared: ``ModelLM()`` (the default);
  * packed: ``ModelLM(share_context=False)``, to separate the two effects;
  * one per row: ``ModelLM(pack=False, share_context=False)``, the harness's layout
    (right-padded rows, a batch as wide as its longest request, sorted longest first).

Every mode first scores the workload once (compiling its shapes; not timed), then
``--reps`` timed passes; requests/s is from the median pass. The model is the default
shape, ``config_for_size('tiny', 259, max_seq_len=128)`` (byte vocabulary), with random
parameters: the values do not change the time. Each mode's log-likelihoods are checked
against one-per-row (max relative difference, is_greedy agreement).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from llm import sharding  # noqa: E402
from llm.perf import cpu_model  # noqa: E402
from llm.eval.scorer import ModelLM, pack_width_floor  # noqa: E402
from llm.models import Transformer, config_for_size  # noqa: E402
from llm.tokenizer import ByteTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2_TEMPLATE = '{}\nQuestion: Is this sentence positive or negative?\nAnswer:'
SST2_CHOICES = ('negative', 'positive')
MODES = {
    'packed+shared': dict(pack=True, share_context=True),
    'packed': dict(pack=True, share_context=False),
    'one per row': dict(pack=False, share_context=False),
}
REFERENCE = 'one per row'


def sst2_docs(path: str) -> list[tuple[int, str]]:
  with open(path, encoding='utf-8') as f:
    rows = list(csv.reader(f, delimiter='\t', quoting=csv.QUOTE_NONE))
  if rows[0] != ['label', 'sentence']:
    raise ValueError(f'{path}: expected the header label<TAB>sentence, got {rows[0]}')
  return [(int(label), sentence) for label, sentence in rows[1:]]


def workloads(n_docs: int, seed: int) -> dict[str, list[tuple[str, str]]]:
  """name -> loglikelihood requests (context, continuation)."""
  rng = np.random.default_rng(seed)
  sst2 = sst2_docs(os.path.join(ROOT, 'data', 'sst2_train.tsv'))
  # Whole sentences rather than the treebank's one-word phrases: at least 5 words.
  sst2 = [d for d in sst2 if len(d[1].split()) >= 5]
  docs = [sst2[i] for i in rng.choice(len(sst2), n_docs, replace=False)]
  shots = [sst2[i] for i in rng.choice(len(sst2), 2 * n_docs, replace=False)]
  out: dict[str, list[tuple[str, str]]] = {'sst2': [], 'sst2_2shot': [], 'crows_pairs': []}
  for i, (_, sentence) in enumerate(docs):
    prompt = SST2_TEMPLATE.format(sentence)
    fewshot = '\n\n'.join(SST2_TEMPLATE.format(s) + ' ' + SST2_CHOICES[y] for y, s in shots[2 * i:2 * i + 2])
    for choice in SST2_CHOICES:
      out['sst2'].append((prompt, ' ' + choice))
      out['sst2_2shot'].append((fewshot + '\n\n' + prompt, ' ' + choice))
  with open(os.path.join(ROOT, 'data', 'crows_pairs_anonymized.csv'), encoding='utf-8') as f:
    pairs = list(csv.DictReader(f))
  for i in rng.choice(len(pairs), min(n_docs, len(pairs)), replace=False):
    out['crows_pairs'] += [('', pairs[i]['sent_more']), ('', pairs[i]['sent_less'])]
  return out


def random_params(cfg, seed: int = 0):
  """(graphdef, params) with N(0, 0.02^2) weights drawn on the host (norm scales 1).

  Same structure as ``nnx.split(Transformer(cfg, key))``; drawing with numpy skips
  compiling the initialisers (tens of seconds on XLA:CPU) and the values do not matter.
  """
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(seed))))
  rng = np.random.default_rng(seed)
  def draw(path, x):
    if path[-1].key == 'scale':
      return np.ones(x.shape, np.float32)
    return rng.normal(0.0, cfg.init_std, x.shape).astype(np.float32)
  return graphdef, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


def measure(lms: dict[str, ModelLM], requests: list[tuple[str, str]], reps: int) -> dict[str, dict]:
  """Per mode: the median of ``reps`` timed passes, after one untimed pass that compiles.

  The modes take turns pass by pass (each pass starting with the next mode), so a change
  in the machine's load (a shared host) reaches all of them alike instead of whichever
  happened to run then.
  """
  for lm in lms.values():
    lm.loglikelihood(requests)  # warm-up: compiles every shape these requests need
  times: dict[str, list[float]] = {mode: [] for mode in lms}
  results, stats = {}, {}
  modes = list(lms)
  for rep in range(reps):
    for mode in modes[rep % len(modes):] + modes[:rep % len(modes)]:  # each mode first in turn
      lm = lms[mode]
      lm.reset_stats()
      t0 = time.perf_counter()
      results[mode] = lm.loglikelihood(requests)
      times[mode].append(time.perf_counter() - t0)
      stats[mode] = lm.stats
  out = {}
  for mode in lms:
    s, sec = stats[mode], statistics.median(times[mode])
    out[mode] = dict(requests=len(requests), seconds=sec, requests_per_sec=len(requests) / sec,
                     forward_rows=s['forward_rows'], forward_batches=s['forward_batches'],
                     tokens_forward=s['tokens_forward'], row_fill=s['row_fill'], truncated=s['truncated'],
                     unique_sequences=s['unique_sequences'], times=times[mode], result=results[mode])
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--docs', type=int, default=400, help='documents per workload (2 requests each)')
  p.add_argument('--reps', type=int, default=3, help='timed passes per mode (median reported)')
  p.add_argument('--batch_rows', type=int, default=16)
  p.add_argument('--max_seq_len', type=int, default=128)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--quick', action='store_true', help='64 documents, 1 timed pass')
  p.add_argument('--out', default='', help='write the results as JSON here')
  args = p.parse_args(argv)
  logging.getLogger('llm.eval.scorer').setLevel(logging.ERROR)  # truncations are counted in the table
  if args.quick:
    args.docs, args.reps = 64, 1

  cfg = config_for_size('tiny', ByteTokenizer.vocab_size, max_seq_len=args.max_seq_len)
  graphdef, params = random_params(cfg, args.seed)
  mesh = sharding.make_mesh({'data': -1})
  tok = ByteTokenizer()
  machine = dict(cpu=cpu_model(), devices=f'{jax.device_count()} {jax.default_backend()}',
                 jax=jax.__version__, python=platform.python_version(),
                 load_avg=os.getloadavg() if hasattr(os, 'getloadavg') else None)
  print(f'{machine["cpu"]}; {machine["devices"]} device(s); jax {machine["jax"]}; '
        f'model tiny ({cfg.param_count() / 1e6:.2f}M parameters, max_seq_len {cfg.max_seq_len}); '
        f'batch_rows {args.batch_rows}; packed rows at least {pack_width_floor(cfg, cfg.max_seq_len)} wide; '
        f'{args.docs} docs per workload, {args.reps} timed pass(es)', flush=True)

  rows = []
  for name, requests in workloads(args.docs, args.seed).items():
    lms = {mode: ModelLM(graphdef, cfg, params, tok, mesh, batch_rows=args.batch_rows, **kw)
           for mode, kw in MODES.items()}
    by_mode = measure(lms, requests, args.reps)
    ref = by_mode[REFERENCE]['result']
    ref_ll = np.array([ll for ll, _ in ref])
    for mode, m in by_mode.items():
      result = m.pop('result')
      ll = np.array([ll for ll, _ in result])
      m['max_rel_diff_vs_one_per_row'] = float(np.max(np.abs(ll - ref_ll) / np.maximum(1.0, np.abs(ref_ll))))
      m['is_greedy_agrees'] = [g for _, g in result] == [g for _, g in ref]
      m['speedup_vs_one_per_row'] = m['requests_per_sec'] / by_mode[REFERENCE]['requests_per_sec']
      rows.append(dict(workload=name, mode=mode, **m))
      print(f'  {name:12s} {mode:14s} {m["requests_per_sec"]:8.1f} req/s  x{m["speedup_vs_one_per_row"]:.2f}  '
            f'{m["forward_rows"]} rows', flush=True)

  header = ('| workload | mode | requests | truncated | forward rows | row fill | tokens forward | seconds '
            '| requests/s | vs one per row | max rel diff | is_greedy same |')
  lines = [header, '|' + '---|' * (header.count('|') - 1)]
  for r in rows:
    lines.append(f'| {r["workload"]} | {r["mode"]} | {r["requests"]} | {r["truncated"]} | {r["forward_rows"]} | '
                 f'{r["row_fill"]:.2f} | {r["tokens_forward"]} | {r["seconds"]:.2f} | {r["requests_per_sec"]:.1f} | '
                 f'{r["speedup_vs_one_per_row"]:.2f}x | {r["max_rel_diff_vs_one_per_row"]:.1e} | '
                 f'{"yes" if r["is_greedy_agrees"] else "NO"} |')
  print('\n'.join(lines))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model = dict(size='tiny', max_seq_len=cfg.max_seq_len, params=cfg.param_count(),
                 pack_floor=pack_width_floor(cfg, cfg.max_seq_len))
    with open(args.out, 'w') as f:
      json.dump(dict(command=' '.join(sys.argv), machine=machine, model=model, batch_rows=args.batch_rows,
                     docs=args.docs, reps=args.reps, rows=rows), f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
