"""Orbax checkpoints of the train state, with a metadata item that guards resumes.

Each checkpoint step directory holds two items: ``state`` (step, params, optimizer
state; sharded arrays written in parallel by every process) and ``meta`` (JSON: the
model config and the data position). Orbax writes into a temporary directory and
renames it on success, so a run killed mid-save leaves nothing that ``latest_step``
would return.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from llm.trainer import TrainState


class CheckpointMismatch(ValueError):
  """The workdir holds a checkpoint that does not belong to this run's model."""


def _as_dict(state: TrainState) -> dict:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


class Checkpointer:
  """Saves every ``every`` steps (asynchronously), keeps the last ``keep``."""

  def __init__(self, directory: str, every: int, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every = every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, meta: dict[str, Any], force: bool = False) -> bool:
    """Start saving (returns at once when asynchronous); True if a save was started."""
    if not force and (self.every <= 0 or step % self.every):
      return False
    if step in self.manager.all_steps():
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_as_dict(state)), meta=ocp.args.JsonSave(meta)), force=True)

  def read_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def restore(self, step: int, abstract: TrainState, expected_model: dict[str, Any]) -> tuple[TrainState, dict]:
    """Restore into the shardings of ``abstract`` after checking the model config matches."""
    meta = self.read_meta(step)
    saved = meta.get('model', {})
    diff = {k: (saved.get(k), v) for k, v in expected_model.items() if saved.get(k) != v}
    if diff:
      lines = ', '.join(f'{k}: checkpoint={a!r} config={b!r}' for k, (a, b) in sorted(diff.items()))
      raise CheckpointMismatch(
          f'{self.directory} holds a checkpoint (step {step}) of a different model ({lines}); '
          f'use a new --workdir, or set the config to match the checkpoint')
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_as_dict(abstract))))
    s = restored.state
    return TrainState(step=s['step'], params=s['params'], opt_state=s['opt_state']), meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def model_meta(model_cfg) -> dict[str, Any]:
  """JSON-safe description of the model that a checkpoint must match to be resumed."""
  return json.loads(json.dumps(dataclasses.asdict(model_cfg)))


def architecture_keys(meta: dict[str, Any]) -> dict[str, Any]:
  """Fields that change parameter shapes or meaning (compute dtype, remat etc. may change on resume)."""
  keep = ('vocab_size', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff', 'max_seq_len',
          'norm', 'positions', 'mlp', 'use_bias', 'tie_embeddings', 'vocab_multiple', 'param_dtype')
  return {k: meta[k] for k in keep if k in meta}
