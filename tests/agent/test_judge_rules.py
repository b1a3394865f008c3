"""The builtin Judge's rules on real profile dicts (Nsight Compute fixtures of an H100) and the roofline."""

import copy
import functools
import re
from pathlib import Path

import pytest

from kevolve.builtin.mutate import mutate_source
from kevolve.judge import BuiltinJudge, judge_context, rule_verdict
from kevolve.profiling.device import DeviceFacts, peak_dram_bandwidth, peak_flops_table
from kevolve.profiling.ncu import KernelTime, build_kernels, parse_details_csv, parse_raw_csv
from kevolve.profiling.profiler import build_profile
from kevolve.profiling.roofline import Cost
from kevolve.profiling.summary import profile_dict

FIXTURES = Path(__file__).parents[1] / "profiling" / "fixtures"
EXAMPLE = Path(__file__).parents[2] / "examples" / "problems" / "scale_bias_gelu.py"
ADD = Cost(flops=2**26, min_bytes=3 * 4 * 2**26, dtype="float32")
ACCEPTED = {"status": "accepted", "timing": {"speedup_vs_eager": 1.2, "sol_fraction": 0.6}}
KEYS = {"mode", "bottleneck", "change", "strategy"}


@pytest.fixture
def h100() -> DeviceFacts:
    return DeviceFacts(
        name="NVIDIA H100 80GB HBM3", index=0, compute_capability=(9, 0), sm_count=132, sm_clock_hz=1.98e9,
        memory_clock_hz=2.619e9, memory_bytes=85_017_493_504, bus_width_bits=5120,
        peak_dram_bytes_per_s=peak_dram_bandwidth(2.619e9, 5120), l2_bytes=52_428_800,
        peak_flops=peak_flops_table((9, 0), 132, 1.98e9))


def _raw(name: str = "raw.csv") -> list[dict]:
    return parse_raw_csv((FIXTURES / name).read_text())


def _details(name: str = "details.csv"):
    return parse_details_csv((FIXTURES / name).read_text())


def _memory_profile(h100, cost=ADD, raw=None) -> dict:
    return profile_dict(build_profile(build_kernels(raw or _raw(), _details()), cost, h100, note="Nsight Compute"))


def _matmul_profile(h100, dtype: str, tensor_pct: float | None = None) -> dict:
    n = 4096
    cost = Cost(flops=2 * n**3, min_bytes=3 * n * n * (2 if dtype == "bfloat16" else 4), dtype=dtype)
    d = profile_dict(build_profile(build_kernels(_raw("matmul_raw.csv"), _details("matmul_details.csv")), cost, h100))
    if tensor_pct is not None:
        d["kernels"][0]["metrics"]["tensor_pipe_pct"] = tensor_pct
    return d


@functools.cache
def _candidate() -> str:
    """The builtin engine's own seed for the example problem: a Triton kernel with BLOCK and num_warps."""
    from kevolve.builtin import propose_candidates

    return propose_candidates(EXAMPLE)[0].source


def _first_move(verdict: dict) -> tuple[int, int]:
    """(old, new) of the mutation the builtin Coder would try first after this verdict."""
    desc, _ = mutate_source(_candidate(), verdict=verdict)[0]
    old, new = re.search(r" (\d+) -> (\d+) ", desc).groups()
    return int(old), int(new)


def test_near_speed_of_light_says_so(h100):
    d = _memory_profile(h100)
    assert d["sol_fraction"] > 0.9
    v = rule_verdict({"status": "accepted", "timing": {}}, d)       # the profiler's fraction when the harness has none
    assert set(v) == KEYS and v["strategy"] == "near-sol" and "93%" in v["bottleneck"]
    assert "sparingly" in v["change"]
    v = rule_verdict({"status": "accepted", "timing": {"sol_fraction": 0.95}}, None)   # the harness's roofline alone
    assert v["strategy"] == "near-sol" and "95%" in v["bottleneck"]


def test_memory_at_dram_roof_cuts_bytes_and_widens(h100):
    v = rule_verdict(ACCEPTED, _memory_profile(h100))               # the harness says 60%: the counters decide
    assert set(v) == KEYS and v["mode"] == "optimize" and v["strategy"] == "cut-bytes"
    assert "DRAM at 91%" in v["bottleneck"]
    old, new = _first_move(v)
    assert new > old                                                 # wider loads first


def test_memory_rereads_are_named(h100):
    cost = Cost(flops=2**26, min_bytes=4 * 2**26, dtype="float32")  # a third of what the kernel moved
    v = rule_verdict(ACCEPTED, _memory_profile(h100, cost))
    assert v["strategy"] == "cut-bytes" and "compulsory bytes" in v["bottleneck"] and "2.9x" in v["bottleneck"]


def test_memory_several_kernels_fuse(h100):
    d = _memory_profile(h100)
    second = copy.deepcopy(d["kernels"][0])
    second["metrics"]["name"], second["metrics"]["duration_s"] = "mul", 1e-4
    d["kernels"].append(second)
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "fuse" and "2 kernels" in v["bottleneck"]


def test_memory_below_peak_raises_vector_width(h100):
    d = _memory_profile(h100)
    d["kernels"][0]["metrics"].update(dram_throughput_pct=45.0, dram_bytes=ADD.min_bytes)
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "vectorize" and "vector width" in v["change"]
    old, new = _first_move(v)
    assert new > old


def test_latency_small_grid_wants_more_programs(h100):
    raw = _raw()
    raw[0].update({"gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": 10.0,
                   "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed": 10.0, "Grid Size": "(64, 1, 1)"})
    d = _memory_profile(h100, raw=raw)
    assert d["kernels"][0]["bound"]["kind"] == "latency"
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "more-parallelism" and "64 programs" in v["bottleneck"] and "132 SMs" in v["bottleneck"]
    old, new = _first_move(v)
    assert new < old                                                 # smaller blocks: more programs


def test_latency_on_memory_stalls_wants_bigger_tiles(h100):
    raw = _raw()
    raw[0].update({"gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": 10.0,
                   "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed": 10.0})   # a full grid, yet slow
    d = _memory_profile(h100, raw=raw)
    assert d["kernels"][0]["bound"]["kind"] == "latency"
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "bigger-tiles" and "long_scoreboard" in v["bottleneck"]
    old, new = _first_move(v)
    assert new > old


def test_latency_occupancy_limited(h100):
    raw = _raw()
    raw[0].update({"gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": 10.0,
                   "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed": 10.0})
    d = _memory_profile(h100, raw=raw)
    d["kernels"][0]["metrics"].update(theoretical_occupancy_pct=25.0, occupancy_limiters=["registers"])
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "occupancy" and "registers" in v["bottleneck"]


def test_compute_bf16_on_tensor_cores_tiles(h100):
    d = _matmul_profile(h100, "bfloat16")
    assert d["kernels"][0]["bound"]["kind"] == "compute"
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "tiling" and "tensor pipe at 79%" in v["bottleneck"]


def test_compute_bf16_off_tensor_cores_moves_to_them(h100):
    v = rule_verdict(ACCEPTED, _matmul_profile(h100, "bfloat16", tensor_pct=0.0))
    assert v["strategy"] == "tensor-cores" and "tl.dot" in v["change"]


def test_compute_fp32_matmul_keeps_the_library(h100):
    """TF32 is off under fp32: no tensor cores; a hand-written fp32 tl.dot loses to cuBLAS (0.30x on the H100)."""
    d = _matmul_profile(h100, "float32", tensor_pct=0.0)
    v = rule_verdict(ACCEPTED, d, source="acc += tl.dot(a, b)")
    assert v["strategy"] == "library+tail" and "cuBLAS" in v["change"]
    assert rule_verdict(ACCEPTED, d, precision="tf32")["strategy"] == "tensor-cores"   # --precision tf32 allows them


def test_fallback_profile_without_counters(h100):
    times = [KernelTime("mul", 1, 2e-4, 2e-4), KernelTime("add", 1, 2e-4, 2e-4)]
    d = profile_dict(build_profile([], ADD, h100, source="torch.profiler", note="fallback", ncu_status="permission",
                                   kernel_times=times))
    v = rule_verdict(ACCEPTED, d)
    assert v["strategy"] == "fuse" and "2 kernels" in v["bottleneck"]
    d["kernel_times"] = times[:1]
    assert rule_verdict(ACCEPTED, d)["strategy"] == "cut-bytes"


def test_no_profile_and_failures():
    assert rule_verdict({"status": "accepted"}, None)["strategy"] == "tune"
    assert rule_verdict({"status": "accepted"}, {"bound": "memory"})["strategy"] == "cut-bytes"   # older summaries
    v = rule_verdict({"status": "incorrect", "error": "trial 2: max abs error 0.3\nmore"})
    assert set(v) == KEYS and v["mode"] == "fix" and v["bottleneck"] == "incorrect: trial 2: max abs error 0.3"
    assert rule_verdict(None)["mode"] == "fix"


def test_builtin_judge_reads_the_context(h100):
    ctx = judge_context(problem_source="", candidate_source="", evaluation=ACCEPTED,
                        profile=_memory_profile(h100), device_facts={}, backend="triton", history=[])
    v = BuiltinJudge().judge(ctx, "optimize")
    assert set(v) == KEYS and v["strategy"] == "cut-bytes"


def test_archive_niches_read_the_bound_class_of_real_profiles(h100):
    from kevolve.archive import bound_class

    assert bound_class(_memory_profile(h100)) == "memory"
    assert bound_class(_matmul_profile(h100, "bfloat16")) == "compute"
    assert bound_class(None) == "unknown"
