"""Tests of llm/data/reweight.py: group counts, weights that reach target shares, resampling, errors, report."""

import itertools
import random
import re

import numpy as np
import pytest

from llm.data import reweight as R
from llm.data.documents import DataError

FEMALE = ['woman', 'women', 'mother', 'sister', 'girls']
MALE = ['man', 'men', 'father', 'brother', 'boys']
FILLER = 'the cat sat on a warm mat near the old river today while it rained'.split()


def make_corpus(n: int = 1000, seed: int = 0) -> list[str]:
  """n documents: ~20% mention female terms, ~60% male terms (so some both), ~10% a religion."""
  rng = random.Random(seed)
  docs = []
  for _ in range(n):
    words = rng.sample(FILLER, 10)
    if rng.random() < 0.2:
      words += [rng.choice(FEMALE) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.6:
      words += [rng.choice(MALE) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.1:
      words.append('christian')
    rng.shuffle(words)
    docs.append(' '.join(words).capitalize() + '.')
  return docs


@pytest.fixture(scope='module')
def corpus():
  docs = make_corpus()
  return docs, R.document_groups(docs, ['gender', 'religion'])


def one_line_error(spec, docs, **kw) -> str:
  with pytest.raises(DataError) as e:
    R.reweight_documents(docs, spec, **kw)
  msg = str(e.value)
  assert '\n' not in msg
  return msg


# ----------------------------------------------------------------------------- groups and counts


def test_groups_are_the_word_list_sections(tmp_path):
  groups = R.list_groups()
  assert list(groups['gender']) == ['female', 'male', 'transgender']
  assert 'women' in groups['gender']['female'] and 'men' in groups['gender']['male']
  assert 'non-binary' in groups['gender']['transgender']
  assert groups['religion'] == {}  # no sections: only the whole category can be targeted
  # A preamble is not a group; a comment opens one only after a blank line and right before a term.
  (tmp_path / 'things.txt').write_text('# Preamble about the list.\n\n# alpha\nfoo\nbar baz\n# not a header\n'
                                       'qux\n\n# Beta, and others\nquux\nfoo\n')
  assert R.load_groups(str(tmp_path / 'things.txt')) == {'alpha': ['foo', 'bar baz', 'qux'], 'beta': ['quux']}


def test_document_groups_counts_whole_words():
  docs = ['Women and a man.', 'Womanhood manipulates mankind.', 'The MOTHER and her sister, a Christian.', '']
  c = R.document_groups(docs, ['gender'])
  assert c.num_docs == 4 and list(c.mentions) == ['gender']  # only what was asked for
  np.testing.assert_array_equal(c.group_mentions['gender:female'], [1, 0, 2, 0])
  np.testing.assert_array_equal(c.group_mentions['gender:male'], [1, 0, 0, 0])
  np.testing.assert_array_equal(c.mentions['gender'], [2, 0, 2, 0])


def test_counts_of_the_generated_corpus(corpus):
  docs, c = corpus
  female, male = c.group_mentions['gender:female'] > 0, c.group_mentions['gender:male'] > 0
  assert 0.15 < female.mean() < 0.25 and 0.55 < male.mean() < 0.65 and (female & male).sum() > 50
  assert (c.mentions['gender'] == c.group_mentions['gender:female'] + c.group_mentions['gender:male']).all()


# ----------------------------------------------------------------------------- reaching targets


@pytest.mark.parametrize('target', [0.4, 0.1])  # above (upweight) and below (downweight) the current ~0.2
def test_group_target_reached(corpus, target):
  docs, c = corpus
  g, cat = c.group_mentions['gender:female'].astype(float), c.mentions['gender'].astype(float)
  before = g.sum() / cat.sum()
  assert abs(before - target) > 0.05  # the test would notice weights that do nothing
  (t,) = R.parse_targets(f'gender:female={target}')
  weights, (factor,) = R.solve_weights(c, [t], max_weight=10)
  assert R.share(g, cat, weights) == pytest.approx(target, abs=1e-9)
  assert (factor > 1) == (target > before)
  # Exactly the documents whose own female share exceeds the target are scaled (a document
  # mentioning both groups counts by its ratio); everything else, including every document
  # with no gender term, keeps weight 1.
  helps = g > target * cat
  np.testing.assert_allclose(weights[helps], factor)
  assert (weights[~helps] == 1).all() and (weights[cat == 0] == 1).all()
  if target > before:
    assert ((g > 0) & ~helps).any()  # some female-mentioning documents are not upweighted
  idx = R.resample(weights, seed=0)
  realised = R.share(g, cat, np.bincount(idx, minlength=len(docs)).astype(float))
  assert realised == pytest.approx(target, abs=0.01)


def test_category_target_is_a_document_share(corpus):
  docs, c = corpus
  idx, report = R.reweight_documents(docs, 'religion=0.3', seed=0)
  mentions = c.mentions['religion'] > 0
  assert mentions.mean() < 0.15
  (row,) = report.targets
  assert row.before == pytest.approx(mentions.mean()) and row.expected == pytest.approx(0.3, abs=1e-9)
  assert mentions[idx].mean() == pytest.approx(0.3, abs=0.01) == row.realised
  copies = np.bincount(idx, minlength=len(docs))
  assert (copies[~mentions] == 1).all()  # documents not mentioning religion are left alone


def test_two_targets_together(corpus):
  docs, c = corpus
  targets = R.parse_targets('gender:female=0.5,religion=0.3')
  weights, factors = R.solve_weights(c, targets, max_weight=10)
  for t in targets:
    assert R.share(*c.arrays(t), weights) == pytest.approx(t.share, abs=1e-9)
  # Documents in both sets would get factor x factor; the cap holds for the product.
  assert np.prod(factors) > 10 and weights.max() == pytest.approx(10)
  assert weights.min() >= 1


def test_reachable_range_is_exact():
  # A linear-fractional share is extreme at a vertex of the weight box: brute force all of them.
  rng = np.random.default_rng(0)
  for _ in range(5):
    den = rng.integers(0, 5, 7).astype(float)
    num = np.minimum(rng.integers(0, 4, 7), den).astype(float)
    if num.sum() == 0 or num.sum() == den.sum():
      continue
    lo, hi = R.reachable_range(num, den, 10)
    up = max(R.share(num, den, np.array(w)) for w in itertools.product([1, 10], repeat=7))
    down = min(R.share(num, den, np.array(w)) for w in itertools.product([0.1, 1], repeat=7))
    assert (lo, hi) == (pytest.approx(down), pytest.approx(up))


def test_max_weight_bounds_the_reach(corpus):
  docs, c = corpus
  msg = one_line_error('gender:female=0.9', docs)
  lo, hi = (float(x) for x in re.search(r'can range from ([\d.]+) to ([\d.]+)', msg).groups())
  assert "gender:female=0.9 is unreachable" in msg and 'data.reweight_max_weight=10' in msg
  assert 0 < lo < 0.2 < hi < 0.9
  R.reweight_documents(docs, f'gender:female={hi - 0.001}')  # the stated range is reachable
  R.reweight_documents(docs, f'gender:female={lo + 0.001}')
  one_line_error(f'gender:female={hi + 0.002}', docs)  # and nothing beyond it
  R.reweight_documents(docs, 'gender:female=0.9', max_weight=1000)  # a larger cap reaches further


# ----------------------------------------------------------------------------- resampling


def test_resample_copies_and_order():
  idx = R.resample(np.array([0.0, 1.0, 2.0, 3.0]), seed=0)
  assert idx.tolist() == [1, 2, 3, 2, 3, 3]  # copy-major: a document's copies are never neighbours
  for w in (1.3, 0.25):
    copies = np.bincount(R.resample(np.full(10_000, w), seed=7), minlength=10_000)
    assert set(copies) == {int(w), int(w) + 1}
    assert abs(copies.sum() - 10_000 * w) <= 1  # systematic sampling: the count is exact to one


def test_resample_deterministic_per_seed(corpus):
  docs, c = corpus
  weights, _ = R.solve_weights(c, R.parse_targets('gender:female=0.35'))
  a, b, other = R.resample(weights, 3), R.resample(weights, 3), R.resample(weights, 4)
  np.testing.assert_array_equal(a, b)
  assert len(a) != len(other) or (a != other).any()
  idx1, rep1 = R.reweight_documents(docs, 'gender:female=0.35', seed=3)
  np.testing.assert_array_equal(idx1, a)
  assert rep1 == R.reweight_documents(docs, 'gender:female=0.35', seed=3)[1]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize('spec,match', [
    ('gender:female', r"has no '=<share>'"),
    ('gender:female=half', r"share 'half' is not a number"),
    ('gender:female=0', r'strictly between 0 and 1, got 0$'),
    ('gender:female=1', r'strictly between 0 and 1, got 1$'),
    ('gender:female=1.5', r'strictly between 0 and 1'),
    ('gender:female=-0.2', r'strictly between 0 and 1'),
    ('gendre:female=0.5', r"unknown identity-term category 'gendre'; known: .*gender.*religion"),
    ('gender:females=0.5', r"no group 'females'; its groups: female, male, transgender"),
    ('religion:muslim=0.2', r"'religion' has no groups.*religion=<share of documents"),
    ('gender:female=0.3,gender:female=0.4', r'sets gender:female twice'),
    ('gender:female=0.6,gender:male=0.5', r'add up to 1.1 .*at most 1'),
])
def test_malformed_specs(corpus, spec, match):
  assert re.search(match, one_line_error(spec, corpus[0]))


def test_absent_group_or_category(corpus):
  docs, _ = corpus
  msg = one_line_error('gender:transgender=0.1', docs)
  assert 'none of the 1,000 training documents mentions a gender:transgender term' in msg
  assert 'sexual_orientation term' in one_line_error('sexual_orientation=0.1', docs)


def test_targets_not_reachable_together(corpus):
  docs, _ = corpus
  # Each is reachable alone, but with no transgender mentions female + male must be 1.
  msg = one_line_error('gender:female=0.4,gender:male=0.55', docs)
  assert 'not together' in msg and 'gender:male=0.6000' in msg


def test_bad_max_weight(corpus):
  assert 'data.reweight_max_weight must be a number >= 1' in one_line_error('religion=0.2', corpus[0], max_weight=0.5)


# ----------------------------------------------------------------------------- report and mixtures


def test_report(corpus):
  docs, c = corpus
  weights, idx, rep = R.reweight(c, R.parse_targets('gender:female=0.4,religion=0.05'), seed=1)
  assert rep.copies == len(idx) and rep.dropped == int((np.bincount(idx, minlength=len(docs)) == 0).sum())
  assert rep.upweighted == (weights > 1).sum() > 0 and rep.downweighted == (weights < 1).sum() > 0
  lines = rep.lines()
  assert lines[0].startswith('reweight gender:female=0.4,religion=0.05 (data.reweight_max_weight=10, seed 1): '
                             '1,000 documents')
  female, religion = rep.targets
  assert f'before {female.before:.4f}  target 0.4000  expected 0.4000  realised {female.realised:.4f}' in lines[1]
  assert lines[2].lstrip().startswith('religion') and 'share of documents' in lines[2]
  idx0, rep0 = R.reweight_documents(docs, '')  # no targets: the corpus as it is
  np.testing.assert_array_equal(idx0, np.arange(len(docs)))
  assert rep0.lines() == ['reweight: no targets (data.reweight is empty), 1,000 documents as they are']


def test_mixture_weights():
  a = R.document_groups(['The women and the woman.', 'A man.', 'No one.'], ['gender'])  # female-heavy
  b = R.document_groups(['The man and a man.', 'A man and a woman.'], ['gender'])
  tokens = [1000, 3000]
  m, rep = R.mixture_weights([a, b], tokens, 'gender:female=0.4')
  assert m.sum() == pytest.approx(1)
  # Rows are drawn by mixture weight, so source s's counts enter per token, times m_s.
  f = [c.group_mentions['gender:female'].sum() / n for c, n in zip((a, b), tokens)]
  g = [c.mentions['gender'].sum() / n for c, n in zip((a, b), tokens)]
  assert np.dot(m, f) / np.dot(m, g) == pytest.approx(0.4)
  assert rep.targets[0].before == pytest.approx(np.sum(f) / np.sum(g))
  with pytest.raises(DataError, match='can range from'):
    R.mixture_weights([a, b], tokens, 'gender:female=0.4', max_weight=1.5)


# ----------------------------------------------------------------------------- in the data pipeline


def test_load_corpus_trains_on_the_reweighted_documents(tmp_path):
  """data.reweight resamples the training documents only, as the report says, and refuses
  a prepared source (no text left to count terms in) in one line."""
  import dataclasses

  from llm.data.stream import DataConfig, load_corpus, write_mitigation_report
  docs = make_corpus(300)
  (tmp_path / 'docs.txt').write_text('\n'.join(docs) + '\n')
  cfg = DataConfig(sources=str(tmp_path / 'docs.txt'), seq_len=16, doc_separator='line', split='document',
                   val_fraction=0.1)
  plain = load_corpus(cfg)
  weighted = load_corpus(dataclasses.replace(cfg, reweight='gender:female=0.5'))
  (report,) = weighted.reweighting
  (target,) = report.targets
  assert target.before < 0.45 and abs(target.realised - 0.5) < 0.02
  # The training stream holds the resampled documents' tokens; validation is untouched.
  assert weighted.train[0].stream.num_tokens > plain.train[0].stream.num_tokens
  assert weighted.val.parts[0].stream.num_tokens == plain.val.parts[0].stream.num_tokens
  path = write_mitigation_report(weighted, str(tmp_path))
  import json
  assert json.load(open(path))['reweighting'][0]['targets'][0]['realised'] == target.realised
  assert write_mitigation_report(plain, str(tmp_path / 'none')) is None
  with pytest.raises(DataError, match=r"cannot reweight tokens:.*set --config.data.reweight=''") as e:
    load_corpus(dataclasses.replace(cfg, sources='tokens:/no/such/dir', reweight='gender:female=0.5'))
  assert '\n' not in str(e.value)
