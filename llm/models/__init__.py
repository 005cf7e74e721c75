"""The three architectures over shared building blocks, and the one way to build any of them.

  config.py           ModelConfig (``arch``, ``family``), SIZES, config_for_size
  layers.py           norms, positions, attention, MLPs, projections with LoRA, KV cache, block stacks
  decoder.py          decoder-only (Llama, GPT-2): next-token prediction
  encoder.py          encoder (BERT): masked language modelling, classification on the first token
  encoder_decoder.py  encoder-decoder (T5): span corruption, text to text, cached decoding

Every model exposes ``hidden(batch, dropout_key)`` (final hidden states aligned with
``batch['targets']``) and ``head(hidden)`` (logits), which is all the training and
scoring steps need (``llm.trainer.token_logprobs``).
"""

from __future__ import annotations

import jax
from flax import nnx

from llm.models.config import ARCH_OF_FAMILY, LORA_TARGETS, SIZES, ModelConfig, config_for_size
from llm.models.decoder import Transformer, TrunkOutput
from llm.models.encoder import Encoder
from llm.models.encoder_decoder import EncoderDecoder
from llm.models.layers import KVCache, attention_mask, mask_padded_vocab, rope

ARCHITECTURES: dict[str, type[nnx.Module]] = {
    'decoder': Transformer, 'encoder': Encoder, 'encoder_decoder': EncoderDecoder,
}


def build(cfg: ModelConfig, key: jax.Array) -> nnx.Module:
  """The model ``cfg.arch`` names, initialised from ``key``."""
  return ARCHITECTURES[cfg.arch](cfg, key)


__all__ = ['ARCHITECTURES', 'ARCH_OF_FAMILY', 'Encoder', 'EncoderDecoder', 'KVCache', 'LORA_TARGETS', 'ModelConfig',
           'SIZES', 'Transformer', 'TrunkOutput', 'attention_mask', 'build', 'config_for_size',
           'mask_padded_vocab', 'rope']
