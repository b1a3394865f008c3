"""The session graph: seed → coder → evaluate → (profile) → judge → (review) → archive → coder …

Nodes are plain functions from the state to a partial update. The state holds ids and small dicts;
sources, evaluations and LLM answers live in the session's SQLite, written by each node before it
returns, so the checkpoint after a node never points at work that was not saved. Every node first
looks for its own finished output in the store: a node replayed after a crash costs nothing twice.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from kevolve.archive import bound_class, margin
from kevolve.coder import CoderFailed, RecordedChat, compact_evaluation
from kevolve.judge import judge_context, mode_for, rule_verdict
from kevolve.session import Session, normalized_hash

STEPS_PER_ROUND = 6  # coder, evaluate, profile, judge, review, archive
MAX_FAILED_ROUNDS = 3  # rounds in a row with no candidate before the session gives up
MAX_FIX_CHAIN = 3  # failed candidates in a row built on each other before going back to the best


class State(TypedDict, total=False):
    round: int  # the round being worked on, from 1
    candidate_id: str | None  # this round's lead candidate (profiled, judged); None when the Coder gave none
    batch_ids: list[str]  # every candidate of this round (--batch), the lead among them
    evaluated_ids: list[str]  # results stored by this round's evaluate node (late ones of earlier rounds too)
    parent_id: str | None  # what the next Coder call builds on
    best_id: str | None  # the best verified candidate
    status: str | None  # this round's evaluation status
    verdict: dict | None  # this round's Judge verdict
    hint: str | None  # the user's hint for the next Coder call
    skip: bool  # the user skipped this round's candidate
    failed_rounds: int  # rounds in a row without a candidate
    stop_reason: str | None


@dataclass
class Limits:
    rounds: int = 10
    time_s: float | None = None
    budget_usd: float | None = None

    def reason(self, session: Session, state: State, spent_usd: float) -> str | None:
        if state.get("round", 1) > self.rounds:
            return f"rounds ({self.rounds})"
        if self.time_s is not None and session.active_s() >= self.time_s:
            return f"time ({self.time_s:.0f}s)"
        if self.budget_usd is not None and spent_usd >= self.budget_usd:
            return f"budget (${spent_usd:.4f} of ${self.budget_usd:.2f})"
        if session.stop_file.exists():
            return "stop (STOP file)"
        return None


@dataclass
class Runtime:
    """What the nodes need besides the state: built once per process, never checkpointed."""

    session: Session
    evaluator: Any  # kevolve.tools.evaluate.Evaluator
    coder: Any
    judge: Any
    coder_chat: Any = None
    judge_chat: Any = None
    ledger: Any = None
    limits: Limits = field(default_factory=Limits)
    backend: str = "triton"
    seed: int = 0
    batch: int = 1  # candidates proposed and evaluated together each round
    straggler_s: float = 30.0  # a batch waits at least this long for its slowest candidate (see evaluate)
    straggler_factor: float = 3.0  # ... or this many times its slowest finished candidate, whichever is longer
    inflight: dict = field(default_factory=dict)  # candidate id -> (started, future): never checkpointed
    interactive: bool = False
    # "every": each round's lead is profiled (an LLM Judge reads every profile). "improving": only a lead
    # that beats the best so far, which is what later rounds start from; a tuning mutation that lost is
    # judged on its parent's profile (same kernels). An ncu run held the H100 11-27 s, longer than the
    # evaluation itself, and for the builtin Judge it rarely changes the next step.
    profile_policy: str = "every"
    say: Callable[[str], None] = print
    ask_user: Callable[[dict], str] | None = None
    stop_requested: bool = False  # set by the first Ctrl-C: finish this step, then stop
    warned: bool = False  # the problem's own warning (an output that ignores its inputs) said once

    @property
    def store(self):
        return self.session.store

    def spent_usd(self) -> float:
        return float(getattr(self.ledger, "total_usd", 0.0) or 0.0)

    def stop_reason(self, state: State) -> str | None:
        if self.stop_requested:
            return "stop (Ctrl-C)"
        return self.limits.reason(self.session, state, self.spent_usd())

    def device_facts(self) -> dict:
        return dict(getattr(self.evaluator, "device_info", None) or getattr(self.evaluator, "_device_info", {}))


    def log(self, state: State, node: str, kind: str, data: dict) -> None:
        self.session.event(kind, data, round=state.get("round"), node=node)


# -- nodes --------------------------------------------------------------------------------------------


def seed(state: State, rt: Runtime) -> dict:
    rt.log(state, "seed", "session_start", {"problem": str(rt.session.problem_path), "device": rt.device_facts(),
                                            "coder": getattr(rt.coder, "spec", "builtin"),
                                            "judge": getattr(rt.judge, "spec", "builtin"),
                                            "executor": getattr(rt.evaluator, "kind", "local"), "batch": rt.batch})
    update: State = {"round": 1, "candidate_id": None, "batch_ids": [], "parent_id": None, "best_id": None,
                     "status": None, "verdict": None, "hint": None, "skip": False, "failed_rounds": 0,
                     "stop_reason": None}
    if rt.session.settings.get("reuse"):  # the kernel library's best for this problem and machine, re-verified
        from kevolve.library import seed_from_library

        update["best_id"] = seed_from_library(rt)
    update["stop_reason"] = rt.stop_reason({**state, **update})
    return update


def coder(state: State, rt: Runtime) -> dict:
    """Propose this round's batch (one candidate unless --batch), each from its own archive choice.

    The builtin Coder writes the slots one after the other (each sees the ones before, so none
    repeats); an LLM Coder's calls for the slots go out at once, and are stored in slot order."""
    r = state["round"]
    made = [c for c in (rt.store.candidate_for_round(r, slot) for slot in range(rt.batch)) if c]
    if len(made) < rt.batch and (rt.stop_requested or rt.session.stop_file.exists()):
        if not made:  # do not pay for a call we would throw away
            return {"candidate_id": None, "batch_ids": [], "stop_reason": rt.stop_reason(state) or "stop"}
    else:
        # slots already stored were made before a crash: only the missing ones are proposed
        slots = sorted(set(range(rt.batch)) - {c["slot"] for c in made})
        parallel = rt.coder_chat is not None and len(slots) > 1
        outcomes = _write_parallel(state, rt, r, slots) if parallel else _write_in_turn(state, rt, r, slots)
        for slot, result in outcomes:
            if isinstance(result, dict):
                made.append(result)
                continue
            e = result
            if _is_budget(e):
                rt.log(state, "coder", "budget_exceeded", {"error": str(e), "slot": slot})
                if not made:
                    return {"candidate_id": None, "batch_ids": [], "stop_reason": f"budget ({e})"}
                break
            rt.log(state, "coder", "coder_failed", {"error": str(e), "kind": type(e).__name__, "slot": slot})
            rt.say(f"[r{r}] coder    no candidate: {e}")
            if not made:
                return {"candidate_id": None, "batch_ids": [], "hint": None,
                        "failed_rounds": state.get("failed_rounds", 0) + 1}
            break  # what the batch has so far goes on to evaluation
    return {"candidate_id": made[0]["id"], "batch_ids": [c["id"] for c in made], "hint": None, "failed_rounds": 0}


def _write_in_turn(state: State, rt: Runtime, r: int, slots: list[int]):
    """(slot, stored candidate or the exception) for each slot, one after the other; stops at a failure."""
    for slot in slots:
        job = _prepare(state, rt, r, slot)
        try:
            proposal = rt.coder.write(job["ctx"], chat=job["chat"], seen=lambda src: _seen(rt, src))
        except (CoderFailed, *_llm_errors()) as e:
            yield slot, e
            return
        yield slot, _store_proposal(state, rt, r, slot, job, proposal)


def _write_parallel(state: State, rt: Runtime, r: int, slots: list[int]) -> list:
    """The same, with the Coder's calls for all slots in flight at once (the store takes turns)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    jobs = [_prepare(state, rt, r, slot, store_lock=lock) for slot in slots]

    def write(job: dict):
        try:
            seen = partial(_locked_seen, rt, lock=lock)
            return job["slot"], rt.coder.write(job["ctx"], chat=job["chat"], seen=seen)
        except (CoderFailed, *_llm_errors()) as e:
            return job["slot"], e

    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="kevolve-coder") as pool:
        written = list(pool.map(write, jobs))
    out = []
    for job, (slot, result) in zip(jobs, written):
        if isinstance(result, BaseException):
            out.append((slot, result))
        else:
            out.append((slot, _store_proposal(state, rt, r, slot, job, result)))
    # the stored ones first, in slot order, then the failures: the batch keeps every candidate it got
    return [o for o in out if isinstance(o[1], dict)] + [o for o in out if not isinstance(o[1], dict)]


def _locked_seen(rt: Runtime, source: str, lock) -> bool:
    with lock:
        return _seen(rt, source)


def _prepare(state: State, rt: Runtime, r: int, slot: int, store_lock=None) -> dict:
    """What one slot's Coder call needs. Each slot of a batch gets its own archive choice (island and
    parent), so the batch spreads out; a pure function of the store and the seed."""
    sel = _select(rt, state, r, slot)
    parent = rt.store.candidate(sel.parent_id)
    best = rt.store.candidate(state.get("best_id"))
    parent_eval = rt.store.evaluation(parent["id"]) if parent else None
    profile = rt.store.profile(parent["id"]) if parent else None
    inspirations = [{"id": c["id"], "strategy": c["strategy"], "speedup": c["speedup"], "source": c["source"]}
                    for c in map(rt.store.candidate, sel.inspirations) if c]
    ctx = {"problem_source": rt.session.problem_path.read_text(), "problem_path": rt.session.problem_path,
           "backend": rt.backend, "device_facts": rt.device_facts(),
           "parent_source": parent["source"] if parent else None, "parent_eval": compact_evaluation(parent_eval),
           "profile_summary": (profile or {}).get("summary"), "judge_plan": state.get("verdict"),
           "inspirations": inspirations, "user_hint": state.get("hint"),
           "best_source": best["source"] if best else None, "round": r, "seed": rt.seed + slot,
           "selection": sel.operator, "crossover_with": sel.partner_id}
    chat = RecordedChat(rt.coder_chat, rt.store, rt.ledger, r, "coder", on_reply=partial(_log_reply, rt, state),
                        slot=slot, store_lock=store_lock)
    return {"slot": slot, "sel": sel, "parent": parent, "inspirations": inspirations, "ctx": ctx, "chat": chat}


def _store_proposal(state: State, rt: Runtime, r: int, slot: int, job: dict, proposal) -> dict:
    sel, parent, chat = job["sel"], job["parent"], job["chat"]
    cand = rt.store.add_candidate(round=r, slot=slot, source=proposal.source,
                                  parent_id=parent["id"] if parent else None, strategy=proposal.strategy,
                                  island=sel.island,
                                  operator=proposal.operator if sel.operator in ("sample", "seed")
                                  else f"{proposal.operator}/{sel.operator}",
                                  inspirations=[i["id"] for i in job["inspirations"]], notes=proposal.notes)
    rt.session.save_candidate_source(cand["id"], proposal.source)
    rt.log(state, "coder", "candidate", {"id": cand["id"], "parent": cand["parent_id"], "operator": cand["operator"],
                                         "strategy": cand["strategy"], "hash": cand["source_hash"], "slot": slot,
                                         "llm_calls": chat.calls, "replayed": chat.replayed})
    rt.say(f"[r{r}] coder    {cand['id']} ({cand['operator']}"
           f"{', ' + cand['strategy'] if cand['strategy'] else ''}) from {cand['parent_id'] or 'scratch'}")
    return cand


def evaluate(state: State, rt: Runtime) -> dict:
    """Evaluate the round's batch, all in flight at once on the executor; each result is stored as it
    arrives (a crash loses none that finished). The lead is the batch's fastest verified candidate,
    else its first: that one is profiled and judged.

    One slow candidate does not hold the session up: once part of the batch is back, the rest gets
    max(straggler_s, straggler_factor x the slowest finished one); then the round goes on and the straggler's result
    is stored by a later round's evaluate (or at the session's end). Every stored candidate without a
    result is in flight, so after a resume those are simply submitted again."""
    ids = state.get("batch_ids") or [state["candidate_id"]]
    _submit_pending(state, rt)
    recorded = _collect(state, rt, ids)
    done = [cid for cid in ids if rt.store.evaluation(cid) is not None]
    lead = _lead(rt, done)
    return {"candidate_id": lead, "status": rt.store.evaluation(lead)["status"], "evaluated_ids": recorded}


def _submit_pending(state: State, rt: Runtime) -> None:
    """Every stored candidate without a result goes in flight (or is refused at once as a duplicate)."""
    for cand in rt.store.candidates():
        if cand["status"] != "pending" or cand["id"] in rt.inflight or rt.store.evaluation(cand["id"]):
            continue
        refused = _refused_before_compile(rt, cand)
        if refused is not None:
            _record_evaluation(state, rt, cand["id"], refused)
        else:
            rt.inflight[cand["id"]] = (time.perf_counter(), _submit(rt, cand))


def _collect(state: State, rt: Runtime, ids: list[str], wait_for_all: bool = False) -> list[str]:
    """Store results as they arrive until this batch is back (or only stragglers are left)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    recorded: list[str] = []
    started = min((rt.inflight[c][0] for c in ids if c in rt.inflight), default=time.perf_counter())
    slowest = 0.0
    while True:
        for cid, (t0, future) in list(rt.inflight.items()):
            if future.done():
                del rt.inflight[cid]
                result = future.result()
                result["wall_s"] = round(time.perf_counter() - t0, 3)
                _record_evaluation(state, rt, cid, result)
                recorded.append(cid)
                if cid in ids:
                    slowest = max(slowest, result["wall_s"])
        waiting = [c for c in ids if c in rt.inflight] if not wait_for_all else list(rt.inflight)
        if not waiting:
            return recorded
        patience = max(rt.straggler_s, rt.straggler_factor * slowest)
        some_back = len(waiting) < len(ids) and not wait_for_all
        if some_back and time.perf_counter() - started > patience:
            rt.log(state, "evaluate", "stragglers", {"ids": waiting, "after_s": round(patience, 1)})
            rt.say(f"[r{state['round']}] evaluate going on without {', '.join(waiting)} (still running)")
            return recorded
        timeout = max(0.05, started + patience - time.perf_counter()) if some_back else None
        wait([rt.inflight[c][1] for c in waiting], timeout=timeout, return_when=FIRST_COMPLETED)


def drain(rt: Runtime, state: State) -> str | None:
    """At the session's end: wait for the stragglers still running, store them, and let each one
    become best if it is. Returns the best id."""
    best_id = state.get("best_id")
    _submit_pending(state, rt)
    for cid in _collect(state, rt, [], wait_for_all=True):
        cand = rt.store.candidate(cid)
        if _verified(cand):
            best_id = _update_best({**state, "best_id": best_id}, rt, cand)
    return best_id


def _refused_before_compile(rt: Runtime, cand: dict) -> dict | None:
    refused = {"status": "duplicate", "correct": False, "custom_kernel": False, "checks": [], "timing": None,
               "log": ""}
    dup = rt.store.find_by_hash(cand["source_hash"], exclude=cand["id"])
    if dup is not None:  # caught before any compile (DESIGN.md "The archive")
        return {**refused, "error": f"the same code as {dup['id']} (status {dup['status']})", "duplicate_of": dup["id"]}
    if (why := _near_duplicate(rt, cand)) is not None:  # refused before any compile; the Judge tells the Coder
        return {**refused, "error": why, "near_duplicate_of": cand["parent_id"]}
    return None


def _submit(rt: Runtime, cand: dict):
    """A future of the candidate's evaluation (an Evaluator without `submit` runs it now)."""
    if hasattr(rt.evaluator, "submit"):
        return rt.evaluator.submit(cand["source"], f"{cand['id']}.py")
    from concurrent.futures import Future

    future: Future = Future()
    future.set_result(rt.evaluator.evaluate(cand["source"], name=f"{cand['id']}.py"))
    return future


def _record_evaluation(state: State, rt: Runtime, cid: str, result: dict) -> None:
    rt.store.add_evaluation(cid, result, duplicate_of=result.get("duplicate_of"))
    rt.log(state, "evaluate", "evaluation", _eval_summary(cid, result))
    rt.say(f"[r{state['round']}] evaluate {cid} {_eval_line(result)}")
    if result.get("problem_warning") and not rt.warned:
        rt.warned = True
        rt.log(state, "evaluate", "problem_warning", {"message": result["problem_warning"]})
        rt.say(f"[r{state['round']}] warning  {result['problem_warning']}")


def _lead(rt: Runtime, ids: list[str]) -> str:
    rows = [rt.store.candidate(cid) for cid in ids]
    verified = [c for c in rows if _verified(c)]
    if not verified:
        return ids[0]
    return max(verified, key=lambda c: (c["speedup"] or 0.0, -ids.index(c["id"])))["id"]


def profile(state: State, rt: Runtime) -> dict:
    cid = state["candidate_id"]
    if rt.store.profile(cid) is None:
        started = time.perf_counter()
        result = rt.evaluator.profile(rt.store.candidate(cid)["source"])
        wall_s = round(time.perf_counter() - started, 3)
        rt.store.set_profile(cid, result)
        summary = (result or {}).get("summary", "")
        bound = bound_class(result) if result else "unavailable"
        rt.log(state, "profile", "profile", {"id": cid, "bound": bound, "wall_s": wall_s,
                                             "available": result is not None, "summary": summary})
        rt.say(f"[r{state['round']}] profile  {cid} bound: {bound}")
    return {}


def judge(state: State, rt: Runtime) -> dict:
    r, cid = state["round"], state["candidate_id"]
    verdict = rt.store.verdict(r)
    if verdict is not None:
        return {"verdict": verdict}
    cand = rt.store.candidate(cid)
    evaluation = rt.store.evaluation(cid)
    prof, profiled_id = _judged_profile(rt, cand) if cand else (None, None)
    mode = mode_for(evaluation)
    history = [{"id": c["id"], "status": c["status"], "speedup": c["speedup"], "strategy": c["strategy"]}
               for c in rt.store.candidates()[-8:]]
    ctx = judge_context(problem_source=rt.session.problem_path.read_text(), candidate_source=cand["source"],
                        evaluation=evaluation, profile=prof,
                        device_facts=rt.device_facts(), backend=rt.backend, history=history)
    chat = RecordedChat(rt.judge_chat, rt.store, rt.ledger, r, "judge", on_reply=partial(_log_reply, rt, state))
    source, update = getattr(rt.judge, "spec", "builtin"), {}
    try:
        if evaluation.get("status") == "duplicate":  # nothing new to read: no call paid for it
            verdict, source = rule_verdict(evaluation), "builtin (duplicate)"
        else:
            verdict = rt.judge.judge(ctx, mode, chat=chat)
    except _llm_errors() as e:  # a failed Judge does not end the session: the rules stand in
        verdict, source = rule_verdict(evaluation, ctx["profile"]), "builtin (fallback)"
        rt.log(state, "judge", "judge_failed", {"error": str(e), "kind": type(e).__name__})
        if _is_budget(e):
            update["stop_reason"] = f"budget ({e})"
    rt.store.add_verdict(r, cid, verdict, source)
    rt.log(state, "judge", "verdict", {"id": cid, "source": source, "profile_of": profiled_id, **verdict})
    rt.say(f"[r{r}] judge    {verdict.get('mode')}: {verdict.get('bottleneck', '')[:80]}"
           f" → {verdict.get('change', '')[:80]}")
    return {"verdict": verdict, **update}


def review(state: State, rt: Runtime) -> dict:
    """Interactive only: the user sees the verdict and accepts, adds a hint, skips the candidate or stops."""
    answer = interrupt({"round": state["round"], "candidate_id": state.get("candidate_id"),
                        "status": state.get("status"), "verdict": state.get("verdict")})
    choice = parse_answer(answer)
    rt.log(state, "review", "user", choice)
    update: dict = {"skip": choice["action"] == "skip"}
    if choice["action"] == "hint":
        update["hint"] = choice["hint"]
    if choice["action"] == "stop":
        update["stop_reason"] = "stop (user)"
    return update


def archive(state: State, rt: Runtime) -> dict:
    r, cid = state["round"], state.get("candidate_id")
    cand = rt.store.candidate(cid)
    if cand is None and state.get("stop_reason"):  # stopped before the Coder ran: the round is not used up
        rt.log(state, "archive", "stopped", {"reason": state["stop_reason"]})
        return {}
    if cand is not None and state.get("skip"):
        rt.store.mark_skipped(cid)
    best_id = state.get("best_id")
    batch = [rt.store.candidate(i) for i in dict.fromkeys([*(state.get("batch_ids") or [cid]),
                                                            *(state.get("evaluated_ids") or [])])]
    for other in sorted((c for c in batch if _verified(c)), key=lambda c: -(c["speedup"] or 0.0)):
        best_id = _update_best({**state, "best_id": best_id}, rt, other)
    parent_id = _select(rt, {**state, "best_id": best_id}, r + 1).parent_id
    update: State = {"round": r + 1, "best_id": best_id, "parent_id": parent_id, "skip": False,
                     "candidate_id": None, "batch_ids": [], "evaluated_ids": [], "status": None}
    if state.get("failed_rounds", 0) >= MAX_FAILED_ROUNDS:
        update["stop_reason"] = f"the Coder gave no candidate {MAX_FAILED_ROUNDS} rounds in a row"
    update["stop_reason"] = state.get("stop_reason") or update.get("stop_reason") or \
        rt.stop_reason({**state, **update})
    rt.log(state, "archive", "round_end", {"candidate": cid, "best": best_id, "parent": parent_id,
                                           "cost_usd": rt.spent_usd(), "active_s": round(rt.session.active_s(), 1),
                                           "stop_reason": update["stop_reason"]})
    best = rt.store.candidate(best_id)
    rt.say(f"[r{r}] archive  best {_best_line(best)}; ${rt.spent_usd():.4f}"
           + (f"; stopping: {update['stop_reason']}" if update["stop_reason"] else ""))
    return update


# -- archive policy (the archive issue replaces this with islands and niches) ------------------------


def _verified(c: dict | None) -> bool:
    return bool(c and c["status"] == "accepted" and c["custom_kernel"] and not c["skipped"] and not c["duplicate_of"])


def _update_best(state: State, rt: Runtime, cand: dict | None) -> str | None:
    best = rt.store.candidate(state.get("best_id"))
    if not _verified(cand):
        return best["id"] if best else None
    if best is None:
        better = True
    elif cand["speedup"] is None or best["speedup"] is None:
        better = False  # correctness only (interpreter): the first verified candidate stays best
    else:  # faster by more than the uncertainty of the two medians (kevolve.archive.margin)
        noise = margin(_noise_of(rt.store.evaluation(cand["id"])), _noise_of(rt.store.evaluation(best["id"])))
        better = cand["speedup"] > best["speedup"] * (1 + noise)
        if better:  # re-checked on fresh inputs and re-timed beside the old best before it is called best
            recheck, old = _recheck(rt, cand, best)
            new_ms = (recheck.get("timing") or {}).get("candidate_ms")
            old_ms = (old.get("timing") or {}).get("candidate_ms")
            noise = margin(_noise_of(recheck), _noise_of(old))
            better = recheck["status"] == "accepted" and bool(new_ms) and (
                not old_ms or old["status"] != "accepted" or new_ms * (1 + noise) < old_ms)
            rt.log(state, "archive", "recheck", {"id": cand["id"], "status": recheck["status"], "ms": new_ms,
                                                 "old_best": best["id"], "old_ms": old_ms, "kept": better})
    if not better:
        return best["id"] if best else None
    rt.session.write_best(cand["id"])
    rt.log(state, "archive", "new_best", {"id": cand["id"], "speedup": cand["speedup"]})
    return cand["id"]


def _noise_of(result: dict | None) -> tuple[float | None, int | None]:
    timing = (result or {}).get("timing") or {}
    return timing.get("spread"), timing.get("reps")


def _recheck(rt: Runtime, new: dict, old: dict) -> tuple[dict, dict]:
    """A would-be best and the best, both on fresh inputs and side by side (on an executor: one GPU)."""
    pair = (new["source"], f"{new['id']}-recheck.py"), (old["source"], f"{old['id']}-retime.py")
    if hasattr(rt.evaluator, "recheck"):
        return rt.evaluator.recheck(*pair)
    from kevolve.tools.executor import recheck_pair

    return recheck_pair(rt.evaluator, *pair)


def _select(rt: Runtime, state: State, round: int, slot: int = 0):
    from kevolve.archive import select_for_round

    return select_for_round(rt.store, round, seed=rt.seed, best_id=state.get("best_id"), slot=slot)[0]


def _near_duplicate(rt: Runtime, cand: dict) -> str | None:
    from kevolve.archive import NEAR_DUPLICATE, near_duplicate

    parent = rt.store.candidate(cand["parent_id"])
    threshold = float(rt.session.settings.get("near_duplicate") or NEAR_DUPLICATE)
    # only against a correct parent: a repair of a failure is small by nature (one missing colon)
    return near_duplicate(cand["source"], parent["source"], threshold) if _verified(parent) else None


def _next_parent(state: State, rt: Runtime, cand: dict | None, best_id: str | None) -> str | None:
    if cand is None or state.get("skip") or cand["duplicate_of"]:
        return best_id or state.get("parent_id")
    if _verified(cand):
        return best_id or cand["id"]
    chain, node = 0, cand  # how many failed candidates in a row built on each other
    while node is not None and not _verified(node) and chain < MAX_FIX_CHAIN:
        chain += 1
        node = rt.store.candidate(node["parent_id"])
    return cand["id"] if chain < MAX_FIX_CHAIN else best_id


# -- the graph ---------------------------------------------------------------------------------------


def build_graph(rt: Runtime) -> StateGraph:
    g = StateGraph(State)
    for name, fn in [("seed", seed), ("coder", coder), ("evaluate", evaluate), ("profile", profile),
                     ("judge", judge), ("review", review), ("archive", archive)]:
        g.add_node(name, partial(fn, rt=rt))
    g.add_edge(START, "seed")
    g.add_conditional_edges("seed", lambda s: END if s.get("stop_reason") else "coder", ["coder", END])
    g.add_conditional_edges("coder", lambda s: "evaluate" if s.get("candidate_id") else "archive",
                            ["evaluate", "archive"])
    g.add_conditional_edges("evaluate", partial(_after_evaluate, rt=rt), ["profile", "judge"])
    g.add_edge("profile", "judge")
    g.add_conditional_edges("judge", lambda s: "review" if rt.interactive else "archive", ["review", "archive"])
    g.add_edge("review", "archive")
    g.add_conditional_edges("archive", lambda s: END if s.get("stop_reason") else "coder", ["coder", END])
    return g


def _after_evaluate(state: State, rt: Runtime) -> str:
    gpu = getattr(rt.evaluator, "device", "cpu") == "cuda"
    if state.get("status") != "accepted" or not gpu or not hasattr(rt.evaluator, "profile"):
        return "judge"
    return "profile" if rt.profile_policy == "every" or _improves(state, rt) else "judge"


def _improves(state: State, rt: Runtime) -> bool:
    """The lead beats the session's best so far (the archive has not taken it in yet)."""
    best = rt.store.candidate(state.get("best_id"))
    lead = rt.store.candidate(state.get("candidate_id"))
    return best is None or (lead["speedup"] or 0.0) > (best["speedup"] or 0.0)


def _judged_profile(rt: Runtime, cand: dict) -> tuple[dict | None, str | None]:
    """The candidate's own profile, else (policy "improving") its parent's: a mutation runs the same kernels.
    Returns (profile, id of the candidate it belongs to)."""
    for cid in (cand["id"], cand.get("parent_id")):
        prof = rt.store.profile(cid) if cid else None
        if prof and not prof.get("unavailable"):
            return prof, cid
        if rt.profile_policy == "every":
            break
    return None, None


def recursion_limit(rounds_left: int) -> int:
    return 2 + STEPS_PER_ROUND * (max(rounds_left, 0) + 1)


def compile_graph(rt: Runtime):
    from langgraph.checkpoint.sqlite import SqliteSaver

    conn = sqlite3.connect(rt.session.checkpoint_path, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    return build_graph(rt).compile(checkpointer=SqliteSaver(conn)), conn


def run_graph(rt: Runtime, *, resume: bool) -> dict:
    """Run (or continue) the session to its end; interrupts are answered through rt.ask_user."""
    app, conn = compile_graph(rt)
    config = {"configurable": {"thread_id": rt.session.id}}
    try:
        snapshot = app.get_state(config)
        if not resume or not snapshot.values:
            payload: Any = {}
        elif snapshot.next:
            payload = None  # continue from the last finished node
        else:  # ended (stop, Ctrl-C, limit that the resume raised): re-open after the last archive
            app.update_state(config, {"stop_reason": None}, as_node="archive")
            payload = None
        while True:
            done_round = (app.get_state(config).values or {}).get("round", 1)
            config["recursion_limit"] = recursion_limit(rt.limits.rounds - done_round + 1)
            # durability="sync": the checkpoint is on disk before the next node starts (the default, async,
            # lets a SIGKILL lose the last node's checkpoint and replay it)
            for _ in app.stream(payload, config, stream_mode="updates", durability="sync"):
                pass
            snapshot = app.get_state(config)
            pending = [i for task in snapshot.tasks for i in task.interrupts]
            if not pending:
                return _finish(rt, app, config, dict(snapshot.values))
            if rt.ask_user is None:
                raise RuntimeError("the session waits for an answer but no one can be asked")
            payload = Command(resume=rt.ask_user(pending[0].value))
    finally:
        conn.close()


def _finish(rt: Runtime, app, config: dict, values: dict) -> dict:
    """The graph ended. Candidates still being evaluated are waited for and stored, unless the user
    stopped the session (then they are dropped and a resume runs them again)."""
    if rt.stop_requested or not any(c["status"] == "pending" for c in rt.store.candidates()):
        return values
    best_id = drain(rt, values)
    if best_id != values.get("best_id"):
        app.update_state(config, {"best_id": best_id}, as_node="archive")
        values["best_id"] = best_id
    return values


def session_state(rt: Runtime) -> dict:
    app, conn = compile_graph(rt)
    try:
        snapshot = app.get_state({"configurable": {"thread_id": rt.session.id}})
        return {"values": dict(snapshot.values or {}), "next": list(snapshot.next),
                "interrupted": any(t.interrupts for t in snapshot.tasks)}
    finally:
        conn.close()


# -- small helpers -----------------------------------------------------------------------------------


def parse_answer(answer: Any) -> dict:
    """accept | hint TEXT | skip | stop (first letters do); a dict from a program passes through."""
    if isinstance(answer, dict) and "action" in answer:
        return answer
    text = str(answer or "").strip()
    word, _, rest = text.partition(" ")
    word = word.lower()
    if word in ("", "a", "accept", "y", "yes", "ok"):
        return {"action": "accept"}
    if word in ("h", "hint"):
        return {"action": "hint", "hint": rest.strip()} if rest.strip() else {"action": "accept"}
    if word in ("s", "skip"):
        return {"action": "skip"}
    if word in ("q", "stop", "quit"):
        return {"action": "stop"}
    return {"action": "hint", "hint": text}  # anything else is taken as a hint in the user's words


def _seen(rt: Runtime, source: str) -> bool:
    return rt.store.has_hash(normalized_hash(source))


def _llm_errors() -> tuple[type[BaseException], ...]:
    """The errors an LLM role raises (kevolve.llm may be absent in a builtin-only build)."""
    try:
        from kevolve.llm import BudgetExceeded, LLMError
    except ImportError:
        return ()
    return (LLMError, BudgetExceeded)


def _is_budget(e: BaseException) -> bool:
    return type(e).__name__ == "BudgetExceeded"


def _log_reply(rt: Runtime, state: State, role: str, attempt: int, reply) -> None:
    rt.log(state, role, "llm_call", {"role": role, "attempt": attempt, "model": getattr(reply, "model", None),
                                     "prompt_tokens": getattr(reply, "prompt_tokens", None),
                                     "completion_tokens": getattr(reply, "completion_tokens", None),
                                     "cost_usd": getattr(reply, "cost_usd", None),
                                     "latency_s": getattr(reply, "latency_s", None),
                                     "retries": getattr(reply, "attempts", None), "total_usd": rt.spent_usd()})


def _eval_summary(cid: str, result: dict) -> dict:
    return {"id": cid, "status": result.get("status"), "correct": result.get("correct"),
            "custom_kernel": result.get("custom_kernel"), "error": (result.get("error") or "")[:500],
            "max_abs_error": result.get("max_abs_error"), "timing": result.get("timing"),
            "seconds": result.get("seconds"), "wall_s": result.get("wall_s"),
            "duplicate_of": result.get("duplicate_of"), "problem_warning": result.get("problem_warning")}


def _eval_line(result: dict) -> str:
    timing = result.get("timing")
    if result.get("status") != "accepted":
        first = (result.get("error") or "").strip().splitlines()
        return f"{result.get('status')}: {first[0][:100] if first else ''}"
    if timing:
        return f"accepted, {timing['candidate_ms']:.3f} ms, {timing['speedup_vs_eager']:.2f}x eager"
    return "accepted (correctness only: CPU interpreter)"


def _best_line(best: dict | None) -> str:
    if best is None:
        return "none yet"
    return f"{best['id']} " + (f"{best['speedup']:.2f}x eager" if best["speedup"] else "(correctness only)")


def time_breakdown(events: list[dict]) -> dict:
    """Where the session's time went, from its events: LLM wait, evaluation stages, profiling."""
    spent: dict[str, float] = {"llm_wait": 0.0, "evaluation": 0.0, "profile": 0.0}
    for e in events:
        data = e["data"]
        if e["kind"] == "llm_call":
            spent["llm_wait"] += data.get("latency_s") or 0.0
        elif e["kind"] == "evaluation":
            spent["evaluation"] += data.get("wall_s") or 0.0
            for stage, seconds in (data.get("seconds") or {}).items():
                if stage != "total" and isinstance(seconds, (int, float)):
                    spent[f"eval.{stage}"] = spent.get(f"eval.{stage}", 0.0) + seconds
        elif e["kind"] == "profile":
            spent["profile"] += data.get("wall_s") or 0.0
    return {k: round(v, 2) for k, v in spent.items()}
