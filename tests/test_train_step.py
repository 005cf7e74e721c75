"""Tests of llm/trainer.py's step: weight-decay mask, gradient accumulation, gradient
normalisation, the learning-rate schedule, and RoPE values (llm/models/).

Every check compares against something computed independently here (hand-written
cross-entropy, hand-computed schedule and rotations), so a constant scale, an off-by-one
or a sign that the optimizer or the suite's other tests would hide makes one fail.
Models are the 'smoke' size with rows of 16 tokens, float32, on one CPU device.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llm import models as model, sharding, trainer

VOCAB = 259  # byte tokenizer; padded to 384 embedding rows
T = 16  # tokens per row


def small_config(family='llama', **overrides):
  return model.config_for_size('smoke', vocab_size=VOCAB, family=family, max_seq_len=T, **overrides)


@pytest.fixture(scope='module')
def mesh():
  return sharding.make_mesh({'data': 1}, jax.devices()[:1])


def padded_batch(seed: int, pads: list[int]) -> dict[str, np.ndarray]:
  """Rows [len(pads), T] with 1-3 packed segments each and pads[r] trailing padding tokens.

  Padding is segment 0 with input/target/position 0, as llm.data.pack writes it.
  """
  rng = np.random.default_rng(seed)
  b = len(pads)
  out = {k: np.zeros((b, T), np.int32) for k in ('inputs', 'targets', 'positions', 'segments')}
  for r, pad in enumerate(pads):
    n = T - pad
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(rng.integers(0, 3), n - 1), replace=False)) if n > 1 else []
    starts = [0, *cuts]
    ends = [*cuts, n]
    for s_id, (lo, hi) in enumerate(zip(starts, ends), start=1):
      out['segments'][r, lo:hi] = s_id
      out['positions'][r, lo:hi] = np.arange(hi - lo)
    out['inputs'][r, :n] = rng.integers(3, VOCAB, n)
    out['targets'][r, :n] = rng.integers(3, VOCAB, n)
  return out


def _max_abs(tree) -> float:
  return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree))


def _max_abs_diff(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))


def _global_norm_np(tree) -> float:
  return math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in jax.tree.leaves(tree)))


def random_state(setup: trainer.ModelSetup, seed: int) -> trainer.TrainState:
  """A step-0 state: N(0, init_std^2) parameters drawn with numpy (norm scales 1 + noise), fresh
  optimizer moments.

  Compiling the model's initialisers (``trainer.init_state``) costs seconds of XLA:CPU time
  per model, and these tests need some parameters, not that draw. Every vocabulary row is
  drawn, padding rows included (the model initialises those to zero).
  """
  rng = np.random.default_rng(seed)

  def draw(path, x):
    noise = rng.normal(0.0, setup.cfg.init_std, x.shape).astype(x.dtype)
    return noise + 1 if path[-1].key == 'scale' else noise
  params = jax.device_put(jax.tree_util.tree_map_with_path(draw, setup.abstract_state().params),
                          setup.state_shardings.params)
  return trainer.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=setup.optimizer.init(params))


# ------------------------------------------------------------------ weight decay mask


def _expected_decay(name: str) -> bool:
  """The documented rule, written out: matrices and embeddings decay; biases and norms do not."""
  return name.startswith('w_') or name in ('embed_vd', 'head_dv', 'pos_td')


MASK_CONFIGS = {
    'llama': dict(family='llama'),
    'llama-bias-tied-learned': dict(family='llama', use_bias=True, tie_embeddings=True, positions='learned',
                                    norm='layer'),
    'gpt2': dict(family='gpt2'),
    'gpt2-bias-untied': dict(family='gpt2', use_bias=True, tie_embeddings=False),
    'gpt2-nobias': dict(family='gpt2', use_bias=False),
}


@pytest.mark.parametrize('name', list(MASK_CONFIGS))
def test_weight_decay_mask_by_parameter_role(mesh, name):
  kw = dict(MASK_CONFIGS[name])
  cfg = small_config(kw.pop('family'), **kw)
  setup = trainer.setup_model(cfg, trainer.OptimConfig(), mesh)
  flat = {path: bool(v) for path, v in nnx.to_flat_state(nnx.State(setup.decay_mask))}
  assert flat
  for path, decay in flat.items():
    assert decay == _expected_decay(path[-1]), (path, decay)
  leaf_names = {path[-1] for path in flat}
  # The configurations really contain what the rule has to get right.
  assert ('b_q_nh' in leaf_names) == cfg.use_bias and ('b_k_kh' in leaf_names) == cfg.use_bias
  assert ('pos_td' in leaf_names) == (cfg.positions == 'learned')
  assert ('head_dv' in leaf_names) == (not cfg.tie_embeddings)
  assert ('bias' in leaf_names) == (cfg.norm == 'layer')
  if cfg.use_bias:  # the GPT-2 q/k/v biases are [layers, heads, head_dim]: rank 3 but not matrices
    assert flat[('blocks', 'attn', 'b_q_nh')] is False and flat[('blocks', 'attn', 'b_v_kh')] is False
    assert flat[('blocks', 'mlp', 'b_in_f')] is False
  assert flat[('embed_vd',)] is True and flat[('blocks', 'attn', 'w_q_dnh')] is True
  assert flat[('final_norm', 'scale')] is False


def test_optimizer_applies_the_mask(mesh):
  """With zero gradients AdamW's update is -lr * wd * param on decayed parameters, 0 elsewhere."""
  cfg = small_config('gpt2', tie_embeddings=False)
  opt = trainer.OptimConfig(lr=0.5, warmup_steps=0, decay_steps=10, weight_decay=0.1)
  setup = trainer.setup_model(cfg, opt, mesh)
  abstract = setup.abstract_state().params
  params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), abstract)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = jax.jit(setup.optimizer.update)(zeros, setup.optimizer.init(params), params)
  for path, u in nnx.to_flat_state(nnx.State(updates)):
    want = -0.5 * 0.1 if _expected_decay(path[-1]) else 0.0
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6, atol=0, err_msg=str(path))


def test_unclassified_parameter_raises():
  class Extra(nnx.Module):
    def __init__(self):
      self.w_in_df = nnx.Param(jnp.zeros((2, 3)), axes=('embed', 'mlp'))
      self.gamma = nnx.Param(jnp.zeros((3,)), axes=('norm',))

  with pytest.raises(ValueError, match='gamma has no weight-decay rule'):
    trainer.weight_decay_mask(nnx.state(Extra()))

  class VectorNamedAsMatrix(nnx.Module):
    def __init__(self):
      self.w_x = nnx.Param(jnp.zeros((4, 3)), axes=('layers', 'embed'))

  with pytest.raises(ValueError, match='w_x is decayed as a matrix'):
    trainer.weight_decay_mask(nnx.state(VectorNamedAsMatrix()))


# ------------------------------------------------- accumulation and normalisation

# Adam's first update is -lr * g / (|g| + eps) = -lr * sign(g) for a small eps: blind to any
# constant scale of the gradient. eps = 1 (much larger than any gradient entry) makes the
# update about -lr * g, so the parameters see the gradient's scale; clipping is off for
# the same reason, and weight decay off so the update is the gradient alone.
ACCUM_OPT = trainer.OptimConfig(lr=1.0, min_lr=1.0, warmup_steps=0, decay_steps=10, eps=1.0,
                                weight_decay=0.0, grad_clip=0.0)
# Different numbers of padding tokens in every row, so that each microbatch (rows i, i+A,
# ...) has its own token count for A = 2 and A = 4: per-row valid tokens 16, 7, 15, 2, 13,
# 14, 11, 5 give microbatch counts 55/28 (A=2) and 29/21/26/7 (A=4).
PADS = [0, 9, 1, 14, 3, 2, 5, 11]


@pytest.fixture(scope='module')
def accum_runs(mesh):
  """{A: (state0, state1, metrics)} after one step from the same state on the same batch."""
  cfg = small_config('gpt2', tie_embeddings=False)  # biases, learned positions and an untied head
  batch = trainer.shard_batch(padded_batch(0, PADS), mesh)
  out = {}
  state0 = None
  for a in (1, 2, 4):
    opt = trainer.OptimConfig(**{**ACCUM_OPT.__dict__, 'accum_steps': a})
    setup = trainer.setup_model(cfg, opt, mesh)
    if state0 is None:
      state0 = random_state(setup, seed=0)
    step = trainer.make_train_step(setup, opt, seed=0, donate=False)
    state1, metrics = step(state0, batch)
    out[a] = (setup, state0, state1, jax.device_get(metrics))
  return out, jax.device_get(batch)


def test_microbatches_really_have_different_token_counts():
  valid = T - np.asarray(PADS)
  for a in (2, 4):
    counts = [int(valid[i::a].sum()) for i in range(a)]
    assert len(set(counts)) == a, counts


@pytest.mark.parametrize('accum', [2, 4])
def test_accumulation_equals_one_big_batch(accum_runs, accum):
  runs, _ = accum_runs
  _, state0, full, m_full = runs[1]
  _, _, acc, m_acc = runs[accum]
  assert float(m_acc['tokens']) == float(m_full['tokens']) == float(T * len(PADS) - sum(PADS))
  np.testing.assert_allclose(m_acc['train_loss'], m_full['train_loss'], rtol=1e-5)
  np.testing.assert_allclose(m_acc['grad_norm'], m_full['grad_norm'], rtol=1e-4)
  np.testing.assert_allclose(m_acc['update_norm'], m_full['update_norm'], rtol=1e-4)
  # Compare the updates themselves (new - old), not the parameters, which are ~100x larger.
  d_full = jax.tree.map(lambda n, o: np.asarray(n) - np.asarray(o), full.params, state0.params)
  d_acc = jax.tree.map(lambda n, o: np.asarray(n) - np.asarray(o), acc.params, state0.params)
  scale = _max_abs(d_full)
  assert scale > 1e-4  # the step moved the parameters
  assert _max_abs_diff(d_acc, d_full) < 1e-4 * scale
  assert int(acc.step) == int(full.step) == 1


def test_grad_norm_is_the_norm_of_the_mean_token_loss_gradient(accum_runs):
  """The reported gradient is d(mean loss over non-padding tokens)/d(params), before clipping."""
  runs, batch = accum_runs
  setup, state0, _, metrics = runs[1]

  def mean_loss(params):  # written out here, independent of trainer.cross_entropy
    logits = nnx.merge(setup.graphdef, params)(batch['inputs'], batch['positions'], batch['segments'])
    logp = jax.nn.log_softmax(logits[..., :VOCAB], axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.asarray(batch['targets'])[..., None], axis=-1)[..., 0]
    mask = jnp.asarray(batch['segments']) > 0
    return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.sum(mask)

  loss, grads = jax.jit(jax.value_and_grad(mean_loss))(state0.params)
  assert float(metrics['tokens']) == float((batch['segments'] > 0).sum())
  np.testing.assert_allclose(metrics['train_loss'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['grad_norm'], _global_norm_np(grads), rtol=1e-4)


# ------------------------------------------------------------------ learning rate

SCHED = trainer.OptimConfig(lr=0.5, min_lr=0.05, warmup_steps=4, decay_steps=12, weight_decay=0.1)


def expected_lr(step: int, c: trainer.OptimConfig = SCHED) -> float:
  """Linear warmup from 0 to lr over warmup_steps, then a half cosine to min_lr at decay_steps."""
  if step < c.warmup_steps:
    return c.lr * step / c.warmup_steps
  if step >= c.decay_steps:
    return c.min_lr
  frac = (step - c.warmup_steps) / (c.decay_steps - c.warmup_steps)
  return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * frac))


def test_schedule_values():
  lr = trainer.schedule(SCHED)
  # The points written out: start, middle of warmup, peak, cosine mid-point, end, after the end.
  named = {0: 0.0, 1: 0.125, 2: 0.25, 4: 0.5, 8: (0.5 + 0.05) / 2, 12: 0.05, 13: 0.05, 100: 0.05}
  for step, want in named.items():
    assert expected_lr(step) == pytest.approx(want, rel=1e-12), step
    assert float(lr(step)) == pytest.approx(want, rel=1e-6, abs=1e-9), step
  for step in range(20):
    assert float(lr(step)) == pytest.approx(expected_lr(step), rel=1e-6, abs=1e-9), step
  assert float(lr(3)) < 0.5 and float(lr(5)) < 0.5  # the peak is exactly at warmup_steps


def test_learning_rate_metric_and_applied_rate_follow_the_schedule(mesh):
  """At every step the metric is the schedule at state.step, and so is the rate AdamW applies.

  The applied rate is read off the padded vocabulary rows of the embedding and head: they
  never get a gradient, so their Adam update is 0 and only decoupled weight decay moves
  them, p <- p * (1 - lr * wd). (They start nonzero here: ``random_state`` draws them.)
  """
  cfg = small_config('llama')  # untied: embed_vd rows and head_dv columns >= VOCAB are unused
  setup = trainer.setup_model(cfg, SCHED, mesh)
  state = random_state(setup, seed=0)
  assert np.all(np.asarray(state.params['embed_vd'][VOCAB:]) != 0)
  step = trainer.make_train_step(setup, SCHED, seed=0)
  batch = trainer.shard_batch(padded_batch(1, [0, 3, 5, 1]), mesh)
  for s in range(SCHED.decay_steps + 3):
    before = np.asarray(state.params['embed_vd'][VOCAB:]), np.asarray(state.params['head_dv'][:, VOCAB:])
    assert int(state.step) == s
    state, metrics = step(state, batch)
    assert float(metrics['learning_rate']) == pytest.approx(expected_lr(s), rel=1e-6, abs=1e-9), s
    after = np.asarray(state.params['embed_vd'][VOCAB:]), np.asarray(state.params['head_dv'][:, VOCAB:])
    for b, a in zip(before, after):
      applied = (1 - a / b) / SCHED.weight_decay
      np.testing.assert_allclose(applied, expected_lr(s), rtol=1e-3, atol=1e-6, err_msg=f'step {s}')


# ------------------------------------------------------------------------- RoPE


def rope_reference(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
  """Rotate-half RoPE (Llama / Hugging Face), one pair at a time in float64.

  x: [b, t, n, h]; pos: [b, t]. Pair i is (x[..., i], x[..., i + h/2]), rotated
  counter-clockwise by angle pos * theta^(-2i/h).
  """
  b, t, n, h = x.shape
  out = np.empty_like(x, dtype=np.float64)
  for i in range(h // 2):
    angle = pos.astype(np.float64) * theta ** (-2.0 * i / h)  # [b, t]
    c, s = np.cos(angle)[:, :, None], np.sin(angle)[:, :, None]
    a, bb = x[..., i].astype(np.float64), x[..., i + h // 2].astype(np.float64)
    out[..., i] = a * c - bb * s
    out[..., i + h // 2] = a * s + bb * c
  return out


@pytest.mark.parametrize('h,theta', [(2, 10_000.0), (8, 10_000.0), (16, 500_000.0), (64, 10_000.0)])
def test_rope_matches_hand_computed_rotation(h, theta):
  rng = np.random.default_rng(h)
  pos = np.array([[0, 1, 2, 7], [100, 33, 5, 1000]], np.int32)
  x = rng.standard_normal((2, 4, 3, h)).astype(np.float32)
  got = np.asarray(model.rope(jnp.asarray(x), jnp.asarray(pos), theta))
  want = rope_reference(x, pos, theta)
  # Angles up to 1000 rad are formed in float32: about 1e-4 rad of rounding.
  np.testing.assert_allclose(got, want, atol=3e-4, rtol=0)
  np.testing.assert_array_equal(got[0, 0], x[0, 0])  # position 0 is the identity
  # Unit vectors e_i (one per head): position 1 rotates pair i by exactly theta^(-2i/h),
  # from x[i] towards x[i + h/2].
  e = np.eye(h, dtype=np.float32)[None, None, :h // 2]  # [1, 1, h/2, h]
  r = np.asarray(model.rope(jnp.asarray(e), jnp.ones((1, 1), jnp.int32), theta))[0, 0]
  want_r = np.zeros((h // 2, h))
  for i in range(h // 2):
    ang = theta ** (-2.0 * i / h)
    want_r[i, i], want_r[i, i + h // 2] = math.cos(ang), math.sin(ang)
  np.testing.assert_allclose(r, want_r, atol=1e-6, rtol=0)


def test_rope_dot_product_depends_only_on_relative_position():
  rng = np.random.default_rng(1)
  h = 32
  q = jnp.asarray(rng.standard_normal((1, 1, 1, h)).astype(np.float32))
  k = jnp.asarray(rng.standard_normal((1, 1, 1, h)).astype(np.float32))

  def dot(m, n):
    rq = model.rope(q, jnp.full((1, 1), m, jnp.int32), 10_000.0)
    rk = model.rope(k, jnp.full((1, 1), n, jnp.int32), 10_000.0)
    return float(jnp.sum(rq * rk))

  for delta in (0, 1, 5):
    ref = dot(delta, 0)
    for base in (1, 17, 200):
      assert dot(base + delta, base) == pytest.approx(ref, rel=1e-4, abs=1e-4), (delta, base)
  assert abs(dot(5, 0) - dot(0, 5)) > 1e-3  # but it does depend on the order
