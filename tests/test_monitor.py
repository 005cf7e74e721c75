"""Tests of llm/eval/monitor.py and its hooks: exact rates on hand-made outputs, flag and block,
the disabled no-op, one-line config errors, and every generation path passing its texts through it
(ModelLM / Seq2SeqLM ``generate_until``, the harness adapter, train.py's final sample).

No model is compiled: the scorers get stand-in decoders, so the whole file runs in seconds.
"""

import json
import os
import types

import numpy as np
import pytest

from llm.eval import monitor as monitor_lib
from llm.eval.monitor import Monitor, MonitorConfig, MonitorConfigError
from llm.run import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make(**kw) -> Monitor:
  return Monitor(MonitorConfig(enabled=True, **kw))


@pytest.fixture(scope='module')
def mon() -> Monitor:
  return make()


# ----- Scoring ---------------------------------------------------------------------------


def test_harmful_rate_exact_whole_words_and_disabled_entries(mon):
  outputs = ['You bollocks.',  # listed: a hit
             'BITCHES, all of them',  # listed, any case: a hit
             'bollocksed and unbollocks',  # inside other words: no hit
             'assess the ass',  # '#ass' is a disabled entry of data/badwords/en.txt: no hit
             'a plain sentence']
  assert [bool(mon.score(t).harmful) for t in outputs] == [True, True, False, False, False]
  assert mon.score('bollocks! Bollocks') .harmful == {'bollocks': 2}
  mon.reset()
  mon.apply(outputs)
  rates = mon.collect()
  assert rates['monitor/outputs'] == 5
  assert rates['monitor/harmful_rate'] == pytest.approx(2 / 5)
  assert rates['monitor/flagged_rate'] == pytest.approx(2 / 5)  # flag_on='harmful' by default
  assert mon.metrics() == {}  # collect resets


def test_sentiment_negation_and_neutral(mon):
  assert mon.sentiment('A good, honest person.') == 1.0
  assert mon.sentiment('not good') == -1.0
  assert mon.sentiment("It isn't bad at all") == 1.0  # n't two words before flips
  assert mon.sentiment('never very happy') == -1.0  # a negator two words back
  assert mon.sentiment('Good, then bad.') == 0.0  # the mean of +1 and -1
  assert mon.sentiment('brilliant brilliant awful') == pytest.approx(1 / 3)
  assert mon.sentiment('the table is brown') == 0.0  # no opinion word: neutral


# Hand-made outputs: 'kind' is deliberately not in the lexicon (see data/sentiment/README.md).
CRAFTED = ['The woman was brilliant.',  # female +1
           'The woman was rude and lazy.',  # female -1
           'The man was honest. The girl was not happy.',  # sentence scope: male +1, female -1
           'My father is kind.']  # male 0 (no opinion word)


def test_group_means_and_asymmetry_exact(mon):
  mon.reset()
  assert mon.apply(CRAFTED) == CRAFTED  # action='log' changes nothing
  r = mon.collect()
  assert r['monitor/mentions/gender/female'] == 3 and r['monitor/mentions/gender/male'] == 2
  assert r['monitor/sentiment/gender/female'] == pytest.approx((1 - 1 - 1) / 3)
  assert r['monitor/sentiment/gender/male'] == pytest.approx((1 + 0) / 2)
  assert r['monitor/sentiment_asymmetry/gender'] == pytest.approx(0.5 + 1 / 3)
  # output sentiments: +1, -1, (+1 - 1) / 2 = 0, 0
  assert r['monitor/sentiment_mean'] == pytest.approx(0.0)
  assert r['monitor/harmful_rate'] == 0.0
  assert not any(k.startswith('monitor/sentiment_asymmetry/') and not k.endswith('gender') for k in r)


def test_output_scope_and_min_outputs():
  m = make(scope='output', min_outputs=3)
  m.apply(CRAFTED)
  r = m.collect()
  # The third output as a whole scores 0 for both groups.
  assert r['monitor/sentiment/gender/female'] == pytest.approx((1 - 1 + 0) / 3)
  assert r['monitor/sentiment/gender/male'] == pytest.approx((0 + 0) / 2)
  assert 'monitor/sentiment_asymmetry/gender' not in r  # male has 2 < min_outputs outputs


def test_identity_matching_is_whole_word_and_longest_first(mon):
  s = mon.score('A manipulative womanizer. The African-American author was brilliant.')
  # 'man'/'woman' inside longer words are not mentions; 'african american' wins over 'american'.
  assert set(s.groups) == {('ethnicity', 'african_american')}
  assert s.groups[('ethnicity', 'african_american')] == 1.0


def test_groups_from_sections_and_plurals(tmp_path):
  path = tmp_path / 'things.txt'
  path.write_text('# A header comment block,\n# two lines long.\n\n# red ones, and some pink\nrose\nroses  # plural\n'
                  '\ncrow\ncrows\nswan\n')
  assert monitor_lib.identity_groups(str(path)) == {'rose': 'red_ones', 'roses': 'red_ones', 'crow': 'crow',
                                                    'crows': 'crow', 'swan': 'swan'}
  gender = monitor_lib.identity_groups(os.path.join(ROOT, 'data', 'identity_terms', 'gender.txt'))
  assert (gender['women'], gender['men'], gender['non-binary']) == ('female', 'male', 'transgender')
  religion = monitor_lib.identity_groups(os.path.join(ROOT, 'data', 'identity_terms', 'religion.txt'))
  assert religion['muslims'] == religion['muslim'] == 'muslim' and religion['islam'] == 'islam'


def test_shipped_lexicon_loads_and_avoids_identity_and_harmful_terms():
  from llm.data.clean.audit import load_terms
  lex = monitor_lib.load_lexicon(os.path.join(ROOT, 'data', 'sentiment', 'en.tsv'))
  assert len(lex) > 400 and set(lex.values()) == {1.0, -1.0}
  listed = set(load_terms(os.path.join(ROOT, 'data', 'badwords', 'en.txt')))
  for name in os.listdir(os.path.join(ROOT, 'data', 'identity_terms')):
    if name.endswith('.txt'):
      listed |= set(load_terms(os.path.join(ROOT, 'data', 'identity_terms', name)))
  assert not listed & set(lex)


# ----- Actions -----------------------------------------------------------------------------


def test_block_replaces_and_records(tmp_path):
  m = Monitor(MonitorConfig(enabled=True, action='block', placeholder='[blocked]'), out_dir=str(tmp_path))
  m.tags = {'step': 7}
  out = m.apply(['hello there', 'you bollocks', 'The woman was brilliant.'], prompts=['a', 'b', 'c'], source='t')
  assert out == ['hello there', '[blocked]', 'The woman was brilliant.']
  records = [json.loads(l) for l in open(tmp_path / monitor_lib.FLAGS_FILE)]
  assert records == [{'source': 't', 'action': 'block', 'reasons': ['harmful'], 'harmful': {'bollocks': 1},
                      'text': 'you bollocks', 'prompt': 'b', 'step': 7}]
  assert m.flagged == records
  r = m.collect()
  assert r['monitor/harmful_rate'] == pytest.approx(1 / 3)  # rates are of what the model generated


def test_flag_returns_unchanged_and_records_negative_identity(tmp_path):
  m = Monitor(MonitorConfig(enabled=True, action='flag', flag_on=('harmful', 'negative_identity')),
              out_dir=str(tmp_path))
  texts = ['The men were cruel. The sky is blue.', 'The men were brilliant.', 'bitches']
  assert m.apply(texts) == texts
  records = [json.loads(l) for l in open(tmp_path / monitor_lib.FLAGS_FILE)]
  assert [r['text'] for r in records] == ['The men were cruel. The sky is blue.', 'bitches']
  assert records[0]['reasons'] == ['negative_identity'] and records[0]['negative_groups'] == {'gender/male': -1.0}
  assert records[1]['reasons'] == ['harmful']
  assert m.collect()['monitor/flagged_rate'] == pytest.approx(2 / 3)


def test_log_action_records_nothing(tmp_path):
  m = Monitor(MonitorConfig(enabled=True, action='log'), out_dir=str(tmp_path))
  assert m.apply(['you bollocks']) == ['you bollocks']
  assert m.flagged == [] and not os.listdir(tmp_path)
  assert m.collect()['monitor/flagged_rate'] == 1.0  # counted, not acted on


def test_disabled_monitor_is_a_no_op(tmp_path):
  # Disabled: nothing is loaded (a missing list does not matter), nothing changes or is written.
  m = Monitor(MonitorConfig(enabled=False, action='block', harmful_terms='no/such/list.txt'), out_dir=str(tmp_path))
  texts = ['you bollocks', 'The woman was rude.']
  assert m.apply(texts) == texts and not m.enabled
  assert m.metrics() == {} and m.collect() == {} and m.flagged == [] and not os.listdir(tmp_path)


# ----- Config errors -----------------------------------------------------------------------


@pytest.mark.parametrize('changes, words', [
    (dict(action='drop'), ['monitor.action', "'drop'", 'log, flag, block']),
    (dict(scope='word'), ['monitor.scope', "'word'"]),
    (dict(flag_on=('harmful', 'rude')), ['monitor.flag_on', 'rude']),
    (dict(harmful_terms='data/badwords/missing.txt'), ['monitor.harmful_terms', 'missing.txt']),
    (dict(harmful_terms='data/README.md'), ['monitor.harmful_terms', '.txt']),
    (dict(sentiment_lexicon='data/sentiment/missing.tsv'), ['monitor.sentiment_lexicon', 'missing.tsv']),
    (dict(identity_categories=('gender', 'hobbies')), ['identity_categories', 'hobbies']),
])
def test_bad_config_is_one_clear_error(changes, words):
  with pytest.raises(MonitorConfigError) as e:
    make(**changes)
  msg = str(e.value)
  assert '\n' not in msg and all(w in msg for w in words), msg


def test_malformed_lexicon_names_the_line(tmp_path):
  path = tmp_path / 'lex.tsv'
  path.write_text('# comment\ngood\t1\nvery bad\t-1\n')
  with pytest.raises(MonitorConfigError, match=r'lex.tsv:3: expected'):
    make(sentiment_lexicon=str(path))
  path.write_text('good\t1\ngood\t-1\n')
  with pytest.raises(MonitorConfigError, match=r"lex.tsv:2: 'good' is listed twice"):
    make(sentiment_lexicon=str(path))


def test_recipes_print_a_bad_monitor_config_as_one_line(capsys):
  from llm.run import expected_errors, run_recipe
  assert issubclass(MonitorConfigError, ConfigError) and MonitorConfigError in ConfigError.__subclasses__()
  assert any(issubclass(MonitorConfigError, e) for e in expected_errors())
  cfg = types.SimpleNamespace(loop='x', monitor=dict(enabled=True, action='drop'))
  with pytest.raises(SystemExit) as e:
    run_recipe({'x': lambda c, w: Monitor.from_config(c.monitor)}, cfg, 'unused')
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith("error: monitor.action='drop'"), err


def test_config_section_round_trips():
  from configs.common import base_config
  c = base_config()
  assert c.monitor.enabled is False  # off by default
  c.monitor.enabled, c.monitor.action, c.monitor.flag_on = True, 'flag', 'harmful,negative_identity'
  m = Monitor.from_config(c.monitor)
  assert m.cfg.action == 'flag' and m.cfg.flag_on == ('harmful', 'negative_identity')


# ----- Generation paths ------------------------------------------------------------------


@pytest.fixture(scope='module')
def decoder_lm():
  """A ModelLM whose decoder is a stand-in returning fixed texts (nothing compiles)."""
  from llm import sharding
  from llm.eval.scorer import ModelLM
  from llm.models import config_for_size
  from llm.tokenizer import ByteTokenizer
  from tests.random_models import random_params
  cfg = config_for_size('smoke', 259, max_seq_len=64)
  replies = {'p1': 'you bollocks\nmore', 'p2': 'The woman was brilliant.'}

  def generate_fn(prompts, kwargs):
    del kwargs
    tok = ByteTokenizer()
    return [replies[tok.decode(p)] for p in prompts]
  return ModelLM(None, cfg, random_params(cfg), ByteTokenizer(), sharding.make_mesh({'data': -1}),
                 generate_fn=generate_fn, max_gen_toks=8)


def test_decoder_generate_until_passes_through_the_monitor(decoder_lm, tmp_path):
  requests = [('p1', {'until': ['\n']}), ('p2', {'until': ['\n']})]
  decoder_lm.monitor = None
  assert decoder_lm.generate_until(requests) == ['you bollocks', 'The woman was brilliant.']
  decoder_lm.monitor = Monitor(MonitorConfig(enabled=True, action='block'), out_dir=str(tmp_path))
  try:
    assert decoder_lm.generate_until(requests) == ['[blocked]', 'The woman was brilliant.']
    # The adapter the harness calls hands back (and caches) the blocked text.
    from llm.lm_eval_adapter import LlmLM
    adapter = LlmLM(lm=decoder_lm)
    cached = []
    adapter.cache_hook = types.SimpleNamespace(add_partial=lambda kind, args, text: cached.append(text))
    reqs = [types.SimpleNamespace(args=r) for r in requests]
    assert adapter.generate_until(reqs) == ['[blocked]', 'The woman was brilliant.'] == cached
    record = json.loads(open(tmp_path / monitor_lib.FLAGS_FILE).readline())
    assert record['source'] == 'ModelLM' and record['prompt'] == 'p1' and record['text'] == 'you bollocks'
    assert decoder_lm.monitor.collect()['monitor/outputs'] == 4
  finally:
    decoder_lm.monitor = None


def test_adapter_attaches_a_given_monitor(decoder_lm):
  from llm.lm_eval_adapter import LlmLM
  m = make(action='block')
  try:
    LlmLM(lm=decoder_lm, monitor=m)
    assert decoder_lm.monitor is m
    assert decoder_lm.generate_until([('p1', {'until': ['\n']})]) == ['[blocked]']
  finally:
    decoder_lm.monitor = None


def test_seq2seq_generate_until_passes_through_the_monitor(monkeypatch):
  import jax
  from flax import nnx

  from llm import sharding
  from llm.eval import encoder_scoring, seq2seq
  from llm.models import build, config_for_size
  from llm.tokenizer import ByteTokenizer
  from tests.random_models import random_params
  cfg = config_for_size('t5-smoke', 259, max_seq_len=32)
  graphdef = nnx.split(nnx.eval_shape(lambda: build(cfg, jax.random.key(0))))[0]
  tok = ByteTokenizer()
  lm = encoder_scoring.Seq2SeqLM(graphdef, cfg, random_params(cfg), tok, sharding.make_mesh({'data': -1}),
                                 max_gen_toks=8)
  fake = types.SimpleNamespace(tokens=[tok.encode('the bitches').tolist()], truncated=0)
  monkeypatch.setattr(seq2seq, 'generate', lambda *a, **k: fake)
  assert lm.generate_until([('x', {'until': []})]) == ['the bitches']
  lm.monitor = make(action='block', placeholder='')
  assert lm.generate_until([('x', {'until': []})]) == ['']
  assert lm.monitor.flagged[0]['source'] == 'Seq2SeqLM'


class _Writer:
  def __init__(self):
    self.scalars, self.texts = [], []

  def write_scalars(self, step, values):
    self.scalars.append((step, dict(values)))

  def write_texts(self, step, values):
    self.texts.append((step, dict(values)))

  def flush(self):
    pass


@pytest.mark.parametrize('enabled', [True, False])
def test_train_sample_is_monitored(tmp_path, monkeypatch, capsys, enabled):
  import train
  from configs.common import base_config
  from llm.tokenizer import ByteTokenizer
  cfg = base_config()
  cfg.monitor.enabled, cfg.monitor.action = enabled, 'block'
  tok = ByteTokenizer()
  generated = ' you bollocks; the woman was brilliant'
  monkeypatch.setattr(train, 'sample_beyond_context',
                      lambda graphdef, model_cfg, params, prompt, *a, **k: prompt + tok.encode(generated).tolist())
  writer = _Writer()
  mon = Monitor.from_config(cfg.monitor, out_dir=str(tmp_path))
  train.sample(cfg, str(tmp_path), types.SimpleNamespace(graphdef=None), None, None, tok, None, writer, mon)
  text = open(tmp_path / 'sample.txt').read()
  metrics = tmp_path / 'metrics.jsonl'
  if not enabled:
    assert text == 'ROMEO:' + generated and not metrics.exists() and writer.scalars == []
    return
  assert text == 'ROMEO:[blocked]' and 'ROMEO:[blocked]' in capsys.readouterr().out
  (row,) = [json.loads(l) for l in open(metrics)]
  assert row['step'] == cfg.train.steps and row['monitor/sample/harmful_rate'] == 1.0
  assert row['monitor/sample/sentiment/gender/female'] == 1.0
  assert writer.scalars == [(cfg.train.steps, {k: v for k, v in row.items() if k != 'step'})]
  record = json.loads(open(tmp_path / monitor_lib.FLAGS_FILE).readline())
  assert record['source'] == 'sample' and record['text'] == generated and record['step'] == cfg.train.steps
  assert np.isclose(row['monitor/sample/outputs'], 1)
