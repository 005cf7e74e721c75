"""FLOP counting and per-device peak throughput, for tokens/s -> MFU.

FLOPs are counted as MaxText does: every matmul 2*m*n*k, times 3 for forward plus
backward; causal attention counted at half the square, bidirectional attention (an
encoder's, a cross-attention's) in full; the embedding lookup excluded (the output
projection to the vocabulary is a matmul and is counted). An encoder-decoder counts its
encoder at the input length and its decoder at the target length. Imports only jax.
"""

from __future__ import annotations

import os

import jax

from llm.models import ModelConfig

# Dense bf16 peak FLOP/s per device, by device_kind substring (checked in order).
PEAK_FLOPS: list[tuple[str, float]] = [
    ('H200', 989e12),
    ('H100', 989e12),
    ('TPU v4', 275e12),
    ('TPU v5 lite', 197e12),
    ('TPU v5e', 197e12),
    ('TPU v5p', 459e12),
    ('TPU v5', 459e12),
    ('TPU v6 lite', 918e12),
    ('TPU v6e', 918e12),
]


def _block_flops(cfg: ModelConfig) -> tuple[float, float]:
  """Forward FLOPs per token of one block's projections: (attention q/k/v/o, MLP)."""
  d, h, n, k, f = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff
  return 2 * d * h * (n + 2 * k) + 2 * n * h * d, 2 * d * f * (3 if cfg.gated else 2)


def train_flops_per_token(cfg: ModelConfig, seq_len: int, dec_len: int | None = None) -> float:
  """Training FLOPs (forward + backward) per input token at this sequence length.

  ``dec_len``: an encoder-decoder's target length (default ``seq_len``); its FLOPs per
  row (encoder at seq_len, decoder at dec_len) are divided by the seq_len input tokens.
  """
  d, h, n, k = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads
  proj, mlp = _block_flops(cfg)
  logits = 2 * d * cfg.padded_vocab
  def attn(keys: int, causal: bool) -> float:  # QK^T and PV per query token
    return 2 * 2 * keys * n * h * (0.5 if causal else 1.0)
  if cfg.arch == 'decoder':
    return 3.0 * (cfg.n_layers * (proj + mlp + attn(seq_len, True)) + logits)
  if cfg.arch == 'encoder':  # the masked-LM head runs on every token: a d x d transform, then the vocabulary
    return 3.0 * (cfg.n_layers * (proj + mlp + attn(seq_len, False)) + 2 * d * d + logits)
  t = dec_len or seq_len
  enc = seq_len * cfg.n_layers * (proj + mlp + attn(seq_len, False))
  cross_kv = seq_len * cfg.n_decoder_layers * 2 * d * h * 2 * k  # every layer's keys/values of the encoder output
  cross_q_o = 2 * d * h * n * 2
  dec = t * (cfg.n_decoder_layers * (proj + mlp + attn(t, True) + cross_q_o + attn(seq_len, False)) + logits)
  return 3.0 * (enc + cross_kv + dec) / seq_len


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak bf16 FLOP/s of ``device`` (default: the first), None when unknown (e.g. CPU)."""
  kind = (device or jax.devices()[0]).device_kind
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return peak
  return None


def mfu(tokens_per_sec: float, cfg: ModelConfig, seq_len: int, n_devices: int,
        device: jax.Device | None = None, dec_len: int | None = None) -> float | None:
  """Model FLOP utilisation in [0, 1] of input tokens/s, None when the device peak is unknown."""
  peak = peak_flops(device)
  if peak is None:
    return None
  return tokens_per_sec * train_flops_per_token(cfg, seq_len, dec_len) / (peak * n_devices)


def cpu_model() -> str:
  """The CPU's model name and its widest vector extension (results differ between machines)."""
  name, flags = 'unknown CPU', set()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name' and name == 'unknown CPU':
          name = value.strip()
        elif key.strip() == 'flags' and not flags:
          flags = set(value.split())
  except OSError:
    pass
  simd = 'AVX-512' if 'avx512f' in flags else 'AVX2' if 'avx2' in flags else 'no AVX2' if flags else ''
  return f'{name}, {os.cpu_count()} cores' + (f', {simd}' if simd else '')
