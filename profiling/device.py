"""Device facts from NVML: what the roofline needs to know about the GPU.

Peak DRAM bandwidth comes from the memory clock and bus width NVML reports (2 transfers a clock,
bus width in bits / 8 bytes). Peak FLOP/s are computed as (dense FLOP per clock per SM for the
architecture) × SM count × max SM clock rather than copied from data sheets, so a cut-down or
differently clocked part (H100 PCIe vs SXM, H200, A10 vs A40) gets its own number. Using the max
boost clock gives an upper bound (vendors quote tensor peaks at a slightly lower clock): a
speed-of-light time computed from it is never too slow, which is the safe side for flagging
impossible speedups.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Dense FLOP per clock per SM, by compute capability (major, minor). FMA counts as 2 FLOP.
# "cuda" keys run on the CUDA cores, "tensor" keys on the tensor cores (dense, no sparsity).
# Sources: NVIDIA architecture whitepapers (V100, T4, A100, GA102, AD102, H100); e.g. H100:
# 128 FP32 lanes/SM → 256; 4 tensor cores × 512 FP16 FMA → 4096; A100: 64 FP32 lanes → 128.
_PER_SM_CLOCK: dict[tuple[int, int], dict[str, float]] = {
    (7, 0): {"fp64": 64, "fp32": 128, "fp16_cuda": 256, "fp16_tensor": 1024},
    (7, 5): {"fp64": 4, "fp32": 128, "fp16_cuda": 256, "fp16_tensor": 1024},
    (8, 0): {"fp64": 64, "fp64_tensor": 128, "fp32": 128, "fp16_cuda": 512, "tf32_tensor": 1024,
             "fp16_tensor": 2048, "bf16_tensor": 2048},
    (8, 6): {"fp64": 4, "fp32": 256, "fp16_cuda": 256, "tf32_tensor": 512, "fp16_tensor": 1024,
             "bf16_tensor": 1024},
    (8, 7): {"fp64": 4, "fp32": 256, "fp16_cuda": 256, "tf32_tensor": 512, "fp16_tensor": 1024,
             "bf16_tensor": 1024},
    (8, 9): {"fp64": 4, "fp32": 256, "fp16_cuda": 256, "tf32_tensor": 512, "fp16_tensor": 1024,
             "bf16_tensor": 1024, "fp8_tensor": 2048},
    (9, 0): {"fp64": 128, "fp64_tensor": 256, "fp32": 256, "fp16_cuda": 512, "tf32_tensor": 2048,
             "fp16_tensor": 4096, "bf16_tensor": 4096, "fp8_tensor": 8192},
    # Blackwell B200/GB200, approximate (whitepaper dense figures / 148 SMs / boost clock).
    (10, 0): {"fp64": 128, "fp64_tensor": 256, "fp32": 256, "fp16_cuda": 512, "tf32_tensor": 4096,
              "fp16_tensor": 8192, "bf16_tensor": 8192, "fp8_tensor": 16384},
}

# CUDA cores per SM, to turn NVML's core count into an SM count when torch cannot tell us.
_FP32_LANES_PER_SM = {(7, 0): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128, (8, 7): 128, (8, 9): 128,
                      (9, 0): 128, (10, 0): 128}


@dataclass
class DeviceFacts:
    name: str
    index: int
    compute_capability: tuple[int, int]
    sm_count: int | None
    sm_clock_hz: float | None          # max (boost) SM clock
    memory_clock_hz: float | None      # max memory clock as NVML reports it
    memory_bytes: int | None
    bus_width_bits: int | None
    peak_dram_bytes_per_s: float | None  # 2 × memory clock × bus width / 8
    l2_bytes: int | None = None
    peak_flops: dict[str, float] = field(default_factory=dict)  # FLOP/s by key of _PER_SM_CLOCK
    notes: list[str] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return architecture_name(self.compute_capability)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute_capability"] = f"{self.compute_capability[0]}.{self.compute_capability[1]}"
        d["arch"] = self.arch
        return d


@dataclass
class DeviceInfo:
    """What `device_facts` returns: facts, or None and a note saying why there are none."""
    facts: DeviceFacts | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"facts": self.facts.to_dict() if self.facts else None, "note": self.note}


def architecture_name(cc: tuple[int, int]) -> str:
    if cc == (8, 9):
        return "Ada"
    return {7: "Volta/Turing", 8: "Ampere", 9: "Hopper", 10: "Blackwell", 12: "Blackwell"}.get(cc[0], "unknown")


def peak_dram_bandwidth(memory_clock_hz: float, bus_width_bits: int) -> float:
    """Bytes/s: DDR-style memories move data on both clock edges."""
    return 2.0 * memory_clock_hz * bus_width_bits / 8.0


def peak_flops_table(cc: tuple[int, int], sm_count: int, sm_clock_hz: float) -> dict[str, float]:
    """Dense peak FLOP/s per dtype/unit for this architecture, scaled by SMs and clock."""
    per_sm = _PER_SM_CLOCK.get(cc)
    if per_sm is None:  # an unknown minor version: borrow the closest known one of the same major
        same_major = sorted(k for k in _PER_SM_CLOCK if k[0] == cc[0])
        per_sm = _PER_SM_CLOCK[same_major[-1]] if same_major else {}
    return {k: v * sm_count * sm_clock_hz for k, v in per_sm.items()}


def peak_flops_for(facts: DeviceFacts, dtype: str, allow_tf32: bool = False) -> float | None:
    """The best FLOP/s a kernel computing in `dtype` ("float32", "fp16", "bfloat16", ...) can reach.

    fp32 stays on the CUDA cores unless TF32 is allowed (the harness's reference keeps TF32 off);
    half types use the tensor cores when the architecture has them for that type."""
    d = dtype.replace("torch.", "").lower()
    d = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16",
         "float64": "fp64", "double": "fp64"}.get(d, d)
    if d.startswith("float8"):
        d = "fp8"
    p = facts.peak_flops
    candidates = {"fp32": ["tf32_tensor", "fp32"] if allow_tf32 else ["fp32"],
                  "tf32": ["tf32_tensor", "fp32"],
                  "fp16": ["fp16_tensor", "fp16_cuda"],
                  "bf16": ["bf16_tensor", "fp16_cuda"],
                  "fp8": ["fp8_tensor", "fp16_tensor"],
                  "fp64": ["fp64_tensor", "fp64"]}.get(d, ["fp32"])
    values = [p[k] for k in candidates if k in p]
    return max(values) if values else None


def device_facts(index: int = 0, nvml: Any = None) -> DeviceInfo:
    """Facts about GPU `index`, or `DeviceInfo(None, note)`; never raises.

    `nvml` is the pynvml module (injectable so the no-GPU and GPU paths are testable on a CPU)."""
    try:
        if nvml is None:
            import pynvml as nvml  # nvidia-ml-py
    except Exception as e:  # not installed
        return DeviceInfo(None, f"nvidia-ml-py is not importable ({e}); install it with `pip install nvidia-ml-py`")
    try:
        nvml.nvmlInit()
    except Exception as e:  # no driver, no GPU, container without /dev/nvidia*
        return DeviceInfo(None, f"NVML could not start, so no GPU facts: {e}")
    try:
        return DeviceInfo(_query(nvml, index))
    except Exception as e:
        return DeviceInfo(None, f"NVML failed on device {index}: {type(e).__name__}: {e}")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


def _optional(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _query(nvml: Any, index: int) -> DeviceFacts:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    name = name.decode() if isinstance(name, bytes) else str(name)
    cc = tuple(int(x) for x in nvml.nvmlDeviceGetCudaComputeCapability(handle))
    notes: list[str] = []
    sm_mhz = _optional(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM)
    mem_mhz = _optional(nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM)
    bus = _optional(nvml.nvmlDeviceGetMemoryBusWidth, handle)
    mem = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
    sm_count, l2 = _torch_sm_count_and_l2(index)
    if sm_count is None:
        cores = _optional(nvml.nvmlDeviceGetNumGpuCores, handle)
        lanes = _FP32_LANES_PER_SM.get(cc)
        if cores and lanes:
            sm_count = int(cores) // lanes
            notes.append("SM count derived from NVML's CUDA core count")
    sm_hz = float(sm_mhz) * 1e6 if sm_mhz else None
    mem_hz = float(mem_mhz) * 1e6 if mem_mhz else None
    facts = DeviceFacts(
        name=name, index=index, compute_capability=cc, sm_count=sm_count, sm_clock_hz=sm_hz,
        memory_clock_hz=mem_hz, memory_bytes=int(mem.total) if mem is not None else None,
        bus_width_bits=int(bus) if bus else None,
        peak_dram_bytes_per_s=peak_dram_bandwidth(mem_hz, int(bus)) if mem_hz and bus else None,
        l2_bytes=l2, notes=notes)
    if sm_count and sm_hz:
        facts.peak_flops = peak_flops_table(cc, sm_count, sm_hz)
    else:
        facts.notes.append("no SM count or clock: peak FLOP/s unknown")
    if facts.peak_dram_bytes_per_s is None:
        facts.notes.append("no memory clock or bus width: peak bandwidth unknown")
    if cc not in _PER_SM_CLOCK:
        facts.notes.append(f"compute capability {cc[0]}.{cc[1]} not in the FLOP table; peaks borrowed")
    return facts


def _torch_sm_count_and_l2(index: int) -> tuple[int | None, int | None]:
    """NVML has no SM count; torch does, when it can see the GPU."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None, None
        props = torch.cuda.get_device_properties(index)
        return int(props.multi_processor_count), int(getattr(props, "L2_cache_size", 0)) or None
    except Exception:
        return None, None
