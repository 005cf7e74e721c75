"""Shared pieces of the configs: the base ConfigDict and the argument parser.

A config file calls ``base_config()``, changes what makes it different, and finishes
with ``finalize(config, args)`` so that the ``smoke`` argument works everywhere.
"""

from __future__ import annotations

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


def base_config() -> config_dict.ConfigDict:
  """Every field a run reads, with its default; configs override what they need."""
  c = config_dict.ConfigDict()
  c.loop = 'pretrain'  # pretrain | evaluate (score a checkpoint on config.evals, no training)
  c.seed = 0  # parameter initialisation and dropout
  c.cpu_devices = 0  # on CPU: split the host into this many devices (data parallel over cores); 0 = 1 device
  # Start from another model's weights: a checkpoint workdir (a training run or `python -m llm.hf
  # import`) or 'hf:<Hugging Face model dir>'. Its architecture and tokenizer replace
  # config.model's size fields and config.data.tokenizer; '' = random initialisation.
  c.init_from = ''

  c.mesh = config_dict.ConfigDict()
  c.mesh.data = -1  # pure data parallelism; -1 = all devices left over by the other axes
  c.mesh.fsdp = 1  # parameter/optimizer-state sharding (ZeRO-3)
  c.mesh.tensor = 1  # tensor parallelism (heads, MLP width)

  c.model = config_dict.ConfigDict()
  c.model.size = 'tiny'  # a key of llm.model.SIZES; the fields below override the table when set
  c.model.family = config_dict.placeholder(str)  # 'llama' or 'gpt2'
  c.model.d_model = config_dict.placeholder(int)
  c.model.n_layers = config_dict.placeholder(int)
  c.model.n_heads = config_dict.placeholder(int)
  c.model.n_kv_heads = config_dict.placeholder(int)
  c.model.d_head = config_dict.placeholder(int)
  c.model.d_ff = config_dict.placeholder(int)
  c.model.max_seq_len = config_dict.placeholder(int)  # default: data.seq_len
  c.model.norm = config_dict.placeholder(str)  # 'rms' or 'layer'
  c.model.positions = config_dict.placeholder(str)  # 'rope' or 'learned'
  c.model.mlp = config_dict.placeholder(str)  # 'swiglu' or 'gelu'
  c.model.use_bias = config_dict.placeholder(bool)
  c.model.tie_embeddings = config_dict.placeholder(bool)
  c.model.rope_theta = config_dict.placeholder(float)
  c.model.dropout = 0.0  # embeddings and residual branches
  c.model.vocab_multiple = 128  # pad the vocabulary to a multiple of this
  c.model.dtype = 'auto'  # compute dtype; auto = bfloat16 on GPU/TPU, float32 on CPU
  c.model.remat = 'none'  # none | full | dots | dots_no_batch
  c.model.attention = 'auto'  # xla | cudnn; auto = cudnn on NVIDIA GPUs, else xla
  c.model.dense_grad = 'auto'  # xla | pretransposed; auto = pretransposed on CPU (faster backward there), else xla
  c.model.scan_layers = True  # lax.scan over layers (fast compiles) or an unrolled loop (faster small models)

  c.data = config_dict.ConfigDict()
  c.data.sources = 'data/tinyshakespeare.txt'  # 'glob[:weight],...' relative to the repository
  c.data.seq_len = 128  # tokens per training row
  c.data.tokenizer = 'byte'  # byte | sentencepiece | hf
  c.data.spm_model = ''  # SentencePiece model path (python -m llm.tokenizer trains one)
  c.data.hf_tokenizer = ''  # tokenizer='hf': a tokenizer.json or the Hugging Face directory holding it
  c.data.doc_separator = 'blank_line'  # text files: file | blank_line | line
  c.data.jsonl_field = 'text'
  c.data.split = 'document'  # document (hash of the text) | tail (last val_fraction of each document)
  c.data.val_fraction = 0.1
  c.data.decode_errors = 'strict'  # strict | replace
  c.data.seed = 0  # shuffling and mixture sampling

  c.train = config_dict.ConfigDict()
  c.train.steps = 1000  # optimizer updates
  c.train.batch_size = 16  # global batch, in rows of data.seq_len tokens
  c.train.accum_steps = 1  # microbatches per update (gradient accumulation)
  c.train.lr = 1e-3  # peak learning rate
  c.train.min_lr = 1e-4  # end of the cosine decay
  c.train.warmup_steps = 100
  c.train.decay_steps = 0  # warmup + cosine length; 0 = train.steps
  c.train.b1 = 0.9
  c.train.b2 = 0.99
  c.train.eps = 1e-8
  c.train.weight_decay = 0.1  # matrices only
  c.train.grad_clip = 1.0  # global norm; 0 disables
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

  c.sample = config_dict.ConfigDict()
  c.sample.prompt = 'ROMEO:'  # text to continue at the end of training
  c.sample.num_tokens = 200
  c.sample.temperature = 0.8  # 0 = greedy
  c.sample.top_k = 50  # 0 = no truncation
  return c


def finalize(c: config_dict.ConfigDict, args: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Apply the ``smoke`` argument: shrink model, data, batch and steps to seconds."""
  if args.get('smoke', False):
    c.model.size = 'smoke'
    for key in ('d_model', 'n_layers', 'n_heads', 'n_kv_heads', 'd_head', 'd_ff'):
      c.model[key] = None
    c.model.family = None
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
