"""`kevolve show SESSION` (replay, `--follow`), `kevolve sessions` (list) and `kevolve report SESSION`.

All read the session folder without writing to it (SQLite opened read-only), so they are safe to run
against a session that is still going.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kevolve.live import fmt_speedup, stamp
from kevolve.report import best_id, cost_usd, costs_by_role, load_session, status_of


def event_line(e: dict) -> str | None:
    """One timeline line for an event; None for events not worth a line of their own."""
    d, kind = e.get("data") or {}, e["kind"]
    r = f"[r{e['round']}]" if e.get("round") is not None else "    "
    if kind == "session_start":
        text = f"start on {(d.get('device') or {}).get('name', '?')}, coder {d.get('coder')}, judge {d.get('judge')}" \
               + (f", {d['executor']} executor, batch {d.get('batch')}" if d.get("executor") else "")
    elif kind == "candidate":
        text = f"coder    {d.get('id')} ({d.get('operator')}{', ' + d['strategy'] if d.get('strategy') else ''}) " \
               f"from {d.get('parent') or 'scratch'}"
    elif kind == "evaluation":
        timing = d.get("timing") or {}
        row = {"status": d.get("status"), "speedup": timing.get("speedup_vs_eager"), "error": d.get("error")}
        text = f"evaluate {d.get('id')} {d.get('status')}: {fmt_speedup(row)}"
    elif kind == "profile":
        text = f"profile  {d.get('id')} bound: {d.get('bound') or 'unavailable'}"
    elif kind == "verdict":
        text = f"judge    {d.get('mode')}: {str(d.get('bottleneck', ''))[:70]} → {str(d.get('change', ''))[:70]}"
    elif kind == "new_best":
        text = f"best     {d.get('id')}" + (f" {d['speedup']:.2f}x" if d.get("speedup") else "")
    elif kind == "round_end":
        text = f"archive  best {d.get('best') or 'none'}; ${d.get('cost_usd') or 0:.4f}" + \
               (f"; stopping: {d['stop_reason']}" if d.get("stop_reason") else "")
    elif kind == "llm_call":
        text = f"llm      {d.get('role')} {d.get('model')}: {d.get('prompt_tokens')}+{d.get('completion_tokens')} " \
               f"tokens, ${d.get('cost_usd') or 0:.4f}, {d.get('latency_s') or 0:.1f}s"
    elif kind == "session_end":
        text = f"end      {d.get('reason')}; best {d.get('best') or 'none'}; ${d.get('cost_usd') or 0:.4f}"
    elif kind == "problem_warning":
        text = f"warning  {d.get('message')}"
    elif kind == "stragglers":
        text = f"evaluate going on without {', '.join(d.get('ids') or [])} after {d.get('after_s')} s (still running)"
    elif kind in ("coder_failed", "judge_failed", "budget_exceeded"):
        text = f"{kind}: {str(d.get('error', ''))[:120]}"
    elif kind in ("resume", "interrupted", "stopped", "user", "recheck"):
        text = f"{kind} {', '.join(f'{k}={v}' for k, v in d.items() if k not in ('settings',))}"[:140]
    else:
        return None
    return f"{stamp(e['ts'])} {r} {text}"


def candidates_table(data: dict) -> Table:
    best = best_id(data)
    table = Table(title="candidates", box=None, header_style="bold", title_justify="left", pad_edge=False)
    for col in ("id", "round", "parent", "island", "strategy", "status", "speedup / error"):
        table.add_column(col, overflow="fold")
    for c in data["candidates"]:
        ev = data["evaluations"].get(c["id"]) or {}
        row = {"status": c["status"], "speedup": c["speedup"], "error": ev.get("error")}
        table.add_row(c["id"] + (" ★" if c["id"] == best else ""), str(c["round"]), c["parent_id"] or "-",
                      str(c["island"]), c["strategy"] or c["operator"] or "", c["status"], fmt_speedup(row))
    return table


def print_session(path: Path, console: Console | None = None, *, timeline: bool = True) -> dict:
    console = console or Console()
    data = load_session(path)
    info = data["info"]
    console.print(f"[bold]session {info.get('id')}[/] · {Path(info['problem']['path']).name} · "
                  f"{(info.get('device') or {}).get('name', '?')} · {status_of(data)}", highlight=False)
    if timeline:
        console.print("[bold]timeline[/]")
        for e in data["events"]:
            line = event_line(e)
            if line:
                console.print("  " + line, markup=False, highlight=False)
    console.print(candidates_table(data))
    if data["verdicts"]:
        console.print("[bold]verdicts[/]")
        for v in data["verdicts"]:
            j = v["json"]
            console.print(f"  r{v['round']} {v['candidate_id']} ({v['source']}): {j.get('mode')}: "
                          f"{j.get('bottleneck', '')} → {j.get('change', '')} [{j.get('strategy', '')}]",
                          markup=False, highlight=False)
    roles = costs_by_role(data)
    costs = "; ".join(f"{r} {v['calls']} calls, {v['prompt_tokens']}+{v['completion_tokens']} tokens, "
                      f"${v['cost_usd']:.4f}" for r, v in roles.items())
    console.print(f"[bold]cost[/] ${cost_usd(data):.4f}" + (f" ({costs})" if costs else " (builtin roles)"),
                  highlight=False)
    best = best_id(data)
    row = next((c for c in data["candidates"] if c["id"] == best), None)
    console.print(f"[bold]best[/] {best + ' ' + fmt_speedup(row) if row else 'none verified'}", highlight=False)
    return data


def follow(path: Path, console: Console | None = None, poll_s: float = 1.0, max_s: float | None = None) -> None:
    """Print the timeline of a running session as events.jsonl grows, until its session_end."""
    import json

    console = console or Console()
    log, offset, started = Path(path) / "events.jsonl", 0, time.monotonic()
    while True:
        if log.is_file():
            with open(log) as f:
                f.seek(offset)
                while True:
                    line = f.readline()
                    if not line.endswith("\n"):
                        break  # a half-written last line: read it next time
                    offset = f.tell()
                    e = json.loads(line)
                    text = event_line(e)
                    if text:
                        console.print(text, markup=False, highlight=False)
                    if e["kind"] in ("session_end", "interrupted"):
                        return
        if max_s is not None and time.monotonic() - started > max_s:
            return
        time.sleep(poll_s)


def list_sessions(workspace: Path, console: Console | None = None) -> list[dict]:
    console = console or Console()
    rows = []
    for p in sorted(Path(workspace).glob("*/session.json")):
        try:
            data = load_session(p.parent)
        except Exception as e:  # one broken folder does not hide the others
            rows.append({"id": p.parent.name, "status": f"unreadable: {type(e).__name__}"})
            continue
        best = best_id(data)
        row = next((c for c in data["candidates"] if c["id"] == best), None)
        rows.append({"id": p.parent.name, "problem": Path(data["info"]["problem"]["path"]).name,
                     "status": status_of(data), "candidates": len(data["candidates"]),
                     "best": f"{best} {fmt_speedup(row)}" if row else "none", "cost": f"${cost_usd(data):.4f}",
                     "created": data["info"].get("created", "")})
    if not rows:
        console.print(f"no sessions under {workspace}")
        return rows
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("id", "problem", "status", "candidates", "best", "cost"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*(str(r.get(k, "")) for k in ("id", "problem", "status", "candidates", "best", "cost")))
    console.print(table)
    return rows


# -- CLI verbs ----------------------------------------------------------------------------------------


def add_verbs(sub) -> None:
    p = sub.add_parser("show", help="replay a session: timeline, candidates, verdicts, costs")
    p.add_argument("session", help="session folder, or its id (or a unique prefix) under the workspace")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--follow", action="store_true", help="keep printing new events until the session ends")
    p.add_argument("--lineage", nargs="?", const="", default=None, metavar="CANDIDATE",
                   help="print the lineage tree (of CANDIDATE, or the whole session)")
    p.set_defaults(run=run_show)
    p = sub.add_parser("sessions", help="list sessions in a workspace: status, best speedup, cost")
    p.add_argument("--workspace", type=Path)
    p.set_defaults(run=run_sessions)
    p = sub.add_parser("report", help="write (or redraw) a session's report.html")
    p.add_argument("session")
    p.add_argument("--workspace", type=Path)
    p.add_argument("-o", "--output", type=Path, help="where to write it (default SESSION/report.html)")
    p.set_defaults(run=run_report)


def _resolve(args) -> Path:
    from kevolve.session import SessionError, resolve_session
    from kevolve.tools.problem import ProblemError

    try:
        return resolve_session(args.session, args.workspace)
    except SessionError as e:
        raise ProblemError(str(e)) from None


def _console() -> Console:
    """Off a terminal (a pipe, a file, a test) lines are not wrapped at 80 columns: grep sees whole lines."""
    from kevolve.live import is_terminal

    return Console() if is_terminal() else Console(width=200, soft_wrap=True)


def run_show(args) -> int:
    path = _resolve(args)
    console = _console()
    if args.follow:
        follow(path, console)
        print_session(path, console, timeline=False)
    else:
        print_session(path, console)
    if args.lineage is not None:
        show_lineage(path, args.lineage or None, console)
    return 0


def show_lineage(path: Path, candidate: str | None, console: Console) -> None:
    print_lineage = None
    for module in ("kevolve.archive", "kevolve.lineage"):  # the archive issue's helper, wherever it lives
        try:
            print_lineage = getattr(__import__(module, fromlist=["print_lineage"]), "print_lineage", None)
        except ImportError:
            continue
        if print_lineage:
            break
    if print_lineage is None:
        console.print("lineage: print_lineage (kevolve.archive) is not in this build")
        return
    from kevolve.session import open_session

    session = open_session(path)
    try:
        print_lineage(session, candidate_id=candidate, console=console)
    finally:
        session.close()


def run_sessions(args) -> int:
    from kevolve.session import default_workspace

    list_sessions(args.workspace or default_workspace(), _console())
    return 0


def run_report(args) -> int:
    from kevolve.report import write_report

    print(write_report(_resolve(args), args.output))
    return 0
