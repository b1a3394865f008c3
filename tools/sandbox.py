"""Worker processes: start them clean, hand them a job, and survive whatever they do.

Each candidate gets a fresh process (no state carries from one candidate to the next), started
in a new temporary folder with an environment that holds no secret. A crash, a signal, a hang or
an allocation past the memory cap ends the worker, never the harness. Starting Python and torch
costs seconds, so the Evaluator keeps one spare worker warming up in the background.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT_S = 180.0  # importing torch and creating a CUDA context, on a loaded machine
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


def cap_address_space(extra_bytes: int) -> None:
    """Cap this process (and what it starts) at what it has mapped now plus `extra_bytes`: a candidate's
    100 GB allocation fails at once instead of taking the machine. Call it after importing torch and
    triton, whose imports map a lot of address space."""
    import resource

    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra_bytes, mapped + extra_bytes))


def clean_environment(device: str, cache: Path, gpu: int | None = None) -> dict[str, str]:
    """The worker's environment: the parent's minus anything that looks like a secret. `gpu` picks one
    of the GPUs this process sees (its CUDA index) as the worker's only GPU."""
    env = {k: v for k, v in os.environ.items() if not any(m in k.upper() for m in SECRET_MARKERS)}
    if gpu is not None:
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[gpu] if gpu < len(visible) else str(gpu)
    env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               TRITON_CACHE_DIR=str(cache / "triton"), TORCH_EXTENSIONS_DIR=str(cache / "torch_extensions"))
    # Interpreter mode is decided when @triton.jit runs, so it must be in place before import.
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    return env


@dataclass
class WorkerOutcome:
    status: str  # finished | timeout | crashed | oom
    result: dict | None = None
    stage: str = "start"
    detail: str = ""
    log: str = ""
    seconds: dict = field(default_factory=dict)  # stage -> seconds


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Worker:
    def __init__(self, device: str, cache: Path, memory_bytes: int, gpu: int | None = None):
        self.device = device
        self.memory_bytes = memory_bytes
        # tmpfs where there is one: outputs cross the process boundary as files.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.workdir = Path(tempfile.mkdtemp(prefix="kevolve-worker-", dir=shm))
        self.log_path = self.workdir / "worker.log"
        read_fd, write_fd = os.pipe()
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kevolve.tools.worker", "--fd", str(write_fd), "--device", device,
             "--memory-bytes", str(memory_bytes)],
            stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir,
            env=clean_environment(device, cache, gpu), pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        self._messages = os.fdopen(read_fd, "r")
        self._buffer = ""
        self.ready = False
        self.started = time.perf_counter()

    def _read_message(self, deadline: float) -> dict | None:
        """The next JSON message, or None at the deadline or when the pipe closes."""
        while "\n" not in self._buffer:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self._messages], [], [], min(remaining, 0.05))
            if self.memory_bytes and self.device == "cuda" and _rss_bytes(self.process.pid) > self.memory_bytes:
                raise MemoryError
            if not ready:
                continue
            chunk = os.read(self._messages.fileno(), 65536).decode(errors="replace")
            if not chunk:
                return {"event": "eof"}
            self._buffer += chunk
        line, self._buffer = self._buffer.split("\n", 1)
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"event": "garbage", "text": line[:200]}

    def wait_ready(self, timeout_s: float) -> bool:
        if self.ready:
            return True
        message = self._read_message(time.perf_counter() + timeout_s)
        self.ready = bool(message and message.get("event") == "ready")
        return self.ready

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def run(self, job_dir: Path, stage_timeouts: dict[str, float], default_timeout: float) -> WorkerOutcome:
        """Send the job and follow the worker's stages, each under its own timeout."""
        outcome = WorkerOutcome(status="crashed")
        try:
            waited = time.perf_counter()
            if not self.wait_ready(STARTUP_TIMEOUT_S):
                return self._finish(outcome, "crashed", "the worker did not start: " + self.log_tail(500))
            outcome.seconds["worker_start_wait"] = round(time.perf_counter() - waited, 3)
            self.process.stdin.write(f"{job_dir}\n".encode())
            self.process.stdin.close()
            stage, stage_start = "import", time.perf_counter()
            while True:
                limit = stage_timeouts.get(stage, default_timeout)
                message = self._read_message(stage_start + limit)
                if message is None:
                    outcome.stage = stage
                    return self._finish(outcome, "timeout", f"no progress in stage '{stage}' for {limit:.0f} s")
                event = message.get("event")
                if event == "stage":
                    now = time.perf_counter()
                    outcome.seconds[stage] = round(now - stage_start, 3)
                    stage, stage_start = message.get("stage", "?"), now
                elif event == "done":
                    outcome.seconds[stage] = round(time.perf_counter() - stage_start, 3)
                    outcome.stage = stage
                    self.process.wait(timeout=30)
                    result_path = job_dir / "result.json"
                    if not result_path.exists():
                        return self._finish(outcome, "crashed", "the worker wrote no result")
                    outcome.result = json.loads(result_path.read_text())
                    return self._finish(outcome, "finished", "")
                elif event == "eof":
                    outcome.stage = stage
                    code = self.process.wait(timeout=30)
                    why = f"was killed by {_signal_name(code)}" if code < 0 else f"exited with status {code}"
                    return self._finish(outcome, "crashed", f"the worker {why} in stage '{stage}'")
        except MemoryError:
            return self._finish(outcome, "oom", f"host memory use passed the cap of {self.memory_bytes >> 20} MiB")
        except (subprocess.TimeoutExpired, BrokenPipeError, OSError) as e:
            return self._finish(outcome, "crashed", f"lost the worker: {e}")

    def _finish(self, outcome: WorkerOutcome, status: str, detail: str) -> WorkerOutcome:
        outcome.status, outcome.detail = status, detail
        self.kill()
        outcome.log = self.log_tail()
        return outcome

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.process.kill()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for stream in (self._messages, self._log):
            try:
                stream.close()
            except OSError:
                pass

    def cleanup(self) -> None:
        self.kill()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)
