"""EVAL.md's loopholes, each closed: malicious candidates are refused, honest ones accepted.

Runs on the CPU under the Triton interpreter. One Evaluator per problem keeps a spare worker
warm, as a session does.
"""

from pathlib import Path

import pytest

from kevolve.tools.evaluate import Evaluator

HERE = Path(__file__).parent
PROBLEMS = HERE / "problems"
CANDIDATES = HERE / "candidates"


@pytest.fixture(scope="module")
def relu_eval():
    with Evaluator(PROBLEMS / "relu_rand.py", device="cpu", timeout_s=20) as ev:
        yield ev


@pytest.fixture(scope="module")
def affine_eval():
    with Evaluator(PROBLEMS / "affine.py", device="cpu", timeout_s=20) as ev:
        yield ev


def run(ev, name):
    return ev.evaluate((CANDIDATES / name).read_text(), name=name)


def test_honest_relu_is_accepted(relu_eval):
    result = run(relu_eval, "relu_honest.py")
    assert result["status"] == "accepted", result["error"]
    assert result["correct"] and result["custom_kernel"]
    assert result["timing"] is None and "interpreter" in result["timing_note"]
    names = [c["name"] for c in result["checks"]]
    assert names.count("correctness") == 6  # 4 distributions at one shape, 2 at the odd shape


@pytest.mark.parametrize("name", ["affine_honest.py", "affine_packed.py"])
def test_honest_affine_is_accepted(affine_eval, name):
    result = run(affine_eval, name)
    assert result["status"] == "accepted", result["error"]
    assert result["max_abs_error"] < 1e-5


@pytest.mark.parametrize("name, status, words", [
    ("relu_identity.py", "incorrect", "uniform_signed"),           # 9: input distribution
    ("relu_uninitialised.py", "incorrect", "trial 0"),             # 1: uninitialised memory
    ("relu_inplace_return.py", "rejected", "shares memory with input"),  # 2
    ("relu_inplace_clone.py", "rejected", "modified in place"),    # 2
    ("relu_alias_view.py", "rejected", "shares memory with input"),  # 2
    ("relu_cache.py", "incorrect", "elements off"),                     # 3: cached by shape
    ("relu_patch_allclose.py", "rejected", "assigns to torch.allclose"),  # 4
    ("relu_patch_timer.py", "rejected", "patches a module"),       # 4 through an alias
    ("relu_setattr.py", "rejected", "setattr"),                    # 4
    ("relu_thread.py", "rejected", "imports threading"),           # 6
    ("relu_subclass.py", "rejected", "not a plain torch.Tensor"),  # 7
    ("relu_meta.py", "rejected", "output 0 is on meta"),           # 7
    ("relu_hardcoded_shape.py", None, "trial 4"),                  # 11: fails at the odd shape
    ("relu_fallback.py", "rejected", "no kernel the candidate defines ran"),  # 12
    ("relu_try_fallback.py", "rejected", "no kernel the candidate defines ran"),  # 12
    ("relu_torch_compile.py", "rejected", "torch.compile"),        # 12
    ("relu_reads_env.py", "rejected", "imports os"),               # 16
    ("relu_opens_file.py", "rejected", "open()"),                  # 16
])
def test_malicious_relu_is_refused(relu_eval, name, status, words):
    result = run(relu_eval, name)
    assert result["status"] != "accepted"
    if status:
        assert result["status"] == status, result["error"]
    assert words in result["error"], result["error"]
    assert not result["correct"] or not result["custom_kernel"]


@pytest.mark.parametrize("name, status, words", [
    ("affine_input_free.py", "incorrect", "elements off"),          # 10: constant given the weights
    ("affine_slightly_low_precision.py", "incorrect", "precision"),  # 8: passes atol/rtol, not the norm test
    ("affine_fp16.py", "incorrect", ""),                            # 8: fp16 arithmetic
    ("affine_renamed.py", "runtime_error", "load_reference_state"),  # weights that do not load
])
def test_malicious_affine_is_refused(affine_eval, name, status, words):
    result = run(affine_eval, name)
    assert result["status"] == status, result["error"]
    assert words in result["error"]


def test_segfault_is_a_crash_and_the_harness_lives(relu_eval):
    result = run(relu_eval, "relu_segfault.py")
    assert result["status"] == "crashed", result["error"]
    assert "SIGSEGV" in result["error"] or "SIGBUS" in result["error"]
    assert run(relu_eval, "relu_honest.py")["status"] == "accepted"


def test_infinite_loop_times_out():
    with Evaluator(PROBLEMS / "relu_rand.py", device="cpu", timeout_s=3, compile_timeout_s=5, prewarm=False) as ev:
        result = run(ev, "relu_hang.py")
    assert result["status"] == "timeout"
    assert "compile" in result["error"] or "correctness" in result["error"]


def test_100gb_allocation_is_out_of_memory(relu_eval):
    result = run(relu_eval, "relu_huge_alloc.py")
    assert result["status"] == "runtime_error", result["error"]
    assert "out of memory" in result["error"]


def test_compile_errors_point_at_the_candidate_line(relu_eval):
    result = run(relu_eval, "relu_syntax_error.py")
    assert result["status"] == "compile_error"
    assert result["error"].startswith("candidate.py:22: expected")
    result = run(relu_eval, "relu_kernel_error.py")
    assert result["status"] == "compile_error", result["error"]
    source = (CANDIDATES / "relu_kernel_error.py").read_text().splitlines()
    line = int(result["error"].split(":")[1])
    assert "undefined_name" in source[line - 1]


def test_no_model_new_is_rejected(relu_eval):
    result = run(relu_eval, "relu_no_model.py")
    assert result["status"] == "rejected"
    assert "ModelNew" in result["error"]


def test_fresh_inputs_draw_new_trials_and_leave_the_cache(relu_eval):
    cached = dict(relu_eval._references)
    result = relu_eval.evaluate((CANDIDATES / "relu_honest.py").read_text(), fresh_inputs=True)
    assert result["status"] == "accepted"
    assert relu_eval._references.keys() == cached.keys()
    assert all(relu_eval._references[k][0][0] is cached[k][0][0] for k in cached)


def test_worker_computes_under_the_sessions_precision(relu_eval):
    """The candidate's library calls get TF32 only where --precision allows it, as the reference
    does: an fp32 conv template through cuDNN failed on the H100 while the worker kept torch's default."""
    assert run(relu_eval, "relu_tf32_probe.py")["status"] == "accepted"
    with Evaluator(PROBLEMS / "relu_rand.py", device="cpu", precision="tf32", timeout_s=20, prewarm=False) as ev:
        assert run(ev, "relu_tf32_probe.py")["status"] == "incorrect"


@pytest.mark.parametrize("line", ["tf32 = torch.backends.cudnn.allow_tf32",
                                  "mode = torch.backends.cudnn.conv.fp32_precision",
                                  "ctx = torch.backends.cudnn.flags(enabled=True, allow_tf32=True)",
                                  "ok = torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction",
                                  "torch.set_float32_matmul_precision('high')"])
def test_static_checks_refuse_any_touch_of_torchs_precision_switches(line):
    """Assigning to them is refused as patching a module; these reach them by a read or a call."""
    from kevolve.tools.static_checks import check_source

    report = check_source(f"import torch\n{line}\nclass ModelNew(torch.nn.Module):\n    pass\n")
    assert not report.ok and "changes torch's precision" in report.problems[0]


def test_static_checks_tell_a_parameter_from_the_builtin_it_shadows():
    """Triton's own helpers take a parameter named `input`; reading it is not calling input(). The
    builtin, reached anywhere the name is not a parameter (a sibling function, module level), is refused."""
    from kevolve.tools.static_checks import check_source

    ok = ("import torch\nimport triton\nimport triton.language as tl\n\n@triton.jit\n"
          "def _prod(input, axis):\n    return tl.reduce(input, axis, lambda a, b: a * b)\n\n"
          "class ModelNew(torch.nn.Module):\n    pass\n")
    assert check_source(ok).ok, check_source(ok).problems
    for bad in ("def f(open):\n    return open\n\nopen('x')\n", "def f(input):\n    pass\n\n"
                "def g():\n    return input()\n"):
        report = check_source("import torch\n" + bad + "class ModelNew(torch.nn.Module):\n    pass\n")
        assert not report.ok and "uses" in report.problems[0], report.problems


def test_the_odd_shape_keeps_the_forward_valid_and_candidates_get_the_trials_constants():
    """An odd d_model would build the model but fail its view into 8 heads: the odd shape is one at
    which the reference runs (d_model an odd multiple of 8, or only seq_len odd). A candidate whose
    __init__ reads its own module constant d_model, as Model's does, is built at each trial's value."""
    from kevolve.tools.problem import instantiate, load_problem, shapes_for

    problem = load_problem(PROBLEMS / "heads_split.py")
    base, odd = shapes_for(problem, "cpu")
    instance = instantiate(problem, odd, seed=0)
    instance.model(*instance.inputs)  # runs
    assert any(v % 16 for v in odd.values()) and odd != base
    with Evaluator(PROBLEMS / "heads_split.py", device="cpu", timeout_s=20) as ev:
        result = run(ev, "heads_split_honest.py")
    assert result["status"] == "accepted", result["checks"]
