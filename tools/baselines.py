"""Eager and torch.compile times of the reference, measured once per problem, shape and device
and reused: every candidate's speedup is a ratio against the same two numbers, taken with the
same timing function (kevolve.tools.timing) in the trusted process."""

from __future__ import annotations

import hashlib
import json
import time
from functools import partial

import torch

from .gpu_lock import gpu_identity, gpu_lock, lock_inductor_autotuning
from .timing import l2_flush_buffer, time_cuda
from .trials import Trial, build_trial


def _key(evaluator, shape: dict) -> str:
    name = torch.cuda.get_device_name(0)
    raw = json.dumps([evaluator.problem.source_hash, shape, name, torch.__version__, evaluator.precision],
                     sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def measure(evaluator, shape: dict, *, use_cache: bool = True) -> dict:
    """{'eager_ms', 'compile_ms', 'eager_spread', 'compile_spread', ...} for `shape`, cached on disk."""
    memo = evaluator.__dict__.setdefault("_baselines", {})
    key = _key(evaluator, shape)
    if key in memo:
        return memo[key]
    path = evaluator.cache / "baselines" / f"{key}.json"
    if use_cache and path.exists():
        memo[key] = json.loads(path.read_text())
        return memo[key]

    instance = build_trial(evaluator.problem, Trial(0, shape, evaluator.seed + 17, "problem"), "cuda")
    model, inputs = instance.model.eval(), instance.inputs
    flush = l2_flush_buffer()
    compiled_ms = compiled_spread = compiled = None
    note = ""
    started = time.perf_counter()
    with torch.no_grad():
        # The first call compiles (CPU work, outside the GPU lock, so other sessions time meanwhile);
        # Inductor's autotuning inside it takes the lock like a timing.
        # (the lock's name and folder, not evaluator.gpu_lock: the patch outlives this evaluator)
        lock_inductor_autotuning(partial(gpu_lock, evaluator.cache, gpu_identity()))
        try:
            compiled = torch.compile(model)
            compiled(*inputs)
            torch.cuda.synchronize()
        except Exception as e:  # torch.compile cannot handle every module; say so, keep eager
            compiled, note = None, f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        compile_seconds = time.perf_counter() - started
        with evaluator.gpu_lock():
            eager = time_cuda(lambda: model(*inputs), flush=flush)
            if compiled is not None:
                compiled_timing = time_cuda(lambda: compiled(*inputs), flush=flush)
                compiled_ms, compiled_spread = compiled_timing.median_ms, compiled_timing.spread
    record = {"eager_ms": eager.median_ms, "eager_spread": eager.spread, "compile_ms": compiled_ms,
              "compile_spread": compiled_spread, "compile_seconds": round(compile_seconds, 2),
              "note": note, "shape": shape, "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    memo[key] = record
    return record
