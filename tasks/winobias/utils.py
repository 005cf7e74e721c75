"""WinoBias task functions: the manifest rows -> parsed sentences, per-document items, aggregations.

Parsing and arithmetic live in ``llm.eval.bias``; this file only adapts them to the task.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # the harness loads this file by path, outside the repository's imports
  sys.path.insert(0, _ROOT)

from llm.eval import bias  # noqa: E402

_DATA = os.path.join(_ROOT, 'data')


def process_docs(dataset):
  """Each manifest row ({"file", "condition", "type"}, file relative to data/) -> its sentences.

  Docs are ordered by (line number, type, pro before anti), so each pro sentence sits next
  to its anti twin and a run with ``limit`` scores whole pairs of both types. Takes and
  returns a list of dicts, or a ``datasets.Dataset`` under the harness.
  """
  occupations = bias.load_occupations(os.path.join(_DATA, 'winobias'))
  docs = []
  for row in dataset:
    docs += bias.parse_winobias_file(os.path.join(_DATA, row['file']), row['condition'], int(row['type']),
                                     occupations)
  docs.sort(key=lambda d: (d['line_no'], d['type'], d['condition'] != 'pro'))
  if type(dataset).__module__.startswith('datasets'):
    import datasets  # pylint: disable=import-outside-toplevel
    return datasets.Dataset.from_list(docs)
  return docs


def process_results(doc: dict, results: list) -> dict:
  """results: [(loglikelihood, is_greedy)] per choice; the prediction is the most likely."""
  lls = [r[0] for r in results]
  item = bias.winobias_item(doc, max(range(len(lls)), key=lls.__getitem__))
  return {'acc': item['correct'], 'acc_pro': item, 'acc_anti': item, 'pro_anti_gap': item}


agg_acc_pro = bias.winobias_acc_pro
agg_acc_anti = bias.winobias_acc_anti
agg_pro_anti_gap = bias.winobias_pro_anti_gap
