"""The host's time per forward: the Python a candidate runs around its kernels.

    python scripts/host_overhead.py PROBLEM.py [...] [--top 4]              # any machine, no GPU
    python scripts/host_overhead.py PROBLEM.py [...] --device cuda          # on a GPU

Our timing (tools/timing.py) hides the host: a GPU sleep before each run outlasts the enqueueing, so
kernels are compared by GPU time alone. A user calling the module once at a time, or a harness that
records its events around a call on an idle GPU, pays the host's time as well, and for a small problem
it can be the larger part. This script measures it, for the builtin engine's first candidates:
- no GPU: the forward on meta tensors with every Triton launch made a no-op, so what is left is the
  wrapper's own Python (shapes, strides, grids, allocations), per call, in µs;
- `--device cuda`: per call, the time to return from the forward (the host's enqueueing, launches
  included) and the wall time of a forward and a synchronize on an idle GPU, medians of many calls,
  beside eager and torch.compile timed the same way in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if "--device" not in sys.argv:
    os.environ["TRITON_INTERPRET"] = "0"  # the stubbed launches never run; the import must not need a GPU

import torch  # noqa: E402
import triton  # noqa: E402

from kevolve.builtin import propose_candidates  # noqa: E402
from kevolve.tools.problem import load_module, load_problem  # noqa: E402


class _NoLaunch:
    """Stands in for a jit function: `kernel[grid](...)` does nothing."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _load(source: str, stub_launches: bool):
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    module = load_module(Path(f.name), "kevolve_host_candidate")
    os.unlink(f.name)
    if stub_launches:
        for name, obj in list(vars(module).items()):
            if isinstance(obj, (triton.runtime.jit.JITFunction, triton.runtime.autotuner.Autotuner)):
                setattr(module, name, _NoLaunch())
    return module


def _per_call_us(fn, calls: int) -> float:
    """Median over 5 batches of the mean time per call, in µs."""
    batches = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        batches.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(batches)


def _synced_us(fn, calls: int) -> float:
    """Median wall time of one call and a synchronize, the GPU idle before each, in µs."""
    times = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def _gpu_times(name: str, fn, inputs) -> dict:
    call = lambda: fn(*inputs)  # noqa: E731
    for _ in range(20):
        call()
    torch.cuda.synchronize()
    return {f"{name}host_us": _per_call_us(call, 200), f"{name}synced_us": _synced_us(call, 200)}


def host_row(problem_path: str, source: str, device: str) -> dict:
    problem = load_problem(problem_path)
    module = problem.module
    on_gpu = device == "cuda"
    model = _load(source, stub_launches=not on_gpu).ModelNew(*module.get_init_inputs()).to(
        device if on_gpu else "meta")
    inputs = [x.to(device if on_gpu else "meta") if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
    with torch.no_grad():
        for _ in range(20):  # compiles, autotunes, fills the launch memos
            model(*inputs)
        if not on_gpu:
            return {"host_us": _per_call_us(lambda: model(*inputs), 2000)}
        reference = module.Model(*module.get_init_inputs()).to(device)
        row = {}
        for name, fn in (("", model), ("eager_", reference), ("compile_", torch.compile(reference))):
            row.update(_gpu_times(name, fn, inputs))
        return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="+")
    parser.add_argument("--top", type=int, default=4, help="how many of the engine's first candidates")
    parser.add_argument("--device", choices=["cuda"], default=None)
    args = parser.parse_args()
    device = args.device or "cpu"
    for path in args.problems:
        name = Path(path).stem
        for proposal in propose_candidates(path)[: args.top]:
            try:
                row = host_row(path, proposal.source, device)
            except Exception as e:  # a candidate that cannot run here is said, the rest go on
                print(f"{name:34s} {proposal.strategy:30s} failed: {type(e).__name__}: {str(e)[:90]}")
                continue
            print(f"{name:34s} {proposal.strategy:30s} " + "  ".join(f"{k} {v:7.1f}" for k, v in row.items()),
                  flush=True)


if __name__ == "__main__":
    main()
