"""Tests for the web-like corpus generator (benchmarks/corpus/webgen.py)."""

import collections
import gzip
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks.corpus import webgen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 3000

EMAIL = re.compile(r'[\w.+-]+@[\w-]+(\.[\w-]+)+')
PHONE = re.compile(r'\+\d{1,3}[\d ()-]{7,}\d|\(\d{3}\) \d{3}-\d{4}|\b\d{3}[.-]\d{3}[.-]\d{4}\b')
IPV4 = re.compile(r'\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b')
IPV6 = re.compile(r'\b[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}\b')


@pytest.fixture(scope='module')
def records():
  return list(webgen.generate(N, seed=0))


def shingles(text: str) -> set:
  """Word 5-grams (the whole text if shorter)."""
  w = text.split()
  return set(zip(w, w[1:], w[2:], w[3:], w[4:])) or {tuple(w)}


def jaccard(a: set, b: set) -> float:
  inter = len(a & b)
  return inter / (len(a) + len(b) - inter)


def test_detokenize():
  assert webgen.detokenize("it 's a charming , often affecting journey . ") == "It's a charming, often affecting journey."
  assert webgen.detokenize("i ca n't say `` wow '' ( really )") == 'I can\'t say "wow" (really).'
  assert webgen.detokenize("the actors ' work -- and more ...") == "The actors' work - and more..."


def test_deterministic_and_seed_dependent(records):
  again = list(webgen.generate(N, seed=0))
  assert again == records
  # A prefix does not depend on how many documents were asked for.
  assert list(webgen.generate(100, seed=0)) == records[:100]
  other = list(webgen.generate(100, seed=1))
  assert [r['text'] for r in other] != [r['text'] for r in records[:100]]


def test_record_fields_and_urls(records):
  urls = set()
  for r in records:
    assert set(r) == {'text', 'url', 'kind'}
    assert r['kind'] in webgen.KINDS
    assert r['text'].strip()
    assert re.match(r'^https://[a-z0-9.-]+\.[a-z]{2,}(\.[a-z]{2})?/\S*$', r['url']), r['url']
    r['text'].encode('utf-8')  # no lone surrogates
    urls.add(r['url'])
  assert len(urls) == len(records)  # every document has its own URL


def test_kind_proportions(records):
  counts = collections.Counter(r['kind'] for r in records)
  weights = dict(webgen.KIND_WEIGHTS)
  assert abs(sum(weights.values()) - 100) < 1e-9
  for kind, pct in weights.items():
    if kind == 'huge':
      continue  # 0.05%: 1.5 expected in 3000, checked separately
    p = pct / 100
    sd = (p * (1 - p) / N) ** 0.5
    assert abs(counts[kind] / N - p) < 4 * sd + 0.003, (kind, counts[kind])


def test_lengths_are_web_like(records):
  words = sorted(len(r['text'].split()) for r in records if r['kind'] != 'huge')
  mean = sum(words) / len(words)
  assert 300 <= mean <= 600, mean
  assert words[0] <= 20  # stubs
  assert words[-1] >= 3000  # a long tail
  shorts = [len(r['text'].split()) for r in records if r['kind'] == 'short']
  assert max(shorts) <= 40 and min(shorts) >= 2


def test_exact_dups_copy_an_earlier_document(records):
  seen: dict[str, str] = {}
  n = 0
  for r in records:
    if r['kind'] == 'exact_dup':
      assert r['text'] in seen
      assert seen[r['text']] != r['url']
      n += 1
    seen.setdefault(r['text'], r['url'])
  assert n > 100


def test_near_dups_are_similar_but_not_equal(records):
  cache: dict[int, set] = {}

  def sim(i: int, j: int) -> float:
    for k in (i, j):
      if k not in cache:
        cache[k] = shingles(records[k]['text'])
    return jaccard(cache[i], cache[j])

  # Candidates for the original: earlier documents sharing the most (non-trivial) lines;
  # when none of them is close, every earlier document is compared. (The similarity found
  # is a lower bound of the similarity to the true original.)
  by_line: dict[str, list[int]] = collections.defaultdict(list)
  sims = []
  for i, r in enumerate(records):
    lines = {l for l in r['text'].split('\n') if len(l) > 60}
    if r['kind'] == 'near_dup':
      votes = collections.Counter(j for l in lines if len(by_line.get(l, ())) < 50 for j in by_line[l])
      best = max([j for j, _ in votes.most_common(5)] or [0], key=lambda j: sim(i, j))
      if sim(i, best) < 0.5:  # every line edited, or shared by many documents
        best = max(range(i), key=lambda j: sim(i, j))
      assert records[best]['text'] != r['text']
      sims.append(sim(i, best))
    for l in lines:
      by_line[l].append(i)
  assert len(sims) > 100
  assert min(sims) >= 0.5, min(sims)
  assert sum(s > 0.8 for s in sims) / len(sims) >= 0.8
  # And neighbouring ordinary articles are far apart.
  arts = [i for i, r in enumerate(records) if r['kind'] == 'article'][:200]
  assert max(sim(a, b) for a, b in zip(arts, arts[1:])) < 0.2


def test_near_dup_text_is_new(records):
  earlier = set()
  for r in records:
    if r['kind'] == 'near_dup':
      assert r['text'] not in earlier
    earlier.add(r['text'])


def test_pii_docs_contain_pii(records):
  pii = [r['text'] for r in records if r['kind'] == 'pii']
  assert len(pii) > 80
  for text in pii:
    assert EMAIL.search(text) or PHONE.search(text) or IPV4.search(text) or IPV6.search(text), text[:300]
  joined = '\n'.join(pii)
  assert '@example.' in joined and '555-01' in joined and '+44 ' in joined and '2001:' in joined
  # Look-alikes that a scrubber must leave alone appear too.
  assert re.search(r'ISBN [\d-]+', joined) and re.search(r'\b20\d\d-\d\d-\d\d\b', joined)
  assert re.search(r'Version \d+\.\d+\.\d+ ', joined)


def test_other_kinds_look_like_their_kind(records):
  by = collections.defaultdict(list)
  for r in records:
    by[r['kind']].append(r['text'])
  assert all(re.search(r'[{};#<]|^\s*(def|class|return) ', t, re.M) for t in by['code'])
  assert all('Lorem ipsum dolor sit amet' in t for t in by['lorem'])
  non_ascii = sum(sum(ord(c) > 127 for c in t) / len(t) > 0.02 or
                  not re.search(r'\b(the|and|is)\b', t) for t in by['foreign'])
  assert non_ascii / len(by['foreign']) > 0.9
  for t in by['spam']:
    lines = t.split('\n')
    words = t.split()
    # Repetition: a line repeated, or few distinct words.
    assert len(set(lines)) < len(lines) or len(set(words)) / len(words) < 0.5, t[:300]
  for t in by['list']:  # mostly short lines: items, table rows, specs, teasers
    counts = sorted(len(line.split()) for line in t.split('\n'))
    assert counts[len(counts) // 2] <= 12, t[:300]
  assert all(re.search(r'^[A-Z][A-Za-z ]*:$', t, re.M) for t in by['shakespeare'])  # speaker lines
  terms = re.compile(r'\b(she|he|her|his|women|men|black|white|gay|muslim|christian|jewish|poor|old)\b', re.I)
  rate = lambda texts: sum(len(terms.findall(t)) for t in texts) / sum(len(t.split()) for t in texts)
  assert rate(by['identity']) > 3 * rate(by['article'])  # identity terms are frequent enough to audit
  assert all(terms.search(t) for t in by['identity'] if len(t.split()) > 100)
  boiler = sum('cookies' in t or 'Privacy Policy' in t or 'Skip to' in t or '©' in t for t in by['article'])
  assert boiler / len(by['article']) > 0.5


def test_huge_document():
  gen = webgen._Generator(3, webgen.load_sources())
  sizes = [len(gen.make('huge')[0].encode('utf-8')) for _ in range(3)]
  assert all(100_000 <= s <= 1_000_000 for s in sizes), sizes


def test_write_corpus_shards(tmp_path, records):
  n = 500
  paths = webgen.write_corpus(str(tmp_path / 'a'), n, shards=3, seed=0)
  assert [os.path.basename(p) for p in paths] == [f'webgen-{i:05d}-of-00003.jsonl.gz' for i in range(3)]
  got = []
  for p in paths:
    with gzip.open(p, 'rt', encoding='utf-8') as f:
      shard = [json.loads(line) for line in f]
    assert 100 <= len(shard) <= 200
    got.extend(shard)
  assert got == records[:n]
  # Byte-identical on a rerun, and the same sequence with another shard count.
  again = webgen.write_corpus(str(tmp_path / 'b'), n, shards=3, seed=0)
  for p, q in zip(paths, again):
    assert open(p, 'rb').read() == open(q, 'rb').read()
  one = webgen.write_corpus(str(tmp_path / 'c'), n, shards=1, seed=0)
  with gzip.open(one[0], 'rt', encoding='utf-8') as f:
    assert [json.loads(line) for line in f] == got


def test_cli(tmp_path):
  out = tmp_path / 'corpus'
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.corpus.webgen', '--out', str(out), '--num_docs', '200',
                         '--shards', '2', '--seed', '5'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert 'article' in proc.stdout and 'MB' in proc.stdout
  files = sorted(os.listdir(out))
  assert files == ['webgen-00000-of-00002.jsonl.gz', 'webgen-00001-of-00002.jsonl.gz']
  lines = []
  for name in files:
    with gzip.open(out / name, 'rt', encoding='utf-8') as f:
      lines.extend(json.loads(line) for line in f)
  assert lines == list(webgen.generate(200, seed=5))
