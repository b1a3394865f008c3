"""Composite ops (softmax, norms, variance, cross-entropy...) decomposed into the primitives one code
generator per region kind covers, and small lowerings that need more than a table entry."""

from __future__ import annotations

import math

import torch
import torch.fx as fx
import torch.nn.functional as F

from .ir import AttrFloat, NotFusable, Val, self_path


class CompositeMixin:
    """Methods of the lowerer (graph._Lowerer) that decompose one op; they build values with its ew/red/view."""

    def softmax(self, x: Val, dim, log: bool) -> Val:
        x = self.own_rows(x)
        if self.of_one(x, dim, True) is not None:  # over dims an earlier keepdim reduction left at 1
            zero = self.ew("sub", x, x)  # exp(x - max) / sum is 1, its log 0; NaN where x is not finite
            return zero if log else self.ew("add", zero, 1.0)
        moved = self._on_moved(x, dim, lambda xm, _: self.softmax(xm, -1, log))
        if moved is not None:  # softmax(x, dim=1) of (N, C, H, W): rows of C, in place
            return moved
        m = self.red("max", x, dim, True)
        xs = self.ew("sub", x, m)
        e = self.ew("exp", xs)
        s = self.red("sum", e, dim, True)
        if log:
            return self.ew("sub", xs, self.ew("log", s))
        return self.ew("div", e, s)

    def norm(self, x: Val, ndims: int, w, b, eps: float, rms: bool) -> Val:
        dims = list(range(-ndims, 0))
        if rms:
            ms = self.red("mean", self.ew("mul", x, x), dims, True)
            y = self.ew("mul", x, self.ew("rsqrt", self.ew("add", ms, eps)))
        else:
            mu = self.red("mean", x, dims, True)
            xc = self.ew("sub", x, mu)
            var = self.red("mean", self.ew("mul", xc, xc), dims, True)
            y = self.ew("mul", xc, self.ew("rsqrt", self.ew("add", var, eps)))
        if w is not None:
            y = self.ew("mul", y, w)
        if b is not None:
            y = self.ew("add", y, b)
        return y

    def group_norm(self, x: Val, g, gexpr: str, w, b, eps: float) -> Val:
        """(N, C, *spatial) seen as (N, G, C/G, prod(spatial)): a row normalization over the last two
        dims per (batch, group), the per-channel affine a (G, C/G, 1) leaf of the same row kernel.
        gexpr is G in the candidate's forward (`self.norm.num_groups` when it may follow the init inputs)."""
        if x.squeezed or len(x.shape) < 2 or not isinstance(g, int) or isinstance(g, bool):
            raise NotFusable
        n, c = x.shape[:2]
        if g <= 0 or c % g:
            raise NotFusable
        hw = 1
        for d in x.shape[2:]:
            hw *= d
        # the prologue redone in the layout; the output's shape is then read from one of its leaves
        ref = self._full_leaf(x) if len(x.shape) > 2 else None
        xr = self._regrouped(x, tuple(x.shape), gexpr, g) if ref is not None else None
        if xr is None:
            ref = x
            xr = self.view(f"{{0}}.reshape({{0}}.shape[0], {gexpr}, {{0}}.shape[1] // {gexpr}, -1)", [x],
                           (n, g, c // g, hw), x.dtype)
            xr.mm["groups"] = gexpr  # G at run time, for a product that holds these rows in its tile
        wr = self.view(f"{{0}}.reshape({gexpr}, -1, 1)", [w], (g, c // g, 1), w.dtype) if w is not None else None
        br = self.view(f"{{0}}.reshape({gexpr}, -1, 1)", [b], (g, c // g, 1), b.dtype) if b is not None else None
        y = self.norm(xr, 2, wr, br, eps, rms=False)
        y.mm["group_norm"] = (xr, wr, br, eps)  # for a mean of it over whole channels (reduced_group_norm)
        return self._grouped_view(y, ref, gexpr)

    def reduced_group_norm(self, fn: str, x: Val, dims: list[int]) -> Val | None:
        """The sum or mean over every spatial dim (and any of batch and channels) of x, a group norm's
        output through per-channel or constant affines, kept at x's rank: a channel's mean of the norm
        is the norm of the channel's mean, ((m_c - mu_g) * rstd_g) * w_c + b_c, and the group's
        statistics come from its channels' (mu_g the mean of m_c; var_g the mean of each channel's
        variance plus the variance of m_c, exactly). So one pass over the input (each channel's mean
        and squared deviations, paired as a layer norm's) and a small row kernel over each group's
        channels: the normalized tensor is neither written nor read back, where the norm's kernel and
        a reduction after it read the input twice and wrote it once. None where x is not of that form."""
        r = len(x.shape)
        if "grouped" not in x.mm or r < 3 or x.dtype != torch.float32 or not set(range(2, r)) <= set(dims):
            return None

        def per_channel_mean(y: Val) -> Val:  # (N, G, C/G, 1): each channel's mean of the norm's output
            xr, wr, br, eps = y.mm["group_norm"]
            m = self.red("mean", xr, -1, True)
            d = self.ew("sub", xr, m)
            m2 = self.red("mean", self.ew("mul", d, d), -1, True)
            mu = self.red("mean", m, [-2, -1], True)
            dm = self.ew("sub", m, mu)
            var = self.red("mean", self.ew("add", m2, self.ew("mul", dm, dm)), [-2, -1], True)
            out = self.ew("mul", dm, self.ew("rsqrt", self.ew("add", var, eps)))
            out = out if wr is None else self.ew("mul", out, wr)
            return out if br is None else self.ew("add", out, br)

        def operand(c, y: Val, scaling: bool):  # constant along the spatial dims, the layout's last
            if not isinstance(c, Val) or c.kind == "scalar":
                return c
            return c if not c.squeezed and len(c.shape) <= len(y.shape) and c.shape[-1] == 1 else None

        means = self._through_affines(x.args[0], lambda v: "group_norm" in v.mm, per_channel_mean, operand)
        if means is None:
            return None
        # over batch or channels too: a mean of equal-sized means (with the layout's trailing 1, the
        # channels' run is the rows' tail: a row kernel)
        lead = ([0] if 0 in dims else []) + ([1, 2, 3] if 1 in dims else [])
        if lead:
            means = self.reduce("mean", means, lead, True, {})
        if fn == "sum":  # the mean times the count, in the same kernel
            count = self.new("torch", expr=" * ".join(f"{{0}}.shape[{d}]" for d in dims), args=[x.mm["grouped"][0]],
                             shape=(), dtype=torch.float32, mm={"tuple": True, "number": True})
            means = self.ew("mul", means, self.number(count))
        return self.view("{0}.reshape({0}.shape[0], -1" + ", 1" * (r - 2) + ")", [means],
                         tuple(1 if d in dims else n for d, n in enumerate(x.shape)), x.dtype)

    def clamp(self, x, lo, hi) -> Val:
        """torch.clamp with numbers (one op) or tensors (maximum, then minimum: broadcast bounds)."""
        if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
            y = x if lo is None else self.ew("maximum", x, self.a(lo))
            return y if hi is None else self.ew("minimum", y, self.a(hi))
        return self.ew(f"clamp:{lo}:{hi}", x)

    def clamp_one_side(self, x, bound, low: bool) -> Val:
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise NotFusable
        return self.ew(f"clamp:{float(bound)}:None" if low else f"clamp:None:{float(bound)}", x)

    def tensor_constant(self, node: fx.Node) -> Val:
        """torch.tensor(c) of a float (a model attribute's or a literal), any device, a float dtype (x.dtype
        too): a 0-d value built on the inputs' device at run time, c rounded to that dtype as torch would.
        Anything else stays torch's and no kernel takes it as an operand (it may be on the host)."""
        c = node.args[0] if node.args else None
        dtype = node.kwargs.get("dtype", torch.float32)
        if isinstance(dtype, fx.Node):
            dtype = self.env.get(dtype)
        if len(node.args) == 1 and isinstance(c, float) and set(node.kwargs) <= {"dtype", "device"} \
                and isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            path = c.path if isinstance(c, AttrFloat) else repr(c)
            if dtype != torch.float32:
                path = f"torch.tensor({path}, dtype={dtype}).item()"
            return self.scalar(AttrFloat(c, path))
        v = self.torch_node(node)
        v.mm["tuple"] = True
        return v

    def transposed(self, x: Val) -> Val:
        """A 2-D value's transpose, as a view a matmul reads as its transposed operand instead (x @ w.T is
        a linear: no copy of w)."""
        if len(x.shape) != 2 or x.squeezed or x.mm.get("tuple"):
            raise NotFusable
        v = self.view("{0}.T", [x], x.shape[::-1], x.dtype)
        v.mm["transpose_of"] = x
        return v

    def masked_fill(self, x, mask, value) -> Val:
        """x where mask is false, value where it is true (a python number, ±inf included)."""
        if not isinstance(mask, Val) or mask.dtype != torch.bool or not isinstance(value, (int, float)) \
                or isinstance(value, bool) or math.isnan(value):
            raise NotFusable
        return self.ew("where", mask, float(value), x, dtype=x.dtype)

    def _reduced(self, x, dim) -> list[int]:
        """The dims a reduction over `dim` (an int, a list, or None: all) covers, from 0."""
        if not isinstance(x, Val) or isinstance(dim, fx.Node) or not x.shape:
            raise NotFusable
        dims = range(len(x.shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        if not all(isinstance(d, int) for d in dims):
            raise NotFusable
        return sorted({d % len(x.shape) for d in dims})

    def _squeeze(self, v: Val, dims: list[int], keepdim) -> Val:
        """A keepdim reduction's result without its reduced dims, as a view of the kernel's output."""
        if keepdim:
            return v
        shape = tuple(n for i, n in enumerate(v.shape) if i not in dims)
        if "unit_of" in v.mm:  # a view of a computed value: still one (the work after it joins that kernel)
            return self._unit_view(v.mm["unit_of"], shape)
        return self.view(f"{{0}}.squeeze({tuple(dims)})", [v], shape, v.dtype)

    def variance(self, x, dim, kw, std: bool, keepdim, unbiased) -> Val:
        """var / std as the mean of squared deviations from the mean (the row kernel pairs the two in one
        pass), divided by (count - correction) instead of count."""
        x = self.own_rows(x)
        dims = self._reduced(x, dim)
        c = kw.get("correction", 0 if unbiased is False else 1)
        if not isinstance(c, (int, float)) or isinstance(c, bool) or kw.get("dtype") is not None:
            raise NotFusable
        moved = self._on_moved(x, dims, lambda xm, d: self.variance(xm, d, kw, std, True, unbiased), keepdim)
        if moved is not None:
            return moved
        d = self.ew("sub", x, self.reduce("mean", x, dims, True, {}))
        var = self.reduce("mean", self.ew("square", d), dims, True, {})
        if c:
            var.mm["correction"] = float(c)
        return self._squeeze(self.ew("sqrt", var) if std else var, dims, keepdim)

    def logsumexp(self, x, dim, keepdim) -> Val:
        """log(sum(exp(x - max))) + max: the max and the sum of exponentials share a pass. (A row of only
        -inf gives nan where torch gives -inf.)"""
        x = self.own_rows(x)
        one = self.of_one(x, dim, keepdim) if isinstance(x, Val) else None
        if one is not None:
            return one
        dims = self._reduced(x, dim)
        moved = self._on_moved(x, dims, lambda xm, d: self.logsumexp(xm, d, True), keepdim)
        if moved is not None:
            return moved
        m = self.reduce("max", x, dims, True, {})
        s = self.reduce("sum", self.ew("exp", self.ew("sub", x, m)), dims, True, {})
        return self._squeeze(self.ew("add", self.ew("log", s), m), dims, keepdim)

    def normalize(self, x, p, dim, eps, kw) -> Val:
        """F.normalize: x over max(its p-norm along dim, eps), for p = 1 or 2."""
        if p not in (1, 2) or not isinstance(eps, (int, float)) or kw.get("out") is not None:
            raise NotFusable
        x = self.own_rows(x)
        dims = self._reduced(x, dim)
        moved = self._on_moved(x, dims, lambda xm, d: self.normalize(xm, p, d, eps, kw))
        if moved is not None:
            return moved
        return self.ew("div", x, self.clamp_one_side(self.vector_norm(x, p, dims, True), eps, low=True))

    def vector_norm(self, x, p, dim, keepdim) -> Val:
        """The p-norm over dim (all dims: None) for p = 1 or 2 ("fro" too): torch.norm, x.norm(),
        torch.linalg.vector_norm."""
        if p not in (1, 2, "fro"):
            raise NotFusable
        x = self.own_rows(x)
        dims = self._reduced(x, dim)
        moved = self._on_moved(x, dims, lambda xm, d: self.vector_norm(xm, p, d, True), keepdim)
        if moved is not None:
            return moved
        if p == 1:
            norm = self.reduce("sum", self.ew("abs", x), dims, True, {})
        else:
            norm = self.ew("sqrt", self.reduce("sum", self.ew("square", x), dims, True, {}))
        return self._squeeze(norm, dims, keepdim)

    def global_pool(self, x, output_size, fn: str, of: fx.Node | None = None) -> Val:
        """Adaptive pooling to one value per channel (output size 1): a mean or max over the spatial dims
        (`of`: x's FX node, as for reduce)."""
        if not isinstance(x, Val) or len(x.shape) < 3:
            raise NotFusable
        trail = len(x.shape) - 2
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * trail
        if len(sizes) != trail or any(s != 1 for s in sizes):
            raise NotFusable
        return self.reduce(fn, x, list(range(2, len(x.shape))), True, {}, of=of)

    def instance_norm(self, x, w, b, eps: float) -> Val:
        """(N, C, *spatial) normalized over its spatial dims per (batch, channel): a row normalization,
        the per-channel affine broadcast over the spatial dims."""
        if not isinstance(x, Val) or len(x.shape) < 3 or x.squeezed:
            raise NotFusable
        return self.norm(x, len(x.shape) - 2, self._per_channel(w, x), self._per_channel(b, x), eps, rms=False)

    def cast(self, x, dtype, more: tuple, kw: dict) -> Val:
        """A conversion to a float dtype, done on the kernel's fp32 value (stored in the new dtype); from an
        integer (an argmax's indices, rounded to nearest as torch's) or a mask (0 or 1) too."""
        if isinstance(dtype, fx.Node):
            dtype = self.env.get(dtype)
        dtype = kw.get("dtype", dtype)
        if more or set(kw) - {"dtype"} or not isinstance(x, Val) or not isinstance(dtype, torch.dtype) \
                or not dtype.is_floating_point:
            raise NotFusable
        return x if dtype == x.dtype else self.ew("cast" if x.dtype.is_floating_point else "cast:int", x, dtype=dtype)

    def _per_channel(self, p: Val | None, x: Val) -> Val | None:
        """A (C,) parameter of x = (N, C, *rest) viewed as (C, 1, ...), so it broadcasts over the dims after
        the channel (as it is for a 2-D x)."""
        trail = len(x.shape) - 2
        if p is None or not trail:
            return p
        return self.view(f"{{0}}.reshape(-1{', 1' * trail})", [p], (x.shape[1],) + (1,) * trail, p.dtype)

    def batch_norm(self, x: Val, mean, var, w, b, eps: float) -> Val:
        """Inference batch norm, a per-channel affine from the running statistics: elementwise work for
        the kernel around it (a convolution's tail), not a pass of its own."""
        if not isinstance(x, Val) or len(x.shape) < 2 or not isinstance(mean, Val) \
                or not isinstance(var, Val):
            raise NotFusable
        mean, var, w, b = (self._per_channel(p, x) for p in (mean, var, w, b))
        y = self.ew("mul", self.ew("sub", x, mean), self.ew("rsqrt", self.ew("add", var, eps)))
        if w is not None:
            y = self.ew("mul", y, w)
        return self.ew("add", y, b) if b is not None else y

    def conv_module(self, node: fx.Node, x: Val, target: str) -> Val:
        """An nn.Conv1d/2d/3d (zero padding mode): see conv_then_bias."""
        mod = self.gm.get_submodule(target)
        c = self_path(target)
        bias = self.module_param(target, "bias") if mod.bias is not None else None
        return self.conv_then_bias(node, x, self.module_param(target, "weight"), bias,
                                   f"({c}.stride, {c}.padding, {c}.dilation, {c}.groups)", [], True,
                                   traced=(mod.stride, mod.padding, mod.dilation))

    def conv_function(self, node: fx.Node, args: tuple, kw: dict) -> Val:
        """F.conv1d/2d/3d(input, weight, bias, stride, padding, dilation, groups): see conv_then_bias."""
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        if set(kw) - set(names) or len(args) > len(names):
            raise NotFusable
        b = dict(zip(names, args)) | dict(kw)
        deps: list[Val] = []
        geometry = [self.python_arg(b.get(n, d), deps) for n, d in (("stride", 1), ("padding", 0), ("dilation", 1),
                                                                        ("groups", 1))]
        bias = self.a(b["bias"]) if b.get("bias") is not None else None
        implicit = isinstance(b.get("groups", 1), int)
        return self.conv_then_bias(node, self.a(b["input"]), self.a(b["weight"]), bias,
                                   "(" + ", ".join(geometry) + ")", deps, implicit, traced=_traced_geometry(b))

    def conv_transpose_module(self, node: fx.Node, x: Val, target: str) -> Val:
        """An nn.ConvTranspose1d/2d/3d (zero padding mode, no output_size at the call): see conv_then_bias."""
        mod = self.gm.get_submodule(target)
        c = self_path(target)
        bias = self.module_param(target, "bias") if mod.bias is not None else None
        return self.conv_then_bias(node, x, self.module_param(target, "weight"), bias,
                                   f"({c}.stride, {c}.padding, {c}.dilation, {c}.groups, {c}.output_padding)", [],
                                   True, transposed=True, traced=(mod.stride, mod.padding, mod.dilation))

    def conv_transpose_function(self, node: fx.Node, args: tuple, kw: dict) -> Val:
        """F.conv_transpose1d/2d/3d(input, weight, bias, stride, padding, output_padding, groups, dilation)."""
        names = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
        if set(kw) - set(names) or len(args) > len(names):
            raise NotFusable
        b = dict(zip(names, args)) | dict(kw)
        deps: list[Val] = []
        geometry = [self.python_arg(b.get(n, d), deps) for n, d in (("stride", 1), ("padding", 0), ("dilation", 1),
                                                                        ("groups", 1), ("output_padding", 0))]
        bias = self.a(b["bias"]) if b.get("bias") is not None else None
        return self.conv_then_bias(node, self.a(b["input"]), self.a(b["weight"]), bias,
                                   "(" + ", ".join(geometry) + ")", deps, isinstance(b.get("groups", 1), int),
                                   transposed=True, traced=_traced_geometry(b))

    def conv_then_bias(self, node: fx.Node, x: Val, w: Val, bias: Val | None, geometry: str, deps: list,
                       implicit: bool, transposed: bool = False, traced: tuple | None = None) -> Val:
        """A convolution without its bias, the bias an elementwise add: the add joins the tail kernel
        after the convolution (as Inductor does) instead of a pass in cuDNN. The convolution is a `conv`
        value: cuDNN's (rendered as F.convNd), or, with groups known when traced (`implicit`), also an
        implicit-GEMM Triton kernel with the tail as its epilogue (conv.py).
        `geometry`: Python for (stride, padding, dilation, groups), read at run time, and output_padding
        after them when `transposed` (a transposed convolution: F.conv_transposeNd, its weight
        (CI, CO / groups, *kernel)). `traced`: (stride, padding, dilation) as traced, where known."""
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, Val) or not isinstance(w, Val) or not hasattr(meta, "shape") \
                or len(x.shape) not in (3, 4, 5) or len(w.shape) != len(x.shape) or x.squeezed:
            raise NotFusable
        dims = len(x.shape) - 2
        cfg = self.new("torch", expr=geometry, args=deps, shape=(), dtype=torch.float32, mm={"tuple": True})
        groups = meta.shape[1] // w.shape[1] if transposed else x.shape[1] // w.shape[1]  # as traced
        conv = self.new("conv", args=[x, w, cfg], shape=tuple(meta.shape), dtype=meta.dtype,
                        mm={"dims": dims, "conv2d": dims == 2, "implicit_gemm": implicit,  # conv2d: cuDNN may
                            "transposed": transposed, "groups": groups, "traced": traced})  # read channels-last
        if bias is None:
            return conv
        return self.ew("add", conv, self._per_channel(bias, conv))

    def composite_call(self, fn, args: tuple, kw: dict) -> Val:
        """F.softmin (softmax of -x), torch.lerp (start + weight * (end - start)) and torch.addcmul
        (x + value * t1 * t2), from their arguments bound by name."""
        names = {F.softmin: ("input", "dim", "_stacklevel", "dtype"), torch.lerp: ("input", "end", "weight"),
                 torch.addcmul: ("input", "tensor1", "tensor2")}[fn]
        b = dict(zip(names, args)) | dict(kw)
        if fn is F.softmin:
            if b.get("dtype") is not None or not isinstance(b.get("dim"), int):
                raise NotFusable
            return self.softmax(self.ew("neg", self.a(b["input"])), b["dim"], log=False)
        x, y = self.a(b["input"]), self.a(b[names[1]])
        if fn is torch.lerp:
            if not isinstance(x, Val) or not isinstance(y, Val) or "out" in b:
                raise NotFusable
            return self.ew("add", x, self.ew("mul", self.a(b["weight"]), self.ew("sub", y, x)))
        value = b.get("value", 1)
        if "out" in b or not isinstance(value, (int, float)) or isinstance(value, bool) or not isinstance(x, Val):
            raise NotFusable
        return self.ew("add", x, self.ew("mul", self.ew("mul", y, self.a(b["tensor2"])), float(value)))

    def glu(self, x, dim) -> Val:
        """F.glu: the first half along dim times the sigmoid of the second (halves taken at run time)."""
        if not isinstance(x, Val) or not isinstance(dim, int) or x.squeezed or not x.shape \
                or x.shape[dim] % 2:
            raise NotFusable
        half = tuple(n // 2 if i == dim % len(x.shape) else n for i, n in enumerate(x.shape))
        first = self.view(f"{{0}}.chunk(2, {dim})[0]", [x], half, x.dtype)
        second = self.view(f"{{0}}.chunk(2, {dim})[1]", [x], half, x.dtype)
        for v in (first, second):  # the dims from `dim` on are apart in memory from those before: read in place
            v.mm.update(barrier=dim % len(x.shape), dense_last=True)
        return self.ew("mul", first, self.ew("sigmoid", second))

    def prelu(self, x: Val, w: Val) -> Val:
        """x where positive, w * x elsewhere; w one value, or one per channel (dim 1)."""
        if not isinstance(x, Val) or not isinstance(w, Val) or len(w.shape) != 1 or x.squeezed:
            raise NotFusable
        slope = w if w.shape[0] == 1 else self._per_channel(w, x)
        if slope is None:
            raise NotFusable
        return self.ew("where", self.ew("gt", x, 0.0), x, self.ew("mul", slope, x), dtype=x.dtype)

    def pow(self, x, p):
        if not isinstance(x, Val) or isinstance(p, fx.Node):
            raise NotFusable
        if p == 2:
            return self.ew("square", x)
        if p == 3:
            return self.ew("mul", self.ew("square", x), x)
        if p == 0.5:
            return self.ew("sqrt", x)
        if p == -1:
            return self.ew("reciprocal", x)
        if p == -0.5:
            return self.ew("rsqrt", x)
        if isinstance(p, float) and not p.is_integer():  # x ** 2.5: NaN below 0, as torch's
            return self.ew("exp", self.ew("mul", self.ew("log", x), p))
        raise NotFusable


def _traced_geometry(bound: dict) -> tuple | None:
    """A convolution call's (stride, padding, dilation) as traced, None where the forward computes one."""
    traced = tuple(bound.get(n, d) for n, d in (("stride", 1), ("padding", 0), ("dilation", 1)))
    return None if any(isinstance(v, fx.Node) for v in traced) else traced
