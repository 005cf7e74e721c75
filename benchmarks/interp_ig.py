"""Integrated gradients on a trained checkpoint: completeness error and time per attribution.

  python benchmarks/interp_ig.py --workdir=runs/default --steps=32,64,128

For the byte-level default checkpoint and a Shakespeare line, attributes the log-probability
of the line's last byte to every input byte, at each step count: the completeness error
|sum(attributions) - (f(input) - f(baseline))| and the warm wall time of one attribution
(compilation excluded: the first call of each step count is timed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from llm import interp  # noqa: E402
from llm.perf import cpu_model  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', default='runs/default')
  p.add_argument('--text', default='ROMEO:\nBut soft, what light through yonder window breaks')
  p.add_argument('--steps', default='32,64,128')
  p.add_argument('--repeats', type=int, default=3)
  a = p.parse_args()
  subject = interp.load(a.workdir)
  tok = subject.tokenizer
  ids = ([tok.bos_id] if tok.add_bos else []) + [int(t) for t in tok.encode(a.text)]
  prompt, target = ids[:-1], ids[-1]
  rows = []
  for steps in [int(s) for s in a.steps.split(',')]:
    t0 = time.perf_counter()
    ig = interp.integrated_gradients(subject.graphdef, subject.params, prompt, target, steps=steps)
    first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
      t0 = time.perf_counter()
      ig = interp.integrated_gradients(subject.graphdef, subject.params, prompt, target, steps=steps)
      times.append(time.perf_counter() - t0)
    rows.append({'steps': steps, 'completeness_error': float(ig.completeness_error),
                 'explained': float(ig.f_input - ig.f_baseline), 'first_call_s': round(first, 3),
                 'warm_s': round(min(times), 4)})
    print(json.dumps(rows[-1]), flush=True)
  print(json.dumps({'workdir': a.workdir, 'tokens': len(prompt), 'cpu': cpu_model(), 'rows': rows}))


if __name__ == '__main__':
  main()
