"""Tests for llm.data.clean.dedup (exact, MinHash LSH, repeated lines) and llm.data.clean.pii."""

import random

import numpy as np
import pytest

from llm.data.clean import dedup, pii
from llm.data.clean.dedup import MinHashConfig, MinHasher
from llm.data.clean.pii import PIIConfig, scrub

_SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'vi', 'so', 'pe', 'dai', 'gu', 'zo', 'fen', 'bar', 'qui']


def _vocab(n: int = 3000, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  words = set()
  while len(words) < n:
    words.add(''.join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
  return sorted(words)


VOCAB = _vocab()


def _doc(seed: int, n: int = 300) -> list[str]:
  rng = random.Random(seed)
  return [rng.choice(VOCAB) for _ in range(n)]


def _change(words: list[str], positions: list[int], seed: int = 99) -> list[str]:
  rng = random.Random(seed)
  out = list(words)
  for p in positions:
    out[p] = rng.choice(VOCAB) + 'x'  # a word not in the vocabulary: a real change
  return out


def _keys(mh: MinHasher, text: str) -> list[bytes]:
  return mh.band_keys(mh.signature_from_text(text))


# ------------------------------------------------------------------------------ exact


def test_exact_key_normalises_whitespace_only():
  base = 'Hello world.\nSecond line here.'
  assert len(dedup.exact_key(base)) == 16
  for variant in ['  Hello   world.\n\nSecond line here.  ', 'Hello\tworld. Second\u00a0line here.',
                  'Hello world.\r\nSecond line here.\n']:
    assert dedup.exact_key(variant) == dedup.exact_key(base)
  assert dedup.exact_key('hello world. second line here.') != dedup.exact_key(base)  # case kept
  assert dedup.exact_key('Hello world!\nSecond line here.') != dedup.exact_key(base)
  # NFC and NFD spellings of the same text are one document.
  assert dedup.exact_key('caf\u00e9 cr\u00e8me') == dedup.exact_key('cafe\u0301 cre\u0300me')


def test_exact_duplicates_keeps_smallest_id_in_any_order():
  texts = {
      '00001/000000005': 'The same page.',
      '00000/000000007': 'The   same page.\n',
      '00002/000000000': ' The same page. ',
      '00000/000000001': 'A different page.',
      '00003/000000003': 'A different page.',
      '00000/000000002': 'Unique text.',
  }
  items = [(i, dedup.exact_key(t)) for i, t in texts.items()]
  want = {'00001/000000005', '00002/000000000', '00003/000000003'}
  for seed in range(5):
    random.Random(seed).shuffle(items)
    assert dedup.exact_duplicates(items) == want


# ------------------------------------------------------------------- tokenization


@pytest.mark.parametrize('text,words', [
    # Reference outputs of datatrove's simplify_text + spaCy 'en' word_tokenize.
    ("Don't stop: it's 10km away!", ['don', 't', 'stop', 'it', 's', '0', 'km', 'away']),
    ("We can't go -- I'm sure; 3.5 MB costs £20. Café NAÏVE ☺ ok",
     ['we', 'can', 't', 'go', 'i', 'm', 'sure', '0', 'mb', 'costs', '£', '0', 'cafe', 'naive', '☺', 'ok']),
    ('dont cannot gonna 1,234.5 x', ['do', 'nt', 'can', 'not', 'gon', 'na', '0', '0', 'x']),
    ('', []),
])
def test_minhash_words_match_datatrove_spacy(text, words):
  assert dedup.minhash_words(text) == words


def test_simplify_text_matches_datatrove_rules():
  assert dedup.simplify_text('  Hello,   WORLD!!  v1.2.3 at 10:30 ') == 'hello world v0 0 at 0 0'
  assert dedup.simplify_text('Ça va — très bien…') == 'ca va tres bien'


# ------------------------------------------------------------------------ MinHash


def test_signature_is_bit_identical_to_datatrove():
  # Values computed with datatrove's MinhashDedupSignature (default MinhashConfig, seed 1).
  text = 'The quick brown fox jumps over the lazy dog near the river bank today.'
  sig = MinHasher().signature_from_text(text)
  assert sig.shape == (112,) and sig.dtype == np.uint64
  assert sig[[0, 1, 2, 3, 111]].tolist() == [85330943174081874, 5684921751207494, 285742329127442222,
                                             34440879854629237, 3963570588256049]


def test_signature_from_words_equals_from_text():
  mh = MinHasher()
  text = ' '.join(_doc(1, 50))
  np.testing.assert_array_equal(mh.signature_from_words(dedup.minhash_words(text)),
                                mh.signature_from_text(text))


def test_short_documents_get_no_signature():
  mh = MinHasher()
  sig = mh.signature_from_text('only four words here')
  assert sig.size == 0 and mh.band_keys(sig) == []
  assert mh.signature_from_text('exactly five words are here').shape == (112,)


def test_determinism_across_instances_and_seeds():
  text = ' '.join(_doc(2))
  a = MinHasher(MinHashConfig(seed=1)).signature_from_text(text)
  b = MinHasher(MinHashConfig(seed=1)).signature_from_text(text)
  c = MinHasher(MinHashConfig(seed=2)).signature_from_text(text)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert MinHasher(MinHashConfig(seed=1)).band_keys(a) == MinHasher(MinHashConfig(seed=1)).band_keys(b)


def test_band_keys_distinct_per_band():
  mh = MinHasher()
  keys = mh.band_keys(np.full(112, 7, dtype=np.uint64))  # equal values in every band
  assert len(keys) == 14 and len(set(keys)) == 14 and all(len(k) == 18 for k in keys)
  raw = mh.band_keys(np.arange(112, dtype=np.uint64), sortable=True)
  assert len(raw) == 14 and all(len(k) == 2 + 64 for k in raw) and raw == sorted(raw)


def test_edges_from_bucket_star_around_smallest():
  assert dedup.edges_from_bucket(['c', 'a', 'b', 'a']) == [('a', 'b'), ('a', 'c')]
  assert dedup.edges_from_bucket(['x']) == [] and dedup.edges_from_bucket(['x', 'x']) == []


def test_clusters_transitive_and_order_independent():
  edges = [('d', 'e'), ('b', 'c'), ('c', 'd'), ('x', 'y'), ('a', 'e')]
  want = {'a': 'a', 'b': 'a', 'c': 'a', 'd': 'a', 'e': 'a', 'x': 'x', 'y': 'x'}
  for seed in range(5):
    random.Random(seed).shuffle(edges)
    flipped = [(b, a) if random.Random(seed + 100).random() < 0.5 else (a, b) for a, b in edges]
    assert dedup.clusters(edges) == want
    assert dedup.clusters(flipped) == want


def test_near_duplicates_planted():
  mh = MinHasher()
  base = _doc(10)
  docs = {
      '00000/000000003': base,
      '00000/000000001': _change(base, [150]),  # 1 word changed: the smallest id
      '00001/000000000': _change(base, [20, 200], seed=1),
      '00002/000000004': _change(base, [5, 100, 290], seed=2),
  }
  for s in range(6):  # unrelated documents
    docs[f'00003/{s:09d}'] = _doc(1000 + s)
  items = [(i, _keys(mh, ' '.join(w))) for i, w in docs.items()]
  want = {'00000/000000003', '00001/000000000', '00002/000000004'}
  assert dedup.near_duplicates(items) == want
  for seed in range(3):
    random.Random(seed).shuffle(items)
    assert dedup.near_duplicates(items) == want


def test_near_duplicates_chain_is_one_cluster():
  # A ~ B and B ~ C share band keys but A and C share none: still one cluster, A kept.
  mh = MinHasher()
  words = _doc(24, 400)  # seed chosen so that A and C happen to share no band
  a, b, c = words[:300], words[50:350], words[100:400]
  ka, kb, kc = (_keys(mh, ' '.join(w)) for w in (a, b, c))
  assert set(ka) & set(kb) and set(kb) & set(kc) and not set(ka) & set(kc)
  items = [('00000/000000002', kc), ('00000/000000000', ka), ('00000/000000001', kb)]
  assert dedup.near_duplicates(items) == {'00000/000000001', '00000/000000002'}


def test_datatrove_mode_same_clusters_and_order_independent():
  mh = MinHasher()
  base = _doc(30)
  texts = {f'00000/{i:09d}': ' '.join(_change(base, [i * 7 % 300], seed=i)) for i in range(6)}
  texts['00000/000000099'] = ' '.join(_doc(31))
  items = [(i, mh.band_keys(mh.signature_from_text(t), sortable=True)) for i, t in texts.items()]
  drops = dedup.datatrove_near_duplicates(items)
  assert len(drops) == 5 and '00000/000000099' not in drops
  for seed in range(3):
    random.Random(seed).shuffle(items)
    assert dedup.datatrove_near_duplicates(items) == drops


# ------------------------------------------------------------------ repeated lines


def test_line_keys():
  keys = dedup.line_keys('a\n\n  b  \n   \na\r\n')
  assert len(keys) == 3 and keys[0] == keys[2] != keys[1] and keys[1] == dedup.line_keys('b')[0]


def test_repeated_lines_removed_from_later_docs_only():
  docs = {
      '00000/000000002': 'Menu\nStory two begins.\nCopyright 2024\nStory two ends.',
      '00000/000000001': 'Menu\nStory one.\nMenu\nCopyright 2024',
      '00001/000000000': 'Story three.\n  Copyright 2024  \n\nMenu\nMenu',
      '00002/000000000': 'Nothing shared here.\nOnly mine.\nOnly mine.',
  }
  items = [(i, dedup.line_keys(t)) for i, t in docs.items()]
  owners = dedup.first_owners(items)
  # Only lines found in two or more documents are listed.
  assert sorted(owners.values()) == ['00000/000000001', '00000/000000001']
  for seed in range(4):
    random.Random(seed).shuffle(items)
    assert dedup.first_owners(items) == owners

  # The owner keeps everything, its own repeats included.
  assert dedup.remove_repeated_lines('00000/000000001', docs['00000/000000001'], owners) == (
      docs['00000/000000001'], 0, 0)
  text, lines, chars = dedup.remove_repeated_lines('00000/000000002', docs['00000/000000002'], owners)
  assert text == 'Story two begins.\nStory two ends.' and lines == 2
  assert chars == len(docs['00000/000000002']) - len(text) == len('Menu\n') + len('Copyright 2024\n')
  text, lines, chars = dedup.remove_repeated_lines('00001/000000000', docs['00001/000000000'], owners)
  assert text == 'Story three.\n' and lines == 3 and chars == len(docs['00001/000000000']) - len(text)
  # A line repeated only inside one document is not a cross-document repeat.
  assert dedup.remove_repeated_lines('00002/000000000', docs['00002/000000000'], owners)[1] == 0
  assert dedup.remove_repeated_lines('x', 'a\nb', {}) == ('a\nb', 0, 0)


def test_first_owners_scale():
  # 100k documents x 40 lines, one line per document shared with 199 others: quick, compact.
  rng = np.random.default_rng(0)
  shared = rng.integers(0, 2**63, size=500, dtype=np.uint64)
  keys = rng.integers(0, 2**63, size=(100_000, 40), dtype=np.uint64)
  keys[:, 0] = shared[np.arange(100_000) % 500]
  items = [(f'{d // 1000:05d}/{d % 1000:09d}', row) for d, row in enumerate(keys.tolist())]
  owners = dedup.first_owners(items)
  assert len(owners) == 500
  assert owners[int(shared[7])] == '00000/000000007'


# ---------------------------------------------------------------------------- PII


@pytest.mark.parametrize('text,kind,want', [
    ('Call (555) 123-4567 now', 'phone', 'Call <PHONE> now'),
    ('Call 555-123-4567.', 'phone', 'Call <PHONE>.'),
    ('Call 555.123.4567, thanks', 'phone', 'Call <PHONE>, thanks'),
    ('Call +1 555 123 4567', 'phone', 'Call <PHONE>'),
    ('Toll free 1-800-555-0199 today', 'phone', 'Toll free <PHONE> today'),
    ('London +44 20 7946 0958.', 'phone', 'London <PHONE>.'),
    ('Paris +33 1 23 45 67 89', 'phone', 'Paris <PHONE>'),
    ('Berlin +49 30 1234567', 'phone', 'Berlin <PHONE>'),
    ('UK +44 (0)20 7946 0958', 'phone', 'UK <PHONE>'),
    ('Mail john.doe@example.com!', 'email', 'Mail <EMAIL>!'),
    ('to a-b+c@mail.example.co.uk and x@y.org', 'email', 'to <EMAIL> and <EMAIL>'),
    ('DNS 8.8.8.8.', 'ip', 'DNS <IP>.'),
    ('host 203.0.114.7:8080', 'ip', 'host <IP>:8080'),
    ('v6 2001:4860:4860::8888 works', 'ip', 'v6 <IP> works'),
    ('[2606:4700:4700::1111]', 'ip', '[<IP>]'),
])
def test_pii_replaced_and_counted(text, kind, want):
  out, counts = scrub(text)
  assert out == want
  n = want.count('<')
  assert counts == {'email': 0, 'phone': 0, 'ip': 0, kind: n}


@pytest.mark.parametrize('text', [
    'In 2021 the 1999 2000 2001 2002 seasons', 'on 2021-03-04', 'on 03/04/2021', '10-12-2020', '2020.10.12',
    'at 12:30:45', 'at 12:30', 'version 1.2.3', 'Python 3.10.4', 'costs $1,234.56', '1,234,567 people',
    'ISBN 978-3-16-148410-0', 'ISBN-10: 0-306-40615-2', 'population 12345678', 'tel 5551234567',
    '999.1.2.3', '1.2.3.4.5', '1.2.3.4a', 'localhost 127.0.0.1', 'router 192.168.1.1', '10.0.0.1',
    '0.0.0.0', '::1', 'fe80::1', 'std::vector<int>', 'f32::MAX and f32:: alone', 'ratio 3:2:1',
    'local 555-1234', 'call 123-456-7890', 'SSN-like 123-45-6789', 'order #555-123-4567-89',
    'table 555 123 4567', 'pi 3.14159', 'coords 45.123, -122.456', 'update V8 to 9.8.177.9',
    'Section 22.1.4.1', 'pkg 1.2.5.1-2', 'weird a@b', '@decorator', 'no digits at all',
])
def test_pii_not_matched(text):
  assert scrub(text) == (text, {'email': 0, 'phone': 0, 'ip': 0})


def test_pii_flags_and_tokens():
  text = 'Mail a@example.com or call 555-123-4567 from 8.8.8.8'
  assert scrub(text, PIIConfig(emails=False))[0] == 'Mail a@example.com or call <PHONE> from <IP>'
  assert scrub(text, PIIConfig(phones=False))[0] == 'Mail <EMAIL> or call 555-123-4567 from <IP>'
  out, counts = scrub(text, PIIConfig(ips=False))
  assert out == 'Mail <EMAIL> or call <PHONE> from 8.8.8.8' and counts == {'email': 1, 'phone': 1, 'ip': 0}
  nothing = PIIConfig(emails=False, phones=False, ips=False)
  assert scrub(text, nothing) == (text, {'email': 0, 'phone': 0, 'ip': 0})
  custom = PIIConfig(email_token='[E]', phone_token='[P]', ip_token='[I]')
  assert scrub(text, custom)[0] == 'Mail [E] or call [P] from [I]'
  # Non-public addresses are kept by default (as datatrove) and replaced on request.
  assert scrub('lan 192.168.1.1 and fe80::1')[0] == 'lan 192.168.1.1 and fe80::1'
  out, counts = scrub('lan 192.168.1.1 and fe80::1', PIIConfig(only_public_ips=False))
  assert out == 'lan <IP> and <IP>' and counts['ip'] == 2


def test_pii_isbn_protects_only_itself():
  out, counts = scrub('ISBN 978-3-16-148410-0, orders: 555-123-4567')
  assert out == 'ISBN 978-3-16-148410-0, orders: <PHONE>' and counts['phone'] == 1


def test_pii_emails_in_long_text_match_whole_text_regex():
  rng = random.Random(0)
  parts = []
  for _ in range(300):
    r = rng.random()
    parts.append(rng.choice(['x@y.com', 'a.b@c-d.org', '@', 'q@', '@w', 'e@f', 'me@[1.2.3.4]', '!#@x.io'])
                 if r < 0.1 else rng.choice(VOCAB))
  text = ' '.join(parts) + '\n' + '\t'.join(parts[:50])
  want = pii._EMAIL.subn('<EMAIL>', text)
  out, counts = scrub(text, PIIConfig(phones=False, ips=False))
  assert (out, counts['email']) == want
