"""Helpers of the training scripts: config -> dataclasses, metric log, pre-emption, NaN check."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
from typing import Any

from llm.data import DataConfig
from llm.model import ModelConfig, config_for_size


def configure_cpu_devices(n: int) -> None:
  """Split the host CPU into ``n`` XLA devices (n > 0); call before JAX's CPU backend starts.

  Only the CPU platform is affected, so this is harmless on GPU and TPU hosts. An explicit
  --xla_force_host_platform_device_count in XLA_FLAGS wins.
  """
  if n <= 0:
    return
  flags_ = os.environ.get('XLA_FLAGS', '')
  if 'xla_force_host_platform_device_count' not in flags_:
    os.environ['XLA_FLAGS'] = f'{flags_} --xla_force_host_platform_device_count={n}'.strip()


_MODEL_OVERRIDES = ('family', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff', 'max_seq_len',
                    'norm', 'positions', 'mlp', 'use_bias', 'tie_embeddings', 'rope_theta', 'dropout',
                    'vocab_multiple', 'remat', 'scan_layers')


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


def optim_config(cfg):
  from llm.trainer import OptimConfig
  t = cfg.train
  return OptimConfig(lr=t.lr, min_lr=t.min_lr, warmup_steps=t.warmup_steps,
                     decay_steps=t.decay_steps or t.steps, b1=t.b1, b2=t.b2, eps=t.eps,
                     weight_decay=t.weight_decay, grad_clip=t.grad_clip, accum_steps=t.accum_steps)


@dataclasses.dataclass
class InitSource:
  """What a run initialised from another model (``config.init_from``) takes from it."""

  model_cfg: ModelConfig  # the source's architecture with this run's runtime choices
  tokenizer: Any
  params: Any  # parameters on the run's mesh; None when resuming (the checkpoint has them)


def init_source(cfg, ckpt, start: int | None, mesh, backend: str) -> InitSource:
  """The architecture, tokenizer and (for a fresh run) parameters of ``cfg.init_from``.

  ``init_from`` is a training or import workdir, or ``hf:<dir>``. The run's own runtime
  fields (compute dtype, attention kernel, remat, scan, dropout) apply; the size fields of
  ``cfg.model`` are ignored. A resumed run reads the architecture and the tokenizer from its
  own newest checkpoint (``start``), so it never depends on the source again.
  """
  from llm import checkpoint
  from llm.tokenizer import from_spec
  m = cfg.model
  runtime = dict(runtime_choices(cfg, backend), remat=m.remat, scan_layers=m.scan_layers, dropout=m.dropout)
  if start is not None:
    meta = ckpt.read_meta(start)
    fields = {k: v for k, v in meta['model'].items() if k in {f.name for f in dataclasses.fields(ModelConfig)}}
    model_cfg = ModelConfig(**{**fields, **runtime})
    tokenizer, params = from_spec(meta['tokenizer'], root=os.path.dirname(ckpt.directory)), None
  else:
    model_cfg, tokenizer, params, _ = checkpoint.load_params(cfg.init_from, None, mesh, overrides=runtime)
  if model_cfg.max_seq_len < cfg.data.seq_len:
    raise ConfigError(f'data.seq_len={cfg.data.seq_len} is longer than the {model_cfg.max_seq_len} positions of '
                      f'init_from={cfg.init_from!r}; use --config.data.seq_len={model_cfg.max_seq_len} or less')
  return InitSource(model_cfg, tokenizer, params)


def data_config(cfg) -> DataConfig:
  d = cfg.data
  return DataConfig(sources=d.sources, seq_len=d.seq_len, tokenizer=d.tokenizer, spm_model=d.spm_model,
                    hf_tokenizer=d.hf_tokenizer,
                    doc_separator=d.doc_separator, jsonl_field=d.jsonl_field, split=d.split,
                    val_fraction=d.val_fraction, decode_errors=d.decode_errors, seed=d.seed)


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
