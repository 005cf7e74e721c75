"""The training loop shared by train.py (pre-training) and finetune.py (fine-tuning).

Both recipes build their own model, data and evaluation, then hand them to these parts:

* ``restore_or_init``: resume from the newest checkpoint of the workdir, else start from
  given parameters (fine-tuning, continued pre-training), else initialise at random.
* ``train_loop``: steps until ``steps``; every ``log_every`` a metrics row (loss, tokens/s,
  MFU, energy and carbon so far) to metrics.jsonl, TensorBoard and the console; every ``eval_every`` the recipe's
  ``evaluate`` (validation loss, evaluators); checkpoints every ``checkpoint_every`` and at
  the end; on SIGTERM a checkpoint, then a clean return the same command resumes from.
  ``on_eval`` sees every evaluated row (finetune.py keeps its best checkpoint there).
  The recipe's ``footprint.Ledger`` is told each phase: the first step (compilation),
  training, validation (evaluation) and saves (checkpointing), and is written with every row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax

from llm import checkpoint, footprint, perf, trainer
from llm.run import MetricsLog, PreemptionGuard, check_finite


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  steps: int
  log_every: int
  eval_every: int  # 0 = only at the end
  checkpoint_every: int
  tokens_per_step: int  # for tokens/s (rows x seq_len: padding included, as the peers count)
  seq_len: int  # for MFU
  dec_len: int = 0  # for MFU: an encoder-decoder's target length


def restore_or_init(ckpt: checkpoint.Checkpointer, setup: trainer.ModelSetup, *, seed: int,
                    params: trainer.Params | None = None) -> tuple[trainer.TrainState, int, str]:
  """(state, start step, how): the newest checkpoint in the workdir, else ``params``, else random.

  Resume order: 1) newest complete checkpoint, 2) check it is this model (architecture
  fields of its meta), 3) restore into this run's shardings; a checkpoint that cannot be
  read is reported, set aside, and the one before it tried. The data stream and
  metrics.jsonl restart at the returned step.
  """
  found = ckpt.restore_newest(setup.abstract_state(), checkpoint.architecture_keys(checkpoint.model_meta(setup.cfg)))
  if found is not None:
    start, state = found
    return state, start, f'resumed from {ckpt.directory} at step {start}'
  if params is not None:
    return trainer.state_from_params(setup, params), 0, 'initialised from the given parameters'
  return trainer.init_state(setup, seed), 0, 'initialised at random'


def is_due(step: int, every: int) -> bool:
  return every > 0 and step % every == 0


def train_loop(state: trainer.TrainState, start: int, train_step: Callable, batches: Iterator[dict],
               setup: trainer.ModelSetup, ckpt: checkpoint.Checkpointer, meta: dict[str, Any], cfg: LoopConfig,
               workdir: str, writer: Any, ledger: footprint.Ledger, *,
               evaluate: Callable[[trainer.Params, int], dict[str, float]],
               periodic: Callable[[trainer.Params, int], dict[str, float]] | None = None,
               on_eval: Callable[[dict[str, float], trainer.TrainState], None] | None = None,
               ) -> tuple[trainer.TrainState, dict[str, float], bool]:
  """Train from ``start`` to ``cfg.steps``; returns (state, last logged row, stopped by SIGTERM).

  ``evaluate(params, step)`` runs every eval_every steps and at the end (validation loss);
  ``periodic(params, step)`` runs at every step and returns {} unless something is due
  (evaluators with their own schedules; it charges its work to the ledger's evaluation phase
  itself, so that steps with nothing due read no clock); a non-empty result forces a metrics row.
  """
  from clu import periodic_actions
  mesh, model_cfg = setup.mesh, setup.cfg
  on_cpu = jax.default_backend() == 'cpu'
  lead = jax.process_index() == 0
  metrics_log = MetricsLog(os.path.join(workdir, 'metrics.jsonl'), truncate_after=start, enabled=lead)
  report = periodic_actions.ReportProgress(num_train_steps=cfg.steps, writer=writer, every_steps=cfg.log_every)
  guard = PreemptionGuard()
  pending: list[tuple[int, dict]] = []  # device metrics of steps not yet checked on the host
  last: dict = {}
  t_last, step_last = time.perf_counter(), start
  t_start = t_last
  step = start
  if step >= cfg.steps:
    return state, last, False
  batch = trainer.shard_batch(next(batches), mesh)
  ledger.switch('compilation')  # this process's first step traces and compiles, then runs once
  while step < cfg.steps:
    state, metrics = train_step(state, batch)
    step += 1
    if step < cfg.steps:  # prepare the next batch while this step runs
      batch = trainer.shard_batch(next(batches), mesh)
    if on_cpu or ledger.current == 'compilation':  # XLA's CPU collectives deadlock when several steps are in flight
      jax.block_until_ready(metrics['train_loss'])
    if ledger.current == 'compilation':
      ledger.switch('training')
    pending.append((step, metrics))
    report(step)
    final = step == cfg.steps
    log_now, eval_now = is_due(step, cfg.log_every) or final, is_due(step, cfg.eval_every) or final
    extra = periodic(state.params, step) if periodic else {}
    log_now = log_now or bool(extra)
    stop = guard.requested  # read once: SIGTERM may arrive at any point below
    save_now = is_due(step, cfg.checkpoint_every) or final or stop
    if log_now or eval_now or save_now:
      fetched = check_finite(jax.device_get(pending))  # raises NonFiniteLoss naming the step
      pending.clear()
    if log_now or eval_now:
      now = time.perf_counter()
      row = {k: float(v) for k, v in fetched[-1][1].items() if k != 'tokens'}
      row['step'] = step
      tps = cfg.tokens_per_step * (step - step_last) / max(now - t_last, 1e-9)
      row['tokens_per_sec'] = tps
      row['elapsed_sec'] = now - t_start  # of this process's loop (a resumed run starts again)
      m = perf.mfu(tps, model_cfg, cfg.seq_len, jax.device_count(), dec_len=cfg.dec_len or None)
      if m is not None:
        row['mfu'] = m
      if eval_now:
        with ledger.phase('evaluation'):
          row.update(evaluate(state.params, step))
      row.update(extra)
      row.update(ledger.totals())  # energy_kwh, co2e_kg of this workdir so far
      writer.write_scalars(step, {k: v for k, v in row.items() if k != 'step'})
      metrics_log.write(row)
      ledger.write(step)
      if lead:
        eta = (cfg.steps - step) * (now - t_last) / max(step - step_last, 1)
        print(f'step {step:6d}/{cfg.steps}  loss {row["train_loss"]:.4f}'
              + (f'  val_loss {row["val_loss"]:.4f}' if 'val_loss' in row else '')
              + ''.join(f'  {k.split("/", 1)[1]} {v:.4f}' for k, v in extra.items()
                        if k.startswith('eval/') and not k.endswith('requests_per_sec'))
              + f'  lr {row["learning_rate"]:.2e}  {tps:,.0f} tok/s'
              + (f'  mfu {row["mfu"]:.1%}' if 'mfu' in row else '') + f'  eta {eta:.0f}s', flush=True)
      if on_eval is not None and (eval_now or extra):
        on_eval(row, state)
      last = row
      t_last, step_last = time.perf_counter(), step
    if save_now:
      with ledger.phase('checkpointing'):
        ckpt.save(step, state, {**meta, 'step': step}, force=final or stop)
    if stop and not final:
      with ledger.phase('checkpointing'):
        ckpt.close()
      writer.flush()
      if ckpt.latest_step() != step:
        raise RuntimeError(f'SIGTERM at step {step}: the checkpoint could not be written to {ckpt.directory}')
      print(f'SIGTERM: saved a checkpoint at step {step} in {ckpt.directory}; rerun the same command '
            f'to resume', flush=True)
      return state, last, True
  with ledger.phase('checkpointing'):
    ckpt.close()  # waits for the last (asynchronous) save
  return state, last, False


def validation_loss_fn(setup: trainer.ModelSetup, val: list[dict], loss_fn: trainer.LossFn = trainer.next_token_loss
                       ) -> Callable[[trainer.Params], dict[str, float]]:
  """params -> {'val_loss', 'val_perplexity'} over the fixed validation batches ``val``."""
  import numpy as np
  eval_step = trainer.make_eval_step(setup, loss_fn)

  def validation(params) -> dict[str, float]:
    tot, n = 0.0, 0.0
    for b in val:
      l, c = eval_step(params, trainer.shard_batch(b, setup.mesh))
      tot, n = tot + float(l), n + float(c)
    loss = tot / max(n, 1.0)
    return {'val_loss': loss, 'val_perplexity': float(np.exp(min(loss, 50.0)))}
  return validation


def log_start(setup: trainer.ModelSetup, start: int, steps: int, rows: int, trainable: int | None = None) -> None:
  n = setup.cfg.param_count()
  logging.info('model: %s, %.2fM parameters; mesh %s; %d train rows', setup.cfg, n / 1e6, dict(setup.mesh.shape), rows)
  what = f'{n / 1e6:.2f}M parameters' if trainable is None else \
      f'{trainable / 1e6:.3f}M of {n / 1e6:.2f}M parameters ({trainable / max(n, 1):.2%})'
  print(f'training {what} on {jax.device_count()} {jax.default_backend()} device(s), mesh '
        f'{dict(setup.mesh.shape)}, steps {start}..{steps}', flush=True)
