"""nanoGPT's CPU Shakespeare run, reproduced: char/byte-level, 4 layers, 4 heads, 128 dims.

  python train.py --config=configs/shakespeare_char.py --workdir=runs/shakespeare_char

Matches nanoGPT's `train.py config/train_shakespeare_char.py --device=cpu --compile=False
--eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
--n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`: GPT-2 style model without
biases, context 64, batch 12, 2000 steps, lr 1e-3 cosine to 1e-4 after 100 warmup steps,
AdamW beta2 0.99, 90/10 train/validation split of the text, validation every 250 steps on
20 batches. nanoGPT ends at validation loss 1.886 in 150 s on a 2-core CPU; this run's
figures are in README.md. The host's two cores are used as two data-parallel devices.
Arguments: smoke=True shrinks it to seconds.
"""

from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, smoke=False)
  c = common.base_config()
  c.model.size = 'char-tiny'
  c.model.vocab_multiple = 1  # CPU: no padding needed; 259 byte ids
  c.data.seq_len = 64
  c.data.doc_separator = 'file'  # the whole text is one document ...
  c.data.split = 'tail'  # ... whose last 10% is the validation split, as nanoGPT does
  c.train.steps = 2000
  c.train.batch_size = 12
  c.train.lr = 1e-3
  c.train.min_lr = 1e-4
  c.train.warmup_steps = 100
  c.train.b2 = 0.99
  c.train.weight_decay = 0.1
  c.train.log_every = 250
  c.train.eval_every = 250
  c.train.eval_batches = 20
  c.train.checkpoint_every = 1000
  c.sample.prompt = '\n'
  c.sample.num_tokens = 500
  return common.finalize(c, args)
