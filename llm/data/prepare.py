"""Tokenize a corpus once into shards that training streams (``tokens:<dir>``).

    python -m llm.data.prepare --config=configs/prepare.py \\
        --config.sources='runs/corpus/clean/train-*.jsonl.gz' --config.output=runs/tokens
    python -m llm.data.prepare --config=configs/prepare.py --config.sources=tfds:runs/corpus/tfds/clean_corpus/default/1.0.0 \\
        --config.tokenizer=hf --config.hf_tokenizer=exports/gpt2 --config.output=gs://bucket/tokens --config.runner=dask
    python train.py --config=configs/default.py --workdir=runs/lm --config.data.sources=tokens:runs/tokens

Sources are globs of text or JSONL files (optionally gzipped, local or ``gs://``) and
``tfds:<dir>`` datasets such as the corpus pipeline's output, comma-separated. The work
is split into units: consecutive files of a source up to ``shard_mb`` of input (a larger
file is a unit of its own), or one shard of a TFDS split. A unit reads its documents,
splits them into train and validation by the rule of ``llm.data.documents`` (a TFDS
dataset keeps its own splits), tokenizes them and writes one shard per split
(``llm.data.tokens``), then a record of what it did (``units/<n>.json``: its inputs'
sizes and SHA-256, document and token counts, every file written with its SHA-256).

Runners (``runner``), all running the same ``process_unit`` and writing identical bytes:
  local         a loop in this process, no Beam
  direct        Apache Beam's DirectRunner, in this process (small inputs)
  multiprocess  the DirectRunner with ``workers`` processes on this machine
  dask          Beam's DaskRunner on a Dask cluster: ``dask_address`` (tcp://host:8786), or a
                local cluster of ``workers`` processes started for the run
  dataflow      Google Cloud Dataflow; ``beam_args`` gives --project, --region,
                --temp_location=gs://... and --setup_file to ship this package (README)

Rerunning skips every unit whose record matches its inputs (same files, sizes and times,
same tokenizer and settings) and whose files are all there; ``verify=True`` also rehashes
them. ``manifest.json`` is written last, after every unit has finished, and is removed
before any work starts, so an interrupted run never leaves a manifest that lists shards
that are not there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.data import tokens as T
from llm.data.documents import (DataError, check_split, glob_files, is_remote, iter_documents, listdir, read_tfds_split,
                                remove, resolve, sha256, split_document, split_rule, stat, tfds_builder, tfds_shards)
from llm.tokenizer import Tokenizer, TokenizerError, make_tokenizer

VERSION = 1  # of the unit processing; part of every unit's fingerprint
RUNNERS = ('local', 'direct', 'multiprocess', 'dask', 'dataflow')
ENCODE_BATCH_CHARS = 1 << 20  # characters per tokenizer call (batched encoders use every core on it)


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  sources: str  # comma-separated: globs of .txt/.jsonl/.json files (.gz allowed, gs:// allowed), tfds:<dir>
  output: str  # the prepared corpus' directory (local or gs://bucket/dir)
  tokenizer: str = 'byte'  # 'byte', 'sentencepiece' or 'hf'
  spm_model: str = ''  # SentencePiece .model when tokenizer='sentencepiece'
  hf_tokenizer: str = ''  # tokenizer.json (or its directory) when tokenizer='hf'
  doc_separator: str = 'file'  # text files: 'file' (one document), 'blank_line' or 'line'
  jsonl_field: str = 'text'  # JSONL field holding the document text
  split: str = 'document'  # 'tail' or 'document' (llm.data.documents); TFDS sources keep their own splits
  val_fraction: float = 0.01  # share of the text held out for validation
  decode_errors: str = 'strict'  # 'strict' (fail on bad UTF-8) or 'replace' (U+FFFD)
  shard_mb: float = 64.0  # input megabytes per unit (= per shard); a larger file is a unit of its own
  runner: str = 'direct'  # one of RUNNERS (see the module docstring)
  workers: int = 0  # processes for 'multiprocess' and a local 'dask' cluster; 0 = one per CPU
  dask_address: str = ''  # 'tcp://host:8786' of a running Dask scheduler; '' = start a local cluster
  beam_args: str = ''  # more Beam pipeline options, space-separated (Dataflow's project, region, ...)
  verify: bool = False  # rehash the files of finished units and redo those that differ from their record


@dataclasses.dataclass(frozen=True)
class Unit:
  """One unit of work: some files of a source, or one shard of a TFDS split."""

  index: int
  source: int  # index of the source in PrepareConfig.sources
  files: tuple[str, ...] = ()  # text/JSONL files, in order
  tfds: str = ''  # a TFDS unit: the dataset's version folder
  tfds_split: str = ''  # ... its split
  tfds_shard: int = 0  # ... and the shard of that split


def shard_path(split: str, index: int) -> str:
  return f'{split}/{index:05d}'


def unit_record_path(output: str, index: int) -> str:
  return os.path.join(output, 'units', f'{index:05d}.json')


def make_tokenizer_for(cfg: PrepareConfig) -> Tokenizer:
  try:
    return make_tokenizer(cfg.tokenizer, cfg.hf_tokenizer if cfg.tokenizer == 'hf' else cfg.spm_model)
  except TokenizerError as e:
    raise DataError(str(e)) from None


def parse_source_list(spec: str) -> list[str]:
  sources = [s.strip() for s in spec.split(',') if s.strip()]
  if not sources:
    raise DataError("--config.sources is empty: pass globs of text/JSONL files or tfds:<dir>, e.g. "
                    "--config.sources='runs/corpus/clean/train-*.jsonl.gz'")
  return sources


# ----------------------------------------------------------------------------- planning


def plan(cfg: PrepareConfig, root: str = '.') -> list[Unit]:
  """The units of a run, in order; DataError for a source that matches nothing."""
  units: list[Unit] = []
  limit = int(cfg.shard_mb * (1 << 20))
  for s, pattern in enumerate(parse_source_list(cfg.sources)):
    if pattern.startswith('tfds:'):
      builder = tfds_builder(pattern[len('tfds:'):], root)
      for split, shards in tfds_shards(builder).items():
        for k in range(shards):
          units.append(Unit(len(units), s, tfds=builder.data_dir, tfds_split=split, tfds_shard=k))
      continue
    full = resolve(pattern, root)
    files = glob_files(full)
    if not files:
      raise DataError(f'source {pattern!r} matches no file (looked for {full}); fix --config.sources')
    group: list[str] = []
    size = 0
    for path in files:
      n = stat(path)[0]
      if group and size + n > limit:
        units.append(Unit(len(units), s, files=tuple(group)))
        group, size = [], 0
      group.append(path)
      size += n
    units.append(Unit(len(units), s, files=tuple(group)))
  return units


def _unit_inputs(unit: Unit) -> list[str]:
  """The files whose contents decide a unit's output."""
  return list(unit.files) or glob_files(os.path.join(unit.tfds, '*'))


def settings(cfg: PrepareConfig, tok: Tokenizer) -> dict[str, Any]:
  """What, besides its input files, decides a unit's bytes."""
  return {'version': VERSION, 'format': T.FORMAT, 'tokenizer': T.tokenizer_identity(tok),
          'doc_separator': cfg.doc_separator, 'jsonl_field': cfg.jsonl_field, 'split': cfg.split,
          'val_fraction': cfg.val_fraction, 'decode_errors': cfg.decode_errors}


def fingerprint(unit: Unit, cfg: PrepareConfig, tok: Tokenizer) -> str:
  files = [(p, *stat(p)) for p in _unit_inputs(unit)]
  blob = json.dumps({'unit': dataclasses.asdict(unit), 'files': files, 'settings': settings(cfg, tok)},
                    sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------- one unit


class _SplitWriter:
  """Documents of one split of a unit, tokenized in batches, kept until the shard is written."""

  def __init__(self, tok: Tokenizer):
    self.tok = tok
    self.dtype = T.token_dtype(tok.vocab_size)
    self.head = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
    self.tail = [tok.eos_id] if tok.eos_id is not None else []
    self.pending: list[str] = []
    self.pending_chars = 0
    self.chunks: list[np.ndarray] = []
    self.starts: list[int] = []
    self.num_tokens = 0
    self.text_bytes = 0  # UTF-8 bytes of the documents' text

  def add(self, text: str) -> None:
    self.pending.append(text)
    self.pending_chars += len(text)
    self.text_bytes += len(text.encode('utf-8'))
    if self.pending_chars >= ENCODE_BATCH_CHARS:
      self.flush()

  def flush(self) -> None:
    for ids in self.tok.encode_batch(self.pending):
      doc = np.concatenate([self.head, ids, self.tail]).astype(self.dtype)
      self.starts.append(self.num_tokens)
      self.chunks.append(doc)
      self.num_tokens += len(doc)
    self.pending, self.pending_chars = [], 0

  def write(self, path: str) -> dict[str, Any]:
    self.flush()
    tokens = np.concatenate(self.chunks) if self.chunks else np.zeros(0, self.dtype)
    self.chunks = []
    return T.write_shard(path, tokens, np.asarray(self.starts, np.int64))


_TOKENIZERS: dict[tuple, Tokenizer] = {}  # one per worker process and tokenizer


def process_unit(unit: Unit, cfg: PrepareConfig, fp: str) -> dict[str, Any]:
  """Read, split, tokenize and write one unit, then its record; returns the record.

  A pure function of the unit's input files and ``settings``: any runner, any worker,
  writes the same bytes.
  """
  key = (cfg.tokenizer, cfg.spm_model, cfg.hf_tokenizer)
  if key not in _TOKENIZERS:
    _TOKENIZERS[key] = make_tokenizer_for(cfg)
  tok = _TOKENIZERS[key]
  t0 = time.perf_counter()
  writers = {split: _SplitWriter(tok) for split in T.SPLITS}
  inputs = []
  if unit.files:
    for path in unit.files:
      size, mtime = stat(path)
      docs = {split: 0 for split in T.SPLITS}
      start = {split: w.num_tokens for split, w in writers.items()}  # (every file ends with a flush)
      for doc in iter_documents(path, cfg):
        for split, part in zip(T.SPLITS, split_document(doc, cfg)):
          if part:
            writers[split].add(part)
            docs[split] += 1
      for w in writers.values():
        w.flush()
      inputs.append({'path': path, 'size': size, 'mtime_ns': mtime, 'sha256': sha256(path), 'docs': docs,
                     'tokens': {s: w.num_tokens - start[s] for s, w in writers.items()}})
  else:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    builder = tfds.builder_from_directory(unit.tfds)
    texts = read_tfds_split(builder, f'{unit.tfds_split}[{unit.tfds_shard}shard]')
    for text in texts:
      writers[unit.tfds_split].add(text)
    writers[unit.tfds_split].flush()
    inputs.append({'path': f'tfds:{unit.tfds}[{unit.tfds_split}/{unit.tfds_shard}]',
                   'docs': {s: len(texts) if s == unit.tfds_split else 0 for s in T.SPLITS},
                   'tokens': {s: w.num_tokens for s, w in writers.items()}})
  bytes_in = sum(i.get('size', 0) for i in inputs)
  text_bytes = sum(w.text_bytes for w in writers.values())
  shards = {split: {'path': shard_path(split, unit.index), **w.write(os.path.join(cfg.output, shard_path(split, unit.index)))}
            for split, w in writers.items()}
  record = {'fingerprint': fp, 'unit': dataclasses.asdict(unit), 'inputs': inputs, 'shards': shards,
            'bytes_in': bytes_in, 'text_bytes': text_bytes, 'seconds': time.perf_counter() - t0,
            'worker': f'{socket.gethostname()}:{os.getpid()}'}
  T.write_json(unit_record_path(cfg.output, unit.index), record)
  return record


def _process(element: tuple[dict, str], cfg: PrepareConfig) -> int:
  """process_unit on a Beam element (the unit as a dict, its fingerprint)."""
  unit, fp = element
  return process_unit(Unit(**{**unit, 'files': tuple(unit['files'])}), cfg, fp)['unit']['index']


def unit_is_done(unit: Unit, fp: str, cfg: PrepareConfig) -> bool:
  """The unit's record matches ``fp`` and every file it wrote is there (and, with verify, unchanged)."""
  record = T.read_json(unit_record_path(cfg.output, unit.index))
  if record is None or record.get('fingerprint') != fp:
    return False
  for shard in record['shards'].values():
    for rel, info in shard['files'].items():
      path = os.path.join(cfg.output, shard['path'], rel)
      try:
        if stat(path)[0] != info['size'] or (cfg.verify and sha256(path) != info['sha256']):
          return False
      except OSError:
        return False
  return True


# ---------------------------------------------------------------------------- runners


def beam_options(cfg: PrepareConfig) -> list[str]:
  """The Beam pipeline options of ``cfg.runner`` (the dask runner's address is added by run_units)."""
  workers = cfg.workers or os.cpu_count() or 1
  base = {'direct': ['--runner=DirectRunner', '--direct_num_workers=1'],
          'multiprocess': ['--runner=DirectRunner', '--direct_running_mode=multi_processing',
                           f'--direct_num_workers={workers}', '--default_sdk_harness_log_level=WARNING'],
          'dask': ['--runner=apache_beam.runners.dask.dask_runner.DaskRunner', '--dask_partition_size=1'],
          'dataflow': ['--runner=DataflowRunner']}[cfg.runner]
  return base + cfg.beam_args.split()


def run_units(todo: Sequence[tuple[Unit, str]], cfg: PrepareConfig, log=print) -> None:
  """Process the units with ``cfg.runner``."""
  if not todo:
    return
  if cfg.runner == 'local':
    for unit, fp in todo:
      process_unit(unit, cfg, fp)
    return
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  # Worker processes (multiprocess, a local Dask cluster) import this package as we do.
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  os.environ['PYTHONPATH'] = os.pathsep.join([root] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
  for name in ('apache_beam', 'distributed', 'distributed.core', 'distributed.scheduler'):
    logging.getLogger(name).setLevel(logging.WARNING)
  options = beam_options(cfg)
  cluster = client = None
  if cfg.runner == 'dask':
    address = cfg.dask_address
    if not address:
      from distributed import LocalCluster  # pylint: disable=import-outside-toplevel
      cluster = LocalCluster(n_workers=cfg.workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                             dashboard_address=None, silence_logs=logging.WARNING)
      address = cluster.scheduler_address
      log(f'started a local Dask cluster of {len(cluster.workers)} worker processes at {address}')
    options.append(f'--dask_client_address={address}')
  elements = [(dataclasses.asdict(u), fp) for u, fp in todo]
  try:
    pipeline = beam.Pipeline(options=PipelineOptions(options))
    _ = (pipeline | 'Units' >> beam.Create(elements) | 'Spread' >> beam.Reshuffle()
         | 'Tokenize' >> beam.Map(_process, cfg))
    result = pipeline.run()
    result.wait_until_finish()
    client = getattr(result, 'client', None)
  except Exception as e:  # a worker's DataError arrives wrapped by the runner: keep its message
    msg = str(e)
    if 'DataError: ' in msg:
      raise DataError(msg.split('DataError: ', 1)[1].split('\n')[0].rstrip("'\" [")) from None
    raise
  finally:
    if client is not None:
      client.close()
    if cluster is not None:
      cluster.close()


# ------------------------------------------------------------------------------- run


def check_output(cfg: PrepareConfig) -> None:
  """The output is new, or holds a prepared corpus (ours to update): never another folder's files."""
  if is_remote(cfg.output):
    return
  if os.path.isfile(cfg.output):
    raise DataError(f'--config.output={cfg.output} is a file; name a directory')
  if os.path.isdir(cfg.output):
    ours = {T.MANIFEST, 'units', *T.SPLITS}
    other = [n for n in os.listdir(cfg.output) if n not in ours and not n.startswith(T.MANIFEST)]
    if other:
      raise DataError(f'--config.output={cfg.output} holds files that are not a prepared corpus ({other[:3]}); '
                      f'choose a new directory')


def _remove_stale(cfg: PrepareConfig, units: Sequence[Unit]) -> None:
  """Remove the shards and records of units that are not in this plan (an earlier, larger plan)."""
  keep = {f'{u.index:05d}' for u in units}
  for sub in ('units', *T.SPLITS):
    folder = os.path.join(cfg.output, sub)
    for name in listdir(folder):
      if name.split('.')[0] not in keep:
        remove(os.path.join(folder, name))


def build_manifest(cfg: PrepareConfig, tok: Tokenizer, units: Sequence[Unit], records: Sequence[dict]) -> dict[str, Any]:
  patterns = parse_source_list(cfg.sources)
  sources = [{'pattern': p, 'files': [], 'docs': {s: 0 for s in T.SPLITS}, 'tokens': {s: 0 for s in T.SPLITS}}
             for p in patterns]
  splits: dict[str, Any] = {s: {'docs': 0, 'tokens': 0, 'shards': []} for s in T.SPLITS}
  for unit, record in zip(units, records):
    src = sources[unit.source]
    for i in record['inputs']:
      if 'sha256' in i:
        src['files'].append({k: i[k] for k in ('path', 'size', 'mtime_ns', 'sha256')})
      for s in T.SPLITS:
        src['docs'][s] += i['docs'][s]
        src['tokens'][s] += i['tokens'][s]
    for s in T.SPLITS:
      shard = record['shards'][s]
      if shard['tokens']:
        splits[s]['shards'].append({'path': shard['path'], 'unit': unit.index, 'tokens': shard['tokens'],
                                    'docs': shard['docs'], 'files': shard['files']})
        splits[s]['docs'] += shard['docs']
        splits[s]['tokens'] += shard['tokens']
  tfds = any(p.startswith('tfds:') for p in patterns)
  rule = split_rule(cfg) + ('; tfds: sources keep their own train and validation splits' if tfds else '')
  return {'format': T.FORMAT, 'tokenizer': T.tokenizer_identity(tok), 'dtype': T.token_dtype(tok.vocab_size).name,
          'split_rule': rule, 'settings': settings(cfg, tok), 'sources': sources, 'splits': splits,
          'units': len(units), 'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'runner': cfg.runner,
          'bytes_in': sum(r['bytes_in'] for r in records), 'text_bytes': sum(r['text_bytes'] for r in records)}


def run(cfg: PrepareConfig, root: str = '.', log=print) -> dict[str, Any]:
  """Prepare ``cfg.sources`` into ``cfg.output``; returns the manifest (with 'done'/'redone' counts)."""
  if cfg.runner not in RUNNERS:
    raise DataError(f'--config.runner={cfg.runner!r} is not one of {list(RUNNERS)}')
  if not cfg.output:
    raise DataError('--config.output is empty: pass --config.output=runs/tokens (or gs://bucket/dir)')
  if cfg.shard_mb <= 0:
    raise DataError(f'--config.shard_mb must be positive, got {cfg.shard_mb}')
  check_split(cfg)
  cfg = dataclasses.replace(cfg, output=resolve(cfg.output, root))
  check_output(cfg)
  tok = make_tokenizer_for(cfg)
  units = plan(cfg, root)
  fps = [fingerprint(u, cfg, tok) for u in units]
  manifest_path = os.path.join(cfg.output, T.MANIFEST)
  old = T.read_json(manifest_path)
  todo = [(u, fp) for u, fp in zip(units, fps) if not unit_is_done(u, fp, cfg)]
  if old is not None and not todo and old.get('unit_fingerprints') == fps:
    log(f'{cfg.output} is up to date ({len(units)} units); nothing to do')
    return {**old, 'done': 0, 'skipped': len(units)}
  if old is not None:
    remove(manifest_path)  # from here until the end, no manifest: nothing claims unfinished shards
  t0 = time.perf_counter()
  log(f'{len(units)} units, {len(units) - len(todo)} already done; {len(todo)} to run on {cfg.runner}')
  run_units(todo, cfg, log)
  records = []
  for unit, fp in zip(units, fps):
    record = T.read_json(unit_record_path(cfg.output, unit.index))
    if record is None or record.get('fingerprint') != fp:
      raise RuntimeError(f'unit {unit.index} did not finish ({unit_record_path(cfg.output, unit.index)} is '
                         f'missing or stale); rerun the same command')
    records.append(record)
  _remove_stale(cfg, units)
  manifest = build_manifest(cfg, tok, units, records)
  manifest['unit_fingerprints'] = fps
  T.write_json(manifest_path, manifest)
  seconds = time.perf_counter() - t0
  ran = [r for u, r in zip(units, records) if any(u.index == t.index for t, _ in todo)]
  mb = sum(r['text_bytes'] for r in ran) / 1e6
  sp = manifest['splits']
  log(f'wrote {manifest_path}: train {sp["train"]["docs"]:,} documents, {sp["train"]["tokens"]:,} tokens '
      f'in {len(sp["train"]["shards"])} shards; validation {sp["validation"]["docs"]:,} documents, '
      f'{sp["validation"]["tokens"]:,} tokens. {len(todo)} units ({mb:,.1f} MB of text) in {seconds:.1f}s'
      + (f' ({mb / seconds:.1f} MB/s)' if seconds > 0 and mb else ''))
  return {**manifest, 'done': len(todo), 'skipped': len(units) - len(todo), 'seconds': seconds}


def main(argv: Sequence[str]) -> None:
  del argv
  from llm.run import to_dataclass  # pylint: disable=import-outside-toplevel
  try:
    run(to_dataclass(PrepareConfig, _CONFIG.value), root=os.getcwd())
  except DataError as e:  # a user mistake: one message, no traceback
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  from absl import app  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  _CONFIG = config_flags.DEFINE_config_file('config', 'configs/prepare.py', 'preparation config', lock_config=True)
  app.run(main)
