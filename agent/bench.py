"""`kevolve bench DIR`: optimize (or evaluate given solutions) over every problem in a folder; one table.

    kevolve bench benchmarks/problems --device cuda --time 5m        # builtin Coder and Judge
    kevolve bench benchmarks/problems --solutions my_kernels/         # my_kernels/<problem>.py each
    kevolve bench benchmarks/problems --device cuda --jobs 3          # three sessions at once, one GPU

Writes OUT/results.csv (one row per problem, appended as each finishes, so a rerun skips the problems
already there) and OUT/results.md (the table, fast_p and geometric means). Under the CPU interpreter
only correctness is known: the speedup columns stay empty.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kevolve.cli_args import parse_duration, role_spec

FAST_P = (0.0, 1.0, 1.5, 2.0)
COLUMNS = ["problem", "mode", "status", "correct", "speedup_vs_eager", "speedup_vs_compile", "candidate_ms",
           "eager_ms", "compile_ms", "sol_fraction", "strategy", "candidates", "time_s", "cost_usd", "device",
           "session", "error"]
GRACE_S = 120.0  # past --time, what a session gets to finish its last evaluation before it is stopped
_running: set[subprocess.Popen] = set()  # sessions in flight, stopped with the bench on Ctrl-C


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="folder of problem files (KernelBench convention)")
    p.add_argument("--solutions", type=Path, help="evaluate DIR/<problem>.py from here instead of optimizing")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="where results.csv/.md go (default bench-out)")
    p.add_argument("--coder", type=role_spec, default="builtin", help="builtin (default) | manual | openai:MODEL")
    p.add_argument("--judge", type=role_spec, default="builtin", help="builtin (default) | manual | openai:MODEL")
    p.add_argument("--rounds", type=int, default=None, help="rounds per problem (default: until --time is up)")
    p.add_argument("--time", type=parse_duration, default=300.0, help="wall time per problem (default 5m)")
    p.add_argument("--budget-usd", type=float, default=None, help="LLM spending cap per problem")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible, else cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16", "bf16"])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per evaluation stage")
    p.add_argument("--config", type=Path, help="kevolve.toml for LLM roles")
    p.add_argument("--only", help="run only problems whose file name matches one of these comma-separated globs "
                   "(e.g. 'bf16_*' or 'attention,conv_*')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1,
                   help="problems run at once (default 1); their timings still take the GPU in turn")
    p.add_argument("--stop-after", type=parse_duration, default=None,
                   help="start no problem after this much wall time (a GPU lease): those in flight finish, "
                        "the rest wait for a rerun, which resumes")


# -- one problem ----------------------------------------------------------------------------------------

def evaluate_solution(problem: Path, solution: Path, args) -> dict:
    """A row for a given solution file: the harness's verdict and timing, nothing else."""
    from kevolve.tools.evaluate import Evaluator

    row = {"problem": problem.stem, "mode": "solution"}
    if not solution.is_file():
        return row | {"status": "missing", "correct": False, "error": f"no {solution}"}
    with Evaluator(problem, device=args.device, precision=args.precision, timeout_s=args.timeout,
                   seed=args.seed, prewarm=False) as evaluator:
        result = evaluator.evaluate(solution.read_text(), name=solution.name)
        device = evaluator.device
    return row | _result_fields(result) | {"device": device, "candidates": 1}


def optimize_problem(problem: Path, args, log_path: Path, workspace: Path) -> dict:
    """A session in a child process (a hang or crash costs one problem, not the bench), capped at
    --time plus a grace; its archive is read afterwards for the best verified candidate. Each problem's
    sessions go in a folder of their own: with --jobs, the newest session in a shared folder may be
    another problem's."""
    workspace = workspace / problem.stem
    cmd = [sys.executable, "-m", "kevolve.cli", "optimize", str(problem), "--coder", args.coder, "--judge",
           args.judge, "--time", f"{args.time:g}s", "--workspace", str(workspace), "--precision", args.precision,
           "--timeout", str(args.timeout), "--seed", str(args.seed)]
    for flag, value in (("--rounds", args.rounds), ("--device", args.device), ("--budget-usd", args.budget_usd),
                        ("--config", args.config)):
        if value is not None:
            cmd += [flag, str(value)]
    workspace.mkdir(parents=True, exist_ok=True)
    before = set(workspace.iterdir())
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: its workers can be stopped with it
        _running.add(proc)
        try:
            proc.wait(timeout=args.time + GRACE_S)
        except subprocess.TimeoutExpired:
            _stop(proc)
        finally:
            _running.discard(proc)
    sessions = sorted((p for p in set(workspace.iterdir()) - before if (p / "session.json").is_file()),
                      key=lambda p: p.stat().st_mtime)
    row = {"problem": problem.stem, "mode": f"optimize {args.coder}/{args.judge}"}
    if not sessions:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
        return row | {"status": "no_session", "correct": False, "error": tail[0] if tail else f"exit {proc.returncode}"}
    return row | read_session(sessions[-1])


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C first (the session finishes its step and stays resumable), then the whole group."""
    try:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        return
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def read_session(path: Path) -> dict:
    """The best verified candidate of a session folder, with its evaluation's timing, time and cost."""
    from kevolve.session import open_session

    session = open_session(path)
    try:
        store = session.store
        rows = store.candidates()
        events = store.events()
        end = next((e for e in reversed(events) if e["kind"] == "session_end"), None)
        data = _event_data(end)
        best = store.candidate(data.get("best")) if data.get("best") else None
        accepted = [c for c in rows if c["status"] == "accepted"]
        if best is None and accepted:  # stopped before its summary: pick the best ourselves
            best = max(accepted, key=lambda c: c["speedup"] or 0.0)
        active_s = float(store.get_meta("active_s", 0.0) or 0.0)
        out = {"session": str(path), "candidates": len(rows), "time_s": round(active_s, 1),
               "cost_usd": _cost(data, store), "device": (json.loads((path / "session.json").read_text())
                                                          .get("device") or {}).get("type", "")}
        if best is None:
            if not rows:
                return out | {"status": "no_candidate", "correct": False,
                              "error": "the Coder proposed nothing (no builtin template fits)"}
            last = store.evaluation(rows[-1]["id"]) or {}
            first_line = ((last.get("error") or "").strip().splitlines() or [""])[0]
            statuses = ", ".join(sorted({c["status"] for c in rows}))
            return out | {"status": "none_verified", "correct": False, "error": f"{statuses}: {first_line}"[:200]}
        result = store.evaluation(best["id"]) or {}
        return out | _result_fields(result) | {"strategy": best["strategy"] or best["operator"] or ""}
    finally:
        session.close()


def _event_data(event: dict | None) -> dict:
    if not event:
        return {}
    data = event.get("data")
    return json.loads(data) if isinstance(data, str) else dict(data or {})  # the store decodes it; a raw row does not


def _cost(end: dict, store) -> float:
    if end.get("cost_usd") is not None:
        return float(end["cost_usd"])
    ledger = store.get_meta("ledger") or {}
    return float(ledger.get("total_usd", 0.0) or 0.0) if isinstance(ledger, dict) else 0.0


def _result_fields(result: dict) -> dict:
    timing = result.get("timing") or {}
    error = (result.get("error") or "").strip().splitlines()
    if result.get("status") == "accepted":  # the row's note: a problem no check can pin down says so
        error = [f"warning: {result['problem_warning']}"] if result.get("problem_warning") else []
    return {"status": result.get("status", "crashed"), "correct": result.get("status") == "accepted",
            "speedup_vs_eager": timing.get("speedup_vs_eager"), "speedup_vs_compile": timing.get("speedup_vs_compile"),
            "candidate_ms": timing.get("candidate_ms"), "eager_ms": timing.get("eager_ms"),
            "compile_ms": timing.get("compile_ms"), "sol_fraction": timing.get("sol_fraction"),
            "error": error[0][:200] if error else ""}


# -- the table ---------------------------------------------------------------------------------------------

def read_rows(csv_path: Path) -> list[dict]:
    if not csv_path.is_file():
        return []
    with open(csv_path, newline="") as f:
        return [_typed(r) for r in csv.DictReader(f)]


def _typed(row: dict) -> dict:
    out = dict(row)
    out["correct"] = str(row.get("correct")).lower() == "true"
    for key in ("speedup_vs_eager", "speedup_vs_compile", "candidate_ms", "eager_ms", "compile_ms", "sol_fraction",
                "time_s", "cost_usd"):
        try:
            out[key] = float(row[key]) if row.get(key) not in (None, "") else None
        except ValueError:
            out[key] = None
    return out


def write_csv(csv_path: Path, rows: list[dict]) -> None:
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else r[k] for k in COLUMNS})
    os.replace(tmp, csv_path)  # a kill mid-write leaves the last complete table


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def fast_p(rows: list[dict], key: str, p: float) -> float | None:
    """KernelBench's fast_p: the share of all problems whose kernel is correct and more than p× faster.
    fast_0 is the correct share; above 0 it needs timings (None under the interpreter)."""
    if not rows:
        return None
    if p == 0:
        return sum(r["correct"] for r in rows) / len(rows)
    if not any(r.get(key) is not None for r in rows):
        return None
    return sum(bool(r["correct"] and (r.get(key) or 0) > p) for r in rows) / len(rows)


def summarize(rows: list[dict]) -> dict:
    out: dict = {"problems": len(rows), "correct": sum(r["correct"] for r in rows),
                 "time_s": sum(r.get("time_s") or 0 for r in rows),
                 "cost_usd": sum(r.get("cost_usd") or 0 for r in rows)}
    for key, name in (("speedup_vs_eager", "eager"), ("speedup_vs_compile", "compile")):
        timed = [r[key] for r in rows if r["correct"] and r.get(key)]
        out[f"geomean_{name}"] = geomean(timed)
        # a failed problem counts as 1× (the user keeps the reference): the suite-level number
        out[f"geomean_{name}_all"] = geomean([r[key] if r["correct"] and r.get(key) else 1.0 for r in rows]) \
            if timed else None
        out[f"fast_{name}"] = {p: fast_p(rows, key, p) for p in FAST_P}
    return out


def _f(value, fmt: str = "{:.2f}", none: str = "") -> str:
    return none if value is None else fmt.format(value)


def markdown(rows: list[dict], title: str) -> str:
    s = summarize(rows)
    lines = [f"# {title}", "",
             "| problem | status | correct | vs eager | vs compile | ms | % SoL | strategy | cands | time s | cost $ |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['problem']} | {r.get('status', '')} | {'yes' if r['correct'] else 'no'} | "
                     f"{_f(r.get('speedup_vs_eager'), '{:.2f}x')} | {_f(r.get('speedup_vs_compile'), '{:.2f}x')} | "
                     f"{_f(r.get('candidate_ms'), '{:.4f}')} | {_f(r.get('sol_fraction'), '{:.0%}')} | "
                     f"{r.get('strategy') or ''} | {r.get('candidates') or ''} | {_f(r.get('time_s'), '{:.0f}')} | "
                     f"{_f(r.get('cost_usd'), '{:.3f}')} |")
    lines += ["", f"**{s['correct']}/{s['problems']} correct**; total time {s['time_s']:.0f} s, "
                  f"cost ${s['cost_usd']:.3f}.",
              "", "| | " + " | ".join(f"fast_{p:g}" for p in FAST_P) + " | geomean (correct) | geomean (failed = 1x) |",
              "|---|" + "---|" * (len(FAST_P) + 2)]
    for name in ("eager", "compile"):
        fast = s[f"fast_{name}"]
        lines.append(f"| vs {'torch.compile' if name == 'compile' else 'eager'} | "
                     + " | ".join(_f(fast[p], "{:.0%}", "n/a") for p in FAST_P)
                     + f" | {_f(s[f'geomean_{name}'], '{:.2f}x', 'n/a')}"
                     + f" | {_f(s[f'geomean_{name}_all'], '{:.2f}x', 'n/a')} |")
    if not any(r.get("speedup_vs_eager") for r in rows):
        lines += ["", "No timings: run under the CPU interpreter (correctness only) or every problem failed."]
    return "\n".join(lines) + "\n"


# -- the verb ----------------------------------------------------------------------------------------------

def problem_files(folder: Path, only: str | None = None) -> list[Path]:
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    if only is None:
        return files
    patterns = [g.strip() for g in only.split(",") if g.strip()]
    return [p for p in files if any(p.match(g) or p.stem == g for g in patterns)]


def run_bench(args) -> int:
    from kevolve.tools.problem import ProblemError

    if not args.dir.is_dir():
        raise ProblemError(f"{args.dir}: no such folder")
    if args.solutions is not None and not args.solutions.is_dir():
        raise ProblemError(f"{args.solutions}: no such folder")
    if args.rounds is not None and args.rounds < 1:
        raise ProblemError(f"--rounds {args.rounds}: give at least 1")
    if args.jobs < 1:
        raise ProblemError(f"--jobs {args.jobs}: give at least 1")
    problems = problem_files(args.dir, args.only)
    if not problems:
        raise ProblemError(f"{args.dir}: no problem files (*.py)")
    out = args.out
    (out / "logs").mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "results.csv", out / "results.md"
    rows = read_rows(csv_path)
    done = {r["problem"] for r in rows}
    mode = "solutions" if args.solutions else f"optimize ({args.coder} coder, {args.judge} judge)"
    print(f"kevolve bench: {len(problems)} problems in {args.dir}, {mode}; {len(done & {p.stem for p in problems})} "
          f"already in {csv_path}", flush=True)
    written = threading.Lock()  # rows, results.csv/.md and the printed lines, one finished problem at a time
    stopping = threading.Event()
    bench_started = time.perf_counter()

    def run_one(tag: str, problem: Path) -> None:
        if args.stop_after is not None and time.perf_counter() - bench_started > args.stop_after:
            print(f"{tag}: not started, --stop-after {args.stop_after:g} s has passed (a rerun does it)", flush=True)
            return
        print(f"{tag}: " + ("evaluating" if args.solutions else f"optimizing (at most {args.time:.0f} s)"), flush=True)
        started = time.perf_counter()
        try:
            if args.solutions:
                row = evaluate_solution(problem, args.solutions / problem.name, args)
            else:
                row = optimize_problem(problem, args, out / "logs" / f"{problem.stem}.log", out / "sessions")
        except ProblemError as e:  # a bad problem file: recorded, the bench goes on
            row = {"problem": problem.stem, "mode": mode, "status": "bad_problem", "correct": False,
                   "error": str(e)[:200]}
        if row.get("time_s") is None:
            row["time_s"] = round(time.perf_counter() - started, 1)
        row.setdefault("cost_usd", 0.0)
        if stopping.is_set():  # cut short by Ctrl-C: not a result, so a rerun does this problem again
            return
        with written:
            rows.append(_typed({k: "" if row.get(k) is None else row[k] for k in COLUMNS}))
            write_csv(csv_path, rows)
            md_path.write_text(markdown(sorted(rows, key=lambda r: r["problem"]), f"kevolve bench: {args.dir}"))
            print(f"{tag}: {_row_line(row)}", flush=True)

    todo = []
    for i, problem in enumerate(problems, 1):
        tag = f"[{i}/{len(problems)}] {problem.stem}"
        if problem.stem in done:
            print(f"{tag}: done earlier, skipped", flush=True)
        else:
            todo.append((tag, problem))
    # Several sessions at once share the GPU safely: every timing, reference and profile holds the
    # machine-wide GPU lock (kevolve.tools.gpu_lock), so only compiles and CPU work overlap.
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        for future in [pool.submit(run_one, tag, problem) for tag, problem in todo]:
            future.result()
    except KeyboardInterrupt:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list(_running):
            _stop(proc)  # each session ends its step and stays resumable (`kevolve resume`)
        raise
    pool.shutdown()
    ordered = sorted(rows, key=lambda r: r["problem"])
    table = markdown(ordered, f"kevolve bench: {args.dir}")
    md_path.write_text(table)
    print("\n" + table + f"\n{csv_path}\n{md_path}", flush=True)
    missing = len({p.stem for p in problems} - {r["problem"] for r in rows})
    if missing:
        print(f"{missing} problem(s) not run yet: run the same command again to go on", flush=True)
    return 0 if all(r["correct"] for r in ordered) else 1


def _row_line(row: dict) -> str:
    if not row.get("correct"):
        return f"{row.get('status')} {row.get('error') or ''}".strip() + f" ({row.get('time_s', 0):.0f} s)"
    perf = (f"{row['speedup_vs_eager']:.2f}x eager, {_f(row.get('speedup_vs_compile'), '{:.2f}x', 'n/a')} compile"
            if row.get("speedup_vs_eager") else "correct (no timing)")
    return f"accepted, {perf}, {row.get('strategy') or ''} ({row.get('time_s', 0):.0f} s)"
