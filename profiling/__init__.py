"""Profiling: device facts (NVML), Nsight Compute runner and parser, roofline, Judge summary."""

from .device import DeviceFacts, DeviceInfo, device_facts, peak_dram_bandwidth, peak_flops_for, peak_flops_table
from .ncu import (
    NVTX_RANGE,
    KernelMetrics,
    KernelTime,
    NcuResult,
    Rule,
    Stall,
    build_kernels,
    kernel_name_regex,
    kernel_times_with_torch_profiler,
    parse_details_csv,
    parse_raw_csv,
    run_ncu,
)
from .profiler import KernelReport, Profile, build_profile, classify_kernel, profile_kernels
from .roofline import (
    Bound,
    Cost,
    classify,
    impossible_speedup,
    measure_copy_bandwidth,
    reference_cost,
    roofline_class,
    speed_of_light_ms,
)
from .summary import judge_summary, profile_dict, profile_table

__all__ = [
    "NVTX_RANGE", "Bound", "Cost", "DeviceFacts", "DeviceInfo", "KernelMetrics", "KernelReport", "KernelTime",
    "NcuResult", "Profile", "Rule", "Stall", "build_kernels", "build_profile", "classify", "classify_kernel",
    "device_facts", "impossible_speedup", "judge_summary", "kernel_name_regex", "kernel_times_with_torch_profiler",
    "measure_copy_bandwidth", "parse_details_csv", "parse_raw_csv", "peak_dram_bandwidth", "peak_flops_for",
    "peak_flops_table", "profile_dict", "profile_kernels", "profile_table", "reference_cost", "roofline_class",
    "run_ncu", "speed_of_light_ms",
]
