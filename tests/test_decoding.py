"""Tests of llm/eval/decoding.py: cached decoding equals the uncached reference, stopping, sampling, meshes.

Models are small and randomly initialised with a wide init (init_std=0.3) so their
logits are spread out: greedy outputs vary from token to token and float rounding
between the cached and uncached paths cannot flip an argmax. Almost every call uses the
shapes of ``ragged_prompts`` (batch bucket 4, prompt bucket 16, NEW new tokens), so each
sampler kind compiles once per model; the 8-device check runs in a subprocess started
first, alongside the rest.
"""

import functools
import json
import os
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest
from flax import nnx

from llm import models as model
from llm.eval import decoding

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 259
NEW = 12
MODELS = {
    'llama_gqa': dict(family='llama', n_heads=4, n_kv_heads=2, max_seq_len=64),
    'llama_mha': dict(family='llama', n_heads=4, n_kv_heads=4, max_seq_len=64),
    # Learned positions, biases, tied embeddings; the context is just the longest ragged
    # prompt plus NEW, so the truncation test reuses the same compiled shapes.
    'gpt2': dict(family='gpt2', n_heads=4, max_seq_len=16 + NEW),
}
MESH_SETTINGS = {'greedy': {}, 'sampled': dict(temperature=1.0, top_k=50, top_p=0.9, seed=3)}


def model_config(name: str) -> model.ModelConfig:
  return model.config_for_size('smoke', VOCAB, **model_kwargs(name))


def model_kwargs(name: str) -> dict:
  return dict(d_model=32, d_ff=64, init_std=0.3, **MODELS[name])


def ragged_prompts():
  rng = np.random.default_rng(0)
  return [rng.integers(3, VOCAB, n).tolist() for n in (1, 5, 16)]


@pytest.fixture(scope='module', autouse=True)
def mesh_worker():
  """Starts the 8-device worker (llama_gqa on a data=2, fsdp=2, tensor=2 mesh) before the other tests.

  It compiles in its own process while they run; test_sharded_decoding_equals_one_device
  collects it.
  """
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'  # as tests/conftest.py sets for every test
  spec = dict(model=dict(vocab_size=VOCAB, **model_kwargs('llama_gqa')), prompts=ragged_prompts(),
              max_new_tokens=NEW, settings=MESH_SETTINGS)
  # Files, not pipes: nobody reads the worker's (chatty) stderr until it has finished.
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, 'decoding_mesh_worker.py'), json.dumps(spec)],
                            stdout=out, stderr=err, text=True, env=env)

    def collect() -> tuple[int, str, str]:
      proc.wait(timeout=600)
      out.seek(0)
      err.seek(0)
      return proc.returncode, out.read(), err.read()

    yield collect
    if proc.poll() is None:
      proc.kill()
      proc.wait()


@functools.lru_cache(maxsize=None)
def built(name: str):
  """(graphdef, cfg, params) of a 2-layer d_model=32 model, initialised as trainer.init_state(seed=0) does."""
  cfg = model_config(name)
  graphdef, state = nnx.split(model.Transformer(cfg, jax.random.key(0)))
  return graphdef, cfg, nnx.to_pure_dict(state)


@functools.lru_cache(maxsize=None)
def greedy(name: str) -> decoding.Generation:
  graphdef, cfg, params = built(name)
  return decoding.generate(graphdef, cfg, params, ragged_prompts(), NEW)


def assert_varied(tokens):
  for row in tokens:
    assert len(set(row)) > 2, tokens  # a constant output would make the comparisons vacuous


@pytest.mark.parametrize('name', MODELS)
def test_greedy_cached_equals_uncached(name):
  graphdef, cfg, params = built(name)
  cached = greedy(name)
  uncached = decoding.generate_uncached(graphdef, cfg, params, ragged_prompts(), NEW)
  assert_varied(cached.tokens)
  assert cached.tokens == uncached.tokens
  assert cached.finish_reasons == ['length'] * 3 and cached.steps == NEW and cached.truncated == 0


def test_ragged_rows_equal_each_prompt_alone():
  graphdef, cfg, params = built('llama_gqa')
  alone = [decoding.generate(graphdef, cfg, params, [p], NEW).tokens[0] for p in ragged_prompts()]
  assert alone == greedy('llama_gqa').tokens


def expected_cut(row, eos_id, stops):
  """Reference stopping rule on a full greedy row: (tokens before EOS / the first stop, reason)."""
  for i, t in enumerate(row):
    ends = [len(s) for s in stops if len(s) <= i + 1 and row[i + 1 - len(s):i + 1] == s]
    if ends:  # a stop sequence ending here wins over EOS, and the longest one is cut
      return row[:i + 1 - max(ends)], 'stop'
    if t == eos_id:
      return row[:i], 'eos'
  return row, 'length'


def test_eos_and_stop_sequences_end_rows_at_the_right_place():
  graphdef, cfg, params = built('llama_gqa')
  full = greedy('llama_gqa').tokens
  eos_id = full[1][4]
  stops = [full[0][2:4], full[2][5:8], [VOCAB - 1] * 3]  # the last does not occur
  out = decoding.generate(graphdef, cfg, params, ragged_prompts(), NEW, eos_id=eos_id, stop_sequences=stops)
  want = [expected_cut(row, eos_id, stops) for row in full]
  assert out.tokens == [w[0] for w in want]
  assert out.finish_reasons == [w[1] for w in want]
  assert {'eos', 'stop'} <= set(out.finish_reasons)  # both rules were exercised
  ref = decoding.generate_uncached(graphdef, cfg, params, ragged_prompts(), NEW, eos_id=eos_id, stop_sequences=stops)
  assert (ref.tokens, ref.finish_reasons) == (out.tokens, out.finish_reasons)


def test_loop_stops_when_every_row_has_finished():
  graphdef, cfg, params = built('llama_gqa')
  full = greedy('llama_gqa').tokens
  stops = [[full[0][1]], [full[1][2]], [full[2][0]]]  # every row meets one within its first 3 tokens
  out = decoding.generate(graphdef, cfg, params, ragged_prompts(), NEW, stop_sequences=stops)
  assert set(out.finish_reasons) == {'stop'}
  assert out.steps <= 3 and max(map(len, out.tokens)) < out.steps


def test_sampling_is_reproducible_and_depends_on_the_seed():
  graphdef, cfg, params = built('llama_gqa')
  run = functools.partial(decoding.generate, graphdef, cfg, params, ragged_prompts(), NEW, temperature=1.0)
  a, b, c = run(seed=0), run(seed=0), run(seed=1)
  assert a.tokens == b.tokens
  assert a.tokens != c.tokens
  assert a.tokens != greedy('llama_gqa').tokens


def test_top_k_1_and_tiny_top_p_are_greedy():
  graphdef, cfg, params = built('llama_gqa')
  run = functools.partial(decoding.generate, graphdef, cfg, params, ragged_prompts(), NEW, temperature=2.0, seed=5)
  assert run(top_k=1).tokens == greedy('llama_gqa').tokens
  assert run(top_p=1e-4).tokens == greedy('llama_gqa').tokens


def test_filter_keeps_the_top_k_then_the_smallest_set_reaching_p():
  logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]], np.float32))
  kept = lambda k, p: np.isfinite(np.asarray(decoding.filter_logits(logits, k, p)))[0].tolist()
  assert kept(0, 0.5) == [False, True, False, False]
  assert kept(0, 0.79) == [False, True, False, True]
  assert kept(0, 0.81) == [False, True, True, True]
  assert kept(0, 1e-6) == [False, True, False, False]  # at least one token
  assert kept(0, 1.0) == [True, True, True, True]
  assert kept(3, 1.0) == [False, True, True, True]
  assert kept(0, 0.83) == [False, True, True, True]
  assert kept(3, 0.83) == [False, True, False, True]  # renormalised over the top 3: (0.5 + 0.3) / 0.95 > 0.83
  assert kept(9, 1.0) == [True, True, True, True]


def test_learned_positions_truncate_prompts_from_the_left():
  graphdef, cfg, params = built('gpt2')
  assert cfg.positions == 'learned'
  keep = cfg.max_seq_len - NEW
  long = np.random.default_rng(1).integers(3, VOCAB, keep + 9).tolist()
  prompts = [long] + ragged_prompts()[1:]
  out = decoding.generate(graphdef, cfg, params, prompts, NEW)
  assert out.truncated == 1
  cut = decoding.generate(graphdef, cfg, params, [long[-keep:]] + prompts[1:], NEW)
  assert cut.truncated == 0 and cut.tokens == out.tokens
  assert decoding.generate_uncached(graphdef, cfg, params, prompts, NEW).truncated == 1
  with pytest.raises(ValueError, match='learned positions'):
    decoding.generate(graphdef, cfg, params, prompts, NEW, max_length=cfg.max_seq_len + 1)
  with pytest.raises(ValueError, match='no room'):
    decoding.generate(graphdef, cfg, params, prompts, cfg.max_seq_len)


def test_batch_buckets():
  assert [decoding.batch_bucket(n) for n in (1, 2, 3, 5, 8, 9, 17)] == [1, 2, 4, 8, 8, 16, 24]
  assert decoding.batch_bucket(3, data_parallel=8) == 8 and decoding.batch_bucket(9, data_parallel=4) == 16
  assert [decoding.prompt_bucket(n) for n in (1, 16, 17, 64, 65)] == [16, 16, 32, 64, 128]


def test_sharded_decoding_equals_one_device(mesh_worker):
  returncode, stdout, stderr = mesh_worker()
  assert returncode == 0, stderr[-4000:]
  result = json.loads(stdout.strip().splitlines()[-1])
  params = built('llama_gqa')[2]
  checksum = sum(float(np.abs(np.asarray(x, np.float64)).sum()) for x in jax.tree.leaves(params))
  assert result['checksum'] == pytest.approx(checksum, rel=1e-6)  # the same parameters, sharded
  assert result['w_q_spec'][1:3] == ['fsdp', 'tensor']
  assert result['w_q_shard'][1:3] == [result['w_q_shape'][1] // 2, result['w_q_shape'][2] // 2]
  for name in MESH_SETTINGS:
    assert_varied(result[name]['single'])
    assert result[name]['mesh'] == result[name]['single'], name
  assert result['greedy']['single'] != result['sampled']['single']
