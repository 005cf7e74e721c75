"""What every interpretability tool shares: the error type, loading a checkpoint, input checks.

The tools cover the decoder architecture (``llm/models/decoder.py``: the llama and gpt2
families). Encoders (BERT) and encoder-decoders (T5) are not covered yet: their trunks
collect residuals and attention weights, but not per-head outputs, patches or input
embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm.models import ModelConfig, Transformer, build

Params = dict  # a pure dict of arrays, as ``llm.checkpoint.load_params`` returns
Tokens = jax.Array | np.ndarray | Sequence[int]  # one prompt's token ids [t]


class InterpError(ValueError):
  """A request the model cannot answer: an index out of range, mismatched prompts, a non-decoder model."""


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
  """A decoder checkpoint (``train.py``'s workdir or ``hf:<dir>``) for interpretability.

  Computes in float32 with plain XLA attention (the attention weights need it), whatever
  the run trained with; raises InterpError for encoders and encoder-decoders.
  """
  from llm.checkpoint import load_params  # local import: orbax loads only when a checkpoint is read
  cfg, tokenizer, params, step = load_params(workdir, step, mesh,
                                             overrides=dict(dtype='float32', attention='xla', remat='none'))
  check_decoder(cfg)
  return Subject(cfg, tokenizer, graphdef_for(cfg), params, step)


def check_decoder(cfg: ModelConfig) -> None:
  if cfg.arch != 'decoder':
    raise InterpError(f'llm.interp covers decoder models (llama, gpt2 families) only; this model is a '
                      f'{cfg.arch} ({cfg.family}), not covered yet')


def decoder(graphdef: nnx.GraphDef, params: Params) -> Transformer:
  """The model (merging costs no compute), checked to be a decoder."""
  model = nnx.merge(graphdef, params)
  if not isinstance(model, Transformer):
    raise InterpError(f'llm.interp covers decoder models (llama, gpt2 families) only; got {type(model).__name__}, '
                      'not covered yet')
  return model


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


def token_labels(tokens_text: Sequence[str] | None, t: int) -> list[str]:
  """Axis labels for t positions: the given texts (checked to be t of them) or the position numbers."""
  if tokens_text is None:
    return [str(i) for i in range(t)]
  if len(tokens_text) != t:
    raise InterpError(f'tokens_text has {len(tokens_text)} entries for {t} positions')
  return [repr(s)[1:-1] for s in tokens_text]  # newlines and tabs stay visible
