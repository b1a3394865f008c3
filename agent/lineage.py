"""`kevolve show SESSION --lineage [CANDIDATE]` and `kevolve export SESSION`: read the archive, never write it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

EXPORT_TABLES = ("candidates", "evaluations", "lineage", "verdicts", "llm_calls", "events")


def best_id(session) -> str | None:
    """The session's best: the last new_best event (it was re-checked), else the fastest verified row."""
    for e in reversed(session.store.events()):
        if e["kind"] == "new_best" or (e["kind"] == "round_end" and e["data"].get("best")):
            return e["data"].get("id") or e["data"].get("best")
    from kevolve.archive import verified

    rows = [c for c in session.store.candidates() if verified(c)]
    return max(rows, key=lambda c: (c["speedup"] or 0.0, -c["round"]))["id"] if rows else None


def ancestry(session, candidate_id: str | None = None) -> list[dict]:
    """From the first ancestor to the candidate: each step's operator, strategy, status and speedup."""
    store = session.store
    cid = candidate_id or best_id(session)
    if cid is None:
        return []
    if store.candidate(cid) is None:
        from kevolve.session import SessionError

        raise SessionError(f"{session.id}: no candidate {cid}")
    chain, seen = [], set()
    while cid and cid not in seen:  # `seen` guards a corrupt (cyclic) store
        seen.add(cid)
        c = store.candidate(cid)
        if c is None:
            break
        extra = [r[0] for r in store.conn.execute(
            "SELECT parent_id FROM lineage WHERE child_id=? AND kind='inspiration' ORDER BY parent_id", (cid,))]
        chain.append({"id": c["id"], "round": c["round"], "island": c["island"], "operator": c["operator"],
                      "strategy": c["strategy"], "status": c["status"], "speedup": c["speedup"],
                      "parent_id": c["parent_id"], "inspirations": extra})
        cid = c["parent_id"]
    return chain[::-1]


def print_lineage(session, candidate_id: str | None = None, console=None) -> list[dict]:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    chain = ancestry(session, candidate_id)
    if not chain:
        console.print(f"{session.id}: no verified candidate yet (give a candidate id)")
        return chain
    table = Table(title=f"lineage of {chain[-1]['id']} ({session.id})")
    for col in ("step", "candidate", "round", "island", "operator", "strategy", "status", "speedup", "inspired by"):
        table.add_column(col)
    for i, s in enumerate(chain):
        speed = f"{s['speedup']:.2f}x" if s["speedup"] is not None else ("—" if s["status"] != "accepted" else "ok")
        table.add_row(str(i), s["id"], str(s["round"]), str(s["island"]), s["operator"] or "", s["strategy"] or "",
                      s["status"] or "", speed, ", ".join(s["inspirations"]))
    console.print(table)
    return chain


# -- export --------------------------------------------------------------------------------------


def add_export_arguments(p) -> None:
    p.add_argument("session", help="session folder, or its id (or a unique prefix) under the workspace")
    p.add_argument("--workspace", type=Path)
    p.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
    p.add_argument("--out", type=Path, help="file (jsonl) or folder (parquet); default: in the session folder")
    p.set_defaults(run=run_export)


def archive_rows(session) -> dict[str, list[dict]]:
    conn = session.store.conn
    return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t}")] for t in EXPORT_TABLES}  # noqa: S608


def export_jsonl(session, out: Path) -> int:
    """One JSON object a line: {"table": ..., **row}. Written to a temporary file, then renamed."""
    n, tmp = 0, out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w") as f:
        for table, rows in archive_rows(session).items():
            for row in rows:
                f.write(json.dumps({"table": table, **row}, default=str) + "\n")
                n += 1
    tmp.replace(out)
    return n


def export_parquet(session, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for table, rows in archive_rows(session).items():
        pq.write_table(pa.Table.from_pylist(rows), out / f"{table}.parquet")
        n += len(rows)
    return n


def run_export(args) -> int:
    from kevolve.session import SessionError, open_session

    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            print("kevolve: --format parquet needs pyarrow (pip install pyarrow); --format jsonl works without it",
                  file=sys.stderr)
            return 2
    try:
        session = open_session(args.session, args.workspace)
    except SessionError as e:
        print(f"kevolve: {e}", file=sys.stderr)
        return 2
    try:
        if args.format == "parquet":
            out = args.out or session.path / "export"
            n = export_parquet(session, out)
        else:
            out = args.out or session.path / "archive.jsonl"
            n = export_jsonl(session, out)
    finally:
        session.close()
    print(f"{n} rows → {out}")
    return 0
