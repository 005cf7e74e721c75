"""Data: the path a corpus takes from raw files to device batches.

  clean/      corpus quality pipeline: raw pages -> clean, deduplicated, PII-scrubbed documents
  documents   text sources -> documents and the train/validation split (shared by the two below)
  prepare     documents -> token shards, once, on Apache Beam (python -m llm.data.prepare)
  tokens      token streams in memory or in shards (TensorStore zarr), and the manifest
  objectives  windows of a token stream -> batch fields: next token, masked LM (BERT), span corruption (T5)
  stream      token streams -> rows -> tf.data batches (what train.py and finetune.py read)
  bench       the input pipeline's throughput (python -m llm.data.bench)
"""

from llm.data.documents import DataError, read_documents, read_tfds, split_documents  # noqa: F401
from llm.data.objectives import (  # noqa: F401  (what training code needs to know of a row's fields)
    FIELDS, MLM_FIELDS, OBJECTIVES, SPAN_FIELDS, MaskedLM, NextToken, Objective, SpanCorruption,
    compute_input_and_target_lengths, make_objective, word_start_table, word_starts_for)
from llm.data.stream import (  # noqa: F401  (the names train.py, finetune.py and llm/sft.py use)
    Corpus, DataConfig, PackedRows, describe, load_corpus, make_data_tokenizer, pack, parse_sources, train_batches,
    train_dataset, val_batches, write_mitigation_report)
