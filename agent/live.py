"""What a running session shows: a rich Live view on a terminal, timestamped plain lines elsewhere.

The view is fed by Session.listeners (every stored event) and by Runtime.say (the nodes' one-line
summaries). It only reads; a session runs the same with or without it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

# After an event of this kind, this node runs next (the graph's order; the view only guesses for display).
NEXT_NODE = {"session_start": "coder", "resume": "coder", "candidate": "evaluate", "evaluation": "judge",
             "profile": "judge", "verdict": "archive", "round_end": "coder", "coder_failed": "archive",
             "user": "archive"}
STATUS_STYLE = {"accepted": "green", "pending": "dim", "duplicate": "yellow", "incorrect": "red",
                "compile_error": "red", "runtime_error": "red", "timeout": "red", "crashed": "red",
                "rejected": "red"}
MAX_ROWS = 14


def stamp(ts: float | None = None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts if ts is not None else time.time()))


def fmt_speedup(row: dict) -> str:
    if row.get("status") == "accepted":
        return f"{row['speedup']:.2f}x" if row.get("speedup") else "ok (no timing)"
    return (row.get("error") or "").strip().splitlines()[0][:70] if row.get("error") else ""


class LiveView:
    """State rebuilt from events; render() draws it. Plain mode prints timestamped lines instead."""

    def __init__(self, session: Any, limits: Any = None, *, plain: bool, console: Console | None = None,
                 ledger_usd=lambda: 0.0):
        self.session, self.limits, self.plain = session, limits, plain
        self.console = console or Console()
        self.ledger_usd = ledger_usd
        self.rows: dict[str, dict] = {}
        self.round, self.node, self.node_since = None, "seed", time.monotonic()
        self.best_id: str | None = None
        self.verdict: dict | None = None
        self.last_line = ""
        self.sync()  # a resumed session shows what it already has

    def sync(self) -> None:
        """Rows from the store (the truth): candidates made without an event of their own show up too."""
        try:
            rows = self.session.store.candidates()
        except Exception:  # the view never stops a session
            return
        for c in rows:
            row = self.rows.setdefault(c["id"], {"id": c["id"], "error": None})
            row.update(parent=c["parent_id"], strategy=c["strategy"] or c["operator"], status=c["status"],
                       speedup=c["speedup"])

    # -- inputs ---------------------------------------------------------------------------------------

    def on_event(self, event: dict) -> None:
        kind, data = event["kind"], event.get("data") or {}
        if event.get("round") is not None:
            self.round = event["round"]
        if kind == "candidate":
            self.rows[data["id"]] = {"id": data["id"], "parent": data.get("parent"),
                                     "strategy": data.get("strategy") or data.get("operator"),
                                     "status": "pending", "speedup": None, "error": None}
        elif kind == "evaluation" and data.get("id") in self.rows:
            timing = data.get("timing") or {}
            self.rows[data["id"]].update(status=data.get("status"), speedup=timing.get("speedup_vs_eager"),
                                         error=data.get("error"))
        elif kind == "verdict":
            self.verdict = data
        elif kind == "new_best":
            self.best_id = data.get("id")
        elif kind == "round_end":
            self.best_id = data.get("best") or self.best_id
            self.round = (event.get("round") or 0) + 1
        if kind in ("candidate", "evaluation", "round_end"):
            self.sync()
        if kind in NEXT_NODE:
            self.node, self.node_since = NEXT_NODE[kind], time.monotonic()
        if kind == "round_end" and data.get("stop_reason"):
            self.node = f"stopping: {data['stop_reason']}"
        if kind == "evaluation" and data.get("status") == "accepted" and (data.get("timing") or {}):
            self.node = "profile/judge"

    def say(self, line: str) -> None:
        self.last_line = line
        if self.plain:
            print(f"{stamp()} {line}", flush=True)

    # -- output ---------------------------------------------------------------------------------------

    def budget_line(self) -> str:
        lim = self.limits
        shown = min(self.round or 1, lim.rounds) if lim else (self.round or 1)
        rounds = f"round {shown}" + (f"/{lim.rounds}" if lim and lim.rounds < 10_000 else "")
        active = self.session.active_s()
        clock = f"{active:.0f}s" + (f"/{lim.time_s:.0f}s" if lim and lim.time_s else "")
        usd = f"${self.ledger_usd():.4f}" + (f"/${lim.budget_usd:.2f}" if lim and lim.budget_usd else "")
        return f"{rounds} · {clock} · {usd}"

    def render(self):
        header = Table.grid(padding=(0, 2))
        header.add_row(Text(f"kevolve {self.session.id}", style="bold"), Text(self.budget_line(), style="cyan"))
        running = Table.grid(padding=(0, 1))
        running.add_row(Spinner("dots", style="magenta"),
                        Text(f"{self.node} ({time.monotonic() - self.node_since:.0f}s)", style="magenta"),
                        Text(self.last_line, style="dim", overflow="ellipsis", no_wrap=True))
        table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
        for col in ("id", "parent", "strategy", "status", "speedup / error"):
            table.add_column(col, overflow="ellipsis", no_wrap=True)
        rows = sorted(self.rows.values(), key=lambda r: r["id"])
        if len(rows) > MAX_ROWS:
            table.add_row("…", "", f"{len(rows) - MAX_ROWS} earlier", "", "")
        for row in rows[-MAX_ROWS:]:
            mark = " ★" if row["id"] == self.best_id else ""
            style = STATUS_STYLE.get(row["status"] or "", "white")
            table.add_row(row["id"] + mark, row["parent"] or "-", row["strategy"] or "",
                          Text(row["status"] or "", style=style), fmt_speedup(row))
        best = self.rows.get(self.best_id or "")
        best_text = f"best: {self.best_id} {fmt_speedup(best)}" if best else "best: none verified yet"
        parts: list = [header, running, table, Text(best_text, style="bold green" if best else "yellow")]
        if self.verdict:
            v = self.verdict
            parts.append(Panel(Text(f"{v.get('mode')}: {v.get('bottleneck', '')}\n→ {v.get('change', '')}"
                                    f"  [{v.get('strategy', '')}]"), title=f"Judge ({v.get('source', '')})",
                               title_align="left", border_style="blue"))
        return Group(*parts)


def is_terminal(stream=None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def live_view(rt: Any, *, enabled: bool = True) -> Iterator[LiveView | None]:
    """Attach the view to a Runtime for the length of a run: listener on the session, say replaced.

    Plain lines when stdout is not a terminal or the session is interactive (the prompt needs the screen)."""
    if not enabled:
        saved = rt.say
        rt.say = lambda line: None
        try:
            yield None
        finally:
            rt.say = saved
        return
    plain = not is_terminal() or bool(getattr(rt, "interactive", False))
    view = LiveView(rt.session, getattr(rt, "limits", None), plain=plain, ledger_usd=rt.spent_usd)
    saved_say = rt.say
    rt.say = view.say
    rt.session.listeners.append(view.on_event)
    live = None
    try:
        if not plain:
            from rich.live import Live

            live = Live(get_renderable=view.render, console=view.console, refresh_per_second=4, transient=False)
            live.start()
        yield view
    finally:
        if live is not None:
            live.stop()
        rt.session.listeners.remove(view.on_event)
        rt.say = saved_say
