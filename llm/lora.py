"""Low-rank adapters (Hu et al., 2021): what to train, fresh adapters, merging, PEFT export.

The adapters themselves live in the model (``llm.models.layers.adapted``: y = W x + alpha/r B A x,
one (A, B) pair per adapted projection, stacked over layers like every block parameter,
sharded by the same logical axes plus a replicated 'lora' rank axis). This module holds
what surrounds them:

  python -m llm.lora merge --workdir=runs/sst2_lora --out=runs/sst2_merged
  python -m llm.lora export --workdir=runs/sst2_lora --out=exports/sst2_lora [--step=N]

``merge`` folds the adapters into the base weights (W += alpha/r A B) and writes a
parameters-only checkpoint of the plain model, which every tool reads (evaluation,
``init_from``, ``python -m llm.hf export``). ``export`` writes a PEFT adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``) that ``peft.PeftModel`` loads onto
the Hugging Face export of the base model (``python -m llm.hf export --workdir=<init>``).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from llm import models
from llm.models import LORA_TARGETS, ModelConfig

Params = dict


class LoraError(ValueError):
  """A LoRA setting or file that cannot be used; the message names the fix."""


def is_adapter(path: tuple[str, ...]) -> bool:
  return str(path[-1]).startswith('lora_')


def param_names(cfg: ModelConfig) -> list[str]:
  """'/'-joined names of the model's parameters (what freeze patterns match)."""
  shapes = nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: models.build(cfg, jax.random.key(0))))[1])
  return ['/'.join(map(str, k)) for k in traverse_util.flatten_dict(shapes)]


def trainable_fn(cfg: ModelConfig, method: str, freeze: str = '') -> Callable[[tuple[str, ...]], bool]:
  """Which parameters fine-tuning updates: the adapters ('lora'), or all but ``freeze`` ('full').

  ``freeze``: comma-separated fnmatch patterns over names such as 'embed_vd' or
  'blocks/attn/*'. Raises LoraError for a pattern that matches nothing (listing the names).
  """
  if method == 'lora':
    if not cfg.lora_rank:
      raise LoraError('method=lora needs lora.rank > 0')
    return is_adapter
  if method != 'full':
    raise LoraError(f"finetune.method={method!r} is unknown; use 'lora' or 'full'")
  patterns = [p.strip() for p in freeze.split(',') if p.strip()]
  names = param_names(cfg)
  for p in patterns:
    if not any(fnmatch.fnmatchcase(n, p) for n in names):
      raise LoraError(f'finetune.freeze pattern {p!r} matches no parameter; the parameters are {names}')
  return lambda path: not any(fnmatch.fnmatchcase('/'.join(path), p) for p in patterns)


def with_adapters(cfg: ModelConfig, rank: int, alpha: float, dropout: float, targets: str) -> ModelConfig:
  """``cfg`` with adapters of ``rank`` on ``targets`` ('q,k,v,o,gate,up,down'); LoraError names bad ones."""
  names = tuple(t.strip() for t in targets.split(',') if t.strip())
  unknown = [t for t in names if t not in cfg.lora_target_names()]
  if unknown:
    raise LoraError(f'lora.targets {unknown} match no projection of this model; its projections are '
                    f'{cfg.lora_target_names()} (LORA_TARGETS in llm/models/config.py maps them to weights)')
  if rank <= 0 or not names:
    raise LoraError(f'LoRA needs lora.rank > 0 and at least one target, got rank={rank}, targets={targets!r}')
  return dataclasses.replace(cfg, lora_rank=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                             lora_targets=names)


def init_adapters(cfg: ModelConfig, seed: int, shardings: Params | None = None) -> Params:
  """Fresh adapter parameters (A as PEFT draws it, B zero) as a nested dict of lora_* leaves only.

  The model is built inside jit and only its adapters are returned, so XLA never
  materialises the base weights it would otherwise initialise.
  """
  def build(key):
    flat = traverse_util.flatten_dict(nnx.to_pure_dict(nnx.split(models.build(cfg, key))[1]))
    return traverse_util.unflatten_dict({k: v for k, v in flat.items() if is_adapter(k)})
  return jax.jit(build, out_shardings=shardings)(jax.random.key(seed))


def count(params: Params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def _delta(a: jax.Array, b: jax.Array, w_shape: tuple[int, ...], layered: bool) -> jax.Array:
  """A B reshaped to the weight: a [(l,) *in, r], b [(l,) r, *out] -> [(l,) *in, *out]."""
  if layered:
    l, r = a.shape[0], a.shape[-1]
    return jnp.einsum('lir,lro->lio', a.reshape(l, -1, r), b.reshape(l, r, -1)).reshape(w_shape)
  r = a.shape[-1]
  return (a.reshape(-1, r) @ b.reshape(r, -1)).reshape(w_shape)


def merge(cfg: ModelConfig, params: Params) -> tuple[ModelConfig, Params]:
  """(the plain model's config, its parameters with every adapter folded in: W + alpha/r A B)."""
  if not cfg.lora_rank:
    return cfg, params
  flat = dict(traverse_util.flatten_dict(params))
  # Every adapted projection, wherever its module sits (a decoder's blocks; T5's encoder and
  # decoder blocks, self- and cross-attention).
  for key in [k for k in flat if str(k[-1]).startswith('lora_a_')]:
    target = str(key[-1])[len('lora_a_'):]
    a, b = flat.pop(key), flat.pop(key[:-1] + (f'lora_b_{target}',))
    base = key[:-1] + (LORA_TARGETS[target][1],)
    w = flat[base]
    flat[base] = (w.astype(jnp.float32) + cfg.lora_scale * _delta(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), w.shape, True)).astype(w.dtype)
  plain = dataclasses.replace(cfg, lora_rank=0, lora_targets=(), lora_dropout=0.0)
  return plain, traverse_util.unflatten_dict(flat)


# ---------------------------------------------------------------------------------------------
# PEFT export
# ---------------------------------------------------------------------------------------------

# Our target -> the Hugging Face Llama module it adapts (PEFT's target_modules names).
PEFT_LLAMA_MODULES = {'q': 'self_attn.q_proj', 'k': 'self_attn.k_proj', 'v': 'self_attn.v_proj',
                      'o': 'self_attn.o_proj', 'gate': 'mlp.gate_proj', 'up': 'mlp.up_proj', 'down': 'mlp.down_proj'}


def peft_tensors(cfg: ModelConfig, params: Params) -> dict[str, np.ndarray]:
  """PEFT's adapter tensors (lora_A.weight [r, in], lora_B.weight [out, r] per layer and module).

  Our A [l, *in, r] and B [l, r, *out] flatten their in/out axes in the order the Hugging
  Face export flattens the weight (heads then head_dim), so row i of lora_B is output i
  of the exported projection.
  """
  if cfg.family != 'llama':
    raise LoraError(f"PEFT export supports the llama family; this model is {cfg.family!r} (GPT-2's fused "
                    f"c_attn has one adapter for q, k and v together). Merge instead: python -m llm.lora merge")
  flat = traverse_util.flatten_dict(params)
  out = {}
  for target in cfg.lora_targets:
    module, _ = LORA_TARGETS[target]
    a = np.asarray(jax.device_get(flat[('blocks', module, f'lora_a_{target}')]), np.float32)
    b = np.asarray(jax.device_get(flat[('blocks', module, f'lora_b_{target}')]), np.float32)
    r = cfg.lora_rank
    for i in range(cfg.n_layers):
      name = f'base_model.model.model.layers.{i}.{PEFT_LLAMA_MODULES[target]}'
      out[f'{name}.lora_A.weight'] = np.ascontiguousarray(a[i].reshape(-1, r).T)
      out[f'{name}.lora_B.weight'] = np.ascontiguousarray(b[i].reshape(r, -1).T)
  return out


def peft_config(cfg: ModelConfig, base: str = '') -> dict:
  return {
      'peft_type': 'LORA', 'task_type': 'CAUSAL_LM', 'r': cfg.lora_rank, 'lora_alpha': cfg.lora_alpha,
      'lora_dropout': cfg.lora_dropout, 'bias': 'none', 'fan_in_fan_out': False, 'use_rslora': False,
      'init_lora_weights': True, 'inference_mode': True, 'base_model_name_or_path': base,
      'target_modules': sorted(PEFT_LLAMA_MODULES[t].split('.')[-1] for t in cfg.lora_targets),
      'modules_to_save': None, 'layers_to_transform': None, 'rank_pattern': {}, 'alpha_pattern': {},
  }


def export(workdir: str, out: str, step: int | None = None, base: str = '') -> str:
  """Write the adapters of ``workdir``'s checkpoint as a PEFT adapter directory at ``out``.

  Written to a temporary directory and renamed into place: a failure leaves nothing behind.
  """
  from safetensors.numpy import save_file

  from llm import checkpoint
  cfg, _, params, step = checkpoint.load_params(workdir, step)
  if not cfg.lora_rank:
    raise LoraError(f'{workdir} holds no adapters (lora_rank is 0); export the model itself with '
                    f'python -m llm.hf export --workdir={workdir}')
  tensors = peft_tensors(cfg, params)
  with checkpoint.staged_directory(out, '--out', LoraError) as tmp:
    save_file(tensors, os.path.join(tmp, 'adapter_model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(tmp, 'adapter_config.json'), 'w') as f:
      json.dump(peft_config(cfg, base), f, indent=2)
  return out


def merge_checkpoint(workdir: str, out: str, step: int | None = None) -> str:
  """Fold the adapters of ``workdir`` into a parameters-only checkpoint of the plain model at ``out``."""
  from llm import checkpoint
  cfg, tok, params, step = checkpoint.load_params(workdir, step)
  if not cfg.lora_rank:
    raise LoraError(f'{workdir} holds no adapters (lora_rank is 0): nothing to merge')
  plain, merged = merge(cfg, params)
  with checkpoint.staged_directory(out, '--out', LoraError) as tmp:
    spec = checkpoint.record_tokenizer(tmp, tok)
    checkpoint.save_params(tmp, plain, spec, merged, extra_meta={'merged_from': {'workdir': os.path.abspath(workdir),
                                                                                 'step': step}})
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m llm.lora', description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  for name in ('merge', 'export'):
    s = sub.add_parser(name)
    s.add_argument('--workdir', required=True, help='a LoRA fine-tuning workdir (or its best/ checkpoint)')
    s.add_argument('--out', required=True)
    s.add_argument('--step', type=int, default=None)
    if name == 'export':
      s.add_argument('--base', default='', help="recorded as base_model_name_or_path (the base's HF export)")
  args = p.parse_args(argv)
  from llm.checkpoint import CheckpointMismatch, CheckpointNotFound
  try:
    if args.cmd == 'merge':
      print(f'wrote {merge_checkpoint(args.workdir, args.out, args.step)}')
    else:
      print(f'wrote {export(args.workdir, args.out, args.step, args.base)}')
  except (LoraError, CheckpointMismatch, CheckpointNotFound) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
