"""Random parameters for any ModelConfig, drawn with numpy (no XLA compile of the initialisers)."""

import jax
import numpy as np
from flax import nnx

from llm.models import ModelConfig, build


def random_params(cfg: ModelConfig, seed: int = 0):
  abstract = nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[1])
  rng = np.random.default_rng(seed)
  def draw(path, x):
    noise = rng.normal(0.0, 0.1, x.shape).astype(np.float32)
    if path[-1].key == 'embed_vd':  # padding rows are zero, as the model initialises them
      noise[cfg.vocab_size:] = 0
    if path[-1].key == 'head_dv':
      noise[:, cfg.vocab_size:] = 0
    return noise + 1.0 if path[-1].key == 'scale' else noise
  return jax.tree_util.tree_map_with_path(draw, abstract)


def random_params_zero_padding(cfg: ModelConfig, seed: int = 0):
  """random_params with every vocabulary-padding entry zero, the vocabulary bias's too (b_vocab_v,
  an encoder's), as training keeps them: exports drop them, so round trips compare them as zeros."""
  params = random_params(cfg, seed)
  def pad_zero(path, x):
    if path[-1].key == 'b_vocab_v':
      x = np.array(x)
      x[cfg.vocab_size:] = 0
    return x
  return jax.tree_util.tree_map_with_path(pad_zero, params)
