"""lm-evaluation-harness's model API over our checkpoints: any harness task, in process, on any mesh.

  python -m llm.lm_eval_adapter --workdir=runs/default --tasks=sst2,crows_pairs_english \\
      --include_path=tasks --output=runs/harness/results.json

``LlmLM`` is a ``lm_eval.api.model.TemplateLM`` registered as model ``"llm"``: the harness
does the tokenisation of requests (``TemplateLM.loglikelihood``: its whitespace move,
empty-context rule and context/continuation split, through our ``tok_encode``) and the
rolling windows (``lm_eval.utils.get_rolling_token_windows``), and our scorer computes
the token log-probabilities (``ModelLM.score_pairs``: packed rows, shared contexts) and
generations (the KV-cache decoder). So
``lm_eval.simple_evaluate(model=LlmLM(workdir=...), tasks=[...])`` runs the harness's own
tasks (``--include_path`` adds task directories such as ours) against a checkpoint of
ours, a ``hf:<dir>`` model, or an imported one. ``add_bos_token`` has the meaning of the
harness's HFLM argument (None: as the tokenizer does).

This module imports lm-eval; nothing else under llm/ does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import lm_eval.models  # noqa: F401  the harness's own models first: it fills its registry lazily only when empty
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

if TYPE_CHECKING:
  from llm.eval.monitor import Monitor


@register_model('llm')
class LlmLM(TemplateLM):
  """The harness's LM over ``llm.eval.scorer.ModelLM``.

  Build it from a checkpoint (``workdir=...``: a training run, an import or ``hf:<dir>``)
  or around an existing scorer (``lm=ModelLM(...)``, as the evaluation loop has one).
  ``monitor`` (an ``llm.eval.monitor.Monitor``) is attached to the scorer, so every
  ``generate_until`` answer passes through it (a blocked one is what the harness scores).
  """

  def __init__(self, workdir: str | None = None, lm=None, step: int | None = None, batch_rows: int = 16,
               max_length: int | None = None, add_bos_token: bool | None = None, cpu_devices: int = 0,
               mesh: str = '', monitor: Monitor | None = None, **unused: Any):
    super().__init__()
    if lm is None:
      if not workdir:
        raise ValueError('LlmLM needs workdir=<checkpoint workdir or hf:dir> (or lm=<ModelLM>)')
      lm = load_scorer(workdir, step=step, batch_rows=int(batch_rows), max_length=max_length,
                       add_bos_token=add_bos_token, cpu_devices=int(cpu_devices), mesh=mesh)
    if monitor is not None:
      lm.monitor = monitor
    self.lm = lm
    self.tok = lm.tokenizer

  # ----- What TemplateLM needs ---------------------------------------------------------------

  @property
  def eot_token_id(self) -> int:
    return self.tok.eos_id if self.tok.eos_id is not None else self.tok.bos_id

  @property
  def prefix_token_id(self) -> int:
    return self.lm.prefix

  @property
  def max_length(self) -> int:
    return self.lm.max_length

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    add = self.lm.add_bos if add_special_tokens is None else bool(add_special_tokens) and self.tok.bos_id is not None
    return ([self.tok.bos_id] if add else []) + self.tok.encode(string).tolist()

  def tok_decode(self, tokens, **kwargs) -> str:
    return self.tok.decode(tokens)

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
    t0 = time.perf_counter()
    pairs = [(tuple(ctx), tuple(cont)) for _, ctx, cont in requests]
    lls, greedy = self.lm.score_pairs(pairs)
    self.lm.count(len(pairs), time.perf_counter() - t0)
    out = [(float(l), bool(g)) for l, g in zip(lls, greedy)]
    for (key, _, _), answer in zip(requests, out):
      if key is not None:
        self.cache_hook.add_partial('loglikelihood', key, answer)
    return out

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    t0 = time.perf_counter()
    pairs, owner = [], []
    for i, (text,) in enumerate(req.args for req in requests):
      windows = get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                          max_seq_len=self.max_length, context_len=1)
      for ctx, cont in map(make_disjoint_window, windows):
        pairs.append((tuple(ctx), tuple(cont)))
        owner.append(i)
    lls, _ = self.lm.score_pairs(pairs)
    totals = [0.0] * len(requests)
    for i, ll in zip(owner, lls):
      totals[i] += float(ll)
    self.lm.count(len(requests), time.perf_counter() - t0)
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial('loglikelihood_rolling', (req.args[0],), total)
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    out = self.lm.generate_until([(req.args[0], dict(req.args[1])) for req in requests])
    for req, text in zip(requests, out):
      self.cache_hook.add_partial('generate_until', req.args, text)
    return out


def load_scorer(workdir: str, step: int | None = None, batch_rows: int = 16, max_length: int | None = None,
                add_bos_token: bool | None = None, cpu_devices: int = 0, mesh: str = ''):
  """A ModelLM (with its KV-cache decoder) over the parameters of ``workdir`` on a mesh.

  ``mesh`` is 'data=N,fsdp=N,tensor=N' (default: every device on the data axis);
  ``cpu_devices`` splits a CPU host into that many devices first.
  """
  from llm.run import configure_cpu_devices
  configure_cpu_devices(cpu_devices)
  import jax
  from flax import nnx

  from llm import checkpoint, sharding
  from llm.eval.evaluators import make_generate_fn
  from llm.eval.scorer import ModelLM
  from llm.models import build
  axes = {'data': -1}
  for part in [p for p in mesh.split(',') if p.strip()]:
    key, _, value = part.partition('=')
    axes[key.strip()] = int(value)
  m = sharding.make_mesh(axes)
  backend = jax.default_backend()
  overrides = dict(dtype='float32' if backend == 'cpu' else 'bfloat16', dense_grad='xla', remat='none', dropout=0.0)
  cfg, tok, params, _ = checkpoint.load_params(workdir, step, m, overrides=overrides)
  if cfg.arch != 'decoder':  # the harness hands this adapter token pairs, which only the decoder's scorer takes
    raise ValueError(f'{workdir} holds an {cfg.arch} ({cfg.family}); the harness adapter scores decoders. Evaluate it '
                     f'with our evaluator: python train.py --config=configs/fewshot.py:ckpt={workdir} --workdir=...')
  graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]
  return ModelLM(graphdef, cfg, params, tok, m, batch_rows=batch_rows, max_length=max_length,
                 add_bos_token=add_bos_token, generate_fn=make_generate_fn(graphdef, cfg, params, tok, m))


def harness_tasks(names: list[str], manager) -> list[str | dict[str, Any]]:
  """The task list for ``simple_evaluate``: local task files as configs with absolute data paths.

  Our task files name their data relative to the task file (``../../data/...``), which
  ``datasets`` would read relative to the working directory; each such task is handed to
  the harness as its own loaded config (the harness's YAML loader, ``!function`` resolved)
  with those paths made absolute, so the harness runs from any directory. Other names pass
  through unchanged.
  """
  from pathlib import Path

  from lm_eval.tasks._yaml_loader import load_yaml
  out: list[str | dict[str, Any]] = []
  for name in names:
    entry = manager.task_index.get(name)
    path = getattr(entry, 'yaml_path', None)
    if path is None:
      out.append(name)
      continue
    cfg = load_yaml(path, resolve_func=True, recursive=True)
    files = (cfg.get('dataset_kwargs') or {}).get('data_files')
    if isinstance(files, dict):
      base = Path(path).resolve().parent
      def absolute(f):
        return f if os.path.isabs(f) or '://' in f else str((base / f).resolve())
      cfg['dataset_kwargs'] = {**cfg['dataset_kwargs'], 'data_files': {
          split: [absolute(f) for f in v] if isinstance(v, list) else absolute(v) for split, v in files.items()}}
    out.append(cfg)
  return out


def per_doc_loglikelihoods(samples: list[dict]) -> dict[int, list[float]]:
  """doc id -> each request's log-likelihood, from the harness's logged samples or ours.

  The harness logs ``resps`` ([[answer], ...], an answer being (ll, is_greedy) or ll);
  ours log ``loglikelihoods`` (multiple choice), ``loglikelihood`` or, for tasks with
  ``process_results``, the raw ``answers``. For comparing the two per document.
  """
  out = {}
  for s in samples:
    if 'resps' in s or 'answers' in s:
      answers = [r[0] for r in s['resps']] if 'resps' in s else s['answers']
      lls = [a[0] if isinstance(a, (tuple, list)) else a for a in answers]
    else:
      lls = s.get('loglikelihoods') or [s['loglikelihood']]
    out[int(s['doc_id'])] = [float(x) for x in lls]
  return out


def _bool_or_none(value: str) -> bool | None:
  if value.lower() in ('', 'none', 'auto'):
    return None
  if value.lower() in ('true', '1', 'yes'):
    return True
  if value.lower() in ('false', '0', 'no'):
    return False
  raise argparse.ArgumentTypeError(f'expected true, false or none, got {value!r}')


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m llm.lm_eval_adapter', description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True, help='checkpoint workdir (training run, import) or hf:<dir>')
  p.add_argument('--tasks', required=True, help='comma-separated harness task names')
  p.add_argument('--include_path', default='', help='extra task directories (e.g. tasks); comma-separated')
  p.add_argument('--no_defaults', action='store_true', help="index only --include_path, not the harness's own tasks")
  p.add_argument('--num_fewshot', type=int, default=None)
  p.add_argument('--limit', type=float, default=None)
  p.add_argument('--fewshot_seed', type=int, default=1234, help="the few-shot sampler's seed (the harness's default)")
  p.add_argument('--step', type=int, default=None)
  p.add_argument('--batch_rows', type=int, default=16)
  p.add_argument('--max_length', type=int, default=None)
  p.add_argument('--add_bos_token', type=_bool_or_none, default=None)
  p.add_argument('--cpu_devices', type=int, default=0)
  p.add_argument('--mesh', default='', help="e.g. 'data=2,fsdp=2'")
  p.add_argument('--output', default='', help='write the harness results JSON here')
  p.add_argument('--monitor', default='off', choices=('off', 'log', 'flag', 'block'),
                 help='score generations with llm.eval.monitor (defaults of MonitorConfig) and act on them; '
                      'flagged outputs go to monitor_flags.jsonl beside --output')
  args = p.parse_args(argv)

  import lm_eval
  from lm_eval.tasks import TaskManager
  from lm_eval.utils import make_table

  from llm.checkpoint import CheckpointMismatch, CheckpointNotFound
  from llm.eval.monitor import Monitor, MonitorConfig
  try:
    monitor = None if args.monitor == 'off' else Monitor(
        MonitorConfig(enabled=True, action=args.monitor),
        out_dir=os.path.dirname(os.path.abspath(args.output)) if args.output else None)
    model = LlmLM(workdir=args.workdir, step=args.step, batch_rows=args.batch_rows, max_length=args.max_length,
                  add_bos_token=args.add_bos_token, cpu_devices=args.cpu_devices, mesh=args.mesh, monitor=monitor)
  except (CheckpointMismatch, CheckpointNotFound, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  paths = [os.path.abspath(x) for x in args.include_path.split(',') if x.strip()]
  manager = TaskManager(include_path=paths or None, include_defaults=not args.no_defaults)
  tasks = [t.strip() for t in args.tasks.split(',') if t.strip()]
  unknown = [t for t in tasks if t not in manager.all_tasks]
  if unknown:
    print(f'error: unknown task(s) {unknown}; pass --include_path=<dir of task YAML files> for local tasks',
          file=sys.stderr)
    return 2
  results = lm_eval.simple_evaluate(model=model, tasks=harness_tasks(tasks, manager), task_manager=manager,
                                    num_fewshot=args.num_fewshot, limit=args.limit, fewshot_random_seed=args.fewshot_seed, log_samples=False)
  print(make_table(results))
  stats = model.lm.stats
  print(f"{stats['requests']} requests scored in {stats['seconds']:.1f}s ({stats['requests_per_sec']:.1f}/s), "
        f"{stats['generate_requests']} generations in {stats['generate_seconds']:.1f}s")
  rates = monitor.metrics() if monitor is not None else {}
  if rates:
    print('monitor: ' + ', '.join(f'{k.split("/", 1)[1]} {v:.4g}' for k, v in rates.items()))
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, 'w') as f:
      doc = {k: results[k] for k in ('results', 'configs', 'versions', 'n-shot', 'higher_is_better') if k in results}
      doc |= {'llm_stats': stats, 'workdir': args.workdir} | ({'monitor': rates} if rates else {})
      json.dump(doc, f, indent=2, default=str)
    print(f'wrote {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
