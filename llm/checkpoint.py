"""Orbax checkpoints of the train state, with a metadata item that guards resumes.

Each checkpoint step directory holds two items: ``state`` (step, params, optimizer
state; sharded arrays written in parallel by every process) and ``meta`` (JSON: the
model config, the tokenizer and the data position). ``load_params`` reads only the
parameters (no optimizer state is read) into any mesh: the evaluation loop, fine-tuning
and conversion tools start from it. Orbax writes into a temporary directory and
renames it on success, so a run killed mid-save leaves nothing that ``latest_step``
would return. A checkpoint damaged afterwards (a truncated or corrupted file, a disk
that filled up) is found when a resume reads it: a file that cannot be read fails the
restore, and a flipped bit that still reads fails the checksums ``meta`` records of every
array (computed on device at save time: the sum of its bits and an odd-weighted sum, both
mod 2^32, so any single changed bit and any swap of two values is caught).
``restore_newest`` says which step is unusable and why, moves it to
``<workdir>/unusable_checkpoints/`` (never deletes it) and resumes from the newest intact
one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterator
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx

from llm import sharding
from llm.models import ModelConfig, build
from llm.tokenizer import Tokenizer, TokenizerError, from_spec
from llm.trainer import Params, TrainState, run_once_options


class CheckpointMismatch(ValueError):
  """The workdir holds a checkpoint that does not belong to this run's model."""


class CheckpointNotFound(ValueError):
  """A workdir (or step) that holds no complete checkpoint."""


class CheckpointCorrupt(ValueError):
  """A checkpoint whose restored arrays differ from the checksums recorded when it was saved."""


def _as_dict(state: TrainState) -> dict:
  return {'step': state.step, 'params': state.params, 'opt_state': state.opt_state}


def _leaf_checksums(x: jax.Array) -> jax.Array:
  """uint32 [2]: the sum of ``x``'s bits as words, and the same weighted by 2i + 1 (both mod 2^32)."""
  import jax.numpy as jnp
  bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize])
  bits = bits.astype(jnp.uint32).reshape(-1)
  weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
  return jnp.stack([jnp.sum(bits, dtype=jnp.uint32), jnp.sum(bits * weights, dtype=jnp.uint32)])


@functools.cache
def _tree_checksums():
  """Jitted once the backend is known: integer sums, the same at any optimisation level."""
  return jax.jit(lambda tree: jax.tree.map(_leaf_checksums, tree), compiler_options=run_once_options())


def checksums(tree) -> dict[str, list[int]]:
  """{path: [sum, weighted sum]} of every array of ``tree`` (computed where the arrays live)."""
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(_tree_checksums()(tree)))[0]
  return {jax.tree_util.keystr(path): [int(v) for v in value] for path, value in leaves}


def verify_checksums(tree, recorded: dict[str, list[int]] | None, where: str) -> None:
  """Raise CheckpointCorrupt naming the first array of ``tree`` whose checksums differ from ``recorded``."""
  if not recorded:  # written before checksums were recorded
    return
  for key, value in checksums(tree).items():
    if key in recorded and recorded[key] != value:
      raise CheckpointCorrupt(f'{where}: {key} does not match the checksum recorded when it was saved '
                              f'(the file changed since)')


def _reason(e: Exception) -> str:
  return ' '.join(str(e).split())[:300] or type(e).__name__


def _ignore_closed_loop(unraisable) -> None:
  """A restore that fails leaves Orbax's TensorStore callbacks to a closed event loop; each would
  print a traceback about it. Those are dropped; anything else goes to the default hook."""
  e = unraisable.exc_value
  if isinstance(e, RuntimeError) and 'Event loop is closed' in str(e):
    return
  sys.__unraisablehook__(unraisable)


_OPEN: 'weakref.WeakSet[Checkpointer]' = weakref.WeakSet()


def close_all() -> None:
  """Close every open Checkpointer: a recipe exiting on a bad-input error calls this, or Orbax's
  background threads can print a traceback while the interpreter shuts down."""
  for c in list(_OPEN):
    c.close()


class Checkpointer:
  """Saves every ``every`` steps (asynchronously), keeps the last ``keep``."""

  def __init__(self, directory: str, every: int, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.every = every
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))
    _OPEN.add(self)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, meta: dict[str, Any], force: bool = False) -> bool:
    """Start saving (returns at once when asynchronous); True if a save was started."""
    if not force and (self.every <= 0 or step % self.every):
      return False
    if step in self.manager.all_steps():
      return False
    tree = _as_dict(state)
    meta = {**meta, 'checksums': checksums(tree)}
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)), force=True)

  def read_meta(self, step: int) -> dict[str, Any]:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def restore(self, step: int, abstract: TrainState, expected_model: dict[str, Any]) -> tuple[TrainState, dict]:
    """Restore into the shardings of ``abstract`` after checking the model config matches."""
    meta = self.read_meta(step)
    if meta.get('params_only'):
      raise CheckpointMismatch(
          f'{self.directory} holds parameters only (step {step}, {meta.get("imported_from") or "no optimizer state"}), '
          f'which cannot be resumed; start a new --workdir with --config.init_from=<this workdir>')
    saved = completed_model_meta(meta.get('model', {}))
    diff = {k: (saved.get(k), v) for k, v in expected_model.items() if saved.get(k) != v}
    if diff:
      lines = ', '.join(f'{k}: checkpoint={a!r} config={b!r}' for k, (a, b) in sorted(diff.items()))
      raise CheckpointMismatch(
          f'{self.directory} holds a checkpoint (step {step}) of a different model ({lines}); '
          f'use a new --workdir, or set the config to match the checkpoint')
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_as_dict(abstract))))
    s = restored.state
    verify_checksums(s, meta.get('checksums'), f'{self.directory} step {step}')
    return TrainState(step=s['step'], params=s['params'], opt_state=s['opt_state']), meta

  def set_aside(self, step: int) -> str:
    """Move checkpoint ``step`` out of the manager's directory (kept for inspection); returns where.

    Every process calls it; the first moves the directory, then all reload the step list.
    """
    aside = os.path.join(os.path.dirname(self.directory), 'unusable_checkpoints')
    target = os.path.join(aside, str(step))
    n = 1
    while os.path.exists(target):
      n += 1
      target = os.path.join(aside, f'{step}-{n}')
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f'set_aside_{step}')
    self.manager.reload()
    return target

  def _newest(self, read):
    """``(step, read(step))`` of the newest step that ``read`` can read; None when there is no step.

    Newer steps that fail are set aside only once an older one has been read: that proves this
    run can read its checkpoints, so theirs is damage, not a config that no longer fits them.
    When none can be read nothing is moved and CheckpointCorrupt says why. A
    CheckpointMismatch (another model) is raised at once.
    """
    if sys.unraisablehook is sys.__unraisablehook__:
      sys.unraisablehook = _ignore_closed_loop
    failed: list[tuple[int, Exception]] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        value = read(step)
      except CheckpointMismatch:
        raise
      except Exception as e:  # pylint: disable=broad-except  # whatever a damaged file makes Orbax raise
        failed.append((step, e))
        continue
      for bad, e in failed:
        where = self.set_aside(bad)
        print(f'checkpoint step {bad} of {self.directory} is unusable ({type(e).__name__}: {_reason(e)}); '
              f'moved it to {where}; resuming from step {step}', flush=True)
      return step, value
    if failed:
      step, e = failed[0]
      raise CheckpointCorrupt(
          f'no checkpoint of {self.directory} can be restored (the newest, step {step}: {type(e).__name__}: '
          f'{_reason(e)}); if they are damaged, move {self.directory} away to start afresh; if the config '
          f'changed since they were written, restore it') from e
    return None

  def newest_meta(self) -> tuple[int, dict[str, Any]] | None:
    """(step, meta) of the newest checkpoint whose metadata reads, or None."""
    return self._newest(self.read_meta)

  def restore_newest(self, abstract: TrainState, expected_model: dict[str, Any]) -> tuple[int, TrainState] | None:
    """(step, state) of the newest checkpoint that restores completely, or None if none does."""
    return self._newest(lambda step: self.restore(step, abstract, expected_model)[0])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    if self not in _OPEN:
      return
    _OPEN.discard(self)
    # The manager removes earlier runs' unfinished temporary directories in a background
    # future started at construction; wait for it, or a process that stops right away
    # (a bad-input error) ends while it runs and Orbax prints a traceback.
    cleanup = getattr(self.manager, '_cleanup_tmp_directory_future', None)
    if cleanup is not None:
      cleanup.result()
    self.manager.wait_until_finished()
    self.manager.close()


def model_meta(model_cfg) -> dict[str, Any]:
  """JSON-safe description of the model that a checkpoint must match to be resumed."""
  return json.loads(json.dumps(dataclasses.asdict(model_cfg)))


def completed_model_meta(saved: dict[str, Any]) -> dict[str, Any]:
  """A checkpoint's model fields with the ones it predates filled as its config implies.

  Checkpoints written before a field existed (``arch``, before encoders) lack it; the
  config rebuilt from the saved fields fills it with the default those fields imply.
  """
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  try:
    return {**model_meta(ModelConfig(**{k: v for k, v in saved.items() if k in known})), **saved}
  except (TypeError, ValueError):
    return saved


def architecture_keys(meta: dict[str, Any]) -> dict[str, Any]:
  """Fields that change parameter shapes or meaning (compute dtype, remat etc. may change on resume)."""
  keep = ('vocab_size', 'd_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff', 'max_seq_len',
          'norm', 'positions', 'mlp', 'use_bias', 'tie_embeddings', 'vocab_multiple', 'param_dtype',
          'lora_rank', 'lora_alpha', 'lora_targets', 'arch', 'norm_position', 'type_vocab_size',
          'n_decoder_layers', 'rel_buckets', 'rel_max_distance', 'scale_attention', 'causal', 'num_labels')
  return {k: meta[k] for k in keep if k in meta}


def _tokenizer_spec(workdir: str, meta: dict[str, Any]) -> dict[str, str]:
  """The tokenizer a checkpoint records (``Tokenizer.spec()``); older ones: the run's config.json."""
  if 'tokenizer' in meta:
    return meta['tokenizer']
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      data = json.load(f).get('data', {})
    kind = data.get('tokenizer', 'byte')
    return {'kind': kind, 'spm_model': data.get('spm_model', ''), 'path': data.get('hf_tokenizer', '')}
  return {'kind': 'byte'}


def _step_dir(workdir: str) -> str:
  """The Orbax directory of a run: ``workdir/checkpoints`` (or workdir itself if it is one)."""
  sub = os.path.join(workdir, 'checkpoints')
  return sub if os.path.isdir(sub) else workdir


def record_tokenizer(workdir: str, tokenizer: Tokenizer) -> dict[str, Any]:
  """The tokenizer spec a run's checkpoints record. A Hugging Face tokenizer's files are
  copied into ``workdir/tokenizer`` and recorded relative to the workdir, so the run keeps
  working when the source it came from is moved or deleted."""
  spec = tokenizer.spec()
  if spec.get('kind') != 'hf':
    return spec
  import shutil
  from llm.hf import TOKENIZER_FILES
  src_dir, dst_dir = os.path.dirname(spec['path']), os.path.join(os.path.abspath(workdir), 'tokenizer')
  if os.path.abspath(src_dir) != dst_dir:
    os.makedirs(dst_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
      if os.path.exists(os.path.join(src_dir, name)):
        shutil.copy2(os.path.join(src_dir, name), dst_dir)
  return {**spec, 'path': 'tokenizer/tokenizer.json'}


@contextlib.contextmanager
def staged_directory(final: str, what: str, error: type[Exception] = FileExistsError) -> Iterator[str]:
  """Build a new directory in a temporary sibling of ``final``, renamed onto it when the block ends.

  ``final`` must not exist (or be empty): ``error`` says so naming ``what`` (the flag that
  chose it). If the block raises, the temporary directory is removed, so a failed export,
  import or merge leaves nothing behind.
  """
  final = os.path.abspath(final)
  if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
    raise error(f'{final} already exists and is not empty; choose a new {what} or remove it first')
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(final)}.partial-', dir=parent)
  try:
    yield tmp
    if os.path.isdir(final):
      os.rmdir(final)  # empty (checked above)
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


HF_PREFIX = 'hf:'  # a Hugging Face model directory where a checkpoint workdir is expected


def load_params(workdir: str, step: int | None = None, mesh=None,
                overrides: dict[str, Any] | None = None) -> tuple[ModelConfig, Tokenizer, Params, int]:
  """(model config, tokenizer, parameters, step) of a training run's checkpoint.

  Reads only the parameters (not the optimizer state), straight into the shardings the
  model's logical axes give on ``mesh`` (default: one device). ``step`` None = newest.
  ``overrides`` replace ModelConfig fields that do not change parameters (compute dtype,
  attention kernel, scan_layers, remat). ``hf:<dir>`` converts a Hugging Face model
  directory in memory instead (``llm.hf``; step 0). Raises CheckpointNotFound with the fix.
  """
  if workdir.startswith(HF_PREFIX):
    from llm import hf
    try:
      cfg, tokenizer, params = hf.load(workdir[len(HF_PREFIX):], mesh, overrides)
    except hf.HFError as e:
      raise CheckpointMismatch(str(e)) from None
    return cfg, tokenizer, params, 0
  directory = os.path.abspath(_step_dir(workdir))
  if not os.path.isdir(directory):
    raise CheckpointNotFound(f'{workdir} does not exist; name the --workdir of a training run (ckpt=, init_from= '
                             f'or init=, e.g. runs/default after `python train.py --workdir=runs/default`) or hf:<dir>')
  manager = ocp.CheckpointManager(directory, item_names=('state', 'meta'),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    steps = manager.all_steps()
    if not steps:
      raise CheckpointNotFound(f'{workdir} holds no complete checkpoint; train first '
                               f'(`python train.py --workdir={workdir}`) or name another run')
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise CheckpointNotFound(f'{workdir} has no checkpoint at step {step}; it has steps {sorted(steps)}')
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    fields = {k: v for k, v in meta['model'].items() if k in {f.name for f in dataclasses.fields(ModelConfig)}}
    try:
      cfg = ModelConfig(**{**fields, **(overrides or {})})
    except ValueError as e:  # e.g. a model saved with settings this version refuses (a decoder with causal=False)
      raise CheckpointMismatch(f'{workdir} (step {step}) holds a model this version cannot build: {e}') from None
    spec = _tokenizer_spec(workdir, meta)
    try:
      tokenizer = from_spec(spec, root=os.path.abspath(workdir))
    except (TokenizerError, FileNotFoundError) as e:  # e.g. the run's SentencePiece file was moved
      raise CheckpointMismatch(f'{workdir}: cannot rebuild the tokenizer it was trained with ({e})') from None
    if tokenizer.vocab_size > cfg.vocab_size:
      raise CheckpointMismatch(f'{workdir}: the checkpoint was trained with a vocabulary of {cfg.vocab_size}, '
                               f'but its tokenizer {spec} has {tokenizer.vocab_size} entries; '
                               f'restore the tokenizer file the run used')
    abstract = abstract_params(cfg, mesh)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        {'params': abstract}, restore_args=ocp.checkpoint_utils.construct_restore_args({'params': abstract}),
        partial_restore=True)))
  finally:
    manager.close()
  verify_checksums({'params': restored.state['params']}, meta.get('checksums'), f'{workdir} step {step}')
  return cfg, tokenizer, restored.state['params'], step


def save_params(workdir: str, cfg: ModelConfig, tokenizer_spec: dict[str, Any], params: Params,
                step: int = 0, extra_meta: dict[str, Any] | None = None) -> str:
  """Write a parameters-only checkpoint (what ``load_params`` and ``init_from`` read) into
  ``workdir/checkpoints``; ``train.py`` refuses to resume it (there is no optimizer state)."""
  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), every=1, keep=1, async_save=False)
  meta = {'model': model_meta(cfg), 'tokenizer': tokenizer_spec, 'step': step, 'params_only': True,
          'checksums': checksums({'params': params}), **(extra_meta or {})}
  ckpt.manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave({'step': step, 'params': params}), meta=ocp.args.JsonSave(meta)), force=True)
  ckpt.close()
  return ckpt.directory


def abstract_params(cfg: ModelConfig, mesh=None) -> Params:
  """ShapeDtypeStructs of the model's parameters, sharded by their logical axes on ``mesh``."""
  import jax.sharding as jsh
  var_state = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[1]
  shapes = nnx.to_pure_dict(var_state)
  if mesh is None:
    shardings = jax.tree.map(lambda _: jsh.SingleDeviceSharding(jax.devices()[0]), shapes)
  else:
    shardings = sharding.named(mesh, nnx.to_pure_dict(sharding.param_specs(var_state, mesh)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
