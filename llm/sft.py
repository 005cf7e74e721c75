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

The other architectures take the same examples in their own shape (``load_sft``'s
``arch`` and ``head``):

* encoder-decoder (T5, text to text): one example a row, prompt and completion each
  encoded alone as the evaluation encodes them (``seq2seq_examples``): the prompt (with EOS,
  as T5 ends its inputs) as the encoder's input of ``seq_len`` tokens, cut from the left when
  longer; the completion as the decoder's targets, after the decoder start token;
* encoder with a classifier (BERT): the prompt (BOS/[CLS] first, EOS/[SEP] last) as one
  row, cut from the right when longer, and the completion's index among ``labels`` (the
  task's choices) as 'labels' [n, 1].

Debiasing pairs (``debias_weight`` > 0, decoders): every training example with a term of
``debias_lists`` to swap (``llm.data.counterfactual.Swapper.swap_parts``, prompt and
completion swapped together) becomes a pair, the example and its counterfactual as two
consecutive segments of one row, marked in 'pair' (2k-1 and 2k for a row's k-th pair, 0
elsewhere) for ``llm.trainer.counterfactual_pair_loss``. A pair longer than a row is cut to
half a row a member under ``truncation='truncate_prompt'`` (``pair_truncated``; when the
cut prompts no longer differ, one copy is kept, unpaired: ``pair_identical``, so raise
``seq_len`` when that count is high), else its members are laid out apart, unpaired
(``pair_split``). Examples without a swap, and every validation example, are laid out as usual.

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
from llm.data import counterfactual as cf
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
  seed: int = 0  # order of the batches (llm.data.train_dataset), and which examples counterfactual_rate picks
  # Counterfactual augmentation of the training examples (llm.data.counterfactual): the prompt
  # and completion of an example swapped together; validation examples are never changed.
  counterfactual: str = ''  # categories of data/counterfactual/ ('gender,gender_names') or list paths; '' = off
  counterfactual_mode: str = 'add'  # 'add' (a swapped copy of each chosen example) or 'substitute' (replace it)
  counterfactual_rate: float = 1.0  # fraction of the examples with a swap that are chosen, by a hash of (seed, index)
  # Debiasing objective (llm.trainer.counterfactual_pair_loss): each training example with a term
  # of debias_lists to swap is laid out beside its counterfactual in one row (both trained), and
  # the loss adds debias_weight x the squared gap of their completions' mean log-probabilities.
  debias_weight: float = 0.0  # lambda of the pair penalty; 0 = off (and the rows are laid out as without it)
  debias_lists: str = 'gender,gender_names'  # categories of data/counterfactual/ or list paths that make the pairs


@dataclasses.dataclass
class SFTData:
  """Packed rows (a ``Corpus`` that ``llm.data.train_dataset`` streams) and what happened to the examples."""

  corpus: Corpus
  report: dict[str, Any]
  labels: list[str] = dataclasses.field(default_factory=list)  # head='classifier': class names by index


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


def counterfactual_examples(examples: list[tuple[list[Chunk], str]], cfg: SFTConfig, root: str = '.'
                            ) -> tuple[list[tuple[list[Chunk], str]], cf.Counters | None]:
  """``examples`` augmented by ``cfg.counterfactual`` (``llm.data.counterfactual.augment``):
  the chunks of an example are swapped as one text, so its prompt and completion get the
  same mapping. Copies are named '<where> (counterfactual)'. (examples, None) when off."""
  cf.check_options(cfg.counterfactual_mode, cfg.counterfactual_rate, 'sft')
  if not cf.split_specs(cfg.counterfactual):
    return examples, None
  swapper = cf.Swapper.from_categories(cfg.counterfactual, root)
  got, counters = cf.augment_parts([[text for text, _ in chunks] for chunks, _ in examples], swapper,
                                   cfg.counterfactual_mode, cfg.counterfactual_rate, cfg.seed)
  out = []
  for i, parts, swapped in got:
    chunks, where = examples[i]
    out.append(([(p, trained) for p, (_, trained) in zip(parts, chunks)],
                f'{where} (counterfactual)' if swapped else where))
  return out, counters


def check_debias(cfg: SFTConfig, arch: str = 'decoder', head: str = 'lm') -> None:
  """One-line DataErrors for debiasing settings that cannot work."""
  if cfg.debias_weight < 0:
    raise DataError(f'sft.debias_weight must be >= 0 (0 = off), got {cfg.debias_weight}')
  if cfg.debias_weight == 0:
    return
  if arch != 'decoder' or head != 'lm':
    raise DataError(f'sft.debias_weight={cfg.debias_weight} pairs each example with its counterfactual in one packed '
                    f'row, which decoders fine-tuned text to text have; this run is {arch} with head={head}, one '
                    'example a row: set sft.debias_weight=0 (sft.counterfactual augments without the penalty)')
  if cf.split_specs(cfg.counterfactual):
    raise DataError(f'sft.debias_weight={cfg.debias_weight} already trains every example with a swap beside its '
                    f'counterfactual (sft.debias_lists={cfg.debias_lists!r}); leave sft.counterfactual empty')


def debias_examples(examples: list[tuple[list[Chunk], str]], cfg: SFTConfig, root: str = '.'
                    ) -> tuple[list[tuple[list[Chunk], str, list[Chunk] | None]], cf.Counters]:
  """(chunks, where, counterfactual chunks or None) per example: its swap by ``cfg.debias_lists``
  (prompt and completion as one text, ``Swapper.swap_parts``), None when it has no term to swap."""
  try:
    swapper = cf.Swapper.from_categories(cfg.debias_lists, root)
  except DataError as e:
    raise DataError(f'sft.debias_lists={cfg.debias_lists!r}: {e}') from None
  got, counters = cf.augment_parts([[text for text, _ in chunks] for chunks, _ in examples], swapper, 'add', 1.0,
                                   cfg.seed)
  swapped = {i: parts for i, parts, is_copy in got if is_copy}
  return [(chunks, where, [(p, t) for p, (_, t) in zip(swapped[i], chunks)] if i in swapped else None)
          for i, (chunks, where) in enumerate(examples)], counters


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


def examples_to_rows(token_examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, pack: bool,
                     pairs: Sequence[tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
  """Rows [n, seq_len] of inputs/targets/positions/segments (int32) and loss_mask (bool).

  An example of n tokens gives n - 1 (input, target) pairs; loss_mask is True where the
  target is a trained token. Packed: best fit, longest first (``llm.eval.scorer.pack_rows``).
  ``pairs``: (original, counterfactual) indices into ``token_examples``; each pair goes into
  one row as two consecutive segments, and the rows get 'pair' int32 [n, seq_len]: 2k-1 on
  the positions of the row's k-th pair's original, 2k on its counterfactual's, 0 elsewhere
  (an empty list gives 'pair' of zeros; None, no 'pair' field).
  """
  from llm.eval.scorer import pack_rows
  paired = {a: b for a, b in pairs or ()}
  members = set(paired) | set(paired.values())
  if len(members) != 2 * len(paired):
    raise ValueError(f'an example is in two pairs: {sorted(pairs or ())}')
  # Units are laid out whole: an example alone, or a pair (its original first).
  units = sorted([(i,) for i in range(len(token_examples)) if i not in members] + list(paired.items()))
  lengths = [sum(len(token_examples[i][0]) - 1 for i in unit) for unit in units]
  if pack:
    groups, _ = pack_rows(lengths, seq_len)
  else:
    groups = [[u] for u in range(len(units))]
  rows = {k: np.zeros((len(groups), seq_len), np.int32) for k in SFT_FIELDS[:4]}
  rows['loss_mask'] = np.zeros((len(groups), seq_len), bool)
  if pairs is not None:
    rows['pair'] = np.zeros((len(groups), seq_len), np.int32)
  for r, group in enumerate(sorted(groups)):  # rows in order of their first example: stable
    col, sid, k = 0, 0, 0
    for u in sorted(group):
      k += len(units[u]) == 2
      for m, i in enumerate(units[u]):
        toks, trained = token_examples[i]
        n, sid = len(toks) - 1, sid + 1
        if n > seq_len - col:
          raise ValueError(f'example {i} ({n} positions) does not fit a row of {seq_len} after {col}')
        rows['inputs'][r, col:col + n] = toks[:-1]
        rows['targets'][r, col:col + n] = toks[1:]
        rows['positions'][r, col:col + n] = np.arange(n)
        rows['segments'][r, col:col + n] = sid
        rows['loss_mask'][r, col:col + n] = trained[1:]
        if len(units[u]) == 2:
          rows['pair'][r, col:col + n] = 2 * k - 1 + m
        col += n
  return rows


def _tokenize_one(chunks: list[Chunk], where: str, tokenizer: Tokenizer, cfg: SFTConfig, counts: dict[str, int],
                  too_long: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
  """One example tokenised and fitted to a row by ``cfg.truncation``; None when it is left out."""
  toks, trained = tokenize_example(chunks, tokenizer, cfg.add_eos, where)
  if len(toks) > cfg.seq_len + 1:
    too_long.append(where)
    if cfg.truncation == 'fail':
      return None
  toks, trained, what = _fit(toks, trained, cfg.seq_len, cfg.truncation)
  counts[what] = counts.get(what, 0) + 1
  if what == 'dropped':
    return None
  if not trained[1:].any():
    counts['no_target'] = counts.get('no_target', 0) + 1
    return None
  return toks, trained


def _tokenize_all(examples: list[tuple[list[Chunk], str]], tokenizer: Tokenizer, cfg: SFTConfig,
                  counts: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
  out, too_long = [], []
  for chunks, where in examples:
    ex = _tokenize_one(chunks, where, tokenizer, cfg, counts, too_long)
    if ex is not None:
      out.append(ex)
  _refuse_too_long(too_long, len(examples), cfg, f'are longer than seq_len={cfg.seq_len} + 1 tokens')
  return out


def _tokenize_pairs(examples: list[tuple[list[Chunk], str, list[Chunk] | None]], tokenizer: Tokenizer,
                    cfg: SFTConfig, counts: dict[str, int]
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[int, int]]]:
  """``_tokenize_all`` of examples and their counterfactuals (``debias_examples``): the token
  examples, each counterfactual right after its original, and the (original, counterfactual)
  indices of the pairs that share a row (module docstring: pair_truncated, pair_split)."""
  out: list[tuple[np.ndarray, np.ndarray]] = []
  pairs: list[tuple[int, int]] = []
  too_long: list[str] = []
  half = cfg.seq_len // 2
  for chunks, where, cf_chunks in examples:
    a = _tokenize_one(chunks, where, tokenizer, cfg, counts, too_long)
    b = None if cf_chunks is None else _tokenize_one(cf_chunks, f'{where} (counterfactual)', tokenizer, cfg,
                                                    counts, too_long)
    if a is not None and b is not None and len(a[0]) + len(b[0]) - 2 > cfg.seq_len:
      if cfg.truncation == 'truncate_prompt':  # half a row each: the two stay comparable
        a, b = (_fit(*a, half, 'truncate_prompt')[:2], _fit(*b, half, 'truncate_prompt')[:2])
        counts['pair_truncated'] = counts.get('pair_truncated', 0) + 1
        if np.array_equal(a[0], b[0]):  # the cut took every swapped term: one copy, no pair
          counts['pair_identical'] = counts.get('pair_identical', 0) + 1
          b = None
      else:
        counts['pair_split'] = counts.get('pair_split', 0) + 1
        out += [a, b]
        continue
    if a is not None and b is not None and a[1][1:].any() and b[1][1:].any():
      pairs.append((len(out), len(out) + 1))
    out += [ex for ex in (a, b) if ex is not None and ex[1][1:].any()]
  _refuse_too_long(too_long, len(examples), cfg, f'are longer than seq_len={cfg.seq_len} + 1 tokens')
  counts['pairs'] = len(pairs)
  return out, pairs


def _refuse_too_long(too_long: list[str], n: int, cfg: SFTConfig, what: str) -> None:
  """Under truncation='fail': one error counting the examples that do not fit and naming the first."""
  if too_long and cfg.truncation == 'fail':
    raise DataError(f'{len(too_long)} of {n} examples {what} (the first: {too_long[0]}); raise sft.seq_len, '
                    f"or set sft.truncation to 'truncate_prompt' or 'drop'")


def load_sft(cfg: SFTConfig, tokenizer: Tokenizer, root: str = '.', task_dirs: Sequence[str] = ('tasks',),
             arch: str = 'decoder', head: str = 'lm') -> SFTData:
  """Read, tokenise, fit and lay out ``cfg.source`` for ``arch`` (and ``head``: 'lm' or
  'classifier'). Raises DataError on bad input."""
  if cfg.truncation not in TRUNCATION:
    raise DataError(f'sft.truncation={cfg.truncation!r} is unknown; use one of {list(TRUNCATION)}')
  check_debias(cfg, arch, head)
  train_ex, val_ex = read_examples(cfg, root, task_dirs)
  train_ex, counters = counterfactual_examples(train_ex, cfg, root)  # training examples only
  if counters is not None:
    print('\n'.join(counters.lines('training examples')), flush=True)
  pairs_ex = None
  if cfg.debias_weight > 0:
    pairs_ex, pair_counters = debias_examples(train_ex, cfg, root)
    if not pair_counters.with_swap:
      raise DataError(f'sft.debias_weight={cfg.debias_weight}: none of the {len(train_ex)} training examples has a '
                      f'term of sft.debias_lists={cfg.debias_lists!r} to swap, so there is no pair to debias')
    print(f'debiasing pairs ({cfg.debias_lists}): {pair_counters.with_swap:,} of {len(train_ex):,} training '
          f'examples have a term to swap; each is trained beside its counterfactual, in one row', flush=True)
  report: dict[str, Any] = {'train': {}, 'validation': {}}
  labels: list[str] = []
  if head == 'classifier':
    labels = class_names(cfg, train_ex, root, task_dirs)
    train = classification_rows(train_ex, tokenizer, cfg, labels, report['train'])
    val = classification_rows(val_ex, tokenizer, cfg, labels, report['validation'])
    examples = {'train': len(train['inputs']), 'validation': len(val['inputs'])}
  elif arch == 'encoder_decoder':
    train_pairs = seq2seq_examples(train_ex, tokenizer, cfg, report['train'])
    val_pairs = seq2seq_examples(val_ex, tokenizer, cfg, report['validation'])
    examples = {'train': len(train_pairs), 'validation': len(val_pairs)}
    if not train_pairs:
      raise DataError(f'no training example of {cfg.source!r} survives sft.truncation={cfg.truncation!r}')
    dec_len = _round_up(max(len(t) for _, t in train_pairs + val_pairs), 8)
    train = seq2seq_rows(train_pairs, cfg.seq_len, dec_len, tokenizer.pad_id)
    val = seq2seq_rows(val_pairs, cfg.seq_len, dec_len, tokenizer.pad_id)
  else:
    if pairs_ex is None:
      train_tok, train_pairs = _tokenize_all(train_ex, tokenizer, cfg, report['train']), None
    else:
      train_tok, train_pairs = _tokenize_pairs(pairs_ex, tokenizer, cfg, report['train'])
    val_tok = _tokenize_all(val_ex, tokenizer, cfg, report['validation'])
    examples = {'train': len(train_tok), 'validation': len(val_tok)}
    if not train_tok:
      raise DataError(f'no training example of {cfg.source!r} survives sft.truncation={cfg.truncation!r}')
    train = examples_to_rows(train_tok, cfg.seq_len, cfg.pack, train_pairs)
    val = examples_to_rows(val_tok, cfg.seq_len, cfg.pack)
  if examples['train'] == 0:
    raise DataError(f'no training example of {cfg.source!r} survives sft.truncation={cfg.truncation!r}')
  for split, rows in (('train', train), ('validation', val)):
    # Targets: the trained tokens (decoder), the decoder's tokens (encoder-decoder), none (classifier: a label a row).
    scored = rows['loss_mask'] if 'loss_mask' in rows else rows.get('dec_segments', np.zeros(0))
    report[split].update(examples=examples[split], rows=int(len(rows['inputs'])),
                         target_tokens=int((scored > 0).sum()), tokens=int((rows['segments'] > 0).sum()),
                         fill=float((rows['segments'] > 0).mean()) if len(rows['inputs']) else 0.0)
  data_cfg = DataConfig(sources=cfg.source, seq_len=cfg.seq_len, seed=cfg.seed)
  corpus = Corpus(data_cfg, tokenizer, [PackedRows(train)], [1.0], PackedRows(val), [cfg.source],
                  counterfactual=counters)
  return SFTData(corpus, report, labels)


def _round_up(n: int, multiple: int) -> int:
  return -(-max(n, 1) // multiple) * multiple


def seq2seq_examples(examples: list[tuple[list[Chunk], str]], tokenizer: Tokenizer, cfg: SFTConfig,
                     counts: dict[str, int]) -> list[tuple[list[int], list[int]]]:
  """(encoder tokens, decoder targets) per example, framed as ``Seq2SeqLM`` frames a request so
  that a model is evaluated on what it was trained on: the prompt (its trailing whitespace
  moved to the completion, as the harness splits) encoded alone with BOS when the tokenizer
  adds one and EOS (T5 ends its inputs so), the completion encoded alone plus EOS
  (``add_eos``). Each side is fitted to ``seq_len`` by ``truncation``: the prompt cut from the
  left, the completion from the right. Raises DataError for a chat of several assistant turns
  (one encoder input and one target a row)."""
  bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
  eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
  out, too_long = [], []
  for chunks, where in examples:
    flags = [trained for _, trained in chunks]
    first_trained = next((i for i, f in enumerate(flags) if f), len(flags))
    if not all(flags[first_trained:]):
      raise DataError(f'{where}: an encoder-decoder takes one prompt and one completion a row; this example '
                      'has prompt text after a trained turn (a multi-turn chat): split it into one example a turn')
    prompt = ''.join(t for t, trained in chunks if not trained)
    completion = ''.join(t for t, trained in chunks if trained)
    n_spaces = len(prompt) - len(prompt.rstrip())
    if n_spaces:
      prompt, completion = prompt[:-n_spaces], prompt[-n_spaces:] + completion
    target = [int(t) for t in tokenizer.encode(completion)]
    if not target:
      raise DataError(f'{where}: the completion {completion!r:.60} is empty after tokenisation; there is '
                      'nothing to train on')
    enc = bos + [int(t) for t in tokenizer.encode(prompt)] + eos
    target += eos if cfg.add_eos else []
    if len(enc) > cfg.seq_len or len(target) > cfg.seq_len:
      too_long.append(where)
      if cfg.truncation != 'truncate_prompt':
        counts['dropped'] = counts.get('dropped', 0) + 1
        continue
      what = 'prompt_truncated' if len(enc) > cfg.seq_len else 'completion_truncated'
      counts[what] = counts.get(what, 0) + 1
      enc, target = enc[-cfg.seq_len:], target[:cfg.seq_len]
    else:
      counts['kept'] = counts.get('kept', 0) + 1
    out.append((enc, target))
  _refuse_too_long(too_long, len(examples), cfg,
                   f'have a prompt or completion longer than seq_len={cfg.seq_len} tokens')
  return out


def seq2seq_rows(pairs: list[tuple[list[int], list[int]]], seq_len: int, dec_len: int, start_id: int
                 ) -> dict[str, np.ndarray]:
  """One example a row for an encoder-decoder: 'inputs'/'positions'/'segments' [n, seq_len] of
  the encoder tokens, 'dec_inputs'/'targets'/'dec_positions'/'dec_segments' [n, dec_len] of the
  targets, the decoder input being the start token (the pad id, as T5's) then the targets
  shifted right."""
  n = len(pairs)
  rows = {k: np.zeros((n, seq_len), np.int32) for k in ('inputs', 'positions', 'segments')}
  rows.update({k: np.zeros((n, dec_len), np.int32) for k in ('dec_inputs', 'targets', 'dec_positions',
                                                             'dec_segments')})
  for r, (enc, target) in enumerate(pairs):
    rows['inputs'][r, :len(enc)] = enc
    rows['positions'][r, :len(enc)] = np.arange(len(enc))
    rows['segments'][r, :len(enc)] = 1
    k = len(target)
    rows['targets'][r, :k] = target
    rows['dec_inputs'][r, :k] = [start_id] + target[:-1]
    rows['dec_positions'][r, :k] = np.arange(k)
    rows['dec_segments'][r, :k] = 1
  return rows


def class_names(cfg: SFTConfig, examples: list[tuple[list[Chunk], str]], root: str,
                task_dirs: Sequence[str]) -> list[str]:
  """The classifier's classes by index: a task source's choices, else ``label_names``' names."""
  specs = [s.strip() for s in cfg.source.split(',') if s.strip()]
  if len(specs) == 1 and specs[0].startswith('task:'):
    from llm.eval import tasks as tasks_lib
    dirs = [d if os.path.isabs(d) else os.path.join(root, d) for d in task_dirs]
    try:
      return tasks_lib.load_task(tasks_lib.discover(dirs)[specs[0][len('task:'):]]).class_names()
    except tasks_lib.TaskError as e:
      raise DataError(str(e)) from None
  names = _label_map(cfg.label_names)
  if names is None:
    raise DataError('a classifier needs its classes: fine-tune on one task:<name> with fixed choices, or set '
                    "sft.label_names='column=name0,name1,...' for files")
  return [n.strip() for n in names[1]]


def classification_rows(examples: list[tuple[list[Chunk], str]], tokenizer: Tokenizer, cfg: SFTConfig,
                        labels: list[str], counts: dict[str, int]) -> dict[str, np.ndarray]:
  """One example a row for an encoder's classifier: [BOS] prompt [EOS] in 'inputs'/'positions'/
  'segments' [n, seq_len] (longer ones handled by sft.truncation, cut from the right), and
  the completion's class index in 'labels' [n, 1]."""
  rows: dict[str, list] = {k: [] for k in ('inputs', 'positions', 'segments', 'labels')}
  too_long = []
  head = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
  tail = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
  for chunks, where in examples:
    prompt = ''.join(t for t, trained in chunks if not trained)
    answer = ''.join(t for t, trained in chunks if trained).strip()
    if answer not in labels:
      raise DataError(f'{where}: the answer {answer!r} is not one of the classes {labels}')
    body = [int(t) for t in tokenizer.encode(prompt)]
    toks = head + body + tail
    if len(toks) > cfg.seq_len:
      too_long.append(where)
      if cfg.truncation != 'truncate_prompt':
        counts['dropped'] = counts.get('dropped', 0) + 1
        continue
      toks = head + body[:cfg.seq_len - len(head) - len(tail)] + tail
      counts['prompt_truncated'] = counts.get('prompt_truncated', 0) + 1
    else:
      counts['kept'] = counts.get('kept', 0) + 1
    pad = cfg.seq_len - len(toks)
    rows['inputs'].append(toks + [tokenizer.pad_id] * pad)
    rows['positions'].append(list(range(len(toks))) + [0] * pad)
    rows['segments'].append([1] * len(toks) + [0] * pad)
    rows['labels'].append([labels.index(answer)])
  _refuse_too_long(too_long, len(examples), cfg, f'are longer than seq_len={cfg.seq_len} tokens')
  width = {'labels': 1}
  return {k: np.asarray(v, np.int32).reshape(-1, width.get(k, cfg.seq_len)) for k, v in rows.items()}
