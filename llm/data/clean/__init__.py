"""Corpus quality pipeline: raw files -> clean, deduplicated, PII-scrubbed TFDS dataset.

Modules (one stage each, every rule a small pure function):
  document   the ``Doc`` record and per-file read accounting (``FileStats``)
  readers    text / JSONL / WET / WARC (HTML -> text) readers, globs, gzip, bad input counted
  text       one shared analysis of a document (lines, words, n-grams) that all rules reuse
  rules      C4, Gopher quality, Gopher repetition, FineWeb, language id, bad words
  dedup      exact (normalised hash), MinHash LSH near-duplicates, C4-style repeated lines
  pii        e-mail, phone and IP scrubbing to placeholder tokens
  audit      identity-term frequencies for the representation audit
  report     JSON + Markdown report with matplotlib plots
  stages     the stage functions both runners share (per file, per document, per shard)
  pipeline   in-process runner (parallel over files) and the command line
  beam       the same stages on Apache Beam
  tfds_builder  the TFDS builder train.py reads
The web-like benchmark corpus and the datatrove comparison live in benchmarks/corpus/.
"""
