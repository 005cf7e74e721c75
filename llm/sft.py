"""Supervised fine-tuning data: records -> (prompt, completion) chunks -> masked, packed rows.

Sources (``SFTConfig.source``, globs allowed, several joined by commas):

* ``task:<name>``: a task file of the evaluation registry (``tasks/``). Its training split
  rendered as the zero-shot evaluation renders it (``Task.supervised_pairs``): the prompt
  is what the model is shown, the completion the gold answer as it is scored. Validation
  rows come from the task's validation split, the split its accuracy is measured on.
* ``*.jsonl``: one JSON object a line with ``prompt`` and ``completion``, or ``messages``
  (a list of ``{"role", "content"}``, rendered by ``chat_template``; the assistant turns
  are trained), or any fields through ``prompt_template``/``completion_template``.
* ``*.tsv`` / ``*.csv``: columns by header, through the templates (``{column}``, Python
  ``str.format``); ``label_names='label=negative,positive'`` maps an integer column to
  names first.

Every example becomes chunks of text, each trained or not. Tokens follow the scorer's
rule (``ModelLM.encode_pair``): the text up to the end of a chunk is encoded whole and the
chunk's tokens are what it adds, so a completion is tokenised exactly as the evaluation
tokenises it. BOS first when the tokenizer adds one; EOS after the last completion
(``add_eos``), trained, so the model learns to stop. The loss mask is True on the targets
that belong to trained chunks: the prompt is never a target.

Rows of ``seq_len`` tokens hold several examples (``pack=True``: best fit, longest first;
each example its own segment, positions restart at 0, so attention never crosses
examples and each one's loss equals its loss alone) or one each (``pack=False``). An
example longer than ``seq_len + 1`` tokens is handled by ``truncation``: ``fail`` (one
error naming the count and the first such example), ``drop``, or ``truncate_prompt``
(cut the prompt from the left, as the evaluation cuts contexts; a completion that alone
is too long is cut from the right). Every outcome is counted in ``SFTData.report``.

Batches come from ``llm.data.train_dataset``: element i of the stream is a pure function
of (seed, i), so a resumed fine-tuning run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import os
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm.data import Corpus, DataConfig, DataError, PackedRows
from llm.tokenizer import Tokenizer

Chunk = tuple[str, bool]  # (text, trained)
SFT_FIELDS = ('inputs', 'targets', 'positions', 'segments', 'loss_mask')
TRUNCATION = ('fail', 'drop', 'truncate_prompt')

# Chat templates: how a role's turn is written. The assistant's content and closing text
# are trained; everything else is prompt. 'plain' suits byte-level models trained on prose.
CHAT_TEMPLATES: dict[str, dict[str, str]] = {
    'plain': dict(open='{role}: ', close='\n', assistant_open='assistant: '),
    'chatml': dict(open='<|im_start|>{role}\n', close='<|im_end|>\n', assistant_open='<|im_start|>assistant\n'),
}


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Where fine-tuning examples come from and how they become rows (see the module docstring)."""

  source: str  # 'task:<name>' or globs of .jsonl/.tsv/.csv, comma-separated
  seq_len: int = 128  # tokens per row
  prompt_template: str = ''  # str.format over a record's fields; '' = the 'prompt' field
  completion_template: str = ''  # '' = the 'completion' field
  label_names: str = ''  # 'column=name0,name1,...': integer column -> names before templating
  chat_template: str = 'plain'  # records with 'messages': a key of CHAT_TEMPLATES
  split: str = ''  # task sources: the split to train on ('' = the task's training_split)
  val_fraction: float = 0.05  # file sources: examples held out for validation (by a hash of the example)
  pack: bool = True  # several examples per row (segments) or one per row
  truncation: str = 'truncate_prompt'  # fail | drop | truncate_prompt
  add_eos: bool = True  # end every completion with EOS (trained)
  limit: int = 0  # keep the first N training examples (0 = all): quick runs and tests
  seed: int = 0  # order of the batches (llm.data.train_dataset)


@dataclasses.dataclass
class SFTData:
  """Packed rows (a ``Corpus`` that ``llm.data.train_dataset`` streams) and what happened to the examples."""

  corpus: Corpus
  report: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Records -> chunks
# ---------------------------------------------------------------------------------------------


def _label_map(spec: str) -> tuple[str, list[str]] | None:
  if not spec:
    return None
  column, sep, names = spec.partition('=')
  if not sep or not column.strip() or not names.strip():
    raise DataError(f"sft.label_names={spec!r} must look like 'label=negative,positive'")
  return column.strip(), [n for n in names.split(',')]


def _fields(template: str) -> list[str]:
  return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _render(template: str, record: dict, where: str) -> str:
  missing = [f for f in _fields(template) if f not in record]
  if missing:
    raise DataError(f'{where}: template {template!r} refers to {missing}, which the record lacks '
                    f'(it has {sorted(record)}); fix the template or the data')
  return template.format(**record)


def record_chunks(record: dict, cfg: SFTConfig, where: str) -> list[Chunk]:
  """The chunks of one JSONL/CSV record (prompt untrained, completion trained)."""
  labels = _label_map(cfg.label_names)
  if labels is not None:
    column, names = labels
    if column not in record:
      raise DataError(f'{where}: sft.label_names names column {column!r}, which the record lacks '
                      f'(it has {sorted(record)})')
    try:
      index = int(record[column])
      record = {**record, column: names[index]}
    except (ValueError, IndexError):
      raise DataError(f'{where}: {column}={record[column]!r} is not an index into {names} '
                      f'(sft.label_names)') from None
  if 'messages' in record and not (cfg.prompt_template or cfg.completion_template):
    return chat_chunks(record['messages'], cfg.chat_template, where)
  chunks = []
  for field, template, example in (('prompt', cfg.prompt_template, '"Review: {sentence}\\nSentiment:"'),
                                   ('completion', cfg.completion_template, '" {label}"')):
    if template:
      text = _render(template, record, where)
    elif field in record:
      text = str(record[field])
    else:
      raise DataError(f"{where}: the record has no {field!r} field (it has {sorted(record)}); "
                      f'set sft.{field}_template, e.g. {example}')
    chunks.append((text, field == 'completion'))
  return chunks


def chat_chunks(messages: Any, template: str, where: str) -> list[Chunk]:
  """A chat rendered by ``CHAT_TEMPLATES[template]``; the assistant turns (and their closing) are trained."""
  if template not in CHAT_TEMPLATES:
    raise DataError(f'sft.chat_template={template!r} is unknown; use one of {sorted(CHAT_TEMPLATES)}')
  if not isinstance(messages, list) or not messages:
    raise DataError(f"{where}: 'messages' must be a non-empty list of {{'role', 'content'}} objects")
  t = CHAT_TEMPLATES[template]
  chunks: list[Chunk] = []
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or 'role' not in m or 'content' not in m:
      raise DataError(f"{where}: message {i} must be an object with 'role' and 'content', got {m!r:.80}")
    role, content = str(m['role']), str(m['content'])
    if role == 'assistant':
      chunks += [(t['assistant_open'], False), (content + t['close'], True)]
    else:
      chunks.append((t['open'].format(role=role) + content + t['close'], False))
  if not any(trained for _, trained in chunks):
    raise DataError(f'{where}: the chat has no assistant turn, so nothing to train on')
  return chunks


def _read_records(path: str) -> list[tuple[dict, str]]:
  """(record, where) for every record of a .jsonl/.tsv/.csv file."""
  out = []
  if path.endswith(('.jsonl', '.json')):
    with open(path, encoding='utf-8') as f:
      for n, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          rec = json.loads(line)
        except json.JSONDecodeError as e:
          raise DataError(f'{path}:{n}: not valid JSON ({e.msg}); each line must be one JSON object') from None
        if not isinstance(rec, dict):
          raise DataError(f'{path}:{n}: each line must be a JSON object, got {type(rec).__name__}')
        out.append((rec, f'{path}:{n}'))
    return out
  if path.endswith(('.tsv', '.csv')):
    with open(path, encoding='utf-8', newline='') as f:
      reader = csv.DictReader(f, delimiter='\t' if path.endswith('.tsv') else ',',
                              quoting=csv.QUOTE_NONE if path.endswith('.tsv') else csv.QUOTE_MINIMAL)
      for n, row in enumerate(reader, start=2):
        out.append((dict(row), f'{path}:{n}'))
    return out
  raise DataError(f'{path}: fine-tuning files must be .jsonl, .tsv or .csv')


def _held_out(chunks: list[Chunk], fraction: float) -> bool:
  h = hashlib.blake2b('\x00'.join(t for t, _ in chunks).encode('utf-8', 'replace'), digest_size=8).digest()
  return int.from_bytes(h, 'little') / 2**64 < fraction


def read_examples(cfg: SFTConfig, root: str = '.', task_dirs: Sequence[str] = ('tasks',)
                  ) -> tuple[list[tuple[list[Chunk], str]], list[tuple[list[Chunk], str]]]:
  """(train, validation) examples as (chunks, where) from every source of ``cfg.source``."""
  if not 0 <= cfg.val_fraction < 1:
    raise DataError(f'sft.val_fraction must be in [0, 1), got {cfg.val_fraction}')
  train, val = [], []
  for spec in [s.strip() for s in cfg.source.split(',') if s.strip()]:
    if spec.startswith('task:'):
      from llm.eval import tasks as tasks_lib
      name = spec[len('task:'):]
      dirs = [d if os.path.isabs(d) else os.path.join(root, d) for d in task_dirs]
      try:
        found = tasks_lib.discover(dirs)
        if name not in found:
          raise DataError(f'sft.source={spec!r}: no task {name!r} in {list(task_dirs)} (tasks: '
                          f'{", ".join(sorted(found))})')
        task = tasks_lib.load_task(found[name])
        pairs = task.supervised_pairs(cfg.split or None, cfg.limit)
        val_pairs = task.supervised_pairs(task.eval_split)
      except tasks_lib.TaskError as e:
        raise DataError(str(e)) from None
      train += [([(p, False), (c, True)], f'{spec} {cfg.split or "train"} doc {i}') for i, (p, c) in enumerate(pairs)]
      val += [([(p, False), (c, True)], f'{spec} {task.eval_split} doc {i}') for i, (p, c) in enumerate(val_pairs)]
      continue
    full = spec if os.path.isabs(spec) else os.path.join(root, spec)
    files = sorted(glob.glob(full))
    if not files:
      raise DataError(f'sft.source {spec!r} matches no file (looked for {full})')
    for path in files:
      for rec, where in _read_records(path):
        chunks = record_chunks(rec, cfg, where)
        (val if _held_out(chunks, cfg.val_fraction) else train).append((chunks, where))
  if not train:
    raise DataError(f'sft.source={cfg.source!r} gave no training examples')
  if cfg.limit > 0:
    train = train[:cfg.limit]
  return train, val


# ---------------------------------------------------------------------------------------------
# Chunks -> tokens with a loss mask -> rows
# ---------------------------------------------------------------------------------------------


def tokenize_example(chunks: list[Chunk], tokenizer: Tokenizer, add_eos: bool, where: str
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens int32 [n], trained bool [n]) of one example: BOS first when the tokenizer adds
  one, each chunk's tokens being what encoding the text through its end adds (the harness's
  split), EOS after the last trained chunk when ``add_eos``. Raises DataError when a trained
  chunk is empty after tokenisation."""
  toks: list[int] = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
  trained: list[bool] = [False] * len(toks)
  chunks = list(chunks)
  for i in range(len(chunks) - 1):
    # Trailing whitespace of a prompt belongs to the completion after it (the scorer's rule).
    (a, ta), (b, tb) = chunks[i], chunks[i + 1]
    if not ta and tb and a != a.rstrip():
      cut = len(a.rstrip())
      chunks[i], chunks[i + 1] = (a[:cut], ta), (a[cut:] + b, tb)
  text = ''
  prev: list[int] = []
  for i, (piece, is_trained) in enumerate(chunks):
    text += piece
    cur = [int(t) for t in tokenizer.encode(text)]
    if cur[:len(prev)] == prev:
      new = cur[len(prev):]
    else:  # the tokenizer merged across the boundary: fall back to encoding the chunk alone
      new = [int(t) for t in tokenizer.encode(piece)]
      cur = prev + new
    if is_trained and not new:
      raise DataError(f'{where}: chunk {i} ({piece!r:.60}) is empty after tokenisation; there is '
                      f'nothing to train on')
    toks += new
    trained += [is_trained] * len(new)
    prev = cur
  if add_eos and tokenizer.eos_id is not None:
    toks.append(tokenizer.eos_id)
    trained.append(True)
  return np.asarray(toks, np.int32), np.asarray(trained, bool)


def _fit(tokens: np.ndarray, trained: np.ndarray, seq_len: int, policy: str
         ) -> tuple[np.ndarray, np.ndarray, str]:
  """The example cut to seq_len + 1 tokens by ``policy``; the last item says what was done."""
  limit = seq_len + 1
  if len(tokens) <= limit:
    return tokens, trained, 'kept'
  if policy == 'drop':
    return tokens[:0], trained[:0], 'dropped'
  first = int(np.argmax(trained)) if trained.any() else len(tokens)
  completion = len(tokens) - first
  if completion + 1 <= limit:  # keep the completion and the prompt's last tokens
    return tokens[-limit:], trained[-limit:], 'prompt_truncated'
  # The completion alone does not fit: one token of prompt, then the completion's start.
  start = max(first - 1, 0)
  return tokens[start:start + limit], trained[start:start + limit], 'completion_truncated'


def examples_to_rows(token_examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pack: bool
                     ) -> dict[str, np.ndarray]:
  """Rows [n, seq_len] of inputs/targets/positions/segments (int32) and loss_mask (bool).

  An example of n tokens gives n - 1 (input, target) pairs; loss_mask is True where the
  target is a trained token. Packed: best fit, longest first (``llm.eval.scorer.pack_rows``).
  """
  from llm.eval.scorer import pack_rows
  lengths = [len(t) - 1 for t, _ in token_examples]
  if pack:
    groups, _ = pack_rows(lengths, seq_len)
  else:
    groups = [[i] for i in range(len(token_examples))]
  rows = {k: np.zeros((len(groups), seq_len), np.int32) for k in SFT_FIELDS[:4]}
  rows['loss_mask'] = np.zeros((len(groups), seq_len), bool)
  for r, group in enumerate(sorted(groups)):  # rows in order of their first example: stable
    col = 0
    for sid, i in enumerate(sorted(group), start=1):
      toks, trained = token_examples[i]
      n = len(toks) - 1
      rows['inputs'][r, col:col + n] = toks[:-1]
      rows['targets'][r, col:col + n] = toks[1:]
      rows['positions'][r, col:col + n] = np.arange(n)
      rows['segments'][r, col:col + n] = sid
      rows['loss_mask'][r, col:col + n] = trained[1:]
      col += n
  return rows


def _tokenize_all(examples: list[tuple[list[Chunk], str]], tokenizer: Tokenizer, cfg: SFTConfig,
                  counts: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
  out, too_long = [], []
  for chunks, where in examples:
    toks, trained = tokenize_example(chunks, tokenizer, cfg.add_eos, where)
    if len(toks) > cfg.seq_len + 1:
      too_long.append(where)
      if cfg.truncation == 'fail':
        continue
    toks, trained, what = _fit(toks, trained, cfg.seq_len, cfg.truncation)
    counts[what] = counts.get(what, 0) + 1
    if what == 'dropped':
      continue
    if not trained[1:].any():
      counts['no_target'] = counts.get('no_target', 0) + 1
      continue
    out.append((toks, trained))
  if too_long and cfg.truncation == 'fail':
    raise DataError(f'{len(too_long)} of {len(examples)} examples are longer than seq_len={cfg.seq_len} + 1 '
                    f'tokens (the first: {too_long[0]}); raise sft.seq_len, or set sft.truncation to '
                    f"'truncate_prompt' or 'drop'")
  return out


def load_sft(cfg: SFTConfig, tokenizer: Tokenizer, root: str = '.', task_dirs: Sequence[str] = ('tasks',)
             ) -> SFTData:
  """Read, tokenise, fit and pack ``cfg.source``. Raises DataError on bad input."""
  if cfg.truncation not in TRUNCATION:
    raise DataError(f'sft.truncation={cfg.truncation!r} is unknown; use one of {list(TRUNCATION)}')
  train_ex, val_ex = read_examples(cfg, root, task_dirs)
  report: dict[str, Any] = {'train': {}, 'validation': {}}
  train_tok = _tokenize_all(train_ex, tokenizer, cfg, report['train'])
  val_tok = _tokenize_all(val_ex, tokenizer, cfg, report['validation'])
  if not train_tok:
    raise DataError(f'no training example of {cfg.source!r} survives sft.truncation={cfg.truncation!r}')
  train = examples_to_rows(train_tok, cfg.seq_len, cfg.pack)
  val = examples_to_rows(val_tok, cfg.seq_len, cfg.pack)
  for split, rows, toks in (('train', train, train_tok), ('validation', val, val_tok)):
    report[split].update(examples=len(toks), rows=int(len(rows['inputs'])),
                         target_tokens=int(rows['loss_mask'].sum()),
                         tokens=int((rows['segments'] > 0).sum()),
                         fill=float((rows['segments'] > 0).mean()) if len(rows['inputs']) else 0.0)
  data_cfg = DataConfig(sources=cfg.source, seq_len=cfg.seq_len, seed=cfg.seed)
  return SFTData(Corpus(data_cfg, tokenizer, [PackedRows(train)], [1.0], PackedRows(val), [cfg.source]), report)
