"""GPU timing with CUDA events: warm-up past JIT and autotuning, L2 flushed before every run,
median and spread of many runs. The same function times the candidate (in its worker) and the
eager and torch.compile baselines (in the trusted harness), so the ratios compare like with like.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    reps: int
    synced: bool  # events were taken after a device-wide synchronize (side-stream work)

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative noise of this measurement."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict:
        return dict(asdict(self), spread=self.spread)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def l2_flush_buffer(device: torch.device | str = "cuda") -> torch.Tensor:
    """A buffer twice the L2 size; zeroing it evicts whatever a previous run left in L2 (EVAL.md 15)."""
    props = torch.cuda.get_device_properties(device)
    l2 = getattr(props, "L2_cache_size", 0) or (50 << 20)
    return torch.empty(2 * l2 // 4, dtype=torch.int32, device=device)


_SLEEP_CYCLES_PER_MS: list[float] = []


def _sleep_cycles_per_ms() -> float:
    """Calibrate torch.cuda._sleep once: how many cycles make a millisecond on this GPU."""
    if not _SLEEP_CYCLES_PER_MS:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(1000)
        start.record()
        torch.cuda._sleep(2_000_000)
        end.record()
        torch.cuda.synchronize()
        _SLEEP_CYCLES_PER_MS.append(2_000_000 / max(start.elapsed_time(end), 1e-3))
    return _SLEEP_CYCLES_PER_MS[0]


def time_cuda(fn, *, flush: torch.Tensor, warmup_ms: float = 30.0, budget_ms: float = 400.0,
              min_reps: int = 10, max_reps: int = 200, sync_all: bool = False) -> Timing:
    """Time `fn()` on the current stream.

    Before each run the GPU is given a short sleep that outlasts the host's enqueueing of the run,
    so the events measure the GPU's work and not the launch latency of Python (Triton's launcher
    costs tens of µs): the same rule for candidate, eager and torch.compile.
    With `sync_all` the end event is recorded after a device-wide synchronize, so work a callable
    left on other streams counts (EVAL.md items 5 and 6). That adds the host's round trip (the
    synchronize returning, the end event's launch) to every run; it is measured on an empty call
    the same way and taken off, so a library that forks onto its own streams and joins them
    (cuDNN's convolutions, seen on an H200) is not charged for it against eager's unsynced time.
    """
    # Warm-up: the first calls compile and autotune; keep calling until warmup_ms has passed.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end), 1e-3)
    host = time.perf_counter()
    for _ in range(max(3, min(100, int(warmup_ms / estimate)))):
        fn()
    host_ms = (time.perf_counter() - host) * 1e3  # an upper bound on enqueue time per call, times calls
    torch.cuda.synchronize()
    calls = max(3, min(100, int(warmup_ms / estimate)))
    sleep_cycles = int(_sleep_cycles_per_ms() * min(2.0, 2 * host_ms / calls + 0.02))

    reps = int(max(min_reps, min(max_reps, budget_ms / estimate)))
    samples = _timed_runs(fn, flush, sleep_cycles, reps, sync_all)
    if sync_all:
        round_trip = statistics.median(_timed_runs(lambda: None, flush, sleep_cycles, 50, True))
        samples = [max(0.0, t - round_trip) for t in samples]
    return Timing(statistics.median(samples), _quantile(samples, 0.1), _quantile(samples, 0.9), reps, sync_all)


def _timed_runs(fn, flush: torch.Tensor, sleep_cycles: int, reps: int, sync_all: bool) -> list[float]:
    """Milliseconds of each of `reps` runs, each after an L2 flush and a sleep that hides the launch."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        flush.zero_()
        torch.cuda._sleep(sleep_cycles)
        starts[i].record()
        fn()
        if sync_all:
            torch.cuda.synchronize()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]
