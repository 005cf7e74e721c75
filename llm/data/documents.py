"""Text sources -> documents, and the deterministic train/validation split.

Shared by the two ways text reaches training: prepared once into token shards
(``llm.data.prepare``) or read on the fly for a small corpus (``llm.data.stream``), so a
document is the same document, on the same side of the split, either way.

* Files: plain text (``doc_separator``: the whole file, blank-line or line separated
  documents) or JSONL (``.jsonl``/``.json``, the ``jsonl_field`` of each line), optionally
  gzipped; local paths or any filesystem ``tf.io.gfile`` knows (``gs://bucket/...``).
* TFDS datasets such as the corpus pipeline's output (``tfds:<version folder>``), read
  split by split and shard by shard, each shard sorted by document id.
* Split: ``tail`` keeps the last ``val_fraction`` of every document for validation
  (nanoGPT's split of one long text, cut at a line boundary); ``document`` sends whole
  documents to validation by a hash of their text (duplicates land on the same side).

The options are read from any object with the fields below (``DataConfig`` for
training, ``PrepareConfig`` for preparation): ``doc_separator``, ``jsonl_field``,
``decode_errors``, ``split``, ``val_fraction``.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

REMOTE = ('gs://', 's3://', 'hdfs://', 'ram://')  # paths handled by tf.io.gfile


class DataError(ValueError):
  """Bad data input; the message names the file and what to change."""


def is_remote(path: str) -> bool:
  return path.startswith(REMOTE)


def resolve(pattern: str, root: str = '.') -> str:
  """``pattern`` made absolute against ``root`` (remote paths are left as they are)."""
  return pattern if is_remote(pattern) or os.path.isabs(pattern) else os.path.join(root, pattern)


def glob_files(pattern: str) -> list[str]:
  """Sorted files matching a glob, local or remote."""
  if is_remote(pattern):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return sorted(p for p in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(p))
  return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))


def listdir(path: str) -> list[str]:
  """Names in a local or remote directory ([] if there is none)."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return [n.rstrip('/') for n in tf.io.gfile.listdir(path)] if tf.io.gfile.isdir(path) else []
  return sorted(os.listdir(path)) if os.path.isdir(path) else []


def remove(path: str) -> None:
  """Remove a local or remote file or directory tree, if it exists."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
      tf.io.gfile.remove(path)
  elif os.path.isdir(path):
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(path)
  elif os.path.lexists(path):
    os.remove(path)


def open_binary(path: str) -> BinaryIO:
  """A file for reading bytes, local or remote; ``.gz`` files are decompressed."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    f: Any = tf.io.gfile.GFile(path, 'rb')
  else:
    f = open(path, 'rb')  # pylint: disable=consider-using-with
  return gzip.GzipFile(fileobj=f, mode='rb') if path.endswith('.gz') else f


def stat(path: str) -> tuple[int, int]:
  """(size in bytes, modification time in ns) of a local or remote file; FileNotFoundError if none."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    try:
      s = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
      raise FileNotFoundError(path) from None
    return int(s.length), int(s.mtime_nsec)
  s = os.stat(path)
  return s.st_size, s.st_mtime_ns


def sha256(path: str) -> str:
  """SHA-256 of a file's bytes as stored (a .gz file is hashed compressed)."""
  h = hashlib.sha256()
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    f: Any = tf.io.gfile.GFile(path, 'rb')
  else:
    f = open(path, 'rb')  # pylint: disable=consider-using-with
  with f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def _decode(raw: bytes, path: str, errors: str, line: int | None = None) -> str:
  try:
    return raw.decode('utf-8', errors=errors)
  except UnicodeDecodeError as e:
    where = f'line {line}' if line is not None else f'byte offset {e.start}'
    raise DataError(
        f'{path}: {where} is not valid UTF-8 ({e.reason}); fix the file or set '
        f"--config.data.decode_errors=replace to substitute U+FFFD") from None


def is_jsonl(path: str) -> bool:
  name = path[:-3] if path.endswith('.gz') else path
  return name.endswith(('.jsonl', '.json'))


def iter_documents(path: str, cfg: Any) -> Iterator[str]:
  """The non-empty documents of one file, in order, read as a stream (JSONL line by line).

  Raises DataError naming the file: unreadable or truncated, empty, invalid UTF-8 or JSON
  (with the line), a JSONL line without the text field, no non-empty document.
  """
  seen_any = seen_text = False
  try:
    with open_binary(path) as f:
      if is_jsonl(path):
        for i, line in enumerate(f, start=1):
          if not line.strip():
            continue
          seen_any = True
          try:
            obj = json.loads(_decode(line, path, cfg.decode_errors, i))
          except json.JSONDecodeError as e:
            raise DataError(f'{path}: line {i} is not valid JSON ({e.msg}); each line must be one object') from None
          if not isinstance(obj, dict) or not isinstance(obj.get(cfg.jsonl_field), str):
            raise DataError(f'{path}: line {i} has no string field {cfg.jsonl_field!r}; '
                            f'set --config.data.jsonl_field to the field that holds the text')
          if obj[cfg.jsonl_field].strip():
            seen_text = True
            yield obj[cfg.jsonl_field]
      else:
        raw = f.read()
        seen_any = bool(raw.strip())
        text = _decode(raw, path, cfg.decode_errors)
        if cfg.doc_separator == 'file':
          docs = [text]
        elif cfg.doc_separator == 'blank_line':
          docs = [d.strip('\n') for d in text.split('\n\n')]
        elif cfg.doc_separator == 'line':
          docs = text.split('\n')
        else:
          raise DataError(f"data.doc_separator must be 'file', 'blank_line' or 'line', got {cfg.doc_separator!r}")
        for d in docs:
          if d.strip():
            seen_text = True
            yield d
  except (OSError, EOFError, gzip.BadGzipFile, io.UnsupportedOperation) as e:
    raise DataError(f'{path}: cannot be read ({e}); check the file (a truncated .gz?)') from None
  if not seen_any:
    raise DataError(f'{path}: the file is empty; remove it from the sources or fill it')
  if not seen_text:
    raise DataError(f'{path}: holds no non-empty document')


def read_documents(path: str, cfg: Any) -> list[str]:
  """The documents of one file, in order (``iter_documents`` as a list)."""
  return list(iter_documents(path, cfg))


def check_split(cfg: Any) -> None:
  if not 0 <= cfg.val_fraction < 1:
    raise DataError(f'data.val_fraction must be in [0, 1), got {cfg.val_fraction}')
  if cfg.split not in ('tail', 'document'):
    raise DataError(f"data.split must be 'tail' or 'document', got {cfg.split!r}")


def split_rule(cfg: Any) -> str:
  """The split rule in words, as a manifest records it."""
  if cfg.split == 'tail':
    return (f'tail: the last {cfg.val_fraction:g} of every document (cut at the next line boundary) '
            f'is validation')
  return (f'document: a document is validation when int.from_bytes(blake2b(utf-8 text, digest_size=8), '
          f"'little') / 2**64 < {cfg.val_fraction:g}")


def split_document(doc: str, cfg: Any) -> tuple[str, str]:
  """(training part, validation part) of one document; either may be ''."""
  f = cfg.val_fraction
  if cfg.split == 'tail':
    cut = int(len(doc) * (1 - f))
    nl = doc.find('\n', cut)  # cut at a line boundary so no line is shared
    cut = nl + 1 if 0 <= nl < len(doc) - 1 else cut
    return doc[:cut], doc[cut:] if doc[cut:].strip() else ''
  h = hashlib.blake2b(doc.encode('utf-8', 'replace'), digest_size=8).digest()
  return ('', doc) if int.from_bytes(h, 'little') / 2**64 < f else (doc, '')


def split_documents(docs: list[str], cfg: Any) -> tuple[list[str], list[str]]:
  """Deterministic train/validation split of a list of documents (see the module docstring)."""
  check_split(cfg)
  parts = [split_document(d, cfg) for d in docs]
  return [t for t, _ in parts if t], [v for _, v in parts if v]


# ------------------------------------------------------------------------------- TFDS


def tfds_builder(path: str, root: str = '.'):
  """The TFDS builder of a prepared dataset's version folder (``runs/corpus/tfds/clean_corpus/default/1.0.0``)."""
  full = resolve(path, root)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if not tf.io.gfile.exists(os.path.join(full, 'dataset_info.json')):
    raise DataError(f'tfds:{path}: no prepared TFDS dataset there (no dataset_info.json in {full}); '
                    'point it at the version folder the corpus pipeline printed, e.g. '
                    'tfds:runs/corpus/tfds/clean_corpus/default/1.0.0')
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder_from_directory(full)
  if 'train' not in builder.info.splits:
    raise DataError(f'tfds:{path} has no train split (it has {list(builder.info.splits)}): nothing to '
                    'train on; the corpus pipeline\'s report says why')
  return builder


def tfds_shards(builder) -> dict[str, int]:
  """{split: number of shards} of the train and validation splits a TFDS dataset has."""
  return {s: builder.info.splits[s].num_shards for s in ('train', 'validation') if s in builder.info.splits}


def read_tfds_split(builder, split: str) -> list[str]:
  """The non-empty texts of ``split`` (e.g. ``'train'`` or ``'train[3shard]'``), sorted by id.

  Sorted: TFDS stores examples in a hashed order; training should not depend on it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  rows = sorted((r['id'], r['text']) for r in tfds.as_numpy(builder.as_dataset(split=split)))
  return [t.decode('utf-8') for _, t in rows if t.strip()]


def read_tfds(path: str, root: str = '.') -> tuple[list[str], list[str] | None]:
  """Train and validation texts of a prepared TFDS dataset directory.

  ``path`` is the dataset's version folder, e.g. the corpus pipeline's
  ``runs/corpus/tfds/clean_corpus/default/1.0.0``; its own splits are used as they are.
  Validation is None when the dataset has no validation split (the corpus pipeline leaves
  an empty split out: a small corpus may have no validation document).
  """
  builder = tfds_builder(path, root)
  train = read_tfds_split(builder, 'train')
  if not train:
    raise DataError(f'tfds:{path} has no training documents')
  val = read_tfds_split(builder, 'validation') if 'validation' in builder.info.splits else None
  return train, val
