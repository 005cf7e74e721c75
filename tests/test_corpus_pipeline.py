"""The corpus pipeline end to end: counts add up, planted duplicates and PII handled, bad
input counted, local and Beam runners give identical output, nothing done twice, an
interrupted run never looks complete, and train.py trains on the produced TFDS dataset."""

import dataclasses
import glob
import gzip
import json
import os
import re

import pytest

from configs import corpus as corpus_config
from llm.corpus import pipeline, webgen
from llm.corpus.readers import CorpusInputError

ARTICLE = ('The committee met on Tuesday to discuss the new library and its opening hours. '
           'Members agreed that the building should stay open later in the evening. '
           'Several of them offered to help with the reading programme for children.\n'
           'The proposal will be presented to the town council next month, the chair said. '
           'A plan to repair the roof of the old hall was also put forward by two members. '
           'Volunteers have already collected more than two hundred donated books for it.\n'
           'The mayor said that the budget for the project is still being reviewed by staff. '
           'Local schools hope to bring their pupils to the library every week of the year.')

OTHER = ('Residents were invited to share their ideas at a meeting in the square on Friday. '
         'Some asked for more computers, while others wanted a quiet study room upstairs.\n'
         'The architect presented drawings that kept the original brick front of the building. '
         'A small cafe near the entrance could open by the end of the summer, she explained.\n'
         'Parents asked whether the children\'s section would have its own entrance and garden. '
         'The council will publish the final design and the timetable in the spring.')


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
  """A small web-like corpus plus planted duplicates, PII and broken files."""
  d = tmp_path_factory.mktemp('raw')
  webgen.write_corpus(str(d), num_docs=300, shards=2, seed=3)
  planted = [
      {'text': ARTICLE, 'url': 'a'},
      {'text': ARTICLE, 'url': 'b'},  # exact duplicate of the line before
      {'text': ARTICLE.replace('Tuesday', 'Monday').replace('two hundred', 'three hundred'), 'url': 'c'},
      {'text': OTHER + '\n' + ARTICLE.split('\n')[-1] +  # a line a already has
               '\nWrite to jane.doe@example.org or call (555) 123-4567 from 81.2.69.160 today, she said.',
       'url': 'd'},
  ]
  with gzip.open(d / 'planted.jsonl.gz', 'wt') as f:
    for p in planted:
      f.write(json.dumps(p) + '\n')
    f.write('{"not json\n')
    f.write(json.dumps({'title': 'no text field'}) + '\n')
  full = gzip.compress(''.join(json.dumps({'text': ARTICLE + f' Item {i}.'}) + '\n' for i in range(50)).encode())
  (d / 'truncated.jsonl.gz').write_bytes(full[:len(full) // 2])
  (d / 'empty.jsonl').write_bytes(b'')
  return d


def make_cfg(raw, out, **kw):
  c = corpus_config.get_config('smoke=True')
  c.inputs = f'{raw}/*.jsonl.gz,{raw}/*.jsonl'
  c.output = str(out)
  c.val_fraction = 0.2
  c.write_outcomes = True
  for k, v in kw.items():
    c[k] = v
  return pipeline.from_config(c)


def read_shards(out):
  rows = {}
  for path in sorted(glob.glob(os.path.join(out, 'clean', '*.jsonl.gz'))):
    with gzip.open(path, 'rt') as f:
      rows[os.path.basename(path)] = [json.loads(l) for l in f]
  return rows


def read_outcomes(out):
  with gzip.open(os.path.join(out, 'outcomes.jsonl.gz'), 'rt') as f:
    return {o['id']: o for o in map(json.loads, f)}


@pytest.fixture(scope='module')
def local_run(raw, tmp_path_factory):
  out = tmp_path_factory.mktemp('local')
  summary = pipeline.run(make_cfg(raw, out), log=lambda *_: None)
  return out, summary


def test_counts_add_up_and_outputs_are_sorted_shards(local_run):
  out, summary = local_run
  t = summary['totals']
  assert t['counts_add_up']
  removed = sum(s['docs_removed'] for s in summary['funnel'])
  outcomes = read_outcomes(out)
  assert t['docs_in'] == len(outcomes)
  kept = [o for o in outcomes.values() if o['kept']]
  assert t['docs_out'] == len(kept)
  assert t['docs_in'] == t['docs_out'] + removed
  # Only enabled stages are listed: the bad-words filter is off by default.
  assert [s['stage'] for s in summary['funnel']] == pipeline.stages(make_cfg('x', 'y'))
  assert 'bad_words' not in pipeline.stages(make_cfg('x', 'y'))
  shards = read_shards(out)
  ids = [r['id'] for rows in shards.values() for r in rows]
  assert sorted(ids) == sorted(o['id'] for o in kept)
  for rows in shards.values():
    assert [r['id'] for r in rows] == sorted(r['id'] for r in rows)
  assert any(n.startswith('validation-') and rows for n, rows in shards.items())
  assert os.path.exists(os.path.join(out, 'report', 'report.md'))
  assert os.path.exists(os.path.join(out, 'DONE'))


def test_planted_duplicates_pii_and_bad_input(local_run, raw):
  out, summary = local_run
  files = sorted(glob.glob(f'{raw}/*.jsonl.gz') + glob.glob(f'{raw}/*.jsonl'))
  fi = files.index(str(raw / 'planted.jsonl.gz'))
  outcomes = read_outcomes(out)
  a, b, c, d = (outcomes[f'{fi:05d}/{i:09d}'] for i in range(4))
  assert a['kept'] and not b['kept'] and b['removed_by'] == 'exact_dedup'
  assert not c['kept'] and c['removed_by'] == 'near_dedup'
  # d shares its first lines with a (smaller id): they are removed, the PII line stays, scrubbed.
  assert d['kept'] and d['edits'].get('line_dedup', 0) > 0
  assert d['pii'] == {'email': 1, 'phone': 1, 'ip': 1}
  text = {r['id']: r['text'] for rows in read_shards(out).values() for r in rows}[d['id']]
  assert '<EMAIL>' in text and '<PHONE>' in text and '<IP>' in text
  assert 'jane.doe@example.org' not in text
  all_text = ' '.join(r['text'] for rows in read_shards(out).values() for r in rows)
  assert not re.search(r'[\w.]+@[\w-]+\.(org|com|net)\b', all_text)
  # Broken files are counted per file, not fatal.
  report = json.load(open(os.path.join(out, 'report', 'report.json')))
  problems = {os.path.basename(p['path']): p for p in report['files']['problems']}
  assert problems['truncated.jsonl.gz']['truncated'] and problems['empty.jsonl']['empty_file']
  assert problems['planted.jsonl.gz']['bad_json'] == 1 and problems['planted.jsonl.gz']['missing_text'] == 1


def test_beam_runner_gives_identical_output(local_run, raw, tmp_path):
  local_out, local_summary = local_run
  beam_out = tmp_path / 'beam'
  # Worker processes, as on a real runner: files written by another process must still be
  # byte-identical.
  beam_summary = pipeline.run(make_cfg(raw, beam_out, runner='beam', beam_args=(
      '--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing')),
                              log=lambda *_: None)
  assert read_shards(local_out) == read_shards(beam_out)
  for name in read_shards(local_out):
    assert (local_out / 'clean' / name).read_bytes() == (beam_out / 'clean' / name).read_bytes()
  assert read_outcomes(local_out) == read_outcomes(beam_out)
  strip = lambda s: {k: v for k, v in s.items() if k not in ('timing', 'config', 'plots')}
  assert strip(local_summary) == strip(beam_summary)


def test_rerun_does_no_work_and_changes_are_picked_up(raw, tmp_path):
  out = tmp_path / 'out'
  cfg = make_cfg(raw, out)
  pipeline.run(cfg, log=lambda *_: None)
  done = (out / 'DONE').read_text()
  messages = []
  pipeline.run(cfg, log=messages.append)
  assert any('up to date' in m for m in messages)
  assert (out / 'DONE').read_text() == done
  # A changed threshold re-runs (from the per-file cache only where the rules are unchanged).
  cfg2 = dataclasses.replace(cfg, val_fraction=0.5)
  cache_before = sorted(os.listdir(out / 'cache'))
  messages = []
  pipeline.run(cfg2, log=messages.append)
  assert not any('up to date' in m for m in messages)
  assert sorted(os.listdir(out / 'cache')) == cache_before  # stage 1 reused, not recomputed


def test_interrupted_run_leaves_nothing_that_looks_complete(raw, tmp_path, monkeypatch):
  from llm.corpus import tfds_builder
  out = tmp_path / 'out'
  cfg = dataclasses.replace(make_cfg(raw, out), write_tfds=True)

  def boom(self, paths):
    yield from []
    raise KeyboardInterrupt('simulated interruption')

  monkeypatch.setattr(tfds_builder.CleanCorpus, '_generate_examples', boom)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(cfg, log=lambda *_: None)
  assert not (out / 'DONE').exists()
  assert not os.path.exists(tfds_builder.dataset_dir(str(out / 'tfds'), cfg.name, cfg.version))
  from llm.data import DataError, read_tfds
  with pytest.raises(DataError, match='no prepared TFDS dataset'):
    read_tfds(tfds_builder.dataset_dir(str(out / 'tfds'), cfg.name, cfg.version))


def test_bad_config_and_inputs_give_clear_errors(tmp_path):
  c = corpus_config.get_config('smoke=True')
  with pytest.raises(ValueError, match='config.inputs'):
    pipeline.from_config(c)
  c.inputs = str(tmp_path / 'nothing*.jsonl')
  c.output = str(tmp_path / 'out')
  with pytest.raises(CorpusInputError, match='nothing'):
    pipeline.run(pipeline.from_config(c), log=lambda *_: None)
  c.runner = 'spark'
  (tmp_path / 'a.jsonl').write_text(json.dumps({'text': ARTICLE}) + '\n')
  c.inputs = str(tmp_path / 'a.jsonl')
  with pytest.raises(ValueError, match="runner"):
    pipeline.run(pipeline.from_config(c), log=lambda *_: None)


def test_train_py_trains_on_the_produced_dataset(raw, tmp_path):
  import train
  from configs import default
  out = tmp_path / 'corpus'
  cfg = dataclasses.replace(make_cfg(raw, out), write_tfds=True, val_fraction=0.3)
  pipeline.run(cfg, log=lambda *_: None)
  done = json.loads((out / 'DONE').read_text())
  c = default.get_config('smoke=True')
  c.data.sources = f'tfds:{done["tfds_dir"]}'
  c.data.seq_len = 64
  last = train.run(c, str(tmp_path / 'lm'))
  assert last['step'] == c.train.steps
  rows = [json.loads(l) for l in open(tmp_path / 'lm' / 'metrics.jsonl')]
  assert all(r['train_loss'] == r['train_loss'] for r in rows)  # finite, not NaN
  assert any('val_loss' in r for r in rows)


def test_benchmark_command_times_our_pipeline_and_scores_rules(raw, tmp_path):
  from llm.corpus import bench
  inputs = f'{raw}/webgen-*.jsonl.gz'
  result = bench.main(['--inputs', inputs, '--work_dir', str(tmp_path / 'b'), '--datatrove=skip'])
  assert result['ours']['docs_in'] == 300 and result['ours']['docs_per_second'] > 0
  assert json.loads((tmp_path / 'b' / 'bench.json').read_text())['ours']['docs_out'] == result['ours']['docs_out']
  decisions = bench.our_rule_decisions(inputs)
  assert len(decisions) == 300
  assert set(next(iter(decisions.values()))) == set(bench.RULES) | {'fineweb_on_c4_text'}
  # Independent rule decisions agree with the pipeline: a document the pipeline's first
  # rule stage dropped fails that rule here too.
  outcomes = read_outcomes(tmp_path / 'b' / 'ours')
  for i, o in outcomes.items():
    if o['removed_by'] in ('language', 'gopher_repetition', 'gopher_quality'):
      assert decisions[i][o['removed_by']] is False


def test_editing_a_word_list_invalidates_the_caches(raw, tmp_path):
  import shutil
  from llm.corpus.audit import DEFAULT_LISTS_DIR
  lists = tmp_path / 'terms'
  shutil.copytree(DEFAULT_LISTS_DIR, lists)
  cfg = dataclasses.replace(make_cfg(raw, tmp_path / 'out'), identity_terms_dir=str(lists))
  before = pipeline.run_fingerprint(sorted(glob.glob(f'{raw}/*.jsonl.gz')), cfg)
  key = pipeline._file_key(str(raw / 'planted.jsonl.gz'), cfg)
  with open(lists / 'religion.txt', 'a') as f:
    f.write('\nzoroastrians\n')
  assert pipeline.run_fingerprint(sorted(glob.glob(f'{raw}/*.jsonl.gz')), cfg) != before
  assert pipeline._file_key(str(raw / 'planted.jsonl.gz'), cfg) != key


def test_tfds_dataset_is_reused_for_the_same_run_and_rebuilt_for_another(tmp_path):
  from llm.corpus import tfds_builder
  clean = tmp_path / 'clean'
  clean.mkdir()
  for split, n in (('train', 3), ('validation', 1)):
    with gzip.open(clean / f'{split}-00000-of-00001.jsonl.gz', 'wt') as f:
      for i in range(n):
        f.write(json.dumps({'id': f'00000/{i:09d}', 'text': f'{split} text {i}', 'url': ''}) + '\n')
  root = str(tmp_path / 'tfds')
  path = tfds_builder.prepare(str(clean), root, 'web', '1.0.0', description='fingerprint A')
  info = os.path.join(path, 'dataset_info.json')
  stamp = os.stat(info).st_mtime_ns
  assert tfds_builder.prepare(str(clean), root, 'web', '1.0.0', description='fingerprint A') == path
  assert os.stat(info).st_mtime_ns == stamp  # same run: not rebuilt
  tfds_builder.prepare(str(clean), root, 'web', '1.0.0', description='fingerprint B')
  assert json.load(open(info))['configDescription'] == 'fingerprint B'
  assert not [d for d in os.listdir(root) if d.startswith('.tmp')]  # temporary build dirs cleaned up
  from llm.data import read_tfds
  train, val = read_tfds(path)
  assert train == ['train text 0', 'train text 1', 'train text 2'] and val == ['validation text 0']
