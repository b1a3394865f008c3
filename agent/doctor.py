"""`kevolve doctor`: what this machine can do, and how to fix what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

from rich.console import Console
from rich.table import Table


def _run(command: list[str], timeout: float = 20.0) -> tuple[int, str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return done.returncode, (done.stdout + done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return -1, str(e)


def _finding(name: str, ok: bool | None, value: str, fix: str = "") -> dict:
    return {"name": name, "ok": ok, "value": value, "fix": "" if ok else fix}


def diagnose() -> list[dict]:
    """One finding per capability: ok True (works), False (missing, with a fix), None (optional, absent)."""
    findings = []
    import torch

    findings.append(_finding("torch", True, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})"))
    try:
        import triton

        findings.append(_finding("triton", True, triton.__version__))
    except ImportError:
        findings.append(_finding("triton", False, "not installed", "pip install triton (Linux only)"))
    gpu = torch.cuda.is_available()
    if gpu:
        props = torch.cuda.get_device_properties(0)
        findings.append(_finding("GPU", True, f"{props.name}, sm_{props.major}{props.minor}, "
                                              f"{props.multi_processor_count} SMs, {props.total_memory >> 30} GiB"))
    else:
        why = "torch is a CPU build" if not torch.version.cuda else "no GPU visible to the CUDA driver"
        findings.append(_finding("GPU", False, why, "candidates run under the Triton interpreter for correctness "
                                 "only; on a GPU machine install a CUDA build of torch"))
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        findings.append(_finding("driver (NVML)", True, str(driver)))
        pynvml.nvmlShutdown()
    except Exception as e:
        findings.append(_finding("driver (NVML)", None if not gpu else False, f"unavailable ({type(e).__name__})",
                                 "install the NVIDIA driver; nvidia-ml-py reads it for device facts"))
    nvcc = shutil.which("nvcc")
    if nvcc:
        _, out = _run([nvcc, "--version"])
        findings.append(_finding("nvcc", True, out.splitlines()[-1] if out else nvcc))
    else:
        findings.append(_finding("nvcc", False, "not on PATH",
                                 "install the CUDA toolkit (CUDA C++ candidates need it; Triton does not)"))
    ncu = shutil.which("ncu")
    if ncu:
        _, out = _run([ncu, "--version"])
        findings.append(_finding("ncu", True, out.splitlines()[-1] if out else ncu))
        if gpu:
            findings.append(_counter_permission(ncu))
    else:
        findings.append(_finding("ncu", False, "not on PATH", "install Nsight Compute (part of the CUDA toolkit); "
                                 "without it profiles fall back to torch.profiler kernel times"))
    try:
        import ray

        findings.append(_finding("ray", True, f"{ray.__version__} (--executor ray)"))
    except ImportError:
        findings.append(_finding("ray", None, "not installed", "optional: pip install 'kevolve[ray]' to evaluate "
                                 "candidates on a Ray cluster (--executor ray)"))
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    findings.append(_finding("Triton interpreter", True,
                             "forced on (TRITON_INTERPRET=1)" if interpret else
                             ("used for --device cpu" if gpu else "used: no GPU, so every candidate runs in it")))
    return findings


def _counter_permission(ncu: str) -> dict:
    """Profile a trivial kernel once: ERR_NVGPUCTRPERM means counters are admin-only."""
    code = "import torch; x = torch.ones(1024, device='cuda'); (x * 2).sum().item()"
    import sys

    rc, out = _run([ncu, "--metrics", "gpu__time_duration.sum", "--launch-count", "1", sys.executable, "-c", code],
                   timeout=120)
    if "ERR_NVGPUCTRPERM" in out:
        return _finding("ncu counters", False, "ERR_NVGPUCTRPERM: not allowed to read GPU counters",
                        "run as root, or set the driver option NVreg_RestrictProfilingToAdminUsers=0")
    if rc != 0:
        return _finding("ncu counters", False, out.splitlines()[-1] if out else f"exit {rc}", "see ncu's message")
    return _finding("ncu counters", True, "readable")


def print_diagnosis(findings: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="kevolve doctor", show_lines=False)
    table.add_column("what")
    table.add_column("")
    table.add_column("found", overflow="fold")
    table.add_column("how to fix", overflow="fold")
    for f in findings:
        mark = {True: "[green]ok[/]", False: "[red]missing[/]", None: "[yellow]-[/]"}[f["ok"]]
        table.add_row(f["name"], mark, f["value"], f["fix"])
    console.print(table)
