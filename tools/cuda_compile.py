"""CUDA C++ candidates: builds keyed by source hash, an nvcc check where there is no GPU, and
compiler errors mapped back to the candidate's own lines.

`load_inline` writes the CUDA sources to `cuda.cu` after three include lines of its own; nvcc
reports lines of that file. The candidate holds the same text in a string literal, so an error
line maps back to `literal's first line + (cuda.cu line - 3) - 1`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import torch

from .static_checks import check_source

PREFIX_LINES = 3  # '#include <torch/types.h>', '<cuda.h>', '<cuda_runtime.h>' added by load_inline
_NVCC_ERROR = re.compile(r"cuda\.cu\((\d+)\): (error|catastrophic error): (.*)")


class CudaBuildError(RuntimeError):
    """The CUDA sources did not compile; the message names the candidate's line."""


class CudaNotRunnable(RuntimeError):
    """The CUDA sources compiled, but there is no GPU here to run them."""


def _as_list(sources) -> list[str]:
    if sources is None:
        return []
    return [sources] if isinstance(sources, str) else list(sources)


def map_nvcc_errors(log: str, candidate_source: str, cuda_text: str, filename: str = "candidate.py") -> str:
    """nvcc's errors on cuda.cu as 'candidate.py:LINE: message' lines (at most five)."""
    start = None
    for line, text in check_source(candidate_source).cuda_sources:
        if text.strip() and text.strip() in cuda_text:
            start = line
            break
    lines = []
    for match in _NVCC_ERROR.finditer(log):
        cu_line, message = int(match.group(1)), match.group(3).strip()
        if start is not None and cu_line > PREFIX_LINES:
            lines.append(f"{filename}:{start + cu_line - PREFIX_LINES - 1}: {message}")
        else:
            lines.append(f"cuda.cu:{cu_line}: {message}")
    if not lines:
        tail = [line for line in log.strip().splitlines() if line.strip()][-3:]
        lines = tail or ["nvcc failed"]
    return "\n".join(lines[:5])


def nvcc_check(cuda_text: str, cache: Path, timeout_s: float = 300.0) -> str | None:
    """Compile CUDA sources to an object file with nvcc against torch's headers.

    Returns nvcc's log on failure, None on success. Successes are remembered by hash, so the
    same source is never compiled twice.
    """
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        raise CudaNotRunnable("no GPU and no nvcc here: the CUDA C++ candidate was not even compiled")
    digest = hashlib.sha256(cuda_text.encode()).hexdigest()[:20]
    marker = cache / "nvcc-ok" / digest
    if marker.exists():
        return None
    work = cache / "nvcc-work" / digest
    work.mkdir(parents=True, exist_ok=True)
    source = work / "cuda.cu"
    source.write_text(cuda_text)
    include = Path(torch.__file__).parent / "include"
    command = [str(nvcc), "-c", str(source), "-o", str(work / "cuda.o"), "-std=c++17",
               "-I", str(include), "-I", str(include / "torch" / "csrc" / "api" / "include"),
               "-I", sysconfig.get_paths()["include"], "--expt-relaxed-constexpr", "-w"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=work)
    except subprocess.TimeoutExpired:
        return f"nvcc timed out after {timeout_s:.0f} s"
    if done.returncode != 0:
        return done.stdout + done.stderr
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return None


def make_load_inline(original, cache: Path, device: str, candidate_source: str):
    """A load_inline for the worker: the extension name carries the source hash (so a changed
    source never reuses a stale build and an unchanged one never rebuilds), build errors come back
    mapped to the candidate's lines, and without a GPU it stops after the nvcc check."""

    def load_inline(name, cpp_sources, cuda_sources=None, *args, **kwargs):
        cuda_list = _as_list(cuda_sources)
        cuda_text = "\n".join(["#include <torch/types.h>", "#include <cuda.h>", "#include <cuda_runtime.h>",
                               *cuda_list])
        digest = hashlib.sha256(repr((_as_list(cpp_sources), cuda_list, kwargs.get("functions"))).encode())
        if device != "cuda" or not torch.cuda.is_available():
            if not cuda_list:
                raise CudaNotRunnable("C++ extension without CUDA sources: nothing to check without a GPU")
            log = nvcc_check(cuda_text, cache)
            if log is not None:
                raise CudaBuildError(map_nvcc_errors(log, candidate_source, cuda_text))
            raise CudaNotRunnable("CUDA C++ compiled with nvcc; no GPU here to run or check it")
        kwargs.setdefault("build_directory", None)
        build = cache / "torch_extensions" / f"{name}_{digest.hexdigest()[:12]}"
        build.mkdir(parents=True, exist_ok=True)
        kwargs["build_directory"] = str(build)
        try:
            return original(f"{name}_{digest.hexdigest()[:12]}", cpp_sources, cuda_sources, *args, **kwargs)
        except RuntimeError as e:
            log = str(e)
            for path in build.glob("*.log"):
                log += path.read_text(errors="replace")
            raise CudaBuildError(map_nvcc_errors(log, candidate_source, cuda_text)) from None

    return load_inline
