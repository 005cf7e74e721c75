"""Tests of llm/data/objectives.py and the objectives in llm/data/stream.py: next token, BERT's
masked LM, T5's span corruption; determinism, exact resume, errors; tokenizers' mask and sentinels."""

import json

import numpy as np
import pytest

from llm import data
from llm.data import objectives as O
from llm.data import stream
from llm.data import tokens as T
from llm.data.documents import DataError
from llm.tokenizer import ByteTokenizer, HFTokenizer, from_spec, make_tokenizer, special_ids

BYTE = ByteTokenizer.offset  # the byte tokenizer's first text id


def _stream(num_docs: int, seed: int = 0, max_len: int = 300) -> T.MemoryTokens:
  """Random byte documents laid end to end, each [BOS] doc [EOS]."""
  rng = np.random.default_rng(seed)
  docs = [rng.integers(BYTE, BYTE + 256, rng.integers(1, max_len)) for _ in range(num_docs)]
  return T.MemoryTokens(*T.concat_documents(docs, 1, 2))


def _text_stream(texts: list[str], tok) -> T.MemoryTokens:
  return T.MemoryTokens(*T.concat_documents([tok.encode(t) for t in texts], tok.bos_id, tok.eos_id))


def _cfg(**kw) -> data.DataConfig:
  return data.DataConfig(**{'sources': 'x', 'seq_len': 128, **kw})


# ----------------------------------------------------------------------------- next token


def test_next_token_equals_window_rows():
  rng = np.random.default_rng(0)
  w = rng.integers(0, 300, (50, 33)).astype(np.int32)
  s = rng.random((50, 33)) < 0.1
  got = O.NextToken().rows(w, s, np.arange(50), seed=5)
  want = O.window_rows(w, s)
  assert list(got) == list(O.FIELDS)
  for k in O.FIELDS:
    np.testing.assert_array_equal(got[k], want[k])
  assert O.NextToken().window(32) == (33, 32)


def test_next_token_windows_as_before():
  """TokenWindows' default rows are today's: windows of T+1 at stride T, zero past the stream's end."""
  st = _stream(40)
  rows = stream.TokenWindows(st, 32)
  n = st.num_tokens
  assert rows.num_rows == -(-(n - 1) // 32)
  idx = np.arange(rows.num_rows)
  w = np.zeros((len(idx), 33), np.int32)
  s = np.ones((len(idx), 33), bool)
  for i in idx:
    tok, st_bits = st.tokens[i * 32:i * 32 + 33], st.starts[i * 32:i * 32 + 33]
    w[i, :len(tok)], s[i, :len(tok)] = tok, st_bits
  want, got = O.window_rows(w, s), rows.rows(idx)
  for k in O.FIELDS:
    np.testing.assert_array_equal(got[k], want[k])


# ------------------------------------------------------------------------------ masked LM

MLM_TOK = ByteTokenizer(mask=True)


def _mlm(**kw) -> O.MaskedLM:
  return O.MaskedLM(MLM_TOK.mask_id, MLM_TOK.vocab_size, special_ids(MLM_TOK), **kw)


@pytest.fixture(scope='module')
def mlm_rows():
  """2,000 rows of 128 tokens (documents of 1 to 300 bytes) and their masked-LM fields."""
  rows = stream.TokenWindows(_stream(1800), 128, _mlm())
  idx = np.arange(min(2000, rows.num_rows))
  plain = stream.TokenWindows(rows.stream, 128, _mlm(rate=0.5, replace_mask=0.0, replace_random=0.0))
  return rows, idx, rows.rows(idx, idx + 10_000, seed=1), plain.rows(idx, idx + 10_000, seed=1)


def test_mlm_fields_and_shapes(mlm_rows):
  rows, idx, x, _ = mlm_rows
  assert rows.objective.window(128) == (128, 128) and (rows.length, rows.stride) == (128, 128)
  assert list(x) == list(O.MLM_FIELDS) and rows.objective.fields(128) == {k: 128 for k in O.MLM_FIELDS}
  assert all(v.dtype == np.int32 and v.shape == (len(idx), 128) for v in x.values())


def test_mlm_selects_exactly_the_rate_and_80_10_10(mlm_rows):
  _, _, x, _ = mlm_rows
  valid = x['segments'] > 0
  sel = x['loss_mask'] > 0
  # BERT's exact count per row: max(1, round(rate * n)) of the n valid tokens.
  np.testing.assert_array_equal(sel.sum(1), np.maximum(1, np.round(0.15 * valid.sum(1))))
  assert abs(sel.sum() / valid.sum() - 0.15) < 0.002
  inp, tgt = x['inputs'][sel], x['targets'][sel]
  masked = inp == MLM_TOK.mask_id
  kept = inp == tgt
  changed = ~masked & ~kept
  n = sel.sum()  # about 38,000 selected tokens: a binomial 0.1 fraction has sd 0.0015
  assert abs(masked.mean() - 0.8) < 0.01 and abs(kept.mean() - 0.1 - 0.1 / 256) < 0.01, (masked.mean(), kept.mean())
  assert abs(changed.mean() - 0.1) < 0.01 and n > 30_000
  # Random replacements are uniform over the 256 byte ids, never a special one.
  assert inp[changed].min() >= BYTE and inp[changed].max() < BYTE + 256
  assert len(np.unique(inp[changed])) > 240


def test_mlm_never_selects_specials_or_padding(mlm_rows):
  rows, idx, x, plain = mlm_rows
  special = np.isin(x['targets'], sorted(special_ids(MLM_TOK)))
  for f in (x, plain):
    assert not np.any((f['loss_mask'] > 0) & (special | (f['segments'] == 0)))
  # Unselected tokens are unchanged, targets are the original tokens everywhere.
  unsel = (x['loss_mask'] == 0) & (x['segments'] > 0)
  np.testing.assert_array_equal(x['inputs'][unsel], x['targets'][unsel])
  st = rows.stream
  for i in idx[:50]:
    window = st.tokens[i * 128:(i + 1) * 128]
    np.testing.assert_array_equal(x['targets'][i, :len(window)], window)
  # The last row runs past the stream's end: padding there, segment 0, nothing selected.
  last = rows.rows(np.array([rows.num_rows - 1]))
  n = st.num_tokens - (rows.num_rows - 1) * 128
  assert n < 128 and np.all(last['segments'][0, n:] == 0) and np.all(last['segments'][0, :n] > 0)
  assert np.all(last['loss_mask'][0, n:] == 0) and np.all(last['inputs'][0, n:] == 0)


def test_mlm_segments_and_positions_follow_documents():
  tok = MLM_TOK
  st = _text_stream(['ab', 'cde', 'f'], tok)  # 1 a b 2 | 1 c d e 2 | 1 f 2
  x = stream.TokenWindows(st, 6, _mlm()).rows(np.arange(2))
  np.testing.assert_array_equal(x['segments'], [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 2, 2]])
  np.testing.assert_array_equal(x['positions'], [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 1, 2]])
  x = stream.TokenWindows(st, 8, _mlm()).rows(np.arange(2))
  np.testing.assert_array_equal(x['segments'][1], [1, 2, 2, 2, 0, 0, 0, 0])  # e 2 | 1 f 2, then padding


def test_mlm_is_a_function_of_seed_and_element(mlm_rows):
  rows, idx, x, _ = mlm_rows
  # The same elements in another order and batch give the same rows.
  perm = np.random.default_rng(0).permutation(len(idx))[:300]
  again = rows.rows(idx[perm], idx[perm] + 10_000, seed=1)
  for k in x:
    np.testing.assert_array_equal(again[k], x[k][perm])
  other_seed = rows.rows(idx[:300], idx[:300] + 10_000, seed=2)
  other_element = rows.rows(idx[:300], idx[:300] + 20_000, seed=1)
  for y in (other_seed, other_element):
    assert np.mean(np.all(y['loss_mask'] == x['loss_mask'][:300], axis=1)) < 0.01
  val = stream.TokenWindows(rows.stream, 128, rows.objective, O.VALIDATION).rows(idx[:300], idx[:300] + 10_000, seed=1)
  assert np.mean(np.all(val['loss_mask'] == x['loss_mask'][:300], axis=1)) < 0.01  # another salt


def _write(path, text):
  path.write_text(text, encoding='utf-8')
  return str(path)


@pytest.fixture(scope='module')
def line_file(tmp_path_factory):
  d = tmp_path_factory.mktemp('lines')
  return _write(d / 'lines.txt', ''.join(f'the line number {i} of some text here\n' for i in range(400)))


@pytest.mark.parametrize('objective', ['mlm', 'span_corruption'])
def test_batches_resume_exactly_and_shard_over_processes(line_file, objective):
  cfg = data.DataConfig(sources=line_file, seq_len=32, doc_separator='line', val_fraction=0.1, objective=objective)
  corpus = data.load_corpus(cfg)
  full = [stream.Batches(corpus, 8)(step) for step in range(4)]
  fresh = stream.Batches(data.load_corpus(cfg), 8)(3)  # a restarted run at step 3
  halves = [stream.Batches(corpus, 8, p, 2)(3) for p in range(2)]
  for k in full[3]:
    np.testing.assert_array_equal(fresh[k], full[3][k])
    np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), full[3][k])
  assert not np.array_equal(full[0]['inputs'], full[1]['inputs'])
  reseeded = data.Corpus(**{**corpus.__dict__, 'cfg': data.DataConfig(**{**cfg.__dict__, 'seed': 1})})
  assert not np.array_equal(stream.Batches(reseeded, 8)(3)['inputs'], full[3]['inputs'])
  # Validation batches are fixed: the same at every call, and whatever data.seed is.
  v1, v2 = data.val_batches(corpus, 4, 2), data.val_batches(reseeded, 4, 2)
  for a, b in zip(v1, v2):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_epochs_mask_a_row_afresh(line_file):
  corpus = data.load_corpus(data.DataConfig(sources=line_file, seq_len=32, doc_separator='line', objective='mlm'))
  n = corpus.num_train_rows
  e0, e1 = stream.Batches(corpus, n)(0), stream.Batches(corpus, n)(1)
  order0, order1 = np.lexsort(e0['targets'].T), np.lexsort(e1['targets'].T)
  np.testing.assert_array_equal(e0['targets'][order0], e1['targets'][order1])  # the same rows ...
  assert np.mean(np.all(e0['loss_mask'][order0] == e1['loss_mask'][order1], axis=1)) < 0.05  # ... masked afresh


def _byte_words(ids: np.ndarray) -> list[tuple[int, int]]:
  """[start, end) of the byte rule's words among the text ids of one row (specials split them)."""
  words, start = [], None
  for j, t in enumerate(ids):
    text = BYTE <= t < BYTE + 256
    begins = text and (start is None or (j > 0 and ids[j - 1] - BYTE in b' \t\n\r\v\f'))
    if start is not None and (not text or begins):
      words.append((start, j))
      start = None
    if text and start is None:
      start = j
  if start is not None:
    words.append((start, len(ids)))
  return words


def test_whole_word_masking_keeps_byte_words_whole():
  rng = np.random.default_rng(1)
  vocab = ['the', 'masked', 'language', 'model', 'a', 'été', 'x', 'tokenization', '日本語']
  texts = [' '.join(rng.choice(vocab, rng.integers(1, 40))) + '\n' for _ in range(300)]
  rows = stream.TokenWindows(_text_stream(texts, MLM_TOK), 64, _mlm(whole_word=True, word_starts=O.byte_word_starts))
  x = rows.rows(np.arange(rows.num_rows))
  sel, valid = x['loss_mask'] > 0, x['segments'] > 0
  for r in range(rows.num_rows):
    for a, b in _byte_words(x['targets'][r]):
      assert sel[r, a:b].all() or not sel[r, a:b].any(), (r, a, b)
  # Never more than the count, and close to it (BERT skips a word that would overshoot).
  k = np.maximum(1, np.round(0.15 * valid.sum(1)))
  assert np.all(sel.sum(1) <= k) and sel.sum() / k.sum() > 0.9
  assert MLM_TOK.decode(x['targets'][0]) == ''.join(texts)[:len(MLM_TOK.decode(x['targets'][0]))]


@pytest.fixture(scope='module')
def wordpiece(tmp_path_factory):
  """A BERT-style WordPiece tokenizer.json with [MASK], saved as Hugging Face saves one."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  pieces = specials + ['the', 'play', 'cat', 'dog', 'run', 'walk', '##ing', '##ed', '##s', '##er']
  tk = Tokenizer(models.WordPiece(vocab={p: i for i, p in enumerate(pieces)}, unk_token='[UNK]'))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  tk.add_special_tokens(specials)
  d = tmp_path_factory.mktemp('wordpiece')
  tk.save(str(d / 'tokenizer.json'))
  (d / 'tokenizer_config.json').write_text(json.dumps(
      {'pad_token': '[PAD]', 'bos_token': '[CLS]', 'eos_token': '[SEP]', 'mask_token': '[MASK]', 'unk_token': '[UNK]'}))
  return HFTokenizer(str(d))


def test_wordpiece_mask_and_word_starts(wordpiece):
  tok = wordpiece
  assert tok.mask_id == 4 and tok.sentinel_ids == () and special_ids(tok) == {0, 1, 2, 3, 4}
  table = O.word_start_table(tok)
  assert table.tolist() == [True] * 11 + [False] * 4
  rng = np.random.default_rng(0)
  words = ['the', 'playing', 'cats', 'dog', 'walked', 'runner', 'play']
  texts = [' '.join(rng.choice(words, rng.integers(1, 30))) for _ in range(200)]
  objective = O.make_objective('mlm', tok, _cfg(seq_len=48, whole_word=True))
  rows = stream.TokenWindows(_text_stream(texts, tok), 48, objective)
  x = rows.rows(np.arange(rows.num_rows))
  sel, tgt = x['loss_mask'] > 0, x['targets']
  cont = (tgt >= 11) & (x['segments'] > 0)  # '##' pieces: selected exactly when the piece before them is
  cont[:, 0] = False  # a word cut by the row's start is a word of its own
  r, c = np.nonzero(cont)
  np.testing.assert_array_equal(sel[r, c], sel[r, c - 1])
  assert sel[r, c].any() and not np.isin(tgt[sel], [0, 1, 2, 3, 4]).any()
  assert tok.decode([2, 5, 4, 6, 3]) == 'the play'  # specials, [MASK] among them, are dropped


def test_word_start_table_needs_pieces_that_mark_words():
  with pytest.raises(DataError, match='word_starts_for'):
    O.word_start_table(ByteTokenizer())
  assert O.word_starts_for(ByteTokenizer(mask=True)) is O.byte_word_starts


# ------------------------------------------------------------------------ span corruption


def _t5_lengths(inputs_length, density, mean):
  """The definition: the largest raw length whose corrupted input (plus EOS) fits."""
  def lengths(n):
    noise = int(round(n * density))
    spans = int(round(noise / mean))
    return n - noise + spans + 1, noise + spans + 1
  n = max(k for k in range(inputs_length - 1, 4 * inputs_length) if lengths(k)[0] <= inputs_length
          and all(lengths(j)[0] <= inputs_length for j in range(inputs_length - 1, k)))
  return n, lengths(n)[1]


def test_t5_lengths():
  assert O.compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)  # T5's own numbers
  for inputs_length in (16, 64, 128, 256, 1000, 1024, 2048):
    for density, mean in ((0.15, 3.0), (0.3, 8.0), (0.15, 1.0)):
      assert O.compute_input_and_target_lengths(inputs_length, density, mean) == _t5_lengths(inputs_length, density, mean)
  assert O.compute_input_and_target_lengths(128, 0.15, 3.0) == (141, 29)
  assert O.compute_input_and_target_lengths(1024, 0.15, 3.0) == (1137, 229)
  # T5's hack for density 0.5: one raw token fewer so that targets are no longer than inputs.
  tokens, targets = O.compute_input_and_target_lengths(512, 0.5, 3.0)
  raw, raw_targets = _t5_lengths(512, 0.5, 3.0)
  assert (tokens, targets) == ((raw - 1, raw_targets - 1) if raw_targets > 512 else (raw, raw_targets))


SPAN_TOK = ByteTokenizer(sentinels=100)


def _span(**kw) -> O.SpanCorruption:
  return O.SpanCorruption(SPAN_TOK.sentinel_ids, SPAN_TOK.eos_id, SPAN_TOK.pad_id, **kw)


def _merge(x: dict[str, np.ndarray], r: int, sentinels: tuple[int, ...]) -> list[int]:
  """Row r's original window from the encoder's inputs and the decoder's targets (split at
  sentinels). Each ends with the EOS span corruption appends; the documents' own EOS tokens
  are text inside, so the lengths come from the segments."""
  inputs = x['inputs'][r, :x['segments'][r].sum() - 1]
  targets = x['targets'][r, :x['dec_segments'][r].sum() - 1]
  spans, current = {}, None
  for t in targets:
    if t in sentinels:
      current = sentinels.index(t)
      spans[current] = []
    else:
      spans[current].append(int(t))
  out = []
  for t in inputs:
    out += spans[sentinels.index(t)] if t in sentinels else [int(t)]
  return out


@pytest.fixture(scope='module')
def span_rows():
  rows = stream.TokenWindows(_stream(1200, seed=2), 512, _span())
  idx = np.arange(rows.num_rows)
  return rows, idx, rows.rows(idx, idx, seed=0)


def test_span_corruption_shapes(span_rows):
  rows, idx, x = span_rows
  assert rows.length == rows.stride == 568
  assert rows.objective.fields(512) == {'inputs': 512, 'positions': 512, 'segments': 512, 'dec_inputs': 114,
                                        'targets': 114, 'dec_positions': 114, 'dec_segments': 114}
  assert list(x) == list(O.SPAN_FIELDS)
  for k, width in rows.objective.fields(512).items():
    assert x[k].shape == (len(idx), width) and x[k].dtype == np.int32


def test_span_corruption_decodes_back_to_the_window(span_rows):
  rows, idx, x = span_rows
  st, sentinels = rows.stream, SPAN_TOK.sentinel_ids
  for r in idx:
    window = st.tokens[r * 568:(r + 1) * 568].tolist()
    assert _merge(x, r, sentinels) == window, r


def test_span_corruption_follows_t5(span_rows):
  rows, idx, x = span_rows
  full = idx[:-1]  # the last row is short
  sentinels = np.array(SPAN_TOK.sentinel_ids)
  inp, tgt = x['inputs'][full], x['targets'][full]
  # Full rows fill the encoder and decoder exactly, without padding, and end with EOS.
  assert np.all(x['segments'][full] == 1) and np.all(x['dec_segments'][full] == 1)
  assert np.all(inp[:, -1] == SPAN_TOK.eos_id) and np.all(tgt[:, -1] == SPAN_TOK.eos_id)
  # round(568 * 0.15) = 85 noise tokens in round(85 / 3) = 28 spans, numbered in order.
  in_sent, tgt_sent = np.isin(inp, sentinels), np.isin(tgt, sentinels)
  assert np.all(in_sent.sum(1) == 28) and np.all(tgt_sent.sum(1) == 28)
  assert np.all(114 - 1 - tgt_sent.sum(1) == 85)
  np.testing.assert_array_equal(inp[in_sent].reshape(-1, 28), np.broadcast_to(sentinels[:28], (len(full), 28)))
  np.testing.assert_array_equal(tgt[tgt_sent].reshape(-1, 28), np.broadcast_to(sentinels[:28], (len(full), 28)))
  assert tgt[:, 0].tolist() == [sentinels[0]] * len(full)  # targets start with <extra_id_0> ...
  assert not np.isin(inp[:, 0], sentinels).any()  # ... and the mask starts with non-noise
  # Spans are random partitions: lengths from 1 up, mean 85 / 28; noise falls everywhere.
  lengths = np.diff(np.nonzero(np.append(tgt_sent[0, :-1], True))[0]) - 1  # up to the final EOS
  assert lengths.min() >= 1 and lengths.sum() == 85
  starts = np.nonzero(in_sent)[1]
  assert starts.min() < 30 and starts.max() > 480
  # The decoder reads the targets shifted right after the start token (pad).
  np.testing.assert_array_equal(x['dec_inputs'][:, 0], 0)
  np.testing.assert_array_equal(x['dec_inputs'][full, 1:], tgt[:, :-1])
  np.testing.assert_array_equal(x['positions'][0], np.arange(512))


def test_span_corruption_short_last_row(span_rows):
  rows, idx, x = span_rows
  r = idx[-1]
  n = rows.stream.num_tokens - r * 568
  assert 0 < n < 568
  noise, spans = O.noise_counts(n, 0.15, 3.0)
  enc, dec = int(x['segments'][r].sum()), int(x['dec_segments'][r].sum())
  assert enc == n - noise + spans + 1 and dec == noise + spans + 1
  assert np.all(x['inputs'][r, enc:] == 0) and np.all(x['dec_inputs'][r, dec:] == 0)
  assert np.all(x['positions'][r, enc:] == 0) and np.all(x['dec_positions'][r, dec:] == 0)
  for length in (1, 2, 3, 7, 40):  # very short rows too: T5's rules, decoded back
    w = np.full((3, 568), O.END, np.int32)
    w[:, :length] = np.arange(BYTE, BYTE + length)
    y = rows.objective.rows(w, np.ones_like(w, bool), np.arange(3), 0)
    for i in range(3):
      assert _merge(y, i, SPAN_TOK.sentinel_ids) == list(range(BYTE, BYTE + length))


def test_span_corruption_is_a_function_of_seed_and_element(span_rows):
  rows, idx, x = span_rows
  sub = idx[[5, 1, 3]]
  again = rows.rows(sub, sub, seed=0)
  for k in x:
    np.testing.assert_array_equal(again[k], x[k][sub])
  other = rows.rows(sub, sub, seed=1)
  assert all(not np.array_equal(other['inputs'][i], x['inputs'][s]) for i, s in enumerate(sub))


def test_random_spans_noise_mask_statistics():
  keys = np.arange(4000, dtype=np.uint64)
  mask = O.random_spans_noise_mask(100, 0.15, 3.0, keys)
  assert np.all(mask.sum(1) == 15)
  starts = mask[:, 1:] & ~mask[:, :-1]
  assert np.all(starts.sum(1) == 5)
  # T5's masks alternate non-noise and noise spans, starting with non-noise, so the first
  # token is never noise and the last always is; in between, noise falls about evenly.
  assert not mask[:, 0].any() and mask[:, -1].all()
  rate = mask[:, 20:80].mean(0)
  assert rate.min() > 0.1 and rate.max() < 0.2
  spans = np.diff(np.nonzero(np.diff(np.pad(mask[0].astype(int), 1)))[0])[::2]
  assert spans.sum() == 15 and len(spans) == 5


def test_span_corruption_batches_through_tf_data(line_file):
  corpus = data.load_corpus(data.DataConfig(sources=line_file, seq_len=64, doc_separator='line',
                                            objective='span_corruption'))
  assert corpus.tokenizer.sentinel_ids[0] == corpus.tokenizer.vocab_size - 1 == 258 + 100
  assert data.describe(corpus)[0] == ('objective span_corruption: rows of 70 tokens -> encoder 64, decoder 14 '
                                      '(noise density 0.15, mean span 3)')
  batches = list(data.train_dataset(corpus, 4, start_step=2).take(2).as_numpy_iterator())
  direct = stream.Batches(corpus, 4)
  for step, b in enumerate(batches, 2):
    assert b['inputs'].shape == (4, 64) and b['targets'].shape == (4, 14) and b['dec_segments'].shape == (4, 14)
    for k, v in direct(step).items():
      np.testing.assert_array_equal(b[k], v)


# ---------------------------------------------------------------------------------- errors


def test_objective_errors_name_the_fix():
  with pytest.raises(DataError, match="needs a mask token.*data.tokenizer='byte'"):
    O.make_objective('mlm', ByteTokenizer(), _cfg())
  with pytest.raises(DataError, match=r'needs sentinel tokens \(<extra_id_0>'):
    O.make_objective('span_corruption', ByteTokenizer(mask=True), _cfg())
  with pytest.raises(DataError, match='makes up to 28 noise spans, but the tokenizer has 3 sentinel'):
    O.make_objective('span_corruption', ByteTokenizer(sentinels=3), _cfg(seq_len=512))
  with pytest.raises(DataError, match=r'data.seq_len=5 cannot be filled by span corruption at noise_density 0.15 '
                                      r'and mean_span 3 .*use at least data.seq_len=10'):
    O.make_objective('span_corruption', SPAN_TOK, _cfg(seq_len=5))
  O.make_objective('span_corruption', SPAN_TOK, _cfg(seq_len=10))  # the shortest that works
  with pytest.raises(DataError, match="must be 'next_token', 'mlm' or 'span_corruption'"):
    O.make_objective('bert', MLM_TOK, _cfg())
  with pytest.raises(DataError, match="whole_word=True applies to data.objective='mlm'"):
    O.make_objective('next_token', MLM_TOK, _cfg(whole_word=True))
  with pytest.raises(DataError, match='mlm_rate=1.5'):
    O.make_objective('mlm', MLM_TOK, _cfg(mlm_rate=1.5))
  with pytest.raises(DataError, match='noise_density=0'):
    O.make_objective('span_corruption', SPAN_TOK, _cfg(noise_density=0.0))
  with pytest.raises(DataError, match='outside the masked-LM vocabulary'):
    _mlm().rows(np.full((1, 4), 300, np.int32), np.zeros((1, 4), bool), np.arange(1), 0)


def test_load_corpus_errors(line_file, wordpiece):
  with pytest.raises(DataError, match='data.objective must be one of'):
    data.load_corpus(data.DataConfig(sources=line_file, objective='t5'))
  with pytest.raises(DataError, match='needs sentinel tokens'):
    data.load_corpus(data.DataConfig(sources=line_file, objective='span_corruption'), tokenizer=wordpiece)
  with pytest.raises(DataError, match='at least data.seq_len=10'):
    data.load_corpus(data.DataConfig(sources=line_file, objective='span_corruption', seq_len=4))


# ------------------------------------------------------------------------------ tokenizers


def test_byte_tokenizer_extras_and_spec_round_trip():
  plain = make_tokenizer('byte')
  assert plain.spec() == {'kind': 'byte'} and plain.vocab_size == 259
  assert plain.mask_id is None and plain.sentinel_ids == () and ByteTokenizer.vocab_size == 259
  assert from_spec(plain.spec()).spec() == {'kind': 'byte'} and from_spec({'kind': 'byte'}).vocab_size == 259
  tok = ByteTokenizer(mask=True, sentinels=3)
  assert tok.vocab_size == 263 and tok.mask_id == 259 and tok.sentinel_ids == (262, 261, 260)
  assert tok.spec() == {'kind': 'byte', 'mask': True, 'sentinels': 3}
  again = from_spec(json.loads(json.dumps(tok.spec())))
  assert (again.vocab_size, again.mask_id, again.sentinel_ids) == (263, 259, (262, 261, 260))
  assert special_ids(tok) == {0, 1, 2, 259, 260, 261, 262}
  ids = tok.encode('héllo')
  np.testing.assert_array_equal(ids, plain.encode('héllo'))
  assert tok.decode([1, *ids[:2], 259, 262, *ids[2:], 2]) == 'héllo'
  t5 = ByteTokenizer(sentinels=100)
  assert t5.sentinel_ids[0] == t5.vocab_size - 1 == 358 and t5.sentinel_ids[-1] == 259


def test_load_corpus_makes_the_byte_tokenizer_the_objective_needs(line_file):
  mlm = data.load_corpus(data.DataConfig(sources=line_file, seq_len=32, doc_separator='line', objective='mlm'))
  assert mlm.tokenizer.spec() == {'kind': 'byte', 'mask': True, 'sentinels': 0}
  assert isinstance(mlm.objective, O.MaskedLM) and mlm.objective.mask_id == 259
  sc = data.load_corpus(data.DataConfig(sources=line_file, seq_len=32, doc_separator='line',
                                        objective='span_corruption'))
  assert sc.tokenizer.spec() == {'kind': 'byte', 'mask': False, 'sentinels': 100}
  long = data.make_data_tokenizer(data.DataConfig(sources='x', seq_len=4096, objective='span_corruption'))
  assert len(long.sentinel_ids) == O.SpanCorruption((), 2, 0).sentinels_needed(4096) > 100
  plain = data.load_corpus(data.DataConfig(sources=line_file, seq_len=32, doc_separator='line'))
  assert plain.tokenizer.spec() == {'kind': 'byte'} and isinstance(plain.objective, O.NextToken)


def test_prepared_byte_corpus_serves_every_objective(line_file, tmp_path):
  from llm.data import prepare
  prepare.run(prepare.PrepareConfig(sources=line_file, output=str(tmp_path / 'tok'), runner='local',
                                    doc_separator='line', val_fraction=0.1), log=lambda *a: None)
  for objective in ('mlm', 'span_corruption'):
    kw = dict(seq_len=32, doc_separator='line', objective=objective)
    disk = data.load_corpus(data.DataConfig(sources=f'tokens:{tmp_path}/tok', **kw))
    memory = data.load_corpus(data.DataConfig(sources=line_file, **kw))
    a, b = stream.Batches(disk, 8)(1), stream.Batches(memory, 8)(1)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_hf_sentinels_in_order_of_n(tmp_path):
  from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
  vocab = {'<pad>': 0, '</s>': 1, '<unk>': 2, 'a': 3, 'b': 4}
  tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token='<unk>'))
  tk.pre_tokenizer = pre_tokenizers.Whitespace()
  tk.add_special_tokens(['<pad>', '</s>', '<unk>'])
  # As T5's tokenizer.json: <extra_id_99> first, so <extra_id_0> has the highest id.
  tk.add_special_tokens([AddedToken(f'<extra_id_{n}>', special=True) for n in range(9, -1, -1)])
  tk.add_special_tokens([AddedToken('<extra_id_12>', special=True)])  # after a gap: not a sentinel
  tk.save(str(tmp_path / 'tokenizer.json'))
  (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'eos_token': '</s>', 'pad_token': '<pad>'}))
  tok = HFTokenizer(str(tmp_path))
  assert tok.sentinel_ids == tuple(range(14, 4, -1)) and tok.mask_id is None
  assert tok.decode([3, 14, 4, 1]) == 'a b'
  assert isinstance(O.make_objective('span_corruption', tok, _cfg(seq_len=64)), O.SpanCorruption)
  with pytest.raises(DataError, match='needs a mask token'):
    O.make_objective('mlm', tok, _cfg())


def test_sentencepiece_mask_and_sentinels(tmp_path):
  import sentencepiece as spm
  text = tmp_path / 'text.txt'
  text.write_text(''.join(f'the cat sat on mat number {i}\n' for i in range(200)), encoding='utf-8')
  for name, symbols in (('plain', []), ('extras', ['[MASK]', '<extra_id_0>', '<extra_id_1>'])):
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / name), vocab_size=40,
                                   model_type='char', pad_id=0, bos_id=1, eos_id=2, unk_id=3,
                                   user_defined_symbols=symbols, minloglevel=2)
  plain = make_tokenizer('sentencepiece', str(tmp_path / 'plain.model'))
  assert plain.mask_id is None and plain.sentinel_ids == ()
  tok = make_tokenizer('sentencepiece', str(tmp_path / 'extras.model'))
  assert (tok.mask_id, tok.sentinel_ids) == (4, (5, 6))
  assert special_ids(tok) == {0, 1, 2, 4, 5, 6}
  table = O.word_start_table(tok)
  assert table[tok.encode('cat')[0]] and not table[tok.encode('cat')[1]]
