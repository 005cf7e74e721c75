"""Readers: raw input files (text, JSONL, WET, WARC; optionally gzipped) -> ``Doc`` records.

  files = list_files('data/raw/**/*.jsonl.gz,data/crawl/*.warc.gz')
  for path in files:
    stats = FileStats(path)
    for doc in read_file(path, path, ReaderConfig(), stats):  # ids '<path>#<record>'
      ...

Principles:
  * Bad data inside a file never stops the run and is never dropped silently: every
    skipped record is counted in the file's ``FileStats`` under exactly one reason, and
    the first message of each kind is kept (with the record number) for the report.
    Only user mistakes (a pattern that matches nothing, an unknown format, a file that
    cannot be opened) raise ``CorpusInputError``.
  * Records are read lazily: memory is bounded by the size limit of one record, not by
    the size of the file.
  * Record indices count every record position in the file, skipped or not (the line
    number for line-based formats, the WARC record number for WARC/WET), so document ids
    stay the same when a skip rule changes.

Compressed input is recognised by the gzip magic bytes, not the file name, and is
decompressed here with ``zlib`` rather than ``gzip.GzipFile``: ``GzipFile`` can lose the
data it decompressed during the ``read()`` call that hits a cut-off stream, whereas this
reader hands out every byte that decompressed before the cut and then reports the
truncation (see ``_Input``).

WARC parsing uses warcio rather than FastWARC: warcio is pure Python, so its failure
modes on damaged files (short records, garbage between records) are visible and
catchable, and it parses the stream this module has already decompressed, which makes
truncation handling the same for every format. FastWARC, given a cut-off file, yields
the cut record short (3.7 of 18.5 KB in a test) with no error. The price is parsing
speed: on 20 KB pages warcio + this decompressor take ~0.18 ms a record against
FastWARC's ~0.08 ms (one CPU core); the difference is ~11% of the time per page with
the resiliparse extractor (~0.45 ms) and ~2% with trafilatura (~2.8 ms).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import zlib
from typing import Iterator, Sequence

from llm.data.clean.document import CorpusInputError, Doc, FileStats, make_id
from llm.data.clean.html import DEFAULT_EXTRACTION, EXTRACTION_MODES, EXTRACTORS, decode_html, make_extractor

FORMATS = ('text', 'jsonl', 'wet', 'warc')
DOC_SEPARATORS = ('file', 'blank_line', 'line')
# EXTRACTORS and EXTRACTION_MODES come from llm.data.clean.html (HTML decoding and extraction).

_EXTENSIONS = (  # checked in order, on the lower-cased name without a trailing '.gz'
    ('.txt', 'text'),
    ('.jsonl', 'jsonl'),
    ('.ndjson', 'jsonl'),
    ('.json', 'jsonl'),
    ('.wet', 'wet'),  # also Common Crawl's '.warc.wet'
    ('.warc', 'warc'),
)

_CHUNK = 1 << 20  # bytes read from disk at a time (plain files), and the unit of bounded reads
_GZ_CHUNK = 64 << 10  # compressed bytes read at a time: each gzip member end copies what is left of it
_MAX_INFLATE = 4 << 20  # most bytes one zlib call may produce (bounds memory on gzip bombs)
_MIN_HTML_CAP = 20_000_000  # HTML pages over max(this, 4 * max_doc_chars) bytes are too_large
_SNIFF_BYTES = 2048  # start of an HTTP body searched for '<html' when there is no Content-Type
_BOM = b'\xef\xbb\xbf'


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
  """How input files are turned into documents."""
  text_field: str = 'text'  # JSONL field with the text; every other field goes into Doc.meta
  doc_separator: str = 'file'  # plain text: 'file' (whole file is one doc), 'blank_line', 'line'
  extractor: str = 'trafilatura'  # WARC HTML -> text: 'trafilatura' (FineWeb's choice) or 'resiliparse' (faster)
  # trafilatura setting: 'adaptive' (fast path, full fallback when it finds < 250 chars), 'fast',
  # 'precision' (fallback on every page), 'balanced', 'recall'; measured in README.md
  extraction: str = DEFAULT_EXTRACTION
  max_doc_chars: int = 5_000_000  # longer records are skipped and counted (too_large)
  format: str = 'auto'  # 'auto' (by extension) or one of 'text', 'jsonl', 'wet', 'warc'

  def __post_init__(self):
    # Checked here so that a typo stops the run before any file is opened.
    if self.doc_separator not in DOC_SEPARATORS:
      raise CorpusInputError(f'--config.reader.doc_separator={self.doc_separator!r} is not one of {DOC_SEPARATORS}')
    if self.extractor not in EXTRACTORS:
      raise CorpusInputError(f'--config.reader.extractor={self.extractor!r} is not one of {EXTRACTORS}')
    if self.extraction not in EXTRACTION_MODES:
      raise CorpusInputError(f'--config.reader.extraction={self.extraction!r} is not one of {EXTRACTION_MODES}')
    if self.format != 'auto' and self.format not in FORMATS:
      raise CorpusInputError(f"--config.reader.format={self.format!r} is not 'auto' or one of {FORMATS}")
    if self.max_doc_chars <= 0:
      raise CorpusInputError(f'--config.reader.max_doc_chars must be positive, got {self.max_doc_chars}')
    if not self.text_field:
      raise CorpusInputError('--config.reader.text_field is empty; set it to the JSONL field that holds the text')


# ----------------------------------------------------------------------------- files


def list_files(patterns: str | Sequence[str]) -> list[str]:
  """Expands comma-separated globs (``**`` recurses) or a list of them to a sorted list of files.

  Paths are normalised (``./a.txt`` and ``a.txt`` are one file) and de-duplicated; the
  sorted order is what gives each file its index in the document ids.

  Raises:
    CorpusInputError: a pattern matches no file (or names a directory), or no pattern is given.
  """
  if isinstance(patterns, str):
    patterns = patterns.split(',')
  patterns = [p.strip() for p in patterns if p and p.strip()]
  if not patterns:
    raise CorpusInputError('no input pattern given; pass a path or glob such as "data/raw/*.jsonl.gz"')
  found: set[str] = set()
  for pattern in patterns:
    expanded = os.path.expanduser(pattern)
    if glob.has_magic(expanded):
      matches = [m for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
    elif os.path.isdir(expanded):
      raise CorpusInputError(f'input pattern {pattern!r} is a directory; name the files in it, e.g. '
                             f'"{os.path.join(pattern, "**", "*.jsonl.gz")}"')
    else:
      matches = [expanded] if os.path.isfile(expanded) else []
    if not matches:
      raise CorpusInputError(
          f'input pattern {pattern!r} matches no file (working directory {os.getcwd()!r}); check the path, '
          'use "**" to match files in subdirectories, and quote the pattern so the shell does not expand it')
    found.update(os.path.normpath(m) for m in matches)
  return sorted(found)


def detect_format(path: str) -> str:
  """The reader format of ``path`` from its extension ('.gz' is looked through).

  Raises:
    CorpusInputError: the extension is not one this module knows.
  """
  name = os.path.basename(path).lower()
  if name.endswith('.gz'):
    name = name[:-3]
  for ext, fmt in _EXTENSIONS:
    if name.endswith(ext):
      return fmt
  known = ', '.join(sorted({e for e, _ in _EXTENSIONS}))
  raise CorpusInputError(
      f'cannot tell the format of {path!r} from its extension (known: {known}, each optionally .gz); '
      f'to read it anyway, pass --config.reader.format= one of {", ".join(FORMATS)} (every input is then read '
      'in that format)')


def read_file(path: str, file_id: str, cfg: ReaderConfig, stats: FileStats) -> Iterator[Doc]:
  """Lazily yields the documents of one file and fills ``stats`` as it goes.

  Doc ids are ``make_id(file_id, record_index)``: ``file_id`` is the path as listed by
  ``list_files`` in the pipeline (so an id depends on its own file only); ``record_index`` is the 0-based line
  number for JSONL and ``line`` text, the paragraph number for ``blank_line`` text, the
  WARC record number (all record types) for WARC/WET, and 0 for ``file`` text.

  The format is resolved and the file opened when this is called, so those errors show
  at once; bad data inside the file is counted in ``stats`` and never raises.
  ``stats.bytes_read`` gets the bytes read from disk (the compressed size for gzip);
  ``empty_file`` and ``truncated`` (of a cut gzip stream) are known only once the
  iterator is exhausted.

  Raises:
    CorpusInputError: the file cannot be opened or read, or its format is unknown.
  """
  fmt = cfg.format if cfg.format != 'auto' else detect_format(path)
  source = _Input(path)  # opens the file: a missing file raises here, not on first next()
  if fmt == 'text':
    gen = _read_text(source, file_id, cfg, stats)
  elif fmt == 'jsonl':
    gen = _read_jsonl(source, file_id, cfg, stats)
  else:
    gen = _read_warc(source, file_id, cfg, stats, wet=fmt == 'wet')
  return _finish(gen, source, stats)


def read_files(paths: Sequence[str], cfg: ReaderConfig) -> tuple[list[Doc], list[FileStats]]:
  """Reads every file into memory (small inputs and tests); each path is its documents' file id."""
  docs: list[Doc] = []
  all_stats: list[FileStats] = []
  for path in paths:
    stats = FileStats(path)
    docs.extend(read_file(path, path, cfg, stats))
    all_stats.append(stats)
  return docs, all_stats


# ----------------------------------------------------------------------------- input stream


class _Input:
  """A file's bytes, gunzipped if they start with the gzip magic, that never raise on bad data.

  A gzip stream that is cut off or corrupt ends the input early instead of raising:
  every byte decompressed before the problem is handed out first, then ``problem`` says
  what happened. Several concatenated gzip members (per-record gzipped WARC) read as one
  stream; zero padding after the last member is ignored.
  """

  def __init__(self, path: str):
    try:
      self._file = open(path, 'rb')  # pylint: disable=consider-using-with  (closed by close())
      self.gzip = self._file.read(2) == b'\x1f\x8b'
      self._file.seek(0)
    except OSError as e:
      raise CorpusInputError(f'cannot read input file {path!r}: {e.strerror or e}; check that it exists '
                             'and is readable') from e
    self.path = path
    self.problem = ''  # why the input ended early ('' if it did not)
    self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if self.gzip else None
    self._in_member = False  # compressed bytes of an unfinished gzip member have been consumed
    self._pending = b''  # compressed bytes not yet given to the inflater
    self._buf = b''
    self._pos = 0
    self._eof = False
    self._delivered = 0  # (decompressed) bytes handed out, for tell()

  @property
  def truncated(self) -> bool:
    return bool(self.problem)

  def raw_bytes_read(self) -> int:
    """Bytes read from disk so far (compressed bytes for a gzip file)."""
    try:
      return self._file.tell()
    except (OSError, ValueError):
      return 0

  def close(self) -> None:
    self._file.close()

  def _read_raw(self) -> bytes:
    try:
      return self._file.read(_CHUNK if self._inflater is None else _GZ_CHUNK)
    except OSError as e:
      raise CorpusInputError(f'I/O error reading {self.path!r}: {e}') from e

  def _fill(self) -> bool:
    """Replaces the (consumed) buffer with the next chunk of data; False at the end of the input."""
    while not self._eof:
      if self._inflater is None:
        data = self._read_raw()
        if not data:
          self._eof = True
          return False
        self._set(data)
        return True
      if not self._pending:
        self._pending = self._read_raw()
        if not self._pending:
          if self._in_member:
            self.problem = 'gzip stream ends in the middle of a member (file cut short)'
          self._eof = True
          return False
      if not self._in_member and self._pending[0] == 0 and not self._pending.strip(b'\x00'):
        self._pending = b''  # zero padding between/after members, as gzip(1) tolerates
        continue
      before = self._inflater.copy()
      try:
        out = self._inflater.decompress(self._pending, _MAX_INFLATE)
      except zlib.error as e:
        # zlib drops everything the failing call decompressed; redo it in small steps
        # from the saved state to recover the data up to (nearly) the damaged spot.
        out = _salvage(before, self._pending)
        self.problem = f'corrupt gzip data after {self._delivered + len(out)} decompressed bytes ({e})'
        self._eof = True
        if out:
          self._set(out)
        return bool(out)
      self._in_member = True
      if self._inflater.eof:  # member finished: the rest of the input starts the next one
        self._pending = self._inflater.unused_data
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._in_member = False
      else:
        self._pending = self._inflater.unconsumed_tail
      if out:
        self._set(out)
        return True
    return False

  def _set(self, data: bytes) -> None:
    self._buf, self._pos = data, 0

  def read(self, size: int = -1) -> bytes:
    """Up to ``size`` bytes (all remaining if negative); fewer only at the end of the input."""
    parts = []
    got = 0
    while size < 0 or got < size:
      if self._pos >= len(self._buf) and not self._fill():
        break
      end = len(self._buf) if size < 0 else min(len(self._buf), self._pos + size - got)
      parts.append(self._buf[self._pos:end])
      got += end - self._pos
      self._pos = end
    self._delivered += got
    return b''.join(parts)

  def readline(self, limit: int = -1) -> bytes:
    """One line with its b'\\n', or at most ``limit`` bytes of it (if positive), or the unterminated tail."""
    parts = []
    got = 0
    while limit < 0 or got < limit:
      if self._pos >= len(self._buf) and not self._fill():
        break
      stop = len(self._buf) if limit < 0 else min(len(self._buf), self._pos + limit - got)
      nl = self._buf.find(b'\n', self._pos, stop)
      end = nl + 1 if nl >= 0 else stop
      parts.append(self._buf[self._pos:end])
      got += end - self._pos
      self._pos = end
      if nl >= 0:
        break
    self._delivered += got
    return b''.join(parts)

  def tell(self) -> int:
    return self._delivered

  def peek(self, size: int) -> bytes:
    """Up to ``size`` next bytes without consuming them (fewer only at the end of the input)."""
    while len(self._buf) - self._pos < size:
      rest = self._buf[self._pos:]
      if not self._fill():
        self._set(rest)
        break
      self._buf, self._pos = rest + self._buf, 0
    return self._buf[self._pos:self._pos + size]

  def skip_bom(self) -> None:
    """Drops a UTF-8 byte order mark at the very start (it would break JSON parsing)."""
    if self._delivered == 0 and self._pos == 0 and (self._buf or self._fill()):
      if self._buf.startswith(_BOM):
        self._pos = len(_BOM)


def _salvage(inflater, data: bytes, step: int = 256) -> bytes:
  """What ``inflater`` decompresses from ``data`` before the first error, fed ``step`` bytes at a time."""
  parts = []
  total = 0
  for i in range(0, len(data), step):
    try:
      part = inflater.decompress(data[i:i + step])
    except zlib.error:
      break
    parts.append(part)
    total += len(part)
    if total > 4 * _MAX_INFLATE:  # a damaged gzip bomb: stop rather than fill memory
      break
  return b''.join(parts)


def _finish(gen: Iterator[Doc], source: _Input, stats: FileStats) -> Iterator[Doc]:
  """Runs a format reader, then records what only the end of the input can tell."""
  try:
    yield from gen
    if source.tell() == 0:
      stats.empty_file = True
    if source.truncated:
      stats.truncated = True
      stats.note(f'input ends early: {source.problem}; the {stats.records} documents before the cut are kept, '
                 'the record the cut falls in is dropped')
  finally:
    stats.bytes_read += source.raw_bytes_read()
    source.close()


# ----------------------------------------------------------------------------- helpers


class _Notes:
  """Keeps the first message of each kind of problem, so one frequent kind cannot hide the others."""

  def __init__(self, stats: FileStats):
    self.stats = stats
    self.seen: set[str] = set()

  def __call__(self, kind: str, message: str) -> None:
    if kind not in self.seen:
      self.seen.add(kind)
      self.stats.note(message)


def _decode(data: bytes, encoding: str = 'utf-8') -> tuple[str, str]:
  """``(text, error)``: strict decoding if possible, else U+FFFD replacement and a description."""
  try:
    return data.decode(encoding), ''
  except UnicodeDecodeError as e:
    return data.decode(encoding, errors='replace'), f'bytes that are not valid {encoding} (first at byte {e.start})'


def _emit(text: str, decode_error: str, record_index: int, file_id: str, source: str, meta: dict,
          cfg: ReaderConfig, stats: FileStats, notes: _Notes, what: str) -> Doc | None:
  """Applies the checks every format shares; returns the Doc to yield or None (counted)."""
  if not text.strip():
    stats.empty_text += 1
    notes('empty_text', f'{what} {record_index}: empty text (skipped)')
    return None
  if len(text) > cfg.max_doc_chars:
    stats.too_large += 1
    notes('too_large', f'{what} {record_index}: {len(text):,} characters, over max_doc_chars={cfg.max_doc_chars:,} '
          '(skipped)')
    return None
  if decode_error:
    stats.decode_errors += 1
    notes('decode', f'{what} {record_index}: {decode_error}; decoded with U+FFFD replacement')
  stats.records += 1
  return Doc(id=make_id(file_id, record_index), text=text, source=source, meta=meta)


def _count_too_large_bytes(n_bytes: int, record_index: int, cfg: ReaderConfig, stats: FileStats, notes: _Notes,
                           what: str) -> None:
  stats.too_large += 1
  notes('too_large', f'{what} {record_index}: over {n_bytes:,} bytes, more than max_doc_chars={cfg.max_doc_chars:,} '
        'characters (skipped)')


def _lines(source: _Input, limit: int) -> Iterator[bytes | None]:
  """Each line with its terminator, or None for a line over ``limit`` bytes (read past, never held whole)."""
  while True:
    line = source.readline(limit + 1)
    if not line:
      return
    if len(line) > limit and not line.endswith(b'\n'):
      while True:  # drain the rest of the long line in bounded pieces
        more = source.readline(_CHUNK)
        if not more or more.endswith(b'\n'):
          break
      yield None
    else:
      yield line


def _cut_here(line: bytes, source: _Input) -> bool:
  """Whether ``line`` is the partial last line of an input that was cut off (it is then dropped)."""
  return source.truncated and not line.endswith(b'\n')


# ----------------------------------------------------------------------------- text


def _read_text(source: _Input, file_id: str, cfg: ReaderConfig, stats: FileStats) -> Iterator[Doc]:
  notes = _Notes(stats)
  # A UTF-8 character is at most 4 bytes, so a record over 4 * max_doc_chars bytes is
  # certainly too long: that bounds what is buffered, whatever the file holds.
  byte_limit = 4 * cfg.max_doc_chars
  source.skip_bom()
  path = source.path

  if cfg.doc_separator == 'file':
    data = source.read(byte_limit + 1)
    if len(data) > byte_limit:
      while source.read(_CHUNK):
        pass
      if not source.truncated:
        _count_too_large_bytes(byte_limit, 0, cfg, stats, notes, 'file')
      return
    if not data or source.truncated:  # empty (counted by _finish) or cut: the one record is incomplete
      return
    text, err = _decode(data)
    doc = _emit(text, err, 0, file_id, path, {}, cfg, stats, notes, 'file')
    if doc:
      yield doc
    return

  if cfg.doc_separator == 'line':
    for index, line in enumerate(_lines(source, byte_limit + 2)):  # + 2: room for '\r\n'
      if line is None:
        _count_too_large_bytes(byte_limit, index, cfg, stats, notes, 'line')
        continue
      if _cut_here(line, source):
        return
      if not line.strip():
        continue  # blank lines separate nothing in this mode; not counted
      text, err = _decode(line.rstrip(b'\r\n'))
      doc = _emit(text, err, index, file_id, path, {}, cfg, stats, notes, 'line')
      if doc:
        yield doc
    return

  # blank_line: paragraphs are runs of non-blank lines; index = paragraph number.
  para: list[bytes] = []
  size = 0
  oversize = False
  index = 0

  def flush() -> Doc | None:
    if oversize:
      _count_too_large_bytes(byte_limit, index, cfg, stats, notes, 'paragraph')
      return None
    text, err = _decode(b''.join(para).rstrip(b'\r\n'))
    return _emit(text, err, index, file_id, path, {}, cfg, stats, notes, 'paragraph')

  for line in _lines(source, byte_limit + 2):
    if line is not None and _cut_here(line, source):
      return  # the paragraph in progress is incomplete
    if line is not None and not line.strip():
      if para or oversize:
        doc = flush()
        if doc:
          yield doc
        index += 1
        para, size, oversize = [], 0, False
      continue
    if line is None or size + len(line) > byte_limit + 2:
      oversize, para = True, []
    elif not oversize:
      para.append(line)
      size += len(line)
  if (para or oversize) and not source.truncated:
    doc = flush()
    if doc:
      yield doc


# ----------------------------------------------------------------------------- JSONL


def _read_jsonl(source: _Input, file_id: str, cfg: ReaderConfig, stats: FileStats) -> Iterator[Doc]:
  notes = _Notes(stats)
  # JSON escapes can take up to 12 bytes per character ('\ud83d\ude00'), and other fields
  # add to the line: lines longer than this cannot hold an acceptable text.
  byte_limit = 12 * cfg.max_doc_chars + (1 << 20)
  field = cfg.text_field
  source.skip_bom()
  for index, line in enumerate(_lines(source, byte_limit)):
    if line is None:
      _count_too_large_bytes(byte_limit, index, cfg, stats, notes, 'line')
      continue
    if _cut_here(line, source):
      return
    if not line.strip():
      continue  # blank lines are allowed and not counted
    raw, err = _decode(line)
    try:
      record = json.loads(raw)
    except ValueError as e:  # json.JSONDecodeError, and recursion or number-size limits
      stats.bad_json += 1
      notes('bad_json', f'line {index}: invalid JSON ({e}) (skipped)')
      continue
    except RecursionError:
      stats.bad_json += 1
      notes('bad_json', f'line {index}: JSON nested too deeply (skipped)')
      continue
    if not isinstance(record, dict):
      stats.bad_json += 1
      notes('bad_json', f'line {index}: a JSON {type(record).__name__}, not an object (skipped)')
      continue
    text = record.pop(field, None)
    if not isinstance(text, str):
      stats.missing_text += 1
      have = ', '.join(sorted(record)[:10]) or 'none'
      notes('missing_text', f'line {index}: no string field {field!r} (fields: {have}); '
            'if the text is in another field, pass --config.reader.text_field=<that field> (skipped)')
      continue
    doc = _emit(text, err, index, file_id, source.path, record, cfg, stats, notes, 'line')
    if doc:
      yield doc


# ----------------------------------------------------------------------------- WARC / WET


def _is_html(content_type: str | None, body: bytes) -> bool:
  if content_type:
    mime = content_type.split(';', 1)[0].strip().lower()
    return 'html' in mime  # text/html, application/xhtml+xml
  head = body[:_SNIFF_BYTES].lower()
  return b'<html' in head or b'<!doctype html' in head


def _read_warc(source: _Input, file_id: str, cfg: ReaderConfig, stats: FileStats, wet: bool) -> Iterator[Doc]:
  from warcio.archiveiterator import ArchiveIterator  # pylint: disable=import-outside-toplevel
  notes = _Notes(stats)
  text_cap = 4 * cfg.max_doc_chars  # see _read_text
  html_cap = max(_MIN_HTML_CAP, text_cap)
  # A file that does not start with a WARC record header is not a WARC file at all (a
  # mislabelled or corrupt download): say so, rather than what warcio trips over first.
  head = source.peek(64).lstrip(b'\r\n')
  if head and not head.startswith(b'WARC/'):
    stats.wrong_format = True
    notes('wrong_format', f'not a {"WET" if wet else "WARC"} file: it starts with {head[:24]!r} instead of a '
          f'"WARC/1.x" record header; nothing was read from it (if it holds another format, rename it or '
          'pass --config.reader.format=...)')
    return
  extract = None if wet else make_extractor(cfg.extractor, cfg.extraction)  # imported on first use
  wanted = 'conversion' if wet else 'response'
  records = iter(ArchiveIterator(source))
  index = -1
  while True:
    index += 1
    try:
      record = next(records)
    except StopIteration:
      return
    except CorpusInputError:
      raise  # a real I/O error from _Input
    except Exception as e:  # pylint: disable=broad-except
      # warcio cannot find the next record (garbage after a record whose Content-Length
      # was wrong, or not a WARC file at all; usually ArchiveLoadFailed) and cannot
      # resynchronise: stop here, keeping what was read.
      if not source.truncated:
        stats.truncated = True
        notes('warc_parse', f'record {index}: not a readable WARC record ({" ".join(str(e).split())[:200]}); '
              'reading of this file stops here')
      return
    headers = record.rec_headers
    if headers.get_header('Content-Length') is None:
      stats.truncated = True
      notes('warc_parse', f'record {index}: WARC header without Content-Length; reading of this file stops here')
      return
    is_wanted = record.rec_type == wanted
    body = b''
    body_error = ''
    if is_wanted:
      try:
        body = record.content_stream().read((html_cap if not wet else text_cap) + 1)
      except Exception as e:  # pylint: disable=broad-except  (bad chunked encoding / content-encoding)
        body_error = f'{type(e).__name__}: {e}'
    while record.raw_stream.read(_CHUNK):  # the rest of the record, so we can tell whether it is all there
      pass
    if getattr(record.raw_stream, 'limit', 0) > 0:  # fewer bytes than its Content-Length: cut off
      stats.truncated = True
      if not source.truncated:  # a cut gzip stream is reported once, by _finish
        notes('warc_short', f'record {index}: shorter than its Content-Length (file cut short); dropped, '
              'reading stops here')
      return
    if not is_wanted:
      continue  # request / metadata / warcinfo / ...: not documents; no need to count
    meta = {'url': headers.get_header('WARC-Target-URI') or '', 'date': headers.get_header('WARC-Date') or '',
            'warc_record_id': headers.get_header('WARC-Record-ID') or ''}
    if wet:
      if len(body) > text_cap:
        _count_too_large_bytes(text_cap, index, cfg, stats, notes, 'record')
        continue
      text, err = _decode(body)
    else:
      http = record.http_headers
      content_type = http.get_header('Content-Type') if http else None
      if body_error:
        stats.extract_failed += 1
        notes('extract', f'record {index} ({meta["url"]}): cannot decode the HTTP body ({body_error}) (skipped)')
        continue
      if http is None or not _is_html(content_type, body):
        stats.non_html += 1
        notes('non_html', f'record {index} ({meta["url"]}): not HTML (Content-Type {content_type!r}) (skipped)')
        continue
      if len(body) > html_cap:
        _count_too_large_bytes(html_cap, index, cfg, stats, notes, 'HTML record')
        continue
      # Header charset, BOM, the page's own <meta>/XML declaration, then a detector: a page
      # decoded without errors by any of them is not a decode error (llm.data.clean.html).
      decoded = decode_html(body, content_type)
      html, err = decoded.text, decoded.error
      try:
        text = extract(html, meta['url'])
      except Exception as e:  # pylint: disable=broad-except  (an extractor bug must not stop the run)
        text, fail = None, f'{type(e).__name__}: {e}'
      else:
        fail = 'no main text found'
      if not text or not text.strip():
        stats.extract_failed += 1
        notes('extract', f'record {index} ({meta["url"]}): {cfg.extractor} extraction failed ({fail}) (skipped)')
        continue
    doc = _emit(text, err, index, file_id, source.path, meta, cfg, stats, notes, 'record')
    if doc:
      yield doc
