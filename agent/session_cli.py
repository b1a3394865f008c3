"""`kevolve optimize PROBLEM` and `kevolve resume SESSION`: build the session's runtime and run the graph.

Usage errors are one line on stderr and exit 2. Exit 0 when the session ends with a verified
candidate, 1 when it ends without one, 130 when Ctrl-C stopped it (it can be resumed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from kevolve.cli_args import parse_duration, role_spec
from kevolve.coder import CoderUnavailable, make_coder
from kevolve.graph import Limits, Runtime, run_graph, session_state, time_breakdown
from kevolve.judge import make_judge
from kevolve.session import Session, SessionError, create_session, open_session

UNLIMITED_ROUNDS = 10_000  # --time without --rounds: the clock ends the session


class UsageError(Exception):
    """One line on stderr, exit 2."""


def _add_limits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds, one candidate each (default 10; with --time only, until the time is up)")
    p.add_argument("--time", type=parse_duration, default=None, help="wall-time budget: 20m, 1h30m, 90s")
    p.add_argument("--budget-usd", type=float, default=None, help="stop before LLM spending passes this")


def add_optimize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("problem", type=Path, help="problem file (KernelBench convention)")
    p.add_argument("--coder", type=role_spec, default="builtin", help="builtin (default) | manual | openai:MODEL")
    p.add_argument("--judge", type=role_spec, default="builtin", help="builtin (default) | manual | openai:MODEL")
    _add_limits(p)
    p.add_argument("--backend", choices=["triton", "cuda"], default="triton")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible, else cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16", "bf16"])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per evaluation stage")
    p.add_argument("--workspace", type=Path, help="where session folders go (default ./workspace)")
    p.add_argument("--config", type=Path, help="kevolve.toml with per-role models, URLs and prices")
    p.add_argument("--interactive", action="store_true", help="review each Judge verdict: accept, hint, skip, stop")
    p.add_argument("--profile", choices=["every", "improving"], default=None,
                   help="GPU: profile each round's lead with ncu (every), or only a lead that beats the best so far "
                        "(improving). Default: improving with the builtin Judge, every with an LLM Judge")
    p.add_argument("--seed", type=int, default=0, help="same seed + same results → same archive choices")
    p.add_argument("--islands", type=int, default=3, help="islands of the evolutionary archive (default 3)")
    p.add_argument("--no-reuse", action="store_true",
                   help="start fresh: do not start from the kernel library's best for this problem")
    _add_execution(p)
    p.set_defaults(run=run_optimize)


def _add_execution(p: argparse.ArgumentParser, resume: bool = False) -> None:
    default = None if resume else argparse.SUPPRESS
    p.add_argument("--batch", type=int, default=default,
                   help="candidates the Coder proposes per round, evaluated together (default 1)")
    p.add_argument("--executor", choices=["local", "ray"], default=default,
                   help="where evaluations run: local worker processes (default) or tasks on a Ray cluster")
    p.add_argument("--workers", type=int, default=default,
                   help="local executor: evaluations at once (default: the batch size, at most the cores)")
    p.add_argument("--ray-address", default=default,
                   help="Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto); default: start one here")


def add_resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", help="session folder, or its id (or a unique prefix) under the workspace")
    p.add_argument("--workspace", type=Path)
    _add_limits(p)
    p.add_argument("--interactive", action=argparse.BooleanOptionalAction, default=None)
    _add_execution(p, resume=True)
    p.set_defaults(run=run_resume)


def run_optimize(args) -> int:
    try:
        if not args.problem.is_file():
            raise UsageError(f"{args.problem}: no such problem file")
        if args.rounds is not None and args.rounds < 1:
            raise UsageError(f"--rounds {args.rounds}: give at least 1")
        rounds = args.rounds if args.rounds is not None else (10 if args.time is None else UNLIMITED_ROUNDS)
        execution = _execution_settings(args, {"batch": 1, "executor": "local", "workers": None,
                                               "ray_address": None})
        settings = {"problem": str(args.problem), "coder": args.coder, "judge": args.judge, "rounds": rounds,
                    "time_s": args.time, "budget_usd": args.budget_usd, "backend": args.backend,
                    "device": args.device, "precision": args.precision, "timeout_s": args.timeout,
                    "config": str(args.config) if args.config else None, "interactive": args.interactive,
                    "profile": getattr(args, "profile", None),
                    "seed": args.seed, "islands": max(1, getattr(args, "islands", 3)),
                    "reuse": not getattr(args, "no_reuse", False), **execution}
        session = create_session(args.problem, settings, device={}, workspace=args.workspace)
        try:
            rt = build_runtime(session, settings, ask_user=getattr(args, "ask_user", None))
        except BaseException:
            session.close()
            shutil.rmtree(session.path, ignore_errors=True)  # nothing ran: leave no empty session behind
            raise
        print(f"kevolve: session {session.id} in {session.path}", flush=True)
        return _run(rt, resume=False)
    except (UsageError, SessionError, CoderUnavailable) as e:
        return _usage(e)
    except Exception as e:
        if type(e).__name__ in ("ProblemError", "ConfigError"):
            return _usage(e)
        raise


def run_resume(args) -> int:
    try:
        session = open_session(args.session, args.workspace)
        settings = dict(session.settings)
        for key, value in (("rounds", args.rounds), ("time_s", args.time), ("budget_usd", args.budget_usd),
                           ("interactive", args.interactive)):
            if value is not None:
                settings[key] = value
        settings.update(_execution_settings(args, settings))  # a resume may run elsewhere: a cluster, more workers
        session.store.set_meta("settings", settings)
        session.stop_file.unlink(missing_ok=True)  # a STOP file ended the last run; resuming means go on
        rt = build_runtime(session, settings, ask_user=getattr(args, "ask_user", None))
        state = session_state(rt)
        if not state["next"] and state["values"]:
            reason = rt.stop_reason(state["values"])
            if reason and not reason.startswith("stop"):
                print(f"kevolve: session {session.id} already ended: {reason}; raise the limit to go on "
                      "(--rounds, --time, --budget-usd)")
                return _summary(rt, state["values"])
        print(f"kevolve: resuming session {session.id} at round {state['values'].get('round', 1)}", flush=True)
        session.event("resume", {"settings": settings, "next": state["next"]})
        return _run(rt, resume=True)
    except (UsageError, SessionError, CoderUnavailable) as e:
        return _usage(e)
    except Exception as e:
        if type(e).__name__ in ("ProblemError", "ConfigError"):
            return _usage(e)
        raise


def _execution_settings(args, current: dict) -> dict:
    """--batch, --executor, --workers, --ray-address over what the session had (or the defaults)."""
    out = {k: current.get(k) for k in ("batch", "executor", "workers", "ray_address")}
    for key in out:
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    out["batch"] = 1 if out.get("batch") is None else int(out["batch"])
    _check_execution(out)
    return out


def _check_execution(settings: dict) -> None:
    """The one check of --batch, --workers and --ray-address, for the CLI and the API alike."""
    if settings["batch"] < 1:
        raise UsageError(f"--batch {settings['batch']}: give at least 1")
    if settings.get("workers") is not None and settings["workers"] < 1:
        raise UsageError(f"--workers {settings['workers']}: give at least 1")
    if settings.get("ray_address") and (settings.get("executor") or "local") != "ray":
        raise UsageError("--ray-address needs --executor ray")


def make_session_executor(session: Session, settings: dict):
    """The executor a session's evaluations run on (kevolve.tools.executor)."""
    import os

    from kevolve.tools.executor import ExecutorError, evaluator_options, make_executor

    options = evaluator_options(settings)
    batch = 1 if settings.get("batch") is None else int(settings["batch"])
    _check_execution({**settings, "batch": batch})
    workers = settings.get("workers") or max(1, min(batch, os.cpu_count() or 1))
    try:
        return make_executor(settings.get("executor") or "local", session.problem_path, options, workers=workers,
                             ray_address=settings.get("ray_address"))
    except ExecutorError as e:
        raise UsageError(str(e)) from None


def build_runtime(session: Session, settings: dict, ask_user=None) -> Runtime:
    ledger, coder_chat, judge_chat = None, None, None
    if settings["coder"] != "builtin" or settings["judge"] != "builtin":
        ledger, coder_chat, judge_chat = _llm_backends(session, settings)
    coder = make_coder(settings["coder"], coder_chat)
    judge = make_judge(settings["judge"], judge_chat)
    evaluator = make_session_executor(session, settings)
    _record_device(session, evaluator.device_info or {"type": evaluator.device})
    session.start_clock()
    limits = Limits(rounds=settings["rounds"], time_s=settings.get("time_s"), budget_usd=settings.get("budget_usd"))
    return Runtime(session=session, evaluator=evaluator, coder=coder, judge=judge, coder_chat=coder_chat,
                   judge_chat=judge_chat, ledger=ledger, limits=limits, backend=settings["backend"],
                   seed=settings.get("seed", 0), batch=int(settings.get("batch") or 1),
                   interactive=bool(settings.get("interactive")), profile_policy=profile_policy(settings),
                   say=lambda line: print(line, flush=True), ask_user=ask_user or ask_on_stdin)


def profile_policy(settings: dict) -> str:
    """Which leads get an ncu profile (Runtime.profile_policy): the builtin Judge needs only the improving ones."""
    return settings.get("profile") or ("improving" if settings.get("judge", "builtin") == "builtin" else "every")


def _record_device(session: Session, device: dict) -> None:
    """session.json gets the device as the evaluator found it (a resume may run on another machine)."""
    path = session.path / "session.json"
    info = json.loads(path.read_text())
    if info.get("device") != device:
        if info.get("device"):
            info.setdefault("devices_seen", []).append(info["device"])
        info["device"] = device
        path.write_text(json.dumps(info, indent=2, default=str) + "\n")


def _llm_backends(session: Session, settings: dict):
    try:
        from kevolve.config import load_config
        from kevolve.llm import CostLedger, make_chat
    except ImportError as e:
        raise CoderUnavailable(f"the LLM backends (kevolve.llm, kevolve.config) are not in this build: {e}") from None

    try:
        config = load_config(Path(settings["config"]) if settings.get("config") else None)
    except ValueError as e:  # a bad kevolve.toml: the file and the reason, one line
        raise CoderUnavailable(str(e)) from None
    stored = session.store.get_meta("ledger")
    ledger = CostLedger.from_dict(stored) if stored else _new_ledger(CostLedger, settings, config)
    if settings.get("budget_usd") is not None and hasattr(ledger, "budget_usd"):
        ledger.budget_usd = settings["budget_usd"]  # a resume may raise the budget
    manual_dir = session.path / "manual"

    def chat(role: str):
        spec = settings[role]
        if spec == "builtin":
            return None
        try:
            return make_chat(spec, role=role, config=config, ledger=ledger, manual_dir=manual_dir)
        except ValueError as e:  # no key, no model: a usage error
            raise CoderUnavailable(str(e)) from None

    return ledger, chat("coder"), chat("judge")


def _new_ledger(cls, settings: dict, config):
    try:
        return cls(budget_usd=settings.get("budget_usd"), config=config)
    except TypeError:
        try:
            return cls(budget_usd=settings.get("budget_usd"))
        except TypeError:
            return cls()


def _run(rt: Runtime, *, resume: bool) -> int:
    from kevolve.live import live_view

    try:
        with _graceful_ctrl_c(rt), live_view(rt):
            values = run_graph(rt, resume=resume)
    except KeyboardInterrupt:
        rt.session.event("interrupted", {"how": "Ctrl-C twice"})
        print(f"kevolve: stopped; continue with: kevolve resume {rt.session.id}", file=sys.stderr)
        return 130
    finally:
        rt.evaluator.close()
    code = _summary(rt, values)
    _write_report(rt)
    if rt.stop_requested:
        print(f"kevolve: stopped; continue with: kevolve resume {rt.session.id}", file=sys.stderr)
        return 130
    return code


def _write_report(rt: Runtime) -> None:
    """report.html at session end; a report that fails to draw never fails the session."""
    try:
        from kevolve.report import write_report

        print(f"report: {write_report(rt.session.path)}")
    except Exception as e:
        print(f"kevolve: report not written: {type(e).__name__}: {e}", file=sys.stderr)


@contextmanager
def _graceful_ctrl_c(rt: Runtime):
    """First Ctrl-C: finish the step under way, then stop (resumable). Second: stop now."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum, frame):
        if rt.stop_requested:
            raise KeyboardInterrupt
        rt.stop_requested = True
        print("\nkevolve: stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(rt: Runtime, values: dict) -> int:
    store, session = rt.store, rt.session
    best = store.candidate(values.get("best_id"))
    if session.settings.get("reuse", True):  # offer the best to the kernel library (never fails the session)
        from kevolve.library import record_session_best

        record_session_best(rt, values.get("best_id"))
    rows = store.candidates()
    counts: dict[str, int] = {}
    for c in rows:
        counts[c["status"]] = counts.get(c["status"], 0) + 1
    reason = values.get("stop_reason") or "finished"
    print(f"\nsession {session.id}: {len(rows)} candidates ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"
          f", ended: {reason}")
    if best is None:
        print("best: none verified")
    else:
        if best["speedup"] is not None:
            extra = f" vs torch.compile {best['speedup_vs_compile']:.2f}x" if best["speedup_vs_compile"] else ""
            perf = f"{best['speedup']:.2f}x eager{extra}, {best['candidate_ms']:.4f} ms"
        else:
            perf = "correctness only (CPU interpreter)"
        print(f"best: {best['id']} (round {best['round']}, {best['strategy'] or best['operator']}): {perf}")
        print(f"      {session.path / 'best.py'}")
        if (note := slower_than_compile(best)) is not None:
            print(f"      {note}")
        if best["speedup"] is None:
            compiled = _compile_best_for_gpu(session)
            if compiled:
                print(f"      {compiled}")
    if rt.ledger is not None:
        by_role = rt.ledger.by_role() if hasattr(rt.ledger, "by_role") else {}
        print(f"cost: ${rt.spent_usd():.4f}" + (f" {json.dumps(by_role, default=str)}" if by_role else ""))
    else:
        print("cost: $0 (builtin roles)")
    spent = time_breakdown(store.events())
    print(f"time: {rt.session.active_s():.1f}s active; " + ", ".join(f"{k} {v:.1f}s" for k, v in spent.items() if v))
    session.event("session_end", {"best": best["id"] if best else None, "reason": reason,
                                  "cost_usd": rt.spent_usd(), "candidates": len(rows), "time": spent})
    return 0 if best else 1


def slower_than_compile(best: dict) -> str | None:
    """A line saying so where torch.compile timed faster than the best kernel (a plain fp32 matmul: cuBLAS,
    which Inductor calls, against a Triton GEMM): the file is still the best kernel found, not advice."""
    ratio = best.get("speedup_vs_compile")
    if ratio is None or ratio >= 0.98:  # 2%: about the timing's own spread on the H100
        return None
    return (f"torch.compile was faster here ({ratio:.2f}x of its speed): keep torch.compile for this module, "
            "or run longer")


def _compile_best_for_gpu(session) -> str:
    """On the CPU: whether best.py's Triton kernels compile for an H100, and at what cost in registers and
    shared memory (tools/gpu_compile.py), as one line; recorded as an event. Never fails the session."""
    from kevolve.tools.gpu_compile import compile_for_gpu, describe
    from kevolve.tools.static_checks import check_source

    best = session.path / "best.py"
    try:
        static = check_source(best.read_text())
        if not static.triton_kernels or static.cuda_sources:
            return ""
        report = compile_for_gpu(session.problem_path, best)
    except Exception as e:  # the check is extra information: a failure of its own is said, not raised
        return f"not compiled for sm_90: {type(e).__name__}: {e}"
    line = describe(report)
    session.event("gpu_compile", {"file": "best.py", "ok": report["ok"], "summary": line})
    return line


def ask_on_stdin(request: dict) -> str:
    verdict = request.get("verdict") or {}
    print(f"\n--- round {request['round']}: {request.get('candidate_id')} {request.get('status')}")
    for key in ("mode", "bottleneck", "change", "strategy"):
        if verdict.get(key):
            print(f"    {key}: {verdict[key]}")
    print("[a]ccept | h TEXT (hint for the next Coder call) | [s]kip this candidate | [q] stop > ", end="", flush=True)
    line = sys.stdin.readline()
    return line.strip() if line else "stop"  # stdin closed: nobody to ask, so stop (resumable)


def _usage(e: BaseException) -> int:
    print(f"kevolve: {e}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m kevolve.session_cli optimize|resume ...`: the verbs before (and besides) kevolve.cli."""
    parser = argparse.ArgumentParser(prog="kevolve")
    sub = parser.add_subparsers(dest="command", required=True)
    add_optimize_arguments(sub.add_parser("optimize", help="run a session on a problem file"))
    add_resume_arguments(sub.add_parser("resume", help="continue a session"))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
