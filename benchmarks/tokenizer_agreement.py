"""How often our tokenizer and sentence counter give spaCy's (datatrove's) counts.

The Gopher, FineWeb and C4 thresholds were set on counts from spaCy's English tokenizer, as
datatrove 0.10.1 computes them; ``llm.data.clean.text.words`` and ``rules.count_sentences``
reproduce them without spaCy. This script measures, per input set:

  * tokens: the fraction of documents whose token lists are identical to datatrove's
    ``load_word_tokenizer('en').word_tokenize`` (spaCy ``blank('en')``), and the token-level
    agreement (tokens with the same character span on both sides, 2|common| / (|ours| + |ref|),
    over all tokens of the set);
  * Gopher counts: documents where everything the Gopher rules compute from tokens is
    identical: the number of tokens, of non-symbol words, their mean length, the alpha-word
    ratio, the stop-word count and the hash/ellipsis ratios (ours: ``rules.gopher_quality``'s
    signals; reference: datatrove's ``GopherQualityFilter`` arithmetic on spaCy's tokens), and
    the n-gram repetition fractions of ``GopherRepetitionFilter`` (datatrove's functions on
    both token lists);
  * C4 counts: documents whose kept lines (datatrove's ``C4QualityFilter`` line rules with
    the C4 paper's 5 words per line) all get the same sentence count from
    ``rules.count_sentences`` as from datatrove's ``split_into_sentences`` (spaCy's
    sentencizer), and documents with the same page total and the same too-few-sentences
    decision;

and prints the most frequent remaining differences. With ``--decisions`` it also compares
the keep/drop decision and reason of ``rules.gopher_quality`` and ``rules.gopher_repetition``
(default settings) with datatrove's ``GopherQualityFilter`` and ``GopherRepetitionFilter``.
Needs datatrove and spaCy::

  python -m benchmarks.corpus.webgen --out runs/web20k --num_docs 20000 --shards 4
  /tmp/dtvenv/bin/python benchmarks/tokenizer_agreement.py --inputs 'runs/web20k/*.jsonl.gz' \\
      data/tinyshakespeare.txt data/sst2_train.tsv data/crows_pairs_anonymized.csv 'data/winobias/*'

Each ``--inputs`` argument (a file or a glob) is one input set. ``.jsonl[.gz]``: the ``text``
of each record; ``.tsv`` (SST-2): ``--group`` sentences per document, one per line; ``.csv``
(CrowS-Pairs): the two sentences of a row; any other file: blocks separated by blank lines
(Shakespeare's speeches), cut into documents of at most ``--group`` lines (WinoBias).
``--code_root DIR`` measures another version of the code (say ``git archive HEAD | tar -x
-C DIR``), ``--throughput`` also times ``words()`` and spaCy on each set.
"""

from __future__ import annotations

import argparse
import collections
import csv
import glob as globlib
import gzip
import json
import math
import os
import sys
import time
from typing import Iterator, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ inputs


def _open(path: str):
  return gzip.open(path, 'rt', encoding='utf-8') if path.endswith('.gz') else open(path, encoding='utf-8')


def read_documents(path: str, group: int) -> Iterator[str]:
  """The documents of one file (see the module docstring for how each format is cut)."""
  name = path[:-3] if path.endswith('.gz') else path
  with _open(path) as f:
    if name.endswith('.jsonl'):
      for line in f:
        if line.strip():
          yield json.loads(line)['text']
    elif name.endswith('.tsv'):
      rows = [r['sentence'] for r in csv.DictReader(f, delimiter='\t')]
      for i in range(0, len(rows), group):
        yield '\n'.join(rows[i:i + group])
    elif name.endswith('.csv'):
      for r in csv.DictReader(f):
        yield f"{r['sent_more']}\n{r['sent_less']}"
    else:
      block: list[str] = []
      for line in f.read().split('\n') + ['']:
        if line.strip() and len(block) < group:
          block.append(line)
          continue
        if block:
          yield '\n'.join(block)
        block = [line] if line.strip() else []


def input_sets(patterns: Sequence[str], group: int, limit: int) -> Iterator[tuple[str, list[str]]]:
  for pattern in patterns:
    paths = sorted(p for p in globlib.glob(pattern) if os.path.isfile(p))
    if not paths:
      raise SystemExit(f'--inputs {pattern!r} matches no file')
    docs = [d for p in paths for d in read_documents(p, group)]
    yield pattern, docs[:limit] if limit else docs


# ---------------------------------------------------------------------- reference side


class Reference:
  """datatrove 0.10.1's own helpers: its spaCy word tokenizer, sentence splitter, filters."""

  def __init__(self):
    from datatrove.pipeline.filters import c4_filters
    from datatrove.pipeline.filters import gopher_repetition_filter as rep
    from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
    from datatrove.utils import text as dt_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    self.tokenizer = load_word_tokenizer('en')
    self.split_into_sentences = dt_text.split_into_sentences
    self.punctuation = dt_text.PUNCTUATION_SET
    self.stop_words = GopherQualityFilter().stop_words
    self.rep = rep
    self.c4 = c4_filters
    self.quality_filter = GopherQualityFilter()
    self.repetition_filter = rep.GopherRepetitionFilter()

  def decisions(self, text: str) -> tuple[tuple[bool, str], tuple[bool, str]]:
    """(keep, reason) of datatrove's Gopher quality and repetition filters."""
    from datatrove.data import Document
    out = []
    for f in (self.quality_filter, self.repetition_filter):
      r = f.filter(Document(text=text, id='0'))
      out.append((True, '') if r is True else (False, r[1]))
    return out[0], out[1]

  def words(self, text: str) -> list[str]:
    return self.tokenizer.word_tokenize(text)

  def quality_counts(self, text: str, words: list[str]) -> dict[str, float]:
    """What GopherQualityFilter.filter computes from the tokens (its arithmetic)."""
    import numpy as np
    non_symbol = [w for w in words if any(ch not in self.punctuation for ch in w)]
    counts: dict[str, float] = {'tokens': len(words), 'words': len(non_symbol)}
    if non_symbol:
      counts['mean_word_length'] = float(np.mean([len(w) for w in non_symbol]))
      counts['symbol_ratio'] = max(text.count('#'), text.count('...') + text.count('…')) / len(words)
      counts['alpha_words_ratio'] = sum(any(c.isalpha() for c in w) for w in words) / len(words)
      counts['stop_words'] = len(self.stop_words.intersection(set(words)))
    return counts

  def ngram_counts(self, words: list[str]) -> tuple[int, ...]:
    """GopherRepetitionFilter's n-gram numerators: top 2-4-gram chars, repeated 5-10-gram chars."""
    out = []
    for n in (2, 3, 4):
      grams = self.rep.get_n_grams(words, n)
      out.append(self.rep.find_top_duplicate(grams) if grams else 0)
    for n in range(5, 11):
      out.append(self.rep.find_all_duplicate(words, n))
    return tuple(out)

  def c4_kept_lines(self, text: str) -> list[str] | None:
    """The lines C4QualityFilter keeps (paper settings); None if it drops the page first."""
    c4 = self.c4
    kept = []
    for line in text.splitlines():
      line = line.strip()
      words = line.split()
      if any(len(w) > 1000 for w in words):
        continue
      line = c4.CITATION_REGEX.sub('', line)
      if not line.endswith(c4.END_PUNCTUATION) or line.endswith(c4.ELLIPSIS):
        continue
      if len(words) < 5:
        continue
      lower = line.lower()
      if 'lorem ipsum' in lower:
        return None
      if 'javascript' in lower:
        continue
      if '{' in line:
        return None
      if any(p in lower for p in c4.POLICY_SUBSTRINGS):
        continue
      kept.append(line)
    return kept

  def sentences(self, line: str) -> int:
    return len(self.split_into_sentences(line, 'en'))


# ---------------------------------------------------------------------------- our side


def load_ours(code_root: str):
  sys.path.insert(0, code_root)
  from llm.data.clean import rules, text  # pylint: disable=import-outside-toplevel
  assert os.path.abspath(text.__file__).startswith(os.path.abspath(code_root)), text.__file__
  return text, rules


def our_quality_counts(text_mod, rules, text: str, words: list[str]) -> dict[str, float]:
  import dataclasses
  cfg = dataclasses.replace(rules.GopherQualityConfig(), min_words=1, max_words=1 << 62)
  a = text_mod.Analysis(text)
  a.words = words  # the cached property: use the tokens already computed
  s = rules.gopher_quality(a, cfg).signals
  counts: dict[str, float] = {'tokens': len(words), 'words': s['words']}
  if s['words']:
    for k in ('mean_word_length', 'symbol_ratio', 'alpha_words_ratio', 'stop_words'):
      counts[k] = s[k]
  return counts


def same_counts(a: dict[str, float], b: dict[str, float]) -> bool:
  return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=0) for k in a)


# ------------------------------------------------------------------------- comparison


def spans(text: str, toks: list[str]) -> list[tuple[int, int]]:
  """Character span of each token (tokens are substrings of the text, in order)."""
  out, pos = [], 0
  for t in toks:
    i = text.find(t, pos)
    if i < 0:
      raise ValueError(f'token {t!r} not found after offset {pos}')
    out.append((i, i + len(t)))
    pos = i + len(t)
  return out


def diff_regions(text: str, a: list[tuple[int, int]],
                 b: list[tuple[int, int]]) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
  """Minimal runs of tokens whose boundaries differ: (our tokens, reference tokens)."""
  i = j = 0
  while i < len(a) and j < len(b):
    if a[i] == b[j]:
      i, j = i + 1, j + 1
      continue
    si, sj = i, j
    ea, eb = a[i][1], b[j][1]
    i, j = i + 1, j + 1
    while ea != eb and i <= len(a) and j <= len(b):
      if ea < eb:
        if i == len(a):
          break
        ea, i = a[i][1], i + 1
      else:
        if j == len(b):
          break
        eb, j = b[j][1], j + 1
    yield tuple(text[s:e] for s, e in a[si:i]), tuple(text[s:e] for s, e in b[sj:j])
  if i < len(a) or j < len(b):
    yield tuple(text[s:e] for s, e in a[i:]), tuple(text[s:e] for s, e in b[j:])


def measure(name: str, docs: list[str], ref: Reference, text_mod, rules, show: int, ngrams: bool,
            decisions: bool) -> dict:
  n = len(docs)
  same_decisions = collections.Counter()
  decision_diffs: collections.Counter = collections.Counter()
  same_tokens = same_gopher = same_c4_lines = same_c4_page = same_c4_decision = 0
  common = total = 0
  regions: collections.Counter = collections.Counter()
  gopher_diffs: collections.Counter = collections.Counter()
  c4_diffs: collections.Counter = collections.Counter()
  c4_examples: dict[tuple[int, int], str] = {}
  for text in docs:
    ours, theirs = text_mod.words(text), ref.words(text)
    identical = ours == theirs
    same_tokens += identical
    if identical:
      common += len(ours)
    else:
      sa, sb = spans(text, ours), spans(text, theirs)
      common += len(set(sa) & set(sb))
      regions.update(diff_regions(text, sa, sb))
    total += (len(ours) + len(theirs)) / 2

    oq, rq = our_quality_counts(text_mod, rules, text, ours), ref.quality_counts(text, theirs)
    ok = same_counts(oq, rq)
    if not ok:
      gopher_diffs.update(k for k in rq.keys() | oq.keys() if not same_counts({k: oq.get(k, -1)}, {k: rq.get(k, -1)}))
    if ok and ngrams and not identical and ref.ngram_counts(ours) != ref.ngram_counts(theirs):
      ok = False
      gopher_diffs['ngram_repetition'] += 1
    same_gopher += ok

    if decisions:
      a = text_mod.Analysis(text)
      a.words = ours
      for rule, (keep, reason) in zip(('gopher_quality', 'gopher_repetition'), ref.decisions(text)):
        v = getattr(rules, rule)(a, getattr(rules, ''.join(w.title() for w in rule.split('_')) + 'Config')())
        same_decisions[rule] += v.keep == keep and v.reason == reason
        if v.keep != keep or v.reason != reason:
          decision_diffs[rule, v.reason or 'kept', reason or 'kept'] += 1

    kept = ref.c4_kept_lines(text)
    if kept is None:  # the page is dropped before sentences are counted
      same_c4_lines += 1
      same_c4_page += 1
      same_c4_decision += 1
      continue
    oc = [rules.count_sentences(l) for l in kept]
    rc = [ref.sentences(l) for l in kept]
    same_c4_lines += oc == rc
    same_c4_page += sum(oc) == sum(rc)
    same_c4_decision += (sum(oc) < 3) == (sum(rc) < 3)
    for l, o, r in zip(kept, oc, rc):
      if o != r:
        c4_diffs[o, r] += 1
        c4_examples.setdefault((o, r), l)

  row = {
      'set': name, 'docs': n, 'tokens_identical': same_tokens / n, 'token_agreement': common / max(total, 1),
      'gopher_identical': same_gopher / n, 'c4_lines_identical': same_c4_lines / n,
      'c4_page_identical': same_c4_page / n, 'c4_decision_identical': same_c4_decision / n,
  }
  if decisions:
    row.update({f'{k}_decision_identical': v / n for k, v in sorted(same_decisions.items())})
  print(f'\n=== {name}: {n} documents')
  for k, v in row.items():
    if k not in ('set', 'docs'):
      print(f'  {k:34s} {100 * v:8.3f}%')
  if regions:
    print(f'  most frequent token differences ({sum(regions.values())} in all), ours -> spaCy:')
    for (a, b), c in regions.most_common(show):
      print(f'    {c:6d}  {list(a)} -> {list(b)}')
  if gopher_diffs:
    print('  Gopher counts that differ (documents):', dict(gopher_diffs.most_common()))
  if decision_diffs:
    print('  decisions that differ (documents), ours -> datatrove:', dict(decision_diffs.most_common(show)))
  if c4_diffs:
    print('  sentence counts that differ (lines, ours -> spaCy), with an example line:')
    for (o, r), c in c4_diffs.most_common(show):
      print(f'    {c:6d}  {o} -> {r}: {c4_examples[o, r][:160]!r}')
  return row


def throughput(name: str, docs: list[str], ref: Reference, text_mod, repeats: int) -> None:
  """words() on the whole set, each pass with an empty chunk cache (as a fresh worker)."""
  mb = sum(len(d.encode('utf-8')) for d in docs) / 1e6
  best = math.inf
  for _ in range(repeats):
    getattr(text_mod, '_CACHE', {}).clear()
    t = time.perf_counter()
    n_tok = sum(len(text_mod.words(d)) for d in docs)
    best = min(best, time.perf_counter() - t)
  t = time.perf_counter()
  for d in docs:
    ref.words(d)
  spacy_s = time.perf_counter() - t
  print(f'  throughput {name}: words() {mb / best:.1f} MB/s ({n_tok / best / 1e6:.2f} M tokens/s, '
        f'best of {repeats}, {best:.2f} s for {mb:.1f} MB); datatrove/spaCy {mb / spacy_s:.1f} MB/s')


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--inputs', nargs='+', required=True, help='files or globs; each one input set')
  p.add_argument('--code_root', default=REPO, help='checkout whose llm.data.clean is measured')
  p.add_argument('--group', type=int, default=10, help='sentences (.tsv) or lines (text) per document')
  p.add_argument('--limit', type=int, default=0, help='at most this many documents per set (0: all)')
  p.add_argument('--show', type=int, default=15, help='differences to print per set')
  p.add_argument('--no_ngrams', action='store_true', help='skip the n-gram repetition comparison')
  p.add_argument('--decisions', action='store_true', help="also compare the Gopher rules' decisions")
  p.add_argument('--throughput', action='store_true', help='also time words() and spaCy')
  p.add_argument('--repeats', type=int, default=3)
  args = p.parse_args(argv)
  text_mod, rules = load_ours(args.code_root)
  ref = Reference()
  print(f'code: {os.path.dirname(text_mod.__file__)}')
  rows = []
  for name, docs in input_sets(args.inputs, args.group, args.limit):
    rows.append(measure(name, docs, ref, text_mod, rules, args.show, not args.no_ngrams, args.decisions))
    if args.throughput:
      throughput(name, docs, ref, text_mod, args.repeats)
  print('\n| input set | docs | identical tokens | token agreement | identical Gopher counts | '
        'identical C4 line counts | identical C4 page counts |')
  print('|---|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    print(f"| {r['set']} | {r['docs']} | {100 * r['tokens_identical']:.2f}% | {100 * r['token_agreement']:.3f}% | "
          f"{100 * r['gopher_identical']:.2f}% | {100 * r['c4_lines_identical']:.2f}% | "
          f"{100 * r['c4_page_identical']:.2f}% |")


if __name__ == '__main__':
  main()
