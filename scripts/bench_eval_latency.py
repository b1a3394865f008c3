"""How long one more candidate takes once a problem's first candidate has been evaluated.

Run on a GPU: python scripts/bench_eval_latency.py [--rounds 5]
For each example problem: evaluate its candidate once (baselines, Triton compile, warm caches),
then evaluate variants of it that differ only in source text (so each compiles anew unless
cached) and report each evaluation's wall time and where it went.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from kevolve.tools.evaluate import Evaluator

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [("scale_bias_gelu", "scale_bias_gelu_triton"), ("softmax", "softmax_triton")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for problem, candidate in PAIRS:
        source = (ROOT / "examples/candidates" / f"{candidate}.py").read_text()
        started = time.perf_counter()
        evaluator = Evaluator(ROOT / "examples/problems" / f"{problem}.py", device="cuda")
        setup = time.perf_counter() - started
        first = evaluator.evaluate(source)
        first_s = time.perf_counter() - started
        times, parts = [], []
        for i in range(args.rounds):
            time.sleep(1.0)  # a session thinks between candidates; the spare worker warms meanwhile
            variant = source + f"\n# variant {i} {time.time()}\n"
            t0 = time.perf_counter()
            result = evaluator.evaluate(variant)
            times.append(time.perf_counter() - t0)
            flat = {k: v for k, v in result["seconds"].items() if isinstance(v, (int, float))}
            for group in ("correctness_split", "judge_split"):  # inside the worker's correctness, the comparison
                flat.update({f"{group.split('_')[0]}.{k}": v for k, v in result["seconds"].get(group, {}).items()})
            parts.append(flat)
            assert result["status"] == "accepted", result["error"]
        evaluator.close()
        timing = first["timing"]
        print(f"\n{problem}: setup {setup:.2f} s, first candidate {first_s:.2f} s all told; eager "
              f"{timing['eager_ms']:.4f} ms, torch.compile {timing['compile_ms']:.4f} ms, candidate "
              f"{timing['candidate_ms']:.4f} ms ({timing['speedup_vs_eager']:.2f}x eager, "
              f"{timing['speedup_vs_compile']:.2f}x compile)")
        print(f"  next candidates: median {statistics.median(times):.2f} s (min {min(times):.2f}, "
              f"max {max(times):.2f})")
        keys = sorted({k for p in parts for k in p})
        print("  median seconds by stage: " + ", ".join(
            f"{k} {statistics.median(p.get(k, 0) for p in parts):.2f}" for k in keys))
        rows.append((problem, statistics.median(times)))
    worst = max(t for _, t in rows)
    print(f"\nworst median time for one more candidate: {worst:.2f} s (target < 3 s)")


if __name__ == "__main__":
    main()
