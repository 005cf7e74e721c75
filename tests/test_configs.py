"""Every config file loads with each documented argument and gives a buildable ModelConfig."""

import glob
import importlib.util
import os

import pytest
from absl import flags
from ml_collections import config_dict, config_flags

from llm import models as model, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, 'configs')

# Documented arguments of each config file (see their docstrings).
ARGS = {
    'default.py': ['', 'smoke=True', 'size=124m', 'size=1b'],
    'shakespeare_char.py': ['', 'smoke=True'],
    'fewshot.py': ['', 'smoke=True', 'ckpt=runs/default', 'ckpt=runs/default,step=500,limit=10,fewshot=2',
                   'bias=False'],
    'bert.py': ['', 'smoke=True', 'size=bert-base', 'whole_word=True'],
    't5.py': ['', 'smoke=True', 'size=t5-small'],
}
CASES = [(name, arg) for name, args in ARGS.items() for arg in args]
# Configs of the corpus pipeline (llm/data/clean), not of train.py.
PIPELINE_ARGS = {
    'corpus.py': ['', 'smoke=True', 'bad_words=True'],
    'prepare.py': ['', 'smoke=True', 'runner=local', 'runner=multiprocess', 'runner=dask,smoke=True', 'runner=dataflow'],
}
# finetune.py's configs; tests/test_finetune.py loads them with each documented argument.
FINETUNE_ARGS = {
    'finetune_sst2.py': ['init=runs/x', 'init=runs/x,method=full', 'init=hf:/m,rank=4', 'init=a,steps=10',
                         'init=a,fewshot=0', 'init=a,smoke=True', 'init=runs/bert,arch=bert',
                         'init=runs/t5,arch=t5', 'init=a,arch=bert,method=lora,smoke=True'],
    'finetune_qa.py': ['init=a', 'init=a,method=lora', 'init=a,rank=16', 'init=a,steps=5', 'init=a,smoke=True'],
}
# The controlled bias-mitigation experiment (llm/eval/mitigation.py); tests/test_mitigation.py
# checks that every arm's flags name fields of its recipe's config.
EXPERIMENT_ARGS = {
    'bias_mitigation.py': ['', 'smoke=True', 'limit=100', 'steps=200,ft_steps=50', 'finetune=False', 'size=124m'],
}


def load(name, arg=''):
  """Load a config file by path, as ml_collections' config_flags does, and call get_config(arg)."""
  path = os.path.join(CONFIG_DIR, name)
  spec = importlib.util.spec_from_file_location(f'_test_config_{name[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_every_config_file_is_covered():
  files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CONFIG_DIR, '*.py')))
  files = [f for f in files if f not in ('common.py', '__init__.py')]
  assert files, 'no config files found'
  known = sorted({**ARGS, **PIPELINE_ARGS, **FINETUNE_ARGS, **EXPERIMENT_ARGS})
  assert files == known, f'add the documented arguments of {set(files) ^ set(known)} to ARGS'


@pytest.mark.parametrize('arg', PIPELINE_ARGS['corpus.py'])
def test_corpus_config_builds_pipeline_config(arg):
  from llm.data.clean import pipeline
  cfg = load('corpus.py', arg)
  cfg.inputs, cfg.output = 'raw/*.jsonl.gz', '/tmp/out'
  pcfg = pipeline.from_config(cfg)
  assert pcfg.rules.bad_words.enabled == ('bad_words' in arg)
  assert pcfg.rules.gopher_repetition.top_ngrams == ((2, 0.2), (3, 0.18), (4, 0.16))
  assert pcfg.rules.c4.min_words_per_line == 5 and pcfg.rules.c4.min_sentences == 3
  assert pcfg.dedup.minhash.bands == 14 and pcfg.dedup.minhash.rows == 8
  assert (pcfg.workers == 1) == ('smoke' in arg)
  with pytest.raises(ValueError, match='unknown'):
    pipeline.from_config({**cfg.to_dict(), 'rules': {**cfg.rules.to_dict(), 'gopher': {}}})
  with pytest.raises(ValueError, match='unknown config argument'):
    load('corpus.py', 'bogus=1')


@pytest.mark.parametrize('arg', PIPELINE_ARGS['prepare.py'])
def test_prepare_config_builds_prepare_config(arg):
  from llm.data.prepare import PrepareConfig, beam_options
  cfg = load('prepare.py', arg)
  cfg.sources, cfg.output = 'raw/*.jsonl.gz', '/tmp/out'
  pcfg = run.to_dataclass(PrepareConfig, cfg)
  assert pcfg.runner == (arg.split('runner=')[1].split(',')[0] if 'runner=' in arg else 'direct')
  assert (pcfg.shard_mb, pcfg.workers) == ((1, 1) if 'smoke' in arg else (64, 0))
  if pcfg.runner != 'local':
    assert any(o.startswith('--runner=') for o in beam_options(pcfg))
  with pytest.raises(ValueError, match='unknown config argument'):
    load('prepare.py', 'bogus=1')
  with pytest.raises(ValueError, match="runner='spark'"):
    load('prepare.py', 'runner=spark')


@pytest.mark.parametrize('name,arg', CASES, ids=[f'{n}:{a}' for n, a in CASES])
def test_config_loads_and_builds_model_config(name, arg):
  cfg = load(name, arg)
  assert isinstance(cfg, config_dict.ConfigDict)
  for section in ('model', 'data', 'train', 'mesh', 'sample'):
    assert section in cfg
  mcfg = run.model_config(cfg, 259, 'cpu')  # builds no arrays, so the 1b size is cheap
  assert isinstance(mcfg, model.ModelConfig)
  assert mcfg.dtype == 'float32' and mcfg.attention == 'xla'  # the CPU choices of 'auto'
  assert mcfg.max_seq_len >= cfg.data.seq_len
  assert mcfg.param_count() > 0
  dcfg = run.data_config(cfg)
  assert dcfg.seq_len == cfg.data.seq_len
  ocfg = run.optim_config(cfg)
  assert ocfg.decay_steps == (cfg.train.decay_steps or cfg.train.steps)
  arch = {'bert.py': 'encoder', 't5.py': 'encoder_decoder'}.get(name, 'decoder')
  assert mcfg.arch == arch
  run.check_objective(mcfg, dcfg.objective)  # each config trains its model with the objective it learns from
  if 'smoke=True' in arg:
    assert cfg.model.size == {'bert.py': 'bert-smoke', 't5.py': 't5-smoke'}.get(name, 'smoke')
    assert cfg.data.seq_len == 32 and cfg.train.steps == 6
    assert mcfg.d_model == 64 and mcfg.arch == arch
  if 'size=' in arg:
    size = arg.split('=')[1]
    assert cfg.model.size == size
    assert (mcfg.d_model, mcfg.n_layers) == (model.SIZES[size]['d_model'], model.SIZES[size]['n_layers'])


def test_objective_must_fit_the_architecture():
  mcfg = run.model_config(load('bert.py'), 260, 'cpu')
  with pytest.raises(run.ConfigError, match="data.objective='span_corruption' does not train a model.arch='encoder'"):
    run.check_objective(mcfg, 'span_corruption')
  with pytest.raises(run.ConfigError, match="learns from 'next_token'"):
    run.check_objective(run.model_config(load('default.py'), 259, 'cpu'), 'mlm')


def test_default_sizes():
  assert run.model_config(load('default.py'), 259, 'cpu').n_kv_heads == 2  # 'tiny' is the default
  big = run.model_config(load('default.py', 'size=1b'), 32000, 'gpu')
  assert (big.d_model, big.n_heads, big.n_kv_heads, big.d_ff) == (2048, 32, 8, 8192)
  assert big.dtype == 'bfloat16' and big.attention == 'cudnn'
  assert 1.0e9 < big.param_count() < 1.3e9
  gpt2 = run.model_config(load('default.py', 'size=124m'), 50257, 'tpu')
  assert gpt2.family == 'gpt2' and gpt2.attention == 'xla'


@pytest.mark.parametrize('name', sorted({**ARGS, **FINETUNE_ARGS}))
def test_unknown_argument_raises(name):
  with pytest.raises(ValueError, match='unknown config argument'):
    load(name, 'bogus=1')
  with pytest.raises(ValueError, match='True or False'):
    load(name, 'smoke=maybe')


def test_shakespeare_char_takes_no_size():
  with pytest.raises(ValueError, match="unknown config argument 'size'"):
    load('shakespeare_char.py', 'size=124m')


@pytest.mark.parametrize('name', sorted({**ARGS, **FINETUNE_ARGS}))
def test_config_lock_catches_misspelt_keys(name):
  cfg = load(name)
  cfg.lock()
  cfg.train.lr = 2e-3  # existing keys can still be set
  assert cfg.train.lr == 2e-3
  with pytest.raises((AttributeError, KeyError)):
    cfg.train.lrr = 1e-3
  with pytest.raises((AttributeError, KeyError)):
    cfg.modle = None


def _parse_flags(argv):
  fv = flags.FlagValues()
  # Override flags (--config.x.y) are defined from the command line, so hand it over.
  config_flags.DEFINE_config_file('config', flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def test_config_flags_loading():
  path = os.path.join(CONFIG_DIR, 'default.py')
  cfg = _parse_flags(['prog', f'--config={path}:smoke=True', '--config.train.steps=7',
                      '--config.model.n_layers=3'])
  assert cfg.train.steps == 7 and cfg.model.size == 'smoke'
  assert run.model_config(cfg, 259, 'cpu').n_layers == 3
  with pytest.raises((AttributeError, KeyError, flags.Error), match='lrr'):
    _parse_flags(['prog', f'--config={path}', '--config.train.lrr=1'])


def test_shakespeare_char_values():
  cfg = load('shakespeare_char.py')
  mcfg = run.model_config(cfg, 259, 'cpu')
  assert (mcfg.n_layers, mcfg.n_heads, mcfg.d_model) == (4, 4, 128)
  assert mcfg.family == 'gpt2' and not mcfg.use_bias and mcfg.tie_embeddings
  assert mcfg.max_seq_len == 64 and mcfg.padded_vocab == 259 and not mcfg.scan_layers
  assert cfg.data.seq_len == 64
  assert cfg.train.batch_size == 12
  assert cfg.train.steps == 2000
  assert cfg.train.lr == 1e-3 and cfg.train.min_lr == 1e-4
  assert cfg.train.warmup_steps == 100
  assert cfg.train.b2 == 0.99
  assert cfg.data.split == 'tail' and cfg.data.val_fraction == 0.1
  opt = run.optim_config(cfg)
  assert (opt.lr, opt.min_lr, opt.warmup_steps, opt.decay_steps, opt.b2) == (1e-3, 1e-4, 100, 2000, 0.99)
  assert cfg.cpu_devices == -1  # one device per core


def test_cpu_runs_use_one_device_per_core_by_default(monkeypatch):
  """Every CPU config splits the host into a device per core (the most that divide the batch);
  their smoke variants keep one device."""
  for name in ('default.py', 'shakespeare_char.py', 'bert.py', 't5.py', 'finetune_sst2.py', 'finetune_qa.py'):
    assert load(name).cpu_devices == -1 and load(name, 'smoke=True').cpu_devices == 0, name
  assert load('fewshot.py', 'ckpt=runs/x').cpu_devices == -1
  monkeypatch.setattr(run.os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
  assert run.auto_cpu_devices(16) == 4 and run.auto_cpu_devices(12) == 6 and run.auto_cpu_devices(7) == 1
  assert run.auto_cpu_devices() == 6
  monkeypatch.setenv('XLA_FLAGS', '--xla_backend_optimization_level=0')
  run.configure_cpu_devices(-1, 16)
  assert run.os.environ['XLA_FLAGS'].endswith('--xla_force_host_platform_device_count=4')


def test_fewshot_config_selects_the_evaluate_loop_and_its_evaluators():
  from llm.eval import evaluators
  cfg = load('fewshot.py', 'ckpt=runs/default,limit=10,fewshot=2')
  assert cfg.loop == 'evaluate' and cfg.eval.ckpt == 'runs/default'
  assert sorted(cfg.evals) == ['bias', 'fewshot']
  built = evaluators.build_evaluators(cfg.evals, ['tasks'], root=os.path.dirname(CONFIG_DIR))
  assert sorted(type(ev).__name__ for ev, _ in built) == ['BiasEvaluator', 'FewShotEvaluator']
  for ev, every in built:
    assert every == 0 and ev.limit == 10
  # fewshot=k overrides every task's k except those whose file pins 0 (the harness's rule).
  ks = {t.name: t.num_fewshot for ev, _ in built for t in ev.tasks}
  assert ks['sst2_fewshot'] == 2 and set(ks.values()) <= {0, 2}
  assert sorted(load('fewshot.py', 'bias=False').evals) == ['fewshot']
  assert all(e.limit == 8 for e in load('fewshot.py', 'smoke=True').evals.values())
  assert load('default.py').loop == 'pretrain' and not load('default.py').evals


def test_freed_host_memory_is_kept_for_reuse():
  """After keep_freed_host_memory, buffers freed and allocated again are not faulted in afresh
  each round (glibc's default trims the 45 MB freed above its 32 MB threshold: a fault per page)."""
  import subprocess
  import sys
  code = '''
import ctypes, resource, sys
from llm import run
if sys.argv[1] == 'kept':
  assert run.keep_freed_host_memory()
libc = ctypes.CDLL('libc.so.6')
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 15 << 20
libc.free(libc.malloc(16 << 20))  # by default this lifts the thresholds to 16 MB (mmap) and 32 MB (trim)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # like a step's buffers: three allocated, used, freed
  ps = [libc.malloc(size) for _ in range(3)]
  for p in ps:
    ctypes.memset(p, 1, size)
  for p in ps:
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
'''
  faults = {}
  for mode in ('default', 'kept'):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    out = subprocess.run([sys.executable, '-c', code, mode], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    faults[mode] = int(out.stdout.split()[-1])
  pages = 20 * 3 * (15 << 20) // 4096
  assert faults['default'] > pages // 2, faults  # each round faults its pages in again
  assert faults['kept'] < pages // 8, faults  # the first round's pages, reused
