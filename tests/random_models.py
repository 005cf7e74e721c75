"""Random parameters for any ModelConfig, drawn with numpy (no XLA compile of the initialisers)."""

import jax
import numpy as np
from flax import nnx

from llm.model import ModelConfig, Transformer


def random_params(cfg: ModelConfig, seed: int = 0):
  abstract = nnx.to_pure_dict(nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(0))))[1])
  rng = np.random.default_rng(seed)
  def draw(path, x):
    noise = rng.normal(0.0, 0.1, x.shape).astype(np.float32)
    if path[-1].key == 'embed_vd':  # padding rows are zero, as the model initialises them
      noise[cfg.vocab_size:] = 0
    if path[-1].key == 'head_dv':
      noise[:, cfg.vocab_size:] = 0
    return noise + 1.0 if path[-1].key == 'scale' else noise
  return jax.tree_util.tree_map_with_path(draw, abstract)
