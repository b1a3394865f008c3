"""Candidates evaluated per minute: one batch of distinct candidates of one problem, on each executor.

    python scripts/bench_throughput.py [--problem examples/problems/softmax.py] [--candidates 16]
                                       [--configs local:1,local:8,ray] [--device cuda|cpu]

The batch is the builtin engine's seeds and their tuning mutations (distinct sources, so each one
compiles). Every configuration gets a fresh cache (no Triton or baseline cache carried over), is
warmed with one candidate outside the batch (reference, baselines, spare workers), then runs the
whole batch at once. Printed: wall time, candidates per minute, and the mean seconds per
candidate in each stage (gpu_wait is time spent waiting for another candidate's turn on the GPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("worker_start_wait", "import", "build", "compile", "gpu_wait", "correctness", "kernels", "timing",
          "judge")


def batch_sources(problem: Path, count: int) -> tuple[str, list[str]]:
    """(a warm-up candidate, `count` other distinct candidates) from the builtin engine."""
    from kevolve import builtin
    from kevolve.session import normalized_hash

    queue = [p.source for p in builtin.propose_candidates(problem)]
    pool, seen = [], set()
    # seeds, then their mutations, then mutations of those, until there are enough
    for source in queue:
        if len(pool) > count:
            break
        key = normalized_hash(source)
        if key not in seen:
            seen.add(key)
            pool.append(source)
            queue.extend(m.source for m in builtin.mutate(source, limit=8))
    if len(pool) < count + 1:
        sys.exit(f"only {len(pool)} distinct candidates for {problem}; ask for fewer")
    return pool[0], pool[1:count + 1]


def run_config(config: str, problem: Path, device: str, warm: str, batch: list[str]) -> dict:
    from kevolve.tools.executor import LocalExecutor, RayExecutor

    cache = Path(tempfile.mkdtemp(prefix=f"kevolve-throughput-{config.replace(':', '-')}-"))
    options = {"device": device, "cache_dir": cache, "timeout_s": 300}
    started = time.perf_counter()
    if config.startswith("local"):
        workers = int(config.split(":")[1]) if ":" in config else 1
        executor = LocalExecutor(problem, options, workers=workers)
    else:
        import ray

        gpus = 1 if device == "cuda" else 0
        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
        executor = RayExecutor(problem, options)
    try:
        executor.evaluate(warm, "warm.py")
        setup_s = time.perf_counter() - started
        t0 = time.perf_counter()
        futures = [executor.submit(source, f"c{i:02d}.py") for i, source in enumerate(batch)]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - t0
    finally:
        executor.close()
    stages = {s: statistics.mean(r["seconds"].get(s, 0.0) for r in results) for s in STAGES}
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"config": config, "setup_s": setup_s, "wall_s": wall, "per_min": 60 * len(batch) / wall,
            "statuses": statuses, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", type=Path, default=ROOT / "examples/problems/softmax.py")
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--configs", default="local:1,local:8,ray")
    parser.add_argument("--device", default=None, help="default: cuda when a GPU is visible")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    warm, batch = batch_sources(args.problem, args.candidates)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (interpreter)"
    print(f"{args.problem.name}: {len(batch)} candidates on {name}, {os.cpu_count()} CPU cores", flush=True)
    rows = []
    for config in args.configs.split(","):
        row = run_config(config.strip(), args.problem, device, warm, batch)
        rows.append(row)
        print(f"  {row['config']}: {row['wall_s']:.1f} s, {row['per_min']:.1f}/min {row['statuses']}", flush=True)
    print("\n| executor | batch wall s | candidates/min | setup s | " + " | ".join(STAGES) + " |")
    print("|---" * (4 + len(STAGES)) + "|")
    for row in rows:
        print(f"| {row['config']} | {row['wall_s']:.1f} | {row['per_min']:.1f} | {row['setup_s']:.1f} | "
              + " | ".join(f"{row['stages'][s]:.2f}" for s in STAGES) + " |")
    print("\nstage columns: mean seconds per candidate (overlapping across candidates when workers > 1)")


if __name__ == "__main__":
    main()
