"""What the builtin engine gives each problem, checked by the real harness on the CPU (no GPU needed).

    python scripts/coverage_cpu.py DIR_OR_FILE ... [--no-seed] [--gpu-compile] [--jobs N]

For each problem: every template candidate `propose_candidates` returns, and the compiler seed
(torch.compile's kernels exported), evaluated by `Evaluator(device="cpu")`: Triton's interpreter on
small shapes, correctness only; with --gpu-compile, each accepted one also compiled for an H100
(sm_90) at the problem's own shape, its registers, spills and shared memory in the line. One line
per candidate, then a summary of problems with no accepted candidate. This is how unseen problems
find lowering and harness bugs before a GPU run does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")


def _check(path: str, seed: bool, gpu_compile: bool = False) -> list[tuple[str, str, str]]:
    """(candidate, status, detail) for one problem; runs in a process of its own."""
    from kevolve.builtin import compiler_seed, propose_candidates
    from kevolve.tools.evaluate import Evaluator
    from kevolve.tools.gpu_compile import describe

    rows: list[tuple[str, str, str]] = []
    said: list[str] = []  # the engine's warnings (why a seed or template is missing)
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("kevolve").addHandler(handler)
    try:
        proposals = [(p.strategy, p.source) for p in propose_candidates(path)]
    except Exception as e:  # a crash here is itself a finding
        rows.append(("templates", "crashed", f"{type(e).__name__}: {e}"))
        proposals = []
    if not proposals:
        rows.append(("templates", "none", said[-1][:160] if said else "no template covers it"))
    if seed:
        try:
            p = compiler_seed(path, "cpu")
            if p is None:
                rows.append(("compiler-seed", "none", said[-1][:160] if said else "no seed exported"))
            else:
                proposals.append((p.strategy, p.source))
        except Exception as e:
            rows.append(("compiler-seed", "crashed", f"{type(e).__name__}: {e}"))
    if not proposals:
        return rows
    try:
        with Evaluator(path, device="cpu", gpu_compile=gpu_compile) as evaluator:
            for strategy, source in proposals:
                r = evaluator.evaluate(source)
                failed = [c for c in r.get("checks", []) if not c["passed"]]
                if failed:
                    detail = failed[0]["detail"][:140]
                elif r["status"] != "accepted":  # a timeout or crash: no check failed, the error says why
                    detail = (r.get("error") or "")[:140]
                else:
                    detail = f"max_abs_error {r.get('max_abs_error') or 0:.2e}"
                    if r.get("gpu_compile"):
                        detail += "; " + describe(r["gpu_compile"])
                rows.append((strategy, r["status"], detail))
    except Exception as e:  # a problem the harness itself refuses
        rows.append(("harness", "refused", f"{type(e).__name__}: {str(e)[:160]}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--no-seed", action="store_true", help="templates only (seeds are slow under the interpreter)")
    ap.add_argument("--gpu-compile", action="store_true", help="also compile accepted candidates for sm_90")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    files = sorted(str(f) for p in map(Path, args.paths) for f in (sorted(p.glob("*.py")) if p.is_dir() else [p]))
    uncovered = []
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for path, rows in zip(files, pool.map(_check, files, [not args.no_seed] * len(files),
                                                     [args.gpu_compile] * len(files))):
            for strategy, status, detail in rows:
                print(f"{Path(path).stem:34s} {strategy:32s} {status:14s} {detail}", flush=True)
            if not any(status == "accepted" for _, status, _ in rows):
                uncovered.append(Path(path).stem)
    print(f"\n{len(files) - len(uncovered)} of {len(files)} problems have an accepted candidate "
          f"({time.perf_counter() - started:.0f} s)" + (f"; none for: {', '.join(uncovered)}" if uncovered else ""))
    return 1 if uncovered else 0


if __name__ == "__main__":
    sys.exit(main())
