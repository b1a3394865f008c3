import os

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere in this module

import ast  # noqa: E402
import re  # noqa: E402
import types  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kevolve.builtin import mutate, propose_candidates  # noqa: E402
from kevolve.tools.gpu_compile import compile_for_gpu  # noqa: E402
from kevolve.tools.problem import constants_at, instantiate, load_problem  # noqa: E402

from .problems import EXPECTED_FAMILIES, HEADER, PROBLEMS  # noqa: E402

_CACHE: dict = {}


def _problem(tmp_path_factory, name):
    if name not in _CACHE:
        path = tmp_path_factory.mktemp("problems") / f"{name}.py"
        path.write_text(HEADER + PROBLEMS[name])
        _CACHE[name] = (path, propose_candidates(path))
    return _CACHE[name]


def _run(source: str, prob, shape: dict, seed: int, patch=None):
    """`patch(candidate)`: changes the candidate module after it is made (an SM count, a launch recorder)."""
    candidate = types.ModuleType("candidate")
    exec(compile(source, "candidate.py", "exec"), candidate.__dict__)
    if patch is not None:
        patch(candidate)
    inst = instantiate(prob, shape, seed=seed)
    torch.manual_seed(seed + 100)
    with torch.no_grad():  # weights vary per seed too
        for p in inst.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    with constants_at(candidate, prob, shape):  # as the harness builds it
        model = candidate.ModelNew(*inst.init_inputs).eval()
    model.load_state_dict(inst.model.state_dict())
    with torch.no_grad():
        ref = inst.model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inst.inputs])
        out = model(*[x.clone() if isinstance(x, torch.Tensor) else x for x in inst.inputs])
    refs = ref if isinstance(ref, tuple) else (ref,)
    outs = out if isinstance(out, tuple) else (out,)
    assert len(refs) == len(outs)
    for r, o in zip(refs, outs):
        assert type(o) is torch.Tensor and o.shape == r.shape and o.dtype == r.dtype
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4, equal_nan=True)


def _odd(prob) -> dict:
    """Another shape: sizes bumped to odd values (kernels must not be tied to one shape)."""
    return {k: v + 2 if v > 3 else v for k, v in prob.constants.items()}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_candidates_match_reference(tmp_path_factory, name):
    path, props = _problem(tmp_path_factory, name)
    families = {p.family for p in props}
    if not EXPECTED_FAMILIES[name]:
        assert props == []
        return
    assert props, f"{name}: no candidate"
    assert families <= EXPECTED_FAMILIES[name], families
    prob = load_problem(path)
    for p in props:  # two draws of weights and inputs: one at the problem's shape, one at an odd one
        assert "@triton.jit" in p.source and "class ModelNew" in p.source
        defined = [n.name for n in ast.parse(p.source).body if isinstance(n, ast.FunctionDef)]
        assert len(defined) == len(set(defined)), f"{p.strategy}: a function defined twice"
        _run(p.source, prob, {}, 0)
        _run(p.source, prob, _odd(prob), 2)


SPLIT_K_PRODUCTS = """
M = 24
N = 40
K = 1100

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x, a, b, t, c, d):
        y = F.gelu(self.fc(x)) * 2.0  # bias and activation: the epilogue after the partials are summed
        z = torch.bmm(a, b) + 1.0  # three batches of one tile each
        u = torch.tril(t @ t.transpose(0, 1))  # tiles above the diagonal have no product to split
        v = torch.relu(c @ d)  # K too short to split: smaller tiles
        return y, z, u, v

def get_inputs():
    return [torch.randn(M, K), torch.randn(3, M, K), torch.randn(3, K, N), torch.randn(N, K), torch.randn(M, 16),
            torch.randn(16, 9 * N)]

def get_init_inputs():
    return [K, N]
"""


class _Recorder:
    """Stands in for a jit kernel: records each launch's grid and keywords, then launches it."""

    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append({"grid": tuple(grid), **kwargs})
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_a_product_of_few_tiles_splits_its_k_loop(tmp_path):
    """An M x N output in fewer tiles than the GPU has SMs, over a long K: programs take K spans (PASS 1,
    partial products stored), then a program a tile sums its partials in a fixed order and runs the
    epilogue (PASS 2). Where K is short the tiles shrink instead (32 at least); a GPU whose SMs the
    tiles fill runs the single pass."""
    path = tmp_path / "split_k.py"
    path.write_text(HEADER + SPLIT_K_PRODUCTS)
    prob = load_problem(path)
    props = [p for p in propose_candidates(path) if p.strategy.startswith("matmul-epilogue")]
    assert props
    for p in props:
        for sms, shape in ((132, {}), (132, _odd(prob)), (1, {})):
            launches: list = []

            def patch(candidate, sms=sms, launches=launches):
                candidate._sm_count = lambda device: sms
                for name in [n for n in vars(candidate) if re.fullmatch(r"_mm\d_kernel", n)]:
                    setattr(candidate, name, _Recorder(getattr(candidate, name), launches))

            _run(p.source, prob, shape, 1, patch)
            passes = sorted(k["PASS"] for k in launches)
            if sms == 1:
                assert passes == [0, 0, 0, 0], (p.strategy, launches)
                continue
            assert passes == [0, 1, 1, 1, 2, 2, 2], (p.strategy, launches)  # the three long Ks split
            assert all(k["BLOCK_M"] >= 32 and k["BLOCK_N"] >= 32 for k in launches)
            assert all(k["grid"][2] > 1 for k in launches if k["PASS"] == 1)
            short = next(k for k in launches if k["PASS"] == 0)
            assert (short["BLOCK_M"], short["BLOCK_N"]) == (32, 32), short


def test_numbers_made_from_sizes_are_kernel_scalars(tmp_path_factory):
    """`* (1.0 / math.sqrt(k.size(-1)))` after a product had stayed a torch multiply (a kernel reading and
    writing the scores); such a number beside a tensor is now a cached 0-d tensor the kernels read."""
    _, props = _problem(tmp_path_factory, "size_numbers")
    fused = next(p for p in props if p.strategy.startswith("matmul-epilogue"))
    forward = fused.source.split("def forward")[-1]
    assert forward.count("_scalar(") == 4, forward  # 1/sqrt(d), n, y.size(1), y.size(2); n // 4 stays python
    assert not re.search(r"= \(?v\d+ [*/+-] v\d+\)?\n", forward), forward  # no tensor arithmetic left to torch


def test_families_cover_every_template(tmp_path_factory):
    strategies = {p.strategy.split("+split")[0] for name in PROBLEMS for p in _problem(tmp_path_factory, name)[1]}
    assert {"fused-elementwise", "row-softmax", "row-reduction", "matmul-epilogue", "library+tail",
            "row-topk", "row-scan"} <= strategies


def test_zeros_ones_and_full_like_are_values_in_the_kernel(tmp_path_factory):
    """torch.zeros_like / ones_like / full_like (an inf too) are filled in the kernel that reads them; each
    had been a torch call and the work around it two kernels."""
    _, props = _problem(tmp_path_factory, "ew_fills")
    forward = props[0].source.split("class ModelNew")[1]
    assert forward.count("= _ew") == 1 and "_like" not in forward, forward


def test_work_after_a_squeezed_reduction_joins_its_kernel(tmp_path_factory):
    """`x.sum(-1) * 2 + bias`: the bias lines up on the right of the (B, C) sums, and the row kernel takes
    it as a (B, C) view beside its rows; it had been an elementwise kernel of its own after the sums. The
    mean of the same rows, `x.mean(-1) - y`, is written by that kernel too (x read once)."""
    _, props = _problem(tmp_path_factory, "squeezed_rows")
    forward = props[0].source.split("class ModelNew")[1]
    assert "_ew" not in forward and forward.count("= _row") == 1, forward
    assert re.search(r"v\d+, v\d+ = _row0\(x, ", forward), forward


def test_work_on_either_side_of_a_view_that_adds_unit_dims_joins_the_kernel(tmp_path_factory):
    """`softmax((x * 2 + 1).unsqueeze(1)).squeeze(1) * w` and an InstanceNorm2d of x.unsqueeze(1).unsqueeze(1)
    whose squeezed output is added to and scaled by y: the work before the unsqueeze is the softmax's prologue,
    the work after the squeeze each row kernel's epilogue (w and y viewed at the rows' shape); it had been
    five kernels, two of them elementwise. A total squeezed to 0-d and scaled is its reduction's too, and so
    is `y - y.amax(-1).view(B, 1)` (the view is the keepdim max). The outputs are the module's
    (test_candidates_match_reference runs them at the odd shape too)."""
    path, props = _problem(tmp_path_factory, "unit_views")
    forward = props[0].source.split("class ModelNew")[1]
    assert "_ew" not in forward and forward.count("= _row") == 4, forward
    assert "y.reshape(y.shape[0], 1, 1, y.shape[1])" in forward and ".reshape(())" in forward, forward
    assert re.search(r"(v\d+) = self\.w\n\s+(v\d+) = \1\.reshape\(1, 1, \1\.shape\[0\]\)", forward), forward
    prob = load_problem(path)
    _run(_long_rows(props[0].source, 4, 4, 1), prob, {}, 30)  # rows of 24 in chunks of 4: looped
    _run(_long_rows(props[0].source, 4, 4, 64), prob, {}, 31)  # and split over programs


def test_a_layer_norm_after_a_group_norm_is_one_row_kernel_over_its_rows(tmp_path_factory):
    """F.layer_norm(y, y.shape[-2:]) of a group norm's output: the normalized shape is taken in forward (it
    had failed the whole lowering), and the layer norm's ops are its own row kernel's, not done in the group
    norm's layout reading a view of its mean (six kernels where two do)."""
    path, props = _problem(tmp_path_factory, "layer_norm_after_group_norm")
    forward = props[0].source.split("class ModelNew")[1]
    assert "_ew" not in forward and forward.count("= _row") == 2, forward
    _run(_long_rows(props[0].source, 4, 4, 64), load_problem(path), {}, 32)  # looped and split rows


def test_a_linear_of_a_reductions_result_is_a_product_template(tmp_path_factory):
    """A squeeze-and-excite block: fc1 reads the spatial means (a reduction's squeezed result). It had been
    left to torch (and its relu a kernel of its own); now both linears are product kernels with their
    activations in the epilogue."""
    _, props = _problem(tmp_path_factory, "squeeze_excite")
    forward = props[0].source.split("class ModelNew")[1]
    assert forward.count("= _mm") == 2 and "self.fc1(" not in forward and "linear(" not in forward, forward


def test_a_linears_bias_alone_runs_in_the_library_call(tmp_path_factory, tmp_path):
    """A classifier head's bias, with no other work after it, is cuBLAS's (F.linear with the bias, as
    torch.compile's addmm), not a kernel that reads and writes the product again; a Linear that is the
    whole model keeps its bias kernel, since a candidate must run a kernel of its own."""
    _, props = _problem(tmp_path_factory, "pooled_head")
    library = next(p for p in props if p.strategy == "library+tail")
    forward = library.source.split("class ModelNew")[1]
    assert re.search(r"functional\.linear\(\w+, \w+, \w+\)", forward) and forward.count("= _") == 1, forward
    path = tmp_path / "linear_alone.py"
    path.write_text(HEADER + "class Model(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.fc = nn.Linear(8, 4)\n\n    def forward(self, x):\n        return self.fc(x)\n\n"
                    "def get_inputs():\n    return [torch.randn(3, 8)]\n\ndef get_init_inputs():\n    return []\n")
    library = next(p for p in propose_candidates(path) if p.strategy.startswith("library+tail"))
    assert "= _ew" in library.source.split("class ModelNew")[1]


@pytest.mark.parametrize("name", ["conv_global_mean", "conv_transpose_global_pool", "conv1d_dilated_sum"])
def test_a_global_pool_of_a_convolution_never_computes_the_convolution(tmp_path_factory, name):
    """A convolution is linear: the mean or sum of its outputs over every spatial dim is, per input
    channel and tap, the sum of the inputs the tap reads (one pass over x) times the weight. Each
    candidate takes that way, and its other work joins the product's or the tail's kernel."""
    _, props = _problem(tmp_path_factory, name)
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert "_tap_sums(" in forward and "conv" not in forward.replace("self.conv", "").replace("_conv", ""), \
            forward
        assert "def _conv" not in p.source, p.strategy
    # the per-channel work (a batch norm's too) and a softmax over the pooled channels join the product's
    # kernel or one kernel after it: a kernel a convolution beside the tap sums
    launches = {"conv_global_mean": 2, "conv_transpose_global_pool": 2, "conv1d_dilated_sum": 3}[name]
    calls = [re.findall(r"= _(?!prepared\()", p.source.split("class ModelNew")[1]) for p in props]
    assert min(map(len, calls)) == launches  # a weight made once per model is no launch of the forward
    if name == "conv_transpose_global_pool":  # its weight's (CO, CI·taps) copy is made once, not each forward
        for p in props:
            forward = p.source.split("class ModelNew")[1]
            assert "_tap_weight, " in forward and ".transpose(0, 1)" not in forward, forward


def _helpers(*calls: str) -> dict:
    """The namespace of a candidate file whose forward makes these calls: HELPERS and the torch-level
    helpers the calls need (codegen.called_helpers)."""
    from kevolve.builtin.codegen import HELPERS, called_helpers

    ns: dict = {}
    exec("\n\n".join(["import math\nimport torch\nimport triton\nimport triton.language as tl", HELPERS,
                       *called_helpers(list(calls))]), ns)
    return ns


def test_an_average_pool_that_tiles_a_convolution_is_folded_into_its_weight(tmp_path_factory):
    """AvgPool2d(2) of conv(x)·BN·2 and avg_pool1d(·, 3) of a strided, dilated conv: each a convolution
    with the pool in its weight (stride times the window; no pool kernel, no full-size output)."""
    _, props = _problem(tmp_path_factory, "conv_avg_pools_folded")
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert "_pooled_weight" in forward and "avg_pool" not in forward and not re.search(r"def _pool\d", p.source)


@pytest.mark.parametrize("dims, stride, padding, dilation, window", [
    (1, 2, 1, 2, 3), (2, (1, 2), (1, 0), (2, 1), (2, 3)), (3, 1, 1, 1, 2)])
def test_a_pooled_weight_convolves_as_the_pool_of_the_convolution(dims, stride, padding, dilation, window):
    ns = _helpers("_pooled_weight(w)")
    torch.manual_seed(dims)
    x, w = torch.randn((2, 3) + (13, 11, 9)[:dims]), torch.randn((4, 3) + (3, 2, 3)[:dims])
    conv, pool = getattr(F, f"conv{dims}d"), getattr(F, f"avg_pool{dims}d")
    cfg, pool_cfg = (stride, padding, dilation, 1), (window, window, 0, 1, None)
    want = pool(conv(x, w, None, stride, padding, dilation), window)
    got = conv(x, ns["_pooled_weight"](w, cfg, pool_cfg, dims), None, *ns["_pooled_geometry"](cfg, pool_cfg, dims))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_an_average_pool_over_a_products_features_pools_the_weight(tmp_path_factory):
    """avg_pool1d over the last dim of x @ W + b (a 3-D x), of a Linear viewed (B, 1, N), and of x @ (W · 2):
    each a product with the weight's and the bias's windows averaged (no pool kernel, no N-wide
    product); the parameters' made once per model, the computed weight's every forward."""
    _, props = _problem(tmp_path_factory, "linear_pooled_features")
    assert props
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert not re.search(r"def _pool\d", p.source) and "avg_pool" not in forward, p.strategy
        assert forward.count("_prepared(self._kevolve_prepared") == 4, p.strategy  # 2 weights, 2 biases
        assert re.search(r"= _window_means\(v\d+, v\d+, 1\)", forward), p.strategy  # W · 2: (K, N), its columns


def test_an_average_pool_of_a_transposed_convolution_is_a_convolution_of_its_input(tmp_path_factory):
    """AvgPool3d(2) of ConvTranspose3d(stride 2) and avg_pool1d(·, 3) of a dilated stride-1 one: each a
    convolution of the input with the pool in its weight, no transposed convolution, no pool kernel, no
    output at the upsampled size; the 2-D one pooled twice folds both pools."""
    _, props = _problem(tmp_path_factory, "conv_transpose_avg_pools")
    assert props
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert forward.count("_pooled_transposed_weight") == 3 and "conv_transpose" not in forward, p.strategy
        assert not re.search(r"def _pool\d", p.source) and "avg_pool" not in forward, p.strategy
        assert re.search(r"_prepared\([^\n]*_pooled_weight, v\d+, v\d+, v\d+, 2\)", forward), p.strategy
        if "_conv0(" in forward:  # the folded weight, made once, is packed for the implicit GEMM once too
            assert re.search(r"= _conv0\([^\n]*self\._kevolve_prepared\)", forward), forward


@pytest.mark.parametrize("dims, kernel, stride, padding, dilation, extra, window", [
    (3, 3, 2, 1, 1, 0, 2), (3, 3, 2, 1, 1, 1, 2), (2, (3, 2), (2, 1), (1, 0), 1, (1, 0), (2, 3)),
    (1, 4, 1, 2, 2, 0, 3), (1, 1, 1, 2, 1, 0, 2), (1, 3, 2, 0, 1, 1, 4), (2, 2, 3, 2, (1, 2), 0, 3)])
def test_a_pooled_transposed_weight_convolves_as_the_pool_of_the_transposed_convolution(
        dims, kernel, stride, padding, dilation, extra, window):
    """Padded (or cropped) as planned, the input convolved with the pooled weight is the pool of the
    transposed convolution, exactly (float64): windows 1 to 2 strides wide, output padding, dilation,
    offsets starting after 0 (stride 1, padding 2, one tap: the input cropped)."""
    ns = _helpers("_pooled_transposed_weight(w)")
    torch.manual_seed(dims)
    taps = kernel if isinstance(kernel, tuple) else (kernel,) * dims
    x = torch.randn((2, 3) + (7, 6, 5)[:dims], dtype=torch.float64)
    w = torch.randn((3, 4) + taps, dtype=torch.float64)
    upsample, pool, conv = (getattr(F, f"{op}{dims}d") for op in ("conv_transpose", "avg_pool", "conv"))
    cfg, pool_cfg = (stride, padding, dilation, 1, extra), (window, window, 0, 1, None)
    want = pool(upsample(x, w, None, stride, padding, extra, 1, dilation), window)
    pad, geometry = ns["_transposed_pool_plan"](x.shape[2:], w.shape[2:], cfg, pool_cfg, dims)
    got = conv(ns["_padded_input"](x, pad), ns["_pooled_transposed_weight"](w, cfg, pool_cfg, dims), None, *geometry)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_the_helpers_a_candidate_file_may_hold_define_each_name_once():
    """Every Python helper text the lowering can put into one candidate file (HELPERS and the parts added
    when used) defines names no other defines: a second `_padded` would silently replace the first."""
    import importlib
    import pkgutil

    import kevolve.builtin as builtin

    texts: dict[str, str] = {}
    for info in pkgutil.iter_modules(builtin.__path__):
        module = importlib.import_module(f"kevolve.builtin.{info.name}")
        for name, value in vars(module).items():
            for text in value.values() if name.isupper() and isinstance(value, dict) else [value]:
                if name.isupper() and isinstance(text, str) and "def " in text:
                    texts.setdefault(text, f"{info.name}.{name}")
    whole = [t for t in texts if not any(t != other and t in other for other in texts)]  # parts of others: once
    defined: dict[str, list[str]] = {}
    for text in whole:
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.setdefault(node.name, []).append(texts[text])
    assert len(whole) >= 8 and "_prepared" in defined and "_window_means" in defined
    assert {n: where for n, where in defined.items() if len(where) > 1} == {}


def test_a_mean_over_some_of_a_convolutions_dims_is_a_lower_rank_convolution(tmp_path_factory):
    """ConvTranspose3d then a mean over depth, Conv2d with a bias then a sum over W (the mean times W'),
    Conv3d then a mean over (H, W), Conv2d (no bias) then a sum over H: each its input's tap sums over
    those dims and a 2-D, 1-D, 1-D, 1-D convolution."""
    _, props = _problem(tmp_path_factory, "conv_partial_means")
    assert props
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert forward.count("= _partial_tap_sums(") == 4 and "conv3d" not in forward, p.strategy
        assert "conv_transpose3d" not in forward and "_tap_matrix" in forward, p.strategy


def test_a_sum_of_a_biased_convolution_is_the_mean_times_the_positions(tmp_path_factory):
    """Sums over all, one or a run of spatial dims through a bias, a batch norm and shifts: each the
    folded mean times the count of positions summed (at run time); no convolution at full rank."""
    _, props = _problem(tmp_path_factory, "conv_biased_sums")
    assert props
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert forward.count("_memo(_output_count, ") == 3, p.strategy
        assert "conv2d(" not in forward and "conv_transpose3d(" not in forward, p.strategy
        assert len(re.findall(r"= _conv\d+\(", forward)) <= 2, p.strategy  # b's 1-D one and c's 2-D one, if any


@pytest.mark.parametrize("transposed, size, kernel, run, stride, padding, dilation, extra", [
    (True, (4, 6, 7), 3, (0, 1), (1, 2, 2), 1, 1, (0, 1, 1)), (False, (5, 6, 7), (2, 3, 2), (1, 2), 2, 1, (1, 2, 1), 0),
    (False, (6, 7), (3, 2), (0, 1), (2, 1), (1, 0), (1, 2), 0), (True, (6, 7), 3, (1, 1), 2, 1, 2, 1),
    (False, (5, 6, 7), 2, (0, 2), 1, "same", 1, 0)])
def test_partial_tap_sums_convolved_are_a_convolutions_partial_sums(transposed, size, kernel, run, stride, padding,
                                                                   dilation, extra):
    """Tap sums over a leading or trailing run of spatial dims (the first `run[1]` from `run[0]`), convolved
    over the rest with the joined weight, against torch's convolution summed over those dims, float64 (a
    mean's 1 / count is float32's)."""
    ns = _helpers("_partial_tap_sums(x)")
    d, (first, count) = len(size), run
    taps = kernel if isinstance(kernel, tuple) else (kernel,) * d
    x = torch.randn((2, 3) + size, dtype=torch.float64)
    w = torch.randn(((3, 4) if transposed else (4, 3)) + taps, dtype=torch.float64)
    cfg = (stride, padding, dilation, 1) + ((extra,) if transposed else ())
    full = getattr(F, f"conv_transpose{d}d" if transposed else f"conv{d}d")
    y = full(x, w, None, stride, padding, extra, 1, dilation) if transposed else full(x, w, None, stride, padding,
                                                                                        dilation)
    dims = tuple(range(2 + first, 2 + first + count))
    kept = full.__name__.replace(str(d), str(d - count))
    for mean in (False, True):
        hits = ns["_tap_matrix"](x.shape[2:], w.shape[2:], cfg, transposed, mean, tuple(j - 2 for j in dims), "cpu")
        sums = ns["_partial_tap_sums"](x, hits.double(), first, count)
        geometry = ns["_kept_geometry"](cfg, d, first, count, transposed)
        w2 = ns["_partial_tap_weight"](w, transposed, first, count)
        args = (geometry[0], geometry[1], geometry[4], 1, geometry[2]) if transposed else geometry
        got = getattr(F, kept)(sums, w2, None, *args)
        want = y.mean(dims) if mean else y.sum(dims)
        torch.testing.assert_close(got, want, atol=1e-6 if mean else 1e-10, rtol=1e-6 if mean else 1e-10)


def test_a_pool_of_a_pool_whose_windows_tile_is_one_pool(tmp_path_factory):
    """MaxPool3d(2) then MaxPool3d((1, 3, 2)), and avg_pool2d(2) then avg_pool2d((3, 2)): one pool kernel
    each with the windows' product; max pools after a 3-wide stride-2 one stay two."""
    _, props = _problem(tmp_path_factory, "stacked_pools")
    assert props
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert forward.count("= _memo(_stacked_pool_geometry, ") == 2, p.strategy
        assert len(re.findall(r"def _pool\d+_kernel", p.source)) == 4, p.strategy


def test_a_transposed_weight_is_a_linears_operand_not_a_copy(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "matmul_transposed_weight")
    fwd = props[0].source.split("class ModelNew")[1]
    assert props[0].strategy.startswith("matmul-epilogue") and ".T" not in fwd and ".t()" not in fwd, fwd
    assert "transpose" not in fwd and "matmul" not in fwd, fwd


def test_a_bug_in_the_lowering_costs_the_templates_not_the_session(tmp_path_factory, monkeypatch, caplog):
    import kevolve.builtin as builtin

    path, _ = _problem(tmp_path_factory, "ew_broadcast")

    def broken(model, inputs, **options):
        raise KeyError("some op no test had")

    monkeypatch.setattr(builtin, "lower_module", broken)
    assert propose_candidates(path) == []
    assert "the lowering failed (KeyError" in caplog.text


def test_a_constant_made_a_tensor_in_forward_joins_the_matmuls_epilogue(tmp_path_factory):
    """torch.tensor(self.constant, device=x.device, dtype=x.dtype): a 0-d value built at run time from
    the model's attribute (so it follows the init inputs), and x.device, read by nothing else then,
    does not keep the matmul's output out of its epilogue."""
    path, props = _problem(tmp_path_factory, "linear_min_constant")
    assert props[0].strategy == "matmul-epilogue" and "mm:4 ops" in props[0].notes, props[0].notes
    assert "getattr(self, 'constant', 0.25)" in props[0].source
    prob = load_problem(path)
    _run(props[0].source, prob, {}, 22)
    ns: dict = {}
    exec(compile(props[0].source, "candidate.py", "exec"), ns)
    inst = instantiate(prob, {}, seed=23)
    ref = type(inst.model)(20, 11, -0.5).eval()  # another constant than the traced one
    model = ns["ModelNew"](20, 11, -0.5).eval()
    model.load_state_dict(ref.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model(inst.inputs[0]), ref(inst.inputs[0]), atol=1e-4, rtol=1e-4)


def test_global_pools_and_norms_are_reductions_not_torch_calls(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "norms_and_global_pools")
    fwd = props[0].source.split("class ModelNew")[1]
    assert "self.gap(" not in fwd and "self.gmp(" not in fwd and "adaptive" not in fwd, fwd
    assert "norm(" not in fwd and fwd.count("= _ew") <= 1, fwd  # at most one elementwise kernel


def test_mixed_graph_is_split(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "mixed_split")
    src = props[0].source
    assert "torch.sort" in src and src.count("@triton.jit") >= 2


def test_long_rows_use_the_looped_kernel(tmp_path_factory):
    path, props = _problem(tmp_path_factory, "layernorm")
    src = props[0].source
    src = re.sub(r"ROW(\d+)_MAX_SINGLE_PASS = \d+", r"ROW\1_MAX_SINGLE_PASS = 8", src)
    src = re.sub(r"ROW(\d+)_LOOP_BLOCK_N = \d+", r"ROW\1_LOOP_BLOCK_N = 16", src)
    prob = load_problem(path)
    _run(src, prob, {}, 3)
    path, props = _problem(tmp_path_factory, "reductions")
    src = re.sub(r"ROW(\d+)_MAX_SINGLE_PASS = \d+", r"ROW\1_MAX_SINGLE_PASS = 4", props[0].source)
    src = re.sub(r"ROW(\d+)_LOOP_BLOCK_N = \d+", r"ROW\1_LOOP_BLOCK_N = 4", src)
    _run(src, load_problem(path), {}, 4)


def test_a_matmul_with_a_diagonal_matrix_scales_the_other_operand(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "diag_matmul")
    fwd = props[0].source.split("class ModelNew")[1]
    assert len(props) == 1 and "diag" not in fwd and "_mm" not in fwd and fwd.count("= _ew") == 2, fwd


def test_a_product_cut_to_a_triangle_skips_the_tiles_outside_it(tmp_path_factory):
    """tril / triu of a matmul is the template's own mask: tiles outside the triangle run no product.
    With 8x8 tiles (3 x 3 of them at N = 21) the skip and the mask across tiles are both exercised."""
    path, props = _problem(tmp_path_factory, "tri_products")
    template = next(p for p in props if p.strategy.startswith("matmul-epilogue"))
    fwd = template.source.split("class ModelNew")[1]
    assert "tril" not in fwd and "triu" not in fwd and template.source.count("k_tiles = 0") == 3, fwd
    small = re.sub(r"MM(\d+)_BLOCK_([MNK]) = \d+", r"MM\1_BLOCK_\2 = 8", template.source)
    _run(small, load_problem(path), {}, 7)
    library = next(p for p in props if p.strategy.startswith("library"))
    assert "torch.tril(torch.matmul(" in library.source


def test_a_sum_over_a_products_last_dim_is_a_matrix_vector_product(tmp_path_factory):
    """The sum and the mean (a and b) are matrix-vector products; c's shift by a (1, 1) value adds N times
    to a sum, so its product is computed (a fold taking the value for a vector along the dim added it once)."""
    _, props = _problem(tmp_path_factory, "reduced_products")
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert len(re.findall(r"= _mm\d+\(|torch\.matmul\(", forward)) == 1, p.strategy


def test_a_product_read_elsewhere_keeps_its_reduction_in_the_row_kernel(tmp_path_factory):
    """Where the product is needed anyway (a hand-written layer norm after a Linear), its mean is not
    a matrix-vector product of its own: it stays paired with the variance in one row pass."""
    path, props = _problem(tmp_path_factory, "layer_norm_by_hand")
    fwd = props[0].source.split("class ModelNew")[1]
    assert fwd.count("= _") == 2 and "= _mm0(" in fwd and "= _row1(" in fwd, fwd  # the product, then the norm
    _run(props[0].source, load_problem(path), {}, 3)


def test_scaled_dot_product_attention_is_the_flash_kernel(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "sdpa")
    fwd = props[0].source.split("class ModelNew")[1]
    assert props[0].strategy.startswith("flash-attention") and fwd.count("_attn") == 2, fwd
    # the default scale, at run time from q's shape on the host: no device tensor made for it each forward
    assert "scaled_dot_product_attention" not in fwd and "torch.full(" not in fwd and "math.sqrt(d)" in props[0].source


def test_a_products_permuted_residual_is_read_in_place(tmp_path_factory):
    """x + fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2): the product's epilogue reads the NCHW x through
    its strides, where the wrapper had copied its permuted view contiguous; the copy is gone."""
    path, props = _problem(tmp_path_factory, "permuted_residual_product")
    fused = next(p for p in props if p.strategy.startswith("matmul-epilogue"))
    assert re.search(r"e\d = _readable\(e\d, full, ", fused.source), fused.source
    copies: list = []

    def patch(candidate):
        real = candidate._readable

        def readable(t, *a):
            read = real(t, *a)
            copies.append(read is not t)
            return read

        candidate._readable = readable

    _run(fused.source, load_problem(path), {}, 1, patch)
    assert copies == [False], copies


def test_an_expand_read_by_arithmetic_is_broadcast_in_the_kernel(tmp_path_factory):
    """`x * y.expand_as(x)` had copied y out to x's size (the kernel reads its operands contiguous); the
    kernel broadcasts y itself. Beside a number the expand is the result's shape and stays."""
    _, props = _problem(tmp_path_factory, "expanded_operands")
    fwd = props[0].source.split("def forward")[1]
    assert fwd.count(".expand(") == 1 and "expand_as" not in fwd and "broadcast_to" not in fwd, fwd


def test_a_convolution_centered_by_its_mean_takes_the_mean_from_its_input(tmp_path_factory):
    """y - y.mean((2, 3), keepdim=True) of a convolution: the mean is the input's tap sums times the weight
    (one read of the smaller input), the subtraction in the convolution's kernel; a convolution whose
    input is larger than its output (stride 2, 2 of 3 channels) keeps its output's reduction."""
    _, props = _problem(tmp_path_factory, "conv_centered")
    fwd = next(p for p in props if "_conv" in p.source).source.split("def forward")[1]
    assert fwd.count("_tap_sums(x") == 1 and fwd.count("= _row") == 1, fwd


def test_a_sum_or_mean_over_a_convolutions_channels_computes_one_channel(tmp_path_factory):
    """A convolution is linear in its weight: its channels' mean (through its bias, shifts and scalings
    by numbers) is the convolution of the weight's mean over output channels. A per-channel scaling in
    between is not folded: that output keeps the whole convolution."""
    _, props = _problem(tmp_path_factory, "conv_channel_means")
    assert props
    for p in props:
        fwd = p.source.split("def forward")[1]
        assert fwd.count("_channel_reduced_weight, ") == 2, (p.strategy, fwd)
        assert len(re.findall(r"conv2d\(|conv_transpose1d\(|_conv\d+\(", fwd)) == 3, (p.strategy, fwd)


def test_means_over_whole_channels_of_a_group_norm_never_write_it(tmp_path_factory):
    """A channel's mean of a group norm's output is the norm of the channel's mean, and the group's
    statistics come from its channels': one pass over the input, no buffer of its size allocated."""
    path, props = _problem(tmp_path_factory, "group_norm_channel_means")
    prob = load_problem(path)
    assert props
    for p in props:
        sizes: list[int] = []

        def patch(candidate, sizes=sizes):
            real = candidate.torch

            class Recording:  # the candidate's torch, its allocations counted
                def __getattr__(self, name):
                    return getattr(real, name)

                def empty(self, *shape, **kw):
                    t = real.empty(*shape, **kw)
                    sizes.append(t.numel())
                    return t

            candidate.torch = Recording()

        _run(p.source, prob, {}, 1, patch)
        c = prob.constants
        assert sizes and max(sizes) < c["B"] * c["C"] * c["H"] * c["W"], (p.strategy, sizes)


def test_products_with_a_side_of_one_are_reductions(tmp_path_factory):
    """A matmul tile pads a side of one to 16 or 32, wasting the rest of its work: a @ v is a row
    reduction, one row times a weight a row (Linear) or column reduction, an outer product the
    multiply in the elementwise kernel; no product kernel is left."""
    _, props = _problem(tmp_path_factory, "thin_products")
    assert props and all(p.family in ("reduction", "mixed") for p in props)
    fwd = props[0].source.split("def forward")[1]
    assert not re.search(r"_mm|matmul|bmm|@|torch\.(mv|addmv|dot|outer)|\.(mv|dot)\(", fwd), fwd


def test_einsums_are_matmul_kernels_and_vector_products_reductions(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "einsum_vectors_glu")
    fwd = props[0].source.split("class ModelNew")[1]
    assert "einsum" not in fwd and "matmul" not in fwd and "glu" not in fwd, fwd
    assert fwd.count("= _mm") == 2 and fwd.count("= _row") == 2, fwd  # w @ v and v @ w.T: row reductions


def test_round_takes_ties_to_even_as_torch_does(tmp_path_factory):
    _, props = _problem(tmp_path_factory, "small_ops")
    candidate = types.ModuleType("candidate")
    exec(compile(props[0].source, "candidate.py", "exec"), candidate.__dict__)
    x, y = torch.zeros(1, 37), torch.zeros(1, 37)  # ties of x * 4, signed zeros, tiny values, NaN
    x[0, :8] = torch.tensor([0.125, 0.375, 0.625, -0.125, -0.375, 2.0**22 + 0.25, -(2.0**23) - 2.0, float("nan")])
    y[0, :8] = torch.tensor([0.0, -0.0, 3.5, -2.5, 1e-30, -1e-30, float("inf"), float("nan")])
    model = candidate.ModelNew().eval()
    with torch.no_grad():
        r = model(x, y, 1.5)[0]
        ref = torch.round(x * 4.0) + x.floor() - torch.ceil(y) + torch.trunc(x * 3.0) + torch.sign(y)
    torch.testing.assert_close(r, ref, equal_nan=True, atol=0, rtol=0)


def test_tanh_and_selu_keep_their_relative_precision_near_zero(tmp_path_factory):
    """tanh(0.01) and selu(-0.01) to a few ulps: 2 * sigmoid(2x) - 1 and exp(x) - 1 were 1e-5 off relative
    there, which the harness's small-input trial rejects; large values saturate, NaN stays NaN."""
    _, props = _problem(tmp_path_factory, "small_ops")
    candidate = types.ModuleType("candidate")
    exec(compile(props[0].source, "candidate.py", "exec"), candidate.__dict__)
    y = torch.randn(6, 37) * 10.0 ** torch.randint(-8, 2, (6, 37)).float()
    y[0, :4] = torch.tensor([30.0, -1e4, float("inf"), float("nan")])
    with torch.no_grad():
        t, s = candidate.ModelNew().eval()(torch.randn(6, 37), y, 1.5)[5:]
    assert torch.isnan(t[0, 3]) and torch.equal(t[0, :3], torch.tensor([1.0, -1.0, 1.0]))
    for out, ref in ((t, torch.tanh(y.double())), (s, F.selu(y.double()))):
        rel = ((out.double() - ref).abs() / ref.abs())[1:]
        assert rel.max() < 1e-6, rel.max()


def test_topk_merges_the_chunks_of_a_long_row(tmp_path_factory):
    path, props = _problem(tmp_path_factory, "topk")
    src = props[0].source
    assert "_topk" in src and "torch.topk" not in src
    src = re.sub(r"TOPK(\d+)_BLOCK_N = \d+", r"TOPK\1_BLOCK_N = 8", src)  # 37 columns: 5 chunks
    _run(src, load_problem(path), {}, 5)


@pytest.mark.parametrize("name, kernels", [("row_scan", 2), ("scans_more", 8)])
def test_a_row_scan_carries_each_chunks_total_into_the_next(tmp_path_factory, name, kernels):
    """One kernel a scan, the work before and after it fused in (the mask, the scale, the flips of a
    suffix sum, cummax - cummin's subtraction), right over several chunks: forwards and reversed. Scans
    down the columns carry from chunk to chunk too, and over split rows from span to span."""
    path, props = _problem(tmp_path_factory, name)
    src = props[0].source
    assert props[0].strategy.startswith("row-scan") and src.count("_kernel[(") == kernels, src
    assert not re.search(r"torch\.(cum|flip)|\.flip\(", src.split("class ModelNew")[1])
    src = re.sub(r"SCAN(\d+)_BLOCK_N = \d+", r"SCAN\1_BLOCK_N = 8", src)  # rows of 37: 5 chunks
    _run(src, load_problem(path), {}, 6)
    if "_cscan" in src:  # 6 rows: chunks of 2, split in 3 spans
        src = re.sub(r"CSCAN(\d+)_BLOCK_R = \d+", r"CSCAN\1_BLOCK_R = 2", src)
        _run(re.sub(r"CSCAN(\d+)_SPLIT_PER_SM = \d+", r"CSCAN\1_SPLIT_PER_SM = 64", src), load_problem(path), {}, 7)


@pytest.mark.parametrize("name", ["ew_broadcast", "softmax_pair", "linear_epilogue", "conv_tail"])
def test_mutations_stay_correct(tmp_path_factory, name):
    path, props = _problem(tmp_path_factory, name)
    prob = load_problem(path)
    variants = mutate(props[0].source)
    assert variants
    for v in variants:
        assert v.source != props[0].source and v.notes
        _run(v.source, prob, {}, 5)


LLM_STYLE = '''
import torch
import triton
import triton.language as tl

@triton.autotune(configs=[triton.Config({"BLOCK_SIZE": 1024}, num_warps=4, num_stages=2)], key=["n"])
@triton.jit
def _k(x_ptr, y_ptr, n, BLOCK_SIZE: tl.constexpr):
    pass

def run(x, y):
    _k[(1,)](x, y, x.numel(), BLOCK_SIZE=512, num_warps=8)
'''


def test_mutate_finds_tunables_in_foreign_source():
    out = mutate(LLM_STYLE)
    notes = " ".join(p.notes for p in out)
    for what in ("BLOCK_SIZE 1024 -> 2048", "BLOCK_SIZE 512 -> 256", "num_warps 4 -> 8", "num_warps 8 -> 16",
                 "num_stages 2 -> 3"):
        assert what in notes
    assert all(p.source.count("\n") == LLM_STYLE.count("\n") for p in out)
    assert mutate("x = (") == []
    # Below the untuned mark (code the timed shape never runs) nothing is a tunable.
    from kevolve.builtin.mutate import UNTUNED_MARK
    marked = LLM_STYLE.replace("\n@triton.jit", f"\n{UNTUNED_MARK}\n@triton.jit", 1)
    assert marked != LLM_STYLE
    marked_notes = " ".join(p.notes for p in mutate(marked))
    assert "BLOCK_SIZE 1024 -> 2048" in marked_notes and "num_warps 4 -> 8" in marked_notes
    assert "BLOCK_SIZE 512" not in marked_notes and "num_warps 8" not in marked_notes


def test_inductors_small_block_sizes_are_tunable():
    """A compiler seed's reduction launched with XBLOCK = 8 (mean over a middle dim, timed 40% slower than
    torch.compile on an H200) had no mutation: block sizes under 64 were out of range."""
    src = ("TRITON_RED_FUSED_MEAN_0_XBLOCK = 8\n\n\ndef _launch(a, n):\n    XBLOCK = TRITON_RED_FUSED_MEAN_0_XBLOCK\n"
           "    k[(n // XBLOCK, 1, 1)](a, n, XBLOCK=XBLOCK, R0_BLOCK=512, num_warps=16, num_stages=1)\n")
    notes = " ".join(p.notes for p in mutate(src))
    for what in ("XBLOCK 8 -> 4", "XBLOCK 8 -> 16", "R0_BLOCK 512 -> 256", "num_warps 16 -> 8"):
        assert what in notes, notes


def test_attention_is_one_flash_kernel_with_a_runtime_scale(tmp_path_factory):
    """Written-out attention becomes one kernel that never writes the scores; the scale is read from
    the model at run time, and the kernel is right at head sizes it was not traced with."""
    path, props = _problem(tmp_path_factory, "attention")
    flash, split = props
    assert (flash.strategy, split.strategy) == ("flash-attention", "flash-attention+3xtf32")
    assert split.source == flash.source.replace("ATTN0_TF32X3 = 0", "ATTN0_TF32X3 = 1")
    forward = flash.source.split("class ModelNew")[1]
    assert "self, 'scale'" in forward and "_attn0(q, k, v," in forward and "matmul" not in forward
    prob = load_problem(path)
    _run(flash.source, prob, {"D": 16, "S": 33}, 6)
    _run(flash.source, prob, {"B": 1, "H": 2, "D": 4, "S": 5}, 7)
    path, props = _problem(tmp_path_factory, "causal_attention")
    assert [p.strategy for p in props] == ["flash-attention", "flash-attention+3xtf32"]
    assert "CAUSAL=True" in props[0].source
    _run(props[0].source, load_problem(path), {"S": 70, "D": 5}, 8)  # keys in two blocks, the diagonal inside


def test_a_model_that_runs_other_ops_at_the_small_sizes_gets_no_template(tmp_path, caplog):
    """Its ops chosen by a size over a threshold: the trace at the shrunk sizes (sigmoid) is not the
    program at its own (relu). Templates of it would pass the CPU checks and be wrong at the real size."""
    path = tmp_path / "threshold_branch.py"
    path.write_text(HEADER + PROBLEMS["threshold_branch"])
    with caplog.at_level("WARNING", logger="kevolve"):
        assert propose_candidates(path) == []
    assert "branches on its sizes" in caplog.text


def test_a_unit_dim_that_only_the_shrunk_sizes_have_is_traced_again_larger(tmp_path):
    """A channel shuffle whose channels per group the first shrink makes 1 (a view adding a unit dim, to the
    lowering): the trace is made again at larger sizes, where it is the problem's own program."""
    path = tmp_path / "channel_shuffle.py"
    path.write_text(HEADER + "B = 2\nC = 256\nG = 128\nS = 8\n\nclass Model(nn.Module):\n"
                    "    def forward(self, x):\n        b, c, h, w = x.size()\n"
                    "        x = torch.relu(x).view(b, G, c // G, h, w).transpose(1, 2).contiguous()\n"
                    "        return x.view(b, -1, h, w) * 2.0\n\n"
                    "def get_inputs():\n    return [torch.randn(B, C, S, S)]\n\n"
                    "def get_init_inputs():\n    return []\n")
    props = propose_candidates(path)
    assert props
    _run(props[0].source, load_problem(path), {}, 0)


def test_gpt_style_attention_with_a_mask_buffer_is_one_causal_flash_kernel(tmp_path_factory):
    """minGPT's form: the causal mask a tril(ones) buffer sliced to the sequence and compared to 0, the
    scale 1/math.sqrt(k.size(-1)), a dropout (eval: nothing) before the product with v. It traces, and
    the attention is one causal flash kernel with the scale computed from the size at run time."""
    path, props = _problem(tmp_path_factory, "gpt_attention")
    assert props, "no template"
    for p in props:
        forward = p.source.split("class ModelNew")[1]
        assert "CAUSAL=True" in p.source and "masked_fill" not in forward and "softmax" not in forward, p.strategy
        assert "math.sqrt(" in forward
    prob = load_problem(path)
    for p in props:
        _run(p.source, prob, {"T": 70, "C": 12}, 9)  # keys in two blocks; head size 6, not the traced 12


SCALED_CHAIN = HEADER + """
N = 300

class Model(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return torch.sigmoid(x * self.scale) + 1.0

def get_inputs():
    return [torch.randn(N)]

def get_init_inputs():
    return [1.5]
"""


def test_a_models_number_is_a_device_tensor_made_once_per_value(tmp_path, monkeypatch):
    """self.scale reaches the kernel as a 0-d tensor. Made each forward, its fill kernel would cost as
    much as a small problem's own kernel; it is made once per value, and a changed scale is read."""
    path = tmp_path / "scaled_chain.py"
    path.write_text(SCALED_CHAIN)
    props = propose_candidates(path)
    assert props
    candidate = types.ModuleType("candidate")
    exec(compile(props[0].source, "candidate.py", "exec"), candidate.__dict__)
    model, x = candidate.ModelNew(1.5), torch.randn(300)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch.sigmoid(x * 1.5) + 1.0)
        made = []
        full = torch.full
        monkeypatch.setattr(torch, "full", lambda *a, **k: made.append(a) or full(*a, **k))
        model(x)
        assert made == []  # the same value: the tensor made at the first forward
        model.scale = -2.0
        torch.testing.assert_close(model(x), torch.sigmoid(x * -2.0) + 1.0)
        assert len(made) == 1


LINEAR_MEAN = HEADER + """
batch, features, out_features = 6, 40, 24

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(features, out_features)

    def forward(self, x):
        return torch.softmax(self.fc(x).mean(dim=1, keepdim=True) * x, dim=1)

def get_inputs():
    return [torch.randn(batch, features)]

def get_init_inputs():
    return []
"""


def test_kernels_that_read_weights_alone_run_once_per_model_until_a_weight_changes(tmp_path):
    """The mean over a Linear is x @ W.mean(0) + b.mean(): the weight's column means and the bias's mean
    are kernels of parameters alone, launched every forward for the same answer. They run once per
    model, and again when a weight is changed in place or replaced (its version or storage moves)."""
    path = tmp_path / "linear_mean.py"
    path.write_text(LINEAR_MEAN)
    props = [p for p in propose_candidates(path) if "_prepared(self._kevolve_prepared" in p.source]
    assert props, "no candidate prepares its weights once"
    candidate = types.ModuleType("candidate")
    exec(compile(props[0].source, "candidate.py", "exec"), candidate.__dict__)
    kernels = sorted(set(re.findall(r"_prepared\(self\._kevolve_prepared, '\w+', (\w+)", props[0].source)))
    calls = []
    for name in kernels:
        made = getattr(candidate, name)
        setattr(candidate, name, lambda *a, made=made, name=name: calls.append(name) or made(*a))
    torch.manual_seed(0)
    reference = load_problem(path).module.Model()
    model = candidate.ModelNew()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(6, 40)
    with torch.no_grad():
        for _ in range(3):
            torch.testing.assert_close(model(x), reference(x))
        assert sorted(calls) == kernels  # each made once over three forwards
        for m in (model, reference):
            m.fc.weight.mul_(-2.0)  # in place: a new version
        torch.testing.assert_close(model(x), reference(x))
        model.fc.bias = torch.nn.Parameter(torch.randn(24))  # replaced: a new storage
        reference.fc.bias = torch.nn.Parameter(model.fc.bias.detach().clone())
        torch.testing.assert_close(model(x), reference(x))
    assert len(calls) == len(kernels) + 2  # each change made again only the kernel that reads it
    second = candidate.ModelNew()  # a model of its own has its own
    second.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(second(x), reference(x))


def test_multihead_attention_modules_are_written_out_as_projections_around_a_flash_kernel(tmp_path_factory):
    """nn.MultiheadAttention attending a tensor to itself, its weights unread, is its input projection,
    the heads' flash kernel (scaled by 1/sqrt(head_dim) read at run time) and its output projection,
    sequence-first or batch-first. A call whose attention weights are read stays the module's own."""
    path, props = _problem(tmp_path_factory, "multihead_attention")
    assert props, "no template"
    for p in props:
        forward = p.source.split("class ModelNew")[1].split("def forward")[1]
        assert "self.attn(" not in forward and "self.cross(" not in forward, p.strategy
        assert "self.probe(" in forward and "in_proj_weight" in forward, p.strategy
        assert p.source.count("CAUSAL=False") >= 2 or "scaled_dot_product_attention" in forward, p.strategy
    prob = load_problem(path)
    for p in props:  # head size 9 at this shape, not the traced 8
        _run(p.source, prob, {"L": 13, "E": 18}, 5)


def test_transformer_encoder_layers_are_traced_through_their_fast_path(tmp_path_factory):
    """nn.TransformerEncoderLayer and nn.TransformerEncoder are torch.nn modules FX would keep whole (and
    cannot trace into: their fast path tests tensors' properties). Called on one tensor, they are their
    slow path's ops: every attention a flash kernel, the norms, projections and feed-forward templates."""
    path, props = _problem(tmp_path_factory, "transformer_encoder")
    assert props, "no template"
    for p in props:
        forward = p.source.split("class ModelNew")[1].split("def forward")[1]
        assert "self.post(" not in forward and "self.stack(" not in forward, p.strategy
        assert "self_attn(" not in forward and "self.stack.layers[1].linear2.weight" in forward, p.strategy
        assert p.source.count("CAUSAL=False") >= 3 or forward.count("scaled_dot_product_attention") == 3, p.strategy


def test_decoder_layers_project_the_target_and_the_memory_apart(tmp_path_factory):
    """nn.TransformerDecoderLayer and nn.TransformerDecoder, traced as the encoder's: the cross-attention's
    query is the target's projection by the first third of the weight's rows, key and value the memory's
    by the other two, one product (a memory of another length than the target), each a flash kernel."""
    path, props = _problem(tmp_path_factory, "transformer_decoder")
    assert props, "no template"
    for p in props:
        forward = p.source.split("class ModelNew")[1].split("def forward")[1]
        assert "self.post(" not in forward and "multihead_attn(" not in forward, p.strategy
        assert ".narrow(0, self.stack.layers[1].multihead_attn.embed_dim, 2 * self.stack.layers[1].multihead_attn" \
               ".embed_dim)" in forward, p.strategy
        assert p.source.count("CAUSAL=False") >= 6 or forward.count("scaled_dot_product_attention") == 6, p.strategy


def test_attention_with_a_mask_buffer_that_is_not_a_lower_triangle_is_not_causal():
    """The buffer's values decide: a band (tril minus its far diagonals) or a triu buffer is not the causal
    mask, so no fused call; tril(ones) is, at any slice of it."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    from kevolve.builtin.fx_attention import attention, fuse_attention

    class Masked(torch.nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask.view(1, 1, 8, 8))

        def forward(self, q, k, v):
            t = q.size(2)
            s = (q @ k.transpose(-2, -1)).masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
            return torch.softmax(s, dim=-1) @ v

    ones = torch.ones(8, 8)
    x = [torch.randn(2, 3, 6, 4) for _ in range(3)]
    for mask, fused in ((ones.tril(), 1), (ones.tril() - ones.tril(-3), 0), (ones.triu(), 0)):
        module = Masked(mask)
        tracer = fx.Tracer()
        tracer.proxy_buffer_attributes = True
        gm = fx.GraphModule(module, tracer.trace(module))
        ShapeProp(gm).propagate(*x)
        assert fuse_attention(gm) == fused, mask
        assert sum(n.target is attention for n in gm.graph.nodes) == fused
        torch.testing.assert_close(gm(*x), module(*x))


def test_attention_scores_alone_are_matmul_and_softmax_kernels(tmp_path_factory):
    """bmm with a transposed B (4D) and a softmax, no product with v: both matmuls' kernels and a
    row kernel, the scale read from the model at run time."""
    path, props = _problem(tmp_path_factory, "attention_scores")
    src = next(p.source for p in props if p.family == "mixed" or p.strategy.startswith("matmul"))
    assert "_mm" in src and "self, 'scale'" in src.split("class ModelNew")[1]
    _run(src, load_problem(path), {"D": 16, "S": 33}, 6)


def test_middle_dim_reductions_use_the_column_kernel(tmp_path_factory):
    path, props = _problem(tmp_path_factory, "middle_reductions")
    src = props[0].source
    assert src.count("_kernel[(") >= 4 and "torch.sum(" not in src and "torch.mean(" not in src
    # tiny blocks: several column tiles and reduction steps, ragged edges
    src = re.sub(r"COL(\d+)_BLOCK_N = \d+", r"COL\1_BLOCK_N = 16", src)
    src = re.sub(r"COL(\d+)_BLOCK_R = \d+", r"COL\1_BLOCK_R = 4", src)
    _run(src, load_problem(path), {"S": 19, "H": 45}, 8)
    # strips fewer than 64 per SM (the CPU counts as one): each strip's rows split over programs, combined
    _run(re.sub(r"COL(\d+)_SPLIT_PER_SM = \d+", r"COL\1_SPLIT_PER_SM = 64", src), load_problem(path),
         {"S": 19, "H": 45}, 9)


def test_work_before_and_after_a_column_reduction_joins_its_kernel(tmp_path_factory):
    """A per-sample gate and a per-channel bias before a min over channels and a tanh after it, a relu
    before a sum over the leading dims: one column kernel each, nothing written in between. An instance
    norm before a mean over channels: the norm's row kernel writes its mean and variance (two outputs),
    the column kernel normalizes as it loads; the normalized tensor is never written. A scale before an
    argmax over channels: the same kernel as that mean (both reduce x over channels), x read once."""
    path, props = _problem(tmp_path_factory, "column_prologues")
    src = props[0].source
    fwd = src.split("class ModelNew")[1]
    assert len(re.findall(r"= _col\d+\(", fwd)) == 3 and len(re.findall(r"v\d+, v\d+ = _row\d+\(", fwd)) == 1, fwd
    assert "_ew" not in fwd and "torch." not in fwd.split("def forward")[1], fwd
    prob = load_problem(path)
    _run(src, prob, {}, 41)
    _run(src, prob, {"C": 33, "W": 3}, 42)
    # tiny blocks and split strips: the prologue on every partial, the epilogue once on the combined result
    small = re.sub(r"COL(\d+)_BLOCK_N = \d+", r"COL\1_BLOCK_N = 4", src)
    small = re.sub(r"COL(\d+)_BLOCK_R = \d+", r"COL\1_BLOCK_R = 2", small)
    _run(re.sub(r"COL(\d+)_SPLIT_PER_SM = \d+", r"COL\1_SPLIT_PER_SM = 64", small), prob, {"C": 9}, 43)


def test_column_reductions_of_one_tensor_over_the_same_dims_are_one_kernel(tmp_path_factory):
    """amin, amax and argmax over channels with a range after the first two: one column kernel, its
    epilogue reading both (neither written); a channel mean and max that torch concatenates, the max's
    indices (`top, at = torch.max(y, 1)`) scaled: one kernel writing the three; a max of y minus that mean
    reduces from the mean's value and stays a kernel of its own. Tiny blocks, ragged edges and split
    strips (each reduction's partials, an argmax's indices too, combined by its rule)."""
    path, props = _problem(tmp_path_factory, "sibling_column_reductions")
    src = next(p.source for p in props if p.strategy.startswith("column-reduction"))
    fwd = src.split("def forward")[1]
    assert re.search(r"v\d+, v\d+ = _col\d+\(x\)", fwd) and re.search(r"v\d+, v\d+, v\d+ = _col\d+\(y\)", fwd), fwd
    assert len(re.findall(r"= _col\d+\(", fwd)) == 3 and "torch.max" not in fwd and "amin" not in fwd, fwd
    prob = load_problem(path)
    _run(src, prob, {}, 55)
    small = re.sub(r"COL(\d+)_BLOCK_N = \d+", r"COL\1_BLOCK_N = 4", src)
    small = re.sub(r"COL(\d+)_BLOCK_R = \d+", r"COL\1_BLOCK_R = 2", small)
    _run(small, prob, {"C": 13, "L": 9}, 56)
    _run(re.sub(r"COL(\d+)_SPLIT_PER_SM = \d+", r"COL\1_SPLIT_PER_SM = 64", small), prob, {"C": 13, "L": 9}, 57)


def test_a_layer_norm_through_a_transpose_is_one_row_kernel_reading_in_place(tmp_path_factory):
    """`gelu(fc(x)).transpose(1, 2)` into a LayerNorm and back, and a softmax over a transposed tanh: each
    one row kernel reading its input through the transpose's strides (the norm had been four kernels
    and two copies, its ops split between the two layouts)."""
    path, props = _problem(tmp_path_factory, "permuted_row_norm")
    prob = load_problem(path)
    for p in props:
        fwd = p.source.split("def forward")[1]
        assert len(re.findall(r"= _row\d+\(", fwd)) == 2 and "_ew" not in fwd and ".contiguous()" not in fwd, fwd
        _run(p.source, prob, {}, 58)
        _run(p.source, prob, {"C": 33, "L": 5}, 59)


def test_a_clone_no_in_place_op_writes_is_its_value_and_a_softmax_of_one_element_is_one(tmp_path_factory):
    """`a.clone().detach()` read by elementwise ops is a itself (it had been torch's copy, and the ops
    reading it a kernel of their own); a clone an in-place torch op writes stays torch's copy, so a is
    unchanged. A softmax over a dim a keepdim mean left at 1 launches nothing of its own."""
    path, props = _problem(tmp_path_factory, "clones_and_detach")
    prob = load_problem(path)
    for p in props:
        fwd = p.source.split("def forward")[1]
        assert fwd.count(".clone()") == 1 and ".index_fill_(" in fwd and ".detach()" not in fwd, fwd
        assert len(re.findall(r"= _(ew|row)\d+\(", fwd)) == 3 and "softmax" not in fwd, fwd
        _run(p.source, prob, {}, 62)
        _run(p.source, prob, {"D": 33}, 63)


def test_an_elementwise_value_two_kernels_read_is_computed_in_each(tmp_path_factory):
    """y = x * sigmoid(x) * scale is read by a column max and a row log-sum-exp: both kernels compute it
    from x, and y is never written (it had been a kernel of its own). relu(x + 1) is read by a matmul
    as well, which takes its operands from memory: that one is written once; where the product's kernel
    takes the product of the sums (its epilogue), by the kernel of its row sums
    (partition._rows_rooted_at), not a kernel of its own."""
    path, props = _problem(tmp_path_factory, "redone_in_readers")
    for prop in props[:3]:
        fwd = prop.source.split("def forward")[1]
        assert len(re.findall(r"= _ew\d+\(", fwd)) <= 1 and len(re.findall(r"= _col\d+\(", fwd)) == 1, fwd
        if prop.strategy.startswith("matmul-epilogue"):
            assert "= _ew" not in fwd and re.search(r"v\d+, v\d+ = _row\d+\(x\)", fwd), fwd
        col = prop.source.split("_col0_kernel(")[1].split("\n\n\n")[0]
        assert "tl.sigmoid" in col
        _run(prop.source, load_problem(path), {"N": 9, "D": 33}, 44)


def test_a_row_value_read_again_or_returned_is_written_by_its_rows_kernel(tmp_path_factory):
    """A row max that is returned and also subtracted: one row kernel writes both the max and the
    exponentials (it had been a kernel for the max and another reading it back), in the one-pass, looped
    and split paths."""
    path, props = _problem(tmp_path_factory, "returned_row_values")
    src = props[0].source
    fwd = src.split("def forward")[1]
    assert re.search(r"v\d+, v\d+ = _row\d+\(x\)", fwd) and "_ew" not in fwd, fwd
    prob = load_problem(path)
    _run(src, prob, {"R": 7, "D": 33}, 45)
    for per_sm in (1, 64):  # rows looped in chunks, then each row split over several programs
        _run(_long_rows(src, 8, 16, per_sm), prob, {"R": 3, "D": 50}, 46)


def test_row_kernels_over_the_same_rows_read_their_shared_input_once(tmp_path_factory):
    """A triplet loss's two distances from the anchor and another row sum of it that torch flips: one row
    kernel reads a, p and n once and writes all three (they were three kernels, the anchor read three
    times); the row kernel reading the flipped sum needs the first's output and stays apart. The
    one-pass, looped and split paths."""
    path, props = _problem(tmp_path_factory, "sibling_row_reductions")
    src = props[0].source
    fwd = src.split("def forward")[1]
    assert re.search(r"v\d+, v\d+, v\d+, v\d+ = _row\d+\(a, p, n\)", fwd), fwd
    assert len(re.findall(r"= _row\d+\(", fwd)) == 4 and "_ew" not in fwd, fwd
    prob = load_problem(path)
    _run(src, prob, {"B": 7, "D": 33}, 49)
    for per_sm in (1, 64):
        _run(_long_rows(src, 8, 16, per_sm), prob, {"B": 3, "D": 50}, 50)


def test_a_row_kernel_writes_the_value_a_product_reads_and_its_row_sums(tmp_path_factory):
    """`y = relu(x - c); y @ W + y.sum(-1)`: one row kernel reads x and writes y and its sums, then the
    product (its epilogue adding the sums); y had a kernel of its own and the sums' kernel read it back.
    The one-pass, looped and split row paths."""
    path, props = _problem(tmp_path_factory, "row_value_and_product")
    prob = load_problem(path)
    for p in props:
        forward = p.source.split("def forward")[1]
        assert re.search(r"v\d+, v\d+ = _row0\(x\)", forward) and "_ew" not in forward.split("_row0")[0], forward
        _run(p.source, prob, {"B": 7, "K": 33, "N": 20}, 53)
        for per_sm in (1, 64):
            _run(_long_rows(p.source, 8, 16, per_sm), prob, {"B": 3, "K": 50, "N": 9}, 54)


def test_chunks_and_slices_of_an_inner_dim_are_read_in_place(tmp_path_factory):
    """A GRU's gates (a Linear's output chunked in 3 along its features), F.glu over a middle dim and a slice
    of the last dim: each elementwise kernel reads the views through their strides, where each had been
    copied to a contiguous tensor first (a launch and a write and read of its size each); the outputs
    are the module's, at the odd shape too."""
    path, props = _problem(tmp_path_factory, "chunked_gates")
    prob = load_problem(path)
    for p in props:
        ns: dict = {}
        exec(compile(p.source, "candidate.py", "exec"), ns)
        read: list[bool] = []
        readable = ns["_readable"]

        def spy(t, *args, readable=readable, read=read):
            out = readable(t, *args)
            read.append(out is t and not t.is_contiguous())
            return out

        ns["_readable"] = spy
        inst = instantiate(prob, {}, seed=51)
        model = ns["ModelNew"]()
        model.load_state_dict(inst.model.state_dict())
        with torch.no_grad():
            got, want = model(*inst.inputs), inst.model(*inst.inputs)
        assert len(read) == 6 and all(read), (p.strategy, read)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
        _run(p.source, prob, {"H": 10, "L": 3}, 52)


def test_a_layer_norm_between_permutes_reads_its_input_in_place(tmp_path_factory):
    """ConvNeXt's LayerNorm over channels, `x.permute(0, 2, 3, 1)` in and `.permute(0, 3, 1, 2)` out with a
    residual after: one row kernel reading x through its strides and storing in x's order (a copy of x,
    the norm and an elementwise kernel before); the same for a 3-D permute, `.contiguous()` and a
    transpose back. A transpose no row kernel reads is an elementwise kernel's input as before."""
    path, props = _problem(tmp_path_factory, "permuted_layer_norms")
    src = props[0].source
    fwd = src.split("def forward")[1]
    assert len(re.findall(r"= _row\d+\(", fwd)) == 2 and len(re.findall(r"= _ew\d+\(", fwd)) == 1, fwd
    assert ".contiguous()" not in fwd and ".permute(" not in fwd, fwd
    prob = load_problem(path)
    _run(src, prob, {}, 47)
    _run(src, prob, {"C": 20, "W": 3, "L": 17}, 48)


def test_group_norm_is_one_row_kernel_per_norm(tmp_path_factory):
    path, props = _problem(tmp_path_factory, "group_norm")
    src = props[0].source
    fwd = src.split("class ModelNew")[1]
    assert fwd.count("_row") == 2 and "group_norm" not in fwd and "self.gn.num_groups" in fwd
    prob = load_problem(path)
    _run(src, prob, {"C": 12, "G": 4, "H": 3, "W": 2}, 9)  # 3 channels per group, groups follow init
    for per_sm in (1, 64):  # a program per row, then each row split over several
        _run(_long_rows(src, 8, 16, per_sm), prob, {}, 10)


def test_elementwise_work_after_a_group_norm_joins_its_kernel(tmp_path_factory):
    """The norm's output is a view back from its (N, G, C/G, H*W) row layout; the ops after it are done in
    that layout, so the sigmoid, the per-channel scale and the residual add run in the norm's kernel."""
    path, props = _problem(tmp_path_factory, "group_norm_epilogue")
    fwd = props[0].source.split("class ModelNew")[1]
    assert fwd.count("= _row") == 1 and fwd.count("= _ew") == 2, fwd  # left: y * 0.5 and the (1, 1, H, 1) add
    assert "r.reshape(r.shape[0], self.gn.num_groups" in fwd and "torch.sigmoid" not in fwd
    _run(props[0].source, load_problem(path), {"C": 12, "G": 4, "H": 3}, 14)  # 3 channels a group, from init


def test_elementwise_work_before_a_group_norm_is_its_kernels_prologue(tmp_path_factory):
    """z = tanh(x * 2 + 1) - y * scale, then gn(z) + z: z is computed again in the norm's layout from x, y and
    the per-channel scale (viewed into it), in the norm's kernel, and never written; nothing else runs."""
    path, props = _problem(tmp_path_factory, "group_norm_prologue")
    fwd = props[0].source.split("class ModelNew")[1]
    assert fwd.count("= _row") == 1 and "= _ew" not in fwd, fwd
    assert re.search(r"(v\d+)\.reshape\(1, self\.gn\.num_groups, \1\.shape\[0\] // self\.gn\.num_groups, 1\)", fwd)
    prob = load_problem(path)
    _run(props[0].source, prob, {"C": 12, "G": 4, "L": 3}, 15)  # 3 channels a group, from init
    _run(_long_rows(props[0].source, 4, 2, 1), prob, {}, 16)  # rows of 14 in 7 chunks: looped
    _run(_long_rows(props[0].source, 4, 2, 64), prob, {}, 17)  # each row split over programs


def test_reductions_over_middle_dims_are_row_kernels_reading_x_in_place(tmp_path_factory):
    """softmax(x, dim=1) of (B, C, H, W), with the ops before and after it, is one row kernel over the
    view x.movedim(1, 3); the kernel reads that view through its strides (no copy), in the one-pass,
    looped and split paths, and stores its result in x's order; so are logsumexp, std over (1, 2),
    normalize and a log-softmax over dim 2."""
    path, props = _problem(tmp_path_factory, "middle_dim_rows")
    src = props[0].source
    fwd = src.split("class ModelNew")[1]
    assert fwd.count("= _row") == 4 and "= _ew" not in fwd and "softmax" not in fwd, fwd
    assert "x.movedim((1,), (3,))" in fwd and "x.movedim((1, 2), (2, 3))" in fwd
    assert len(re.findall(r"in\d+ = _readable\(in\d+, full", src)) >= 5  # each kernel's moved x, bias
    no_copy = ("\n\ndef _readable(t, *args, _real=_readable):\n    out = _real(t, *args)\n"
               "    assert out is t, 'a moved view was copied'\n    return out\n")
    prob = load_problem(path)  # (test_candidates_match_reference runs it at the odd shape too)
    _run(src + no_copy, prob, {}, 18)
    few = {"B": 1, "H": 3, "W": 2}  # rows of 5 and 15 in chunks of 4: looped, then split over programs
    _run(_long_rows(src, 4, 4, 1) + no_copy, prob, few, 20)
    _run(_long_rows(src, 4, 4, 64) + no_copy, prob, few, 21)
    for variant in (src, _long_rows(src, 4, 4, 1), _long_rows(src, 4, 4, 64)):  # results stored in NCHW order
        candidate = types.ModuleType("candidate")
        exec(compile(variant, "candidate.py", "exec"), candidate.__dict__)
        inst = instantiate(prob, few, seed=22)
        with torch.no_grad(), constants_at(candidate, prob, few):
            out = candidate.ModelNew(*inst.init_inputs)(*inst.inputs)
        assert [o.is_contiguous() for o in out] == [True, True, True, True]
    ns: dict = {}
    exec(compile(src, "candidate.py", "exec"), ns)
    view = torch.randn(3, 5, 4, 6).movedim(1, 3)  # (3, 4, 6, 5) in NCHW memory
    assert ns["_readable"](view, tuple(view.shape), 3, ((0, 1), (1, 3), (3, 4)), False) is view
    copy = ns["_readable"](view, tuple(view.shape), 3, ((0, 3), (3, 4)), False)  # N with H, W: apart
    assert copy is not view and copy.is_contiguous() and torch.equal(copy, view)
    # the answer is memoised by shape and strides: the same shape laid out otherwise is answered anew
    assert ns["_readable"](copy, tuple(view.shape), 3, ((0, 3), (3, 4)), False) is copy
    assert ns["_readable"](view, tuple(view.shape), 3, ((0, 3), (3, 4)), False) is not view


def test_a_plain_middle_dim_reduction_also_comes_as_moved_rows_with_its_neighbours(tmp_path_factory):
    path, props = _problem(tmp_path_factory, "middle_min_epilogue")
    col, rows = props[0], next(p for p in props if p.strategy.endswith("+middle-rows"))
    assert "col:" in col.notes and "col:" not in rows.notes, (col.notes, rows.notes)
    fwd = rows.source.split("class ModelNew")[1]
    assert fwd.count("= _row") == 2 and "= _ew" not in fwd and "x.movedim((1,), (3,))" in fwd, fwd
    _run(_long_rows(rows.source, 2, 2, 64), load_problem(path), {}, 24)  # rows of 5 and 20, split


def _long_rows(src: str, single: int, block: int, per_sm: int) -> str:
    """Row kernels' constants for tiny problems: rows longer than `single` loop over `block`-column
    chunks; the CPU counts as one SM, so rows fewer than per_sm are split over several programs."""
    src = re.sub(r"ROW(\d+)_MAX_SINGLE_PASS = \d+", rf"ROW\1_MAX_SINGLE_PASS = {single}", src)
    src = re.sub(r"ROW(\d+)_LOOP_BLOCK_N = \d+", rf"ROW\1_LOOP_BLOCK_N = {block}", src)
    return re.sub(r"ROW(\d+)_SPLIT_PER_SM = \d+", rf"ROW\1_SPLIT_PER_SM = {per_sm}", src)


def test_a_reduction_of_one_element_is_that_element(tmp_path_factory):
    """sum, max (values of the tuple), mean, log-sum-exp and amin over a dim an earlier keepdim reduction
    left at 1 launch nothing: the chain is one row kernel (its sum and amax in one pass, the rest its
    epilogue); a sum over an input's dim of size 1, which no reduction made 1, stays a reduction."""
    path, props = _problem(tmp_path_factory, "reduction_chains")
    fwd = props[0].source.split("class ModelNew")[1]
    assert len(re.findall(r"= _row\d+\(", fwd)) == 2 and "= _row1(y)" in fwd and "torch." not in fwd, fwd
    _run(props[0].source, load_problem(path), {}, 31)


def test_a_reduction_over_channels_an_earlier_one_left_at_1_is_that_element(tmp_path_factory):
    """A max over dim 1 after a keepdim log-sum-exp over dim 1 (rows of the moved layout, viewed back) and
    a clamp, and a mean over dim 1 after a keepdim column min: no kernel for either (each had launched a
    column kernel over one element). In the middle-rows variant a max over channels after a softmax over
    them reads the softmax's rows in its kernel (it had moved the viewed-back softmax again: 2 kernels)."""
    path, props = _problem(tmp_path_factory, "middle_reductions_of_one")
    fwd = props[0].source.split("def forward")[1]
    assert len(re.findall(r"= _(row|col)\d+\(", fwd)) == 4, fwd  # the softmax's row kernel, a column max
    rows = next(p for p in props if p.strategy.endswith("+middle-rows"))
    fwd = rows.source.split("def forward")[1]
    assert len(re.findall(r"= _row\d+\(", fwd)) == 3 and "_col" not in fwd, fwd
    for prop in (props[0], rows):
        _run(prop.source, load_problem(path), {"C": 9}, 49)


@pytest.mark.parametrize("split", [False, True])
def test_long_rows_pair_their_reductions_in_one_pass(tmp_path_factory, split):
    """Mean and variance share one pass (chunk statistics merged), max and sum of exponentials another
    (the sum rescaled as the max grows); split rows combine their programs' partials the same way."""
    path, props = _problem(tmp_path_factory, "paired_reductions")
    src = props[0].source
    loop = src.split("def _row0_loop_kernel")[1].split("@triton.jit")[0]
    assert loop.count("for c in range") == 2, "one pass for the mean and variance, one for the output"
    assert "m2_" in src and "sum_v" in src
    assert any("SPLIT_PER_SM 2 -> 4" in p.notes for p in mutate(src))
    src = _long_rows(src, 8, 8, 6 if split else 1)  # split: 2 programs per row, 3-4 chunks each
    # the path not under test is taken out, so taking it fails loudly
    src = src.replace("_loop_kernel[(M,)](" if split else "_split_kernel[(M * per_row,)](", "_not_this_path[(1,)](")
    prob = load_problem(path)
    _run(src, prob, {}, 11)
    _run(src, prob, _odd(prob), 12)
    if split:  # the output launch's programs: a chunk each (above), or as many chunks as partials (here)
        _run(re.sub(r"ROW(\d+)_OUT_PARTIALS_PER_BLOCK = \d+", r"ROW\1_OUT_PARTIALS_PER_BLOCK = 1", src), prob,
             _odd(prob), 13)
    path, props = _problem(tmp_path_factory, "cross_entropy")  # the target's logit picked from a long row
    fwd = props[0].source.split("class ModelNew")[1]
    assert "_ew" not in fwd, "logits * 2.0 is computed at the picked column too, not written out for it"
    _run(_long_rows(props[0].source, 8, 8, 6 if split else 1), load_problem(path), {}, 13)


@pytest.mark.parametrize("split", [False, True])
def test_arg_reductions_keep_the_first_index_over_chunks_and_splits(tmp_path_factory, split):
    """argmax / argmin over rows in chunks (each lane's first extreme, merged), over split rows and
    split columns (partials combined in order, indices kept exact): ties and NaNs as PyTorch answers.
    max / min and the scans keep NaN in every path too (Triton's tl.max drops it)."""
    path, props = _problem(tmp_path_factory, "arg_reductions")
    src = props[0].source
    assert not re.search(r"torch\.arg|\.arg(max|min)\(", src.split("class ModelNew")[1])
    src = _long_rows(src, 2, 2, 40 if split else 1)
    src = re.sub(r"COL(\d+)_BLOCK_R = \d+", r"COL\1_BLOCK_R = 2", src)
    src = re.sub(r"COL(\d+)_SPLIT_PER_SM = \d+", rf"COL\1_SPLIT_PER_SM = {16 if split else 1}", src)
    src = re.sub(r"SCAN(\d+)_BLOCK_N = \d+", r"SCAN\1_BLOCK_N = 4", src)  # rows of 9: 3 chunks
    src = re.sub(r"CSCAN(\d+)_BLOCK_R = \d+", r"CSCAN\1_BLOCK_R = 2", src)
    src = src.replace("_loop_kernel[(M,)](" if split else "_split_kernel[(M * per_row,)](", "_not_this_path[(1,)](")
    prob = load_problem(path)
    _run(src, prob, {}, 7)
    _run(src, prob, _odd(prob), 8)


def test_convolutions_are_implicit_gemms_with_their_tails(tmp_path_factory):
    """Conv1d/2d/3d with int padding are one Triton kernel each with their tail as its epilogue, reading x
    through its strides (channels-last too), grouped and depthwise ones (a program per group's tile) and
    padding="same" too; cuDNN's variant comes first (a compiler seed falls back on it at other shapes)."""
    path, props = _problem(tmp_path_factory, "conv_geometries")
    assert props[0].strategy.startswith("library+tail")
    gemm = next(p for p in props if p.strategy == "conv-implicit-gemm+split")
    fwd = gemm.source.split("class ModelNew")[1]
    assert "functional.conv" not in fwd and len(re.findall(r"= _conv\d+\(", fwd)) == 9, fwd
    src = re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", gemm.source)  # many tiles, grouped
    prob = load_problem(path)
    _run(src, prob, {}, 9)  # 5 channels: the K loop flat
    _run(src, prob, _odd(prob) | {"C": 17}, 10)  # tap by tap, the last K step part empty
    candidate = types.ModuleType("candidate")
    exec(compile(src, "candidate.py", "exec"), candidate.__dict__)
    inst = instantiate(prob, {}, seed=11)
    model = candidate.ModelNew(*inst.init_inputs)
    model.load_state_dict(inst.model.state_dict())
    x, y = inst.inputs
    with torch.no_grad():
        out = model(x.contiguous(memory_format=torch.channels_last), y)[:2]
        ref = inst.model(x, y)[:2]
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)


def test_transposed_convolutions_run_by_output_phase(tmp_path_factory):
    """A transposed convolution is one Triton kernel with its tail as the epilogue, each output phase an
    implicit GEMM over its own taps (phases no tap reaches hold the tail of 0), a grouped one's groups
    apart; cuDNN's variant comes first (F.conv_transpose2d, its bias in the tail)."""
    path, props = _problem(tmp_path_factory, "transposed_geometries")
    assert props[0].strategy.startswith("library+tail")
    assert "conv_transpose2d(" in props[0].source and "conv_transpose3d(" in props[0].source
    gemm = next(p for p in props if p.strategy == "conv-implicit-gemm")  # the cat of x too is a kernel
    fwd = gemm.source.split("class ModelNew")[1]
    assert "functional.conv_transpose" not in fwd and len(re.findall(r"= _conv\d+\(", fwd)) == 7, fwd
    assert "_transposed_taps(" in gemm.source
    src = re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", gemm.source)  # many tiles, grouped
    prob = load_problem(path)
    _run(src, prob, {}, 12)  # 5 channels: the K loop flat
    _run(src, prob, _odd(prob) | {"C": 16}, 13)  # tap by tap
    flat = next(p for p in props if p.strategy == "conv-implicit-gemm+flat-k")
    _run(re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", flat.source), prob, {"C": 16}, 14)


def test_row_kernels_over_channels_join_their_convolution(tmp_path_factory):
    """A softmax, log-sum-exp, min or mean over dim 1 of a convolution's output (transposed too) is computed
    in the convolution's kernel, whose tile spans every channel: one kernel each, no row kernel after it;
    more channels than a tile holds is a clear error, not a wrong answer."""
    path, props = _problem(tmp_path_factory, "conv_row_epilogues")
    fused = next(p for p in props if p.strategy == "conv-implicit-gemm+split+middle-rows+row-epilogue")
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _conv\d+\(", fwd)) == 6 and "_row" not in fwd, fwd
    assert any(p.strategy == "conv-implicit-gemm+split+row-epilogue" for p in props)
    src = re.sub(r"CONV(\d+)_BLOCK_(M|K) = \d+", r"CONV\1_BLOCK_\2 = 16", fused.source)  # many row tiles
    prob = load_problem(path)
    _run(src, prob, {}, 15)  # 5 input channels: the K loop flat
    _run(src, prob, _odd(prob) | {"C": 16}, 16)  # tap by tap
    candidate = types.ModuleType("candidate")
    exec(compile(src, "candidate.py", "exec"), candidate.__dict__)
    inst = instantiate(prob, {}, seed=18)
    with torch.no_grad():  # the softmax lands in NCHW order: what reads it next needs no copy
        assert all(o.is_contiguous() for o in candidate.ModelNew(*inst.init_inputs)(*inst.inputs))
    inst = instantiate(prob, {"O": 300, "H": 2, "W": 2}, seed=17)
    with constants_at(candidate, prob, {"O": 300, "H": 2, "W": 2}):
        model = candidate.ModelNew(*inst.init_inputs).eval()
    with pytest.raises(ValueError, match="300 channels does not fit one tile"), torch.no_grad():
        model(*inst.inputs)


def test_row_kernels_over_a_matmuls_columns_join_its_kernel(tmp_path_factory):
    """A log-sum-exp, layer norm, softmax or sum over a matmul's last dim (a 4-D one too), or a group norm
    of its columns, is computed in the matmul's kernel, whose tile spans every column (a group norm's:
    whole groups, G read at run time): no row kernel after it, and a value per row is stored as one; more
    columns than a tile holds is a clear error, not a wrong answer."""
    path, props = _problem(tmp_path_factory, "matmul_row_epilogues")
    fused = next(p for p in props if p.strategy == "matmul-epilogue+row-epilogue")
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _mm\d+\(", fwd)) == 8 and len(re.findall(r"= _row\d+\(", fwd)) == 0, fwd
    assert "self.gn.num_groups)" in fwd and "self.gn2.num_groups)" in fwd, fwd
    plain = next(p for p in props if p.strategy == "matmul-epilogue").source.split("class ModelNew")[1]
    assert len(re.findall(r"= _row\d+\(", plain)) == 7, plain
    prob = load_problem(path)
    src = re.sub(r"MM(\d+)_BLOCK_(M|K) = \d+", r"MM\1_BLOCK_\2 = 16", fused.source)  # many row tiles
    _run(src, prob, _odd(prob) | {"B": 37}, 21)
    # 16-column tiles: gn's 4 groups of 8 in two tiles of two groups each
    _run(re.sub(r"MM(\d+)_BLOCK_N = \d+", r"MM\1_BLOCK_N = 16", src), prob, {"B": 37}, 23)
    candidate = types.ModuleType("candidate")
    exec(compile(src, "candidate.py", "exec"), candidate.__dict__)
    inst = instantiate(prob, {"N": 300}, seed=22)
    with constants_at(candidate, prob, {"N": 300}):
        model = candidate.ModelNew(*inst.init_inputs).eval()
    with pytest.raises(ValueError, match="300 columns does not fit one tile"), torch.no_grad():
        model(*inst.inputs)


def test_pools_after_convolutions_join_their_kernel(tmp_path_factory):
    """A max or average pool whose windows tile the conv's output (stride = kernel, no padding) pools the
    conv outputs inside the convolution's kernel, with the tail and the pool's prologue and epilogue; a
    pool with overlapping windows stays a pool kernel of its own."""
    path, props = _problem(tmp_path_factory, "conv_pool_epilogues")
    fused = next(p for p in props if p.strategy.endswith("+pool-epilogue"))
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _conv\d+\(", fwd)) == 5 and len(re.findall(r"= _pool\d+\(", fwd)) == 1, fwd
    src = re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", fused.source)
    prob = load_problem(path)
    _run(src, prob, {}, 19)
    _run(src, prob, _odd(prob) | {"C": 16}, 20)  # tap by tap


def test_pools_after_transposed_convolutions_join_their_kernel(tmp_path_factory):
    """A max pool whose window the transposed convolution's stride divides (2 of stride 2, 6 of 3, (3, 2) of
    (1, 2), two stacked pools of 2 then (1, 2, 2)) pools its outputs inside the convolution's kernel, one
    output phase per window position: the upsampled output is never written. Window 3 of stride 2 mixes
    phases and stays a pool kernel. Tap by tap and flat, groups, a tail and the pool's epilogue."""
    path, props = _problem(tmp_path_factory, "conv_transpose_pool_epilogues")
    fused = next(p for p in props if p.strategy.endswith("+pool-epilogue"))
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _conv\d+\(", fwd)) == 5 and len(re.findall(r"= _pool\d+\(", fwd)) == 1, fwd
    src = re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", fused.source)
    prob = load_problem(path)
    _run(src, prob, {}, 60)
    _run(src, prob, _odd(prob) | {"C": 16}, 61)  # tap by tap


def test_a_global_sum_after_a_convolutions_tail_joins_its_kernel(tmp_path_factory):
    """A mean or sum over every spatial dim of a convolution's nonlinear tail (BN → Mish → global average
    pool, GELU → mean over D, H, W, a transposed one's ReLU → sum) runs in the convolution's kernel, each
    tile adding its images' shares into the (N, C) result: the conv's output is never written; the
    epilogue after the sum (+ 1 after a flatten, × 2) is an elementwise kernel of its own. Tiles of 16
    pixels span several images of 30."""
    path, props = _problem(tmp_path_factory, "conv_global_sums")
    fused = next(p for p in props if p.strategy.endswith("+sum-epilogue"))
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _conv\d+\(", fwd)) == 4 and "_row" not in fwd, fwd
    assert fused.source.count("tl.atomic_add(") == 4, fused.source
    src = re.sub(r"CONV(\d+)_BLOCK_(M|N|K) = \d+", r"CONV\1_BLOCK_\2 = 16", fused.source)
    prob = load_problem(path)
    _run(src, prob, {}, 64)
    _run(src, prob, _odd(prob) | {"C": 16}, 65)  # tap by tap


def test_persistent_variant_strides_over_every_tile(tmp_path_factory):
    """PERSISTENT=1: a few programs loop over all tiles (4 on the CPU); small tiles make each loop many times."""
    path, props = _problem(tmp_path_factory, "ew_broadcast")
    source = props[0].source
    assert any("PERSISTENT 0 -> 1" in v.notes for v in mutate(source))
    looping = re.sub(r"(EW\d+)_PERSISTENT = 0", r"\1_PERSISTENT = 1", source)
    looping = re.sub(r"(EW\d+)_BLOCK = \d+", r"\1_BLOCK = 64", looping)
    assert looping.count("_PERSISTENT = 1") >= 1 and "_BLOCK = 64" in looping
    prob = load_problem(path)
    _run(looping, prob, {}, 6)
    _run(looping, prob, _odd(prob), 7)


def test_convolutions_get_both_layouts(tmp_path_factory):
    """A conv graph's template comes as NCHW and channels-last (NHWC) input to the conv, as torch.compile
    would lay it out; the switch is a tuning mutation too, so the timing decides on any later candidate."""
    _, props = _problem(tmp_path_factory, "conv_tail")
    nchw, nhwc = props[0], props[1]
    assert "\nCHANNELS_LAST = 0" in nchw.source and "conv2d(_channels_last(x), " in nchw.source
    assert re.search(r"conv2d\(_channels_last\(x\), v\d+, None, ", nchw.source)  # the bias: in the tail kernel
    assert nhwc.source == nchw.source.replace("CHANNELS_LAST = 0", "CHANNELS_LAST = 1", 1)
    assert nhwc.strategy.endswith("+channels-last")
    ns: dict = {}
    exec(compile(nhwc.source, "candidate.py", "exec"), ns)
    x = torch.randn(2, 3, 5, 7)
    assert ns["_channels_last"](x).is_contiguous(memory_format=torch.channels_last)
    assert any(v.source == nhwc.source for v in mutate(nchw.source))
    _, plain = _problem(tmp_path_factory, "ew_broadcast")
    assert all("CHANNELS_LAST" not in p.source for p in plain)  # no conv, no switch


def test_batch_norm_joins_the_tail_and_channels_last_output_stays_channels_last(tmp_path_factory):
    """Inference batch norm is elementwise work in the conv's tail, not a pass of its own; with
    CHANNELS_LAST the tail runs in the conv output's NHWC order and returns it in that layout."""
    path, props = _problem(tmp_path_factory, "conv_bn")
    nchw, nhwc = props[0], props[1]
    assert "self.bn(" not in nchw.source and "self.bn1d(" not in nchw.source
    forward = nchw.source[nchw.source.index("def forward"):]
    assert re.search(r"= _ew0\(v3, ", forward) and forward.count("conv2d(") == 1  # conv, then one kernel
    for proposal, expect_nhwc in ((nchw, False), (nhwc, True)):
        ns: dict = {}
        exec(compile(proposal.source, "candidate.py", "exec"), ns)
        permuted = []
        as_nhwc = ns["_as_nhwc"]
        ns["_as_nhwc"] = lambda t, seen=permuted, f=as_nhwc: seen.append(t.shape) or f(t)
        inst = instantiate(load_problem(path), {}, seed=0)
        model = ns["ModelNew"](*inst.init_inputs).eval()
        model.load_state_dict(inst.model.state_dict())
        with torch.no_grad():
            out, pooled = model(*inst.inputs)
            ref, ref_pooled = inst.model(*inst.inputs)
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(pooled, ref_pooled, atol=1e-4, rtol=1e-4)
        assert bool(permuted) == expect_nhwc
        assert out.is_contiguous(memory_format=torch.channels_last) == expect_nhwc


def test_attention_whose_probabilities_are_also_used_is_left_op_by_op():
    """The fused call replaces the scores and probabilities: when anything else reads them, no fusion."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    from kevolve.builtin.fx_attention import attention, fuse_attention

    class TwoOutputs(torch.nn.Module):
        def forward(self, q, k, v):
            p = torch.softmax(q @ k.transpose(-2, -1) * 0.5, dim=-1)
            return p @ v, p

    class OneOutput(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1) @ v

    x = [torch.randn(2, 5, 4) for _ in range(3)]
    for module, fused in ((TwoOutputs(), 0), (OneOutput(), 1)):
        gm = fx.symbolic_trace(module)
        ShapeProp(gm).propagate(*x)
        assert fuse_attention(gm) == fused
        assert sum(n.target is attention for n in gm.graph.nodes) == fused
        torch.testing.assert_close(gm(*x)[0] if not fused else gm(*x), module(*x)[0] if not fused else module(*x))


def test_topk_of_many_values_stays_torch():
    """The kernel unrolls one merge step per value kept: beyond 64 the template steps aside."""
    from kevolve.builtin.graph import lower_module

    class Top(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return torch.topk(x, self.k).values

    x = [torch.randn(4, 200)]
    assert [v.kind for v in lower_module(Top(64), x).vals if v.kind in ("topk", "torch")] == ["topk"]
    assert [v.kind for v in lower_module(Top(65), x).vals if v.kind in ("topk", "torch")] == ["torch", "torch"]


def test_attention_with_shared_keys_is_left_op_by_op():
    """k and v shared by every head (broadcast): not the kernel's one (batch, head) per program, so the
    ops stay as they are and the other templates still cover them."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    from kevolve.builtin.fx_attention import fuse_attention

    class SharedKV(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v

    x = [torch.randn(2, 4, 5, 8), torch.randn(2, 1, 5, 8), torch.randn(2, 1, 5, 8)]
    gm = fx.symbolic_trace(SharedKV())
    ShapeProp(gm).propagate(*x)
    assert fuse_attention(gm) == 0


def test_fp32_products_come_in_both_precisions_and_the_switch_is_a_mutation(tmp_path_factory):
    """fp32 matmuls get an IEEE candidate and a three-TF32-products one (the harness's precision test
    judges the latter on a GPU); bf16 ones have no such switch."""
    _, props = _problem(tmp_path_factory, "linear_epilogue")
    by = {p.strategy: p.source for p in props}
    assert "MM0_TF32X3 = 0" in by["matmul-epilogue"] and "MM0_TF32X3 = 1" in by["matmul-epilogue+3xtf32"]
    # FMAs get 64x64 tiles and 4 warps, tensor cores 128x128 and 8
    assert "MM0_BLOCK_M = 64" in by["matmul-epilogue"] and "MM0_NUM_WARPS = 4" in by["matmul-epilogue"]
    assert "MM0_BLOCK_M = 128" in by["matmul-epilogue+3xtf32"] and "MM0_NUM_WARPS = 8" in by["matmul-epilogue+3xtf32"]
    assert any("MM0_TF32X3 0 -> 1" in v.notes for v in mutate(by["matmul-epilogue"]))
    bf16 = HEADER + PROBLEMS["linear_epilogue"].replace("torch.randn(M, K)", "torch.randn(M, K, dtype=torch.bfloat16)")
    path = tmp_path_factory.mktemp("bf16") / "linear_bf16.py"
    path.write_text(bf16.replace("nn.Linear(k, n)", "nn.Linear(k, n).to(torch.bfloat16)"))
    assert all("TF32X3" not in p.source for p in propose_candidates(path))


def test_a_row_epilogue_is_sized_by_the_products_channels_not_its_width(tmp_path):
    """A convolution's tile spans its channels (16 here), whatever its width (300); one with 300 channels
    is not merged with its row kernel, which no tile could hold."""
    from kevolve.builtin import _load
    from kevolve.builtin.graph import lower_module
    from kevolve.builtin.partition import fuse_product_rows, partition

    def fused(channels: int, width: int) -> bool:
        path = tmp_path / f"conv_{channels}_{width}.py"
        path.write_text(HEADER + f"""
class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, {channels}, 3, padding=1)

    def forward(self, x):
        return torch.softmax(self.conv(x), dim=1)

def get_inputs():
    return [torch.randn(1, 3, 2, {width})]

def get_init_inputs():
    return []
""")
        _, model, inputs, _ = _load(path, None)
        graph = lower_module(model, inputs)
        return fuse_product_rows(graph, partition(graph)) is not None

    assert fused(16, 300) and not fused(300, 8)


def test_a_row_epilogues_tile_is_sized_at_the_problems_own_shape(tmp_path):
    """Templates are traced at a shape shrunk for the CPU (128 columns here), but a tile must hold rows
    at the problem's own (1024): a layer norm over 1024 columns keeps its row kernel, while a group norm
    of 1024 columns in 16 groups joins the matmul's kernel, its tiles spanning whole groups; it runs
    right at the shrunk shape, and is compiled at the problem's own for an H100 without one."""
    path = tmp_path / "wide_norms.py"
    path.write_text(HEADER + '''
M = 512
K = 256
N = 1024

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)
        self.ln = nn.LayerNorm(n)
        self.gn = nn.GroupNorm(16, n)

    def forward(self, x):
        return self.ln(self.fc(x)), torch.sigmoid(self.gn(self.fc(x)))

def get_inputs():
    return [torch.randn(M, K)]

def get_init_inputs():
    return [K, N]
''')
    fused = next(p for p in propose_candidates(path) if p.strategy.endswith("+row-epilogue"))
    fwd = fused.source.split("class ModelNew")[1]
    assert len(re.findall(r"= _mm\d+\(", fwd)) == 2 and len(re.findall(r"= _row\d+\(", fwd)) == 1, fwd
    prob = load_problem(path)
    _run(fused.source, prob, {"M": 40, "K": 16, "N": 128}, 24)
    _run(re.sub(r"MM(\d+)_BLOCK_M = \d+", r"MM\1_BLOCK_M = 16", fused.source), prob, {"M": 40, "K": 16, "N": 64}, 25)
    candidate = tmp_path / "candidate.py"
    candidate.write_text(fused.source)
    report = compile_for_gpu(path, candidate, cache=tmp_path / "cache")
    launches = sorted((k["name"][:3], k["grid"][0]) for k in report["kernels"])
    # 512 x 1024 in 64 x 64 tiles (fp32) are 128, fewer than an H100's 132 SMs: both products take 32 x 64
    # (the group norm's: 16 groups of 64 columns, one a tile), K = 256 too short to split
    assert report["ok"] and launches == [("_mm", 256), ("_mm", 256), ("_ro", 128)], report
    assert all(k["spill_bytes"] == 0 for k in report["kernels"]), report


@pytest.mark.parametrize("dims, transposed, stride, padding, dilation, extra", [
    (1, False, 3, 2, 2, 0), (2, False, (2, 1), (1, 0), (1, 2), 0), (3, False, 2, 1, 1, 0),
    (1, True, 2, 1, 3, 1), (2, True, (3, 2), (1, 2), (1, 2), (2, 1)), (3, True, 2, 0, 1, 1)])
def test_tap_sums_times_the_weight_are_a_convolutions_spatial_sums(dims, transposed, stride, padding, dilation, extra):
    """The tap sums (products.reduced_conv) against torch's convolution summed over its outputs, at
    strides, paddings, dilations and output paddings that leave taps missing at the borders."""
    ns = _helpers("_tap_sums(x)")
    torch.manual_seed(dims)
    ci, co, kernel = 3, 4, (3, 2, 3)[:dims]
    x = torch.randn((2, ci) + (7, 6, 5)[:dims])
    w = torch.randn(((ci, co) if transposed else (co, ci)) + kernel)
    conv = getattr(F, f"conv_transpose{dims}d" if transposed else f"conv{dims}d")
    cfg = (stride, padding, dilation, 1) + ((extra,) if transposed else ())
    y = conv(x, w, None, stride, padding, extra, 1, dilation) if transposed else conv(x, w, None, stride, padding,
                                                                                        dilation)
    w2 = w.transpose(0, 1).reshape(co, -1) if transposed else w.reshape(co, -1)
    for sms in (1, 64):  # each plane one program, or split over several (a GPU with more SMs than planes)
        ns["_sm_count"] = lambda device, sms=sms: sms
        ns["TAP_SUMS_TILE"] = 16 if sms > 1 else 2048  # small tiles: several to a split
        ns["_MEMO"].clear()  # the plan is kept per shape and device
        taps = ns["_tap_sums"](x, w.shape[2:], cfg, transposed, True)
        torch.testing.assert_close(taps @ w2.T, y.mean(dim=tuple(range(2, 2 + dims))), atol=1e-5, rtol=1e-5)


def test_a_concatenation_is_read_in_place_by_the_kernel_reading_it(tmp_path_factory):
    """torch.cat joins the kernel that reads it, a select of its pieces, their work fused in: a rotary
    embedding is one kernel over q, nested cats along one dim one select, a layer norm or softmax over a
    cat (along its columns or its rows) one row kernel, in one pass, looped or split. A cat returned is
    written by a kernel of its own, its pieces' work in it; one that three kernels read is made again in
    each (two of them row kernels over its rows: one kernel, beside a layer norm over a cat of the same
    pieces). Views apart at two dims (every other row and column of an NHWC image) are read in place, and
    so are views taking every other element of their last dim (YOLOv5's Focus). A stack is the cat of its
    tensors given a dim of 1 (a relu of a leaf redone at that shape): one kernel; flattened, a stack along
    the last dim interleaves its pieces (GPT-J's rotary: one kernel)."""
    path, props = _problem(tmp_path_factory, "concatenations")
    assert props
    for p in props:
        fwd = p.source.split("def forward")[1]
        assert "cat(" not in fwd and "concat" not in fwd, fwd
        kernels = re.findall(r"= (_[a-z]+)\d+\(", fwd)
        assert kernels.count("_ew") == 8 and kernels.count("_row") == 6 and len(kernels) == 14, fwd
        views = re.findall(r"(v\d+) = img\[", fwd)  # the image's views: 3 merged rows, 2 focus's
        calls = {k: args.split(", ") for k, args in re.findall(r"= (_\w+)\(([v\d, ]+)\)", fwd)}
        readers = [k for k, args in calls.items() if set(args) <= set(views)]
        assert sorted(len(calls[k]) for k in readers) == [2, 3], fwd
        for wrapper in readers:
            assert ".contiguous()" not in p.source.split(f"def {wrapper}(")[1].split("\ndef ")[0], "a view copied"
    prob = load_problem(path)
    for per_sm in (1, 64):  # rows of 3 D and 2 D columns in chunks of 2, then split over programs too
        _run(_long_rows(props[0].source, 2, 2, per_sm), prob, _odd(prob), 5 + per_sm)
