"""FLOP counting and per-device peak throughput, for tokens/s -> MFU.

FLOPs are counted as MaxText does: every matmul 2*m*n*k, times 3 for forward plus
backward; causal attention counted at half the square; the embedding lookup excluded
(the output projection to the vocabulary is a matmul and is counted). Imports only jax.
"""

from __future__ import annotations

import os

import jax

from llm.model import ModelConfig

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


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Training FLOPs (forward + backward) per token at this sequence length."""
  d, h, n, k, f = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.n_kv_heads, cfg.d_ff
  qkv = 2 * d * h * (n + 2 * k)
  out = 2 * n * h * d
  mlp = 2 * d * f * (3 if cfg.mlp == 'swiglu' else 2)
  attn = 2 * 2 * seq_len * n * h * 0.5  # QK^T and PV, causal half
  logits = 2 * d * cfg.padded_vocab
  return 3.0 * (cfg.n_layers * (qkv + out + mlp + attn) + logits)


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak bf16 FLOP/s of ``device`` (default: the first), None when unknown (e.g. CPU)."""
  kind = (device or jax.devices()[0]).device_kind
  for name, peak in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return peak
  return None


def mfu(tokens_per_sec: float, cfg: ModelConfig, seq_len: int, n_devices: int,
        device: jax.Device | None = None) -> float | None:
  """Model FLOP utilisation in [0, 1], None when the device peak is unknown."""
  peak = peak_flops(device)
  if peak is None:
    return None
  return tokens_per_sec * train_flops_per_token(cfg, seq_len) / (peak * n_devices)


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
