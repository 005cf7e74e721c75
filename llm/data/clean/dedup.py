"""Deduplication: exact (normalised hash), MinHash LSH near-duplicates, C4-style repeated lines.

Every global decision is split into a per-document *map* step (a key or a list of keys
computed from one document alone) and an order-independent *reduction* over the keys of
all documents, so the in-process runner and the Beam pipeline reach identical results:

==================  ==========================  ============================================
rule                map (one document)          reduce (all documents)
==================  ==========================  ============================================
exact duplicates    ``exact_key(text)``         group by key, keep the smallest id
near duplicates     ``MinHasher.band_keys``     group by band key -> ``edges_from_bucket``
                                                -> ``clusters`` (connected components),
                                                keep the smallest id of each cluster
repeated lines      ``line_keys(text)``         group by line key -> smallest id owns it;
                                                ``remove_repeated_lines`` in the others
==================  ==========================  ============================================

Ids sort in the canonical global order (see ``llm.data.clean.document.Doc``), and "keep the
first" always means "keep the smallest id", which is what makes each reduction
independent of the order documents arrive in.

MinHash mirrors datatrove's ``MinhashDedupSignature`` (``datatrove/pipeline/dedup/
minhash.py``) closely enough that, on the same text, the signatures are bit-identical in
the common case: same text simplification (``datatrove.utils.text.simplify_text``), a
re-implementation of the spaCy English word tokenizer on simplified text, xxh64 of each
space-joined word n-gram, the same permutation parameters (``np.random.RandomState(seed)``
exactly as datatrove draws them) and the same ``(a * x + b) % (2**61 - 1)`` arithmetic
(including its uint64 wrap-around in ``a * x``). Measured on 9,849 real documents:
identical simplified text for all, identical tokens for all but one (a Unicode table
dump), identical signatures; signature + band keys ~14x faster than datatrove's
``get_shingles`` + ``get_signature``. Where we deliberately differ:

* Which member of a duplicate cluster is kept: datatrove keeps the root of a union-by-size
  forest built in its (bucket, hash) read order; we keep the smallest id. The clusters are
  the same and so is the choice for clusters of two (datatrove's root is then the earlier
  document too); in clusters of three or more the kept member can differ. Where exact
  agreement with datatrove matters, ``datatrove_near_duplicates`` (with
  ``band_keys(sig, sortable=True)``) replays datatrove's choice, still order-independently.
* datatrove compares the 8 raw hashes of a band; by default we compare an 18-byte key (band
  index + xxh3_128 of the band's 64 bytes). A false collision has probability ~2**-128.
* xxhash >= 4 refuses ``str``; datatrove passes its n-grams as ``str`` (xxhash 3 hashed
  their UTF-8), so we hash the UTF-8 bytes, i.e. what datatrove computes with xxhash 3.
* The tokenizer re-implementation is exact for text whose simplified form is made of
  letters, digits and spaces (nearly all text); for rare symbols it approximates spaCy's
  affix rules (see ``_split_word``).
* Documents with fewer than ``ngram`` words get no signature and are never near
  duplicates, exactly as in datatrove (its n-gram zip yields nothing for them); they are
  still caught by exact dedup.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import unicodedata
from array import array
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xxhash

# ---------------------------------------------------------------------------------------
# Exact duplicates
# ---------------------------------------------------------------------------------------


def normalize_for_exact(text: str) -> str:
  """The text exact dedup compares: NFC, every whitespace run collapsed to one space, stripped.

  Case is kept on purpose: documents differing only in case are usually different pages
  (titles, code, acronyms), while whitespace differences come from extraction/formatting
  and carry no content. NFC folds the two byte encodings of e.g. "é" into one.
  """
  if not text.isascii() and not unicodedata.is_normalized('NFC', text):
    text = unicodedata.normalize('NFC', text)
  return ' '.join(text.split())


def exact_key(text: str) -> bytes:
  """16-byte xxh3_128 of ``normalize_for_exact(text)``; equal keys mean exact duplicates.

  128 bits so that accidental collisions are negligible even across billions of documents
  (a 64-bit key would collide with probability ~5% at 1.4e9 documents).
  """
  return xxhash.xxh3_128_digest(normalize_for_exact(text).encode('utf-8'))


def exact_duplicates(items: Iterable[tuple[str, bytes]]) -> set[str]:
  """In-memory reduction for exact dedup: ids to drop (all but the smallest id per key)."""
  first: dict[bytes, str] = {}
  drop: set[str] = set()
  for doc_id, key in items:
    kept = first.get(key)
    if kept is None:
      first[key] = doc_id
    elif doc_id < kept:
      first[key] = doc_id
      drop.add(kept)
    elif doc_id != kept:
      drop.add(doc_id)
  return drop


# ---------------------------------------------------------------------------------------
# Text simplification and word tokenization (mirrors datatrove + spaCy "en")
# ---------------------------------------------------------------------------------------

# datatrove.utils.text.PUNCTUATION, verbatim: every char of it becomes a space. (Only this
# string is translated by datatrove, not its larger TERMINAL_PUNCTUATION set.)
_DT_PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + ''.join(map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))))
# Numbers (any script's digits, one optional decimal part) -> '0', as datatrove's
# NUMBERS_PATTERN (which uses the `regex` module's \p{Nd}; `re`'s \d is the same class).
_NUMBERS = re.compile(r'\d+(?:[.,،٫⎖⎗⎘]\d+)?')
# The same on ASCII text; sre runs this spelling markedly faster.
_NUMBERS_ASCII = re.compile(r'[0-9][0-9]*(?:[.,][0-9]+)?')
# datatrove maps every punctuation char to a space with str.translate and then collapses
# whitespace runs. str.translate is fast only on ASCII strings, so non-ASCII text takes the
# ASCII part of the table through bytes.translate on its UTF-8 (ASCII bytes never occur
# inside a multi-byte sequence) and the non-ASCII punctuation through a small regex.
_ASCII_PUNCT = ''.join(c for c in _DT_PUNCTUATION if ord(c) < 128)
_STR_PUNCT_TABLE = str.maketrans(_ASCII_PUNCT, ' ' * len(_ASCII_PUNCT))
_BYTES_PUNCT_TABLE = bytes.maketrans(_ASCII_PUNCT.encode('ascii'), b' ' * len(_ASCII_PUNCT))
_NON_ASCII_PUNCT = re.compile('[' + re.escape(''.join(c for c in _DT_PUNCTUATION if ord(c) >= 128)) + ']')
_NON_ASCII_RUN = re.compile(r'[^\x00-\x7f]+')

_MARKS_TABLE: dict[int, None] | None = None  # built lazily: scanning Unicode takes ~0.2 s


def _strip_marks(m: re.Match[str]) -> str:
  """Removes nonspacing marks (category Mn) from one run of non-ASCII characters."""
  global _MARKS_TABLE
  if _MARKS_TABLE is None:
    _MARKS_TABLE = {cp: None for cp in range(128, sys.maxunicode + 1)
                    if unicodedata.category(chr(cp)) == 'Mn'}
  return m.group().translate(_MARKS_TABLE)


def simplify_text(text: str) -> str:
  """datatrove's ``simplify_text`` with its default ``TextNormConfig``: same output, faster.

  Lowercase, numbers -> '0', punctuation -> space, whitespace runs -> one space, stripped,
  then NFD with nonspacing marks removed (a no-op for ASCII text, which skips it).
  """
  text = text.lower()
  if text.isascii():
    return ' '.join(_NUMBERS_ASCII.sub('0', text).translate(_STR_PUNCT_TABLE).split())
  text = _NUMBERS.sub('0', text)
  text = text.encode('utf-8').translate(_BYTES_PUNCT_TABLE).decode('utf-8')
  text = ' '.join(_NON_ASCII_PUNCT.sub(' ', text).split())
  # Removing a mark that stood alone between spaces leaves a double space, as in datatrove;
  # spaCy makes it a whitespace token that datatrove's strip_strings drops, and our word
  # split treats it as a plain separator.
  return _NON_ASCII_RUN.sub(_strip_marks, unicodedata.normalize('NFD', text)).strip()


# spaCy English tokenizer exceptions that can occur in simplified text (lowercase letters
# only: apostrophes are gone, so "don't" arrives as "dont" and spaCy still splits it).
# Extracted from spacy 3.8 ``spacy.blank('en').tokenizer.rules``.
_SPECIAL_CASES: dict[str, tuple[str, ...]] = {
    'aint': ('ai', 'nt'), 'arent': ('are', 'nt'), 'cannot': ('can', 'not'), 'cant': ('ca', 'nt'),
    'cantve': ('ca', 'nt', 've'), 'couldnt': ('could', 'nt'), 'couldntve': ('could', 'nt', 've'),
    'couldve': ('could', 've'), 'darent': ('dare', 'nt'), 'didnt': ('did', 'nt'),
    'didntve': ('did', 'nt', 've'), 'doesnt': ('does', 'nt'), 'doesntve': ('does', 'nt', 've'),
    'dont': ('do', 'nt'), 'dontve': ('do', 'nt', 've'), 'gonna': ('gon', 'na'),
    'gotta': ('got', 'ta'), 'hadnt': ('had', 'nt'), 'hadntve': ('had', 'nt', 've'),
    'hasnt': ('has', 'nt'), 'havent': ('have', 'nt'), 'hed': ('he', 'd'),
    'hedve': ('he', 'd', 've'), 'hellve': ('he', 'll', 've'), 'hes': ('he', 's'),
    'howd': ('how', 'd'), 'howdve': ('how', 'd', 've'), 'howll': ('how', 'll'),
    'howllve': ('how', 'll', 've'), 'howre': ('how', 're'), 'hows': ('how', 's'),
    'howve': ('how', 've'), 'id': ('i', 'd'), 'idve': ('i', 'd', 've'),
    'illve': ('i', 'll', 've'), 'im': ('i', 'm'), 'ima': ('i', 'm', 'a'), 'isnt': ('is', 'nt'),
    'itd': ('it', 'd'), 'itdve': ('it', 'd', 've'), 'itll': ('it', 'll'),
    'itllve': ('it', 'll', 've'), 'ive': ('i', 've'), 'maynt': ('may', 'nt'),
    'mayntve': ('may', 'nt', 've'), 'mightnt': ('might', 'nt'),
    'mightntve': ('might', 'nt', 've'), 'mightve': ('might', 've'), 'mustnt': ('must', 'nt'),
    'mustntve': ('must', 'nt', 've'), 'mustve': ('must', 've'), 'neednt': ('need', 'nt'),
    'needntve': ('need', 'nt', 've'), 'notve': ('not', 've'), 'oughtnt': ('ought', 'nt'),
    'oughtntve': ('ought', 'nt', 've'), 'shant': ('sha', 'nt'), 'shantve': ('sha', 'nt', 've'),
    'shedve': ('she', 'd', 've'), 'shellve': ('she', 'll', 've'), 'shes': ('she', 's'),
    'shouldnt': ('should', 'nt'), 'shouldntve': ('should', 'nt', 've'),
    'shouldve': ('should', 've'), 'thatd': ('that', 'd'), 'thatdve': ('that', 'd', 've'),
    'thatll': ('that', 'll'), 'thatllve': ('that', 'll', 've'), 'thats': ('that', 's'),
    'thered': ('there', 'd'), 'theredve': ('there', 'd', 've'), 'therell': ('there', 'll'),
    'therellve': ('there', 'll', 've'), 'therere': ('there', 're'), 'theres': ('there', 's'),
    'thereve': ('there', 've'), 'thesed': ('these', 'd'), 'thesedve': ('these', 'd', 've'),
    'thesell': ('these', 'll'), 'thesellve': ('these', 'll', 've'), 'thesere': ('these', 're'),
    'theseve': ('these', 've'), 'theyd': ('they', 'd'), 'theydve': ('they', 'd', 've'),
    'theyll': ('they', 'll'), 'theyllve': ('they', 'll', 've'), 'theyre': ('they', 're'),
    'theyve': ('they', 've'), 'thisd': ('this', 'd'), 'thisdve': ('this', 'd', 've'),
    'thisll': ('this', 'll'), 'thisllve': ('this', 'll', 've'), 'thiss': ('this', 's'),
    'thosed': ('those', 'd'), 'thosedve': ('those', 'd', 've'), 'thosell': ('those', 'll'),
    'thosellve': ('those', 'll', 've'), 'thosere': ('those', 're'), 'thoseve': ('those', 've'),
    'wasnt': ('was', 'nt'), 'wed': ('we', 'd'), 'wedve': ('we', 'd', 've'),
    'wellve': ('we', 'll', 've'), 'werent': ('were', 'nt'), 'weve': ('we', 've'),
    'whatd': ('what', 'd'), 'whatdve': ('what', 'd', 've'), 'whatll': ('what', 'll'),
    'whatllve': ('what', 'll', 've'), 'whatre': ('what', 're'), 'whats': ('what', 's'),
    'whatve': ('what', 've'), 'whend': ('when', 'd'), 'whendve': ('when', 'd', 've'),
    'whenll': ('when', 'll'), 'whenllve': ('when', 'll', 've'), 'whenre': ('when', 're'),
    'whens': ('when', 's'), 'whenve': ('when', 've'), 'whered': ('where', 'd'),
    'wheredve': ('where', 'd', 've'), 'wherell': ('where', 'll'),
    'wherellve': ('where', 'll', 've'), 'wherere': ('where', 're'), 'wheres': ('where', 's'),
    'whereve': ('where', 've'), 'whod': ('who', 'd'), 'whodve': ('who', 'd', 've'),
    'wholl': ('who', 'll'), 'whollve': ('who', 'll', 've'), 'whos': ('who', 's'),
    'whove': ('who', 've'), 'whyd': ('why', 'd'), 'whydve': ('why', 'd', 've'),
    'whyll': ('why', 'll'), 'whyllve': ('why', 'll', 've'), 'whyre': ('why', 're'),
    'whys': ('why', 's'), 'whyve': ('why', 've'), 'wont': ('wo', 'nt'),
    'wontve': ('wo', 'nt', 've'), 'wouldnt': ('would', 'nt'), 'wouldntve': ('would', 'nt', 've'),
    'wouldve': ('would', 've'), 'yall': ('y', 'all'), 'youd': ('you', 'd'),
    'youdve': ('you', 'd', 've'), 'youll': ('you', 'll'), 'youllve': ('you', 'll', 've'),
    'youre': ('you', 're'), 'youve': ('you', 've'),
}
# spaCy's suffix rule ``(?<=[0-9])(?:UNITS)$`` restricted to the lowercase units that survive
# simplification ("km/h", "%" lose their punctuation; upper-case units are lowercased away).
# 'тбكم' is spaCy's own concatenation slip in its UNITS string, kept for fidelity.
_UNITS = frozenset((
    'km', 'km²', 'km³', 'm', 'm²', 'm³', 'dm', 'dm²', 'dm³', 'cm', 'cm²', 'cm³', 'mm', 'mm²',
    'mm³', 'ha', 'µm', 'nm', 'yd', 'in', 'ft', 'kg', 'g', 'mg', 'µg', 't', 'lb', 'oz', 'kmh',
    'mph', 'mbar', 'mb', 'kb', 'gb', 'tb', 'км', 'км²', 'км³', 'м', 'м²', 'м³', 'дм', 'дм²',
    'дм³', 'см', 'см²', 'см³', 'мм', 'мм²', 'мм³', 'нм', 'кг', 'г', 'мг', 'мбар', 'кб', 'мб',
    'гб', 'тбكم', 'كم²', 'كم³', 'م', 'م²', 'م³', 'سم', 'سم²', 'سم³', 'مم', 'مم²', 'مم³', 'كم',
    'غرام', 'جرام', 'جم', 'كغ', 'ملغ', 'كوب', 'اكواب'))
# A digit followed by a unit at the end of a word: the only spaCy suffix rule that can fire
# on a word of letters and digits (digits are all '0' after simplification).
_UNIT_SPLIT = re.compile(r'^(.*\d)(' + '|'.join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
                         + r')$')
# spaCy prefix/suffix punctuation that simplify_text leaves in place (the rest of spaCy's
# LIST_PUNCT / LIST_QUOTES is in datatrove's PUNCTUATION and already became spaces).
# (ASCII ones too: NFD can create them, e.g. '≯' -> '>' + U+0338.)
_AFFIX_PUNCT = frozenset('¿؟¡·।،۔؛٪‘‚『』〔〕〈〉〈〉⟦⟧,:;!?()[]{}<>_#*&\'"`')
_PREFIX_ONLY = frozenset('§%=')
# Something other than letters, digits and spaces: its word takes the per-word slow path.
_ODD_CHAR = re.compile(r'[^\w ]')
# A number followed by a unit ending a word somewhere in the text (cheap pre-check; after
# simplification every digit is '0', and a literal first char makes sre's scan fast).
_DIGIT_UNIT = re.compile(r'0(?:' + '|'.join(sorted(map(re.escape, _UNITS), key=len, reverse=True))
                         + r')(?!\S)')
_SPECIAL_KEYS = frozenset(_SPECIAL_CASES)


# spaCy's infix rule ``(?<=[alpha0-9])[:<>=/](?=[alpha])`` (these chars survive only when
# NFD creates them, e.g. '≯' -> '>' + U+0338).
# spaCy's ALPHA has no CJK ideographs/kana/hangul, so those do not count as letters here.
_NOT_ALPHA_CJK = r'\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff'
_INFIX = re.compile(rf'(?<=[^\W_{_NOT_ALPHA_CJK}])([:<>=/])(?=[^\W\d_{_NOT_ALPHA_CJK}])')


def _is_icon(c: str) -> bool:
  # spaCy's LIST_ICONS is (an older Unicode's) category So; split off anywhere (infix too).
  return unicodedata.category(c) == 'So'


def _split_core(w: str) -> list[str]:
  """spaCy's affix loop for a word without icons: prefixes, suffixes, specials, units."""
  pre: list[str] = []
  suf: list[str] = []
  while w and w not in _SPECIAL_CASES:
    c = w[0]
    if c in _AFFIX_PUNCT or c in _PREFIX_ONLY or unicodedata.category(c) == 'Sc':
      pre.append(c)
      w = w[1:]
      continue
    c = w[-1]
    if c in _AFFIX_PUNCT or (unicodedata.category(c) == 'Sc' and len(w) > 1 and w[-2].isdecimal()):
      suf.append(c)
      w = w[:-1]
      continue
    m = _UNIT_SPLIT.match(w)
    if m:
      suf.append(m.group(2))
      w = m.group(1)
      continue
    break
  if not w:
    mid = []
  elif w in _SPECIAL_CASES:
    mid = list(_SPECIAL_CASES[w])
  else:
    mid = [t for t in _INFIX.split(w) if t]
  return pre + mid + suf[::-1]


def _split_word(w: str) -> list[str]:
  """spaCy-English tokens of one space-free chunk of simplified text.

  Exact for letters/digits (special cases like "dont" -> "do nt", units like "0km" ->
  "0 km"). For other characters it approximates spaCy: symbols of category So are split off
  as single tokens anywhere (spaCy: LIST_ICONS as prefix/suffix/infix), currency symbols are
  split off at the start and, after a digit, at the end, and the few punctuation marks
  datatrove leaves in place are split off at either end.
  """
  if not any(_is_icon(c) for c in w):
    return _split_core(w)
  out: list[str] = []
  part = ''
  for c in w:
    if _is_icon(c):
      if part:
        out += _split_core(part)
        part = ''
      out.append(c)
    else:
      part += c
  if part:
    out += _split_core(part)
  return out


def words_from_simplified(simple: str) -> list[str]:
  """Word tokens of already-simplified text (see ``simplify_text``).

  Nearly every word is its own token; the few that spaCy would split (special cases, a
  number with a unit, symbols) are found with set and regex look-ups over the whole text
  rather than a per-word test, which keeps the common case at the cost of ``str.split``.
  """
  words = simple.split()
  if not words:
    return words
  odd = set(_SPECIAL_KEYS.intersection(words))
  if _DIGIT_UNIT.search(simple):
    odd.update(w for w in set(words) if not w.isalpha() and _UNIT_SPLIT.match(w))
  # In ASCII text every non-alphanumeric character was punctuation and is gone already.
  for m in () if simple.isascii() else _ODD_CHAR.finditer(simple):
    start = simple.rfind(' ', 0, m.start()) + 1
    end = simple.find(' ', m.end())
    odd.add(simple[start:] if end < 0 else simple[start:end])
  if not odd:
    return words
  out: list[str] = []
  for w in words:
    if w in odd:
      out += _split_word(w)
    else:
      out.append(w)
  return out


def minhash_words(text: str) -> list[str]:
  """The words MinHash shingles: datatrove's ``simplify_text`` + spaCy English tokenization."""
  return words_from_simplified(simplify_text(text))


# ---------------------------------------------------------------------------------------
# MinHash LSH
# ---------------------------------------------------------------------------------------

_MERSENNE = np.uint64((1 << 61) - 1)
_U61 = np.uint64(61)
_BAND_DTYPE = np.dtype('<u8')
# Shingles per block in signature_from_hashes: 128 x 112 x 8 B = 112 KiB per buffer, under
# glibc's mmap threshold (so buffers come from the heap) and about L2-sized.
_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class MinHashConfig:
  """MinHash LSH parameters; defaults are datatrove's ``MinhashConfig``.

  With 14 bands of 8 rows, a pair with Jaccard similarity s (of 5-gram sets) becomes a
  candidate with probability 1 - (1 - s**8)**14: ~0.92 at s = 0.8, ~0.5 at s = 0.7,
  ~0.08 at s = 0.5.
  """
  ngram: int = 5
  bands: int = 14
  rows: int = 8
  seed: int = 1


class MinHasher:
  """MinHash signatures and LSH band keys, bit-compatible with datatrove's signatures.

  Permutation parameters are drawn exactly as datatrove draws them, from the legacy
  ``np.random.RandomState(seed)`` (``a`` in [1, p), then ``b`` in [0, p), p = 2**61 - 1), so
  they are deterministic for a seed and a signature equals datatrove's for the same words.
  """

  def __init__(self, cfg: MinHashConfig = MinHashConfig()):
    self.cfg = cfg
    n = cfg.bands * cfg.rows
    gen = np.random.RandomState(cfg.seed)
    self._a = gen.randint(1, _MERSENNE, dtype=np.uint64, size=(1, n))
    self._b = gen.randint(0, _MERSENNE, dtype=np.uint64, size=(1, n))

  @property
  def num_hashes(self) -> int:
    return self.cfg.bands * self.cfg.rows

  def shingle_hashes(self, words: Sequence[str]) -> np.ndarray:
    """uint64 xxh64 of each word n-gram joined by single spaces, shape [n_shingles].

    Fewer words than ``ngram`` give no shingle at all, exactly like datatrove (its
    ``ngrams`` zip yields nothing), so such a document gets no signature.
    """
    n = self.cfg.ngram
    count = len(words) - n + 1
    if count <= 0:
      return np.empty(0, dtype=np.uint64)
    joined = ' '.join(words)
    h = xxhash.xxh64_intdigest
    if n == 1:
      return np.fromiter((h(w.encode('utf-8')) for w in words), dtype=np.uint64, count=count)
    # Each shingle is a slice of the joined string: one slice + hash per shingle instead of
    # a join of n words. Offsets are in bytes of the UTF-8 encoding (== chars for ASCII).
    if joined.isascii():
      data = joined.encode('ascii')
      lens = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    else:
      data = joined.encode('utf-8')
      lens = np.fromiter((len(w.encode('utf-8')) for w in words), dtype=np.int64,
                         count=len(words))
    starts = np.empty(len(words), dtype=np.int64)
    starts[0] = 0
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    ends = starts[n - 1:] + lens[n - 1:]
    mv = memoryview(data)
    return np.fromiter((h(mv[s:e]) for s, e in zip(starts[:count].tolist(), ends.tolist())),
                       dtype=np.uint64, count=count)

  def signature_from_hashes(self, shingles: np.ndarray) -> np.ndarray:
    """min over shingles of ``(a * x + b) mod (2**61 - 1)`` for each of bands*rows (a, b).

    ``a * x`` wraps modulo 2**64 before the reduction, exactly as datatrove's numpy
    expression does, so the values match it bit for bit. The modulo uses the Mersenne
    identity x mod p = (x & p) + (x >> 61) (then one conditional subtraction), cheaper than
    numpy's 64-bit division. Shingles are processed in blocks of ``_BLOCK`` rows with two
    reused buffers: a (n_shingles, 112) temporary would be mmap'd, page-faulted and freed
    for every long document, which costs more than the arithmetic. Empty input -> empty
    signature (no band keys).
    """
    n = shingles.size
    if n == 0:
      return np.empty(0, dtype=np.uint64)
    # (int64 input would silently promote the products to float64.)
    shingles = np.asarray(shingles, dtype=np.uint64).reshape(-1, 1)
    rows = min(n, _BLOCK)
    x_buf = np.empty((rows, self.num_hashes), dtype=np.uint64)
    s_buf = np.empty((rows, self.num_hashes), dtype=np.uint64)
    sig = None
    for i in range(0, n, _BLOCK):
      h = shingles[i:i + _BLOCK]
      x, s = x_buf[:len(h)], s_buf[:len(h)]
      np.multiply(h, self._a, out=x)  # wraps mod 2**64, as in datatrove
      x += self._b
      np.bitwise_and(x, _MERSENNE, out=s)
      x >>= _U61
      s += x  # in [0, p + 7]; >= p only when x & p is one of the top 8 values (~2**-58)
      if s.max() >= _MERSENNE:
        np.subtract(s, _MERSENNE, out=s, where=s >= _MERSENNE)
      m = s.min(axis=0)
      sig = m if sig is None else np.minimum(sig, m, out=sig)
    return sig

  def signature_from_words(self, words: Sequence[str]) -> np.ndarray:
    """Signature ([bands*rows] uint64) of already tokenized words, used as they are.

    To reproduce datatrove the words must come from ``minhash_words`` (simplified text);
    empty (shape [0]) when there are fewer words than ``ngram``.
    """
    return self.signature_from_hashes(self.shingle_hashes(words))

  def signature_from_text(self, text: str) -> np.ndarray:
    """Signature ([bands*rows] uint64) of raw text: datatrove's normalisation + tokenization.

    Empty (shape [0]) when the simplified text has fewer than ``ngram`` words; such
    documents never become near-duplicates (as in datatrove), only exact ones.
    """
    return self.signature_from_words(minhash_words(text))

  def band_keys(self, sig: np.ndarray, sortable: bool = False) -> list[bytes]:
    """One key per band: 2-byte band index + xxh3_128 of the band's little-endian values.

    Two documents share a key iff they agree on all ``rows`` values of that band (up to a
    2**-128 collision). The band index prefix keeps equal values in different bands apart.
    An empty signature (too-short document) has no keys.

    ``sortable=True`` gives the band index + the raw values as big-endian uint64 instead
    (2 + 8 * rows bytes, no collisions): byte order of these keys is datatrove's (bucket,
    hash tuple) order, which ``datatrove_near_duplicates`` needs to pick the same kept
    documents as datatrove.
    """
    if sig.size == 0:
      return []
    rows = self.cfg.rows
    step = rows * 8
    if sortable:
      data = np.ascontiguousarray(sig, dtype='>u8').tobytes()
      return [i.to_bytes(2, 'big') + data[i * step:(i + 1) * step] for i in range(self.cfg.bands)]
    data = np.ascontiguousarray(sig, dtype=_BAND_DTYPE).tobytes()
    h = xxhash.xxh3_128_digest
    return [i.to_bytes(2, 'big') + h(data[i * step:(i + 1) * step]) for i in range(self.cfg.bands)]


def edges_from_bucket(ids: Sequence[str]) -> list[tuple[str, str]]:
  """Documents sharing one band key -> edges (smallest id, other id) for every other id.

  A star around the smallest id connects the bucket as well as all pairs would, with
  len(ids) - 1 edges instead of quadratically many. Repeated ids are ignored.
  """
  uniq = sorted(set(ids))
  if len(uniq) < 2:
    return []
  first = uniq[0]
  return [(first, other) for other in uniq[1:]]


def clusters(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
  """Connected components of the edges: maps every id in an edge to its cluster's smallest id.

  Union-find that always makes the smaller root the parent, so each root *is* its cluster's
  smallest id and the result does not depend on edge order. Path compression keeps trees flat.
  """
  parent: dict[str, str] = {}

  def find(x: str) -> str:
    root = parent.setdefault(x, x)
    while parent[root] != root:
      root = parent[root]
    while x != root:  # path compression
      parent[x], x = root, parent[x]
    return root

  for a, b in edges:
    ra, rb = find(a), find(b)
    if ra != rb:
      if ra < rb:
        parent[rb] = ra
      else:
        parent[ra] = rb
  return {x: find(x) for x in parent}


def near_duplicates(items: Iterable[tuple[str, list[bytes]]]) -> set[str]:
  """In-memory near-dup reduction: ids to drop (every cluster member but its smallest id).

  ``items`` are (doc id, band keys) pairs; documents sharing any band key are linked and
  linking is transitive (A~B and B~C puts A, B, C in one cluster, A kept).
  """
  buckets: dict[bytes, str | list[str]] = {}
  for doc_id, keys in items:
    for k in keys:
      cur = buckets.get(k)
      if cur is None:
        buckets[k] = doc_id  # most keys are unique: no list until a second id arrives
      elif isinstance(cur, list):
        cur.append(doc_id)
      else:
        buckets[k] = [cur, doc_id]
  edges = (e for v in buckets.values() if isinstance(v, list) for e in edges_from_bucket(v))
  return {x for x, root in clusters(edges).items() if x != root}


def datatrove_near_duplicates(items: Iterable[tuple[str, list[bytes]]]) -> set[str]:
  """Near-dup drops chosen exactly as datatrove's MinHash stages 2-4 choose them (opt-in).

  Same clusters as ``near_duplicates``; only *which* member is kept differs in clusters of
  three or more. datatrove links, per bucket, documents that are adjacent in (hash tuple,
  doc) order, reads the buckets in order, and unions by size (on a tie the earlier
  document's root wins), keeping each final root. Replaying that on the sorted input gives
  its choice (for a single-task datatrove run, whose doc order is our id order) while
  staying a function of the input *set*, independent of processing order. Needs
  ``band_keys(sig, sortable=True)`` keys, whose byte order is datatrove's hash order.
  """
  buckets: dict[bytes, list[str]] = {}
  for doc_id, keys in items:
    for k in keys:
      buckets.setdefault(k, []).append(doc_id)
  parent: dict[str, str] = {}
  size: dict[str, int] = {}

  def find(x: str) -> str:
    root = parent.setdefault(x, x)
    while parent[root] != root:
      root = parent[root]
    while x != root:
      parent[x], x = root, parent[x]
    return root

  for key in sorted(k for k, v in buckets.items() if len(v) > 1):
    ids = sorted(set(buckets[key]))
    for a, b in zip(ids, ids[1:]):
      ra, rb = find(a), find(b)
      if ra != rb:
        sa, sb = size.get(ra, 1), size.get(rb, 1)
        if sa < sb:
          ra, rb = rb, ra
        parent[rb] = ra
        size[ra] = sa + sb
        size.pop(rb, None)
  return {x for x in parent if find(x) != x}


# ---------------------------------------------------------------------------------------
# C4-style repeated lines across documents
# ---------------------------------------------------------------------------------------
#
# Lines are the '\n'-separated pieces of the text (a '\r' before the '\n' is whitespace and
# stripped away for the key); only lines with content after ``strip()`` get a key and can
# be removed. A line seen in several documents stays only in the smallest id among them. A
# line repeated within one document is *not* a cross-document repeat: in its owner every
# copy stays, in any other document every copy goes (intra-document repetition is the
# Gopher repetition rules' job).


def line_keys(text: str) -> list[int]:
  """xxh64 of each stripped non-empty line, in line order (repeats included)."""
  h = xxhash.xxh64_intdigest
  return [h(s.encode('utf-8')) for s in (ln.strip() for ln in text.split('\n')) if s]


def first_owners(items: Iterable[tuple[str, list[int]]]) -> dict[int, str]:
  """Line key -> smallest doc id containing it, for keys found in two or more documents.

  Keys present in a single document can never cause a removal, so they are left out: the
  result holds only the (usually few) boilerplate lines, and ``remove_repeated_lines``
  treats an absent key as owned by the document itself. The work is done on flat numpy
  arrays (8 bytes per line occurrence plus sort scratch): 100k documents x 40 lines take
  ~0.8 s and ~170 MB at peak instead of a dict of every line several times that size.
  """
  ids: list[str] = []
  counts = array('q')
  keys = array('Q')
  for doc_id, ks in items:
    if ks:
      keys.extend(ks)
      counts.append(len(ks))
      ids.append(doc_id)
  if not keys:
    return {}
  # Rank documents by id, so that "smallest rank" == "smallest id".
  order = sorted(range(len(ids)), key=ids.__getitem__)
  rank = np.empty(len(ids), dtype=np.int64)
  rank[np.asarray(order, dtype=np.int64)] = np.arange(len(ids), dtype=np.int64)
  k = np.frombuffer(keys, dtype=np.uint64)
  idx = np.argsort(k)
  k = k[idx]
  r = np.repeat(rank, np.frombuffer(counts, dtype=np.int64))[idx]
  del idx, keys
  starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
  lo = np.minimum.reduceat(r, starts)
  shared = np.maximum.reduceat(r, starts) != lo  # two or more distinct documents
  return {key: ids[order[rk]] for key, rk in zip(k[starts[shared]].tolist(), lo[shared].tolist())}


def remove_repeated_lines(doc_id: str, text: str, owners: Mapping[int, str]) -> tuple[str, int, int]:
  """Drops the lines some other (smaller-id) document owns: (new text, lines, chars removed).

  ``owners`` maps line key -> owning doc id (``first_owners``, or the Beam reduction);
  keys not in it belong to whoever has them. Kept lines keep their original text and
  order; ``chars removed`` is ``len(text) - len(new text)`` (removed lines and their '\n').
  """
  if not owners:
    return text, 0, 0
  h = xxhash.xxh64_intdigest
  kept: list[str] = []
  removed = 0
  for ln in text.split('\n'):
    s = ln.strip()
    if s:
      owner = owners.get(h(s.encode('utf-8')))
      if owner is not None and owner != doc_id:
        removed += 1
        continue
    kept.append(ln)
  if not removed:
    return text, 0, 0
  new = '\n'.join(kept)
  return new, removed, len(text) - len(new)
