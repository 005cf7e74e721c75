"""Benchmark-only code of the cleaning stage (not shipped in ``llm``).

  webgen         generator of a realistic web-like benchmark corpus
  bench          throughput and decision agreement against datatrove
  datatrove_ref  the same rules run by datatrove itself, for the comparison
"""
