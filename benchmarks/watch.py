"""Run a command and measure it: seconds to its first 'step' line, peak RSS of its process tree.

    python benchmarks/watch.py --limit_gb 20 --log runs/x.log -- python train.py ...

Prints one JSON line: returncode, seconds, first_step_s (when train.py printed its first
step: start-up, compilation included), peak_rss_gb (summed over the process and its
children, sampled every 0.2 s), killed_at_limit_s (the tree passed --limit_gb and was
killed, so that a run that would exhaust the machine's memory ends as a measurement).
"""

import argparse
import json
import subprocess
import threading
import time


def tree_rss(pid: int) -> int:
  """Resident bytes of ``pid`` and all its descendants (Linux /proc)."""
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    try:
      with open(f'/proc/{p}/status') as f:
        total += next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmRSS:'))
      with open(f'/proc/{p}/task/{p}/children') as f:
        todo += [int(c) for c in f.read().split()]
    except (OSError, StopIteration):
      pass
  return total


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--limit_gb', type=float, default=20.0)
  ap.add_argument('--log', required=True, help="the command's output, each line with its time")
  ap.add_argument('cmd', nargs=argparse.REMAINDER)
  a = ap.parse_args()
  cmd = a.cmd[1:] if a.cmd[:1] == ['--'] else a.cmd
  t0 = time.time()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
  peak, killed = [0], [None]

  def sample() -> None:
    while proc.poll() is None:
      rss = tree_rss(proc.pid)
      peak[0] = max(peak[0], rss)
      if rss > a.limit_gb * 2**30 and killed[0] is None:
        killed[0] = time.time() - t0
        subprocess.run(['pkill', '-9', '-P', str(proc.pid)], check=False)
        proc.kill()
      time.sleep(0.2)

  thread = threading.Thread(target=sample, daemon=True)
  thread.start()
  first_step = None
  with open(a.log, 'w') as log:
    for line in proc.stdout:
      log.write(f'{time.time() - t0:8.2f} {line}')
      log.flush()
      if first_step is None and line.startswith('step '):
        first_step = time.time() - t0
    proc.wait()
    thread.join(1)
    out = {'returncode': proc.returncode, 'seconds': time.time() - t0, 'first_step_s': first_step,
           'peak_rss_gb': peak[0] / 2**30, 'killed_at_limit_s': killed[0], 'limit_gb': a.limit_gb}
    log.write(json.dumps(out) + '\n')
  print(json.dumps(out))


if __name__ == '__main__':
  main()
