"""Tests for the representation audit (TermCounter) and the corpus report accumulator."""

import json
import os
import pickle
import random
import re

import pytest

from llm.data.clean import audit
from llm.data.clean.audit import TermCounter, rate_per_million
from llm.data.clean.document import DocOutcome, FileStats
from llm.data.clean.report import EDITS_STAGE, ReportAccumulator, write_report

STAGES = ['language', 'gopher_quality', 'c4', 'bad_words', 'exact_dedup']
RULES = ['lang_low', 'gopher_words', 'c4_lorem', 'bad_words']


def _lists(tmp_path, **cats):
  for cat, text in cats.items():
    (tmp_path / f'{cat}.txt').write_text(text, encoding='utf-8')
  return str(tmp_path)


# ------------------------------------------------------------------ TermCounter


def test_whole_words_and_case(tmp_path):
  tc = TermCounter(_lists(tmp_path, gender='# comment\nman\nmen\n\nwoman  # trailing comment\nwomen\n'))
  got = tc.count('A Woman, a MAN, manipulate, superman, woman-hood, MEN. human men_ 2men')
  assert got == {'gender:woman': 2, 'gender:man': 1, 'gender:men': 1}
  assert tc.count('') == {}
  assert tc.count('mankind womanly humane') == {}


def test_phrases_longest_match(tmp_path):
  d = _lists(tmp_path, nationality='american\namericans\nafrican\n',
             ethnicity='african american\nafrican americans\nnative american\nnon-binary\n')
  tc = TermCounter(d)
  text = ('An African American writer, two African-Americans, an african\n  american poet, '
          'a Native American, an American, an African, Non Binary and non-binary.')
  assert tc.count(text) == {
      'ethnicity:african american': 2, 'ethnicity:african americans': 1,
      'ethnicity:native american': 1, 'nationality:american': 1, 'nationality:african': 1,
      'ethnicity:non-binary': 2}
  # The phrase needs both words whole: no match in "african americana" for the phrase,
  # which falls back to "african" and leaves "americana" alone.
  assert tc.count('african americana') == {'nationality:african': 1}


def test_bundled_lists():
  tc = TermCounter()
  assert tc.categories == audit.DEFAULT_CATEGORIES
  for cat in tc.categories:
    assert 20 <= len(tc.terms[cat]) <= 80, cat
  for pair in [('woman', 'women'), ('muslim', 'muslims'), ('man', 'men'), ('jew', 'jews'),
               ('lesbian', 'lesbians'), ('mexican', 'mexicans')]:
    assert all(any(t == p for ts in tc.terms.values() for t in ts) for p in pair), pair
  assert 'straight' not in tc.terms['sexual_orientation']
  for t in ('gay', 'lesbian', 'bisexual', 'queer', 'homosexual', 'heterosexual'):
    assert t in tc.terms['sexual_orientation']
  got = tc.count('Muslims and a Muslim; WOMEN, a woman, an African-American man, gay and lesbian '
                 'Americans, a Native American.')
  assert got == {'religion:muslims': 1, 'religion:muslim': 1, 'gender:women': 1,
                 'gender:woman': 1, 'ethnicity:african american': 1, 'gender:man': 1,
                 'sexual_orientation:gay': 1, 'sexual_orientation:lesbian': 1,
                 'nationality:americans': 1, 'ethnicity:native american': 1}
  assert TermCounter(categories=['religion']).count('women muslims') == {'religion:muslims': 1}


def _reference_count(tc: TermCounter, text: str) -> dict:
  """The obvious implementation: a flat alternation sorted longest-first."""
  norm = {audit.normalize_term(t): f'{c}:{t}' for c in tc.categories for t in tc.terms[c]}
  alts = sorted(norm, key=lambda t: (-len(t), t))
  rx = re.compile(r'(?<!\w)(?:' + '|'.join(r'[\s\-]+'.join(map(re.escape, t.split(' ')))
                                             for t in alts) + r')(?!\w)')
  out = {}
  for m in rx.finditer(text.lower()):
    k = norm[audit.normalize_term(m.group())]
    out[k] = out.get(k, 0) + 1
  return out


def test_trie_regex_matches_flat_alternation():
  tc = TermCounter()
  rng = random.Random(0)
  vocab = [t for ts in tc.terms.values() for t in ts] + [
      'the', 'a', 'manly', 'mens', 'womanhood', 'asian-', 'american-made', 'gayer', 'x',
      'african', 'native', 'south', 'trans', 'non', '-', ',', '.', '\n']
  for _ in range(300):
    words = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
    text = ''.join(w + rng.choice([' ', '-', '  ', '\n', '']) for w in words)
    text = ''.join(c.upper() if rng.random() < 0.2 else c for c in text)
    want = _reference_count(tc, text)
    assert tc.count(text) == want, text  # ASCII fast path
    assert tc.count(text + ' “é”') == want, text  # general path (non-ASCII text)
    assert tc.count('“' + text.replace(' ', '\u00a0') + '”') == _reference_count(
        tc, '“' + text.replace(' ', '\u00a0') + '”')  # Unicode spaces and quotes as boundaries


def test_missing_category(tmp_path):
  from llm.data.clean.document import CorpusInputError
  with pytest.raises(CorpusInputError, match='religion'):
    TermCounter(_lists(tmp_path, gender='man\n'), categories=['gender', 'religion'])


def test_rate_per_million():
  assert rate_per_million(3, 1_000_000) == 3.0
  assert rate_per_million(1, 500) == 2000.0
  assert rate_per_million(5, 0) == 0.0


# ------------------------------------------------------------------ accumulator


def _doc(i, words=100, removed_by='', reason='', failed=(), terms=None, signals=None,
         edits=None, pii=None, terms_out=None):
  kept = not removed_by
  terms = terms or {}
  return DocOutcome(
      id=f'00000/{i:09d}', source='f.jsonl', chars_in=6 * words, words_in=words, kept=kept,
      removed_by=removed_by, reason=reason, failed=list(failed),
      chars_out=6 * words - 10 if kept else 0, words_out=words if kept else 0,
      edits=edits or {}, pii=pii or {}, signals=signals or {'words': words, 'lang_score': 0.9},
      terms_in=terms, terms_out=(terms if terms_out is None else terms_out) if kept else {},
      preview=f'doc {i} *text*')


def _corpus():
  """Hand-made outcomes; the expected numbers below are counted from this list."""
  return [
      _doc(0),
      _doc(1, failed=['lang_low'], removed_by='language', reason='lang_de'),
      _doc(2, failed=['lang_low', 'gopher_words'], removed_by='language', reason='lang_de'),
      _doc(3, failed=['gopher_words', 'lang_low', 'c4_lorem'], removed_by='language', reason='lang_fr'),
      _doc(4, failed=['gopher_words'], removed_by='gopher_quality', reason='too_few_words'),
      _doc(5, failed=['gopher_words', 'c4_lorem'], removed_by='gopher_quality', reason='too_few_words'),
      _doc(6, failed=['c4_lorem'], removed_by='c4', reason='lorem_ipsum'),
      _doc(7, failed=['bad_words'], removed_by='bad_words', reason='bad_words'),
      _doc(8, removed_by='exact_dedup', reason='duplicate'),
      _doc(9, edits={'c4_lines': 40, 'line_dedup': 0}, pii={'email': 2, 'ip': 0}),
      _doc(10, edits={'c4_lines': 5}, pii={'email': 1, 'phone': 1}),
      _doc(11, words=50, failed=['bad_words', 'c4_lorem'], removed_by='c4', reason='lorem_ipsum'),
  ]


def _fill(outcomes, **kw):
  acc = ReportAccumulator(STAGES, RULES, **kw)
  for o in outcomes:
    acc.add(o)
  return acc


def test_counts_add_up_and_funnel():
  rep = _fill(_corpus()).to_json()
  t = rep['totals']
  assert (t['docs_in'], t['docs_out'], t['docs_removed']) == (12, 3, 9)
  assert t['counts_add_up'] is True
  assert t['words_in'] == 11 * 100 + 50 and t['words_out'] == 300
  funnel = {r['stage']: r for r in rep['funnel']}
  assert [r['stage'] for r in rep['funnel']] == STAGES
  assert [funnel[s]['docs_removed'] for s in STAGES] == [3, 2, 2, 1, 1]
  assert [funnel[s]['docs_remaining'] for s in STAGES] == [9, 7, 5, 4, 3]
  assert funnel['c4']['chars_removed'] == 600 + 300
  assert funnel['c4']['chars_remaining'] == t['chars_in'] - 6 * (5 * 100) - 900
  assert rep['reasons']['language'] == {'lang_de': 2, 'lang_fr': 1}
  assert rep['edits'] == {'c4_lines': {'chars_removed': 45, 'docs': 2, 'chars_removed_kept': 45,
                                       'docs_kept': 2}}
  assert rep['pii'] == {'email': {'count': 3, 'docs': 2}, 'ip': {'count': 0, 'docs': 0},
                        'phone': {'count': 1, 'docs': 1}}
  json.dumps(rep, allow_nan=False)  # plain JSON


def test_undeclared_stage_breaks_invariant():
  rep = _fill(_corpus() + [_doc(20, removed_by='mystery', reason='?')]).to_json()
  assert rep['totals']['counts_add_up'] is False
  assert rep['totals']['undeclared_stages'] == {'mystery': 1}
  assert rep['funnel'][-1]['stage'] == 'mystery' and rep['funnel'][-1]['docs_remaining'] == 3


def test_overlap():
  ov = _fill(_corpus()).to_json()['overlap']
  assert ov['rules'] == RULES
  per = ov['per_rule']
  assert {r: per[r]['would_drop'] for r in RULES} == {
      'lang_low': 3, 'gopher_words': 4, 'c4_lorem': 4, 'bad_words': 2}
  assert {r: per[r]['only_this_rule'] for r in RULES} == {
      'lang_low': 1, 'gopher_words': 1, 'c4_lorem': 1, 'bad_words': 1}
  m = {(a, b): ov['matrix'][i][j] for i, a in enumerate(RULES) for j, b in enumerate(RULES)}
  assert m['lang_low', 'gopher_words'] == m['gopher_words', 'lang_low'] == 2
  assert m['lang_low', 'c4_lorem'] == 1
  assert m['gopher_words', 'c4_lorem'] == 2
  assert m['c4_lorem', 'bad_words'] == 1
  assert m['lang_low', 'bad_words'] == 0
  assert (ov['docs_failing_any'], ov['docs_failing_several']) == (8, 4)  # docs 1-7, 11; 2, 3, 5, 11


def test_examples_are_smallest_ids():
  docs = [_doc(i, removed_by='c4', reason=f'r{i}') for i in range(30)]
  random.Random(1).shuffle(docs)
  ex = _fill(docs, examples_per_rule=3).to_json()['examples']
  assert [e['id'] for e in ex['c4']] == ['00000/000000000', '00000/000000001', '00000/000000002']
  assert ex['c4'][1]['reason'] == 'r1' and ex['c4'][1]['preview'] == 'doc 1 *text*'
  assert ex['language'] == []


def _random_corpus(n=300, seed=0):
  rng = random.Random(seed)
  out = []
  for i in range(n):
    stage = rng.choice([''] * 4 + STAGES)
    terms = {k: rng.randint(1, 3) for k in ('gender:women', 'religion:muslims', 'sexual_orientation:gay')
             if rng.random() < 0.3}
    out.append(_doc(i, words=rng.randint(5, 3000), removed_by=stage, reason=f'{stage}_{rng.randint(0, 2)}',
                    failed=rng.sample(RULES, rng.randint(0, 3)), terms=terms,
                    signals={'words': rng.randint(0, 5000), 'lang_score': rng.random(),
                             'symbol_ratio': rng.choice([0.01, float('nan')])},
                    edits={'c4_lines': rng.randint(0, 50)}, pii={'email': rng.randint(0, 2)}))
  return out


def test_merge_any_order_equals_single():
  docs = _random_corpus()
  want = json.dumps(_fill(docs).to_json())
  rng = random.Random(2)
  for trial in range(5):
    shuffled = docs[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(docs)), rng.randint(1, 6)))
    shards = [shuffled[a:b] for a, b in zip([0] + cuts, cuts + [len(docs)])]
    accs = [_fill(s) for s in shards] + [ReportAccumulator(STAGES, RULES)]  # an empty one too
    rng.shuffle(accs)
    if trial % 2:  # left fold
      total = accs[0]
      for a in accs[1:]:
        total.merge(a)
    else:  # tree of merges
      while len(accs) > 1:
        a, b = accs.pop(), accs.pop()
        b.merge(a)
        accs.insert(0, b)
      total = accs[0]
    assert json.dumps(total.to_json()) == want


def test_accumulator_pickles():
  # Beam moves accumulators between workers by pickling them.
  acc = _fill(_random_corpus(50))
  assert pickle.loads(pickle.dumps(acc)).to_json() == acc.to_json()


def test_merge_rejects_other_config():
  with pytest.raises(ValueError):
    ReportAccumulator(STAGES, RULES).merge(ReportAccumulator(STAGES[:-1], RULES))
  acc = ReportAccumulator(STAGES, RULES)
  acc.merge(acc.empty_like())  # same configuration: fine


def test_histograms():
  docs = [_doc(0, signals={'words': 10, 'lang_score': 0.95}),
          _doc(1, signals={'words': 10, 'lang_score': 0.1}, removed_by='language'),
          _doc(2, signals={'lang_score': float('nan'), 'unknown_signal': 3.0})]
  h = _fill(docs, signal_bins={'lang_score': [0.0, 0.5, 1.0], 'words': None}).to_json()['histograms']
  assert set(h) == {'length_chars', 'lang_score', 'words'}  # unknown_signal ignored
  assert h['lang_score']['before']['counts'] == [1, 1] and h['lang_score']['before']['missing'] == 1
  assert h['lang_score']['after']['counts'] == [0, 1] and h['lang_score']['after']['missing'] == 1
  assert h['words']['scale'] == 'log' and h['words']['before']['missing'] == 1
  assert h['length_chars']['before']['total'] == 3 and h['length_chars']['after']['total'] == 2
  auto = _fill(docs, signal_bins={'unknown_signal': None}).to_json()['histograms']['unknown_signal']
  assert auto['scale'] == 'symlog' and sum(auto['before']['counts']) == 1


def test_file_stats_problems_order_independent():
  def parts():
    a = FileStats('b.jsonl.gz', records=5, bad_json=1)
    a.note('line 9: bad json')
    b = FileStats('b.jsonl.gz', records=3, truncated=True)
    b.note('gzip stream truncated')
    return [a, b, FileStats('a.txt', records=7), FileStats('c.warc', non_html=4, records=2)]
  one, two = ReportAccumulator(STAGES, RULES), ReportAccumulator(STAGES, RULES)
  for s in parts():
    one.add_file_stats(s)
  for s in reversed(parts()):
    two.add_file_stats(s)
  f = one.to_json()['files']
  assert f == two.to_json()['files']
  assert (f['files'], f['files_with_problems']) == (3, 1)  # non_html alone is not a problem
  p = f['problems'][0]
  assert p['path'] == 'b.jsonl.gz' and p['records'] == 8 and p['bad_json'] == 1 and p['truncated']
  assert p['errors'] == ['gzip stream truncated', 'line 9: bad json']
  assert f['totals']['records'] == 17 and f['totals']['truncated'] == 1


# ------------------------------------------------------------ representation


def _biased_corpus():
  """200 docs x 1000 words; 'bad_words' removes 10 docs that hold most 'gay' mentions,
  'gopher_quality' removes 20 docs with terms in proportion to their words."""
  docs = []
  for i in range(200):
    terms = {'gender:women': 2, 'sexual_orientation:gay': 1}
    stage = ''
    if i < 10:
      stage, terms = 'bad_words', {'gender:women': 2, 'sexual_orientation:gay': 30}
    elif i < 30:
      stage = 'gopher_quality'
    docs.append(_doc(i, words=1000, removed_by=stage, reason=stage, terms=terms))
  return docs


def test_representation_shift_and_flags():
  rep = _fill(_biased_corpus()).to_json()['representation']
  so = rep['categories']['sexual_orientation']
  assert so['count_before'] == 10 * 30 + 190 and so['count_after'] == 170
  assert so['rate_before'] == pytest.approx(490 / 200_000 * 1e6)
  assert so['rate_after'] == pytest.approx(170 / 170_000 * 1e6)
  assert so['change'] == pytest.approx(1000 / 2450 - 1)
  assert so['most_shifting_stage'] == 'bad_words'
  row = {r['stage']: r for r in so['by_stage']}
  # Without bad_words' removals: (490 - 300) mentions over 190k words.
  assert row['bad_words']['shift'] == pytest.approx((190 / 190_000) / (490 / 200_000) - 1)
  assert row['bad_words']['flagged'] and not row['gopher_quality']['flagged']
  assert row['gopher_quality']['shift'] == pytest.approx((470 / 180_000) / (490 / 200_000) - 1)
  # Gender terms are spread evenly: nothing shifts them, nothing is flagged.
  g = rep['categories']['gender']
  assert g['change'] == pytest.approx(0.0) and g['most_shifting_stage'] is None
  assert not any(r['flagged'] for r in g['by_stage'])
  flagged = {(f['level'], f['category'], f['term'], f['stage']) for f in rep['flags']}
  assert flagged == {('category', 'sexual_orientation', None, 'bad_words'),
                     ('term', 'sexual_orientation', 'gay', 'bad_words')}
  assert rep['terms']['sexual_orientation:gay']['most_shifting_stage'] == 'bad_words'
  assert rep['top_terms'][0]['key'] == 'sexual_orientation:gay'
  assert rep['top_terms'][0]['top_stages'][0]['stage'] == 'bad_words'
  # Every default category is listed even without mentions.
  assert list(rep['categories'])[:5] == list(audit.DEFAULT_CATEGORIES)
  assert rep['categories']['religion']['count_before'] == 0


def test_representation_min_count_and_edits():
  # The same bias on 10x fewer mentions stays under flag_min_count.
  docs = _biased_corpus()
  rep = _fill(docs, flag_min_count=400).to_json()['representation']
  assert rep['flags'] == []
  # Line edits that cut terms from kept docs show up as the 'edits' pseudo-stage.
  docs = [_doc(i, words=1000, terms={'gender:women': 4}, terms_out={'gender:women': 1})
          for i in range(20)]
  g = _fill(docs).to_json()['representation']['categories']['gender']
  row = {r['stage']: r for r in g['by_stage']}
  assert row[EDITS_STAGE]['mentions_removed'] == 60
  assert g['most_shifting_stage'] == EDITS_STAGE


# ------------------------------------------------------------ write_report


def test_write_report(tmp_path):
  acc = _fill(_random_corpus(100) + _biased_corpus()[:12])
  acc.add_file_stats(FileStats('x.jsonl', records=3, bad_json=2, errors=['line 2: bad | json']))
  rep = write_report(acc, str(tmp_path), config={'stages': STAGES}, timing={'total_s': 1.25})
  with open(tmp_path / 'report.json') as f:
    assert json.load(f) == rep
  md = (tmp_path / 'report.md').read_text()
  for stage in STAGES:
    assert f'`{stage}`' in md
  assert '## Representation audit' in md and '## Config' in md and '1.250' in md
  assert r'line 2: bad \| json' in md
  for name in ['funnel', 'representation', 'representation_terms', 'overlap',
               'hist_length_chars', 'hist_words', 'hist_lang_score', 'hist_mean_word_length']:
    path = tmp_path / 'plots' / f'{name}.png'
    assert path.exists() and path.read_bytes()[:4] == b'\x89PNG', name
    assert f'plots/{name}.png' in md
  assert rep['plots']['funnel'] == 'plots/funnel.png'


def test_write_report_preview_escaped_and_truncated(tmp_path):
  long = '*bold* [link](x) <script> | ' + 'y' * 500
  o = _doc(0, removed_by='c4', reason='lorem_ipsum')
  o.preview = long
  rep = write_report(_fill([o], signal_bins={}), str(tmp_path))
  md = (tmp_path / 'report.md').read_text()
  line = next(l for l in md.splitlines() if '00000/000000000' in l)
  assert r'\*bold\* \[link\](x) \<script\> \|' in line and '<script>' not in line
  assert 'y' * 150 in line and 'y' * 300 not in line
  assert rep['examples']['c4'][0]['preview'].startswith('*bold*')


def test_write_report_nothing_kept(tmp_path):
  docs = [_doc(i, removed_by='language', reason='lang_xx', terms={'gender:men': 1}) for i in range(5)]
  rep = write_report(_fill(docs, signal_bins={'lang_score': None}), str(tmp_path / 'r'))
  assert rep['totals']['docs_out'] == 0 and rep['totals']['counts_add_up']
  assert rep['representation']['categories']['gender']['rate_after'] == 0.0
  for name in ['funnel', 'hist_length_chars', 'hist_lang_score', 'representation']:
    assert (tmp_path / 'r' / 'plots' / f'{name}.png').exists()
  # And with no documents at all.
  rep = write_report(ReportAccumulator(STAGES, [], signal_bins={}), str(tmp_path / 'empty'))
  assert rep['totals']['docs_in'] == 0 and rep['totals']['counts_add_up']
  assert os.path.exists(tmp_path / 'empty' / 'report.md')
