"""Tests of llm/eval/scorer.py: ModelLM against the harness's own code and the plain model.

Three independent answers are compared on a small random model of each family:

* ``HarnessLM``: lm-evaluation-harness's ``TemplateLM.loglikelihood`` (its tokenisation,
  whitespace move and empty-context rule), whose ``_loglikelihood_tokens`` does what
  ``HFLM`` does with our model: the last max_length + 1 tokens, full logits,
  log_softmax, the continuation's slice summed, argmax for ``is_greedy``;
* ``ModelLM(pack=False, share_context=False)``: one request per row;
* ``ModelLM()``: packed rows, shared contexts in branches, deduplicated requests.

Compiled programs are shared by every ModelLM of one model and mesh, so the tests reuse a
few shapes. The multi-device check runs this file as a script with 4 simulated CPU devices.
"""

import functools
import json
import os
import subprocess
import sys
import types

if __name__ == '__main__':  # the sharded worker: devices are fixed when JAX's CPU backend starts
  os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

from llm import sharding  # noqa: E402
from llm.eval import scorer  # noqa: E402
from llm.models import ModelConfig, Transformer  # noqa: E402
from llm.tokenizer import ByteTokenizer  # noqa: E402

try:  # lm-evaluation-harness: the reference for tokenisation, windows and stop strings
  from lm_eval.api.model import TemplateLM  # noqa: E402
  from lm_eval.models.utils import normalize_gen_kwargs, postprocess_generated_text  # noqa: E402
  from lm_eval.utils import get_rolling_token_windows, make_disjoint_window  # noqa: E402
except ImportError:
  TemplateLM = None
needs_harness = pytest.mark.skipif(TemplateLM is None, reason='lm-eval is not installed (requirements.txt)')

L = 64  # the model's max_seq_len and the scorer's max_length
FAMILIES = ['llama', 'gpt2']
TOK = ByteTokenizer()


@functools.lru_cache(maxsize=None)
def built(family: str):
  """(cfg, graphdef, params) of a small random model.

  The parameters are drawn with numpy into the model's own structure (``nnx.eval_shape``):
  compiling the model's threefry initialisers costs about 1.5 s per parameter on XLA:CPU,
  half a minute per model, and these tests need any random model, not that draw. Norm
  scales are 1 + noise, everything else (biases too) N(0, 0.05^2).
  """
  cfg = ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=L, family=family)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, jax.random.key(0))))
  rng = np.random.default_rng(0 if family == 'llama' else 1)
  def draw(path, x):
    noise = rng.normal(0.0, 0.05, x.shape).astype(np.float32)
    return noise + 1.0 if path[-1].key == 'scale' else noise
  return cfg, graphdef, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(abstract))


@functools.lru_cache(maxsize=None)
def one_device_mesh():
  return sharding.make_mesh({'data': 1}, devices=jax.devices()[:1])


def make_lm(family: str, mesh=None, **kw) -> scorer.ModelLM:
  cfg, graphdef, params = built(family)
  return scorer.ModelLM(graphdef, cfg, params, TOK, mesh or one_device_mesh(), **kw)


@functools.lru_cache(maxsize=None)
def _log_softmax_fn(family: str):
  _, graphdef, _ = built(family)
  return jax.jit(lambda params, tokens_bt: jax.nn.log_softmax(nnx.merge(graphdef, params)(tokens_bt), axis=-1))


def direct_scores(family: str, pairs) -> list[tuple[float, bool]]:
  """HFLM._loglikelihood_tokens with our model: input (ctx + cont)[-(L+1):][:-1], right-padded."""
  _, _, params = built(family)
  inputs = [(list(c) + list(x))[-(L + 1):][:-1] for c, x in pairs]
  out = []
  for i in range(0, len(inputs), 16):  # fixed [16, L] batches: one compile; causal, so padding is inert
    chunk = inputs[i:i + 16]
    tokens = np.zeros((16, L), np.int32)
    for r, inp in enumerate(chunk):
      tokens[r, :len(inp)] = inp
    logp_btv = np.asarray(_log_softmax_fn(family)(params, tokens))
    for r, inp in enumerate(chunk):
      cont = np.asarray(pairs[i + r][1])
      n, k = len(inp), len(cont)
      lp_kv = logp_btv[r, n - k:n]
      out.append((float(lp_kv[np.arange(k), cont].astype(np.float64).sum()), bool((lp_kv.argmax(-1) == cont).all())))
  return out


class HarnessLM(TemplateLM or object):
  """The harness's TemplateLM tokenisation over ``direct_scores``, HF-style with add_bos_token."""

  max_length = L
  eot_token_id = TOK.eos_id
  prefix_token_id = TOK.bos_id

  def __init__(self, family: str):
    super().__init__()
    self.family = family

  def tok_encode(self, string, add_special_tokens=None, **kwargs):
    ids = TOK.encode(string).tolist()
    return ids if add_special_tokens is False else [TOK.bos_id] + ids

  def _loglikelihood_tokens(self, requests, **kwargs):
    self.seen = [(tuple(c), tuple(x)) for _, c, x in requests]
    return direct_scores(self.family, self.seen)

  def loglikelihood_rolling(self, requests, disable_tqdm=False):
    raise NotImplementedError

  def generate_until(self, requests, disable_tqdm=False):
    raise NotImplementedError


def harness_loglikelihood(family, requests):
  lm = HarnessLM(family)
  res = lm.loglikelihood([types.SimpleNamespace(args=r) for r in requests], disable_tqdm=True)
  return res, lm.seen


def greedy_requests(family: str) -> list[tuple[str, str]]:
  """Continuations that ARE the model's greedy ones (one or two tokens), so is_greedy is tested True.

  A random model's argmax is one of a few tokens; contexts are tried until it is an ASCII
  byte (a one-character string that re-encodes to that token).
  """
  rng = np.random.default_rng(0)
  out = []
  for _ in range(64):
    context = ''.join(chr(c) for c in rng.integers(97, 123, rng.integers(3, 20)))
    ctx = (TOK.bos_id, *TOK.encode(context).tolist())
    cont = []
    for _ in range(2):
      t = int(np.argmax(direct_logits_last(family, ctx + tuple(cont))))
      if not 3 <= t < 3 + 128:
        break
      cont.append(t)
    if cont:
      out.append((context, TOK.decode(cont)))
    if len(out) >= 3:
      break
  assert out, 'no context with an ASCII greedy continuation; change the contexts'
  return out


def direct_logits_last(family, tokens):
  _, _, params = built(family)
  padded = np.zeros((16, L), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(_log_softmax_fn(family)(params, padded))[0, len(tokens) - 1]


MC = 'Question: Is the sky blue on a clear day?\nAnswer:'
FRANCE = 'The capital of France is '  # trailing space: moves to the continuation
LONG = ('It was the best of times, it was the worst of times, it was the age of wisdom, '
        'it was the age of foolishness')  # with any continuation, longer than L + 1 tokens
MID = 'Pick the right words for this sentence:'  # 40 tokens with BOS: its 3 choices need 2 rows' worth


def mixed_requests(family: str) -> list[tuple[str, str]]:
  return [
      (MC, ' yes'), (MC, ' no'), (MC, ' only at noon'), (MC, ' never, not even once'),
      (FRANCE, 'Paris'), (FRANCE, 'Lyon'), (FRANCE, 'Marseille'),
      ('', "He couldn't figure out the issue with the rope."),
      ('', "She couldn't figure out the issue with the rope."),
      ('Café au lait, réponse:', ' oui'), ('Café au lait, réponse:', ' non'),
      (LONG, ' the end'), (LONG, ' and a new beginning'),
      ('Q: 2+2=', ' 4'), ('Q: 2+2=', ' 5'), ('Q: 2+2=', ' 4'),  # an exact duplicate
      ('The capital of France is', ' Paris'),  # the same tokens as (FRANCE, 'Paris')
      (MID, ' alpha bet'), (MID, ' gamma delt'), (MID, ' epsilon'),
      ('  ', 'only whitespace context'),
      *greedy_requests(family),
  ]


def assert_scores_close(got, want):
  got_ll, want_ll = np.array([g[0] for g in got]), np.array([w[0] for w in want])
  tol = 2e-5 * np.maximum(1.0, np.abs(want_ll))  # float32 sums; observed ~5e-8
  bad = np.nonzero(np.abs(got_ll - want_ll) > tol)[0]
  assert not len(bad), [(i, got_ll[i], want_ll[i]) for i in bad]
  assert [g[1] for g in got] == [w[1] for w in want]


# ---------------------------------------------------------------------------------------------
# Pure pieces: windows, tokenisation, stop strings, packing.
# ---------------------------------------------------------------------------------------------


@needs_harness
def test_rolling_windows_are_the_harness_windows():
  for max_len in (1, 2, 7, 64):
    for n in range(0, 150):
      toks = list(range(3, 3 + n))
      want = [tuple(map(tuple, make_disjoint_window(w)))
              for w in get_rolling_token_windows(toks, prefix_token=1, max_seq_len=max_len, context_len=1)]
      assert scorer.rolling_windows(toks, 1, max_len) == want, (max_len, n)


@needs_harness
def test_encode_pair_is_the_harness_split():
  requests = mixed_requests('llama')
  _, seen = harness_loglikelihood('llama', requests)
  lm = make_lm('llama')
  assert [lm.encode_pair(c, x) for c, x in requests] == seen
  assert lm.encode_pair(FRANCE, 'Paris') == lm.encode_pair(FRANCE.rstrip(), ' Paris')
  assert lm.encode_pair('', 'hi') == ((TOK.bos_id,), tuple(TOK.encode('hi').tolist()))


@needs_harness
def test_stop_strings_and_gen_kwargs_as_the_harness():
  for text, until in [('xabc', ['bc', 'ab']), ('a\n\nb', ['\n\n']), ('no stop', ['Q:']), ('a.b', '.'),
                      ('abc', ['', 'c'])]:
    assert scorer.cut_at_stop(text, [until] if isinstance(until, str) else until) == \
        postprocess_generated_text(text, until, None)
  for kw in [{'until': '\n'}, {'until': ['a', 'b'], 'max_new_tokens': 5}, {'max_tokens': 7, 'max_gen_toks': 3},
             {'until': ['x'], 'do_sample': False, 'temperature': 0.0}]:
    want = normalize_gen_kwargs(kw, 256)
    got = scorer.normalise_gen_kwargs(kw, 256)
    assert (got['until'], got['max_gen_toks']) == (want['until'], want['max_gen_toks'])


def test_pack_rows_fits_and_fills():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 65, 500).tolist()
  rows, widths = scorer.pack_rows(lengths, 64)
  assert sorted(i for r in rows for i in r) == list(range(500))
  assert set(widths) == {64} and all(sum(lengths[i] for i in r) <= 64 for r in rows)
  assert len(rows) <= int(np.ceil(sum(lengths) / 64 * 1.1)) + 1  # best-fit decreasing is near optimal
  # Rows as narrow as their longest item allows (at least min_width); short items fill gaps.
  lengths = rng.integers(1, 200, 300).tolist() + [3] * 100
  rows, widths = scorer.pack_rows(lengths, 256, min_width=32)
  assert sorted(i for r in rows for i in r) == list(range(400))
  for r, w in zip(rows, widths):
    assert sum(lengths[i] for i in r) <= w and w == scorer._bucket(max(lengths[r[0]], 32), 16, 256)
  assert set(widths) == {32, 64, 128, 256}
  assert sum(widths) < 1.15 * sum(lengths)


def test_pack_width_floor():
  from llm.models import config_for_size
  assert scorer.pack_width_floor(config_for_size('tiny', 259), 512) == 128
  assert scorer.pack_width_floor(config_for_size('tiny', 259), 64) == 64
  assert scorer.pack_width_floor(config_for_size('124m', 32000), 1024) == 1024


# ---------------------------------------------------------------------------------------------
# Log-likelihoods against the harness and the one-request-per-row reference.
# ---------------------------------------------------------------------------------------------


@needs_harness
@pytest.mark.parametrize('family', FAMILIES)
def test_loglikelihood_equals_harness_and_one_request_per_row(family):
  requests = mixed_requests(family)
  want, seen = harness_loglikelihood(family, requests)
  n_truncated = sum(len(c) + len(x) > L + 1 for c, x in seen)
  assert n_truncated == 3  # LONG twice, and one choice of MC
  assert any(g for _, g in want), 'the greedy requests must be greedy'

  fast = make_lm(family, batch_rows=8)
  got = fast.loglikelihood(requests)
  assert_scores_close(got, want)
  assert fast.stats['truncated'] == n_truncated
  assert fast.stats['requests'] == len(requests)
  assert fast.stats['unique_sequences'] == len(set(seen))  # duplicates scored once

  ref = make_lm(family, pack=False, share_context=False, batch_rows=32)
  assert_scores_close(ref.loglikelihood(requests), want)
  assert ref.stats['truncated'] == n_truncated


@pytest.mark.parametrize('family', FAMILIES)
def test_results_come_back_in_input_order(family):
  requests = mixed_requests(family)
  lm = make_lm(family, batch_rows=8)
  base = lm.loglikelihood(requests)
  perm = np.random.default_rng(1).permutation(len(requests))
  shuffled = lm.loglikelihood([requests[i] for i in perm])
  assert_scores_close(shuffled, [base[i] for i in perm])
  assert len({round(ll, 3) for ll, _ in base}) > len(requests) // 2  # the check can tell requests apart


@needs_harness
@pytest.mark.parametrize('family,add_bos', [('llama', None), ('gpt2', None), ('llama', False)])
def test_rolling_equals_harness_windows(family, add_bos):
  """HFLM.loglikelihood_rolling: windows over tok_encode(text) after the prefix token. A
  tokenizer that adds BOS (ours by default) puts its own BOS first, so that BOS is scored
  too, as the harness scores it for Llama's tokenizer; add_bos_token=False drops it."""
  texts = ['To be, or not to be, that is the question: whether tis nobler in the mind to suffer '
           'the slings and arrows of outrageous fortune, or to take arms against a sea of troubles.',
           'A short one.', '']
  assert len(TOK.encode(texts[0])) > 2 * L
  want = []
  for text in texts:
    tokens = ([] if add_bos is False else [TOK.bos_id]) + TOK.encode(text).tolist()
    windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
        tokens, prefix_token=TOK.bos_id, max_seq_len=L, context_len=1)]
    want.append(sum(ll for ll, _ in direct_scores(family, windows)) if windows else 0.0)
  for lm in (make_lm(family, batch_rows=8, add_bos_token=add_bos),
             make_lm(family, pack=False, share_context=False, batch_rows=32, add_bos_token=add_bos)):
    got = lm.loglikelihood_rolling(texts)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert lm.stats['truncated'] == 0
  assert (want[2] == 0.0) == (add_bos is False)  # an empty text scores its BOS only when BOS is added


def test_packing_packs_and_sharing_shares():
  """Fewer rows and tokens than one request per row, the same numbers."""
  rng = np.random.default_rng(0)
  words = ['the', 'rope', 'kids', 'money', 'poor', 'rich', 'tried', 'issue', 'best', 'growing']
  requests = [('', ' '.join(rng.choice(words, 3))) for _ in range(24)]  # CrowS-Pairs style
  requests += [(f'Review {i}: a {w} film. Sentiment:', c) for i, w in enumerate(words[:6])
               for c in (' positive', ' negative')]  # SST-2 style, one context, two choices
  fast = make_lm('llama', batch_rows=8)
  ref = make_lm('llama', pack=False, share_context=False, batch_rows=8)
  assert_scores_close(fast.loglikelihood(requests), ref.loglikelihood(requests))
  assert fast.stats['forward_rows'] <= len(requests) // 3, fast.stats  # bucket padding rows included
  assert fast.stats['forward_rows'] <= ref.stats['forward_rows'] // 3
  assert fast.stats['tokens_forward'] < ref.stats['tokens_forward']  # each shared context once
  assert fast.stats['row_fill'] > 0.7
  narrow = make_lm('llama', batch_rows=8)
  narrow.pack_floor = scorer.MIN_WIDTH  # rows as narrow as their longest request: batches of 16, 32, 64
  widths = []
  layout = narrow._layout
  narrow._layout = lambda rows, w: (widths.append(w), layout(rows, w))[1]
  assert_scores_close(narrow.loglikelihood(requests), ref.loglikelihood(requests))
  assert len(set(widths)) > 1, widths
  piped = make_lm('llama', batch_rows=8)
  piped._block_each = False  # the accelerator path: one batch in flight while the next is laid out
  assert_scores_close(piped.loglikelihood(requests), ref.loglikelihood(requests))


def test_edge_cases():
  lm = make_lm('llama', batch_rows=8)
  assert lm.loglikelihood([('context', '')]) == [(0.0, True)]  # an empty sum
  # A continuation longer than max_length (the harness asserts) is scored in rolling windows:
  # with an empty context that is exactly the text's rolling log-likelihood.
  long = 'Ask not what your country can do for you; ask what you can do for your country. ' * 2
  assert len(long) > 2 * L
  (ll, greedy), = lm.loglikelihood([('', long)])
  # (without add_bos: rolling texts then start with the prefix token alone, as this context does)
  np.testing.assert_allclose(ll, make_lm('llama', batch_rows=8, add_bos_token=False).loglikelihood_rolling([long])[0],
                             rtol=1e-6)
  assert not greedy and lm.stats['truncated'] == 1
  assert lm.loglikelihood([]) == [] and lm.loglikelihood_rolling([]) == []
  with pytest.raises(ValueError, match='learned position table'):
    make_lm('gpt2', max_length=L + 1)


# ---------------------------------------------------------------------------------------------
# generate_until: grouping, order, prompts, stop strings.
# ---------------------------------------------------------------------------------------------


def test_generate_until_groups_cuts_and_keeps_order():
  calls = []

  def fake_generate(prompts, gen_kwargs):
    calls.append((prompts, gen_kwargs))
    return [f'<{len(p)}>\nmore STOP tail' for p in prompts]

  lm = make_lm('llama', generate_fn=fake_generate, max_gen_toks=16)
  newline = {'until': ['\n'], 'max_gen_toks': 8}
  requests = [('Q: one', newline), ('Q: three', {'until': 'STOP'}), ('Q: two longer', dict(newline)),
              ('x' * 100, {'until': ['\n'], 'max_gen_toks': 24})]
  out = lm.generate_until(requests)
  assert out == ['<7>', '<9>\nmore ', '<14>', f'<{L - 24}>']
  assert len(calls) == 3  # one per distinct gen_kwargs
  prompts, kw = calls[0]
  assert [len(p) for p in prompts] == [14, 7]  # longest first, as the harness orders them
  assert all(p[0] == TOK.bos_id for p in prompts) and TOK.decode(prompts[1]) == 'Q: one'
  assert kw['until'] == ['\n'] and kw['max_gen_toks'] == 8
  assert calls[1][1] == {'until': ['STOP'], 'max_gen_toks': 16}  # the scorer's default budget
  assert calls[2][0] == [TOK.encode('x' * 100)[-(L - 24):].tolist()]  # cut from the left, BOS too
  assert lm.stats['truncated'] == 1 and lm.stats['generate_requests'] == 4
  with pytest.raises(ValueError, match='no room'):
    lm.generate_until([('q', {'max_gen_toks': L})])
  with pytest.raises(ValueError, match='generate_fn'):
    make_lm('llama').generate_until(requests)


# ---------------------------------------------------------------------------------------------
# Sharded over several devices: the same numbers as one device.
# ---------------------------------------------------------------------------------------------


def _sharded_worker() -> dict:
  assert jax.device_count() == 4, jax.devices()
  requests = mixed_requests('llama')
  one = make_lm('llama', batch_rows=4).loglikelihood(requests)
  out = {}
  for name, shape in {'data4': {'data': 4}, 'data2_fsdp2': {'data': 2, 'fsdp': 2}}.items():
    lm = make_lm('llama', mesh=sharding.make_mesh(shape), batch_rows=3)  # rounds up to 4 rows
    got = lm.loglikelihood(requests)
    out[name] = dict(max_diff=max(abs(a[0] - b[0]) / max(1.0, abs(b[0])) for a, b in zip(got, one)),
                     same_greedy=[a[1] for a in got] == [b[1] for b in one],
                     rows=lm.stats['forward_rows'], batches=lm.stats['forward_batches'])
  return out


def test_sharded_equals_one_device():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = '--xla_backend_optimization_level=0'  # as tests/conftest.py sets for every test
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  for name, r in result.items():
    assert r['max_diff'] < 1e-5 and r['same_greedy'], (name, r)
    assert r['rows'] == 4 * r['batches'], (name, r)  # 3 rows rounded up to the data-parallel size


if __name__ == '__main__':
  print(json.dumps(_sharded_worker()))
