"""Benchmarks and comparisons with peers; run from the repository root (``python -m benchmarks...``)."""

import json
import os
from typing import Any


def write_json(result: Any, path: str) -> None:
  """A benchmark's result as JSON at ``path`` (its folder made), written whole or not at all."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1, ensure_ascii=False)
  os.replace(tmp, path)
