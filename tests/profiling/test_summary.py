import json

from rich.console import Console

from kevolve.profiling.ncu import KernelTime, build_kernels, parse_details_csv, parse_raw_csv
from kevolve.profiling.profiler import build_profile
from kevolve.profiling.roofline import Cost
from kevolve.profiling.summary import judge_summary, profile_dict, profile_table

ADD = Cost(flops=2**26, min_bytes=3 * 4 * 2**26, dtype="float32")


def _profile(raw_text, details_text, h100, **kw):
    kernels = build_kernels(parse_raw_csv(raw_text), parse_details_csv(details_text))
    return build_profile(kernels, ADD, h100, note="Nsight Compute", **kw)


def test_summary_briefs_like_an_expert(raw_text, details_text, h100):
    text = judge_summary(_profile(raw_text, details_text, h100))
    lines = text.splitlines()
    assert len(lines) <= 40
    assert "MEMORY-bound" in text and "DRAM at 91 % of peak" in text
    assert "occupancy 82 % achieved / 100 % theoretical" in text
    assert "long_scoreboard 67%" in text
    assert "CPIStall (est. 67 % local)" in text          # ncu's own top advice, with its estimate
    assert "memory-bound at best" in text and "93% of speed of light" in text
    assert lines[-1].startswith("Bottleneck: add") and "DRAM roof" in lines[-1]


def test_summary_flags_rereads(raw_text, details_text, h100):
    profile = _profile(raw_text, details_text, h100)
    profile.cost = Cost(flops=2**26, min_bytes=4 * 2**26, dtype="float32")   # a third of what was moved
    assert "the compulsory bytes" in judge_summary(profile)


def test_latency_diagnosis_small_grid(raw_text, details_text, h100):
    raw = parse_raw_csv(raw_text)
    raw[0].update({"gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed": 10.0,
                   "gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed": 10.0, "Grid Size": "(64, 1, 1)"})
    profile = build_profile(build_kernels(raw, parse_details_csv(details_text)), ADD, h100)
    assert profile.kernels[0].bound.kind == "latency"
    assert "grid of 64 blocks cannot fill 132 SMs" in judge_summary(profile)


def test_json_and_table(raw_text, details_text, h100):
    profile = _profile(raw_text, details_text, h100)
    d = json.loads(json.dumps(profile_dict(profile)))
    assert d["source"] == "ncu" and d["kernels"][0]["bound"]["kind"] == "memory"
    assert d["kernels"][0]["metrics"]["achieved_occupancy_pct"] > 82
    assert d["device"]["compute_capability"] == "9.0" and d["summary"].startswith("Device:")
    console = Console(width=200, record=True)
    console.print(profile_table(profile))
    out = console.export_text()
    assert "add" in out and "memory" in out and "82 %/100 %" in out


def test_fallback_summary(h100):
    profile = build_profile([], ADD, h100, source="torch.profiler",
                            note="Nsight Compute unavailable (permission). Fallback: kernel times from torch.profiler.",
                            ncu_status="permission", kernel_times=[KernelTime("add", 10, 300e-6, 300e-6)])
    text = judge_summary(profile)
    assert "torch.profiler" in text and "add: 10 launches, 300.0 µs mean" in text
    assert "memory-bound at best" in text
    console = Console(width=200, record=True)
    console.print(profile_table(profile))
    assert "no counters" in console.export_text()
    json.dumps(profile_dict(profile))


def test_matmul_summary(h100):
    from .conftest import FIXTURES

    kernels = build_kernels(parse_raw_csv((FIXTURES / "matmul_raw.csv").read_text()),
                            parse_details_csv((FIXTURES / "matmul_details.csv").read_text()))
    n = 4096
    profile = build_profile(kernels, Cost(flops=2 * n**3, min_bytes=3 * n * n * 2, dtype="bfloat16"), h100)
    text = judge_summary(profile)
    assert "COMPUTE-bound: tensor pipe at 79 %" in text
    assert "25 % theoretical (limited by registers, shared memory)" in text
    assert "TheoreticalOccupancy (est. 75 % local)" in text
    assert "compute-bound at best" in text and len(text.splitlines()) <= 40
