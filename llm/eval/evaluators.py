"""Evaluators: small classes in one explicit registry, shared by pre-training and the eval loop.

A config names its evaluators in ``config.evals`` (big_vision style)::

  c.evals.fewshot = dict(type='fewshot', tasks='sst2,sst2_fewshot', every=500)
  c.evals.bias = dict(type='bias', tasks='crows_pairs_english,winobias,bbq', every=0)

``type`` is a key of ``EVALUATORS``; the other fields are the class's arguments, except
``every`` (steps between runs during pre-training; 0 = only in the evaluation loop).
Each evaluator runs its tasks against a scorer (``llm.eval.scorer.ModelLM``, the
harness's LM interface over our model) and returns ``TaskResult``s; the caller writes
them (``llm.eval.results``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import Any

from llm.eval import tasks as tasks_lib


class EvalConfigError(ValueError):
  """An evaluator entry in config.evals that cannot run; the message names the fix."""


@dataclasses.dataclass
class EvalOutput:
  """What one evaluator run produced."""

  name: str  # the config.evals key
  results: list[tasks_lib.TaskResult]
  seconds: float
  lm_stats: dict[str, Any]  # requests, requests/s, truncated prompts ... of this run
  files: list[str] = dataclasses.field(default_factory=list)  # reports written


def _split(names: str | Sequence[str]) -> list[str]:
  if isinstance(names, str):
    return [n.strip() for n in names.split(',') if n.strip()]
  return [str(n) for n in names]


class FewShotEvaluator:
  """Runs task files (zero- or few-shot) and reports their metrics."""

  def __init__(self, name: str, tasks: str | Sequence[str], task_dirs: Sequence[str], num_fewshot: int = -1,
               limit: int = 0, seed: int = 1234):
    """tasks: names found in ``task_dirs``. num_fewshot -1 keeps each task's own; limit 0 = all docs."""
    self.name = name
    available = tasks_lib.discover(task_dirs)
    wanted = _split(tasks)
    if not wanted:
      raise EvalConfigError(f'config.evals.{name}.tasks is empty; list task names, e.g. '
                            f'{",".join(sorted(available)[:3])}')
    missing = [t for t in wanted if t not in available]
    if missing:
      raise EvalConfigError(
          f'config.evals.{name}.tasks names {missing}, which no task file in {list(task_dirs)} defines; '
          f'available: {", ".join(sorted(available))} (add a YAML task file to one of those directories)')
    self.tasks = [tasks_lib.load_task(available[t], num_fewshot=None if num_fewshot < 0 else num_fewshot,
                                      seed=seed) for t in wanted]
    self.limit = limit or None

  def run(self, lm, out_dir: str | None = None) -> EvalOutput:
    """Evaluate every task with ``lm``; ``out_dir`` is where reports go (unused here)."""
    del out_dir
    t0 = time.perf_counter()
    before = dict(lm.stats)
    tasks = self.tasks
    reason = getattr(lm, 'skip_reason', None)  # a masked LM cannot generate; a classifier answers its classes only
    if reason is not None:
      skipped = {t.name: why for t in tasks if (why := reason(t))}
      for name, why in skipped.items():
        print(f'{self.name}: skipping {name} ({why})', flush=True)
      tasks = [t for t in tasks if t.name not in skipped]
    results = [tasks_lib.evaluate_task(task, self.lm_for(task, lm), limit=self.limit) for task in tasks]
    return EvalOutput(self.name, results, time.perf_counter() - t0, _stats_delta(before, lm.stats))

  def lm_for(self, task: tasks_lib.Task, lm):
    """The LM that answers ``task``'s requests (subclasses may route a task elsewhere)."""
    del task
    return lm


class BiasEvaluator(FewShotEvaluator):
  """Bias probes (CrowS-Pairs, WinoBias, BBQ): task metrics plus a Markdown report with plots.

  A masked LM answers CrowS-Pairs with Nangia et al.'s metric (``bias.lm_for_task``).
  """

  def lm_for(self, task: tasks_lib.Task, lm):
    from llm.eval import bias
    return bias.lm_for_task(task.name, lm)

  def run(self, lm, out_dir: str | None = None) -> EvalOutput:
    out = super().run(lm)
    if out_dir is not None:
      from llm.eval import bias  # matplotlib is imported only when a report is written
      flat, samples = {}, {}
      for r in out.results:
        for sub in [r, *r.subtasks]:
          entry = dict(sub.metrics)
          entry.update({f'{k}_stderr': v for k, v in sub.stderrs.items()})
          entry['n'] = sub.n
          flat[sub.name] = entry
        samples[r.name] = r.samples
      out.files.append(bias.write_bias_report(flat, samples, out_dir))
    return out


# The registry: config.evals.<name>.type -> class. Add an evaluator here, nowhere else.
EVALUATORS: dict[str, type[FewShotEvaluator]] = {
    'fewshot': FewShotEvaluator,
    'bias': BiasEvaluator,
}


def _stats_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
  """What a scorer's counters grew by during one run; ratios are recomputed, not subtracted."""
  ratios = ('requests_per_sec', 'row_fill')
  out = {k: v - before.get(k, 0) for k, v in after.items()
         if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ratios}
  if out.get('seconds'):
    out['requests_per_sec'] = out.get('requests', 0) / out['seconds']
  if out.get('row_slots'):
    out['row_fill'] = out.get('tokens_forward', 0) / out['row_slots']
  return out


def build_evaluators(evals_cfg: dict[str, dict[str, Any]], task_dirs: Sequence[str],
                     root: str = '.') -> list[tuple[FewShotEvaluator, int]]:
  """(evaluator, every) for each entry of ``config.evals``. Raises EvalConfigError."""
  dirs = [d if os.path.isabs(d) else os.path.join(root, d) for d in task_dirs]
  out = []
  for name, entry in evals_cfg.items():
    entry = dict(entry)
    kind = entry.pop('type', None)
    every = int(entry.pop('every', 0))
    if kind not in EVALUATORS:
      raise EvalConfigError(f'config.evals.{name}.type={kind!r} is not an evaluator; choose one of '
                            f'{sorted(EVALUATORS)}')
    try:
      out.append((EVALUATORS[kind](name, task_dirs=dirs, **entry), every))
    except TypeError as e:
      raise EvalConfigError(f'config.evals.{name}: {e}; the fields of a {kind!r} evaluator are tasks, '
                            f'num_fewshot, limit, seed, every') from None
  return out


def make_generate_fn(graphdef, cfg, params, tokenizer, mesh, max_length: int | None = None):
  """The decoder a scorer's ``generate_until`` calls: KV-cache decoding (llm.eval.decoding).

  (prompt token lists, normalised gen_kwargs) -> texts. Greedy unless the task asks for
  sampling (``do_sample`` or temperature > 0), as the harness's Hugging Face backend
  decodes; ``until`` strings also stop rows early at the token level (the scorer still
  cuts the text at the string, which is what decides). ``fn.stats['truncated']`` counts
  prompts cut from the left to leave room for max_gen_toks.
  """
  from llm.eval import decoding

  def generate_fn(prompts: list[list[int]], kwargs: dict[str, Any]) -> list[str]:
    temperature = float(kwargs.get('temperature', 0.0) or 0.0)
    if not kwargs.get('do_sample', temperature > 0):
      temperature = 0.0
    stops = [list(tokenizer.encode(s)) for s in kwargs.get('until', []) if s]
    gen = decoding.generate(graphdef, cfg, params, prompts, int(kwargs['max_gen_toks']), temperature=temperature,
                            top_k=int(kwargs.get('top_k', 0) or 0), top_p=float(kwargs.get('top_p', 1.0) or 1.0),
                            eos_id=tokenizer.eos_id, stop_sequences=stops, seed=int(kwargs.get('seed', 0) or 0),
                            mesh=mesh, max_length=max_length)
    generate_fn.stats['truncated'] += gen.truncated
    return [tokenizer.decode(t) for t in gen.tokens]

  generate_fn.stats = {'truncated': 0}
  return generate_fn
