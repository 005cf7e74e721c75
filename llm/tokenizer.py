"""Tokenizers: bytes, SentencePiece and Hugging Face ``tokenizers``, behind one interface.

Every tokenizer says which ids are its special tokens, read from its own files rather
than assumed: ``bos_id`` and ``eos_id`` (either may be None, not both), ``pad_id`` (only
ever fills padding, which segment id 0 masks, so any id will do) and ``add_bos``, whether
a document starts with BOS (in training rows, prompts and scored contexts alike, as a
Hugging Face tokenizer's post-processor says for its model: Llama's adds one, GPT-2's
does not). ``mask_id`` (BERT's [MASK]) and ``sentinel_ids`` (T5's <extra_id_0>, <extra_id_1>,
...) are the extra special tokens of the masked-LM and span-corruption objectives
(``llm.data.objectives``); a tokenizer without them has None and (). ``encode`` never adds
special tokens; ``decode`` drops them. ``spec()`` is the
JSON a checkpoint records so that evaluation and conversion rebuild the same tokenizer
(``from_spec``), with a SHA-256 of the file so that a changed file is caught.

The byte tokenizer keeps ids 0/1/2 for pad/bos/eos and the 256 byte values at 3..258;
asked for them, it adds a mask token at 259 and sentinels at the top of the vocabulary;
``python -m llm.tokenizer`` trains SentencePiece models with the same three ids, but a
SentencePiece or Hugging Face tokenizer with other ids works as well.

Train a SentencePiece model on the corpus (documented in README.md):

  python -m llm.tokenizer --input='data/tinyshakespeare.txt' --vocab_size=2048 \\
      --model_prefix=runs/spm/shakespeare

then point a config at it: ``--config.data.tokenizer=sentencepiece
--config.data.spm_model=runs/spm/shakespeare.model``; a Hugging Face tokenizer is
``--config.data.tokenizer=hf --config.data.hf_tokenizer=<tokenizer.json or its directory>``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
from typing import Any, Protocol

import numpy as np

PAD, BOS, EOS = 0, 1, 2  # the byte tokenizer's ids, and those python -m llm.tokenizer trains with


class TokenizerError(ValueError):
  """A tokenizer that cannot be built as configured; the message names the file and the fix."""


class Tokenizer(Protocol):
  vocab_size: int  # ids are 0..vocab_size-1
  pad_id: int  # fills padding (masked by segment 0, never scored)
  bos_id: int | None  # beginning of document; None = the tokenizer has none
  eos_id: int | None  # end of document; None = the tokenizer has none
  add_bos: bool  # documents (training rows, prompts, scored contexts) start with bos_id
  mask_id: int | None  # masked-LM's [MASK]; None = the tokenizer has none
  sentinel_ids: tuple[int, ...]  # span corruption's <extra_id_0>, <extra_id_1>, ...; () = none

  def encode(self, text: str) -> np.ndarray: ...  # int32 [n], no special tokens
  def encode_batch(self, texts: list[str]) -> list[np.ndarray]: ...  # encode of each (batched where faster)
  def decode(self, ids) -> str: ...  # special tokens dropped
  def spec(self) -> dict[str, Any]: ...  # JSON that from_spec rebuilds it from


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def prefix_token(tok: Tokenizer) -> int:
  """The token an empty context is conditioned on: BOS, else EOS (lm-evaluation-harness's rule)."""
  return tok.bos_id if tok.bos_id is not None else tok.eos_id  # type: ignore[return-value]


def special_ids(tok: Tokenizer) -> set[int]:
  """pad, bos, eos, mask and sentinel ids: never text, never masked or predicted as text."""
  ids = {tok.pad_id, tok.bos_id, tok.eos_id, getattr(tok, 'mask_id', None), *getattr(tok, 'sentinel_ids', ()),
         *getattr(tok, 'added_special_ids', ())}  # a Hugging Face file's other special tokens ([CLS], [UNK], ...)
  return {int(i) for i in ids if i is not None}


_SENTINEL = re.compile(r'<extra_id_(\d+)>')


def _sentinels(pieces: dict[str, int]) -> tuple[int, ...]:
  """The ids of <extra_id_0>, <extra_id_1>, ... in ``pieces`` {piece: id}, up to the first one missing."""
  numbered = {}
  for piece, i in pieces.items():
    m = _SENTINEL.fullmatch(piece)
    if m:
      numbered[int(m.group(1))] = int(i)
  out = []
  while len(out) in numbered:  # a gap ends the list: span k must always have sentinel k
    out.append(numbered[len(out)])
  return tuple(out)


class ByteTokenizer:
  """UTF-8 bytes shifted by 3: ids 0-2 are pad/bos/eos, 3-258 the 256 byte values.

  ``mask=True`` adds a mask token at 259 (masked-LM); ``sentinels=n`` adds n sentinels at
  the top of the vocabulary, <extra_id_i> = vocab_size - 1 - i as in T5 (span corruption).
  Neither is ever produced by ``encode``, so a corpus prepared with the plain byte
  tokenizer is the same token stream for all three.
  """

  vocab_size = 259  # without extras (a class attribute: benchmarks size models from it)
  pad_id, bos_id, eos_id = PAD, BOS, EOS
  add_bos = True
  offset = 3
  mask_id: int | None = None
  sentinel_ids: tuple[int, ...] = ()

  def __init__(self, mask: bool = False, sentinels: int = 0):
    if sentinels < 0:
      raise TokenizerError(f'the byte tokenizer cannot have {sentinels} sentinels; ask for 0 or more')
    self.mask, self.sentinels = bool(mask), int(sentinels)
    self.vocab_size = ByteTokenizer.vocab_size + self.mask + self.sentinels
    self.mask_id = ByteTokenizer.vocab_size if self.mask else None
    self.sentinel_ids = tuple(self.vocab_size - 1 - i for i in range(self.sentinels))

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + self.offset

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= self.offset) & (ids < self.offset + 256)] - self.offset
    return ids.astype(np.uint8).tobytes().decode('utf-8', errors='replace')

  def spec(self) -> dict[str, Any]:
    if not (self.mask or self.sentinels):
      return {'kind': 'byte'}  # as before extras existed, so older checkpoints and manifests match
    return {'kind': 'byte', 'mask': self.mask, 'sentinels': self.sentinels}


class SentencePieceTokenizer:
  """A SentencePiece model (train one with ``python -m llm.tokenizer``); special ids from the model.

  ``extra_ids``: sentinels appended after the pieces as Hugging Face's T5Tokenizer appends
  them (<extra_id_i> is id piece_size + extra_ids - 1 - i), for T5's own spiece.model,
  which has none of its own; text never encodes to them and decoding drops them.
  """

  def __init__(self, model_path: str, extra_ids: int = 0):
    import sentencepiece as spm
    if not model_path or not os.path.exists(model_path):
      raise TokenizerError(
          f'SentencePiece model {model_path!r} not found; train one with '
          f'`python -m llm.tokenizer --input=CORPUS_GLOB --vocab_size=N --model_prefix=PREFIX` '
          f'and set --config.data.spm_model=PREFIX.model')
    self.path = os.path.abspath(model_path)
    self.sp = spm.SentencePieceProcessor(model_file=model_path)
    self.vocab_size = self.sp.get_piece_size()
    ids = {name: i if i >= 0 else None for name, i in
           (('bos', self.sp.bos_id()), ('eos', self.sp.eos_id()), ('pad', self.sp.pad_id()))}
    self.bos_id, self.eos_id = ids['bos'], ids['eos']
    if self.bos_id is None and self.eos_id is None:
      raise TokenizerError(f'{model_path}: the SentencePiece model has neither a BOS nor an EOS piece; '
                           f'documents need one to be separated (train with `python -m llm.tokenizer`)')
    self.pad_id = next(i for i in (ids['pad'], self.eos_id, self.bos_id) if i is not None)
    self.add_bos = self.bos_id is not None
    self.mask_id = next((i for i in map(self._piece_id, ('[MASK]', '<mask>')) if i is not None), None)
    # T5's own spiece.model has no <extra_id_N> pieces: Hugging Face's T5Tokenizer appends
    # them after the vocabulary, so that model gets its sentinels through its tokenizer.json.
    sentinels: list[int] = []
    while (i := self._piece_id(f'<extra_id_{len(sentinels)}>')) is not None:
      sentinels.append(i)
    self.extra_ids = int(extra_ids)
    if self.extra_ids:
      if sentinels:
        raise TokenizerError(f'{model_path} has <extra_id_N> pieces of its own; do not append extra_ids')
      sentinels = [self.vocab_size + self.extra_ids - 1 - i for i in range(self.extra_ids)]
      self.vocab_size += self.extra_ids
    self.sentinel_ids = tuple(sentinels)
    self._special = special_ids(self)

  def _piece_id(self, piece: str) -> int | None:
    """The id of ``piece``, None if the model lacks it (piece_to_id would answer unk's id)."""
    i = self.sp.piece_to_id(piece)
    return i if self.sp.id_to_piece(i) == piece else None

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.sp.encode(text), np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(ids, np.int32) for ids in self.sp.encode(texts)]

  def decode(self, ids) -> str:
    return self.sp.decode([int(i) for i in ids if int(i) not in self._special])

  def spec(self) -> dict[str, Any]:
    spec = {'kind': 'sentencepiece', 'spm_model': self.path, 'sha256': file_sha256(self.path)}
    return {**spec, 'extra_ids': self.extra_ids} if self.extra_ids else spec


def _token_content(value: Any) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
  if isinstance(value, dict):
    value = value.get('content')
  return value if isinstance(value, str) and value else None


def read_json_object(path: str) -> dict[str, Any]:
  """The JSON object in ``path``; {} when there is no such file or it holds no object."""
  if not os.path.isfile(path):
    return {}
  with open(path, encoding='utf-8') as f:
    data = json.load(f)
  return data if isinstance(data, dict) else {}


class HFTokenizer:
  """A Hugging Face ``tokenizers`` file (``tokenizer.json``: GPT-2's byte-level BPE, Llama's, ...).

  Special tokens come from the files beside it, in the order transformers reads them:
  ``tokenizer_config.json`` and ``special_tokens_map.json`` (bos_token, eos_token,
  pad_token), then ``config.json`` / ``generation_config.json`` (bos_token_id, ...).
  ``add_bos`` is what the file's post-processor does when ``transformers`` encodes with
  special tokens (overridden by tokenizer_config's ``add_bos_token`` when it sets one), and
  ``split_special_tokens`` is honoured as transformers honours it. The mask token is
  ``mask_token`` (BERT's [MASK]); the sentinels are the tokens spelled <extra_id_N> (T5's),
  in the order of N. Files that name no bos/eos but cls/sep (BERT's WordPiece) use those,
  and, naming nothing, the BERT class defaults [CLS]/[SEP]/[MASK]/[PAD] found in the vocabulary.
  """

  def __init__(self, path: str):
    try:
      from tokenizers import Tokenizer as _Tokenizer
    except ImportError as e:
      raise TokenizerError('the Hugging Face tokenizer backend needs the `tokenizers` package: '
                           'pip install -r requirements.txt') from e
    file = os.path.join(path, 'tokenizer.json') if os.path.isdir(path) else path
    if not os.path.isfile(file):
      raise TokenizerError(f'Hugging Face tokenizer {path!r} not found: point it at a tokenizer.json '
                           f'or the directory holding one (a slow-only tokenizer.model/vocab.txt '
                           f'must first be saved as tokenizer.json by transformers)')
    self.path = os.path.abspath(file)
    try:
      self.tk = _Tokenizer.from_file(self.path)
    except Exception as e:  # the Rust error says what is wrong with the file
      raise TokenizerError(f'{file} is not a tokenizers file: {e}') from None
    folder = os.path.dirname(self.path)
    config = {**read_json_object(os.path.join(folder, 'special_tokens_map.json')),
              **read_json_object(os.path.join(folder, 'tokenizer_config.json'))}
    model_cfg = {**read_json_object(os.path.join(folder, 'generation_config.json')),
                 **read_json_object(os.path.join(folder, 'config.json'))}
    self.vocab_size = self.tk.get_vocab_size(with_added_tokens=True)
    # transformers' split_special_tokens: text that spells a special token is encoded as text.
    self.tk.encode_special_tokens = bool(config.get('split_special_tokens', False))

    # BERT's files name cls/sep (or nothing: the class defaults [CLS] [SEP] [MASK] [PAD]), not bos/eos:
    # [CLS] text [SEP] is its single-sequence format, so they play BOS and EOS.
    fallback = {'bos': ('cls_token', '[CLS]'), 'eos': ('sep_token', '[SEP]'), 'mask': ('mask_token', '[MASK]'),
                'pad': ('pad_token', '[PAD]')}

    def resolve(name: str) -> int | None:
      content = _token_content(config.get(f'{name}_token'))
      if content is None and name in fallback and f'{name}_token_id' not in model_cfg:
        key, default = fallback[name]
        named = _token_content(config.get(key))
        content = named if named is not None else default if self.tk.token_to_id(default) is not None else None
      if content is not None:
        i = self.tk.token_to_id(content)
        if i is None:
          raise TokenizerError(f'{folder}: {name}_token {content!r} of tokenizer_config.json is not in '
                               f'the vocabulary of {os.path.basename(file)}')
        return i
      i = model_cfg.get(f'{name}_token_id')
      if isinstance(i, list):  # generation configs may list several EOS ids; the first is the document end
        i = i[0] if i else None
      return int(i) if isinstance(i, int) and 0 <= i < self.vocab_size else None

    self.bos_id, self.eos_id = resolve('bos'), resolve('eos')
    if self.bos_id is None and self.eos_id is None:
      raise TokenizerError(f'{folder}: no BOS or EOS token is named (tokenizer_config.json bos_token/'
                           f'eos_token, or config.json bos_token_id/eos_token_id); add eos_token so that '
                           f'documents can be separated')
    pad = resolve('pad')
    self.pad_id = next(i for i in (pad, self.eos_id, self.bos_id) if i is not None)
    probe = 'a'
    plain = self.tk.encode(probe, add_special_tokens=False).ids
    full = self.tk.encode(probe, add_special_tokens=True).ids
    adds = self.bos_id is not None and len(full) > len(plain) and full[0] == self.bos_id
    if isinstance(config.get('add_bos_token'), bool):
      adds = config['add_bos_token'] and self.bos_id is not None
    self.add_bos = bool(adds)
    self.mask_id = resolve('mask')
    added = self.tk.get_added_tokens_decoder()
    self.sentinel_ids = _sentinels({t.content: i for i, t in added.items()})
    self.added_special_ids = frozenset(i for i, t in added.items() if t.special)
    self._special = special_ids(self)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tk.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    # The Rust library encodes a batch on all cores.
    return [np.asarray(e.ids, np.int32) for e in self.tk.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids) -> str:
    return self.tk.decode([int(i) for i in ids if int(i) not in self._special], skip_special_tokens=False)

  def spec(self) -> dict[str, Any]:
    return {'kind': 'hf', 'path': self.path, 'sha256': file_sha256(self.path)}


def make_tokenizer(kind: str, path: str = '') -> Tokenizer:
  """'byte', 'sentencepiece' (path = the .model) or 'hf' (path = tokenizer.json or its directory)."""
  if kind == 'byte':
    return ByteTokenizer()
  if kind == 'sentencepiece':
    return SentencePieceTokenizer(path)
  if kind == 'hf':
    return HFTokenizer(path)
  raise TokenizerError(f"data.tokenizer must be 'byte', 'sentencepiece' or 'hf', got {kind!r}")


def from_spec(spec: dict[str, Any], root: str = '') -> Tokenizer:
  """Rebuild the tokenizer a checkpoint recorded; relative paths are relative to ``root``.

  Raises TokenizerError when the file is missing or differs from the one recorded.
  """
  kind = spec.get('kind', 'byte')
  if kind == 'byte':
    return ByteTokenizer(mask=bool(spec.get('mask', False)), sentinels=int(spec.get('sentinels', 0)))
  path = spec.get('spm_model') or spec.get('path') or ''
  if path and not os.path.isabs(path):
    path = os.path.join(root, path)
  tok = SentencePieceTokenizer(path, int(spec['extra_ids'])) if spec.get('extra_ids') else make_tokenizer(kind, path)
  want = spec.get('sha256')
  if want and path and file_sha256(tok.spec()['spm_model' if kind == 'sentencepiece' else 'path']) != want:
    raise TokenizerError(f'{path} is not the tokenizer file the checkpoint was trained with (its SHA-256 '
                         f'differs); restore that file or point the run at a copy of it')
  return tok


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
