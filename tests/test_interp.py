"""Tests of llm/interp on small random decoders (no training): the logit lens, direct logit
attribution, integrated gradients, activation patching, bad inputs, and the trunk options
they rely on leaving the default forward pass bit-identical."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from matplotlib.figure import Figure

from llm import interp
from llm.models import config_for_size
from random_models import random_params

VOCAB = 300
T = 9
FAMILIES = ['llama', 'gpt2']


@functools.lru_cache(maxsize=None)
def subject(family='llama', **overrides):
  """(cfg, graphdef, params) of a smoke-size decoder with random weights (std 0.1, so layers matter)."""
  cfg = config_for_size('smoke', VOCAB, family=family, max_seq_len=32, **overrides)
  return cfg, interp.graphdef_for(cfg), random_params(cfg)


def prompt(seed=0, t=T):
  return np.random.default_rng(seed).integers(0, VOCAB, t)


@pytest.mark.parametrize('family', FAMILIES)
def test_new_trunk_options_leave_the_forward_pass_bit_identical(family):
  cfg, graphdef, params = subject(family)
  tokens_bt = jnp.asarray(prompt())[None]

  @functools.partial(jax.jit, static_argnums=0)
  def run(graphdef, params, tokens_bt):
    m = nnx.merge(graphdef, params)
    out = m.trunk(tokens_bt, collect=('residuals', 'attention', 'heads', 'mlp'))
    embeds_btd = jnp.take(m.embed_vd[...], tokens_bt, axis=0)
    nothing = (jnp.asarray(0), jnp.zeros(tokens_bt.shape, bool), jnp.ones(tokens_bt.shape + (cfg.d_model,)))
    return (m(tokens_bt), m.head(out.hidden_btd), m.head(m.trunk(None, embeds_btd=embeds_btd).hidden_btd),
            m.head(m.trunk(tokens_bt, patch=nothing).hidden_btd), out)

  plain, collected, embedded, unpatched, out = run(graphdef, params, tokens_bt)
  np.testing.assert_array_equal(collected, plain)
  np.testing.assert_array_equal(embedded, plain)
  np.testing.assert_array_equal(unpatched, plain)
  assert out.heads_lbtnd.shape == (cfg.n_layers, 1, T, cfg.n_heads, cfg.d_model)
  assert out.mlp_lbtd.shape == (cfg.n_layers, 1, T, cfg.d_model)
  with pytest.raises(ValueError, match='collect'):
    nnx.merge(graphdef, params).trunk(tokens_bt, collect=('neurons',))


@pytest.mark.parametrize('family', FAMILIES)
def test_logit_lens_last_layer_is_the_models_distribution(family):
  cfg, graphdef, params = subject(family)
  tokens = prompt()
  lens = interp.logit_lens(graphdef, params, tokens, top_k=3, full=True)
  logprobs_tv = jax.nn.log_softmax(nnx.merge(graphdef, params)(jnp.asarray(tokens)[None])[0])
  assert lens.logprobs_ltv.shape == (cfg.n_layers, T, cfg.padded_vocab)
  np.testing.assert_allclose(lens.logprobs_ltv[-1], logprobs_tv, atol=1e-5)  # bit-equal for llama here
  np.testing.assert_array_equal(lens.top_ids_ltk[-1, :, 0], np.argmax(logprobs_tv, -1))
  np.testing.assert_allclose(lens.target_logprobs_lt[-1, :-1], logprobs_tv[np.arange(T - 1), tokens[1:]], atol=1e-5)
  assert np.isnan(lens.target_logprobs_lt[:, -1]).all()  # no next token after the last
  assert not np.allclose(lens.logprobs_ltv[0], lens.logprobs_ltv[-1])  # earlier layers do differ
  assert isinstance(interp.plot_logit_lens(lens, [f't{i}' for i in range(T)], id_text=str), Figure)


# Llama with a LoRA adapter on o covers Llama (the adapter merged into each head's output).
@pytest.mark.parametrize('family,overrides', [('gpt2', {}), ('llama', dict(lora_rank=2, lora_targets=('o',)))])
def test_direct_attribution_parts_sum_to_the_final_residual_and_logit(family, overrides):
  _, graphdef, params = subject(family, **overrides)
  for baseline, position in [(None, -1), (7, 3)]:
    dla = interp.direct_logit_attribution(graphdef, params, prompt(), 5, baseline=baseline, position=position)
    assert dla.residual_error < 1e-5  # embeddings + heads + biases + MLPs = final residual
    assert abs(dla.total - dla.logit_diff) < 1e-4 * max(1.0, abs(dla.logit_diff))
    assert np.abs(dla.heads_ln).max() > 0 and np.abs(dla.mlp_l).max() > 0
  assert isinstance(interp.plot_direct_attribution(dla), Figure)


@pytest.mark.parametrize('family,spacing,tolerance', [('llama', 'log', 5e-3), ('gpt2', 'uniform', 1e-3)])
def test_integrated_gradients_completeness(family, spacing, tolerance):
  """64 midpoint steps from zero embeddings; spacing is what 'auto' picks (llama: log-spaced)."""
  _, graphdef, params = subject(family)
  ig = interp.integrated_gradients(graphdef, params, prompt(), 5, steps=64, batch=24)  # 3 chunks, 8 points padded
  assert ig.spacing == spacing and ig.attributions_t.shape == (T,)
  assert ig.completeness_error < tolerance, ig.completeness_error
  assert abs(ig.f_input - ig.f_baseline) > 10 * tolerance  # a real difference to explain
  early = interp.integrated_gradients(graphdef, params, prompt(), 5, position=3, steps=24)  # same program
  assert np.all(early.attributions_t[4:] == 0)  # causal: later tokens cannot matter
  assert isinstance(interp.plot_integrated_gradients(ig), Figure)


def test_patching_a_prompt_with_itself_changes_nothing():
  _, graphdef, params = subject('llama')
  result = interp.activation_patching(graphdef, params, prompt(), prompt(), 5, batch=7)
  assert result.effect_lt.shape == (2, T)
  np.testing.assert_allclose(result.effect_lt, 0.0, atol=1e-5)
  assert result.clean_metric == pytest.approx(result.corrupted_metric, abs=1e-6)


def test_patching_finds_the_corrupted_token_and_the_last_layer():
  _, graphdef, params = subject('gpt2')
  clean, corrupted = prompt(), prompt()
  corrupted[2] = (clean[2] + 1) % VOCAB
  result = interp.activation_patching(graphdef, params, clean, corrupted, 5, wrong=7)
  gap = result.clean_metric - result.corrupted_metric
  # Before position 2 the prompts agree, so nothing changes; the last layer's last position is the output itself.
  np.testing.assert_allclose(result.effect_lt[:, :2], 0.0, atol=1e-5)
  assert result.effect_lt[-1, -1] == pytest.approx(gap, abs=1e-4)
  buf = io.BytesIO()
  interp.plot_patching(result, [str(i) for i in range(T)]).savefig(buf, format='png')
  assert buf.tell() > 0


@pytest.mark.parametrize('family,scan', [('llama', True), ('gpt2', False)])
def test_patching_every_position_of_a_layer_reproduces_the_clean_run(family, scan):
  _, graphdef, params = subject(family, scan_layers=scan)
  clean, corrupted = prompt(0), prompt(1)
  clean_logits = nnx.merge(graphdef, params)(jnp.asarray(clean)[None])[0]
  for layer in range(2):
    patched = interp.patched_logits(graphdef, params, clean, corrupted, layer, range(T))
    np.testing.assert_allclose(patched, clean_logits, atol=1e-5)


def test_attention_maps():
  cfg, graphdef, params = subject('llama')
  maps = np.asarray(interp.attention_maps(graphdef, params, prompt()))
  assert maps.shape == (cfg.n_layers, cfg.n_heads, T, T)
  np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(maps, 1) == 0)
  buf = io.BytesIO()
  interp.plot_attention(maps, list('abcdefghi'), layer=-1, head=3).savefig(buf, format='png')
  assert buf.tell() > 0


def test_bad_inputs_raise_interp_error_naming_the_valid_range():
  cfg, graphdef, params = subject('llama')
  maps = interp.attention_maps(graphdef, params, prompt())
  assert issubclass(interp.InterpError, ValueError)
  with pytest.raises(interp.InterpError, match=r'layer 2 is out of range: valid are 0\.\.1'):
    interp.plot_attention(maps, None, layer=2, head=0)
  with pytest.raises(interp.InterpError, match=r'head 4 is out of range: valid are 0\.\.3'):
    interp.plot_attention(maps, None, layer=0, head=4)
  with pytest.raises(interp.InterpError, match=r'position 9 is out of range: valid are 0\.\.8'):
    interp.direct_logit_attribution(graphdef, params, prompt(), 5, position=9)
  with pytest.raises(interp.InterpError, match=r'position -10 is out of range'):
    interp.integrated_gradients(graphdef, params, prompt(), 5, position=-10)
  with pytest.raises(interp.InterpError, match=r'position 9 is out of range'):
    interp.patched_logits(graphdef, params, prompt(), prompt(1), 0, [9])
  with pytest.raises(interp.InterpError, match=r'layer -3 is out of range'):
    interp.patched_logits(graphdef, params, prompt(), prompt(1), -3, [0])
  with pytest.raises(interp.InterpError, match='same length.*got 9 and 8'):
    interp.activation_patching(graphdef, params, prompt(), prompt(t=8), 5)
  with pytest.raises(interp.InterpError, match=r'target 300 is not a token id: valid are 0\.\.299'):
    interp.direct_logit_attribution(graphdef, params, prompt(), VOCAB)
  with pytest.raises(interp.InterpError, match=r'outside the vocabulary \[0, 300\)'):
    interp.logit_lens(graphdef, params, [1, 2, VOCAB])
  with pytest.raises(interp.InterpError, match='tokens_text has 3 entries for 9 positions'):
    interp.plot_attention(maps, ['a', 'b', 'c'], 0, 0)


def test_tools_an_encoder_cannot_answer_are_refused_naming_what_it_supports():
  cfg = config_for_size('bert-smoke', VOCAB)
  with pytest.raises(interp.InterpError, match='decoder models .* only.*supports attention_maps, logit_lens'):
    interp.direct_logit_attribution(interp.graphdef_for(cfg), random_params(cfg), prompt(), 5)
