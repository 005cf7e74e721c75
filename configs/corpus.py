"""Corpus quality pipeline: C4 + Gopher + FineWeb rules, fastText language id, exact and
MinHash dedup, repeated-line removal, PII scrubbing, report, TFDS output.

    python -m benchmarks.corpus.webgen --out runs/web --num_docs 100000          # a web-like corpus
    python -m llm.data.clean.pipeline --config=configs/corpus.py \\
        --config.inputs='runs/web/*.jsonl.gz' --config.output=runs/corpus
    python train.py --config=configs/default.py --workdir=runs/lm \\
        --config.data.sources=tfds:runs/corpus/tfds/clean_corpus/default/1.0.0

Expect (100,000 generated documents, this repo's 2-core VM): about half the documents kept,
the report in runs/corpus/report/report.md; throughput in README.md.

Arguments (``--config=configs/corpus.py:bad_words=True,smoke=True``):
  bad_words  turn on C4's bad-words filter (off by default; the report shows who it removes)
  smoke      one worker, no TFDS conversion: for tests
Every threshold below is a field of the dataclasses in llm/data/clean/{readers,rules,dedup,pii,
pipeline}.py, where each has a one-line comment; the defaults are the papers' values.
"""

from ml_collections import config_dict

from configs.common import parse_arg
from llm.data.clean.pipeline import PipelineConfig, config_dict as as_dict


def get_config(arg: str | None = None) -> config_dict.ConfigDict:
  args = parse_arg(arg, bad_words=False, smoke=False)
  # Defaults come from the dataclasses, so the config and the code cannot disagree.
  c = config_dict.ConfigDict(as_dict(PipelineConfig(inputs='', output='')))
  c.inputs = ''  # comma-separated globs: .txt, .jsonl, .wet, .warc (optionally .gz)
  c.output = ''  # output folder (clean shards, tfds/, report/, cache/)
  c.rules.bad_words.enabled = args.bad_words
  if args.smoke:
    c.workers = 1
    c.write_tfds = False
    c.shards = 2
  return c
