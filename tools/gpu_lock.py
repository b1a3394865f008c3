"""One timed thing per GPU at a time, across threads, processes and sessions on a machine.

Candidates compile and check in parallel, but two timings on one GPU slow each other down and
both numbers come out wrong. Every step that times or profiles on a GPU holds that GPU's lock:
an exclusive `flock` on a file named by the GPU's UUID in the kevolve cache, so two sessions that
share a machine (or a Ray node) share the lock too. The kernel drops a flock when its process
dies, so a crashed or killed worker never leaves a GPU locked.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

_thread_locks: dict[str, threading.Lock] = {}  # flock is per open file: threads of one process also need this
_guard = threading.Lock()
_held = threading.local()  # the locks this thread holds: taking one again inside it is a no-op


def gpu_identity(index: int = 0) -> str:
    """A name for the GPU that CUDA calls `index` here, the same in every process on the machine
    whatever CUDA_VISIBLE_DEVICES says."""
    import torch

    props = torch.cuda.get_device_properties(index)
    uuid = getattr(props, "uuid", None)
    return f"gpu-{uuid}" if uuid else f"gpu-{os.environ.get('CUDA_VISIBLE_DEVICES', '')}-{index}"


@contextmanager
def gpu_lock(cache_dir: Path, name: str) -> Iterator[float]:
    """Hold the lock called `name` (see gpu_identity); yields the seconds spent waiting for it."""
    held = _held.__dict__.setdefault("names", set())
    if name in held:
        yield 0.0
        return
    folder = Path(cache_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with _guard:
        local = _thread_locks.setdefault(name, threading.Lock())
    started = time.perf_counter()
    with local:
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.add(name)
            try:
                yield time.perf_counter() - started
            finally:
                held.discard(name)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def lock_inductor_autotuning(lock: Callable[[], AbstractContextManager]) -> None:
    """torch.compile's code benchmarks a kernel's configs the first time it runs (Inductor's autotuner).
    From now on, in this process, those runs hold `lock()` (the GPU's lock) like any timing, so the
    compile itself, seconds to minutes of CPU work, can run outside the lock while others time."""
    try:
        from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    except ImportError:  # another torch: its autotuning runs unlocked
        return
    original = CachingAutotuner.benchmark_all_configs
    if getattr(original, "kevolve_locked", False):
        return

    def benchmark_all_configs(self, *args, **kwargs):
        with lock():
            return original(self, *args, **kwargs)

    benchmark_all_configs.kevolve_locked = True
    CachingAutotuner.benchmark_all_configs = benchmark_all_configs
