"""The builtin engine's template candidates, checked and timed by the harness (GPU).

    python scripts/bench_builtin.py [problem.py ...]     (default: every file in examples/problems)

For each problem: every candidate `propose_candidates` returns is evaluated (full correctness
battery, then timing beside eager and torch.compile); one line per candidate with its speedups and
the fraction of the speed of light it reaches.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kevolve.builtin import propose_candidates
from kevolve.tools.evaluate import Evaluator

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    problems = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "examples/problems").glob("*.py"))
    print(f"{'problem':22s} {'candidate':28s} {'status':10s} {'ms':>8s} {'eager':>7s} {'compile':>7s} {'SOL':>5s}")
    for path in problems:
        started = time.perf_counter()
        proposals = propose_candidates(path)
        with Evaluator(path, device="cuda") as evaluator:
            for proposal in proposals:
                r = evaluator.evaluate(proposal.source)
                t = r["timing"]
                if t:
                    print(f"{path.stem:22s} {proposal.strategy:28s} {r['status']:10s} {t['candidate_ms']:8.4f} "
                          f"{t['speedup_vs_eager']:6.2f}x {t['speedup_vs_compile'] or 0:6.2f}x "
                          f"{t.get('sol_fraction', 0):5.0%}", flush=True)
                else:
                    print(f"{path.stem:22s} {proposal.strategy:28s} {r['status']:10s} {r['error'][:90]}", flush=True)
        print(f"  ({len(proposals)} candidates, {time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
