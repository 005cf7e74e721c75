"""Fine-tune a pre-trained model on SST-2 sentiment, cast as text-to-text (finetune.py).

  python finetune.py --config=configs/finetune_sst2.py:init=runs/default --workdir=runs/sst2_lora
  python finetune.py --config=configs/finetune_sst2.py:init=runs/default,method=full --workdir=runs/sst2_full
  python finetune.py --config=configs/finetune_sst2.py:init=hf:<dir> --workdir=runs/sst2_hf

Examples are the task file tasks/sst2/sst2_review.yaml rendered for training: the prompt
"Review: {sentence}\\nSentiment:" and the target " positive" / " negative" (+ EOS), the
loss on the target only, several examples packed per row. Dev accuracy (872 sentences)
is measured by the same task through the evaluation registry every eval_every steps; the
best checkpoint by it is kept in <workdir>/best, and the run ends with a table of the base
model's zero-shot and few-shot accuracy and the fine-tuned one.

Arguments (after a colon):
  init=<workdir or hf:dir>   the model to fine-tune (required)
  method=lora|full           low-rank adapters (default) or every weight
  rank=8                     LoRA rank (alpha 16, dropout 0.05, on q,k,v,o)
  steps=<n>                  optimizer updates (default 1400: 15 minutes on 2 CPU cores)
  fewshot=4                  shots of the base model's few-shot baseline
  smoke=True                 seconds: a tiny slice of the data (tests)
"""

from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, init='', method='lora', rank=8, steps=1400, fewshot=4, smoke=False)
  # Rank 8 on q,k,v,o trains 3.2% of the tiny model's parameters.
  c = common.finetune_config(args.init, 'sst2_review', 'acc', args.method, args.rank, args.steps, every=350,
                             fewshot=args.fewshot, lr_full=1e-3, lr_lora=3e-3, smoke=args.smoke)
  if args.smoke:
    c.sft.seq_len = 64
  return c
