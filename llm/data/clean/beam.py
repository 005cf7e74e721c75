"""The corpus pipeline on Apache Beam (DirectRunner here; Dataflow, Flink or Spark elsewhere).

    python -m llm.data.clean.pipeline --config=configs/corpus.py --config.runner=beam \\
        --config.beam_args='--runner=DirectRunner --direct_num_workers=2' ...

Same per-document code as the in-process runner (``stages.FileProcessor`` and
``stages.finalize``); the global decisions become groupings whose result does not depend
on how elements are distributed:
  exact dedup   GroupByKey(exact hash) -> keep the smallest id
  near dedup    GroupByKey(band key) -> edges -> one union-find over all edges (the edges
                are few: one per duplicate) -> side input of ids to drop
  lines         GroupByKey(line hash) -> (id, line) to remove for all but the smallest id
                -> CoGroupByKey with the documents
  shards        GroupByKey(shard) -> sort by id -> one file per shard
  report        CombineGlobally(ReportAccumulator)
So the output files are byte-identical to the in-process runner's (tested).
"""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from llm.data.clean import dedup
from llm.data.clean import stages as S
from llm.data.clean.document import DocOutcome, FileStats


class _ProcessFile(beam.DoFn):
  """Stage 1: path -> items (main), outcomes of rule drops, file stats."""

  def __init__(self, cfg: S.PipelineConfig):
    self.cfg = cfg
    self.proc = None

  def setup(self):
    self.proc = S.FileProcessor(self.cfg)

  def process(self, path):
    stats, outcomes, items = self.proc.process_file(path)
    yield beam.pvalue.TaggedOutput('stats', stats)
    kept = {it.outcome.id for it in items}
    for o in outcomes:
      if o.id not in kept:
        yield beam.pvalue.TaggedOutput('dropped', o)
    yield from items


def _exact_groups(kv) -> Iterator:
  _, group = kv
  group = sorted(group, key=lambda it: it.outcome.id)
  yield group[0]
  for it in group[1:]:
    yield beam.pvalue.TaggedOutput('dropped', S.drop(it, 'exact_dedup', 'exact_duplicate'))


def _near_drops(edges: list) -> set[str]:
  reps = dedup.clusters(edges)
  return {i for i, r in reps.items() if i != r}


def _split_near(item: S.Item, drops: set[str]):
  if item.outcome.id in drops:
    yield beam.pvalue.TaggedOutput('dropped', S.drop(item, 'near_dedup', 'minhash_cluster'))
  else:
    yield item


def _line_removals(kv) -> Iterator[tuple[str, int]]:
  key, ids = kv
  ids = sorted(set(ids))
  for i in ids[1:]:
    yield i, key


class _Finalize(beam.DoFn):
  def __init__(self, cfg: S.PipelineConfig):
    self.cfg = cfg
    self.terms = None

  def setup(self):
    from llm.data.clean.audit import TermCounter  # pylint: disable=import-outside-toplevel
    self.terms = TermCounter(self.cfg.identity_terms_dir or None)

  def process(self, kv):
    doc_id, grouped = kv
    (item,) = grouped['item']
    owners = None
    if self.cfg.dedup.lines:
      # Lines owned by a document with a smaller id; the owner's id only has to differ.
      owners = {k: '' for k in grouped['remove']}
    o, text = S.finalize(item, owners, self.cfg, self.terms)
    yield beam.pvalue.TaggedOutput('outcome', o)
    if text is not None:
      yield (o.split, S.shard_of(doc_id, self.cfg.shards)), (doc_id, text, item.url)


class _ReportFn(beam.CombineFn):
  def __init__(self, cfg: S.PipelineConfig, rule_names: list[str]):
    self.cfg, self.rule_names = cfg, rule_names

  def create_accumulator(self):
    from llm.data.clean.report import ReportAccumulator  # pylint: disable=import-outside-toplevel
    return ReportAccumulator(stages=S.stages(self.cfg), rules=self.rule_names,
                             examples_per_rule=self.cfg.examples_per_rule)

  def add_input(self, acc, x):
    if isinstance(x, FileStats):
      acc.add_file_stats(x)
    else:
      acc.add(x)
    return acc

  def merge_accumulators(self, accs):
    accs = list(accs)
    first = accs[0]
    for a in accs[1:]:
      first.merge(a)
    return first

  def extract_output(self, acc):
    return acc


def _write_shard(kv, out_dir: str, shards: int) -> str:
  (split, shard), docs = kv
  return S.write_shard(out_dir, split, shard, shards, docs)


def _save_pickle(obj, path: str) -> None:
  tmp = f'{path}{S.TMP_MARK}{os.getpid()}'
  try:
    with gzip.open(tmp, 'wb') as f:
      pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
  finally:
    S._remove(tmp)  # pylint: disable=protected-access


def run_beam(cfg: S.PipelineConfig, files: list[str], clean_dir: str, work_dir: str):
  """Runs stages 1-4 (up to the clean shards) on Beam; returns (ReportAccumulator, outcomes)."""
  from llm.data.clean import rules  # pylint: disable=import-outside-toplevel
  os.makedirs(clean_dir, exist_ok=True)
  acc_path = os.path.join(work_dir, 'beam_report.pkl.gz')
  outcomes_path = os.path.join(work_dir, 'beam_outcomes.pkl.gz')
  options = PipelineOptions(shlex.split(cfg.beam_args) or ['--runner=DirectRunner'])
  rule_names = rules.RuleChain(cfg.rules).names
  with beam.Pipeline(options=options) as p:
    stage1 = (p | 'Files' >> beam.Create(list(files))
              | 'Reshuffle' >> beam.Reshuffle()
              | 'Rules' >> beam.ParDo(_ProcessFile(cfg)).with_outputs('stats', 'dropped', main='items'))
    items, dropped = stage1.items, [stage1.dropped]
    if cfg.dedup.exact:
      ex = (items | 'ExactKey' >> beam.Map(lambda it: (it.exact, it))
            | 'ExactGroup' >> beam.GroupByKey()
            | 'ExactKeep' >> beam.FlatMap(_exact_groups).with_outputs('dropped', main='items'))
      items = ex.items
      dropped.append(ex.dropped)
    if cfg.dedup.near:
      edges = (items | 'Bands' >> beam.FlatMap(lambda it: [(b, it.outcome.id) for b in it.bands])
               | 'BandGroup' >> beam.GroupByKey()
               | 'Edges' >> beam.FlatMap(lambda kv: dedup.edges_from_bucket(sorted(set(kv[1]))))
               | 'AllEdges' >> beam.combiners.ToList())
      drops = edges | 'Clusters' >> beam.Map(_near_drops)
      nd = items | 'NearSplit' >> beam.FlatMap(_split_near, beam.pvalue.AsSingleton(drops)).with_outputs(
          'dropped', main='items')
      items = nd.items
      dropped.append(nd.dropped)
    keyed = items | 'ById' >> beam.Map(lambda it: (it.outcome.id, it))
    if cfg.dedup.lines:
      removals = (items | 'Lines' >> beam.FlatMap(lambda it: [(k, it.outcome.id) for k in set(it.lines)])
                  | 'LineGroup' >> beam.GroupByKey()
                  | 'LineOwners' >> beam.FlatMap(_line_removals))
    else:
      removals = p | 'NoLines' >> beam.Create([])
    fin = ({'item': keyed, 'remove': removals} | 'Join' >> beam.CoGroupByKey()
           | 'Finalize' >> beam.ParDo(_Finalize(cfg)).with_output_types(Any).with_outputs('outcome', main='docs'))
    _ = (fin.docs | 'ShardGroup' >> beam.GroupByKey()
         | 'WriteShards' >> beam.Map(_write_shard, clean_dir, cfg.shards))
    all_outcomes = tuple(dropped) + (fin.outcome,) | 'AllOutcomes' >> beam.Flatten()
    _ = ((all_outcomes, stage1.stats) | 'WithStats' >> beam.Flatten()
         | 'Report' >> beam.CombineGlobally(_ReportFn(cfg, rule_names))
         | 'SaveReport' >> beam.Map(_save_pickle, acc_path))
    if cfg.write_outcomes:
      _ = (all_outcomes | 'OutcomeList' >> beam.combiners.ToList()
           | 'SaveOutcomes' >> beam.Map(_save_pickle, outcomes_path))
  # Shards that received no document still exist (empty), as in the in-process runner.
  for split in S.SPLITS:
    for s in range(cfg.shards):
      if not os.path.exists(S.shard_path(clean_dir, split, s, cfg.shards)):
        S.write_shard(clean_dir, split, s, cfg.shards, [])
  # The pipeline's results, handed over through files; temporary, so removed once read.
  with gzip.open(acc_path, 'rb') as f:
    acc = pickle.load(f)
  os.remove(acc_path)
  outcomes: list[DocOutcome] = []
  if cfg.write_outcomes:
    with gzip.open(outcomes_path, 'rb') as f:
      outcomes = pickle.load(f)
    os.remove(outcomes_path)
  return acc, outcomes
