"""Tests of llm/data (documents, stream) and llm/tokenizer.py: rows, splits, the tf.data stream, errors, tokenizers."""

import collections
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from llm import data
from llm.tokenizer import ByteTokenizer, make_tokenizer, train_sentencepiece

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE = os.path.join(ROOT, 'data', 'tinyshakespeare.txt')


# ----------------------------------------------------------------------------- pack


def test_pack_hand_computed():
  docs = [np.array([10, 11, 12]), np.array([20]), np.array([30, 31])]
  p = data.pack(docs, seq_len=4, bos=1, eos=2)
  assert set(p) == set(data.FIELDS)
  assert all(v.dtype == np.int32 and v.shape == (3, 4) for v in p.values())
  # The stream is 1 10 11 12 2 | 1 20 2 | 1 30 31 2; row r is tokens [4r, 4r + 5). The pair
  # (2 -> 1) that would cross into the next document is padding (segment 0).
  np.testing.assert_array_equal(p['inputs'], [[1, 10, 11, 12], [0, 1, 20, 0], [1, 30, 31, 0]])
  np.testing.assert_array_equal(p['targets'], [[10, 11, 12, 2], [0, 20, 2, 0], [30, 31, 2, 0]])
  np.testing.assert_array_equal(p['positions'], [[0, 1, 2, 3], [0, 0, 1, 0], [0, 1, 2, 0]])
  np.testing.assert_array_equal(p['segments'], [[1, 1, 1, 1], [0, 2, 2, 0], [1, 1, 1, 0]])


def test_pack_document_across_rows():
  p = data.pack([np.array([10, 11, 12, 13]), np.array([20])], seq_len=3, bos=1, eos=2)
  np.testing.assert_array_equal(p['inputs'], [[1, 10, 11], [12, 13, 0], [1, 20, 0]])
  np.testing.assert_array_equal(p['targets'], [[10, 11, 12], [13, 2, 0], [20, 2, 0]])
  np.testing.assert_array_equal(p['positions'], [[0, 1, 2], [0, 1, 0], [0, 1, 0]])  # restart at the row start
  np.testing.assert_array_equal(p['segments'], [[1, 1, 1], [1, 1, 0], [1, 1, 0]])


def test_pack_without_bos_or_eos():
  """GPT-2-style tokenizers add no BOS: the first token of a document is never a target."""
  p = data.pack([np.array([10, 11]), np.array([20, 21])], seq_len=8, bos=None, eos=2)
  np.testing.assert_array_equal(p['inputs'], [[10, 11, 0, 20, 21, 0, 0, 0]])
  np.testing.assert_array_equal(p['targets'], [[11, 2, 0, 21, 2, 0, 0, 0]])
  np.testing.assert_array_equal(p['segments'], [[1, 1, 0, 2, 2, 0, 0, 0]])
  q = data.pack([np.array([10, 11]), np.array([20])], seq_len=8, bos=1, eos=None)
  np.testing.assert_array_equal(q['targets'], [[10, 11, 0, 20, 0, 0, 0, 0]])


def test_pack_invariants_random():
  rng = np.random.default_rng(0)
  seq_len, bos, eos = 16, 1, 2
  docs = [rng.integers(3, 259, rng.integers(0, 40)) for _ in range(50)]
  p = data.pack(docs, seq_len, bos, eos)
  inputs, targets, positions, segments = (p[k] for k in data.FIELDS)
  valid = segments > 0
  # No target predicted twice and none dropped: len(doc) + 1 predictions per document.
  assert valid.sum() == sum(len(d) + 1 for d in docs)
  n_tokens = sum(len(d) + 2 for d in docs)
  assert len(inputs) == -(-(n_tokens - 1) // seq_len)  # windows of seq_len + 1 tokens, overlapping by one
  # Reading the valid pairs in order gives back every [bos] doc [eos], shifted by one.
  full = [np.concatenate([[bos], d, [eos]]) for d in docs]
  np.testing.assert_array_equal(inputs[valid], np.concatenate([f[:-1] for f in full]))
  np.testing.assert_array_equal(targets[valid], np.concatenate([f[1:] for f in full]))
  np.testing.assert_array_equal(inputs[~valid], 0)
  np.testing.assert_array_equal(targets[~valid], 0)
  np.testing.assert_array_equal(positions[~valid], 0)
  for r in range(len(inputs)):
    seg, pos = segments[r], positions[r]
    cols = np.nonzero(valid[r])[0]
    assert pos[cols[0]] == 0
    for a, b in zip(cols[:-1], cols[1:]):
      if seg[b] == seg[a]:  # the same document: consecutive, positions count up
        assert b == a + 1 and pos[b] == pos[a] + 1 and inputs[r, b] == targets[r, a]
      else:  # the next document starts after one padding slot, at position 0 with bos
        assert b == a + 2 and seg[b] > seg[a] and pos[b] == 0 and inputs[r, b] == bos
  # Every document starts at position 0 with bos (in whatever row it starts).
  assert (inputs[valid] == bos).sum() == len(docs)
  assert np.all(positions[inputs == bos] == 0)


def test_pack_empty():
  p = data.pack([], 8, 1, 2)
  assert all(v.shape == (0, 8) for v in p.values())


# ------------------------------------------------------------------- split_documents


def _lines(n, prefix='line'):
  return ''.join(f'{prefix} {i} of the text\n' for i in range(n))


def test_tail_split_cuts_at_line_boundary_and_is_deterministic():
  cfg = data.DataConfig(sources='x', split='tail', val_fraction=0.1)
  doc = _lines(1000)
  train, val = data.split_documents([doc], cfg)
  assert (train, val) == data.split_documents([doc], cfg)
  assert len(train) == 1 and len(val) == 1
  assert train[0] + val[0] == doc
  assert train[0].endswith('\n') and val[0].startswith('line ')  # no line shared between the sides
  assert set(train[0].splitlines()).isdisjoint(val[0].splitlines())
  assert abs(len(val[0]) / len(doc) - 0.1) < 0.01
  # val_fraction=0: everything trains.
  train0, val0 = data.split_documents([doc], data.DataConfig(sources='x', split='tail', val_fraction=0.0))
  assert train0 == [doc] and val0 == []


def test_document_split_deterministic_fraction_and_duplicates():
  cfg = data.DataConfig(sources='x', split='document', val_fraction=0.1)
  docs = [f'document number {i}\nwith some text {i * 7}' for i in range(3000)]
  train, val = data.split_documents(docs, cfg)
  assert (train, val) == data.split_documents(docs, cfg)
  assert len(train) + len(val) == len(docs) and set(train).isdisjoint(val)
  assert abs(len(val) / len(docs) - 0.1) < 0.02
  # The side of a document depends on its text only: order and duplicates don't matter.
  rev_train, rev_val = data.split_documents(docs[::-1], cfg)
  assert set(rev_val) == set(val)
  dups = docs[:200] * 3
  d_train, d_val = data.split_documents(dups, cfg)
  assert set(d_train).isdisjoint(d_val)
  assert len(d_val) == 3 * len(set(d_val))
  # Another fraction moves documents accordingly.
  _, val3 = data.split_documents(docs, data.DataConfig(sources='x', split='document', val_fraction=0.3))
  assert abs(len(val3) / len(docs) - 0.3) < 0.03 and set(val) <= set(val3)


def _tricky_documents() -> list[str]:
  """Documents a sloppy split gets wrong: whitespace padding, duplicates, non-ASCII text."""
  docs = [f'document {i}: some text' for i in range(60)]
  # The same text with different padding: distinct documents that must stay as they are.
  for i in range(40):
    base = f'padded {i}'
    docs += [base, f' {base}', f'{base}\n', f'\t{base}  ', f'\n\n{base}\n\n']
  docs += ['dup'] * 3 + [' dup '] * 2 + ['dup\n'] * 2  # exact duplicates and padded duplicates
  docs += ['héllo wörld', 'he\u0301llo wo\u0308rld', '日本語のテキスト', 'Ελληνικά κείμενα', '🙂 emoji 🙂',
           'ROMEO:\r\nCRLF lines\r\n', '\u00a0no-break spaces\u00a0', 'zero\u200bwidth']
  return docs


def _assert_partition(docs, train, val):
  """train and val are docs split in order: each document exactly once, no text on both sides."""
  assert collections.Counter(train) + collections.Counter(val) == collections.Counter(docs)
  assert not set(train) & set(val)
  val_set = set(val)
  assert train == [d for d in docs if d not in val_set] and val == [d for d in docs if d in val_set]


_SPLIT_SCRIPT = """
import json, sys
from llm import data
docs = json.load(open(sys.argv[1], encoding='utf-8'))
cfg = data.DataConfig(sources='x', split='document', val_fraction=float(sys.argv[2]))
train, val = data.split_documents(docs, cfg)
print(json.dumps({'train': train, 'val': val}))
"""


def test_document_split_is_the_same_in_every_process(tmp_path):
  """The split must not depend on Python's per-process string hash salt (PYTHONHASHSEED)."""
  docs = _tricky_documents()
  path = tmp_path / 'docs.json'
  path.write_text(json.dumps(docs), encoding='utf-8')
  cfg = data.DataConfig(sources='x', split='document', val_fraction=0.5)
  train, val = data.split_documents(docs, cfg)
  results = []
  for seed in ('0', '12345', 'random'):
    env = {**os.environ, 'PYTHONHASHSEED': seed, 'PYTHONPATH': ROOT}
    proc = subprocess.run([sys.executable, '-c', _SPLIT_SCRIPT, str(path), '0.5'], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results.append(json.loads(proc.stdout))
  for r in results:
    assert r == {'train': train, 'val': val}
  assert train and val


def test_document_split_partitions_documents_exactly():
  docs = _tricky_documents()
  for f in (0.1, 0.5, 0.9):
    train, val = data.split_documents(docs, data.DataConfig(sources='x', split='document', val_fraction=f))
    _assert_partition(docs, train, val)
    assert train and val
  train, val = data.split_documents(docs, data.DataConfig(sources='x', split='document', val_fraction=0.0))
  assert train == docs and val == []
  # On many documents the validation share is about val_fraction.
  many = [f'{" " * (i % 3)}doc {i} ✓ 日本{chr(0x3b1 + i % 20)}{chr(10) * (i % 2)}' for i in range(6000)]
  train, val = data.split_documents(many, data.DataConfig(sources='x', split='document', val_fraction=0.2))
  _assert_partition(many, train, val)
  assert abs(len(val) / len(many) - 0.2) < 0.02, len(val) / len(many)


def test_tail_split_partitions_each_document():
  """train part + validation part == the document; a whitespace-only validation tail is dropped."""
  cfg = data.DataConfig(sources='x', split='tail', val_fraction=0.1)
  docs = [
      _lines(100),  # ends with a newline
      _lines(100).rstrip('\n'),  # does not
      'héllo wörld ✓ 日本語\n' * 50,  # non-ASCII lines
      'line one\r\n' * 40,  # CRLF
      '  padded at both ends\n' * 30 + '   ',
      'x' * 1000,  # no newline at all: cut by characters
      'a' * 90 + '\n' + ' ' * 9 + '\n',  # the validation tail is whitespace only
  ]
  parts = []
  for d in docs:
    train, val = data.split_documents([d], cfg)
    assert len(train) <= 1 and len(val) <= 1
    t, v = (train or [''])[0], (val or [''])[0]
    parts.append((t, v))
    if val:
      assert t + v == d
    else:
      assert d.startswith(t) and d[len(t):].strip() == ''
    if '\n' in d[int(len(d) * 0.9):-1]:  # a line boundary after the nominal cut: cut there
      assert t.endswith('\n'), repr(t[-20:])
    assert abs(len(d) - len(t) - 0.1 * len(d)) <= max(len(line) for line in d.split('\n')) + 1
  assert parts[-1][1] == ''
  # Splitting the list is splitting each document, in order.
  train, val = data.split_documents(docs, cfg)
  assert train == [t for t, _ in parts if t] and val == [v for _, v in parts if v]


def test_split_errors():
  with pytest.raises(data.DataError, match='val_fraction'):
    data.split_documents(['a'], data.DataConfig(sources='x', val_fraction=1.0))
  with pytest.raises(data.DataError, match="'tail' or 'document'"):
    data.split_documents(['a'], data.DataConfig(sources='x', split='random'))


def test_parse_sources():
  assert data.parse_sources('a/*.txt:2,b.jsonl') == [('a/*.txt', 2.0), ('b.jsonl', 1.0)]
  assert data.parse_sources('c:/x/y.txt') == [('c:/x/y.txt', 1.0)]
  # 'tfds:' is a scheme, not a weight; a weight may still follow the folder.
  assert data.parse_sources('tfds:runs/c/1.0.0,tfds:/d/1.0.0:3') == [('tfds:runs/c/1.0.0', 1.0), ('tfds:/d/1.0.0', 3.0)]
  with pytest.raises(data.DataError, match='positive'):
    data.parse_sources('a.txt:0')
  with pytest.raises(data.DataError, match='empty'):
    data.parse_sources(' , ')


# ----------------------------------------------------------------- the tf.data stream


def _write(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


@pytest.fixture(scope='module')
def line_corpus(tmp_path_factory):
  """One source of 200 distinct lines (documents), rows of 16 tokens."""
  d = tmp_path_factory.mktemp('corpus')
  # Every 16-token window holds a whole first number of some line, so rows differ by content.
  _write(d / 'lines.txt', ''.join(f'doc {i:03d}-{i:03d}\n' for i in range(200)))
  cfg = data.DataConfig(sources=str(d / 'lines.txt'), seq_len=16, doc_separator='line', val_fraction=0.2)
  return data.load_corpus(cfg)


def _batches(corpus, global_batch, n, **kw):
  ds = data.train_dataset(corpus, global_batch, **kw)
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(n)]


def _rows(batch):
  return [tuple(r) for r in batch['inputs']]


def _all_rows(rows):
  return rows.rows(np.arange(rows.num_rows))


def test_corpus_loaded(line_corpus):
  c = line_corpus
  assert len(c.train) == 1 and c.weights == [1.0] and c.num_train_rows == c.train[0].num_rows
  assert 0 < c.val.num_rows < c.num_train_rows
  ntokens = (_all_rows(c.train[0])['segments'] > 0).sum() + (_all_rows(c.val)['segments'] > 0).sum()
  assert ntokens == sum(len(f'doc {i:03d}-{i:03d}') + 1 for i in range(200))


def test_train_dataset_shapes_and_determinism(line_corpus):
  a = _batches(line_corpus, 8, 3)
  b = _batches(line_corpus, 8, 3)
  assert len(a) == 3
  for x, y in zip(a, b):
    assert set(x) == set(data.FIELDS)
    for k in data.FIELDS:
      assert x[k].shape == (8, 16) and x[k].dtype == np.int32
      np.testing.assert_array_equal(x[k], y[k])
  assert _rows(a[0]) != _rows(a[1])
  # Rows are whole packed rows of the corpus (inputs and targets stay together).
  train = _all_rows(line_corpus.train[0])
  table = {tuple(r): i for i, r in enumerate(train['inputs'])}
  for r, tgt in zip(a[0]['inputs'], a[0]['targets']):
    np.testing.assert_array_equal(train['targets'][table[tuple(r)]], tgt)


def _with_seed(corpus, seed):
  return data.Corpus(**{**corpus.__dict__, 'cfg': data.DataConfig(**{**corpus.cfg.__dict__, 'seed': seed})})


def test_data_seed_changes_row_order(line_corpus):
  first = _rows(_batches(line_corpus, 8, 1)[0])
  assert all(_rows(_batches(_with_seed(line_corpus, seed), 8, 1)[0]) != first for seed in (1, 7))


def test_train_dataset_resume(line_corpus):
  full = _batches(line_corpus, 4, 6)
  resumed = _batches(line_corpus, 4, 2, start_step=4)
  for k in data.FIELDS:
    np.testing.assert_array_equal(resumed[0][k], full[4][k])
    np.testing.assert_array_equal(resumed[1][k], full[5][k])


def test_train_dataset_process_sharding(line_corpus):
  whole = _batches(line_corpus, 8, 3)
  p0 = _batches(line_corpus, 8, 3, process_index=0, process_count=2)
  p1 = _batches(line_corpus, 8, 3, process_index=1, process_count=2)
  for w, a, b in zip(whole, p0, p1):
    assert a['inputs'].shape == (4, 16)
    for k in data.FIELDS:
      np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), w[k])
  # Resuming and sharding combine.
  p1_resumed = _batches(line_corpus, 8, 1, start_step=2, process_index=1, process_count=2)
  np.testing.assert_array_equal(p1_resumed[0]['inputs'], p1[2]['inputs'])
  with pytest.raises(data.DataError, match='divisible'):
    data.train_dataset(line_corpus, 7, process_count=2)


def test_one_epoch_visits_every_row_once(line_corpus):
  n = line_corpus.num_train_rows
  epoch0, epoch1 = _batches(line_corpus, n, 2)
  all_rows = sorted(tuple(r) for r in _all_rows(line_corpus.train[0])['inputs'])
  assert len(set(all_rows)) == n  # rows are distinguishable by content
  assert sorted(_rows(epoch0)) == all_rows
  assert sorted(_rows(epoch1)) == all_rows
  assert _rows(epoch0) != _rows(epoch1)  # each epoch has its own permutation


def test_mixture_weights(tmp_path):
  _write(tmp_path / 'a.txt', ''.join(f'aaaa {i:03d}\n' for i in range(100)))
  _write(tmp_path / 'b.txt', ''.join(f'bbbb {i:03d}\n' for i in range(100)))
  cfg = data.DataConfig(sources=f'{tmp_path}/a.txt:3,{tmp_path}/b.txt:1', seq_len=16,
                        doc_separator='line', val_fraction=0.1)
  corpus = data.load_corpus(cfg)
  assert corpus.weights == [3.0, 1.0] and len(corpus.train) == 2
  a_byte, b_byte = ord('a') + 3, ord('b') + 3
  batches = _batches(corpus, 250, 8)
  inputs = np.concatenate([b['inputs'] for b in batches])
  from_a = np.any(inputs == a_byte, axis=1)
  from_b = np.any(inputs == b_byte, axis=1)
  assert not np.any(from_a & from_b)  # a row comes from one source
  # Only a source's last, partial row can hold no letter (e.g. just '9\n' and EOS).
  last = [_all_rows(t)['inputs'][-1] for t in corpus.train]
  for r in inputs[~(from_a | from_b)]:
    assert any(np.array_equal(r, x) for x in last)
  assert abs(from_a.mean() - 0.75) < 0.04, from_a.mean()
  # The data seed changes which source each element is drawn from.
  inputs1 = np.concatenate([b['inputs'] for b in _batches(_with_seed(corpus, 1), 250, 1)])
  assert np.any(np.any(inputs1 == a_byte, axis=1) != from_a[:250])


def test_val_batches(line_corpus):
  n = line_corpus.val.num_rows
  val = _all_rows(line_corpus.val)
  batches = data.val_batches(line_corpus, 2, 0)
  assert len(batches) == n // 2
  np.testing.assert_array_equal(batches[1]['inputs'], val['inputs'][2:4])
  assert len(data.val_batches(line_corpus, 2, 1)) == 1
  again = data.val_batches(line_corpus, 2, 1)
  np.testing.assert_array_equal(again[0]['targets'], batches[0]['targets'])
  shard = data.val_batches(line_corpus, 2, 0, process_index=1, process_count=2)
  np.testing.assert_array_equal(shard[0]['inputs'], val['inputs'][1:2])
  with pytest.raises(data.DataError, match='fewer than one batch'):
    data.val_batches(line_corpus, n + 1, 1)


# ---------------------------------------------------------------------- bad input


def _load(sources, **kw):
  return data.load_corpus(data.DataConfig(sources=sources, seq_len=16, **kw))


def test_missing_glob(tmp_path):
  with pytest.raises(data.DataError, match='matches no file'):
    _load(str(tmp_path / 'nothing*.txt'))


def test_empty_file(tmp_path):
  path = _write(tmp_path / 'empty.txt', '  \n')
  with pytest.raises(data.DataError, match='empty') as e:
    _load(path)
  assert path in str(e.value)


def test_invalid_utf8(tmp_path):
  path = tmp_path / 'bad.txt'
  path.write_bytes(b'hello world\n' * 20 + b'caf\xe9 au lait\n' + b'more text\n' * 20)
  with pytest.raises(data.DataError, match='decode_errors') as e:
    _load(str(path), doc_separator='file', split='tail')
  assert str(path) in str(e.value) and 'UTF-8' in str(e.value)
  corpus = _load(str(path), doc_separator='file', split='tail', decode_errors='replace')
  docs = data.read_documents(str(path), data.DataConfig(sources='', decode_errors='replace'))
  assert '\ufffd' in docs[0]
  assert corpus.num_train_rows > 0


def test_invalid_utf8_in_jsonl_names_the_line(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
  with pytest.raises(data.DataError, match='line 2.*decode_errors'):
    data.read_documents(str(path), data.DataConfig(sources=''))


def test_jsonl_missing_field(tmp_path):
  path = _write(tmp_path / 'docs.jsonl', '{"text": "first"}\n\n{"body": "second"}\n')
  with pytest.raises(data.DataError, match="line 3 has no string field 'text'") as e:
    _load(path)
  assert 'jsonl_field' in str(e.value) and path in str(e.value)
  with pytest.raises(data.DataError, match="line 1 has no string field 'body'"):
    data.read_documents(path, data.DataConfig(sources='', jsonl_field='body'))


def test_jsonl_other_field_and_non_string(tmp_path):
  path = _write(tmp_path / 'docs.jsonl', '{"body": "first"}\n{"body": "second", "n": 1}\n')
  assert data.read_documents(path, data.DataConfig(sources='', jsonl_field='body')) == ['first', 'second']
  bad = _write(tmp_path / 'num.jsonl', '{"text": 3}\n')
  with pytest.raises(data.DataError, match='line 1'):
    data.read_documents(bad, data.DataConfig(sources=''))


def test_invalid_json(tmp_path):
  path = _write(tmp_path / 'docs.jsonl', '{"text": "first"}\n{"text": "second"\n')
  with pytest.raises(data.DataError, match='line 2 is not valid JSON'):
    _load(path)


def test_gzip_jsonl_and_truncated_gz(tmp_path):
  lines = ''.join(json.dumps({'text': f'document {i} ' * 20}) + '\n' for i in range(200))
  good = tmp_path / 'docs.jsonl.gz'
  good.write_bytes(gzip.compress(lines.encode()))
  docs = data.read_documents(str(good), data.DataConfig(sources=''))
  assert len(docs) == 200 and docs[3] == 'document 3 ' * 20
  blob = gzip.compress((_lines(5000)).encode())
  bad = tmp_path / 'cut.txt.gz'
  bad.write_bytes(blob[:len(blob) // 2])
  with pytest.raises(data.DataError, match='cannot be read') as e:
    _load(str(bad))
  assert str(bad) in str(e.value)


def test_no_training_text(tmp_path):
  path = _write(tmp_path / 'one.txt', 'a single line\n')
  with pytest.raises(data.DataError, match='no training text'):
    _load(path, doc_separator='line', split='tail', val_fraction=0.99)


def test_val_split_smaller_than_a_batch(tmp_path):
  path = _write(tmp_path / 'text.txt', _lines(50))
  corpus = _load(path, doc_separator='file', split='tail', val_fraction=0.05)
  n = corpus.val.num_rows
  assert n >= 1
  with pytest.raises(data.DataError, match='validation split has'):
    data.val_batches(corpus, n + 1, 0)


# ---------------------------------------------------------------------- tokenizers


def test_byte_tokenizer_round_trip():
  tok = make_tokenizer('byte')
  assert isinstance(tok, ByteTokenizer)
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
  text = 'ROMEO:\n  héllo wörld ✓ 日本語 🙂\n\n'
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and len(ids) == len(text.encode('utf-8'))
  assert ids.min() >= 3 and ids.max() < 259
  assert tok.decode(ids) == text
  assert tok.decode([1, *ids, 2, 0, 0]) == text  # special ids are dropped
  assert list(tok.encode('A')) == [ord('A') + 3]


def test_unknown_tokenizer():
  with pytest.raises(ValueError, match="'byte', 'sentencepiece' or 'hf'"):
    make_tokenizer('bpe')


@pytest.fixture(scope='module')
def spm_model(tmp_path_factory):
  d = tmp_path_factory.mktemp('spm')
  with open(SHAKESPEARE, encoding='utf-8') as f:
    text = f.read(200_000)
  corpus = d / 'corpus.txt'
  corpus.write_text(text, encoding='utf-8')
  # 400, not 300: byte fallback needs 256 byte pieces + the corpus' characters + 4 specials.
  return train_sentencepiece(str(corpus), 400, str(d / 'sub' / 'tiny'))


def test_sentencepiece_ids_and_round_trip(spm_model):
  assert os.path.exists(spm_model) and spm_model.endswith('tiny.model')
  tok = make_tokenizer('sentencepiece', spm_model)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  assert tok.vocab_size == 400
  text = 'ROMEO: What, art thou here? Héllo ✓ 日本'
  ids = tok.encode(text)
  assert ids.dtype == np.int32 and len(ids) < len(text.encode('utf-8'))  # merges happened
  assert ids.min() >= 3 and ids.max() < 400
  assert tok.decode(ids) == text
  assert tok.decode([1, *ids, 2, 0]) == text


def test_sentencepiece_round_trip_keeps_newlines(spm_model):
  tok = make_tokenizer('sentencepiece', spm_model)
  text = 'ROMEO:\nWhat, art thou here?\n\nJULIET:\n  Ay.\n'
  assert tok.decode(tok.encode(text)) == text


def test_sentencepiece_corpus(spm_model, tmp_path):
  path = _write(tmp_path / 'doc.txt', 'First Citizen:\nBefore we proceed any further, hear me speak.\n\n'
                                      'All:\nSpeak, speak.\n\n' * 30)
  corpus = _load(path, tokenizer='sentencepiece', spm_model=spm_model)
  assert corpus.tokenizer.vocab_size == 400
  assert _all_rows(corpus.train[0])['inputs'].max() < 400


def test_sentencepiece_with_llama_style_ids(tmp_path):
  """A SentencePiece model trained elsewhere (Llama's layout: unk 0, bos 1, eos 2, no pad)
  works with its own ids: pad falls back to EOS, specials are dropped by decode."""
  import sentencepiece as spm
  with open(SHAKESPEARE, encoding='utf-8') as f:
    (tmp_path / 'c.txt').write_text(f.read(50_000), encoding='utf-8')
  spm.SentencePieceTrainer.train(input=str(tmp_path / 'c.txt'), model_prefix=str(tmp_path / 'l'), vocab_size=300,
                                 unk_id=5, bos_id=7, eos_id=9, pad_id=-1, minloglevel=2)
  tok = make_tokenizer('sentencepiece', str(tmp_path / 'l.model'))
  assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.add_bos) == (7, 9, 9, True)
  ids = tok.encode('ROMEO: hi')
  assert tok.decode([7, *ids, 9]) == tok.decode(ids)
  corpus = _load(_write(tmp_path / 'doc.txt', 'First Citizen:\nBefore we proceed.\n\n' * 40),
                 tokenizer='sentencepiece', spm_model=str(tmp_path / 'l.model'))
  row = _all_rows(corpus.train[0])
  # One document: it starts with this model's BOS and ends with its EOS, each exactly once.
  assert (row['inputs'] == 7).sum() == 1 and (row['targets'] == 9).sum() == 1


def test_sentencepiece_missing_model(tmp_path):
  with pytest.raises(ValueError, match='python -m llm.tokenizer'):
    make_tokenizer('sentencepiece', str(tmp_path / 'missing.model'))
  with pytest.raises(ValueError, match='python -m llm.tokenizer'):
    make_tokenizer('sentencepiece', '')
  with pytest.raises(FileNotFoundError):
    train_sentencepiece(str(tmp_path / 'none*.txt'), 400, str(tmp_path / 'x'))
