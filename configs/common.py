"""Shared pieces of the configs: the base ConfigDict and the argument parser.

A config file calls ``base_config()``, changes what makes it different, and finishes
with ``finalize(config, args)`` so that the ``smoke`` argument works everywhere.
"""

from __future__ import annotations

import dataclasses

from ml_collections import config_dict


def parse_arg(arg: str | None, **defaults) -> config_dict.ConfigDict:
  """'size=124m,smoke=True' -> ConfigDict; values take the type of their default.

  Raises ValueError naming the key when an argument is not one of ``defaults``.
  """
  args = dict(defaults)
  for part in [p for p in (arg or '').split(',') if p.strip()]:
    key, sep, value = part.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'unknown config argument {key!r}; this config takes {sorted(defaults)}')
    default = defaults[key]
    if isinstance(default, bool):
      if value.strip().lower() not in ('true', 'false', '1', '0', ''):
        raise ValueError(f'config argument {key} must be True or False, got {value!r}')
      args[key] = value.strip().lower() in ('true', '1', '') if sep else True
    elif isinstance(default, int):
      args[key] = int(value)
    elif isinstance(default, float):
      args[key] = float(value)
    else:
      args[key] = value.strip()
  return config_dict.ConfigDict(args)


def from_dataclass(obj, **changes) -> config_dict.ConfigDict:
  """A ConfigDict of a dataclass instance's fields (tuples as comma-separated strings).

  Configs take their fields and defaults from the dataclasses the code reads
  (``llm.run.to_dataclass`` is the way back), so a new field is written once.
  """
  d = {}
  for f in dataclasses.fields(obj):
    v = changes.pop(f.name, getattr(obj, f.name))
    d[f.name] = ','.join(v) if isinstance(v, tuple) else v
  if changes:
    raise KeyError(f'{type(obj).__name__} has no fields {sorted(changes)}')
  return config_dict.ConfigDict(d)


def base_config() -> config_dict.ConfigDict:
  """Every field a run reads, with its default; configs override what they need."""
  c = config_dict.ConfigDict()
  c.loop = 'pretrain'  # pretrain | evaluate (score a checkpoint on config.evals, no training)
  c.seed = 0  # parameter initialisation and dropout
  # On CPU: split the host into this many devices (data parallel over cores); 0 = 1 device, -1 = one
  # per core, the most that divide train.batch_size (llm.run.auto_cpu_devices). Measured on 2 cores
  # against 1 device: the default run 0.90x the wall time, a BERT step 1.25x and a T5 step 1.05-1.10x
  # as fast, few-shot evaluation 0.90x the time with the same scores (README). Smoke runs keep 1.
  c.cpu_devices = -1
  # Start from another model's weights: a checkpoint workdir (a training run or `python -m llm.hf
  # import`) or 'hf:<Hugging Face model dir>'. Its architecture and tokenizer replace
  # config.model's size fields and config.data.tokenizer; '' = random initialisation.
  c.init_from = ''

  c.mesh = config_dict.ConfigDict()
  c.mesh.data = -1  # pure data parallelism; -1 = all devices left over by the other axes
  c.mesh.fsdp = 1  # parameter/optimizer-state sharding (ZeRO-3)
  c.mesh.tensor = 1  # tensor parallelism (heads, MLP width)

  # The model: a size from llm.models.SIZES, then any ModelConfig field of llm.run.SIZE_FIELDS
  # (family, d_model, n_layers, n_heads, n_kv_heads, d_head, d_ff, max_seq_len (default:
  # data.seq_len), norm, positions, mlp, use_bias, tie_embeddings, rope_theta) overrides
  # the table when set; their meaning is documented on ModelConfig in llm/models/config.py.
  from llm.run import SIZE_FIELDS, model_field_type
  c.model = config_dict.ConfigDict()
  c.model.size = 'tiny'  # a key of llm.models.SIZES
  for name in SIZE_FIELDS:
    c.model[name] = config_dict.placeholder(model_field_type(name))
  c.model.dropout = 0.0  # embeddings and residual branches
  c.model.vocab_multiple = 128  # pad the vocabulary to a multiple of this
  c.model.dtype = 'auto'  # compute dtype; auto = bfloat16 on GPU/TPU, float32 on CPU
  c.model.remat = 'none'  # none | full | dots | dots_no_batch
  c.model.attention = 'auto'  # xla | cudnn; auto = cudnn on NVIDIA GPUs, else xla
  c.model.dense_grad = 'auto'  # xla | pretransposed; auto = pretransposed on CPU (faster backward there), else xla
  # Unrolled layers: the faster step wherever measured (1b on an H200: 53.5% MFU against 45%
  # scanned; the default CPU model: 1.25x), same checkpoint layout. True = lax.scan over them,
  # for faster compiles of deep models.
  c.model.scan_layers = False

  # The data: llm.data.DataConfig's fields (sources, seq_len, tokenizer, spm_model,
  # hf_tokenizer, doc_separator, jsonl_field, split, val_fraction, decode_errors, seed,
  # check_sources, objective and its options, counterfactual, counterfactual_mode,
  # counterfactual_rate), documented there; sources are 'glob[:weight],...' (relative to the
  # repository), tfds:<dir> or tokens:<dir prepared by python -m llm.data.prepare>.
  # Counterfactual augmentation (llm/data/counterfactual.py) swaps the terms of the lists in
  # data/counterfactual/ in the training documents: counterfactual='gender,gender_names' adds
  # a swapped copy of each document with a term to swap (counterfactual_mode='substitute'
  # replaces it instead; counterfactual_rate chooses a fraction); '' = off.
  from llm.data import DataConfig
  c.data = from_dataclass(DataConfig(sources='data/tinyshakespeare.txt', seq_len=128, doc_separator='blank_line'))

  # The optimizer's fields (lr, min_lr, warmup_steps, decay_steps (0 = train.steps), b1, b2,
  # eps, weight_decay, grad_clip, accum_steps) are llm.trainer.OptimConfig's, documented there.
  from llm.trainer import OptimConfig
  c.train = from_dataclass(OptimConfig(lr=1e-3, min_lr=1e-4, b2=0.99, decay_steps=0))
  c.train.steps = 1000  # optimizer updates
  c.train.batch_size = 16  # global batch, in rows of data.seq_len tokens
  c.train.log_every = 50  # steps between metric lines (metrics.jsonl, TensorBoard, console)
  c.train.eval_every = 250  # steps between validation passes; 0 = only at the end
  c.train.eval_batches = 20  # validation batches per pass; 0 = the whole validation split
  c.train.checkpoint_every = 500  # steps between checkpoints (and always at the end)
  c.train.keep_checkpoints = 3  # newest checkpoints kept
  c.train.async_checkpoint = True  # save in the background while training continues

  # Evaluators (llm/eval/evaluators.py): name -> dict(type=<EVALUATORS key>, tasks='a,b',
  # every=<steps during pre-training; 0 = only in the evaluate loop>, num_fewshot=-1, limit=0).
  c.evals = config_dict.ConfigDict()
  c.eval = config_dict.ConfigDict()
  c.eval.ckpt = ''  # evaluate loop: the --workdir of the training run whose checkpoint is scored
  c.eval.step = -1  # checkpoint step; -1 = newest
  c.eval.task_dirs = 'tasks'  # comma-separated directories of task YAML files (relative to the repository)
  c.eval.batch_rows = 16  # rows per scoring forward pass (a multiple of the data-parallel size)
  c.eval.max_length = 0  # tokens per scoring row; 0 = the model's max_seq_len
  c.eval.tokenizer = ''  # '' = the checkpoint's; set to assert it (byte | sentencepiece | hf)
  # Start contexts with BOS as lm-evaluation-harness's add_bos_token does: None = as the
  # tokenizer does (ours and Llama's: yes; GPT-2's: no).
  c.eval.add_bos_token = config_dict.placeholder(bool)

  # Energy and carbon ledger (llm/footprint.py): footprint.json, energy_kwh and co2e_kg in
  # metrics.jsonl. llm.footprint.FootprintConfig documents the fields; `python -m llm.footprint
  # regions` and `devices` list the tables.
  from llm.footprint import FootprintConfig
  c.footprint = from_dataclass(FootprintConfig())

  # Generation monitor (llm/eval/monitor.py): harmful-term and identity-sentiment rates of every
  # generated output (generate_until tasks, the final sample) as monitor/... metrics, and
  # flag or block outputs. llm.eval.monitor.MonitorConfig documents the fields; off by default.
  from llm.eval.monitor import MonitorConfig
  c.monitor = from_dataclass(MonitorConfig())

  c.sample = config_dict.ConfigDict()
  c.sample.prompt = 'ROMEO:'  # text to continue at the end of training
  c.sample.num_tokens = 200
  c.sample.temperature = 0.8  # 0 = greedy
  c.sample.top_k = 50  # 0 = no truncation
  return c


def finetune_config(init: str, task: str, metric: str, method: str, rank: int, steps: int, every: int,
                    fewshot: int, lr_full: float, lr_lora: float, smoke: bool, head: str = 'lm'
                    ) -> config_dict.ConfigDict:
  """A finetune.py config (loop='finetune') that trains on ``task``'s training split and
  keeps the best checkpoint by ``eval/<task>/<metric>`` on its validation split."""
  from llm.sft import SFTConfig
  c = base_config()
  c.loop = 'finetune'
  c.init_from = init  # the model to fine-tune: a checkpoint workdir or hf:<dir>
  # Fine-tuning examples: llm.sft.SFTConfig's fields, documented there. Debiasing: debias_weight > 0
  # trains each example with a term of debias_lists ('gender,gender_names') beside its swapped
  # counterfactual and adds debias_weight x their squared log-probability gap to the loss
  # (llm.trainer.counterfactual_pair_loss; metrics debias_gap, debias_loss, debias_pairs); 0 = off.
  c.sft = from_dataclass(SFTConfig(source=f'task:{task}', seq_len=128))
  c.finetune = dict(
      method=method,  # lora | full
      head=head,  # lm (text to text: decoders, encoder-decoders) | classifier (an encoder's first token)
      freeze='',  # full: comma-separated fnmatch patterns of parameters kept fixed, e.g. 'embed_vd,blocks/attn/*'
      best_metric=f'eval/{task}/{metric}',  # a metrics.jsonl key (an evaluator's metric, or val_loss)
      best_mode='max',  # max | min
      baseline_tasks=task,  # the base model is scored on these before training
      baseline_fewshot=fewshot,  # ... zero-shot and with this many shots (0 = zero-shot only)
      baseline_limit=0,  # docs per baseline task (0 = all)
  )
  # Adapters (method=lora): rank, alpha (scale alpha/rank), dropout on their input, and the
  # projections they adapt (q,k,v,o,gate,up,down; llm.models.LORA_TARGETS).
  c.lora = dict(rank=rank, alpha=16.0, dropout=0.05, targets='q,k,v,o')
  c.evals.dev = dict(type='fewshot', tasks=task, num_fewshot=0, every=every, limit=0)
  t = c.train
  t.steps = steps
  t.batch_size = 16
  t.lr = lr_lora if method == 'lora' else lr_full
  t.min_lr = t.lr / 10
  t.warmup_steps = 100
  t.weight_decay = 0.0
  t.log_every = 100
  t.eval_every = every  # validation loss on the validation completions
  t.eval_batches = 0  # all of them
  t.checkpoint_every = every
  t.keep_checkpoints = 1
  if smoke:
    c.cpu_devices = 0
    c.sft.limit = 64
    t.steps, t.batch_size, t.warmup_steps = 6, 8, 2
    t.log_every, t.eval_every, t.checkpoint_every, t.eval_batches = 1, 3, 3, 2
    c.evals.dev.every, c.evals.dev.limit = 3, 16
    c.finetune.baseline_fewshot = min(fewshot, 1)
    c.finetune.baseline_limit = 16
  return c


def finalize(c: config_dict.ConfigDict, args: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Apply the ``smoke`` argument: shrink model, data, batch and steps to seconds."""
  if args.get('smoke', False):
    from llm.models import SIZES
    # The smoke size of the configured architecture: a tiny decoder, encoder or encoder-decoder.
    c.model.size = {'bert': 'bert-smoke', 't5': 't5-smoke'}.get(SIZES[c.model.size].get('family'), 'smoke')
    for key in ('d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff'):
      c.model[key] = None
    c.model.family = None
    c.cpu_devices = 0
    c.data.seq_len = 32
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.warmup_steps = 2
    c.train.log_every = 1
    c.train.eval_every = 3
    c.train.eval_batches = 2
    c.train.checkpoint_every = 3
    c.sample.num_tokens = 16
    for entry in c.evals.values():
      entry.limit = 8  # a few documents per task
  return c
