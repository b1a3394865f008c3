"""Several candidates a round (--batch), evaluated side by side on the local executor; a session
killed mid-batch and resumed evaluates each candidate once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from kevolve.graph import Limits, Runtime, run_graph
from kevolve.judge import BuiltinJudge
from kevolve.session import create_session
from kevolve.tools.executor import LocalExecutor, evaluator_options


def test_batch_round_evaluates_all_and_judges_the_lead(tmp_path, problem_file, scripted_coder, kernels):
    broken, fixed, faster = kernels["broken"], kernels["fixed"], kernels["faster"]
    coder = scripted_coder([broken, fixed, faster, fixed.replace("128", "64"), fixed.replace("128", "256"), fixed])
    session = create_session(problem_file, {"rounds": 2}, {"type": "cpu"}, workspace=tmp_path / "ws")
    executor = LocalExecutor(problem_file, evaluator_options({"device": "cpu", "timeout_s": 60}), workers=2)
    session.start_clock()
    rt = Runtime(session=session, evaluator=executor, coder=coder, judge=BuiltinJudge(), limits=Limits(rounds=2),
                 batch=3, say=lambda line: None)
    try:
        values = run_graph(rt, resume=False)
    finally:
        executor.close()
    rows = session.store.candidates()
    assert [(c["round"], c["slot"]) for c in rows] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert [c["status"] for c in rows] == ["compile_error", "accepted", "accepted", "accepted", "accepted",
                                           "duplicate"]
    assert {c["island"] for c in rows if c["round"] == 1} == {0, 1, 2}  # a batch spreads over the islands
    evaluated = [e["data"]["id"] for e in session.store.events() if e["kind"] == "evaluation"]
    assert sorted(evaluated) == [c["id"] for c in rows]  # each candidate evaluated and logged once
    verdicts = [e for e in session.store.events() if e["kind"] == "verdict"]
    assert [v["data"]["id"] for v in verdicts] == ["c0002", "c0004"]  # the lead: the first verified of each batch
    assert values["best_id"] == "c0002" and values["round"] == 3
    start = next(e["data"] for e in session.store.events() if e["kind"] == "session_start")
    assert (start["executor"], start["batch"]) == ("local", 3)  # the log says how the session ran
    session.close()


def _rows(db: Path, sql: str) -> list:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_sigkill_mid_batch_then_resume_evaluates_each_once(tmp_path, problem_file):
    cli = [sys.executable, "-m", "kevolve.session_cli"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KEVOLVE_LIBRARY": str(tmp_path / "lib.sqlite")}
    # one worker: round 2's two candidates are evaluated one after the other, so the kill can fall between
    proc = subprocess.Popen(cli + ["optimize", str(problem_file), "--rounds", "2", "--batch", "2", "--workers", "1",
                                   "--device", "cpu", "--workspace", str(tmp_path / "ws")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    session = Path(proc.stdout.readline().strip().split(" in ", 1)[1])
    db = session / "archive.sqlite"
    deadline = time.monotonic() + 240
    while not _rows(db, "SELECT 1 FROM evaluations e JOIN candidates c ON c.id = e.candidate_id "
                        "WHERE c.round = 2 AND c.slot = 0"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    before = dict(_rows(db, "SELECT candidate_id, ts FROM evaluations"))
    assert len(before) in (2, 3)  # round 1's seed and round 2's first (the second may have just landed)

    done = subprocess.run(cli + ["resume", session.name, "--workspace", str(tmp_path / "ws")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = dict(_rows(db, "SELECT candidate_id, ts FROM evaluations"))
    candidates = _rows(db, "SELECT id, round, slot FROM candidates ORDER BY id")
    assert len(after) == len(candidates) and all(r[1] in (1, 2, 3) for r in candidates)
    assert [r[1:] for r in candidates if r[1] == 2] == [(2, 0), (2, 1)]
    assert all(after[cid] == ts for cid, ts in before.items())  # what was evaluated was not evaluated again
    logged = [json.loads(d)["id"] for (d,) in _rows(db, "SELECT data FROM events WHERE kind = 'evaluation'")]
    assert len(logged) == len(set(logged))  # nothing recorded twice


HANG = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=offs < n), 0.0), mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        while True:
            pass
'''


def test_a_slow_candidate_does_not_hold_the_session_up(tmp_path, problem_file, scripted_coder, kernels):
    """Batch of two, one hangs: the round goes on without it, and its timeout is stored later, once."""
    fixed = kernels["fixed"]
    coder = scripted_coder([fixed, HANG, kernels["faster"], fixed.replace("128", "64")])
    session = create_session(problem_file, {"rounds": 2}, {"type": "cpu"}, workspace=tmp_path / "ws")
    # the hang ends at its 15 s compile timeout; the batch waits 1 s for it once the other is back
    options = {**evaluator_options({"device": "cpu", "timeout_s": 15}), "compile_timeout_s": 15}
    executor = LocalExecutor(problem_file, options, workers=2)
    session.start_clock()
    rt = Runtime(session=session, evaluator=executor, coder=coder, judge=BuiltinJudge(), limits=Limits(rounds=2),
                 batch=2, straggler_s=1.0, straggler_factor=0.0, say=lambda line: None)
    try:
        values = run_graph(rt, resume=False)
    finally:
        executor.close()
    events = [(e["kind"], e["data"].get("id")) for e in session.store.events()]
    assert any(k == "stragglers" for k, _ in events)
    # round 2's candidates were proposed before the hanging one's result came back
    assert events.index(("candidate", "c0003")) < events.index(("evaluation", "c0002"))
    statuses = {c["id"]: c["status"] for c in session.store.candidates()}
    assert statuses == {"c0001": "accepted", "c0002": "timeout", "c0003": "accepted", "c0004": "accepted"}
    evaluated = [i for k, i in events if k == "evaluation"]
    assert sorted(evaluated) == ["c0001", "c0002", "c0003", "c0004"]  # each once
    assert values["best_id"] == "c0001" and not rt.inflight
    session.close()


def test_llm_coder_calls_of_a_batch_go_out_at_once(tmp_path, problem_file, kernels, fence, llm_env, monkeypatch):
    """--batch 3 with an openai Coder: three requests in flight together, three candidates stored in
    slot order, each answer stored under its slot (so a resume would replay each)."""
    from kevolve.session import open_session
    from kevolve.session_cli import main
    from tests.agent.fake_openai import FakeOpenAI, answer

    sources = [kernels["fixed"], kernels["faster"], kernels["fixed"].replace("128", "64")]
    script = [answer(fence(src), delay_s=0.6) for src in sources]
    with FakeOpenAI(scripts={"coder-m": script}) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        code = main(["optimize", str(problem_file), "--coder", "openai:coder-m", "--batch", "3", "--rounds", "1",
                     "--device", "cpu", "--config", str(llm_env), "--workspace", str(tmp_path / "ws")])
        arrivals = sorted(r.at for r in fake.requests)
    assert code == 0
    assert len(arrivals) == 3 and arrivals[-1] - arrivals[0] < 0.5  # all sent before the first answer came
    session = open_session(next((tmp_path / "ws").iterdir()))
    rows = session.store.candidates()
    assert [(c["round"], c["slot"]) for c in rows] == [(1, 0), (1, 1), (1, 2)]
    assert sorted(c["source"].strip() for c in rows) == sorted(s.strip() for s in sources)
    roles = sorted(r[0] for r in session.store.conn.execute("SELECT role FROM llm_calls WHERE round = 1"))
    assert roles == ["coder", "coder/1", "coder/2"]
    assert all(c["status"] == "accepted" for c in rows)
    session.close()


def test_calls_in_flight_hold_their_worst_case_against_the_budget():
    import pytest

    from kevolve.llm import BudgetExceeded, CostLedger

    ledger = CostLedger(budget_usd=1.0, prices={"m": (1e6 * 0.4, 0.0)})  # $0.40 per prompt token
    with ledger.reserve("coder", "m", 1, 0):
        with ledger.reserve("coder", "m", 1, 0):  # $0.80 held
            with pytest.raises(BudgetExceeded, match="held by calls in flight"):
                with ledger.reserve("coder", "m", 1, 0):
                    pass
    with ledger.reserve("coder", "m", 1, 0):  # released again once the calls are over
        pass


def test_bad_batch_options_are_one_line_usage_errors(tmp_path, problem_file, capsys):
    from kevolve.session_cli import main

    for args, message in ((["--batch", "0"], "--batch 0: give at least 1"),
                          (["--workers", "0"], "--workers 0: give at least 1"),
                          (["--ray-address", "127.0.0.1:6379"], "--ray-address needs --executor ray")):
        assert main(["optimize", str(problem_file), "--device", "cpu", "--workspace", str(tmp_path / "ws"),
                     *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"kevolve: {message}"]
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())
