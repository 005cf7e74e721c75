"""The energy and carbon ledger (llm/footprint.py): arithmetic on fixed inputs, counters and
their fallbacks, resume continuity, the estimate command, and one-line errors.

The ledger's part in real runs (phases, metrics.jsonl, a resumed run's totals) is checked on
the smoke runs of tests/test_train.py.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from llm import footprint  # noqa: E402
from llm.footprint import FootprintConfig, FootprintError, Hardware, Ledger  # noqa: E402

H100_HOST = Hardware(backend='gpu', kind='NVIDIA H100 80GB HBM3', devices=16, local_devices=8, hosts=2,
                     cpu='AMD EPYC 9654 96-Core Processor')
CPU_HOST = Hardware(backend='cpu', kind='', devices=0, local_devices=0, hosts=1, cpu='Intel(R) Xeon(R) Gold 6338')


class Clock:
  """A clock the test moves by hand."""

  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


class Counter:
  """A meter whose cumulative joules the test sets."""

  def __init__(self):
    self.j = 0.0

  def joules(self) -> float:
    return self.j


def make(tmp_path, hw=H100_HOST, **kw):
  wall, cpu = Clock(), Clock()
  cfg = FootprintConfig(**{'region': 'FRA', 'pue': 1.2, **kw.pop('cfg', {})})
  ledger = Ledger(str(tmp_path), cfg, hw, program='train.py', clock=wall, cpu_clock=cpu, **kw)
  return ledger, wall, cpu


def test_power_model_arithmetic_on_fixed_inputs(tmp_path):
  ledger, wall, cpu = make(tmp_path)
  wall.t, cpu.t = 10.0, 4.0  # setup: 10 s, 4 CPU-seconds on the lead host
  ledger.switch('compilation')
  wall.t, cpu.t = 40.0, 34.0
  ledger.switch('training')
  wall.t, cpu.t = 3640.0, 1234.0  # one hour of training
  with ledger.phase('checkpointing'):
    wall.t, cpu.t = 3700.0, 1294.0
  assert ledger.current == 'training'
  wall.t, cpu.t = 3760.0, 1300.0
  s = ledger.close(step=100) and json.load(open(tmp_path / 'footprint.json'))
  h100, epyc = 700.0, 280 / 128  # W per chip; W per busy thread (the table's AMD EPYC row)
  ph = s['phases']
  # 16 chips over 2 hosts; the lead host's CPU time counted once per host.
  assert ph['training']['device_hours'] == pytest.approx(16 * 3600 / 3600 + 16 * 60 / 3600)
  train_j = h100 * 16 * 3660 + epyc * 2 * (1200 + 6)
  assert ph['training']['it_energy_kwh'] == pytest.approx(train_j / 3.6e6)
  assert ph['checkpointing']['it_energy_kwh'] == pytest.approx((h100 * 16 * 60 + epyc * 2 * 60) / 3.6e6)
  assert ph['compilation']['seconds'] == 30 and ph['setup']['seconds'] == 10 and ph['evaluation']['seconds'] == 0
  total_j = h100 * 16 * 3760 + epyc * 2 * 1300
  assert s['it_energy_kwh'] == pytest.approx(total_j / 3.6e6)
  assert s['energy_kwh'] == pytest.approx(total_j / 3.6e6 * 1.2)  # x PUE
  assert s['intensity_g_per_kwh'] == 56 and 'France 2023' in s['intensity_source']
  assert s['co2e_kg'] == pytest.approx(total_j / 3.6e6 * 1.2 * 56 / 1e3)
  assert s['devices'] == {'kind': 'NVIDIA H100 80GB HBM3', 'count': 16, 'hosts': 2, 'power_model': 'h100',
                          'watts_per_chip': 700.0, 'watts_source': footprint.DEVICES['h100'].source}
  assert 'power model: 700 W per chip' in s['method']['accelerators']
  assert s['method']['hosts'] == 'the lead host measured, counted 2 times'
  assert s['runs'][0]['end_step'] == 100 and s['runs'][0]['energy_kwh'] == pytest.approx(s['energy_kwh'])


def test_measured_counters_replace_the_power_model(tmp_path):
  gpu, rapl = Counter(), Counter()
  hw = Hardware('gpu', 'NVIDIA H100', devices=8, local_devices=8, hosts=1, cpu='AMD EPYC')
  ledger, wall, cpu = make(tmp_path, hw, accelerator_meter=gpu, cpu_meter=rapl)
  wall.t, cpu.t, gpu.j, rapl.j = 100.0, 50.0, 250_000.0, 9_000.0
  totals = ledger.totals()
  assert totals['energy_kwh'] == pytest.approx(259_000 / 3.6e6 * 1.2)
  assert totals['co2e_kg'] == pytest.approx(259_000 / 3.6e6 * 1.2 * 56 / 1e3)
  m = ledger.method()
  assert m['accelerators'].startswith('measured: NVML') and m['host_cpu'].startswith('measured: RAPL')


def test_cpu_run_counts_busy_threads_and_intensity_set_by_hand(tmp_path):
  ledger, wall, cpu = make(tmp_path, CPU_HOST, cfg={'intensity': 100.0, 'pue': 1.0})
  wall.t, cpu.t = 100.0, 150.0  # two threads busy 75% of the time
  s = ledger.summary()
  xeon = 270 / 80
  assert s['cpu_core_hours'] == pytest.approx(150 / 3600) and s['device_hours'] == 0
  assert s['energy_kwh'] == pytest.approx(xeon * 150 / 3.6e6)
  assert s['co2e_kg'] == pytest.approx(xeon * 150 / 3.6e6 * 100 / 1e3)
  assert s['region'] == 'custom' and s['intensity_source'].startswith('set by hand')
  assert 'accelerators' not in s['method'] and 'Xeon Platinum 8380' in s['method']['host_cpu']
  ledger2, _, _ = make(tmp_path / 'b', CPU_HOST, cfg={'device_watts': 10.0})
  assert ledger2.cpu_spec.watts == 10.0 and ledger2.cpu_spec.source.startswith('set by hand')


def test_carbon_is_charged_at_the_intensity_in_force_when_a_resumed_run_changes_region(tmp_path):
  first, wall, cpu = make(tmp_path, CPU_HOST, cfg={'region': 'NOR', 'pue': 1.0})
  wall.t = cpu.t = 3600.0
  first.close(step=10)
  second, wall2, cpu2 = make(tmp_path, CPU_HOST, cfg={'region': 'POL', 'pue': 1.0})
  wall2.t = cpu2.t = 3600.0
  s = json.loads(second.close(step=20) and open(tmp_path / 'footprint.json').read())
  kwh = 270 / 80 / 1e3  # one thread-hour on the Xeon row
  assert s['energy_kwh'] == pytest.approx(2 * kwh)
  assert s['co2e_kg'] == pytest.approx(kwh * (30 + 662) / 1e3)
  assert [(r['start_step'], r['end_step']) for r in s['runs']] == [(0, 10), (0, 20)]
  assert s['phases']['setup']['seconds'] == 7200


def test_unreadable_previous_ledger_is_set_aside_not_lost(tmp_path, capsys):
  (tmp_path / 'footprint.json').write_text('{"phases": ')
  ledger, _, _ = make(tmp_path, CPU_HOST)
  assert 'could not be read' in capsys.readouterr().out
  aside = [p for p in os.listdir(tmp_path) if p.startswith('footprint.json.unreadable-')]
  assert len(aside) == 1 and (tmp_path / aside[0]).read_text() == '{"phases": '
  ledger.close()
  assert len(json.load(open(tmp_path / 'footprint.json'))['runs']) == 1


def test_only_the_lead_process_writes(tmp_path):
  ledger, _, _ = make(tmp_path, CPU_HOST, write=False)
  ledger.close()
  assert not (tmp_path / 'footprint.json').exists()


def test_rapl_counters_with_wrap_around_and_its_fallbacks(tmp_path):
  root = tmp_path / 'powercap'
  assert footprint.RaplMeter.open(str(root))[0] is None  # no powercap: the reason is given
  pkg, core = root / 'intel-rapl:0', root / 'intel-rapl:0:0'
  for d, name in ((pkg, 'package-0'), (core, 'core')):
    d.mkdir(parents=True)
    (d / 'name').write_text(name + '\n')
    (d / 'max_energy_range_uj').write_text('1000000\n')
    (d / 'energy_uj').write_text('900000\n')
  meter, why = footprint.RaplMeter.open(str(root))
  assert why == '' and [os.path.basename(os.path.dirname(p)) for p, _ in meter.files] == ['intel-rapl:0']
  (pkg / 'energy_uj').write_text('950000\n')
  assert meter.joules() == pytest.approx(0.05)
  (pkg / 'energy_uj').write_text('20000\n')  # wrapped past 1,000,000 uJ
  assert meter.joules() == pytest.approx(0.12)
  os.chmod(pkg / 'energy_uj', 0)
  if os.geteuid() != 0:  # root reads anything: the permission case only exists for users
    assert 'not readable' in footprint.RaplMeter.open(str(root))[1]


def test_this_machine_falls_back_to_the_power_model_and_says_why(tmp_path):
  """No NVML here and (on these VMs) no RAPL: the run goes on with the power model, and the file says so."""
  meter, why = footprint.NvmlMeter.open(1)
  assert meter is None and why.startswith('NVML: ')
  ledger = Ledger.for_run(str(tmp_path), FootprintConfig(), program='test')
  s = ledger.summary()
  if ledger.cpu_meter is None:
    assert s['method']['host_cpu'].startswith('power model') and any(r.startswith('RAPL') for r in s['method']['fallbacks'])
  off = Ledger.for_run(str(tmp_path), FootprintConfig(measure=False), program='test')
  assert off.cpu_meter is None and off.method()['fallbacks'] == ['counters not read: footprint.measure=False']


def test_device_lookup_by_kind_and_unknown_kinds():
  assert footprint.device_spec('auto', 'TPU v5 lite')[0] == 'tpu-v5e'
  assert footprint.device_spec('auto', 'TPU v5p')[0] == 'tpu-v5p'
  assert footprint.device_spec('auto', 'NVIDIA H200')[0] == 'h200'
  assert footprint.device_spec('auto', 'Apple M3', cpu=True)[0] == 'cpu'
  key, spec = footprint.device_spec('auto', 'Mystery NPU', 500.0)  # an unknown kind with its power set by hand
  assert (key, spec.watts, spec.source) == ('custom', 500.0, 'set by hand (footprint.device_watts)')
  with pytest.raises(FootprintError, match=r"unknown device kind 'Mystery NPU'.*h100.*footprint.device_watts"):
    footprint.device_spec('auto', 'Mystery NPU')
  with pytest.raises(FootprintError, match=r"unknown device 'tpu-v9'; known devices: h200.*device_watts"):
    footprint.device_spec('tpu-v9')
  with pytest.raises(FootprintError, match='is an accelerator but this run is on CPU'):
    Ledger('/nonexistent', FootprintConfig(device='h100'), CPU_HOST, program='x')


def test_regions_by_code_or_name_and_unknown_regions():
  assert footprint.grid_intensity('usa') == (369.0, 'United States 2023 (Ember)')
  assert footprint.grid_intensity('Germany')[0] == 381
  assert footprint.grid_intensity('mars', 250.0) == (250.0, 'set by hand (footprint.intensity)')
  with pytest.raises(FootprintError, match=r"unknown region 'mars'; known regions .*USA.*footprint.intensity"):
    footprint.grid_intensity('mars')
  with pytest.raises(FootprintError, match='pue=0.9 is below 1'):
    make('/nonexistent', CPU_HOST, cfg={'pue': 0.9})


def test_estimate_reproduces_patterson_et_al_gpt3():
  """GPT-3 (Patterson et al., 2021, Table 4): 3.14e23 FLOPs on 10,000 V100s at 24.6 TFLOP/s each,
  14.8 days, 330 W per processor with its share of the host, PUE 1.1, 429 gCO2e/kWh:
  1,287 MWh and 552 t CO2e."""
  e = footprint.estimate(params=175e9, tokens=300e9, device='v100', chips=10000, mfu=24.6 / 125, pue=1.1,
                         intensity=429)
  assert e.seconds / 86400 == pytest.approx(14.8, rel=0.01)
  assert e.energy_kwh / 1e3 == pytest.approx(1287 * 300 / 330, rel=0.01)  # the datasheet's 300 W per V100
  w = footprint.estimate(params=175e9, tokens=300e9, device='v100', chips=10000, mfu=24.6 / 125, pue=1.1,
                         intensity=429, watts=330)
  assert w.energy_kwh / 1e3 == pytest.approx(1287, rel=0.01) and w.co2e_kg / 1e3 == pytest.approx(552, rel=0.01)


def test_estimate_from_a_size_and_a_measured_mfu(tmp_path):
  from llm import perf
  from llm.models import config_for_size
  e = footprint.estimate(size='7b', tokens=1e12, device='tpu-v5p', chips=256, mfu=0.5, region='USA')
  per_token = perf.train_flops_per_token(config_for_size('7b', 32000, max_seq_len=2048), 2048)
  assert e.flops == pytest.approx(per_token * 1e12)
  assert e.seconds == pytest.approx(e.flops / (256 * 459e12 * 0.5))
  assert e.co2e_kg == pytest.approx(256 * footprint.DEVICES['tpu-v5p'].watts * e.seconds / 3.6e6 * 369 / 1e3)
  rows = [{'step': 1, 'mfu': 0.05}, {'step': 2, 'mfu': 0.40}, {'step': 3, 'mfu': 0.44}, {'step': 4, 'mfu': 0.42}]
  (tmp_path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  assert footprint.measured_mfu(str(tmp_path)) == pytest.approx(0.42)  # the first row, with compilation, left out
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "mfu": 0.4\n')  # cut mid-line
  with pytest.raises(FootprintError, match='is not one JSON object per line'):
    footprint.measured_mfu(str(tmp_path))
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "train_loss": 3.0}\n')
  with pytest.raises(FootprintError, match='has no mfu .*--mfu=0.45'):
    footprint.measured_mfu(str(tmp_path))
  with pytest.raises(FootprintError, match='pue=0.5 is below 1'):
    footprint.estimate(size='7b', tokens=1e12, device='h100', chips=8, mfu=0.4, pue=0.5)
  with pytest.raises(FootprintError, match='exactly one of --size'):
    footprint.estimate(size='7b', params=7e9, tokens=1e12, device='h100', chips=8, mfu=0.4)


def test_estimate_command_prints_a_table_or_one_error_line():
  run = lambda *a: subprocess.run([sys.executable, '-m', 'llm.footprint', *a], cwd=ROOT, capture_output=True,
                                  text=True)
  ok = run('estimate', '--params=175e9', '--tokens=300e9', '--device=v100', '--chips=10000', '--mfu=0.1968',
           '--pue=1.1', '--intensity=429', '--watts=330', '--json')
  assert ok.returncode == 0, ok.stderr
  out = json.loads(ok.stdout)
  assert out['energy_kwh'] / 1e3 == pytest.approx(1287, rel=0.01)
  bad = run('estimate', '--size=7b', '--tokens=2e12', '--device=h100', '--chips=8', '--region=atlantis')
  assert bad.returncode == 2 and bad.stderr.startswith("error: unknown region 'atlantis'")
  assert len(bad.stderr.strip().splitlines()) == 1 and 'Traceback' not in bad.stderr
