"""Where candidate evaluations run: in this process's worker pool, or as tasks on a Ray cluster.

Both executors take the same calls as an Evaluator (`evaluate`, `profile`, `device`, `device_info`,
`close`) plus `submit`, which returns a future, so a session can keep several candidates in flight.

    local  several evaluations at once: worker processes compile in parallel on the CPU cores,
           and each GPU's lock (kevolve.tools.gpu_lock) lets one of them at a time run on it.
    ray    each evaluation is a Ray task asking for one GPU (or one CPU with --device cpu), so many
           sessions and machines share one pool. A task lost with its worker or node is retried
           by Ray elsewhere; the session records a result once, when the future resolves.

    ex = make_executor("local", problem_path, evaluator_options(settings), workers=4)
    futures = [ex.submit(src, name) for name, src in batch]
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .problem import ProblemError

EVALUATOR_KEYS = ("device", "precision", "timeout_s", "seed", "shapes", "memory_gb")


class ExecutorError(Exception):
    """An executor that cannot start (Ray missing, cluster unreachable): one line, exit 2."""


def evaluator_options(settings: dict) -> dict:
    """The Evaluator keyword arguments a session's settings give (the same on every executor)."""
    options = {k: settings.get(k) for k in EVALUATOR_KEYS if settings.get(k) is not None}
    options.setdefault("precision", "fp32")
    return options


def recheck_pair(evaluator, new: tuple[str, str], old: tuple[str, str]) -> tuple[dict, dict]:
    """(source, name) of a would-be best and of the best: both on fresh inputs, one after the other
    on the same evaluator (so on the same GPU), so their times compare."""
    return (evaluator.evaluate(new[0], new[1], fresh_inputs=True),
            evaluator.evaluate(old[0], old[1], fresh_inputs=True))


class LocalExecutor:
    """An Evaluator driven from a thread pool: the worker processes do the heavy lifting in parallel."""

    kind = "local"

    def __init__(self, problem: str | Path, options: dict, workers: int = 1, evaluator: Any = None):
        from .evaluate import Evaluator

        self.evaluator = evaluator or Evaluator(problem, **options)
        self.workers = max(1, int(workers))
        self.evaluator.set_concurrency(self.workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kevolve-eval")
        self.device = self.evaluator.device
        self.device_info = dict(self.evaluator._device_info)

    def submit(self, source: str, name: str = "candidate", *, fresh_inputs: bool = False) -> Future:
        return self._pool.submit(self.evaluator.evaluate, source, name, fresh_inputs=fresh_inputs)

    def evaluate(self, source: str, name: str = "candidate", *, fresh_inputs: bool = False) -> dict:
        return self.submit(source, name, fresh_inputs=fresh_inputs).result()

    def recheck(self, new: tuple[str, str], old: tuple[str, str]) -> tuple[dict, dict]:
        return recheck_pair(self.evaluator, new, old)

    def profile(self, source: str) -> dict | None:
        return self.evaluator.profile(source)

    def close(self) -> None:
        """Stop now: queued evaluations are dropped and running ones killed (a resumed session runs
        every candidate that has no stored result again)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.evaluator.close()
        self._pool.shutdown(wait=True)


# -- Ray ---------------------------------------------------------------------------------------------

_evaluators: dict[str, Any] = {}  # in each Ray worker process: one Evaluator per problem and settings
_evaluators_lock = threading.Lock()


def _node_evaluator(spec: dict):
    """This Ray worker's Evaluator for `spec`, built once: the problem file travels as text, so the
    nodes need kevolve installed but no shared file system."""
    from .evaluate import Evaluator

    key = hashlib.sha256(json.dumps([spec, os.environ.get("CUDA_VISIBLE_DEVICES")], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    with _evaluators_lock:
        if key not in _evaluators:
            folder = Path(tempfile.gettempdir()) / "kevolve-ray-problems" / key
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / spec["problem_name"]
            path.write_text(spec["problem_source"])
            _evaluators[key] = Evaluator(path, **spec["options"])
        return _evaluators[key]


def _evaluate_task(spec: dict, source: str, name: str, fresh_inputs: bool) -> dict:
    result = _node_evaluator(spec).evaluate(source, name, fresh_inputs=fresh_inputs)
    result["node"] = {"host": socket.gethostname(), "pid": os.getpid()}
    return result


def _recheck_task(spec: dict, new: tuple[str, str], old: tuple[str, str]) -> tuple[dict, dict]:
    return recheck_pair(_node_evaluator(spec), new, old)


def _profile_task(spec: dict, source: str) -> dict | None:
    return _node_evaluator(spec).profile(source)


def _describe_task(spec: dict) -> dict:
    return dict(_node_evaluator(spec)._device_info)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A clear error now rather than a long hang in ray.init when no cluster answers at `address`."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ExecutorError(f"--ray-address {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ExecutorError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e})") from None


class RayExecutor:
    """Evaluations as Ray tasks. `address` None starts a local Ray instance on this machine."""

    kind = "ray"

    def __init__(self, problem: str | Path, options: dict, address: str | None = None, *,
                 max_retries: int = 3, init_options: dict | None = None):
        try:
            import ray
        except ImportError:
            raise ExecutorError("--executor ray needs Ray: pip install 'kevolve[ray]'") from None
        if address:
            check_reachable(address)
        self._ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False, **(init_options or {}))
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ExecutorError(f"--executor ray: could not join the cluster at {address or 'local'}: "
                                    f"{str(e).splitlines()[0]}") from None
            self._owns_ray = True
        else:
            self._owns_ray = False
        path = Path(problem)
        options = dict(options)
        self.device = options.get("device") or ("cuda" if _cluster_has_gpus(ray) else "cpu")
        options["device"] = self.device
        self.spec = {"problem_name": path.name, "problem_source": path.read_text(), "options": options}
        # One GPU per evaluation on a GPU cluster, one CPU core otherwise. max_calls=0: a Ray worker
        # keeps its Evaluator (reference, baselines, warm sandbox) from one candidate to the next.
        resources = {"num_gpus": 1, "num_cpus": 1} if self.device == "cuda" else {"num_cpus": 1}
        common = dict(max_calls=0, **resources)
        self._evaluate = ray.remote(max_retries=max_retries, retry_exceptions=False, **common)(_evaluate_task)
        self._profile = ray.remote(max_retries=max_retries, **common)(_profile_task)
        self._recheck = ray.remote(max_retries=max_retries, retry_exceptions=False, **common)(_recheck_task)
        describe = ray.remote(max_retries=max_retries, **common)(_describe_task)
        self.device_info = self._get(describe.remote(self.spec))  # the problem is checked on the cluster now

    def _get(self, ref) -> Any:
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, ProblemError):
                raise ProblemError(str(cause)) from None
            raise

    def submit(self, source: str, name: str = "candidate", *, fresh_inputs: bool = False) -> Future:
        return self._evaluate.remote(self.spec, source, name, fresh_inputs).future()

    def evaluate(self, source: str, name: str = "candidate", *, fresh_inputs: bool = False) -> dict:
        return self._get(self._evaluate.remote(self.spec, source, name, fresh_inputs))

    def recheck(self, new: tuple[str, str], old: tuple[str, str]) -> tuple[dict, dict]:
        """Both in one task: the would-be best and the best are timed on the same GPU."""
        return tuple(self._get(self._recheck.remote(self.spec, new, old)))

    def profile(self, source: str) -> dict | None:
        return self._get(self._profile.remote(self.spec, source)) if self.device == "cuda" else None

    def close(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()


def _cluster_has_gpus(ray) -> bool:
    return ray.cluster_resources().get("GPU", 0) > 0


def make_executor(kind: str, problem: str | Path, options: dict, *, workers: int = 1,
                  ray_address: str | None = None, evaluator: Any = None):
    """`local` (the default) or `ray`; options are Evaluator keyword arguments (evaluator_options)."""
    if kind == "local":
        return LocalExecutor(problem, options, workers, evaluator=evaluator)
    if kind == "ray":
        return RayExecutor(problem, options, ray_address)
    raise ExecutorError(f"--executor {kind}: choose local or ray")
