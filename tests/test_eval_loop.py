"""The evaluation loop end to end: a smoke checkpoint scored on every shipped task, the
results files, evaluators during pre-training, parameters-only loading, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from configs import default, fewshot  # noqa: E402
from llm import checkpoint  # noqa: E402
from llm.eval import tasks as tasks_lib  # noqa: E402
from llm.eval.evaluators import EvalConfigError  # noqa: E402
from llm.run import ConfigError  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A smoke pre-training run with a periodic evaluator (every 3 steps, 4 documents)."""
  wd = str(tmp_path_factory.mktemp('pretrain') / 'run')
  c = default.get_config('smoke=True')
  c.evals.quick = dict(type='fewshot', tasks='sst2,shakespeare_lastword', every=3, limit=4, num_fewshot=-1)
  train.run(c, wd)
  return wd


def test_evaluators_run_during_pretraining_into_metrics_jsonl(trained):
  rows = [json.loads(l) for l in open(os.path.join(trained, 'metrics.jsonl'))]
  with_eval = [r for r in rows if any(k.startswith('eval/') for k in r)]
  assert [r['step'] for r in with_eval] == [3, 6]
  for r in with_eval:
    assert 0.0 <= r['eval/sst2/acc'] <= 1.0
    assert r['eval/shakespeare_lastword/perplexity'] > 1.0
    assert r['eval/quick/requests_per_sec'] > 0


def test_load_params_reads_only_parameters_with_the_recorded_tokenizer(trained):
  import orbax.checkpoint as ocp
  cfg, tok, params, step = checkpoint.load_params(trained)
  assert step == 6 and cfg.d_model == 64 and type(tok).__name__ == 'ByteTokenizer'
  saved = ocp.PyTreeCheckpointer().restore(os.path.join(trained, 'checkpoints', '6', 'state'))['params']
  import jax
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  _, _, p3, step3 = checkpoint.load_params(trained, step=3)
  assert step3 == 3
  assert not np.array_equal(np.asarray(p3['embed_vd']), np.asarray(params['embed_vd']))
  with pytest.raises(checkpoint.CheckpointNotFound, match=r'no checkpoint at step 4.*\[3, 6\]'):
    checkpoint.load_params(trained, step=4)


def test_fewshot_config_scores_every_shipped_task_and_writes_harness_layout(trained, tmp_path):
  wd = str(tmp_path / 'eval')
  c = fewshot.get_config(f'ckpt={trained},smoke=True')
  outputs = train.evaluate(c, wd)
  shipped = tasks_lib.discover([os.path.join(ROOT, 'tasks')])
  names = {r.name for out in outputs for r in out.results}
  assert names == set(shipped), 'configs/fewshot.py must run every task shipped in tasks/'
  doc = json.load(open(os.path.join(wd, 'eval_results.json')))
  assert {'results', 'configs', 'n-samples', 'n-shot', 'versions', 'higher_is_better', 'throughput'} <= set(doc)
  sst2 = doc['results']['sst2']
  assert 0.0 <= sst2['acc,none'] <= 1.0 and 'acc_stderr,none' in sst2
  assert doc['n-shot']['sst2_fewshot'] > 0 and doc['n-samples']['sst2']['effective'] == 8
  assert doc['results']['shakespeare_ppl']['bits_per_byte,none'] > 0
  assert 'pct_stereotype,none' in doc['results']['crows_pairs_english']
  assert any(k.startswith('crows_pairs_english_') for k in doc['results'])  # per bias type
  assert doc['throughput']['fewshot']['requests_per_sec'] > 0
  for name in names:
    lines = open(os.path.join(wd, f'samples_{name}.jsonl')).read().splitlines()
    assert len(lines) == doc['n-samples'][name]['effective']
    json.loads(lines[0])
  sample = json.loads(open(os.path.join(wd, 'samples_sst2.jsonl')).readline())
  assert 'Question: Is this sentence positive or negative?' in json.dumps(sample)
  report = open(os.path.join(wd, 'bias_report.md')).read()
  assert 'CrowS' in report and 'WinoBias' in report and 'BBQ' in report
  assert any(f.endswith('.png') for f in os.listdir(wd))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(wd))
  fp = json.load(open(os.path.join(wd, 'footprint.json')))  # the evaluation loop's own ledger
  assert fp['runs'][0]['program'] == 'train.py (evaluate)' and fp['phases']['evaluation']['energy_kwh'] > 0
  assert fp['phases']['checkpointing']['seconds'] > 0 and fp['phases']['training']['seconds'] == 0


def test_reused_eval_workdir_keeps_no_stale_outputs(trained, tmp_path):
  wd = tmp_path / 'eval'
  wd.mkdir()
  for stale in ('samples_old_task.jsonl', 'bias_report.md', 'bbq.png', 'eval_results.json'):
    (wd / stale).write_text('from an earlier run')
  (wd / 'notes.txt').write_text('mine')
  shutil.copy(os.path.join(trained, 'footprint.json'), wd)  # e.g. evaluating into a training workdir
  c = fewshot.get_config(f'ckpt={trained},smoke=True,bias=False')
  c.evals.fewshot.tasks = 'sst2'
  train.evaluate(c, str(wd))
  runs = json.load(open(wd / 'footprint.json'))['runs']  # a ledger found there is added to, never replaced
  assert [r['program'] for r in runs] == ['train.py', 'train.py (evaluate)']
  assert sorted(os.listdir(wd)) == sorted(['eval_results.json', 'notes.txt', 'samples_sst2.jsonl', 'footprint.json',
                                           *[f for f in os.listdir(wd) if f.startswith('events.out')]])
  assert list(json.load(open(wd / 'eval_results.json'))['results']) == ['sst2']


def test_evaluate_loop_errors_name_the_fix(trained, tmp_path):
  c = fewshot.get_config('smoke=True')
  with pytest.raises(ConfigError, match='ckpt='):
    train.evaluate(c, str(tmp_path / 'a'))
  c = fewshot.get_config(f'ckpt={tmp_path / "nothing"},smoke=True')
  with pytest.raises(checkpoint.CheckpointNotFound, match='does not exist'):
    train.evaluate(c, str(tmp_path / 'b'))
  empty = tmp_path / 'empty_run'
  (empty / 'checkpoints').mkdir(parents=True)
  c = fewshot.get_config(f'ckpt={empty},smoke=True')
  with pytest.raises(checkpoint.CheckpointNotFound, match='no complete checkpoint'):
    train.evaluate(c, str(tmp_path / 'c'))
  c = fewshot.get_config(f'ckpt={trained},smoke=True')
  c.eval.tokenizer = 'sentencepiece'
  with pytest.raises(ConfigError, match='trained with ByteTokenizer'):
    train.evaluate(c, str(tmp_path / 'd'))
  c = fewshot.get_config(f'ckpt={trained},smoke=True')
  c.evals.fewshot.tasks = 'sst2,no_such_task'
  with pytest.raises(EvalConfigError, match="no_such_task.*available"):
    train.evaluate(c, str(tmp_path / 'e'))


def test_old_checkpoint_without_tokenizer_record_uses_config_json(trained, tmp_path):
  old = tmp_path / 'old'
  shutil.copytree(trained, old)
  meta_path = old / 'checkpoints' / '6' / 'meta' / 'metadata'
  meta = json.loads(meta_path.read_text())
  del meta['tokenizer']
  meta_path.write_text(json.dumps(meta))
  (old / 'config.json').write_text(json.dumps({'data': {'tokenizer': 'sentencepiece',
                                                        'spm_model': str(tmp_path / 'missing.model')}}))
  with pytest.raises(checkpoint.CheckpointMismatch, match='missing.model'):  # config.json is what was read
    checkpoint.load_params(str(old))
  (old / 'config.json').write_text(json.dumps({'data': {'tokenizer': 'byte'}}))
  cfg, tok, _, _ = checkpoint.load_params(str(old))
  assert type(tok).__name__ == 'ByteTokenizer'


def test_command_line_reports_a_missing_checkpoint_in_one_line(tmp_path):
  cmd = [sys.executable, os.path.join(ROOT, 'train.py'),
         '--config=' + os.path.join(ROOT, f'configs/fewshot.py:ckpt={tmp_path}/none,smoke=True'),
         '--workdir=' + str(tmp_path / 'eval')]
  out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
  assert 'Traceback' not in out.stdout + out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1 and 'does not exist' in errors[0]
