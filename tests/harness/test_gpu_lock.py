"""The per-GPU lock (kevolve.tools.gpu_lock): one holder at a time across processes and threads,
and a holder killed with SIGKILL frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from kevolve.tools.gpu_lock import gpu_lock

HOLD = """
import sys, time
from pathlib import Path
from kevolve.tools.gpu_lock import gpu_lock
with gpu_lock(Path(sys.argv[1]), "gpu-test"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(tmp_path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_another_process_waits_for_the_holder(tmp_path):
    proc = _holder(tmp_path, 1.5)
    with gpu_lock(tmp_path, "gpu-test") as waited:
        assert waited > 0.8  # the holder slept about 1.5 s after saying "held"
    proc.wait(timeout=10)
    with gpu_lock(tmp_path, "gpu-other") as waited:  # another GPU's lock is free
        assert waited < 0.5


def test_a_killed_holder_frees_the_lock(tmp_path):
    proc = _holder(tmp_path, 600)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    started = time.perf_counter()
    with gpu_lock(tmp_path, "gpu-test"):
        pass
    assert time.perf_counter() - started < 2


def test_threads_of_one_process_take_turns(tmp_path):
    inside, most = [0], [0]
    guard = threading.Lock()

    def work():
        with gpu_lock(tmp_path, "gpu-test"):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert most[0] == 1


def test_a_holder_may_take_it_again_and_others_still_wait(tmp_path):
    """Nested use in one thread (a timing that triggers Inductor's autotuning) must not deadlock."""
    order = []

    def other():
        with gpu_lock(tmp_path, "gpu-test"):
            order.append("other")

    with gpu_lock(tmp_path, "gpu-test"):
        with gpu_lock(tmp_path, "gpu-test") as waited:
            assert waited == 0.0
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.2)
        order.append("holder")  # still held after the inner block ended: the other thread waits
    t.join(timeout=30)
    assert order == ["holder", "other"]


def test_inductor_autotuning_runs_inside_the_lock(monkeypatch):
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner

    from kevolve.tools.gpu_lock import lock_inductor_autotuning

    calls = []
    monkeypatch.setattr(CachingAutotuner, "benchmark_all_configs", lambda self, *a: calls.append(("bench", a)))

    class Recording:
        def __enter__(self):
            calls.append("lock")

        def __exit__(self, *exc):
            calls.append("unlock")

    lock_inductor_autotuning(Recording)
    lock_inductor_autotuning(Recording)  # once per process, however often it is asked
    CachingAutotuner.benchmark_all_configs(object(), 1)
    assert calls == ["lock", ("bench", (1,)), "unlock"]
