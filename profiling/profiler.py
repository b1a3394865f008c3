"""The entry point `kevolve profile` uses: ncu (or the fallback), roofline, classes, one result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .device import DeviceFacts
from .ncu import KernelMetrics, KernelTime, merge_launches, run_ncu
from .roofline import Bound, Cost, classify, ridge_point, roofline_class, speed_of_light_ms


@dataclass
class KernelReport:
    metrics: KernelMetrics
    bound: Bound


@dataclass
class Profile:
    source: str                     # "ncu" | "torch.profiler" | "none"
    note: str                       # why ncu was not used, or what it did
    ncu_status: str                 # run_ncu's status
    device: DeviceFacts | None
    cost: Cost | None
    sol_ms: float | None            # speed-of-light time of one forward
    problem_class: str              # memory | compute | unknown, from arithmetic intensity
    ridge: float | None             # FLOP/byte where the roofline turns
    kernels: list[KernelReport] = field(default_factory=list)
    kernel_times: list[KernelTime] = field(default_factory=list)  # the fallback's times
    elapsed_s: float = 0.0
    command: list[str] = field(default_factory=list)
    output_tail: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.source != "ncu"

    @property
    def kernel_total_s(self) -> float | None:
        """One forward's kernel time: ncu durations (one launch per kernel), or the fallback's."""
        if self.kernels:
            return sum(k.metrics.duration_s or 0.0 for k in self.kernels) or None
        if self.kernel_times:
            return sum(k.total_s for k in self.kernel_times) or None
        return None

    @property
    def sol_fraction(self) -> float | None:
        """Speed-of-light time / measured kernel time: 1.0 means on the roofline."""
        total = self.kernel_total_s
        return self.sol_ms / 1e3 / total if self.sol_ms and total else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device"] = self.device.to_dict() if self.device else None
        d["cost"] = self.cost.to_dict() if self.cost else None
        d["kernel_total_s"] = self.kernel_total_s
        d["sol_fraction"] = self.sol_fraction
        d["is_fallback"] = self.is_fallback
        return d


def classify_kernel(k: KernelMetrics) -> Bound:
    return classify(k.duration_s, k.memory_throughput_pct, k.sm_throughput_pct, k.dram_throughput_pct,
                    k.tensor_pipe_pct)


def build_profile(kernels: list[KernelMetrics], cost: Cost | None, facts: DeviceFacts | None, *,
                  source: str = "ncu", note: str = "", ncu_status: str = "ok",
                  kernel_times: list[KernelTime] | None = None,
                  copy_bandwidth: float | None = None) -> Profile:
    """Classify parsed kernels against the roofline; usable on saved ncu output too."""
    merged = sorted(merge_launches(kernels), key=lambda k: -(k.duration_s or 0.0))
    return Profile(
        source=source, note=note, ncu_status=ncu_status, device=facts, cost=cost,
        sol_ms=speed_of_light_ms(cost, facts, copy_bandwidth) if cost else None,
        problem_class=roofline_class(cost, facts, copy_bandwidth) if cost else "unknown",
        ridge=ridge_point(facts, cost.dtype, copy_bandwidth) if cost and facts else None,
        kernels=[KernelReport(k, classify_kernel(k)) for k in merged],
        kernel_times=kernel_times or [])


def profile_kernels(launch_argv: Sequence[str], env: dict[str, str] | None, cwd: str | None,
                    kernel_names: Sequence[str], cost: Cost | None, facts: DeviceFacts | None,
                    timeout_s: float = 120.0, *,
                    fallback: Callable[[], list[KernelTime]] | None = None,
                    copy_bandwidth: float | None = None, ncu: str | None = None,
                    keep_csv: str | None = None) -> Profile:
    """Profile the candidate's kernels with Nsight Compute, classify them, and say why not if it
    could not. `launch_argv` runs the candidate (in the worker) with its forward inside the NVTX
    range "kevolve_profile"; `fallback`, when given, returns torch.profiler kernel times from a
    worker (see `kernel_times_with_torch_profiler`) and is called only when ncu fails."""
    result = run_ncu(launch_argv, env, cwd, kernel_names, timeout_s, ncu=ncu, keep_csv=keep_csv)
    if result.ok:
        profile = build_profile(result.kernels, cost, facts, source="ncu",
                                note=f"Nsight Compute, {result.message} in {result.elapsed_s:.1f} s "
                                     "(clocks locked to base, so durations are slower than timed runs)",
                                copy_bandwidth=copy_bandwidth)
    else:
        times: list[KernelTime] = []
        note = f"Nsight Compute unavailable ({result.status}): {result.message}"
        source = "none"
        if fallback is not None:
            try:
                times = fallback()
                source = "torch.profiler"
                note += " Fallback: kernel times from torch.profiler, no hardware counters."
            except Exception as e:  # the fallback runs the candidate again; it may fail too
                note += f" The torch.profiler fallback failed too: {type(e).__name__}: {e}"
        else:
            note += " No fallback was given, so there are no kernel times."
        profile = build_profile([], cost, facts, source=source, note=note, kernel_times=times,
                                copy_bandwidth=copy_bandwidth)
    profile.ncu_status = result.status
    profile.elapsed_s = result.elapsed_s
    profile.command = result.command
    profile.output_tail = result.output_tail
    return profile
