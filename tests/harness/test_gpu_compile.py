"""Triton candidates compiled for an H100 (sm_90) on a machine without a GPU: the real compiler, LLVM and
ptxas on the launches the forward makes at the problem's own shape (tools/gpu_compile.py)."""

import json
import os
from pathlib import Path

from kevolve.cli import main
from kevolve.tools.gpu_compile import compile_for_gpu

HERE = Path(__file__).parent
PROBLEMS, CANDIDATES = HERE / "problems", HERE / "candidates"


def test_evaluate_on_the_cpu_also_compiles_the_candidate_for_sm90(capsys):
    assert main(["evaluate", str(PROBLEMS / "affine.py"), str(CANDIDATES / "affine_honest.py"), "--device", "cpu",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    check = next(c for c in result["checks"] if c["name"] == "gpu_compile")
    assert check["passed"] and check["detail"].startswith("compiles for sm_90: 1 kernel"), check
    (kernel,) = result["gpu_compile"]["kernels"]
    assert kernel["name"] == "affine_kernel" and 0 < kernel["registers"] <= 255 and kernel["spill_bytes"] == 0
    assert kernel["grid"][0] >= 1 and kernel["tensor_cores"] == "none"


def test_a_kernel_the_interpreter_runs_but_an_h100_cannot_fit_is_refused(capsys):
    """32 pipeline stages of a tl.dot's operand: right under the interpreter, 264 KB of shared memory."""
    assert main(["evaluate", str(PROBLEMS / "affine.py"), str(CANDIDATES / "affine_too_much_shared.py"),
                 "--device", "cpu", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "compile_error" and "shared memory" in result["error"], result["error"]
    assert all(c["passed"] for c in result["checks"] if c["name"] == "correctness")
    (kernel,) = result["gpu_compile"]["kernels"]
    assert kernel["shared_bytes"] > 232448 and kernel["num_stages"] == 32


CONV_THEN_LINEAR_SOFTMAX = """import torch
import torch.nn as nn

B = 4
C = 32
H = 16
W = 16


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, 64, 3, padding=1)
        self.fc = nn.Linear(64, 64)

    def forward(self, x, z):
        return torch.relu(self.conv(x)), torch.softmax(self.fc(z), dim=-1)


def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B * H, 64)]


def get_init_inputs():
    return [C]
"""


def test_template_kernels_compile_for_sm90_with_coalesced_weight_loads(tmp_path):
    """The implicit-GEMM convolution reads its weight packed (groups, taps, CI, COG): a K step's B rows are
    adjacent output channels, loaded 16 bytes a thread (in torch's layout they were 36 bytes apart, each
    load 4 bytes); and a matmul with a softmax over its row compiles as one kernel."""
    os.environ["TRITON_INTERPRET"] = "1"  # the templates are made here; the check compiles them for a GPU
    from kevolve.builtin import propose_candidates

    problem = tmp_path / "conv_then_linear_softmax.py"
    problem.write_text(CONV_THEN_LINEAR_SOFTMAX)
    candidates = {p.strategy: p.source for p in propose_candidates(problem)}
    fused = next(s for name, s in candidates.items() if name.endswith("+row-epilogue"))
    path = tmp_path / "candidate.py"
    path.write_text(fused)
    report = compile_for_gpu(problem, path, cache=tmp_path / "cache")
    assert report["ok"], report
    kernels = {k["name"]: k for k in report["kernels"]}
    conv = next(k for name, k in kernels.items() if name.startswith("_conv"))
    assert conv["wide_loads"] > 0 and conv["spill_bytes"] == 0, conv
    assert any(name.startswith("_mm") for name in kernels) and not any(name.startswith("_row") for name in kernels)


def test_a_broadcast_operands_index_is_divided_by_constants(tmp_path):
    """The conv's bias and relu after cuDNN's convolution: an elementwise kernel that takes each element's
    channel from its flat index. The sizes it divides by are constexpr, so the compiled kernel has no
    division by a run-time integer (it had two: the flat index by H·W, then the remainder by the channels;
    144 instructions, now 80)."""
    os.environ["TRITON_INTERPRET"] = "1"
    from kevolve.builtin import propose_candidates

    problem = tmp_path / "conv_then_linear_softmax.py"
    problem.write_text(CONV_THEN_LINEAR_SOFTMAX)
    library = next(p.source for p in propose_candidates(problem) if p.strategy == "library+tail")
    path = tmp_path / "candidate.py"
    path.write_text(library)
    report = compile_for_gpu(problem, path, cache=tmp_path / "cache")
    assert report["ok"], report
    tail = next(k for k in report["kernels"] if k["name"].startswith("_ew"))
    assert tail["int_divisions"] == 0 and tail["instructions"] > 0, tail
    path.write_text(library.replace("_i0: tl.constexpr", "_i0").replace("_s0: tl.constexpr", "_s0"))
    runtime = compile_for_gpu(problem, path, cache=tmp_path / "cache")
    assert next(k for k in runtime["kernels"] if k["name"].startswith("_ew"))["int_divisions"] > 0, runtime


def test_each_autotune_config_is_compiled_with_its_own_grid(tmp_path):
    """@triton.autotune cannot time anything here: every config is compiled instead, and a grid given as a
    lambda of the meta-parameters is evaluated with each config's BLOCK (3840 elements: 30 and 8 programs)."""
    report = compile_for_gpu(PROBLEMS / "affine.py", CANDIDATES / "affine_autotuned.py", cache=tmp_path)
    assert report["ok"] and report["error"] == "", report
    launches = sorted((k["grid"][0], k["num_warps"]) for k in report["kernels"])
    assert launches == [(8, 4), (30, 2)], launches


GROUP_NORM = """import torch
import torch.nn as nn

B = 4
C = 64
HW = 64


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)

    def forward(self, x):
        return self.norm(x)


def get_inputs():
    return [torch.randn(B, C, HW, HW)]


def get_init_inputs():
    return [C]
"""


def test_launches_sized_by_the_sm_count_are_compiled_as_an_h100_launches_them(tmp_path):
    """32 rows (batch x groups) of 32768: on the H100's 132 SMs each row's statistics split over 8 programs
    of 4096 columns (about 2 a SM), then the output is written by a program per 2048-column block (16 a
    row); off a GPU the template's own SM count is 1, and it would have taken one looping program a row."""
    os.environ["TRITON_INTERPRET"] = "1"
    from kevolve.builtin import propose_candidates

    problem = tmp_path / "group_norm.py"
    problem.write_text(GROUP_NORM)
    path = tmp_path / "candidate.py"
    path.write_text(propose_candidates(problem)[0].source)
    report = compile_for_gpu(problem, path, cache=tmp_path / "cache")
    assert report["ok"], report
    assert sorted((k["name"], k["grid"][0]) for k in report["kernels"]) == [
        ("_row0_split_kernel", 256), ("_row0_split_kernel", 512)], report["kernels"]
