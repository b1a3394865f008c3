"""The session folder and its SQLite store: the single truth a session is rebuilt from.

    workspace/<id>/
      session.json       settings, problem, device, versions (never a key)
      problem.py         a copy of the problem: the session does not depend on the original staying put
      archive.sqlite     candidates, evaluations, verdicts, lineage, llm_calls, events, meta (WAL)
      checkpoints.sqlite LangGraph's checkpoints (thread_id = session id)
      events.jsonl       a mirror of the events table, one JSON object a line, for tail -f and grep
      candidates/<id>.py every candidate's source
      best.py            the best verified candidate, standalone

Every write goes to SQLite first; files are copies made after the row exists, so a crash between the
two leaves SQLite right and the files re-creatable.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import time
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

from kevolve.tools.static_checks import parse_python

SCHEMA_VERSION = 1

# Columns the archive issue (5) reads and will add to: keep names stable, add columns by migration.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, slot INTEGER NOT NULL DEFAULT 0, parent_id TEXT,
    source TEXT NOT NULL, source_path TEXT NOT NULL, source_hash TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    correct INTEGER, custom_kernel INTEGER, speedup REAL, speedup_vs_compile REAL, candidate_ms REAL,
    spread REAL, strategy TEXT, operator TEXT, island INTEGER NOT NULL DEFAULT 0, inspirations TEXT,
    notes TEXT, skipped INTEGER NOT NULL DEFAULT 0, duplicate_of TEXT, created_ts REAL NOT NULL,
    UNIQUE (round, slot));
CREATE INDEX IF NOT EXISTS candidates_hash ON candidates (source_hash);
CREATE TABLE IF NOT EXISTS lineage (child_id TEXT NOT NULL, parent_id TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (child_id, parent_id, kind));
CREATE TABLE IF NOT EXISTS evaluations (candidate_id TEXT PRIMARY KEY, json TEXT NOT NULL, profile TEXT,
    ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (round INTEGER PRIMARY KEY, candidate_id TEXT, json TEXT NOT NULL,
    source TEXT NOT NULL, ts REAL NOT NULL);
CREATE TABLE IF NOT EXISTS llm_calls (round INTEGER NOT NULL, role TEXT NOT NULL, attempt INTEGER NOT NULL,
    model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, cost_usd REAL, latency_s REAL,
    retries INTEGER, text TEXT NOT NULL, ts REAL NOT NULL, PRIMARY KEY (round, role, attempt));
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, round INTEGER,
    node TEXT, kind TEXT NOT NULL, data TEXT NOT NULL);
"""

SECRET_WORDS = re.compile(r"key|token|secret|password", re.I)


def default_workspace() -> Path:
    return Path(os.environ.get("KEVOLVE_WORKSPACE", "workspace"))


_C_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def normalized_hash(source: str) -> str:
    """Hash of the source without comments, docstrings or spacing: a reformatted copy is a duplicate."""
    try:
        tree = parse_python(source)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
                body.pop(0)
                if not body:
                    body.append(ast.Pass())
        for node in ast.walk(tree):  # CUDA C++ in strings: comments and spacing do not make a new kernel
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                node.value = " ".join(_C_COMMENT.sub(" ", node.value).split())
        text = ast.unparse(tree)
    except (SyntaxError, ValueError):  # a candidate that does not parse is still hashed, by its tokens
        try:
            tokens = tokenize.generate_tokens(io.StringIO(source).readline)
            text = " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.NL))
        except (tokenize.TokenError, SyntaxError):
            text = " ".join(source.split())
        text = _C_COMMENT.sub("", text)  # unparsable: strip C comments everywhere (`//` is rare then)
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


class Store:
    """archive.sqlite. One connection per process; WAL lets a reader (report, show) look while we write."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    def _tx(self):
        return _Transaction(self.conn)

    # -- meta ---------------------------------------------------------------------------------------

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # -- candidates ---------------------------------------------------------------------------------

    def next_candidate_id(self) -> str:
        (count,) = self.conn.execute("SELECT COUNT(*) FROM candidates").fetchone()
        return f"c{count + 1:04d}"

    def add_candidate(self, *, round: int, source: str, parent_id: str | None,
                      strategy: str | None, operator: str, slot: int = 0, island: int = 0,
                      inspirations: list[str] | None = None, notes: str = "") -> dict:
        with self._tx():
            cid = self.next_candidate_id()
            self.conn.execute(
                "INSERT INTO candidates (id, round, slot, parent_id, source, source_path, source_hash, strategy,"
                " operator, island, inspirations, notes, created_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (cid, round, slot, parent_id, source, f"candidates/{cid}.py", normalized_hash(source), strategy,
                 operator, island, json.dumps(inspirations or []), notes, time.time()))
            if parent_id:
                self.conn.execute("INSERT OR IGNORE INTO lineage VALUES (?, ?, 'parent')", (cid, parent_id))
            for other in inspirations or []:
                self.conn.execute("INSERT OR IGNORE INTO lineage VALUES (?, ?, 'inspiration')", (cid, other))
        return self.candidate(cid)

    def candidate(self, cid: str | None) -> dict | None:
        if not cid:
            return None
        row = self.conn.execute("SELECT * FROM candidates WHERE id=?", (cid,)).fetchone()
        return dict(row) if row else None

    def candidate_for_round(self, round: int, slot: int = 0) -> dict | None:
        row = self.conn.execute("SELECT * FROM candidates WHERE round=? AND slot=?", (round, slot)).fetchone()
        return dict(row) if row else None

    def candidates(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM candidates ORDER BY created_ts, id")]

    def find_by_hash(self, source_hash: str, exclude: str | None = None) -> dict | None:
        row = self.conn.execute("SELECT * FROM candidates WHERE source_hash=? AND id IS NOT ? AND status != 'pending'"
                                " ORDER BY created_ts LIMIT 1", (source_hash, exclude)).fetchone()
        return dict(row) if row else None

    def has_hash(self, source_hash: str) -> bool:
        return self.conn.execute("SELECT 1 FROM candidates WHERE source_hash=?", (source_hash,)).fetchone() is not None

    def mark_skipped(self, cid: str) -> None:
        self.conn.execute("UPDATE candidates SET skipped=1 WHERE id=?", (cid,))

    # -- evaluations --------------------------------------------------------------------------------

    def add_evaluation(self, cid: str, result: dict, duplicate_of: str | None = None) -> None:
        timing = result.get("timing") or {}
        with self._tx():
            self.conn.execute("INSERT OR REPLACE INTO evaluations (candidate_id, json, ts) VALUES (?,?,?)",
                              (cid, json.dumps(result, default=str), time.time()))
            self.conn.execute(
                "UPDATE candidates SET status=?, correct=?, custom_kernel=?, speedup=?, speedup_vs_compile=?,"
                " candidate_ms=?, spread=?, duplicate_of=? WHERE id=?",
                (result.get("status"), int(bool(result.get("correct"))), int(bool(result.get("custom_kernel"))),
                 timing.get("speedup_vs_eager"), timing.get("speedup_vs_compile"), timing.get("candidate_ms"),
                 timing.get("spread"), duplicate_of, cid))

    def evaluation(self, cid: str | None) -> dict | None:
        row = self.conn.execute("SELECT json FROM evaluations WHERE candidate_id=?", (cid,)).fetchone()
        return json.loads(row[0]) if row else None

    def set_profile(self, cid: str, profile: dict | None) -> None:
        self.conn.execute("UPDATE evaluations SET profile=? WHERE candidate_id=?",
                          (json.dumps(profile if profile is not None else {"unavailable": True}, default=str), cid))

    def profile(self, cid: str | None) -> dict | None:
        row = self.conn.execute("SELECT profile FROM evaluations WHERE candidate_id=?", (cid,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    # -- verdicts -----------------------------------------------------------------------------------

    def add_verdict(self, round: int, cid: str | None, verdict: dict, source: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?)",
                          (round, cid, json.dumps(verdict), source, time.time()))

    def verdict(self, round: int) -> dict | None:
        row = self.conn.execute("SELECT json FROM verdicts WHERE round=?", (round,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- LLM calls: stored before the answer is used, so a replayed node never pays twice ----------

    def llm_reply(self, round: int, role: str, attempt: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM llm_calls WHERE round=? AND role=? AND attempt=?",
                                (round, role, attempt)).fetchone()
        return dict(row) if row else None

    def add_llm_reply(self, round: int, role: str, attempt: int, reply, ledger: dict | None = None) -> None:
        with self._tx():
            self.conn.execute(
                "INSERT OR REPLACE INTO llm_calls VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (round, role, attempt, getattr(reply, "model", None), getattr(reply, "prompt_tokens", None),
                 getattr(reply, "completion_tokens", None), getattr(reply, "cost_usd", None),
                 getattr(reply, "latency_s", None), getattr(reply, "attempts", None), reply.text, time.time()))
            if ledger is not None:  # the ledger and the call it counts land together
                self.set_meta("ledger", ledger)

    def llm_calls(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM llm_calls ORDER BY ts")]

    # -- events -------------------------------------------------------------------------------------

    def add_event(self, event: dict) -> None:
        self.conn.execute("INSERT INTO events (ts, round, node, kind, data) VALUES (?,?,?,?,?)",
                          (event["ts"], event.get("round"), event.get("node"), event["kind"],
                           json.dumps(event.get("data", {}), default=str)))

    def events(self) -> list[dict]:
        return [{**dict(r), "data": json.loads(r["data"])}
                for r in self.conn.execute("SELECT * FROM events ORDER BY id")]


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *rest):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


@dataclass
class Session:
    """An open session folder: paths, settings, the store, the event log and the active-time clock."""

    path: Path
    settings: dict
    store: Store
    _clock_start: float = field(default_factory=time.monotonic)
    _active_before: float = 0.0
    # Called with each event after it is stored (the live view); a failing listener never stops a session.
    listeners: list = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def problem_path(self) -> Path:
        return self.path / "problem.py"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints.sqlite"

    @property
    def stop_file(self) -> Path:
        return self.path / "STOP"

    def candidate_path(self, cid: str) -> Path:
        return self.path / "candidates" / f"{cid}.py"

    def active_s(self) -> float:
        """Seconds this session has run, summed over its runs (a resume does not reset the clock)."""
        return self._active_before + time.monotonic() - self._clock_start

    def start_clock(self) -> None:
        self._active_before = float(self.store.get_meta("active_s", 0.0))
        self._clock_start = time.monotonic()

    def event(self, kind: str, data: dict | None = None, *, round: int | None = None, node: str | None = None) -> dict:
        event = {"ts": round_ts(time.time()), "round": round, "node": node, "kind": kind, "data": data or {}}
        self.store.add_event(event)
        self.store.set_meta("active_s", round_ts(self.active_s()))
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps(event, default=str) + "\n")
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                pass
        return event

    def save_candidate_source(self, cid: str, source: str) -> Path:
        path = self.candidate_path(cid)
        path.parent.mkdir(exist_ok=True)
        _atomic_write(path, source)
        return path

    def read_candidate_source(self, cid: str) -> str:
        row = self.store.conn.execute("SELECT source FROM candidates WHERE id=?", (cid,)).fetchone()
        if row is None:
            raise SessionError(f"{self.id}: no candidate {cid}")
        return row[0]

    def write_best(self, cid: str) -> None:
        src = self.read_candidate_source(cid)
        header = f"# kevolve session {self.id}, candidate {cid}: the best verified candidate so far\n"
        _atomic_write(self.path / "best.py", header + src)

    def close(self) -> None:
        self.store.close()


def round_ts(ts: float) -> float:
    return round(ts, 3)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _scrub(settings: dict) -> dict:
    """Settings as stored: anything that looks like a credential is left out."""
    return {k: v for k, v in settings.items() if not SECRET_WORDS.search(k)}


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("torch", "triton", "langgraph", "openai"):
        try:
            from importlib.metadata import version

            found[name] = version(name)
        except Exception:
            found[name] = None
    try:
        from importlib.metadata import version

        found["kevolve"] = version("kevolve")
    except Exception:
        found["kevolve"] = None
    return found


def new_session_id(problem: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", problem.stem)[:40] or "session"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def create_session(problem: Path, settings: dict, device: dict, workspace: Path | None = None) -> Session:
    workspace = Path(workspace or default_workspace())
    path = workspace / new_session_id(problem)
    path.mkdir(parents=True)
    (path / "candidates").mkdir()
    shutil.copyfile(problem, path / "problem.py")
    info = {"id": path.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "problem": {"path": str(problem.resolve()), "copy": "problem.py",
                        "sha256": hashlib.sha256(problem.read_bytes()).hexdigest()},
            "settings": _scrub(settings), "device": device, "versions": versions()}
    _atomic_write(path / "session.json", json.dumps(info, indent=2, default=str) + "\n")
    session = Session(path=path, settings=info["settings"], store=Store(path / "archive.sqlite"))
    session.store.set_meta("settings", info["settings"])
    return session


def resolve_session(ref: str | Path, workspace: Path | None = None) -> Path:
    """A session folder path, or an id (or unique id prefix) under the workspace."""
    ref_path = Path(ref)
    if (ref_path / "session.json").is_file():
        return ref_path
    workspace = Path(workspace or default_workspace())
    if (workspace / str(ref) / "session.json").is_file():
        return workspace / str(ref)
    matches = sorted(p for p in workspace.glob(f"{ref}*") if (p / "session.json").is_file()) if workspace.is_dir() \
        else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise SessionError(f"{ref}: matches {len(matches)} sessions under {workspace}; give more of the id")
    raise SessionError(f"{ref}: no session folder (looked for {ref_path}/session.json and under {workspace})")


def open_session(ref: str | Path, workspace: Path | None = None) -> Session:
    path = resolve_session(ref, workspace)
    info = json.loads((path / "session.json").read_text())
    store = Store(path / "archive.sqlite")
    settings = store.get_meta("settings", info.get("settings", {}))
    return Session(path=path, settings=settings, store=store)


class SessionError(Exception):
    """A usage error about a session (no such folder, ambiguous id): one line, exit 2."""
