"""The kernel library: the best verified kernel of each problem, kept across sessions.

Keyed by (normalized hash of the problem source, device name, torch version, triton version): a
kernel timed on another GPU or verified under another Triton is not reused. Stored in SQLite (WAL)
under the kevolve cache dir, so concurrent sessions can record at once. A new session of the same
problem starts from the kept kernel (round 0, re-verified here) unless --no-reuse.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from kevolve.session import normalized_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS kernels (
    problem_hash TEXT NOT NULL, device TEXT NOT NULL, torch TEXT NOT NULL, triton TEXT NOT NULL,
    problem_name TEXT, source TEXT NOT NULL, strategy TEXT, speedup REAL, speedup_vs_compile REAL,
    candidate_ms REAL, session_id TEXT, candidate_id TEXT, ts REAL NOT NULL,
    PRIMARY KEY (problem_hash, device, torch, triton));
"""


def library_path() -> Path:
    import os

    from kevolve.tools.evaluate import default_cache_dir

    if os.environ.get("KEVOLVE_LIBRARY"):  # tests and shared setups point it elsewhere
        return Path(os.environ["KEVOLVE_LIBRARY"])
    return default_cache_dir() / "library" / "library.sqlite"


def _connect(path: Path | None = None) -> sqlite3.Connection:
    path = Path(path or library_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def key_for(problem_source: str, device: dict) -> tuple[str, str, str, str]:
    return (normalized_hash(problem_source), str(device.get("name") or device.get("type") or "unknown"),
            str(device.get("torch") or "?"), str(device.get("triton") or "?"))


def lookup(problem_source: str, device: dict, path: Path | None = None) -> dict | None:
    conn = _connect(path)
    try:
        row = conn.execute("SELECT * FROM kernels WHERE problem_hash=? AND device=? AND torch=? AND triton=?",
                           key_for(problem_source, device)).fetchone()
        return dict(row) if row else None
    finally:
        conn.close()


def record(problem_source: str, device: dict, cand: dict, *, problem_name: str = "", session_id: str = "",
           path: Path | None = None) -> bool:
    """Keep `cand` when the library has nothing for this key or it is faster than what is kept."""
    key = key_for(problem_source, device)
    conn = _connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")  # read-compare-write as one step: two sessions may finish at once
        try:
            old = conn.execute("SELECT speedup FROM kernels WHERE problem_hash=? AND device=? AND torch=? AND "
                               "triton=?", key).fetchone()
            better = old is None or (cand.get("speedup") is not None
                                     and (old[0] is None or cand["speedup"] > old[0]))
            if better:
                conn.execute("INSERT OR REPLACE INTO kernels VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                             (*key, problem_name, cand["source"], cand.get("strategy"), cand.get("speedup"),
                              cand.get("speedup_vs_compile"), cand.get("candidate_ms"), session_id, cand.get("id"),
                              time.time()))
            conn.execute("COMMIT")
            return better
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def entries(path: Path | None = None) -> list[dict]:
    conn = _connect(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM kernels ORDER BY problem_name, ts")]
    finally:
        conn.close()


# -- the session's side --------------------------------------------------------------------------


def seed_from_library(rt) -> str | None:
    """Round 0 of a new session: the kept kernel, re-verified on this machine. Returns its id when
    verified (it is then the session's first best), else None. Replay-safe: a stored round 0 is reused."""
    from kevolve.archive import verified

    store, session = rt.store, rt.session
    done = store.candidate_for_round(0)
    if done is None:
        entry = lookup(session.problem_path.read_text(), rt.device_facts())
        if entry is None:
            return None
        done = store.add_candidate(round=0, source=entry["source"], parent_id=None, strategy=entry["strategy"],
                                   operator="library", notes=f"from {entry['session_id']}/{entry['candidate_id']}")
        session.save_candidate_source(done["id"], entry["source"])
    if store.evaluation(done["id"]) is None:
        started = time.perf_counter()
        result = rt.evaluator.evaluate(done["source"], name=f"{done['id']}.py")
        result["wall_s"] = round(time.perf_counter() - started, 3)
        store.add_evaluation(done["id"], result)
        session.event("library_reuse", {"id": done["id"], "status": result.get("status"), "notes": done["notes"]},
                      round=0, node="seed")
        rt.say(f"[r0] library  {done['id']} {result.get('status')} ({done['notes']})")
    done = store.candidate(done["id"])
    if not verified(done):
        return None
    session.write_best(done["id"])
    return done["id"]


def record_session_best(rt, best_id: str | None) -> bool:
    """At the end of a session: offer its best to the library (never fails the session)."""
    cand = rt.store.candidate(best_id)
    if cand is None or cand["operator"] == "library" and cand["round"] == 0:
        return False
    try:
        return record(rt.session.problem_path.read_text(), rt.device_facts(), cand,
                      problem_name=Path(str(rt.session.settings.get("problem") or "problem")).stem,
                      session_id=rt.session.id)
    except (sqlite3.Error, OSError) as e:
        rt.session.event("library_error", {"error": str(e)})
        return False


# -- `kevolve library` ---------------------------------------------------------------------------


def add_library_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the entries as JSON lines")
    p.add_argument("--source", metavar="PROBLEM_HASH", help="print the kept source of one entry (hash prefix)")
    p.set_defaults(run=run_library)


def run_library(args) -> int:
    rows = entries()
    if getattr(args, "source", None):
        found = [r for r in rows if r["problem_hash"].startswith(args.source)]
        if len(found) != 1:
            from kevolve.tools.problem import ProblemError

            raise ProblemError(f"{args.source}: matches {len(found)} library entries")
        print(found[0]["source"])
        return 0
    if args.json:
        for r in rows:
            print(json.dumps({k: v for k, v in r.items() if k != "source"}))
        return 0
    if not rows:
        print(f"the kernel library is empty ({library_path()})")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"kernel library ({library_path()})")
    for col in ("problem", "hash", "device", "torch", "triton", "strategy", "speedup", "from"):
        table.add_column(col)
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r["speedup"] is not None else "correct (untimed)"
        table.add_row(r["problem_name"] or "?", r["problem_hash"][:10], r["device"], r["torch"], r["triton"],
                      r["strategy"] or "", speed, f"{r['session_id']}/{r['candidate_id']}")
    Console().print(table)
    return 0
