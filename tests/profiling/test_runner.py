"""run_ncu and profile_kernels against real subprocesses: no ncu, a refusing ncu, a hanging ncu, and a
fake ncu that replays the real H100 CSVs (so command building, import and parsing run end to end)."""

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from kevolve.profiling import ncu as ncu_mod
from kevolve.profiling.ncu import KernelTime, kernel_times_from_trace, ncu_command, run_ncu
from kevolve.profiling.profiler import profile_kernels
from kevolve.profiling.roofline import Cost

FIXTURES = Path(__file__).parent / "fixtures"
PERM_ERROR = ("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance "
              "Counters on the target device 0. For instructions on enabling permissions and to get more "
              "information see https://developer.nvidia.com/ERR_NVGPUCTRPERM")
LAUNCH = [sys.executable, "-c", "print('candidate ran')"]


def _script(folder: Path, body: str) -> Path:
    path = folder / "ncu"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _env(folder: Path) -> dict[str, str]:
    return dict(os.environ, PATH=f"{folder}:/usr/bin:/bin")


@pytest.fixture
def no_default_ncu(monkeypatch):
    monkeypatch.setattr(ncu_mod, "DEFAULT_NCU_LOCATIONS", [])


def test_command_filters_kernels_and_nvtx_range():
    cmd = ncu_command("ncu", ["python", "w.py"], ["add_kernel", "_Z3fooPf"], "/tmp/r")
    assert cmd[0] == "ncu" and cmd[-2:] == ["python", "w.py"]
    assert cmd[cmd.index("--nvtx-include") + 1] == "kevolve_profile/" and "--nvtx" in cmd
    assert cmd[cmd.index("--kernel-name") + 1].startswith("regex:") and "add_kernel" in " ".join(cmd)
    assert cmd[cmd.index("--export") + 1] == "/tmp/r"
    sections = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--section"]
    assert sections == ["SpeedOfLight", "Occupancy", "LaunchStats", "WarpStateStats"]
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert "dram__bytes.sum" in metrics and "lts__t_sector_hit_rate.pct" in metrics
    assert "--set" not in cmd  # never the full set: it takes minutes


def test_missing_ncu(tmp_path, no_default_ncu):
    result = run_ncu(LAUNCH, {"PATH": str(tmp_path)}, None, ["add"], timeout_s=10)
    assert result.status == "missing"
    assert "PATH" in result.message and "nsight-compute" in result.message.lower()


def test_permission_error_explained(tmp_path):
    _script(tmp_path, f"echo '{PERM_ERROR}'\nexit 1\n")
    result = run_ncu(LAUNCH, _env(tmp_path), None, ["add"], timeout_s=10)
    assert result.status == "permission"
    assert "root" in result.message and "NVreg_RestrictProfilingToAdminUsers=0" in result.message
    assert "ERR_NVGPUCTRPERM" in result.output_tail


def test_timeout_kills_the_run(tmp_path):
    marker = tmp_path / "child_alive"
    # ncu that starts a child (like the program it profiles) and hangs: both must die.
    _script(tmp_path, f"(sleep 3; touch {marker}) &\nsleep 30\n")
    started = time.monotonic()
    result = run_ncu(LAUNCH, _env(tmp_path), None, ["add"], timeout_s=1)
    assert result.status == "timeout" and "1 s" in result.message
    assert time.monotonic() - started < 10
    time.sleep(3.5)
    assert not marker.exists()


def test_no_kernels_profiled(tmp_path):
    _script(tmp_path, "echo '==PROF== Disconnected from process 1'\necho '==WARNING== No kernels were profiled.'\n")
    result = run_ncu(LAUNCH, _env(tmp_path), None, ["add"], timeout_s=10)
    assert result.status == "no_kernels" and "kevolve_profile" in result.message


FAKE_NCU = """
log="{log}"
echo "$@" >> "$log"
case " $* " in
  *" --import "*)
    case " $* " in
      *" raw "*) cat "{fixtures}/raw.csv" ;;
      *) cat "{fixtures}/details.csv" ;;
    esac ;;
  *)
    while [ "$1" != "--export" ]; do shift; done
    touch "$2.ncu-rep"
    echo "==PROF== Connected to process 538" ;;
esac
"""


def test_fake_ncu_end_to_end(tmp_path, h100):
    log = tmp_path / "calls.log"
    _script(tmp_path, FAKE_NCU.format(log=log, fixtures=FIXTURES))
    result = run_ncu(LAUNCH, _env(tmp_path), str(tmp_path), ["add"], timeout_s=20)
    assert result.status == "ok", result.message
    (k,) = result.kernels
    assert k.name == "add" and k.achieved_occupancy_pct == pytest.approx(82.37, abs=0.01)
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and "--print-units base" in calls[1] and "--page raw" in calls[1]
    # The same run through the top-level entry: classified against the H100 roofline.
    cost = Cost(flops=2**26, min_bytes=3 * 4 * 2**26, dtype="float32")
    profile = profile_kernels(LAUNCH, _env(tmp_path), str(tmp_path), ["add"], cost, h100, timeout_s=20)
    assert profile.source == "ncu" and not profile.is_fallback
    (report,) = profile.kernels
    assert report.bound.kind == "memory" and report.bound.pct_of_peak == pytest.approx(90.68, abs=0.01)
    assert profile.problem_class == "memory"
    assert 0.9 < profile.sol_fraction < 0.95  # 805 MB at 3.35 TB/s = 240 µs vs 259 µs measured


def test_fake_ncu_other_kernel_names_are_dropped(tmp_path):
    _script(tmp_path, FAKE_NCU.format(log=tmp_path / "log", fixtures=FIXTURES))
    result = run_ncu(LAUNCH, _env(tmp_path), None, ["matmul_kernel"], timeout_s=20)
    assert result.status == "no_kernels" and result.kernels == []


def test_fallback_to_torch_profiler_times(tmp_path, no_default_ncu, h100):
    cost = Cost(flops=2**26, min_bytes=3 * 4 * 2**26, dtype="float32")
    times = [KernelTime("add", 10, 300e-6, 300e-6)]
    profile = profile_kernels(LAUNCH, {"PATH": str(tmp_path)}, None, ["add"], cost, h100, timeout_s=5,
                              fallback=lambda: times)
    assert profile.source == "torch.profiler" and profile.is_fallback and profile.ncu_status == "missing"
    assert "Fallback" in profile.note and "not found" in profile.note
    assert profile.kernel_times == times and profile.kernels == []
    assert profile.sol_fraction == pytest.approx(0.2402 / 0.300, rel=0.01)


def test_fallback_failure_is_reported(tmp_path):
    _script(tmp_path, f"echo '{PERM_ERROR}'\nexit 1\n")

    def broken():
        raise RuntimeError("worker crashed")

    profile = profile_kernels(LAUNCH, _env(tmp_path), None, ["add"], None, None, timeout_s=5, fallback=broken)
    assert profile.source == "none" and profile.ncu_status == "permission"
    assert "worker crashed" in profile.note and "NVreg_RestrictProfilingToAdminUsers" in profile.note


def test_kernel_times_from_trace_keeps_own_kernels():
    events = [
        {"cat": "kernel", "name": "add", "dur": 250.0},
        {"cat": "kernel", "name": "add", "dur": 270.0},
        {"cat": "kernel", "name": "_Z9my_kernelPfPKfi", "dur": 10.0},
        {"cat": "kernel", "name": "void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add<float>>()",
         "dur": 999.0},
        {"cat": "cpu_op", "name": "add", "dur": 5000.0},
    ]
    times = kernel_times_from_trace(events, ["add", "my_kernel"], repeats=2)
    assert [(t.name, t.calls) for t in times] == [("add", 2), ("_Z9my_kernelPfPKfi", 1)]
    assert times[0].total_s == pytest.approx(260e-6) and times[0].mean_s == pytest.approx(260e-6)
    assert KernelTime.from_dict(vars(times[0])) == times[0]
