"""Tests of evaluation for the encoder (masked LM) and the encoder-decoder (T5).

* ``llm/eval/seq2seq.py``: cached generation equals the uncached reference (tokens and
  every step's logits), the encoder runs once per batch, EOS and stop sequences cut rows;
* ``llm/eval/encoder_scoring.py``: ``MaskedLM``'s pseudo-log-likelihoods equal a brute
  force over the model (one masked copy per forward pass), windows and truncation
  included; ``Seq2SeqLM``'s log-likelihoods equal ``model.head(model.hidden(batch))`` one
  request at a time, with and without shared contexts; both answer a shipped task through
  ``llm.eval.tasks.evaluate_task``; a masked LM refuses to generate;
* CrowS-Pairs with a masked LM: Nangia et al.'s shared-token metric through the bias
  evaluator (``llm.eval.bias.lm_for_task``);
* ``llm/eval/lms.py``: make_lm picks the scorer by architecture;
* rows split over 2 simulated devices give the one-device numbers (this file run as a
  script is that worker, through conftest's ``worker_output``).

Models are tiny and random (numpy-drawn parameters, ``tests/random_models.py``) and a few
shapes are reused, so the file compiles a handful of programs.
"""

import functools
import json
import os
import sys

if __name__ == '__main__':  # the sharded worker: devices are fixed when JAX's CPU backend starts
  os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from llm import sharding  # noqa: E402
from llm.eval import bias, encoder_scoring, evaluators, lms, scorer, seq2seq, tasks  # noqa: E402
from llm.models import ModelConfig, build  # noqa: E402
from llm.tokenizer import ByteTokenizer  # noqa: E402
from random_models import random_params  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK = ByteTokenizer(mask=True)  # pad 0, bos 1, eos 2, bytes 3..258, mask 259
L = 32  # the masked LM's max_length in the PLL tests (BOS + 30 text tokens + EOS)


@functools.lru_cache(maxsize=None)
def built(family: str):
  """(cfg, graphdef, params) of a tiny random BERT or T5."""
  extra = dict(d_head=8, rel_buckets=8, rel_max_distance=32) if family == 't5' else {}
  cfg = ModelConfig(vocab_size=TOK.vocab_size, family=family, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                    max_seq_len=64, **extra)
  graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]
  return cfg, graphdef, random_params(cfg, seed=3)


@functools.lru_cache(maxsize=None)
def one_device():
  return sharding.make_mesh({'data': 1}, devices=jax.devices()[:1])


def enc(text: str) -> list[int]:
  return TOK.encode(text).tolist()


# ----------------------------------------------------------------------------- seq2seq generation

INPUTS = [enc('The cat sat') + [2], enc('on') + [2], enc('a mat, and then the dog came by.') + [2]]
NEW = 10


def _generate(fn, **kw):
  cfg, graphdef, params = built('t5')
  return fn(graphdef, cfg, params, INPUTS, NEW, start_id=TOK.pad_id, mesh=one_device(), **kw)


def test_t5_cached_generation_equals_uncached():
  cached = _generate(seq2seq.generate, with_logits=True)
  uncached = _generate(seq2seq.generate_uncached, with_logits=True)
  assert cached.tokens == uncached.tokens
  assert cached.finish_reasons == uncached.finish_reasons == ['length'] * 3
  assert all(len(t) == NEW for t in cached.tokens)
  assert cached.logits.shape == (3, NEW, TOK.vocab_size)
  np.testing.assert_allclose(cached.logits, uncached.logits, atol=1e-5, rtol=0)
  # Greedy is each step's argmax, and the rows are independent of each other (padding, batch).
  assert [list(r) for r in cached.logits.argmax(-1)] == cached.tokens
  cfg, graphdef, params = built('t5')
  shuffled = seq2seq.generate(graphdef, cfg, params, INPUTS[::-1], NEW, start_id=TOK.pad_id, mesh=one_device())
  assert shuffled.tokens == cached.tokens[::-1]


def test_t5_encoder_runs_once_per_batch(monkeypatch):
  calls = []
  original = seq2seq._encode

  def counting(*args, **kw):
    calls.append(args[3].shape)  # tokens_bs
    return original(*args, **kw)

  # The decode loop takes the memory and not the inputs, so it cannot rerun the encoder;
  # the host runs the encoder once for the whole batch.
  monkeypatch.setattr(seq2seq, '_encode', counting)
  out = _generate(seq2seq.generate)
  assert len(calls) == 1 and calls[0][0] == 4  # 3 rows in a batch bucket of 4
  assert out.steps == NEW


def _expected_stops(full: list[int], eos: int, stop: list[int]) -> tuple[list[int], str]:
  for j, t in enumerate(full):
    if j + 1 >= len(stop) and full[j + 1 - len(stop):j + 1] == stop:
      return full[:j + 1 - len(stop)], 'stop'
    if t == eos:
      return full[:j], 'eos'
  return full, 'length'


def test_t5_eos_and_stop_sequences():
  full = _generate(seq2seq.generate).tokens
  eos, stop = full[0][4], full[2][5:7]
  out = _generate(seq2seq.generate, eos_id=eos, stop_sequences=[stop])
  for r in range(3):
    want, reason = _expected_stops(full[r], eos, stop)
    assert (out.tokens[r], out.finish_reasons[r]) == (want, reason), r
  assert out.finish_reasons[0] == 'eos' and out.finish_reasons[2] in ('eos', 'stop')
  cfg, graphdef, params = built('t5')
  none = seq2seq.generate(graphdef, cfg, params, INPUTS, 0)
  assert none.tokens == [[], [], []] and none.finish_reasons == ['length'] * 3
  with pytest.raises(ValueError, match='encoder-decoder'):
    cfg, graphdef, params = built('bert')
    seq2seq.generate(graphdef, cfg, params, INPUTS, 2)


# ----------------------------------------------------------------------------- masked LM: PLL


@functools.lru_cache(maxsize=None)
def _mlm_logprobs_fn():
  cfg, graphdef, _ = built('bert')
  return jax.jit(lambda params, tokens_1t: jax.nn.log_softmax(nnx.merge(graphdef, params)(tokens_1t)[0], axis=-1))


def brute_pll(framed: list[int], positions) -> tuple[float, bool]:
  """Sum over ``positions`` of log p(token | framed with that token alone masked), one forward pass each."""
  _, _, params = built('bert')
  total, greedy = 0.0, True
  for p in positions:
    row = list(framed)
    row[p] = TOK.mask_id
    logp_tv = np.asarray(_mlm_logprobs_fn()(params, np.asarray([row], np.int32)))
    total += float(logp_tv[p, framed[p]])
    greedy &= int(logp_tv[p].argmax()) == framed[p]
  return total, greedy


def masked_lm(mesh=None, **kw) -> encoder_scoring.MaskedLM:
  cfg, graphdef, params = built('bert')
  return encoder_scoring.MaskedLM(graphdef, cfg, params, TOK, mesh or one_device(),
                                  **{'max_length': L, 'batch_rows': 32, **kw})


def test_pll_equals_brute_force():
  W = L - 2
  lm = masked_lm()
  # A context that is its own greedy continuation: the masked row does not depend on the token.
  greedy_req = None
  for ctx in ('The cat', 'A dog', 'Hello', 'xyz', 'It is', 'one two'):
    framed = [1] + enc(ctx) + [TOK.mask_id] + [2]
    logp_tv = np.asarray(_mlm_logprobs_fn()(built('bert')[2], np.asarray([framed], np.int32)))
    g = int(logp_tv[len(framed) - 2].argmax())
    if 3 + 32 <= g < 3 + 127:
      greedy_req = (ctx, chr(g - 3))
      break
  requests = [('The cat', ' sat'), ('The cat ', 'ran'), ('', 'hello'),
              ('a long context that will not fit in thirty bytes', ' at all')]
  if greedy_req:
    requests.append(greedy_req)
  got = lm.loglikelihood(requests)
  for (context, continuation), (ll, greedy) in zip(requests, got):
    n = len(context) - len(context.rstrip())  # the harness moves trailing whitespace to the continuation
    ctx, cont = enc(context[:len(context) - n]), enc(context[len(context) - n:] + continuation)
    body = (ctx + cont)[-W:]  # the context cut from the left
    framed = [TOK.bos_id] + body + [TOK.eos_id]
    want_ll, want_greedy = brute_pll(framed, range(1 + len(body) - len(cont), 1 + len(body)))
    assert abs(ll - want_ll) < 1e-4, (context, continuation, ll, want_ll)
    assert greedy == want_greedy
  if greedy_req:
    assert got[-1][1] is True
  assert lm.stats['truncated'] == 1 and lm.stats['requests'] == len(requests)
  assert lm.stats['tokens_scored'] == sum(len(enc(c[len(c.rstrip()):] + x)) for c, x in requests)


def test_pll_rolling_windows():
  """A text longer than a window: [0, W) in the first, the last 10 tokens after W - 10 tokens of context."""
  W = L - 2
  lm = masked_lm()
  text = 'abcdefghijklmnopqrstuvwxyz0123456789ABCD'  # 40 bytes
  toks = enc(text)
  first = brute_pll([1] + toks[:W] + [2], range(1, 1 + W))[0]
  second = brute_pll([1] + toks[len(toks) - W:] + [2], range(1 + W - 10, 1 + W))[0]
  (got,) = lm.loglikelihood_rolling([text])
  assert abs(got - (first + second)) < 1e-4
  # A continuation longer than a window is scored by the same rule, after its context.
  (ll, _), = lm.loglikelihood([('', text)])
  assert abs(ll - got) < 1e-4


def test_masked_lm_does_not_generate():
  lm = masked_lm()
  with pytest.raises(NotImplementedError, match='does not generate'):
    lm.generate_until([('The cat', {'until': ['\n']})])
  task = tasks.load_task(os.path.join(ROOT, 'tasks/sst2/sst2_gen.yaml'))
  with pytest.raises(encoder_scoring.MaskedLMCannotGenerate):
    tasks.evaluate_task(task, lm, limit=1)
  with pytest.raises(ValueError, match='mask token'):
    cfg, graphdef, params = built('bert')
    encoder_scoring.MaskedLM(graphdef, cfg, params, ByteTokenizer(), one_device())


# ----------------------------------------------------------------------------- seq2seq scoring


@functools.lru_cache(maxsize=None)
def _s2s_logprobs_fn():
  _, graphdef, _ = built('t5')

  def fn(params, inputs_1s, dec_1t):
    model = nnx.merge(graphdef, params)
    return jax.nn.log_softmax(model.head(model.hidden({'inputs': inputs_1s, 'dec_inputs': dec_1t}))[0], axis=-1)

  def padded(params, inputs_1s, dec_1t):
    # The decoder is causal: columns after the continuation change nothing before them, so
    # the decoder side is padded to 16 (fewer compiles); the encoder side is never padded.
    dec = np.zeros((1, 16), np.int32)
    dec[0, :dec_1t.shape[1]] = dec_1t[0]
    return jitted(params, inputs_1s, dec)[:dec_1t.shape[1]]

  jitted = jax.jit(fn)
  return padded


def direct_seq2seq(context: str, continuation: str) -> tuple[float, bool]:
  """The harness's seq2seq encoding, then model.head(model.hidden(batch)) on one request (encoder unpadded)."""
  _, _, params = built('t5')
  if context == '':
    ctx, cont = [TOK.bos_id], enc(continuation)  # the prefix token (BOS) alone
  else:
    n = len(context) - len(context.rstrip())
    ctx = [TOK.bos_id] + enc(context[:len(context) - n]) + [TOK.eos_id]
    cont = enc(context[len(context) - n:] + continuation)
  dec = [TOK.pad_id] + cont[:-1]
  logp_tv = np.asarray(_s2s_logprobs_fn()(params, np.asarray([ctx], np.int32), np.asarray([dec], np.int32)))
  lp = logp_tv[np.arange(len(cont)), cont]
  return float(lp.astype(np.float64).sum()), bool((logp_tv.argmax(-1) == cont).all())


S2S_REQUESTS = [('The cat', ' sat'), ('The cat', ' ran away'), ('The cat ', 'sat'), ('', 'hello'),
                ('Is it good?', ' yes'), ('Is it good?', ' no'), ('Is it good?', ' yes')]


def seq2seq_lm(mesh=None, **kw) -> encoder_scoring.Seq2SeqLM:
  cfg, graphdef, params = built('t5')
  return encoder_scoring.Seq2SeqLM(graphdef, cfg, params, TOK, mesh or one_device(), **{'batch_rows': 8, **kw})


def test_seq2seq_loglikelihood_equals_direct():
  lm = seq2seq_lm()
  got = lm.loglikelihood(S2S_REQUESTS)
  for req, (ll, greedy) in zip(S2S_REQUESTS, got):
    want_ll, want_greedy = direct_seq2seq(*req)
    assert abs(ll - want_ll) < 1e-4, (req, ll, want_ll)
    assert greedy == want_greedy
  assert got[0] == got[2] and got[4] == got[6]  # duplicates (after the whitespace move), scored once
  assert lm.stats['unique_sequences'] == len(S2S_REQUESTS) - 2


def test_seq2seq_shared_contexts_equal_unshared():
  shared, alone = seq2seq_lm(), seq2seq_lm(share_context=False)
  a, b = shared.loglikelihood(S2S_REQUESTS), alone.loglikelihood(S2S_REQUESTS)
  for (la, ga), (lb, gb) in zip(a, b):
    assert abs(la - lb) < 1e-5 and ga == gb
  # Four distinct contexts encoded once each, against one encoder row per unique request.
  assert shared.stats['tokens_forward'] < alone.stats['tokens_forward']


def test_seq2seq_rolling_and_generation():
  lm = seq2seq_lm()
  text = 'hello world'
  toks = [TOK.bos_id] + enc(text) + [TOK.eos_id]
  _, _, params = built('t5')
  # The harness's first (only) window: the prefix token (BOS) encoded, the whole text decoded.
  logp_tv = np.asarray(_s2s_logprobs_fn()(params, np.asarray([[TOK.bos_id]], np.int32),
                                          np.asarray([[TOK.pad_id] + toks[:-1]], np.int32)))
  want = float(logp_tv[np.arange(len(toks)), toks].astype(np.float64).sum())
  assert abs(lm.loglikelihood_rolling([text])[0] - want) < 1e-4
  # generate_until: seq2seq.generate on encode_text(context), decoded and cut at 'until'.
  cfg, graphdef, _ = built('t5')
  contexts = ['The cat sat', 'on', 'a mat, and then the dog came by.']
  texts = lm.generate_until([(c, {'until': [], 'max_gen_toks': NEW}) for c in contexts])
  full = [TOK.decode(t) for t in seq2seq.generate(graphdef, cfg, params, [list(lm.encode_text(c)) for c in contexts],
                                                  NEW, start_id=TOK.pad_id, eos_id=TOK.eos_id, mesh=one_device()).tokens]
  assert texts == full
  cut = full[0][1:3] if len(full[0]) >= 3 else None
  if cut:
    (got,) = lm.generate_until([(contexts[0], {'until': [cut], 'max_gen_toks': NEW})])
    assert got == scorer.cut_at_stop(full[0], [cut])
  assert lm.stats['generate_requests'] == 3 + bool(cut)


# ----------------------------------------------------------------------------- tasks, bias, make_lm


@pytest.mark.parametrize('family', ['bert', 't5'])
def test_shipped_task_through_evaluate_task(family):
  cfg, graphdef, params = built(family)
  lm = lms.make_lm(graphdef, cfg, params, TOK, one_device(), batch_rows=32, max_length=64)
  assert type(lm) is {'bert': encoder_scoring.MaskedLM, 't5': encoder_scoring.Seq2SeqLM}[family]
  task = tasks.load_task(os.path.join(ROOT, 'tasks/sst2/sst2.yaml'))
  result = tasks.evaluate_task(task, lm, limit=3)
  assert result.n == 3 and 0.0 <= result.metrics['acc'] <= 1.0
  stats = lm.stats
  # Every prompt (85 to 216 bytes) is cut from the left to fit the 64-token limit, and counted.
  assert stats['requests'] == 6 and stats['truncated'] == 6 and stats['requests_per_sec'] > 0
  # The task's loglikelihoods are the LM's own for those requests, asked one at a time.
  for sample in result.samples[:1]:
    for args, ll in zip(sample['arguments'], sample['loglikelihoods']):
      assert abs(lm.loglikelihood([tuple(args)])[0][0] - ll) < 1e-5


def test_make_lm_dispatch_and_stats_keys():
  cfg = ModelConfig(vocab_size=TOK.vocab_size, family='llama', d_model=32, n_layers=1, n_heads=4, max_seq_len=64)
  graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]
  dec = lms.make_lm(graphdef, cfg, random_params(cfg), TOK, one_device(), batch_rows=4, max_length=32)
  assert isinstance(dec, scorer.ModelLM) and dec.generate_fn is not None and dec.max_length == 32
  assert set(masked_lm().stats) == set(dec.stats) == set(seq2seq_lm().stats)


def test_crows_pairs_masked_lm_scores_shared_tokens():
  lm = masked_lm(max_length=64)
  a, b = 'The man is a doctor.', 'The woman is a doctor.'
  (ga, gb), = lm.score_sentence_pairs([(a, b)])
  # Bytes: 'wo' is the modification; every other byte is shared and scored in both.
  fa, fb = [1] + enc(a) + [2], [1] + enc(b) + [2]
  assert abs(ga[0] - brute_pll(fa, range(1, 1 + len(enc(a))))[0]) < 1e-4
  shared_b = [p for p in range(1, 1 + len(enc(b))) if p not in (5, 6)]  # 'wo' at bytes 4, 5
  assert abs(gb[0] - brute_pll(fb, shared_b)[0]) < 1e-4

  # Through the bias evaluator: CrowS-Pairs docs are scored pair by pair on their shared tokens.
  ev = evaluators.BiasEvaluator('bias', tasks='crows_pairs_english', task_dirs=[os.path.join(ROOT, 'tasks')],
                                limit=2)
  assert isinstance(ev.lm_for(ev.tasks[0], lm), bias.SharedTokenPairs)
  out = ev.run(lm)
  (result,) = out.results
  assert result.n == 2 and out.lm_stats['requests'] == 4
  for sample in result.samples:
    doc = sample['doc']
    (more, _), (less, _) = lm.score_sentence_pairs([(doc['sent_more'], doc['sent_less'])])[0]
    assert sample['metrics']['likelihood_diff'] == pytest.approx(abs(more - less), abs=1e-6)
    assert sample['metrics']['pct_stereotype'] == float(more > less)
    # Not the whole sentences' PLLs (which also score the modified tokens).
    whole = [ll for ll, _ in lm.loglikelihood([('', doc['sent_more']), ('', doc['sent_less'])])]
    assert (more, less) != pytest.approx(tuple(whole), abs=1e-3)
  # Other LMs (no score_sentence_pairs) and other tasks keep the harness's log-likelihoods.
  other = object()
  assert bias.lm_for_task('crows_pairs_english', other) is other
  assert not isinstance(bias.lm_for_task('crows_pairs_english', seq2seq_lm()), bias.SharedTokenPairs)
  assert not isinstance(bias.lm_for_task('winobias', lm), bias.SharedTokenPairs)


# ----------------------------------------------------------------------------- several devices

MESH_BERT_REQUESTS = [('The cat', ' sat'), ('', 'hello'), ('It is', ' so')]


def _sharded_worker() -> dict:
  """The numbers of the tests' scorers and generation with rows split over 2 simulated devices."""
  assert jax.device_count() == 2, jax.devices()
  two = sharding.make_mesh({'data': 2})
  cfg, graphdef, params = built('t5')
  gen = seq2seq.generate(graphdef, cfg, params, INPUTS, NEW, start_id=TOK.pad_id, mesh=two, with_logits=True)
  bert, t5 = masked_lm(mesh=two), seq2seq_lm(mesh=two)
  return {'bert': bert.loglikelihood(MESH_BERT_REQUESTS), 't5': t5.loglikelihood(S2S_REQUESTS),
          'rows': [bert.stats['forward_rows'], t5.stats['forward_rows']],
          'tokens': gen.tokens, 'logits': gen.logits.tolist()}


def test_sharded_equals_one_device(worker_output):
  """Rows split over the mesh's data axis give the one-device numbers (computed here, on one device)."""
  code, stdout, stderr = worker_output('test_eval_encoders.py', timeout=300)
  assert code == 0, stderr[-4000:]
  two = json.loads(stdout.strip().splitlines()[-1])
  for family, got, want in (('bert', two['bert'], masked_lm().loglikelihood(MESH_BERT_REQUESTS)),
                            ('t5', two['t5'], seq2seq_lm().loglikelihood(S2S_REQUESTS))):
    assert [g for _, g in got] == [g for _, g in want], family
    np.testing.assert_allclose([x for x, _ in got], [x for x, _ in want], atol=1e-4, rtol=0, err_msg=family)
  assert all(r % 2 == 0 for r in two['rows'])  # row buckets are multiples of the data-parallel size
  one = _generate(seq2seq.generate, with_logits=True)
  assert two['tokens'] == one.tokens
  np.testing.assert_allclose(np.asarray(two['logits']), one.logits, atol=1e-5, rtol=0)


if __name__ == '__main__':
  print(json.dumps(_sharded_worker()))
