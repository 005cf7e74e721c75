"""Tokenize a corpus once into shards that train.py streams (llm/data/prepare.py).

    python -m llm.data.prepare --config=configs/prepare.py \\
        --config.sources='runs/corpus/clean/train-*.jsonl.gz' --config.output=runs/tokens
    python train.py --config=configs/default.py --workdir=runs/lm --config.data.sources=tokens:runs/tokens

Sources: comma-separated globs of .txt/.jsonl/.json files (optionally .gz; local or gs://)
and tfds:<dataset version folder> (the corpus pipeline's output keeps its own splits).
Runners: local (no Beam), direct (Beam in process), multiprocess (Beam, `workers`
processes), dask (Beam on a Dask cluster: dask_address, or a local one of `workers`
processes), dataflow (with beam_args); README.md has each command. Throughput of each,
on this repository's 2-core machine, is in README.md.

Arguments (``--config=configs/prepare.py:runner=dask,smoke=True``):
  runner  one of local, direct, multiprocess, dask, dataflow
  smoke   small shards and one worker: for tests
Every field is a field of llm.data.prepare.PrepareConfig, where each has a one-line comment.
"""

from ml_collections import config_dict

from configs.common import from_dataclass, parse_arg
from llm.data.prepare import RUNNERS, PrepareConfig


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  args = parse_arg(arg, runner='direct', smoke=False)
  if args.runner not in RUNNERS:
    raise ValueError(f'runner={args.runner!r} is not one of {list(RUNNERS)}')
  # Defaults come from the dataclass, so the config and the code cannot disagree.
  c = from_dataclass(PrepareConfig(sources='', output='', runner=args.runner))
  if args.smoke:
    c.shard_mb = 1
    c.workers = 1
  return c
