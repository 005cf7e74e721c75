"""HTML pages: bytes -> decoded text -> extracted main text.

  decoded = decode_html(body, content_type)  # .text, .encoding, .source, .error
  extract = make_extractor()  # trafilatura, DEFAULT_EXTRACTION ('adaptive'), layout tables unwrapped
  text = extract(decoded.text, url)  # None when no main text is found

Decoding follows the parts of the WHATWG encoding-sniffing algorithm that matter for
crawled pages, in this order:

  1. a byte order mark (UTF-8 / UTF-16): as in browsers it beats everything else, since a
     BOM is never there by accident;
  2. the charset of the HTTP ``Content-Type`` header;
  3. the document's own declaration in its first ``PRESCAN_BYTES``: ``<meta charset=...>``,
     ``<meta http-equiv="Content-Type" content="...; charset=...">`` (comments skipped),
     then an XML declaration ``<?xml ... encoding="..."?>`` at the very start;
  4. no declaration: the bytes as UTF-8 if they are valid UTF-8 (ASCII is), or if they are
     UTF-8 apart from a few stray bytes (a detector would turn such a page into mojibake);
  5. otherwise charset-normalizer's guess on the bytes;
  6. finally UTF-8 with U+FFFD replacement (reported as a decode error).

Labels are mapped as browsers map them (WHATWG Encoding Standard): ``iso-8859-1``,
``latin1`` and ``ascii`` mean windows-1252, ``gb2312`` and ``gbk`` mean GB18030,
``shift_jis`` means windows-31J, ``euc-kr`` windows-949, ``big5`` Big5-HKSCS, and a
``utf-16`` label found in a meta tag (which could only be read because the bytes are
8-bit) means UTF-8. A declared charset is trusted as browsers trust it: bytes it cannot
decode become U+FFFD and the page counts as a decode error. A page decoded without
errors, by whichever source, is not a decode error. The common case costs nothing extra:
a UTF-8 page whose header names its charset is one ``bytes.decode`` call.

Extraction (``make_extractor``): trafilatura in one of ``EXTRACTION_MODES`` or
resiliparse; the measurement behind the default is in ``benchmarks/extraction.py`` and
README.md. Tables (``tables='prose'``, the default): trafilatura renders every table as
``| cell | cell |`` rows, so an article laid out in ``<td>`` cells became one line ending
in ``|`` that C4's end-mark rule deleted whole, and a data table's rows (mostly numbers
and ``|`` tokens) could pull a whole page under Gopher's 80% alphabetic-words threshold,
which runs before C4 would have dropped the rows. So before trafilatura sees a page,
layout tables are turned into plain blocks (``unwrap_layout_tables``: each cell's
paragraphs become ordinary lines), and the tables left, data tables, are not extracted
(``include_tables=False``): their rows are not prose, and never turn into fake
sentences. ``tables='rows'`` keeps trafilatura's rendering of every table.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import re
from typing import Callable

EXTRACTORS = ('trafilatura', 'resiliparse')
# trafilatura settings, fastest first (see _TRAFILATURA_OPTIONS); resiliparse has one.
EXTRACTION_MODES = ('fast', 'adaptive', 'precision', 'balanced', 'recall')
TABLE_MODES = ('prose', 'rows')  # see the module docstring
DEFAULT_EXTRACTION = 'adaptive'  # chosen by benchmarks/extraction.py, see README.md

PRESCAN_BYTES = 4096  # start of a page searched for a charset declaration (WHATWG: 1024; real heads are longer)
_DETECT_BYTES = 256 << 10  # bytes charset-normalizer looks at (a page's encoding does not change half-way)

# ----------------------------------------------------------------------------- decoding

# WHATWG labels Python does not know, or knows as a narrower codec than browsers use.
_LABELS = {
    'unicode-1-1-utf-8': 'utf-8', 'unicode11utf8': 'utf-8', 'unicode20utf8': 'utf-8', 'x-unicode20utf8': 'utf-8',
    'x-gbk': 'gb18030', 'x-sjis': 'cp932', 'windows-31j': 'cp932', 'x-cp1252': 'cp1252', 'x-mac-roman': 'mac-roman',
    'x-mac-cyrillic': 'mac-cyrillic', 'x-mac-ukrainian': 'mac-cyrillic', 'x-x-big5': 'big5hkscs',
    'dos-874': 'cp874', 'x-euc-jp': 'euc_jp', 'x-user-defined': 'cp1252',
}
# Python codec name -> the superset browsers decode that label with.
_SUPERSETS = {
    'iso8859-1': 'cp1252', 'ascii': 'cp1252', 'gb2312': 'gb18030', 'gbk': 'gb18030', 'iso8859-9': 'cp1254',
    'tis-620': 'cp874', 'iso8859-11': 'cp874', 'big5': 'big5hkscs', 'shift_jis': 'cp932', 'euc_kr': 'cp949',
}
# Codecs a page may not ask for: UTF-7 (script injection; WHATWG dropped it), codecs that
# are not character encodings of documents, and ones that always fail.
_REFUSED = frozenset({'utf-7', 'idna', 'punycode', 'raw_unicode_escape', 'unicode_escape', 'undefined', 'mbcs',
                      'oem', 'utf-32', 'utf-32-le', 'utf-32-be'})
_UTF16 = frozenset({'utf-16', 'utf-16-le', 'utf-16-be'})


@dataclasses.dataclass(frozen=True)
class Decoded:
  """A decoded page and how its encoding was chosen."""
  text: str
  encoding: str  # Python codec name used
  source: str  # 'bom', 'http', 'meta', 'xml', 'utf-8' (undeclared but valid), 'detected', 'fallback'
  error: str = ''  # '' unless bytes were replaced by U+FFFD (then it says where and why)


@functools.lru_cache(maxsize=512)
def codec_for_label(label: str) -> str | None:
  """The Python codec a browser would decode ``label`` (a charset name) with, or None if unknown/refused."""
  label = label.strip().strip('"\'').strip().lower()
  if not label:
    return None
  name = _LABELS.get(label)
  if name is None:
    try:
      info = codecs.lookup(label)
    except (LookupError, ValueError):
      return None
    if not getattr(info, '_is_text_encoding', True):  # base64, rot13, zlib, ...: not a charset
      return None
    name = info.name
  if name in _REFUSED:
    return None
  return _SUPERSETS.get(name, name)


def _c1_controls(err: UnicodeDecodeError) -> tuple[str, int]:
  """windows-1252 as browsers decode it: the 5 bytes Python's cp1252 leaves undefined are C1 controls."""
  return err.object[err.start:err.end].decode('latin-1'), err.end


codecs.register_error('llm_corpus_c1', _c1_controls)

_HTTP_CHARSET = re.compile(r'charset\s*=\s*["\']?([^"\'\s;,]+)', re.I)


def http_charset(content_type: str | None) -> str | None:
  """The codec named by an HTTP Content-Type header (WHATWG label mapping), or None if none or unknown."""
  if not content_type or 'charset' not in content_type.lower():
    return None
  m = _HTTP_CHARSET.search(content_type)
  return codec_for_label(m.group(1)) if m else None


_COMMENT = re.compile(rb'<!--.*?(?:-->|$)', re.S)
_META = re.compile(rb'<meta[\s/]([^>]*)', re.I)
_ATTR = re.compile(rb'''([^\s=/>]+)(?:\s*=\s*("[^"]*"?|'[^']*'?|[^\s>]*))?''')
_CONTENT_CHARSET = re.compile(rb'''charset\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s;"']+))''', re.I)
_XML_DECL = re.compile(rb'''^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["']''', re.I)


def declared_charset(body: bytes) -> tuple[str, str] | None:
  """``(codec, 'meta' | 'xml')`` declared in the first ``PRESCAN_BYTES`` of a page, or None.

  Meta tags are read as the WHATWG prescan reads them: in order, skipping comments, the
  first attribute of a name winning; ``<meta charset>`` or an ``http-equiv`` Content-Type
  whose ``content`` names a charset; an unknown label is passed over. A UTF-16 label in a
  meta tag means UTF-8 (the tag could not have been read otherwise).
  """
  head = body[:PRESCAN_BYTES]
  low = head.lower()
  if b'charset' in low:
    if b'<!--' in head:
      head = _COMMENT.sub(b'', head)
    for meta in _META.finditer(head):
      attrs: dict[bytes, bytes] = {}
      for name, value in _ATTR.findall(meta.group(1)):
        attrs.setdefault(name.lower(), value.strip(b'"\'').rstrip(b'/'))  # <meta charset=utf-8/>
      label = attrs.get(b'charset')
      if label is None and attrs.get(b'http-equiv', b'').lower() == b'content-type':
        m = _CONTENT_CHARSET.search(attrs.get(b'content', b''))
        label = next((g for g in m.groups() if g is not None), None) if m else None
      if label is None:
        continue
      codec = codec_for_label(label.decode('latin-1'))
      if codec is not None:
        return ('utf-8' if codec in _UTF16 else codec), 'meta'
  if b'<?xml' in low[:256]:
    m = _XML_DECL.match(head)
    if m:
      codec = codec_for_label(m.group(1).decode('latin-1'))
      if codec is not None:
        return ('utf-8' if codec in _UTF16 else codec), 'xml'
  return None


# How common each legacy encoding is on the web, most common first (after UTF-8): used
# only to break ties between detector candidates that fit the bytes equally well.
_WEB_PRIOR = ('utf_8', 'cp1252', 'latin_1', 'iso8859_15', 'gb18030', 'gbk', 'gb2312', 'cp1251', 'cp932', 'shift_jis',
              'euc_jp', 'cp949', 'euc_kr', 'big5hkscs', 'big5', 'cp1250', 'iso8859_2', 'cp1256', 'cp1254', 'iso8859_9',
              'cp874', 'tis_620', 'cp1253', 'iso8859_7', 'cp1255', 'koi8_r', 'cp1257', 'cp1258')


def detect_charset(body: bytes) -> str | None:
  """charset-normalizer's guess for bytes that declare nothing and are not UTF-8 (WHATWG-mapped), or None.

  On short texts several code pages often decode the bytes equally well (a French page is
  as coherent in windows-1250 as in windows-1252 while it has no accent the two place
  differently, and è/č is one such byte): the tie goes to the encoding more common on the
  web, as a browser's locale default would decide it.
  """
  from charset_normalizer import from_bytes  # pylint: disable=import-outside-toplevel
  matches = from_bytes(body[:_DETECT_BYTES])
  best = matches.best()
  if best is None:
    return None
  names = []
  for m in matches:
    if abs(m.chaos - best.chaos) <= 0.01 and abs(m.coherence - best.coherence) <= 0.02:
      names.extend([m.encoding, *m.could_be_from_charset])
  known = [n for n in names if n in _WEB_PRIOR]
  name = min(known, key=_WEB_PRIOR.index) if known else best.encoding
  return codec_for_label(name)


def _strict_or_replace(body: bytes, codec: str, source: str) -> Decoded:
  errors = 'llm_corpus_c1' if codec == 'cp1252' else 'strict'
  try:
    return Decoded(body.decode(codec, errors), codec, source)
  except UnicodeDecodeError as e:
    where = {'bom': 'byte order mark', 'http': 'HTTP header', 'meta': 'meta tag', 'xml': 'XML declaration',
             'detected': 'detector'}.get(source, source)
    return Decoded(body.decode(codec, 'replace'), codec, source,
                   f'bytes that are not valid {codec} (first at byte {e.start}; charset from the {where})')


def _mostly_utf8(body: bytes) -> bool:
  """Whether bytes that fail as UTF-8 are still UTF-8 with a few stray bytes.

  Text in a legacy 8-bit or CJK encoding essentially never forms valid multi-byte UTF-8
  sequences, so many of them and few invalid bytes mean a UTF-8 page with damage (a
  truncated character, one pasted Latin-1 quote), best decoded as UTF-8 with U+FFFD.
  """
  text = body.decode('utf-8', 'replace')
  bad = text.count('\ufffd')
  non_ascii = len(text) - len(text.encode('ascii', 'ignore')) - bad  # valid multi-byte characters
  return non_ascii >= 8 and bad * 20 <= non_ascii


def decode_html(body: bytes, content_type: str | None = None) -> Decoded:
  """Decodes an HTTP body; see the module docstring for the order of sources."""
  if body[:3] == b'\xef\xbb\xbf':
    return _strict_or_replace(body[3:], 'utf-8', 'bom')
  if body[:2] in (b'\xff\xfe', b'\xfe\xff'):
    return _strict_or_replace(body[2:], 'utf-16-le' if body[:1] == b'\xff' else 'utf-16-be', 'bom')
  codec = http_charset(content_type)
  if codec is not None:
    return _strict_or_replace(body, codec, 'http')
  declared = declared_charset(body)
  if declared is not None:
    return _strict_or_replace(body, *declared)
  try:
    return Decoded(body.decode('utf-8'), 'utf-8', 'utf-8')
  except UnicodeDecodeError as e:
    first_bad = e.start
  if _mostly_utf8(body):
    why = 'in a page that is otherwise UTF-8'
  else:
    codec = detect_charset(body)
    if codec is not None and codec != 'utf-8':
      return _strict_or_replace(body, codec, 'detected')
    why = 'and no charset declared or detected'
  return Decoded(body.decode('utf-8', 'replace'), 'utf-8', 'fallback',
                 f'bytes that are not valid utf-8 (first at byte {first_bad}) {why}')


# ----------------------------------------------------------------------------- layout tables

_CELL_TAGS = frozenset({'td', 'th'})
_SECTION_TAGS = frozenset({'thead', 'tbody', 'tfoot'})
_BLOCK_TAGS = frozenset({'p', 'div', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'ul', 'ol', 'blockquote', 'pre', 'article',
                         'section', 'br'})
LAYOUT_CELL_CHARS = 400  # a cell with this much text holds prose, not a datum
LAYOUT_BLOCK_CELL_CHARS = 200  # ... or this much, split into paragraphs / lines


def _cells(table) -> list:
  """The table's own cells (not those of nested tables), in document order."""
  out = []
  for child in table:
    tag = child.tag if isinstance(child.tag, str) else ''
    rows = [child] if tag == 'tr' else [r for r in child if r.tag == 'tr'] if tag in _SECTION_TAGS else []
    if tag in _CELL_TAGS:
      out.append(child)
    for row in rows:
      out.extend(c for c in row if c.tag in _CELL_TAGS)
  return out


def is_layout_table(table) -> bool:
  """Whether an lxml ``<table>`` lays out a page rather than holding data.

  Layout: ``role=presentation|none``; a single cell; a cell holding a nested table; or a
  cell holding prose (``LAYOUT_CELL_CHARS`` of text, or ``LAYOUT_BLOCK_CELL_CHARS`` split
  into paragraphs, blocks or ``<br>`` lines). Everything else, headers or not, is data.
  """
  if (table.get('role') or '').strip().lower() in ('presentation', 'none'):
    return True
  cells = _cells(table)
  if len(cells) == 1:
    return True
  for cell in cells:
    if any(True for _ in cell.iterdescendants('table')):
      return True
    n = len(cell.text_content().strip())
    if n >= LAYOUT_CELL_CHARS:
      return True
    if n >= LAYOUT_BLOCK_CELL_CHARS and any(True for _ in cell.iterdescendants(*_BLOCK_TAGS)):
      return True
  return False


def unwrap_layout_tables(tree) -> int:
  """Turns every layout table of an lxml tree into nested ``<div>``s (in place); returns how many.

  Each cell becomes a block of its own, so its paragraphs come out as ordinary lines.
  Tables are classified before any is changed, so a nested table's verdict does not
  depend on its parent's.
  """
  layout = [t for t in tree.iter('table') if is_layout_table(t)]
  for table in layout:
    for child in table:
      tag = child.tag if isinstance(child.tag, str) else ''
      rows = [child] if tag == 'tr' else [r for r in child if r.tag == 'tr'] if tag in _SECTION_TAGS else []
      for row in rows:
        for cell in row:
          if cell.tag in _CELL_TAGS:
            cell.tag = 'div'
        row.tag = 'div'
      if tag in _SECTION_TAGS or tag in _CELL_TAGS or tag == 'caption':
        child.tag = 'div'
    table.tag = 'div'
  return len(layout)


# ----------------------------------------------------------------------------- extraction

# Keyword arguments of trafilatura.extract per mode. 'fast' skips the readability/jusText
# fallback comparison; 'precision', 'balanced' and 'recall' run it on every page (about
# 1.4-1.6x the time, measured in README.md); 'adaptive' runs 'fast' and, only when that finds
# less than ADAPTIVE_MIN_CHARS, 'precision' (see make_extractor). Comments, images and
# links stay out in every mode, as in FineWeb's datatrove settings. deduplicate stays off:
# its cache is global to the process, so the output would depend on which pages a worker
# happened to see before.
_TRAFILATURA_OPTIONS = {
    'fast': dict(fast=True, favor_precision=True),
    'precision': dict(fast=False, favor_precision=True),
    'balanced': dict(fast=False),
    'recall': dict(fast=False, favor_recall=True),
}
_COMMON_OPTIONS = dict(include_comments=False, include_images=False, include_links=False, deduplicate=False,
                       with_metadata=False)
# Below this many characters 'adaptive' retries with the fallback: trafilatura's own
# MIN_EXTRACTED_SIZE, under which it considers an extraction too short to trust.
ADAPTIVE_MIN_CHARS = 250
_HAS_TABLE = re.compile(r'<table', re.I)
_BLANK_LINE = re.compile(r'^[ \t\f\v\r]+(?:\n|$)', re.M)  # a line of only spaces/tabs
_TRAILING_SPACE = re.compile(r'[ \t\f\v\r]+$', re.M)


def tidy(text: str | None) -> str | None:
  """Drops whitespace-only lines and trailing whitespace.

  trafilatura's readability/jusText fallback copies the indentation of the page's source
  between blocks ('\\t\\t\\n\\t'); such lines would count as lines (and as paragraph breaks)
  in the Gopher and C4 rules although they hold nothing.
  """
  if not text:
    return text
  return _TRAILING_SPACE.sub('', _BLANK_LINE.sub('', text)).strip()


@functools.lru_cache(maxsize=None)
def make_extractor(name: str = 'trafilatura', mode: str = DEFAULT_EXTRACTION,
                   tables: str = 'prose') -> Callable[[str, str], str | None]:
  """``extract(html, url) -> text or None``; imported on first use (trafilatura takes ~1 s to import).

  ``mode`` (one of ``EXTRACTION_MODES``) and ``tables`` (one of ``TABLE_MODES``, see the
  module docstring; 'rows' is the behaviour before layout tables were handled) apply to
  trafilatura only. Deterministic: the same page always gives the same text.
  """
  if name not in EXTRACTORS:
    raise ValueError(f'extractor {name!r} is not one of {EXTRACTORS}')
  if mode not in EXTRACTION_MODES:
    raise ValueError(f'extraction mode {mode!r} is not one of {EXTRACTION_MODES}')
  if tables not in TABLE_MODES:
    raise ValueError(f'table mode {tables!r} is not one of {TABLE_MODES}')
  if name == 'trafilatura':
    import trafilatura  # pylint: disable=import-outside-toplevel
    from trafilatura.utils import load_html  # pylint: disable=import-outside-toplevel
    common = {**_COMMON_OPTIONS, 'include_tables': tables == 'rows'}
    first = {**_TRAFILATURA_OPTIONS['fast' if mode == 'adaptive' else mode], **common}
    retry = {**_TRAFILATURA_OPTIONS['precision'], **common} if mode == 'adaptive' else None
    unwrap = tables == 'prose'

    def extract(html: str, url: str) -> str | None:
      page: object = html
      # Parse here only when there is a table to look at; trafilatura parses the string
      # itself otherwise (a tree passed in costs it one extra copy, and it works on that
      # copy, so the same tree can serve the retry).
      if unwrap and _HAS_TABLE.search(html):
        tree = load_html(html)
        if tree is None:
          return None
        unwrap_layout_tables(tree)
        page = tree
      text = tidy(trafilatura.extract(page, url=url or None, **first))
      if retry is not None and len(text or '') < ADAPTIVE_MIN_CHARS:
        # Too little for a page: markup trafilatura's fast path does not read (text in
        # <font>/<span> split by <br>, no <p>) is where the fallback finds the article.
        # Its text is taken only if it is longer and itself long enough to trust: on a
        # page that really has no article (a menu, a log-in form) the fallback returns
        # scraps of navigation, and the page should count as extract_failed as before.
        again = tidy(trafilatura.extract(page, url=url or None, **retry))
        if len(again or '') >= max(ADAPTIVE_MIN_CHARS, len(text or '') + 1):
          text = again
      return text

    return extract
  from resiliparse.extract.html2text import extract_plain_text  # pylint: disable=import-outside-toplevel

  def extract_resiliparse(html: str, url: str) -> str | None:
    del url
    # resiliparse renders table cells as tab-separated blocks, not '|' rows: no unwrapping needed.
    return extract_plain_text(html, main_content=True)

  return extract_resiliparse
