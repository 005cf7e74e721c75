"""Hugging Face interop: GPT-2 and Llama checkpoints in, our checkpoints out, without torch.

  python -m llm.hf import --src=<dir with config.json + *.safetensors> --workdir=runs/gpt2
  python -m llm.hf export --workdir=runs/default --out=exports/default

``import`` reads a local Hugging Face model directory of the GPT-2 family
(``GPT2LMHeadModel``) or the Llama family (``LlamaForCausalLM``: grouped-query attention,
tied or untied embeddings, ``rope_theta``, ``rms_norm_eps``, ``head_dim``) and writes one
of our checkpoints: the model config derived from ``config.json``, the parameters in
float32 (bfloat16 and float16 weights are widened exactly), the vocabulary padded to
``vocab_multiple`` rows, and a copy of the tokenizer files, so that ``train.py``
(``init_from=<workdir>``), the evaluation loop (``ckpt=<workdir>``) and the conversion
back all start from it. Any of those can also read a Hugging Face directory directly:
``hf:<dir>`` wherever a checkpoint workdir is expected (``llm.checkpoint.load_params``).

``export`` writes what ``transformers.AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load without custom code: a GPT-2 or Llama
``config.json``, ``model.safetensors`` and the tokenizer (the byte tokenizer as a
byte-level ``tokenizer.json`` with the same ids; a Hugging Face tokenizer as its files).
A model the family cannot express (say, rotary positions in GPT-2) is refused, naming
the field. Both directions write into a temporary directory that is renamed into place
only when complete, so a failed conversion leaves nothing behind.

Weights are read with ``safetensors`` (numpy), one tensor at a time; ``pytorch_model.bin``
needs torch and is read only when no safetensors file is present. The layouts:

  GPT-2 (Conv1D stores [in, out])      ours
  wte [V, d], wpe [T, d]               embed_vd [V', d] (rows padded), pos_td [T, d]
  h.i.ln_1 / ln_2 (weight, bias)       blocks.attn_norm / mlp_norm (scale, bias) [l, d]
  h.i.attn.c_attn [d, 3d] (q | k | v)  w_q_dnh, w_k_dkh, w_v_dkh [l, d, n, h]
  h.i.attn.c_proj [d, d]               w_o_nhd [l, n, h, d]
  h.i.mlp.c_fc [d, f], c_proj [f, d]   w_in_df [l, d, f], w_out_fd [l, f, d]

  Llama (nn.Linear stores [out, in])   ours
  q_proj [n h, d], k/v_proj [k h, d]   w_q_dnh [l, d, n, h], w_k_dkh / w_v_dkh [l, d, k, h]
  o_proj [d, n h]                      w_o_nhd [l, n, h, d]
  gate_proj / up_proj [f, d]           w_gate_df / w_in_df [l, d, f]
  down_proj [d, f]                     w_out_fd [l, f, d]
  lm_head [V, d]                       head_dv [d, V'] (columns padded)

Both use the rotate-half RoPE convention, so Llama's q/k need no permutation.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from llm.model import ModelConfig

SUPPORTED = {'GPT2LMHeadModel': 'gpt2', 'LlamaForCausalLM': 'llama'}
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
# Buffers some checkpoints carry that are not parameters (causal-mask tables, RoPE frequencies).
_BUFFER_SUFFIXES = ('.attn.bias', '.attn.masked_bias', '.rotary_emb.inv_freq')


class HFError(ValueError):
  """A Hugging Face checkpoint or export that cannot be converted; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# config.json <-> ModelConfig
# ---------------------------------------------------------------------------------------------


def read_hf_config(src: str) -> dict[str, Any]:
  path = os.path.join(src, 'config.json')
  if not os.path.isfile(path):
    raise HFError(f'{src} has no config.json: point --src at a Hugging Face model directory '
                  f'(config.json + model.safetensors or pytorch_model.bin)')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def family_of(hf: dict[str, Any], src: str = '') -> str:
  archs = hf.get('architectures') or []
  for arch in archs:
    if arch in SUPPORTED:
      return SUPPORTED[arch]
  if not archs and hf.get('model_type') in ('gpt2', 'llama'):
    return hf['model_type']
  raise HFError(f'{src or "config.json"}: architecture {archs or hf.get("model_type")!r} is not supported; '
                f'supported: {", ".join(sorted(SUPPORTED))}')


def _rope_theta(hf: dict[str, Any]) -> float:
  """rope_theta from a v4 config (top level) or a v5 one (rope_parameters); only default RoPE."""
  params = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or params
  kind = scaling.get('rope_type', scaling.get('type', 'default')) if isinstance(scaling, dict) else 'default'
  if kind not in (None, 'default'):
    raise HFError(f"config.json: rope scaling {kind!r} is not supported (only plain RoPE, rope_type='default')")
  return float(params.get('rope_theta', hf.get('rope_theta', 10_000.0)))


def model_config_from_hf(hf: dict[str, Any], src: str = '', **overrides) -> ModelConfig:
  """Our ModelConfig for a Hugging Face config.json; ``overrides`` set runtime fields (dtype, ...)."""
  family = family_of(hf, src)
  if family == 'gpt2':
    act = hf.get('activation_function', 'gelu_new')
    if act not in ('gelu_new', 'gelu_pytorch_tanh'):
      raise HFError(f'config.json: activation_function={act!r} is not supported (our GPT-2 MLP is the tanh '
                    f"GELU, 'gelu_new')")
    for key, want in (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False),
                      ('add_cross_attention', False)):
      if hf.get(key, want) != want:
        raise HFError(f'config.json: {key}={hf[key]!r} is not supported (only {want!r})')
    d = hf['n_embd']
    fields = dict(family='gpt2', d_model=d, n_layers=hf['n_layer'], n_heads=hf['n_head'],
                  d_ff=hf.get('n_inner') or 4 * d, max_seq_len=hf.get('n_positions', 1024),
                  norm_eps=hf.get('layer_norm_epsilon', 1e-5), use_bias=True,
                  tie_embeddings=hf.get('tie_word_embeddings', True), init_std=hf.get('initializer_range', 0.02))
  else:
    act = hf.get('hidden_act', 'silu')
    if act != 'silu':
      raise HFError(f"config.json: hidden_act={act!r} is not supported (our SwiGLU MLP uses 'silu')")
    fields = dict(family='llama', d_model=hf['hidden_size'], n_layers=hf['num_hidden_layers'],
                  n_heads=hf['num_attention_heads'],
                  n_kv_heads=hf.get('num_key_value_heads') or hf['num_attention_heads'],
                  d_head=hf.get('head_dim') or hf['hidden_size'] // hf['num_attention_heads'],
                  d_ff=hf['intermediate_size'], max_seq_len=hf.get('max_position_embeddings', 2048),
                  norm_eps=hf.get('rms_norm_eps', 1e-6), rope_theta=_rope_theta(hf),
                  use_bias=bool(hf.get('attention_bias', False) or hf.get('mlp_bias', False)),
                  tie_embeddings=hf.get('tie_word_embeddings', False), init_std=hf.get('initializer_range', 0.02))
  try:
    return ModelConfig(vocab_size=hf['vocab_size'], **{**fields, **overrides})
  except KeyError as e:
    raise HFError(f'config.json lacks {e.args[0]!r}, which a {family} config needs') from None
  except ValueError as e:
    raise HFError(f'config.json: {e}') from None


def _check_expressible(cfg: ModelConfig, family: str) -> None:
  """Raise naming the first field the target family cannot express."""
  want = {'gpt2': dict(norm='layer', positions='learned', mlp='gelu', causal=True),
          'llama': dict(norm='rms', positions='rope', mlp='swiglu', causal=True)}[family]
  for field, value in want.items():
    if getattr(cfg, field) != value:
      raise HFError(f'cannot export as {family}: model.{field}={getattr(cfg, field)!r}, but '
                    f'{family} needs {value!r}')
  if family == 'gpt2':
    if cfg.n_kv_heads != cfg.n_heads:
      raise HFError(f'cannot export as gpt2: model.n_kv_heads={cfg.n_kv_heads} != n_heads={cfg.n_heads} '
                    f'(GPT-2 has no grouped-query attention; export as llama)')
    if cfg.d_head * cfg.n_heads != cfg.d_model:
      raise HFError(f'cannot export as gpt2: model.d_head={cfg.d_head} x n_heads={cfg.n_heads} != '
                    f'd_model={cfg.d_model} (GPT-2 splits d_model into its heads)')


def hf_config_from_model(cfg: ModelConfig, family: str, tokenizer) -> dict[str, Any]:
  """config.json of the export (transformers 4.x and 5.x both read it)."""
  _check_expressible(cfg, family)
  ids = dict(bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
  if family == 'gpt2':
    return dict(architectures=['GPT2LMHeadModel'], model_type='gpt2', vocab_size=cfg.vocab_size,
                n_positions=cfg.max_seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                n_inner=cfg.d_ff, activation_function='gelu_new', resid_pdrop=0.0, embd_pdrop=0.0,
                attn_pdrop=0.0, layer_norm_epsilon=cfg.norm_eps, initializer_range=cfg.init_std,
                scale_attn_weights=True, tie_word_embeddings=cfg.tie_embeddings, use_cache=True,
                torch_dtype='float32', **ids)
  return dict(architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=cfg.vocab_size,
              hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.d_head, intermediate_size=cfg.d_ff,
              max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps, hidden_act='silu',
              rope_theta=cfg.rope_theta, rope_parameters=dict(rope_type='default', rope_theta=cfg.rope_theta),
              rope_scaling=None, attention_bias=cfg.use_bias, mlp_bias=cfg.use_bias, attention_dropout=0.0,
              tie_word_embeddings=cfg.tie_embeddings, initializer_range=cfg.init_std, pretraining_tp=1,
              use_cache=True, torch_dtype='float32', **ids)


# ---------------------------------------------------------------------------------------------
# The tensor correspondence, one table per family
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
  """One Hugging Face tensor and the parameter(s) of ours it holds.

  ``hf`` may contain ``{i}`` (a per-layer tensor: ours then has a leading layers axis).
  ``to_ours`` maps the HF tensor to our tensors (one per path); ``to_hf`` the reverse.
  """

  hf: str
  ours: tuple[tuple[str, ...], ...]
  hf_shape: tuple[int, ...]
  to_ours: Callable[[np.ndarray], list[np.ndarray]]
  to_hf: Callable[[list[np.ndarray]], np.ndarray]

  @property
  def per_layer(self) -> bool:
    return '{i}' in self.hf


def _one(fn):
  return lambda x: [fn(x)]


def _gpt2_rules(cfg: ModelConfig) -> list[Rule]:
  d, n, h, f, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_ff, cfg.vocab_size
  blk = lambda *p: ('blocks',) + p  # noqa: E731
  ident = _one(lambda x: x)
  first = lambda xs: xs[0]  # noqa: E731

  def qkv_to_ours(w):  # [d, 3d] -> three [d, n, h]
    return [w[:, j * d:(j + 1) * d].reshape(d, n, h) for j in range(3)]

  def qkv_to_hf(ws):
    return np.concatenate([w.reshape(d, n * h) for w in ws], axis=1)

  def qkv_bias_to_ours(b):
    return [b[j * d:(j + 1) * d].reshape(n, h) for j in range(3)]

  def qkv_bias_to_hf(bs):
    return np.concatenate([b.reshape(n * h) for b in bs])

  rules = [
      Rule('wte.weight', (('embed_vd',),), (V, d), _one(lambda w: _pad_rows(w, cfg.padded_vocab)),
           lambda ws: ws[0][:V]),
      Rule('wpe.weight', (('pos_td',),), (cfg.max_seq_len, d), ident, first),
      Rule('h.{i}.ln_1.weight', (blk('attn_norm', 'scale'),), (d,), ident, first),
      Rule('h.{i}.ln_1.bias', (blk('attn_norm', 'bias'),), (d,), ident, first),
      Rule('h.{i}.attn.c_attn.weight', (blk('attn', 'w_q_dnh'), blk('attn', 'w_k_dkh'), blk('attn', 'w_v_dkh')),
           (d, 3 * d), qkv_to_ours, qkv_to_hf),
      Rule('h.{i}.attn.c_attn.bias', (blk('attn', 'b_q_nh'), blk('attn', 'b_k_kh'), blk('attn', 'b_v_kh')),
           (3 * d,), qkv_bias_to_ours, qkv_bias_to_hf),
      Rule('h.{i}.attn.c_proj.weight', (blk('attn', 'w_o_nhd'),), (d, d), _one(lambda w: w.reshape(n, h, d)),
           lambda ws: ws[0].reshape(n * h, d)),
      Rule('h.{i}.attn.c_proj.bias', (blk('attn', 'b_o_d'),), (d,), ident, first),
      Rule('h.{i}.ln_2.weight', (blk('mlp_norm', 'scale'),), (d,), ident, first),
      Rule('h.{i}.ln_2.bias', (blk('mlp_norm', 'bias'),), (d,), ident, first),
      Rule('h.{i}.mlp.c_fc.weight', (blk('mlp', 'w_in_df'),), (d, f), ident, first),
      Rule('h.{i}.mlp.c_fc.bias', (blk('mlp', 'b_in_f'),), (f,), ident, first),
      Rule('h.{i}.mlp.c_proj.weight', (blk('mlp', 'w_out_fd'),), (f, d), ident, first),
      Rule('h.{i}.mlp.c_proj.bias', (blk('mlp', 'b_out_d'),), (d,), ident, first),
      Rule('ln_f.weight', (('final_norm', 'scale'),), (d,), ident, first),
      Rule('ln_f.bias', (('final_norm', 'bias'),), (d,), ident, first),
  ]
  if not cfg.tie_embeddings:
    rules.append(Rule('lm_head.weight', (('head_dv',),), (V, d), _one(lambda w: _pad_rows(w, cfg.padded_vocab).T),
                      lambda ws: ws[0].T[:V]))
  return rules


def _llama_rules(cfg: ModelConfig, attention_bias: bool, mlp_bias: bool) -> list[Rule]:
  d, n, k, h, f, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_ff, cfg.vocab_size
  blk = lambda *p: ('blocks',) + p  # noqa: E731
  ident = _one(lambda x: x)
  first = lambda xs: xs[0]  # noqa: E731
  lin = lambda *shape: _one(lambda w: w.T.reshape(*shape))  # noqa: E731  [out, in] -> ours
  pre = 'layers.{i}.'
  rules = [
      Rule('embed_tokens.weight', (('embed_vd',),), (V, d), _one(lambda w: _pad_rows(w, cfg.padded_vocab)),
           lambda ws: ws[0][:V]),
      Rule(pre + 'input_layernorm.weight', (blk('attn_norm', 'scale'),), (d,), ident, first),
      Rule(pre + 'self_attn.q_proj.weight', (blk('attn', 'w_q_dnh'),), (n * h, d), lin(d, n, h),
           lambda ws: ws[0].reshape(d, n * h).T),
      Rule(pre + 'self_attn.k_proj.weight', (blk('attn', 'w_k_dkh'),), (k * h, d), lin(d, k, h),
           lambda ws: ws[0].reshape(d, k * h).T),
      Rule(pre + 'self_attn.v_proj.weight', (blk('attn', 'w_v_dkh'),), (k * h, d), lin(d, k, h),
           lambda ws: ws[0].reshape(d, k * h).T),
      Rule(pre + 'self_attn.o_proj.weight', (blk('attn', 'w_o_nhd'),), (d, n * h), lin(n, h, d),
           lambda ws: ws[0].reshape(n * h, d).T),
      Rule(pre + 'post_attention_layernorm.weight', (blk('mlp_norm', 'scale'),), (d,), ident, first),
      Rule(pre + 'mlp.gate_proj.weight', (blk('mlp', 'w_gate_df'),), (f, d), lin(d, f), lambda ws: ws[0].T),
      Rule(pre + 'mlp.up_proj.weight', (blk('mlp', 'w_in_df'),), (f, d), lin(d, f), lambda ws: ws[0].T),
      Rule(pre + 'mlp.down_proj.weight', (blk('mlp', 'w_out_fd'),), (d, f), lin(f, d), lambda ws: ws[0].T),
      Rule('norm.weight', (('final_norm', 'scale'),), (d,), ident, first),
  ]
  if attention_bias:  # q/k/v/o biases
    rules += [
        Rule(pre + 'self_attn.q_proj.bias', (blk('attn', 'b_q_nh'),), (n * h,), _one(lambda b: b.reshape(n, h)),
             lambda bs: bs[0].reshape(n * h)),
        Rule(pre + 'self_attn.k_proj.bias', (blk('attn', 'b_k_kh'),), (k * h,), _one(lambda b: b.reshape(k, h)),
             lambda bs: bs[0].reshape(k * h)),
        Rule(pre + 'self_attn.v_proj.bias', (blk('attn', 'b_v_kh'),), (k * h,), _one(lambda b: b.reshape(k, h)),
             lambda bs: bs[0].reshape(k * h)),
        Rule(pre + 'self_attn.o_proj.bias', (blk('attn', 'b_o_d'),), (d,), ident, first),
    ]
  if mlp_bias:  # up/down biases are ours; our SwiGLU has no gate bias, so Llama's must be zero
    rules += [
        Rule(pre + 'mlp.gate_proj.bias', (), (f,), _zero_gate_bias, lambda _: np.zeros(f, np.float32)),
        Rule(pre + 'mlp.up_proj.bias', (blk('mlp', 'b_in_f'),), (f,), ident, first),
        Rule(pre + 'mlp.down_proj.bias', (blk('mlp', 'b_out_d'),), (d,), ident, first),
    ]
  if not cfg.tie_embeddings:
    rules.append(Rule('lm_head.weight', (('head_dv',),), (V, d), _one(lambda w: _pad_rows(w, cfg.padded_vocab).T),
                      lambda ws: ws[0].T[:V]))
  return rules


def _zero_gate_bias(b: np.ndarray) -> list[np.ndarray]:
  if np.any(b != 0):
    raise HFError('mlp.gate_proj.bias is not zero: our SwiGLU MLP has no gate bias, so this Llama '
                  '(mlp_bias=true) cannot be imported exactly')
  return []


@dataclasses.dataclass(frozen=True)
class Layout:
  """Which optional tensors a Llama checkpoint stores (GPT-2 always stores every bias)."""

  attention_bias: bool = False
  mlp_bias: bool = False

  @classmethod
  def of_hf(cls, hf: dict[str, Any]) -> 'Layout':
    return cls(bool(hf.get('attention_bias', False)), bool(hf.get('mlp_bias', False)))

  @classmethod
  def of_model(cls, cfg: ModelConfig) -> 'Layout':
    return cls(cfg.use_bias, cfg.use_bias)


def _pad_rows(w: np.ndarray, rows: int) -> np.ndarray:
  """Zero rows up to the padded vocabulary (their logits are masked, so they are never used)."""
  if w.shape[0] == rows:
    return w
  return np.concatenate([w, np.zeros((rows - w.shape[0],) + w.shape[1:], w.dtype)])


def _rules(cfg: ModelConfig, layout: Layout) -> list[Rule]:
  if cfg.family == 'gpt2':
    return _gpt2_rules(cfg)
  return _llama_rules(cfg, layout.attention_bias, layout.mlp_bias)


def _zero_filled(cfg: ModelConfig, layout: Layout) -> list[tuple[str, ...]]:
  """Our parameters a Llama checkpoint does not store (attention biases without MLP ones or the
  reverse): zeros, which is what the checkpoint computes."""
  out = []
  if cfg.family == 'llama' and cfg.use_bias:
    if not layout.attention_bias:
      out += [('blocks', 'attn', k) for k in ('b_q_nh', 'b_k_kh', 'b_v_kh', 'b_o_d')]
    if not layout.mlp_bias:
      out += [('blocks', 'mlp', 'b_in_f'), ('blocks', 'mlp', 'b_out_d')]
  return out


# ---------------------------------------------------------------------------------------------
# Reading Hugging Face weight files
# ---------------------------------------------------------------------------------------------


class WeightFiles:
  """The tensors of a model directory by name: ``*.safetensors`` (sharded or not), else pytorch_model.bin."""

  def __init__(self, src: str):
    self.src = src
    self._handles: dict[str, Any] = {}
    self._where: dict[str, str] = {}
    files = sorted(glob.glob(os.path.join(src, '*.safetensors')))
    if files:
      from safetensors import safe_open
      for path in files:
        handle = safe_open(path, framework='numpy')
        self._handles[path] = handle
        for name in handle.keys():
          self._where[name] = path
      self.kind = 'safetensors'
      return
    bins = sorted(glob.glob(os.path.join(src, 'pytorch_model*.bin')))
    if not bins:
      raise HFError(f'{src} holds no weights: expected model.safetensors (or model-*.safetensors, or '
                    f'pytorch_model.bin)')
    try:
      import torch
    except ImportError:
      raise HFError(f'{src} holds only pytorch_model.bin, which needs torch to read; install the CPU build '
                    f'(pip install torch) or save the model with safetensors') from None
    self._tensors = {}
    for path in bins:
      for name, t in torch.load(path, map_location='cpu', weights_only=True).items():
        self._tensors[name] = t
        self._where[name] = path
    self.kind = 'pytorch'

  def names(self) -> list[str]:
    return list(self._where)

  def get(self, name: str) -> np.ndarray:
    """The tensor as float32 numpy (bfloat16 and float16 widen exactly)."""
    if self.kind == 'safetensors':
      x = self._handles[self._where[name]].get_tensor(name)
    else:
      x = self._tensors[name].float().numpy()
    return np.asarray(x).astype(np.float32)

  def shape(self, name: str) -> tuple[int, ...]:
    if self.kind == 'safetensors':
      return tuple(self._handles[self._where[name]].get_slice(name).get_shape())
    return tuple(self._tensors[name].shape)

  def dtypes(self) -> list[str]:
    if self.kind == 'safetensors':
      return sorted({self._handles[self._where[n]].get_slice(n).get_dtype() for n in self._where})
    return sorted({str(t.dtype) for t in self._tensors.values()})


def _prefix(names: set[str], family: str) -> str:
  """'transformer.' / 'model.' or '' (GPT-2's original files have no prefix)."""
  probe = 'wte.weight' if family == 'gpt2' else 'embed_tokens.weight'
  for p in ('transformer.', 'model.', ''):
    if p + probe in names:
      return p
  return 'transformer.' if family == 'gpt2' else 'model.'


def _expected(cfg: ModelConfig, layout: Layout, prefix: str) -> dict[str, tuple[Rule, int | None]]:
  """HF tensor name -> (rule, layer index or None)."""
  out = {}
  for rule in _rules(cfg, layout):
    head = '' if rule.hf.startswith('lm_head') else prefix
    if rule.per_layer:
      for i in range(cfg.n_layers):
        out[head + rule.hf.format(i=i)] = (rule, i)
    else:
      out[head + rule.hf] = (rule, None)
  return out


def _ignorable(name: str, cfg: ModelConfig) -> bool:
  """Buffers and the duplicate of a tied output layer: present in some files, never parameters."""
  return name.endswith(_BUFFER_SUFFIXES) or (cfg.tie_embeddings and name == 'lm_head.weight')


def read_params(src: str, cfg: ModelConfig, layout: Layout = Layout(),
                files: WeightFiles | None = None) -> dict[str, Any]:
  """Our parameter tree (nested dicts of float32 numpy) from a model directory's weights.

  Raises HFError listing missing and unexpected tensors, or naming a tensor whose shape
  differs from the one config.json implies.
  """
  files = files or WeightFiles(src)
  names = set(files.names())
  prefix = _prefix(names, cfg.family)
  expected = _expected(cfg, layout, prefix)
  missing = sorted(set(expected) - names)
  extra = sorted(n for n in names - set(expected) if not _ignorable(n, cfg))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'missing {len(missing)} tensors: {_listing(missing)}')
    if extra:
      parts.append(f'{len(extra)} unexpected tensors: {_listing(extra)}')
    raise HFError(f'{src}: the weights do not match config.json ({cfg.family}, {cfg.n_layers} layers, '
                  f'tie_word_embeddings={cfg.tie_embeddings}): ' + '; '.join(parts))
  for name, (rule, _) in expected.items():
    if files.shape(name) != rule.hf_shape:
      raise HFError(f'{src}: tensor {name} has shape {list(files.shape(name))}, but config.json implies '
                    f'{list(rule.hf_shape)}')
  params: dict[str, Any] = {}
  for rule in _rules(cfg, layout):
    head = '' if rule.hf.startswith('lm_head') else prefix
    if rule.per_layer:
      per_layer = [rule.to_ours(files.get(head + rule.hf.format(i=i))) for i in range(cfg.n_layers)]
      values = [np.stack([layer[j] for layer in per_layer]) for j in range(len(rule.ours))]
    else:
      values = rule.to_ours(files.get(head + rule.hf))
    for path, value in zip(rule.ours, values):
      _set(params, path, np.ascontiguousarray(value, np.float32))
  return params


def _listing(names: list[str], limit: int = 12) -> str:
  shown = ', '.join(names[:limit])
  return shown + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _check_against_model(params: dict, cfg: ModelConfig, layout: Layout, src: str) -> dict:
  """Fill zero-only parameters and check every leaf against the model's own shapes."""
  from llm.checkpoint import abstract_params
  import jax
  abstract = abstract_params(cfg)
  for path in _zero_filled(cfg, layout):
    _set(params, path, np.zeros(_get(abstract, path).shape, np.float32))
  want = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  got = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  if want.keys() != got.keys():
    raise HFError(f'{src}: converted parameters {sorted(set(got) ^ set(want))} do not match the model '
                  f'(a bug in llm/hf.py: please report it with the config.json)')
  for key, shape in want.items():
    if got[key] != shape:
      raise HFError(f'{src}: parameter {key} converted to shape {list(got[key])}, the model needs {list(shape)}')
  return params


# ---------------------------------------------------------------------------------------------
# Loading (hf:<dir> anywhere a checkpoint is read) and importing
# ---------------------------------------------------------------------------------------------


def load_tokenizer(src: str, vocab_size: int):
  """The directory's tokenizer.json (special ids from its files); checked against the model's vocabulary."""
  from llm.tokenizer import HFTokenizer, TokenizerError
  if not os.path.isfile(os.path.join(src, 'tokenizer.json')):
    raise HFError(f'{src} has no tokenizer.json; save the tokenizer beside the model '
                  f'(AutoTokenizer.from_pretrained(...).save_pretrained(dir)) before importing')
  try:
    tok = HFTokenizer(src)
  except TokenizerError as e:
    raise HFError(str(e)) from None
  if tok.vocab_size > vocab_size:
    raise HFError(f'{src}: the tokenizer has {tok.vocab_size} tokens but the model only {vocab_size} '
                  f'embedding rows (config.json vocab_size): they do not belong together')
  return tok


def load(src: str, mesh=None, overrides: dict[str, Any] | None = None):
  """(ModelConfig, tokenizer, parameters on ``mesh``) of a Hugging Face directory, converted in memory."""
  import jax
  from llm.checkpoint import abstract_params
  src = os.path.abspath(os.path.expanduser(src))
  if not os.path.isdir(src):
    raise HFError(f'{src} is not a directory; hf:<dir> names a local Hugging Face model directory')
  hf = read_hf_config(src)
  cfg = model_config_from_hf(hf, src, **(overrides or {}))
  tok = load_tokenizer(src, cfg.vocab_size)
  layout = Layout.of_hf(hf)
  params = _check_against_model(read_params(src, cfg, layout), cfg, layout, src)
  # One leaf at a time onto its sharding: host memory holds one converted tensor beyond the files.
  targets = abstract_params(cfg, mesh)
  return cfg, tok, jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, targets)


def import_checkpoint(src: str, workdir: str) -> dict[str, Any]:
  """Convert a Hugging Face directory into a checkpoint in ``workdir`` (step 0, parameters only).

  The workdir gets checkpoints/0 (what ``load_params`` and ``init_from`` read), tokenizer/
  (a copy of the tokenizer files, which the checkpoint refers to) and import.json (source,
  file hashes, dtypes). Returns the import record.
  """
  import jax
  from llm import checkpoint
  from llm.tokenizer import file_sha256
  src = os.path.abspath(os.path.expanduser(src))
  cfg, tok, params = load(src)
  files = WeightFiles(src)
  with checkpoint.staged_directory(workdir, '--workdir', HFError) as tmp:
    tok_dir = os.path.join(tmp, 'tokenizer')
    os.makedirs(tok_dir)
    for name in TOKENIZER_FILES:
      if os.path.exists(os.path.join(src, name)):
        shutil.copy2(os.path.join(src, name), tok_dir)
    spec = {'kind': 'hf', 'path': 'tokenizer/tokenizer.json',
            'sha256': file_sha256(os.path.join(tok_dir, 'tokenizer.json'))}
    weight_files = sorted({os.path.basename(p) for p in files._where.values()})
    record = {'source': src, 'family': cfg.family, 'weights': {f: file_sha256(os.path.join(src, f))
                                                                for f in weight_files},
              'source_dtypes': files.dtypes(), 'parameters': cfg.param_count(),
              'tokenizer': {'vocab_size': tok.vocab_size, 'bos_id': tok.bos_id, 'eos_id': tok.eos_id,
                            'pad_id': tok.pad_id, 'add_bos': tok.add_bos}}
    checkpoint.save_params(tmp, cfg, spec, jax.device_get(params), extra_meta={'imported_from': src})
    with open(os.path.join(tmp, 'import.json'), 'w') as f:
      json.dump(record, f, indent=2)
  return record


# ---------------------------------------------------------------------------------------------
# Exporting
# ---------------------------------------------------------------------------------------------


def to_hf_tensors(params: dict, cfg: ModelConfig, family: str) -> dict[str, np.ndarray]:
  """Hugging Face tensor name -> float32 array (the transpose of read_params)."""
  _check_expressible(cfg, family)
  if family == 'gpt2' and not cfg.use_bias:
    params = _with_zero_biases(params, cfg)  # GPT-2 always has biases: zeros are exact
  prefix = 'transformer.' if family == 'gpt2' else 'model.'
  out = {}
  for rule in _rules(dataclasses.replace(cfg, family=family), Layout.of_model(cfg)):
    head = '' if rule.hf.startswith('lm_head') else prefix
    values = [np.asarray(_get(params, p), np.float32) for p in rule.ours]
    if rule.per_layer:
      for i in range(cfg.n_layers):
        out[head + rule.hf.format(i=i)] = np.ascontiguousarray(rule.to_hf([v[i] for v in values]))
    else:
      out[head + rule.hf] = np.ascontiguousarray(rule.to_hf(values))
  return out


def _with_zero_biases(params: dict, cfg: ModelConfig) -> dict:
  biased = dataclasses.replace(cfg, use_bias=True)
  from llm.checkpoint import abstract_params
  import jax
  shapes = abstract_params(biased)
  def fill(path, s):
    keys = tuple(k.key for k in path)
    try:
      return np.asarray(_get(params, keys))
    except KeyError:
      return np.zeros(s.shape, np.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible map of the 256 byte values to printable characters (byte-level BPE's alphabet)."""
  printable = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
      list(range(ord('®'), ord('ÿ') + 1))
  table, extra = {}, 0
  for b in range(256):
    if b in printable:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


BYTE_SPECIALS = ('<|pad|>', '<|bos|>', '<|eos|>')  # ids 0, 1, 2 of the byte tokenizer


def byte_tokenizer_json(max_length: int) -> tuple[str, dict[str, Any]]:
  """(tokenizer.json, tokenizer_config.json) of a Hugging Face tokenizer equal to ByteTokenizer.

  Each UTF-8 byte is one token (a byte-level BPE with no merges) at id byte + 3; the three
  special tokens keep ids 0-2, and the post-processor starts every encoding with BOS, as
  our training documents start. ``split_special_tokens`` makes text that spells a special
  token ("<|bos|>") encode as its bytes, as ours does.
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
  from llm.tokenizer import ByteTokenizer
  table = _bytes_to_unicode()
  vocab = {tok: i for i, tok in enumerate(BYTE_SPECIALS)}
  vocab.update({table[b]: b + ByteTokenizer.offset for b in range(256)})
  tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  tk.decoder = decoders.ByteLevel()
  tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in BYTE_SPECIALS])
  bos = BYTE_SPECIALS[1]
  tk.post_processor = processors.TemplateProcessing(single=f'{bos} $A', pair=f'{bos} $A {bos} $B:1',
                                                    special_tokens=[(bos, 1)])
  config = dict(tokenizer_class='PreTrainedTokenizerFast', pad_token=BYTE_SPECIALS[0], bos_token=bos,
                eos_token=BYTE_SPECIALS[2], model_max_length=max_length, clean_up_tokenization_spaces=False,
                add_bos_token=True, split_special_tokens=True)
  return tk.to_str(), config


def export(workdir: str, out: str, step: int | None = None, family: str | None = None,
           dtype: str = 'float32') -> dict[str, Any]:
  """Write ``out``: config.json, model.safetensors, tokenizer files, for transformers to load."""
  from safetensors.numpy import save_file
  import jax
  from llm import checkpoint
  from llm.tokenizer import ByteTokenizer, HFTokenizer
  cfg, tok, params, step = checkpoint.load_params(workdir, step)
  if cfg.lora_rank:  # a LoRA fine-tuning run exports as its merged model (llm.lora export writes the adapter)
    from llm import lora
    cfg, params = lora.merge(cfg, params)
  family = family or cfg.family
  if family not in ('gpt2', 'llama'):
    raise HFError(f"--family must be 'gpt2' or 'llama', got {family!r}")
  config = hf_config_from_model(cfg, family, tok)
  if not isinstance(tok, (ByteTokenizer, HFTokenizer)):
    raise HFError(f'cannot export the tokenizer {type(tok).__name__}: only the byte tokenizer and Hugging Face '
                  f'tokenizers export (a SentencePiece model must be converted with transformers first)')
  np_dtype = {'float32': np.float32, 'bfloat16': None, 'float16': np.float16}
  if dtype not in np_dtype:
    raise HFError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
  tensors = to_hf_tensors(jax.device_get(params), cfg, family)
  if dtype != 'float32':
    import ml_dtypes
    target = ml_dtypes.bfloat16 if dtype == 'bfloat16' else np.float16
    tensors = {k: v.astype(target) for k, v in tensors.items()}
    config['torch_dtype'] = dtype
  with checkpoint.staged_directory(out, '--out', HFError) as tmp:
    save_file(tensors, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
    with open(os.path.join(tmp, 'config.json'), 'w') as f:
      json.dump(config, f, indent=2)
    with open(os.path.join(tmp, 'generation_config.json'), 'w') as f:
      json.dump({k: config[k] for k in ('bos_token_id', 'eos_token_id', 'pad_token_id')}, f, indent=2)
    if isinstance(tok, ByteTokenizer):
      tk_json, tk_config = byte_tokenizer_json(cfg.max_seq_len)
      with open(os.path.join(tmp, 'tokenizer.json'), 'w') as f:
        f.write(tk_json)
      with open(os.path.join(tmp, 'tokenizer_config.json'), 'w') as f:
        json.dump(tk_config, f, indent=2)
    else:
      folder = os.path.dirname(tok.path)
      for name in TOKENIZER_FILES:
        if os.path.exists(os.path.join(folder, name)):
          shutil.copy2(os.path.join(folder, name), tmp)
    record = {'workdir': os.path.abspath(workdir), 'step': step, 'family': family, 'dtype': dtype,
              'tensors': len(tensors), 'parameters': int(sum(v.size for v in tensors.values()))}
    with open(os.path.join(tmp, 'export.json'), 'w') as f:
      json.dump(record, f, indent=2)
  return record


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m llm.hf', description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='command', required=True)
  imp = sub.add_parser('import', help='Hugging Face directory -> checkpoint workdir')
  imp.add_argument('--src', required=True, help='directory with config.json, *.safetensors and tokenizer.json')
  imp.add_argument('--workdir', required=True, help='new workdir for the checkpoint')
  exp = sub.add_parser('export', help='checkpoint workdir -> Hugging Face directory')
  exp.add_argument('--workdir', required=True, help='a training run (or an import) to export')
  exp.add_argument('--out', required=True, help='new directory for the export')
  exp.add_argument('--step', type=int, default=None, help='checkpoint step (default: newest)')
  exp.add_argument('--family', default=None, choices=['gpt2', 'llama'], help='target architecture '
                   '(default: the model family)')
  exp.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
  args = p.parse_args(argv)
  from llm.checkpoint import CheckpointMismatch, CheckpointNotFound
  try:
    if args.command == 'import':
      rec = import_checkpoint(args.src, args.workdir)
      print(f'imported {rec["family"]} ({rec["parameters"] / 1e6:.2f}M parameters, weights '
            f'{"/".join(rec["source_dtypes"])}) from {args.src} into {args.workdir}')
    else:
      rec = export(args.workdir, args.out, args.step, args.family, args.dtype)
      print(f'exported step {rec["step"]} of {args.workdir} as {rec["family"]} ({rec["parameters"] / 1e6:.2f}M '
            f'parameters, {rec["dtype"]}) to {args.out}')
  except (HFError, CheckpointMismatch, CheckpointNotFound) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
