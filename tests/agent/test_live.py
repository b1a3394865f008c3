"""The live view (plain lines off a terminal, the rich view's content) and `kevolve show / sessions / report`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from rich.console import Console

from kevolve.cli import main as cli
from kevolve.live import LiveView

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = ROOT / "examples/problems/scale_bias_gelu.py"


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """One 2-round builtin session on the CPU, run through the CLI with stdout captured (not a terminal)."""
    import contextlib
    import io

    ws = tmp_path_factory.mktemp("ws")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(["optimize", str(PROBLEM), "--rounds", "2", "--device", "cpu", "--workspace", str(ws)])
    assert code == 0, out.getvalue()
    return ws, next(ws.iterdir()), out.getvalue()


def test_plain_timestamped_lines_when_not_a_terminal(ran):
    _, session, out = ran
    lines = [line for line in out.splitlines() if "[r" in line]
    assert lines and all(re.match(r"^\d\d:\d\d:\d\d \[r\d+\] ", line) for line in lines), out
    assert any("[r1] coder" in line and "c0001" in line for line in lines)
    assert f"report: {session / 'report.html'}" in out


def test_live_view_draws_round_candidates_best_budget_and_verdict(ran):
    from kevolve.graph import Limits
    from kevolve.session import open_session

    _, path, _ = ran
    session = open_session(path)
    try:
        view = LiveView(session, Limits(rounds=5, time_s=600), plain=False)
        for e in session.store.events():
            view.on_event(e)
        console = Console(record=True, width=120, force_terminal=False)
        console.print(view.render())
        text = console.export_text()
    finally:
        session.close()
    assert "c0001 ★" in text and "c0002" in text and "fused-elementwise" in text and "accepted" in text
    assert "round 3/5" in text or "round 2/5" in text and "/600s" in text and "$0.0000" in text
    assert "best: c0001" in text and "Judge (builtin)" in text and "tune block size" in text


def test_live_view_plain_say_is_timestamped(capsys):
    class FakeStore:
        def candidates(self):
            return []

    class FakeSession:
        id, store = "s", FakeStore()

    view = LiveView(FakeSession(), plain=True)
    view.say("[r1] coder    c0001")
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[r1\] coder    c0001\n", capsys.readouterr().out)


def test_show_replays_timeline_candidates_verdicts_and_costs(ran, capsys):
    ws, session, _ = ran
    assert cli(["show", session.name, "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    for text in ("timeline", "[r1] coder    c000", "[r2] evaluate c000", "accepted", "candidates", "verdicts",
                 "(builtin): optimize", "cost $0.0000 (builtin roles)", "best c0001", "ended: rounds (2)"):
        assert text in out, text


def test_show_follow_stops_at_session_end_and_lineage(ran, capsys):
    ws, session, _ = ran
    started = time.monotonic()
    assert cli(["show", str(session), "--follow", "--lineage", "c0002"]) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - started < 10 and "end      rounds (2)" in out
    assert "c0002" in out.split("best c0001")[-1]  # the lineage (or the note that it is missing) comes last


def test_sessions_lists_status_best_and_cost(ran, capsys):
    ws, session, _ = ran
    assert cli(["sessions", "--workspace", str(ws)]) == 0
    out = capsys.readouterr().out
    assert "scale_bias_gelu" in out and "ended: rounds" in out and "c0001" in out and "$0.0000" in out


def test_report_verb_and_one_line_errors(ran, tmp_path, capsys):
    ws, session, _ = ran
    assert cli(["report", str(session), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    capsys.readouterr()
    assert cli(["show", "no-such-session", "--workspace", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kevolve: no-such-session: no session folder") and err.count("\n") == 1
