"""A Triton candidate's kernels compiled for a GPU on a machine without one.

The CPU path runs Triton kernels in the interpreter, which takes code the GPU compiler refuses
(shared memory past the SM's limit, a tile too big for the registers) and says nothing of how a
kernel would use the hardware. This module runs the candidate's forward once at the problem's own
shape with every tensor on torch's meta device (shapes, no data) and every launch turned into an
ahead-of-time compile for the target (sm_90, the H100, by default): Triton's own front end, LLVM and
ptxas, as on the GPU, with the launch's real arguments (dtypes, divisibility by 16, constexprs,
num_warps). Each kernel's registers, spills, shared memory and tensor-core instructions are read
from the compiled binary.

    python -m kevolve.tools.gpu_compile PROBLEM CANDIDATE [--arch 90] [--json]

`compile_for_gpu` runs that in a child process (candidate code is untrusted: the environment is the
harness worker's, with no secret in it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import types
from pathlib import Path

# Shared memory a block may use (opted in), by compute capability
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448, 100: 232448}
# SMs of the arch's data-center part (A100, H100 SXM, B200): launches sized by the SM count (split rows,
# persistent grids) are compiled as that GPU would launch them
SM_COUNT = {80: 108, 90: 132, 100: 148}
MEMORY_CAP = 8 << 30  # address space the check may add to what importing triton maps (LLVM and ptxas included)


def compile_for_gpu(problem: str | Path, candidate: str | Path, arch: int = 90, timeout_s: float = 300.0,
                    cache: Path | None = None) -> dict:
    """{"ok", "arch", "kernels": [...], "error"} for a candidate file at the problem's own shape; ok is False
    when a kernel does not compile or would not launch on the target, or when the check could not run."""
    from importlib.metadata import version

    from .sandbox import clean_environment

    cache = cache or Path(tempfile.gettempdir()) / "kevolve-cache"
    # The report is a function of these: the same candidate checked again (a session's best, re-evaluated)
    # is read back, not compiled again
    key = hashlib.sha256("\0".join([Path(problem).read_text(), Path(candidate).read_text(), str(arch),
                                     version("triton"), Path(__file__).read_text()]).encode()).hexdigest()
    saved = cache / "gpu_compile" / f"{key[:32]}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    env = clean_environment("cuda", cache)  # the real compiler: no interpreter
    cmd = [sys.executable, "-m", "kevolve.tools.gpu_compile", str(problem), str(candidate), "--arch", str(arch),
           "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a timeout ends ptxas too
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"ok": False, "arch": arch, "kernels": [], "error": f"the compile check ran past {timeout_s:.0f}s"}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        tail = [line for line in err.strip().splitlines() if line.strip()][-1:]
        return {"ok": False, "arch": arch, "kernels": [], "error": tail[0] if tail else "the compile check crashed"}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(lines[-1])
    return json.loads(lines[-1])


def describe(report: dict) -> str:
    """One line for people: what the compile check found. With no kernel compiled it could not check
    (a forward that reads values, no Triton launch, a timeout): said as not compiled, not as failed."""
    kernels, arch = report.get("kernels", []), report.get("arch", 90)
    if not kernels:
        return f"not compiled for sm_{arch}: {report.get('error', '')}"
    if not report.get("ok"):
        bad = [k for k in kernels if k.get("error")]
        why = f"{bad[0]['name']}: {bad[0]['error']}" if bad else report.get("error", "")
        return f"does not compile for sm_{arch}: {why}"
    regs = max((k["registers"] for k in kernels), default=0)
    spills = sum(k["spill_bytes"] for k in kernels)
    shared = max((k["shared_bytes"] for k in kernels), default=0)
    spilled = f"{spills} bytes spilled" if spills else "no spills"
    partial = f" (then {report['error']})" if report.get("error") else ""
    return (f"compiles for sm_{arch}: {len(kernels)} kernel{'s' * (len(kernels) != 1)}, at most {regs} registers, "
            f"{spilled}, at most {shared / 1024:.0f} KB shared memory{partial}")


def _resources(cubin: bytes) -> dict:
    """Registers and local (spill) bytes per thread, from cuobjdump's resource usage of the binary; its
    machine instructions, and how many of them start a division by a run-time integer (the GPU has no
    integer divide: ptxas emits a float reciprocal, I2F.RP then MUFU.RCP, and a dozen or so instructions
    of correction per quotient; one by a constant is a multiply and a shift). An index divided per
    element that way can make a memory-bound kernel's loop ALU-bound."""
    from triton.backends.nvidia import compiler as nvidia

    tool = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True, text=True,
                              check=True).stdout
        sass = subprocess.run([str(tool), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    reg, local = re.search(r"REG:(\d+)", text), re.search(r"LOCAL:(\d+)", text)
    instructions = re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(.*?);", sass, re.M)
    return {"registers": int(reg[1]) if reg else 0, "spill_bytes": int(local[1]) if local else 0,
            "instructions": len(instructions),
            "int_divisions": sum(bool(re.search(r"\bI2F(\.U32)?\.RP\b", i)) for i in instructions)}


def _build(kernel, name: str, grid, arch: int) -> dict:
    meta = kernel.metadata
    ptx = kernel.asm["ptx"]
    row = {"name": name, "grid": [int(g) for g in grid], "num_warps": meta.num_warps, "num_stages": meta.num_stages,
           "shared_bytes": meta.shared, **_resources(kernel.asm["cubin"]),
           "tensor_cores": "wgmma" if "wgmma" in ptx else "mma" if "mma.sync" in ptx else "none",
           # loads of more than 4 bytes a thread (ld.global.v2/v4, cp.async of 8 or 16 bytes): vectorized
           "wide_loads": len(re.findall(r"ld\.global[.\w]*\.v[24]|cp\.async\.c[ag]\.shared\.global[^;]*, 0x(?:8|10)\b",
                                        ptx)),
           "loads": len(re.findall(r"ld\.global|cp\.async\.c[ag]\.shared\.global", ptx)), "error": ""}
    # Triton checks this only when it loads the binary onto a device (OutOfResources); ptxas keeps
    # registers within what the launch's threads may have, spilling the rest (spill_bytes)
    limit = SHARED_LIMIT.get(arch, SHARED_LIMIT[90])
    if meta.shared > limit:
        row["error"] = f"needs {meta.shared} bytes of shared memory, a block may have {limit}"
    return row


def _check(problem_path: str, candidate_path: str, arch: int) -> dict:
    """In this process (TRITON_INTERPRET unset before triton is imported): compile every launch."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from .problem import constants_at, load_module, load_problem

    class _NoDevice:  # what JITFunction.run asks the driver; nothing is launched
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_active_torch_device(self):
            return torch.device("meta")

    driver.set_active(_NoDevice())
    seen: dict[tuple, dict] = {}
    original, tuned = JITFunction.run, Autotuner.run

    def compile_only(self, *args, grid, warmup, **kwargs):
        name = self.fn.__name__
        try:
            kernel = original(self, *args, grid=grid, warmup=True, **kwargs)  # warmup: compile, do not launch
        except Exception as e:
            seen.setdefault((name, "error"), {"name": name, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            raise _Stop() from e
        try:
            grid = grid(kwargs) if callable(grid) else grid  # a lambda of the launch's meta-parameters
        except Exception:
            grid = ()
        key = (name, kernel.hash)
        if key not in seen:
            seen[key] = _build(kernel, name, grid, arch)
        return kernel

    def every_config(self, *args, warmup=False, **kwargs):  # @triton.autotune: each config compiled, none timed
        return self.warmup(*args, **kwargs)

    JITFunction.run, Autotuner.run = compile_only, every_config
    sms, properties = SM_COUNT.get(arch, 132), torch.cuda.get_device_properties
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        multi_processor_count=sms, major=arch // 10, minor=arch % 10, name=f"sm_{arch}")
    problem = load_problem(problem_path)
    candidate = load_module(Path(candidate_path), "candidate")
    if callable(getattr(candidate, "_sm_count", None)):  # the templates' helper, which says 1 off a GPU
        candidate._sm_count = lambda device: sms
    try:
        # meta tensors: the problem's own shape, no memory, no work; sizes in the wrappers run as written
        with torch.device("meta"), constants_at(problem.module, problem, {}):
            torch.manual_seed(0)
            init_inputs, inputs = problem.module.get_init_inputs(), problem.module.get_inputs()
        with torch.device("meta"), constants_at(candidate, problem, {}), torch.no_grad():
            model = candidate.ModelNew(*init_inputs).eval()
            model(*inputs)
    except _Stop:
        stopped = ""
    except Exception as e:  # a forward that reads values (.item(), a data-dependent branch) stops here
        stopped = f"the forward did not run on meta tensors: {type(e).__name__}: {str(e)[:200]}"
    else:
        stopped = "" if seen else "no Triton kernel was launched"
    finally:
        JITFunction.run, Autotuner.run = original, tuned
        torch.cuda.get_device_properties = properties
    kernels = list(seen.values())
    errors = [k for k in kernels if k.get("error")]
    return {"ok": bool(kernels) and not errors, "arch": arch, "kernels": kernels, "error": stopped}


class _Stop(Exception):
    """A kernel did not compile: the forward stops there."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kevolve.tools.gpu_compile", description=__doc__.split("\n")[0])
    p.add_argument("problem")
    p.add_argument("candidate")
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)
    import torch  # noqa: F401  (both before the cap, as the worker does: their imports map a lot of memory)
    import triton  # noqa: F401

    from .sandbox import cap_address_space

    cap_address_space(MEMORY_CAP)  # candidate code runs here: capped as a worker is
    report = _check(args.problem, args.candidate, args.arch)
    if args.json:
        print(json.dumps(report))
    else:
        print(describe(report))
        for k in report["kernels"]:
            if k.get("error") and "grid" not in k:
                continue
            print(f"  {k['name']}: grid {k['grid']}, {k['num_warps']} warps, {k['num_stages']} stages, "
                  f"{k['registers']} registers, {k['spill_bytes']} B spilled, {k['shared_bytes']} B shared, "
                  f"tensor cores {k['tensor_cores']}, {k['wide_loads']} of {k['loads']} loads wide, "
                  f"{k.get('instructions', 0)} instructions, {k.get('int_divisions', 0)} run-time integer divisors"
                  + (f"  ERROR {k['error']}" if k["error"] else ""))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
