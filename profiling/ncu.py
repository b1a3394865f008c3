"""Nsight Compute on the candidate's own kernels: build the command, run it, parse its CSV.

One ncu run writes a report; two imports of it (`--page raw` and `--page details`, both with
`--print-units base`) give the metrics and ncu's rule advice. The parser still scales units itself
(the real output has "us", "Ghz", "Tbyte/s" and thousands separators when base units are off).
Where ncu cannot run (missing, counters refused, timeout) `kernel_times_with_torch_profiler`
gives kernel times instead, and the result says it is a fallback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NVTX_RANGE = "kevolve_profile"

# Few sections, chosen for what the Judge needs; the full set takes minutes per kernel.
SECTIONS = ["SpeedOfLight", "Occupancy", "LaunchStats", "WarpStateStats"]
# Metrics the sections above do not collect (or not on every architecture), all cheap counters
# except branch uniformity, which needs SASS patching but is one extra pass.
EXTRA_METRICS = [
    "gpu__time_duration.sum",
    "dram__bytes.sum", "dram__bytes_read.sum", "dram__bytes_write.sum", "dram__bytes.sum.per_second",
    "lts__t_sector_hit_rate.pct", "l1tex__t_sector_hit_rate.pct",
    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
    "smsp__sass_average_branch_targets_threads_uniform.pct",
    "smsp__thread_inst_executed_per_inst_executed.ratio",
]

INSTALL_HINT = (
    "Nsight Compute (`ncu`) was not found on PATH. Install it with the CUDA toolkit "
    "(`apt-get install cuda-nsight-compute-12-8` or the standalone installer from "
    "https://developer.nvidia.com/nsight-compute) and put its folder on PATH "
    "(often /usr/local/cuda/bin or /opt/nvidia/nsight-compute/<version>)."
)
PERMISSION_HINT = (
    "ncu was refused access to the GPU performance counters (ERR_NVGPUCTRPERM). Run the profile "
    "as root (sudo), or allow all users: put `options nvidia NVreg_RestrictProfilingToAdminUsers=0` "
    "in /etc/modprobe.d/nvidia-profiler.conf and reload the driver or reboot; in a container, "
    "start it with --cap-add=SYS_ADMIN. See https://developer.nvidia.com/ERR_NVGPUCTRPERM."
)
DEFAULT_NCU_LOCATIONS = ["/usr/local/cuda/bin/ncu", "/opt/nvidia/nsight-compute/ncu"]


# -- kernel-name filter ------------------------------------------------------------------------

def kernel_name_regex(names: Sequence[str]) -> str:
    """One regex matching any of `names` as a whole identifier inside the kernel's name.

    Triton kernels keep their @triton.jit name ("add_kernel"); CUDA __global__ names may appear
    demangled with scope/template/arguments ("ns::k<float>(float*)"), so the name must be bounded
    by non-identifier characters, not equal. Written to work whether ncu searches or fully matches,
    and without look-behind (not every regex engine has it)."""
    alternatives = "|".join(re.escape(n) for n in sorted(set(names)))
    return rf"^(.*[^A-Za-z0-9_])?({alternatives})([^A-Za-z0-9_].*)?$"


def matches_kernel(device_name: str, names: Sequence[str]) -> bool:
    """The same filter in Python, plus the Itanium-mangled form (_Z6kernelPf) for CUDA names."""
    if re.search(kernel_name_regex(names), device_name):
        return True
    return any(f"{len(n)}{n}" in device_name for n in names)


# -- unit handling -----------------------------------------------------------------------------

_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 1024.0, "Mi": 1024.0**2, "Gi": 1024.0**3, "Ti": 1024.0**4,
           "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIME = {"s": 1.0, "second": 1.0, "ms": 1e-3, "msecond": 1e-3, "us": 1e-6, "usecond": 1e-6,
         "ns": 1e-9, "nsecond": 1e-9}


def _scale_unit(unit: str) -> tuple[float, str]:
    """Factor to base units and the base unit for one unit word (no '/')."""
    u = unit.strip()
    if u in _TIME:
        return _TIME[u], "s"
    for base in ("byte", "hz", "Hz", "bit"):
        if u.endswith(base):
            prefix = u[: -len(base)]
            if prefix in _PREFIX:
                return _PREFIX[prefix], "Hz" if base.lower() == "hz" else base
    return 1.0, u


def to_base(value: float, unit: str) -> tuple[float, str]:
    """Scale `value` in ncu's `unit` ("Tbyte/s", "Ghz", "us", "Kbyte/block", "cycle/nsecond")
    to bytes, seconds, Hz and plain counts."""
    if not unit:
        return value, ""
    num, _, den = unit.partition("/")
    f_num, u_num = _scale_unit(num)
    value *= f_num
    if den:
        f_den, u_den = _scale_unit(den)
        value /= f_den
        if u_num == "cycle" and u_den == "s":
            return value, "Hz"
        return value, f"{u_num}/{u_den}"
    return value, u_num


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_number(text: str) -> float | None:
    """ncu numbers: '65,536', '402,945.38', '90.68', 'no data', 'n/a' → float or None."""
    t = text.strip().replace(",", "")
    return float(t) if _NUMBER.match(t) else None


# -- parsed results ----------------------------------------------------------------------------

@dataclass
class Rule:
    """One piece of ncu's own advice (a rule result from the details page)."""
    name: str
    type: str                 # OPT (optimization), WRN, INF
    section: str
    description: str
    speedup_type: str = ""    # local / global
    speedup_pct: float | None = None


@dataclass
class Stall:
    reason: str
    cycles_per_issue: float   # warp cycles spent in this state per issued instruction
    fraction: float           # of all cycles between two issued instructions
    meaning: str = ""


@dataclass
class KernelMetrics:
    """One profiled launch of one kernel, in base units (s, bytes, bytes/s, Hz, %)."""
    id: int
    name: str
    block: list[int] = field(default_factory=list)
    grid: list[int] = field(default_factory=list)
    duration_s: float | None = None
    sm_throughput_pct: float | None = None        # compute (SM) speed of light
    memory_throughput_pct: float | None = None    # memory speed of light (max of DRAM, L2, L1)
    dram_throughput_pct: float | None = None
    dram_bytes: float | None = None
    dram_bytes_per_s: float | None = None
    l1_hit_pct: float | None = None
    l2_hit_pct: float | None = None
    achieved_occupancy_pct: float | None = None
    theoretical_occupancy_pct: float | None = None
    block_limits: dict[str, float] = field(default_factory=dict)  # blocks/SM allowed by each resource
    occupancy_limiters: list[str] = field(default_factory=list)   # the resources setting the limit
    registers_per_thread: float | None = None
    shared_mem_per_block_bytes: float | None = None
    tensor_pipe_pct: float | None = None
    branch_uniformity_pct: float | None = None
    active_threads_per_warp: float | None = None
    warp_cycles_per_issue: float | None = None
    stalls: list[Stall] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)  # which fields were derived, not measured
    sm_clock_hz: float | None = None
    dram_clock_hz: float | None = None


# Metric names in the raw page, in order of preference.
_RAW = {
    "duration_s": ["gpu__time_duration.sum", "gpu__time_duration.avg"],
    "sm_throughput_pct": ["sm__throughput.avg.pct_of_peak_sustained_elapsed"],
    "memory_throughput_pct": ["gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"],
    "dram_throughput_pct": ["gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed",
                            "dram__throughput.avg.pct_of_peak_sustained_elapsed"],
    "dram_bytes": ["dram__bytes.sum"],
    "dram_bytes_per_s": ["dram__bytes.sum.per_second"],
    "l1_hit_pct": ["l1tex__t_sector_hit_rate.pct"],
    "l2_hit_pct": ["lts__t_sector_hit_rate.pct"],
    "achieved_occupancy_pct": ["sm__warps_active.avg.pct_of_peak_sustained_active"],
    "theoretical_occupancy_pct": ["sm__maximum_warps_per_active_cycle_pct"],
    "registers_per_thread": ["launch__registers_per_thread"],
    "tensor_pipe_pct": ["sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active",
                        "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed",
                        "sm__inst_executed_pipe_tensor.avg.pct_of_peak_sustained_active"],
    "branch_uniformity_pct": ["smsp__sass_average_branch_targets_threads_uniform.pct"],
    "active_threads_per_warp": ["smsp__thread_inst_executed_per_inst_executed.ratio"],
    "warp_cycles_per_issue": ["smsp__average_warp_latency_per_inst_issued.ratio"],
    "sm_clock_hz": ["smsp__cycles_elapsed.avg.per_second", "sm__cycles_elapsed.avg.per_second"],
    "dram_clock_hz": ["dram__cycles_elapsed.avg.per_second"],
}
# The same facts on the details page, (section, metric), when the raw page lacks them.
_DETAILS = {
    "duration_s": ("GPU Speed Of Light Throughput", "Duration"),
    "sm_throughput_pct": ("GPU Speed Of Light Throughput", "Compute (SM) Throughput"),
    "memory_throughput_pct": ("GPU Speed Of Light Throughput", "Memory Throughput"),
    "dram_throughput_pct": ("GPU Speed Of Light Throughput", "DRAM Throughput"),
    "l1_hit_pct": ("Memory Workload Analysis", "L1/TEX Hit Rate"),
    "l2_hit_pct": ("Memory Workload Analysis", "L2 Hit Rate"),
    "achieved_occupancy_pct": ("Occupancy", "Achieved Occupancy"),
    "theoretical_occupancy_pct": ("Occupancy", "Theoretical Occupancy"),
    "registers_per_thread": ("Launch Statistics", "Registers Per Thread"),
    "active_threads_per_warp": ("Warp State Statistics", "Avg. Active Threads Per Warp"),
    "warp_cycles_per_issue": ("Warp State Statistics", "Warp Cycles Per Issued Instruction"),
    "sm_clock_hz": ("GPU Speed Of Light Throughput", "SM Frequency"),
    "dram_clock_hz": ("GPU Speed Of Light Throughput", "DRAM Frequency"),
}
_LIMITS = {"registers": "launch__occupancy_limit_registers", "shared memory": "launch__occupancy_limit_shared_mem",
           "warps": "launch__occupancy_limit_warps", "blocks": "launch__occupancy_limit_blocks",
           "barriers": "launch__occupancy_limit_barriers"}
_STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
STALL_MEANING = {
    "long_scoreboard": "waiting for global/local memory (L1TEX) data",
    "short_scoreboard": "waiting for shared memory or special-function results (MIO)",
    "mio_throttle": "MIO queue full: too many shared-memory/special instructions",
    "lg_throttle": "LSU queue full: too many global-memory instructions (vectorize loads)",
    "math_pipe_throttle": "a math pipe is saturated",
    "barrier": "waiting at a block barrier (__syncthreads)",
    "membar": "waiting on a memory fence",
    "wait": "fixed-latency dependency between instructions",
    "drain": "stores draining at warp exit",
    "not_selected": "eligible but another warp was picked (plenty of parallelism)",
    "no_instruction": "instruction cache miss or branch target fetch",
    "branch_resolving": "waiting for a branch target to resolve",
    "dispatch_stall": "dispatch stall",
    "gmma": "waiting for warpgroup MMA (wgmma) to finish",
    "tex_throttle": "texture queue full",
    "imc_miss": "immediate constant cache miss",
    "sleeping": "warp sleeping",
    "misc": "miscellaneous",
}


def _read_csv(text: str) -> list[list[str]]:
    # ncu may print "==PROF==" lines before the CSV; start at the header.
    start = text.find('"ID"')
    return list(csv.reader(io.StringIO(text[start:] if start >= 0 else ""))) if start >= 0 else []


def _dims(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text.replace(",", " "))]


def parse_raw_csv(text: str) -> list[dict[str, Any]]:
    """`ncu --csv --page raw`: header row, units row, one row per profiled launch.

    Returns one dict per launch: identity columns as strings, metrics as base-unit floats
    (non-numeric metric values stay strings)."""
    rows = _read_csv(text)
    if len(rows) < 2:
        return []
    names, units = rows[0], rows[1]
    launches = []
    for row in rows[2:]:
        if len(row) != len(names):
            continue
        entry: dict[str, Any] = {}
        for name, unit, value in zip(names, units, row):
            number = parse_number(value)
            if number is None or name in ("ID", "Kernel Name", "Block Size", "Grid Size", "Device", "CC"):
                entry[name] = value
            else:
                entry[name] = to_base(number, unit)[0]
        launches.append(entry)
    return launches


def parse_details_csv(text: str) -> dict[str, dict[str, Any]]:
    """`ncu --csv --page details`: per launch ID, {"name", "metrics": {(section, metric): value},
    "rules": [Rule]} with values in base units."""
    rows = _read_csv(text)
    if not rows:
        return {}
    header = rows[0]
    col = {h: i for i, h in enumerate(header)}
    out: dict[str, dict[str, Any]] = {}
    for row in rows[1:]:
        row = row + [""] * (len(header) - len(row))  # metric rows omit the trailing rule columns
        get = lambda h, row=row: row[col[h]] if h in col else ""
        launch = out.setdefault(get("ID"), {"name": get("Kernel Name"), "metrics": {}, "rules": []})
        if get("Rule Name"):
            launch["rules"].append(Rule(
                name=get("Rule Name"), type=get("Rule Type"), section=get("Section Name"),
                description=get("Rule Description"), speedup_type=get("Estimated Speedup Type"),
                speedup_pct=parse_number(get("Estimated Speedup"))))
        elif get("Metric Name"):
            number = parse_number(get("Metric Value"))
            value = to_base(number, get("Metric Unit"))[0] if number is not None else get("Metric Value")
            launch["metrics"][(get("Section Name"), get("Metric Name"))] = value
    return out


def rank_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Optimization advice with the largest estimated speedup first, then warnings, then notes."""
    order = {"OPT": 0, "WRN": 1, "INF": 2}
    return sorted(rules, key=lambda r: (order.get(r.type, 3), -(r.speedup_pct or 0.0)))


def build_kernels(raw: list[dict[str, Any]], details: dict[str, dict[str, Any]],
                  top_stalls: int = 4) -> list[KernelMetrics]:
    """Merge the two pages into one KernelMetrics per profiled launch."""
    ids = [str(r.get("ID")) for r in raw] or list(details)
    raw_by_id = {str(r.get("ID")): r for r in raw}
    kernels = []
    for launch_id in ids:
        r = raw_by_id.get(launch_id, {})
        d = details.get(launch_id, {"name": "", "metrics": {}, "rules": []})
        k = KernelMetrics(id=int(launch_id) if launch_id.isdigit() else len(kernels),
                          name=r.get("Kernel Name") or d["name"],
                          block=_dims(r.get("Block Size", "")), grid=_dims(r.get("Grid Size", "")))
        for attr, names in _RAW.items():
            value = next((r[n] for n in names if isinstance(r.get(n), float)), None)
            if value is None and attr in _DETAILS and isinstance(d["metrics"].get(_DETAILS[attr]), float):
                value = d["metrics"][_DETAILS[attr]]
            setattr(k, attr, value)
        static = r.get("launch__shared_mem_per_block_static")
        dynamic = r.get("launch__shared_mem_per_block_dynamic")
        if isinstance(static, float) or isinstance(dynamic, float):
            k.shared_mem_per_block_bytes = (static or 0.0) + (dynamic or 0.0)
        if k.dram_bytes is None and k.dram_bytes_per_s is not None and k.duration_s:
            k.dram_bytes = k.dram_bytes_per_s * k.duration_s
            k.derived.append("dram_bytes = dram throughput × duration")
        if k.dram_bytes_per_s is None and k.dram_bytes is not None and k.duration_s:
            k.dram_bytes_per_s = k.dram_bytes / k.duration_s
            k.derived.append("dram_bytes_per_s = dram bytes / duration")
        k.block_limits = {label: r[m] for label, m in _LIMITS.items() if isinstance(r.get(m), float)}
        if k.block_limits and (k.theoretical_occupancy_pct or 0.0) < 99.9:  # at 100 % nothing limits
            lowest = min(k.block_limits.values())
            k.occupancy_limiters = [label for label, v in k.block_limits.items() if v == lowest]
        total = k.warp_cycles_per_issue
        stalls = []
        for name, value in r.items():
            m = _STALL.match(name)
            if m and isinstance(value, float) and m.group(1) != "selected" and value > 0:
                stalls.append(Stall(m.group(1), value, value / total if total else 0.0,
                                    STALL_MEANING.get(m.group(1), "")))
        k.stalls = sorted(stalls, key=lambda s: -s.cycles_per_issue)[:top_stalls]
        k.rules = rank_rules(d["rules"])
        kernels.append(k)
    return kernels


def merge_launches(kernels: list[KernelMetrics]) -> list[KernelMetrics]:
    """One entry per kernel name: the launch that took longest stands for its kernel (the
    profiled range may run a forward several times; the longest launch is the one that matters)."""
    best: dict[str, KernelMetrics] = {}
    for k in kernels:
        if k.name not in best or (k.duration_s or 0.0) > (best[k.name].duration_s or 0.0):
            best[k.name] = k
    return list(best.values())


# -- running ncu -------------------------------------------------------------------------------

@dataclass
class NcuResult:
    status: str               # ok | missing | permission | timeout | no_kernels | error
    message: str
    command: list[str]
    kernels: list[KernelMetrics] = field(default_factory=list)
    elapsed_s: float = 0.0
    output_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_ncu(path: str | None = None) -> str | None:
    found = shutil.which("ncu", path=path if path is not None else os.environ.get("PATH", ""))
    if found:
        return found
    return next((p for p in DEFAULT_NCU_LOCATIONS if os.access(p, os.X_OK)), None)


def ncu_command(ncu: str, launch_argv: Sequence[str], kernel_names: Sequence[str], report: str,
                sections: Sequence[str] = SECTIONS, metrics: Sequence[str] = EXTRA_METRICS,
                nvtx_range: str | None = NVTX_RANGE, launch_count: int = 16) -> list[str]:
    """The profiling command: only the named kernels, only inside the NVTX range."""
    cmd = [ncu, "--target-processes", "all", "--force-overwrite", "--export", report]
    if nvtx_range:
        # "name/" = a push/pop range called `name` (the worker uses torch.cuda.nvtx.range_push).
        cmd += ["--nvtx", "--nvtx-include", f"{nvtx_range}/"]
    if kernel_names:
        cmd += ["--kernel-name", f"regex:{kernel_name_regex(kernel_names)}"]
    cmd += ["--launch-count", str(launch_count)]
    for s in sections:
        cmd += ["--section", s]
    if metrics:
        cmd += ["--metrics", ",".join(metrics)]
    return cmd + list(launch_argv)


def import_commands(ncu: str, report: str) -> dict[str, list[str]]:
    return {page: [ncu, "--import", report, "--csv", "--page", page, "--print-units", "base"]
            for page in ("raw", "details")}


def diagnose(output: str, returncode: int) -> tuple[str, str] | None:
    """(status, explanation) for the failures we recognise in ncu's output, else None."""
    if "ERR_NVGPUCTRPERM" in output:
        return "permission", PERMISSION_HINT
    if "No kernels were profiled" in output:
        return "no_kernels", ("ncu profiled no kernel: none of the candidate's kernels "
                              "ran inside the NVTX range 'kevolve_profile', or their names did not match.")
    if returncode != 0:
        errors = [line for line in output.splitlines() if "==ERROR==" in line]
        return "error", "ncu failed: " + ("; ".join(errors[:3]) or f"exit status {returncode}")
    return None


def _run(cmd: list[str], env: dict[str, str] | None, cwd: str | None, timeout_s: float) -> tuple[int, str]:
    """Run in its own process group so a timeout kills ncu and the program it launched."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout_s, output=out) from None


def run_ncu(launch_argv: Sequence[str], env: dict[str, str] | None, cwd: str | None,
            kernel_names: Sequence[str], timeout_s: float = 120.0, ncu: str | None = None,
            sections: Sequence[str] = SECTIONS, metrics: Sequence[str] = EXTRA_METRICS,
            nvtx_range: str | None = NVTX_RANGE, launch_count: int = 16,
            keep_csv: str | None = None) -> NcuResult:
    """Profile `launch_argv` (a command that runs the candidate inside the NVTX range) with ncu.

    Never raises for the expected failures: the result's status and message say what went wrong
    and how to fix it. `keep_csv`: a folder to save the raw and details pages in (raw.csv, details.csv)."""
    started = time.monotonic()
    ncu = ncu or find_ncu((env or os.environ).get("PATH", ""))
    if ncu is None:
        return NcuResult("missing", INSTALL_HINT, [])
    with tempfile.TemporaryDirectory(prefix="kevolve-ncu-") as tmp:
        report = str(Path(tmp) / "profile")
        cmd = ncu_command(ncu, launch_argv, kernel_names, report, sections, metrics, nvtx_range, launch_count)
        try:
            code, out = _run(cmd, env, cwd, timeout_s)
        except subprocess.TimeoutExpired as e:
            return NcuResult("timeout", f"ncu did not finish within {timeout_s:.0f} s; the candidate may be "
                             "too slow to replay, or hang under the profiler.", cmd,
                             elapsed_s=time.monotonic() - started, output_tail=(e.output or "")[-3000:])
        except OSError as e:
            return NcuResult("missing", f"{INSTALL_HINT} ({e})", cmd)
        problem = diagnose(out, code)
        if problem is None and not Path(report + ".ncu-rep").exists():
            problem = ("error", "ncu wrote no report")
        if problem:
            return NcuResult(problem[0], problem[1], cmd, elapsed_s=time.monotonic() - started,
                             output_tail=out[-3000:])
        pages = {}
        for page, import_cmd in import_commands(ncu, report + ".ncu-rep").items():
            try:
                code, pages[page] = _run(import_cmd, env, cwd, max(30.0, timeout_s / 4))
            except subprocess.TimeoutExpired:
                return NcuResult("timeout", "reading the ncu report timed out", cmd,
                                 elapsed_s=time.monotonic() - started)
        if keep_csv:
            Path(keep_csv).mkdir(parents=True, exist_ok=True)
            for page, text in pages.items():
                (Path(keep_csv) / f"{page}.csv").write_text(text)
        kernels = build_kernels(parse_raw_csv(pages["raw"]), parse_details_csv(pages["details"]))
        kernels = [k for k in kernels if not kernel_names or matches_kernel(k.name, kernel_names)]
        status = "ok" if kernels else "no_kernels"
        message = (f"profiled {len(kernels)} launch(es)" if kernels
                   else "the report holds none of the candidate's kernels")
        return NcuResult(status, message, cmd, kernels, time.monotonic() - started, out[-3000:])


# -- the fallback: kernel times from torch.profiler ---------------------------------------------

@dataclass
class KernelTime:
    name: str
    calls: int
    total_s: float
    mean_s: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelTime:
        return cls(str(d["name"]), int(d["calls"]), float(d["total_s"]), float(d["mean_s"]))


def kernel_times_from_trace(events: Iterable[dict[str, Any]], kernel_names: Sequence[str],
                            repeats: int = 1) -> list[KernelTime]:
    """Aggregate a Chrome trace's kernel events (durations in µs) by kernel, the candidate's only.
    `total_s` is per repeat, so it compares with one forward's time."""
    acc: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "kernel":
            continue
        name = str(e.get("name", ""))
        if kernel_names and not matches_kernel(name, kernel_names):
            continue
        acc.setdefault(name, []).append(float(e.get("dur", 0.0)) * 1e-6)
    repeats = max(1, repeats)
    return sorted((KernelTime(n, len(d), sum(d) / repeats, sum(d) / len(d)) for n, d in acc.items()),
                  key=lambda k: -k.total_s)


def kernel_times_with_torch_profiler(fn: Callable[[], Any], kernel_names: Sequence[str],
                                     repeats: int = 10) -> list[KernelTime]:
    """Run `fn` `repeats` times under torch.profiler (CUDA activity) and return the device time of
    the candidate's kernels. For use inside the worker process, after warm-up."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
    with tempfile.TemporaryDirectory(prefix="kevolve-trace-") as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text()).get("traceEvents", [])
    return kernel_times_from_trace(events, kernel_names, repeats)
