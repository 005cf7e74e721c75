"""Counterfactual data augmentation: swap identity terms (he <-> she, John <-> Mary) in training text.

Zhao et al., 2018 ("Gender Bias in Coreference Resolution: Evaluation and Debiasing
Methods") and Lu et al., 2018 ("Gender Bias in Neural Natural Language Processing") add,
for every training document, a copy whose gendered words are swapped, so that no context
predicts one gender more than the other; Webster et al., 2020 ("Measuring and Reducing
Gendered Correlations in Pre-trained Models") do the same while pre-training, and Maudslay
et al., 2019 ("It's All in the Name") substitute the swapped copy for the original
instead of adding it, and swap given names too.

* Lists (``data/counterfactual/<category>.txt``, README.md there): one pair a line, two
  words; each is swapped for the other. A category is a file, so a new category is a new
  file and ``data.counterfactual='gender,my/lists/occupations.txt'`` names categories or paths.
* ``Swapper``: every term of its lists in one regular-expression pass (so a word swapped
  is never swapped back), whole words only, the case carried over (he -> she, He -> She,
  HE -> SHE), possessives kept (John's -> Mary's). Lowercase terms match in any case,
  capitalised ones (names) only when capitalised. "her" (-> "him" or "his") and "his"
  (-> "her" or "hers") are chosen by the word that follows (``_resolve``).
* ``augment``: 'add' keeps every document and appends the counterfactual copy of the ones
  with a swap (of a fraction ``rate`` of them); 'substitute' replaces a fraction ``rate``
  by their counterfactual. Whether document i is chosen is a hash of (seed, i), not a
  stateful generator, so the same config gives the same corpus every time and a resumed
  run trains on the corpus it started with.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import os
import re
from collections.abc import Sequence

import numpy as np

from llm.data.documents import DataError
from llm.data.objectives import hash_key

LISTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         'data', 'counterfactual')
MODES = ('add', 'substitute')

# The words whose counterpart depends on grammar, and the counterparts they may have. A
# list may pair such a word with each of these (and only these) on separate lines; the
# first counterpart is the one taken where the word stands alone (object "her" -> "him",
# standalone "his" -> "hers"), the second where it is a possessive determiner (her book
# -> his book, his book -> her book).
AMBIGUOUS: dict[str, tuple[str, str]] = {'her': ('him', 'his'), 'his': ('hers', 'her')}

_PREPOSITIONS = frozenset(
    'about above across after against along among around at before behind below beneath beside besides between '
    'beyond by down during except for from in inside into like near of off on onto out outside over since '
    'through throughout till to toward towards under until up upon with within without'.split())
_CONJUNCTIONS = frozenset(
    'and or but nor so yet because if unless whether while when whenever where wherever as than that though '
    'although once whereas'.split())
_ADVERBS = frozenset('again already also always anyway away even ever here there now then today tonight tomorrow '
                     'yesterday too well never often just still soon later alone enough instead not'.split())
# After an object "her": the start of a second object or a clause (gave her a book, told
# her that, asked her what), or a bare verb (let her go, made her cry). Verbs that are
# also common nouns after a possessive (her work, her smile, her will) are not listed.
_AFTER_OBJECT = _PREPOSITIONS | _CONJUNCTIONS | _ADVERBS | frozenset(
    'a an the this these those some any no every each all both another such what which who whom whose why how '
    'my your his its our their me him us them i you he she it we they myself yourself '
    'be become believe come cry die do eat feel forget get give go have hear know laugh leave let marry meet '
    'remember see sit sleep speak stay take tell think try understand wait want'.split())
# After a standalone "his": a verb or what follows a finished noun phrase (the book is
# his, his was the first, a friend of his from school, his and hers). 'will' and 'might'
# are left out, being nouns after a determiner (his will, his might); so is 'past', above.
_AFTER_STANDALONE = _PREPOSITIONS | _CONJUNCTIONS | _ADVERBS | frozenset(
    'is was are were would could should can may must has had have be been does did do'.split())
_NEXT_WORD = re.compile(r'\s*(\w+(?:-\w+)*)?')  # a hyphenated word is one: her well-being

_TERM = re.compile(r"\w+(?:['’-]\w+)*")


@dataclasses.dataclass(frozen=True)
class WordList:
  """One category's pairs as read from its file: ((term_a, term_b, line), ...)."""

  category: str
  path: str
  pairs: tuple[tuple[str, str, int], ...]


def parse_list(text: str, path: str, category: str | None = None) -> WordList:
  """The pairs of a list file's ``text``; ``category`` defaults to the file's name without '.txt'.

  One pair a line, two terms separated by whitespace; '#' starts a comment. Raises
  DataError naming ``path`` and the line for: a line of one term or more than two, a term
  that is not one word, a term paired with itself, a pair of one lowercase and one
  capitalised term, and a term on two lines (naming both), except the pronouns of
  ``AMBIGUOUS`` with exactly their two counterparts.
  """
  if category is None:
    category = os.path.splitext(os.path.basename(path))[0]
  pairs: list[tuple[str, str, int]] = []
  seen: dict[str, list[tuple[int, str]]] = {}  # lowercased term -> (line, counterpart) of each pair it is in
  for n, raw in enumerate(text.splitlines(), start=1):
    terms = raw.split('#', 1)[0].split()
    if not terms:
      continue
    where = f'{path}:{n}'
    if len(terms) != 2:
      raise DataError(f'{where}: expected two terms (a pair such as "he she"), got {len(terms)}: {raw.strip()!r}')
    a, b = terms
    for t in (a, b):
      if not _TERM.fullmatch(t):
        raise DataError(f'{where}: {t!r} is not one word (letters, digits, and inner hyphens or apostrophes)')
    if a.lower() == b.lower():
      raise DataError(f'{where}: {a!r} is paired with itself; a pair maps a word to a different one')
    if a.islower() != b.islower():
      raise DataError(f'{where}: {a!r} and {b!r}: write both terms lowercase (any case matches) or both '
                      'capitalised (only capitalised words match)')
    for t, other in ((a, b), (b, a)):
      key = t.lower()
      seen.setdefault(key, []).append((n, other.lower()))
      entries = seen[key]
      if len(entries) > 1 and not (key in AMBIGUOUS and len(entries) == 2
                                   and {o for _, o in entries} == set(AMBIGUOUS[key])):
        raise DataError(f'{where}: {t!r} is already on line {entries[0][0]} of {path}; a term may be in one '
                        f'pair only (the pronouns her and his excepted, README.md)')
    pairs.append((a, b, n))
  if not pairs:
    raise DataError(f'{path}: the list has no pairs')
  return WordList(category, path, tuple(pairs))


def list_path(spec: str, root: str = '.') -> str:
  """The file of a category name ('gender' -> data/counterfactual/gender.txt) or a path (relative to ``root``)."""
  if re.fullmatch(r'\w+', spec):
    return os.path.join(LISTS_DIR, f'{spec}.txt')
  return spec if os.path.isabs(spec) else os.path.join(root, spec)


def shipped_categories() -> list[str]:
  """The categories in data/counterfactual/."""
  return sorted(f[:-4] for f in os.listdir(LISTS_DIR) if f.endswith('.txt')) if os.path.isdir(LISTS_DIR) else []


def load_list(spec: str, root: str = '.') -> WordList:
  """A category by name or a list file by path. Raises DataError if there is none or it is malformed."""
  path = list_path(spec, root)
  if not os.path.isfile(path):
    shipped = ', '.join(shipped_categories())
    raise DataError(f'no counterfactual list {spec!r} (looked for {path}); name a category of '
                    f'data/counterfactual/ ({shipped}) or the path of a list file')
  with open(path, encoding='utf-8') as f:
    return parse_list(f.read(), path)


def split_specs(specs: str | Sequence[str]) -> list[str]:
  """'gender, gender_names' -> ['gender', 'gender_names']."""
  if isinstance(specs, str):
    specs = specs.split(',')
  return [s.strip() for s in specs if s.strip()]


def _cased(source: str, target: str, proper: bool) -> str:
  """``target`` in the case of ``source``: HE -> SHE, He -> She, he -> she; names as listed."""
  if len(source) > 1 and source.isupper():
    return target.upper()
  if proper:
    return target
  if source[:1].isupper():
    return target[:1].upper() + target[1:]
  return target


@dataclasses.dataclass(frozen=True)
class _Entry:
  category: str
  targets: tuple[str, ...]  # one counterpart, or AMBIGUOUS's two
  proper: bool  # capitalised in the list: matches capitalised words only


class Swapper:
  """Swaps the terms of one or more ``WordList``s in a text, in one pass.

  ``swap(text) -> (text, {category: swaps})``; ``swap_parts(parts)`` swaps pieces of one
  text (a prompt and its completion) as one text, so the her/his rule sees across them.
  """

  def __init__(self, lists: Sequence[WordList]):
    if not lists:
      raise DataError('a counterfactual swapper needs at least one list')
    self.lists = tuple(lists)
    self.categories = tuple(wl.category for wl in lists)
    if len(set(self.categories)) != len(self.categories):
      raise DataError(f'counterfactual lists {list(self.categories)}: a category is named twice')
    targets: dict[str, list[str]] = {}
    where: dict[str, tuple[WordList, int]] = {}
    entries: dict[str, _Entry] = {}
    for wl in lists:
      for a, b, line in wl.pairs:
        for t, other in ((a, b), (b, a)):
          key = t.lower()
          if key in where and where[key][0] is not wl:  # the files were checked alone; now across them
            first, first_line = where[key]
            raise DataError(f'{wl.path}:{line}: {t!r} is also in {first.path}:{first_line}; a term may be in one '
                            'category only')
          where.setdefault(key, (wl, line))
          targets.setdefault(key, []).append(other)
          entries[key] = _Entry(wl.category, (), not t.islower())
    for key, ts in targets.items():
      e = entries[key]
      # Ambiguous words keep AMBIGUOUS's order (standalone form first), in the list's spelling.
      order = {t.lower(): t for t in ts}
      if len(ts) > 1 and set(order) != set(AMBIGUOUS.get(key, ())):
        raise DataError(f'{where[key][0].path}: {key!r} has the counterparts {sorted(order)}; only her and his '
                        'may have two (README.md)')
      entries[key] = dataclasses.replace(
          e, targets=tuple(order[o] for o in AMBIGUOUS[key]) if len(ts) > 1 else (ts[0],))
    self._entries = entries
    alternatives = sorted(entries, key=lambda k: (-len(k), k))
    # (?<!\w)...(?!\w): whole words ("he" is not swapped inside "the", nor "man" in "manage").
    self.pattern = re.compile(r'(?<!\w)(' + '|'.join(map(re.escape, alternatives)) + r")(?!\w)(['’](?!\w))?",
                              re.IGNORECASE)

  @classmethod
  def from_categories(cls, specs: str | Sequence[str], root: str = '.') -> Swapper:
    """A swapper of shipped categories and/or list files: ``Swapper.from_categories(['gender', 'gender_names'])``."""
    names = split_specs(specs)
    if not names:
      raise DataError('no counterfactual list named; use e.g. gender,gender_names')
    return cls([load_list(s, root) for s in names])

  def counterpart(self, word: str) -> tuple[str, ...]:
    """The word's counterparts as listed (one, or two for her/his), () if it is not a term."""
    e = self._entries.get(word.lower())
    return e.targets if e else ()

  def _replace(self, m: re.Match, counts: dict[str, int], terms: collections.Counter | None) -> str:
    word, apostrophe = m.group(1), m.group(2) or ''
    e = self._entries.get(word.lower())
    if e is None or (e.proper and not word[:1].isupper()):
      # "mary" in lowercase is not the name (capitalised entries only); None: a Unicode case
      # match whose lowercase is not the listed term's.
      return m.group(0)
    target = e.targets[0] if len(e.targets) == 1 else _resolve(word.lower(), e.targets, m.string, m.end())
    out = _cased(word, target, e.proper)
    if apostrophe and word[-1:].lower() == 's' and not out[-1:].lower() == 's':
      apostrophe += 's'  # James' -> Mary's (the bare apostrophe only follows an s)
    counts[e.category] = counts.get(e.category, 0) + 1
    if terms is not None:
      terms[f'{e.category}:{word.lower()}'] += 1
    return out + apostrophe

  def swap(self, text: str, terms: collections.Counter | None = None) -> tuple[str, dict[str, int]]:
    """``text`` with every term swapped, and the swaps made per category ({} when none).

    ``terms``, when given, counts the swapped terms as 'category:term' (lowercase).
    """
    counts: dict[str, int] = {}
    return self.pattern.sub(lambda m: self._replace(m, counts, terms), text), counts

  def swap_parts(self, parts: Sequence[str], terms: collections.Counter | None = None
                 ) -> tuple[list[str], dict[str, int]]:
    """Pieces of one text (a prompt, its completion) swapped as their concatenation: one
    mapping for all of them, and the her/his rule reads the word after a piece's end in the
    next piece. A term across a boundary goes, swapped, to the piece it starts in."""
    text = ''.join(parts)
    bounds = list(itertools.accumulate((len(p) for p in parts), initial=0))
    counts: dict[str, int] = {}
    out = [''] * len(parts)
    pos = 0
    for m in self.pattern.finditer(text):
      _place(out, bounds, text, pos, m.start())
      out[bisect.bisect_right(bounds, m.start()) - 1] += self._replace(m, counts, terms)
      pos = m.end()
    _place(out, bounds, text, pos, len(text))
    return out, counts


def _place(out: list[str], bounds: list[int], text: str, start: int, end: int) -> None:
  """Text [start, end) of the concatenation, unchanged, appended to the pieces it belongs to."""
  for i in range(len(out)):
    lo, hi = max(start, bounds[i]), min(end, bounds[i + 1])
    if lo < hi:
      out[i] += text[lo:hi]


def _resolve(word: str, targets: tuple[str, ...], text: str, end: int) -> str:
  """The counterpart of "her" or "his" at ``text[:end]``, by the word that follows it.

  her -> him (object) when followed by punctuation, the end of the text, or a word that
  starts a new phrase (a preposition, conjunction, adverb, determiner, pronoun, or one of a
  few bare verbs: "let her go"); otherwise -> his (possessive determiner: "her book").
  his -> hers (standalone) when followed by punctuation, the end, or a preposition,
  conjunction, adverb or auxiliary ("the book is his.", "his was"); otherwise -> her.
  A heuristic: "saw her run" becomes "saw his run" (README.md).
  """
  standalone, determiner = targets
  nxt = _NEXT_WORD.match(text, end).group(1)
  follows = _AFTER_OBJECT if word == 'her' else _AFTER_STANDALONE
  if nxt is None or nxt.lower() in follows:
    return standalone
  return determiner


# ---------------------------------------------------------------------------------- augment


def check_options(mode: str, rate: float, prefix: str = 'data') -> None:
  """One-line DataErrors for a bad ``<prefix>.counterfactual_mode`` or ``counterfactual_rate``."""
  if mode not in MODES:
    raise DataError(f"{prefix}.counterfactual_mode must be 'add' or 'substitute', got {mode!r}")
  if not 0.0 < rate <= 1.0:
    raise DataError(f'{prefix}.counterfactual_rate must be in (0, 1], got {rate}')


def chosen(seed: int, indices: np.ndarray | Sequence[int], rate: float) -> np.ndarray:
  """bool per document index: is it augmented? A hash of (seed, index) below ``rate``, so the
  choice for a document never depends on the others or on the order they are processed in."""
  idx = np.asarray(indices, np.int64)
  u = (hash_key(np.int64(seed), 0x43464144, idx) >> np.uint64(11)).astype(np.float64) / 2.0**53  # salt 'CFAD'
  return u < rate


@dataclasses.dataclass
class Counters:
  """What augmentation did: documents seen and swapped, copies added or substituted, swaps.

  ``swaps`` (per category) and ``terms`` ('category:term', lowercase) count the swaps in
  the documents that were written into the corpus (the copies or the substitutes).
  """

  categories: tuple[str, ...] = ()
  mode: str = 'add'
  rate: float = 1.0
  documents: int = 0
  with_swap: int = 0  # documents with at least one term to swap
  added: int = 0
  substituted: int = 0
  swaps: dict[str, int] = dataclasses.field(default_factory=dict)
  terms: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def update(self, other: Counters) -> Counters:
    """Add ``other``'s counts to these (several sources of one run); returns self."""
    self.documents += other.documents
    self.with_swap += other.with_swap
    self.added += other.added
    self.substituted += other.substituted
    for k, v in other.swaps.items():
      self.swaps[k] = self.swaps.get(k, 0) + v
    self.terms.update(other.terms)
    return self

  def as_dict(self) -> dict[str, int]:
    """Flat numbers for a metrics log: documents, with_swap, added, substituted, swaps/<category>."""
    out = dict(documents=self.documents, with_swap=self.with_swap, added=self.added, substituted=self.substituted)
    out.update({f'swaps/{c}': self.swaps.get(c, 0) for c in self.categories})
    return out

  def lines(self, what: str = 'training documents', top: int = 10) -> list[str]:
    """A few lines for the start-up log or a data report."""
    done = (f'{self.added:,} counterfactual copies added' if self.mode == 'add'
            else f'{self.substituted:,} replaced by their counterfactual')
    out = [f'counterfactual augmentation ({",".join(self.categories)}; mode {self.mode}, rate {self.rate:g}): '
           f'{self.with_swap:,} of {self.documents:,} {what} have a term to swap; {done}']
    out.append('  swaps: ' + (', '.join(f'{c} {self.swaps.get(c, 0):,}' for c in self.categories) or 'none'))
    if self.terms:
      out.append('  most swapped: ' + ', '.join(f'{t} {n:,}' for t, n in self.terms.most_common(top)))
    return out


def augment_parts(items: Sequence[Sequence[str]], swapper: Swapper, mode: str = 'add', rate: float = 1.0,
                  seed: int = 0) -> tuple[list[tuple[int, list[str], bool]], Counters]:
  """``augment`` over items of several pieces each (``Swapper.swap_parts``: a prompt and its
  completion swapped together). Returns (index of the original item, pieces, swapped?) for
  every item of the new list, and the counters."""
  check_options(mode, rate)
  counters = Counters(swapper.categories, mode, rate, documents=len(items))
  pick = chosen(seed, np.arange(len(items)), rate)
  out: list[tuple[int, list[str], bool]] = []
  copies: list[tuple[int, list[str], bool]] = []
  for i, parts in enumerate(items):
    terms: collections.Counter = collections.Counter()
    new, counts = swapper.swap_parts(parts, terms)
    use = bool(counts) and bool(pick[i])
    if counts:
      counters.with_swap += 1
    if use:  # only the swaps that reach the corpus are counted
      counters.terms.update(terms)
      for k, v in counts.items():
        counters.swaps[k] = counters.swaps.get(k, 0) + v
    if mode == 'add':
      out.append((i, list(parts), False))
      if use:
        copies.append((i, new, True))
        counters.added += 1
    elif use:
      out.append((i, new, True))
      counters.substituted += 1
    else:
      out.append((i, list(parts), False))
  # Copies after all originals: the originals keep their places (and their tokens their offsets).
  return out + copies, counters


def augment(docs: Sequence[str], swapper: Swapper, mode: str = 'add', rate: float = 1.0, seed: int = 0
            ) -> tuple[list[str], Counters]:
  """Counterfactual augmentation of ``docs``.

  'add': every document, then the counterfactual copy of each one that has a term to swap
  and is chosen (a fraction ``rate``), in the order of the originals. 'substitute': the
  chosen documents with a term to swap replaced by their counterfactual. Document i is
  chosen when a hash of (seed, i) falls below ``rate`` (``chosen``).
  """
  got, counters = augment_parts([[d] for d in docs], swapper, mode, rate, seed)
  return [parts[0] for _, parts, _ in got], counters
