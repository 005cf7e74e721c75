"""Pytest setup: make the repository root importable (``import llm``, ``import configs``), and
share slow work between tests.

* ``worker_output``: multi-device worker subprocesses (EARLY_WORKERS), started as soon as the
  tests are collected so that they run beside the tests before theirs.
* ``compile_cache``: JAX's persistent compilation cache, one per session, so that the smoke
  training runs of several modules compile their programs once; when two or more modules use
  it, background train.py runs (WARM_RUNS) fill it while the first tests run.

Background processes start on one CPU (the last), so that the tests keep the others, and get
all CPUs once a test waits for them. They change no test's inputs or results, only when the
work is done.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# LLVM's -O0 for every XLA:CPU program the tests compile, here and in the processes they start:
# compiling is most of the suite's time on tiny models and -O0 cuts it by about a third, while
# every comparison (resumed against uninterrupted, sharded against one device) compiles both
# sides alike. Processes that drop XLA_FLAGS (to shed a simulated device count) set this again.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Test files whose checks run in a worker subprocess that needs nothing from the tests (it
# simulates several CPU devices, which must be set before JAX starts, or executes the
# notebooks): tests/<worker>.py.
EARLY_WORKERS = {'test_sharding.py': 'sharding_worker.py', 'test_finetune.py': 'lora_mesh_worker.py',
                 'test_multihost.py': 'multihost_worker.py', 'test_eval_encoders.py': 'test_eval_encoders.py',
                 'test_notebooks.py': 'notebooks_worker.py'}

# train.py runs that compile what the compile_cache modules' runs compile: the smoke config with
# the schedule of tests/test_train.py's smoke(), as most of its runs, the SIGTERM test's process
# and the run of tests/test_corpus_pipeline.py have it.
WARM_RUNS = {'smoke': ['train.py', '--config=configs/default.py:smoke=True', '--config.train.decay_steps=6']}

_workers: dict[str, tuple] = {}  # worker file -> (Popen, stdout file, stderr file)
_warm: list[subprocess.Popen] = []
_dirs: dict[str, str] = {}  # 'cache' / 'warm' -> temporary directory, removed at the end


def _temp_dir(kind: str) -> str:
  if kind not in _dirs:
    _dirs[kind] = tempfile.mkdtemp(prefix=f'llm-tests-{kind}-')
  return _dirs[kind]


def _cache_env() -> dict[str, str]:
  return {'JAX_COMPILATION_CACHE_DIR': _temp_dir('cache'), 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


def _one_cpu() -> None:
  """Confines the calling process to the last of its CPUs, so that the tests keep the others.

  (Not a lower priority as well: when a test waits for the process, it could not be raised
  again, and other processes on the machine would starve it.)
  """
  cpus = sorted(os.sched_getaffinity(0))
  if len(cpus) > 1:
    os.sched_setaffinity(0, cpus[-1:])


def _all_cpus(pid: int) -> None:
  """Lets every thread of process ``pid`` and of its descendants (a notebook's kernel, the
  train.py it starts) run on all of this process's CPUs again."""
  if not hasattr(os, 'sched_setaffinity'):
    return
  cpus = os.sched_getaffinity(0)
  try:
    tids = os.listdir(f'/proc/{pid}/task')
  except OSError:
    tids = [str(pid)]
  for tid in tids:
    try:
      os.sched_setaffinity(int(tid), cpus)
      with open(f'/proc/{pid}/task/{tid}/children') as f:
        children = [int(c) for c in f.read().split()]
    except OSError:  # the thread or the process has just ended
      continue
    for child in children:
      _all_cpus(child)


def _popen(cmd: list[str], background: bool, **kw) -> subprocess.Popen:
  preexec = _one_cpu if background and hasattr(os, 'sched_setaffinity') else None
  return subprocess.Popen(cmd, preexec_fn=preexec, **kw)


def _start_worker(worker: str, background: bool = False) -> tuple:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['XLA_FLAGS'] = TEST_XLA_FLAGS
  # Files, not pipes: nobody reads the worker's (chatty) stderr until it has finished.
  out, err = tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')
  proc = _popen([sys.executable, os.path.join(HERE, worker)], background, stdout=out, stderr=err, text=True,
                env=env)
  return proc, out, err


def pytest_collection_finish(session):
  """Starts the background work the selected tests will want (see the module docstring)."""
  if session.config.option.collectonly or hasattr(session.config, 'workerinput'):  # (pytest-xdist: on demand)
    return
  selected = {item.path.name for item in session.items}
  for test_file, worker in EARLY_WORKERS.items():
    if test_file in selected and worker not in _workers:
      _workers[worker] = _start_worker(worker, background=True)
  cache_users = {item.path.name for item in session.items if 'compile_cache' in item.fixturenames}
  if len(cache_users) >= 2 and not _warm:
    env = {**os.environ, **_cache_env()}
    for name, args in WARM_RUNS.items():
      cmd = [sys.executable, *args, f'--workdir={os.path.join(_temp_dir("warm"), name)}']
      _warm.append(_popen(cmd, True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session):
  for proc, out, err in _workers.values():
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    out.close()
    err.close()
  _workers.clear()
  for proc in _warm:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  _warm.clear()
  for path in _dirs.values():
    shutil.rmtree(path, ignore_errors=True)
  _dirs.clear()


@pytest.fixture(scope='session')
def worker_output():
  """``collect(worker) -> (returncode, stdout, stderr)`` of tests/<worker>.py: the run started
  when the tests were collected (see EARLY_WORKERS), or a run started now."""
  def collect(worker: str, timeout: float = 600) -> tuple[int, str, str]:
    proc, out, err = _workers.pop(worker, None) or _start_worker(worker)
    try:
      _all_cpus(proc.pid)  # now a test waits for it
      proc.wait(timeout=timeout)
      out.seek(0)
      err.seek(0)
      return proc.returncode, out.read(), err.read()
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
      out.close()
      err.close()
  return collect


@pytest.fixture(scope='module')
def compile_cache(request):
  """Turns on JAX's persistent compilation cache for the module that asks for it; off again after.
  Returns the environment variables that turn it on in a subprocess.

  Compiling is most of a small training run's time on a 2-core CPU. With the cache, a program
  compiled once this session (by any module using the fixture, or by WARM_RUNS) is loaded
  instead of compiled again. A loaded executable is the one XLA compiled for the identical
  program, so a run executes exactly what it would have compiled.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  deadline = time.monotonic() + 180
  # A module whose programs are not the warm runs' (WARM_RUNS_NEEDED = False) goes on beside them:
  # it neither reads their entries nor they its, and waiting would leave its process idle.
  waiting = _warm if getattr(request.module, 'WARM_RUNS_NEEDED', True) else []
  for proc in waiting:  # let them finish what this module would otherwise compile again
    _all_cpus(proc.pid)
    try:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:  # stuck: it may be halfway through writing an entry
      proc.kill()
      proc.wait()
      shutil.rmtree(_dirs.pop('cache'), ignore_errors=True)
  env = _cache_env()
  keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs')
  old = {k: getattr(jax.config, k) for k in keys}
  compilation_cache.reset_cache()
  jax.config.update('jax_compilation_cache_dir', env['JAX_COMPILATION_CACHE_DIR'])
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  yield env
  for k, v in old.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()
