"""Pre-train a decoder-only language model.

  python train.py --config=configs/default.py --workdir=runs/default
  python train.py --config=configs/default.py:size=124m --config.train.lr=3e-4 --workdir=runs/124m

Rerunning with the same --workdir resumes from its newest checkpoint. The workdir gets
checkpoints/, TensorBoard event files, metrics.jsonl (one object per logged step),
config.json and sample.txt.
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
  from llm.checkpoint import CheckpointMismatch
  from llm.data import DataError
  from llm.run import ConfigError, NonFiniteLoss
  try:
    run(cfg, workdir)
  except (ConfigError, DataError, CheckpointMismatch, NonFiniteLoss) as e:  # expected: one message, no traceback
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

  from llm import checkpoint, data, perf, sampling, sharding, trainer
  from llm.run import ConfigError, MetricsLog, PreemptionGuard, check_finite, data_config, model_config, optim_config

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

  # ----- Data ----------------------------------------------------------------------------
  repo = os.path.dirname(os.path.abspath(__file__))
  corpus = data.load_corpus(data_config(cfg), root=repo)
  val = data.val_batches(corpus, tc.batch_size, tc.eval_batches, jax.process_index(), jax.process_count())

  # ----- Model, optimizer, shardings -----------------------------------------------------
  model_cfg = model_config(cfg, corpus.tokenizer.vocab_size, jax.default_backend())
  opt_cfg = optim_config(cfg)
  setup = trainer.setup_model(model_cfg, opt_cfg, mesh)
  train_step = trainer.make_train_step(setup, opt_cfg, cfg.seed)
  eval_step = trainer.make_eval_step(setup)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), tc.checkpoint_every,
                                 tc.keep_checkpoints, tc.async_checkpoint)
  meta = {'model': checkpoint.model_meta(model_cfg), 'data_seed': cfg.data.seed, 'batch_size': tc.batch_size}

  # ----- Restore or initialise -----------------------------------------------------------
  # Resume order: 1) newest complete checkpoint in the workdir, 2) check it is this model,
  # 3) restore state into this run's shardings, 4) the data stream restarts at the
  # restored step, 5) metrics.jsonl drops lines logged after that step.
  start = ckpt.latest_step()
  if start is not None:
    state, _ = ckpt.restore(start, setup.abstract_state(),
                            checkpoint.architecture_keys(checkpoint.model_meta(model_cfg)))
    logging.info('resumed from %s at step %d', ckpt.directory, start)
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

  def evaluate(params) -> dict:
    tot, n = 0.0, 0.0
    for b in val:
      l, c = eval_step(params, trainer.shard_batch(b, mesh))
      tot, n = tot + float(l), n + float(c)
    loss = tot / max(n, 1.0)
    return {'val_loss': loss, 'val_perplexity': float(np.exp(min(loss, 50.0)))}

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
        row.update(evaluate(state.params))
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
  prompt = [tok.bos_id] + list(tok.encode(cfg.sample.prompt))
  ids = sampling.generate(setup.graphdef, model_cfg, state.params, prompt, cfg.sample.num_tokens,
                          cfg.sample.temperature, cfg.sample.top_k, seed=cfg.seed)
  text = tok.decode(ids)
  if lead:
    with open(os.path.join(workdir, 'sample.txt'), 'w') as f:
      f.write(text)
    writer.write_texts(tc.steps, {'sample': text})
  writer.flush()
  print(f'--- sample after {tc.steps} steps (temperature {cfg.sample.temperature}, top-k {cfg.sample.top_k}) ---')
  print(text, flush=True)
  return last


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
