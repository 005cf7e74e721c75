"""The corpus pipeline's report: what every stage removed, why, and what it did to the data.

``ReportAccumulator`` folds one ``DocOutcome`` per input document (and one ``FileStats``
per input file) into aggregates plus a bounded sample of removed documents. It holds only
integers, strings and bounded lists, and every piece merges by addition, logical or, or
"keep the k smallest", so merging is associative and commutative and gives exactly the
same ``to_json()`` whatever the order or the partitioning: the in-process runner folds
per shard and merges, Beam uses it as a ``CombineFn`` accumulator, and both reports are
identical. (No float is ever summed; ratios are computed from the integer totals in
``to_json``.)

``write_report`` writes ``report.json`` (``to_json()`` plus config, timing and plot
paths), a readable ``report.md`` and the PNG plots under ``plots/``.

What the JSON holds:
  totals          docs / chars / words in and out, ``counts_add_up``
  funnel          per stage in pipeline order: removed docs / chars / words, and what
                  remains after it (input sizes of the surviving documents; modifying
                  edits are reported separately under ``edits``)
  edits, pii      chars removed per modifying rule and docs touched; PII placeholders
  reasons         per stage, documents per specific reason
  overlap         per filter rule the docs it would drop and the docs only it would drop;
                  a rules x rules matrix of docs both would drop (diagonal: the rule alone)
  histograms      before (all input docs) and after (kept docs) for the length in chars
                  (after: final length) and for each signal in ``signal_bins`` (signals are
                  measured on the input, so after = the kept documents' input signals)
  representation  identity-term rates per million words before / after, which stage
                  shifted each category and term most, and disproportionate-removal flags
  files           per-file read problems and totals
  examples        per stage the removed docs with the smallest ids
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from llm.data.clean import audit
from llm.data.clean.document import DocOutcome, FileStats

# Pseudo-stage of the representation audit: text removed from kept documents by
# modifying rules (line removal, line dedup, PII), i.e. kept docs' terms_in - terms_out.
EDITS_STAGE = 'edits'
LENGTH_HIST = 'length_chars'
PREVIEW_CHARS = 300  # stored per example (the Markdown shows ~200)


def _log_edges(lo: float, hi: float, per_decade: int = 4) -> tuple[float, ...]:
  k0, k1 = round(math.log10(lo) * per_decade), round(math.log10(hi) * per_decade)
  return tuple(float(10 ** (k / per_decade)) for k in range(k0, k1 + 1))


def _lin_edges(lo: float, hi: float, step: float) -> tuple[float, ...]:
  n = round((hi - lo) / step)
  return tuple(round(lo + i * step, 10) for i in range(n + 1))


_FRACTION = _lin_edges(0.0, 1.0, 0.025)

# Bin edges for the quality signals the rules compute (thresholds of C4 / Gopher /
# FineWeb fall inside these ranges). Values below the first edge or at/above the last are
# counted as 'below' / 'above'; missing or NaN values as 'missing'.
DEFAULT_SIGNAL_BINS: dict[str, tuple[float, ...]] = {
    'words': _log_edges(1, 1e6),
    'mean_word_length': _lin_edges(0.0, 15.0, 0.5),
    'symbol_ratio': _lin_edges(0.0, 0.5, 0.0125),
    'alpha_words_ratio': _FRACTION,
    'stop_words': (0.0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 30, 50, 100, 200, 500, 1000, 10000),
    'dup_line_char_frac': _FRACTION,
    'top_2gram_frac': _FRACTION,
    'terminal_punct_line_frac': _FRACTION,
    'short_line_frac': _FRACTION,
    'newlines_per_word': _lin_edges(0.0, 2.0, 0.05),
    'lang_score': _FRACTION,
}
LENGTH_BINS = _log_edges(1, 1e7)  # chars, 4 bins per decade
# Bins for a signal named with spec None that has no default: signed, log-spaced from
# 1e-3 to 1e6 in magnitude, fixed in advance so histograms still merge exactly.
AUTO_BINS = (tuple(-e for e in reversed(_log_edges(1e-3, 1e6))) + (0.0,) + _log_edges(1e-3, 1e6))


def _resolve_bins(name: str, spec: Any) -> tuple[tuple[float, ...], str]:
  """A bin spec -> (edges, scale). See ``ReportAccumulator`` for the accepted forms."""
  scale = None
  if spec is None:
    if name in DEFAULT_SIGNAL_BINS:
      spec = DEFAULT_SIGNAL_BINS[name]
    else:
      return AUTO_BINS, 'symlog'
  if isinstance(spec, Mapping):
    scale = spec.get('scale')
    spec = spec['edges']
  edges = tuple(float(e) for e in spec)
  if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
    raise ValueError(f'signal {name!r}: bin edges must be >= 2 strictly increasing numbers, got {spec!r}')
  if scale is None:
    scale = 'log' if edges[0] > 0 and edges[-1] / edges[0] >= 100 else 'linear'
  if scale not in ('linear', 'log', 'symlog'):
    raise ValueError(f'signal {name!r}: scale must be linear, log or symlog, got {scale!r}')
  return edges, scale


def _add_counts(dst: dict[str, int], src: Mapping[str, int]) -> None:
  for k, v in src.items():
    dst[k] = dst.get(k, 0) + v


def _frac(a: float, b: float) -> float | None:
  return a / b if b else None


def _change(after: float, before: float) -> float | None:
  """Relative change after/before - 1 (None when there is nothing before)."""
  return after / before - 1.0 if before else None


class ReportAccumulator:
  """Mergeable: the in-process runner folds outcomes per shard and merges; Beam uses it as a
  CombineFn accumulator. Merging must be associative and commutative and give exactly the
  same result whatever the order or partitioning (so Beam and in-process reports are
  identical).

  Args:
    stages: ordered names that can appear in ``DocOutcome.removed_by`` (pipeline order).
      A removal by an undeclared stage is still counted (appended to the funnel, by name)
      but makes ``counts_add_up`` false and is listed in ``totals.undeclared_stages``.
    rules: names that can appear in ``DocOutcome.failed``; undeclared ones are appended
      by name.
    signal_bins: ``{signal: spec}`` for the signal histograms; default
      ``DEFAULT_SIGNAL_BINS``. Passing a mapping replaces the defaults (use
      ``{**DEFAULT_SIGNAL_BINS, 'my_signal': None}`` to add one). A spec is a sequence of
      increasing bin edges (log-scaled plot when the first edge is > 0 and the range spans
      >= 100x), ``{'edges': [...], 'scale': 'linear'|'log'|'symlog'}``, or ``None``: the
      default edges for a known signal, else fixed automatic bins (``AUTO_BINS``, signed
      log-spaced, 1e-3..1e6). Signals in a ``DocOutcome`` that are not named here are
      ignored. Bins are fixed up front (never data-dependent) so histograms merge exactly.
    examples_per_rule: removed examples kept per stage (the smallest ids).
    categories: identity-term categories always shown (others seen in the counts are
      appended by name); default ``audit.DEFAULT_CATEGORIES``.
    flag_ratio, flag_min_count: a stage is flagged for a category (or term) when the share
      of its mentions the stage removed is > ``flag_ratio`` x the share of all input words
      the stage removed, and it removed at least ``flag_min_count`` mentions.
    top_terms: how many terms (most frequent in the input) get a full per-stage breakdown.
  """

  def __init__(self, stages: Sequence[str], rules: Sequence[str],
               signal_bins: Mapping[str, Any] | None = None, examples_per_rule: int = 3, *,
               categories: Sequence[str] | None = None, flag_ratio: float = 1.5,
               flag_min_count: int = 10, top_terms: int = 20):
    self.stages = list(stages)
    self.rules = list(rules)
    specs = DEFAULT_SIGNAL_BINS if signal_bins is None else signal_bins
    self.bins = {name: _resolve_bins(name, spec) for name, spec in specs.items()}
    self.examples_per_rule = int(examples_per_rule)
    self.categories = list(audit.DEFAULT_CATEGORIES if categories is None else categories)
    self.flag_ratio = float(flag_ratio)
    self.flag_min_count = int(flag_min_count)
    self.top_terms = int(top_terms)

    self.docs_in = self.chars_in = self.words_in = 0
    self.docs_out = self.chars_out = self.words_out = 0
    self.splits: dict[str, int] = {}  # kept documents per output split ('train', 'validation')
    self.kept_with_removed_by = 0  # kept=True but removed_by set: a pipeline bug, shown
    # Per stage (keyed by name; only stages that removed something have entries).
    self.removed: dict[str, list[int]] = {}  # stage -> [docs, chars, words]
    self.reasons: dict[str, dict[str, int]] = {}
    self.terms_removed: dict[str, dict[str, int]] = {}  # stage -> removed docs' terms_in
    self.examples: dict[str, list[tuple[str, str, str, str]]] = {}  # (id, reason, source, preview)
    self.edits: dict[str, list[int]] = {}  # name -> [chars all docs, docs, chars kept docs, docs kept]
    self.pii: dict[str, list[int]] = {}  # name -> [count, docs]
    self.rule_docs: dict[str, int] = {}  # docs the rule would drop
    self.rule_only: dict[str, int] = {}  # docs only this rule would drop
    self.rule_pairs: dict[tuple[str, str], int] = {}  # (a, b) with a < b by name
    self.docs_failing_any = self.docs_failing_several = 0
    self.hist: dict[str, list[list[int]]] = {}  # name -> [before, after]; counts + [missing]
    for name, (edges, _) in [(LENGTH_HIST, (LENGTH_BINS, 'log'))] + list(self.bins.items()):
      self.hist[name] = [[0] * (len(edges) + 2), [0] * (len(edges) + 2)]
    self.terms_in: dict[str, int] = {}
    self.terms_out: dict[str, int] = {}
    self.files: dict[str, dict[str, Any]] = {}  # path -> FileStats fields (merged)

  # ---------------------------------------------------------------- folding

  def empty_like(self) -> 'ReportAccumulator':
    """A new, empty accumulator with the same configuration (Beam's create_accumulator)."""
    return ReportAccumulator(
        self.stages, self.rules, {n: {'edges': e, 'scale': s} for n, (e, s) in self.bins.items()},
        self.examples_per_rule, categories=self.categories, flag_ratio=self.flag_ratio,
        flag_min_count=self.flag_min_count, top_terms=self.top_terms)

  def _hist_add(self, name: str, which: int, value: Any) -> None:
    counts = self.hist[name][which]
    edges = LENGTH_BINS if name == LENGTH_HIST else self.bins[name][0]
    if value is None:
      counts[-1] += 1
      return
    try:
      x = float(value)
    except (TypeError, ValueError):
      counts[-1] += 1
      return
    if math.isnan(x):
      counts[-1] += 1
    else:  # slot 0: below edges[0]; slot len(edges): at or above edges[-1]
      counts[bisect.bisect_right(edges, x)] += 1

  def add(self, o: DocOutcome) -> None:
    """Folds one document's outcome in."""
    self.docs_in += 1
    self.chars_in += o.chars_in
    self.words_in += o.words_in
    _add_counts(self.terms_in, o.terms_in)
    self._hist_add(LENGTH_HIST, 0, o.chars_in)
    signals = o.signals
    for name in self.bins:
      self._hist_add(name, 0, signals.get(name))
    if o.kept:
      self.docs_out += 1
      self.chars_out += o.chars_out
      self.words_out += o.words_out
      _add_counts(self.terms_out, o.terms_out)
      if o.split:
        self.splits[o.split] = self.splits.get(o.split, 0) + 1
      self._hist_add(LENGTH_HIST, 1, o.chars_out)
      for name in self.bins:
        self._hist_add(name, 1, signals.get(name))
      if o.removed_by:
        self.kept_with_removed_by += 1
    else:
      stage = o.removed_by
      r = self.removed.setdefault(stage, [0, 0, 0])
      r[0] += 1
      r[1] += o.chars_in
      r[2] += o.words_in
      reasons = self.reasons.setdefault(stage, {})
      reasons[o.reason] = reasons.get(o.reason, 0) + 1
      if o.terms_in:
        _add_counts(self.terms_removed.setdefault(stage, {}), o.terms_in)
      self._add_examples(stage, [(o.id, o.reason, o.source, o.preview[:PREVIEW_CHARS])])
    for name, n in o.edits.items():
      if n:
        e = self.edits.setdefault(name, [0, 0, 0, 0])
        e[0] += n
        e[1] += 1
        if o.kept:
          e[2] += n
          e[3] += 1
    for name, n in o.pii.items():
      p = self.pii.setdefault(name, [0, 0])
      p[0] += n
      p[1] += 1 if n else 0
    if o.failed:
      failed = sorted(set(o.failed))
      self.docs_failing_any += 1
      for rule in failed:
        self.rule_docs[rule] = self.rule_docs.get(rule, 0) + 1
      if len(failed) == 1:
        self.rule_only[failed[0]] = self.rule_only.get(failed[0], 0) + 1
      else:
        self.docs_failing_several += 1
        for i, a in enumerate(failed):
          for b in failed[i + 1:]:
            self.rule_pairs[a, b] = self.rule_pairs.get((a, b), 0) + 1

  def _add_examples(self, stage: str, new: Sequence[tuple[str, str, str, str]]) -> None:
    # Keep the k smallest ids: the result depends only on the set of removed documents.
    kept = self.examples.setdefault(stage, [])
    kept.extend(new)
    kept.sort()
    del kept[self.examples_per_rule:]

  def add_file_stats(self, s: FileStats) -> None:
    """Folds one input file's read accounting in (several partial ones per path add up)."""
    self._merge_file(s.path, dataclasses.asdict(s))

  def _merge_file(self, path: str, d: Mapping[str, Any]) -> None:
    cur = self.files.get(path)
    if cur is None:
      self.files[path] = {k: (sorted(v)[:FileStats.MAX_MESSAGES] if isinstance(v, list) else v)
                          for k, v in d.items()}
      return
    for k, v in d.items():
      if k == 'path':
        continue
      a = cur.get(k)
      if isinstance(v, bool):
        cur[k] = bool(a) or v
      elif isinstance(v, int):
        cur[k] = (a or 0) + v
      elif isinstance(v, list):
        # FileStats.merge keeps the first messages in merge order, which depends on how
        # a file was split; keeping the smallest ones is order-independent.
        cur[k] = sorted((a or []) + v)[:FileStats.MAX_MESSAGES]

  def merge(self, other: 'ReportAccumulator') -> None:
    """Adds another accumulator (same configuration) into this one."""
    if other is self:
      other = copy.deepcopy(other)
    mine = (self.stages, self.rules, self.bins, self.examples_per_rule, self.categories,
            self.flag_ratio, self.flag_min_count, self.top_terms)
    theirs = (other.stages, other.rules, other.bins, other.examples_per_rule, other.categories,
              other.flag_ratio, other.flag_min_count, other.top_terms)
    if mine != theirs:
      raise ValueError('cannot merge report accumulators with different configurations')
    for f in ('docs_in', 'chars_in', 'words_in', 'docs_out', 'chars_out', 'words_out',
              'kept_with_removed_by', 'docs_failing_any', 'docs_failing_several'):
      setattr(self, f, getattr(self, f) + getattr(other, f))
    for table in ('removed', 'edits', 'pii'):
      mine_t, theirs_t = getattr(self, table), getattr(other, table)
      for k, v in theirs_t.items():
        cur = mine_t.setdefault(k, [0] * len(v))
        for i, x in enumerate(v):
          cur[i] += x
    for table in ('reasons', 'terms_removed'):
      mine_t = getattr(self, table)
      for k, v in getattr(other, table).items():
        _add_counts(mine_t.setdefault(k, {}), v)
    for table in ('rule_docs', 'rule_only', 'rule_pairs', 'terms_in', 'terms_out', 'splits'):
      _add_counts(getattr(self, table), getattr(other, table))
    for stage, ex in other.examples.items():
      self._add_examples(stage, ex)
    for name, (before, after) in other.hist.items():
      mb, ma = self.hist[name]
      for i, x in enumerate(before):
        mb[i] += x
      for i, x in enumerate(after):
        ma[i] += x
    for path, d in other.files.items():
      self._merge_file(path, d)

  # ---------------------------------------------------------------- summary

  def _stage_order(self) -> list[str]:
    extra = sorted(s for s in self.removed if s not in self.stages)
    return self.stages + extra

  def _rule_order(self) -> list[str]:
    seen = set(self.rule_docs)
    return self.rules + sorted(r for r in seen if r not in self.rules)

  def to_json(self) -> dict[str, Any]:
    """Plain JSON-serialisable summary; the same for any merge order or partitioning."""
    return {
        'totals': self._totals_json(),
        'funnel': self._funnel_json(),
        'edits': {name: {'chars_removed': e[0], 'docs': e[1], 'chars_removed_kept': e[2],
                         'docs_kept': e[3]} for name, e in sorted(self.edits.items())},
        'pii': {name: {'count': p[0], 'docs': p[1]} for name, p in sorted(self.pii.items())},
        'reasons': {stage: dict(sorted(self.reasons.get(stage, {}).items(),
                                       key=lambda kv: (-kv[1], kv[0])))
                    for stage in self._stage_order()},
        'overlap': self._overlap_json(),
        'histograms': self._hist_json(),
        'representation': self._representation_json(),
        'files': self._files_json(),
        'examples': {stage: [{'id': i, 'reason': r, 'source': s, 'preview': p}
                             for i, r, s, p in self.examples.get(stage, [])]
                     for stage in self._stage_order()},
    }

  def _totals_json(self) -> dict[str, Any]:
    removed_declared = sum(self.removed.get(s, [0])[0] for s in self.stages)
    undeclared = {s: self.removed[s][0] for s in self._stage_order() if s not in self.stages}
    return {
        'docs_in': self.docs_in, 'docs_out': self.docs_out,
        'docs_removed': self.docs_in - self.docs_out,
        'splits': dict(sorted(self.splits.items())),
        'chars_in': self.chars_in, 'chars_out': self.chars_out,
        'words_in': self.words_in, 'words_out': self.words_out,
        'frac_docs_kept': _frac(self.docs_out, self.docs_in),
        'frac_chars_kept': _frac(self.chars_out, self.chars_in),
        'frac_words_kept': _frac(self.words_out, self.words_in),
        # Every input doc is kept or removed by exactly one declared stage.
        'counts_add_up': self.docs_in == self.docs_out + removed_declared,
        'undeclared_stages': undeclared,
        'kept_with_removed_by': self.kept_with_removed_by,
    }

  def _funnel_json(self) -> list[dict[str, Any]]:
    out = []
    docs, chars, words = self.docs_in, self.chars_in, self.words_in
    for stage in self._stage_order():
      d, c, w = self.removed.get(stage, [0, 0, 0])
      stage_in = docs
      docs, chars, words = docs - d, chars - c, words - w
      out.append({'stage': stage, 'declared': stage in self.stages,
                  'docs_removed': d, 'chars_removed': c, 'words_removed': w,
                  'frac_of_input': _frac(d, self.docs_in),
                  'frac_of_stage_input': _frac(d, stage_in),
                  'docs_remaining': docs, 'chars_remaining': chars, 'words_remaining': words})
    return out

  def _overlap_json(self) -> dict[str, Any]:
    rules = self._rule_order()
    matrix = []
    for a in rules:
      row = []
      for b in rules:
        if a == b:
          row.append(self.rule_docs.get(a, 0))
        else:
          row.append(self.rule_pairs.get((min(a, b), max(a, b)), 0))
      matrix.append(row)
    return {
        'rules': rules,
        'per_rule': {r: {'would_drop': self.rule_docs.get(r, 0),
                         'only_this_rule': self.rule_only.get(r, 0),
                         'frac_of_input': _frac(self.rule_docs.get(r, 0), self.docs_in)}
                     for r in rules},
        'docs_failing_any': self.docs_failing_any,
        'docs_failing_several': self.docs_failing_several,
        'matrix': matrix,  # [i][j]: docs both rule i and rule j would drop; [i][i]: rule i
    }

  def _hist_json(self) -> dict[str, Any]:
    out = {}
    specs = [(LENGTH_HIST, LENGTH_BINS, 'log')] + [(n, e, s) for n, (e, s) in self.bins.items()]
    for name, edges, scale in specs:
      entry: dict[str, Any] = {'edges': list(edges), 'scale': scale}
      for which, counts in zip(('before', 'after'), self.hist[name]):
        entry[which] = {'counts': counts[1:len(edges)], 'below': counts[0],
                        'above': counts[len(edges)], 'missing': counts[-1],
                        'total': sum(counts)}
      out[name] = entry
    return out

  def _files_json(self) -> dict[str, Any]:
    fields = [f.name for f in dataclasses.fields(FileStats) if f.name not in ('path', 'errors')]
    totals = {f: 0 for f in fields}
    problems = []
    for path in sorted(self.files):
      d = self.files[path]
      for f in fields:
        totals[f] += int(d.get(f, 0) or 0)  # bools count files
      # A problem: anything skipped, cut short or undecodable. Non-HTML WARC responses
      # are skipped too but are expected (robots.txt, images), so alone they are not one.
      bad = {f: d[f] for f in fields
             if f not in ('records', 'bytes_read', 'non_html') and d.get(f)}
      if bad or d.get('errors'):
        counters = {f: d[f] for f in fields if d.get(f)}
        problems.append({'path': path, **counters, 'errors': list(d.get('errors', []))})
    return {'files': len(self.files), 'files_with_problems': len(problems),
            'totals': totals, 'problems': problems}

  # ------------------------------------------------------- representation

  def _representation_json(self) -> dict[str, Any]:
    W = self.words_in
    removed_stages = self._stage_order()
    words_removed = {s: self.removed.get(s, [0, 0, 0])[2] for s in removed_stages}
    terms_removed = {s: self.terms_removed.get(s, {}) for s in removed_stages}
    # Text the modifying rules took out of kept documents: kept input - kept output.
    kept_words_in = W - sum(words_removed.values())
    words_removed[EDITS_STAGE] = kept_words_in - self.words_out
    kept_terms_in = dict(self.terms_in)
    for counts in terms_removed.values():
      for k, v in counts.items():
        kept_terms_in[k] = kept_terms_in.get(k, 0) - v
    terms_removed[EDITS_STAGE] = {k: v - self.terms_out.get(k, 0) for k, v in kept_terms_in.items()
                                  if v - self.terms_out.get(k, 0)}
    stages = removed_stages + [EDITS_STAGE]

    keys = sorted(set(self.terms_in) | set(self.terms_out))
    cat_of = {k: k.split(':', 1)[0] for k in keys}
    categories = self.categories + sorted({c for c in cat_of.values() if c not in self.categories})

    def breakdown(before: int, removed_by_stage: Mapping[str, int]) -> list[dict[str, Any]]:
      rate = audit.rate_per_million(before, W)
      rows = []
      for s in stages:
        t, w = removed_by_stage.get(s, 0), words_removed[s]
        share_m, share_w = _frac(t, before), _frac(w, W)
        rate_without = audit.rate_per_million(before - t, W - w) if W - w > 0 else None
        disproportion = (share_m / share_w if share_m is not None and share_w
                         else (None if not t else math.inf))
        flagged = (t >= self.flag_min_count and share_m is not None
                   and share_m > self.flag_ratio * (share_w or 0.0))
        rows.append({'stage': s, 'mentions_removed': t, 'share_of_mentions': share_m,
                     'words_removed': w, 'share_of_words': share_w,
                     'disproportion': None if disproportion == math.inf else disproportion,
                     'rate_without': rate_without,
                     'shift': (_change(rate_without, rate) if rate_without is not None else None),
                     'flagged': bool(flagged)})
      return rows

    def top(rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
      ranked = [r for r in rows if r['shift']]  # skip 0 and None
      ranked.sort(key=lambda r: -abs(r['shift']))  # stable: ties keep pipeline order
      return [{'stage': r['stage'], 'shift': r['shift']} for r in ranked[:n]]

    def summary(before: int, after: int) -> dict[str, Any]:
      rb, ra = audit.rate_per_million(before, W), audit.rate_per_million(after, self.words_out)
      return {'count_before': before, 'rate_before': rb, 'count_after': after,
              'rate_after': ra, 'change': _change(ra, rb)}

    flags = []
    out_categories = {}
    for cat in categories:
      ks = [k for k in keys if cat_of[k] == cat]
      before = sum(self.terms_in.get(k, 0) for k in ks)
      after = sum(self.terms_out.get(k, 0) for k in ks)
      removed = {s: sum(terms_removed[s].get(k, 0) for k in ks) for s in stages}
      rows = breakdown(before, removed)
      best = top(rows)
      out_categories[cat] = {**summary(before, after), 'terms_seen': len(ks),
                             'top_stages': best,
                             'most_shifting_stage': best[0]['stage'] if best else None,
                             'by_stage': rows}
      flags += [{'level': 'category', 'category': cat, 'term': None, **_flag_fields(r)}
                for r in rows if r['flagged']]

    all_terms, term_rows = {}, {}
    for k in keys:
      cat, term = k.split(':', 1)
      rows = breakdown(self.terms_in.get(k, 0), {s: terms_removed[s].get(k, 0) for s in stages})
      term_rows[k] = rows
      best = top(rows, 1)
      all_terms[k] = {**summary(self.terms_in.get(k, 0), self.terms_out.get(k, 0)),
                      'most_shifting_stage': best[0]['stage'] if best else None,
                      'shift': best[0]['shift'] if best else None}
      flags += [{'level': 'term', 'category': cat, 'term': term, **_flag_fields(r)}
                for r in rows if r['flagged']]
    top_keys = sorted(keys, key=lambda k: (-self.terms_in.get(k, 0), k))[:self.top_terms]
    top_terms = [{'key': k, 'category': cat_of[k], 'term': k.split(':', 1)[1], **all_terms[k],
                  'top_stages': top(term_rows[k])} for k in top_keys]
    return {
        'words_before': W, 'words_after': self.words_out,
        'flag_ratio': self.flag_ratio, 'flag_min_count': self.flag_min_count,
        'stages': stages,
        'categories': out_categories,
        'top_terms': top_terms,
        'terms': all_terms,
        'flags': flags,
    }


def _flag_fields(row: Mapping[str, Any]) -> dict[str, Any]:
  return {k: row[k] for k in ('stage', 'mentions_removed', 'share_of_mentions', 'share_of_words',
                              'disproportion', 'shift')}


# ====================================================================== writing


def _md(text: Any, limit: int | None = None) -> str:
  """Escapes text for one Markdown table cell or line (and truncates it)."""
  s = '' if text is None else str(text)
  if limit is not None and len(s) > limit:
    s = s[:limit].rstrip() + '…'
  s = re.sub(r'\s*\n\s*', ' ⏎ ', s)
  s = re.sub(r'[\t\r\f\v]', ' ', s)
  return re.sub(r'([\\`*_\[\]<>|~&])', r'\\\1', s)


def _code(name: Any) -> str:
  """An identifier (stage, rule, reason, term) as an inline code span: shown literally."""
  s = re.sub(r'\s+', ' ', str(name)).replace('`', "'").replace('|', '\\|')
  return f'`{s}`' if s else '–'


def _pct(x: float | None, digits: int = 1, signed: bool = False) -> str:
  if x is None:
    return '–'
  return f'{100 * x:+.{digits}f}%' if signed else f'{100 * x:.{digits}f}%'


def _num(x: Any) -> str:
  if x is None:
    return '–'
  if isinstance(x, float):
    return f'{x:,.1f}'
  return f'{x:,}'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return lines + ['']


def _safe_name(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'signal'


def _plots(rep: dict[str, Any], plot_dir: str) -> dict[str, str]:
  """Draws every plot; returns {plot id: file name}. Works with empty data."""
  # Figure + Agg canvas directly, not pyplot: no global backend switch, no figure registry
  # to leak into, nothing to close.
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  os.makedirs(plot_dir, exist_ok=True)
  made = {}

  def save(fig: Figure, pid: str) -> None:
    FigureCanvasAgg(fig)
    fname = f'{_safe_name(pid)}.png'
    fig.savefig(os.path.join(plot_dir, fname), dpi=90)
    fig.clear()
    made[pid] = fname

  # Funnel: documents remaining after each stage.
  funnel = rep['funnel']
  fig = Figure(figsize=(7, 0.45 * (len(funnel) + 1) + 1.2), layout='constrained')
  ax = fig.add_subplot()
  labels = ['input'] + [r['stage'] for r in funnel]
  values = [rep['totals']['docs_in']] + [r['docs_remaining'] for r in funnel]
  ax.barh(range(len(labels)), values, color='tab:blue')
  ax.set_yticks(range(len(labels)), labels)
  ax.invert_yaxis()
  ax.set_xlabel('documents remaining after the stage')
  ax.set_title('Funnel')
  save(fig, 'funnel')

  # Histograms: before vs after, as the fraction of each set's documents per bin.
  for name, h in rep['histograms'].items():
    edges = h['edges']
    # Fixed margins rather than a constrained layout: half the drawing time, and there
    # are a dozen of these.
    fig = Figure(figsize=(6.5, 3.6))
    fig.subplots_adjust(left=0.11, right=0.97, top=0.86, bottom=0.14)
    ax = fig.add_subplot()
    for which, color in (('before', 'tab:gray'), ('after', 'tab:blue')):
      d = h[which]
      total = max(d['total'], 1)
      ax.stairs([c / total for c in d['counts']], edges, label=f'{which} (n={d["total"]:,})',
                color=color, fill=which == 'before', alpha=0.45 if which == 'before' else 1.0,
                linewidth=1.5)
    if h['scale'] == 'log':
      ax.set_xscale('log')
    elif h['scale'] == 'symlog':
      ax.set_xscale('symlog', linthresh=1e-3)
    outside = ', '.join(f'{w}: {h[w]["below"]} below / {h[w]["above"]} above / {h[w]["missing"]} missing'
                        for w in ('before', 'after'))
    ax.set_title(f'{name}\n{outside}', fontsize=8)
    ax.set_xlabel(name)
    ax.set_ylabel('fraction of documents')
    ax.legend(fontsize=8)
    save(fig, f'hist_{name}')

  # Representation: rate per million words per category, before vs after.
  cats = rep['representation']['categories']
  names = list(cats)
  fig = Figure(figsize=(max(5.0, 1.3 * len(names) + 2), 3.8), layout='constrained')
  ax = fig.add_subplot()
  x = range(len(names))
  ax.bar([i - 0.2 for i in x], [cats[c]['rate_before'] for c in names], 0.4, label='before',
         color='tab:gray')
  ax.bar([i + 0.2 for i in x], [cats[c]['rate_after'] for c in names], 0.4, label='after',
         color='tab:blue')
  for i, c in enumerate(names):
    if cats[c]['change'] is not None:
      ax.annotate(_pct(cats[c]['change'], signed=True), (i, max(cats[c]['rate_before'],
                  cats[c]['rate_after'])), ha='center', va='bottom', fontsize=8)
  ax.set_xticks(list(x), names, rotation=15)
  ax.set_ylabel('mentions per million words')
  ax.set_title('Identity terms before and after cleaning')
  ax.legend(fontsize=8)
  save(fig, 'representation')

  # Top terms: relative change of the rate.
  terms = [t for t in rep['representation']['top_terms'] if t['change'] is not None]
  fig = Figure(figsize=(6.5, 0.3 * len(terms) + 1.6), layout='constrained')
  ax = fig.add_subplot()
  ax.barh(range(len(terms)), [100 * t['change'] for t in terms],
          color=['tab:red' if t['change'] < 0 else 'tab:green' for t in terms])
  ax.set_yticks(range(len(terms)), [t['key'] for t in terms], fontsize=7)
  ax.invert_yaxis()
  ax.axvline(0, color='black', linewidth=0.8)
  ax.set_xlabel('rate change after cleaning (%)')
  ax.set_title('Most frequent identity terms')
  save(fig, 'representation_terms')

  # Rule overlap heatmap.
  ov = rep['overlap']
  if ov['rules']:
    n = len(ov['rules'])
    fig = Figure(figsize=(0.35 * n + 3, 0.35 * n + 2), layout='constrained')
    ax = fig.add_subplot()
    im = ax.imshow(ov['matrix'], cmap='viridis')
    ax.set_xticks(range(n), ov['rules'], rotation=90, fontsize=7)
    ax.set_yticks(range(n), ov['rules'], fontsize=7)
    fig.colorbar(im, ax=ax, label='documents both rules would drop')
    ax.set_title('Rule overlap')
    save(fig, 'overlap')
  return made


def _markdown(rep: dict[str, Any], plots: Mapping[str, str]) -> str:
  t = rep['totals']
  L = ['# Corpus cleaning report', '']
  L += [f'{t["docs_in"]:,} documents in, **{t["docs_out"]:,} kept** ({_pct(t["frac_docs_kept"])}); '
        f'{t["chars_in"]:,} → {t["chars_out"]:,} characters ({_pct(t["frac_chars_kept"])}); '
        f'{t["words_in"]:,} → {t["words_out"]:,} words ({_pct(t["frac_words_kept"])}).', '']
  if t['counts_add_up']:
    L += ['Counts add up: every input document is kept or removed by exactly one stage.', '']
  else:
    L += ['**Counts do not add up**: documents in ≠ kept + removed by the declared stages '
          f'(undeclared stages: {_md(t["undeclared_stages"])}).', '']
  if t['kept_with_removed_by']:
    L += [f'**{t["kept_with_removed_by"]} kept documents have a removed\\_by set.**', '']
  out = rep.get('output') or {}
  if out:
    splits = out.get('splits', {})
    L += ['Output: ' + ', '.join(f'{_num(n)} {_md(s)}' for s, n in splits.items()) + ' documents'
          + (f'; TFDS dataset `{out["tfds_dir"]}`' if out.get('tfds_dir') else '; no TFDS dataset') + '.', '']
    for note in out.get('notes', []):
      L += [f'**{_md(note)}**', '']

  L += ['## Funnel', '']
  rows = [[_code(r['stage']) + ('' if r['declared'] else ' (undeclared)'), _num(r['docs_removed']),
           _pct(r['frac_of_input']), _pct(r['frac_of_stage_input']), _num(r['chars_removed']),
           _num(r['docs_remaining']), _num(r['chars_remaining'])] for r in rep['funnel']]
  L += _table(['stage', 'docs removed', '% of input', '% of stage input', 'chars removed',
               'docs remaining', 'chars remaining'], rows)
  L += ['Chars remaining are the input sizes of the surviving documents; what modifying '
        'rules cut from kept documents is under *Edits*.', '']
  if 'funnel' in plots:
    L += [f'![funnel](plots/{plots["funnel"]})', '']

  L += ['## Reasons', '']
  for stage, reasons in rep['reasons'].items():
    if reasons:
      L += [f'**{_code(stage)}**', '']
      L += _table(['reason', 'docs'], [[_code(r or '(none)'), _num(n)] for r, n in reasons.items()])

  ov = rep['overlap']
  L += ['## Rule overlap', '',
        f'{ov["docs_failing_any"]:,} documents fail at least one filter rule, '
        f'{ov["docs_failing_several"]:,} fail several. "Only this rule": documents no other '
        'rule would drop (the rule\'s unique contribution).', '']
  L += _table(['rule', 'would drop', '% of input', 'only this rule'],
              [[_code(r), _num(v['would_drop']), _pct(v['frac_of_input']), _num(v['only_this_rule'])]
               for r, v in ov['per_rule'].items()])
  pairs = [(ov['matrix'][i][j], a, b) for i, a in enumerate(ov['rules'])
           for j, b in enumerate(ov['rules']) if i < j and ov['matrix'][i][j]]
  pairs.sort(key=lambda p: -p[0])
  if pairs:
    L += ['Rule pairs that drop the same documents (top 30):', '']
    L += _table(['rule A', 'rule B', 'docs both would drop'],
                [[_code(a), _code(b), _num(n)] for n, a, b in pairs[:30]])
  if 'overlap' in plots:
    L += [f'![overlap](plots/{plots["overlap"]})', '']

  L += ['## Edits and PII', '']
  if rep['edits']:
    L += _table(['edit', 'chars removed', 'docs touched', 'chars removed (kept docs)',
                 'kept docs touched'],
                [[_code(n), _num(e['chars_removed']), _num(e['docs']), _num(e['chars_removed_kept']),
                  _num(e['docs_kept'])] for n, e in rep['edits'].items()])
  else:
    L += ['No modifying edits.', '']
  if rep['pii']:
    L += _table(['PII placeholder', 'count', 'docs'],
                [[_code(n), _num(p['count']), _num(p['docs'])] for n, p in rep['pii'].items()])
  else:
    L += ['No PII replaced.', '']

  L += ['## Distributions before and after', '',
        'Before: all input documents; after: kept documents. Signals are measured on the '
        'input text; the length after is the final length.', '']
  for name in rep['histograms']:
    pid = f'hist_{name}'
    if pid in plots:
      L += [f'![{_safe_name(name)}](plots/{plots[pid]})']
  L += ['']

  r = rep['representation']
  L += ['## Representation audit', '',
        f'Identity-term mentions per million words, before ({r["words_before"]:,} input words) '
        f'and after ({r["words_after"]:,} kept words). *Shift* of a stage: the rate over the '
        'input without the documents that stage removed, relative to the input rate '
        f'(`{EDITS_STAGE}`: text cut from kept documents). A stage is **flagged** when the '
        'share of the mentions it removed is more than '
        f'{r["flag_ratio"]}× the share of words it removed (at least {r["flag_min_count"]} '
        'mentions).', '']
  rows = []
  for cat, c in r['categories'].items():
    most = ', '.join(f'{_code(s["stage"])} ({_pct(s["shift"], signed=True)})' for s in c['top_stages'])
    flagged = [row['stage'] for row in c['by_stage'] if row['flagged']]
    flag = ', '.join(f'**{_code(s)}**' for s in flagged)
    rows.append([_code(cat), _num(c['count_before']), _num(c['rate_before']), _num(c['count_after']),
                 _num(c['rate_after']), _pct(c['change'], signed=True), most or '–', flag or '–'])
  L += _table(['category', 'mentions before', 'per M before', 'mentions after', 'per M after',
               'change', 'most shifting stages', 'flagged stages'], rows)
  if 'representation' in plots:
    L += [f'![representation](plots/{plots["representation"]})', '']
  if r['flags']:
    L += ['**Disproportionate removals:**', '']
    for f in r['flags'][:40]:
      what = _code(f['category']) + (f' / {_code(f["term"])}' if f['term'] else '')
      ratio = f'{f["disproportion"]:.1f}×' if f['disproportion'] is not None else '∞×'
      L += [f'- **{_code(f["stage"])} removes {what}**: {f["mentions_removed"]:,} mentions = '
            f'{_pct(f["share_of_mentions"])} of them, vs {_pct(f["share_of_words"])} of all words '
            f'({ratio})']
    if len(r['flags']) > 40:
      L += [f'- … {len(r["flags"]) - 40} more in report.json']
    L += ['']
  else:
    L += ['No stage removes any category or term disproportionately.', '']
  if r['top_terms']:
    L += ['Most frequent terms:', '']
    L += _table(['term', 'before', 'per M before', 'after', 'per M after', 'change',
                 'most shifting stages'],
                [[_code(t['key']), _num(t['count_before']), _num(t['rate_before']),
                  _num(t['count_after']), _num(t['rate_after']), _pct(t['change'], signed=True),
                  ', '.join(f'{_code(s["stage"])} ({_pct(s["shift"], signed=True)})'
                            for s in t['top_stages']) or '–'] for t in r['top_terms']])
  if 'representation_terms' in plots:
    L += [f'![terms](plots/{plots["representation_terms"]})', '']

  fs = rep['files']
  L += ['## Input files', '',
        f'{fs["files"]:,} files, {fs["files_with_problems"]:,} with problems.', '']
  tot = {k: v for k, v in fs['totals'].items() if v}
  if tot:
    L += _table(['counter', 'total'], [[_code(k), _num(v)] for k, v in tot.items()])
  if fs['problems']:
    L += _table(['file', 'problems', 'first messages'],
                [[_md(p['path']),
                  _md(', '.join(f'{k}={v}' for k, v in p.items() if k not in ('path', 'errors'))),
                  _md(' / '.join(p['errors']), 300)] for p in fs['problems'][:50]])
    if len(fs['problems']) > 50:
      L += [f'… {len(fs["problems"]) - 50} more files with problems in report.json', '']

  L += ['## Removed examples', '', 'Per stage, the removed documents with the smallest ids.', '']
  for stage, ex in rep['examples'].items():
    if ex:
      L += [f'**{_code(stage)}**', '']
      L += _table(['id', 'reason', 'preview'],
                  [[_code(e['id']), _code(e['reason']), _md(e['preview'], 200)] for e in ex])

  if rep.get('config') is not None:
    L += ['## Config', '', '```json', json.dumps(rep['config'], indent=2, default=str), '```', '']
  if rep.get('timing'):
    L += ['## Timing', '']
    L += _table(['what', 'value'], [[_code(k), _md(f'{v:.3f}' if isinstance(v, float) else v)]
                                    for k, v in rep['timing'].items()])
  return '\n'.join(L) + '\n'


def write_report(acc: ReportAccumulator, out_dir: str, config: dict | None = None,
                 timing: dict | None = None, output: dict | None = None) -> dict:
  """Writes out_dir/report.json, out_dir/report.md and out_dir/plots/*.png; returns the json dict.

  ``output`` describes what the run wrote (split sizes, the TFDS folder, notes such as
  "nothing to train on"); it heads the Markdown report."""
  os.makedirs(out_dir, exist_ok=True)
  rep = acc.to_json()
  rep['output'] = json.loads(json.dumps(output, default=str)) if output is not None else None
  plots = _plots(rep, os.path.join(out_dir, 'plots'))
  rep['plots'] = {k: f'plots/{v}' for k, v in plots.items()}
  # Round-trip through JSON so the returned dict is exactly what the file holds.
  rep['config'] = json.loads(json.dumps(config, default=str)) if config is not None else None
  rep['timing'] = json.loads(json.dumps(timing, default=str)) if timing is not None else None
  with open(os.path.join(out_dir, 'report.json'), 'w', encoding='utf-8') as f:
    json.dump(rep, f, indent=1, ensure_ascii=False)
    f.write('\n')
  with open(os.path.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
    f.write(_markdown(rep, plots))
  return rep
