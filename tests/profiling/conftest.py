from pathlib import Path

import pytest

from kevolve.profiling.device import DeviceFacts, peak_dram_bandwidth, peak_flops_table

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def raw_text() -> str:
    return (FIXTURES / "raw.csv").read_text()


@pytest.fixture
def details_text() -> str:
    return (FIXTURES / "details.csv").read_text()


@pytest.fixture
def h100() -> DeviceFacts:
    """H100 SXM as NVML reports it (the fixture's device): 132 SMs, 1980 MHz, HBM3 2619 MHz × 5120 bit."""
    return DeviceFacts(
        name="NVIDIA H100 80GB HBM3", index=0, compute_capability=(9, 0), sm_count=132, sm_clock_hz=1.98e9,
        memory_clock_hz=2.619e9, memory_bytes=85_017_493_504, bus_width_bits=5120,
        peak_dram_bytes_per_s=peak_dram_bandwidth(2.619e9, 5120), l2_bytes=52_428_800,
        peak_flops=peak_flops_table((9, 0), 132, 1.98e9))
