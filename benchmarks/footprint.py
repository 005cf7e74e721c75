"""The footprint ledger against codecarbon's offline tracker on the same CPU run, and the ledger's
overhead on step time.

  pip install codecarbon==3.3.2     # not a requirement of the project: only this comparison uses it
  python -m benchmarks.footprint --steps=1000 --out=/tmp/footprint_bench.json

One process trains configs/default.py (Tiny Shakespeare, the README's CPU run) inside
``codecarbon.OfflineEmissionsTracker`` (no network; tracking_mode='process', so that both count
this process rather than the machine) with the same grid (USA) and PUE (1.0). Both report
kWh and kg CO2e; codecarbon's CPU and RAM parts are given apart, as the ledger counts no RAM.

Overhead: the ledger does nothing per step; per metrics row it reads the clocks and counters
and rewrites footprint.json, and per phase change it reads them. Their measured cost, spread
over the steps between rows (train.log_every), is compared with the run's median step time.
The run is too noisy on a shared 2-core VM to resolve a 1% difference end to end, so the
overhead is measured directly.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--steps', type=int, default=1000)
  p.add_argument('--region', default='USA')
  p.add_argument('--out', default='')
  args = p.parse_args()

  from codecarbon import OfflineEmissionsTracker

  import train
  from configs import default
  from llm import footprint, perf

  cfg = default.get_config()
  cfg.train.steps = args.steps
  cfg.footprint.region = args.region
  cfg.footprint.pue = 1.0
  work = tempfile.mkdtemp(prefix='footprint-bench-')
  tracker = OfflineEmissionsTracker(country_iso_code=args.region, tracking_mode='process', save_to_file=False,
                                    log_level='error', measure_power_secs=5, pue=1.0)
  tracker.start()
  t0 = time.perf_counter()
  train.run(cfg, work)
  wall = time.perf_counter() - t0
  tracker.stop()
  cc = tracker.final_emissions_data
  with open(os.path.join(work, 'footprint.json')) as f:
    ours = json.load(f)
  with open(os.path.join(work, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]

  # Overhead: the ledger's work per metrics row and per phase change, against the step time.
  ledger = footprint.Ledger.for_run(tempfile.mkdtemp(), footprint.FootprintConfig(region=args.region), program='bench')
  n = 500
  t = time.perf_counter()
  for i in range(n):
    ledger.totals()
    ledger.write(i)
  per_row = (time.perf_counter() - t) / n
  t = time.perf_counter()
  for _ in range(n):
    ledger.switch('evaluation')
    ledger.switch('training')
  per_switch = (time.perf_counter() - t) / (2 * n)
  tokens_per_step = cfg.train.batch_size * cfg.data.seq_len
  step_sec = statistics.median(tokens_per_step / r['tokens_per_sec'] for r in rows[1:])
  # Per log row: totals + write; per eval row: 2 switches (validation); per checkpoint: 2 switches.
  per_step = (per_row / cfg.train.log_every + 2 * per_switch / cfg.train.eval_every
              + 2 * per_switch / cfg.train.checkpoint_every)

  cc_kwh, ours_kwh = cc.energy_consumed, ours['energy_kwh']
  result = {
      'cpu': perf.cpu_model(), 'steps': args.steps, 'wall_sec': wall,
      'ledger': {k: ours[k] for k in ('energy_kwh', 'co2e_kg', 'cpu_core_hours', 'intensity_g_per_kwh', 'method')},
      'codecarbon': {'version': cc.codecarbon_version, 'energy_kwh': cc_kwh, 'cpu_energy_kwh': cc.cpu_energy,
                     'ram_energy_kwh': cc.ram_energy, 'co2e_kg': cc.emissions, 'cpu_power_w': cc.cpu_power,
                     'ram_power_w': cc.ram_power, 'cpu_model': cc.cpu_model, 'tracking_mode': cc.tracking_mode,
                     'intensity_g_per_kwh': cc.emissions / cc_kwh * 1e3 if cc_kwh else None},
      'ratio_energy_ledger_over_codecarbon': ours_kwh / cc_kwh if cc_kwh else None,
      'ratio_energy_ledger_over_codecarbon_cpu': ours_kwh / cc.cpu_energy if cc.cpu_energy else None,
      'overhead': {'per_row_sec': per_row, 'per_switch_sec': per_switch, 'median_step_sec': step_sec,
                   'per_step_sec': per_step, 'fraction_of_step': per_step / step_sec},
  }
  print(json.dumps(result, indent=2))
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  main()
