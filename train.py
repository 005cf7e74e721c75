"""Pre-train a decoder-only language model, or evaluate a trained one.

  python train.py --config=configs/default.py --workdir=runs/default
  python train.py --config=configs/default.py:size=124m --config.train.lr=3e-4 --workdir=runs/124m
  python train.py --config=configs/fewshot.py:ckpt=runs/default --workdir=runs/eval

Rerunning with the same --workdir resumes from its newest checkpoint. The workdir gets
checkpoints/, TensorBoard event files, metrics.jsonl (one object per logged step,
including the ``eval/<task>/<metric>`` of config.evals and the energy_kwh and co2e_kg so
far), footprint.json (energy and carbon by phase, llm/footprint.py), config.json and sample.txt;
with config.monitor.enabled, ``monitor/...`` rates of the generations in metrics.jsonl and
flagged outputs in monitor_flags.jsonl (llm/eval/monitor.py).
A config with ``loop='evaluate'`` (configs/fewshot.py) trains nothing: it scores the
checkpoint of ``eval.ckpt`` on config.evals and writes eval_results.json.
"""

from __future__ import annotations

import logging
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py', 'Run config (a configs/*.py file).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.')


def main(argv) -> None:
  del argv
  # Orbax and CLU log every file they write at INFO; keep the console to our progress lines.
  absl_logging.set_verbosity(absl_logging.WARNING)
  cfg, workdir = _CONFIG.value, _WORKDIR.value
  if not workdir:
    raise app.UsageError('--workdir is required (e.g. --workdir=runs/default)')
  from llm.run import run_recipe
  run_recipe({'pretrain': run, 'evaluate': evaluate}, cfg, workdir)


def run(cfg, workdir: str) -> dict:
  """Train as ``cfg`` says; returns the last logged metrics. Importable for tests."""
  # ----- Platform ------------------------------------------------------------------------
  # Must precede the first use of JAX's CPU backend; it has no effect on GPU/TPU devices.
  from llm.run import configure_cpu_devices
  configure_cpu_devices(cfg.cpu_devices, cfg.train.batch_size)
  import jax
  from clu import metric_writers

  from llm import checkpoint, data, loop, sharding, trainer
  from llm.eval import evaluators, results
  from llm.eval.lms import make_lm
  from llm.eval.monitor import Monitor
  from llm.run import (ConfigError, check_objective, data_config, init_distributed, init_source, model_config,
                       open_ledger, optim_config)

  init_distributed()  # multi-host: one process per host (llm/run.py says how to launch)
  os.makedirs(workdir, exist_ok=True)
  lead = jax.process_index() == 0
  ledger = open_ledger(cfg, workdir, 'train.py')  # energy and carbon by phase -> footprint.json

  # ----- Mesh ----------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(cfg.mesh))
  dp = mesh.shape['data'] * mesh.shape['fsdp']
  tc = cfg.train
  if tc.batch_size % (dp * tc.accum_steps):
    raise ConfigError(
        f'train.batch_size={tc.batch_size} is not divisible by the data-parallel size {dp} '
        f'(mesh data*fsdp) times train.accum_steps={tc.accum_steps}; use a multiple of {dp * tc.accum_steps}')
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), tc.checkpoint_every,
                                 tc.keep_checkpoints, tc.async_checkpoint)

  # ----- Starting weights (config.init_from: a checkpoint workdir or hf:<dir>) ------------
  # The source fixes the architecture and the tokenizer; a resumed run reads both from its
  # own checkpoint and the weights from the checkpoint, not from the source.
  with ledger.phase('checkpointing'):
    init = init_source(cfg, ckpt, mesh, jax.default_backend()) if cfg.init_from else None

  # ----- Data ----------------------------------------------------------------------------
  repo = os.path.dirname(os.path.abspath(__file__))
  # Scores every generation (evaluators' generate_until, the final sample; llm/eval/monitor.py).
  # Built before the data, so that a bad config.monitor fails in a second.
  monitor = Monitor.from_config(cfg.monitor, root=repo, out_dir=workdir if lead else None)
  corpus = data.load_corpus(data_config(cfg), root=repo, tokenizer=init.tokenizer if init else None)
  val = data.val_batches(corpus, tc.batch_size, tc.eval_batches, jax.process_index(), jax.process_count())
  if lead:
    print('\n'.join(data.describe(corpus)), flush=True)
    data.write_mitigation_report(corpus, workdir)  # data_mitigation.json, when augmentation or reweighting is on

  # ----- Model, optimizer, shardings -----------------------------------------------------
  model_cfg = init.model_cfg if init else model_config(cfg, corpus.tokenizer.vocab_size, jax.default_backend())
  check_objective(model_cfg, corpus.cfg.objective)  # next_token, mlm or span_corruption, as model.arch learns
  setup = trainer.setup_model(model_cfg, optim_config(cfg), mesh)
  train_step = trainer.make_train_step(setup, optim_config(cfg), cfg.seed)
  meta = {'model': checkpoint.model_meta(model_cfg), 'data_seed': cfg.data.seed, 'batch_size': tc.batch_size,
          'tokenizer': checkpoint.record_tokenizer(workdir, corpus.tokenizer) if lead else corpus.tokenizer.spec()}
  if init is not None:  # continued pre-training: what it continued from, and that model's step
    meta.update(init_from=cfg.init_from, init_step=init.step)
  # Evaluators of config.evals that run every N steps (the evaluate loop runs them all).
  periodic = [(ev, every) for ev, every in evaluators.build_evaluators(
      cfg.evals, _split(cfg.eval.task_dirs), root=repo) if every > 0]

  # ----- Restore or initialise -----------------------------------------------------------
  state, start, how = loop.restore_or_init(ckpt, setup, seed=cfg.seed, params=init.params if init else None)
  logging.info(how)
  ledger.at_step(start)
  if init is not None and start == 0:
    print(f'initialised from {cfg.init_from} (its step {init.step})', flush=True)
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(cfg.to_json_best_effort(indent=2))
  batches = data.train_batches(corpus, tc.batch_size, start, jax.process_index(), jax.process_count())
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  loop.log_start(setup, start, tc.steps, corpus.num_train_rows)

  def run_evaluators(params, step: int) -> dict:
    due = [ev for ev, every in periodic if loop.is_due(step, every) or step == tc.steps]
    if not due:
      return {}
    with ledger.phase('evaluation'):
      lm = make_lm(setup.graphdef, model_cfg, params, corpus.tokenizer, mesh, batch_rows=cfg.eval.batch_rows,
                   max_length=cfg.eval.max_length or None, add_bos_token=cfg.eval.add_bos_token)
      lm.monitor, monitor.tags = monitor, {'step': step}
      return {**results.flat_metrics([ev.run(lm) for ev in due]), **monitor.collect()}  # monitor/...: this step's

  # ----- Loop ----------------------------------------------------------------------------
  validation = loop.validation_loss_fn(setup, val)
  state, last, stopped = loop.train_loop(
      state, start, train_step, batches, setup, ckpt, meta,
      loop.LoopConfig(tc.steps, tc.log_every, tc.eval_every, tc.checkpoint_every,
                      tc.batch_size * cfg.data.seq_len, cfg.data.seq_len,
                      val[0]['targets'].shape[1] if 'dec_inputs' in val[0] else 0),
      workdir, writer, ledger, evaluate=lambda params, step: validation(params),
      periodic=run_evaluators if periodic else None)

  # ----- Sample, footprint ---------------------------------------------------------------
  if not stopped and model_cfg.arch == 'decoder':  # an encoder fills masks and a T5 answers inputs: no free text
    with ledger.phase('evaluation'):
      sample(cfg, workdir, setup, model_cfg, state.params, corpus.tokenizer, mesh, writer, monitor)
  writer.flush()
  summary = ledger.close(last.get('step'))
  if lead:
    print(summary, flush=True)
  return last


def sample(cfg, workdir: str, setup, model_cfg, params, tok, mesh, writer, monitor=None) -> None:
  """Write (sample.txt, TensorBoard) and print a continuation of ``cfg.sample.prompt``.

  An enabled ``monitor`` (llm/eval/monitor.py) scores the continuation; its rates go to
  metrics.jsonl and TensorBoard as ``monitor/sample/...`` at the last step, and a blocked
  continuation is replaced by its placeholder in everything written and printed.
  """
  import jax
  from llm.eval.monitor import append_metrics
  from llm.tokenizer import prefix_token
  lead = jax.process_index() == 0
  tc = cfg.train
  prompt = ([tok.bos_id] if tok.add_bos else []) + list(tok.encode(cfg.sample.prompt))
  prompt = prompt or [prefix_token(tok)]
  ids = sample_beyond_context(setup.graphdef, model_cfg, params, prompt, cfg.sample.num_tokens,
                              temperature=cfg.sample.temperature, top_k=cfg.sample.top_k, seed=cfg.seed, mesh=mesh)
  text = tok.decode(ids)
  if monitor is not None and monitor.enabled:
    monitor.tags = {'step': tc.steps}
    generated = tok.decode(ids[len(prompt):])  # the prompt is not the model's output
    kept = monitor.apply([generated], prompts=[cfg.sample.prompt], source='sample')[0]
    if kept != generated:  # blocked
      text = tok.decode(ids[:len(prompt)]) + kept
    rates = monitor.collect('monitor/sample')
    if lead:
      writer.write_scalars(tc.steps, rates)
      append_metrics(workdir, tc.steps, rates)
  if lead:
    with open(os.path.join(workdir, 'sample.txt'), 'w') as f:
      f.write(text)
    writer.write_texts(tc.steps, {'sample': text})
  writer.flush()
  if lead:
    print(f'--- sample after {tc.steps} steps (temperature {cfg.sample.temperature}, top-k {cfg.sample.top_k}) ---')
    print(text, flush=True)


def sample_beyond_context(graphdef, model_cfg, params, prompt: list[int], num_tokens: int, *, temperature: float,
                          top_k: int, seed: int, mesh) -> list[int]:
  """prompt + ``num_tokens`` sampled ids, even past the model's context: KV-cache decoding in
  windows, each re-prefilled from the last quarter context of text so far (nanoGPT's sample
  crops to its context one token at a time), so every token sees at least a quarter context.

  Every window after the first has the same shape (a quarter-context prompt, three quarters
  new), and so has the first for a prompt of up to a quarter context: the sampler compiles
  once (each compile of a new window size cost ~2.3 s on the Shakespeare model, while a
  window decodes in 12 ms). The last window is decoded whole and cut to ``num_tokens``.
  """
  from llm.eval import decoding
  ids, window, total = list(prompt), model_cfg.max_seq_len, len(prompt) + num_tokens
  keep = max(1, window // 4)
  if window < 2:
    raise ValueError(f'a context of {window} token leaves no room to sample beyond it')
  while len(ids) < total:
    first = len(ids) == len(prompt)
    context = ids if first and len(ids) < window else ids[-keep:]  # a long prompt is used whole once
    n = window - max(len(context), keep)
    gen = decoding.generate(graphdef, model_cfg, params, [context], n, temperature=temperature, top_k=top_k,
                            seed=seed + len(ids), mesh=mesh)
    ids += list(gen.tokens[0])[:total - len(ids)]
    if len(gen.tokens[0]) < n:  # stopped early (EOS): the document ended
      break
  return ids


def evaluate(cfg, workdir: str) -> list:
  """Score the checkpoint of ``cfg.eval.ckpt`` on every evaluator of ``cfg.evals``; returns their outputs."""
  # ----- Platform ------------------------------------------------------------------------
  from llm.run import configure_cpu_devices
  configure_cpu_devices(cfg.cpu_devices)
  import jax
  from clu import metric_writers
  from flax import nnx

  from llm import checkpoint, sharding
  from llm.eval import evaluators, results
  from llm.eval.lms import make_lm
  from llm.eval.monitor import Monitor, append_metrics
  from llm.models import build
  from llm.run import ConfigError, open_ledger, runtime_choices

  if not cfg.eval.ckpt:
    raise ConfigError('the evaluate loop needs a checkpoint: pass ckpt=<training --workdir>, e.g. '
                      '--config=configs/fewshot.py:ckpt=runs/default')
  os.makedirs(workdir, exist_ok=True)
  repo = os.path.dirname(os.path.abspath(__file__))
  # Added to any ledger already in the workdir (never replaced: it may be a training run's).
  ledger = open_ledger(cfg, workdir, 'train.py (evaluate)')

  # ----- Mesh ----------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(cfg.mesh))

  # ----- Evaluators (before loading: a bad task file fails in a second, not after a load) --
  evals = evaluators.build_evaluators(cfg.evals, _split(cfg.eval.task_dirs), root=repo)
  if not evals:
    raise ConfigError('config.evals is empty: nothing to evaluate (see configs/fewshot.py)')
  monitor = Monitor.from_config(cfg.monitor, root=repo, out_dir=workdir if jax.process_index() == 0 else None)

  # ----- Parameters only, straight into this mesh's shardings ---------------------------
  choices = runtime_choices(cfg, jax.default_backend())
  with ledger.phase('checkpointing'):
    model_cfg, tok, params, step = checkpoint.load_params(
        cfg.eval.ckpt, None if cfg.eval.step < 0 else cfg.eval.step, mesh,
        overrides=dict(choices, dense_grad='xla', remat='none', dropout=0.0))
  kind = type(tok).__name__
  if cfg.eval.tokenizer and not kind.lower().startswith(cfg.eval.tokenizer.lower()):
    raise ConfigError(f'eval.tokenizer={cfg.eval.tokenizer!r} but {cfg.eval.ckpt} was trained with {kind}; '
                      f'drop --config.eval.tokenizer or evaluate a checkpoint trained with it')
  graphdef = nnx.split(nnx.eval_shape(lambda: build(model_cfg, jax.random.key(0))))[0]
  print(f'evaluating {cfg.eval.ckpt} step {step} ({model_cfg.param_count() / 1e6:.2f}M parameters, {kind}) '
        f'on {jax.device_count()} {jax.default_backend()} device(s), mesh {dict(mesh.shape)}', flush=True)

  # ----- Scorer: the harness's LM interface over our model -------------------------------
  lm = make_lm(graphdef, model_cfg, params, tok, mesh, batch_rows=cfg.eval.batch_rows,
               max_length=cfg.eval.max_length or None, add_bos_token=cfg.eval.add_bos_token)
  lm.monitor, monitor.tags = monitor, {'step': step}  # every generate_until answer passes through it

  # ----- Run and write ---------------------------------------------------------------------
  stale = results.clear_previous(workdir)  # a reused workdir: never mix two runs' files
  if stale:
    print(f'removed {len(stale)} outputs of a previous evaluation in {workdir}', flush=True)
  with ledger.phase('evaluation'):
    outputs = [ev.run(lm, out_dir=workdir) for ev, _ in evals]
  print(results.table(outputs), flush=True)
  path = results.write_results(workdir, outputs, config={
      'model': 'llm', 'ckpt': os.path.abspath(cfg.eval.ckpt), 'step': step,
      'model_config': checkpoint.model_meta(model_cfg), 'tokenizer': kind, 'mesh': dict(mesh.shape),
      'devices': f'{jax.device_count()} {jax.default_backend()}', 'batch_rows': cfg.eval.batch_rows,
      'max_length': cfg.eval.max_length or model_cfg.max_seq_len})
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  rates = monitor.collect()  # monitor/...: {} when disabled or nothing was generated
  writer.write_scalars(step, {**results.flat_metrics(outputs), **rates})
  writer.flush()
  if rates and jax.process_index() == 0:
    append_metrics(workdir, step, rates)
    print('monitor: ' + ', '.join(f'{k.split("/", 1)[1]} {v:.4g}' for k, v in rates.items()
                                  if '/sentiment/' not in k and '/mentions/' not in k), flush=True)
  for out in outputs:
    s = out.lm_stats
    print(f'{out.name}: {s.get("requests", 0)} requests in {out.seconds:.1f}s '
          f'({s.get("requests_per_sec", 0):.1f} requests/s), {s.get("truncated", 0)} prompts truncated '
          f'from the left to fit the model' + ''.join(f'; wrote {f}' for f in out.files), flush=True)
  print(f'wrote {path}', flush=True)
  summary = ledger.close(step)
  if jax.process_index() == 0:
    print(summary, flush=True)
  return outputs


def _split(names: str) -> list[str]:
  return [n.strip() for n in names.split(',') if n.strip()]


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
