"""Plumbing the numbered notebooks share: where the repository and the notebook runs are, and
the small trained checkpoint most of them study. No model code lives here (that is llm/).

  LLM_NOTEBOOK_RUNS   where notebooks write their runs (default <repo>/runs/notebooks); the
                      smoke checkpoint is trained into $LLM_NOTEBOOK_RUNS/smoke once and reused
  LLM_NOTEBOOK_CKPT   optional: study another decoder checkpoint instead of the smoke one in
                      notebooks 03-05 (e.g. runs/default after
                      `python train.py --config=configs/default.py --workdir=runs/default`)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile

# Orbax logs three absl warnings on every read-only checkpoint read; nothing a reader needs.
logging.getLogger('absl').setLevel(logging.ERROR)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `import llm`, `import configs`, `import train` from any working directory
  sys.path.insert(0, ROOT)

# The smoke config (seconds on a laptop CPU), trained for 300 steps instead of its 6 so that the
# model has learnt something to look at (letters, spaces, line breaks) and still in ~25 s on 2 cores.
SMOKE_STEPS = 300
SMOKE_ARGS = ('--config=configs/default.py:smoke=True', f'--config.train.steps={SMOKE_STEPS}',
              '--config.train.log_every=25', '--config.train.eval_every=50',
              f'--config.train.checkpoint_every={SMOKE_STEPS}', '--config.sample.num_tokens=24')


class MissingInput(FileNotFoundError):
  """A file a notebook needs is not there; the message names it and how to make it."""


def runs_dir() -> str:
  return os.path.abspath(os.environ.get('LLM_NOTEBOOK_RUNS') or os.path.join(ROOT, 'runs', 'notebooks'))


def run_dir(name: str) -> str:
  """$LLM_NOTEBOOK_RUNS/<name> (not created)."""
  return os.path.join(runs_dir(), name)


def rel(path: str) -> str:
  """``path`` as a user would type it from the repository root (absolute when outside it)."""
  if path.startswith('hf:'):
    return path
  path = os.path.abspath(path)
  return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def require(path: str, how: str) -> str:
  """The absolute path of ``path`` (relative to the repository), or MissingInput saying how to make it."""
  full = path if os.path.isabs(path) else os.path.join(ROOT, path)
  if not os.path.exists(full):
    raise MissingInput(f'this notebook needs {rel(full)}, which does not exist; {how}')
  return full


def smoke_command(workdir: str) -> str:
  return ' '.join(['python train.py', *SMOKE_ARGS, f'--workdir={rel(workdir)}'])


def is_trained(workdir: str) -> bool:
  """A finished smoke run: its last checkpoint and the end-of-training sample exist.

  (Orbax renames a checkpoint into place when it is complete; sample.txt is written after it.)
  """
  return (os.path.isdir(os.path.join(workdir, 'checkpoints', str(SMOKE_STEPS)))
          and os.path.exists(os.path.join(workdir, 'sample.txt')))


def smoke_checkpoint(verbose: bool = True) -> str:
  """The smoke run's workdir, trained now with train.py unless it already holds a finished run.

  An interrupted run is resumed (train.py resumes from the newest checkpoint of its workdir).
  """
  workdir = run_dir('smoke')
  if is_trained(workdir):
    if verbose:
      print(f'using the trained smoke checkpoint in {rel(workdir)} (delete it to train again)')
    return workdir
  print(f'training the smoke checkpoint:\n  {smoke_command(workdir)}', flush=True)
  # A subprocess, as on the command line: train.py's absl flags and its one-line errors work as
  # documented. Its progress lines are echoed as they come; stderr (library chatter) only on failure.
  with tempfile.TemporaryFile('w+') as err:
    with subprocess.Popen([sys.executable, 'train.py', *SMOKE_ARGS, f'--workdir={workdir}'], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=err, text=True) as proc:
      try:
        for line in proc.stdout:
          if verbose:
            print(line, end='', flush=True)
      except BaseException:  # an interrupted notebook stops the run too (rerunning resumes it)
        proc.terminate()
        raise
      code = proc.wait()
    err.seek(0)
    stderr = err.read()
  if code or not is_trained(workdir):
    tail = '\n'.join(stderr.strip().splitlines()[-15:])
    raise RuntimeError(f'training the smoke checkpoint failed (exit code {code}):\n{tail}')
  return workdir


def checkpoint() -> str:
  """The decoder checkpoint a notebook studies: $LLM_NOTEBOOK_CKPT if set, else the smoke one."""
  chosen = os.environ.get('LLM_NOTEBOOK_CKPT')
  if not chosen:
    return smoke_checkpoint()
  if chosen.startswith('hf:'):  # a Hugging Face directory, converted when loaded
    require(chosen[3:], 'name a Hugging Face model directory (config.json, model.safetensors)')
    return chosen
  workdir = require(os.path.join(chosen, 'checkpoints'),
                    f'LLM_NOTEBOOK_CKPT={chosen} must be a training run: make it with '
                    f'`python train.py --config=configs/default.py --workdir={chosen}`, or unset '
                    f'LLM_NOTEBOOK_CKPT to use the smoke checkpoint')
  print(f'using LLM_NOTEBOOK_CKPT={chosen}')
  return os.path.dirname(workdir)
