"""Profile one candidate: a worker job run under Nsight Compute (or torch.profiler when ncu is
missing or refused), classified against the problem's roofline by kevolve.profiling."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

from kevolve.profiling import KernelTime, Profile, device_facts, profile_kernels

from .sandbox import clean_environment
from .static_checks import check_source


def profile_candidate(evaluator, source: str, timeout_s: float = 180.0, keep_csv: str | None = None) -> Profile:
    """The profile of `source` at the shape it is timed at (the evaluator's device must be cuda)."""
    names = check_source(source).kernel_names
    workdir = Path(tempfile.mkdtemp(prefix="kevolve-profile-"))
    try:
        (workdir / "candidate.py").write_text(source)
        trial = evaluator.trials[-1].to_dict()  # the timed trial: the shape the candidate is timed at
        (workdir / "job.json").write_text(json.dumps({"problem": str(evaluator.problem.path.resolve()),
                                                      "trials": [trial], "repeat": 1,
                                                      "precision": evaluator.precision,
                                                      "cache_dir": str(evaluator.cache)}))
        env = clean_environment("cuda", evaluator.cache)
        argv = [sys.executable, "-m", "kevolve.tools.worker", "--profile", str(workdir)]

        def torch_profiler_times() -> list[KernelTime]:
            import subprocess

            subprocess.run(argv + ["--torch-profiler"], env=env, cwd=workdir, timeout=timeout_s, check=True,
                           capture_output=True)
            return [KernelTime.from_dict(d) for d in json.loads((workdir / "kernel_times.json").read_text())]

        roofline = evaluator.roofline()
        return profile_kernels(argv, env, str(workdir), names, roofline["cost"], device_facts().facts,
                                  timeout_s, fallback=torch_profiler_times,
                                  copy_bandwidth=roofline["copy_bandwidth"], keep_csv=keep_csv)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
