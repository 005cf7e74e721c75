"""A controlled bias-mitigation experiment (llm/eval/mitigation.py runs it):

  python -m llm.eval.mitigation --config=configs/bias_mitigation.py --workdir=runs/mitigation

Every arm trains the same model on the same corpus with the same seed and steps, changing
one thing: the mitigation. Each is then scored on the bias probes and on quality (held-out
perplexity, a task), and report.md / report.json / report.png set the change in each bias
score against the change in quality, with 95% intervals from a paired bootstrap over the
probes' documents.

Pre-training arms (configs/default.py, Tiny Shakespeare):
  baseline         as configured
  cda_add          counterfactual augmentation: a gender-swapped copy of every document with
                   a gendered term or name (Zhao et al., 2018; Webster et al., 2020)
  cda_substitute   half of those documents replaced by their swap (Webster et al.'s one-sided CDA)
  reweight         documents resampled so female terms are half of the gender mentions
  baseline_seed1   the control: no mitigation, seed 1 instead of 0 (how far a rerun alone moves a score)
Fine-tuning arms (configs/finetune_sst2.py, full fine-tuning of the baseline's checkpoint):
  ft_baseline      as configured
  ft_cda           fine-tuning examples augmented the same way
  ft_debias        each example beside its swap, plus the counterfactual pair-consistency loss
                   (llm/trainer.py), weight DEBIAS_WEIGHT

Arguments (after a colon):
  smoke=True       tiny model, a few steps, a few documents per probe (tests, a first look)
  limit=<n>        documents per evaluation task (0 = all; default 500)
  steps=<n>        pre-training steps of every arm (0 = the config's)
  ft_steps=<n>     fine-tuning steps (default 400, rows of 256 bytes, batch 8)
  finetune=False   pre-training arms only
  size=<name>      the model size of configs/default.py (e.g. 124m on an accelerator; default: its own)
"""

from ml_collections import config_dict

from configs import common

BIAS_TASKS = 'crows_pairs_english,winobias,bbq'
QUALITY_TASKS = 'shakespeare_ppl,shakespeare_lastword'
FT_QUALITY_TASKS = 'sst2_review'
GENDER_LISTS = 'gender,gender_names'
# lambda of the pair-consistency loss. Per target token the penalty is lambda * gap^2 beside the
# cross-entropy, and the gaps seen on SST-2 are 0.001-0.01 nats, so 1 would barely register.
DEBIAS_WEIGHT = 10.0


def arm(program: str, config: str, flags: str = '', baseline: str = '', quality: str = QUALITY_TASKS,
        init: str = '') -> config_dict.ConfigDict:
  """One arm: ``python <program> --config=<config> <flags>``; compared against ``baseline``.

  ``init``: the arm whose checkpoint this one starts from (fine-tuning), put into ``config``
  where it says ``{init}``.
  """
  return config_dict.ConfigDict(dict(program=program, config=config, flags=flags, baseline=baseline,
                                     quality=quality, init=init))


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  args = common.parse_arg(arg, smoke=False, limit=500, steps=0, ft_steps=0, finetune=True, size='')
  c = config_dict.ConfigDict()
  c.bias_tasks = BIAS_TASKS
  c.limit = 8 if args.smoke else args.limit  # documents per evaluation task (0 = all)
  c.bootstrap_iters = 1000  # paired bootstrap resamples for the intervals
  pre_args = [a for a in ('smoke=True' if args.smoke else '', f'size={args.size}' if args.size else '') if a]
  pre = 'configs/default.py' + (':' + ','.join(pre_args) if pre_args else '')
  steps = args.steps or (6 if args.smoke else 0)
  common_flags = f'--config.train.steps={steps} --config.train.decay_steps={steps}' if steps else ''
  # The arms differ only in their mitigation flags; seeds, steps and data are shared.
  c.arms = config_dict.ConfigDict()
  c.arms.baseline = arm('train.py', pre, common_flags)
  c.arms.cda_add = arm('train.py', pre, f'{common_flags} --config.data.counterfactual={GENDER_LISTS} '
                       '--config.data.counterfactual_mode=add', baseline='baseline')
  c.arms.cda_substitute = arm('train.py', pre, f'{common_flags} --config.data.counterfactual={GENDER_LISTS} '
                              '--config.data.counterfactual_mode=substitute --config.data.counterfactual_rate=0.5',
                              baseline='baseline')
  c.arms.reweight = arm('train.py', pre, f'{common_flags} --config.data.reweight=gender:female=0.5',
                        baseline='baseline')
  # The control: no mitigation, another seed (initialisation and data order). The probes'
  # intervals cover their documents, not training's randomness; this arm's change is how far
  # a rerun alone moves each score, the size a mitigation's change must beat.
  c.arms.baseline_seed1 = arm('train.py', pre, f'{common_flags} --config.seed=1 --config.data.seed=1',
                              baseline='baseline')
  if args.finetune:
    ft = 'configs/finetune_sst2.py:init={init},method=full,fewshot=0' + (',smoke=True' if args.smoke else '')
    ft_steps = args.ft_steps or (4 if args.smoke else 400)
    every = ft_steps if args.smoke else max(1, ft_steps // 4)
    ft_flags = (f'--config.train.steps={ft_steps} --config.train.checkpoint_every={every} '
                f'--config.train.eval_every={every} --config.evals.dev.every={every}')
    if not args.smoke:  # rows of 256 bytes: at 128 the prompt cut drops the swapped word of a third of SST-2's pairs
      ft_flags += ' --config.sft.seq_len=256 --config.train.batch_size=8'
    c.arms.ft_baseline = arm('finetune.py', ft, ft_flags, quality=FT_QUALITY_TASKS, init='baseline')
    c.arms.ft_cda = arm('finetune.py', ft, f'{ft_flags} --config.sft.counterfactual={GENDER_LISTS}',
                        baseline='ft_baseline', quality=FT_QUALITY_TASKS, init='baseline')
    c.arms.ft_debias = arm('finetune.py', ft, f'{ft_flags} --config.sft.debias_weight={DEBIAS_WEIGHT}',
                           baseline='ft_baseline', quality=FT_QUALITY_TASKS, init='baseline')
  return c
