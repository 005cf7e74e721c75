"""The controlled bias-mitigation experiment (llm/eval/mitigation.py, configs/bias_mitigation.py):
its paired intervals, the arms' commands and the report, on hand-made evaluation outputs
(training the arms is what train.py's and finetune.py's own tests cover)."""

import json
import math
import os

import numpy as np
import pytest

from configs import bias_mitigation
from llm.eval import bias, mitigation


def test_paired_bootstrap_is_the_difference_and_pairs_the_documents():
  rng = np.random.default_rng(0)
  a = rng.random(400) < 0.5
  flip = rng.random(400) < 0.1  # b agrees with a on 90% of the documents
  b = np.where(flip, ~a, a)
  diff, se = bias.paired_bootstrap(bias.mean, a.astype(float).tolist(), b.astype(float).tolist(), iters=500)
  assert diff == pytest.approx(b.mean() - a.mean())
  independent = math.hypot(bias.bootstrap_stderr(bias.mean, a.astype(float).tolist(), 500),
                           bias.bootstrap_stderr(bias.mean, b.astype(float).tolist(), 500))
  assert 0 < se < independent / 2  # shared documents cancel: the paired error is far smaller
  same, zero = bias.paired_bootstrap(bias.mean, a.astype(float).tolist(), a.astype(float).tolist(), iters=100)
  assert same == 0 and zero == 0
  with pytest.raises(ValueError, match='same documents'):
    bias.paired_bootstrap(bias.mean, [1.0, 0.0], [1.0], iters=10)


def test_bits_per_byte_is_total_nats_over_total_bytes():
  items = [[-10.0, 10], [-30.0, 10]]
  assert mitigation.bits_per_byte(items) == pytest.approx(40 / 20 / math.log(2))


def test_commands_share_everything_but_the_mitigation_and_finetuning_follows_its_base(tmp_path):
  cfg = bias_mitigation.get_config('smoke=True')
  cmds = mitigation.commands(cfg, str(tmp_path), python='py')
  assert list(cmds)[0] == 'baseline'  # fine-tuning arms start from it, so it runs first
  base_train, base_eval = cmds['baseline']
  for name in ('cda_add', 'cda_substitute', 'reweight', 'baseline_seed1'):
    train, evaluate = cmds[name]
    extra = set(train) - set(base_train)
    assert all(any(k in f for k in ('counterfactual', 'reweight', 'seed', '--workdir=')) for f in extra), extra
    assert [f for f in evaluate if 'workdir' not in f and 'ckpt' not in f] == \
        [f for f in base_eval if 'workdir' not in f and 'ckpt' not in f]  # same tasks and limit
  ft_train, ft_eval = cmds['ft_debias']
  assert f'init={tmp_path / "baseline"}' in ft_train[2] and '{init}' not in ft_train[2]
  assert any(f.startswith('--config=configs/fewshot.py:ckpt=' + str(tmp_path / 'ft_debias' / 'best')) for f in ft_eval)
  assert '--config.sft.debias_weight=10.0' in ft_train
  cfg.arms.reweight.baseline = 'no_such_arm'
  with pytest.raises(mitigation.MitigationError, match="compares with 'no_such_arm'"):
    mitigation.commands(cfg, str(tmp_path))


def test_a_finished_arm_with_other_commands_is_refused_not_overwritten(tmp_path):
  cfg = bias_mitigation.get_config('smoke=True,finetune=False')
  os.makedirs(tmp_path / 'baseline')
  with open(tmp_path / 'baseline' / 'arm.json', 'w') as f:
    json.dump({'train': ['train.py', '--something-else'], 'evaluate': [], 'limit': 1}, f)
  with pytest.raises(mitigation.MitigationError, match='records other commands'):
    mitigation.run_arms(cfg, str(tmp_path), log=lambda *_: None)


def _write_eval(path, crows, winobias, ppl):
  """An evaluation directory as train.py's evaluate loop writes it (only what the report reads)."""
  os.makedirs(path)
  results = {'crows_pairs_english': {}, 'winobias': {}, 'shakespeare_ppl': {}}
  with open(path / 'eval_results.json', 'w') as f:
    json.dump({'results': results}, f)
  rows = {'crows_pairs_english': [{'pct_stereotype': x, 'likelihood_diff': 1.0} for x in crows],
          'winobias': [{'acc': c, 'acc_pro': {'correct': c, 'condition': cond},
                        'pro_anti_gap': {'correct': c, 'condition': cond}} for c, cond in winobias],
          'shakespeare_ppl': [{'bits_per_byte': p} for p in ppl]}
  for task, items in rows.items():
    with open(path / f'samples_{task}.jsonl', 'w') as f:
      for i, m in reversed(list(enumerate(items))):  # any order: the report sorts by doc_id
        f.write(json.dumps({'doc_id': i, 'metrics': m}) + '\n')


def test_report_values_changes_and_readings(tmp_path):
  cfg = bias_mitigation.get_config('smoke=True,finetune=False')
  del cfg.arms['cda_substitute'], cfg.arms['reweight'], cfg.arms['baseline_seed1']
  cfg.bootstrap_iters = 300
  n = 60
  crows_base = [1.0] * 45 + [0.0] * 15  # 0.75: stereotyped
  crows_cda = [1.0] * 30 + [0.0] * 30  # 0.50: neutral
  wino = [(1.0, 'pro')] * 30 + [(0.0, 'anti')] * 30  # gap 1
  _write_eval(tmp_path / 'baseline' / 'eval', crows_base, wino, [[-10.0, 10]] * n)
  _write_eval(tmp_path / 'cda_add' / 'eval', crows_cda, wino, [[-11.0, 10]] * n)
  with open(tmp_path / 'baseline' / 'metrics.jsonl', 'w') as f:
    f.write(json.dumps({'step': 1, 'val_loss': 2.5}) + '\n' + json.dumps({'step': 2, 'loss': 2.0}) + '\n')
  report = mitigation.build_report(cfg, str(tmp_path))
  rows = {(r['arm'], r['task'], r['metric']): r for r in report['rows']}
  c = rows[('cda_add', 'crows_pairs_english', 'pct_stereotype')]
  assert (c['value'], c['baseline_value'], c['change']) == (0.5, 0.75, pytest.approx(-0.25))
  assert c['ci95'][1] < 0 and mitigation.verdict(c, 0.5) == 'less biased'
  w = rows[('cda_add', 'winobias', 'pro_anti_gap')]
  assert w['value'] == 1.0 and w['change'] == 0 and mitigation.verdict(w, 0.0) == 'no detectable change'
  q = rows[('cda_add', 'shakespeare_ppl', 'bits_per_byte')]
  assert q['change'] == pytest.approx(0.1 / math.log(2)) and mitigation.verdict(q, None) == 'worse'  # more bits per byte
  assert 'change' not in rows[('baseline', 'crows_pairs_english', 'pct_stereotype')]
  assert report['arms']['baseline']['val_loss'] == 2.5 and report['arms']['cda_add']['val_loss'] is None
  paths = mitigation.write_report(report, str(tmp_path))
  md = open(paths[1]).read()
  assert '| cda_add | crows_pairs_english | pct_stereotype | 0.5000 ±' in md and 'less biased' in md
  assert os.path.getsize(paths[2]) > 1000 and json.load(open(paths[0]))['rows'] == json.loads(json.dumps(report['rows']))


def test_report_refuses_missing_and_mismatched_evaluations(tmp_path):
  cfg = bias_mitigation.get_config('smoke=True,finetune=False')
  del cfg.arms['cda_substitute'], cfg.arms['reweight'], cfg.arms['baseline_seed1']
  _write_eval(tmp_path / 'baseline' / 'eval', [1.0] * 10, [(1.0, 'pro')] * 10, [[-1.0, 1]] * 10)
  with pytest.raises(mitigation.MitigationError, match=r'arm cda_add has no evaluation .*eval_results\.json'):
    mitigation.build_report(cfg, str(tmp_path))
  _write_eval(tmp_path / 'cda_add' / 'eval', [1.0] * 8, [(1.0, 'pro')] * 10, [[-1.0, 1]] * 10)
  with pytest.raises(mitigation.MitigationError, match='different numbers of crows_pairs_english documents'):
    mitigation.build_report(cfg, str(tmp_path))


@pytest.mark.parametrize('arg', ['', 'smoke=True', 'limit=100', 'steps=200,ft_steps=50', 'finetune=False', 'size=124m'])
def test_every_arm_flag_names_a_field_of_its_recipes_config(arg, tmp_path):
  """A misspelt or removed field would fail only when that arm runs, minutes in: catch it here."""
  import importlib
  cfg = bias_mitigation.get_config(arg)
  for name, (train, _) in mitigation.commands(cfg, str(tmp_path)).items():
    path, _, config_arg = train[2][len('--config='):].partition(':')
    recipe = importlib.import_module(f'configs.{os.path.basename(path)[:-3]}').get_config(config_arg)
    for flag in train[3:-1]:
      key, _, value = flag[len('--config.'):].partition('=')
      node = recipe
      for part in key.split('.'):
        assert part in node, f'arm {name}: {flag} names no field of {path}'
        node = node[part]
      if isinstance(node, bool):
        assert value in ('True', 'False', 'true', 'false'), f'arm {name}: {flag} is not a bool'
      else:
        type(node)(value)  # the value parses as the field's type (a ValueError fails the test)


def test_a_selector_scores_only_its_documents():
  """'crows_pairs_english[bias_type=gender]': the gender pairs, what the gender mitigations address."""
  samples = {'t': [{'doc_id': 0, 'doc': {'bias_type': 'gender'}}, {'doc_id': 1, 'doc': {'bias_type': 'race-color'}},
                   {'doc_id': 2, 'doc': {'bias_type': 'gender'}}]}
  assert [s['doc_id'] for s in mitigation._documents(samples, 't[bias_type=gender]')] == [0, 2]
  assert mitigation._documents(samples, 't') == samples['t']
  assert mitigation._documents(samples, 'other') is None
  assert any(t == 'crows_pairs_english[bias_type=gender]' for t, *_ in mitigation.BIAS_METRICS)
