"""Helpers of the training scripts: config -> dataclasses, metric log, pre-emption, NaN check."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import typing
from typing import Any

from llm.data import DataConfig
from llm.models import ModelConfig, config_for_size


def auto_cpu_devices(batch_size: int = 0) -> int:
  """One XLA CPU device per core this process may run on, at most the most that divide
  ``batch_size`` (0: any). On CPU, data parallelism over cores beats one device's intra-op
  threads for small models: the default config's run took 0.90x the wall time on 2 devices
  as on 1 (README), because XLA:CPU runs most small fusions on one thread."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)
  return max(d for d in range(1, cores + 1) if not batch_size or batch_size % d == 0)


# glibc's mallopt parameters; MALLOC_<name>_ in the environment sets the same.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_host_memory() -> bool:
  """Have glibc's malloc keep freed buffers for reuse instead of handing them back to the OS.

  XLA:CPU allocates and frees every step's buffers. glibc's default thresholds move with the
  order in which sizes happen to be freed, so some runs return each step's buffers to the
  OS and fault them back in: 9-13 million page faults and ~25% lower throughput on the
  Shakespeare run, against 0.25-2 million with fixed thresholds (buffers up to 32 MB from
  the heap, which is trimmed only above 1 GB free). Values set through MALLOC_MMAP_THRESHOLD_
  or MALLOC_TRIM_THRESHOLD_ win. Returns whether the thresholds were set (glibc only).
  """
  import ctypes
  import sys
  if not sys.platform.startswith('linux'):
    return False
  try:
    mallopt = ctypes.CDLL('libc.so.6').mallopt
  except (OSError, AttributeError):  # not glibc (musl, say)
    return False
  done = True
  for name, param, value in (('MMAP', _M_MMAP_THRESHOLD, 32 << 20), ('TRIM', _M_TRIM_THRESHOLD, 1 << 30)):
    if f'MALLOC_{name}_THRESHOLD_' not in os.environ:
      done = bool(mallopt(param, value)) and done
  return done


def configure_cpu_devices(n: int, batch_size: int = 0) -> None:
  """Split the host CPU into ``n`` XLA devices (n > 0; -1: ``auto_cpu_devices(batch_size)``)
  and keep freed host memory for reuse (``keep_freed_host_memory``); call before JAX's CPU
  backend starts.

  Only the CPU platform is affected, so this is harmless on GPU and TPU hosts. An explicit
  --xla_force_host_platform_device_count in XLA_FLAGS wins.
  """
  keep_freed_host_memory()
  if n < 0:
    n = auto_cpu_devices(batch_size)
  if n <= 1:
    return
  flags_ = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags_:
    os.environ['XLA_FLAGS'] = f'{flags_} --xla_force_host_platform_device_count={n}'.strip()


def init_distributed() -> None:
  """Start JAX's multi-process runtime when the environment says this is one of several processes.

  TPU VMs and Slurm/Kubernetes jobs are detected by JAX itself (``TPU_WORKER_HOSTNAMES``,
  ``JAX_COORDINATOR_ADDRESS``); elsewhere (GPU hosts, or processes on one machine) set
  ``JAX_COORDINATOR_ADDRESS=host:port``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every
  process. On CPU the processes' collectives go through gloo.
  """
  import jax
  env = os.environ
  if 'JAX_NUM_PROCESSES' in env:
    jax.distributed.initialize(coordinator_address=env.get('JAX_COORDINATOR_ADDRESS'),
                               num_processes=int(env['JAX_NUM_PROCESSES']),
                               process_id=int(env.get('JAX_PROCESS_ID', '0')))
  elif 'JAX_COORDINATOR_ADDRESS' in env or 'TPU_WORKER_HOSTNAMES' in env:
    jax.distributed.initialize()


# ModelConfig fields a config may set. SIZE_FIELDS default to the size table (None in the
# config); the others have a config default. configs/common.py builds config.model from these.
SIZE_FIELDS = ('family', 'arch', 'd_model', 'n_layers', 'n_decoder_layers', 'n_heads', 'n_kv_heads', 'd_head',
               'd_ff', 'max_seq_len', 'norm', 'norm_position', 'positions', 'mlp', 'use_bias', 'tie_embeddings',
               'type_vocab_size', 'rope_theta')
TUNABLE_FIELDS = ('dropout', 'vocab_multiple', 'remat', 'scan_layers')
_MODEL_OVERRIDES = SIZE_FIELDS + TUNABLE_FIELDS


def model_field_type(name: str) -> type:
  """The Python type of a ModelConfig field (int for 'int | None', str for a Literal)."""
  hint = typing.get_type_hints(ModelConfig)[name]
  for t in (hint, *typing.get_args(hint)):
    if t in (bool, int, float, str):
      return t
    if typing.get_origin(t) is typing.Literal:
      return type(typing.get_args(t)[0])
  raise TypeError(f'ModelConfig.{name}: no plain type in {hint}')


class ConfigError(ValueError):
  """A config that cannot run as given; the message names the fields to change."""


def model_config(cfg, vocab_size: int, backend: str) -> ModelConfig:
  """ModelConfig from ``cfg.model`` (size table + overrides); 'auto' choices follow the backend."""
  m = cfg.model
  overrides = {k: m[k] for k in _MODEL_OVERRIDES if m.get(k) is not None}
  overrides.setdefault('max_seq_len', cfg.data.seq_len)
  if overrides['max_seq_len'] < cfg.data.seq_len:
    raise ConfigError(f'model.max_seq_len={overrides["max_seq_len"]} is shorter than data.seq_len='
                      f'{cfg.data.seq_len}; raise it or shorten the rows')
  return config_for_size(m.size, vocab_size, **runtime_choices(cfg, backend), **overrides)


# The training objective each architecture learns from (DataConfig.objective).
OBJECTIVE_OF_ARCH = {'decoder': 'next_token', 'encoder': 'mlm', 'encoder_decoder': 'span_corruption'}


def check_objective(model_cfg: ModelConfig, objective: str) -> None:
  """Raise ConfigError when the data objective does not train this architecture."""
  want = OBJECTIVE_OF_ARCH[model_cfg.arch]
  if objective != want:
    raise ConfigError(
        f'data.objective={objective!r} does not train a model.arch={model_cfg.arch!r} model '
        f'(family {model_cfg.family}): it learns from {want!r}. Set --config.data.objective={want}, or pick a '
        f'model for {objective!r} (' + ', '.join(f'{o}: arch={a}' for a, o in OBJECTIVE_OF_ARCH.items()) + ')')


def runtime_choices(cfg, backend: str) -> dict[str, str]:
  """Compute dtype, attention kernel and weight-gradient layout: fields that may differ
  between the run that trained a checkpoint and one that resumes or evaluates it."""
  m = cfg.model
  dtype = m.dtype if m.dtype != 'auto' else ('float32' if backend == 'cpu' else 'bfloat16')
  attention = m.attention if m.attention != 'auto' else ('cudnn' if backend == 'gpu' else 'xla')
  if attention == 'cudnn' and backend != 'gpu':
    raise ConfigError(f"model.attention='cudnn' needs an NVIDIA GPU (backend is {backend}); use 'xla'")
  if attention == 'cudnn' and dtype not in ('bfloat16', 'float16'):
    raise ConfigError(f"model.attention='cudnn' computes in bfloat16/float16 only, but model.dtype={dtype!r}; "
                      f"set --config.model.dtype=bfloat16 or --config.model.attention=xla")
  dense_grad = m.dense_grad if m.dense_grad != 'auto' else ('pretransposed' if backend == 'cpu' else 'xla')
  return dict(dtype=dtype, attention=attention, dense_grad=dense_grad)


def to_dataclass(cls, section, **changes):
  """An instance of dataclass ``cls`` from the config section of the same fields
  (``configs.common.from_dataclass``); comma-separated strings become tuples where the field is one."""
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name in section:
      v = section[f.name]
      if isinstance(getattr(cls, f.name, None), tuple) or 'tuple' in str(f.type):
        v = tuple(x.strip() for x in v.split(',') if x.strip()) if isinstance(v, str) else tuple(v)
      kwargs[f.name] = v
  kwargs.update(changes)
  return cls(**kwargs)


def open_ledger(cfg, workdir: str, program: str, step: int = 0, continue_previous: bool = True):
  """The run's energy and carbon ledger (llm/footprint.py) from ``cfg.footprint``."""
  from llm.footprint import FootprintConfig, Ledger
  return Ledger.for_run(workdir, to_dataclass(FootprintConfig, cfg.footprint), program=program, step=step,
                        continue_previous=continue_previous)


def optim_config(cfg):
  from llm.trainer import OptimConfig
  return to_dataclass(OptimConfig, cfg.train, decay_steps=cfg.train.decay_steps or cfg.train.steps)


@dataclasses.dataclass
class InitSource:
  """What a run initialised from another model (``config.init_from``) takes from it."""

  model_cfg: ModelConfig  # the source's architecture with this run's runtime choices
  tokenizer: Any
  params: Any  # parameters on the run's mesh; None when resuming (the checkpoint has them)
  step: int | None = None  # the source checkpoint's step (None when resuming: the run's meta has it)
  resuming: bool = False  # the run's own workdir has a checkpoint to resume


def init_source(cfg, ckpt, mesh, backend: str) -> InitSource:
  """The architecture, tokenizer and (for a fresh run) parameters of ``cfg.init_from``.

  ``init_from`` is a training or import workdir, or ``hf:<dir>``. The run's own runtime
  fields (compute dtype, attention kernel, remat, scan, dropout) apply; the size fields of
  ``cfg.model`` are ignored. A resumed run reads the architecture and the tokenizer from its
  own newest readable checkpoint, so it never depends on the source again.
  """
  from llm import checkpoint
  from llm.tokenizer import from_spec
  m = cfg.model
  runtime = dict(runtime_choices(cfg, backend), remat=m.remat, scan_layers=m.scan_layers, dropout=m.dropout)
  newest = ckpt.newest_meta()
  if newest is not None:
    meta = newest[1]
    fields = {k: v for k, v in meta['model'].items() if k in {f.name for f in dataclasses.fields(ModelConfig)}}
    model_cfg = ModelConfig(**{**fields, **runtime})
    tokenizer, params, step = from_spec(meta['tokenizer'], root=os.path.dirname(ckpt.directory)), None, \
        meta.get('init_step')
  else:
    model_cfg, tokenizer, params, step = checkpoint.load_params(cfg.init_from, None, mesh, overrides=runtime)
  if model_cfg.max_seq_len < cfg.data.seq_len:
    if model_cfg.positions not in ('rope', 'relative'):
      raise ConfigError(f'data.seq_len={cfg.data.seq_len} is longer than the {model_cfg.max_seq_len} learned positions '
                        f'of init_from={cfg.init_from!r}; use --config.data.seq_len={model_cfg.max_seq_len} or less')
    # Rotary and relative positions have no table: the context extends to the rows (and is recorded).
    print(f'extending the context of {cfg.init_from} from {model_cfg.max_seq_len} to {cfg.data.seq_len} positions '
          f'({model_cfg.positions} positions)', flush=True)
    model_cfg = dataclasses.replace(model_cfg, max_seq_len=cfg.data.seq_len)
  return InitSource(model_cfg, tokenizer, params, step, resuming=newest is not None)


def data_config(cfg) -> DataConfig:
  return to_dataclass(DataConfig, cfg.data)


def expected_errors() -> tuple[type[Exception], ...]:
  """Errors of bad input that the recipes print as one line (``error: ...``), exit status 2."""
  from llm.checkpoint import CheckpointCorrupt, CheckpointMismatch, CheckpointNotFound
  from llm.data import DataError
  from llm.eval.evaluators import EvalConfigError
  from llm.eval.tasks import TaskError
  from llm.footprint import FootprintError
  from llm.lora import LoraError
  from llm.tokenizer import TokenizerError
  return (ConfigError, DataError, CheckpointCorrupt, CheckpointMismatch, CheckpointNotFound, NonFiniteLoss, EvalConfigError,
          TaskError, TokenizerError, LoraError, FootprintError)


def run_recipe(loops: dict[str, Any], cfg, workdir: str) -> None:
  """Run ``loops[cfg.loop](cfg, workdir)``; bad input (``expected_errors``) ends the process
  with one ``error: ...`` line and exit status 2, after closing any open checkpointer."""
  import sys
  try:
    if cfg.loop not in loops:
      raise ConfigError(f'loop={cfg.loop!r} is not a loop of this recipe; it runs {sorted(loops)} '
                        f"(pre-training and evaluation: train.py; fine-tuning: finetune.py)")
    loops[cfg.loop](cfg, workdir)
  except expected_errors() as e:  # bad input: one message, no traceback
    from llm.checkpoint import close_all
    close_all()
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


class NonFiniteLoss(FloatingPointError):
  """The training loss became NaN or infinite."""


def check_finite(steps: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
  """Raise NonFiniteLoss naming the first step whose train_loss is not finite."""
  for step, metrics in steps:
    loss = float(metrics['train_loss'])
    if not math.isfinite(loss):
      raise NonFiniteLoss(
          f'training loss is {loss} at step {step}; no checkpoint was written past the last finite step. '
          f'Lower train.lr, raise train.warmup_steps, or check the data')
  return steps


class MetricsLog:
  """``metrics.jsonl``: one JSON object per logged step.

  On resume from step s, lines with step > s are dropped (they were logged by the
  interrupted run after its last checkpoint and will be logged again).
  """

  def __init__(self, path: str, truncate_after: int, enabled: bool = True):
    self.path, self.enabled = path, enabled
    if enabled and os.path.exists(path):
      with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line).get('step', 0) <= truncate_after]
      tmp = path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(keep)
      os.replace(tmp, path)

  def write(self, row: dict[str, Any]) -> None:
    if self.enabled:
      with open(self.path, 'a') as f:
        f.write(json.dumps(row, sort_keys=True) + '\n')


class PreemptionGuard:
  """Turns SIGTERM (a TPU VM or spot instance being reclaimed) into a flag the loop checks."""

  def __init__(self):
    self.requested = False
    try:
      signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some test runners): no handler
      pass

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.requested = True
