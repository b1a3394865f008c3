"""The session graph with a scripted Coder, the builtin Judge and the real Evaluator (CPU, interpreter)."""

from __future__ import annotations

import json

import pytest

from kevolve.graph import Limits, Runtime, parse_answer, recursion_limit, run_graph, session_state
from kevolve.judge import BuiltinJudge, rule_verdict
from kevolve.session import create_session, open_session
from kevolve.tools.evaluate import Evaluator


@pytest.fixture
def new_session(tmp_path, problem_file):
    opened = []

    def make(rounds=4):
        s = create_session(problem_file, {"rounds": rounds}, {"type": "cpu"}, workspace=tmp_path / "ws")
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


def runtime(session, coder, rounds=4, **kw) -> Runtime:
    lines = kw.pop("lines", [])
    ev = Evaluator(session.problem_path, device="cpu", timeout_s=30, prewarm=False)
    session.start_clock()
    return Runtime(session=session, evaluator=ev, coder=coder, judge=BuiltinJudge(), limits=Limits(rounds=rounds),
                   say=lines.append, **kw)


def kinds(session) -> list[tuple]:
    return [(e["round"], e["node"], e["kind"]) for e in session.store.events()]


def test_fix_then_accept_duplicate_and_best(new_session, scripted_coder, kernels):
    s = new_session()
    coder = scripted_coder([kernels["broken"], kernels["fixed"], kernels["fixed"], kernels["faster"]])
    lines: list[str] = []
    rt = runtime(s, coder, lines=lines)
    values = run_graph(rt, resume=False)
    rt.evaluator.close()
    rows = {c["id"]: c for c in s.store.candidates()}
    assert [rows[c]["status"] for c in sorted(rows)] == ["compile_error", "accepted", "duplicate", "accepted"]
    assert rows["c0002"]["parent_id"] == "c0001"  # the fix builds on the broken one
    assert rows["c0003"]["duplicate_of"] == "c0002"
    assert rows["c0004"]["parent_id"] == "c0002"  # after a duplicate: back to the best
    assert values["best_id"] == "c0002" and values["stop_reason"] == "rounds (4)"
    assert (s.path / "best.py").read_text().endswith(kernels["fixed"])
    assert (s.path / "candidates" / "c0001.py").read_text() == kernels["broken"]
    # every node logged before the next ran, in graph order
    assert kinds(s)[:5] == [(None, "seed", "session_start"), (1, "coder", "candidate"),
                            (1, "evaluate", "evaluation"), (1, "judge", "verdict"), (1, "archive", "round_end")]
    events = [json.loads(line) for line in (s.path / "events.jsonl").read_text().splitlines()]
    assert len(events) == len(s.store.events()) and all({"ts", "round", "node", "kind", "data"} <= set(e)
                                                        for e in events)
    verdicts = [e["data"] for e in events if e["kind"] == "verdict"]
    assert verdicts[0]["mode"] == "fix" and "expected ':'" in verdicts[0]["bottleneck"]
    assert verdicts[1]["mode"] == "optimize"
    assert any("correctness only" in line for line in lines)


def test_stop_file_then_resume_finishes(new_session, scripted_coder, kernels):
    s = new_session()
    coder = scripted_coder([kernels["fixed"], kernels["faster"], kernels["broken"]])
    rt = runtime(s, coder, rounds=3)
    (s.path / "STOP").touch()
    rt.say = lambda line: (s.path / "STOP").touch()
    values = run_graph(rt, resume=False)
    assert values["stop_reason"] == "stop (STOP file)" and coder.calls == 0  # nothing paid after the stop
    (s.path / "STOP").unlink()
    rt.say = print
    values = run_graph(rt, resume=True)
    rt.evaluator.close()
    assert values["stop_reason"] == "rounds (3)" and coder.calls == 3
    assert [c["round"] for c in s.store.candidates()] == [1, 2, 3]


def test_crash_mid_round_resumes_without_redoing_work(new_session, scripted_coder, kernels):
    s = new_session()
    coder = scripted_coder([kernels["broken"], kernels["fixed"], kernels["faster"]])
    rt = runtime(s, coder, rounds=3)
    real = rt.evaluator

    class Crashing:  # the session process dies in round 2's evaluation
        device = "cpu"

        def __init__(self):
            self.n = 0

        def evaluate(self, source, name="candidate", **options):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("power cut")
            return real.evaluate(source, name, **options)

    rt.evaluator = Crashing()
    with pytest.raises(RuntimeError, match="power cut"):
        run_graph(rt, resume=False)
    assert coder.calls == 2 and s.store.candidate("c0002")["status"] == "pending"
    state = session_state(rt)
    assert state["next"] == ["evaluate"] and state["values"]["candidate_id"] == "c0002"

    s2 = open_session(s.path)  # a new process
    rt2 = runtime(s2, coder, rounds=3)
    values = run_graph(rt2, resume=True)
    rt2.evaluator.close()
    real.close()
    assert coder.calls == 3  # round 2's candidate was not asked for again
    assert [c["status"] for c in s2.store.candidates()] == ["compile_error", "accepted", "accepted"]
    assert values["best_id"] == "c0002" and values["round"] == 4
    s2.close()


def test_interactive_hint_skip_stop_and_resume(new_session, scripted_coder, kernels):
    s = new_session()
    seen_hints = []

    class HintCoder(scripted_coder):
        def write(self, ctx, **kw):
            seen_hints.append(ctx.get("user_hint"))
            return super().write(ctx, **kw)

    coder = HintCoder([kernels["fixed"], kernels["faster"], kernels["broken"], kernels["broken"] + "\n# again"])
    answers = ["h use BLOCK 512", "skip", "q"]
    asked = []

    def ask(request):
        asked.append(request)
        return answers.pop(0)

    rt = runtime(s, coder, interactive=True, ask_user=ask)
    values = run_graph(rt, resume=False)
    assert values["stop_reason"] == "stop (user)" and values["round"] == 4
    assert seen_hints == [None, "use BLOCK 512", None]
    assert asked[0]["verdict"]["mode"] == "optimize" and asked[0]["candidate_id"] == "c0001"
    assert s.store.candidate("c0002")["skipped"] == 1
    assert values["best_id"] == "c0001"  # a skipped candidate is never best

    # killed while waiting for the user: the pending question survives in the checkpoint
    rt.ask_user = lambda request: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_graph(rt, resume=True)
    assert session_state(rt)["interrupted"]
    rt.ask_user = lambda request: "accept"
    values = run_graph(rt, resume=True)
    rt.evaluator.close()
    assert values["stop_reason"] == "rounds (4)" and len(s.store.candidates()) == 4
    assert [e["data"]["action"] for e in s.store.events() if e["kind"] == "user"] == \
        ["hint", "skip", "stop", "accept"]


def test_coder_gives_up_after_failed_rounds(new_session, scripted_coder):
    s = new_session()
    rt = runtime(s, scripted_coder([None, None, None, None]), rounds=10)
    values = run_graph(rt, resume=False)
    rt.evaluator.close()
    assert "no candidate 3 rounds in a row" in values["stop_reason"] and s.store.candidates() == []


def test_a_problem_whose_output_ignores_its_inputs_is_said_once(tmp_path, problem_file, scripted_coder, kernels):
    problem_file.write_text(problem_file.read_text().replace("torch.relu(x)", "torch.relu(x) * 0.0"))
    s = create_session(problem_file, {"rounds": 2}, {"type": "cpu"}, workspace=tmp_path / "ws")
    lines: list[str] = []
    rt = runtime(s, scripted_coder([kernels["fixed"], kernels["faster"]]), rounds=2, lines=lines)
    run_graph(rt, resume=False)
    rt.evaluator.close()
    assert [c["status"] for c in s.store.candidates()] == ["incorrect", "incorrect"]  # still judged as ever
    warned = [e for e in s.store.events() if e["kind"] == "problem_warning"]
    assert len(warned) == 1 and "returning zeros passes" in warned[0]["data"]["message"]
    assert sum("warning  returning zeros passes" in line for line in lines) == 1
    s.close()


def test_rule_verdicts_and_answers():
    assert rule_verdict({"status": "incorrect", "error": "trial 1: max abs 3"})["mode"] == "fix"
    memory = rule_verdict({"status": "accepted"}, {"bound": "memory"})
    assert memory["mode"] == "optimize" and memory["strategy"] == "cut-bytes"
    assert rule_verdict({"status": "accepted"}, {"bound": "compute"})["strategy"] == "tiling"
    assert parse_answer("") == {"action": "accept"}
    assert parse_answer("hint unroll the loop") == {"action": "hint", "hint": "unroll the loop"}
    assert parse_answer("s")["action"] == "skip" and parse_answer("stop")["action"] == "stop"
    assert parse_answer("try num_warps=8") == {"action": "hint", "hint": "try num_warps=8"}
    assert recursion_limit(5) > 6 * 5


def test_whole_session_through_openai_with_failures(tmp_path, problem_file, kernels, fence, llm_env, verdict_json,
                                                    monkeypatch, capsys):
    """Coder and Judge on the real openai client: 429, 500, a timeout, a malformed answer each, and the
    session still ends with the fixed kernel as best, every call stored and counted."""
    from kevolve.prompts import JUDGE_SCHEMA
    from kevolve.session_cli import main
    from tests.agent.fake_openai import FakeOpenAI, answer, delay, error, raw

    coder = [error(429, retry_after=0.01), answer(fence(kernels["broken"])),  # r1: rate limited, then a bad kernel
             error(500), answer(fence(kernels["fixed"])),  # r2: server error, then the fix
             answer("I would make it faster."), answer(fence(kernels["faster"]))]  # r3: no code: one repair
    judge = [raw('{"object": "chat.completion"}'), answer(verdict_json(JUDGE_SCHEMA, "fix", "fix")),  # r1: no choices
             delay(1.5), answer(verdict_json(JUDGE_SCHEMA, "optimize", "bigger-blocks")),  # r2: a timeout
             answer("looks fine"), answer("still fine")]  # r3: malformed twice: the rules stand in
    with FakeOpenAI(scripts={"coder-m": coder, "judge-m": judge}) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        code = main(["optimize", str(problem_file), "--coder", "openai:coder-m", "--judge", "openai:judge-m",
                     "--rounds", "3", "--device", "cpu", "--workspace", str(tmp_path / "ws"),
                     "--config", str(llm_env)])
        assert fake.unanswered == 0 and fake.remaining == 0
        assert len(fake.requests) == 12
    out = capsys.readouterr().out
    assert code == 0, out
    session = next((tmp_path / "ws").iterdir())
    s = open_session(session)
    assert [c["status"] for c in s.store.candidates()] == ["compile_error", "accepted", "accepted"]
    calls = [(c["round"], c["role"], c["attempt"]) for c in s.store.llm_calls()]
    assert sorted(calls) == [(1, "coder", 0), (1, "judge", 0), (2, "coder", 0), (2, "judge", 0),
                             (3, "coder", 0), (3, "coder", 1), (3, "judge", 0), (3, "judge", 1)]
    by_kind = {}
    for e in s.store.events():
        by_kind.setdefault(e["kind"], []).append(e)
    assert by_kind["judge_failed"][0]["round"] == 3
    assert [e["data"]["source"] for e in by_kind["verdict"]] == ["openai:judge-m", "openai:judge-m",
                                                                  "builtin (fallback)"]
    assert all(e["data"]["cost_usd"] > 0 for e in by_kind["llm_call"])
    ledger = s.store.get_meta("ledger")
    assert ledger["total_usd"] > 0 and set(ledger["roles"]) == {"coder", "judge"}
    assert "best: c0002" in out and "correctness only (CPU interpreter)" in out and "cost: $" in out
    for name in ("session.json", "events.jsonl"):
        assert "sk-test" not in (session / name).read_text()
    s.close()


def test_interactive_cli_reads_answers_from_stdin(tmp_path, problem_file, kernels, fence, llm_env, monkeypatch,
                                                  capsys):
    import io

    from kevolve.session_cli import main
    from tests.agent.fake_openai import FakeOpenAI, answer

    script = [answer(fence(kernels["fixed"])), answer(fence(kernels["faster"])), answer(fence(kernels["broken"]))]
    monkeypatch.setattr("sys.stdin", io.StringIO("h use BLOCK 512\ns\nq\n"))
    with FakeOpenAI(scripts={"coder-m": script}) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        code = main(["optimize", str(problem_file), "--coder", "openai:coder-m", "--rounds", "5", "--interactive",
                     "--device", "cpu", "--workspace", str(tmp_path / "ws"), "--config", str(llm_env)])
        second = " ".join(str(m.get("content")) for m in fake.requests[1].messages)
    out = capsys.readouterr().out
    assert code == 0 and "ended: stop (user)" in out and "[a]ccept" in out
    assert "use BLOCK 512" in second  # the hint reached the next Coder call
    s = open_session(next((tmp_path / "ws").iterdir()))
    assert [e["data"]["action"] for e in s.store.events() if e["kind"] == "user"] == ["hint", "skip", "stop"]
    assert s.store.candidate("c0002")["skipped"] == 1 and len(s.store.candidates()) == 3
    s.close()


def test_improving_policy_profiles_only_a_lead_that_beats_the_best(new_session):
    """With policy "improving" a lead slower than the best skips ncu and is judged on its parent's
    profile; policy "every" profiles it (and never borrows a parent's)."""
    from types import SimpleNamespace

    from kevolve.graph import _after_evaluate, judge

    s = new_session()
    store = s.store

    def accepted(parent, speedup):
        cand = store.add_candidate(round=len(store.candidates()) + 1, source=f"# {speedup}", parent_id=parent,
                                   strategy="tune",
                                   operator="mutate")
        store.add_evaluation(cand["id"], {"status": "accepted", "correct": True, "custom_kernel": True,
                                          "timing": {"speedup_vs_eager": speedup, "sol_fraction": 0.3}})
        return cand["id"]

    best = accepted(None, 1.5)
    store.set_profile(best, {"kernels": [], "bound": "latency", "problem_class": "memory"})
    slower, faster = accepted(best, 1.2), accepted(best, 1.8)
    gpu = SimpleNamespace(device="cuda", profile=lambda source: None, device_info={})
    rt = Runtime(session=s, evaluator=gpu, coder=None, judge=BuiltinJudge(), profile_policy="improving",
                 say=lambda line: None)
    state = {"round": 1, "best_id": best, "status": "accepted"}
    assert _after_evaluate({**state, "candidate_id": slower}, rt) == "judge"
    assert _after_evaluate({**state, "candidate_id": faster}, rt) == "profile"
    assert _after_evaluate({**state, "best_id": None, "candidate_id": slower}, rt) == "profile"  # the first one
    assert _after_evaluate({**state, "candidate_id": slower, "status": "incorrect"}, rt) == "judge"

    verdict = judge({**state, "candidate_id": slower}, rt)["verdict"]
    assert verdict["strategy"] == "more-parallelism"  # the parent's latency bound, read for its mutation
    logged = [e["data"] for e in store.events() if e["kind"] == "verdict"][-1]
    assert logged["profile_of"] == best

    rt.profile_policy = "every"
    assert _after_evaluate({**state, "candidate_id": slower}, rt) == "profile"
    verdict = judge({**state, "round": 2, "candidate_id": slower}, rt)["verdict"]
    assert verdict["strategy"] != "more-parallelism"
    assert [e["data"] for e in store.events() if e["kind"] == "verdict"][-1]["profile_of"] is None
