"""The kernel library across sessions, `kevolve library`, `kevolve export` and the lineage view."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest

from kevolve import library
from kevolve.cli import main

PROBLEM = Path(__file__).resolve().parents[2] / "examples" / "problems" / "scale_bias_gelu.py"
DEVICE = {"name": "gpu-x", "torch": "2.0", "triton": "3.0"}


def test_record_keeps_the_faster_kernel_per_key(tmp_path):
    db = tmp_path / "lib.sqlite"
    cand = {"id": "c0001", "source": "A", "speedup": 1.5, "strategy": "tune"}
    assert library.record("problem", DEVICE, cand, path=db)
    assert not library.record("problem", DEVICE, {**cand, "source": "B", "speedup": 1.2}, path=db)
    assert library.record("problem", DEVICE, {**cand, "source": "C", "speedup": 2.0}, path=db)
    assert library.lookup("problem", DEVICE, path=db)["source"] == "C"
    assert library.lookup("# a comment\nproblem", DEVICE, path=db)["source"] == "C"  # same problem, reformatted
    assert library.lookup("problem", {**DEVICE, "triton": "3.1"}, path=db) is None  # another Triton: not reused
    assert len(library.entries(db)) == 1


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEVOLVE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _session(ws: Path, before: set) -> Path:
    (new,) = set(ws.iterdir()) - before
    return new


def test_second_session_starts_from_the_library(cache, capsys):
    from kevolve.lineage import ancestry, print_lineage
    from kevolve.session import open_session

    ws = cache / "ws"
    args = ["optimize", str(PROBLEM), "--device", "cpu", "--rounds", "1", "--workspace", str(ws)]
    assert main(args) == 0
    first = _session(ws, set())
    assert len(library.entries()) == 1
    assert main(["library", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert listed[0]["session_id"] == first.name and listed[0]["problem_name"] == "scale_bias_gelu"

    assert main(args) == 0
    second = _session(ws, {first})
    s = open_session(second)
    seeded = s.store.candidate_for_round(0)
    assert seeded["operator"] == "library" and seeded["status"] == "accepted"
    assert s.store.candidate_for_round(1)["parent_id"] == seeded["id"]  # built on the kept kernel
    chain = ancestry(s, s.store.candidate_for_round(1)["id"])
    assert [c["operator"] for c in chain][0] == "library" and len(chain) == 2
    from rich.console import Console

    out = StringIO()
    print_lineage(s, chain[-1]["id"], console=Console(file=out, width=200))
    assert "library" in out.getvalue() and chain[-1]["id"] in out.getvalue()
    s.close()

    assert main(args + ["--no-reuse"]) == 0
    third = _session(ws, {first, second})
    s = open_session(third)
    assert s.store.candidate_for_round(0) is None
    s.close()

    # export: JSONL always; parquet only with pyarrow, else one clear line and exit 2
    capsys.readouterr()
    assert main(["export", second.name, "--workspace", str(ws)]) == 0
    lines = [json.loads(x) for x in (second / "archive.jsonl").read_text().splitlines()]
    assert {x["table"] for x in lines} >= {"candidates", "evaluations", "events"}
    code = main(["export", second.name, "--workspace", str(ws), "--format", "parquet"])
    try:
        import pyarrow  # noqa: F401

        assert code == 0
    except ImportError:
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "pyarrow" in err[0]
