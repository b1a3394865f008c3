"""The CLI on bad input: one clear line and the right exit status, never a bare traceback."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kevolve.cli import main

HERE = Path(__file__).parent
PROBLEMS, CANDIDATES = HERE / "problems", HERE / "candidates"
HONEST = str(CANDIDATES / "relu_honest.py")


def usage_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("kevolve: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("problem, words", [
    ("missing.py", "no such problem file"),
    ("syntax_error.py", "syntax error"),
    ("no_model.py", "defines no `Model`"),
    ("bad_inputs.py", "inputs must be tensors"),
    ("random_forward.py", "not deterministic"),
])
def test_bad_problems(capsys, problem, words):
    assert words in usage_error(capsys, ["evaluate", str(PROBLEMS / problem), HONEST, "--device", "cpu"])


def test_an_output_that_ignores_the_inputs_is_said_not_refused(tmp_path, capsys):
    """Where zeros or a constant pass every trial (a clamp below its min, a softmax over one element),
    a trivial kernel is as right as any: the problem stands, a faithful kernel is judged as ever, and
    every result says that the check cannot tell it from a trivial one."""
    times_zero = tmp_path / "times_zero.py"
    times_zero.write_text(Path(HONEST).read_text().replace("tl.maximum(x, 0.0)", "x * 0.0"))
    assert main(["evaluate", str(PROBLEMS / "zero_output.py"), str(times_zero), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "accepted" and result["custom_kernel"]
    assert "returning zeros passes every correctness trial" in result["problem_warning"]
    assert main(["evaluate", str(PROBLEMS / "constant_output.py"), HONEST, "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "incorrect" in out and "warning: returning constant passes every correctness trial" in out
    # a problem whose output does depend on its inputs says nothing of the kind
    assert main(["evaluate", str(PROBLEMS / "relu_rand.py"), HONEST, "--device", "cpu", "--json"]) == 0
    assert "problem_warning" not in json.loads(capsys.readouterr().out)


def test_a_reference_that_differs_only_in_rounding_is_a_valid_problem(capsys):
    """Summation order changes between runs (atomics): within the tolerance, so the problem stands and
    the candidate is judged (this one, a ReLU, is wrong); Dropout-like randomness is refused above."""
    from kevolve.tools.problem import load_problem

    mod = load_problem(PROBLEMS / "unordered_sum.py").module
    x = mod.get_inputs()[0]
    assert not torch.equal(mod.Model()(x), mod.Model()(x))  # the runs do differ in rounding
    assert main(["evaluate", str(PROBLEMS / "unordered_sum.py"), HONEST, "--device", "cpu", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "incorrect"


def test_a_scalar_loss_is_a_valid_problem(capsys):
    """A loss with reduction='mean' is one number per trial; a constant that ignores the inputs still
    fails it (the trials' inputs differ), so the problem stands and the candidate is judged."""
    assert main(["evaluate", str(PROBLEMS / "mse_loss.py"), HONEST, "--device", "cpu", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] in ("incorrect", "runtime_error")


def test_a_size_forward_reads_is_not_changed_between_shapes(capsys):
    """The harness sets a problem's constants while building it; one that forward reads at run time
    keeps its value (the odd shape and the CPU's smaller one vary the others), where it used to crash
    the harness with a size mismatch inside the reference."""
    from kevolve.tools.problem import load_problem

    assert load_problem(PROBLEMS / "forward_reads_size.py").constants == {"batch_size": 32}
    assert main(["evaluate", str(PROBLEMS / "forward_reads_size.py"), HONEST, "--device", "cpu", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] in ("incorrect", "runtime_error")


def test_missing_candidate(capsys):
    err = usage_error(capsys, ["evaluate", str(PROBLEMS / "relu_rand.py"), "nope.py", "--device", "cpu"])
    assert "no such candidate file" in err


@pytest.mark.parametrize("shapes, words", [("dim=abc", "NAME=INTEGER"), ("width=8", "unknown constants")])
def test_bad_shapes(capsys, shapes, words):
    err = usage_error(capsys, ["evaluate", str(PROBLEMS / "relu_rand.py"), HONEST, "--device", "cpu",
                               "--shapes", shapes])
    assert words in err


def test_json_output_and_exit_codes(capsys):
    assert main(["evaluate", str(PROBLEMS / "relu_rand.py"), HONEST, "--device", "cpu", "--json",
                 "--shapes", "batch_size=3,dim=50;batch_size=5,dim=7"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("status", "correct", "custom_kernel", "checks", "max_abs_error", "max_rel_error", "timing",
                "device", "log"):
        assert key in result
    assert result["status"] == "accepted"
    assert any("{'batch_size': 5, 'dim': 7}" in c["detail"] for c in result["checks"])
    assert main(["evaluate", str(PROBLEMS / "relu_rand.py"), str(CANDIDATES / "relu_identity.py"),
                 "--device", "cpu", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "incorrect"


def test_readable_summary(capsys):
    assert main(["evaluate", str(PROBLEMS / "affine.py"), str(CANDIDATES / "affine_honest.py"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "correctness" in out and "interpreter" in out


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.slow
def test_cuda_candidate_without_gpu_is_compile_checked(capsys):
    # One nvcc build of torch's headers takes ~30 s here; the error case fails fast and maps its line.
    main(["evaluate", str(PROBLEMS / "affine.py"), str(CANDIDATES / "affine_cuda_error.py"), "--device", "cpu",
          "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "compile_error"
    line = int(result["error"].split(":")[1])
    source = (CANDIDATES / "affine_cuda_error.py").read_text().splitlines()
    assert "not_declared" in source[line - 1], result["error"]
    main(["evaluate", str(PROBLEMS / "affine.py"), str(CANDIDATES / "affine_cuda.py"), "--device", "cpu", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "unverified" and not result["custom_kernel"]
    assert "nvcc" in result["error"]


def test_python_api_mirrors_the_cli():
    import kevolve

    result = kevolve.evaluate(PROBLEMS / "relu_rand.py", CANDIDATES / "relu_honest.py", device="cpu")
    assert result["status"] == "accepted"
    source = (CANDIDATES / "relu_identity.py").read_text()
    assert kevolve.evaluate(PROBLEMS / "relu_rand.py", source, device="cpu")["status"] == "incorrect"


def test_profile_without_a_gpu_says_so(capsys):
    err = usage_error(capsys, ["profile", str(PROBLEMS / "relu_rand.py"), HONEST])
    assert "needs a CUDA GPU" in err


def test_speed_of_light_flag():
    from kevolve.tools.evaluate import Evaluator

    class Fake:
        def roofline(self):
            return {"sol_ms": 0.05}

    for ms, flagged in [(0.049, False), (0.02, True)]:
        result, checks = {"timing": {"candidate_ms": ms}}, []
        Evaluator._check_speed_of_light(Fake(), result, checks)
        assert checks[-1]["passed"] is not flagged
        assert ("flags" in result) is flagged
        assert result["timing"]["sol_fraction"] == 0.05 / ms


def test_values_made_from_sizes_follow_them_at_every_shape():
    """`bias_shape = (out_channels, 1, 1)` is evaluated again whenever out_channels changes, and `height,
    width = 32, 48` are two sizes: the shape shrunk for the CPU and the odd one are shapes the problem
    runs at (bias_shape stayed (64, 1, 1) before, and every smaller shape failed in the reference). A
    value forward reads at run time keeps the sizes it is made of (mask_shape: width)."""
    from kevolve.tools.problem import instantiate, load_problem, odd_shape, shrink_shape

    problem = load_problem(PROBLEMS / "derived_shapes.py")
    assert set(problem.constants) == {"batch_size", "in_channels", "out_channels", "height"}
    assert [names for names, _ in problem.derived] == [("bias_shape",), ("hidden",)]
    shrunk = shrink_shape(problem, 1 << 12)
    assert shrunk.get("out_channels", 64) < 64 and shrunk.get("height", 32) < 32, shrunk
    for shape in (shrunk, odd_shape(problem, {})):  # the CPU's shape, the GPU's odd one
        instance = instantiate(problem, shape, seed=0)
        channels = shape.get("out_channels", 64)
        assert tuple(instance.model.bias.shape) == (channels, 1, 1) and instance.model.fc.out_features == 2 * channels
        with torch.no_grad():
            assert instance.model(*instance.inputs).shape[1] == channels
    assert problem.module.bias_shape == (64, 1, 1)  # the module's own values are back


def test_the_shrink_search_runs_the_forward_once_where_every_halving_runs(monkeypatch):
    """A meta forward can take seconds (an nn.GRU decomposes cell by cell): where the shape found
    without it runs, the search runs the forward at the start and the end only, not at every step."""
    from kevolve.tools import problem as problem_module

    calls = []
    for name in ("_forward_ops", "forward_runs"):  # every way the search may run the forward
        run = getattr(problem_module, name)
        monkeypatch.setattr(problem_module, name, lambda instance, run=run: calls.append(1) or run(instance))
    problem = problem_module.load_problem(PROBLEMS / "derived_shapes.py")
    shrunk = problem_module.shrink_shape(problem, 1 << 10)
    assert shrunk and len(calls) == 2, (shrunk, len(calls))


def test_sizes_equal_at_the_problems_own_shape_stay_equal_when_shrunk():
    """A model that compares sizes (a residual only where in == out) must be traced running the program
    it runs at its own sizes: halving in_features alone had dropped the residual from the templates'
    trace, and every candidate of a MobileNet block was wrong."""
    from kevolve.tools.problem import load_problem, shrink_shape

    problem = load_problem(PROBLEMS / "branch_on_sizes.py")
    for budget in (1 << 10, 1 << 12, 1 << 15):
        shrunk = shrink_shape(problem, budget)
        assert shrunk["in_features"] == shrunk["out_features"] < 256, (budget, shrunk)


def test_sizes_that_must_match_are_shrunk_together():
    """Halving width or features alone makes a shape whose forward fails (LayerNorm(features) over a
    last dim of width): the two are halved at once, down to a shape the CPU interpreter can run."""
    from kevolve.tools.problem import instantiate, load_problem, shrink_shape

    problem = load_problem(PROBLEMS / "tied_sizes.py")
    shrunk = shrink_shape(problem, 1 << 10)
    assert shrunk.get("width") == shrunk.get("features") and shrunk["width"] < 64, shrunk
    instance = instantiate(problem, shrunk, seed=0)
    with torch.no_grad():
        assert instance.model(*instance.inputs).shape[-1] == shrunk["width"]
