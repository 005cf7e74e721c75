"""The record every corpus stage passes along, and per-file read accounting."""

from __future__ import annotations

import dataclasses
from typing import Any


class CorpusInputError(ValueError):
  """A mistake in what the user asked for (inputs, output, config); the run stops before any
  work and the message says how to fix it, in the flags the user types
  (``--config.reader.text_field=...``). ``python -m llm.data.clean.pipeline`` prints it as one
  line, without a traceback."""


@dataclasses.dataclass
class Doc:
  """One document.

  ``id`` is ``'<file>#<record index:09d>'``: the file is the input path as the input glob
  matched it (normalised: ``raw/./a.jsonl`` is ``raw/a.jsonl``), the record index the
  position of the record inside that file. An id therefore depends on the file and the
  record alone, never on which other files are in the run, so results cached for a file
  stay valid when files are added, removed or renamed around it. Sorting ids gives one
  global order (files in path order, records in file order) that does not depend on how
  the work was split across processes or Beam workers; every "keep the first" decision
  (deduplication) uses this order.
  """
  id: str
  text: str
  source: str = ''  # the input file the document came from
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # url, JSONL fields, ...

  def to_json(self) -> dict[str, Any]:
    return {'id': self.id, 'text': self.text, 'source': self.source, 'meta': self.meta}

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> 'Doc':
    return cls(id=d['id'], text=d['text'], source=d.get('source', ''), meta=d.get('meta', {}))


def make_id(file_id: str, record_index: int) -> str:
  """The id of record ``record_index`` of the input file ``file_id`` (see ``Doc``)."""
  return f'{file_id}#{record_index:09d}'


def split_id(doc_id: str) -> tuple[str, int]:
  """``(file_id, record_index)`` of an id made by ``make_id`` (file paths may hold '#')."""
  file_id, _, record = doc_id.rpartition('#')
  return file_id, int(record)


@dataclasses.dataclass
class FileStats:
  """What reading one input file produced and what it had to skip, and why.

  Nothing bad in a file stops the run: each problem is counted here (and the first few
  messages kept) so the report can show it per file.
  """
  path: str
  records: int = 0  # documents yielded
  bytes_read: int = 0
  empty_file: bool = False
  decode_errors: int = 0  # records with bytes that are not UTF-8 (decoded with U+FFFD, still yielded)
  bad_json: int = 0  # JSONL lines that do not parse (skipped)
  missing_text: int = 0  # JSONL records without a string text field (skipped)
  empty_text: int = 0  # records whose text is empty or whitespace (skipped)
  too_large: int = 0  # records over the size limit (skipped)
  truncated: bool = False  # gzip stream or WARC record cut short (what came before is kept)
  non_html: int = 0  # WARC responses that are not HTML (skipped)
  extract_failed: int = 0  # HTML records the extractor could not turn into text (skipped)
  wrong_format: bool = False  # not in the format its name says (e.g. a .warc.gz that is no WARC): nothing read
  errors: list[str] = dataclasses.field(default_factory=list)  # first few messages, for the report

  MAX_MESSAGES = 5

  def note(self, message: str) -> None:
    if len(self.errors) < self.MAX_MESSAGES:
      self.errors.append(message)

  def merge(self, other: 'FileStats') -> None:
    """Adds another partial count of the same file (Beam may read a file in pieces)."""
    for f in dataclasses.fields(self):
      if f.name in ('path',):
        continue
      a, b = getattr(self, f.name), getattr(other, f.name)
      if isinstance(a, bool):
        setattr(self, f.name, a or b)
      elif isinstance(a, int):
        setattr(self, f.name, a + b)
      elif isinstance(a, list):
        setattr(self, f.name, (a + b)[:self.MAX_MESSAGES])

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class DocOutcome:
  """What the pipeline did to one input document: the row the report aggregates.

  Counts add up by construction: every input document is either kept or has exactly one
  ``removed_by`` (the first stage that dropped it, in pipeline order).
  """
  id: str
  source: str
  chars_in: int
  words_in: int
  kept: bool = True
  removed_by: str = ''  # first stage that dropped it ('' if kept): 'language', 'gopher_repetition', 'exact_dedup', ...
  reason: str = ''  # that stage's specific reason, e.g. 'gopher_too_many_hashes'
  failed: list[str] = dataclasses.field(default_factory=list)  # every filter rule that would drop it (rule overlap)
  chars_out: int = 0  # characters of the final text (0 if dropped)
  split: str = ''  # 'train' or 'validation' for a kept document, '' if dropped
  words_out: int = 0
  edits: dict[str, int] = dataclasses.field(default_factory=dict)  # chars removed by modifying rules: {'c4_lines': 120, 'line_dedup': 40}
  pii: dict[str, int] = dataclasses.field(default_factory=dict)  # placeholders inserted: {'email': 2, 'phone': 1, 'ip': 0}
  signals: dict[str, float] = dataclasses.field(default_factory=dict)  # quality signals of the input text, for histograms
  terms_in: dict[str, int] = dataclasses.field(default_factory=dict)  # identity terms in the input: {'gender:women': 3}
  terms_out: dict[str, int] = dataclasses.field(default_factory=dict)  # identity terms in the final text ({} if dropped)
  preview: str = ''  # start of the input text, for the report's removed examples

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> 'DocOutcome':
    return cls(**d)
