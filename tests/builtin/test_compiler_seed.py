"""The compiler seed: torch.compile's (Inductor's) kernels exported as a standalone candidate.

On the CPU, Inductor's Triton CPU backend gives the same kind of output code as on the GPU; the
exported candidate runs under Triton's interpreter and must be accepted by the real Evaluator.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this module

import logging  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from kevolve.builtin import Proposal, compiler_seed  # noqa: E402
from kevolve.builtin.compiler_seed import SeedError, _call_source, _kernels  # noqa: E402
from kevolve.tools.static_checks import check_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# An elementwise chain; a row reduction (a scaled softmax) is test_a_float_attribute_computed_from_a_size_
# is_read_at_run_time's, a library call (a convolution) with a fused tail the convolution test's, and
# Inductor's extern addmm becomes torch.addmm in test_cuda_output_code_is_rewritten_to_plain_torch. (Layer
# norm's export is accepted too, but its Welford kernel takes a minute and a half under the interpreter.)
ACCEPTED = ["examples/problems/scale_bias_gelu.py"]


@pytest.mark.parametrize("problem", ACCEPTED)
def test_exported_seed_is_accepted_on_cpu(problem):
    from kevolve.tools.evaluate import Evaluator

    seed = compiler_seed(ROOT / problem, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert (seed.strategy, seed.family) == ("compiler-seed", "compiler")
    report = check_source(seed.source)
    assert report.ok and report.defines_model_new and report.triton_kernels, report.problems
    for word in ("torch.compile(", "torch._inductor", "torch._dynamo", "triton_heuristics", "async_compile"):
        assert word not in seed.source
    with Evaluator(ROOT / problem, device="cpu") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted", (result.get("error"), [c for c in result["checks"] if not c["passed"]])
    assert result["custom_kernel"] is True
    # as torch.compile does: kernels specialized to the timed shape there, the dynamic ones at the odd shape
    launched = next(c["detail"] for c in result["checks"] if c["name"] == "custom_kernel")
    assert "_static'" in launched and re.search(r"'triton_\w+_\d+'", launched), launched


MASKLESS = '''
import torch
import torch.nn as nn

rows = 3
cols = 8192


class Model(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * 2.0


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
'''


def test_a_kernel_without_a_mask_keeps_blocks_that_divide_its_size(tmp_path):
    """Inductor drops the x mask of a kernel whose size (here 24576, 6 x 4096) is a multiple of its
    largest block. The seed's CPU config doubled XBLOCK towards the size hint (32768), and the programs
    wrote past the output: heap corruption under the interpreter (minGPT attention's seed aborted)."""
    from kevolve.tools.evaluate import Evaluator

    path = tmp_path / "maskless.py"
    path.write_text(MASKLESS)
    seed = compiler_seed(path, "cpu")
    assert seed is not None
    kernels = re.findall(r"def (triton_\w+)\(.*?\n((?:    .*\n)+)", seed.source)
    maskless = [(name, int(re.search(r"xnumel = (\d+)", body)[1])) for name, body in kernels
                if "xmask = tl.full(" in body]
    assert maskless, "no kernel without a mask: the test no longer shows the case"
    for name, size in maskless:
        block = int(re.search(rf"^{name.upper()}_XBLOCK = (\d+)$", seed.source, re.M)[1])
        assert size % block == 0, (name, size, block)
    with Evaluator(path, device="cpu") as ev:
        assert ev.evaluate(seed.source)["status"] == "accepted"


MASKED_BLOCK = '''
import torch
import torch.nn as nn

batch = 2
seq_len = 16
max_len = 16  # equal to seq_len at this shape, and need not be
dim = 12


class Model(nn.Module):
    def __init__(self, dim, max_len):
        super().__init__()
        self.register_buffer("mask", torch.tril(torch.ones(max_len, max_len)))
        self.mlp = nn.ModuleDict(dict(fc=nn.Linear(dim, dim), act=nn.Tanh()))
        m = self.mlp
        self.mlpf = lambda x: m.act(m.fc(x))  # minGPT's: its weights reached through a closure

    def forward(self, x):
        t = x.size(1)
        scores = (x @ x.transpose(1, 2)).masked_fill(self.mask[:t, :t] == 0, float("-inf"))
        return self.mlpf(torch.softmax(scores, dim=-1) @ x)


def get_inputs():
    return [torch.randn(batch, seq_len, dim)]


def get_init_inputs():
    return [dim, max_len]
'''


def test_weights_in_a_closure_and_sizes_tied_by_a_guard_still_make_a_right_seed(tmp_path):
    """minGPT's block: Dynamo names the MLP's weights through the lambda's closure (which the static
    checks refuse: no seed), and with seq_len = max_len at the compiled shape a guard makes the two one
    size, so the dynamic kernels index the mask with seq_len (1.24 off at seq_len 27 of 32). The weights
    are named by their module's path, and the tie sends other shapes to a template."""
    import types

    import torch

    from kevolve.tools.evaluate import Evaluator
    from kevolve.tools.problem import constants_at, instantiate, load_problem

    path = tmp_path / "masked_block.py"
    path.write_text(MASKED_BLOCK)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert "__closure__" not in seed.source and "self.mlp.fc.weight" in seed.source
    assert re.search(r"fixed a size \(.*L\['x'\]\.size\(\)\[1\].*mask", seed.notes), seed.notes
    prob = load_problem(path)
    module = types.ModuleType("seed")
    exec(compile(seed.source, str(tmp_path / "seed.py"), "exec"), module.__dict__)
    shape = {"seq_len": 11, "max_len": 16}  # the shape the harness's odd one never makes: the two apart
    inst = instantiate(prob, shape, seed=3)
    with constants_at(module, prob, shape):
        model = module.ModelNew(*inst.init_inputs).eval()
    model.load_state_dict(inst.model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(*inst.inputs), inst.model(*inst.inputs), atol=1e-4, rtol=1e-4)
    with Evaluator(path, device="cpu") as ev:
        assert ev.evaluate(seed.source)["status"] == "accepted"


SELF_ATTENTION = '''
import torch
import torch.nn as nn

seq_len = 64
batch_size = 2
embed_dim = 128


class Model(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, 4)

    def forward(self, x):
        out, _ = self.attn(x, x, x)
        return out


def get_inputs():
    return [torch.randn(seq_len, batch_size, embed_dim)]


def get_init_inputs():
    return [embed_dim]
'''


def test_dynamic_kernels_that_hold_at_one_shape_only_give_way_to_a_template(tmp_path):
    """nn.MultiheadAttention's 1/sqrt(head_dim): Inductor folds it into a constant at the compiled
    head size, with no guard, so its dynamic kernels are wrong at any other (got twice the value at
    the harness's odd shape). The export runs them there once; they are wrong, so the static kernels
    run at the timed shape and the template elsewhere, and the harness accepts the seed."""
    from kevolve.tools.evaluate import Evaluator

    path = tmp_path / "self_attention.py"
    path.write_text(SELF_ATTENTION)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert "dynamic-shape kernels are wrong at another shape" in seed.notes, seed.notes
    assert "class _GeneralModel" in seed.source and "def _inductor_call(" not in seed.source
    with Evaluator(path, device="cpu") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted", (result.get("error"), [c for c in result["checks"] if not c["passed"]])


SIZE_DEPENDENT_SCALE = '''
import math
import torch
import torch.nn as nn

rows = 64
dim = 256


class Model(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = 1.0 / math.sqrt(dim)  # attention's 1/sqrt(head_dim): a float that follows a size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x * self.scale, dim=-1)


def get_inputs():
    return [torch.randn(rows, dim)]


def get_init_inputs():
    return [dim]
'''


def test_a_float_attribute_computed_from_a_size_is_read_at_run_time(tmp_path):
    """Baked in as a constant, 1/sqrt(dim) is right at one shape only: the harness's odd shape caught
    exactly that on the H100 (attention's seed, `tl.full(..., 0.125)`)."""
    from kevolve.tools.evaluate import Evaluator

    path = tmp_path / "scaled_softmax.py"
    path.write_text(SIZE_DEPENDENT_SCALE)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    # the dynamic kernels read it at each call (the shape-specialized ones may fold it in: the same shape)
    assert "torch.as_tensor(self.scale, dtype=torch.float64)])" in seed.source
    with Evaluator(path, device="cpu") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted", result.get("error")
    launched = next(c["detail"] for c in result["checks"] if c["name"] == "custom_kernel")
    assert "_per_" in launched and "_static'" in launched, launched  # the static compile's persistent softmax

CONV_RELU = '''
import torch
import torch.nn as nn

batch = 2
channels_in = 3
channels_out = 12
size = 10


class Model(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def get_inputs():
    return [torch.randn(batch, channels_in, size, size)]


def get_init_inputs():
    return [channels_in, channels_out]
'''


def test_a_convolution_seed_has_inductors_kernels_at_the_timed_shape_and_a_templates_elsewhere(tmp_path):
    """Inductor fixes a convolution's channels even when compiling for dynamic shapes, so its kernels hold at
    one shape: there the seed runs them (a floor at torch.compile's speed); the harness's odd shape, with
    other channels, runs the template's."""
    from kevolve.tools.evaluate import Evaluator

    path = tmp_path / "conv_relu.py"
    path.write_text(CONV_RELU)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert "at other shapes the library+tail template (torch.compile fixed a size" in seed.notes
    assert check_source(seed.source).ok
    with Evaluator(path, device="cpu") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted", result.get("error")
    launched = next(c["detail"] for c in result["checks"] if c["name"] == "custom_kernel")
    assert "_static'" in launched and "'_ew0_kernel'" in launched, launched
    # Tuning reaches the kernels the timed shape runs, never the template's (only other shapes run it).
    from kevolve.builtin.mutate import UNTUNED_MARK, find_sites
    mark = seed.source.split("\n").index(UNTUNED_MARK) + 1
    assert "_ew0_kernel" in "\n".join(seed.source.split("\n")[mark:])
    sites = find_sites(seed.source)
    assert sites and all(s.line < mark for s in sites), sites


def test_a_reduction_to_one_number_is_exported():
    """A loss with reduction='mean': Triton fixes its last kernel's xnumel (1) as a constant, which
    Inductor's call still passes; the launcher takes it positionally (the export had refused every such
    problem with "4 launch arguments for 3 parameters")."""
    from kevolve.tools.evaluate import Evaluator

    problem = ROOT / "tests/harness/problems/mse_loss.py"
    seed = compiler_seed(problem, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    with Evaluator(problem, device="cpu") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted", result.get("error")


NAN_REDUCTIONS = '''
import torch
import torch.nn as nn

rows = 6
cols = 20


class Model(nn.Module):
    def forward(self, x):
        return torch.argmin(x, dim=1), torch.amax(x, dim=1), torch.min(x, dim=1)[0]


def get_inputs():
    x = torch.randint(-3, 4, (rows, cols)).float()  # ties: the first index wins
    x[1, 3] = x[4, 7] = x[4, 2] = float("nan")  # NaN wins, its first index
    return [x]


def get_init_inputs():
    return []
'''


def test_a_seeds_reductions_keep_nan_and_the_first_index_under_the_interpreter(tmp_path):
    """Inductor's max2 / min_with_index reduce with a jit combine, which the interpreter runs per element
    in Python (minutes); under it the seed's are tl.max / tl.min based, with Inductor's answers."""
    import types

    import torch

    path = tmp_path / "nan_reductions.py"
    path.write_text(NAN_REDUCTIONS)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert "_with_index(" in seed.source and "tl.reduce(" not in seed.source
    candidate = types.ModuleType("candidate")
    exec(compile(seed.source, "candidate.py", "exec"), candidate.__dict__)
    ns: dict = {}
    exec(NAN_REDUCTIONS, ns)
    x = ns["get_inputs"]()[0]
    with torch.no_grad():
        for got, want in zip(candidate.ModelNew()(x.clone()), ns["Model"]()(x.clone())):
            torch.testing.assert_close(got, want, equal_nan=True, atol=0, rtol=0)


def test_every_tuning_mutation_of_a_seed_stays_correct():
    """The grid and the launch read the same block-size constant, so tuning one cannot break the other.
    (One problem: 2D reduction blocks are slow enough under the interpreter to time out on a busy CPU.)"""
    problem = "examples/problems/scale_bias_gelu.py"
    from kevolve.builtin import mutate
    from kevolve.tools.executor import LocalExecutor

    seed = compiler_seed(ROOT / problem, "cpu")  # cached by the test above
    assert seed is not None
    variants = mutate(seed.source)
    assert any("XBLOCK" in v.notes and "constant" in v.notes for v in variants), [v.notes for v in variants]
    executor = LocalExecutor(ROOT / problem, {"device": "cpu"}, workers=2)
    try:
        results = {v.notes: executor.submit(v.source, "variant.py") for v in variants}
        failed = {n: f.result()["error"] for n, f in results.items() if f.result()["status"] != "accepted"}
    finally:
        executor.close()
    assert not failed, failed


def test_problem_inductor_cannot_trace_gives_none(tmp_path, caplog):
    path = tmp_path / "data_dependent.py"
    path.write_text(
        "import torch\nimport torch.nn as nn\n\nn = 64\n\n"
        "class Model(nn.Module):\n"
        "    def forward(self, x):\n"
        "        if x.sum() > 0:  # data-dependent control flow: no single graph\n"
        "            return x.relu()\n"
        "        return x.sigmoid()\n\n"
        "def get_inputs():\n    return [torch.randn(n, n)]\n\n"
        "def get_init_inputs():\n    return []\n")
    with caplog.at_level(logging.WARNING, logger="kevolve.builtin.compiler_seed"):
        assert compiler_seed(path, "cpu") is None
    reasons = [r.getMessage() for r in caplog.records if "compiler seed: none" in r.getMessage()]
    assert len(reasons) == 1 and "\n" not in reasons[0]


WARNS_IN_FORWARD = '''
import torch
import torch.nn as nn

batch_size = 4
features = 32


class Model(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.fc = nn.Linear(features, features)
        # built for `features` channels, called on one: torch warns in every forward
        self.norm = nn.InstanceNorm2d(features)

    def forward(self, x):
        return self.norm(self.fc(x).unsqueeze(1).unsqueeze(1)).flatten(1).relu()


def get_inputs():
    return [torch.randn(batch_size, features)]


def get_init_inputs():
    return [features]
'''


def test_a_warning_in_forward_does_not_cost_the_seed(tmp_path):
    # a warning was a graph break, and the export needs one graph (KernelBench's bmm-instance-norm had none)
    path = tmp_path / "warns.py"
    path.write_text(WARNS_IN_FORWARD)
    seed = compiler_seed(path, "cpu")
    assert isinstance(seed, Proposal), "no compiler seed (see the logged reason)"
    assert check_source(seed.source).triton_kernels


def test_missing_problem_gives_none(tmp_path):
    assert compiler_seed(tmp_path / "nowhere.py", "cpu") is None


# A CUDA output module as Inductor writes it (trimmed): the rewriter must leave no Inductor runtime behind.
CUDA_OUTPUT = '''
triton_poi_fused_relu_0 = async_compile.triton('triton_poi_fused_relu_0', """
import triton
import triton.language as tl
from torch._inductor.runtime import triton_helpers, triton_heuristics
from torch._inductor.runtime.triton_helpers import libdevice, math as tl_math
triton_helpers.set_driver_to_gpu()

@triton_heuristics.pointwise(size_hints={'x': 8192}, filename=__file__, triton_meta={}, inductor_meta={})
@triton.jit
def triton_poi_fused_relu_0(in_out_ptr0, xnumel, XBLOCK : tl.constexpr):
    xindex = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)[:]
    xmask = xindex < xnumel
    tmp0 = tl.load(in_out_ptr0 + xindex, xmask)
    tl.store(in_out_ptr0 + xindex, triton_helpers.maximum(tl.full([1], 0, tl.int32), tmp0), xmask)
""", device_str='cuda')

class Runner:
    def call(self, args):
        arg0_1, arg1_1, arg2_1, arg3_1 = args
        args.clear()
        s0 = arg0_1
        assert_size_stride(arg3_1, (s0, 64), (64, 1), 'input')
        with torch.cuda._DeviceGuard(0):
            torch.cuda.set_device(0)
            buf0 = empty_strided_cuda((s0, 128), (128, 1), torch.float32)
            extern_kernels.addmm(arg2_1, arg3_1, reinterpret_tensor(arg1_1, (64, 128), (1, 64), 0), alpha=1, beta=1,
                                 out=buf0)
            del arg1_1
            buf1 = buf0; del buf0  # reuse
            stream0 = get_raw_stream(0)
            triton_poi_fused_relu_0.run(buf1, 128*s0, stream=stream0)
        return (buf1, )
'''


def test_cuda_output_code_is_rewritten_to_plain_torch():
    kernels, call = _kernels(CUDA_OUTPUT)
    assert list(kernels) == ["triton_poi_fused_relu_0"]
    text, n_out, shims = _call_source(call, {"triton_poi_fused_relu_0": ["in_out_ptr0", "xnumel"]})
    assert n_out == 1 and shims == {"empty_strided_cuda", "reinterpret_tensor"}
    assert "def _inductor_call(args):" in text and "torch.addmm(" in text
    assert "_launch_triton_poi_fused_relu_0(buf1, 128 * s0)" in text
    for gone in ("assert_size_stride", "DeviceGuard", "set_device", "get_raw_stream", "stream", ".run(",
                 "extern_kernels"):
        assert gone not in text


def test_unknown_runtime_name_in_call_is_refused():
    kernels, call = _kernels(CUDA_OUTPUT.replace("buf1 = buf0; del buf0", "buf1 = some_inductor_op(buf0)"))
    with pytest.raises(SeedError, match="some_inductor_op"):
        _call_source(call, {"triton_poi_fused_relu_0": ["in_out_ptr0", "xnumel"]})


SCAN_KERNEL = """
import triton
import triton.language as tl
from torch._inductor.runtime import triton_helpers, triton_heuristics

@triton.jit
def _triton_helper_fn_add0(arg0_0, arg1_0):
    tmp0 = arg0_0 + arg1_0
    return tmp0

@triton_heuristics.persistent_reduction(size_hints={'x': 64, 'r0_': 256}, filename=__file__)
@triton.jit
def triton_per_fused_cumsum_0(in_ptr0, out_ptr0, xnumel, r0_numel, XBLOCK : tl.constexpr):
    xindex = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)[:, None]
    r0_index = tl.arange(0, 256)[None, :]
    tmp0 = tl.load(in_ptr0 + (r0_index + 256 * xindex), xindex < xnumel, other=0.0)
    tmp1, = tl.associative_scan((tmp0,), 1, _triton_helper_fn_add0)
    tl.store(out_ptr0 + (r0_index + 256 * xindex), tmp1, xindex < xnumel)
"""


def test_a_scans_combine_function_comes_along_with_its_kernel():
    """Inductor defines a scan's combine function beside the kernel (cumsum): the export copies it in,
    named after the kernel, so the shape-specialized copy of the kernel can bring its own."""
    from kevolve.builtin.compiler_seed import _Helpers, _kernel_source

    text, params, _ = _kernel_source("triton_per_fused_cumsum_0", SCAN_KERNEL, _Helpers(interpreter=True))
    assert params == ["in_ptr0", "out_ptr0", "xnumel", "r0_numel", "XBLOCK"]
    helper = "_triton_per_fused_cumsum_0_triton_helper_fn_add0"
    assert f"def {helper}(arg0_0, arg1_0):" in text and f"(tmp0,), 1, {helper})" in text
    assert text.index(helper) < text.index("def triton_per_fused_cumsum_0")  # defined before its use
    assert text.count("@triton.jit") == 2 and "triton_heuristics" not in text
    namespace: dict = {}
    exec(compile("import triton\nimport triton.language as tl\n" + text, "<seed>", "exec"), namespace)
    assert helper in namespace


# -- the builtin Coder: templates at once, the compiler seed as soon as it is exported ---------------

class _Engine:
    def __init__(self, seed, templates=("template",)):
        self.seed, self.calls, self.templates = seed, [], templates
        self.exported = threading.Event()  # the export finishes when the test says so
        self.exported.set()

    def compiler_seed(self, problem_path, device):
        self.calls.append(device)
        assert self.exported.wait(30)
        return self.seed

    def propose_candidates(self, problem_path):
        return [Proposal(source=t, strategy="fused-elementwise", family="elementwise") for t in self.templates]

    def mutate(self, source, **_):
        return [Proposal(source=source + "+tuned", strategy="tune", family="elementwise")]


def _write(coder, seen: set, parent=None):
    ctx = {"problem_path": "p.py", "device_facts": {"type": coder.device}, "parent_source": parent,
           "best_source": parent}
    p = coder.write(ctx, seen=lambda s: s in seen)
    seen.add(p.source)
    return p


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_templates_go_first_and_the_compiler_seed_as_soon_as_it_is_exported(device, monkeypatch):
    from kevolve.coder import BuiltinCoder

    if device == "cpu":  # on the CPU only when asked for: there is no speed for it to set a floor on
        monkeypatch.setenv("KEVOLVE_COMPILER_SEED", "always")
    coder = BuiltinCoder()
    coder.device = device
    coder.engine = _Engine(Proposal(source="exported", strategy="compiler-seed", family="compiler"),
                           templates=("t1", "t2"))
    coder.engine.exported.clear()
    seen: set = set()
    assert _write(coder, seen).source == "t1"  # the export is still running: it does not hold the session up
    coder.engine.exported.set()
    coder._compiler.result(timeout=30)
    first = _write(coder, seen, parent="t1")  # a parent exists, yet the floor goes in before any mutation
    assert (first.source, first.strategy, first.operator) == ("exported", "compiler-seed", "seed")
    assert _write(coder, seen, parent="t1").source == "t2"  # every template before any mutation
    assert _write(coder, seen, parent="t1").source == "t1+tuned"
    assert coder.engine.calls == [device]  # exported once


def test_with_no_template_the_coder_waits_for_the_compiler_seed():
    from kevolve.coder import BuiltinCoder, CoderFailed

    coder = BuiltinCoder()
    coder.device = "cuda"
    coder.engine = _Engine(Proposal(source="exported", strategy="compiler-seed", family="compiler"), templates=())
    seen: set = set()
    assert _write(coder, seen).source == "exported"
    with pytest.raises(CoderFailed, match="no seed left"):
        _write(coder, seen)


def test_builtin_coder_without_a_compiler_seed_starts_with_templates():
    from kevolve.coder import BuiltinCoder

    coder = BuiltinCoder()
    coder.device = "cuda"
    coder.engine = _Engine(None)
    assert _write(coder, set()).source == "template"


def test_builtin_coder_skips_the_compiler_seed_on_the_cpu_by_default(monkeypatch):
    from kevolve.coder import BuiltinCoder

    monkeypatch.delenv("KEVOLVE_COMPILER_SEED", raising=False)
    coder = BuiltinCoder()
    coder.device = "cpu"
    coder.engine = _Engine(Proposal(source="exported", strategy="compiler-seed", family="compiler"))
    assert _write(coder, set()).source == "template" and coder.engine.calls == []


@pytest.mark.gpu
@pytest.mark.parametrize("problem", ACCEPTED + ["examples/problems/linear_relu.py", "examples/problems/softmax.py",
                                     "examples/problems/layer_norm.py",
                                     "benchmarks/problems/attention.py", "benchmarks/problems/conv_relu.py",
                                     "benchmarks/problems/bf16_conv_gelu.py"])
def test_exported_seed_is_accepted_and_timed_on_gpu(problem):
    from kevolve.tools.evaluate import Evaluator

    seed = compiler_seed(ROOT / problem, "cuda")
    assert seed is not None
    with Evaluator(ROOT / problem, device="cuda") as ev:
        result = ev.evaluate(seed.source)
    assert result["status"] == "accepted" and result["custom_kernel"] is True
    # at the timed shape these are the static compile's own kernels and configs: its speed, within noise
    assert result["timing"]["speedup_vs_compile"] > 0.9, result["timing"]


KERNEL_MODULE = '''
import triton
import triton.language as tl
from torch._inductor.runtime import triton_heuristics

@triton_heuristics.cached_autotune({"x": 8192}, [triton.Config({"XBLOCK": 128})], triton_meta={}, heuristic_type=None)
@triton.jit
def triton_poi_relu_0(in_out_ptr0, xnumel, XBLOCK: tl.constexpr):
    xindex = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    tl.store(in_out_ptr0 + xindex, tl.load(in_out_ptr0 + xindex, xindex < xnumel), xindex < xnumel)
'''


def test_kernel_configs_are_read_outside_the_interpreter():
    """On a GPU, @triton.jit reads its function's source with inspect: a kernel module exec'd from a
    string fails there ("@jit functions should be defined in a Python file"), not under the interpreter."""
    import subprocess
    import sys

    code = ("import sys; from kevolve.builtin.compiler_seed import _kernel_meta; "
            "meta = _kernel_meta('triton_poi_relu_0', sys.stdin.read()); print(meta['configs'][0].kwargs)")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], input=KERNEL_MODULE, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "{'XBLOCK': 128}"
