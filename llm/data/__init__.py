"""Data: the path a corpus takes from raw files to device batches.

  clean/    corpus quality pipeline: raw pages -> clean, deduplicated, PII-scrubbed documents
  stream    documents -> tokens -> packed rows -> tf.data batches (train.py reads this)
"""

from llm.data.stream import (  # noqa: F401  (the names train.py, finetune.py and llm/sft.py use)
    FIELDS, Corpus, DataConfig, DataError, load_corpus, pack, parse_sources, read_documents, read_tfds,
    split_documents, train_dataset, val_batches)
