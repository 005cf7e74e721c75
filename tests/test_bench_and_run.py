"""Throughput benchmark, FLOP counting, sampling, and the backend-dependent config choices."""

import dataclasses
import os

import pytest

from configs import default
from llm import perf, run
from llm.models import config_for_size


def test_flops_per_token_counts_each_matmul():
  cfg = config_for_size('smoke', vocab_size=256, vocab_multiple=1, max_seq_len=32)  # d64 L2 H4 KV2 ff128
  d, h, n, k, f, v, t = 64, 16, 4, 2, 128, 256, 32
  per_layer = 2 * d * h * (n + 2 * k) + 2 * n * h * d + 2 * d * f * 3 + 2 * 2 * t * n * h * 0.5
  assert perf.train_flops_per_token(cfg, t) == pytest.approx(3 * (2 * per_layer + 2 * d * v))


def test_device_peaks():
  class Dev:
    def __init__(self, kind):
      self.device_kind = kind
  assert perf.peak_flops(Dev('NVIDIA H200')) == 989e12
  assert perf.peak_flops(Dev('TPU v5 lite')) == 197e12
  assert perf.peak_flops(Dev('TPU v5p')) == 459e12
  assert perf.peak_flops(Dev('cpu')) is None


def test_benchmark_runs_on_unpacked_synthetic_tokens():
  from llm.bench import run_benchmark
  r = run_benchmark('smoke', seq_len=32, batch=4, steps=2, warmup=1, vocab=512)
  assert r['tokens_per_sec'] > 0 and r['step_ms'] > 0 and r['mfu'] is None
  assert r['loss'] == r['loss'] and 0 < r['loss'] < 10  # finite, below a uniform guess over 512 (6.24) + slack


def random_model(cfg, seed=0):
  """(graphdef, params) of a random model, drawn with numpy into the model's structure: an
  eagerly built Transformer compiles an XLA program per initialiser op (~10 s on 2 cores)."""
  import jax
  import numpy as np
  from flax import nnx
  from llm.models import Transformer
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(0))))
  rng = np.random.default_rng(seed)

  def draw(path, x):
    noise = rng.normal(0.0, cfg.init_std, x.shape).astype(x.dtype)
    return noise + 1 if path[-1].key == 'scale' else noise  # norm scales around 1
  return graphdef, jax.device_put(jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract)))


def test_end_of_training_sample_continues_past_the_context_and_respects_top_k():
  import train
  cfg = config_for_size('smoke', vocab_size=259, max_seq_len=16)
  graphdef, params = random_model(cfg)
  prompt = [1, 40, 41]
  # 16 new tokens past a 3-token prompt: a first window of 12 (a quarter context, 4 tokens, then
  # three quarters new), then one re-prefilled from the last 4 tokens, decoded whole (12) and cut
  # to the 4 still missing. One window size, so each sampler compiles once.
  kw = dict(top_k=0, seed=0, mesh=None)
  from llm.eval import decoding
  calls = []
  def spy(graphdef, cfg, params, prompts, n, **kw):
    calls.append((len(prompts[0]), n))
    return generate(graphdef, cfg, params, prompts, n, **kw)
  generate, decoding.generate = decoding.generate, spy
  try:
    greedy = train.sample_beyond_context(graphdef, cfg, params, prompt, 16, temperature=0.0, **kw)
  finally:
    decoding.generate = generate
  assert calls == [(3, 12), (4, 12)]  # both prompts in one bucket, one number of new tokens: one compile
  assert greedy[:3] == prompt and len(greedy) == 19  # longer than max_seq_len: windows re-prefilled
  assert greedy == train.sample_beyond_context(graphdef, cfg, params, prompt, 16, temperature=0.0, **kw)
  # top_k=1 at any temperature is greedy.
  assert train.sample_beyond_context(graphdef, cfg, params, prompt, 16, temperature=1.0, top_k=1, seed=3,
                                     mesh=None) == greedy
  sampled = train.sample_beyond_context(graphdef, cfg, params, prompt, 16, temperature=1.0, **kw)
  assert sampled != greedy and all(0 <= t < cfg.vocab_size for t in sampled)
  # A 1-token context leaves no room to generate: refused rather than looping.
  with pytest.raises(ValueError, match='no room to sample'):
    train.sample_beyond_context(graphdef, dataclasses.replace(cfg, max_seq_len=1), params, [1], 4,
                                temperature=0.0, **kw)


def test_auto_choices_follow_the_backend():
  c = default.get_config('smoke=True')
  cpu = run.model_config(c, 259, 'cpu')
  assert (cpu.dtype, cpu.attention, cpu.dense_grad) == ('float32', 'xla', 'pretransposed')
  gpu = run.model_config(c, 259, 'gpu')
  assert (gpu.dtype, gpu.attention, gpu.dense_grad) == ('bfloat16', 'cudnn', 'xla')
  tpu = run.model_config(c, 259, 'tpu')
  assert (tpu.dtype, tpu.attention) == ('bfloat16', 'xla')
  # Unrolled layers on every backend unless a config asks for the scan.
  assert not (cpu.scan_layers or gpu.scan_layers or tpu.scan_layers)
  c.model.scan_layers = True
  assert run.model_config(c, 259, 'gpu').scan_layers


def test_cudnn_attention_errors_are_clear():
  c = default.get_config('smoke=True')
  c.model.attention = 'cudnn'
  with pytest.raises(ValueError, match='needs an NVIDIA GPU'):
    run.model_config(c, 259, 'cpu')
  c.model.dtype = 'float32'
  with pytest.raises(ValueError, match='model.dtype=bfloat16'):
    run.model_config(c, 259, 'gpu')


def test_gpu_speed_script_runs_each_case_in_its_own_process_and_reports_failures():
  """benchmarks/gpu_speed.py's plumbing on CPU: a case's llm.bench figures come back (compile
  time and peak memory included), and a failing case is reported, not raised."""
  from benchmarks import gpu_speed
  row = gpu_speed.run_case('tiny', ['--size=smoke', '--seq_len=32', '--batch=4', '--steps=1', '--vocab=512'], 300)
  assert 'error' not in row, row
  assert row['scan_layers'] is False and row['step_ms'] > 0 and row['compile_s'] >= 0
  assert row['peak_memory_gib'] is None  # the CPU backend reports no memory statistics
  bad = gpu_speed.run_case('bad', ['--size=smoke', '--arch=encoder'], 300)
  assert 'not --arch=encoder' in bad['error']
  import subprocess
  import sys
  out = subprocess.run([sys.executable, '-m', 'benchmarks.gpu_speed', '--only=1b_default,nope'], capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode != 0 and out.stderr.strip().splitlines() == [
      "error: unknown case(s) ['nope']; choose from ['1b_b24', '1b_default', '1b_scan', '7b_remat', '7b_remat_scan']"]
