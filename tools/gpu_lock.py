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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_thread_locks: dict[str, threading.Lock] = {}  # flock is per open file: threads of one process also need this
_guard = threading.Lock()


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
    folder = Path(cache_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with _guard:
        local = _thread_locks.setdefault(name, threading.Lock())
    started = time.perf_counter()
    with local:
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield time.perf_counter() - started
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
