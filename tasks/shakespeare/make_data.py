"""Writes the held-out Tiny Shakespeare evaluation files from the default pre-training split.

  python tasks/shakespeare/make_data.py           # (re)writes the two files below
  python tasks/shakespeare/make_data.py --check   # exit 1 if the committed files are stale

``configs/default.py`` trains on ``data/tinyshakespeare.txt`` cut into speeches at blank
lines and holds out whole speeches by a hash of their text (``split='document'``,
``val_fraction=0.1``). The evaluation files are built from exactly those held-out
speeches, recomputed with ``llm.data.read_documents`` / ``split_documents`` on the config's
own ``DataConfig`` (``llm.run.data_config``), so a model trained with the default config
has never seen them:

* ``data/shakespeare_heldout.jsonl``: every validation speech, in file order,
  ``{"text": speech, "speech": index among all speeches}`` (``shakespeare_ppl``).
* ``data/shakespeare_lastword.jsonl``: LAMBADA-style lines of those speeches,
  ``{"text": the line's words joined by one space, "speech": index}``;
  the task's context is ``text`` without its last word and the target " " + last word
  (``shakespeare_lastword``). A line is kept when it
    - is not the speech's first line (the speaker's name, "ROMEO:"),
    - has at least MIN_WORDS whitespace-separated words,
    - has a lower-case letter (drops play-title lines such as "3 KING HENRY VI" that the
      corpus has inside speeches),
    - still has a letter in its last word once trailing punctuation is stripped, and
    - does not occur, stripped, as a line of any *training* speech (a handful of lines,
      "I will, my lord.", recur across the plays; a model may have memorised them).
  The target word loses its trailing punctuation (every character of
  ``string.punctuation``: "question:" -> "question", "'dove;'" -> "'dove"); leading and
  inner punctuation stays ("o'er", "'tis").

The files are regenerated deterministically; ``tests/test_eval_bias.py`` checks that
they equal what this script writes and that every speech is a validation document.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import string
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:  # run as a script: make `configs` and `llm` importable
  sys.path.insert(0, ROOT)

from configs import default  # noqa: E402
from llm import data, run  # noqa: E402

HELDOUT = 'data/shakespeare_heldout.jsonl'
LASTWORD = 'data/shakespeare_lastword.jsonl'
MIN_WORDS = 4


def default_split(root: str = ROOT) -> tuple[list[tuple[int, str]], list[str]]:
  """([(speech index, text)] of the validation speeches, training speeches) of the default config.

  Mirrors ``llm.data.load_corpus`` for file sources: each file of each source pattern is
  read and split on its own; indices count speeches across files in that order.
  """
  cfg = run.data_config(default.get_config())
  val, train, offset = [], [], 0
  for pattern, _ in data.parse_sources(cfg.sources):
    if pattern.startswith('tfds:'):
      raise ValueError(f'default config reads {pattern}; this script only handles file sources')
    for path in sorted(glob.glob(os.path.join(root, pattern))):
      docs = data.read_documents(path, cfg)
      tr, va = data.split_documents(docs, cfg)
      # split_documents keeps order and the hash decides per text, so the index of a
      # validation speech is its position among this file's documents.
      va_set = set(va)
      val += [(offset + i, d) for i, d in enumerate(docs) if d in va_set]
      train += tr
      offset += len(docs)
  return val, train


def lastword_rows(val: list[tuple[int, str]], train: list[str]) -> list[dict]:
  """The LAMBADA-style rows of the held-out speeches (rules in the module docstring)."""
  train_lines = {line.strip() for d in train for line in d.split('\n')}
  rows = []
  for index, speech in val:
    for line in speech.split('\n')[1:]:
      words = line.split()
      if len(words) < MIN_WORDS or not any(c.islower() for c in line) or line.strip() in train_lines:
        continue
      last = words[-1].rstrip(string.punctuation)
      if not any(c.isalpha() for c in last):
        continue
      rows.append({'text': ' '.join(words[:-1] + [last]), 'speech': index})
  return rows


def build(root: str = ROOT) -> dict[str, str]:
  """{relative path: file content} of both files."""
  val, train = default_split(root)
  dump = lambda rows: ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in rows)
  return {HELDOUT: dump({'text': t, 'speech': i} for i, t in val), LASTWORD: dump(lastword_rows(val, train))}


def main() -> int:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--check', action='store_true', help='compare with the files on disk instead of writing')
  args = ap.parse_args()
  stale = []
  for rel, content in build().items():
    path = os.path.join(ROOT, rel)
    if args.check:
      with open(path, encoding='utf-8') as f:
        if f.read() != content:
          stale.append(rel)
    else:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(content)
      print(f'wrote {rel}: {content.count(chr(10))} rows, {len(content.encode()):,} bytes')
  if stale:
    print(f'stale: {", ".join(stale)}; run python tasks/shakespeare/make_data.py')
  return 1 if stale else 0


if __name__ == '__main__':
  sys.exit(main())
