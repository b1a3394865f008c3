"""What each candidate's forward launches and moves, counted on the CPU (no GPU, no arithmetic).

    python scripts/traffic_cpu.py DIR_OR_FILE ... [--seed] [--json OUT]

For each problem, the builtin engine's candidates (and, with --seed, the compiler seed: torch.compile's
kernels exported) run one forward on meta tensors at the problem's own sizes, after a first forward
that makes what is made once per model. Each Triton launch is counted with the extents of its tensor
arguments; each torch op that is a kernel (not a view, not an allocation) with its operands' and
results'. The table: launches and MB per forward for the fewest-bytes template candidate and the seed,
against the roofline's minimum bytes (every input, output and weight moved once).

These are counts, not timings. A kernel reading a tensor twice counts it once, one reading part of a
tensor counts all of it, and a split reduction's launches each count the tensors they are handed. What
they show is a copy, an extra launch or an intermediate written and read back: how this session found
a weight transposed every forward, a chunk copied before its kernel and two row kernels reading one
input twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # launches are counted, never run: no GPU and no interpreter needed

import torch  # noqa: E402
import triton  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from kevolve.profiling.roofline import _tensors  # noqa: E402  (the tensors in nested args)

# aten ops that launch nothing: views, allocations, metadata
_FREE = {"view", "_unsafe_view", "as_strided", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze",
         "reshape", "slice", "select", "alias", "detach", "empty", "empty_like", "new_empty", "empty_strided",
         "new_empty_strided", "unbind", "split", "split_with_sizes", "chunk", "narrow", "view_as", "unfold",
         "_reshape_alias", "lift_fresh", "diagonal", "movedim", "expand_as", "flatten", "unflatten",
         "_local_scalar_dense", "is_same_size", "sym_size", "sym_stride", "sym_numel", "dim", "size", "stride",
         "is_contiguous", "set_", "resize_"}


def _extent(t: torch.Tensor) -> int:
    """Bytes from a tensor's first element to its last (a broadcast dim spans nothing)."""
    if t.numel() == 0:
        return 0
    return (1 + sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride()))) * t.element_size()


def _bytes(*objs) -> int:
    seen: dict[int, torch.Tensor] = {}
    for obj in objs:
        for t in _tensors(obj):
            seen.setdefault(id(t), t)
    return sum(_extent(t) for t in seen.values())


class _Counter(TorchDispatchMode):
    """Records (kind, name, bytes) for each launch while `on`."""

    def __init__(self):
        super().__init__()
        self.on, self.launches = False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__.rstrip("_")
        if self.on and name not in _FREE:
            self.launches.append(("torch", name, _bytes(args, kwargs or {}, out)))
        return out


class _Launch:
    """Stands in for a jit function: `kernel[grid](...)` records its tensor arguments' bytes."""

    def __init__(self, name: str, counter: _Counter):
        self.name, self.counter = name, counter

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            if self.counter.on:
                self.counter.launches.append(("triton", self.name, _bytes(args, kwargs)))
        return launch


def count_forward(problem_path: str | Path, source: str) -> list[tuple[str, str, int]]:
    """(kind, name, bytes) per launch of one forward of the candidate `source`, the second of two."""
    from kevolve.tools.problem import load_module, load_problem

    module = load_problem(problem_path).module
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source.replace('device="cpu"', 'device="meta"'))  # the CPU seed's allocations
    try:
        candidate = load_module(Path(f.name), "kevolve_traffic_candidate")
    finally:
        os.unlink(f.name)
    counter = _Counter()
    for name, obj in list(vars(candidate).items()):
        if isinstance(obj, (triton.runtime.jit.JITFunction, triton.runtime.autotuner.Autotuner)):
            setattr(candidate, name, _Launch(name, counter))
    torch.manual_seed(0)
    model = candidate.ModelNew(*module.get_init_inputs()).to("meta")
    inputs = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
    with torch.no_grad(), counter:
        model(*inputs)  # what is made once per model is made here
        counter.on = True
        model(*inputs)
    return counter.launches


def problem_rows(path: str, seed: bool) -> dict:
    """{"min_bytes", "candidates": {strategy: launches or error}} for one problem."""
    from kevolve.builtin import compiler_seed, propose_candidates
    from kevolve.profiling.roofline import reference_cost
    from kevolve.tools.problem import load_problem

    prob = load_problem(path).module
    cost = reference_cost(prob.Model(*prob.get_init_inputs()), prob.get_inputs())
    sources = {p.strategy: p.source for p in propose_candidates(path)}
    if seed:
        p = compiler_seed(path, "cpu")
        if p is not None:
            sources[p.strategy] = p.source
    rows: dict = {}
    for strategy, source in sources.items():
        try:
            rows[strategy] = count_forward(path, source)
        except Exception as e:  # a data-dependent forward (.item()) cannot run on meta tensors
            rows[strategy] = f"{type(e).__name__}: {str(e)[:120]}"
    return {"min_bytes": cost.min_bytes, "candidates": rows}


def _summary(name: str, row: dict) -> str:
    counted = {s: v for s, v in row["candidates"].items() if isinstance(v, list)}
    templates = {s: v for s, v in counted.items() if s != "compiler-seed"}

    def cell(launches) -> str:
        if launches is None:
            return f"{'-':>18}"
        mb = sum(b for _, _, b in launches) / 1e6
        return f"{len(launches):3d} {mb:9.1f} {mb * 1e6 / row['min_bytes']:4.2f}x" if row["min_bytes"] else f"{mb:9.1f}"

    best = min(templates, key=lambda s: sum(b for _, _, b in templates[s]), default=None)
    return (f"{name[:40]:40s} {row['min_bytes'] / 1e6:9.1f}  {cell(templates.get(best))}  "
            f"{cell(counted.get('compiler-seed'))}  {best or '-'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--seed", action="store_true", help="count the compiler seed too (tens of seconds each)")
    ap.add_argument("--json", help="write every launch of every candidate here")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    files = sorted(f for p in args.paths for f in (Path(p).glob("*.py") if Path(p).is_dir() else [Path(p)]))
    print(f"{'problem':40s} {'min MB':>9s}  {'best template: n, MB, /min':>18s}  {'seed: n, MB, /min':>18s}")
    out = {}
    for f in files:
        try:
            out[str(f)] = row = problem_rows(str(f), args.seed)
        except Exception as e:
            print(f"{f.stem[:40]:40s} failed: {type(e).__name__}: {str(e)[:100]}")
            continue
        print(_summary(f.stem, row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
