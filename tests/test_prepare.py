"""Tests of llm/data/prepare.py and llm/data/tokens.py: token shards, their runners, reruns,
streaming them into batches, and every bad input named with its fix."""

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llm.data import documents, prepare, stream
from llm.data import tokens as T
from llm.data.documents import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(log=lambda *a: None)


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
  """Four gzipped JSONL files of 150 documents of 1 to 300 words, and a plain-text file."""
  d = tmp_path_factory.mktemp('raw')
  rng = np.random.default_rng(0)
  words = ['the', 'cat', 'sat', 'on', 'a', 'mat', 'and', 'dog', 'ran', 'far', 'été', '日本']
  for k in range(4):
    with gzip.open(d / f'part-{k}.jsonl.gz', 'wt', encoding='utf-8') as f:
      for i in range(150):
        text = f'doc {k}.{i}: ' + ' '.join(rng.choice(words, int(rng.integers(1, 300))))
        f.write(json.dumps({'text': text, 'id': i}) + '\n')
  with open(ROOT + '/data/tinyshakespeare.txt', encoding='utf-8') as f:
    (d / 'plays.txt').write_text(f.read(60_000), encoding='utf-8')
  return d


def config(raw, out, **kw) -> prepare.PrepareConfig:
  base = dict(sources=f'{raw}/part-*.jsonl.gz,{raw}/plays.txt', output=str(out), runner='local',
              shard_mb=0.04, val_fraction=0.1)  # about 2 JSONL files a unit: 3 units
  return prepare.PrepareConfig(**{**base, **kw})


def shard_digests(out) -> dict[str, str]:
  """SHA-256 of every shard file (the records and manifest hold times and runner names)."""
  found = {}
  for split in T.SPLITS:
    for dirpath, _, files in os.walk(os.path.join(out, split)):
      for name in files:
        path = os.path.join(dirpath, name)
        found[os.path.relpath(path, out)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return found


@pytest.fixture(scope='module')
def prepared(raw, tmp_path_factory):
  out = tmp_path_factory.mktemp('tokens') / 'local'
  manifest = prepare.run(config(raw, out), **QUIET)
  return out, manifest


# ------------------------------------------------------------------- what is written


def test_manifest_counts_equal_the_documents_read(raw, prepared):
  out, m = prepared
  assert m['units'] == len(prepare.plan(config(raw, out))) >= 3
  assert m['format'] == T.FORMAT and m['dtype'] == 'uint16'
  assert m['tokenizer']['kind'] == 'byte' and 'blake2b' in m['split_rule']
  cfg = config(raw, out)
  expected = {s: [0, 0] for s in T.SPLITS}
  for path in sorted(documents.glob_files(f'{raw}/part-*.jsonl.gz')) + [f'{raw}/plays.txt']:
    for doc in documents.iter_documents(path, cfg):
      for split, part in zip(T.SPLITS, documents.split_document(doc, cfg)):
        if part:
          expected[split][0] += 1
          expected[split][1] += len(part.encode('utf-8')) + 2  # BOS + bytes + EOS
  for s in T.SPLITS:
    assert [m['splits'][s]['docs'], m['splits'][s]['tokens']] == expected[s]
    assert sum(sh['tokens'] for sh in m['splits'][s]['shards']) == expected[s][1]
  files = [f for src in m['sources'] for f in src['files']]
  assert len(files) == 5 and all(len(f['sha256']) == 64 and f['size'] > 0 for f in files)
  assert sum(m['sources'][1]['docs'].values()) == 1  # the plays are one document (doc_separator='file')


@pytest.mark.parametrize('runner', ['direct', 'multiprocess', 'dask'])
def test_every_runner_writes_the_same_bytes(raw, prepared, tmp_path, runner):
  out = tmp_path / runner
  m = prepare.run(config(raw, out, runner=runner, workers=2), **QUIET)
  assert m['done'] == prepared[1]['units']
  workers = {json.loads((out / 'units' / name).read_text())['worker'] for name in os.listdir(out / 'units')}
  if runner != 'direct':  # the units ran in worker processes, not in this one
    assert all(not w.endswith(f':{os.getpid()}') for w in workers), workers
  assert shard_digests(out) == shard_digests(prepared[0])
  assert len(shard_digests(out)) == 4 * (len(m['splits']['train']['shards']) + len(m['splits']['validation']['shards']))


def test_prepared_rows_equal_rows_read_in_memory(raw, prepared):
  out, _ = prepared
  kw = dict(seq_len=64, val_fraction=0.1, seed=3)
  disk = stream.load_corpus(stream.DataConfig(sources=f'tokens:{out}', **kw))
  # In memory, one source of the same files in the same order gives the same stream.
  memory = stream.load_corpus(stream.DataConfig(sources=f'{raw}/*', **kw))
  assert disk.num_train_rows == memory.num_train_rows and disk.val.num_rows == memory.val.num_rows
  idx = np.arange(disk.num_train_rows)
  for a, b in ((disk.train[0].rows(idx), memory.train[0].rows(idx)), (disk.val.rows(np.arange(disk.val.num_rows)),
                                                                       memory.val.rows(np.arange(memory.val.num_rows)))):
    for k in stream.FIELDS:
      np.testing.assert_array_equal(a[k], b[k])
  ba, bb = stream.Batches(disk, 8), stream.Batches(memory, 8)
  for step in (0, 5, 1000):  # far past one epoch too
    for k in stream.FIELDS:
      np.testing.assert_array_equal(ba(step)[k], bb(step)[k])


def test_rows_across_shard_boundaries_are_whole(prepared):
  out, m = prepared
  train, _, _ = T.open_prepared(str(out), stream.make_tokenizer('byte'))
  ends = np.cumsum([s['tokens'] for s in m['splits']['train']['shards']])[:-1]
  spans = [(int(e) - 5, int(e) + 7) for e in ends]
  parts = train.read(spans)
  whole = train.read([(0, train.num_tokens)])[0]
  for (a, b), (tok, st) in zip(spans, parts):
    np.testing.assert_array_equal(tok, whole[0][a:b])
    np.testing.assert_array_equal(st, whole[1][a:b])
  assert all(whole[1][int(e)] for e in ends)  # every shard begins with a document


# --------------------------------------------------------------------- the stream


def test_resume_and_process_shares_on_prepared_shards(prepared):
  out, _ = prepared
  corpus = stream.load_corpus(stream.DataConfig(sources=f'tokens:{out}', seq_len=32))
  full = [b for _, b in zip(range(5), stream.train_batches(corpus, 8))]
  resumed = [b for _, b in zip(range(2), stream.train_batches(corpus, 8, start_step=3))]
  halves = [[b for _, b in zip(range(5), stream.train_batches(corpus, 8, 0, p, 2))] for p in range(2)]
  for k in stream.FIELDS:
    for s in range(2):
      np.testing.assert_array_equal(resumed[s][k], full[3 + s][k])
    for s in range(5):
      np.testing.assert_array_equal(np.concatenate([halves[0][s][k], halves[1][s][k]]), full[s][k])
  assert full[0]['inputs'].shape == (8, 32) and full[0]['inputs'].dtype == np.int32


def test_mixture_weights_hold_over_many_batches(raw, prepared, tmp_path):
  other = tmp_path / 'other'
  prepare.run(config(raw, other, sources=f'{raw}/plays.txt', split='tail'), **QUIET)
  corpus = stream.load_corpus(stream.DataConfig(sources=f'tokens:{prepared[0]}:1,tokens:{other}:3', seq_len=32))
  assert corpus.weights == [1.0, 3.0]
  source, row = stream.sample(np.arange(200_000), [t.num_rows for t in corpus.train], corpus.weights, 0)
  assert abs((source == 1).mean() - 0.75) < 0.005
  for s in (0, 1):  # within a source, each epoch is a permutation of its rows
    n = corpus.train[s].num_rows
    mine = np.nonzero(source == s)[0]
    rows_epoch0 = row[mine[np.arange(200_000)[mine] < n]]
    assert len(np.unique(rows_epoch0)) == len(rows_epoch0)
  batch = stream.Batches(corpus, 64)(7)
  assert batch['inputs'].shape == (64, 32)


# ---------------------------------------------------------------------- reruns


def test_rerun_skips_finished_units_and_redoes_changed_ones(raw, tmp_path):
  src = tmp_path / 'src'
  src.mkdir()
  for name in ('part-0.jsonl.gz', 'part-1.jsonl.gz', 'part-2.jsonl.gz'):
    (src / name).write_bytes((raw / name).read_bytes())
  cfg = config(src, tmp_path / 'out', sources=f'{src}/*.jsonl.gz')
  first = prepare.run(cfg, **QUIET)
  assert (first['done'], first['skipped']) == (2, 0)
  again = prepare.run(cfg, **QUIET)
  assert (again['done'], again['skipped']) == (0, 2)
  # A changed file: only its unit is redone, and the result equals a fresh run.
  with gzip.open(src / 'part-2.jsonl.gz', 'at') as f:
    f.write(json.dumps({'text': 'one more document'}) + '\n')
  changed = prepare.run(cfg, **QUIET)
  assert (changed['done'], changed['skipped']) == (1, 1)
  fresh = prepare.run(dataclasses.replace(cfg, output=str(tmp_path / 'fresh')), **QUIET)
  assert shard_digests(tmp_path / 'out') == shard_digests(tmp_path / 'fresh')
  assert changed['splits'] == {k: v for k, v in fresh['splits'].items()}
  # Fewer files: the stale unit's shards and record go.
  os.remove(src / 'part-2.jsonl.gz')
  fewer = prepare.run(cfg, **QUIET)
  assert fewer['units'] == 1 and sorted(os.listdir(tmp_path / 'out' / 'units')) == ['00000.json']
  assert sorted(os.listdir(tmp_path / 'out' / 'train')) == ['00000']


def test_interrupted_run_leaves_no_manifest_and_resumes(raw, tmp_path, monkeypatch):
  src = tmp_path / 'src'
  src.mkdir()
  for p in raw.iterdir():
    (src / p.name).write_bytes(p.read_bytes())
  cfg = config(src, tmp_path / 'out')
  prepare.run(cfg, **QUIET)
  units = prepare.plan(cfg)
  first, last = units[0].files[0], units[-2].files[0]  # two files of two units change
  for path in (first, last):
    with gzip.open(path, 'at') as f:
      f.write(json.dumps({'text': 'a new document'}) + '\n')
  real, calls = prepare.process_unit, []

  def killed_in_the_second(unit, c, fp):
    calls.append(unit.index)
    if len(calls) == 2:
      raise KeyboardInterrupt('killed')
    return real(unit, c, fp)

  monkeypatch.setattr(prepare, 'process_unit', killed_in_the_second)
  with pytest.raises(KeyboardInterrupt):
    prepare.run(cfg, **QUIET)
  assert not os.path.exists(tmp_path / 'out' / T.MANIFEST)  # nothing claims the unfinished unit
  with pytest.raises(DataError, match='no manifest.json.*interrupted.*rerun the same command'):
    stream.load_corpus(stream.DataConfig(sources=f'tokens:{tmp_path / "out"}', seq_len=32))
  monkeypatch.setattr(prepare, 'process_unit', real)
  done = prepare.run(cfg, **QUIET)
  assert (done['done'], done['skipped']) == (1, len(units) - 1)  # the unit finished before the kill is kept
  prepare.run(dataclasses.replace(cfg, output=str(tmp_path / 'fresh')), **QUIET)
  assert shard_digests(tmp_path / 'out') == shard_digests(tmp_path / 'fresh')


def test_tfds_source_keeps_its_splits(tmp_path):
  from llm.data.clean import tfds_builder
  clean = tmp_path / 'clean'
  clean.mkdir()
  for split, n in (('train', 30), ('validation', 5)):
    for shard in range(2):
      with gzip.open(clean / f'{split}-{shard:05d}-of-00002.jsonl.gz', 'wt') as f:
        for i in range(n):
          f.write(json.dumps({'id': f'{shard:05d}/{i:09d}', 'text': f'{split} text {shard} {i}', 'url': ''}) + '\n')
  path = tfds_builder.prepare(str(clean), str(tmp_path / 'tfds'), 'web', '1.0.0', description='t')
  m = prepare.run(prepare.PrepareConfig(sources=f'tfds:{path}', output=str(tmp_path / 'out'), runner='local'), **QUIET)
  assert m['splits']['train']['docs'] == 60 and m['splits']['validation']['docs'] == 10
  assert 'keep their own train and validation splits' in m['split_rule']
  texts = set()
  train, _, _ = T.open_prepared(str(tmp_path / 'out'), stream.make_tokenizer('byte'))
  tok, st = train.read([(0, train.num_tokens)])[0]
  for doc in np.split(tok, np.nonzero(st)[0][1:]):
    texts.add(bytes((doc[1:-1] - 3).astype(np.uint8)).decode())
  assert texts == {f'train text {s} {i}' for s in range(2) for i in range(30)}


# ------------------------------------------------------------------- bad input


def _copy(prepared, tmp_path):
  import shutil
  out = tmp_path / 'copy'
  shutil.copytree(prepared[0], out)
  return out


def _load(out, **kw):
  return stream.load_corpus(stream.DataConfig(sources=f'tokens:{out}', seq_len=32, **kw))


def test_missing_truncated_and_corrupted_shards_are_named(raw, prepared, tmp_path):
  out = _copy(prepared, tmp_path)
  data_file = out / 'train' / '00001' / 'tokens' / 'c' / '0'
  blob = data_file.read_bytes()
  data_file.write_bytes(blob[:-100])
  with pytest.raises(DataError, match=rf'{data_file}: .* bytes, but .* were written .*prepare'):
    _load(out)
  os.remove(data_file)
  with pytest.raises(DataError, match=rf'{data_file}: missing .*prepare'):
    _load(out)
  damaged = bytearray(blob)
  damaged[1000] ^= 0x04
  data_file.write_bytes(bytes(damaged))
  corpus = _load(out)  # same size: found when the rows are read
  with pytest.raises(DataError, match=r'00001: damaged shard .*verify=True'):
    corpus.train[0].rows(np.arange(corpus.num_train_rows))
  batches = stream.train_batches(corpus, corpus.num_train_rows)  # through tf.data: the same one line
  with pytest.raises(DataError, match=r'00001: damaged shard'):
    next(batches)
  # verify=True finds the damaged shard and rewrites it; the others are left alone.
  m = prepare.run(config(raw, out, verify=True), **QUIET)
  assert m['done'] == 1
  assert shard_digests(out) == shard_digests(prepared[0])


def test_tokenizer_mismatch_and_changed_sources(raw, prepared, tmp_path):
  out = _copy(prepared, tmp_path)
  from llm.tokenizer import train_sentencepiece
  spm = train_sentencepiece(f'{raw}/plays.txt', 400, str(tmp_path / 'spm'))
  with pytest.raises(DataError, match=r'prepared with the tokenizer byte, but this run uses sentencepiece .*spm.model'):
    _load(out, tokenizer='sentencepiece', spm_model=spm)
  src = tmp_path / 'src'
  src.mkdir()
  (src / 'a.txt').write_text('first document\n\nsecond document\n')
  prepare.run(prepare.PrepareConfig(sources=f'{src}/a.txt', output=str(tmp_path / 'p'), runner='local',
                                    doc_separator='blank_line'), **QUIET)
  os.utime(src / 'a.txt', ns=(1, 1))  # touched, same bytes: not a change
  _load(tmp_path / 'p')
  (src / 'a.txt').write_text('first document\n\nsecond, edited\n')
  with pytest.raises(DataError, match=rf'{src}/a.txt has changed since .* rerun the same .*check_sources=False'):
    _load(tmp_path / 'p')
  assert _load(tmp_path / 'p', check_sources=False).num_train_rows > 0
  os.remove(src / 'a.txt')  # gone: the shards do not need it
  assert _load(tmp_path / 'p').num_train_rows > 0


def test_bad_prepare_inputs(raw, tmp_path):
  with pytest.raises(DataError, match='matches no file'):
    prepare.run(config(raw, tmp_path / 'o', sources=f'{raw}/nothing*.txt'), **QUIET)
  with pytest.raises(DataError, match='sources is empty'):
    prepare.run(config(raw, tmp_path / 'o', sources=' , '), **QUIET)
  with pytest.raises(DataError, match="runner='spark'"):
    prepare.run(config(raw, tmp_path / 'o', runner='spark'), **QUIET)
  (tmp_path / 'mine').mkdir()
  (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
  with pytest.raises(DataError, match='not a prepared corpus'):
    prepare.run(config(raw, tmp_path / 'mine'), **QUIET)
  assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'
  bad = tmp_path / 'bad'
  bad.mkdir()
  (bad / 'x.jsonl').write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
  with pytest.raises(DataError, match=r'x.jsonl: line 2 is not valid UTF-8'):
    prepare.run(config(bad, tmp_path / 'o2', sources=f'{bad}/x.jsonl', runner='direct'), **QUIET)
  assert not (tmp_path / 'o2' / T.MANIFEST).exists() and not (tmp_path / 'o2' / 'units').exists()
  (bad / 'empty.txt').write_text('  \n')
  with pytest.raises(DataError, match=r'empty.txt: the file is empty'):
    prepare.run(config(bad, tmp_path / 'o3', sources=f'{bad}/empty.txt'), **QUIET)
  (tmp_path / 'afile').write_text('x')
  with pytest.raises(DataError, match='is a file; name a directory'):
    prepare.run(config(raw, tmp_path / 'afile'), **QUIET)
  with pytest.raises(DataError, match='shard_mb must be positive'):
    prepare.run(config(raw, tmp_path / 'o4', shard_mb=0), **QUIET)
  with pytest.raises(DataError, match='tokens:.*no manifest.json'):
    _load(tmp_path / 'nowhere')


def test_command_line_prints_one_message(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'llm.data.prepare', '--config=configs/prepare.py',
                         f'--config.sources={tmp_path}/none*.txt', f'--config.output={tmp_path}/out'],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'matches no file' in errors[0]


def test_data_benchmark_runs_and_reports_each_measurement(tmp_path):
  from llm.data import bench
  out = bench.main(['--mb=0.5', '--vocab=600', '--seq_len=128', '--batch=16', '--seconds=0.5', '--all_cores_runner=local',
                    f'--work={tmp_path}', f'--out={tmp_path / "r.json"}'])
  one = out['one_core']
  # One core each; the same text and vocabulary: prepare's tokens are tokenizers' plus one EOS a document.
  assert one['threads'] == 1 and one['prepare_tokens'] == one['hf_tokens'] + one['prepare_docs']
  assert one['hf_mb_per_s'] > 0 and one['prepare_mb_per_s'] > 0 and out['all_cores']['mb_per_s'] > 0
  s = out['stream']
  assert s['batches'] >= 1 and s['tokens_per_s'] > 0 and s['local_rows'] == 16 and s['seq_len'] == 128
  assert json.loads((tmp_path / 'r.json').read_text())['cpu'] == out['cpu']
