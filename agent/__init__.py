"""kevolve: PyTorch module in, faster verified kernel out.

    import kevolve
    kernel = kevolve.optimize("problem.py", rounds=5)         # or kevolve.optimize(module, [inputs])
    kernel.module(x)                                          # the verified kernel, as an nn.Module
    result = kevolve.evaluate("problem.py", "candidate.py")   # the dict of `kevolve evaluate --json`
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def __getattr__(name: str):
    """optimize, load, OptimizedKernel (kevolve.api) load on first use: `import kevolve` stays light."""
    if name in ("optimize", "load", "OptimizedKernel", "OptimizeError"):
        from kevolve import api

        return getattr(api, name)
    raise AttributeError(f"module 'kevolve' has no attribute {name!r}")


def evaluate(problem: str | Path, candidate: str | Path, *, device: str | None = None, precision: str = "fp32",
             shapes: list[dict] | None = None, timeout_s: float = 120.0) -> dict:
    """Evaluate one candidate (a file path, or its source text) against a problem file.

    Mirrors `kevolve evaluate --json`; raises kevolve.tools.problem.ProblemError on bad input.
    """
    from kevolve.tools.evaluate import Evaluator
    from kevolve.tools.problem import ProblemError

    text = str(candidate)
    if "\n" in text or "class ModelNew" in text:
        source = text
    else:
        path = Path(candidate)
        if not path.is_file():
            raise ProblemError(f"{path}: no such candidate file")
        source = path.read_text()
    with Evaluator(problem, device=device, precision=precision, shapes=shapes, timeout_s=timeout_s,
                   prewarm=False) as evaluator:
        return evaluator.evaluate(source)
