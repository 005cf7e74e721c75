"""Fine-tune a pre-trained model on SST-2 sentiment, cast as text-to-text (finetune.py).

  python finetune.py --config=configs/finetune_sst2.py:init=runs/default --workdir=runs/sst2_lora
  python finetune.py --config=configs/finetune_sst2.py:init=runs/default,method=full --workdir=runs/sst2_full
  python finetune.py --config=configs/finetune_sst2.py:init=hf:<dir> --workdir=runs/sst2_hf
  python finetune.py --config=configs/finetune_sst2.py:arch=bert,init=runs/bert --workdir=runs/sst2_bert
  python finetune.py --config=configs/finetune_sst2.py:arch=t5,init=runs/t5 --workdir=runs/sst2_t5

Examples are the task file tasks/sst2/sst2_review.yaml rendered for training: the prompt
"Review: {sentence}\\nSentiment:" and the target " positive" / " negative" (+ EOS), the
loss on the target only, several examples packed per row. Dev accuracy (872 sentences)
is measured by the same task through the evaluation registry every eval_every steps; the
best checkpoint by it is kept in <workdir>/best, and the run ends with a table of the base
model's zero-shot and few-shot accuracy and the fine-tuned one.

With arch=bert the encoder gets a classifier on its first token over the same prompt
(classes: the task's choices), trained by cross-entropy and evaluated through the same
task; its baseline is the masked LM's pseudo-log-likelihood. With arch=t5 the task is
T5's cast (tasks/sst2/sst2_t5.yaml: "sst2 sentence: ..." -> "positive"/"negative").

Arguments (after a colon):
  init=<workdir or hf:dir>   the model to fine-tune (required)
  arch=decoder|bert|t5       the model's architecture: its prompt and head (default decoder)
  method=lora|full           low-rank adapters (default for decoders) or every weight (default for bert, t5)
  rank=8                     LoRA rank (alpha 16, dropout 0.05, on q,k,v,o)
  steps=<n>                  optimizer updates (default 1400: 15 minutes on 2 CPU cores)
  fewshot=4                  shots of the base model's few-shot baseline (default 0 for bert and t5)
  smoke=True                 seconds: a tiny slice of the data (tests)
"""

from configs import common


# arch -> (task, head, default method, default baseline shots, full fine-tuning's learning rate).
# BERT's classifier learns steadily at 3e-4 and oscillates at 1e-3 (README: fine-tuning BERT and T5).
ARCHS = {
    'decoder': ('sst2_review', 'lm', 'lora', 4, 1e-3),
    'bert': ('sst2_review', 'classifier', 'full', 0, 3e-4),
    't5': ('sst2_t5', 'lm', 'full', 0, 1e-3),
}


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, init='', arch='decoder', method='', rank=8, steps=1400, fewshot=-1, smoke=False)
  if args.arch not in ARCHS:
    raise ValueError(f'unknown config argument value arch={args.arch!r}; use one of {sorted(ARCHS)}')
  task, head, method, shots, lr_full = ARCHS[args.arch]
  # Rank 8 on q,k,v,o trains 3.2% of the tiny model's parameters.
  c = common.finetune_config(args.init, task, 'acc', args.method or method, args.rank, args.steps, every=350,
                             fewshot=shots if args.fewshot < 0 else args.fewshot, lr_full=lr_full, lr_lora=3e-3,
                             smoke=args.smoke, head=head)
  if args.smoke:
    c.sft.seq_len = 64
  return c
