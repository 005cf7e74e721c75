"""The input pipeline alone: preparation and streaming throughput on this host.

    python -m llm.data.bench                       # everything below, on a generated 64 MB corpus
    python -m llm.data.bench --text='runs/corpus/clean/train-*.jsonl.gz' --hf_tokenizer=exports/gpt2

1. Corpus: ``--text`` (globs of text/JSONL files), or ``--mb`` megabytes of JSONL documents
   made from the repository's real text (Shakespeare's speeches and SST-2 sentences,
   recombined with a seeded generator so documents differ).
2. Tokenizer: ``--hf_tokenizer`` (a tokenizer.json), or a byte-level BPE of ``--vocab``
   entries trained on the corpus with Hugging Face ``tokenizers`` (GPT-2's recipe).
3. Preparation, one core (the process pinned to one CPU, so Rust's thread pool has one
   thread): ``tokenizers``' own ``encode_batch`` on the documents already in memory, then
   ``llm.data.prepare`` (runner local) reading, splitting, tokenizing with the same
   tokenizer and writing shards. Both in MB of UTF-8 text per second. Then prepare on
   every core (runner multiprocess).
4. Streaming: ``llm.data.stream.train_batches`` over the prepared corpus at ``--seq_len``
   and the global ``--batch`` (default 128 x 2048: the ~1B model's batch on an 8-GPU host,
   16 rows per GPU as ``llm.bench`` measures it), each batch put on the host's devices
   (``trainer.shard_batch``), in tokens per second.

Prints one table and writes ``--out`` (JSON) with the CPU model; shards are read from the
page cache (a local disk or gs:// adds its own latency, not measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_corpus(out_dir: str, mb: float, seed: int = 0) -> str:
  """``mb`` megabytes of JSONL documents from the repository's real text; returns a glob."""
  rng = np.random.default_rng(seed)
  with open(os.path.join(REPO, 'data', 'tinyshakespeare.txt'), encoding='utf-8') as f:
    speeches = [s for s in f.read().split('\n\n') if s.strip()]
  with open(os.path.join(REPO, 'data', 'sst2_train.tsv'), encoding='utf-8') as f:
    sentences = [line.split('\t', 1)[1].strip() for line in f.read().splitlines()[1:] if '\t' in line]
  os.makedirs(out_dir, exist_ok=True)
  target, written, part = int(mb * 1e6), 0, 0
  while written < target:
    with open(os.path.join(out_dir, f'part-{part:04d}.jsonl'), 'w', encoding='utf-8') as f:
      for _ in range(2000):
        n = int(rng.integers(2, 12))
        pieces = [speeches[i] for i in rng.integers(0, len(speeches), n)]
        pieces += [sentences[i] for i in rng.integers(0, len(sentences), int(rng.integers(1, 8)))]
        rng.shuffle(pieces)
        text = '\n\n'.join(pieces)
        line = json.dumps({'text': text}, ensure_ascii=False) + '\n'
        f.write(line)
        written += len(text.encode('utf-8'))
        if written >= target:
          break
    part += 1
  return os.path.join(out_dir, '*.jsonl')


def train_tokenizer(pattern: str, vocab: int, out_dir: str) -> str:
  """A byte-level BPE (GPT-2's pre-tokenizer and decoder) of ``vocab`` entries; returns its directory."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from llm.data.documents import glob_files, iter_documents
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  opts = argparse.Namespace(jsonl_field='text', doc_separator='file', decode_errors='strict')
  docs = [d for p in glob_files(pattern)[:4] for d in iter_documents(p, opts)]
  trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=['<|endoftext|>'],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tok.train_from_iterator(docs, trainer)
  os.makedirs(out_dir, exist_ok=True)
  tok.save(os.path.join(out_dir, 'tokenizer.json'))
  with open(os.path.join(out_dir, 'tokenizer_config.json'), 'w') as f:
    json.dump({'eos_token': '<|endoftext|>', 'bos_token': '<|endoftext|>', 'add_bos_token': False}, f)
  return out_dir


# ---------------------------------------------------------------- one-core measurements


def _one_core_worker(args) -> dict:
  """Runs in a child pinned to one CPU: tokenizers' encode_batch, then prepare, on the same text."""
  from tokenizers import Tokenizer
  from llm.data import prepare
  from llm.data.documents import glob_files, iter_documents
  opts = argparse.Namespace(jsonl_field='text', doc_separator='file', decode_errors='strict')
  docs = [d for p in glob_files(args.text) for d in iter_documents(p, opts)]
  mb = sum(len(d.encode('utf-8')) for d in docs) / 1e6
  tk = Tokenizer.from_file(os.path.join(args.hf_tokenizer, 'tokenizer.json'))
  t0 = time.perf_counter()
  n_tokens = 0
  for i in range(0, len(docs), 1000):
    n_tokens += sum(len(e.ids) for e in tk.encode_batch(docs[i:i + 1000], add_special_tokens=False))
  hf_s = time.perf_counter() - t0
  cfg = prepare.PrepareConfig(sources=args.text, output=os.path.join(args.work, 'one_core'), tokenizer='hf',
                              hf_tokenizer=args.hf_tokenizer, runner='local', val_fraction=0.01)
  t0 = time.perf_counter()
  m = prepare.run(cfg, log=lambda *a: None)
  ours_s = time.perf_counter() - t0
  tokens = m['splits']['train']['tokens'] + m['splits']['validation']['tokens']
  docs = m['splits']['train']['docs'] + m['splits']['validation']['docs']
  return {'text_mb': mb, 'hf_encode_batch_s': hf_s, 'hf_mb_per_s': mb / hf_s, 'hf_tokens': n_tokens,
          'prepare_s': ours_s, 'prepare_mb_per_s': mb / ours_s, 'prepare_tokens': tokens, 'prepare_docs': docs,
          'threads': len(os.sched_getaffinity(0))}


def one_core(args) -> dict:
  cpu = sorted(os.sched_getaffinity(0))[-1:]
  env = {**os.environ, 'RAYON_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'true'}
  cmd = [sys.executable, '-m', 'llm.data.bench', '--_one_core', f'--text={args.text}',
         f'--hf_tokenizer={args.hf_tokenizer}', f'--work={args.work}']
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False,
                        preexec_fn=lambda: os.sched_setaffinity(0, cpu))
  if proc.returncode:
    raise SystemExit(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- the stream


def stream_rate(tokens_dir: str, tokenizer: str, seq_len: int, batch: int, seconds: float,
                process_count: int = 1) -> dict:
  """Tokens/s of device-ready batches (this host's rows of each global batch) from a prepared corpus."""
  import jax
  from llm import sharding, trainer
  from llm.data import stream
  corpus = stream.load_corpus(stream.DataConfig(sources=f'tokens:{tokens_dir}', seq_len=seq_len, tokenizer='hf',
                                                hf_tokenizer=tokenizer))
  mesh = sharding.make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})
  t0 = time.perf_counter()
  batches = stream.train_batches(corpus, batch, 0, 0, process_count)
  first = trainer.shard_batch(next(batches), mesh)
  jax.block_until_ready(first)
  startup = time.perf_counter() - t0
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    jax.block_until_ready(trainer.shard_batch(next(batches), mesh))
    n += 1
  dt = time.perf_counter() - t0
  local = batch // process_count
  return {'seq_len': seq_len, 'global_batch': batch, 'process_count': process_count, 'local_rows': local,
          'batches': n, 'seconds': dt, 'tokens_per_s': n * local * seq_len / dt, 'first_batch_s': startup,
          'train_rows': corpus.num_train_rows, 'devices': jax.device_count()}


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--text', default='', help='globs of text/JSONL files ("" = generate --mb of it)')
  p.add_argument('--mb', type=float, default=64.0)
  p.add_argument('--hf_tokenizer', default='', help='tokenizer.json directory ("" = train a byte-level BPE)')
  p.add_argument('--vocab', type=int, default=32000)
  p.add_argument('--seq_len', type=int, default=2048)
  p.add_argument('--batch', type=int, default=128, help='global batch in rows')
  p.add_argument('--seconds', type=float, default=20.0)
  p.add_argument('--all_cores_runner', default='multiprocess', help='prepare runner for the every-core figure')
  p.add_argument('--work', default='', help='scratch directory ("" = a temporary one)')
  p.add_argument('--out', default='', help='write the results as JSON here')
  p.add_argument('--_one_core', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args._one_core:  # pylint: disable=protected-access
    print(json.dumps(_one_core_worker(args)))
    return {}
  from llm.data import prepare
  from llm.perf import cpu_model
  args.work = args.work or tempfile.mkdtemp(prefix='llm-data-bench-')
  cores = len(os.sched_getaffinity(0))
  out: dict = {'cpu': cpu_model(), 'cores': cores}
  if not args.text:
    t0 = time.perf_counter()
    args.text = make_corpus(os.path.join(args.work, 'text'), args.mb)
    print(f'generated {args.mb:g} MB of JSONL documents in {time.perf_counter() - t0:.1f}s: {args.text}', flush=True)
  if not args.hf_tokenizer:
    t0 = time.perf_counter()
    args.hf_tokenizer = train_tokenizer(args.text, args.vocab, os.path.join(args.work, 'bpe'))
    print(f'trained a {args.vocab}-entry byte-level BPE in {time.perf_counter() - t0:.1f}s', flush=True)
  out['one_core'] = one_core(args)
  print(f"one core: tokenizers encode_batch {out['one_core']['hf_mb_per_s']:.2f} MB/s, "
        f"prepare {out['one_core']['prepare_mb_per_s']:.2f} MB/s", flush=True)
  cfg = prepare.PrepareConfig(sources=args.text, output=os.path.join(args.work, 'tokens'), tokenizer='hf',
                              hf_tokenizer=args.hf_tokenizer, runner=args.all_cores_runner, workers=cores,
                              val_fraction=0.01, shard_mb=max(1.0, args.mb / (4 * cores)))
  t0 = time.perf_counter()
  m = prepare.run(cfg, log=lambda *a: None)
  dt = time.perf_counter() - t0
  out['all_cores'] = {'runner': args.all_cores_runner, 'workers': cores, 'seconds': dt,
                      'mb_per_s': m['text_bytes'] / 1e6 / dt, 'tokens': m['splits']['train']['tokens']}
  print(f"{cores} cores ({args.all_cores_runner} runner): prepare {out['all_cores']['mb_per_s']:.2f} MB/s of text",
        flush=True)
  out['stream'] = stream_rate(cfg.output, args.hf_tokenizer, args.seq_len, args.batch, args.seconds)
  s = out['stream']
  print(f"stream: {s['tokens_per_s']:,.0f} tokens/s of device-ready batches ({s['local_rows']} x {s['seq_len']}, "
        f"{s['batches']} batches in {s['seconds']:.1f}s; first batch {s['first_batch_s']:.2f}s) on {out['cpu']}",
        flush=True)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main()
