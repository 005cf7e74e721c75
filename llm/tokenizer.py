"""Tokenizers: a byte-level vocabulary and SentencePiece, with one interface.

Both reserve id 0 for padding, 1 for beginning- and 2 for end-of-document, so packed
batches can use segment id 0 for padding whatever the tokenizer.

Train a SentencePiece model on the corpus (documented in README.md):

  python -m llm.tokenizer --input='data/tinyshakespeare.txt' --vocab_size=2048 \\
      --model_prefix=runs/spm/shakespeare

then point a config at it: ``--config.data.tokenizer=sentencepiece
--config.data.spm_model=runs/spm/shakespeare.model``.
"""

from __future__ import annotations

import argparse
import glob
import os
from typing import Protocol

import numpy as np

PAD, BOS, EOS = 0, 1, 2


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str) -> np.ndarray: ...
  def decode(self, ids) -> str: ...


class ByteTokenizer:
  """UTF-8 bytes shifted by 3: ids 0-2 are pad/bos/eos, 3-258 the 256 byte values."""

  vocab_size = 259
  pad_id, bos_id, eos_id = PAD, BOS, EOS
  offset = 3

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + self.offset

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= self.offset) & (ids < self.offset + 256)] - self.offset
    return ids.astype(np.uint8).tobytes().decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A trained SentencePiece model (train one with ``python -m llm.tokenizer``)."""

  def __init__(self, model_path: str):
    import sentencepiece as spm
    if not model_path or not os.path.exists(model_path):
      raise FileNotFoundError(
          f'SentencePiece model {model_path!r} not found; train one with '
          f'`python -m llm.tokenizer --input=CORPUS_GLOB --vocab_size=N --model_prefix=PREFIX` '
          f'and set --config.data.spm_model=PREFIX.model')
    self.sp = spm.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = self.sp.get_piece_size()
    self.pad_id, self.bos_id, self.eos_id = self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()
    if (self.pad_id, self.bos_id, self.eos_id) != (PAD, BOS, EOS):
      raise ValueError(
          f'{model_path}: expected pad/bos/eos ids {PAD}/{BOS}/{EOS}, got '
          f'{self.pad_id}/{self.bos_id}/{self.eos_id}; train it with `python -m llm.tokenizer`, '
          f'which sets them')

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.sp.encode(text), np.int32)

  def decode(self, ids) -> str:
    ids = [int(i) for i in ids if int(i) not in (PAD, BOS, EOS)]
    return self.sp.decode(ids)


def make_tokenizer(kind: str, spm_model: str = '') -> Tokenizer:
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'sentencepiece':
    return SentencePieceTokenizer(spm_model)
  raise ValueError(f"data.tokenizer must be 'byte' or 'sentencepiece', got {kind!r}")


def train_sentencepiece(input_glob: str, vocab_size: int, model_prefix: str,
                        model_type: str = 'bpe', max_sentence_length: int = 16384) -> str:
  """Train a SentencePiece model on the files matching ``input_glob``; returns the .model path."""
  import sentencepiece as spm
  files = sorted(glob.glob(input_glob))
  if not files:
    raise FileNotFoundError(f'no files match {input_glob!r}')
  os.makedirs(os.path.dirname(model_prefix) or '.', exist_ok=True)
  spm.SentencePieceTrainer.train(
      input=files, model_prefix=model_prefix, vocab_size=vocab_size, model_type=model_type,
      pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=3, byte_fallback=True,
      character_coverage=1.0, max_sentence_length=max_sentence_length,
      # Keep text exactly (newlines, runs of spaces): decode(encode(x)) == x.
      normalization_rule_name='identity', remove_extra_whitespaces=False,
      num_threads=os.cpu_count() or 1, minloglevel=2)
  return model_prefix + '.model'


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description='Train a SentencePiece tokenizer on a corpus.')
  p.add_argument('--input', required=True, help='glob of plain-text files')
  p.add_argument('--vocab_size', type=int, default=8000)
  p.add_argument('--model_prefix', required=True, help='writes PREFIX.model and PREFIX.vocab')
  p.add_argument('--model_type', default='bpe', choices=['bpe', 'unigram', 'char', 'word'])
  args = p.parse_args(argv)
  path = train_sentencepiece(args.input, args.vocab_size, args.model_prefix, args.model_type)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
