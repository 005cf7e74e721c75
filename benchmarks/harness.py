"""lm-evaluation-harness's Hugging Face backend against our in-process evaluator, side by side.

  python benchmarks/harness.py --workdir=runs/default --limit=300 --out=runs/harness_bench.json

Both score the same weights (``--workdir`` exported once with ``llm.hf.export``) on every
shipped multiple-choice, log-likelihood and perplexity task, back to back in one process:

* ours: ``llm.eval.tasks.evaluate_task`` with ``ModelLM`` (packed rows, shared contexts), as
  ``train.py``'s evaluate loop runs it;
* the harness: ``HFLM`` (transformers + torch on the CPU, float32) at each of
  ``--hf_batch_sizes``; its best batch size per task is the one compared.

Throughput is documents per second of time spent inside the LM's request methods (the
harness's ``loglikelihood``/``loglikelihood_rolling``, our ``ModelLM`` calls, compilation
included), so task building and dataset reading, the same code path for both, are left
out; end-to-end seconds are printed too. Per-document log-likelihoods are compared (max
absolute difference) and so are the predictions (the argmax choice), which must be equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llm.perf import cpu_model  # noqa: E402

TASKS = ['sst2', 'sst2_fewshot', 'shakespeare_lastword', 'shakespeare_ppl', 'crows_pairs_english', 'winobias', 'bbq']


class Timed:
  """Wraps an LM's request methods, adding their wall time to ``seconds``."""

  def __init__(self, lm):
    self.seconds = 0.0
    for name in ('loglikelihood', 'loglikelihood_rolling', 'generate_until'):
      fn = getattr(lm, name)
      def timed(*a, _fn=fn, **k):
        t0 = time.perf_counter()
        try:
          return _fn(*a, **k)
        finally:
          self.seconds += time.perf_counter() - t0
      setattr(lm, name, timed)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', default='runs/default')
  p.add_argument('--tasks', default=','.join(TASKS))
  p.add_argument('--limit', type=int, default=300, help='documents per task (0 = all)')
  p.add_argument('--max_length', type=int, default=256, help='tokens per request for both backends')
  p.add_argument('--hf_batch_sizes', default='1,8,32,64')
  p.add_argument('--batch_rows', type=int, default=32, help="our scorer's rows per forward pass")
  p.add_argument('--out', default='')
  args = p.parse_args()

  import lm_eval
  import torch
  from lm_eval.models.huggingface import HFLM
  from lm_eval.tasks import TaskManager

  from llm import hf
  from llm.eval import tasks as T
  from llm.lm_eval_adapter import harness_tasks, load_scorer, per_doc_loglikelihoods

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  task_dir = os.path.join(repo, 'tasks')
  names = [t for t in args.tasks.split(',') if t]
  limit = args.limit or None
  manager = TaskManager(include_path=[task_dir], include_defaults=False)
  found = T.discover([task_dir])
  tmp = tempfile.mkdtemp(prefix='harness_bench_')
  export_dir = os.path.join(tmp, 'export')
  hf.export(args.workdir, export_dir)
  print(f'CPU: {cpu_model()}; torch {torch.__version__} threads '
        f'{torch.get_num_threads()}; exported {args.workdir} to {export_dir}', flush=True)

  # ----- Ours -------------------------------------------------------------------------------
  lm = load_scorer(args.workdir, batch_rows=args.batch_rows, max_length=args.max_length)
  ours = {}
  for name in names:
    task = T.load_task(found[name])
    before = lm.stats['seconds'] + lm.stats['generate_seconds']
    t0 = time.perf_counter()
    result = T.evaluate_task(task, lm, limit=limit, bootstrap_iters=0)
    ours[name] = dict(n=result.n, wall=time.perf_counter() - t0, metrics=result.metrics,
                      docs=per_doc_loglikelihoods(result.samples),
                      lm_seconds=lm.stats['seconds'] + lm.stats['generate_seconds'] - before)
    print(f'ours {name}: {result.n} docs, {ours[name]["lm_seconds"]:.2f}s in the LM', flush=True)

  # ----- The harness's HF backend, at each batch size --------------------------------------
  theirs: dict[str, dict] = {}
  for bs in [int(b) for b in args.hf_batch_sizes.split(',')]:
    model = HFLM(pretrained=export_dir, dtype='float32', device='cpu', batch_size=bs, max_length=args.max_length)
    for name in names:
      timer = Timed(model)
      t0 = time.perf_counter()
      out = lm_eval.simple_evaluate(model=model, tasks=harness_tasks([name], manager), task_manager=manager,
                                    limit=limit, log_samples=True, bootstrap_iters=0, verbosity='ERROR')
      wall = time.perf_counter() - t0
      entry = dict(batch_size=bs, wall=wall, lm_seconds=timer.seconds,
                   docs=per_doc_loglikelihoods(out['samples'][name]),
                   metrics={k.split(',')[0]: v for k, v in out['results'][name].items()
                            if k.endswith(',none') and '_stderr' not in k})
      print(f'hf bs={bs} {name}: {timer.seconds:.2f}s in the LM', flush=True)
      if name not in theirs or entry['lm_seconds'] < theirs[name]['lm_seconds']:
        theirs[name] = entry
    del model

  # ----- Compare ----------------------------------------------------------------------------
  rows, total_ours, total_theirs, total_docs = [], 0.0, 0.0, 0
  print(f'\n{"task":22s} {"docs":>5s} {"ours docs/s":>11s} {"hf docs/s":>10s} {"hf bs":>5s} {"ratio":>6s} '
        f'{"max|dll|":>9s} {"same pred":>9s}  metric (ours / hf)')
  for name in names:
    o, h = ours[name], theirs[name]
    diffs = [abs(a - b) for d in o['docs'] for a, b in zip(o['docs'][d], h['docs'][d])]
    same = all(len(o['docs'][d]) < 2 or max(range(len(o['docs'][d])), key=o['docs'][d].__getitem__)
               == max(range(len(h['docs'][d])), key=h['docs'][d].__getitem__) for d in o['docs'])
    metric = next(iter(o['metrics']))
    row = dict(task=name, docs=o['n'], ours_docs_per_s=o['n'] / o['lm_seconds'],
               hf_docs_per_s=o['n'] / h['lm_seconds'], hf_batch_size=h['batch_size'],
               ratio=h['lm_seconds'] / o['lm_seconds'], max_abs_ll_diff=max(diffs) if diffs else 0.0,
               same_predictions=same and o['docs'].keys() == h['docs'].keys(), metric=metric,
               ours_metric=o['metrics'][metric], hf_metric=h['metrics'].get(metric),
               ours_lm_seconds=o['lm_seconds'], hf_lm_seconds=h['lm_seconds'], ours_wall=o['wall'], hf_wall=h['wall'])
    rows.append(row)
    total_ours += o['lm_seconds']
    total_theirs += h['lm_seconds']
    total_docs += o['n']
    print(f'{name:22s} {o["n"]:5d} {row["ours_docs_per_s"]:11.1f} {row["hf_docs_per_s"]:10.1f} {h["batch_size"]:5d} '
          f'{row["ratio"]:5.2f}x {row["max_abs_ll_diff"]:9.1e} {str(row["same_predictions"]):>9s}  {metric} '
          f'{row["ours_metric"]:.4f} / {row["hf_metric"]:.4f}')
  print(f'{"all":22s} {total_docs:5d} {total_docs / total_ours:11.1f} {total_docs / total_theirs:10.1f} {"best":>5s} '
        f'{total_theirs / total_ours:5.2f}x')
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(dict(cpu=cpu_model(), cores=os.cpu_count(), torch=torch.__version__, workdir=args.workdir,
                     limit=args.limit, max_length=args.max_length, rows=rows,
                     overall_ratio=total_theirs / total_ours), f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
