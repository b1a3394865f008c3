"""From a problem's Model to a small IR of primitive ops, partitioned into fusable regions.

The FX graph (symbolic_trace + ShapeProp on real, small inputs) is lowered to `Val`s: leaves
(inputs, parameters), elementwise primitives ("ew"), row reductions over trailing dims ("red"),
column reductions over middle dims ("cred"), matmuls ("mm"), row top-k values ("topk"), attention
(found by fx_attention: "attn") and everything else ("torch", left to PyTorch). Composite ops
(softmax, layer_norm, gelu, linear...) are decomposed so that one code generator per region kind
covers them all. Regions are grown backwards from each value: a producer joins its consumers'
region when all its users are there and the region's iteration space can hold it.
"""

from __future__ import annotations

import math
import operator
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import _get_qualified_name
from torch.fx.passes.shape_prop import ShapeProp

from .aten import is_aten_graph, returns_one_tensor, torch_level
from .fx_attention import attention, fuse_attention


class Unsupported(Exception):
    """The module cannot be traced or lowered at all."""


class _AttrFloat(float):
    """A float attribute of the model (e.g. `self.scale = 1 / sqrt(head_dim)`), tagged with its path
    while tracing: its value depends on the init inputs, so it must stay a runtime value, never be
    baked into a kernel from the small instance the graph was traced on."""

    def __new__(cls, value: float, path: str):  # path: the python expression that reads it
        obj = super().__new__(cls, value)
        obj.path = path
        return obj


def _tag_float_attrs(model: nn.Module) -> list:
    saved = []
    for mname, mod in model.named_modules():
        for key, val in list(vars(mod).items()):
            if type(val) is float and not key.startswith("_"):
                saved.append((mod, key, val))
                # read at run time; the traced value stands in when ModelNew's __init__ does not set it
                # (a module object's constructor arguments the problem file never sees)
                owner = f"self.{mname}" if mname else "self"
                object.__setattr__(mod, key, _AttrFloat(val, f"getattr({owner}, {key!r}, {val!r})"))
    return saved


@dataclass(eq=False)
class Val:
    name: str
    kind: str                 # input | param | scalar | ew | red | cred | mm | topk | attn | torch | view
    fn: str = ""              # ew/red primitive name
    args: list = field(default_factory=list)   # Vals or python numbers
    shape: tuple = ()
    dtype: torch.dtype = torch.float32
    expr: str = ""            # param/scalar: python expression; torch: python expression with {0}, {1}.. for args
    squeezed: bool = False    # a row value whose reduced dims were dropped (keepdim=False)
    k: int = 0                # red: number of trailing dims reduced
    mm: dict = field(default_factory=dict)  # mm: {"trans_b": bool, "batched": bool, "flatten_a": bool}

    def __repr__(self) -> str:
        return f"Val({self.name}:{self.kind}:{self.fn or self.expr})"


@dataclass
class Graph:
    vals: list[Val]           # topological order
    inputs: list[Val]         # forward arguments, in order (None-valued args are not supported)
    outputs: list[Val]
    output_is_tuple: bool
    users: dict[int, list[Val]] = field(default_factory=dict)

    def compute_users(self) -> None:
        self.users = {id(v): [] for v in self.vals}
        for v in self.vals:
            for a in v.args:
                if isinstance(a, Val) and v not in self.users[id(a)]:
                    self.users[id(a)].append(v)


# --------------------------------------------------------------------------------------------
# lowering

_BIN = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub", operator.mul: "mul",
        torch.mul: "mul", operator.truediv: "div", torch.div: "div", torch.true_divide: "div",
        torch.maximum: "maximum", torch.minimum: "minimum", operator.gt: "gt", operator.lt: "lt",
        operator.ge: "ge", operator.le: "le", operator.eq: "eq", torch.gt: "gt", torch.lt: "lt",
        torch.ge: "ge", torch.le: "le"}
_BIN_METHODS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "maximum",
                "minimum": "minimum", "gt": "gt", "lt": "lt", "ge": "ge", "le": "le"}
_UN = {torch.relu: "relu", F.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", torch.tanh: "tanh",
       F.tanh: "tanh", torch.exp: "exp", torch.log: "log", torch.abs: "abs", torch.sqrt: "sqrt",
       torch.rsqrt: "rsqrt", operator.neg: "neg", torch.neg: "neg", F.silu: "silu", F.mish: "mish",
       F.hardswish: "hardswish", F.hardsigmoid: "hardsigmoid", torch.square: "square",
       torch.reciprocal: "reciprocal", torch.erf: "erf", F.relu6: "relu6", operator.abs: "abs",
       F.softsign: "softsign", F.selu: "selu", torch.selu: "selu", F.logsigmoid: "logsigmoid",
       F.tanhshrink: "tanhshrink"}
_UN_METHODS = {"relu", "sigmoid", "tanh", "exp", "log", "abs", "sqrt", "rsqrt", "neg", "square", "reciprocal",
               "erf"}
_UN_MODULES = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.SiLU: "silu", nn.Mish: "mish",
               nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.ReLU6: "relu6",
               nn.Softsign: "softsign", nn.SELU: "selu", nn.LogSigmoid: "logsigmoid", nn.Tanhshrink: "tanhshrink"}
# activations with parameters: (module attributes or function arguments with their defaults) -> "name:p:q"
_PARAM_MODULES = {nn.CELU: ("celu", ("alpha",)), nn.Threshold: ("threshold", ("threshold", "value")),
                  nn.Softshrink: ("softshrink", ("lambd",)), nn.Hardshrink: ("hardshrink", ("lambd",))}
_PARAM_FNS = {F.celu: ("celu", (("alpha", 1.0),)), F.softshrink: ("softshrink", (("lambd", 0.5),)),
              F.hardshrink: ("hardshrink", (("lambd", 0.5),)),
              F.threshold: ("threshold", (("threshold", None), ("value", None))),
              getattr(F, "_threshold", F.threshold): ("threshold", (("threshold", None), ("value", None)))}
# float dtype conversions: x.float(), x.to(torch.bfloat16), x.type(torch.float32)...
_CAST_METHODS = {"float": torch.float32, "double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16}
_IDENTITY_METHODS = {"contiguous"}
_RED_FNS = {torch.sum: "sum", torch.mean: "mean", torch.amax: "max", torch.amin: "min"}
_RED_METHODS = {"sum": "sum", "mean": "mean", "amax": "max", "amin": "min"}
_TOPK_MAX_K = 64


class _Lowerer:
    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.vals: list[Val] = []
        self.env: dict[fx.Node, object] = {}
        self.count = 0
        self.regrouped: dict[tuple, Val | None] = {}  # (id of a value, G's expression) -> it in that layout

    def new(self, kind: str, **kw) -> Val:
        v = Val(name=f"v{self.count}", kind=kind, **kw)
        self.count += 1
        self.vals.append(v)
        return v

    # -- helpers that build primitives with their shapes --
    def ew(self, fn: str, *args, dtype=None) -> Val:
        laid_out = self._in_group_layout(fn, args, dtype)
        if laid_out is None:
            laid_out = self._in_moved_layout(fn, args, dtype)
        if laid_out is not None:
            return laid_out
        shapes = [a.shape for a in args if isinstance(a, Val)]
        shape = tuple(torch.broadcast_shapes(*shapes)) if shapes else ()
        sq = any(isinstance(a, Val) and a.squeezed for a in args)
        if dtype is None:
            dts = [a.dtype for a in args if isinstance(a, Val) and a.kind != "scalar"]
            dtype = dts[0] if dts else torch.float32
            for d in dts[1:]:
                dtype = torch.promote_types(dtype, d)
        if fn in ("gt", "lt", "ge", "le", "eq"):
            dtype = torch.bool
        return self.new("ew", fn=fn, args=list(args), shape=shape, dtype=dtype, squeezed=sq)

    def red(self, fn: str, x: Val, dims, keepdim: bool) -> Val:
        r = len(x.shape)
        if dims is None:
            dims = list(range(r))
        if isinstance(dims, int):
            dims = [dims]
        dims = sorted(d % r for d in dims) if r else []
        k = len(dims)
        if r == 0 or dims != list(range(r - k, r)) or x.squeezed:
            raise _NotFusable
        shape = x.shape[: r - k] + ((1,) * k if keepdim else ())
        return self.new("red", fn=fn, args=[x], shape=shape, dtype=x.dtype, squeezed=not keepdim, k=k)

    def col(self, fn: str, x: Val, dims, keepdim: bool) -> Val:
        """A reduction over a contiguous run of non-trailing dims: (pre, R, post) -> (pre, post)."""
        r = len(x.shape)
        if isinstance(dims, int):
            dims = [dims]
        if r == 0 or dims is None or x.squeezed:
            raise _NotFusable
        dims = sorted(d % r for d in dims)
        d0, d1 = dims[0], dims[-1] + 1
        if dims != list(range(d0, d1)) or d1 == r:
            raise _NotFusable
        shape = x.shape[:d0] + ((1,) * (d1 - d0) if keepdim else ()) + x.shape[d1:]
        return self.new("cred", fn=fn, args=[x], shape=tuple(shape), dtype=x.dtype, k=d1 - d0,
                        mm={"dims": (d0, d1), "keepdim": keepdim})

    def softmax(self, x: Val, dim, log: bool) -> Val:
        moved = self._over_middle_dims(x, dim)
        if moved is not None:  # softmax(x, dim=1) of (N, C, H, W): rows of C, in place
            xm, key = moved
            return self._moved_back(self.softmax(xm, -1, log), key)
        m = self.red("max", x, dim, True)
        xs = self.ew("sub", x, m)
        e = self.ew("exp", xs)
        s = self.red("sum", e, dim, True)
        if log:
            return self.ew("sub", xs, self.ew("log", s))
        return self.ew("div", e, s)

    # -- reductions over middle dims, as rows: (N, C, H, W) over C is read as (N, H, W, C) rows in place --
    def _over_middle_dims(self, x, dim) -> tuple[Val, tuple] | None:
        """x in the layout where the middle dims `dim` covers are trailing (a view: the row kernel reads
        its strides), with the elementwise ops computing x redone there; None when they are trailing
        already or not one run of dims."""
        if not isinstance(x, Val) or x.squeezed or isinstance(dim, fx.Node) or not x.shape:
            return None
        try:
            dims = self._reduced(x, dim)
        except _NotFusable:
            return None
        r, k = len(x.shape), len(dims)
        if dims != list(range(dims[0], dims[0] + k)) or dims[-1] == r - 1:
            return None
        key = (tuple(dims), tuple(range(r - k, r)))
        xm = self._moved(x, key)
        return (xm, key) if xm is not None else None

    def _moved_operand(self, a: Val, key: tuple) -> Val | None:
        """An operand of an op in x's shape, as its view in the layout `key` = (dims, where they go)."""
        if a.squeezed or a.mm.get("tuple"):
            return None
        if not a.shape or a.kind == "scalar":
            return a  # broadcasts the same in any layout
        src, dst = key
        r = dst[-1] + 1  # the moved dims go last
        if len(a.shape) > r:
            return None
        pad = r - len(a.shape)
        padded_shape = (1,) * pad + tuple(a.shape)
        order = [d for d in range(r) if d not in src]
        order[dst[0]:dst[0]] = list(src)  # the permuted position of each dim
        index = f"[{'None, ' * pad}...]" if pad else ""
        v = self.view(f"{{0}}{index}.movedim({src}, {dst})", [a], tuple(padded_shape[d] for d in order), a.dtype)
        v.mm["barrier"] = src[0]  # the dims after the moved ones start here; in memory they are apart
        return v

    def _moved(self, v: Val, key: tuple) -> Val | None:
        """v in the layout `key`: its elementwise ops at full shape redone there from their leaves' views."""
        memo = (id(v), key)  # a value two ops read is moved once (one leaf of the kernel)
        if memo not in self.regrouped:
            if v.kind != "ew" or v.squeezed or v.fn == "pick":
                self.regrouped[memo] = self._moved_operand(v, key)
            else:
                args = [self._moved(a, key) if isinstance(a, Val) else a for a in v.args]
                self.regrouped[memo] = None if any(a is None for a in args) else self.ew(
                    v.fn, *args, dtype=v.dtype)
        return self.regrouped[memo]

    def _moved_back(self, y: Val, key: tuple) -> Val:
        """y, computed in the layout `key`, viewed in the original dim order; later elementwise ops see
        through it (they are done in the layout too)."""
        src, dst = key
        r = len(y.shape)
        order = [d for d in range(r) if d not in src]
        order[dst[0]:dst[0]] = list(src)
        shape = [0] * r
        for pos, d in enumerate(order):
            shape[d] = y.shape[pos]
        v = self.view(f"{{0}}.movedim({dst}, {src})", [y], tuple(shape), y.dtype)
        v.mm["moved"] = key
        return v

    def _in_moved_layout(self, fn: str, args, dtype) -> Val | None:
        """An elementwise op on a value computed in a moved layout, done in that layout (as for a group
        norm's), so the row kernel that computed it takes the op as its epilogue."""
        views = [a for a in args if isinstance(a, Val) and "moved" in a.mm]
        if not views:
            return None
        key = views[0].mm["moved"]
        r = len(views[0].shape)
        if len(torch.broadcast_shapes(*[a.shape for a in args if isinstance(a, Val)])) != r:
            return None
        moved = []
        for a in args:
            if isinstance(a, Val) and "moved" in a.mm:
                if a.mm["moved"] != key:
                    return None
                moved.append(a.args[0])
            elif isinstance(a, Val):
                moved.append(self._moved(a, key))
                if moved[-1] is None:
                    return None
            else:
                moved.append(a)
        return self._moved_back(self.ew(fn, *moved, dtype=dtype), key)

    def cross_entropy(self, x, t, ignore_index, reduction) -> Val:
        """Cross-entropy of (M, C) logits against class indices: per row the log-sum-exp minus the
        target's logit, which the row kernel reads at that column only (`pick`), 0 where the target is
        ignore_index; then the mean over the rows not ignored, or the sum."""
        if not isinstance(x, Val) or not isinstance(t, Val) or len(x.shape) != 2 or x.squeezed \
                or tuple(t.shape) != tuple(x.shape[:1]) or t.dtype not in (torch.int64, torch.int32) \
                or not x.dtype.is_floating_point or reduction not in ("none", "mean", "sum") \
                or type(ignore_index) is not int:
            raise _NotFusable
        m = self.red("max", x, -1, True)
        lse = self.ew("add", m, self.ew("log", self.red("sum", self.ew("exp", self.ew("sub", x, m)), -1, True)))
        tc = self.view("{0}.reshape(-1, 1)", [t], (x.shape[0], 1), t.dtype)
        picked = self.new("ew", fn="pick", args=[x, tc], shape=(x.shape[0], 1), dtype=x.dtype)
        loss = self.ew("where", self.ew("eq", tc, float(ignore_index)), 0.0, self.ew("sub", lse, picked),
                       dtype=x.dtype)
        # the batch sum reads the loss through a view, so the per-row kernel stays one and writes it
        flat = self.view("{0}.reshape(-1)", [loss], tuple(x.shape[:1]), x.dtype)
        if reduction == "none":
            return flat
        total = self.red("sum", flat, None, False)
        if reduction == "sum":
            return total
        kept = self.ew("where", self.ew("eq", t, float(ignore_index)), 0.0, 1.0, dtype=x.dtype)
        return self.ew("div", total, self.red("sum", kept, None, False))

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

    def view(self, expr: str, args: list, shape: tuple, dtype) -> Val:
        """A reshape that costs nothing at run time (expr with {0}, {1}.. slots for args)."""
        return self.new("view", expr=expr, args=list(args), shape=tuple(shape), dtype=dtype)

    def _in_group_layout(self, fn: str, args, dtype) -> Val | None:
        """An elementwise op on a group norm's output, done in the norm's (N, G, C/G, spatial) layout and
        viewed back, so that the norm's row kernel takes it as epilogue instead of a kernel of its own
        running behind the reshape. None when an operand does not map into that layout."""
        views = [a for a in args if isinstance(a, Val) and "grouped" in a.mm]
        if not views:
            return None
        x, gexpr = views[0].mm["grouped"]
        shape = tuple(x.shape)
        if tuple(torch.broadcast_shapes(*[a.shape for a in args if isinstance(a, Val)])) != shape:
            return None
        g = views[0].args[0].shape[1]  # the layout's G
        moved = []
        for a in args:
            if not isinstance(a, Val):
                moved.append(a)
            elif "grouped" in a.mm:
                ax, ag = a.mm["grouped"]
                if tuple(ax.shape) != shape or ag != gexpr:
                    return None
                moved.append(a.args[0])
            else:
                moved.append(self._regrouped(a, shape, gexpr, g))
                if moved[-1] is None:
                    return None
        return self._grouped_view(self.ew(fn, *moved, dtype=dtype), x, gexpr)

    def _group_operand(self, a: Val, shape: tuple, gexpr: str, g: int) -> Val | None:
        """An operand of an op on shape (N, C, *spatial), as its view in the group norm's (N, G, C/G,
        prod(spatial)) layout, sized from its own shape: (N or 1, C or 1, all spatial dims or none).
        None when it broadcasts otherwise."""
        if a.squeezed:
            return None
        pad = len(shape) - len(a.shape)
        pa = (1,) * pad + tuple(a.shape)
        spatial = pa[2:] == tuple(shape[2:])
        if pa[0] not in (1, shape[0]) or pa[1] not in (1, shape[1]) or not (
                spatial or all(d == 1 for d in pa[2:])):
            return None
        dims = [(f"{{0}}.shape[{0 - pad}]", shape[0]) if pa[0] != 1 else ("1", 1)]
        dims += [(gexpr, g), (f"{{0}}.shape[{1 - pad}] // {gexpr}", shape[1] // g)] if pa[1] != 1 else [("1", 1)] * 2
        dims += [("-1", math.prod(shape[2:])) if spatial and math.prod(shape[2:]) != 1 else ("1", 1)]
        return self.view(f"{{0}}.reshape({', '.join(e for e, _ in dims)})", [a], tuple(n for _, n in dims),
                         a.dtype)

    def _regrouped(self, v: Val, shape: tuple, gexpr: str, g: int) -> Val | None:
        """v, the input of a group norm, in the norm's layout: the elementwise ops that compute it at
        full shape are done again in that layout (their leaves viewed into it), so the norm's row kernel
        takes them as prologue (a convolution's bias, a scale) instead of reading their output."""
        if v.kind != "ew" or tuple(v.shape) != shape or v.squeezed or v.fn == "pick":
            return self._group_operand(v, shape, gexpr, g)
        key = (id(v), gexpr)  # a value two ops read is redone once
        if key not in self.regrouped:
            args = [self._regrouped(a, shape, gexpr, g) if isinstance(a, Val) else a for a in v.args]
            out_shape = (shape[0], g, shape[1] // g, math.prod(shape[2:]))
            self.regrouped[key] = None if any(a is None for a in args) else self.new(
                "ew", fn=v.fn, args=args, shape=out_shape, dtype=v.dtype)
        return self.regrouped[key]

    @staticmethod
    def _full_leaf(v: Val) -> Val | None:
        """A value v's elementwise ops read that is not itself elementwise and has v's whole shape."""
        for a in v.args if v.kind == "ew" else ():
            if isinstance(a, Val) and tuple(a.shape) == tuple(v.shape) and not a.squeezed:
                found = a if a.kind != "ew" else _Lowerer._full_leaf(a)
                if found is not None:
                    return found
        return None

    def _grouped_view(self, y: Val, x: Val, gexpr: str) -> Val:
        """y, in a group norm's row layout, viewed back as x's shape; later elementwise ops see through it."""
        v = self.view("{0}.reshape({1}.shape)", [y, x], x.shape, y.dtype)
        v.mm["grouped"] = (x, gexpr)
        return v

    def group_norm(self, x: Val, g, gexpr: str, w, b, eps: float) -> Val:
        """(N, C, *spatial) seen as (N, G, C/G, prod(spatial)): a row normalization over the last two
        dims per (batch, group), the per-channel affine a (G, C/G, 1) leaf of the same row kernel.
        gexpr is G in the candidate's forward (`self.norm.num_groups` when it may follow the init inputs)."""
        if x.squeezed or len(x.shape) < 2 or not isinstance(g, int) or isinstance(g, bool):
            raise _NotFusable
        n, c = x.shape[:2]
        if g <= 0 or c % g:
            raise _NotFusable
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
        wr = self.view(f"{{0}}.reshape({gexpr}, -1, 1)", [w], (g, c // g, 1), w.dtype) if w is not None else None
        br = self.view(f"{{0}}.reshape({gexpr}, -1, 1)", [b], (g, c // g, 1), b.dtype) if b is not None else None
        y = self.norm(xr, 2, wr, br, eps, rms=False)
        return self._grouped_view(y, ref, gexpr)

    def clamp_one_side(self, x, bound, low: bool) -> Val:
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise _NotFusable
        return self.ew(f"clamp:{float(bound)}:None" if low else f"clamp:None:{float(bound)}", x)

    def tensor_constant(self, node: fx.Node) -> Val:
        """torch.tensor(c) of a float (a model attribute's or a literal): a 0-d fp32 value built on the
        inputs' device at run time. Anything else stays torch's, made on the host, so no kernel reads it."""
        c = node.args[0] if node.args else None
        if len(node.args) == 1 and isinstance(c, float) and node.kwargs.get("dtype", torch.float32) == torch.float32 \
                and set(node.kwargs) <= {"dtype"}:
            return self.scalar(c if isinstance(c, _AttrFloat) else _AttrFloat(c, repr(c)))
        v = self.torch_node(node)
        v.mm["tuple"] = True
        return v

    def transposed(self, x: Val) -> Val:
        """A 2-D value's transpose, as a view a matmul reads as its transposed operand instead (x @ w.T is
        a linear: no copy of w)."""
        if len(x.shape) != 2 or x.squeezed or x.mm.get("tuple"):
            raise _NotFusable
        v = self.view("{0}.T", [x], x.shape[::-1], x.dtype)
        v.mm["transpose_of"] = x
        return v

    def masked_fill(self, x, mask, value) -> Val:
        """x where mask is false, value where it is true (a python number, ±inf included)."""
        if not isinstance(mask, Val) or mask.dtype != torch.bool or not isinstance(value, (int, float)) \
                or isinstance(value, bool) or math.isnan(value):
            raise _NotFusable
        return self.ew("where", mask, float(value), x, dtype=x.dtype)

    def _reduced(self, x, dim) -> list[int]:
        """The dims a reduction over `dim` (an int, a list, or None: all) covers, from 0."""
        if not isinstance(x, Val) or isinstance(dim, fx.Node) or not x.shape:
            raise _NotFusable
        dims = range(len(x.shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        if not all(isinstance(d, int) for d in dims):
            raise _NotFusable
        return sorted({d % len(x.shape) for d in dims})

    def _squeeze(self, v: Val, dims: list[int], keepdim) -> Val:
        """A keepdim reduction's result without its reduced dims, as a view of the kernel's output."""
        if keepdim:
            return v
        shape = tuple(n for i, n in enumerate(v.shape) if i not in dims)
        return self.view(f"{{0}}.squeeze({tuple(dims)})", [v], shape, v.dtype)

    def variance(self, x, dim, kw, std: bool, keepdim, unbiased) -> Val:
        """var / std as the mean of squared deviations from the mean (the row kernel pairs the two in one
        pass), divided by (count - correction) instead of count."""
        dims = self._reduced(x, dim)
        c = kw.get("correction", 0 if unbiased is False else 1)
        if not isinstance(c, (int, float)) or isinstance(c, bool) or kw.get("dtype") is not None:
            raise _NotFusable
        moved = self._over_middle_dims(x, dims)
        if moved is not None:
            xm, key = moved
            inner = self.variance(xm, list(key[1]), kw, std, True, unbiased)
            return self._squeeze(self._moved_back(inner, key), dims, keepdim)
        d = self.ew("sub", x, self.reduce("mean", x, dims, True, {}))
        var = self.reduce("mean", self.ew("square", d), dims, True, {})
        if c:
            var.mm["correction"] = float(c)
        return self._squeeze(self.ew("sqrt", var) if std else var, dims, keepdim)

    def logsumexp(self, x, dim, keepdim) -> Val:
        """log(sum(exp(x - max))) + max: the max and the sum of exponentials share a pass. (A row of only
        -inf gives nan where torch gives -inf.)"""
        dims = self._reduced(x, dim)
        moved = self._over_middle_dims(x, dims)
        if moved is not None:
            xm, key = moved
            return self._squeeze(self._moved_back(self.logsumexp(xm, list(key[1]), True), key), dims, keepdim)
        m = self.reduce("max", x, dims, True, {})
        s = self.reduce("sum", self.ew("exp", self.ew("sub", x, m)), dims, True, {})
        return self._squeeze(self.ew("add", self.ew("log", s), m), dims, keepdim)

    def normalize(self, x, p, dim, eps, kw) -> Val:
        """F.normalize: x over max(its p-norm along dim, eps), for p = 1 or 2."""
        if p not in (1, 2) or not isinstance(eps, (int, float)) or kw.get("out") is not None:
            raise _NotFusable
        dims = self._reduced(x, dim)
        moved = self._over_middle_dims(x, dims)
        if moved is not None:
            xm, key = moved
            return self._moved_back(self.normalize(xm, p, list(key[1]), eps, kw), key)
        if p == 2:
            norm = self.ew("sqrt", self.reduce("sum", self.ew("square", x), dims, True, {}))
        else:
            norm = self.reduce("sum", self.ew("abs", x), dims, True, {})
        return self.ew("div", x, self.clamp_one_side(norm, eps, low=True))

    def instance_norm(self, x, w, b, eps: float) -> Val:
        """(N, C, *spatial) normalized over its spatial dims per (batch, channel): a row normalization,
        the per-channel affine broadcast over the spatial dims."""
        if not isinstance(x, Val) or len(x.shape) < 3 or x.squeezed:
            raise _NotFusable
        trail = len(x.shape) - 2
        w, b = (self.view(f"{{0}}.reshape(-1{', 1' * trail})", [p], (x.shape[1],) + (1,) * trail, p.dtype)
                if p is not None else None for p in (w, b))
        return self.norm(x, trail, w, b, eps, rms=False)

    def cast(self, x, dtype, more: tuple, kw: dict) -> Val:
        """A float-to-float dtype conversion, done on the kernel's fp32 value (stored in the new dtype)."""
        if isinstance(dtype, fx.Node):
            dtype = self.env.get(dtype)
        dtype = kw.get("dtype", dtype)
        if more or set(kw) - {"dtype"} or not isinstance(x, Val) or not isinstance(dtype, torch.dtype) \
                or not dtype.is_floating_point or not x.dtype.is_floating_point:
            raise _NotFusable
        return x if dtype == x.dtype else self.ew("cast", x, dtype=dtype)

    def batch_norm(self, x: Val, mean, var, w, b, eps: float) -> Val:
        """Inference batch norm, a per-channel affine from the running statistics: elementwise work for
        the kernel around it (a convolution's tail), not a pass of its own."""
        if not isinstance(x, Val) or len(x.shape) < 2 or not isinstance(mean, Val) \
                or not isinstance(var, Val):
            raise _NotFusable
        trail = len(x.shape) - 2

        def per_channel(p):  # (C,) → (C, 1, ...): broadcasts over the dims after the channel
            if p is None or not trail:
                return p
            return self.view(f"{{0}}.reshape(-1{', 1' * trail})", [p], (x.shape[1],) + (1,) * trail, p.dtype)

        mean, var, w, b = (per_channel(p) for p in (mean, var, w, b))
        y = self.ew("mul", self.ew("sub", x, mean), self.ew("rsqrt", self.ew("add", var, eps)))
        if w is not None:
            y = self.ew("mul", y, w)
        return self.ew("add", y, b) if b is not None else y

    def conv2d_then_bias(self, node: fx.Node, x: Val, target: str) -> Val:
        """A Conv2d with bias as the library's convolution without it, the bias an elementwise add: the
        add joins the tail kernel after the convolution (as Inductor does) instead of a pass in cuDNN."""
        meta = node.meta.get("tensor_meta")
        if not hasattr(meta, "shape"):
            raise _NotFusable
        c = f"self.{target}"
        conv = self.new("torch", expr=f"torch.nn.functional.conv2d({{0}}, {c}.weight, None, {c}.stride, "
                                      f"{c}.padding, {c}.dilation, {c}.groups)",
                        args=[x], shape=tuple(meta.shape), dtype=meta.dtype)
        conv.mm["conv2d"] = True  # codegen may hand it channels-last input (the CHANNELS_LAST switch)
        bias = self.module_param(target, "bias")
        bias = self.view("{0}.reshape(-1, 1, 1)", [bias], (bias.shape[0], 1, 1), bias.dtype)
        return self.ew("add", conv, bias)

    def param(self, expr: str, t: torch.Tensor) -> Val:
        return self.new("param", expr=expr, shape=tuple(t.shape), dtype=t.dtype)

    def scalar(self, x: _AttrFloat) -> Val:
        """A model float attribute: a 0-d fp32 tensor built at run time from the module's attribute."""
        cache = self.__dict__.setdefault("scalars", {})
        if x.path not in cache:
            cache[x.path] = self.new("scalar", expr=x.path, shape=(), dtype=torch.float32)
        return cache[x.path]

    def module_param(self, target: str, attr: str):
        t = getattr(self.gm.get_submodule(target), attr)
        if t is None:
            return None
        return self.param(f"self.{target}.{attr}", t)

    # -- per node --
    def lower(self) -> Graph:
        inputs, outputs, is_tuple = [], [], False
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                meta = node.meta.get("tensor_meta")
                if meta is None or not hasattr(meta, "shape"):
                    raise Unsupported(f"forward argument {node.name} is not a tensor")
                v = self.new("input", shape=tuple(meta.shape), dtype=meta.dtype, expr=node.name)
                inputs.append(v)
                self.env[node] = v
            elif node.op == "output":
                out = node.args[0]
                is_tuple = isinstance(out, (tuple, list))
                for o in (out if is_tuple else [out]):
                    v = self.env.get(o) if isinstance(o, fx.Node) else None
                    if not isinstance(v, Val):
                        raise Unsupported("the output is not a tensor")
                    outputs.append(v)
            else:
                try:
                    self.env[node] = self.lower_node(node)
                except _NotFusable:
                    self.env[node] = self.torch_node(node)
        return Graph(self.vals, inputs, outputs, is_tuple)

    def a(self, x):
        if isinstance(x, fx.Node):
            v = self.env[x]
            if not isinstance(v, Val) or v.mm.get("tuple"):  # a shape, a dtype...: torch's to use
                raise _NotFusable
            return v
        if isinstance(x, _AttrFloat):
            return self.scalar(x)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise _NotFusable
        return float(x)

    def torch_node(self, node: fx.Node) -> Val:
        """Anything else stays a PyTorch call: rendered from the FX node, args as {i} slots."""
        deps: list = []

        def fmt(x):
            if isinstance(x, fx.Node):
                if not isinstance(self.env[x], Val):  # a constant read at trace time (x.dtype)
                    return fmt(self.env[x])
                deps.append(self.env[x])
                return "{" + str(len(deps) - 1) + "}"
            if isinstance(x, slice):
                return f"slice({fmt(x.start)}, {fmt(x.stop)}, {fmt(x.step)})"
            if isinstance(x, (list, tuple)):
                inner = ", ".join(fmt(i) for i in x)
                return f"[{inner}]" if isinstance(x, list) else f"({inner}{',' if len(x) == 1 else ''})"
            if isinstance(x, torch.dtype):
                return str(x)
            if isinstance(x, torch.device):
                return f"torch.device({str(x)!r})"
            if isinstance(x, _AttrFloat):
                return x.path
            if isinstance(x, (int, float, bool, str, type(None))) or x is Ellipsis:
                return "..." if x is Ellipsis else repr(x)
            raise Unsupported(f"cannot render argument {x!r}")

        args = ", ".join([fmt(x) for x in node.args] + [f"{k}={fmt(v)}" for k, v in node.kwargs.items()])
        if node.op == "call_module":
            expr = f"self.{node.target}({args})"
        elif node.op == "call_method":
            self_arg, _, rest = args.partition(", ")
            expr = f"{self_arg}.{node.target}({rest})"
        elif node.op == "get_attr":
            expr = f"self.{node.target}"
        else:
            expr = _render_function(node.target, node.args, args)
        meta = node.meta.get("tensor_meta")
        shape, dtype = (tuple(meta.shape), meta.dtype) if hasattr(meta, "shape") else ((), torch.float32)
        v = self.new("torch", expr=expr, args=deps, shape=shape, dtype=dtype)
        if deps and self._is_conv2d(node):
            v.mm["conv2d"] = True  # codegen may hand it channels-last input (the CHANNELS_LAST switch)
        if not hasattr(meta, "shape"):  # a tuple of tensors, or a python value (x.size(1)): no kernel reads it
            v.mm["tuple"] = True
        return v

    def _is_conv2d(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.gm.get_submodule(node.target), nn.Conv2d)
        return node.op == "call_function" and node.target in (F.conv2d, torch.conv2d)

    def lower_node(self, node: fx.Node):
        t, args, kw = node.target, node.args, node.kwargs

        def arg(i, name, default=None):
            return args[i] if len(args) > i else kw.get(name, default)

        if node.op == "get_attr":
            val = getattr_path(self.gm, t)
            if isinstance(val, torch.Tensor):
                return self.param(f"self.{t}", val)
            raise _NotFusable
        if node.op == "call_module":
            mod = self.gm.get_submodule(t)
            x = self.a(args[0]) if args else None
            if type(mod) in _UN_MODULES:
                return self.ew(_UN_MODULES[type(mod)], x)
            if isinstance(mod, (nn.Identity, nn.Dropout)):
                return x
            if isinstance(mod, nn.GELU):
                return self.ew("gelu_tanh" if mod.approximate == "tanh" else "gelu", x)
            if isinstance(mod, nn.LeakyReLU):
                return self.ew(f"leaky_relu:{mod.negative_slope}", x)
            if isinstance(mod, nn.ELU):
                return self.ew(f"elu:{mod.alpha}", x)
            if isinstance(mod, nn.Softplus):
                return self.ew(f"softplus:{mod.beta}:{mod.threshold}", x)
            if isinstance(mod, nn.Hardtanh):
                return self.ew(f"clamp:{mod.min_val}:{mod.max_val}", x)
            if type(mod) in _PARAM_MODULES:
                name, attrs = _PARAM_MODULES[type(mod)]
                return self.ew(":".join([name] + [str(float(getattr(mod, a))) for a in attrs]), x)
            if isinstance(mod, nn.modules.instancenorm._InstanceNorm):
                if mod.track_running_stats and not mod.training:  # running statistics: an affine
                    return self.batch_norm(x, *(self.module_param(t, a) for a in
                                                ("running_mean", "running_var", "weight", "bias")), mod.eps)
                w = self.module_param(t, "weight") if mod.affine else None
                b = self.module_param(t, "bias") if mod.affine else None
                return self.instance_norm(x, w, b, mod.eps)
            if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
                return self.softmax(x, mod.dim, isinstance(mod, nn.LogSoftmax))
            if isinstance(mod, nn.LayerNorm):
                return self.norm(x, len(mod.normalized_shape), self.module_param(t, "weight"),
                                 self.module_param(t, "bias"), mod.eps, rms=False)
            if hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm):
                eps = mod.eps if mod.eps is not None else torch.finfo(x.dtype).eps
                return self.norm(x, len(mod.normalized_shape), self.module_param(t, "weight"), None, eps, rms=True)
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                if mod.training or mod.running_mean is None:  # batch statistics: a reduction torch keeps
                    raise _NotFusable
                return self.batch_norm(x, *(self.module_param(t, a) for a in
                                            ("running_mean", "running_var", "weight", "bias")), mod.eps)
            if isinstance(mod, nn.CrossEntropyLoss):
                if mod.weight is not None or mod.label_smoothing:
                    raise _NotFusable
                return self.cross_entropy(x, self.a(args[1]), mod.ignore_index, mod.reduction)
            if isinstance(mod, nn.GroupNorm):
                w = self.module_param(t, "weight") if mod.affine else None
                b = self.module_param(t, "bias") if mod.affine else None
                return self.group_norm(x, mod.num_groups, f"self.{t}.num_groups", w, b, mod.eps)
            if isinstance(mod, nn.Conv2d) and mod.bias is not None and mod.padding_mode == "zeros" \
                    and isinstance(x, Val) and len(x.shape) == 4:
                return self.conv2d_then_bias(node, x, t)
            if isinstance(mod, nn.Linear):
                w = self.module_param(t, "weight")
                y = self.matmul(x, w, trans_b=True)
                b = self.module_param(t, "bias")
                return self.ew("add", y, b) if b is not None else y
            raise _NotFusable
        if node.op == "call_method":
            x = self.a(args[0])
            if t in _IDENTITY_METHODS:
                return x
            if t in _BIN_METHODS:
                return self.ew(_BIN_METHODS[t], x, self.a(args[1]))
            if t in _UN_METHODS:
                return self.ew(t, x)
            if t in _RED_METHODS:
                return self.reduce(_RED_METHODS[t], x, arg(1, "dim"), arg(2, "keepdim", False), kw)
            if t in ("softmax", "log_softmax"):
                return self.softmax(x, arg(1, "dim"), t == "log_softmax")
            if t == "pow":
                return self.pow(x, args[1])
            if t == "clamp":
                return self.ew(f"clamp:{arg(1, 'min')}:{arg(2, 'max')}", x)
            if t == "t" or (t == "transpose" and len(args) == 3 and sorted(
                    d % max(len(x.shape), 1) for d in args[1:]) == [0, 1]):
                return self.transposed(x)
            if t in ("matmul", "mm", "bmm"):
                return self.matmul(x, self.a(args[1]), trans_b=False)
            if t == "masked_fill":
                return self.masked_fill(x, self.a(args[1]), args[2])
            if t in ("clamp_min", "clamp_max"):
                return self.clamp_one_side(x, arg(1, t[-3:]), low=t == "clamp_min")
            if t in ("var", "std"):
                return self.variance(x, arg(1, "dim"), kw, std=t == "std", keepdim=arg(3, "keepdim", False),
                                     unbiased=arg(2, "unbiased", None))
            if t == "logsumexp":
                return self.logsumexp(x, arg(1, "dim"), arg(2, "keepdim", False))
            if t in _CAST_METHODS or t in ("to", "type"):
                return self.cast(x, _CAST_METHODS.get(t) or arg(1, "dtype"), args[2:] if t == "to" else (), kw)
            raise _NotFusable
        # call_function
        if t in _BIN:
            a, b = self.a(args[0]), self.a(args[1])
            if not isinstance(a, Val) and not isinstance(b, Val):
                raise _NotFusable
            if t in (torch.add, torch.sub) and kw.get("alpha", 1) != 1:
                raise _NotFusable
            if t is torch.div and kw.get("rounding_mode") is not None:
                raise _NotFusable
            return self.ew(_BIN[t], a, b)
        if t in _UN:
            return self.ew(_UN[t], self.a(args[0]))
        if t is torch.tensor:
            return self.tensor_constant(node)
        if t in (torch.max, torch.min) and len(args) == 2 and isinstance(args[1], fx.Node):  # with a tensor
            return self.ew("maximum" if t is torch.max else "minimum", self.a(args[0]), self.a(args[1]))
        if t in _PARAM_FNS:
            name, params = _PARAM_FNS[t]
            values = [arg(i + 1, n, d) for i, (n, d) in enumerate(params)]
            if any(not isinstance(p, (int, float)) or isinstance(p, bool) for p in values):
                raise _NotFusable
            return self.ew(":".join([name] + [str(float(p)) for p in values]), self.a(args[0]))
        if t is torch.masked_fill:
            return self.masked_fill(self.a(args[0]), self.a(args[1]), args[2])
        if t in (torch.clamp_min, torch.clamp_max):
            return self.clamp_one_side(self.a(args[0]), arg(1, "min" if t is torch.clamp_min else "max"),
                                       low=t is torch.clamp_min)
        if t in (torch.var, torch.std):
            return self.variance(self.a(args[0]), arg(1, "dim"), kw, std=t is torch.std,
                                 keepdim=arg(3, "keepdim", False), unbiased=arg(2, "unbiased", None))
        if t is torch.logsumexp:
            return self.logsumexp(self.a(args[0]), arg(1, "dim"), arg(2, "keepdim", False))
        if t is F.normalize:
            return self.normalize(self.a(args[0]), arg(1, "p", 2.0), arg(2, "dim", 1), arg(3, "eps", 1e-12), kw)
        if t is F.instance_norm:
            if arg(1, "running_mean") is not None or arg(2, "running_var") is not None:
                raise _NotFusable
            w, b = arg(3, "weight"), arg(4, "bias")
            return self.instance_norm(self.a(args[0]), self.a(w) if w is not None else None,
                                      self.a(b) if b is not None else None, float(arg(7, "eps", 1e-5)))
        if t is F.gelu:
            return self.ew("gelu_tanh" if kw.get("approximate", "none") == "tanh" else "gelu", self.a(args[0]))
        if t is F.leaky_relu:
            return self.ew(f"leaky_relu:{float(arg(1, 'negative_slope', 0.01))}", self.a(args[0]))
        if t is F.elu:
            return self.ew(f"elu:{float(arg(1, 'alpha', 1.0))}", self.a(args[0]))
        if t is F.softplus:
            return self.ew(f"softplus:{float(arg(1, 'beta', 1.0))}:{float(arg(2, 'threshold', 20.0))}",
                           self.a(args[0]))
        if t in (torch.clamp, torch.clip, F.hardtanh):
            names = ("min_val", "max_val") if t is F.hardtanh else ("min", "max")
            lo, hi = arg(1, names[0], -1.0 if t is F.hardtanh else None), arg(2, names[1], 1.0 if t is F.hardtanh
                                                                                     else None)
            if isinstance(lo, fx.Node) or isinstance(hi, fx.Node):
                raise _NotFusable
            return self.ew(f"clamp:{lo}:{hi}", self.a(args[0]))
        if t in (torch.pow, operator.pow):
            return self.pow(self.a(args[0]), args[1])
        if t is torch.where:
            c, a, b = (self.a(x) for x in args[:3])
            return self.ew("where", c, a, b, dtype=torch.promote_types(
                *[x.dtype if isinstance(x, Val) else torch.float32 for x in (a, b)]))
        if t in _RED_FNS:
            return self.reduce(_RED_FNS[t], self.a(args[0]), arg(1, "dim"), arg(2, "keepdim", False), kw)
        if t in (torch.softmax, F.softmax, torch.log_softmax, F.log_softmax):
            if kw.get("dtype") is not None or (len(args) > 2 and args[2] is not None and t in (torch.softmax,
                                                                                            torch.log_softmax)):
                raise _NotFusable
            return self.softmax(self.a(args[0]), arg(1, "dim"), t in (torch.log_softmax, F.log_softmax))
        if t is F.layer_norm:
            x = self.a(args[0])
            ns = arg(1, "normalized_shape")
            w, b = arg(2, "weight"), arg(3, "bias")
            return self.norm(x, len(ns), self.a(w) if w is not None else None, self.a(b) if b is not None else None,
                             float(arg(4, "eps", 1e-5)), rms=False)
        if t is F.rms_norm:
            x = self.a(args[0])
            w, eps = arg(2, "weight"), arg(3, "eps")
            return self.norm(x, len(arg(1, "normalized_shape")), self.a(w) if w is not None else None, None,
                             float(eps) if eps is not None else torch.finfo(x.dtype).eps, rms=True)
        if t is attention:  # fx_attention matched only shapes its kernel takes
            q, k, v = (self.a(x) for x in args[:3])
            return self.new("attn", args=[q, k, v, self.a(args[3])], shape=q.shape[:-1] + v.shape[-1:],
                            dtype=q.dtype, mm={"causal": bool(args[4])})
        if t is F.batch_norm:
            if arg(5, "training", False):
                raise _NotFusable
            stats = [arg(i, n) for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
            return self.batch_norm(self.a(args[0]), *(self.a(p) if p is not None else None for p in stats),
                                   float(arg(7, "eps", 1e-5)))
        if t is F.cross_entropy:
            if arg(2, "weight") is not None or arg(7, "label_smoothing", 0.0) or \
                    arg(3, "size_average") is not None or arg(5, "reduce") is not None:
                raise _NotFusable
            return self.cross_entropy(self.a(args[0]), self.a(arg(1, "target")), arg(4, "ignore_index", -100),
                                      arg(6, "reduction", "mean"))
        if t is F.group_norm:
            w, b = arg(2, "weight"), arg(3, "bias")
            g = arg(1, "num_groups")
            return self.group_norm(self.a(args[0]), g, str(g), self.a(w) if w is not None else None,
                                   self.a(b) if b is not None else None, float(arg(4, "eps", 1e-5)))
        if t is F.linear:
            x, w = self.a(args[0]), self.a(args[1])
            y = self.matmul(x, w, trans_b=True)
            b = arg(2, "bias")
            return self.ew("add", y, self.a(b)) if b is not None else y
        if t in (torch.matmul, operator.matmul, torch.mm, torch.bmm):
            return self.matmul(self.a(args[0]), self.a(args[1]), trans_b=False)
        if t is torch.addmm:
            if kw.get("beta", 1) != 1 or kw.get("alpha", 1) != 1:
                raise _NotFusable
            return self.ew("add", self.matmul(self.a(args[1]), self.a(args[2]), trans_b=False), self.a(args[0]))
        if t in (F.dropout,) and not arg(2, "training", False):
            return self.a(args[0])
        if t is operator.getitem and isinstance(self.env.get(args[0]), tuple):
            return self.env[args[0]][0]
        raise _NotFusable

    def reduce(self, fn: str, x, dim, keepdim, kw):
        if not isinstance(x, Val) or kw.get("dtype") is not None or isinstance(dim, fx.Node):
            raise _NotFusable
        try:
            return self.red(fn, x, dim, bool(keepdim))
        except _NotFusable:
            return self.col(fn, x, dim, bool(keepdim))

    def topk(self, node: fx.Node) -> Val:
        """The values of torch.topk over the last dim, sorted; the indices stay torch's (ties have no
        one right order to check a kernel's against)."""
        args, kw = node.args, node.kwargs

        def arg(i, name, default):
            return args[i] if len(args) > i else kw.get(name, default)

        x, k, dim = self.a(args[0]), arg(1, "k", None), arg(2, "dim", -1)
        values_only = all(u.op == "call_function" and (u.target is operator.getitem and u.args[1] == 0 or
                                                       u.target is getattr and u.args[1] == "values")
                          for u in node.users)
        if not isinstance(x, Val) or x.squeezed or not x.shape or type(k) is not int or not values_only \
                or dim not in (-1, len(x.shape) - 1) or not arg(4, "sorted", True) or kw.get("out") is not None:
            raise _NotFusable
        if not 0 < k <= _TOPK_MAX_K:  # the kernel unrolls one merge step per value kept
            raise _NotFusable
        largest = bool(arg(3, "largest", True))
        return self.new("topk", fn="largest" if largest else "smallest", args=[x], shape=x.shape[:-1] + (k,),
                        dtype=x.dtype, mm={"k": k})

    def pow(self, x, p):
        if not isinstance(x, Val) or isinstance(p, fx.Node):
            raise _NotFusable
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
        raise _NotFusable

    def matmul(self, a: Val, b: Val, trans_b: bool) -> Val:
        if not isinstance(a, Val) or not isinstance(b, Val) or a.squeezed or b.squeezed:
            raise _NotFusable
        if "transpose_of" in b.mm:  # a @ w.T: w read as the transposed operand
            b, trans_b = b.mm["transpose_of"], not trans_b
        if a.dtype != b.dtype or not a.dtype.is_floating_point:
            raise _NotFusable
        ra, rb = len(a.shape), len(b.shape)
        if ra < 2 or rb < 2:
            raise _NotFusable
        # batched: equal leading dims on both sides (bmm, or matmul on (..., M, K) @ (..., K, N))
        if rb > 2 and (ra != rb or tuple(a.shape[:-2]) != tuple(b.shape[:-2]) or trans_b):
            raise _NotFusable
        n = b.shape[0] if trans_b else b.shape[-1]
        shape = a.shape[:-1] + (n,)
        return self.new("mm", args=[a, b], shape=tuple(shape), dtype=a.dtype,
                        mm={"trans_b": trans_b, "batched": rb > 2})


class _NotFusable(Exception):
    pass


def getattr_path(obj, target: str):
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


_OPS = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
        "matmul": "@", "gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "==", "ne": "!=", "and_": "&",
        "or_": "|"}


def _render_function(target, raw_args, args: str) -> str:
    name = _get_qualified_name(target)
    if name.startswith("_operator."):
        op = name.split(".", 1)[1]
        parts = args.split(", ", 1)
        if op in _OPS and len(parts) == 2:
            return f"({parts[0]} {_OPS[op]} {parts[1]})"
        if op == "getitem":
            return f"{parts[0]}[{parts[1]}]"
        if op == "neg":
            return f"(-{parts[0]})"
        raise Unsupported(f"operator {op}")
    if name.startswith("builtins."):
        return f"{name.split('.', 1)[1]}({args})"
    if not name.startswith("torch."):
        raise Unsupported(f"function {name} is not from torch")
    return f"{name}({args})"


_FACTORIES = ("ones", "zeros", "full", "empty", "arange", "eye", "tensor")
_factories_lock = threading.Lock()


@contextmanager
def _traceable_factories(tracer: fx.Tracer):
    """torch.ones(s, s, device=x.device) with traced sizes: FX passes Proxies where torch.ones wants ints
    and fails. While tracing, such a call becomes a graph node that calls the real factory. So does
    torch.tensor(c): FX would keep its value as a constant attribute that ModelNew does not have, and
    c may be a model float the init inputs set."""
    _factories_lock.acquire()  # one patch at a time: two threads' saves and restores would interleave
    originals = {name: getattr(torch, name) for name in _FACTORIES}

    def traced(fn):
        def call(*args, **kwargs):
            if fn is originals["tensor"] or any(isinstance(a, fx.Proxy) for a in (*args, *kwargs.values())):
                return tracer.create_proxy("call_function", fn, args, kwargs)
            return fn(*args, **kwargs)
        return call

    for name, fn in originals.items():
        setattr(torch, name, traced(fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        _factories_lock.release()


def lower_module(model: nn.Module, example_inputs: list) -> Graph:
    exported = is_aten_graph(model)
    saved = _tag_float_attrs(model)
    try:
        try:
            if exported:
                gm = torch_level(model)
            else:
                tracer = fx.Tracer()
                with _traceable_factories(tracer):
                    gm = fx.GraphModule(model, tracer.trace(model))
        except Exception as e:
            raise Unsupported(f"torch.fx cannot trace the model: {type(e).__name__}: {e}") from None
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
            if not exported and fuse_attention(gm):  # written-out attention: one call, one kernel
                ShapeProp(gm).propagate(*example_inputs)
        # max/min with a dim return (values, indices): the values are a row reduction.
        low = _Lowerer(gm)
        _wrap_tuple_reductions(low)
        g = low.lower()
    finally:
        for mod, key, val in saved:
            object.__setattr__(mod, key, val)
    if exported and returns_one_tensor(model):
        g.output_is_tuple = False
    g.compute_users()
    _drop_unused(g)
    return g


def _drop_unused(g: Graph) -> None:
    """Views and elementwise values nothing reads go (a group norm's output viewed back when the next
    op stayed in the norm's layout; the ops before a norm that it redid in its layout): a reader
    outside every region would keep their producer from joining its users' kernel."""
    outputs = set(map(id, g.outputs))
    while dead := [v for v in g.vals if v.kind in ("view", "ew") and not g.users[id(v)] and id(v) not in outputs]:
        gone = set(map(id, dead))
        g.vals = [v for v in g.vals if id(v) not in gone]
        g.compute_users()


def _wrap_tuple_reductions(low: _Lowerer) -> None:
    orig = low.lower_node

    def lower_node(node: fx.Node):
        t = node.target
        is_maxmin = (node.op == "call_function" and t in (torch.max, torch.min)) or (
            node.op == "call_method" and t in ("max", "min"))
        if is_maxmin:
            args, kw = node.args, node.kwargs
            dim = args[1] if len(args) > 1 else kw.get("dim")
            if isinstance(dim, int):
                keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
                name = t if isinstance(t, str) else t.__name__
                only_values = all(u.op == "call_function" and (u.target is operator.getitem and u.args[1] == 0
                                                               or u.target is getattr and u.args[1] == "values")
                                  for u in node.users)
                try:
                    if not only_values:
                        raise _NotFusable
                    return (low.reduce(name, low.a(args[0]), dim, bool(keep), {}), node)
                except _NotFusable:
                    return low.torch_node(node)
        if (node.op == "call_function" and t is torch.topk) or (node.op == "call_method" and t == "topk"):
            try:
                return (low.topk(node), node)
            except _NotFusable:
                return low.torch_node(node)
        if node.op == "call_function" and t is getattr and isinstance(low.env.get(node.args[0]), tuple):
            if node.args[1] != "values":
                raise _NotFusable
            return low.env[node.args[0]][0]
        if node.op == "call_function" and t is getattr and isinstance(low.env.get(node.args[0]), Val) \
                and isinstance(node.args[1], str):  # a field of a result torch computes (topk(...).indices)
            if node.args[1] == "dtype":  # fixed by the problem's inputs: a constant
                return low.env[node.args[0]].dtype
            if node.args[1] == "T":
                return low.transposed(low.env[node.args[0]])
            meta = node.meta.get("tensor_meta")
            v = low.new("torch", expr=f"{{0}}.{node.args[1]}", args=[low.env[node.args[0]]],
                        shape=tuple(meta.shape) if hasattr(meta, "shape") else (),
                        dtype=meta.dtype if hasattr(meta, "shape") else torch.float32)
            if not hasattr(meta, "shape"):  # .shape, .device: python values, read at run time
                v.mm["tuple"] = True
            return v
        return orig(node)

    low.lower_node = lower_node


# --------------------------------------------------------------------------------------------
# regions

@dataclass(eq=False)
class Region:
    kind: str                          # ew | row | col | mm | topk | attn
    root: Val
    nodes: list[Val] = field(default_factory=list)    # members, topological order once finalized
    full: tuple = ()                   # row: the reduction input's shape
    k: int = 0                         # row: trailing dims reduced
    mm: Val | None = None

    def leaves(self) -> list[Val]:
        members = set(map(id, self.nodes))
        out: list[Val] = []
        for n in self.nodes:
            for a in n.args:
                if isinstance(a, Val) and id(a) not in members and a not in out:
                    out.append(a)
        return out


def _bcastable(shape: tuple, to: tuple) -> bool:
    if len(shape) > len(to):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], to[::-1]))


def _row_ok(v: Val, full: tuple, k: int) -> bool:
    if v.fn == "pick" and (tuple(full) != tuple(v.args[0].shape) or k != 1):
        return False  # its column index addresses the row it reads
    r = len(full)
    if v.squeezed:
        return tuple(v.shape) == tuple(full[: r - k])
    return _bcastable(v.shape, full)


def partition(g: Graph, use_mm: bool = True) -> list[Region]:
    """Grow regions backwards; returns them in topological order of their roots."""
    region_of: dict[int, Region] = {}
    regions: list[Region] = []
    outputs = set(map(id, g.outputs))
    fusable = {"ew", "red", "cred", "topk", "attn"} | ({"mm"} if use_mm else set())
    for v in reversed(g.vals):
        if v.kind not in fusable or (v.dtype is not None and not (v.dtype.is_floating_point or v.dtype == torch.bool)):
            continue
        users = g.users[id(v)]
        rs = {id(region_of.get(id(u))) for u in users}
        target = region_of.get(id(users[0])) if users else None
        if target is not None and len(rs) == 1 and id(v) not in outputs and _absorb(target, v):
            target.nodes.append(v)
            region_of[id(v)] = target
            continue
        if v.kind == "ew" and v.dtype == torch.bool:
            continue  # a mask is only worth a kernel inside a consumer's region
        kind = {"ew": "ew", "red": "row", "mm": "mm", "cred": "col", "topk": "topk", "attn": "attn"}[v.kind]
        r = Region(kind=kind, root=v, nodes=[v])
        if v.kind == "red":
            r.full, r.k = v.args[0].shape, v.k
        if v.kind == "mm":
            r.mm = v
        regions.append(r)
        region_of[id(v)] = r
    order = {id(v): i for i, v in enumerate(g.vals)}
    for r in regions:
        r.nodes.sort(key=lambda n: order[id(n)])
    regions.sort(key=lambda r: order[id(r.root)])
    return regions


def _absorb(r: Region, v: Val) -> bool:
    if r.kind in ("mm", "col", "topk", "attn") or v.kind in ("cred", "topk", "attn") \
            or v.kind == "mm" and r.kind != "ew":
        return False
    if r.kind == "ew":
        if v.kind == "ew":
            return _bcastable(v.shape, r.root.shape) or v.squeezed
        if v.kind == "mm":
            if v.shape != r.root.shape or any(n.squeezed for n in r.nodes):
                return False
            if any(not _bcastable(a.shape, v.shape) for n in r.nodes for a in n.args if isinstance(a, Val)):
                return False
            r.kind, r.mm = "mm", v
            return True
        # red: the elementwise region becomes the reduction's epilogue
        full, k = v.args[0].shape, v.k
        members = r.nodes + [v]
        if not all(_row_ok(n, full, k) for n in members):
            return False
        if not all(_row_ok(a, full, k) for n in r.nodes for a in n.args if isinstance(a, Val)):
            return False
        r.kind, r.full, r.k = "row", full, k
        return True
    # row region
    if v.kind == "red":
        return tuple(v.args[0].shape) == tuple(r.full) and v.k == r.k
    return _row_ok(v, r.full, r.k) and all(_row_ok(a, r.full, r.k) for a in v.args if isinstance(a, Val))

