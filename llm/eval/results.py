"""Writing evaluation results: lm-evaluation-harness's results layout, samples, a table.

``eval_results.json`` follows the harness's output so that its readers (and people who
know it) find what they expect::

  {"results": {"sst2": {"alias": "sst2", "acc,none": 0.51, "acc_stderr,none": 0.017, ...}},
   "configs": {"sst2": {...task definition...}}, "versions": {...}, "n-shot": {...},
   "higher_is_better": {...}, "n-samples": {"sst2": {"original": 872, "effective": 872}},
   "config": {...what was evaluated...}, "throughput": {...requests/s per evaluator...}}

Per-example records go to ``samples_<task>.jsonl`` (prompt, choices or generation,
per-choice log-likelihoods, prediction, gold).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from typing import Any

from llm.eval.evaluators import EvalOutput
from llm.eval.tasks import TaskResult


def _all(results: Iterable[TaskResult]) -> list[TaskResult]:
  out = []
  for r in results:
    out.append(r)
    out.extend(r.subtasks)
  return out


def flat_metrics(outputs: Iterable[EvalOutput]) -> dict[str, float]:
  """{'eval/<task>/<metric>': value} for metrics.jsonl and TensorBoard (finite numbers only)."""
  row = {}
  for out in outputs:
    for r in _all(out.results):
      for metric, value in r.metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          row[f'eval/{r.name}/{metric}'] = float(value)
    if out.lm_stats.get('requests_per_sec'):
      row[f'eval/{out.name}/requests_per_sec'] = float(out.lm_stats['requests_per_sec'])
  return row


# What an evaluation writes into its workdir; a rerun removes these first, so a reused
# workdir never mixes two runs' files (and an interrupted run leaves no eval_results.json).
OUTPUT_PATTERNS = ('eval_results.json', 'eval_results.json.tmp', 'samples_*.jsonl', 'bias_report.md',
                   'crows_pairs_english.png', 'winobias.png', 'bbq.png')


def clear_previous(workdir: str) -> list[str]:
  """Remove a previous evaluation's outputs from ``workdir``; returns what was removed."""
  import glob
  removed = sorted({p for pattern in OUTPUT_PATTERNS for p in glob.glob(os.path.join(workdir, pattern))})
  for path in removed:
    os.remove(path)
  return removed


def write_results(workdir: str, outputs: list[EvalOutput], config: dict[str, Any]) -> str:
  """Write eval_results.json and samples_<task>.jsonl into ``workdir``; returns the json path."""
  doc: dict[str, Any] = {'results': {}, 'configs': {}, 'versions': {}, 'n-shot': {}, 'higher_is_better': {},
                         'n-samples': {}, 'config': config, 'throughput': {},
                         'date': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
  for out in outputs:
    doc['throughput'][out.name] = {'seconds': out.seconds, **out.lm_stats,
                                   'tasks': [r.name for r in out.results]}
    for r in out.results:
      doc['configs'][r.name] = r.config
      doc['versions'][r.name] = r.config.get('metadata', {}).get('version', 1.0)
      for sub in [r, *r.subtasks]:
        doc['results'][sub.name] = sub.results_entry()
        doc['n-shot'][sub.name] = r.num_fewshot
        doc['higher_is_better'][sub.name] = sub.higher_is_better
        doc['n-samples'][sub.name] = {'original': sub.n, 'effective': sub.n}
      with open(os.path.join(workdir, f'samples_{r.name}.jsonl'), 'w') as f:
        for s in r.samples:
          f.write(json.dumps(s, default=_jsonable, ensure_ascii=False) + '\n')
  path = os.path.join(workdir, 'eval_results.json')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(doc, f, indent=2, default=_jsonable, ensure_ascii=False)
  os.replace(tmp, path)  # never a half-written results file
  return path


def _jsonable(x):
  try:
    import numpy as np
    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
  except ImportError:  # pragma: no cover
    pass
  return str(x)


def table(outputs: list[EvalOutput]) -> str:
  """One text table: task, metric, value, stderr, n, few-shot k."""
  rows = [('task', 'metric', 'value', 'stderr', 'n', 'k')]
  for out in outputs:
    for r in out.results:
      for sub in [r, *r.subtasks]:
        for metric, value in sub.metrics.items():
          se = sub.stderrs.get(metric)
          rows.append((sub.name, metric, _fmt(value), 'N/A' if se is None else _fmt(se), str(sub.n),
                       str(r.num_fewshot)))
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
           for row in rows]
  lines.insert(1, '  '.join('-' * w for w in widths))
  return '\n'.join(lines)


def _fmt(v) -> str:
  if isinstance(v, float):
    return f'{v:.4f}' if abs(v) < 1e4 else f'{v:.4g}'
  return str(v)
