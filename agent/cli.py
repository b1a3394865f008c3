"""The `kevolve` command. Each verb parses its arguments here and calls one function elsewhere.

Exit status: 0 success (an evaluated candidate was accepted), 1 a result that is not a success,
2 a usage error (missing file, no Model, bad option). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kevolve.tools.problem import ProblemError


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="check and time one candidate file against a problem file")
    p.add_argument("problem", type=Path, help="problem file (KernelBench convention: Model, get_inputs, ...)")
    p.add_argument("candidate", type=Path, help="candidate file defining ModelNew")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when a GPU is visible, else cpu")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "fp16", "bf16"],
                   help="what the candidate may compute in (tolerances follow); the reference is fp32, TF32 off")
    p.add_argument("--shapes", help='extra/other shapes: "batch_size=8,dim=1000;batch_size=3"')
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per stage (compile has 600)")
    p.add_argument("--memory-gb", type=float, default=16.0, help="host memory cap of the worker")
    p.set_defaults(run=run_evaluate)


def run_evaluate(args) -> int:
    from kevolve.report_cli import print_evaluation
    from kevolve.tools.evaluate import Evaluator
    from kevolve.tools.problem import parse_shapes

    if not args.candidate.is_file():
        raise ProblemError(f"{args.candidate}: no such candidate file")
    shapes = parse_shapes(args.shapes) if args.shapes else None
    with Evaluator(args.problem, device=args.device, precision=args.precision, shapes=shapes,
                   timeout_s=args.timeout, memory_gb=args.memory_gb, prewarm=False, gpu_compile=True) as evaluator:
        result = evaluator.evaluate(args.candidate.read_text(), name=args.candidate.name)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_evaluation(result, args.problem, args.candidate)
    return 0 if result["status"] == "accepted" else 1


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="Nsight Compute on a candidate's own kernels, classed against the roofline")
    p.add_argument("problem", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds for the profiler run")
    p.set_defaults(run=run_profile)


def run_profile(args) -> int:
    from rich.console import Console

    from kevolve.profiling import judge_summary, profile_dict, profile_table
    from kevolve.tools.evaluate import Evaluator
    from kevolve.tools.profile_job import profile_candidate

    if not args.candidate.is_file():
        raise ProblemError(f"{args.candidate}: no such candidate file")
    with Evaluator(args.problem, prewarm=False) as evaluator:
        if evaluator.device != "cuda":
            raise ProblemError("kevolve profile needs a CUDA GPU (none is visible to torch here)")
        result = evaluator.evaluate(args.candidate.read_text())
        if result["status"] != "accepted":
            raise ProblemError(f"{args.candidate}: {result['status']}: {result['error']} (profile needs a correct "
                               "candidate; see kevolve evaluate)")
        profile = profile_candidate(evaluator, args.candidate.read_text(), timeout_s=args.timeout)
    if args.json:
        print(json.dumps(profile_dict(profile), indent=2, default=str))
        return 0
    console = Console()
    console.print(profile_table(profile))
    console.print(judge_summary(profile), markup=False)
    return 0


def _add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="what this machine can do: GPU, driver, torch, triton, nvcc, ncu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_doctor)


def run_doctor(args) -> int:
    from kevolve.doctor import diagnose, print_diagnosis

    findings = diagnose()
    if args.json:
        print(json.dumps(findings, indent=2))
    else:
        print_diagnosis(findings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kevolve", description="Turn PyTorch modules into fast, verified kernels.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_evaluate(sub)
    _add_profile(sub)
    _add_doctor(sub)
    _add_session_verbs(sub)
    _add_view_verbs(sub)
    _add_archive_verbs(sub)
    _add_bench(sub)
    return parser



def _add_bench(sub) -> None:
    from kevolve.bench import add_bench_arguments  # light: torch and the session load only when it runs

    p = sub.add_parser("bench", help="optimize (or evaluate given solutions) over a folder of problems; one table")
    add_bench_arguments(p)
    p.set_defaults(run=_run_bench)


def _run_bench(args) -> int:
    from kevolve.bench import run_bench

    return run_bench(args)


def _add_view_verbs(sub) -> None:
    """show, sessions, report: read a session folder (kevolve.show; rich only, no langgraph)."""
    from kevolve.show import add_verbs

    add_verbs(sub)


def _add_archive_verbs(sub) -> None:
    """`kevolve library` and `kevolve export`: plain SQLite readers (kevolve.library, kevolve.lineage)."""
    from kevolve.library import add_library_arguments
    from kevolve.lineage import add_export_arguments

    add_library_arguments(sub.add_parser("library", help="the best verified kernel kept per problem and machine"))
    add_export_arguments(sub.add_parser("export", help="write a session's archive as JSONL (or parquet)"))


def _add_session_verbs(sub) -> None:
    try:
        from kevolve.session_cli import add_optimize_arguments, add_resume_arguments, run_optimize, run_resume
    except ImportError as e:  # the harness verbs work without the session's dependencies
        missing = e.name

        def unavailable(args) -> int:
            raise ProblemError(f"kevolve {args.command} needs {missing}: pip install -e . installs it")

        for verb in ("optimize", "resume"):
            p = sub.add_parser(verb, help=f"(unavailable: {missing} is not installed)")
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(run=unavailable)
        return

    p = sub.add_parser("optimize", help="run a session: Coder proposes, harness checks, Judge steers")
    add_optimize_arguments(p)
    p.set_defaults(run=run_optimize)
    p = sub.add_parser("resume", help="continue a session that stopped, crashed or was killed")
    add_resume_arguments(p)
    p.set_defaults(run=run_resume)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ProblemError as e:
        print(f"kevolve: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kevolve: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("KEVOLVE_DEBUG"):
            raise
        print(f"kevolve: internal error: {type(e).__name__}: {e} (set KEVOLVE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
