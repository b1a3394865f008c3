"""`kevolve bench` under the CPU interpreter: correctness only, the table, resuming; fast_p and geomeans."""

import csv
import importlib.util
import shutil
from pathlib import Path

import pytest

from kevolve.bench import fast_p, geomean, markdown, problem_files, summarize
from kevolve.cli import main

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def suite(tmp_path) -> Path:
    problems = tmp_path / "problems"
    problems.mkdir()
    for name in ("softmax", "scale_bias_gelu"):
        shutil.copy(EXAMPLES / "problems" / f"{name}.py", problems)
    return problems


def test_solutions_table_and_resume(suite, tmp_path, capsys):
    solutions, out = tmp_path / "solutions", tmp_path / "out"
    solutions.mkdir()
    shutil.copy(EXAMPLES / "candidates" / "softmax_triton.py", solutions / "softmax.py")
    # the other problem has no solution: recorded as missing, not an error of the bench
    code = main(["bench", str(suite), "--solutions", str(solutions), "--out", str(out), "--device", "cpu"])
    assert code == 1                                            # not every problem is correct
    text = capsys.readouterr().out
    assert "[1/2] scale_bias_gelu: missing" in text and "[2/2] softmax: accepted, correct (no timing)" in text
    rows = {r["problem"]: r for r in _rows(out / "results.csv")}
    assert rows["softmax"]["correct"] == "True" and rows["softmax"]["speedup_vs_eager"] == ""
    assert rows["scale_bias_gelu"]["status"] == "missing"
    md = (out / "results.md").read_text()
    assert "**1/2 correct**" in md and "| vs eager | 50% | n/a | n/a | n/a | n/a | n/a |" in md
    assert "correctness only" in md

    # resumable: problems already in the CSV are skipped; a deleted row is redone
    kept = [r for r in _rows(out / "results.csv") if r["problem"] == "softmax"]
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(kept[0]))
        w.writeheader()
        w.writerows(kept)
    main(["bench", str(suite), "--solutions", str(solutions), "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert "softmax: done earlier, skipped" in text and "scale_bias_gelu: missing" in text
    assert sorted(r["problem"] for r in _rows(out / "results.csv")) == ["scale_bias_gelu", "softmax"]


def test_problems_run_at_once_with_jobs(suite, tmp_path, capsys):
    solutions, out = tmp_path / "solutions", tmp_path / "out"
    solutions.mkdir()
    for name in ("softmax", "scale_bias_gelu"):
        shutil.copy(EXAMPLES / "candidates" / f"{name}_triton.py", solutions / f"{name}.py")
    assert main(["bench", str(suite), "--solutions", str(solutions), "--out", str(out), "--jobs", "0"]) == 2
    # a lease that is already over: nothing starts, nothing is recorded, and it says how to go on
    main(["bench", str(suite), "--solutions", str(solutions), "--out", str(out), "--device", "cpu",
          "--stop-after", "0s"])
    text = capsys.readouterr().out
    assert text.count("not started, --stop-after") == 2 and "2 problem(s) not run yet" in text, text
    assert not (out / "results.csv").exists() or _rows(out / "results.csv") == []
    code = main(["bench", str(suite), "--solutions", str(solutions), "--out", str(out), "--device", "cpu",
                 "--jobs", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    # both started before either finished, and each row was written once
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert [line.endswith("evaluating") for line in lines[:2]] == [True, True], lines
    rows = _rows(out / "results.csv")
    assert sorted(r["problem"] for r in rows) == ["scale_bias_gelu", "softmax"]
    assert all(r["correct"] == "True" for r in rows)
    assert "**2/2 correct**" in (out / "results.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("langgraph") is None, reason="the session needs langgraph")
def test_optimize_builtin_one_round_two_at_once(suite, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["bench", str(suite), "--out", str(out), "--device", "cpu", "--rounds", "1", "--time", "2m",
                 "--jobs", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    rows = {r["problem"]: r for r in _rows(out / "results.csv")}
    assert sorted(rows) == ["scale_bias_gelu", "softmax"]
    for name, row in rows.items():
        assert row["correct"] == "True" and int(row["candidates"]) >= 1
        assert row["strategy"] and row["cost_usd"] == "0.0" and row["speedup_vs_eager"] == ""  # no timing on the CPU
        # each row reads its own problem's session, though both ran at once
        session = Path(row["session"])
        assert (session / "problem.py").read_text() == (suite / f"{name}.py").read_text()
        assert (session / "best.py").is_file() and (out / "logs" / f"{name}.log").is_file()
    assert rows["softmax"]["strategy"] != rows["scale_bias_gelu"]["strategy"]


def test_fast_p_and_geomeans():
    rows = [{"problem": "a", "correct": True, "speedup_vs_eager": 4.0, "speedup_vs_compile": 1.2, "time_s": 10},
            {"problem": "b", "correct": True, "speedup_vs_eager": 1.0, "speedup_vs_compile": 0.9, "time_s": 20},
            {"problem": "c", "correct": False, "speedup_vs_eager": None, "speedup_vs_compile": None}]
    assert fast_p(rows, "speedup_vs_eager", 0) == pytest.approx(2 / 3)
    assert fast_p(rows, "speedup_vs_eager", 1.0) == pytest.approx(1 / 3)    # strictly faster than p
    assert fast_p(rows, "speedup_vs_compile", 1.0) == pytest.approx(1 / 3)
    assert fast_p(rows, "speedup_vs_eager", 2.0) == pytest.approx(1 / 3)
    assert geomean([4.0, 1.0]) == pytest.approx(2.0) and geomean([]) is None
    s = summarize(rows)
    assert s["geomean_eager"] == pytest.approx(2.0) and s["geomean_eager_all"] == pytest.approx(4 ** (1 / 3))
    assert s["correct"] == 2 and s["time_s"] == 30
    md = markdown(rows, "t")
    assert "| vs eager | 67% | 33% | 33% | 33% | 2.00x | 1.59x |" in md and "4.00x" in md


def test_problem_suite_is_complete():
    """The shipped suite: 20+ problems, fp32 and bf16, every file a KernelBench problem with int sizes."""
    from kevolve.tools.problem import load_problem

    files = problem_files(ROOT / "benchmarks" / "problems")
    assert len(files) >= 20
    assert sum(p.name.startswith("bf16_") for p in files) >= 6
    for path in files:
        problem = load_problem(path)
        assert problem.constants, path.name
        assert hasattr(problem.module, "Model") and hasattr(problem.module, "get_init_inputs")


def test_probes_are_problems_beside_the_suite():
    """benchmarks/probes: problems for lowering no suite problem exercises, timed by gpu_all.sh's probes
    step; each a KernelBench problem, none of them also in the suite."""
    from kevolve.tools.problem import load_problem

    probes = problem_files(ROOT / "benchmarks" / "probes")
    assert len(probes) >= 4
    assert not {p.name for p in probes} & {p.name for p in problem_files(ROOT / "benchmarks" / "problems")}
    for path in probes:
        problem = load_problem(path)
        assert problem.constants and hasattr(problem.module, "Model"), path.name


def test_only_takes_comma_separated_globs_and_stems():
    folder = ROOT / "benchmarks" / "problems"
    names = [p.stem for p in problem_files(folder, "attention, conv_*,row_max")]
    assert names == ["attention", "conv_bn_silu", "conv_relu", "conv_relu_maxpool", "conv_softmax_channels",
                     "conv_transpose1d_gelu_channel_norm", "conv_transpose3d_avgpool_bias",
                     "conv_transpose3d_maxpools_sum", "conv_transpose3d_scale_relu", "conv_transpose_pool_lse",
                     "row_max"]
    assert problem_files(folder, "no_such_problem") == []
