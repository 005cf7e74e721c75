"""What every interpretability tool shares: the error type, loading a checkpoint, input checks,
and which tool covers which architecture.

Coverage (``ModelConfig.arch``; the tools read the models' own per-layer outputs, the
trunks' collect options, and never copy a forward pass):

  tool                      decoder (llama, gpt2)    encoder (bert)               encoder_decoder (t5)
  attention_maps            causal self-attention    bidirectional self-attn.     kind='encoder', 'decoder' or 'cross'
  logit_lens                next token per layer     masked-LM head per layer     decoder layers, next token
  integrated_gradients      yes                      yes (word embeddings)        no
  direct_logit_attribution  yes                      no                           no
  activation_patching,      yes                      no                           no
  patched_logits

A T5 prompt is two sequences: ``tokens`` the encoder's input, ``dec_tokens`` the
decoder's (starting with its start token); a BERT prompt may name ``types`` (sentence A
= 0, B = 1). What is refused, and why: direct logit attribution needs every head's and
MLP's output, which only the decoder's trunk exposes (collect='heads'/'mlp'), and BERT's
post-norm blocks renormalise the residual after every sublayer, so its final hidden
state is no sum of parts to attribute; activation patching needs the trunk's ``patch``
input, which only the decoder's trunk has; integrated gradients on T5 would need input
embeddings for ``EncoderDecoder.encode``, which it does not take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models import ModelConfig, build

Params = dict  # a pure dict of arrays, as ``llm.checkpoint.load_params`` returns
Tokens = jax.Array | np.ndarray | Sequence[int]  # one prompt's token ids [t]


class InterpError(ValueError):
  """A request the model cannot answer: an index out of range, mismatched prompts, a tool its architecture lacks."""


@dataclasses.dataclass
class Subject:
  """A checkpoint ready for the tools: ``graphdef`` and ``params`` are what every function takes."""

  cfg: ModelConfig
  tokenizer: object  # llm.tokenizer.Tokenizer
  graphdef: nnx.GraphDef
  params: Params
  step: int


def graphdef_for(cfg: ModelConfig) -> nnx.GraphDef:
  """The graph definition of ``cfg``'s model, built abstractly (no parameters are drawn)."""
  return nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]


def load(workdir: str, step: int | None = None, mesh=None) -> Subject:
  """A checkpoint (``train.py``'s workdir or ``hf:<dir>``) of any architecture, for interpretability.

  Computes in float32 with plain XLA attention (the attention weights need it), whatever
  the run trained with. Which tools cover its architecture: see the module docstring.
  """
  from llm.checkpoint import load_params  # local import: orbax loads only when a checkpoint is read
  cfg, tokenizer, params, step = load_params(workdir, step, mesh,
                                             overrides=dict(dtype='float32', attention='xla', remat='none'))
  return Subject(cfg, tokenizer, graphdef_for(cfg), params, step)


# The tools each architecture supports, and why the others are refused.
COVERAGE = {
    'decoder': ('attention_maps', 'logit_lens', 'integrated_gradients', 'direct_logit_attribution',
                'activation_patching', 'patched_logits'),
    'encoder': ('attention_maps', 'logit_lens', 'integrated_gradients'),
    'encoder_decoder': ('attention_maps', 'logit_lens'),
}
_WHY = {
    'direct_logit_attribution': {
        'encoder': "it needs every head's and MLP's output, which only the decoder's trunk exposes (collect='heads', "
                   "'mlp'), and BERT's post-norm blocks renormalise the residual after every sublayer, so the final "
                   'hidden state is no sum of per-head parts',
        'encoder_decoder': "it needs every head's and MLP's output, which only the decoder's trunk exposes "
                           "(collect='heads', 'mlp'); T5's decode does not",
    },
    'activation_patching': {'encoder': "it needs the trunk's patch input, which only the decoder's trunk has",
                            'encoder_decoder': "it needs the trunk's patch input, which only the decoder's trunk has"},
    'integrated_gradients': {'encoder_decoder': 'it needs input embeddings in place of token ids, which '
                                                "T5's encode does not take"},
}
_WHY['patched_logits'] = _WHY['activation_patching']


def model_for(graphdef: nnx.GraphDef, params: Params, tool: str) -> nnx.Module:
  """The model (merging costs no compute), checked to be one ``tool`` covers; else InterpError saying
  why and naming what is supported for its architecture."""
  model = nnx.merge(graphdef, params)
  cfg = getattr(model, 'cfg', None)
  arch = getattr(cfg, 'arch', None)
  if arch not in COVERAGE:
    raise InterpError(f'llm.interp takes the models of llm.models (decoder, encoder, encoder_decoder); '
                      f'got {type(model).__name__}')
  if tool not in COVERAGE[arch]:
    raise InterpError(f'{tool} covers decoder models (llama, gpt2 families) only: {_WHY[tool][arch]}. This model is '
                      f'{_a(arch)} ({cfg.family}); for it llm.interp supports {", ".join(COVERAGE[arch])}')
  return model


def _a(arch: str) -> str:
  return ('an ' if arch[0] in 'aeiou' else 'a ') + arch


def inputs(model: nnx.Module, tokens: Tokens, dec_tokens: Tokens | None = None, types: Tokens | None = None,
           need_decoder: bool = True) -> dict:
  """One prompt as the model's arrays [1, t]: 'tokens', plus 'types' (BERT's, when given) and
  'dec_tokens' (T5's; an InterpError without them unless ``need_decoder`` is False)."""
  cfg = model.cfg
  out = {'tokens': prompt(tokens, cfg)}
  if types is not None:
    if not cfg.type_vocab_size:
      raise InterpError(f'types are token types (sentence A/B) of a BERT model; this {cfg.arch} ({cfg.family}) '
                        'has none')
    types_t = np.asarray(types)
    t = out['tokens'].shape[1]
    if types_t.shape != (t,) or not np.issubdtype(types_t.dtype, np.integer) or types_t.min() < 0 \
        or types_t.max() >= cfg.type_vocab_size:
      raise InterpError(f'types must be [t={t}] integer token types in 0..{cfg.type_vocab_size - 1}; '
                        f'got shape {types_t.shape}, dtype {types_t.dtype}'
                        + (f', values {types_t.min()}..{types_t.max()}' if types_t.size else ''))
    out['types'] = jnp.asarray(types_t, jnp.int32)[None]
  if cfg.arch == 'encoder_decoder':
    if dec_tokens is None and not need_decoder:
      return out
    if dec_tokens is None:
      raise InterpError('a T5 (encoder_decoder) model reads two sequences: tokens, the encoder\'s input, and '
                        'dec_tokens, the decoder\'s input (its start token, then the target so far); pass dec_tokens')
    out['dec_tokens'] = prompt(dec_tokens, cfg, 'dec_tokens')
  elif dec_tokens is not None:
    raise InterpError(f'dec_tokens is the decoder input of an encoder-decoder (t5); this model is {_a(cfg.arch)} '
                      f'({cfg.family}) and reads tokens only')
  return out


def prompt(tokens: Tokens, cfg: ModelConfig, name: str = 'tokens') -> jax.Array:
  """One prompt's ids [t] -> int32 [1, t], checked against the vocabulary and the longest sequence."""
  ids = np.asarray(tokens)
  if ids.ndim != 1 or ids.size == 0:
    raise InterpError(f'{name} must be one non-empty prompt of token ids, shape [t]; got shape {ids.shape}')
  if not np.issubdtype(ids.dtype, np.integer):
    raise InterpError(f'{name} must be integer token ids, got dtype {ids.dtype}')
  if ids.min() < 0 or ids.max() >= cfg.vocab_size:
    raise InterpError(f'{name} holds ids outside the vocabulary [0, {cfg.vocab_size}): '
                      f'min {ids.min()}, max {ids.max()}')
  if ids.size > cfg.max_seq_len:
    raise InterpError(f'{name} has {ids.size} tokens; the model takes at most max_seq_len={cfg.max_seq_len}')
  return jnp.asarray(ids, jnp.int32)[None]


def index(value: int, size: int, what: str) -> int:
  """``value`` as a non-negative index into ``size`` items (negative counts from the end), or InterpError."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
    raise InterpError(f'{what} must be an int, got {value!r}')
  if not -size <= value < size:
    raise InterpError(f'{what} {value} is out of range: valid are 0..{size - 1} (or -{size}..-1 from the end)')
  return int(value) % size


def token_id(value: int, cfg: ModelConfig, what: str) -> int:
  """A vocabulary id, or InterpError naming the valid range."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < cfg.vocab_size:
    raise InterpError(f'{what} {value!r} is not a token id: valid are 0..{cfg.vocab_size - 1}')
  return int(value)


def token_labels(tokens_text: Sequence[str] | None, t: int, name: str = 'tokens_text') -> list[str]:
  """Axis labels for t positions: the given texts (checked to be t of them) or the position numbers."""
  if tokens_text is None:
    return [str(i) for i in range(t)]
  if len(tokens_text) != t:
    raise InterpError(f'{name} has {len(tokens_text)} entries for {t} positions')
  return [repr(s)[1:-1] for s in tokens_text]  # newlines and tabs stay visible
