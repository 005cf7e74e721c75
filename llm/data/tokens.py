"""Token streams: documents as one long array of token ids, in memory or in shards on disk.

A split of a corpus is the concatenation of its documents, each ``[BOS] tokens [EOS]``
(BOS only for tokenizers that start documents with it), plus one bit per token that says
where a document starts. Training rows are windows of that stream (``llm.data.stream``),
so any row is one contiguous read whatever the corpus size: nothing is loaded at start-up
but the index.

On disk (``llm.data.prepare`` writes it) a split is a list of shards, each two zarr v3
arrays read and written with TensorStore, locally or on ``gs://``:

  <dir>/<split>/<shard>/tokens   uint16 (uint32 for vocabularies of 65,535 ids or more)
  <dir>/<split>/<shard>/starts   uint8, the document-start bits packed little-endian

Each array is one file of 16,384-element chunks, each chunk with a CRC-32C that is
checked on every read (``sharding_indexed`` + ``crc32c`` codecs), so a flipped bit or a cut
file is an error, never different data. A chunk that is missing reads as the fill value,
the dtype's largest value, which no token id can be, and is reported as damage too.
Why zarr through TensorStore rather than ArrayRecord or a raw file: ArrayRecord cannot
read ``gs://`` (google/array_record#120) and a raw file has no checksums; TensorStore,
already installed with Orbax, gives both; a 2,049-token row costs ~0.15 ms, assembly included.
``manifest.json`` is the index (``llm.data.prepare``): shards, token and document counts,
sizes and SHA-256 of every file, the tokenizer, the sources and the split rule.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.data.documents import DataError, is_remote, resolve

FORMAT = 'llm-tokens/1'
MANIFEST = 'manifest.json'
SPLITS = ('train', 'validation')
CHUNK = 16384  # tokens per checksummed chunk (a row of 2,049 tokens reads one or two)
ARRAYS = ('tokens', 'starts')


def token_dtype(vocab_size: int) -> np.dtype:
  """The smallest unsigned dtype whose largest value (the fill value) is not a token id."""
  return np.dtype(np.uint16 if vocab_size < np.iinfo(np.uint16).max else np.uint32)


# ---------------------------------------------------------------------------- in memory


@dataclasses.dataclass
class MemoryTokens:
  """A token stream held in memory: ``tokens`` [n] and ``starts`` bool [n]."""

  tokens: np.ndarray
  starts: np.ndarray

  @property
  def num_tokens(self) -> int:
    return len(self.tokens)

  def read(self, spans: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(self.tokens[a:b].astype(np.int32), self.starts[a:b]) for a, b in spans]


def concat_documents(token_docs: Sequence[np.ndarray], bos: int | None, eos: int | None,
                     dtype: np.dtype | type = np.int32) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, starts) of documents laid end to end, each ``[bos] doc [eos]``."""
  head = [] if bos is None else [bos]
  tail = [] if eos is None else [eos]
  full = [np.concatenate([head, d, tail]).astype(dtype) for d in token_docs]
  if not full:
    return np.zeros(0, dtype), np.zeros(0, bool)
  tokens = np.concatenate(full)
  starts = np.zeros(len(tokens), bool)
  starts[np.cumsum([0] + [len(d) for d in full[:-1]])] = True
  return tokens, starts


def memory_tokens(token_docs: Sequence[np.ndarray], bos: int | None, eos: int | None, vocab_size: int) -> MemoryTokens:
  return MemoryTokens(*concat_documents(token_docs, bos, eos, token_dtype(vocab_size)))


# ------------------------------------------------------------------------------ on disk


def _kvstore(path: str) -> Any:
  if is_remote(path):
    return path.rstrip('/') + '/'  # TensorStore's URL form: gs://bucket/dir/
  return {'driver': 'file', 'path': os.path.abspath(path)}


def _array_spec(path: str, dtype: np.dtype, length: int, chunk: int) -> dict[str, Any]:
  chunk = min(chunk, length)
  checked = [{'name': 'bytes', 'configuration': {'endian': 'little'}}, {'name': 'crc32c'}]
  return {
      'driver': 'zarr3', 'kvstore': _kvstore(path),
      'metadata': {
          'shape': [length], 'data_type': dtype.name, 'fill_value': int(np.iinfo(dtype).max),
          'chunk_grid': {'name': 'regular', 'configuration': {'chunk_shape': [-(-length // chunk) * chunk]}},  # one file
          'codecs': [{'name': 'sharding_indexed', 'configuration': {
              'chunk_shape': [chunk], 'codecs': checked, 'index_codecs': checked}}]},
      'create': True, 'delete_existing': True}


def write_shard(path: str, tokens: np.ndarray, doc_starts: np.ndarray) -> dict[str, Any]:
  """Write one shard (``tokens`` [n] of the shard's dtype, ``doc_starts`` the offsets where documents start).

  Returns {'tokens': n, 'docs': number of starts, 'files': {relative path: {'size', 'sha256'}}}.
  Each array is written in one call, so its file is written once and its bytes depend only
  on the data: every runner writes identical shards.
  """
  import tensorstore as ts  # pylint: disable=import-outside-toplevel
  n = len(tokens)
  if n == 0:
    return {'tokens': 0, 'docs': 0, 'files': {}}
  bits = np.zeros(-(-n // 8), np.uint8)
  np.bitwise_or.at(bits, doc_starts // 8, (1 << (doc_starts % 8)).astype(np.uint8))
  for name, values, chunk in (('tokens', tokens, CHUNK), ('starts', bits, CHUNK // 8)):
    arr = ts.open(_array_spec(os.path.join(path, name), values.dtype, len(values), chunk)).result()
    arr.write(values).result()
  return {'tokens': int(n), 'docs': len(doc_starts), 'files': shard_files(path)}


def shard_files(path: str) -> dict[str, dict[str, Any]]:
  """{relative path: {'size', 'sha256'}} of every file of a shard."""
  from llm.data.documents import sha256, stat  # pylint: disable=import-outside-toplevel
  out = {}
  for name in ARRAYS:
    for rel in (f'{name}/zarr.json', f'{name}/c/0'):
      full = os.path.join(path, rel)
      out[rel] = {'size': stat(full)[0], 'sha256': sha256(full)}
  return out


class _Context:
  """One TensorStore context per process: a small cache for the chunk indexes of open shards."""
  value = None

  @classmethod
  def get(cls):
    if cls.value is None:
      import tensorstore as ts  # pylint: disable=import-outside-toplevel
      cls.value = ts.Context({'cache_pool': {'total_bytes_limit': 64 << 20}, 'data_copy_concurrency': {'limit': 2}})
    return cls.value


class Shard:
  """One shard of a prepared split, opened lazily (a forked worker opens its own)."""

  def __init__(self, path: str, num_tokens: int):
    self.path, self.num_tokens = path, num_tokens
    self._arrays = None
    self._pid = None

  def _open(self):
    if self._arrays is None or self._pid != os.getpid():
      import tensorstore as ts  # pylint: disable=import-outside-toplevel
      try:
        self._arrays = [ts.open({'driver': 'zarr3', 'kvstore': _kvstore(os.path.join(self.path, name))},
                                open=True, read=True, context=_Context.get()).result() for name in ARRAYS]
      except ValueError as e:
        raise DataError(f'{self.path}: the shard cannot be opened ({_short(e)}); rerun the same '
                        f'`python -m llm.data.prepare` command to rewrite it') from None
      self._pid = os.getpid()
    return self._arrays

  def read_async(self, a: int, b: int):
    """Futures of (tokens [a, b), the packed start bits covering them)."""
    tokens, starts = self._open()
    return tokens[a:b].read(), starts[a // 8:(b - 1) // 8 + 1].read()

  def finish(self, futures, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    try:
      tokens, bits = (f.result() for f in futures)
    except ValueError as e:  # DATA_LOSS: a checksum that does not match, a cut file
      raise DataError(f'{self.path}: damaged shard ({_short(e)}); rerun the same `python -m llm.data.prepare` '
                      f'command with --config.verify=True to find and rewrite damaged shards') from None
    if tokens.size and tokens.max() == np.iinfo(tokens.dtype).max:
      raise DataError(f'{self.path}: part of the shard is missing (tokens [{a}, {b}) read as the fill value); '
                      f'rerun the same `python -m llm.data.prepare` command with --config.verify=True')
    starts = np.unpackbits(bits, bitorder='little')[a % 8:a % 8 + (b - a)].astype(bool)
    return tokens.astype(np.int32), starts


def _short(e: Exception) -> str:
  return str(e).split('\n')[0][:300]


class ShardedTokens:
  """A prepared split: its shards laid end to end as one token stream."""

  def __init__(self, shards: Sequence[Shard]):
    self.shards = [s for s in shards if s.num_tokens > 0]
    self.offsets = np.cumsum([0] + [s.num_tokens for s in self.shards])

  @property
  def num_tokens(self) -> int:
    return int(self.offsets[-1])

  def read(self, spans: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(tokens int32, starts bool) of each span [a, b) of the stream; all reads in flight at once."""
    pending = []
    for a, b in spans:
      parts = []
      s = int(np.searchsorted(self.offsets, a, side='right')) - 1
      while a < b:  # a span crosses into the next shard when it runs past this one's end
        lo, hi = a - self.offsets[s], min(b, self.offsets[s + 1]) - self.offsets[s]
        parts.append((self.shards[s], int(lo), int(hi), self.shards[s].read_async(int(lo), int(hi))))
        a, s = int(self.offsets[s] + hi), s + 1
      pending.append(parts)
    out = []
    for parts in pending:
      got = [shard.finish(f, lo, hi) for shard, lo, hi, f in parts]
      out.append((np.concatenate([t for t, _ in got]), np.concatenate([s for _, s in got])))
    return out


# ----------------------------------------------------------------------------- manifest


def read_json(path: str) -> dict[str, Any] | None:
  """A JSON file's object, local or remote; None if the file does not exist."""
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path, 'r') as f:
      return json.load(f)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def write_json(path: str, obj: dict[str, Any]) -> None:
  """Write a JSON file atomically (a temporary name, then a rename), local or remote."""
  text = json.dumps(obj, indent=1, sort_keys=True)
  tmp = f'{path}.tmp-{os.getpid()}'
  if is_remote(path):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    with tf.io.gfile.GFile(tmp, 'w') as f:
      f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def tokenizer_identity(tok) -> dict[str, Any]:
  """What a manifest records of a tokenizer: its spec (kind, file, SHA-256) and special ids."""
  spec = tok.spec()
  return {**spec, 'vocab_size': int(tok.vocab_size), 'bos_id': tok.bos_id, 'eos_id': tok.eos_id,
          'add_bos': bool(tok.add_bos)}


def same_tokenizer(a: dict[str, Any], b: dict[str, Any]) -> bool:
  """Two tokenizer identities name the same tokenizer (same kind and file contents; paths may differ)."""
  keys = ('kind', 'sha256', 'vocab_size', 'bos_id', 'eos_id', 'add_bos')
  return all(a.get(k) == b.get(k) for k in keys)


def describe_tokenizer(ident: dict[str, Any]) -> str:
  path = ident.get('spm_model') or ident.get('path') or ''
  return ident.get('kind', '?') + (f' {path} (sha256 {ident.get("sha256", "")[:12]})' if path else '')


def load_manifest(directory: str, root: str = '.') -> tuple[str, dict[str, Any]]:
  """(absolute directory, manifest) of a prepared corpus; DataError if there is none."""
  full = resolve(directory, root)
  manifest = read_json(os.path.join(full, MANIFEST))
  if manifest is None:
    raise DataError(f'tokens:{directory}: no {MANIFEST} in {full}. Prepare the corpus first with '
                    f'`python -m llm.data.prepare --config=configs/prepare.py --config.output={directory} ...`; '
                    f'a preparation that was interrupted writes no manifest: rerun the same command to finish it')
  if manifest.get('format') != FORMAT:
    raise DataError(f'{full}/{MANIFEST} is not a prepared token corpus of this version (format '
                    f'{manifest.get("format")!r}, expected {FORMAT!r}); prepare it again')
  return full, manifest


def check_shard_files(directory: str, manifest: dict[str, Any]) -> None:
  """Every file the manifest lists exists with its recorded size (a stat per file, no reads)."""
  from llm.data.documents import stat  # pylint: disable=import-outside-toplevel
  for split in SPLITS:
    for shard in manifest['splits'].get(split, {}).get('shards', []):
      for rel, info in shard['files'].items():
        path = os.path.join(directory, shard['path'], rel)
        try:
          size = stat(path)[0]
        except OSError:
          raise DataError(f'{path}: missing (listed in {directory}/{MANIFEST}); rerun the same '
                          f'`python -m llm.data.prepare` command to rewrite the shard') from None
        if size != info['size']:
          raise DataError(f'{path}: {size} bytes, but {info["size"]} were written (truncated or replaced); '
                          f'rerun the same `python -m llm.data.prepare` command to rewrite the shard')


def check_sources(directory: str, manifest: dict[str, Any]) -> list[str]:
  """Raise DataError if a source file the corpus was prepared from has changed since.

  A file whose size and modification time are as recorded is taken as unchanged; one whose
  time differs is hashed. Files that are gone (or not reachable from this host) are
  skipped and returned: the shards do not need them.
  """
  from llm.data.documents import sha256, stat  # pylint: disable=import-outside-toplevel
  gone = []
  for source in manifest.get('sources', []):
    for f in source.get('files', []):
      path = f['path']
      try:
        size, mtime = stat(path)
      except OSError:
        gone.append(path)
        continue
      if (size, mtime) == (f['size'], f['mtime_ns']):
        continue
      if size != f['size'] or sha256(path) != f['sha256']:
        raise DataError(f'{path} has changed since {directory} was prepared from it, so the shards hold other '
                        f'text; rerun the same `python -m llm.data.prepare` command to update them (only the '
                        f'affected shards are redone), or set --config.data.check_sources=False to train on the '
                        f'text as it was prepared')
  return gone


def open_prepared(directory: str, tokenizer, root: str = '.', check_sources_: bool = True
                  ) -> tuple[ShardedTokens, ShardedTokens, dict[str, Any]]:
  """(train stream, validation stream, manifest) of a prepared corpus, after the checks that
  cost no data reads: the tokenizer, every shard file's presence and size, the sources."""
  full, manifest = load_manifest(directory, root)
  want = tokenizer_identity(tokenizer)
  if not same_tokenizer(manifest['tokenizer'], want):
    raise DataError(f'tokens:{directory} was prepared with the tokenizer {describe_tokenizer(manifest["tokenizer"])}, '
                    f'but this run uses {describe_tokenizer(want)}; set --config.data.tokenizer (and spm_model or '
                    f'hf_tokenizer) to the one the corpus was prepared with, or prepare it again with this one')
  check_shard_files(full, manifest)
  if check_sources_:
    check_sources(full, manifest)
  streams = []
  for split in SPLITS:
    shards = manifest['splits'].get(split, {}).get('shards', [])
    streams.append(ShardedTokens([Shard(os.path.join(full, s['path']), s['tokens']) for s in shards]))
  return streams[0], streams[1], manifest
