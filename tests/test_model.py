"""Tests of llm/models (the decoder): shapes, causality, packed documents, vocab padding, GQA, scan, sizes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import data, models as model, trainer

VOCAB = 259  # byte tokenizer
T = 32  # sequence length used by every forward pass (one compile per model)


def small_config(family='llama', **overrides):
  return model.config_for_size('smoke', vocab_size=VOCAB, family=family, max_seq_len=T, **overrides)


@functools.lru_cache(maxsize=None)
def built(family='llama', **overrides):
  """(graphdef, state) of a small model; built once per configuration."""
  cfg = small_config(family, **overrides)
  return nnx.split(model.Transformer(cfg, jax.random.key(0)))


@functools.partial(jax.jit, static_argnums=0)
def forward(graphdef, state, tokens, positions, segments):
  return nnx.merge(graphdef, state)(tokens, positions, segments)


@functools.partial(jax.jit, static_argnums=0)
def batch_loss(graphdef, params, batch):
  return trainer.next_token_loss(graphdef, params, batch)


def default_positions(b, t=T):
  return jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))


def random_tokens(seed, b, t=T):
  return jax.random.randint(jax.random.key(seed), (b, t), 3, VOCAB, jnp.int32)


FAMILIES = ['llama', 'gpt2']


@pytest.mark.parametrize('family', FAMILIES)
def test_output_shape_and_dtype(family):
  graphdef, state = built(family)
  cfg = small_config(family)
  assert cfg.padded_vocab == 384
  tokens = random_tokens(0, 2, 16)
  logits = nnx.merge(graphdef, state)(tokens)  # default positions and no segments
  assert logits.shape == (2, 16, cfg.padded_vocab)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(logits)))


def test_family_switches():
  llama, gpt2 = small_config('llama'), small_config('gpt2')
  assert (llama.norm, llama.positions, llama.mlp, llama.use_bias, llama.tie_embeddings) == (
      'rms', 'rope', 'swiglu', False, False)
  assert (gpt2.norm, gpt2.positions, gpt2.mlp, gpt2.use_bias, gpt2.tie_embeddings) == (
      'layer', 'learned', 'gelu', True, True)
  _, state = built('gpt2')
  assert 'pos_td' in state and 'head_dv' not in state  # learned positions, tied head
  _, state = built('llama')
  assert 'pos_td' not in state and 'head_dv' in state


@pytest.mark.parametrize('family', FAMILIES)
def test_causality(family):
  graphdef, state = built(family)
  j = 13
  tokens = random_tokens(1, 1)
  changed = tokens.at[0, j].set((tokens[0, j] - 3 + 1) % (VOCAB - 3) + 3)
  assert changed[0, j] != tokens[0, j]
  both = jnp.concatenate([tokens, changed])
  logits = np.asarray(forward(graphdef, state, both, default_positions(2), jnp.ones((2, T), jnp.int32)))
  np.testing.assert_allclose(logits[0, :j], logits[1, :j], atol=1e-6, rtol=0)
  diff = np.abs(logits[0, :, :VOCAB] - logits[1, :, :VOCAB]).max(-1)  # [t]
  assert diff[j] > 1e-4
  assert np.all(diff[j:] > 1e-5), diff[j:]


@pytest.mark.parametrize('family', FAMILIES)
def test_packed_documents_match_separate_runs(family):
  graphdef, state = built(family)
  rng = np.random.default_rng(0)
  doc_a = rng.integers(3, VOCAB, 9).astype(np.int32)
  doc_b = rng.integers(3, VOCAB, 12).astype(np.int32)
  packed = data.pack([doc_a, doc_b], T, bos=1, eos=2)
  alone_a = data.pack([doc_a], T, bos=1, eos=2)
  alone_b = data.pack([doc_b], T, bos=1, eos=2)
  la, lb = len(doc_a) + 1, len(doc_b) + 1  # predicted tokens of each document
  b0 = la + 1  # one padding slot between them: the pair (EOS of a -> BOS of b) is not trained
  assert packed['inputs'].shape == (1, T)
  np.testing.assert_array_equal(packed['segments'][0, :b0 + lb], [1] * la + [0] + [2] * lb)
  np.testing.assert_array_equal(packed['positions'][0, b0:b0 + lb], np.arange(lb))

  batch = {k: np.concatenate([packed[k], alone_a[k], alone_b[k]]) for k in data.FIELDS}
  logits = np.asarray(forward(graphdef, state, batch['inputs'], batch['positions'], batch['segments']))
  np.testing.assert_allclose(logits[0, :la], logits[1, :la], atol=1e-5, rtol=0)
  np.testing.assert_allclose(logits[0, b0:b0 + lb], logits[2, :lb], atol=1e-5, rtol=0)

  # Per-document losses from cross_entropy on the packed row equal the separate losses.
  targets, segments = jnp.asarray(batch['targets']), jnp.asarray(batch['segments'])
  loss_a_packed, n_a = trainer.cross_entropy(logits[:1], targets[:1], segments[:1] == 1)
  loss_b_packed, n_b = trainer.cross_entropy(logits[:1], targets[:1], segments[:1] == 2)
  loss_a, m_a = trainer.cross_entropy(logits[1:2], targets[1:2], segments[1:2] > 0)
  loss_b, m_b = trainer.cross_entropy(logits[2:3], targets[2:3], segments[2:3] > 0)
  assert (float(n_a), float(n_b), float(m_a), float(m_b)) == (la, lb, la, lb)
  np.testing.assert_allclose(loss_a_packed, loss_a, atol=1e-5, rtol=1e-6)
  np.testing.assert_allclose(loss_b_packed, loss_b, atol=1e-5, rtol=1e-6)
  assert float(loss_a) > la * 0.5 * math.log(VOCAB)  # an untrained model: near-uniform loss

  # next_token_loss: the packed row's summed loss is the sum of the documents' losses.
  params = nnx.to_pure_dict(state)
  pick = lambda i: {k: jnp.asarray(v[i:i + 1]) for k, v in batch.items()}
  total, count = batch_loss(graphdef, params, pick(0))
  sa, ca = batch_loss(graphdef, params, pick(1))
  sb, cb = batch_loss(graphdef, params, pick(2))
  assert float(count) == la + lb and float(ca) == la and float(cb) == lb
  np.testing.assert_allclose(total, sa + sb, atol=1e-5, rtol=1e-6)


def test_padding_segment_is_ignored_by_loss():
  graphdef, state = built('llama')
  tokens = random_tokens(2, 1)
  segments = jnp.asarray([[1] * 20 + [0] * (T - 20)], jnp.int32)
  targets = random_tokens(3, 1)
  batch = {'inputs': tokens, 'targets': targets, 'positions': default_positions(1), 'segments': segments}
  loss, count = batch_loss(graphdef, nnx.to_pure_dict(state), batch)
  assert float(count) == 20
  other = dict(batch, targets=targets.at[0, 25].set(5))  # a padding target changes nothing
  loss2, _ = batch_loss(graphdef, nnx.to_pure_dict(state), other)
  assert float(loss2) == float(loss)


def test_padded_vocab_logits_are_masked():
  graphdef, state = built('llama')
  logits = np.asarray(forward(graphdef, state, random_tokens(4, 1), default_positions(1),
                              jnp.ones((1, T), jnp.int32)))
  assert logits.shape[-1] == 384
  assert np.all(logits[..., VOCAB:] <= -1e8)
  assert np.all(np.isfinite(logits[..., :VOCAB])) and np.all(logits[..., :VOCAB] > -1e3)
  probs = jax.nn.softmax(logits, -1)
  assert float(probs[..., VOCAB:].max()) == 0.0
  # Nothing to mask when the vocabulary is not padded.
  unpadded = model.mask_padded_vocab(jnp.zeros((1, 2, VOCAB)), VOCAB)
  assert float(unpadded.min()) == 0.0


def test_gqa_equals_multi_head_with_repeated_kv_heads():
  cfg = small_config('llama')
  assert cfg.n_kv_heads == 2 and cfg.n_heads == 4  # grouped-query attention
  graphdef, state = built('llama')
  assert state['blocks']['attn']['w_k_dkh'].shape == (cfg.n_layers, cfg.d_model, 2, cfg.d_head)
  assert state['blocks']['attn']['w_q_dnh'].shape == (cfg.n_layers, cfg.d_model, 4, cfg.d_head)
  # The same model as plain multi-head attention: each kv head repeated for its query heads.
  mha_graphdef, mha_abstract = nnx.split(nnx.eval_shape(
      lambda: model.Transformer(small_config('llama', n_kv_heads=4), jax.random.key(0))))
  params = nnx.to_pure_dict(state)
  g = cfg.n_heads // cfg.n_kv_heads
  for name in ('w_k_dkh', 'w_v_dkh'):
    params['blocks']['attn'][name] = jnp.repeat(params['blocks']['attn'][name], g, axis=2)
  nnx.replace_by_pure_dict(mha_abstract, params)
  tokens, pos, seg = random_tokens(5, 2), default_positions(2), jnp.ones((2, T), jnp.int32)
  gqa = forward(graphdef, state, tokens, pos, seg)
  mha = forward(mha_graphdef, mha_abstract, tokens, pos, seg)
  np.testing.assert_allclose(gqa, mha, atol=1e-5, rtol=0)


@pytest.mark.parametrize('family', FAMILIES)
def test_unrolled_layers_match_scan(family):
  graphdef, state = built(family)
  unrolled_graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: model.Transformer(small_config(family, scan_layers=False), jax.random.key(0))))
  assert unrolled_graphdef != graphdef
  tokens, pos, seg = random_tokens(6, 2), default_positions(2), jnp.ones((2, T), jnp.int32)
  scanned = forward(graphdef, state, tokens, pos, seg)
  unrolled = forward(unrolled_graphdef, state, tokens, pos, seg)
  np.testing.assert_allclose(scanned, unrolled, atol=1e-5, rtol=0)


def test_init_is_deterministic_by_key():
  a = nnx.to_pure_dict(nnx.state(model.Transformer(small_config('gpt2'), jax.random.key(0))))
  b = nnx.to_pure_dict(built('gpt2')[1])
  c = nnx.to_pure_dict(nnx.state(model.Transformer(small_config('gpt2'), jax.random.key(1))))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a['embed_vd'], c['embed_vd'])


def _actual_param_count(cfg):
  abstract = nnx.eval_shape(lambda: model.Transformer(cfg, jax.random.key(0)))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize('cfg', [
    small_config('llama'),
    small_config('gpt2'),
    small_config('gpt2', use_bias=False, tie_embeddings=False),
    small_config('llama', use_bias=True, tie_embeddings=True, positions='learned', norm='layer'),
    small_config('llama', mlp='gelu', d_ff=None, n_kv_heads=1, d_head=32),
    model.config_for_size('char-tiny', VOCAB, vocab_multiple=1),
    model.config_for_size('124m', 50257),
    model.config_for_size('1b', 32000),
], ids=['llama', 'gpt2', 'gpt2-nobias-untied', 'llama-mixed', 'llama-gelu-mqa', 'char-tiny', '124m', '1b'])
def test_param_count_matches_model(cfg):
  assert cfg.param_count() == _actual_param_count(cfg)
  embedding = cfg.padded_vocab * cfg.d_model * (1 if cfg.tie_embeddings else 2)
  if cfg.positions == 'learned':
    embedding += cfg.max_seq_len * cfg.d_model
  assert cfg.param_count(embedding=False) == cfg.param_count() - embedding


def test_known_sizes():
  assert abs(model.config_for_size('124m', 50257).param_count() - 124.4e6) < 0.5e6  # GPT-2 small
  assert model.config_for_size('1b', 32000).padded_vocab == 32000
  assert model.config_for_size('smoke', VOCAB).d_ff == 128
  assert model.ModelConfig(vocab_size=VOCAB, d_model=128).d_ff == 512  # swiglu: 8/3 d rounded up to 256
  assert model.ModelConfig(vocab_size=VOCAB, d_model=128, family='gpt2').d_ff == 512  # gelu: 4 d


def test_model_config_errors():
  with pytest.raises(ValueError, match='multiple of model.n_kv_heads'):
    model.ModelConfig(vocab_size=VOCAB, n_heads=4, n_kv_heads=3)
  with pytest.raises(ValueError, match='multiple'):
    model.config_for_size('smoke', VOCAB, n_kv_heads=3)
  with pytest.raises(ValueError, match="unknown model size 'huge'"):
    model.config_for_size('huge', VOCAB)
  with pytest.raises(ValueError, match='family'):
    model.ModelConfig(vocab_size=VOCAB, family='bart')
  with pytest.raises(ValueError, match='bidirectional model is an encoder'):
    model.ModelConfig(vocab_size=VOCAB, causal=False)
  with pytest.raises(ValueError, match='relative position biases'):
    model.ModelConfig(vocab_size=VOCAB, family='bert', positions='relative')
  with pytest.raises(ValueError, match='even head width'):
    model.ModelConfig(vocab_size=VOCAB, d_model=12, n_heads=4)  # d_head 3 with rope
  model.ModelConfig(vocab_size=VOCAB, d_model=12, n_heads=4, family='gpt2')  # learned positions: fine


@pytest.mark.parametrize('family', ['llama', 'gpt2'])
def test_pretransposed_dense_grad_matches_xla(family):
  """model.dense_grad='pretransposed' (the CPU default) computes the same loss and gradients."""
  import jax
  import numpy as np
  from flax import nnx
  from llm import trainer
  from llm.data import pack
  from llm.models import Transformer, config_for_size
  cx = config_for_size('smoke', vocab_size=259, family=family, max_seq_len=32, dense_grad='xla')
  cp = config_for_size('smoke', vocab_size=259, family=family, max_seq_len=32, dense_grad='pretransposed')
  gx, params = nnx.split(Transformer(cx, jax.random.key(0)))
  gp, _ = nnx.split(nnx.eval_shape(lambda: Transformer(cp, jax.random.key(0))))
  params = nnx.to_pure_dict(params)
  rng = np.random.default_rng(0)
  batch = pack([rng.integers(3, 259, n) for n in (20, 45, 9, 30)], 32, 1, 2)
  fx = jax.jit(jax.value_and_grad(lambda p: trainer.next_token_loss(gx, p, batch)[0]))
  fp = jax.jit(jax.value_and_grad(lambda p: trainer.next_token_loss(gp, p, batch)[0]))
  (lx, dx), (lp, dp) = fx(params), fp(params)
  assert abs(float(lx) - float(lp)) < 1e-4 * abs(float(lx))
  scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(dx))
  diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(dx), jax.tree.leaves(dp)))
  assert diff < 1e-5 * scale, diff


# ----- The general pieces: masks from positions, trunk/head, branches, cache, loss masks --


def test_attention_mask_from_positions_segments_and_branches():
  pos = jnp.array([[0, 1, 2, 0, 1]])
  seg = jnp.array([[1, 1, 1, 2, 2]])
  m = np.asarray(model.attention_mask(pos, pos, seg, seg))[0]
  expected = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(m, expected)
  # Not causal (encoders): every token of a segment sees the whole segment.
  m = np.asarray(model.attention_mask(pos, pos, seg, seg, causal=False))[0]
  np.testing.assert_array_equal(m, np.equal.outer([1, 1, 1, 2, 2], [1, 1, 1, 2, 2]))
  # Branches: a context (branch 0) shared by two continuations whose positions overlap.
  pos = jnp.array([[0, 1, 2, 3, 2, 3]])
  br = jnp.array([[0, 0, 1, 1, 2, 2]])
  m = np.asarray(model.attention_mask(pos, pos, q_branch_bt=br, k_branch_bs=br))[0]
  np.testing.assert_array_equal(m[3], [1, 1, 1, 1, 0, 0])  # branch 1 sees the context and itself
  np.testing.assert_array_equal(m[4], [1, 1, 0, 0, 1, 0])  # branch 2 never sees branch 1


@pytest.mark.parametrize('family', FAMILIES)
def test_shared_context_branches_score_like_separate_rows(family):
  graphdef, state = built(family)
  m = nnx.merge(graphdef, state)
  ctx, a, b = [5, 6, 7, 8], [9, 10, 11], [12, 13]
  row = jnp.array([ctx + a + b])
  pos = jnp.array([[0, 1, 2, 3, 4, 5, 6, 4, 5]])
  br = jnp.array([[0, 0, 0, 0, 1, 1, 1, 2, 2]])
  shared = m.head(m.trunk(row, pos, branches_bt=br).hidden_btd)[0]
  alone_a = m(jnp.array([ctx + a]))[0]
  alone_b = m(jnp.array([ctx + b]))[0]
  np.testing.assert_allclose(shared[:7], alone_a, atol=2e-5)
  np.testing.assert_allclose(shared[7:], alone_b[4:], atol=2e-5)


@pytest.mark.parametrize('family', FAMILIES)
def test_trunk_returns_residuals_and_attention_weights(family):
  graphdef, state = built(family)
  cfg = small_config(family)
  m = nnx.merge(graphdef, state)
  tokens = random_tokens(3, 2, 8)
  out = m.trunk(tokens, collect=('residuals', 'attention'))
  assert out.residuals_lbtd.shape == (cfg.n_layers, 2, 8, cfg.d_model)
  w = np.asarray(out.attention_lbnts)
  assert w.shape == (cfg.n_layers, 2, cfg.n_heads, 8, 8)
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(w[0, 0, 0], 1) == 0)  # causal: no weight on later tokens
  np.testing.assert_allclose(m.head(out.hidden_btd), m(tokens), atol=1e-6)
  with pytest.raises(ValueError, match='collect'):
    m.trunk(tokens, collect=('logits',))


@pytest.mark.parametrize('family,kv_heads', [('llama', 2), ('llama', 4), ('gpt2', 4)])
def test_cache_prefill_then_steps_equals_full_forward(family, kv_heads):
  graphdef, state = built(family, n_kv_heads=kv_heads)
  cfg = small_config(family, n_kv_heads=kv_heads)
  m = nnx.merge(graphdef, state)
  tokens = random_tokens(4, 2, 12)
  full = m(tokens)
  cache = model.KVCache.empty(cfg, 2, 16)
  out = m.trunk(tokens[:, :7], cache=cache)
  logits, cache = [m.head(out.hidden_btd)], out.cache
  for i in range(7, 12):
    out = m.trunk(tokens[:, i:i + 1], jnp.full((2, 1), i), cache=cache)
    logits.append(m.head(out.hidden_btd))
    cache = out.cache
  assert int(cache.index) == 12
  np.testing.assert_allclose(jnp.concatenate(logits, 1), full, atol=2e-5)


def test_token_logprobs_is_what_the_loss_sums_and_loss_mask_is_honoured():
  graphdef, state = built('llama')
  tokens = random_tokens(5, 2, T + 1)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:]}
  lp = trainer.token_logprobs(graphdef, state, batch)
  logits = nnx.merge(graphdef, state)(batch['inputs'])
  ref = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), batch['targets'][..., None], -1)[..., 0]
  np.testing.assert_allclose(lp, ref, atol=1e-5)
  loss, n = trainer.next_token_loss(graphdef, state, batch)
  np.testing.assert_allclose(loss, -lp.sum(), rtol=1e-6)
  assert float(n) == 2 * T
  mask = jnp.zeros((2, T), bool).at[:, T // 2:].set(True)  # e.g. only the response counts
  loss, n = trainer.next_token_loss(graphdef, state, {**batch, 'loss_mask': mask})
  np.testing.assert_allclose(loss, -lp[:, T // 2:].sum(), rtol=1e-6)
  assert float(n) == T
  lp2, greedy = trainer.token_logprobs(graphdef, state, batch, with_greedy=True)
  np.testing.assert_array_equal(greedy, jnp.argmax(logits, -1) == batch['targets'])
