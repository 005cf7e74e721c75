"""Throughput and decision agreement of the corpus pipeline against datatrove.

    python -m benchmarks.corpus.webgen --out runs/web100k --num_docs 100000
    python -m benchmarks.corpus.bench --inputs 'runs/web100k/*.jsonl.gz' --work_dir runs/bench

Both pipelines run the same default stages (language id with the same fastText lid.176.ftz,
Gopher repetition and quality, C4, FineWeb, exact dedup, MinHash dedup, PII) on the same
input, each in one process on one core (``workers=1``, datatrove ``tasks=1, workers=1``),
from cold (no cache). Reported: documents per second per core (wall and CPU), the keep/drop
agreement of the whole pipelines, and per rule the agreement when every rule is applied to
every document on its own (so a rule is compared on all documents, not only the ones an
earlier rule let through). datatrove is only needed here: ``pip install 'datatrove[processing]' spacy``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import time
from typing import Any, Sequence

from benchmarks.corpus import datatrove_ref
from llm.data.clean import pipeline, readers, rules
from llm.perf import cpu_model
from llm.data.clean.text import Analysis

RULES = ('language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb')


def _cpu() -> float:
  s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
  return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def run_ours(inputs: str, work_dir: str, all_rules: bool) -> dict[str, Any]:
  """Our default pipeline, one worker, from cold; returns timing and the decisions path."""
  out = os.path.join(work_dir, 'ours')
  shutil.rmtree(out, ignore_errors=True)
  cfg = pipeline.PipelineConfig(inputs=inputs, output=out, workers=1, write_tfds=False,
                                write_outcomes=True, all_rules=all_rules)
  t, c = time.time(), _cpu()
  summary = pipeline.run(cfg, log=lambda *_: None)
  wall, cpu = time.time() - t, _cpu() - c
  n = summary['totals']['docs_in']
  return {'docs_in': n, 'docs_out': summary['totals']['docs_out'], 'seconds': wall, 'cpu_seconds': cpu,
          'docs_per_second': n / wall, 'timing': summary.get('timing', {}),
          'outcomes': os.path.join(out, 'outcomes.jsonl.gz')}


def our_rule_decisions(inputs: str) -> dict[str, dict[str, bool]]:
  """Every rule on every document's original text, independently: id -> rule -> keep."""
  cfg = rules.RulesConfig()
  lid = rules.LanguageId(cfg.language)
  fns = {'language': lid, 'gopher_repetition': lambda a: rules.gopher_repetition(a, cfg.gopher_repetition),
         'gopher_quality': lambda a: rules.gopher_quality(a, cfg.gopher_quality),
         'c4': lambda a: rules.c4(a, cfg.c4), 'fineweb': lambda a: rules.fineweb(a, cfg.fineweb)}
  out: dict[str, dict[str, bool]] = {}
  rc = readers.ReaderConfig()
  for path in readers.list_files(inputs):
    for doc in readers.read_file(path, path, rc, pipeline.FileStats(path=path)):
      a = Analysis(doc.text)
      row = {name: fn(a).keep for name, fn in fns.items()}
      v = fns['c4'](a)
      row['fineweb_on_c4_text'] = fns['fineweb'](Analysis(v.text if v.text is not None else doc.text)).keep if v.keep else None
      out[doc.id] = row
  return out


def _agreement(a: dict[str, Any], b: dict[str, Any], key) -> tuple[int, int]:
  both = [i for i in a if i in b and key(a[i]) is not None and key(b[i]) is not None]
  return sum(key(a[i]) == key(b[i]) for i in both), len(both)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--inputs', required=True, help='comma-separated globs of JSONL(.gz) files')
  p.add_argument('--work_dir', required=True)
  p.add_argument('--datatrove', choices=('run', 'reuse', 'skip'), default='run',
                 help="'reuse': read the result JSON of an earlier `python -m benchmarks.corpus.datatrove_ref` "
                      'run from --datatrove_json (its work_dir must hold decisions.jsonl)')
  p.add_argument('--datatrove_json', default='', help="with --datatrove=reuse")
  p.add_argument('--rule_inputs', default='', help='globs for the per-rule agreement (default: --inputs); '
                 'every datatrove filter on every document is slow, so a subset is practical')
  p.add_argument('--ours', choices=('run', 'reuse'), default='run',
                 help="'reuse': take our timing from work_dir/ours.json of an earlier run")
  p.add_argument('--no_all_rules', action='store_true', help='stop at the first failing rule (no overlap stats)')
  args = p.parse_args(argv)
  os.makedirs(args.work_dir, exist_ok=True)
  result: dict[str, Any] = {'inputs': args.inputs, 'machine': cpu_model()}
  print(f'machine: {result["machine"]}', flush=True)

  ours_json = os.path.join(args.work_dir, 'ours.json')
  if args.ours == 'run':
    ours = run_ours(args.inputs, args.work_dir, all_rules=not args.no_all_rules)
    with open(ours_json, 'w') as f:
      json.dump(ours, f, indent=1, default=str)
  else:
    with open(ours_json) as f:
      ours = json.load(f)
  result['ours'] = {k: v for k, v in ours.items() if k != 'outcomes'}
  print(f"ours: {ours['docs_in']} docs in {ours['seconds']:.1f} s = {ours['docs_per_second']:.1f} docs/s/core "
        f"(CPU {ours['cpu_seconds']:.1f} s); kept {ours['docs_out']}", flush=True)
  if args.datatrove != 'skip':
    files = readers.list_files(args.inputs)
    dt_dir = os.path.join(args.work_dir, 'datatrove')
    if args.datatrove == 'run':
      dt = datatrove_ref.run_datatrove(files, dt_dir, tasks=1, workers=1)
    else:
      with open(args.datatrove_json) as f:
        dt = json.load(f)
    result['datatrove'] = {k: dt.get(k) for k in ('docs_in', 'docs_out', 'seconds_total', 'cpu_seconds_total',
                                                   'docs_per_second', 'docs_per_cpu_second', 'seconds_per_stage')}
    print(f"datatrove: {dt['docs_in']} docs in {dt['seconds_total']:.1f} s = {dt['docs_per_second']:.1f} docs/s/core "
          f"(CPU {dt.get('cpu_seconds_total', float('nan')):.1f} s); kept {dt['docs_out']}", flush=True)
    result['speedup_wall'] = ours['docs_per_second'] / dt['docs_per_second']
    result['speedup_cpu'] = (ours['docs_in'] / ours['cpu_seconds']) / dt['docs_per_cpu_second']

    # Whole-pipeline keep/drop. datatrove has no cross-document line dedup, so documents we
    # drop only because line dedup emptied them count as kept for "the rules both implement".
    with gzip.open(ours['outcomes'], 'rt') as f:
      mine = {o['id']: o for o in map(json.loads, f)}
    with open(dt['decisions_path']) as f:
      theirs = {d['id']: d for d in map(json.loads, f)}
    kept = lambda d: d['kept'] or d.get('removed_by') == 'line_dedup_empty'
    same, n = _agreement(mine, theirs, kept)
    same_all, _ = _agreement(mine, theirs, lambda d: d['kept'])
    result['pipeline_agreement'] = {'same': same, 'docs': n, 'fraction': same / max(n, 1),
                                    'fraction_counting_line_dedup': same_all / max(n, 1)}

    rule_inputs = args.rule_inputs or args.inputs
    rd_path = datatrove_ref.rule_decisions(readers.list_files(rule_inputs), os.path.join(args.work_dir, 'datatrove_rules'))
    with open(rd_path) as f:
      their_rules = {d['id']: d for d in map(json.loads, f)}
    my_rules = our_rule_decisions(rule_inputs)
    result['rule_agreement'] = {'inputs': rule_inputs}
    for name in RULES + ('fineweb_on_c4_text',):
      s, m = _agreement(my_rules, their_rules, lambda d, k=name: d.get(k))
      result['rule_agreement'][name] = {'same': s, 'docs': m, 'fraction': s / max(m, 1)}
      print(f'  {name:20s} agreement {s}/{m} = {100 * s / max(m, 1):.2f}%')
    print(f"pipeline keep/drop agreement {100 * result['pipeline_agreement']['fraction']:.2f}% "
          f"({100 * result['pipeline_agreement']['fraction_counting_line_dedup']:.2f}% counting line dedup); "
          f"speedup {result['speedup_wall']:.2f}x wall, {result['speedup_cpu']:.2f}x CPU", flush=True)
  with open(os.path.join(args.work_dir, 'bench.json'), 'w') as f:
    json.dump(result, f, indent=1, default=str)
  return result


if __name__ == '__main__':
  main()
