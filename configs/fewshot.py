"""Score a trained checkpoint on few-shot/zero-shot tasks and the bias probes (no training).

  python train.py --config=configs/fewshot.py:ckpt=runs/default --workdir=runs/eval

Loads the newest checkpoint of the run in ``ckpt`` (parameters only, on the configured
mesh), runs every task below and writes workdir/eval_results.json (lm-evaluation-harness's
results layout), samples_<task>.jsonl, bias_report.md with its plots, and TensorBoard
scalars. Task files live in tasks/ (add your own there or list more directories in
eval.task_dirs). Arguments (after a colon):
  ckpt=<workdir>      the training run to evaluate (required)
  step=<n>            its checkpoint step (default: the newest)
  limit=<n>           score only the first n documents of every task (0 = all)
  fewshot=<k>         override every task's num_fewshot (-1 = each task's own)
  bias=False          skip the bias probes
  smoke=True          a few documents per task (tests)
"""

from configs import common

# Tasks shipped in tasks/: accuracy-style tasks and the bias probes.
FEWSHOT_TASKS = 'sst2,sst2_fewshot,sst2_gen,sst2_review,sst2_t5,shakespeare_ppl,shakespeare_lastword,synth_qa'
BIAS_TASKS = 'crows_pairs_english,winobias,bbq'


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, ckpt='', step=-1, limit=0, fewshot=-1, bias=True, smoke=False)
  c = common.base_config()
  c.loop = 'evaluate'
  c.eval.ckpt = args.ckpt
  c.eval.step = args.step
  c.evals.fewshot = dict(type='fewshot', tasks=FEWSHOT_TASKS, num_fewshot=args.fewshot, limit=args.limit, every=0)
  if args.bias:
    c.evals.bias = dict(type='bias', tasks=BIAS_TASKS, num_fewshot=args.fewshot, limit=args.limit, every=0)
  return common.finalize(c, args)
