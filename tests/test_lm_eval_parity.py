"""Three ways to score one checkpoint on the shipped tasks must agree (llm/lm_eval_adapter.py).

* ours: ``llm.eval.tasks.evaluate_task`` with ``ModelLM`` (the evaluation loop's path);
* our adapter inside the harness: ``lm_eval.simple_evaluate(model=LlmLM(...))``, where the
  harness tokenises the requests and builds the rolling windows;
* the harness's own Hugging Face backend on the export: ``simple_evaluate(model='hf')``
  running ``transformers`` in torch on ``python -m llm.hf export``'s directory.

Same per-document predictions, log-likelihoods within 1e-3, same aggregated metrics.
"""

import os

import lm_eval
import numpy as np
import pytest
from lm_eval.tasks import TaskManager

from llm import checkpoint, hf
from llm.eval import tasks as our_tasks
from llm.lm_eval_adapter import LlmLM, harness_tasks, load_scorer, per_doc_loglikelihoods
from llm.lm_eval_adapter import main as adapter_main
from llm.models import ModelConfig
from llm.tokenizer import ByteTokenizer

from random_models import random_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_DIR = os.path.join(REPO, 'tasks')
TASKS = ['sst2', 'shakespeare_lastword', 'shakespeare_ppl', 'crows_pairs_english']
LIMIT = 6


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp('parity')
  cfg = ModelConfig(vocab_size=259, family='llama', d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64,
                    max_seq_len=256)
  checkpoint.save_params(str(d / 'run'), cfg, ByteTokenizer().spec(), random_params(cfg, seed=3))
  hf.export(str(d / 'run'), str(d / 'export'))
  manager = TaskManager(include_path=[TASK_DIR], include_defaults=False)
  return d, load_scorer(str(d / 'run'), batch_rows=8), manager


def ours(lm, name):
  task = our_tasks.load_task(our_tasks.discover([TASK_DIR])[name])
  return our_tasks.evaluate_task(task, lm, limit=LIMIT, bootstrap_iters=0)


def assert_same(result, name, harness_out, atol):
  mine, theirs = per_doc_loglikelihoods(result.samples), per_doc_loglikelihoods(harness_out['samples'][name])
  assert mine.keys() == theirs.keys() and len(mine) == LIMIT
  for doc in mine:
    np.testing.assert_allclose(mine[doc], theirs[doc], atol=atol, rtol=0, err_msg=f'{name} doc {doc}')
    if len(mine[doc]) > 1:  # multiple choice: the same choice wins
      assert np.argmax(mine[doc]) == np.argmax(theirs[doc]), (name, doc)
  res = harness_out['results'][name]
  for metric, value in result.metrics.items():
    assert res[f'{metric},none'] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, metric)


def test_adapter_in_the_harness_equals_our_evaluator(setup):
  _, lm, manager = setup
  out = lm_eval.simple_evaluate(model=LlmLM(lm=lm), tasks=harness_tasks(TASKS, manager), task_manager=manager,
                                limit=LIMIT, log_samples=True, bootstrap_iters=0)
  for name in TASKS:  # the harness sends all tasks' requests in one call, so rows pack differently: float32 noise
    assert_same(ours(lm, name), name, out, atol=1e-4)


def test_harness_hf_backend_on_the_export_equals_our_evaluator(setup):
  d, lm, manager = setup
  out = lm_eval.simple_evaluate(model='hf', model_args={'pretrained': str(d / 'export'), 'dtype': 'float32'},
                                device='cpu', batch_size=8, tasks=harness_tasks(TASKS, manager),
                                task_manager=manager, limit=LIMIT, log_samples=True, bootstrap_iters=0)
  for name in TASKS:
    assert_same(ours(lm, name), name, out, atol=1e-3)


def test_adapter_command_line(setup, tmp_path, capsys):
  d, _, _ = setup
  out = tmp_path / 'r.json'
  assert adapter_main([f'--workdir={d / "run"}', '--tasks=sst2', f'--include_path={TASK_DIR}', '--no_defaults',
                       '--limit=4', f'--output={out}']) == 0
  printed = capsys.readouterr().out
  assert '|sst2' in printed and 'requests scored' in printed and out.exists()
  assert adapter_main([f'--workdir={d / "run"}', '--tasks=nope', f'--include_path={TASK_DIR}', '--no_defaults']) == 2
  assert "unknown task(s) ['nope']" in capsys.readouterr().err
  assert adapter_main([f'--workdir={tmp_path / "missing"}', '--tasks=sst2']) == 2
  assert 'does not exist' in capsys.readouterr().err
