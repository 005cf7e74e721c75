"""Tests of llm/interp on small random encoders (BERT) and encoder-decoders (T5): attention maps,
the logit lens, BERT's integrated gradients, the refusals, and the model options they rely on
(the encoder's embeds_btd, T5 decode's cross-attention weights) leaving the forward pass
bit-identical. Few distinct shapes, so few compiles: keep this file fast."""

import functools

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
T = 9  # encoder input (BERT's prompt, T5's inputs)
T_DEC = 6  # T5's decoder input
SIZES = {'bert': ('bert-smoke', {}),
         't5': ('t5-smoke', dict(n_layers=2)),  # v1.1: gated GELU, untied; 2 layers a side so layers differ
         't5-v1.0': ('t5-smoke', dict(n_layers=2, mlp='relu', tie_embeddings=True))}  # logits scaled d^-0.5


@functools.lru_cache(maxsize=None)
def subject(name):
  """(cfg, graphdef, params) with random weights (std 0.1, so layers matter)."""
  size, overrides = SIZES[name]
  cfg = config_for_size(size, VOCAB, max_seq_len=32, **overrides)
  return cfg, interp.graphdef_for(cfg), random_params(cfg)


def prompt(seed=0, t=T):
  return np.random.default_rng(seed).integers(0, VOCAB, t)


@functools.partial(jax.jit, static_argnums=0)
def _bert_runs(graphdef, params, tokens_bt):
  m = nnx.merge(graphdef, params)
  embeds_btd = jnp.take(m.embed_vd[...], tokens_bt, axis=0)
  return (m(tokens_bt), m.head(m.trunk(None, embeds_btd=embeds_btd).hidden_btd),
          m.head(m.trunk(tokens_bt, collect=('residuals', 'attention')).hidden_btd), None)


@functools.partial(jax.jit, static_argnums=0)
def _t5_runs(graphdef, params, tokens_bs, dec_bt):
  m = nnx.merge(graphdef, params)
  memory = m.memory(m.encode(tokens_bs).hidden_btd)
  out = m.decode(dec_bt, memory, collect=('residuals', 'attention', 'cross_attention'))
  return m(tokens_bs, dec_bt), m.head(out.hidden_btd), None, out


@functools.lru_cache(maxsize=None)
def runs(name):
  """(the model's own logits [1, t, V] on prompt() (and, T5, prompt(1, T_DEC)), the same through the new
  options (BERT's embeds_btd; T5's decode collecting everything), through BERT's collecting trunk, T5's
  decode output): one compiled program a model, shared by the tests."""
  _, graphdef, params = subject(name)
  tokens_bt = jnp.asarray(prompt())[None]
  if name == 'bert':
    return _bert_runs(graphdef, params, tokens_bt)
  return _t5_runs(graphdef, params, tokens_bt, jnp.asarray(prompt(1, T_DEC))[None])


def test_new_model_options_leave_the_forward_pass_bit_identical():
  plain, embedded, collected, _ = runs('bert')
  np.testing.assert_array_equal(embedded, plain)
  np.testing.assert_array_equal(collected, plain)
  cfg = subject('t5')[0]
  plain, collected, _, out = runs('t5')
  np.testing.assert_array_equal(collected, plain)
  assert out.cross_attention_lbnts.shape == (cfg.n_decoder_layers, 1, cfg.n_heads, T_DEC, T)


def test_bert_attention_maps_are_bidirectional():
  cfg, graphdef, params = subject('bert')
  maps = np.asarray(interp.attention_maps(graphdef, params, prompt()))
  assert maps.shape == (cfg.n_layers, cfg.n_heads, T, T)
  np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
  assert (maps[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] > 0).all()  # and the keys after it
  typed = np.asarray(interp.attention_maps(graphdef, params, prompt(), types=[0] * 4 + [1] * 5))
  assert not np.allclose(typed, maps)  # token types reach the attention
  assert isinstance(interp.plot_attention(maps, list('abcdefghi'), layer=-1, head=3), Figure)


def test_t5_attention_maps_of_encoder_decoder_and_cross():
  cfg, graphdef, params = subject('t5')
  l, n = cfg.n_layers, cfg.n_heads
  enc = np.asarray(interp.attention_maps(graphdef, params, prompt(), kind='encoder'))  # dec_tokens not needed
  assert enc.shape == (l, n, T, T)
  np.testing.assert_allclose(enc.sum(-1), 1.0, atol=1e-5)
  assert (np.triu(enc, 1).sum((-2, -1)) > 0).all()  # bidirectional
  dec = np.asarray(interp.attention_maps(graphdef, params, prompt(), dec_tokens=prompt(1, T_DEC), kind='decoder'))
  assert dec.shape == (cfg.n_decoder_layers, n, T_DEC, T_DEC)
  np.testing.assert_allclose(dec.sum(-1), 1.0, atol=1e-5)
  assert np.all(np.triu(dec, 1) == 0)  # causal
  cross = np.asarray(interp.attention_maps(graphdef, params, prompt(), dec_tokens=prompt(1, T_DEC), kind='cross'))
  assert cross.shape == (cfg.n_decoder_layers, n, T_DEC, T)
  np.testing.assert_allclose(cross.sum(-1), 1.0, atol=1e-5)
  assert (cross > 0).all()  # every decoder position sees every encoder position
  fig = interp.plot_attention(cross, [f'd{i}' for i in range(T_DEC)], layer=1, head=0,
                              key_text=[f'e{i}' for i in range(T)])
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [f'e{i}' for i in range(T)]


@pytest.mark.parametrize('name', list(SIZES))
def test_logit_lens_last_layer_is_the_models_distribution(name):
  cfg, graphdef, params = subject(name)
  tokens = prompt()
  if cfg.arch == 'encoder':
    lens = interp.logit_lens(graphdef, params, tokens, top_k=3, full=True)
    logits_tv = runs(name)[0][0]
    read, targets = tokens, tokens  # an MLM scores the token at each position
    layers = cfg.n_layers
  else:
    dec = prompt(1, T_DEC)
    lens = interp.logit_lens(graphdef, params, tokens, dec_tokens=dec, top_k=3, full=True)
    logits_tv = runs(name)[0][0]
    read, targets = dec, np.append(dec[1:], -1)  # the decoder's next token
    layers = cfg.n_decoder_layers
  t = len(read)
  logprobs_tv = jax.nn.log_softmax(logits_tv)
  assert lens.logprobs_ltv.shape == (layers, t, cfg.padded_vocab)
  np.testing.assert_allclose(lens.logprobs_ltv[-1], logprobs_tv, atol=1e-5)
  np.testing.assert_array_equal(lens.top_ids_ltk[-1, :, 0], np.argmax(logprobs_tv, -1))
  np.testing.assert_array_equal(lens.targets_t, targets)
  scored = targets >= 0
  np.testing.assert_allclose(lens.target_logprobs_lt[-1, scored], logprobs_tv[np.arange(t)[scored], targets[scored]],
                             atol=1e-5)
  assert np.isnan(lens.target_logprobs_lt[:, ~scored]).all()
  assert not np.allclose(lens.logprobs_ltv[0], lens.logprobs_ltv[-1])  # earlier layers do differ
  assert isinstance(interp.plot_logit_lens(lens, id_text=str), Figure)


def test_bert_integrated_gradients_completeness():
  """Uniform steps (BERT adds learned positions and token types, so zero embeddings are no degenerate
  baseline); the masked-LM output at a middle position depends on tokens on both sides of it."""
  _, graphdef, params = subject('bert')
  ig = interp.integrated_gradients(graphdef, params, prompt(), 5, position=3, steps=32, batch=16,
                                   types=[0] * 4 + [1] * 5)
  assert ig.spacing == 'uniform' and ig.attributions_t.shape == (T,)
  assert ig.completeness_error < 1e-3, ig.completeness_error
  assert abs(ig.f_input - ig.f_baseline) > 1e-2  # a real difference to explain
  assert np.abs(ig.attributions_t[:3]).max() > 0 and np.abs(ig.attributions_t[4:]).max() > 0
  assert isinstance(interp.plot_integrated_gradients(ig), Figure)


def test_refusals_name_what_is_supported():
  _, bert, bert_params = subject('bert')
  _, t5, t5_params = subject('t5')
  tokens = prompt()
  for graphdef, params, supported in ((bert, bert_params, 'attention_maps, logit_lens, integrated_gradients'),
                                      (t5, t5_params, 'attention_maps, logit_lens$')):
    for tool, args in ((interp.direct_logit_attribution, (tokens, 5)),
                       (interp.activation_patching, (tokens, tokens, 5)),
                       (interp.patched_logits, (tokens, tokens, 0, [0]))):
      match = f'{tool.__name__} covers decoder models .* only.*supports {supported}'
      with pytest.raises(interp.InterpError, match=match):
        tool(graphdef, params, *args)
  with pytest.raises(interp.InterpError, match="integrated_gradients .*T5's encode does not take.*encoder_decoder"):
    interp.integrated_gradients(t5, t5_params, tokens, 5)
  assert interp.COVERAGE['encoder'] == ('attention_maps', 'logit_lens', 'integrated_gradients')


def test_bad_inputs_raise_interp_error():
  cfg, bert, bert_params = subject('bert')
  _, t5, t5_params = subject('t5')
  tokens, dec = prompt(), prompt(1, T_DEC)
  with pytest.raises(interp.InterpError, match="three attentions; pass kind='encoder'"):
    interp.attention_maps(t5, t5_params, tokens, dec_tokens=dec)
  with pytest.raises(interp.InterpError, match="kind='cross'.*one attention"):
    interp.attention_maps(bert, bert_params, tokens, kind='cross')
  with pytest.raises(interp.InterpError, match='pass dec_tokens'):
    interp.attention_maps(t5, t5_params, tokens, kind='cross')
  with pytest.raises(interp.InterpError, match='pass dec_tokens'):
    interp.logit_lens(t5, t5_params, tokens)
  with pytest.raises(interp.InterpError, match='dec_tokens is the decoder input .* an encoder \\(bert\\)'):
    interp.logit_lens(bert, bert_params, tokens, dec_tokens=dec)
  with pytest.raises(interp.InterpError, match='types are token types .* encoder_decoder \\(t5\\) has none'):
    interp.logit_lens(t5, t5_params, tokens, dec_tokens=dec, types=np.zeros(T, int))
  with pytest.raises(interp.InterpError, match=r'types must be \[t=9\] integer token types in 0\.\.1'):
    interp.attention_maps(bert, bert_params, tokens, types=[2] * T)
  with pytest.raises(interp.InterpError, match=r'dec_tokens holds ids outside the vocabulary'):
    interp.logit_lens(t5, t5_params, tokens, dec_tokens=[0, VOCAB])
  with pytest.raises(interp.InterpError, match=r'targets must be \[t=6\]'):
    interp.logit_lens(t5, t5_params, tokens, targets=tokens, dec_tokens=dec)
  with pytest.raises(interp.InterpError, match=r'position 9 is out of range: valid are 0\.\.8'):
    interp.integrated_gradients(bert, bert_params, tokens, 5, position=9)
  maps = np.zeros((2, 4, T_DEC, T), np.float32)  # a T5 cross-attention map's shape
  with pytest.raises(interp.InterpError, match=r'layer 2 is out of range: valid are 0\.\.1'):
    interp.plot_attention(maps, None, layer=2, head=0)
  with pytest.raises(interp.InterpError, match=r'head -5 is out of range: valid are 0\.\.3'):
    interp.plot_attention(maps, None, layer=0, head=-5)
  with pytest.raises(interp.InterpError, match='key_text has 6 entries for 9 positions'):
    interp.plot_attention(maps, None, 0, 0, key_text=list('abcdef'))
  with pytest.raises(interp.InterpError, match='tokens_text has 9 entries for 6 positions'):
    interp.plot_attention(maps, list('abcdefghi'), 0, 0)
