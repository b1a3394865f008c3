"""Profile a memory-bound and a compute-bound Triton candidate on a real GPU and check the classes.

    python3 scripts/gpu_profile_check.py [--json OUT.json]

Needs an NVIDIA GPU, ncu on PATH (or /usr/local/cuda/bin), torch with CUDA and triton. Each
candidate runs in a child process (as the worker would) with its measured forward inside the NVTX
range "kevolve_profile" after warm-up, so ncu sees only that launch. Prints each candidate's class,
the Judge summary and how long profiling took; exits 1 when a class is wrong or ncu fell back.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r'''
import sys
import torch
import triton
import triton.language as tl


@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                  GROUP: tl.constexpr):
    pid = tl.program_id(0)
    n_m, n_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = pid // (GROUP * n_n)
    first_m = group * GROUP
    size = min(n_m - first_m, GROUP)
    pid_m = first_m + (pid % (GROUP * n_n)) % size
    pid_n = (pid % (GROUP * n_n)) // size
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a = a_ptr + rm[:, None] * K + rk[None, :]
    b = b_ptr + rk[:, None] * N + rn[None, :]
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for _ in range(0, K, BK):
        acc += tl.dot(tl.load(a), tl.load(b))
        a += BK
        b += BK * N
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.bfloat16))


def main(which):
    if which == "add":
        n = 1 << 26
        x, y = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
        out = torch.empty_like(x)
        run = lambda: add_kernel[(triton.cdiv(n, 1024),)](x, y, out, n, BLOCK=1024)
    else:
        n = 4096
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
        grid = ((n // 128) * (n // 128),)
        run = lambda: matmul_kernel[grid](a, b, c, n, n, n, BM=128, BN=128, BK=64, GROUP=8,
                                          num_warps=8, num_stages=3)
    for _ in range(3):  # compile and warm up outside the range
        run()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push("kevolve_profile")
    run()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()


main(sys.argv[1])
'''

CASES = {  # name: (kernel, expected class, reference module source, input shapes and dtype)
    "add": ("add_kernel", "memory"),
    "matmul": ("matmul_kernel", "compute"),
}


def load_profiling():
    """kevolve.profiling when installed; otherwise the repo's profiling/ folder loaded as a package."""
    try:
        import kevolve.profiling as prof
        return prof
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "kevolve_profiling", ROOT / "profiling" / "__init__.py",
            submodule_search_locations=[str(ROOT / "profiling")])
        module = importlib.util.module_from_spec(spec)
        sys.modules["kevolve_profiling"] = module
        spec.loader.exec_module(module)
        return module


def reference_cost(prof, case: str):
    import torch

    if case == "add":
        class Model(torch.nn.Module):
            def forward(self, x, y):
                return x + y
        inputs = [torch.empty(1 << 26), torch.empty(1 << 26)]
    else:
        class Model(torch.nn.Module):
            def forward(self, a, b):
                return a @ b
        inputs = [torch.empty(4096, 4096, dtype=torch.bfloat16), torch.empty(4096, 4096, dtype=torch.bfloat16)]
    return prof.reference_cost(Model(), inputs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", help="write the profiles as JSON here")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--save-csv", help="keep each case's ncu CSV pages in DIR/<case>/")
    args = parser.parse_args()
    prof = load_profiling()
    info = prof.device_facts()
    print(f"device: {info.facts.name if info.facts else None} {info.note}")
    ok = True
    dumps = {}
    with tempfile.TemporaryDirectory(prefix="kevolve-profile-check-") as tmp:
        child = Path(tmp) / "candidate_run.py"
        child.write_text(CHILD)
        env = dict(os.environ)
        env["PATH"] = env.get("PATH", "") + ":/usr/local/cuda/bin"
        for case, (kernel, expected) in CASES.items():
            cost = reference_cost(prof, case)
            started = time.monotonic()
            profile = prof.profile_kernels([sys.executable, str(child), case], env, tmp, [kernel], cost,
                                           info.facts, timeout_s=args.timeout,
                                           keep_csv=str(Path(args.save_csv) / case) if args.save_csv else None)
            took = time.monotonic() - started
            got = profile.kernels[0].bound.kind if profile.kernels else None
            verdict = "OK" if profile.source == "ncu" and got == expected else "WRONG"
            ok &= verdict == "OK"
            print(f"\n=== {case}: expected {expected}, got {got} ({profile.source}); profiling took {took:.1f} s"
                  f" [{verdict}]")
            print(prof.judge_summary(profile))
            if profile.source != "ncu":
                print("ncu command:", " ".join(profile.command))
                print(profile.output_tail[-2000:])
            try:
                from rich.console import Console
                Console(width=180).print(prof.profile_table(profile))
            except ImportError:
                pass
            dumps[case] = prof.profile_dict(profile) | {"profiling_s": took}
    if args.json:
        Path(args.json).write_text(json.dumps(dumps, indent=1, default=str))
    print("\nALL OK" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
