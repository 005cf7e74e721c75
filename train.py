"""Pre-train a decoder-only language model, or evaluate a trained one.

  python train.py --config=configs/default.py --workdir=runs/default
  python train.py --config=configs/default.py:size=124m --config.train.lr=3e-4 --workdir=runs/124m
  python train.py --config=configs/fewshot.py:ckpt=runs/default --workdir=runs/eval

Rerunning with the same --workdir resumes from its newest checkpoint. The workdir gets
checkpoints/, TensorBoard event files, metrics.jsonl (one object per logged step,
including the ``eval/<task>/<metric>`` of config.evals), config.json and sample.txt.
A config with ``loop='evaluate'`` (configs/fewshot.py) trains nothing: it scores the
checkpoint of ``eval.ckpt`` on config.evals and writes eval_results.json.
"""

from __future__ import annotations

import logging
import os
import sys
import time

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
  from llm.checkpoint import CheckpointMismatch, CheckpointNotFound
  from llm.data import DataError
  from llm.eval.evaluators import EvalConfigError
  from llm.eval.tasks import TaskError
  from llm.run import ConfigError, NonFiniteLoss
  from llm.tokenizer import TokenizerError
  try:
    if cfg.loop == 'evaluate':
      evaluate(cfg, workdir)
    elif cfg.loop == 'pretrain':
      run(cfg, workdir)
    else:
      raise ConfigError(f"loop={cfg.loop!r} is not a loop; use 'pretrain' or 'evaluate'")
  except (ConfigError, DataError, CheckpointMismatch, CheckpointNotFound, NonFiniteLoss, EvalConfigError,
          TaskError, TokenizerError) as e:  # expected: one message, no traceback
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def run(cfg, workdir: str) -> dict:
  """Train as ``cfg`` says; returns the last logged metrics. Importable for tests."""
  # ----- Platform ------------------------------------------------------------------------
  # Must precede the first use of JAX's CPU backend; it has no effect on GPU/TPU devices.
  from llm.run import configure_cpu_devices
  configure_cpu_devices(cfg.cpu_devices)
  import jax
  import numpy as np
  from clu import metric_writers, periodic_actions

  from llm import checkpoint, data, perf, sharding, trainer
  from llm.eval import evaluators, results
  from llm.eval.scorer import ModelLM
  from llm.tokenizer import prefix_token
  from llm.run import (ConfigError, MetricsLog, PreemptionGuard, check_finite, data_config, init_source,
                       model_config, optim_config)

  if 'JAX_COORDINATOR_ADDRESS' in os.environ or 'TPU_WORKER_HOSTNAMES' in os.environ:
    jax.distributed.initialize()  # multi-host: one process per host
  os.makedirs(workdir, exist_ok=True)
  on_cpu = jax.default_backend() == 'cpu'
  lead = jax.process_index() == 0

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
  start = ckpt.latest_step()

  # ----- Starting weights (config.init_from: a checkpoint workdir or hf:<dir>) ------------
  # The source fixes the architecture and the tokenizer; a resumed run reads both from its
  # own checkpoint and the weights from the checkpoint, not from the source.
  init = init_source(cfg, ckpt, start, mesh, jax.default_backend()) if cfg.init_from else None

  # ----- Data ----------------------------------------------------------------------------
  repo = os.path.dirname(os.path.abspath(__file__))
  corpus = data.load_corpus(data_config(cfg), root=repo, tokenizer=init.tokenizer if init else None)
  val = data.val_batches(corpus, tc.batch_size, tc.eval_batches, jax.process_index(), jax.process_count())

  # ----- Model, optimizer, shardings -----------------------------------------------------
  model_cfg = init.model_cfg if init else model_config(cfg, corpus.tokenizer.vocab_size, jax.default_backend())
  opt_cfg = optim_config(cfg)
  setup = trainer.setup_model(model_cfg, opt_cfg, mesh)
  train_step = trainer.make_train_step(setup, opt_cfg, cfg.seed)
  eval_step = trainer.make_eval_step(setup)
  meta = {'model': checkpoint.model_meta(model_cfg), 'data_seed': cfg.data.seed, 'batch_size': tc.batch_size,
          'tokenizer': checkpoint.record_tokenizer(workdir, corpus.tokenizer) if lead else corpus.tokenizer.spec()}
  if cfg.init_from:
    meta['init_from'] = cfg.init_from
  # Evaluators of config.evals that run every N steps (the evaluate loop runs them all).
  periodic = [(ev, every) for ev, every in evaluators.build_evaluators(
      cfg.evals, _split(cfg.eval.task_dirs), root=repo) if every > 0]

  # ----- Restore or initialise -----------------------------------------------------------
  # Resume order: 1) newest complete checkpoint in the workdir, 2) check it is this model,
  # 3) restore state into this run's shardings, 4) the data stream restarts at the
  # restored step, 5) metrics.jsonl drops lines logged after that step.
  if start is not None:
    state, _ = ckpt.restore(start, setup.abstract_state(),
                            checkpoint.architecture_keys(checkpoint.model_meta(model_cfg)))
    logging.info('resumed from %s at step %d', ckpt.directory, start)
  elif init is not None:
    start = 0
    state = trainer.state_from_params(setup, init.params)
    print(f'initialised from {cfg.init_from}', flush=True)
  else:
    start = 0
    state = trainer.init_state(setup, cfg.seed)
  metrics_log = MetricsLog(os.path.join(workdir, 'metrics.jsonl'), truncate_after=start, enabled=lead)
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(cfg.to_json_best_effort(indent=2))
  batches = data.train_dataset(corpus, tc.batch_size, start, jax.process_index(),
                               jax.process_count()).as_numpy_iterator()

  # ----- Writers and hooks ---------------------------------------------------------------
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  report = periodic_actions.ReportProgress(num_train_steps=tc.steps, writer=writer, every_steps=tc.log_every)
  guard = PreemptionGuard()
  n_params = model_cfg.param_count()
  tokens_per_step = tc.batch_size * cfg.data.seq_len
  logging.info('model: %s, %.2fM parameters; mesh %s; %d train rows', model_cfg, n_params / 1e6,
               dict(mesh.shape), corpus.num_train_rows)
  print(f'training {n_params / 1e6:.2f}M parameters on {jax.device_count()} {jax.default_backend()} '
        f'device(s), mesh {dict(mesh.shape)}, steps {start}..{tc.steps}', flush=True)

  def validation_loss(params) -> dict:
    tot, n = 0.0, 0.0
    for b in val:
      l, c = eval_step(params, trainer.shard_batch(b, mesh))
      tot, n = tot + float(l), n + float(c)
    loss = tot / max(n, 1.0)
    return {'val_loss': loss, 'val_perplexity': float(np.exp(min(loss, 50.0)))}

  def run_evaluators(params, step: int) -> dict:
    due = [ev for ev, every in periodic if is_due(step, every) or step == tc.steps]
    if not due:
      return {}
    lm = ModelLM(setup.graphdef, model_cfg, params, corpus.tokenizer, mesh, batch_rows=cfg.eval.batch_rows,
                 max_length=cfg.eval.max_length or None, add_bos_token=cfg.eval.add_bos_token,
                 generate_fn=evaluators.make_generate_fn(setup.graphdef, model_cfg, params, corpus.tokenizer, mesh))
    return results.flat_metrics([ev.run(lm) for ev in due])

  def is_due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0

  # ----- Loop ----------------------------------------------------------------------------
  pending: list[tuple[int, dict]] = []  # device metrics of steps not yet checked on the host
  last: dict = {}
  t_last, step_last = time.perf_counter(), start
  step = start
  batch = trainer.shard_batch(next(batches), mesh)
  while step < tc.steps:
    state, metrics = train_step(state, batch)
    step += 1
    if step < tc.steps:  # prepare the next batch while this step runs
      batch = trainer.shard_batch(next(batches), mesh)
    if on_cpu:  # XLA's CPU collectives deadlock when several steps are in flight
      jax.block_until_ready(metrics['train_loss'])
    pending.append((step, metrics))
    report(step)
    log_now, eval_now = is_due(step, tc.log_every) or step == tc.steps, is_due(step, tc.eval_every) or step == tc.steps
    eval_row = run_evaluators(state.params, step) if periodic else {}
    log_now = log_now or bool(eval_row)
    stop = guard.requested  # read once: SIGTERM may arrive at any point below
    save_now = is_due(step, tc.checkpoint_every) or step == tc.steps or stop
    if log_now or eval_now or save_now:
      fetched = check_finite(jax.device_get(pending))  # raises NonFiniteLoss naming the step
      pending.clear()
    if log_now or eval_now:
      now = time.perf_counter()
      row = {k: float(v) for k, v in fetched[-1][1].items() if k != 'tokens'}
      row['step'] = step
      tps = tokens_per_step * (step - step_last) / max(now - t_last, 1e-9)
      row['tokens_per_sec'] = tps
      m = perf.mfu(tps, model_cfg, cfg.data.seq_len, jax.device_count())
      if m is not None:
        row['mfu'] = m
      if eval_now:
        row.update(validation_loss(state.params))
      row.update(eval_row)
      writer.write_scalars(step, {k: v for k, v in row.items() if k != 'step'})
      metrics_log.write(row)
      if lead:
        eta = (tc.steps - step) * (now - t_last) / max(step - step_last, 1)
        print(f'step {step:6d}/{tc.steps}  loss {row["train_loss"]:.4f}'
              + (f'  val_loss {row["val_loss"]:.4f}' if 'val_loss' in row else '')
              + f'  lr {row["learning_rate"]:.2e}  {tps:,.0f} tok/s'
              + (f'  mfu {row["mfu"]:.1%}' if 'mfu' in row else '') + f'  eta {eta:.0f}s', flush=True)
      last = row
      t_last, step_last = time.perf_counter(), step
    if save_now:
      ckpt.save(step, state, {**meta, 'step': step}, force=step == tc.steps or stop)
    if stop and step < tc.steps:
      ckpt.close()
      writer.flush()
      if ckpt.latest_step() != step:
        raise RuntimeError(f'SIGTERM at step {step}: the checkpoint could not be written to {ckpt.directory}')
      print(f'SIGTERM: saved a checkpoint at step {step} in {ckpt.directory}; rerun the same command '
            f'to resume', flush=True)
      return last

  ckpt.close()

  # ----- Sample --------------------------------------------------------------------------
  tok = corpus.tokenizer
  prompt = ([tok.bos_id] if tok.add_bos else []) + list(tok.encode(cfg.sample.prompt))
  prompt = prompt or [prefix_token(tok)]
  ids = sample_beyond_context(setup.graphdef, model_cfg, state.params, prompt, cfg.sample.num_tokens,
                              temperature=cfg.sample.temperature, top_k=cfg.sample.top_k, seed=cfg.seed, mesh=mesh)
  text = tok.decode(ids)
  if lead:
    with open(os.path.join(workdir, 'sample.txt'), 'w') as f:
      f.write(text)
    writer.write_texts(tc.steps, {'sample': text})
  writer.flush()
  print(f'--- sample after {tc.steps} steps (temperature {cfg.sample.temperature}, top-k {cfg.sample.top_k}) ---')
  print(text, flush=True)
  return last


def sample_beyond_context(graphdef, model_cfg, params, prompt: list[int], num_tokens: int, *, temperature: float,
                          top_k: int, seed: int, mesh) -> list[int]:
  """prompt + ``num_tokens`` sampled ids, even past the model's context: KV-cache decoding in
  windows, each re-prefilled from the last half context of text so far (nanoGPT's sample
  crops the same way, one token at a time)."""
  from llm.eval import decoding
  ids, window = list(prompt), model_cfg.max_seq_len
  while len(ids) < len(prompt) + num_tokens:
    context = ids[-(window // 2):] if len(ids) >= window // 2 else ids
    n = min(len(prompt) + num_tokens - len(ids), window - len(context))
    gen = decoding.generate(graphdef, model_cfg, params, [context], n, temperature=temperature, top_k=top_k,
                            seed=seed + len(ids), mesh=mesh)
    ids += list(gen.tokens[0])
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
  from llm.eval.scorer import ModelLM
  from llm.model import Transformer
  from llm.run import ConfigError, runtime_choices

  if not cfg.eval.ckpt:
    raise ConfigError('the evaluate loop needs a checkpoint: pass ckpt=<training --workdir>, e.g. '
                      '--config=configs/fewshot.py:ckpt=runs/default')
  os.makedirs(workdir, exist_ok=True)
  repo = os.path.dirname(os.path.abspath(__file__))

  # ----- Mesh ----------------------------------------------------------------------------
  mesh = sharding.make_mesh(dict(cfg.mesh))

  # ----- Evaluators (before loading: a bad task file fails in a second, not after a load) --
  evals = evaluators.build_evaluators(cfg.evals, _split(cfg.eval.task_dirs), root=repo)
  if not evals:
    raise ConfigError('config.evals is empty: nothing to evaluate (see configs/fewshot.py)')

  # ----- Parameters only, straight into this mesh's shardings ---------------------------
  choices = runtime_choices(cfg, jax.default_backend())
  model_cfg, tok, params, step = checkpoint.load_params(
      cfg.eval.ckpt, None if cfg.eval.step < 0 else cfg.eval.step, mesh,
      overrides=dict(choices, dense_grad='xla', remat='none', dropout=0.0))
  kind = type(tok).__name__
  if cfg.eval.tokenizer and not kind.lower().startswith(cfg.eval.tokenizer.lower()):
    raise ConfigError(f'eval.tokenizer={cfg.eval.tokenizer!r} but {cfg.eval.ckpt} was trained with {kind}; '
                      f'drop --config.eval.tokenizer or evaluate a checkpoint trained with it')
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(model_cfg, jax.random.key(0))))[0]
  print(f'evaluating {cfg.eval.ckpt} step {step} ({model_cfg.param_count() / 1e6:.2f}M parameters, {kind}) '
        f'on {jax.device_count()} {jax.default_backend()} device(s), mesh {dict(mesh.shape)}', flush=True)

  # ----- Scorer: the harness's LM interface over our model -------------------------------
  lm = ModelLM(graphdef, model_cfg, params, tok, mesh, batch_rows=cfg.eval.batch_rows,
               max_length=cfg.eval.max_length or None, add_bos_token=cfg.eval.add_bos_token,
               generate_fn=evaluators.make_generate_fn(graphdef, model_cfg, params, tok, mesh))

  # ----- Run and write ---------------------------------------------------------------------
  stale = results.clear_previous(workdir)  # a reused workdir: never mix two runs' files
  if stale:
    print(f'removed {len(stale)} outputs of a previous evaluation in {workdir}', flush=True)
  outputs = [ev.run(lm, out_dir=workdir) for ev, _ in evals]
  print(results.table(outputs), flush=True)
  path = results.write_results(workdir, outputs, config={
      'model': 'llm', 'ckpt': os.path.abspath(cfg.eval.ckpt), 'step': step,
      'model_config': checkpoint.model_meta(model_cfg), 'tokenizer': kind, 'mesh': dict(mesh.shape),
      'devices': f'{jax.device_count()} {jax.default_backend()}', 'batch_rows': cfg.eval.batch_rows,
      'max_length': cfg.eval.max_length or model_cfg.max_seq_len})
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() != 0)
  writer.write_scalars(step, results.flat_metrics(outputs))
  writer.flush()
  for out in outputs:
    s = out.lm_stats
    print(f'{out.name}: {s.get("requests", 0)} requests in {out.seconds:.1f}s '
          f'({s.get("requests_per_sec", 0):.1f} requests/s), {s.get("truncated", 0)} prompts truncated '
          f'from the left to fit the model' + ''.join(f'; wrote {f}' for f in out.files), flush=True)
  print(f'wrote {path}', flush=True)
  return outputs


def _split(names: str) -> list[str]:
  return [n.strip() for n in names.split(',') if n.strip()]


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
