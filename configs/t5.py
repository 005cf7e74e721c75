"""Span-corruption pre-training of a T5-style encoder-decoder (Raffel et al., 2020) on Tiny Shakespeare, on CPU.

  python train.py --config=configs/t5.py --workdir=runs/t5

Byte vocabulary plus 100 sentinel tokens (as ByT5 appends them). Each row's encoder
input is 128 tokens: a stretch of the text with 15% of it, in spans of 3 on average,
replaced by one sentinel per span; the decoder predicts the removed spans after their
sentinels (llm/data/objectives.py computes the raw and target lengths as T5 does).
Arguments (after a colon):
  size=<llm.models.SIZES key>  model size (default t5-tiny: 2+2 layers, the size of configs/default.py's decoder)
  smoke=True                   shrink everything to seconds (tests)
"""

from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, size='t5-tiny', smoke=False)
  c = common.base_config()
  c.model.size = args.size
  c.data.objective = 'span_corruption'
  c.sample.num_tokens = 0  # no free-running text: a T5 answers its inputs
  return common.finalize(c, args)
