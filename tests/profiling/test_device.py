import pytest

from kevolve.profiling.device import device_facts, peak_flops_for


class FakeNVML:
    """pynvml's surface as device_facts uses it, with an H100 SXM's (or A100's) real NVML values."""
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self, name, cc, sm_mhz, mem_mhz, bus, cores, total=80 * 2**30, fail_init=False):
        self.values = dict(name=name, cc=cc, sm=sm_mhz, mem=mem_mhz, bus=bus, cores=cores, total=total)
        self.fail_init = fail_init
        self.shutdown = False

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetHandleByIndex(self, i):
        if i != 0:
            raise RuntimeError("Invalid Argument")
        return "handle"

    def nvmlDeviceGetName(self, h):
        return self.values["name"].encode()

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return self.values["cc"]

    def nvmlDeviceGetMaxClockInfo(self, h, which):
        return self.values["sm"] if which == self.NVML_CLOCK_SM else self.values["mem"]

    def nvmlDeviceGetMemoryBusWidth(self, h):
        return self.values["bus"]

    def nvmlDeviceGetNumGpuCores(self, h):
        return self.values["cores"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"total": self.values["total"]})()


def test_no_gpu_here_gives_a_note_not_an_exception():
    info = device_facts()
    assert info.facts is None and info.note
    assert info.to_dict() == {"facts": None, "note": info.note}


def test_nvml_init_failure():
    nvml = FakeNVML("x", (9, 0), 1980, 2619, 5120, 16896, fail_init=True)
    info = device_facts(nvml=nvml)
    assert info.facts is None and "NVML Shared Library Not Found" in info.note


def test_bad_index_is_a_note():
    nvml = FakeNVML("NVIDIA H100 80GB HBM3", (9, 0), 1980, 2619, 5120, 16896)
    info = device_facts(3, nvml=nvml)
    assert info.facts is None and "device 3" in info.note and nvml.shutdown


def test_h100_sxm_facts():
    info = device_facts(nvml=FakeNVML("NVIDIA H100 80GB HBM3", (9, 0), 1980, 2619, 5120, 16896))
    f = info.facts
    assert f.name == "NVIDIA H100 80GB HBM3" and f.arch == "Hopper" and f.compute_capability == (9, 0)
    assert f.sm_count == 132  # torch sees no GPU here: from NVML's 16896 cores / 128 per SM
    assert f.peak_dram_bytes_per_s == pytest.approx(3.352e12, rel=1e-3)   # data sheet: 3.35 TB/s
    assert f.peak_flops["fp32"] == pytest.approx(66.9e12, rel=0.01)       # data sheet: 67 TFLOP/s
    # Data sheet: 989 TFLOP/s dense at a lower tensor clock; at max clock the bound is a little higher.
    assert 989e12 <= f.peak_flops["bf16_tensor"] <= 1.1 * 989e12
    assert f.peak_flops["fp8_tensor"] == 2 * f.peak_flops["fp16_tensor"]
    assert peak_flops_for(f, "float32") == f.peak_flops["fp32"]
    assert peak_flops_for(f, "float32", allow_tf32=True) == f.peak_flops["tf32_tensor"]
    assert peak_flops_for(f, "torch.bfloat16") == f.peak_flops["bf16_tensor"]
    assert f.to_dict()["compute_capability"] == "9.0"


def test_a100_facts_match_data_sheet():
    f = device_facts(nvml=FakeNVML("NVIDIA A100-SXM4-40GB", (8, 0), 1410, 1215, 5120, 6912)).facts
    assert f.arch == "Ampere" and f.sm_count == 108
    assert f.peak_dram_bytes_per_s == pytest.approx(1.555e12, rel=1e-3)   # 1555 GB/s
    assert f.peak_flops["fp16_tensor"] == pytest.approx(312e12, rel=0.01)
    assert f.peak_flops["tf32_tensor"] == pytest.approx(156e12, rel=0.01)
    assert f.peak_flops["fp32"] == pytest.approx(19.5e12, rel=0.01)
    assert "fp8_tensor" not in f.peak_flops


def test_ada_l40s_has_fp8():
    f = device_facts(nvml=FakeNVML("NVIDIA L40S", (8, 9), 2520, 9001, 384, 18176)).facts
    assert f.arch == "Ada" and f.sm_count == 142
    assert f.peak_flops["fp32"] == pytest.approx(91.6e12, rel=0.01)
    assert f.peak_flops["fp8_tensor"] == pytest.approx(733e12, rel=0.02)
    assert f.peak_dram_bytes_per_s == pytest.approx(864e9, rel=0.01)
