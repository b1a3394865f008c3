"""The session folder and its SQLite store."""

from __future__ import annotations

import json
import sqlite3
from types import SimpleNamespace

import pytest

from kevolve.coder import RecordedChat
from kevolve.session import SessionError, create_session, normalized_hash, open_session, resolve_session


@pytest.fixture
def session(tmp_path, problem_file):
    s = create_session(problem_file, {"coder": "openai:m", "rounds": 3, "api_key": "sk-secret"}, {"type": "cpu"},
                       workspace=tmp_path / "ws")
    yield s
    s.close()


def test_folder_layout_and_no_secret(session, problem_file):
    info = json.loads((session.path / "session.json").read_text())
    assert info["id"] == session.id
    assert info["settings"] == {"coder": "openai:m", "rounds": 3}
    assert "sk-secret" not in (session.path / "session.json").read_text()
    assert info["versions"]["python"] and "torch" in info["versions"]
    assert (session.path / "problem.py").read_text() == problem_file.read_text()
    assert (session.path / "candidates").is_dir()
    mode = sqlite3.connect(session.path / "archive.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_candidates_evaluations_and_events(session):
    store = session.store
    a = store.add_candidate(round=1, source="x = 1\n", parent_id=None, strategy=None, operator="seed")
    b = store.add_candidate(round=2, source="x = 2\n", parent_id=a["id"], strategy="tune", operator="mutate",
                            inspirations=[a["id"]])
    assert (a["id"], b["id"]) == ("c0001", "c0002")
    assert store.candidate_for_round(2)["id"] == "c0002"
    store.add_evaluation("c0002", {"status": "accepted", "correct": True, "custom_kernel": True,
                                   "timing": {"speedup_vs_eager": 1.5, "candidate_ms": 0.1, "spread": 0.01}})
    row = store.candidate("c0002")
    assert (row["status"], row["speedup"], row["correct"]) == ("accepted", 1.5, 1)
    lineage = store.conn.execute("SELECT child_id, parent_id, kind FROM lineage ORDER BY kind").fetchall()
    assert [tuple(r) for r in lineage] == [("c0002", "c0001", "inspiration"), ("c0002", "c0001", "parent")]
    session.event("candidate", {"id": "c0002"}, round=2, node="coder")
    line = json.loads((session.path / "events.jsonl").read_text().splitlines()[-1])
    assert line["kind"] == "candidate" and line["round"] == 2 and line["data"] == {"id": "c0002"}
    assert store.events()[-1]["data"] == {"id": "c0002"}
    with pytest.raises(sqlite3.IntegrityError):  # one candidate per (round, slot)
        store.add_candidate(round=2, source="x = 3\n", parent_id=None, strategy=None, operator="seed")


def test_normalized_hash_ignores_comments_docstrings_spacing():
    a = 'def f(x):\n    """doc"""\n    return x + 1  # add\n'
    b = "def f(x):\n\n    return x+1\n"
    assert normalized_hash(a) == normalized_hash(b)
    assert normalized_hash(a) != normalized_hash("def f(x):\n    return x + 2\n")
    cuda_a = 'src = """__global__ void k() { /* c */ }"""\n'
    cuda_b = 'src = """__global__ void k() {  }"""\n'
    assert normalized_hash(cuda_a) == normalized_hash(cuda_b)
    assert normalized_hash("def f(x)\n  return 1  # broken") == normalized_hash("def f(x)\n  return 1")


def test_recorded_chat_stores_before_use_and_replays(session):
    calls = []

    class Chat:
        def complete(self, messages, role=None):
            calls.append(messages)
            return SimpleNamespace(text=f"answer {len(calls)}", model="m", prompt_tokens=10, completion_tokens=5,
                                   cost_usd=0.01, latency_s=0.1, attempts=1)

    ledger = SimpleNamespace(to_dict=lambda: {"total_usd": 0.01 * len(calls)})
    first = RecordedChat(Chat(), session.store, ledger, round=3, role="coder")
    assert first.complete([{"role": "user", "content": "a"}]).text == "answer 1"
    assert first.complete([{"role": "user", "content": "repair"}]).text == "answer 2"
    assert session.store.get_meta("ledger") == {"total_usd": 0.02}
    again = RecordedChat(Chat(), session.store, ledger, round=3, role="coder")  # the node replayed
    assert again.complete([]).text == "answer 1" and again.complete([]).text == "answer 2"
    assert len(calls) == 2 and again.replayed == 2
    assert again.complete([]).text == "answer 3"  # a third attempt was never stored: it is asked


def test_resolve_by_path_id_and_prefix(session, tmp_path):
    ws = tmp_path / "ws"
    assert resolve_session(session.path) == session.path
    assert resolve_session(session.id, ws) == session.path
    assert resolve_session(session.id[:12], ws) == session.path
    with pytest.raises(SessionError, match="no session"):
        resolve_session("nope", ws)
    reopened = open_session(session.id, ws)
    assert reopened.settings["rounds"] == 3
    reopened.close()


def test_active_time_adds_up_across_runs(session):
    session.event("x")
    session.store.set_meta("active_s", 100.0)
    session.start_clock()
    assert 100.0 <= session.active_s() < 101.0


def test_a_best_slower_than_torch_compile_is_said_plainly():
    from kevolve.session_cli import slower_than_compile

    assert slower_than_compile({"speedup_vs_compile": None}) is None  # a CPU session: no timing
    assert slower_than_compile({"speedup_vs_compile": 0.99}) is None  # within the timing's spread
    assert "keep torch.compile" in slower_than_compile({"speedup_vs_compile": 0.86})
