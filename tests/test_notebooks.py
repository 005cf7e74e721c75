"""The research notebooks (notebooks/NN_*.py, jupytext percent format) run top to bottom.

Each is read with jupytext and executed by nbclient in a fresh python3 kernel whose working
directory is notebooks/ (as Jupyter runs a notebook; they also run from the repository root).
All notebooks of a session share one $LLM_NOTEBOOK_RUNS, so the smoke checkpoint that notebooks
01, 03, 04 and 05 study is trained once, by the first of them that runs. A failing cell fails
the test with that cell's source and error.
"""

import glob
import logging
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, 'notebooks')
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, '[0-9][0-9]_*.py')))
CELL_TIMEOUT = 180  # seconds per cell


@pytest.fixture(scope='module')
def kernel_env(tmp_path_factory, compile_cache):
  """The kernels' environment: one runs folder for the session, JAX on CPU, inline figures.

  The compilation cache (tests/conftest.py) lets programs compiled by one notebook (or by a
  train.py it starts, which inherits the environment) load in the next.
  """
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', 'LLM_NOTEBOOK_CKPT', 'MPLBACKEND')}
  env.update(compile_cache)
  env.update(LLM_NOTEBOOK_RUNS=str(tmp_path_factory.mktemp('notebook_runs')), JAX_PLATFORMS='cpu',
             MPLBACKEND='module://matplotlib_inline.backend_inline', PYDEVD_DISABLE_FILE_VALIDATION='1')
  return env


def test_notebooks_are_found():
  assert len(NOTEBOOKS) >= 5, NOTEBOOKS


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[os.path.basename(p)[:-3] for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env):
  import jupytext
  from nbclient import NotebookClient
  from nbclient.exceptions import CellExecutionError

  nb = jupytext.read(path)
  assert nb.cells and nb.cells[0].cell_type == 'markdown', 'a notebook opens with a markdown cell saying what it does'
  client = NotebookClient(nb, kernel_name='python3', timeout=CELL_TIMEOUT, allow_errors=False,
                          resources={'metadata': {'path': NOTEBOOK_DIR}})
  try:
    client.execute(env=kernel_env)
  except CellExecutionError as e:
    message = re.sub(r'\x1b\[[0-9;]*m', '', str(e))  # the kernel's traceback, without its colours
    pytest.fail(f'{os.path.basename(path)}: a cell failed:\n{message}', pytrace=False)
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert any('image/png' in o.get('data', {}) for o in outputs), 'no figure was drawn inline'


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
