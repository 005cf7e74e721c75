"""Masked-LM pre-training of a BERT-style encoder (Devlin et al., 2019) on Tiny Shakespeare, on CPU.

  python train.py --config=configs/bert.py --workdir=runs/bert

Byte vocabulary plus a mask token; rows of 128 bytes whose documents (speeches) are kept
apart by segment ids; 15% of each row's bytes are selected, of those 80% replaced by the
mask token, 10% by a random byte and 10% kept, and the loss is the cross-entropy of the
selected ones (llm/data/objectives.py). Arguments (after a colon):
  size=<llm.models.SIZES key>  model size (default bert-tiny, the size of configs/default.py's decoder)
  whole_word=True              mask whole words (bytes between spaces) instead of single bytes
  smoke=True                   shrink everything to seconds (tests)
"""

from configs import common


def get_config(arg: str | None = None):
  args = common.parse_arg(arg, size='bert-tiny', whole_word=False, smoke=False)
  c = common.base_config()
  c.model.size = args.size
  c.data.objective = 'mlm'
  c.data.whole_word = args.whole_word
  c.sample.num_tokens = 0  # an encoder does not write free-running text
  return common.finalize(c, args)
