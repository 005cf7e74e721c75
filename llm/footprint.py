"""Energy and carbon ledger of every run, and the projected footprint of planned runs.

  python -m llm.footprint estimate --size=7b --tokens=2e12 --device=tpu-v5p --chips=256 --region=USA
  python -m llm.footprint estimate --params=175e9 --tokens=300e9 --device=v100 --chips=10000 \\
      --mfu=0.197 --pue=1.1 --intensity=429        # GPT-3 as Patterson et al. (2021) counted it
  python -m llm.footprint devices | regions

How a run's energy is counted (``footprint.json`` states which way applied, and why):

* Accelerators: NVIDIA GPUs' own energy counters through NVML (``nvidia-ml-py``) where
  readable; otherwise a power model, the chip's power in ``DEVICES`` times the time the chips
  were held (device-hours). TDP is an upper bound: chips seldom draw it throughout.
* Host CPU: the packages' energy counters through Linux RAPL (``/sys/class/powercap``) where
  readable (whole packages, so other processes on the host count too); otherwise power per
  busy hardware thread (``DEVICES``' CPU rows: TDP / threads) times this process's CPU time
  (user + system, all threads), i.e. scaled by measured busy time.
* Facility energy = IT energy x PUE (``footprint.pue``); carbon = facility energy x the grid's
  carbon intensity (``REGIONS``, or ``footprint.intensity`` set by hand).
* Multi-host runs: the lead process measures its own host and counts it once per host (the
  hosts of a slice are alike).

A run's time is split into phases: setup (data, model, restore), compilation (the first step,
which traces and compiles, and runs once), training, evaluation (validation, evaluators,
sampling) and checkpointing (saves and loads). The ledger only reads clocks and counters when
the phase changes and when a metrics row is written, never per step. A resumed run (same
workdir) adds to the totals in ``footprint.json`` instead of starting again, and lists each
process in ``runs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class FootprintError(ValueError):
  """A footprint setting that cannot be used as given; the message names the fix."""


# ----- Power and peak FLOP/s per device --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DeviceSpec:
  watts: float  # per chip; for a CPU row, per busy hardware thread
  peak_flops: float | None  # dense bf16/fp16 FLOP/s per chip (estimates); None for CPUs
  match: tuple[str, ...]  # substrings of jax's device_kind (or the CPU's model name), checked in order
  source: str
  cpu: bool = False


# TPU v5e/v5p/v6e: Google publishes no per-chip power. Those rows assume the FLOP/s per watt
# of TPU v4 (275 TFLOP/s at 192 W, the one published figure), raised by Google's stated
# efficiency gain where there is one (v6e: 67% over v5e). Set footprint.device_watts when
# you know better.
_V4_FLOPS_PER_W = 275e12 / 192
DEVICES: dict[str, DeviceSpec] = {
    'h200': DeviceSpec(700, 989e12, ('H200',), 'NVIDIA H200 SXM datasheet: up to 700 W'),
    'h100': DeviceSpec(700, 989e12, ('H100',), 'NVIDIA H100 SXM5 datasheet: up to 700 W (the PCIe card: 350 W)'),
    'a100': DeviceSpec(400, 312e12, ('A100',), 'NVIDIA A100 SXM4 datasheet: 400 W'),
    'v100': DeviceSpec(300, 125e12, ('V100',), 'NVIDIA V100 SXM2 datasheet: 300 W, 125 TFLOP/s fp16 tensor'),
    'tpu-v4': DeviceSpec(192, 275e12, ('TPU v4',), 'Google Cloud TPU v4 documentation: 192 W maximum per chip'),
    'tpu-v5e': DeviceSpec(round(197e12 / _V4_FLOPS_PER_W), 197e12, ('TPU v5 lite', 'TPU v5e'),
                          'estimate (unpublished): TPU v4 FLOP/s per watt at 197 TFLOP/s'),
    'tpu-v5p': DeviceSpec(round(459e12 / _V4_FLOPS_PER_W), 459e12, ('TPU v5p', 'TPU v5'),
                          'estimate (unpublished): TPU v4 FLOP/s per watt at 459 TFLOP/s'),
    'tpu-v6e': DeviceSpec(round(918e12 / (_V4_FLOPS_PER_W * 1.67)), 918e12, ('TPU v6 lite', 'TPU v6e'),
                          'estimate (unpublished): 918 TFLOP/s at TPU v4 FLOP/s per watt x 1.67 (Google: '
                          '67% more energy-efficient than v5e)'),
    'cpu-amd-epyc': DeviceSpec(280 / 128, None, ('AMD EPYC',),
                               'AMD EPYC 7763: 280 W TDP over 64 cores / 128 threads', cpu=True),
    'cpu-intel-xeon': DeviceSpec(270 / 80, None, ('Xeon',),
                                 'Intel Xeon Platinum 8380: 270 W TDP over 40 cores / 80 threads', cpu=True),
    'cpu': DeviceSpec(125 / 32, None, ('',), 'any other CPU, as Intel Core i9-13900K: 125 W base power over '
                      '32 threads', cpu=True),
}

# ----- Grid carbon intensity ---------------------------------------------------------------------

INTENSITY_SOURCE = ('Ember, Yearly Electricity Data: carbon intensity of electricity generation (life-cycle '
                    'gCO2e/kWh), year as given per country; as republished by Our World in Data and shipped in '
                    'codecarbon 3.3.2 (data/private_infra/global_energy_mix.json, MIT licence). World: Ember, '
                    'Global Electricity Review 2024 (2023: 480 g/kWh)')
# ISO 3166 alpha-3 code: (name, gCO2e/kWh, year). Countries generating >= 60 TWh a year, and
# a few more that host cloud regions.
REGIONS: dict[str, tuple[str, float, int]] = {
    'WORLD': ('World', 480, 2023),
    'ARE': ('United Arab Emirates', 561, 2022),
    'ARG': ('Argentina', 354, 2023),
    'AUS': ('Australia', 549, 2023),
    'AUT': ('Austria', 111, 2023),
    'BEL': ('Belgium', 138, 2023),
    'BGD': ('Bangladesh', 691, 2023),
    'BRA': ('Brazil', 98, 2023),
    'CAN': ('Canada', 170, 2023),
    'CHE': ('Switzerland', 35, 2023),
    'CHL': ('Chile', 291, 2023),
    'CHN': ('China', 582, 2023),
    'COL': ('Colombia', 260, 2023),
    'CZE': ('Czechia', 450, 2023),
    'DEU': ('Germany', 381, 2023),
    'DNK': ('Denmark', 152, 2023),
    'DZA': ('Algeria', 635, 2022),
    'EGY': ('Egypt', 570, 2023),
    'ESP': ('Spain', 174, 2023),
    'FIN': ('Finland', 79, 2023),
    'FRA': ('France', 56, 2023),
    'GBR': ('United Kingdom', 238, 2023),
    'IDN': ('Indonesia', 676, 2022),
    'IND': ('India', 713, 2023),
    'IRL': ('Ireland', 291, 2023),
    'IRN': ('Iran', 655, 2023),
    'IRQ': ('Iraq', 689, 2022),
    'ISL': ('Iceland', 28, 2022),
    'ISR': ('Israel', 583, 2022),
    'ITA': ('Italy', 331, 2023),
    'JPN': ('Japan', 485, 2023),
    'KAZ': ('Kazakhstan', 821, 2023),
    'KOR': ('South Korea', 431, 2023),
    'KWT': ('Kuwait', 649, 2023),
    'MEX': ('Mexico', 507, 2023),
    'MYS': ('Malaysia', 606, 2022),
    'NLD': ('Netherlands', 268, 2023),
    'NOR': ('Norway', 30, 2023),
    'NZL': ('New Zealand', 112, 2023),
    'PAK': ('Pakistan', 441, 2023),
    'PHL': ('Philippines', 611, 2023),
    'POL': ('Poland', 662, 2023),
    'PRT': ('Portugal', 165, 2023),
    'QAT': ('Qatar', 602, 2023),
    'RUS': ('Russia', 441, 2023),
    'SAU': ('Saudi Arabia', 707, 2022),
    'SGP': ('Singapore', 471, 2023),
    'SWE': ('Sweden', 41, 2023),
    'THA': ('Thailand', 550, 2023),
    'TUR': ('Turkey', 465, 2023),
    'TWN': ('Taiwan', 642, 2023),
    'UKR': ('Ukraine', 260, 2022),
    'USA': ('United States', 369, 2023),
    'UZB': ('Uzbekistan', 1168, 2022),
    'VEN': ('Venezuela', 186, 2022),
    'VNM': ('Vietnam', 475, 2023),
    'ZAF': ('South Africa', 708, 2023),
}


@dataclasses.dataclass(frozen=True)
class FootprintConfig:
  """``config.footprint`` (configs/common.py); every run reads it."""
  region: str = 'world'  # a key or country name of REGIONS (ISO 3166 alpha-3, e.g. USA, FRA)
  intensity: float = 0.0  # gCO2e/kWh set by hand (> 0 overrides region), e.g. your provider's figure
  pue: float = 1.0  # data-centre power usage effectiveness; Google reports about 1.10 fleet-wide
  device: str = 'auto'  # a key of DEVICES; auto = from jax's device kind (CPU: the CPU model name)
  device_watts: float = 0.0  # > 0: power per chip (per busy CPU thread on CPU) set by hand
  measure: bool = True  # read NVML / RAPL energy counters where readable (else the power model)


def grid_intensity(region: str, intensity: float = 0.0) -> tuple[float, str]:
  """(gCO2e/kWh, where it came from) for ``region``, or ``intensity`` when it is set (> 0)."""
  if intensity and intensity > 0:
    return float(intensity), 'set by hand (footprint.intensity)'
  key = region.strip().upper()
  by_name = {v[0].upper(): k for k, v in REGIONS.items()}
  key = by_name.get(key, key)
  if key not in REGIONS:
    raise FootprintError(
        f'unknown region {region!r}; known regions (ISO 3166 alpha-3 or name): {", ".join(sorted(REGIONS))} '
        f'(python -m llm.footprint regions lists them with their intensities). For another grid set the number '
        f'by hand: --config.footprint.intensity=<gCO2e per kWh> (estimate: --intensity=)')
  name, g, year = REGIONS[key]
  return float(g), f'{name} {year} (Ember)'


def device_spec(name: str, kind: str = '', watts: float = 0.0, *, cpu: bool = False) -> tuple[str, DeviceSpec]:
  """(key, spec) of DEVICES named ``name``, or matched from ``kind`` when ``name`` is 'auto'.

  ``watts`` > 0 replaces the table's power (and stands in for an unknown kind).
  """
  if name != 'auto':
    if name not in DEVICES:
      raise FootprintError(f'unknown device {name!r}; known devices: {", ".join(DEVICES)} (python -m llm.footprint '
                           f'devices lists their power and its source). For another device set its power by hand: '
                           f'--config.footprint.device_watts=<W per chip> (estimate: --watts= and --peak_flops=)')
    key, spec = name, DEVICES[name]
  else:
    key = next((k for k, s in DEVICES.items() if s.cpu == cpu and any(m.lower() in kind.lower() for m in s.match)),
               None)
    if key is None:
      if watts > 0:
        return 'custom', DeviceSpec(watts, None, (kind,), 'set by hand (footprint.device_watts)', cpu=cpu)
      raise FootprintError(f'unknown device kind {kind!r}: the power model knows {", ".join(DEVICES)}; set '
                           f'--config.footprint.device=<one of them> or its power by hand with '
                           f'--config.footprint.device_watts=<W per chip>')
    spec = DEVICES[key]
  if watts > 0:
    spec = dataclasses.replace(spec, watts=watts, source='set by hand (footprint.device_watts)')
  return key, spec


# ----- Energy counters -----------------------------------------------------------------------------

class RaplMeter:
  """Cumulative joules of every CPU package through Linux RAPL (powercap), wrap-around handled."""

  def __init__(self, files: list[tuple[str, int]]):
    self.files = files  # (energy_uj path, max_energy_range_uj)
    self.last = [self._raw(p) for p, _ in files]
    self.total_uj = 0

  @staticmethod
  def _raw(path: str) -> int:
    with open(path) as f:
      return int(f.read().strip())

  @classmethod
  def open(cls, root: str = '/sys/class/powercap') -> tuple[RaplMeter | None, str]:
    """(meter, '') or (None, why RAPL cannot be read here)."""
    if not os.path.isdir(root):
      return None, f'RAPL: {root} does not exist (no powercap driver, or a virtual machine)'
    files = []
    for d in sorted(os.listdir(root)):
      # Top-level package domains only (intel-rapl:0, not intel-rapl:0:0, whose energy they include).
      if not d.startswith('intel-rapl:') or d.count(':') != 1:
        continue
      try:
        with open(os.path.join(root, d, 'name')) as f:
          if not f.read().startswith('package'):
            continue
        with open(os.path.join(root, d, 'max_energy_range_uj')) as f:
          top = int(f.read().strip())
        cls._raw(os.path.join(root, d, 'energy_uj'))
      except (OSError, ValueError) as e:
        return None, f'RAPL: {os.path.join(root, d)} is not readable ({e.__class__.__name__}: {e}; reading needs root)'
      files.append((os.path.join(root, d, 'energy_uj'), top))
    if not files:
      return None, f'RAPL: no package domain under {root}'
    return cls(files), ''

  def joules(self) -> float:
    for i, (path, top) in enumerate(self.files):
      now = self._raw(path)
      self.total_uj += now - self.last[i] if now >= self.last[i] else now + top - self.last[i]
      self.last[i] = now
    return self.total_uj / 1e6


class NvmlMeter:
  """Cumulative joules of this process's NVIDIA GPUs (NVML total-energy counters, Volta and later)."""

  def __init__(self, nvml: Any, handles: list):
    self.nvml, self.handles = nvml, handles
    self.start = [nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles]  # mJ since the driver loaded

  @classmethod
  def open(cls, count: int) -> tuple[NvmlMeter | None, str]:
    try:
      import pynvml
      pynvml.nvmlInit()
      visible = os.environ.get('CUDA_VISIBLE_DEVICES')
      ids = [int(i) for i in visible.split(',') if i.strip().isdigit()] if visible else \
          list(range(pynvml.nvmlDeviceGetCount()))
      handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in ids[:count]]
      return cls(pynvml, handles), ''
    except Exception as e:  # no driver, no library, an old GPU: the power model stands in, never fails the run
      return None, f'NVML: {e.__class__.__name__}: {e}'

  def joules(self) -> float:
    return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) - s for h, s in zip(self.handles, self.start)) / 1e3


def cpu_seconds() -> float:
  """CPU time of this process, every thread, user + system."""
  t = os.times()
  return t.user + t.system


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          return value.strip()
  except OSError:
    pass
  import platform
  return platform.processor() or 'unknown CPU'


@dataclasses.dataclass(frozen=True)
class Hardware:
  backend: str  # jax.default_backend(): cpu | gpu | tpu
  kind: str  # jax's device_kind of the accelerators ('' on CPU)
  devices: int  # accelerators of the whole run (0 on CPU)
  local_devices: int  # of this host
  hosts: int
  cpu: str  # the host CPU's model name


def detect_hardware() -> Hardware:
  import jax
  backend = jax.default_backend()
  on_cpu = backend == 'cpu'
  return Hardware(backend, '' if on_cpu else jax.devices()[0].device_kind, 0 if on_cpu else jax.device_count(),
                  0 if on_cpu else jax.local_device_count(), jax.process_count(), cpu_model())


# ----- The ledger ------------------------------------------------------------------------------------

PHASES = ('setup', 'compilation', 'training', 'evaluation', 'checkpointing')
FILENAME = 'footprint.json'
_J_PER_KWH = 3.6e6


@dataclasses.dataclass
class _Tally:
  seconds: float = 0.0
  device_seconds: float = 0.0  # accelerator-seconds of the whole run
  cpu_seconds: float = 0.0  # busy CPU thread-seconds of the whole run
  accelerator_j: float = 0.0
  cpu_j: float = 0.0
  co2e_g: float = 0.0  # at the intensity and PUE in force when the energy was used

  def add(self, other: _Tally) -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Ledger:
  """Counts a run's energy and carbon by phase and keeps ``<workdir>/footprint.json``.

    ledger = Ledger.for_run(workdir, footprint_config, program='train.py', step=start)
    with ledger.phase('evaluation'): ...
    row.update(ledger.totals())    # energy_kwh, co2e_kg so far (this workdir, every run)
    print(ledger.close(step))      # writes footprint.json, returns the one-line summary

  ``clock`` and ``cpu_clock`` (seconds) and the meters are injectable for tests; only the
  lead process (``write=True``) writes the file.
  """

  def __init__(self, workdir: str, cfg: FootprintConfig, hw: Hardware, *, program: str, step: int = 0,
               write: bool = True, continue_previous: bool = True, accelerator_meter: Any = None,
               cpu_meter: Any = None, fallbacks: tuple[str, ...] = (), clock: Callable[[], float] = time.perf_counter,
               cpu_clock: Callable[[], float] = cpu_seconds):
    if cfg.pue < 1.0:
      raise FootprintError(f'footprint.pue={cfg.pue} is below 1 (a PUE is facility energy over IT energy); '
                           f'use 1.0 for energy at the devices, or your data centre\'s figure (e.g. 1.1)')
    self.path = os.path.join(workdir, FILENAME)
    self.cfg, self.hw, self.write_enabled = cfg, hw, write
    self.intensity, self.intensity_source = grid_intensity(cfg.region, cfg.intensity)
    on_cpu = hw.backend == 'cpu'
    self.accel_key, self.accel = (None, None) if on_cpu else device_spec(cfg.device, hw.kind, cfg.device_watts)
    self.cpu_key, self.cpu_spec = device_spec(cfg.device if on_cpu else 'auto', hw.cpu,
                                              cfg.device_watts if on_cpu else 0.0, cpu=True)
    if self.cpu_key != 'custom' and not self.cpu_spec.cpu:
      raise FootprintError(f'footprint.device={cfg.device!r} is an accelerator but this run is on CPU; use auto or '
                           f'one of {", ".join(k for k, s in DEVICES.items() if s.cpu)}')
    self.accel_meter, self.cpu_meter, self.fallbacks = accelerator_meter, cpu_meter, list(fallbacks)
    self.clock, self.cpu_clock = clock, cpu_clock
    self.tallies: dict[str, _Tally] = {p: _Tally() for p in PHASES}
    self.runs: list[dict] = []
    if continue_previous:
      self._load_previous()
    self.this_run = _Tally()
    self.run_entry = {'program': program, 'started': _utc_now(), 'start_step': step}
    self.current = 'setup'
    self._mark()

  @classmethod
  def for_run(cls, workdir: str, cfg: FootprintConfig, *, program: str, step: int = 0,
              continue_previous: bool = True) -> Ledger:
    """The ledger of this process: hardware from jax, NVML/RAPL opened when ``cfg.measure``."""
    import jax
    hw = detect_hardware()
    accel = cpu = None
    why = []
    if cfg.measure:
      if hw.backend == 'gpu':
        accel, reason = NvmlMeter.open(hw.local_devices)
        why += [reason] if reason else []
      cpu, reason = RaplMeter.open()
      why += [reason] if reason else []
    else:
      why.append('counters not read: footprint.measure=False')
    return cls(workdir, cfg, hw, program=program, step=step, write=jax.process_index() == 0,
               continue_previous=continue_previous, accelerator_meter=accel, cpu_meter=cpu, fallbacks=tuple(why))

  def at_step(self, step: int) -> None:
    """The step this process starts from (known once the checkpoint is restored)."""
    self.run_entry['start_step'] = step

  # -- counting --------------------------------------------------------------------------------
  def _mark(self) -> None:
    self.t0, self.c0 = self.clock(), self.cpu_clock()
    self.a0 = self.accel_meter.joules() if self.accel_meter else 0.0
    self.h0 = self.cpu_meter.joules() if self.cpu_meter else 0.0

  def _segment(self) -> _Tally:
    """What was used since the last mark (then marks again), for the whole run (every host)."""
    t, c = self.clock(), self.cpu_clock()
    a = self.accel_meter.joules() if self.accel_meter else 0.0
    h = self.cpu_meter.joules() if self.cpu_meter else 0.0
    dt, dc = max(t - self.t0, 0.0), max(c - self.c0, 0.0)
    hosts = max(self.hw.hosts, 1)
    seg = _Tally(seconds=dt, device_seconds=dt * self.hw.devices, cpu_seconds=dc * hosts)
    if self.accel is not None:
      seg.accelerator_j = (a - self.a0) * hosts if self.accel_meter else self.accel.watts * dt * self.hw.devices
    seg.cpu_j = ((h - self.h0) if self.cpu_meter else self.cpu_spec.watts * dc) * hosts
    seg.co2e_g = (seg.accelerator_j + seg.cpu_j) / _J_PER_KWH * self.cfg.pue * self.intensity
    self.t0, self.c0, self.a0, self.h0 = t, c, a, h
    return seg

  def switch(self, phase: str) -> str:
    """Charge the time since the last switch to the current phase and start ``phase``; returns the old one."""
    if phase not in PHASES:
      raise ValueError(f'unknown phase {phase!r}; phases are {PHASES}')
    seg = self._segment()
    self.tallies[self.current].add(seg)
    self.this_run.add(seg)
    old, self.current = self.current, phase
    return old

  @contextmanager
  def phase(self, name: str) -> Iterator[None]:
    old = self.switch(name)
    try:
      yield
    finally:
      self.switch(old)

  def totals(self) -> dict[str, float]:
    """{'energy_kwh', 'co2e_kg'}: facility energy and carbon of this workdir so far, every run."""
    self.switch(self.current)
    tot = self._total()
    return {'energy_kwh': _kwh(tot) * self.cfg.pue, 'co2e_kg': tot.co2e_g / 1e3}

  def _total(self) -> _Tally:
    tot = _Tally()
    for t in self.tallies.values():
      tot.add(t)
    return tot

  # -- the file -----------------------------------------------------------------------------------
  def _load_previous(self) -> None:
    if not os.path.exists(self.path):
      return
    try:
      with open(self.path) as f:
        prev = json.load(f)
      for name, p in prev['phases'].items():
        if name in self.tallies:
          self.tallies[name] = _Tally(**{k: float(p['raw'][k]) for k in dataclasses.asdict(_Tally())})
      self.runs = list(prev.get('runs', []))
    except (OSError, ValueError, KeyError, TypeError) as e:
      # Never lose what was there: set it aside and start counting again.
      aside = f'{self.path}.unreadable-{int(time.time())}'
      if self.write_enabled:
        os.replace(self.path, aside)
      print(f'footprint: {self.path} could not be read ({e.__class__.__name__}: {e}); moved it to {aside} and '
            f'started a new ledger', flush=True)
      self.tallies = {p: _Tally() for p in PHASES}
      self.runs = []

  def method(self) -> dict[str, Any]:
    m: dict[str, Any] = {}
    if self.accel is not None:
      m['accelerators'] = ('measured: NVML total-energy counters' if self.accel_meter else
                           f'power model: {self.accel.watts:g} W per chip x device-hours ({self.accel.source})')
    m['host_cpu'] = ('measured: RAPL package energy counters (the whole packages)' if self.cpu_meter else
                     f'power model: {self.cpu_spec.watts:.3g} W per busy CPU thread x CPU time '
                     f'({self.cpu_spec.source})')
    if self.hw.hosts > 1:
      m['hosts'] = f'the lead host measured, counted {self.hw.hosts} times'
    m['fallbacks'] = list(self.fallbacks)
    m['not_counted'] = ('host memory (DRAM), storage, network and cooling beyond the PUE; on accelerator hosts the '
                        'CPUs\' idle power')
    return m

  def summary(self, step: int | None = None) -> dict[str, Any]:
    """footprint.json's content (counted up to now)."""
    self.switch(self.current)
    run = dict(self.run_entry, ended=_utc_now(), end_step=step, method=self.method(), **_numbers(self.this_run,
                                                                                                 self.cfg.pue))
    return {
        'version': 1,
        'method': self.method(),
        'devices': ({'kind': self.hw.kind, 'count': self.hw.devices, 'hosts': self.hw.hosts, 'power_model': self.accel_key,
                     'watts_per_chip': self.accel.watts, 'watts_source': self.accel.source}
                    if self.accel is not None else {'kind': 'cpu', 'count': 0, 'hosts': self.hw.hosts}),
        'host_cpu': {'model': self.hw.cpu, 'power_model': self.cpu_key, 'watts_per_thread': self.cpu_spec.watts,
                     'watts_source': self.cpu_spec.source},
        'pue': self.cfg.pue,
        'region': self.cfg.region if not self.cfg.intensity > 0 else 'custom',
        'intensity_g_per_kwh': self.intensity,
        'intensity_source': self.intensity_source + ('' if self.cfg.intensity > 0 else f'; {INTENSITY_SOURCE}'),
        **_numbers(self._total(), self.cfg.pue),
        'phases': {name: {**_numbers(t, self.cfg.pue), 'raw': dataclasses.asdict(t)} for name, t in self.tallies.items()},
        'runs': self.runs + [run],
    }

  def write(self, step: int | None = None) -> dict[str, Any]:
    """Write footprint.json atomically (lead process only); returns its content."""
    content = self.summary(step)
    if self.write_enabled:
      os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
      tmp = self.path + '.tmp'
      with open(tmp, 'w') as f:
        json.dump(content, f, indent=2)
      os.replace(tmp, self.path)
    return content

  def close(self, step: int | None = None) -> str:
    """Write footprint.json; returns the one-line summary the recipes print."""
    s = self.write(step)
    how = 'measured' if (self.cpu_meter or self.accel_meter) else 'power model'
    if self.accel is not None:
      what = f'{s["device_hours"]:.3g} {self.hw.kind} device-hours'
    else:
      what = f'{s["cpu_core_hours"]:.3g} CPU thread-hours'
    return (f'footprint: {s["energy_kwh"]:.4g} kWh (x PUE {self.cfg.pue:g}), {_mass(s["co2e_kg"])} CO2e at '
            f'{self.intensity:g} g/kWh ({self.intensity_source}); {what}, {how}'
            + (f' ({len(self.runs) + 1} runs)' if self.runs else '') + f' -> {self.path}')


def _kwh(t: _Tally) -> float:
  return (t.accelerator_j + t.cpu_j) / _J_PER_KWH


def _numbers(t: _Tally, pue: float) -> dict[str, float]:
  return {'seconds': t.seconds, 'device_hours': t.device_seconds / 3600, 'cpu_core_hours': t.cpu_seconds / 3600,
          'it_energy_kwh': _kwh(t), 'energy_kwh': _kwh(t) * pue, 'co2e_kg': t.co2e_g / 1e3}


def _mass(kg: float) -> str:
  return f'{kg * 1e3:.3g} g' if kg < 1 else f'{kg:.4g} kg' if kg < 1e3 else f'{kg / 1e3:.4g} t'


def _utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


# ----- Projection of a planned run -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Estimate:
  flops: float  # training FLOPs of the run
  flops_per_token: float
  device: str
  chips: int
  peak_flops: float  # per chip
  mfu: float
  seconds: float  # wall time
  device_hours: float
  it_energy_kwh: float
  pue: float
  energy_kwh: float
  intensity: float  # gCO2e/kWh
  co2e_kg: float
  how: str  # where the FLOPs and the MFU came from


def estimate(*, tokens: float, device: str, chips: int, mfu: float, pue: float = 1.0, region: str = 'world',
             intensity: float = 0.0, size: str | None = None, params: float | None = None,
             flops: float | None = None, seq_len: int = 2048, watts: float = 0.0,
             peak_flops: float = 0.0) -> Estimate:
  """Time, energy and carbon of training on ``tokens`` tokens: FLOPs / (chips x peak x MFU).

  The FLOPs come from one of ``size`` (llm.perf's count for that SIZES model at ``seq_len``,
  attention included), ``params`` (6 x parameters per token, Kaplan et al., 2020) or
  ``flops`` (the run's total). Energy = chips x power x wall time (TDP: an upper bound).
  """
  if sum(x is not None for x in (size, params, flops)) != 1:
    raise FootprintError('give exactly one of --size (a model of llm.models.SIZES), --params (parameter count, '
                         'for 6 x N FLOPs per token) or --flops (the run\'s total training FLOPs)')
  if not 0 < mfu <= 1:
    raise FootprintError(f'--mfu={mfu} must be a fraction in (0, 1], e.g. 0.45; or a workdir whose metrics.jsonl '
                         f'has mfu')
  if pue < 1.0:
    raise FootprintError(f'--pue={pue} is below 1 (facility energy over IT energy); use 1.0 for the devices alone')
  if chips < 1 or tokens <= 0:
    raise FootprintError(f'--chips={chips} and --tokens={tokens:g} must be positive')
  key, spec = device_spec(device, watts=watts)
  peak = peak_flops or spec.peak_flops
  if not peak:
    raise FootprintError(f'{key} has no peak FLOP/s in the table; pass --peak_flops=<FLOP/s per chip>')
  if size is not None:
    from llm import perf
    from llm.models import config_for_size
    try:
      cfg = config_for_size(size, 32000, max_seq_len=seq_len)
    except ValueError as e:
      raise FootprintError(str(e)) from None
    per_token = perf.train_flops_per_token(cfg, seq_len)
    how = f'{size} ({cfg.param_count() / 1e9:.2f}B parameters, 32k vocabulary) at sequence {seq_len}: llm.perf FLOPs'
  elif params is not None:
    per_token, how = 6.0 * params, f'6 x {params:.3g} parameters per token'
  else:
    per_token, how = flops / tokens, 'FLOPs given'
  total = per_token * tokens
  seconds = total / (chips * peak * mfu)
  it_kwh = chips * spec.watts * seconds / _J_PER_KWH
  g, _ = grid_intensity(region, intensity)
  return Estimate(total, per_token, key, chips, peak, mfu, seconds, chips * seconds / 3600, it_kwh, pue,
                  it_kwh * pue, g, it_kwh * pue * g / 1e3, how)


def measured_mfu(workdir: str) -> float:
  """Median MFU of a run's metrics.jsonl rows after the first (which includes compilation)."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise FootprintError(f'--mfu={workdir}: {path} does not exist; pass a training workdir or a fraction (e.g. 0.45)')
  try:
    with open(path) as f:
      rows = [json.loads(line) for line in f if line.strip()]
  except ValueError as e:
    raise FootprintError(f'{path} is not one JSON object per line ({e}); pass --mfu=<fraction> instead') from None
  values = [r['mfu'] for r in rows[1:] if 'mfu' in r] or [r['mfu'] for r in rows if 'mfu' in r]
  if not values:
    raise FootprintError(f'{path} has no mfu (CPU runs have none: the peak of a CPU is not known); pass a '
                         f'fraction measured on the target hardware, e.g. --mfu=0.45')
  return float(statistics.median(values))


def format_estimate(e: Estimate, region: str) -> str:
  days = e.seconds / 86400
  return '\n'.join([
      f'training FLOPs   {e.flops:.3g} ({e.flops_per_token:.3g} per token; {e.how})',
      f'hardware         {e.chips} x {e.device} at {e.peak_flops / 1e12:g} TFLOP/s peak, MFU {e.mfu:.1%}',
      f'wall time        {days:.3g} days ({e.device_hours:,.0f} device-hours)',
      f'energy           {e.it_energy_kwh / 1e3:,.4g} MWh at the devices x PUE {e.pue:g} = {e.energy_kwh / 1e3:,.4g} MWh',
      f'carbon           {e.co2e_kg / 1e3:,.4g} t CO2e at {e.intensity:g} g/kWh ({region})',
  ])


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog='python -m llm.footprint', description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='command', required=True)
  est = sub.add_parser('estimate', help='time, energy and carbon of a planned training run')
  est.add_argument('--tokens', type=float, required=True, help='training tokens, e.g. 2e12')
  est.add_argument('--device', required=True, help=f'one of {", ".join(k for k, s in DEVICES.items() if not s.cpu)}')
  est.add_argument('--chips', type=int, required=True)
  est.add_argument('--size', default=None, help='a model of llm.models.SIZES (FLOPs from llm.perf)')
  est.add_argument('--params', type=float, default=None, help='parameter count (6N FLOPs per token)')
  est.add_argument('--flops', type=float, default=None, help='total training FLOPs')
  est.add_argument('--seq_len', type=int, default=2048)
  est.add_argument('--mfu', default='0.45', help='a fraction, or a training workdir whose metrics.jsonl gives it '
                   '(default 0.45: this project\'s measured 1B step on an H200, README)')
  est.add_argument('--region', default='world')
  est.add_argument('--intensity', type=float, default=0.0, help='gCO2e/kWh set by hand (overrides --region)')
  est.add_argument('--pue', type=float, default=1.1)
  est.add_argument('--watts', type=float, default=0.0, help='power per chip set by hand')
  est.add_argument('--peak_flops', type=float, default=0.0, help='peak FLOP/s per chip set by hand')
  est.add_argument('--json', action='store_true', help='print the numbers as JSON')
  sub.add_parser('devices', help='the power model table')
  sub.add_parser('regions', help='the grid carbon-intensity table')
  args = p.parse_args(argv)
  try:
    if args.command == 'devices':
      for k, s in DEVICES.items():
        unit = 'W per busy thread' if s.cpu else 'W per chip'
        peak = f', {s.peak_flops / 1e12:g} TFLOP/s' if s.peak_flops else ''
        print(f'{k:15s} {s.watts:7.3g} {unit}{peak}  ({s.source})')
      return 0
    if args.command == 'regions':
      for k, (name, g, year) in REGIONS.items():
        print(f'{k:6s} {g:5g} gCO2e/kWh  {name} ({year})')
      print(f'source: {INTENSITY_SOURCE}')
      return 0
    try:
      mfu = float(args.mfu)
    except ValueError:
      mfu = measured_mfu(args.mfu)
    e = estimate(tokens=args.tokens, device=args.device, chips=args.chips, mfu=mfu, pue=args.pue, region=args.region,
                 intensity=args.intensity, size=args.size, params=args.params, flops=args.flops, seq_len=args.seq_len,
                 watts=args.watts, peak_flops=args.peak_flops)
    region = 'set by hand' if args.intensity > 0 else grid_intensity(args.region)[1]
    print(json.dumps(dataclasses.asdict(e), indent=2) if args.json else format_estimate(e, region))
  except FootprintError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
