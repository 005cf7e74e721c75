"""Fine-tune a pre-trained model: LoRA or full, on prompt/completion data with the loss on the completion.

  python finetune.py --config=configs/finetune_sst2.py:init=runs/default --workdir=runs/sst2_lora
  python finetune.py --config=configs/finetune_sst2.py:init=runs/default,method=full --workdir=runs/sst2_full
  python finetune.py --config=configs/finetune_qa.py:init=runs/default --workdir=runs/qa
  python finetune.py --config=configs/finetune_sst2.py:arch=bert,init=runs/bert --workdir=runs/sst2_bert
  python finetune.py --config=configs/finetune_sst2.py:arch=t5,init=runs/t5 --workdir=runs/sst2_t5

The recipe: the base model (``init``: a training or import workdir, or hf:<dir>), the
supervised data (``config.sft``, llm/sft.py), adapters or a trainable subset
(``config.finetune``, ``config.lora``; llm/lora.py) and the head (``finetune.head``: 'lm'
trains decoders and encoder-decoders text to text; 'classifier' puts a classifier on an
encoder's first token), then the loop train.py runs
(llm/loop.py): resume after interruption, metrics.jsonl/TensorBoard, checkpoints, SIGTERM.
Before training the base model is scored zero-shot and few-shot on ``finetune.baseline_tasks``
(baseline.json, kept across resumes); during training config.evals run on their schedules
and the best checkpoint by ``finetune.best_metric`` is kept in <workdir>/best (parameters
only: ``configs/fewshot.py:ckpt=<workdir>/best`` evaluates it). At the end the table of
base zero-shot, base few-shot and fine-tuned scores is printed and written to
finetune_results.json.

Debiasing (``sft.debias_weight`` > 0, decoders): each example with a term of
``sft.debias_lists`` to swap trains beside its counterfactual, and the loss adds the squared
gap of their completions' log-probabilities (``llm.trainer.counterfactual_pair_loss``);
metrics.jsonl gets ``debias_gap``, ``debias_loss`` (its share of train_loss) and
``debias_pairs``, while val_loss stays the plain cross-entropy. Generations of the
evaluators (and of the baseline) pass through the monitor (``config.monitor``,
llm/eval/monitor.py), whose monitor/... rates join the metrics row (and baseline.json).

  python finetune.py --config=configs/finetune_sst2.py:init=runs/default,method=full \
      --config.sft.debias_weight=1.0 --config.sft.seq_len=256 --config.train.batch_size=8 \
      --workdir=runs/sst2_debias

(rows of 256 tokens hold most SST-2 pairs whole: at 128, a third of them lose their swapped
word to the prompt cut; the data line's pair_identical counts them.)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import resource
import time

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  absl_logging.set_verbosity(absl_logging.WARNING)
  cfg, workdir = FLAGS.config, FLAGS.workdir
  if not workdir:
    raise app.UsageError('--workdir is required (e.g. --workdir=runs/sst2)')
  from llm.run import run_recipe
  run_recipe({'finetune': run}, cfg, workdir)


def run(cfg, workdir: str) -> dict:
  """Fine-tune as ``cfg`` says; returns finetune_results.json's content. Importable for tests."""
  t_start = time.perf_counter()
  # ----- Platform ------------------------------------------------------------------------
  from llm.run import configure_cpu_devices
  configure_cpu_devices(cfg.cpu_devices, cfg.train.batch_size)
  import jax
  from clu import metric_writers

  from llm import checkpoint, data, lora, loop, sharding, sft, trainer
  from llm.eval import evaluators, results
  from llm.eval.encoder_scoring import ClassifierLM
  from llm.eval.lms import make_lm
  from llm.eval.monitor import Monitor
  from llm.run import ConfigError, init_distributed, init_source, open_ledger, optim_config, to_dataclass

  init_distributed()  # multi-host: one process per host (llm/run.py says how to launch)

  if not cfg.init_from:
    raise ConfigError('fine-tuning starts from a model: pass init=<pre-training workdir> or init=hf:<dir>, '
                      'e.g. --config=configs/finetune_sst2.py:init=runs/default')
  lead = jax.process_index() == 0
  repo = os.path.dirname(os.path.abspath(__file__))
  task_dirs = [d.strip() for d in cfg.eval.task_dirs.split(',') if d.strip()]
  ft, tc = cfg.finetune, cfg.train

  # ----- Mesh, checkpoints ---------------------------------------------------------------
  mesh = sharding.make_mesh(dict(cfg.mesh))
  dp = mesh.shape['data'] * mesh.shape['fsdp']
  if tc.batch_size % (dp * tc.accum_steps):
    raise ConfigError(f'train.batch_size={tc.batch_size} is not divisible by the data-parallel size {dp} '
                      f'times train.accum_steps={tc.accum_steps}; use a multiple of {dp * tc.accum_steps}')
  if ft.best_mode not in ('max', 'min'):
    raise ConfigError(f"finetune.best_mode must be 'max' or 'min', got {ft.best_mode!r}")
  os.makedirs(workdir, exist_ok=True)
  ledger = open_ledger(cfg, workdir, 'finetune.py')  # energy and carbon by phase -> footprint.json
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), tc.checkpoint_every,
                                 tc.keep_checkpoints, tc.async_checkpoint)

  # ----- The base model (a resumed run reads architecture and tokenizer from its own checkpoint)
  sft_cfg = to_dataclass(sft.SFTConfig, cfg.sft)
  sft.check_debias(sft_cfg)  # a negative weight fails before the model loads (load_sft checks the architecture)
  with cfg.unlocked():
    cfg.data.seq_len = sft_cfg.seq_len  # init_source checks the rows fit the model
  with ledger.phase('checkpointing'):
    init = init_source(cfg, ckpt, mesh, jax.default_backend())
  model_cfg, resuming = init.model_cfg, init.resuming
  classifier = check_head(ft.head, model_cfg, cfg.init_from)
  if not resuming and ft.method == 'lora':
    model_cfg = lora.with_adapters(model_cfg, cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.targets)
  if resuming and (ft.method == 'lora') != bool(model_cfg.lora_rank):
    raise ConfigError(f'{workdir} holds a {"LoRA" if model_cfg.lora_rank else "full"} fine-tuning run but the config '
                      f'says method={ft.method}; use another --workdir or the same method')

  # ----- Data ----------------------------------------------------------------------------
  # Scores every generation of the evaluators (llm/eval/monitor.py); built first, so that a
  # bad config.monitor fails in a second.
  monitor = Monitor.from_config(cfg.monitor, root=repo, out_dir=workdir if lead else None)
  tokenizer = init.tokenizer
  ds = sft.load_sft(sft_cfg, tokenizer, root=repo, task_dirs=task_dirs, arch=model_cfg.arch, head=ft.head)
  if classifier and not resuming:  # a new head of one output per class
    if model_cfg.num_labels and tuple(model_cfg.labels) != tuple(ds.labels):
      raise ConfigError(f'{cfg.init_from} already has a classifier of classes {list(model_cfg.labels)}, but '
                        f'{sft_cfg.source} has {ds.labels}; fine-tune its masked-LM base instead')
    model_cfg = dataclasses.replace(model_cfg, num_labels=len(ds.labels), labels=tuple(ds.labels))
  print(f'fine-tuning data {sft_cfg.source}: ' + '; '.join(
      f'{split} ' + ', '.join(f'{k} {v:.3f}' if isinstance(v, float) else f'{k} {v}' for k, v in r.items())
      for split, r in ds.report.items()), flush=True)
  val = data.val_batches(ds.corpus, tc.batch_size, tc.eval_batches, jax.process_index(), jax.process_count())

  # ----- Model, trainable parameters, optimizer ------------------------------------------
  opt_cfg = optim_config(cfg)
  trainable = lora.trainable_fn(model_cfg, ft.method, ft.freeze)
  if classifier:  # the new head always trains, beside the adapters or the unfrozen weights
    trainable = functools.partial(_or_head, trainable)
  setup = trainer.setup_model(model_cfg, opt_cfg, mesh, trainable=trainable)
  loss_fn = trainer.classification_loss if classifier else trainer.next_token_loss
  train_loss_fn = loss_fn  # validation keeps the plain loss, comparable with and without debiasing
  if sft_cfg.debias_weight > 0:  # load_sft has checked it is a decoder's text-to-text run
    train_loss_fn = functools.partial(trainer.counterfactual_pair_loss, weight=sft_cfg.debias_weight)
  train_step = trainer.make_train_step(setup, opt_cfg, cfg.seed, loss_fn=train_loss_fn)
  abstract = setup.abstract_state()
  n_trainable = sum(x.size for x in jax.tree.leaves(setup.split(abstract.params)[0]))
  opt_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.opt_state))
  params = None
  if not resuming:
    params = init.params
    if ft.method == 'lora':
      specs = trainer.split_params(setup.state_shardings.params, setup.trainable)[0]
      params = trainer.join_params(params, lora.init_adapters(model_cfg, cfg.seed, specs))
    params = trainer.fill_missing_params(setup, params, cfg.seed)  # the classifier's head, if any
  state, start, how = loop.restore_or_init(ckpt, setup, seed=cfg.seed, params=params)
  logging.info(how)
  ledger.at_step(start)
  finetuned_from = {'init': cfg.init_from, 'init_step': init.step, 'method': ft.method,
                    'data': sft_cfg.source} if not resuming else ckpt.read_meta(start).get('finetuned_from', {})
  meta = {'model': checkpoint.model_meta(model_cfg), 'data_seed': sft_cfg.seed, 'batch_size': tc.batch_size,
          'tokenizer': checkpoint.record_tokenizer(workdir, tokenizer) if lead else tokenizer.spec(),
          'finetuned_from': finetuned_from}
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(cfg.to_json_best_effort(indent=2))
  print(f'{"resumed" if resuming else "starting"} {ft.method} fine-tuning of {cfg.init_from} '
        f'(its step {finetuned_from.get("init_step")}); optimizer state {opt_bytes / 2**20:.2f} MiB', flush=True)

  # ----- Evaluation: the base model's baseline, periodic evaluators, the best checkpoint ----
  def base_scorer(params):  # the model as pre-trained: a masked LM scores by pseudo-log-likelihood
    return make_lm(setup.graphdef, model_cfg, params, tokenizer, mesh, batch_rows=cfg.eval.batch_rows,
                   max_length=cfg.eval.max_length or None, add_bos_token=cfg.eval.add_bos_token)

  def scorer(params):  # the model being fine-tuned: a classifier answers through its classes
    if classifier:
      return ClassifierLM(setup.graphdef, model_cfg, params, tokenizer, mesh, model_cfg.labels,
                          max_length=sft_cfg.seq_len, batch_rows=cfg.eval.batch_rows)
    return base_scorer(params)

  baseline_path = os.path.join(workdir, 'baseline.json')
  if os.path.exists(baseline_path):
    with open(baseline_path) as f:
      baseline = json.load(f)
  else:
    baseline = {}
    base_params = state.params  # at step 0 the adapted model equals the base (B = 0)
    if resuming:
      raise ConfigError(f'{baseline_path} is missing from a resumed run; delete {workdir} and start again')
    ledger.switch('evaluation')
    for shots in sorted({0, int(ft.baseline_fewshot)}):
      evs = evaluators.build_evaluators({f'base_{shots}shot': dict(type='fewshot', tasks=ft.baseline_tasks,
                                                                   num_fewshot=shots, limit=ft.baseline_limit,
                                                                   every=0)}, task_dirs, root=repo)
      lm = base_scorer(base_params)
      lm.monitor, monitor.tags = monitor, {'step': 0, 'baseline': f'{shots}-shot'}
      baseline[f'{shots}-shot'] = {**results.flat_metrics([ev.run(lm) for ev, _ in evs]), **monitor.collect()}
    if lead:
      with open(baseline_path, 'w') as f:
        json.dump(baseline, f, indent=2)
    ledger.switch('setup')
  print('base model: ' + '; '.join(f'{k} {_metric(v, ft.best_metric)}' for k, v in baseline.items()), flush=True)

  periodic = [(ev, every) for ev, every in evaluators.build_evaluators(cfg.evals, task_dirs, root=repo)
              if every > 0]

  def run_evaluators(params, step: int) -> dict:
    due = [ev for ev, every in periodic if loop.is_due(step, every) or step == tc.steps]
    if not due:
      return {}
    with ledger.phase('evaluation'):
      lm = scorer(params)
      lm.monitor, monitor.tags = monitor, {'step': step}  # every generate_until answer passes through it
      return {**results.flat_metrics([ev.run(lm) for ev in due]), **monitor.collect()}  # monitor/...: this step's

  best = Best(os.path.join(workdir, 'best'), ft.best_metric, ft.best_mode)

  def on_eval(row: dict, state) -> None:
    if ft.best_metric in row and best.improves(row[ft.best_metric]):
      with ledger.phase('checkpointing'):
        best.save(row, state.params, model_cfg, meta)

  # ----- Loop ----------------------------------------------------------------------------
  batches = data.train_batches(ds.corpus, tc.batch_size, start, jax.process_index(), jax.process_count())
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  loop.log_start(setup, start, tc.steps, ds.corpus.num_train_rows, trainable=n_trainable)
  validation = loop.validation_loss_fn(setup, val, loss_fn)
  state, last, stopped = loop.train_loop(
      state, start, train_step, batches, setup, ckpt, meta,
      loop.LoopConfig(tc.steps, tc.log_every, tc.eval_every, tc.checkpoint_every,
                      tc.batch_size * sft_cfg.seq_len, sft_cfg.seq_len,
                      val[0]['targets'].shape[1] if 'dec_inputs' in val[0] else 0),
      workdir, writer, ledger, evaluate=lambda params, step: validation(params),
      periodic=run_evaluators if periodic else None, on_eval=on_eval)
  writer.flush()
  summary = ledger.close(last.get('step'))
  if lead:
    print(summary, flush=True)
  if stopped:
    return {}

  # ----- Results -------------------------------------------------------------------------
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB -> MiB (Linux)
  out = {'init': cfg.init_from, 'arch': model_cfg.arch, 'head': ft.head, 'method': ft.method,
         'metric': ft.best_metric, 'baseline': baseline,
         'best': best.read(), 'last': last, 'trainable_params': int(n_trainable),
         'total_params': int(sum(x.size for x in jax.tree.leaves(state.params))),
         'optimizer_state_mib': opt_bytes / 2**20, 'peak_host_rss_mib': peak_rss, 'data': ds.report,
         'wall_sec': time.perf_counter() - t_start,  # of this process: data, baseline, loop, evaluations
         'footprint': {k: v for k, v in ledger.summary(last.get('step')).items()
                       if k in ('energy_kwh', 'co2e_kg', 'intensity_g_per_kwh', 'pue', 'method')}}
  if jax.default_backend() != 'cpu':
    stats = jax.devices()[0].memory_stats() or {}
    out['peak_device_mib'] = stats.get('peak_bytes_in_use', 0) / 2**20
  print(results_table(out), flush=True)
  if lead:
    with open(os.path.join(workdir, 'finetune_results.json'), 'w') as f:
      json.dump(out, f, indent=2, default=float)
  return out


CLASSIFIER_PARAMS = ('w_cls_dc', 'b_cls_c')  # llm/models/encoder.py's first-token classifier


def _or_head(trainable, path: tuple[str, ...]) -> bool:
  return path[-1] in CLASSIFIER_PARAMS or trainable(path)


def check_head(head: str, model_cfg, init: str) -> bool:
  """Whether fine-tuning puts a classifier on the model; raises ConfigError when the head does not fit it."""
  from llm.run import ConfigError
  if head not in ('lm', 'classifier'):
    raise ConfigError(f"finetune.head must be 'lm' or 'classifier', got {head!r}")
  if head == 'classifier' and model_cfg.arch != 'encoder':
    raise ConfigError(f'finetune.head=classifier puts a classifier on an encoder\'s first token, but {init} is a '
                      f'{model_cfg.arch} ({model_cfg.family}); fine-tune it text to text with head=lm '
                      f'(configs/finetune_sst2.py:arch={"t5" if model_cfg.arch == "encoder_decoder" else "decoder"})')
  if head == 'lm' and model_cfg.arch == 'encoder':
    raise ConfigError(f'{init} is an encoder (masked LM), which fine-tunes with a classifier on its first token: '
                      f'set finetune.head=classifier (configs/finetune_sst2.py:arch=bert)')
  return head == 'classifier'


def _metric(row: dict, key: str) -> str:
  return f'{row[key]:.4f}' if key in row else 'n/a'


def results_table(out: dict) -> str:
  """Markdown table: the base zero-shot / few-shot and the fine-tuned score of one metric."""
  key = out['metric']
  lines = [f'| {key} | value |', '|---|---:|']
  for shots, row in out['baseline'].items():
    lines.append(f'| base model, {shots} | {_metric(row, key)} |')
  b = out.get('best') or {}
  lines.append(f'| fine-tuned ({out["method"]}, best at step {b.get("step", "n/a")}) | '
               f'{b["value"]:.4f} |' if b else f'| fine-tuned ({out["method"]}) | n/a |')
  lines.append(f'\ntrainable parameters {out["trainable_params"]:,} of {out["total_params"]:,} '
               f'({out["trainable_params"] / max(out["total_params"], 1):.2%}); optimizer state '
               f'{out["optimizer_state_mib"]:.2f} MiB; peak host memory {out["peak_host_rss_mib"]:.0f} MiB; '
               f'{out.get("wall_sec", 0) / 60:.1f} min')
  return '\n'.join(lines)


class Best:
  """The best checkpoint by one metric: parameters only, in ``directory`` (a workdir that
  ``load_params``, evaluation and ``init_from`` read), with best.json saying step and value."""

  def __init__(self, directory: str, metric: str, mode: str):
    self.directory, self.metric, self.mode = directory, metric, mode
    info = self.read()
    self.value = info['value'] if info else None

  def read(self) -> dict:
    path = os.path.join(self.directory, 'best.json')
    if not os.path.exists(path):
      return {}
    with open(path) as f:
      return json.load(f)

  def improves(self, value: float) -> bool:
    return self.value is None or (value > self.value if self.mode == 'max' else value < self.value)

  def save(self, row: dict, params, model_cfg, meta: dict) -> None:
    import shutil
    import jax
    from llm import checkpoint
    step = int(row['step'])
    tmp = self.directory + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.save_params(tmp, model_cfg, meta['tokenizer'], params, step=step,
                           extra_meta={'finetuned_from': meta.get('finetuned_from'), 'best': {self.metric: row[self.metric]}})
    if os.path.isdir(os.path.join(os.path.dirname(self.directory), 'tokenizer')):  # the tokenizer file it names
      shutil.copytree(os.path.join(os.path.dirname(self.directory), 'tokenizer'), os.path.join(tmp, 'tokenizer'))
    with open(os.path.join(tmp, 'best.json'), 'w') as f:
      json.dump({'metric': self.metric, 'value': row[self.metric], 'step': step,
                 'row': {k: v for k, v in row.items() if isinstance(v, (int, float))}}, f, indent=2)
    if jax.process_index() == 0:
      shutil.rmtree(self.directory, ignore_errors=True)
      os.replace(tmp, self.directory)
    self.value = row[self.metric]
    print(f'new best {self.metric} {self.value:.4f} at step {step}: saved {self.directory}', flush=True)


if __name__ == '__main__':
  # Defined here, not at import: tests import this module beside train.py, which defines the same flags.
  config_flags.DEFINE_config_file('config', 'configs/finetune_sst2.py', 'Fine-tuning config.', lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
  flags.mark_flag_as_required('workdir')
  app.run(main)
