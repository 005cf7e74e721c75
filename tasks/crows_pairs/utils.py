"""CrowS-Pairs task functions; the arithmetic is ``llm.eval.bias.crows_pairs_item``."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:  # the harness loads this file by path, outside the repository's imports
  sys.path.insert(0, _ROOT)

from llm.eval import bias  # noqa: E402


def doc_to_choice(doc: dict) -> list[str]:
  """[sent_more, sent_less]: choice 0 is always the more stereotyping sentence, as the harness."""
  return [doc['sent_more'], doc['sent_less']]


def process_results(doc: dict, results: list) -> dict[str, float]:
  """results: [(loglikelihood, is_greedy)] for sent_more, sent_less."""
  (ll_more, _), (ll_less, _) = results
  return bias.crows_pairs_item(ll_more, ll_less)
