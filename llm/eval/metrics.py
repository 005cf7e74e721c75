"""Per-document metrics, their aggregations and standard errors, as lm-evaluation-harness 0.4.13.

Scoring a task has the harness's two steps:

1. ``process_results``: the task turns the LM's answers for one doc into a score record for
   its output type (``ChoiceScores``, ``LoglikelihoodScore``, ``RollingScore``,
   ``GenerationScore``); each metric in ``METRICS`` reads its per-doc value off that record.
2. Aggregation: a function from ``AGGREGATIONS`` reduces one metric's per-doc values to the
   reported number and ``stderr`` gives its standard error, choosing as the harness's
   ``stderr_for_metric`` does: ``mean`` has the closed form (sample stddev / sqrt(n)),
   ``perplexity``, ``median`` and ``nanmean`` are bootstrapped, ``weighted_perplexity``,
   ``bits_per_byte`` and ``brier_score`` have none (the harness writes "N/A").

The bootstrap draws exactly the harness's resamples (chunk ``i`` of 1000 uses
``random.Random(i)``), vectorised with numpy, so a perplexity stderr matches the harness's
to rounding at any ``bootstrap_iters``.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# The harness's sentinel for a gold label that is not among the choices.
NO_GOLD = -100


# ---------------------------------------------------------------------------------------------
# Per-doc score records, one per output type.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChoiceScores:
  """One ``multiple_choice`` doc: a log-likelihood per choice and the gold index or indices."""
  lls: np.ndarray  # [c] sum log p of each choice's continuation
  is_greedy: tuple[bool, ...]  # [c] whether that continuation is the greedy one
  choices: list[str]  # the strings whose lengths normalise acc_norm / acc_bytes
  gold: int | list[int]  # NO_GOLD where the label is not among the choices
  lls_unconditional: np.ndarray | None = None  # [c] log p(choice | ""), for acc_mutual_info

  def hit(self, pred: int) -> bool:
    """Whether choice ``pred`` is (one of) the gold answer(s)."""
    return pred in self.gold if isinstance(self.gold, list) else pred == self.gold


@dataclasses.dataclass(frozen=True)
class LoglikelihoodScore:
  """One ``loglikelihood`` doc: the target's log-likelihood and whether it is greedy."""
  ll: float
  is_greedy: bool


@dataclasses.dataclass(frozen=True)
class RollingScore:
  """One ``loglikelihood_rolling`` doc: the text's log-likelihood and its size."""
  ll: float
  words: int  # len(re.split(r"\s+", text)), the harness's count (a trailing space adds one)
  bytes: int  # UTF-8 bytes


@dataclasses.dataclass(frozen=True)
class GenerationScore:
  """One ``generate_until`` doc: the generation and the reference(s)."""
  prediction: str
  gold: str | list[str]  # a list when doc_to_target gives several acceptable answers


# ---------------------------------------------------------------------------------------------
# Per-doc metric values.
# ---------------------------------------------------------------------------------------------


def _normalised_argmax_hit(s: ChoiceScores, lengths: Sequence[float]) -> float:
  return 1.0 if s.hit(int(np.argmax(s.lls / np.asarray(lengths, dtype=float)))) else 0.0


def _choice_exact_match(s: ChoiceScores) -> int:
  # The gold choice's continuation is the greedy one; a missing gold scores 0.
  if isinstance(s.gold, list):
    return int(any(s.is_greedy[i] if i != NO_GOLD else 0 for i in s.gold))
  return int(s.is_greedy[s.gold]) if s.gold != NO_GOLD else 0


def _mutual_info_hit(s: ChoiceScores) -> float:
  if s.lls_unconditional is None:
    raise ValueError('acc_mutual_info needs the unconditional log-likelihoods')
  # `==`, not `hit`: the harness compares the argmax to the gold as is, so a list gold never
  # matches; kept for parity.
  return 1.0 if int(np.argmax(s.lls - s.lls_unconditional)) == s.gold else 0.0


def _softmax(x: np.ndarray) -> np.ndarray:
  e = np.exp(x - np.max(x))
  return e / e.sum()


def exact_match(prediction: str, reference: str, regexes_to_ignore: Sequence[str] | None = None,
                ignore_case: bool = False, ignore_punctuation: bool = False,
                ignore_numbers: bool = False) -> bool:
  """Whether the two strings are equal after the harness's optional normalisations."""
  for pattern in regexes_to_ignore or ():
    prediction, reference = re.sub(pattern, '', prediction), re.sub(pattern, '', reference)
  if ignore_case:
    prediction, reference = prediction.lower(), reference.lower()
  if ignore_punctuation:
    table = str.maketrans('', '', string.punctuation)
    prediction, reference = prediction.translate(table), reference.translate(table)
  if ignore_numbers:
    table = str.maketrans('', '', string.digits)
    prediction, reference = prediction.translate(table), reference.translate(table)
  # The harness compares numpy fixed-width strings, which drop trailing NULs.
  return prediction.rstrip('\x00') == reference.rstrip('\x00')


def _golds(s: GenerationScore) -> list[str]:
  return [str(g) for g in (s.gold if isinstance(s.gold, list) else [s.gold])]


def _generation_exact_match(s: GenerationScore, **options: Any) -> float:
  golds = s.gold if isinstance(s.gold, list) else [s.gold]
  return 1.0 if any(exact_match(s.prediction, g, **options) for g in golds) else 0.0


EXACT_MATCH_OPTIONS = ('regexes_to_ignore', 'ignore_case', 'ignore_punctuation', 'ignore_numbers')


@dataclasses.dataclass(frozen=True)
class Metric:
  """A per-doc metric: its value for each output type it is defined on, and how it reduces."""
  compute: Mapping[str, Callable[..., Any]]  # output_type -> f(score record, **options)
  aggregation: str  # key of AGGREGATIONS
  higher_is_better: bool
  options: tuple[str, ...] = ()  # extra keys a metric_list item may pass to `compute`


# The metrics the harness's built-in process_results computes, per output type. A task with
# its own `process_results` may return any metric names.
METRICS: dict[str, Metric] = {
    'acc': Metric({
        'multiple_choice': lambda s: 1.0 if s.hit(int(np.argmax(s.lls))) else 0.0,
        'loglikelihood': lambda s: int(s.is_greedy),
    }, 'mean', True),
    # Length-normalised by characters of the choice string (not tokens, not the delimiter).
    'acc_norm': Metric({
        'multiple_choice': lambda s: _normalised_argmax_hit(s, [len(c) for c in s.choices]),
    }, 'mean', True),
    'acc_bytes': Metric({
        'multiple_choice': lambda s: _normalised_argmax_hit(
            s, [len(c.encode('utf-8')) for c in s.choices]),
    }, 'mean', True),
    'acc_mutual_info': Metric({'multiple_choice': _mutual_info_hit}, 'mean', True),
    'brier_score': Metric({
        'multiple_choice': lambda s: (s.gold, _softmax(s.lls)),
    }, 'brier_score', False),
    'exact_match': Metric({
        'multiple_choice': _choice_exact_match,
        'generate_until': _generation_exact_match,
    }, 'mean', True, EXACT_MATCH_OPTIONS),
    # The three below pass the raw numbers through; the aggregation does the work.
    'perplexity': Metric({'loglikelihood': lambda s: s.ll}, 'perplexity', False),
    'word_perplexity': Metric({
        'loglikelihood_rolling': lambda s: (s.ll, s.words),
    }, 'weighted_perplexity', False),
    'byte_perplexity': Metric({
        'loglikelihood_rolling': lambda s: (s.ll, s.bytes),
    }, 'weighted_perplexity', False),
    'bits_per_byte': Metric({
        'loglikelihood_rolling': lambda s: (s.ll, s.bytes),
    }, 'bits_per_byte', False),
    # Corpus-level translation metrics (sacrebleu's defaults, as the harness computes them):
    # each doc passes (references, prediction) and the aggregation scores the whole corpus.
    'chrf': Metric({'generate_until': lambda s: (_golds(s), s.prediction)}, 'chrf', True),
    'bleu': Metric({'generate_until': lambda s: (_golds(s), s.prediction)}, 'bleu', True),
}

# The harness's DEFAULT_METRIC_REGISTRY: what a task without metric_list reports.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    'loglikelihood': ('perplexity', 'acc'),
    'multiple_choice': ('acc', 'acc_norm'),
    'loglikelihood_rolling': ('word_perplexity', 'byte_perplexity', 'bits_per_byte'),
    'generate_until': ('exact_match',),
}


def metrics_for(output_type: str) -> list[str]:
  """Names of the built-in metrics defined on ``output_type``."""
  return [name for name, m in METRICS.items() if output_type in m.compute]


# ---------------------------------------------------------------------------------------------
# Aggregations.
# ---------------------------------------------------------------------------------------------


def mean(items: Sequence[float]) -> float:
  """Arithmetic mean, summed left to right as the harness does."""
  return sum(items) / len(items)


def median(items: Sequence[float]) -> float:
  """The harness's median: the upper middle element (no averaging for an even count)."""
  return sorted(items)[len(items) // 2]


def nanmean(items: Sequence[float]) -> float:
  """Mean ignoring NaNs; NaN when all are NaN."""
  if len(items) == 0 or all(np.isnan(items)):
    return float('nan')
  return float(np.nanmean(items))


def perplexity(items: Sequence[float]) -> float:
  """exp(-mean log-likelihood) over docs (each doc weighs the same)."""
  return math.exp(-mean(items))


def _weighted_mean(items: Sequence[tuple[float, int]]) -> float:
  lls, counts = zip(*items)
  return sum(lls) / sum(counts)


def weighted_perplexity(items: Sequence[tuple[float, int]]) -> float:
  """exp(-sum ll / sum units), units being words or bytes."""
  return math.exp(-_weighted_mean(items))


def bits_per_byte(items: Sequence[tuple[float, int]]) -> float:
  """-sum ll / sum bytes / ln 2."""
  return -_weighted_mean(items) / math.log(2)


def brier_score(items: Sequence[tuple[int, np.ndarray]]) -> float:
  """Mean squared distance of the choice distribution from the one-hot gold."""
  gold, probs = zip(*items)
  bad = sum(isinstance(g, list) or g == NO_GOLD for g in gold)
  if bad:
    raise ValueError(f'brier_score needs one gold choice per doc; {bad} docs have none among '
                     'their choices or several (the harness fails on them too).')
  probs = np.array(probs)
  return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[list(gold)]) ** 2, axis=1)))


def _sacrebleu_refs(items: Sequence[tuple[list[str], str]]) -> tuple[list[list[str]], list[str]]:
  """sacrebleu's layout: one reference stream per reference index (docs with fewer repeat their first)."""
  n = max(len(refs) for refs, _ in items)
  streams = [[refs[i] if i < len(refs) else refs[0] for refs, _ in items] for i in range(n)]
  return streams, [pred for _, pred in items]


def chrf(items: Sequence[tuple[list[str], str]]) -> float:
  """Corpus chrF (Popovic, 2015; sacrebleu: char_order 6, word_order 0, beta 2), 0..100."""
  import sacrebleu
  refs, preds = _sacrebleu_refs(items)
  return float(sacrebleu.corpus_chrf(preds, refs).score)


def bleu(items: Sequence[tuple[list[str], str]]) -> float:
  """Corpus BLEU (Papineni et al., 2002; sacrebleu's 13a tokenisation), 0..100."""
  import sacrebleu
  refs, preds = _sacrebleu_refs(items)
  return float(sacrebleu.corpus_bleu(preds, refs).score)


AGGREGATIONS: dict[str, Callable[[Sequence[Any]], float]] = {
    'chrf': chrf,
    'bleu': bleu,
    'mean': mean,
    'median': median,
    'nanmean': nanmean,
    'perplexity': perplexity,
    'weighted_perplexity': weighted_perplexity,
    'bits_per_byte': bits_per_byte,
    'brier_score': brier_score,
}


# ---------------------------------------------------------------------------------------------
# Standard errors.
# ---------------------------------------------------------------------------------------------


def sample_stddev(items: Sequence[float]) -> float:
  """Standard deviation with Bessel's correction (n - 1)."""
  mu = mean(items)
  return math.sqrt(sum((x - mu) ** 2 for x in items) / (len(items) - 1))


def mean_stderr(items: Sequence[float]) -> float:
  """Standard error of the mean: sample stddev / sqrt(n)."""
  return sample_stddev(items) / math.sqrt(len(items))


# A statistic of each row of an [r, n] array of resampled items, for the bootstrap.
_ROW_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'perplexity': lambda x: np.exp(-x.sum(axis=1) / x.shape[1]),
    'median': lambda x: np.sort(x, axis=1)[:, x.shape[1] // 2],
    'nanmean': lambda x: np.nanmean(x, axis=1),
}


def _python_rng_as_numpy(seed: int) -> np.random.RandomState:
  """A numpy generator in the exact state of ``random.Random(seed)``.

  Both are MT19937 and both build a double from two 32-bit draws the same way, so
  ``random_sample`` yields the very numbers ``Random.random`` would.
  """
  _, state, _ = random.Random(seed).getstate()
  rng = np.random.RandomState()
  rng.set_state(('MT19937', np.array(state[:624], dtype=np.uint32), state[624]))
  return rng


def bootstrap_stderr(aggregation: str, items: Sequence[float], iters: int) -> float:
  """The harness's bootstrap: stddev of ``aggregation`` over ``iters`` resamples of ``items``.

  As the harness: resamples come in chunks of ``min(1000, iters)``; chunk ``i`` draws from
  ``random.Random(i)`` with ``choices(items, k=n)``; ``iters // chunk`` chunks (so a
  remainder is dropped). ``choices`` picks index ``floor(random() * n)``, reproduced here.
  """
  xs = np.asarray(items, dtype=float)
  n = len(xs)
  chunk = min(1000, iters)
  statistic = _ROW_STATISTICS[aggregation]
  stats = []
  # Rows per numpy call: bounds memory at ~32 MB whatever n is, same draws in the same order.
  rows = max(1, min(chunk, (1 << 22) // max(n, 1)))
  for i in range(iters // chunk):
    rng = _python_rng_as_numpy(i)
    for start in range(0, chunk, rows):
      r = min(rows, chunk - start)
      idx = np.floor(rng.random_sample((r, n)) * n).astype(np.int64)
      stats.extend(statistic(xs[idx]).tolist())
  return sample_stddev(stats)


def stderr(aggregation: str | Callable[..., float], items: Sequence[Any],
           bootstrap_iters: int = 100000) -> float | None:
  """Standard error of ``aggregation(items)`` as the harness reports it; None = "N/A".

  None when ``bootstrap_iters <= 0``, with fewer than two items, for a custom (callable)
  aggregation and for the weighted perplexities, brier_score: the harness has no stderr there.
  """
  if bootstrap_iters <= 0 or len(items) < 2 or callable(aggregation):
    return None
  if aggregation == 'mean':
    return mean_stderr(items)
  if aggregation in _ROW_STATISTICS:
    return bootstrap_stderr(aggregation, items, bootstrap_iters)
  return None
