"""Device mesh and the one table that maps logical axis names to mesh axes.

The mesh has three named axes:
  data    pure data parallelism (parameters replicated)
  fsdp    data parallelism with parameters and optimizer state sharded (ZeRO-3)
  tensor  tensor (Megatron) parallelism: heads and MLP width split
Batches are split over ('data', 'fsdp'). Parameters carry logical names in their
``axes`` metadata (see llm/models/layers.py); RULES below is the only place that decides how a
logical name is laid out, so changing a parallelism strategy is a one-line edit.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH = ('data', 'fsdp')

# logical name -> mesh axis (or tuple of axes, or None = replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    # parameters
    'vocab': 'tensor',
    'embed': 'fsdp',
    'heads': 'tensor',
    'kv_heads': 'tensor',
    'mlp': 'tensor',
    'head_dim': None,
    'layers': None,
    'norm': None,
    'lora': None,  # adapter rank: small, replicated
    'embed_out': None,  # the output side of a square d x d matrix (BERT's MLM transform)
    'rel_buckets': None,  # T5's relative-position buckets: a small table
    # activations
    'act_batch': BATCH,
    'act_length': None,
    'act_embed': None,
    'act_heads': 'tensor',
    'act_kv_heads': 'tensor',  # the KV cache's heads
    'act_mlp': 'tensor',
    'act_vocab': 'tensor',
}


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor); one size may be -1 for 'the remaining devices'.

  Raises ValueError naming the sizes when they do not multiply to the device count.
  """
  devices = list(devices if devices is not None else jax.devices())
  unknown = [k for k in shape if k not in MESH_AXES]
  if unknown:
    raise ValueError(f'unknown mesh axes {unknown}; the mesh axes are {MESH_AXES}')
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  n = len(devices)
  if sizes.count(-1) > 1:
    raise ValueError(f'mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1')
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if known <= 0 or n % known:
      raise ValueError(
          f'mesh {dict(zip(MESH_AXES, sizes))} does not divide the {n} devices: the fixed axes '
          f'multiply to {known}; choose sizes whose product divides {n} (e.g. --config.mesh.tensor=1)')
    sizes[sizes.index(-1)] = n // known
  if any(s < 1 for s in sizes) or math.prod(sizes) != n:
    raise ValueError(
        f'mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but {n} are present; '
        f'set the sizes so that data*fsdp*tensor = {n}, or one of them to -1')
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  except Exception:  # simulated or oddly shaped device sets: a plain reshape is fine
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(axes: Sequence[str | None] | None, shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None, rules: Mapping = RULES) -> P:
  """PartitionSpec for a tensor with these logical axis names.

  A mesh axis is used at most once per tensor, and a dimension that the mesh axis
  size does not divide is replicated (with a warning) rather than failing.
  """
  if axes is None:
    return P()
  used: set[str] = set()
  out = []
  for i, name in enumerate(axes):
    target = rules.get(name) if name is not None else None
    if name is not None and name not in rules:
      raise KeyError(f'logical axis {name!r} has no entry in llm.sharding.RULES')
    names = (target,) if isinstance(target, str) else tuple(target or ())
    names = tuple(a for a in names if a not in used and (mesh is None or mesh.shape[a] > 1))
    if names and mesh is not None and shape is not None:
      size = math.prod(mesh.shape[a] for a in names)
      if shape[i] % size:
        logging.warning('dimension %d (%s, size %d) is not divisible by mesh axes %s (size %d): replicated',
                        i, name, shape[i], names, size)
        names = ()
    used.update(names)
    out.append(None if not names else names[0] if len(names) == 1 else names)
  return P(*out)


def param_specs(state: nnx.State, mesh: Mesh | None = None) -> nnx.State:
  """Tree of PartitionSpecs with the structure of ``state`` (Variables or arrays)."""
  def spec(var):
    axes = var.get_metadata().get('axes') if isinstance(var, nnx.Variable) else None
    shape = var.shape if hasattr(var, 'shape') else None
    return logical_to_spec(axes, shape, mesh)
  return jax.tree.map(spec, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def named(mesh: Mesh, specs) -> object:
  """Map a tree of PartitionSpecs to NamedShardings."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch arrays [b, ...] split over (data, fsdp) on their first axis."""
  return NamedSharding(mesh, P(BATCH, *([None] * (ndim - 1))))


_ACTIVE: list[Mesh] = []


@contextlib.contextmanager
def activate(mesh: Mesh) -> Iterator[Mesh]:
  """Within this context, model activations get sharding constraints on ``mesh``."""
  _ACTIVE.append(mesh)
  try:
    yield mesh
  finally:
    _ACTIVE.pop()


@contextlib.contextmanager
def deactivate() -> Iterator[None]:
  """Within this context (code that runs per device, inside shard_map), no constraints."""
  _ACTIVE.append(None)  # type: ignore[arg-type]
  try:
    yield
  finally:
    _ACTIVE.pop()


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op outside ``activate``, inside
  ``deactivate`` or on 1 device."""
  if not _ACTIVE or _ACTIVE[-1] is None or _ACTIVE[-1].size == 1:
    return x
  mesh = _ACTIVE[-1]
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes, x.shape, mesh)))
