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
from benchmarks.corpus import webgen
from llm.data.clean import pipeline
from llm.data.clean.readers import CorpusInputError

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
  outcomes = read_outcomes(out)
  a, b, c, d = (outcomes[f'{raw}/planted.jsonl.gz#{i:09d}'] for i in range(4))
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
  from llm.data.clean import tfds_builder
  out = tmp_path / 'out'
  cfg = dataclasses.replace(make_cfg(raw, out), write_tfds=True)

  def boom(self, paths):
    yield from []
    raise KeyboardInterrupt('simulated interruption')

  monkeypatch.setattr(tfds_builder.CleanCorpus, '_generate_examples', boom)
  with pytest.raises(KeyboardInterrupt):
    pipeline.run(cfg, log=lambda *_: None)
  assert not (out / 'DONE').exists()
  assert temporary_files(out) == []  # the half-built TFDS folder is removed on the way out
  assert not os.path.exists(tfds_builder.dataset_dir(str(out / 'tfds'), cfg.name, cfg.version))
  from llm.data import DataError, read_tfds
  with pytest.raises(DataError, match='no prepared TFDS dataset'):
    read_tfds(tfds_builder.dataset_dir(str(out / 'tfds'), cfg.name, cfg.version))


def test_bad_config_and_inputs_give_clear_errors(tmp_path):
  c = corpus_config.get_config('smoke=True')
  with pytest.raises(CorpusInputError, match='--config.inputs'):
    pipeline.from_config(c)
  c.inputs = str(tmp_path / 'nothing*.jsonl')
  c.output = str(tmp_path / 'out')
  with pytest.raises(CorpusInputError, match='nothing'):
    pipeline.run(pipeline.from_config(c), log=lambda *_: None)
  c.runner = 'spark'
  (tmp_path / 'a.jsonl').write_text(json.dumps({'text': ARTICLE}) + '\n')
  c.inputs = str(tmp_path / 'a.jsonl')
  with pytest.raises(CorpusInputError, match="--config.runner='spark'"):
    pipeline.run(pipeline.from_config(c), log=lambda *_: None)
  assert not (tmp_path / 'out').exists()  # refused before any work


def test_train_py_trains_on_the_produced_dataset(raw, tmp_path, compile_cache):
  import train
  from configs import default
  out = tmp_path / 'corpus'
  # val_fraction=0: the dataset has no validation split (as a small corpus may not), and
  # train.py holds out documents of its train split instead.
  cfg = dataclasses.replace(make_cfg(raw, out), write_tfds=True, val_fraction=0.0)
  pipeline.run(cfg, log=lambda *_: None)
  done = json.loads((out / 'DONE').read_text())
  assert done['splits']['validation'] == 0 and done['splits']['train'] > 0
  assert any('validation split is empty' in n for n in done['notes'])
  c = default.get_config('smoke=True')
  # Rows of the smoke config's 32 tokens, as in tests/test_train.py: the runs of both modules
  # compile the same programs, which compile_cache then compiles once per session.
  c.data.sources = f'tfds:{done["tfds_dir"]}'
  last = train.run(c, str(tmp_path / 'lm'))
  assert last['step'] == c.train.steps
  rows = [json.loads(l) for l in open(tmp_path / 'lm' / 'metrics.jsonl')]
  assert all(r['train_loss'] == r['train_loss'] for r in rows)  # finite, not NaN
  assert any('val_loss' in r for r in rows)


def test_benchmark_command_times_our_pipeline_and_scores_rules(raw, tmp_path):
  from benchmarks.corpus import bench
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
  from llm.data.clean.audit import DEFAULT_LISTS_DIR
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
  from llm.data.clean import tfds_builder
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


# ------------------------------------------------- reruns into one output directory


def temporary_files(out) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, n), out) for d, dirs, files in os.walk(out)
                for n in dirs + files if pipeline.TMP_MARK in n or n.endswith('.tmp'))


def output_bytes(out) -> dict[str, bytes]:
  """Every file a run leaves in ``out`` (but the cache) with its bytes; in the report and
  DONE, the timings and this folder's own path are taken out, since they differ by run."""
  out = str(out)
  res = {}
  for dirpath, dirnames, names in os.walk(out):
    if os.path.relpath(dirpath, out) == '.':
      dirnames[:] = [d for d in dirnames if d != 'cache']
    for n in names:
      path = os.path.join(dirpath, n)
      rel = os.path.relpath(path, out)
      data = open(path, 'rb').read()
      if rel in ('report/report.json', 'DONE', 'report/report.md'):
        text = data.decode().replace(out, '<out>')
        if rel != 'report/report.md':
          d = json.loads(text)
          for k in ('timing', 'config'):
            d.pop(k, None)
          text = json.dumps(d, sort_keys=True)
        else:
          text = re.sub(r'\n## Timing.*', '', text, flags=re.S)
        data = text.encode()
      res[rel] = data
  return res


def test_reruns_adding_removing_and_renaming_files_equal_fresh_runs(raw, tmp_path):
  """Files added before, removed from and renamed around cached ones: every run into the
  reused folder writes exactly the bytes a fresh run writes (ids never collide with cached
  ones, nothing stale is left beside DONE)."""
  src = tmp_path / 'src'
  src.mkdir()
  import shutil
  webgen_files = sorted(glob.glob(f'{raw}/webgen-*.jsonl.gz'))
  shutil.copy(raw / 'planted.jsonl.gz', src / 'a.jsonl.gz')  # exact and near duplicates inside
  shutil.copy(webgen_files[0], src / 'b.jsonl.gz')
  shutil.copy(webgen_files[1], src / 'c.jsonl.gz')

  def rename(old, new):
    os.rename(src / old, src / new)

  steps = [  # (action before the run, inputs, write_outcomes, write_tfds)
      (None, ['b'], True, True),
      (None, ['a', 'b'], True, False),  # a file sorting before a cached one (no TFDS: nothing would crash)
      (lambda: rename('a.jsonl.gz', 'z.jsonl.gz'), ['b', 'z'], True, True),  # now after it
      (None, ['c', 'z'], False, False),  # b removed; no outcomes, no TFDS: the old ones must go
      (lambda: shutil.copy(src / 'z.jsonl.gz', src / 'a.jsonl.gz'), ['a', 'b', 'c', 'z'], True, True),  # a copy
  ]
  reused = tmp_path / 'reused'
  for i, (action, names, outcomes, tfds) in enumerate(steps):
    if action:
      action()
    kw = dict(write_outcomes=outcomes, write_tfds=tfds)
    inputs = ','.join(str(src / f'{n}.jsonl.gz') for n in names)
    cfg = dataclasses.replace(make_cfg(raw, reused, **kw), inputs=inputs)
    fresh = dataclasses.replace(cfg, output=str(tmp_path / f'fresh{i}'))
    pipeline.run(cfg, log=lambda *_: None)
    pipeline.run(fresh, log=lambda *_: None)
    mine, theirs = output_bytes(reused), output_bytes(fresh.output)
    assert sorted(mine) == sorted(theirs), f'step {i}: different files'
    for name in theirs:
      assert mine[name] == theirs[name], f'step {i}: {name} differs from a fresh run'
    assert ('outcomes.jsonl.gz' in mine) == outcomes
    assert any(n.startswith('tfds/') for n in mine) == tfds
    assert temporary_files(reused) == []
  # The last step holds two copies of the same file: each document of the copy that sorts
  # second (z) meets the fate of its twin in a; where the twin survived the rules, z's copy
  # is an exact duplicate of it, never a victim of an id collision.
  rows = read_outcomes(reused)
  z_rows = {rid: o for rid, o in rows.items() if rid.startswith(str(src / 'z.jsonl.gz') + '#')}
  assert z_rows
  for rid, o in z_rows.items():
    twin = rows[rid.replace('z.jsonl.gz#', 'a.jsonl.gz#')]
    assert not o['kept']
    if twin['removed_by'] in pipeline.DEDUP_STAGES or twin['kept']:
      assert o['removed_by'] == 'exact_dedup', (rid, o['removed_by'], twin['removed_by'])
    else:
      assert o['removed_by'] == twin['removed_by']


def test_ids_do_not_depend_on_the_other_files(raw, local_run, tmp_path):
  """A file's ids are the same processed alone as among all the other inputs of a run."""
  path = str(raw / 'planted.jsonl.gz')
  alone = pipeline.FileProcessor(make_cfg(raw, tmp_path / 'x')).process_file(path)
  ids = [o.id for o in alone[1]]
  assert ids == [f'{path}#{i:09d}' for i in (0, 1, 2, 3)]
  in_run = sorted(i for i in read_outcomes(local_run[0]) if i.startswith(path + '#'))
  assert in_run == ids
  from llm.data.clean.document import split_id
  assert [split_id(i) for i in ids[:2]] == [(path, 0), (path, 1)]
  assert split_id('dir#1/a#b.jsonl#000000007') == ('dir#1/a#b.jsonl', 7)  # '#' inside a path


def test_damaged_cache_entry_and_done_file_are_recomputed(raw, tmp_path):
  out = tmp_path / 'out'
  cfg = make_cfg(raw, out)
  pipeline.run(cfg, log=lambda *_: None)
  before = output_bytes(out)
  for name in os.listdir(out / 'cache'):
    (out / 'cache' / name).write_bytes(b'not a gzip pickle')  # a disk error, a foreign file
  (out / 'DONE').write_text('{ half written')
  messages = []
  pipeline.run(cfg, log=messages.append)
  assert not any('up to date' in m for m in messages)
  assert output_bytes(out) == before
  messages = []
  pipeline.run(cfg, log=messages.append)  # and the rewritten cache and DONE are good again
  assert any('up to date' in m for m in messages)


# ---------------------------------------------------- small and empty corpora


def write_jsonl(path, texts):
  with open(path, 'w') as f:
    for t in texts:
      f.write(json.dumps({'text': t}) + '\n')
  return str(path)


def test_small_corpus_without_validation_documents_finishes(tmp_path):
  from llm import data
  inputs = write_jsonl(tmp_path / 'one.jsonl', [ARTICLE, OTHER])
  cfg = dataclasses.replace(make_cfg(tmp_path, tmp_path / 'out'), inputs=inputs, write_tfds=True, val_fraction=0.01)
  summary = pipeline.run(cfg, log=lambda *_: None)
  assert summary['totals']['docs_out'] == 2 and summary['totals']['splits'] == {'train': 2}
  done = json.loads((tmp_path / 'out' / 'DONE').read_text())
  assert done['splits'] == {'train': 2, 'validation': 0} and done['tfds_dir']
  info = json.loads(open(os.path.join(done['tfds_dir'], 'dataset_info.json')).read())
  assert [s['name'] for s in info['splits']] == ['train']  # TFDS cannot store an empty split
  assert 'validation split is empty' in (tmp_path / 'out' / 'report' / 'report.md').read_text()
  assert temporary_files(tmp_path / 'out') == []
  # train.py's data loader reads it and holds out part of its train split for validation.
  c = data.DataConfig(sources=f'tfds:{done["tfds_dir"]}', seq_len=64, val_fraction=0.2)
  corpus = data.load_corpus(c)
  assert corpus.num_train_rows > 0 and corpus.val.num_rows > 0


@pytest.mark.parametrize('texts,why', [
    (['buy now ' * 3, 'click here', 'ok'], 'Nothing to train on: all 3 input documents were removed'),
    ([], 'Nothing to train on: the inputs hold no documents'),
])
def test_corpus_where_nothing_is_kept_finishes_with_a_report(tmp_path, texts, why):
  inputs = write_jsonl(tmp_path / 'junk.jsonl', texts)
  cfg = dataclasses.replace(make_cfg(tmp_path, tmp_path / 'out'), inputs=inputs, write_tfds=True)
  messages = []
  summary = pipeline.run(cfg, log=messages.append)
  out = tmp_path / 'out'
  assert summary['totals']['docs_out'] == 0 and summary['totals']['counts_add_up']
  done = json.loads((out / 'DONE').read_text())
  assert done['tfds_dir'] == '' and done['docs_out'] == 0 and why in done['notes'][0]
  assert any(why in m for m in messages)
  assert why in (out / 'report' / 'report.md').read_text()
  assert not (out / 'tfds').exists() and temporary_files(out) == []
  # Rerun: up to date, same statement.
  messages = []
  pipeline.run(cfg, log=messages.append)
  assert any('up to date' in m for m in messages)


def test_train_split_empty_is_stated(tmp_path):
  inputs = write_jsonl(tmp_path / 'one.jsonl', [ARTICLE])
  cfg = dataclasses.replace(make_cfg(tmp_path, tmp_path / 'out'), inputs=inputs, write_tfds=True, val_fraction=1.0)
  pipeline.run(cfg, log=lambda *_: None)
  done = json.loads((tmp_path / 'out' / 'DONE').read_text())
  assert done['splits'] == {'train': 0, 'validation': 1}
  assert any('train split is empty' in n for n in done['notes'])
  from llm.data import DataError, read_tfds
  with pytest.raises(DataError, match='no train split'):
    read_tfds(done['tfds_dir'])


def test_leftovers_of_a_killed_run_are_swept(raw, tmp_path):
  out = tmp_path / 'out'
  cfg = dataclasses.replace(make_cfg(raw, out), write_tfds=True)
  pipeline.run(cfg, log=lambda *_: None)
  # What kill -9 at various points leaves: temporary shards, cache entries, a TFDS build
  # folder, a DONE being written; and a stale dataset of another name.
  (out / 'clean' / 'train-00000-of-00002.jsonl.gz.tmp-999').write_bytes(b'partial')
  (out / 'cache' / 'abc.pkl.gz.tmp-999').write_bytes(b'partial')
  (out / 'tfds' / '.tmp-deadbeef' / 'clean_corpus').mkdir(parents=True)
  (out / 'tfds' / 'clean_corpus' / 'other' / '1.0.0').mkdir(parents=True)
  (out / 'DONE.tmp-999').write_text('{')
  pipeline.run(dataclasses.replace(cfg, val_fraction=0.25), log=lambda *_: None)  # not up to date: reruns
  assert temporary_files(out) == []
  assert sorted(os.listdir(out / 'tfds' / 'clean_corpus')) == [cfg.name]


# ----------------------------------------------------- mistakes found before any work


def test_every_input_is_checked_before_any_work(tmp_path):
  good = write_jsonl(tmp_path / 'a.jsonl', [ARTICLE])
  (tmp_path / 'z.csv').write_text('text\nhello\n')
  (tmp_path / 'y.parquet').write_bytes(b'PAR1')
  out = tmp_path / 'out'
  cfg = dataclasses.replace(make_cfg(tmp_path, out), inputs=f'{good},{tmp_path}/z.csv,{tmp_path}/y.parquet')
  with pytest.raises(CorpusInputError) as e:
    pipeline.run(cfg, log=lambda *_: None)
  msg = str(e.value)
  assert 'z.csv' in msg and 'y.parquet' in msg and '--config.reader.format=' in msg
  assert not out.exists()  # nothing was read or written: a.jsonl sorts first but was not processed
  # With a format for every input, they are read.
  pipeline.run(dataclasses.replace(cfg, inputs=f'{good},{tmp_path}/z.csv', reader=dataclasses.replace(
      cfg.reader, format='text')), log=lambda *_: None)
  # An output path that is a file, and inputs inside the output folder.
  (tmp_path / 'file_out').write_text('x')
  with pytest.raises(CorpusInputError, match='is a file, not a folder'):
    pipeline.run(dataclasses.replace(cfg, inputs=good, output=str(tmp_path / 'file_out')), log=lambda *_: None)
  with pytest.raises(CorpusInputError, match='inside the output folder'):
    pipeline.run(dataclasses.replace(cfg, inputs=f'{out}/**/*.jsonl.gz'), log=lambda *_: None)


def test_command_line_prints_one_message_for_a_mistake(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  (tmp_path / 'notes.csv').write_text('a,b\n')
  proc = subprocess.run([sys.executable, '-m', 'llm.data.clean.pipeline', '--config=configs/corpus.py',
                         f'--config.inputs={tmp_path}/notes.csv', f'--config.output={tmp_path}/out'],
                        capture_output=True, text=True, cwd=root, timeout=300)
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr + proc.stdout
  errors = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(errors) == 1 and errors[0].startswith('error: ') and 'notes.csv' in errors[0]
