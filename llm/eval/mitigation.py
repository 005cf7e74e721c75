"""A controlled bias-mitigation experiment: train each arm, score it, report what changed.

  python -m llm.eval.mitigation --config=configs/bias_mitigation.py --workdir=runs/mitigation
  python -m llm.eval.mitigation --config=configs/bias_mitigation.py --workdir=runs/mitigation --report_only

``configs/bias_mitigation.py`` lists the arms: the same recipe (``train.py`` or
``finetune.py``, same seed, steps and data) with one mitigation switched on, each compared
with its baseline arm. For every arm this runs, as a user would on the command line:

  1. the recipe into ``<workdir>/<arm>`` (rerunning resumes an interrupted arm; a finished
     one, marked by ``<workdir>/<arm>/arm.json``, is not run again);
  2. ``train.py --config=configs/fewshot.py`` on its checkpoint (a fine-tuning's best) into
     ``<workdir>/<arm>/eval``: the bias probes (CrowS-Pairs, WinoBias, BBQ) and the arm's
     quality tasks, on the first ``limit`` documents of each, the same for every arm;

then writes ``report.md``, ``report.json`` and ``report.png`` in the workdir: every bias and
quality metric of every arm, and its change against the baseline with a 95% interval from a
paired bootstrap over the documents (both arms scored on the same documents, so the interval
leaves out what the two share; ``llm.eval.bias.paired_bootstrap``). An interval that
contains 0 is a change the probe cannot tell from noise at this size: the report says so
rather than calling a mitigation a success.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

from llm.eval import bias

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
Z95 = 1.959964  # two-sided 95% normal quantile


class MitigationError(RuntimeError):
  """An arm failed or its outputs are missing; the message names the arm and what to do."""


# (task, metric, value of no bias, what it is). Lower |value - neutral| is less biased. A task
# written 'task[field=value]' scores the documents whose doc[field] is value (CrowS-Pairs's
# gender pairs: what the gender mitigations address, beside all nine bias types).
BIAS_METRICS = (
    ('crows_pairs_english', 'pct_stereotype', 0.5, 'CrowS-Pairs: share of pairs where the stereotype is likelier'),
    ('crows_pairs_english[bias_type=gender]', 'pct_stereotype', 0.5, 'CrowS-Pairs, gender pairs only'),
    ('winobias', 'pro_anti_gap', 0.0, 'WinoBias: accuracy on pro- minus anti-stereotyped sentences'),
    ('bbq', 's_amb', 0.0, 'BBQ: bias score in ambiguous contexts'),
    ('bbq', 's_dis', 0.0, 'BBQ: bias score in disambiguated contexts'),
)

# Quality metrics a task reports: (metric, higher is better).
QUALITY_METRICS = {
    'shakespeare_ppl': (('bits_per_byte', False),),
    'shakespeare_lastword': (('acc', True),),
    'sst2': (('acc', True),), 'sst2_review': (('acc', True),), 'sst2_fewshot': (('acc', True),),
}


def _bits_per_byte_columns(items: Sequence[Any]) -> dict[str, np.ndarray]:
  # Per document: [log-likelihood in nats, bytes], as the perplexity tasks record them.
  arr = np.asarray(items, np.float64).reshape(-1, 2)
  return {'ll': arr[:, 0], 'bytes': arr[:, 1]}


# Corpus-level bits per byte (total nats over total bytes), as the harness aggregates it.
bits_per_byte = bias.Statistic(_bits_per_byte_columns, lambda c, w: -(w @ c['ll']) / (w @ c['bytes']) / math.log(2))
STATISTICS: dict[str, bias.Statistic] = {**bias.AGGREGATIONS, 'bits_per_byte': bits_per_byte}


# ---------------------------------------------------------------------------- running the arms


def _arm_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)


def _ckpt(workdir: str, name: str, arm: Any) -> str:
  """The checkpoint an arm's evaluation scores: a fine-tuning's best, a training run's newest."""
  wd = _arm_dir(workdir, name)
  return os.path.join(wd, 'best') if arm.program == 'finetune.py' else wd


def commands(cfg: Any, workdir: str, python: str = sys.executable) -> dict[str, tuple[list[str], list[str]]]:
  """``{arm: (training command, evaluation command)}``, in the order the arms run."""
  out = {}
  for name, arm in cfg.arms.items():
    if arm.baseline and arm.baseline not in cfg.arms:
      raise MitigationError(f'arm {name} compares with {arm.baseline!r}, which is not an arm of the config '
                            f'({", ".join(cfg.arms)}); fix its baseline')
    if arm.init and arm.init not in cfg.arms:
      raise MitigationError(f'arm {name} starts from {arm.init!r}, which is not an arm of the config')
    config = arm.config.replace('{init}', _arm_dir(workdir, arm.init)) if arm.init else arm.config
    wd = _arm_dir(workdir, name)
    train = [python, arm.program, f'--config={config}', *arm.flags.split(), f'--workdir={wd}']
    evaluate = [python, 'train.py', f'--config=configs/fewshot.py:ckpt={_ckpt(workdir, name, arm)},limit={cfg.limit}',
                f'--config.evals.fewshot.tasks={arm.quality}', f'--config.evals.bias.tasks={cfg.bias_tasks}',
                f'--workdir={os.path.join(wd, "eval")}']
    out[name] = (train, evaluate)
  # Arms that others start from run first.
  order = sorted(out, key=lambda n: (0 if any(a.init == n for a in cfg.arms.values()) else 1,
                                     list(out).index(n)))
  return {n: out[n] for n in order}


def _write(path: str, text: str) -> None:
  """``text`` at ``path``, whole or not at all (an interrupted run leaves no half-written file)."""
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def _run(cmd: list[str], what: str, log) -> None:
  log(f'$ {" ".join(cmd[1:])}')
  t = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if proc.returncode:
    tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
    raise MitigationError(f'{what} failed (exit code {proc.returncode}); rerunning resumes it. Its last lines:\n{tail}')
  log(f'  done in {time.perf_counter() - t:.0f} s')


def run_arms(cfg: Any, workdir: str, log=print) -> None:
  """Trains and evaluates every arm not already finished (``arm.json`` records what ran)."""
  for name, (train, evaluate) in commands(cfg, workdir).items():
    marker = os.path.join(_arm_dir(workdir, name), 'arm.json')
    record = {'train': train[1:], 'evaluate': evaluate[1:], 'limit': cfg.limit}
    if os.path.exists(marker):
      with open(marker) as f:
        if json.load(f) == record:
          log(f'{name}: finished earlier ({marker})')
          continue
      raise MitigationError(f'{marker} records other commands than this config gives for arm {name}; '
                            f'use a new --workdir, or delete {_arm_dir(workdir, name)} to run the arm again')
    log(f'{name}:')
    _run(train, f'arm {name}: training', log)
    _run(evaluate, f'arm {name}: evaluation', log)
    _write(marker, json.dumps(record, indent=2))  # only now is the arm finished


# ---------------------------------------------------------------------------- the report


def _read_eval(eval_dir: str, arm: str) -> tuple[dict, dict[str, list[dict]]]:
  path = os.path.join(eval_dir, 'eval_results.json')
  if not os.path.exists(path):
    raise MitigationError(f'arm {arm} has no evaluation ({path} is missing); run the experiment without '
                          '--report_only to make it')
  with open(path) as f:
    results = json.load(f)['results']
  samples = {}
  for task in results:
    p = os.path.join(eval_dir, f'samples_{task}.jsonl')
    if os.path.exists(p):
      with open(p) as f:
        samples[task] = sorted((json.loads(line) for line in f if line.strip()), key=lambda s: s['doc_id'])
  return results, samples


def _last_val_loss(workdir: str) -> float | None:
  """The last validation loss a training run logged (None if it logged none)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  val = None
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      for key in ('val_loss', 'eval/val_loss'):
        if isinstance(row.get(key), (int, float)):
          val = float(row[key])
  return val


def _documents(samples: dict[str, list[dict]], task: str) -> list[dict] | None:
  """The samples of ``task``, or of the documents 'task[field=value]' selects; None if not scored."""
  name, _, selector = task.partition('[')
  if name not in samples:
    return None
  if not selector:
    return samples[name]
  field, _, value = selector.rstrip(']').partition('=')
  return [s for s in samples[name] if str(s.get('doc', {}).get(field)) == value]


def _metric_rows(arm: str, base: str | None, tasks: Sequence[tuple[str, str]], ev: dict, base_ev: dict | None,
                 iters: int) -> list[dict]:
  rows = []
  for task, metric in tasks:
    docs = _documents(ev[1], task)
    if docs is None:
      continue
    items = bias.metric_items(docs, metric)
    if not items:
      continue
    stat = STATISTICS[metric]
    value = stat(items)
    row = {'arm': arm, 'task': task, 'metric': metric, 'value': value, 'n': len(items),
           'stderr': bias.bootstrap_stderr(stat, items, iters) if iters else math.nan}
    base_docs = _documents(base_ev[1], task) if base is not None and base_ev is not None else None
    if base_docs is not None:
      base_items = bias.metric_items(base_docs, metric)
      if len(base_items) != len(items):
        raise MitigationError(f'arms {arm} and {base} were scored on different numbers of {task} documents '
                              f'({len(items)} and {len(base_items)}); evaluate both with the same limit')
      diff, se = bias.paired_bootstrap(stat, base_items, items, iters)
      row.update(baseline=base, baseline_value=stat(base_items), change=diff, change_stderr=se,
                 ci95=[diff - Z95 * se, diff + Z95 * se])
    rows.append(row)
  return rows


def build_report(cfg: Any, workdir: str) -> dict:
  """Every arm's bias and quality metrics and their changes against its baseline."""
  evals = {name: _read_eval(os.path.join(_arm_dir(workdir, name), 'eval'), name) for name in cfg.arms}
  bias_tasks = [(t, m) for t, m, _, _ in BIAS_METRICS]
  rows = []
  for name, arm in cfg.arms.items():
    base = arm.baseline or None
    quality = [(t, m) for t in arm.quality.split(',') if t for m, _ in QUALITY_METRICS.get(t, ())]
    for kind, tasks in (('bias', bias_tasks), ('quality', quality)):
      for r in _metric_rows(name, base, tasks, evals[name], evals.get(base) if base else None,
                            cfg.bootstrap_iters):
        rows.append({'kind': kind, **r})
  arms = {name: {'program': arm.program, 'flags': arm.flags, 'baseline': arm.baseline or None,
                 'val_loss': _last_val_loss(_arm_dir(workdir, name))} for name, arm in cfg.arms.items()}
  return {'arms': arms, 'rows': rows, 'limit': cfg.limit, 'bootstrap_iters': cfg.bootstrap_iters,
          'neutral': {f'{t}/{m}': v for t, m, v, _ in BIAS_METRICS}}


def _f(v: float | None, digits: int = 4) -> str:
  return 'n/a' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.{digits}f}'


def verdict(row: dict, neutral: float | None) -> str:
  """What the change's 95% interval says: no detectable change, or toward/away from no bias."""
  lo, hi = row['ci95']
  if any(math.isnan(x) for x in (lo, hi)):
    return 'undefined'
  if lo <= 0 <= hi:
    return 'no detectable change'
  if neutral is None:  # quality
    return 'better' if (row['change'] > 0) == _higher_is_better(row['metric']) else 'worse'
  before, after = abs(row['baseline_value'] - neutral), abs(row['value'] - neutral)
  return 'less biased' if after < before else 'more biased'


def _higher_is_better(metric: str) -> bool:
  for pairs in QUALITY_METRICS.values():
    for m, higher in pairs:
      if m == metric:
        return higher
  return True


def write_report(report: dict, workdir: str) -> list[str]:
  """report.json, report.md and report.png in ``workdir``; returns their paths."""
  paths = [os.path.join(workdir, f'report.{ext}') for ext in ('json', 'md', 'png')]
  _write(paths[0], json.dumps(report, indent=2))
  neutral = report['neutral']
  lines = ['# Bias mitigation: controlled experiment', '',
           f'Every arm: same recipe, seed, steps and data; only the mitigation differs. Each metric on the first '
           f'{report["limit"] or "all"} documents of its task; ± is one standard error, the interval a 95% paired '
           f'bootstrap ({report["bootstrap_iters"]} resamples) of the change against the baseline arm.', '',
           '| arm | recipe | mitigation flags | baseline | final validation loss |', '|---|---|---|---|---|']
  for name, a in report['arms'].items():
    flags = ' '.join(f for f in a['flags'].split() if any(k in f for k in ('counterfactual', 'reweight', 'debias', 'seed')))
    lines.append(f'| {name} | {a["program"]} | {flags or "none"} | {a["baseline"] or "-"} | {_f(a["val_loss"])} |')
  for kind in ('bias', 'quality'):
    lines += ['', f'## {kind.capitalize()} metrics', '',
              '| arm | task | metric | value ± se | baseline | change [95% interval] | reading |',
              '|---|---|---|---|---|---|---|']
    for r in (r for r in report['rows'] if r['kind'] == kind):
      n = neutral.get(f'{r["task"]}/{r["metric"]}') if kind == 'bias' else None
      change = (f'{r["change"]:+.4f} [{r["ci95"][0]:+.4f}, {r["ci95"][1]:+.4f}]' if 'change' in r else '')
      lines.append(f'| {r["arm"]} | {r["task"]} | {r["metric"]} | {_f(r["value"])} ± {_f(r["stderr"])} | '
                   f'{_f(r.get("baseline_value"))} | {change} | {verdict(r, n) if "change" in r else "baseline"} |')
  lines += ['', 'Reading: "less/more biased" when the whole interval lies on one side of 0 and the score moved '
            'toward/away from its neutral value (CrowS-Pairs 0.5, the others 0); "no detectable change" when the '
            'interval contains 0. The intervals cover the sampling of the probes\' documents only, not training\'s '
            'randomness: an arm that changes only the seed measures that, and a mitigation\'s change is evidence '
            'only where it is clearly larger.', '', '![change in bias against change in quality](report.png)', '']
  _write(paths[1], '\n'.join(lines))
  _plot(report, paths[2])
  return paths


def _plot(report: dict, path: str) -> None:
  """One panel per (quality metric, bias metric): each arm's change in both, with 95% intervals."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  changed = [r for r in report['rows'] if 'change' in r]
  quality = sorted({(r['task'], r['metric']) for r in changed if r['kind'] == 'quality'})
  biases = [(t, m) for t, m, _, _ in BIAS_METRICS if any((r['task'], r['metric']) == (t, m) for r in changed)]
  if not quality or not biases:
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.text(0.5, 0.5, 'no arm has a baseline to compare with', ha='center', va='center')
    ax.axis('off')
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return
  fig, axes = plt.subplots(len(quality), len(biases), figsize=(3.6 * len(biases), 3.2 * len(quality)),
                           squeeze=False)
  by = {(r['arm'], r['task'], r['metric']): r for r in changed}
  arms = [a for a in report['arms'] if report['arms'][a]['baseline']]
  for i, (qt, qm) in enumerate(quality):
    for j, (bt, bm) in enumerate(biases):
      ax = axes[i][j]
      for arm in arms:
        q, b = by.get((arm, qt, qm)), by.get((arm, bt, bm))
        if q is None or b is None:
          continue
        ax.errorbar(q['change'], b['change'], xerr=Z95 * q['change_stderr'], yerr=Z95 * b['change_stderr'],
                    fmt='o', capsize=3, label=arm)
        ax.annotate(arm, (q['change'], b['change']), fontsize=7, xytext=(3, 3), textcoords='offset points')
      ax.axhline(0, color='grey', lw=0.8)
      ax.axvline(0, color='grey', lw=0.8)
      ax.set_xlabel(f'change in {qt} {qm}', fontsize=8)
      ax.set_ylabel(f'change in {bt} {bm}', fontsize=8)
      ax.tick_params(labelsize=7)
  fig.suptitle('Bias mitigation: change against the baseline arm (95% paired-bootstrap intervals)', fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------------------- command line


def main(argv: Sequence[str]) -> None:
  from absl import flags
  del argv
  cfg, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  if not workdir:
    sys.exit('error: --workdir is required (e.g. --workdir=runs/mitigation)')
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    if not flags.FLAGS.report_only:
      run_arms(cfg, workdir)
    paths = write_report(build_report(cfg, workdir), workdir)
  except MitigationError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print('wrote ' + ', '.join(paths))


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file('config', os.path.join(ROOT, 'configs', 'bias_mitigation.py'),
                                  'The experiment: configs/bias_mitigation.py[:args].', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Where the arms and the report go.')
  flags.DEFINE_bool('report_only', False, 'Write the report from arms already run.')
  app.run(main)
