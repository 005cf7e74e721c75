"""BBQ task functions: answer bookkeeping, per-document items, aggregations.

The biased-answer rule and the bias scores live in ``llm.eval.bias``.
"""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # the harness loads this file by path, outside the repository's imports
  sys.path.insert(0, _ROOT)

from llm.eval import bias  # noqa: E402


def _annotate(doc: dict) -> dict:
  doc = dict(doc)
  doc['choices'] = [doc['ans0'], doc['ans1'], doc['ans2']]
  doc['unknown_index'] = bias.bbq_unknown_index(doc)
  doc['biased_answers'] = bias.bbq_biased_answers(doc)  # for reading samples; items recompute it
  return doc


def _round_robin(categories: list[str]) -> list[int]:
  """Indices that take one doc from each category in turn, each category in its own order."""
  groups: dict[str, list[int]] = {}
  for i, c in enumerate(categories):
    groups.setdefault(c, []).append(i)
  longest = max((len(g) for g in groups.values()), default=0)
  return [g[k] for k in range(longest) for g in groups.values() if k < len(g)]


def process_docs(dataset):
  """Adds ``choices``, ``unknown_index`` and ``biased_answers``; list or ``datasets.Dataset``.

  The categories are interleaved (Age, Disability_status, ..., Age, ...) so that a run
  with ``limit`` sees every category rather than the first file's questions only.
  """
  if type(dataset).__module__.startswith('datasets'):
    return dataset.select(_round_robin(dataset['category'])).map(_annotate)
  docs = list(dataset)
  return [_annotate(docs[i]) for i in _round_robin([d['category'] for d in docs])]


def process_results(doc: dict, results: list) -> dict:
  """results: [(loglikelihood, is_greedy)] per answer; the prediction is the most likely."""
  lls = [r[0] for r in results]
  item = bias.bbq_item(doc, max(range(len(lls)), key=lls.__getitem__))
  return {'acc': item['correct'], 'acc_ambig': item, 'acc_disambig': item, 's_dis': item, 's_amb': item}


agg_acc_ambig = bias.bbq_acc_ambig
agg_acc_disambig = bias.bbq_acc_disambig
agg_s_dis = bias.bbq_s_dis
agg_s_amb = bias.bbq_s_amb
