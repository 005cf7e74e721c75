"""Representation-aware reweighting: sampling weights that bring identity groups to a target share.

The corpus pipeline's representation audit (``llm.data.clean.report``) says how often the
identity terms of ``data/identity_terms/`` occur; this module changes how often documents
are *sampled* so that chosen groups reach a target share of the training stream, and
reports the shares it reached.

Targets (``data.reweight``), comma-separated, each one of:

* ``category:group=p``, e.g. ``gender:female=0.5``: the **mention share** of the group,
  ``sum_d w_d g_d / sum_d w_d c_d``, where ``g_d`` counts the group's term mentions in
  document d, ``c_d`` the mentions of every term of the category, and ``w_d`` is how many
  times the document is sampled. It is the fraction of the category's mentions in the
  training stream that belong to the group (the audit counts mentions too, so it reads
  on the same scale). Groups are the sections of a word list: a whole-line comment
  after a blank line (or the start of the file), directly followed by a term, opens
  group ``<its first words up to a comma, spaces -> '_'>``, e.g. ``# female`` in
  gender.txt; the shipped lists give ``gender:female``, ``gender:male`` and
  ``gender:transgender`` (transgender, non-binary and other identities).
* ``category=p``, e.g. ``religion=0.2``: the **document share** of the category,
  ``sum_d w_d [c_d > 0] / sum_d w_d``: the fraction of sampled documents that mention at
  least one of its terms. This is the form for categories without groups, and a group
  share is meaningless across categories (a document mentions several).

Both are expectations over the sampled stream, which is what a model trained on it sees.
``p`` lies strictly between 0 and 1.

How the weights are chosen. For a target with share ``p``, the documents that *raise* the
share when sampled more often are those whose own ratio exceeds it: ``g_d > p c_d``
(a document mentioning ``women`` 3 times and ``men`` once helps ``female=0.5``; one with
the opposite counts does not, though it mentions the group). All of these get one factor
``f``, every other document keeps weight 1, and ``f`` has a closed form: with ``A, B``
the weighted sums of ``g, c`` over that set and ``A', B'`` over the rest,
``f = (p B' - A') / (A - p B)``. ``f > 1`` upweights them (the target is above the
current share), ``f < 1`` downweights them (below it). Upweighting the helping set is the
best possible single move: no weights in [1, max_weight] give a higher share, and no
weights in [1/max_weight, 1] a lower one (a linear-fractional programme is optimised at a
threshold on the ratio), so the range this module reports as reachable is exact.
Documents that mention no term of any targeted category never change weight. Several
targets get one factor each, a document's weight is the product of the factors of the
sets it is in, clipped to [1/max_weight, max_weight], and the factors are solved by
coordinate sweeps (each exact given the others: the clipped sum is piecewise linear in
the factor) over cells of documents with the same memberships, so a sweep costs
O(cells), not O(documents). ``max_weight`` bounds how much any document is up- or
downsampled, so a rare group is not copied absurdly often. Targets that are each
reachable may still not be reachable together (``gender:female=0.4,gender:male=0.55``
when nothing mentions a third group); that is one error too, with the closest shares.

Weights become a training stream by ``resample``: ``floor(w)`` copies of each document
plus one more with probability ``w - floor(w)``, decided by hashes of the seed and the
document's index (systematic sampling, see there) rather than a stateful generator, so
the stream is a pure function of the seed and a resumed run sees the same documents.
Copies are laid out copy-major (every first copy in corpus order, then every second
copy, ...), so a document's copies lie about a corpus apart and a training window holds
a document and its repeat only when the whole corpus is shorter than a window.

Bad targets stop with one ``DataError`` line: a malformed spec, or a target the corpus
cannot reach, which says what it can reach.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from llm.data.clean import audit
from llm.data.documents import DataError
from llm.data.objectives import hash_key

SPEC_FLAG = 'data.reweight'  # the options the messages tell the user to change
MAX_WEIGHT_FLAG = 'data.reweight_max_weight'
TOLERANCE = 1e-9  # |expected share - target| the solver stops at
_SWEEPS = 1000  # coordinate sweeps before several targets are declared incompatible
_RESAMPLE_TAG = 0x7277  # 'rw': keeps resample's draws apart from the stream's other hashes


# ----------------------------------------------------------------------------- targets


def _group_name(comment: str) -> str:
  """'# transgender, non-binary and other ...' -> 'transgender'."""
  head = re.split(r'[,(:;]', comment.lstrip('#'), maxsplit=1)[0]
  return re.sub(r'[\s\-]+', '_', head.strip().lower())


def load_groups(path: str) -> dict[str, list[str]]:
  """The groups of one word list: ``{group: [terms as written]}``, in file order.

  A group opens at a whole-line comment that follows a blank line (or starts the file)
  and is directly followed by a term; it runs to the next such comment. Terms before the
  first one belong to no group. A term listed twice keeps its first group, as
  ``audit.load_terms`` keeps its first occurrence.
  """
  with open(path, encoding='utf-8') as f:
    lines = [line.rstrip('\n') for line in f]
  groups: dict[str, list[str]] = {}
  seen: set[str] = set()
  group = None
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith('#'):
      after_blank = i == 0 or not lines[i - 1].strip()
      nxt = lines[i + 1].split('#', 1)[0].strip() if i + 1 < len(lines) else ''
      if after_blank and nxt:
        group = _group_name(stripped)
        groups.setdefault(group, [])
      continue
    term = ' '.join(line.split('#', 1)[0].lower().split())  # as audit.load_terms writes it
    norm = audit.normalize_term(term)
    if norm and norm not in seen:
      seen.add(norm)
      if group is not None:
        groups[group].append(term)
  return {g: terms for g, terms in groups.items() if terms}


def list_groups(lists_dir: str | None = None) -> dict[str, dict[str, list[str]]]:
  """``{category: {group: terms}}`` for every ``<category>.txt`` in ``lists_dir`` (default:
  the shipped ``data/identity_terms``); a category without sections maps to ``{}``."""
  lists_dir = lists_dir or audit.DEFAULT_LISTS_DIR
  paths = sorted(glob.glob(os.path.join(lists_dir, '*.txt')))
  return {os.path.splitext(os.path.basename(p))[0]: load_groups(p) for p in paths}


@dataclasses.dataclass(frozen=True)
class Target:
  """One reweighting target: ``category:group=share`` (mention share) or ``category=share``
  (document share)."""
  category: str
  group: str | None
  share: float

  @property
  def name(self) -> str:
    return self.category if self.group is None else f'{self.category}:{self.group}'

  @property
  def measure(self) -> str:
    """What the share is a share of, in words."""
    return f'{self.category} mentions' if self.group is not None else 'documents'

  def __str__(self) -> str:
    return f'{self.name}={self.share:g}'


def parse_targets(spec: str, lists_dir: str | None = None) -> tuple[Target, ...]:
  """``'gender:female=0.5,religion=0.2'`` -> Targets, checked against the word lists.

  Empty items (a trailing comma) are skipped; an empty spec gives no targets. Raises
  DataError, one line naming the item, for anything else that is not a valid target.
  """
  known = list_groups(lists_dir)
  where = lists_dir or audit.DEFAULT_LISTS_DIR
  targets: list[Target] = []
  for item in (s.strip() for s in spec.split(',')):
    if not item:
      continue
    bad = f'{SPEC_FLAG} target {item!r}'
    if '=' not in item:
      raise DataError(f"{bad} has no '=<share>'; write category=share or category:group=share, "
                      "e.g. 'gender:female=0.5' or 'religion=0.2'")
    name, value = (s.strip() for s in item.rsplit('=', 1))
    try:
      p = float(value)
    except ValueError:
      raise DataError(f'{bad}: the share {value!r} is not a number; give a fraction between 0 and 1') from None
    if not 0.0 < p < 1.0:  # also rejects nan
      raise DataError(f'{bad}: the share must lie strictly between 0 and 1, got {value}')
    category, _, group = (s.strip() for s in name.partition(':'))
    if category not in known:
      raise DataError(f"{bad}: unknown identity-term category {category!r}; known: "
                      f"{', '.join(known) or 'none'} (the <category>.txt word lists in {where})")
    if ':' in name:
      groups = known[category]
      if not groups:
        raise DataError(f"{bad}: category {category!r} has no groups (its word list has no "
                        f"'# <group>' sections); target the whole category as "
                        f'{category}=<share of documents mentioning it>')
      if group not in groups:
        raise DataError(f"{bad}: category {category!r} has no group {group!r}; its groups: "
                        f"{', '.join(groups)}")
    target = Target(category, group if ':' in name else None, p)
    if any(t.name == target.name for t in targets):
      raise DataError(f'{SPEC_FLAG} sets {target.name} twice ({spec!r}); keep one')
    targets.append(target)
  for category in {t.category for t in targets}:
    total = sum(t.share for t in targets if t.category == category and t.group is not None)
    if total > 1.0 + TOLERANCE:
      named = ', '.join(str(t) for t in targets if t.category == category and t.group is not None)
      raise DataError(f"{SPEC_FLAG} targets {named} add up to {total:g} of {category}'s mentions, "
                      'more than all of them; lower them to a total of at most 1')
  return tuple(targets)


# ----------------------------------------------------------------------------- counts


@dataclasses.dataclass(frozen=True)
class GroupCounts:
  """Identity-term mentions per document (int64 [num_docs] arrays)."""
  num_docs: int
  mentions: dict[str, np.ndarray]  # category -> mentions of any of its terms
  group_mentions: dict[str, np.ndarray]  # 'category:group' -> mentions of the group's terms

  def arrays(self, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """float64 (numerator, denominator) per document: the target's share is
    ``sum(w * num) / sum(w * den)`` for sampling weights w."""
    if target.category not in self.mentions:
      raise DataError(f'{SPEC_FLAG} target {target}: category {target.category!r} was not counted '
                      f"(counted: {', '.join(self.mentions)}); pass it to document_groups")
    c = self.mentions[target.category].astype(np.float64)
    if target.group is None:
      return (c > 0).astype(np.float64), np.ones(self.num_docs)
    return self.group_mentions[target.name].astype(np.float64), c


def document_groups(docs: Iterable[str], categories: Sequence[str] | None = None,
                    lists_dir: str | None = None) -> GroupCounts:
  """Mentions per document of each category in ``categories`` (default: all) and of its groups.

  Counted by ``audit.TermCounter`` over *all* the word lists, whatever is kept, so the
  counts equal the audit's (at each position the longest term of any category wins).
  """
  groups = list_groups(lists_dir)
  cats = list(groups) if categories is None else list(categories)
  for c in cats:
    if c not in groups:
      raise DataError(f"unknown identity-term category {c!r}; known: {', '.join(groups) or 'none'}")
  counter = audit.TermCounter(lists_dir, tuple(groups) or None)
  # 'category:term' -> (column of its category, column of its group or -1)
  group_keys = [f'{c}:{g}' for c in cats for g in groups[c]]
  group_of = {f'{c}:{t}': group_keys.index(f'{c}:{g}') for c in cats for g, ts in groups[c].items() for t in ts}
  slot = {k: (cats.index(k.split(':', 1)[0]), group_of.get(k, -1))
          for k in counter.keys if k.split(':', 1)[0] in cats}
  rows: list[tuple[int, int, int, int]] = []  # (doc, category column, group column, n)
  n = 0
  for n, text in enumerate(docs, 1):
    for key, k in counter.count(text).items():
      s = slot.get(key)
      if s is not None:
        rows.append((n - 1, s[0], s[1], k))
  cat_counts = np.zeros((len(cats), n), np.int64)
  grp_counts = np.zeros((len(group_keys) + 1, n), np.int64)  # last row: terms in no group
  if rows:
    d, c, g, k = (np.array(col, np.int64) for col in zip(*rows))
    np.add.at(cat_counts, (c, d), k)
    np.add.at(grp_counts, (g, d), k)  # g = -1 lands in the last row
  return GroupCounts(n, dict(zip(cats, cat_counts)), dict(zip(group_keys, grp_counts[:-1])))


# ----------------------------------------------------------------------------- solving


def share(num: np.ndarray, den: np.ndarray, weights: np.ndarray) -> float:
  """``sum(w num) / sum(w den)``; nan when the denominator is 0."""
  d = float(np.dot(weights, den))
  return float(np.dot(weights, num)) / d if d > 0 else math.nan


def reachable_range(num: np.ndarray, den: np.ndarray, max_weight: float,
                    base: np.ndarray | None = None) -> tuple[float, float]:
  """(lowest, highest) share reachable with every weight in [1/max_weight, max_weight]
  times ``base`` (default 1), by the module's scheme: downweighting, or upweighting, the
  documents whose own ratio is highest. nan, nan when no document has a denominator."""
  base = np.ones(len(num)) if base is None else np.asarray(base, np.float64)
  keep = den > 0
  a, b = num[keep] * base[keep], den[keep] * base[keep]
  if not len(b):
    return math.nan, math.nan
  order = np.argsort(-(a / b), kind='stable')
  # Prefixes by falling ratio: the optimum scales a prefix (a threshold on the ratio).
  ca = np.concatenate([[0.0], np.cumsum(a[order])])
  cb = np.concatenate([[0.0], np.cumsum(b[order])])
  up = (a.sum() + (max_weight - 1) * ca) / (b.sum() + (max_weight - 1) * cb)
  down = (a.sum() + (1 / max_weight - 1) * ca) / (b.sum() + (1 / max_weight - 1) * cb)
  return float(down.min()), float(up.max())


def _fmt(x: float) -> str:
  return f'{x:.4f}' if x >= 0.01 or x == 0 else f'{x:.3g}'


def _check_max_weight(max_weight: float) -> None:
  if not (math.isfinite(max_weight) and max_weight >= 1):
    raise DataError(f'{MAX_WEIGHT_FLAG} must be a number >= 1 (the most a document may be up- or '
                    f'downsampled), got {max_weight}')


def _unreachable(target: Target, num: np.ndarray, den: np.ndarray, max_weight: float,
                 base: np.ndarray, what: str) -> DataError | None:
  """The one-line error for a target these documents cannot reach alone, or None."""
  head = f'{SPEC_FLAG} target {target} is unreachable'
  if not (num > 0).any():
    of = f'{target.name} term' if target.group is not None else f'{target.category} term'
    return DataError(f'{head}: none of the {len(num):,} {what} mentions a {of}; '
                     'remove the target or add data that does')
  lo, hi = reachable_range(num, den, max_weight, base)
  if lo - TOLERANCE <= target.share <= hi + TOLERANCE:
    return None
  now = share(num, den, base)
  return DataError(f'{head}: with {MAX_WEIGHT_FLAG}={max_weight:g} the {target.name} share of '
                   f'{target.measure} can range from {_fmt(lo)} to {_fmt(hi)} (now {_fmt(now)}); '
                   f'set a target in that range or raise {MAX_WEIGHT_FLAG}')


def _coordinate(other: np.ndarray, inside: np.ndarray, excess: np.ndarray, max_weight: float) -> float:
  """The factor f that zeroes ``sum_c clip(other_c f^[c inside]) excess_c``, exactly.

  ``excess_c`` is A_c - p B_c, positive on the cells inside the target's set, so the sum
  rises with f; each clipped weight is linear in f between its two clipping points, so
  the sum is linear between consecutive points and the root is an interpolation.
  """
  def total(f: float) -> float:
    return float(np.dot(np.clip(other * np.where(inside, f, 1.0), 1 / max_weight, max_weight), excess))

  knots = np.unique(np.concatenate([1 / (max_weight * other[inside]), max_weight / other[inside]]))
  vals = np.array([total(k) for k in knots])
  if vals[0] >= 0:
    return float(knots[0])
  if vals[-1] <= 0:
    return float(knots[-1])  # out of reach: the closest factor
  i = int(np.argmax(vals >= 0))
  return float(knots[i - 1] + (knots[i] - knots[i - 1]) * -vals[i - 1] / (vals[i] - vals[i - 1]))


def _solve(nums: np.ndarray, dens: np.ndarray, shares: np.ndarray, base: np.ndarray,
           max_weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Factors for targets ``shares`` [K] given numerators / denominators [K, n].

  An item's multiplier is the product of the factors of the targets whose set holds it,
  clipped to [1/max_weight, max_weight] (clipping the product, not each factor, lets a
  second target use its full range on the items outside the first one's set).
  Returns (multiplier per item [n], factor per target [K], set membership [K, n]).
  """
  k, n = nums.shape
  focus = nums > shares[:, None] * dens  # [K, n]: the items that raise target t's share
  pattern = (focus.astype(np.int64) << np.arange(k, dtype=np.int64)[:, None]).sum(0)
  cells, cell_of = np.unique(pattern, return_inverse=True)
  bits = ((cells[None, :] >> np.arange(k)[:, None]) & 1).astype(bool)  # [K, C]
  a = np.stack([np.bincount(cell_of, nums[t] * base, len(cells)) for t in range(k)])  # [K, C]
  b = np.stack([np.bincount(cell_of, dens[t] * base, len(cells)) for t in range(k)])
  factor = np.ones(k)

  def product(skip: int = -1) -> np.ndarray:
    return np.prod([np.where(bits[s], factor[s], 1.0) for s in range(k) if s != skip] or [np.ones(len(cells))], 0)

  for _ in range(_SWEEPS):
    for t in range(k):
      if bits[t].any():
        factor[t] = _coordinate(product(t), bits[t], a[t] - shares[t] * b[t], max_weight)
    v = np.clip(product(), 1 / max_weight, max_weight)
    if np.abs((v * a).sum(1) / np.maximum((v * b).sum(1), 1e-300) - shares).max() <= TOLERANCE:
      break
  return np.clip(product(), 1 / max_weight, max_weight)[cell_of], factor, focus


def _solve_targets(targets: Sequence[Target], nums: np.ndarray, dens: np.ndarray, base: np.ndarray,
                   max_weight: float, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``_solve`` after checking each target alone, then that the targets hold together."""
  _check_max_weight(max_weight)
  for t, target in enumerate(targets):
    err = _unreachable(target, nums[t], dens[t], max_weight, base, what)
    if err is not None:
      raise err
  shares = np.array([t.share for t in targets])
  mult, factor, focus = _solve(nums, dens, shares, base, max_weight)
  got = [share(nums[t], dens[t], base * mult) for t in range(len(targets))]
  if max(abs(g - p) for g, p in zip(got, shares)) > 1e-6:
    closest = ', '.join(f'{t.name}={_fmt(g)}' for t, g in zip(targets, got))
    raise DataError(f"{SPEC_FLAG} targets {', '.join(map(str, targets))} are each reachable but not "
                    f'together with {MAX_WEIGHT_FLAG}={max_weight:g}: the closest weights give {closest}; '
                    f'loosen a target or raise {MAX_WEIGHT_FLAG}')
  return mult, factor, focus


def solve_weights(counts: GroupCounts, targets: Sequence[Target],
                  max_weight: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
  """Per-document sampling weights (float64 [num_docs], each in [1/max_weight, max_weight])
  whose expected shares equal ``targets``, and the factor of each target.

  Raises DataError (one line) when a target, or the targets together, cannot be reached.
  """
  if not targets:
    return np.ones(counts.num_docs), np.ones(0)
  nums, dens = (np.stack(x) for x in zip(*(counts.arrays(t) for t in targets)))
  weights, factor, _ = _solve_targets(targets, nums, dens, np.ones(counts.num_docs), max_weight,
                                      'training documents')
  return weights, factor


def resample(weights: np.ndarray, seed: int) -> np.ndarray:
  """Document indices (int64) that realise ``weights``: ``floor(w)`` copies of each, plus
  one more with probability ``w - floor(w)``, copy-major (every first copy in corpus
  order, then every second copy, ...).

  The extra copies are drawn by systematic sampling rather than one coin per document:
  documents are ordered by weight, ties by a hash of (seed, index), and one offset drawn
  from a hash of the seed walks the running sum of the fractions. Each document still
  gets its extra copy with probability exactly its fraction, but the documents of one
  weight get ``n * fraction`` extra copies between them up to one, so the realised shares
  track the expected ones far closer than independent coins would (whose count is off by
  about sqrt(n)). A pure function of (weights, seed): the same stream in every run and
  after every resume.
  """
  w = np.asarray(weights, np.float64)
  if not np.isfinite(w).all() or (w < 0).any():
    raise DataError('resample: weights must be finite and >= 0')
  whole = np.floor(w)
  frac = w - whole
  order = np.lexsort((hash_key(seed, _RESAMPLE_TAG, np.arange(len(w))), w))
  offset = float(hash_key(seed, _RESAMPLE_TAG) >> np.uint64(11)) / 2.0**53
  ends = np.cumsum(frac[order]) + offset
  extra = np.empty(len(w), np.int64)
  extra[order] = np.floor(ends) - np.floor(ends - frac[order])  # 1 where a whole number is crossed
  copies = whole.astype(np.int64) + extra
  return np.concatenate([np.zeros(0, np.int64)]
                        + [np.flatnonzero(copies > c) for c in range(int(copies.max(initial=0)))])


# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class TargetReport:
  """One target's shares: before (weights 1), wanted, expected under the weights, and
  realised by the resampled multiset (None for mixture weights, which are not resampled)."""
  target: Target
  before: float
  expected: float
  realised: float | None
  focus: int  # documents (sources) whose own ratio exceeds the target: the ones scaled
  factor: float  # their weight multiplier (> 1 up, < 1 down; a product over targets is clipped to max_weight)


@dataclasses.dataclass(frozen=True)
class ReweightReport:
  """What reweighting did: per target the shares, and how the documents were resampled."""
  targets: tuple[TargetReport, ...]
  max_weight: float
  seed: int | None  # None for mixture weights
  items: int  # documents (or sources)
  upweighted: int
  downweighted: int
  copies: int | None = None  # documents in the resampled stream
  dropped: int | None = None  # documents with no copy (downweighted ones lost to rounding)
  what: str = 'documents'

  def lines(self) -> list[str]:
    """The report as lines for a run's log."""
    if not self.targets:
      return [f'reweight: no targets ({SPEC_FLAG} is empty), {self.items:,} {self.what} as they are']
    spec = ','.join(str(t.target) for t in self.targets)
    head = f'reweight {spec} ({MAX_WEIGHT_FLAG}={self.max_weight:g}'
    head += f', seed {self.seed})' if self.seed is not None else ')'
    head += (f': {self.items:,} {self.what}, {self.upweighted:,} upweighted, {self.downweighted:,} '
             f'downweighted, {self.items - self.upweighted - self.downweighted:,} unchanged')
    if self.copies is not None:
      head += (f'; resampled to {self.copies:,} documents ({self.copies / max(self.items, 1) - 1:+.1%}, '
               f'{self.dropped:,} dropped)')
    out = [head]
    width = max(len(t.target.name) for t in self.targets)
    for t in self.targets:
      row = (f'  {t.target.name:<{width}}  share of {t.target.measure}: before {_fmt(t.before)}  '
             f'target {_fmt(t.target.share)}  expected {_fmt(t.expected)}')
      if t.realised is not None:
        row += f'  realised {_fmt(t.realised)}'
      row += f'  ({t.focus:,} {self.what} x{t.factor:.4g})'
      out.append(row)
    return out


def _report(targets: Sequence[Target], nums: np.ndarray, dens: np.ndarray, base: np.ndarray,
            mult: np.ndarray, factor: np.ndarray, focus: np.ndarray, max_weight: float,
            seed: int | None, copies: np.ndarray | None, what: str) -> ReweightReport:
  rows = tuple(TargetReport(t, share(nums[i], dens[i], base), share(nums[i], dens[i], base * mult),
                            None if copies is None else share(nums[i], dens[i], copies.astype(np.float64)),
                            int(focus[i].sum()), float(factor[i]))
               for i, t in enumerate(targets))
  return ReweightReport(rows, max_weight, seed, len(mult), int((mult > 1 + 1e-12).sum()),
                        int((mult < 1 - 1e-12).sum()),
                        None if copies is None else int(copies.sum()),
                        None if copies is None else int((copies == 0).sum()), what)


def reweight(counts: GroupCounts, targets: Sequence[Target], max_weight: float = 10.0,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, ReweightReport]:
  """Weights, the resampled indices (``resample``) and the report, from counts and targets."""
  weights, factor = solve_weights(counts, targets, max_weight)
  idx = resample(weights, seed)
  if not targets:
    return weights, idx, ReweightReport((), max_weight, seed, counts.num_docs, 0, 0, len(idx), 0)
  nums, dens = (np.stack(x) for x in zip(*(counts.arrays(t) for t in targets)))
  focus = nums > np.array([t.share for t in targets])[:, None] * dens
  copies = np.bincount(idx, minlength=counts.num_docs)
  return weights, idx, _report(targets, nums, dens, np.ones(counts.num_docs), weights, factor, focus,
                               max_weight, seed, copies, 'documents')


def reweight_documents(docs: Sequence[str], spec: str, max_weight: float = 10.0, seed: int = 0,
                       lists_dir: str | None = None) -> tuple[np.ndarray, ReweightReport]:
  """The training stream's document indices for ``spec`` (``data.reweight``), and the report.

  One call for a reader of documents: parse, count, solve, resample. ``docs[i] for i in
  indices`` is the reweighted stream (a document appears once per copy).
  """
  targets = parse_targets(spec, lists_dir)
  counts = document_groups(docs, sorted({t.category for t in targets}), lists_dir)
  _, idx, report = reweight(counts, targets, max_weight, seed)
  return idx, report


def mixture_weights(sources: Sequence[GroupCounts], tokens: Sequence[int], spec: str | Sequence[Target],
                    weights: Sequence[float] | None = None, max_weight: float = 10.0,
                    lists_dir: str | None = None) -> tuple[np.ndarray, ReweightReport]:
  """Mixture weights over sources (normalised to sum 1) that reach ``spec`` in the mixed stream.

  The stream draws rows, i.e. tokens, from source s with probability m_s, so a document
  of s is seen at a rate m_s / tokens_s: the stream's share is the documents' share with
  ``w_d = m_s / tokens_s``. Each source is then one item with numerator and denominator
  its totals per token, and the same solver scales ``weights`` (default equal) by at most
  ``max_weight`` either way. No resampling: the mixture is drawn by the stream's hash.
  """
  targets = parse_targets(spec, lists_dir) if isinstance(spec, str) else tuple(spec)
  if len(sources) != len(tokens):
    raise DataError(f'mixture_weights: {len(sources)} sources but {len(tokens)} token counts')
  if any(t <= 0 for t in tokens):
    raise DataError(f'mixture_weights: every source needs tokens, got {list(tokens)}')
  base = np.ones(len(sources)) if weights is None else np.asarray(weights, np.float64)
  base = base / base.sum()
  if not targets:
    return base, ReweightReport((), max_weight, None, len(sources), 0, 0, what='sources')
  per_token = np.asarray(tokens, np.float64)
  nums = np.array([[c.arrays(t)[0].sum() for c in sources] for t in targets]) / per_token
  dens = np.array([[c.arrays(t)[1].sum() for c in sources] for t in targets]) / per_token
  mult, factor, focus = _solve_targets(targets, nums, dens, base, max_weight, 'sources')
  report = _report(targets, nums, dens, base, mult, factor, focus, max_weight, None, None, 'sources')
  mixed = base * mult
  return mixed / mixed.sum(), report
