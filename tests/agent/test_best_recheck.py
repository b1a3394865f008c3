"""A would-be best is re-checked on fresh inputs and re-timed beside the old best (GPU path, faked)."""

from types import SimpleNamespace

from kevolve.graph import _update_best
from kevolve.session import Store


def _timed(ms: float, status: str = "accepted") -> dict:
    return {"status": status, "correct": status == "accepted", "custom_kernel": True,
            "timing": {"candidate_ms": ms, "speedup_vs_eager": 1.0 / ms, "spread": 0.01}}


def _runtime(tmp_path, retimes: dict[str, dict]):
    store = Store(tmp_path / "archive.sqlite")
    calls = []

    class Evaluator:
        def evaluate(self, source, name="candidate", **options):
            calls.append((source, options))
            return retimes[source]

    written = []
    rt = SimpleNamespace(store=store, evaluator=Evaluator(), log=lambda *a, **k: None,
                         session=SimpleNamespace(write_best=written.append))
    return rt, calls, written


def _candidate(store, source: str, result: dict) -> dict:
    round_ = len(store.candidates()) + 1
    cand = store.add_candidate(round=round_, source=source, parent_id=None, strategy="s", operator="seed")
    store.add_evaluation(cand["id"], result)
    return store.candidate(cand["id"])


def test_new_best_kept_only_when_faster_beside_the_old(tmp_path):
    rt, calls, written = _runtime(tmp_path, {"old": _timed(1.0), "new": _timed(0.5)})
    old = _candidate(rt.store, "old", _timed(1.0))
    new = _candidate(rt.store, "new", _timed(0.5))
    assert _update_best({"best_id": old["id"]}, rt, new) == new["id"]
    assert {c[0] for c in calls} == {"old", "new"} and all(c[1] == {"fresh_inputs": True} for c in calls)
    assert written == [new["id"]]


def test_new_best_refused_when_the_retime_shows_no_gain(tmp_path):
    # Measured 2x faster in its round, but side by side with the old best on fresh inputs: no gain.
    rt, _, written = _runtime(tmp_path, {"old": _timed(0.6), "new": _timed(0.6)})
    old = _candidate(rt.store, "old", _timed(1.0))
    new = _candidate(rt.store, "new", _timed(0.5))
    assert _update_best({"best_id": old["id"]}, rt, new) == old["id"]
    assert written == []


def test_new_best_refused_when_fresh_inputs_fail(tmp_path):
    rt, _, _ = _runtime(tmp_path, {"old": _timed(1.0), "new": _timed(0.5, status="incorrect")})
    old = _candidate(rt.store, "old", _timed(1.0))
    new = _candidate(rt.store, "new", _timed(0.5))
    assert _update_best({"best_id": old["id"]}, rt, new) == old["id"]
