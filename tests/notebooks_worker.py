"""Run by tests/test_notebooks.py in a background subprocess (tests/conftest.py starts it when
the tests are collected, so the notebooks execute beside the tests before theirs).

Executes every notebook (notebooks/NN_*.py, jupytext percent format) top to bottom with
nbclient in a fresh python3 kernel whose working directory is notebooks/ (as Jupyter runs a
notebook), all of them sharing one $LLM_NOTEBOOK_RUNS, so the smoke checkpoint that notebooks
01 and 03-06 study is trained once, by the first that runs. Prints one JSON object per
notebook: name, seconds, error (the failing cell's source and traceback, or null), the number
of inline figures, and whether it opens with a markdown cell.
"""

import glob
import json
import os
import re
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, 'notebooks')
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, '[0-9][0-9]_*.py')))
CELL_TIMEOUT = 600  # seconds per cell: a guard against a hung kernel, not a speed check


def kernel_env(runs: str) -> dict[str, str]:
  """One runs folder for all notebooks, JAX on CPU, inline figures, no inherited device split."""
  env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'LLM_NOTEBOOK_CKPT', 'MPLBACKEND')}
  env.update(LLM_NOTEBOOK_RUNS=runs, JAX_PLATFORMS='cpu', MPLBACKEND='module://matplotlib_inline.backend_inline',
             XLA_FLAGS='--xla_backend_optimization_level=0',  # as tests/conftest.py sets for every test
             PYDEVD_DISABLE_FILE_VALIDATION='1')
  return env


def run(path: str, env: dict[str, str]) -> dict:
  import jupytext
  from nbclient import NotebookClient
  from nbclient.exceptions import CellExecutionError
  nb = jupytext.read(path)
  out = {'name': os.path.basename(path)[:-3], 'error': None,
         'opens_with_markdown': bool(nb.cells) and nb.cells[0].cell_type == 'markdown'}
  client = NotebookClient(nb, kernel_name='python3', timeout=CELL_TIMEOUT, allow_errors=False,
                          resources={'metadata': {'path': NOTEBOOK_DIR}})
  t = time.perf_counter()
  try:
    client.execute(env=env)
  except CellExecutionError as e:
    out['error'] = re.sub(r'\x1b\[[0-9;]*m', '', str(e))  # the kernel's traceback, without its colours
  except Exception as e:  # a cell timeout, a dead kernel: still one result per notebook
    out['error'] = f'{type(e).__name__}: {e}'
  out['seconds'] = time.perf_counter() - t
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  out['figures'] = sum('image/png' in o.get('data', {}) for o in outputs)
  return out


def main() -> None:
  runs = tempfile.mkdtemp(prefix='llm-notebook-runs-')
  try:
    env = kernel_env(runs)
    for path in NOTEBOOKS:
      print(json.dumps(run(path, env)), flush=True)
  finally:
    shutil.rmtree(runs, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
