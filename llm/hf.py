"""Hugging Face interop: GPT-2, Llama, BERT and T5 checkpoints in, our checkpoints out, without torch.

  python -m llm.hf import --src=<dir with config.json + *.safetensors> --workdir=runs/gpt2
  python -m llm.hf export --workdir=runs/default --out=exports/default

``import`` reads a local Hugging Face model directory of the GPT-2 family
(``GPT2LMHeadModel``), the Llama family (``LlamaForCausalLM``: grouped-query attention,
tied or untied embeddings, ``rope_theta``, ``rms_norm_eps``, ``head_dim``), BERT
(``BertForMaskedLM``: post-norm encoder, token types, the masked-LM head) or T5
(``T5ForConditionalGeneration``: v1.0 ReLU with tied, rescaled output, v1.1 gated-GELU
untied, ``num_decoder_layers``, ``d_kv``, relative-position buckets) and writes one of our
checkpoints: the model config derived from ``config.json``, the parameters in float32
(bfloat16 and float16 weights are widened exactly), the vocabulary padded to
``vocab_multiple`` rows, and a copy of the tokenizer files (``tokenizer.json``, or T5's
``spiece.model``), so that ``train.py`` (``init_from=<workdir>``), the evaluation loop
(``ckpt=<workdir>``) and the conversion back all start from it. Any of those can also read
a Hugging Face directory directly: ``hf:<dir>`` wherever a checkpoint workdir is expected
(``llm.checkpoint.load_params``).

``export`` writes what ``transformers.AutoModelForCausalLM`` (GPT-2, Llama),
``AutoModelForMaskedLM`` (BERT) or ``AutoModelForSeq2SeqLM`` (T5) ``.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load without custom code: a ``config.json`` of the
model's family, ``model.safetensors`` and the tokenizer (the byte tokenizer as a
byte-level ``tokenizer.json`` with the same ids, its mask token and sentinels included; a
Hugging Face tokenizer as its files). A model the family cannot express (rotary positions
in GPT-2 or BERT, a pre-norm BERT, biases in T5) is refused, naming the field. Both
directions write into a temporary directory that is renamed into place only when
complete, so a failed conversion leaves nothing behind.

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

  BERT (bert.*, nn.Linear [out, in])   ours (post-norm: x = norm(x + f(x)))
  embeddings.word / position / token_type_embeddings   embed_vd [V', d], pos_td, type_td
  embeddings.LayerNorm                 embed_norm
  encoder.layer.i.attention.self.query / key / value, attention.output.dense
                                       blocks.attn.w_q_dnh ... w_o_nhd, b_q_nh ... b_o_d
  attention.output.LayerNorm           blocks.attn_norm
  intermediate.dense, output.dense     blocks.mlp.w_in_df / b_in_f, w_out_fd / b_out_d
  output.LayerNorm                     blocks.mlp_norm
  cls.predictions.transform.dense / LayerNorm   w_mlm_dd [d, d], b_mlm_d / mlm_norm
  cls.predictions.bias [V]             b_vocab_v [V'] (``decoder.bias`` when the file has it:
                                       transformers 5 adds that one when untied)
  cls.predictions.decoder.weight [V, d]   head_dv [d, V'] (untied only)

  T5 (nn.Linear [out, in], no biases)  ours
  shared [V, d]                        embed_vd [V', d]
  {encoder,decoder}.block.0.layer.0.SelfAttention.relative_attention_bias [r, n]
                                       enc_rel / dec_rel.b_rel_rn (block 0 holds the table
                                       every layer of its stack uses)
  encoder.block.i.layer.0 (SelfAttention q/k/v/o, layer_norm), layer.1 (DenseReluDense, layer_norm)
                                       enc_blocks.attn, attn_norm, mlp, mlp_norm
  decoder.block.i.layer.0 / 1 (EncDecAttention) / 2 (DenseReluDense)
                                       dec_blocks.attn / cross / mlp and their norms
  DenseReluDense.wi (ReLU) or wi_0 (activated) and wi_1; wo
                                       mlp.w_in_df, or w_gate_df and w_in_df; w_out_fd
  {encoder,decoder}.final_layer_norm   enc_norm, dec_norm
  lm_head [V, d]                       head_dv [d, V'] (untied: v1.1)

Both decoder families use the rotate-half RoPE convention, so Llama's q/k need no
permutation. T5's output: tied embeddings mean the decoder output is scaled by
d_model^-0.5 before the tied projection (v1.0); untied means no scaling (v1.1).
transformers 5 records that as ``scale_decoder_outputs`` and may store an unscaled model
with its output tied to ``shared``: that imports as our untied model with head_dv = shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from llm.models import ModelConfig

SUPPORTED = {'GPT2LMHeadModel': 'gpt2', 'LlamaForCausalLM': 'llama', 'BertForMaskedLM': 'bert',
             'T5ForConditionalGeneration': 't5'}
FAMILY_ARCH = {'gpt2': 'decoder', 'llama': 'decoder', 'bert': 'encoder', 't5': 'encoder_decoder'}
# spiece.model: T5's SentencePiece model (google/t5-v1_1-* ship only that); vocab.txt: BERT's
# WordPiece list, which transformers' slow tokenizer reads.
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'spiece.model', 'vocab.txt')
# Buffers some checkpoints carry that are not parameters (causal-mask tables, RoPE frequencies,
# BERT's position and token-type id tables).
_BUFFER_SUFFIXES = ('.attn.bias', '.attn.masked_bias', '.rotary_emb.inv_freq', 'embeddings.position_ids',
                    'embeddings.token_type_ids')
# Parts of a checkpoint the model we import does not use: BERT's pooler and next-sentence head
# (bert-base-* ship them under BertForMaskedLM), and the EncDecAttention position table some
# old T5 files carry (transformers ignores it too: cross-attention has no positions).
_UNUSED_PREFIXES = ('bert.pooler.', 'cls.seq_relationship.',
                    'decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.')


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
  """Our family of a config.json: by ``architectures``, else (none listed) by ``model_type``."""
  archs = hf.get('architectures') or []
  for arch in archs:
    if arch in SUPPORTED:
      return SUPPORTED[arch]
  if not archs and hf.get('model_type') in FAMILY_ARCH:
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


# BERT's hidden_act (its MLP and its masked-LM transform) <-> our mlp. transformers' 'gelu' is the
# exact erf form; 'gelu_new' and 'gelu_pytorch_tanh' are the tanh approximation.
_BERT_ACT = {'gelu': 'gelu_exact', 'gelu_new': 'gelu', 'gelu_pytorch_tanh': 'gelu', 'relu': 'relu'}
_BERT_ACT_OUT = {'gelu_exact': 'gelu', 'gelu': 'gelu_new', 'relu': 'relu'}
# T5's feed_forward_proj <-> our mlp. 'gated-gelu' is the tanh GELU (transformers maps it to
# gelu_new for T5 v1.1); a plain 'gelu' is the exact one.
_T5_ACT = {'relu': 'relu', 'gated-gelu': 'geglu', 'gated-silu': 'swiglu', 'gelu': 'gelu_exact', 'gelu_new': 'gelu',
           'gelu_pytorch_tanh': 'gelu'}
_T5_ACT_OUT = {'relu': 'relu', 'geglu': 'gated-gelu', 'swiglu': 'gated-silu', 'gelu_exact': 'gelu', 'gelu': 'gelu_new'}


def _require(hf: dict[str, Any], want: dict[str, Any]) -> None:
  """Raise naming the first config.json key whose value we cannot run."""
  for key, value in want.items():
    if hf.get(key, value) != value:
      raise HFError(f'config.json: {key}={hf[key]!r} is not supported (only {value!r})')


def t5_output_scaled(hf: dict[str, Any]) -> bool:
  """Whether a T5 config scales the decoder output by d_model^-0.5 (and ties it to the embeddings).

  transformers 4 ties and scales exactly when ``tie_word_embeddings`` (default true);
  transformers 5 records ``scale_decoder_outputs`` and always sets tie_word_embeddings.
  """
  if 'scale_decoder_outputs' in hf:
    return bool(hf['scale_decoder_outputs'])
  return bool(hf.get('tie_word_embeddings', True))


def model_config_from_hf(hf: dict[str, Any], src: str = '', **overrides) -> ModelConfig:
  """Our ModelConfig for a Hugging Face config.json; ``overrides`` set runtime fields (dtype, ...)."""
  family = family_of(hf, src)
  try:
    fields = {'gpt2': _gpt2_fields, 'llama': _llama_fields, 'bert': _bert_fields, 't5': _t5_fields}[family](hf)
    return ModelConfig(vocab_size=hf['vocab_size'], **{**fields, **overrides})
  except KeyError as e:
    raise HFError(f'config.json lacks {e.args[0]!r}, which a {family} config needs') from None
  except ValueError as e:
    if isinstance(e, HFError):
      raise
    raise HFError(f'config.json: {e}') from None


def _gpt2_fields(hf: dict[str, Any]) -> dict[str, Any]:
  act = hf.get('activation_function', 'gelu_new')
  if act not in ('gelu_new', 'gelu_pytorch_tanh'):
    raise HFError(f'config.json: activation_function={act!r} is not supported (our GPT-2 MLP is the tanh '
                  f"GELU, 'gelu_new')")
  _require(hf, {'scale_attn_weights': True, 'scale_attn_by_inverse_layer_idx': False, 'add_cross_attention': False})
  d = hf['n_embd']
  return dict(family='gpt2', d_model=d, n_layers=hf['n_layer'], n_heads=hf['n_head'],
              d_ff=hf.get('n_inner') or 4 * d, max_seq_len=hf.get('n_positions', 1024),
              norm_eps=hf.get('layer_norm_epsilon', 1e-5), use_bias=True,
              tie_embeddings=hf.get('tie_word_embeddings', True), init_std=hf.get('initializer_range', 0.02))


def _llama_fields(hf: dict[str, Any]) -> dict[str, Any]:
  act = hf.get('hidden_act', 'silu')
  if act != 'silu':
    raise HFError(f"config.json: hidden_act={act!r} is not supported (our SwiGLU MLP uses 'silu')")
  return dict(family='llama', d_model=hf['hidden_size'], n_layers=hf['num_hidden_layers'],
              n_heads=hf['num_attention_heads'],
              n_kv_heads=hf.get('num_key_value_heads') or hf['num_attention_heads'],
              d_head=hf.get('head_dim') or hf['hidden_size'] // hf['num_attention_heads'],
              d_ff=hf['intermediate_size'], max_seq_len=hf.get('max_position_embeddings', 2048),
              norm_eps=hf.get('rms_norm_eps', 1e-6), rope_theta=_rope_theta(hf),
              use_bias=bool(hf.get('attention_bias', False) or hf.get('mlp_bias', False)),
              tie_embeddings=hf.get('tie_word_embeddings', False), init_std=hf.get('initializer_range', 0.02))


def _activation(hf: dict[str, Any], key: str, default: str, table: dict[str, str], family: str) -> str:
  """Our ``mlp`` for config.json's activation field ``key``; HFError listing the supported values."""
  value = hf.get(key, default)
  if value not in table:
    raise HFError(f'config.json: {key}={value!r} is not supported ({family} imports with '
                  f'{", ".join(sorted(table))})')
  return table[value]


def _bert_fields(hf: dict[str, Any]) -> dict[str, Any]:
  mlp = _activation(hf, 'hidden_act', 'gelu', _BERT_ACT, 'BERT')
  # Relative position embeddings (transformers 4's relative_key*) and decoder use have no counterpart.
  _require(hf, {'position_embedding_type': 'absolute', 'is_decoder': False, 'add_cross_attention': False})
  d, n = hf['hidden_size'], hf['num_attention_heads']
  if d % n:
    raise HFError(f'config.json: hidden_size={d} is not a multiple of num_attention_heads={n}')
  return dict(family='bert', d_model=d, n_layers=hf['num_hidden_layers'], n_heads=n, d_head=d // n,
              d_ff=hf['intermediate_size'], max_seq_len=hf.get('max_position_embeddings', 512),
              type_vocab_size=hf.get('type_vocab_size', 2), mlp=mlp,
              norm_eps=hf.get('layer_norm_eps', 1e-12), use_bias=True,
              tie_embeddings=hf.get('tie_word_embeddings', True), init_std=hf.get('initializer_range', 0.02))


def _t5_fields(hf: dict[str, Any]) -> dict[str, Any]:
  mlp = _activation(hf, 'feed_forward_proj', 'relu', _T5_ACT, 'T5')
  _require(hf, {'is_encoder_decoder': True, 'is_decoder': False})
  n_layers = hf['num_layers']
  return dict(family='t5', d_model=hf['d_model'], n_layers=n_layers,
              n_decoder_layers=hf.get('num_decoder_layers') or n_layers, n_heads=hf['num_heads'],
              d_head=hf['d_kv'], d_ff=hf['d_ff'], mlp=mlp,
              rel_buckets=hf.get('relative_attention_num_buckets', 32),
              rel_max_distance=hf.get('relative_attention_max_distance', 128),
              # T5 has no position table, so no length limit; n_positions (when given) is its training length.
              max_seq_len=hf.get('n_positions') or 512, norm_eps=hf.get('layer_norm_epsilon', 1e-6),
              tie_embeddings=t5_output_scaled(hf))


# What each target family needs of a model, field by field (checked in this order).
_EXPRESSIBLE: dict[str, dict[str, Any]] = {
    'gpt2': dict(arch='decoder', norm='layer', positions='learned', mlp='gelu', causal=True),
    'llama': dict(arch='decoder', norm='rms', positions='rope', mlp='swiglu', causal=True),
    'bert': dict(arch='encoder', norm='layer', norm_position='post', positions='learned', causal=False,
                 scale_attention=True),
    't5': dict(arch='encoder_decoder', norm='rms', norm_position='pre', positions='relative', use_bias=False,
               scale_attention=False),
}


def _check_expressible(cfg: ModelConfig, family: str) -> None:
  """Raise naming the first field the target family cannot express."""
  for field, value in _EXPRESSIBLE[family].items():
    if getattr(cfg, field) != value:
      hint = ''
      if field == 'arch':
        fitting = [f for f, a in FAMILY_ARCH.items() if a == cfg.arch]
        hint = f' (export an {cfg.arch} model as {" or ".join(fitting)})'
      elif field == 'use_bias':
        hint = ' (T5 has no biases)'
      raise HFError(f'cannot export as {family}: model.{field}={getattr(cfg, field)!r}, but '
                    f'{family} needs {value!r}{hint}')
  if getattr(cfg, 'num_labels', 0):
    raise HFError(f'cannot export as {family}: model.num_labels={cfg.num_labels}, but {family} has no first-token '
                  f'classifier (BertForSequenceClassification puts a tanh pooler before its own)')
  acts = {'bert': _BERT_ACT_OUT, 't5': _T5_ACT_OUT}.get(family)
  if acts is not None and cfg.mlp not in acts:
    raise HFError(f'cannot export as {family}: model.mlp={cfg.mlp!r}, but {family} needs one of {sorted(acts)}')
  name = {'gpt2': 'GPT-2', 'llama': 'Llama', 'bert': 'BERT', 't5': 'T5'}[family]
  if family in ('gpt2', 'bert', 't5') and cfg.n_kv_heads != cfg.n_heads:
    raise HFError(f'cannot export as {family}: model.n_kv_heads={cfg.n_kv_heads} != n_heads={cfg.n_heads} '
                  f'({name} has no grouped-query attention' + ('; export as llama)' if family == 'gpt2' else ')'))
  if family in ('gpt2', 'bert') and cfg.d_head * cfg.n_heads != cfg.d_model:
    raise HFError(f'cannot export as {family}: model.d_head={cfg.d_head} x n_heads={cfg.n_heads} != '
                  f'd_model={cfg.d_model} ({name} splits d_model into its heads)')


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
  if family == 'bert':
    # A model without token types exports one all-zero type row: BERT always adds a type embedding.
    return dict(architectures=['BertForMaskedLM'], model_type='bert', vocab_size=cfg.vocab_size,
                hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                intermediate_size=cfg.d_ff, hidden_act=_BERT_ACT_OUT[cfg.mlp], hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, max_position_embeddings=cfg.max_seq_len,
                type_vocab_size=max(1, cfg.type_vocab_size), layer_norm_eps=cfg.norm_eps,
                initializer_range=cfg.init_std, position_embedding_type='absolute', is_decoder=False,
                add_cross_attention=False, tie_word_embeddings=cfg.tie_embeddings, use_cache=False,
                pad_token_id=tokenizer.pad_id, torch_dtype='float32')
  if family == 't5':
    # Tied means tied and rescaled (v1.0), untied means neither (v1.1), in transformers 4 and 5 alike;
    # 5 reads scale_decoder_outputs, 4 ignores it. Our span corruption starts the decoder with pad.
    return dict(architectures=['T5ForConditionalGeneration'], model_type='t5', vocab_size=cfg.vocab_size,
                d_model=cfg.d_model, d_kv=cfg.d_head, d_ff=cfg.d_ff, num_layers=cfg.n_layers,
                num_decoder_layers=cfg.n_decoder_layers, num_heads=cfg.n_heads,
                relative_attention_num_buckets=cfg.rel_buckets,
                relative_attention_max_distance=cfg.rel_max_distance, dropout_rate=0.0,
                layer_norm_epsilon=cfg.norm_eps, initializer_factor=1.0, feed_forward_proj=_T5_ACT_OUT[cfg.mlp],
                is_encoder_decoder=True, tie_word_embeddings=cfg.tie_embeddings,
                scale_decoder_outputs=cfg.tie_embeddings, n_positions=cfg.max_seq_len, use_cache=True,
                pad_token_id=tokenizer.pad_id, eos_token_id=tokenizer.eos_id,
                decoder_start_token_id=tokenizer.pad_id, torch_dtype='float32')
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
  layers: str = 'n_layers'  # the ModelConfig field counting the stack a per-layer tensor belongs to

  @property
  def per_layer(self) -> bool:
    return '{i}' in self.hf

  def count(self, cfg: ModelConfig) -> int:
    """How many layers the rule's ``{i}`` runs over."""
    return getattr(cfg, self.layers)


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
  """Which optional tensors a checkpoint stores, where the family leaves a choice.

  Llama: q/k/v/o biases, MLP biases (GPT-2 always stores every bias). BERT: whether the
  vocabulary bias is ``cls.predictions.decoder.bias`` (transformers 5 stores that one, and
  computes with it, when the output is untied; 4 shares one tensor under both names). T5:
  whether an unscaled output is tied to ``shared`` (transformers 5 saves it that way).
  """

  attention_bias: bool = False
  mlp_bias: bool = False
  decoder_bias: bool = False
  head_is_shared: bool = False

  @classmethod
  def of_hf(cls, hf: dict[str, Any], names: Iterable[str] = ()) -> 'Layout':
    names, family = set(names), family_of(hf)
    return cls(bool(hf.get('attention_bias', False)), bool(hf.get('mlp_bias', False)),
               decoder_bias='cls.predictions.decoder.bias' in names,
               head_is_shared=family == 't5' and not t5_output_scaled(hf) and 'lm_head.weight' not in names)

  @classmethod
  def of_model(cls, cfg: ModelConfig) -> 'Layout':
    # An untied BERT writes its vocabulary bias under both names, as transformers 5 saves one.
    return cls(cfg.use_bias, cfg.use_bias, decoder_bias=cfg.family == 'bert' and not cfg.tie_embeddings)


def _pad_rows(w: np.ndarray, rows: int) -> np.ndarray:
  """Zero rows up to the padded vocabulary (their logits are masked, so they are never used)."""
  if w.shape[0] == rows:
    return w
  return np.concatenate([w, np.zeros((rows - w.shape[0],) + w.shape[1:], w.dtype)])


def _rules(cfg: ModelConfig, layout: Layout) -> list[Rule]:
  if cfg.family == 'gpt2':
    return _gpt2_rules(cfg)
  if cfg.family == 'bert':
    return _bert_rules(cfg, layout)
  if cfg.family == 't5':
    return _t5_rules(cfg, layout)
  return _llama_rules(cfg, layout.attention_bias, layout.mlp_bias)


def _linear(hf_name: str, path: tuple[str, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
            layers: str = 'n_layers') -> Rule:
  """An nn.Linear weight [prod(out), prod(in)] <-> ours [*in, *out] (einsum layout)."""
  n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
  return Rule(hf_name, (path,), (n_out, n_in), _one(lambda w: w.T.reshape(*in_shape, *out_shape)),
              lambda ws: ws[0].reshape(n_in, n_out).T, layers)


def _vector(hf_name: str, path: tuple[str, ...], shape: tuple[int, ...], layers: str = 'n_layers') -> Rule:
  """A bias or norm vector [prod(shape)] <-> ours [*shape]."""
  size = int(np.prod(shape))
  return Rule(hf_name, (path,), (size,), _one(lambda b: b.reshape(shape)), lambda bs: bs[0].reshape(size), layers)


def _attention(hf_names: dict[str, str], path: tuple[str, ...], cfg: ModelConfig, bias: bool,
               layers: str = 'n_layers') -> list[Rule]:
  """q/k/v/o nn.Linear modules (``hf_names`` without .weight) <-> ours w_q_dnh ... w_o_nhd (and biases)."""
  d, n, k, h = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head
  rules = [_linear(hf_names['q'] + '.weight', path + ('w_q_dnh',), (d,), (n, h), layers),
           _linear(hf_names['k'] + '.weight', path + ('w_k_dkh',), (d,), (k, h), layers),
           _linear(hf_names['v'] + '.weight', path + ('w_v_dkh',), (d,), (k, h), layers),
           _linear(hf_names['o'] + '.weight', path + ('w_o_nhd',), (n, h), (d,), layers)]
  if bias:
    rules += [_vector(hf_names['q'] + '.bias', path + ('b_q_nh',), (n, h), layers),
              _vector(hf_names['k'] + '.bias', path + ('b_k_kh',), (k, h), layers),
              _vector(hf_names['v'] + '.bias', path + ('b_v_kh',), (k, h), layers),
              _vector(hf_names['o'] + '.bias', path + ('b_o_d',), (d,), layers)]
  return rules


def _norm(hf_name: str, path: tuple[str, ...], cfg: ModelConfig, layers: str = 'n_layers') -> list[Rule]:
  """A LayerNorm (weight, bias) or T5's RMS norm (weight only) <-> ours (scale[, bias])."""
  rules = [_vector(hf_name + '.weight', path + ('scale',), (cfg.d_model,), layers)]
  if cfg.norm == 'layer':
    rules.append(_vector(hf_name + '.bias', path + ('bias',), (cfg.d_model,), layers))
  return rules


def _vocab_rows(hf_name: str, path: tuple[str, ...], cfg: ModelConfig) -> Rule:
  """A [V, d] embedding <-> ours [V', d] (zero rows added)."""
  return Rule(hf_name, (path,), (cfg.vocab_size, cfg.d_model), _one(lambda w: _pad_rows(w, cfg.padded_vocab)),
              lambda ws: ws[0][:cfg.vocab_size])


def _vocab_columns(hf_name: str, path: tuple[str, ...], cfg: ModelConfig) -> Rule:
  """A [V, d] output matrix <-> ours head_dv [d, V'] (zero columns added)."""
  return Rule(hf_name, (path,), (cfg.vocab_size, cfg.d_model),
              _one(lambda w: _pad_rows(w, cfg.padded_vocab).T), lambda ws: ws[0].T[:cfg.vocab_size])


def _bert_rules(cfg: ModelConfig, layout: Layout) -> list[Rule]:
  d, f, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
  blk = lambda *p: ('blocks',) + p  # noqa: E731
  ident = _one(lambda x: x)
  first = lambda xs: xs[0]  # noqa: E731
  emb, pre = 'bert.embeddings.', 'bert.encoder.layer.{i}.'
  rules = [
      _vocab_rows(emb + 'word_embeddings.weight', ('embed_vd',), cfg),
      Rule(emb + 'position_embeddings.weight', (('pos_td',),), (cfg.max_seq_len, d), ident, first),
      *_norm(emb + 'LayerNorm', ('embed_norm',), cfg),
      *_attention({'q': pre + 'attention.self.query', 'k': pre + 'attention.self.key',
                   'v': pre + 'attention.self.value', 'o': pre + 'attention.output.dense'},
                  blk('attn'), cfg, cfg.use_bias),
      *_norm(pre + 'attention.output.LayerNorm', blk('attn_norm'), cfg),
      _linear(pre + 'intermediate.dense.weight', blk('mlp', 'w_in_df'), (d,), (f,)),
      _linear(pre + 'output.dense.weight', blk('mlp', 'w_out_fd'), (f,), (d,)),
      *_norm(pre + 'output.LayerNorm', blk('mlp_norm'), cfg),
      _linear('cls.predictions.transform.dense.weight', ('w_mlm_dd',), (d,), (d,)),
      _vector('cls.predictions.transform.dense.bias', ('b_mlm_d',), (d,)),
      *_norm('cls.predictions.transform.LayerNorm', ('mlm_norm',), cfg),
  ]
  if cfg.type_vocab_size:
    rules.append(Rule(emb + 'token_type_embeddings.weight', (('type_td',),), (cfg.type_vocab_size, d), ident,
                      first))
  else:  # BERT always adds a type embedding: one zero row is exact (export only; imports have types)
    rules.append(Rule(emb + 'token_type_embeddings.weight', (), (1, d), _zero_type_row,
                      lambda _: np.zeros((1, d), np.float32)))
  if cfg.use_bias:
    rules += [_vector(pre + 'intermediate.dense.bias', blk('mlp', 'b_in_f'), (f,)),
              _vector(pre + 'output.dense.bias', blk('mlp', 'b_out_d'), (d,))]
  vocab_bias = Rule('cls.predictions.bias', (('b_vocab_v',),), (V,),
                    _one(lambda b: _pad_rows(b, cfg.padded_vocab)), lambda bs: bs[0][:V])
  if layout.decoder_bias:
    # decoder.bias is the one transformers 5 adds to the logits; cls.predictions.bias is then
    # read from nothing (to_ours gives no value) but still written, equal, on export.
    rules += [Rule('cls.predictions.decoder.bias', vocab_bias.ours, (V,), vocab_bias.to_ours, vocab_bias.to_hf),
              dataclasses.replace(vocab_bias, to_ours=lambda b: [])]
  else:
    rules.append(vocab_bias)
  if not cfg.tie_embeddings:
    rules.append(_vocab_columns('cls.predictions.decoder.weight', ('head_dv',), cfg))
  return rules


def _zero_type_row(w: np.ndarray) -> list[np.ndarray]:
  if np.any(w != 0):  # unreachable from a config.json (type_vocab_size >= 1 imports as type_td)
    raise HFError('bert.embeddings.token_type_embeddings is not zero, but the model has no token types')
  return []


def _t5_rules(cfg: ModelConfig, layout: Layout) -> list[Rule]:
  d, f, n = cfg.d_model, cfg.d_ff, cfg.n_heads
  rules = [_vocab_rows('shared.weight', ('embed_vd',), cfg)]
  if layout.head_is_shared:  # unscaled output tied to the embeddings: one tensor, our two parameters
    rules = [Rule('shared.weight', (('embed_vd',), ('head_dv',)), (cfg.vocab_size, d),
                  lambda w: [_pad_rows(w, cfg.padded_vocab), _pad_rows(w, cfg.padded_vocab).T],
                  lambda ws: ws[0][:cfg.vocab_size])]
  elif not cfg.tie_embeddings:
    rules.append(_vocab_columns('lm_head.weight', ('head_dv',), cfg))

  def mlp(hf: str, path: tuple[str, ...], layers: str) -> list[Rule]:
    if cfg.gated:  # wi_0 goes through the activation (our gate), wi_1 is multiplied in
      out = [_linear(hf + 'wi_0.weight', path + ('w_gate_df',), (d,), (f,), layers),
             _linear(hf + 'wi_1.weight', path + ('w_in_df',), (d,), (f,), layers)]
    else:
      out = [_linear(hf + 'wi.weight', path + ('w_in_df',), (d,), (f,), layers)]
    return out + [_linear(hf + 'wo.weight', path + ('w_out_fd',), (f,), (d,), layers)]

  def attention(hf: str, path: tuple[str, ...], layers: str) -> list[Rule]:
    return _attention({p: hf + p for p in 'qkvo'}, path, cfg, False, layers)

  for side, layers in (('encoder', 'n_layers'), ('decoder', 'n_decoder_layers')):
    pre, ours = f'{side}.block.{{i}}.layer.', side[:3] + '_blocks'
    rel = f'{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight'
    rules.append(Rule(rel, ((side[:3] + '_rel', 'b_rel_rn'),), (cfg.rel_buckets, n), _one(lambda w: w),
                      lambda ws: ws[0]))
    rules += _norm(pre + '0.layer_norm', (ours, 'attn_norm'), cfg, layers)
    rules += attention(pre + '0.SelfAttention.', (ours, 'attn'), layers)
    if side == 'decoder':
      rules += _norm(pre + '1.layer_norm', (ours, 'cross_norm'), cfg, layers)
      rules += attention(pre + '1.EncDecAttention.', (ours, 'cross'), layers)
    last = '2' if side == 'decoder' else '1'
    rules += _norm(pre + last + '.layer_norm', (ours, 'mlp_norm'), cfg, layers)
    rules += mlp(pre + last + '.DenseReluDense.', (ours, 'mlp'), layers)
    rules += _norm(side + '.final_layer_norm', (side[:3] + '_norm',), cfg)
  return rules


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
    self._where: dict[str, str] = {}  # tensor name -> file
    self._stored: dict[str, str] = {}  # tensor name -> its name in the file
    files = sorted(glob.glob(os.path.join(src, '*.safetensors')))
    if files:
      from safetensors import safe_open
      for path in files:
        handle = safe_open(path, framework='numpy')
        self._handles[path] = handle
        for name in handle.keys():
          self._add(name, path)
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
        self._add(name, path)
    self.kind = 'pytorch'

  def _add(self, stored: str, path: str) -> None:
    # The original BERT files name LayerNorm parameters gamma/beta (TensorFlow's names);
    # transformers renames them on load, and so do we.
    name = stored
    for old, new in (('LayerNorm.gamma', 'LayerNorm.weight'), ('LayerNorm.beta', 'LayerNorm.bias')):
      if name.endswith(old):
        name = name[:-len(old)] + new
    self._where[name] = path
    self._stored[name] = stored

  def names(self) -> list[str]:
    return list(self._where)

  def get(self, name: str) -> np.ndarray:
    """The tensor as float32 numpy (bfloat16 and float16 widen exactly)."""
    stored = self._stored[name]
    if self.kind == 'safetensors':
      x = self._handles[self._where[name]].get_tensor(stored)
    else:
      x = self._tensors[stored].float().numpy()
    return np.asarray(x).astype(np.float32)

  def shape(self, name: str) -> tuple[int, ...]:
    stored = self._stored[name]
    if self.kind == 'safetensors':
      return tuple(self._handles[self._where[name]].get_slice(stored).get_shape())
    return tuple(self._tensors[stored].shape)

  def dtypes(self) -> list[str]:
    if self.kind == 'safetensors':
      return sorted({self._handles[self._where[n]].get_slice(self._stored[n]).get_dtype() for n in self._where})
    return sorted({str(t.dtype) for t in self._tensors.values()})


def _prefix(names: set[str], family: str) -> str:
  """'transformer.' / 'model.' or '' (GPT-2's original files have no prefix); BERT and T5 name
  every tensor in full (their rules carry 'bert.', 'cls.', 'encoder.' ...)."""
  if family in ('bert', 't5'):
    return ''
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
      for i in range(rule.count(cfg)):
        out[head + rule.hf.format(i=i)] = (rule, i)
    else:
      out[head + rule.hf] = (rule, None)
  return out


def _tied_copies(cfg: ModelConfig, layout: Layout) -> dict[str, str]:
  """Tensors some BERT and T5 files store beside the one they are tied to: copy -> original.

  They are read only to check that they are equal (transformers unties unequal ones, which
  our config could not express).
  """
  if cfg.family == 'bert' and cfg.tie_embeddings:
    return {'cls.predictions.decoder.weight': 'bert.embeddings.word_embeddings.weight'}
  if cfg.family == 't5':
    copies = {f'{side}.embed_tokens.weight': 'shared.weight' for side in ('encoder', 'decoder')}
    if cfg.tie_embeddings or layout.head_is_shared:
      copies['lm_head.weight'] = 'shared.weight'
    return copies
  return {}


def _ignorable(name: str, cfg: ModelConfig) -> bool:
  """Buffers, the duplicate of a tied output layer and parts the model does not use: present in
  some files, never parameters."""
  return (name.endswith(_BUFFER_SUFFIXES) or name.startswith(_UNUSED_PREFIXES)
          or (cfg.tie_embeddings and name == 'lm_head.weight'))


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
  copies = _tied_copies(cfg, layout)
  missing = sorted(set(expected) - names)
  extra = sorted(n for n in names - set(expected) if not _ignorable(n, cfg) and n not in copies)
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'missing {len(missing)} tensors: {_listing(missing)}')
    if extra:
      parts.append(f'{len(extra)} unexpected tensors: {_listing(extra)}')
    layers = f'{cfg.n_layers} layers' if cfg.arch != 'encoder_decoder' else \
        f'{cfg.n_layers} encoder and {cfg.n_decoder_layers} decoder layers'
    raise HFError(f'{src}: the weights do not match config.json ({cfg.family}, {layers}, '
                  f'tie_word_embeddings={cfg.tie_embeddings}): ' + '; '.join(parts))
  for name, (rule, _) in expected.items():
    if files.shape(name) != rule.hf_shape:
      raise HFError(f'{src}: tensor {name} has shape {list(files.shape(name))}, but config.json implies '
                    f'{list(rule.hf_shape)}')
  for copy, original in copies.items():
    if copy in names and not np.array_equal(files.get(copy), files.get(original)):
      raise HFError(f'{src}: {copy} differs from {original}, though config.json ties them (tie_word_embeddings'
                    + (', scale_decoder_outputs' if cfg.family == 't5' else '') + '); transformers would keep '
                    'them apart, which our model of this config cannot: fix config.json or the weights')
  params: dict[str, Any] = {}
  for rule in _rules(cfg, layout):
    head = '' if rule.hf.startswith('lm_head') else prefix
    if rule.per_layer:
      per_layer = [rule.to_ours(files.get(head + rule.hf.format(i=i))) for i in range(rule.count(cfg))]
      values = [np.stack([layer[j] for layer in per_layer]) for j in range(len(per_layer[0]))]
    else:
      values = rule.to_ours(files.get(head + rule.hf))
    for path, value in zip(rule.ours, values):  # a rule that only checks a tensor gives no values
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


def _content(value: Any) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
  value = value.get('content') if isinstance(value, dict) else value
  return value if isinstance(value, str) and value else None


# BERT's special tokens when its files do not name them (transformers' BertTokenizer defaults;
# bert-base-uncased's tokenizer_config.json names none).
_BERT_SPECIALS = {'cls_token': '[CLS]', 'sep_token': '[SEP]', 'mask_token': '[MASK]', 'pad_token': '[PAD]'}


def _special_token_additions(src: str, family: str) -> dict[str, str]:
  """Special tokens the copy of ``src``'s tokenizer files must name in its tokenizer_config.json.

  HFTokenizer takes BOS/EOS/pad from tokenizer_config.json, else from config.json's
  *_token_id; the copy an import keeps has no config.json (a tokenizer_config.json may
  leave those tokens to it), so the tokens are written into the copy's config. BERT names
  no BOS/EOS at all: [CLS] begins and [SEP] ends every sequence its post-processor builds,
  the roles our documents' BOS and EOS play, so they are named as those; and its [MASK]
  and [PAD] are named where the files leave them to the tokenizer class's defaults.
  """
  from tokenizers import Tokenizer
  from llm.tokenizer import HFTokenizer, TokenizerError, read_json_object
  named = {k: _content(v) for k, v in {**read_json_object(os.path.join(src, 'special_tokens_map.json')),
                                       **read_json_object(os.path.join(src, 'tokenizer_config.json'))}.items()}
  try:
    vocab = Tokenizer.from_file(os.path.join(src, 'tokenizer.json'))
  except Exception as e:  # the Rust error says what is wrong with the file
    raise HFError(f'{src}/tokenizer.json is not a tokenizers file: {e}') from None
  out = {}
  try:
    tok = HFTokenizer(src)
    fallback_pad = tok.eos_id if tok.eos_id is not None else tok.bos_id  # HFTokenizer's pad without one named
    for role, i in (('bos', tok.bos_id), ('eos', tok.eos_id), ('pad', tok.pad_id)):
      if i is not None and not named.get(f'{role}_token') and (role != 'pad' or i != fallback_pad):
        out[f'{role}_token'] = vocab.id_to_token(i)
  except TokenizerError:
    pass  # no BOS or EOS anywhere: BERT's roles below, else load_tokenizer reports it
  if family == 'bert':
    tokens = {k: named.get(k) or default for k, default in _BERT_SPECIALS.items()}
    present = {k: v for k, v in tokens.items() if vocab.token_to_id(v) is not None}
    if not (named.get('bos_token') or named.get('eos_token') or out) and {'cls_token', 'sep_token'} <= set(present):
      out.update(bos_token=present['cls_token'], eos_token=present['sep_token'])
    out.update({k: present[k] for k in ('mask_token', 'pad_token') if k in present and not named.get(k)})
  return out


def _scratch_dir() -> str:
  """A directory for the process's lifetime (an adjusted copy of a tokenizer read through hf:<dir>)."""
  import atexit
  path = tempfile.mkdtemp(prefix='llm-hf-tokenizer-')
  atexit.register(shutil.rmtree, path, True)
  return path


def load_tokenizer(src: str, vocab_size: int, into: str | None = None, family: str = ''):
  """The directory's tokenizer, checked against the model's vocabulary.

  ``tokenizer.json`` (special ids from its files) as an HFTokenizer, else T5's
  ``spiece.model`` as a SentencePieceTokenizer. ``into``: copy the tokenizer files there
  first and read the copy (an import's own tokenizer/). Special tokens the files leave to
  config.json or to the tokenizer class (``_special_token_additions``: BERT's [CLS]/[SEP]
  as BOS/EOS) are written into the copy's tokenizer_config.json; read through hf:<dir>,
  such a tokenizer is read from a copy made for the process.
  """
  from llm.tokenizer import HFTokenizer, SentencePieceTokenizer, TokenizerError, read_json_object
  has_json = os.path.isfile(os.path.join(src, 'tokenizer.json'))
  if not has_json and not os.path.isfile(os.path.join(src, 'spiece.model')):
    raise HFError(f'{src} has no tokenizer.json (nor a T5 spiece.model); save the tokenizer beside the model '
                  f'(AutoTokenizer.from_pretrained(...).save_pretrained(dir)) before importing')
  additions = _special_token_additions(src, family) if has_json else {}
  folder = src
  if into is not None or additions:
    folder = into if into is not None else _scratch_dir()
    os.makedirs(folder, exist_ok=True)
    for name in TOKENIZER_FILES:
      if os.path.exists(os.path.join(src, name)):
        shutil.copy2(os.path.join(src, name), folder)
    if additions:
      config = {**read_json_object(os.path.join(src, 'tokenizer_config.json')), **additions}
      with open(os.path.join(folder, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
  try:
    # T5's spiece.model: the <extra_id_N> sentinels T5Tokenizer appends (tokenizer_config's extra_ids, default 100).
    extra = int(read_json_object(os.path.join(folder, 'tokenizer_config.json')).get('extra_ids', 100)) \
        if family == 't5' else 0
    tok = HFTokenizer(folder) if has_json else SentencePieceTokenizer(os.path.join(folder, 'spiece.model'), extra)
  except TokenizerError as e:
    raise HFError(str(e)) from None
  if tok.vocab_size > vocab_size:
    raise HFError(f'{src}: the tokenizer has {tok.vocab_size} tokens but the model only {vocab_size} '
                  f'embedding rows (config.json vocab_size): they do not belong together')
  return tok


def _convert(src: str, overrides: dict[str, Any] | None = None, tokenizer_into: str | None = None):
  """(ModelConfig, tokenizer, parameters as numpy, weight files) of a Hugging Face directory."""
  if not os.path.isdir(src):
    raise HFError(f'{src} is not a directory; hf:<dir> names a local Hugging Face model directory')
  hf = read_hf_config(src)
  cfg = model_config_from_hf(hf, src, **(overrides or {}))
  tok = load_tokenizer(src, cfg.vocab_size, tokenizer_into, cfg.family)
  files = WeightFiles(src)
  layout = Layout.of_hf(hf, files.names())
  params = _check_against_model(read_params(src, cfg, layout, files), cfg, layout, src)
  return cfg, tok, params, files


def load(src: str, mesh=None, overrides: dict[str, Any] | None = None):
  """(ModelConfig, tokenizer, parameters on ``mesh``) of a Hugging Face directory, converted in memory."""
  import jax
  from llm.checkpoint import abstract_params
  src = os.path.abspath(os.path.expanduser(src))
  cfg, tok, params, _ = _convert(src, overrides)
  # One leaf at a time onto its sharding: host memory holds one converted tensor beyond the files.
  targets = abstract_params(cfg, mesh)
  return cfg, tok, jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), params, targets)


def import_checkpoint(src: str, workdir: str) -> dict[str, Any]:
  """Convert a Hugging Face directory into a checkpoint in ``workdir`` (step 0, parameters only).

  The workdir gets checkpoints/0 (what ``load_params`` and ``init_from`` read), tokenizer/
  (a copy of the tokenizer files, which the checkpoint refers to) and import.json (source,
  file hashes, dtypes). Returns the import record.
  """
  from llm import checkpoint
  from llm.tokenizer import HFTokenizer, file_sha256
  src = os.path.abspath(os.path.expanduser(src))
  with checkpoint.staged_directory(workdir, '--workdir', HFError) as tmp:
    tok_dir = os.path.join(tmp, 'tokenizer')
    cfg, tok, params, files = _convert(src, tokenizer_into=tok_dir)
    if isinstance(tok, HFTokenizer):
      spec = {'kind': 'hf', 'path': 'tokenizer/tokenizer.json',
              'sha256': file_sha256(os.path.join(tok_dir, 'tokenizer.json'))}
    else:  # T5's spiece.model
      spec = {'kind': 'sentencepiece', 'spm_model': 'tokenizer/spiece.model',
              'sha256': file_sha256(os.path.join(tok_dir, 'spiece.model')),
              **({'extra_ids': tok.extra_ids} if tok.extra_ids else {})}
    weight_files = sorted({os.path.basename(p) for p in files._where.values()})
    record = {'source': src, 'family': cfg.family, 'weights': {f: file_sha256(os.path.join(src, f))
                                                                for f in weight_files},
              'source_dtypes': files.dtypes(), 'parameters': cfg.param_count(),
              'tokenizer': {'vocab_size': tok.vocab_size, 'bos_id': tok.bos_id, 'eos_id': tok.eos_id,
                            'pad_id': tok.pad_id, 'add_bos': tok.add_bos, 'mask_id': getattr(tok, 'mask_id', None),
                            'sentinels': len(getattr(tok, 'sentinel_ids', ()))}}
    checkpoint.save_params(tmp, cfg, spec, params, extra_meta={'imported_from': src})
    with open(os.path.join(tmp, 'import.json'), 'w') as f:
      json.dump(record, f, indent=2)
  return record


# ---------------------------------------------------------------------------------------------
# Exporting
# ---------------------------------------------------------------------------------------------


def to_hf_tensors(params: dict, cfg: ModelConfig, family: str) -> dict[str, np.ndarray]:
  """Hugging Face tensor name -> float32 array (the transpose of read_params)."""
  _check_expressible(cfg, family)
  if family in ('gpt2', 'bert') and not cfg.use_bias:
    params = _with_zero_biases(params, cfg)  # GPT-2 and BERT always have biases: zeros are exact
    cfg = dataclasses.replace(cfg, use_bias=True)
  prefix = {'gpt2': 'transformer.', 'llama': 'model.'}.get(family, '')
  out = {}
  target = dataclasses.replace(cfg, family=family)
  for rule in _rules(target, Layout.of_model(target)):
    head = '' if rule.hf.startswith('lm_head') else prefix
    values = [np.asarray(_get(params, p), np.float32) for p in rule.ours]
    if rule.per_layer:
      for i in range(rule.count(cfg)):
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


BYTE_MASK = '<|mask|>'  # the byte tokenizer's mask token (id 259) when it has one


def byte_tokenizer_json(max_length: int, mask: bool = False, sentinels: int = 0) -> tuple[str, dict[str, Any]]:
  """(tokenizer.json, tokenizer_config.json) of a Hugging Face tokenizer equal to ByteTokenizer.

  Each UTF-8 byte is one token (a byte-level BPE with no merges) at id byte + 3; the three
  special tokens keep ids 0-2, and the post-processor starts every encoding with BOS, as
  our training documents start. ``split_special_tokens`` makes text that spells a special
  token ("<|bos|>") encode as its bytes, as ours does. ``mask`` and ``sentinels`` add the
  extras of ``ByteTokenizer(mask, sentinels)`` at its ids: <|mask|> at 259 (the config's
  mask_token), <extra_id_i> at vocab_size - 1 - i as in T5.
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
  # Added tokens take the next free ids in order: the mask first, then the sentinels from the
  # last to <extra_id_0>, which so lands on the top id.
  extras = ([BYTE_MASK] if mask else []) + [f'<extra_id_{i}>' for i in reversed(range(sentinels))]
  tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extras])
  bos = BYTE_SPECIALS[1]
  tk.post_processor = processors.TemplateProcessing(single=f'{bos} $A', pair=f'{bos} $A {bos} $B:1',
                                                    special_tokens=[(bos, 1)])
  config = dict(tokenizer_class='PreTrainedTokenizerFast', pad_token=BYTE_SPECIALS[0], bos_token=bos,
                eos_token=BYTE_SPECIALS[2], model_max_length=max_length, clean_up_tokenization_spaces=False,
                add_bos_token=True, split_special_tokens=True)
  if mask:
    config['mask_token'] = BYTE_MASK
  return tk.to_str(), config


def export(workdir: str, out: str, step: int | None = None, family: str | None = None,
           dtype: str = 'float32') -> dict[str, Any]:
  """Write ``out``: config.json, model.safetensors, tokenizer files, for transformers to load.

  ``family`` defaults to the model's own; one whose architecture differs (an encoder built with
  family=llama) is refused, naming the family that fits it.
  """
  from safetensors.numpy import save_file
  import jax
  from llm import checkpoint
  from llm.tokenizer import ByteTokenizer, HFTokenizer, SentencePieceTokenizer
  cfg, tok, params, step = checkpoint.load_params(workdir, step)
  if cfg.lora_rank:  # a LoRA fine-tuning run exports as its merged model (llm.lora export writes the adapter)
    from llm import lora
    cfg, params = lora.merge(cfg, params)
  family = family or cfg.family
  if family not in FAMILY_ARCH:
    raise HFError(f'--family must be one of {", ".join(FAMILY_ARCH)}, got {family!r}')
  config = hf_config_from_model(cfg, family, tok)
  # A SentencePiece model exports only as the files of the Hugging Face tokenizer it was imported
  # with (T5's spiece.model beside its tokenizer_config.json); ours would need converting.
  spm_files = isinstance(tok, SentencePieceTokenizer) and os.path.isfile(
      os.path.join(os.path.dirname(tok.path), 'tokenizer_config.json'))
  if not (isinstance(tok, (ByteTokenizer, HFTokenizer)) or spm_files):
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
    if family != 'bert':  # BERT does not generate
      keys = ('bos_token_id', 'eos_token_id', 'pad_token_id', 'decoder_start_token_id')
      with open(os.path.join(tmp, 'generation_config.json'), 'w') as f:
        json.dump({k: config[k] for k in keys if k in config}, f, indent=2)
    if isinstance(tok, ByteTokenizer):
      tk_json, tk_config = byte_tokenizer_json(cfg.max_seq_len, tok.mask_id is not None, len(tok.sentinel_ids))
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
  imp.add_argument('--src', required=True, help='directory with config.json, *.safetensors and tokenizer.json '
                   '(or T5\'s spiece.model)')
  imp.add_argument('--workdir', required=True, help='new workdir for the checkpoint')
  exp = sub.add_parser('export', help='checkpoint workdir -> Hugging Face directory')
  exp.add_argument('--workdir', required=True, help='a training run (or an import) to export')
  exp.add_argument('--out', required=True, help='new directory for the export')
  exp.add_argument('--step', type=int, default=None, help='checkpoint step (default: newest)')
  exp.add_argument('--family', default=None, choices=list(FAMILY_ARCH), help='target architecture '
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
