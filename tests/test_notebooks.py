"""The research notebooks (notebooks/NN_*.py, jupytext percent format) run top to bottom.

tests/notebooks_worker.py executes them with nbclient in a background process that
tests/conftest.py starts when the tests are collected (they take about a minute and a half of
one core, beside the tests before these); each notebook's test checks its result. A failing
cell fails that notebook's test with the cell's source and error.
"""

import glob
import json
import logging
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, 'notebooks')
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, '[0-9][0-9]_*.py')))
NAMES = [os.path.basename(p)[:-3] for p in NOTEBOOKS]


@pytest.fixture(scope='module')
def results(worker_output):
  returncode, stdout, stderr = worker_output('notebooks_worker.py', timeout=1200)
  assert returncode == 0, stderr[-3000:]
  return {r['name']: r for r in map(json.loads, stdout.splitlines())}


def test_notebooks_are_found():
  assert len(NOTEBOOKS) >= 6, NOTEBOOKS


@pytest.mark.parametrize('name', NAMES)
def test_notebook_runs(name, results):
  r = results[name]
  if r['error']:
    pytest.fail(f'{name}: a cell failed:\n{r["error"]}', pytrace=False)
  assert r['opens_with_markdown'], 'a notebook opens with a markdown cell saying what it does'
  assert r['figures'] > 0, 'no figure was drawn inline'


def test_a_missing_input_is_one_clear_message(tmp_path, monkeypatch):
  """A notebook's inputs are checked by notebooks/_shared.py: the message names the file and the fix."""
  absl_level = logging.getLogger('absl').level  # _shared quiets Orbax's notices; not in this process
  sys.path.insert(0, NOTEBOOK_DIR)
  try:
    import _shared
  finally:
    sys.path.remove(NOTEBOOK_DIR)
    logging.getLogger('absl').setLevel(absl_level)
  missing = str(tmp_path / 'no_such_run')
  monkeypatch.setenv('LLM_NOTEBOOK_CKPT', missing)
  with pytest.raises(_shared.MissingInput) as e:
    _shared.checkpoint()
  message = str(e.value)
  assert os.path.join(missing, 'checkpoints') in message and '\n' not in message
  assert f'python train.py --config=configs/default.py --workdir={missing}' in message
  with pytest.raises(_shared.MissingInput, match=r'needs data/no_such\.tsv, which does not exist; make it so'):
    _shared.require('data/no_such.tsv', 'make it so')
