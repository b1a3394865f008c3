"""The Python API on a GPU: kevolve.optimize returns a module faster than eager (issue 7's check).

    python scripts/gpu_api_check.py [--problem examples/problems/scale_bias_gelu.py] [--rounds 4]

Builds the reference model from the problem file in this script (as a user's notebook would), hands
the module object and example inputs to kevolve.optimize with the builtin engine, then times the
returned module, eager and torch.compile side by side in this process (same timing function as the
harness: L2 flushed, medians with spread), and checks its output against eager.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import kevolve
from kevolve.tools.problem import load_problem
from kevolve.tools.timing import l2_flush_buffer, time_cuda

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problem", type=Path, default=ROOT / "examples/problems/scale_bias_gelu.py")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    instance = load_problem(args.problem).instantiate({}, seed=0)
    model = instance.model.cuda().eval()
    inputs = [x.cuda() if isinstance(x, torch.Tensor) else x for x in instance.inputs]
    kernel = kevolve.optimize(model, inputs, rounds=args.rounds, device="cuda",
                              workspace=Path(tempfile.mkdtemp(prefix="kevolve-api-")))
    fast = kernel.module.cuda().eval()
    flush = l2_flush_buffer()
    with torch.no_grad():
        expected, got = model(*inputs), fast(*inputs)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        compiled = torch.compile(model)
        times = {"kevolve": time_cuda(lambda: fast(*inputs), flush=flush),
                 "eager": time_cuda(lambda: model(*inputs), flush=flush),
                 "torch.compile": time_cuda(lambda: compiled(*inputs), flush=flush)}
    print(f"\n{args.problem.name} on {torch.cuda.get_device_name(0)}: session says {kernel.speedup_vs_eager:.2f}x "
          f"eager, {kernel.speedup_vs_compile or float('nan'):.2f}x compile; report {kernel.report_path}")
    for name, t in times.items():
        print(f"  {name:14s} {t.median_ms:.4f} ms (spread {t.spread:.1%}, {t.reps} reps)")
    ratio = times["eager"].median_ms / times["kevolve"].median_ms
    print(f"returned module vs eager, side by side: {ratio:.2f}x "
          f"({'faster' if ratio > 1 + times['kevolve'].spread else 'NOT faster'} than eager)")


if __name__ == "__main__":
    main()
