"""Parse the real H100 Nsight Compute output (Triton vector add, 2^26 fp32, see fixtures/README.md)."""

import pytest

from kevolve.profiling.ncu import (
    build_kernels,
    kernel_name_regex,
    matches_kernel,
    merge_launches,
    parse_details_csv,
    parse_number,
    parse_raw_csv,
    rank_rules,
    to_base,
)


@pytest.mark.parametrize("text, value", [("65,536", 65536.0), ("402,945.38", 402945.38), ("90.68", 90.68),
                                          ("0", 0.0), ("1e-3", 1e-3), ("no data", None), ("", None),
                                          ("(128, 1, 1)", None), ("PolicySpread", None)])
def test_parse_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("value, unit, base, base_unit", [
    (259.26, "us", 259.26e-6, "s"), (3.04, "Tbyte/s", 3.04e12, "byte/s"), (2.62, "Ghz", 2.62e9, "Hz"),
    (32.77, "Kbyte", 32770.0, "byte"), (1.02, "Kbyte/block", 1020.0, "byte/block"), (9.83, "Mbyte", 9.83e6, "byte"),
    (259264.0, "nsecond", 259.264e-6, "s"), (1.59, "cycle/nsecond", 1.59e9, "Hz"), (90.68, "%", 90.68, "%"),
    (26.0, "register/thread", 26.0, "register/thread"), (5.0, "", 5.0, ""),
])
def test_to_base(value, unit, base, base_unit):
    got, got_unit = to_base(value, unit)
    assert got == pytest.approx(base)
    assert got_unit == base_unit


def test_raw_page_values_in_base_units(raw_text):
    launches = parse_raw_csv(raw_text)
    assert len(launches) == 1
    row = launches[0]
    assert row["Kernel Name"] == "add"
    assert row["gpu__time_duration.sum"] == pytest.approx(259.264e-6)           # "us" → s
    assert row["dram__bytes.sum.per_second"] == pytest.approx(3.039584e12)      # "Tbyte/s" → B/s
    assert row["dram__bytes.avg.per_second"] == pytest.approx(75.989608e9)      # "Gbyte/s" → B/s
    assert row["launch__grid_size"] == 65536.0                                  # "65,536"
    assert row["device__attribute_l2_cache_size"] == 52_428_800.0
    assert row["launch__shared_mem_config_size"] == pytest.approx(32768.0)      # "Kbyte"


def test_details_page_metrics_and_rules(details_text):
    details = parse_details_csv(details_text)
    launch = details["0"]
    assert launch["name"] == "add"
    m = launch["metrics"]
    assert m[("Occupancy", "Achieved Occupancy")] == pytest.approx(82.37)
    assert m[("GPU Speed Of Light Throughput", "DRAM Throughput")] == pytest.approx(90.68)
    assert m[("GPU Speed Of Light Throughput", "Elapsed Cycles")] == 412093.0
    assert m[("GPU Speed Of Light Throughput", "DRAM Frequency")] == pytest.approx(2.62e9)
    assert m[("Memory Workload Analysis", "Memory Throughput")] == pytest.approx(3.04e12)
    assert m[("Memory Workload Analysis", "Local Memory Spilling Request Overhead")] == "no data"
    rules = launch["rules"]
    assert {r.name for r in rules} == {"SOLBottleneck", "CPIStall", "AchievedOccupancy"}
    ranked = rank_rules(rules)
    assert (ranked[0].name, ranked[0].type, ranked[0].speedup_pct) == ("CPIStall", "OPT", pytest.approx(67.11))
    assert (ranked[1].name, ranked[1].speedup_pct) == ("AchievedOccupancy", pytest.approx(17.63))
    assert ranked[-1].type == "INF"


def test_kernel_metrics_from_both_pages(raw_text, details_text):
    (k,) = build_kernels(parse_raw_csv(raw_text), parse_details_csv(details_text))
    assert k.name == "add" and k.block == [128, 1, 1] and k.grid == [65536, 1, 1]
    assert k.achieved_occupancy_pct == pytest.approx(82.37, abs=0.01)
    assert k.theoretical_occupancy_pct == 100.0
    assert k.dram_throughput_pct == pytest.approx(90.68, abs=0.01)
    assert k.sm_throughput_pct == pytest.approx(4.95, abs=0.01)
    assert k.memory_throughput_pct == pytest.approx(90.68, abs=0.01)
    assert k.duration_s == pytest.approx(259.264e-6)
    assert k.l2_hit_pct == pytest.approx(35.23, abs=0.01) and k.l1_hit_pct == 0.0
    assert k.registers_per_thread == 26 and k.shared_mem_per_block_bytes == 0
    assert k.active_threads_per_warp == 32
    assert k.tensor_pipe_pct == 0.0
    # No dram__bytes.sum in this report: derived from throughput × duration, and said so.
    # 2^26 fp32 × (2 reads + 1 write) = 805 MB compulsory; ncu measured ~788 MB (some reads hit L2).
    assert k.dram_bytes == pytest.approx(3.039584e12 * 259.264e-6)
    assert 0.95 < k.dram_bytes / (3 * 4 * 2**26) < 1.0
    assert k.derived
    # Theoretical occupancy is 100 %: nothing limits it, although registers and warps both cap at 16 blocks.
    assert k.block_limits["registers"] == 16 and k.block_limits["shared memory"] == 32
    assert k.occupancy_limiters == []
    # Stall reasons: long scoreboard dominates (176 of 262 cycles, the 67.1 % ncu's rule quotes).
    assert k.stalls[0].reason == "long_scoreboard"
    assert k.stalls[0].fraction == pytest.approx(0.671, abs=0.001)
    assert "selected" not in {s.reason for s in k.stalls}
    assert k.sm_clock_hz == pytest.approx(1.59e9)          # from the details page (raw lacks it)
    assert k.rules[0].name == "CPIStall"


def test_occupancy_limiters_when_theoretical_below_100(raw_text, details_text):
    raw = parse_raw_csv(raw_text)
    raw[0]["sm__maximum_warps_per_active_cycle_pct"] = 50.0
    raw[0]["launch__occupancy_limit_registers"] = 4.0
    (k,) = build_kernels(raw, parse_details_csv(details_text))
    assert k.occupancy_limiters == ["registers"]


def test_details_only_fallback(details_text):
    """A report imported without the raw page still gives the main numbers."""
    (k,) = build_kernels([], parse_details_csv(details_text))
    assert k.name == "add"
    assert k.achieved_occupancy_pct == pytest.approx(82.37)
    assert k.duration_s == pytest.approx(259.26e-6)
    assert k.dram_throughput_pct == pytest.approx(90.68)


def test_merge_launches_keeps_longest(raw_text, details_text):
    raw = parse_raw_csv(raw_text)
    second = dict(raw[0], ID="1")
    second["gpu__time_duration.sum"] = 1e-3
    kernels = build_kernels([raw[0], second], parse_details_csv(details_text))
    assert len(kernels) == 2
    (merged,) = merge_launches(kernels)
    assert merged.id == 1 and merged.duration_s == 1e-3


def test_csv_after_prof_lines(raw_text):
    assert len(parse_raw_csv("==PROF== Disconnected from process 538\n" + raw_text)) == 1
    assert parse_raw_csv("==PROF== No kernels were profiled.\n") == []


@pytest.mark.parametrize("device_name, names, expected", [
    ("add", ["add"], True),
    ("add_kernel", ["add"], False),                        # another Triton kernel
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>(int)", ["add"], False),
    ("matmul_kernel", ["add", "matmul_kernel"], True),
    ("my_kernel(float*, float const*, int)", ["my_kernel"], True),   # demangled CUDA
    ("void ns::my_kernel<float>(float*)", ["my_kernel"], True),
    ("_Z9my_kernelPfPKfi", ["my_kernel"], True),                     # mangled CUDA
    ("other_my_kernel", ["my_kernel"], False),
    ("a.b", ["a.b"], True),                                           # names are escaped, not regex
    ("axb", ["a.b"], False),
])
def test_kernel_name_filter(device_name, names, expected):
    assert matches_kernel(device_name, names) is expected


def test_kernel_name_regex_full_match_semantics():
    """ncu may fully match or search: the regex is anchored so both agree."""
    import re

    pattern = kernel_name_regex(["add", "fused_gelu"])
    assert re.fullmatch(pattern, "add") and re.fullmatch(pattern, "void fused_gelu<float>(float*)")
    assert not re.fullmatch(pattern, "add_kernel") and not re.search(pattern, "xadd")


def test_real_matmul_from_our_runner():
    """Output of run_ncu itself (NVTX filter, --print-units base) for a Triton bf16 matmul on an H100."""
    from kevolve.profiling.roofline import classify

    from .conftest import FIXTURES

    raw = parse_raw_csv((FIXTURES / "matmul_raw.csv").read_text())
    details = parse_details_csv((FIXTURES / "matmul_details.csv").read_text())
    assert details["0"]["name"] == "matmul_kernel"   # the NVTX columns do not shift the others
    (k,) = build_kernels(raw, details)
    assert k.name == "matmul_kernel" and k.block == [256, 1, 1] and k.grid == [1024, 1, 1]
    assert k.duration_s == pytest.approx(249.184e-6)
    assert details["0"]["metrics"][("GPU Speed Of Light Throughput", "Duration")] == pytest.approx(249.184e-6)
    assert k.sm_throughput_pct == pytest.approx(75.82) and k.tensor_pipe_pct == pytest.approx(78.9)
    assert k.dram_bytes == pytest.approx(218_234_112)   # measured (dram__bytes.sum), not derived
    assert not k.derived
    assert k.theoretical_occupancy_pct == 25.0 and k.occupancy_limiters == ["registers", "shared memory"]
    assert k.registers_per_thread == 116 and k.shared_mem_per_block_bytes == 98304
    assert k.branch_uniformity_pct == 100.0
    assert k.stalls[0].reason == "barrier"
    assert [r.name for r in k.rules[:2]] == ["TheoreticalOccupancy", "CPIStall"]
    assert classify(k.duration_s, k.memory_throughput_pct, k.sm_throughput_pct, k.dram_throughput_pct,
                    k.tensor_pipe_pct).kind == "compute"
