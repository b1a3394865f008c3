"""Executors: several candidates in flight on local worker processes, or as tasks on a Ray cluster
(a real local one, 2 CPUs), with the verdicts one Evaluator gives one candidate at a time."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from kevolve.tools.executor import ExecutorError, LocalExecutor, RayExecutor, check_reachable, evaluator_options

HERE = Path(__file__).parent
PROBLEM = HERE / "problems" / "relu_rand.py"
NAMES = ["relu_honest.py", "relu_segfault.py", "relu_fallback.py", "relu_kernel_error.py"]
OPTIONS = evaluator_options({"device": "cpu", "timeout_s": 60})


def _batch() -> list[tuple[str, str]]:
    return [(name, (HERE / "candidates" / name).read_text()) for name in NAMES]


def _summary(result: dict) -> tuple:
    return result["status"], result["custom_kernel"], result["error"].split(":")[0]


# What an Evaluator says of each one at a time (test_battery checks these against a lone Evaluator).
EXPECTED = {"relu_honest.py": ("accepted", True, ""),
            "relu_segfault.py": ("crashed", False, "the worker was killed by SIGSEGV in stage 'compile'"),
            "relu_fallback.py": ("rejected", False, "no kernel the candidate defines ran"),
            "relu_kernel_error.py": ("compile_error", False, "candidate.py")}


def test_local_executor_gives_the_same_verdicts():
    ex = LocalExecutor(PROBLEM, OPTIONS, workers=2)
    try:
        futures = {name: ex.submit(source, name) for name, source in _batch()}
        got = {name: _summary(f.result(timeout=300)) for name, f in futures.items()}
    finally:
        ex.close()
    assert got == EXPECTED
    seconds = futures["relu_honest.py"].result()["seconds"]  # where an evaluation's time went, split finer
    assert set(seconds["correctness_split"]) == {"build", "forward", "checks", "save"}
    assert sum(seconds["correctness_split"].values()) <= seconds["correctness"] + 0.05
    assert set(seconds["judge_split"]) == {"load", "compare"}


def _slow_honest(copy: int) -> str:
    """relu_honest, with its kernel launched 15 times a forward: seconds under the interpreter."""
    source = (HERE / "candidates" / "relu_honest.py").read_text()
    launch = "    relu_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)\n"
    assert launch in source
    return source.replace(launch, "    for _ in range(15):\n    " + launch) + f"\n# copy {copy}\n"


def test_local_executor_runs_candidates_side_by_side():
    """Two workers: two slow candidates finish in less time than the two took together."""
    ex = LocalExecutor(PROBLEM, OPTIONS, workers=2)
    try:
        ex.evaluate((HERE / "candidates" / "relu_honest.py").read_text(), "warm.py")  # reference and spares ready
        started = time.perf_counter()
        futures = [ex.submit(_slow_honest(i), f"slow{i}.py") for i in range(2)]
        results = [f.result(timeout=300) for f in futures]
        elapsed = time.perf_counter() - started
    finally:
        ex.close()
    assert [r["status"] for r in results] == ["accepted", "accepted"], [r["error"] for r in results]
    each = [r["seconds"]["total"] for r in results]
    assert elapsed < 0.8 * sum(each), (elapsed, each)


# -- Ray ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_verdicts(ray_cluster):
    ex = RayExecutor(PROBLEM, OPTIONS)
    assert ex.device == "cpu" and "interpreter" in ex.device_info["name"]
    futures = {name: ex.submit(source, name) for name, source in _batch()}
    results = {name: f.result(timeout=300) for name, f in futures.items()}
    assert {name: _summary(r) for name, r in results.items()} == EXPECTED
    assert all(r["node"]["pid"] != os.getpid() for r in results.values())  # they ran in Ray's workers


def _task_pid(title: str, deadline: float) -> int:
    """The pid of the Ray worker whose process title says it runs `title` now."""
    while time.monotonic() < deadline:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(f"ray::{title}"):
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no Ray worker ran {title}")


def test_ray_task_lost_with_its_worker_is_retried(ray_cluster):
    ex = RayExecutor(PROBLEM, OPTIONS)
    source = (HERE / "candidates" / "relu_honest.py").read_text() + "\n# killed once\n"
    future = ex.submit(source, "killed.py")
    victim = _task_pid("_evaluate_task", time.monotonic() + 60)
    os.kill(victim, signal.SIGKILL)
    result = future.result(timeout=300)
    assert result["status"] == "accepted", result["error"]
    assert result["node"]["pid"] != victim  # a second worker ran it to the end


def test_unreachable_cluster_is_a_clear_error_at_start():
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match="no Ray cluster answers"):
        check_reachable("127.0.0.1:1", timeout_s=2)
    with pytest.raises(ExecutorError, match="HOST:PORT"):
        check_reachable("nowhere")
    assert time.perf_counter() - started < 10


def test_cli_unreachable_cluster_exits_2_with_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    from kevolve.cli import main

    code = main(["optimize", str(PROBLEM), "--device", "cpu", "--rounds", "1", "--executor", "ray",
                 "--ray-address", "127.0.0.1:1", "--workspace", str(tmp_path / "ws")])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no Ray cluster answers" in lines[0]
    assert not any((tmp_path / "ws").glob("*/archive.sqlite"))  # no half-made session left behind


def test_session_on_the_ray_executor(ray_cluster, tmp_path, monkeypatch):
    """`kevolve optimize --executor ray`: the session's candidates are evaluated in Ray's workers."""
    from kevolve.session import open_session
    from kevolve.session_cli import main

    monkeypatch.setenv("KEVOLVE_LIBRARY", str(tmp_path / "lib.sqlite"))
    code = main(["optimize", str(PROBLEM), "--rounds", "2", "--batch", "2", "--executor", "ray", "--device", "cpu",
                 "--workspace", str(tmp_path / "ws")])
    assert code == 0
    session = open_session(next((tmp_path / "ws").iterdir()))
    results = [session.store.evaluation(c["id"]) for c in session.store.candidates()]
    assert len(results) >= 2 and any(r["status"] == "accepted" for r in results)
    ran = [r for r in results if r["status"] != "duplicate"]
    assert ran and all(r["node"]["pid"] != os.getpid() for r in ran)
    assert session.settings["executor"] == "ray" and session.settings["batch"] == 2
    session.close()


def test_problems_built_in_two_threads_draw_the_same_numbers():
    """Evaluators of different problems in one process (`kevolve bench --jobs` with --solutions) seed and
    draw from torch's global RNG; interleaved, one seed gave other inputs and a problem was refused as
    'not deterministic'. Building a problem holds a lock for its seeded draws."""
    import threading

    import torch

    from kevolve.tools.problem import instantiate, load_problem, shrink_shape

    root = Path(__file__).resolve().parents[2] / "examples" / "problems"
    a, b = load_problem(root / "scale_bias_gelu.py"), load_problem(root / "softmax.py")
    shape_a, shape_b = shrink_shape(a), shrink_shape(b)
    expected = instantiate(a, shape_a, 3).inputs[0].clone()
    mismatches = []

    def build_a():
        for _ in range(40):
            if not torch.equal(instantiate(a, shape_a, 3).inputs[0], expected):
                mismatches.append(1)

    def build_b():
        for _ in range(40):
            instantiate(b, shape_b, 5)

    threads = [threading.Thread(target=build_a), threading.Thread(target=build_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert mismatches == []
