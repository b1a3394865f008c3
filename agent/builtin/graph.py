"""From a problem's Model to a small IR of primitive ops (ir.py), then partitioned (partition.py).

The FX graph (symbolic_trace + ShapeProp on real, small inputs) is lowered to `Val`s: leaves
(inputs, parameters), elementwise primitives ("ew"), row reductions over trailing dims ("red"),
column reductions over middle dims ("cred"), matmuls ("mm"), row top-k values ("topk"), row prefix
sums ("scan"), attention (found by fx_attention: "attn"), windowed pooling ("pool"), concatenations
("cat", read in place by the kernels reading them: concat.py) and everything else ("torch", left to
PyTorch). Composite ops (softmax, layer_norm, gelu, linear...) are decomposed
(composites.py) so that one code generator per region kind covers them all; some are computed in another
row layout (layouts.py).
"""

from __future__ import annotations

import importlib
import inspect
import math
import operator
import threading
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.node import _get_qualified_name
from torch.fx.operator_schemas import get_signature_for_torch_op
from torch.fx.passes.shape_prop import ShapeProp

from .aten import is_aten_graph, returns_one_tensor, torch_level
from .composites import CompositeMixin
from .concat import ConcatMixin
from .fx_attention import attention, expand_multihead_attention, fuse_attention
from .ir import AttrFloat, AttrInt, Graph, NotFusable, Unsupported, Val, in_place, self_path, tagged, whole
from .layouts import LayoutMixin, moved_order
from .losses import LOSS_FUNCTIONS, LOSS_MODULES, LossMixin, bind_call, bind_module
from .pool import PoolMixin, pool_call
from .pool_folds import PoolFoldMixin
from .products import ProductsMixin


def _tag_number_attrs(model: nn.Module) -> list:
    """Tag the model's float attributes (AttrFloat) and its own modules' int attributes (AttrInt: those
    of torch.nn's modules, in_features or num_groups, the templates read as numbers); returns what
    to restore."""
    saved = []
    for mname, mod in model.named_modules():
        own = not type(mod).__module__.startswith("torch.")
        for key, val in list(vars(mod).items()):
            kind = AttrFloat if type(val) is float else AttrInt if type(val) is int and own else None
            if kind is not None and not key.startswith("_"):
                saved.append((mod, key, val))
                # read at run time; the traced value stands in when ModelNew's __init__ does not set it
                # (a module object's constructor arguments the problem file never sees)
                owner = self_path(mname) if mname else "self"
                object.__setattr__(mod, key, kind(val, f"getattr({owner}, {key!r}, {val!r})"))
    return saved


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
       F.tanhshrink: "tanhshrink", torch.log1p: "log1p", torch.expm1: "expm1", torch.special.expm1: "expm1",
       torch.special.log1p: "log1p", torch.floor: "floor", torch.ceil: "ceil", torch.trunc: "trunc",
       torch.sign: "sign", torch.round: "round"}
_UN_METHODS = {"relu", "sigmoid", "tanh", "exp", "log", "abs", "sqrt", "rsqrt", "neg", "square", "reciprocal",
               "erf", "log1p", "expm1", "floor", "ceil", "trunc", "sign", "round"}
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
_VIEW_METHODS = {"view", "reshape", "transpose", "permute", "narrow", "select", "squeeze", "unsqueeze", "expand",
                 "flatten", "movedim", "unflatten", "as_strided", "view_as", "expand_as", "diagonal", "t"}
_RED_FNS = {torch.sum: "sum", torch.mean: "mean", torch.amax: "max", torch.amin: "min", torch.prod: "prod"}
_RED_METHODS = {"sum": "sum", "mean": "mean", "amax": "max", "amin": "min", "prod": "prod"}
_TOPK_MAX_K = 64
_SCANS = {torch.cumsum: "cumsum", torch.cumprod: "cumprod", torch.cummax: "cummax", torch.cummin: "cummin"}


class _Lowerer(CompositeMixin, ConcatMixin, LayoutMixin, LossMixin, PoolMixin, PoolFoldMixin, ProductsMixin):
    def __init__(self, gm: fx.GraphModule, middle_rows: bool = False):
        self.gm = gm
        self.vals: list[Val] = []
        self.env: dict[fx.Node, object] = {}
        self.count = 0
        self.middle_rows = middle_rows  # a plain reduction over middle dims: rows of the moved layout, not columns
        self.relaid: dict[tuple, Val | None] = {}  # (id of a value, a layout's key) -> the value redone in it
        self.changed: dict[fx.Node, fx.Node] = {}  # an in-place op's node -> the node whose tensor it changed

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
        if laid_out is None:
            laid_out = self._in_unit_layout(fn, args, dtype)
        if laid_out is not None:
            return laid_out
        shapes = [a.shape for a in args if isinstance(a, Val)]
        shape = tuple(torch.broadcast_shapes(*shapes)) if shapes else ()
        sq = any(isinstance(a, Val) and a.squeezed for a in args)
        if sq and all(a.shape == shape for a in args if isinstance(a, Val) and a.squeezed):
            args = tuple(self._beside_squeezed(a, len(shape)) for a in args)
        if dtype is None:
            dts = [a.dtype for a in args if isinstance(a, Val) and a.kind != "scalar"]
            dtype = dts[0] if dts else torch.float32
            for d in dts[1:]:
                dtype = torch.promote_types(dtype, d)
        if fn in ("gt", "lt", "ge", "le", "eq"):
            dtype = torch.bool
        return self.new("ew", fn=fn, args=list(args), shape=shape, dtype=dtype, squeezed=sq)

    def _beside_squeezed(self, a, rank: int):
        """A tensor beside a reduction's squeezed result (`x.sum(-1) + bias`): torch lines it up on that
        result's right, and the row kernel sees the result's dims on the left of the rows; so the tensor
        is handed over as a view of that rank marked squeezed too, and the reduction's kernel takes the
        work after it (it had been a kernel of its own). Kernels' own values are left as they are."""
        if not isinstance(a, Val) or a.squeezed or a.kind not in ("input", "param", "view", "torch") \
                or not a.shape or all(n == 1 for n in a.shape) or len(a.shape) > rank:
            return a
        lead = rank - len(a.shape)
        v = self.view("{0}[" + "None, " * lead + "...]" if lead else "{0}", [a], (1,) * lead + tuple(a.shape),
                      a.dtype)
        v.squeezed = True
        return v

    def red(self, fn: str, x: Val, dims, keepdim: bool) -> Val:
        r = len(x.shape)
        if dims is None:
            dims = list(range(r))
        if isinstance(dims, int):
            dims = [dims]
        dims = sorted(d % r for d in dims) if r else []
        k = len(dims)
        if r == 0 or dims != list(range(r - k, r)) or x.squeezed:
            raise NotFusable
        shape = x.shape[: r - k] + ((1,) * k if keepdim else ())
        return self.new("red", fn=fn, args=[x], shape=shape, dtype=x.dtype, squeezed=not keepdim, k=k)

    def own_rows(self, x):
        """x as a tensor of its own where it is a reduction's output without its reduced dims (marked squeezed:
        lined up with its producer's rows, where elementwise work on it joins that kernel): a kernel over
        x's own dims (a log-sum-exp over the batch of row sums) reads it from memory instead of torch."""
        if not isinstance(x, Val) or not x.squeezed:
            return x
        memo = self.__dict__.setdefault("own_rows_of", {})
        if id(x) not in memo:
            memo[id(x)] = self.view("{0}", [x], x.shape, x.dtype)
        return memo[id(x)]

    def col(self, fn: str, x: Val, dims, keepdim: bool) -> Val:
        """A reduction over a contiguous run of non-trailing dims: (pre, R, post) -> (pre, post)."""
        r = len(x.shape)
        if isinstance(dims, int):
            dims = [dims]
        if r == 0 or dims is None or x.squeezed:
            raise NotFusable
        dims = sorted(d % r for d in dims)
        d0, d1 = dims[0], dims[-1] + 1
        if dims != list(range(d0, d1)) or d1 == r:
            raise NotFusable
        shape = x.shape[:d0] + ((1,) * (d1 - d0) if keepdim else ()) + x.shape[d1:]
        return self.new("cred", fn=fn, args=[x], shape=tuple(shape), dtype=x.dtype, k=d1 - d0,
                        mm={"dims": (d0, d1), "keepdim": keepdim})

    def view(self, expr: str, args: list, shape: tuple, dtype) -> Val:
        """A reshape that costs nothing at run time (expr with {0}, {1}.. slots for args)."""
        return self.new("view", expr=expr, args=list(args), shape=tuple(shape), dtype=dtype)

    def param(self, expr: str, t: torch.Tensor) -> Val:
        return self.new("param", expr=expr, shape=tuple(t.shape), dtype=t.dtype)

    def scalar(self, x: AttrFloat | AttrInt) -> Val:
        """A model number attribute or forward argument: a 0-d fp32 tensor built at run time from it."""
        cache = self.__dict__.setdefault("scalars", {})
        if x.path not in cache:
            cache[x.path] = self.new("scalar", expr=x.path, shape=(), dtype=torch.float32)
        return cache[x.path]

    def operand(self, x, beside):
        """`a(x)` for an arithmetic operand; a python number the forward computed (1 / math.sqrt(k.size(-1)))
        beside a tensor is a scalar too (beside another number it stays python: a slice bound, a size)."""
        v = self.env.get(x) if isinstance(x, fx.Node) else None
        other = self.env.get(beside) if isinstance(beside, fx.Node) else None
        if isinstance(v, Val) and v.mm.get("number") and isinstance(other, Val) and not other.mm.get("tuple"):
            return self.number(v)
        return self.a(x)

    def number(self, v: Val) -> Val:
        """A python number the forward computes (from sizes, say): a 0-d fp32 tensor made from its value at
        run time, through the same per-value cache as a scalar's (no fill kernel each forward)."""
        cache = self.__dict__.setdefault("numbers", {})
        if id(v) not in cache:
            cache[id(v)] = self.new("scalar", expr="{0}", args=[v], shape=(), dtype=torch.float32)
        return cache[id(v)]

    def module_param(self, target: str, attr: str):
        t = getattr(self.gm.get_submodule(target), attr)
        if t is None:
            return None
        return self.param(f"{self_path(target)}.{attr}", t)

    # -- per node --
    def lower(self) -> Graph:
        inputs, outputs, is_tuple = [], [], False
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                meta = node.meta.get("tensor_meta")
                number = node.meta.get("example_number")
                if number is not None:  # a number forward receives (A * s): read at run time
                    self.env[node] = tagged(number, node.target)
                    continue
                if meta is None or not hasattr(meta, "shape"):
                    raise Unsupported(f"forward argument {node.name} is not a tensor")
                # the forward's own argument name (node.name is FX's snake_case of it: A becomes a)
                name = node.target if isinstance(node.target, str) and node.target.isidentifier() else node.name
                v = self.new("input", shape=tuple(meta.shape), dtype=meta.dtype, expr=name)
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
                except NotFusable:
                    self.env[node] = self.interleaved(node) or self.unit_view(node) or self.moved_view(node) \
                        or self.torch_node(node)
                mutated = self._mutated(node)
                if mutated is not None:
                    self.changed[node] = mutated
                # later readers of the tensor an in-place op changed read its result, and so do readers of
                # each in-place result it changed through (y.mul_(2).add_(1) changes y)
                while mutated is not None:
                    self.env[mutated] = self.env[node]
                    mutated = self.changed.get(mutated)
        return Graph(self.vals, inputs, outputs, is_tuple)

    def _mutated(self, node: fx.Node) -> fx.Node | None:
        """The node whose tensor `node` changes in place (x.mul_(2), relu(x, inplace=True), an in-place
        module), else None. An in-place op on a view would change the tensor under it too: Unsupported."""
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        inplace = in_place(node) \
            or node.op == "call_module" and getattr(self.gm.get_submodule(node.target), "inplace", False) is True
        target = node.args[0] if node.args else None
        if not inplace or not isinstance(target, fx.Node):
            return None
        if _is_view(target) and not _sole_view(target):
            raise Unsupported(f"{name} changes a view in place")
        return target

    def a(self, x):
        if isinstance(x, fx.Node):
            v = self.env[x]
            if isinstance(v, (AttrFloat, AttrInt)):  # a number argument of forward
                return self.scalar(v)
            if not isinstance(v, Val) or v.mm.get("tuple"):  # a shape, a dtype...: torch's to use
                raise NotFusable
            return v
        if isinstance(x, (AttrFloat, AttrInt)):
            return self.scalar(x)
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise NotFusable
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
            if isinstance(x, (AttrFloat, AttrInt)):
                return x.path
            if isinstance(x, (int, float, bool, str, type(None))) or x is Ellipsis:
                return "..." if x is Ellipsis else repr(x)
            raise Unsupported(f"cannot render argument {x!r}")

        args = ", ".join([fmt(x) for x in node.args] + [f"{k}={fmt(v)}" for k, v in node.kwargs.items()])
        if node.op == "call_module":
            expr = f"{self_path(node.target)}({args})"
        elif node.op == "call_method":
            self_arg, _, rest = args.partition(", ")
            expr = f"{self_arg}.{node.target}({rest})"
        elif node.op == "get_attr":
            expr = self_path(node.target)
        else:
            expr = _render_function(node.target, node.args, args)
        meta = node.meta.get("tensor_meta")
        shape, dtype = (tuple(meta.shape), meta.dtype) if hasattr(meta, "shape") else ((), torch.float32)
        v = self.new("torch", expr=expr, args=deps, shape=shape, dtype=dtype)
        apart = _apart_at(shape, getattr(meta, "stride", None)) if _is_view(node) else None
        if apart is not None:  # a chunk or slice of an inner dim: the kernels reading it take its strides
            v.mm.update(barrier=apart[0], dense_last=True)
            if len(apart) > 1:  # apart at more dims than one (x[:, ::2, ::2, :]): each its own stride
                v.mm["breaks"] = apart
        stepped = _stepped(shape, getattr(meta, "stride", None)) if _is_view(node) and apart is None else None
        if stepped is not None:  # every other element of the last dim (x[..., ::2]): read in place too
            v.mm.update(barrier=stepped[0] if stepped else 0, stepped=True)
            if len(stepped) > 1:
                v.mm["breaks"] = stepped
        if _is_view(node) and apart is None and stepped is None and not _dense(shape, getattr(meta, "stride", None)):
            v.mm["copied"] = True  # a kernel reading it makes it contiguous first (a transpose, a permute)
        if deps and self._is_conv2d(node):
            v.mm["conv2d"] = True  # codegen may hand it channels-last input (the CHANNELS_LAST switch)
        if not hasattr(meta, "shape"):  # a tuple of tensors, or a python value (x.size(1)): no kernel reads it
            v.mm["tuple"] = True
            # ...but a number (1 / math.sqrt(k.size(-1))) reaches kernels as a scalar (self.number)
            v.mm["number"] = node.meta.get("type") in (int, float)
        return v

    def _is_conv2d(self, node: fx.Node) -> bool:
        if node.op == "call_module":
            return isinstance(self.gm.get_submodule(node.target), nn.Conv2d)
        return node.op == "call_function" and node.target in (F.conv2d, torch.conv2d)

    def lower_node(self, node: fx.Node):
        """The value of one FX node, by what it calls: a submodule, a tensor method or a function (NotFusable
        where no template lowers it: it stays a torch call)."""
        args, kw = _positional(node)
        if node.op == "get_attr":
            val = getattr_path(self.gm, node.target)
            if isinstance(val, torch.Tensor):
                return self.param(self_path(node.target), val)
            raise NotFusable
        if node.op == "call_module":
            return self.module_call(node, node.target, args, kw)
        if node.op == "call_method" and node.target in ("clone", "detach") and isinstance(self.env.get(args[0]), Val) \
                and not _copy_needed(self.gm, node):
            # the same value (the graph's values are values: an in-place op the graph computes rebinds its own
            # node only), so no copy; one an in-place torch op writes, or one returned, is torch's copy
            return self.a(args[0])
        if (node.op == "call_method" and node.target in ("expand", "expand_as")
                or node.op == "call_function" and node.target is torch.broadcast_to) and self._broadcast_read(node):
            return self.a(args[0])
        if node.op == "call_method":
            return self.method_call(node.target, args, kw)
        return self.function_call(node, node.target, args, kw)

    def _broadcast_read(self, node: fx.Node) -> bool:
        """Whether an expand's readers are all arithmetic on two operands whose results have the expanded
        shape: they broadcast its input themselves, so the expanded tensor (a copy, where a kernel reads
        its operands contiguous: `x * y.expand_as(x)` had copied y out to x's size) is never made."""
        meta, x = node.meta.get("tensor_meta"), self.env.get(node.args[0])
        if not isinstance(x, Val) or x.squeezed or not hasattr(meta, "shape") or not node.users:
            return False
        shape = tuple(meta.shape)
        if len(x.shape) > len(shape) or tuple(torch.broadcast_shapes(tuple(x.shape), shape)) != shape:
            return False
        for u in node.users:
            binary = u.op == "call_function" and u.target in _BIN or u.op == "call_method" and u.target in _BIN_METHODS
            others = [a for a in u.args[:2] if a is not node]
            other = others[0].meta.get("tensor_meta") if len(others) == 1 and isinstance(others[0], fx.Node) \
                else None  # (a number beside it would leave the result at x's shape)
            if not binary or len(u.args) != 2 or u.kwargs or not hasattr(other, "shape") \
                    or tuple(torch.broadcast_shapes(tuple(x.shape), tuple(other.shape))) != shape:
                return False
        return True

    def module_call(self, node: fx.Node, t: str, args: tuple, kw: dict):
        """A call of the submodule at path t."""
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
        if isinstance(mod, nn.PReLU):
            return self.prelu(x, self.module_param(t, "weight"))
        if isinstance(mod, nn.Hardtanh):
            return self.ew(f"clamp:{mod.min_val}:{mod.max_val}", x)
        if type(mod) in _PARAM_MODULES:
            name, attrs = _PARAM_MODULES[type(mod)]
            return self.ew(":".join([name] + [str(float(getattr(mod, a))) for a in attrs]), x)
        if pool_call(type(mod)) is not None:
            return self.pool_module(t, mod, x, node)
        if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
            return self.global_pool(x, mod.output_size, "mean", of=node.args[0])
        if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)) \
                and not mod.return_indices:
            return self.global_pool(x, mod.output_size, "max")
        if isinstance(mod, nn.modules.instancenorm._InstanceNorm):
            if mod.track_running_stats and not mod.training:  # running statistics: an affine
                return self.batch_norm(x, *(self.module_param(t, a) for a in
                                            ("running_mean", "running_var", "weight", "bias")), mod.eps)
            w = self.module_param(t, "weight") if mod.affine else None
            b = self.module_param(t, "bias") if mod.affine else None
            return self.instance_norm(x, w, b, mod.eps)
        if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
            return self.softmax(x, mod.dim, isinstance(mod, nn.LogSoftmax))
        if isinstance(mod, nn.Softmin):
            return self.composite_call(F.softmin, (args[0],), {"dim": mod.dim})
        if isinstance(mod, nn.Softmax2d) and isinstance(x, Val) and len(x.shape) in (3, 4):
            return self.softmax(x, -3, log=False)  # over the channels of (C, H, W) or (N, C, H, W)
        if isinstance(mod, nn.LayerNorm):
            return self.norm(x, len(mod.normalized_shape), self.module_param(t, "weight"),
                             self.module_param(t, "bias"), mod.eps, rms=False)
        if hasattr(nn, "RMSNorm") and isinstance(mod, nn.RMSNorm):
            eps = mod.eps if mod.eps is not None else torch.finfo(x.dtype).eps
            return self.norm(x, len(mod.normalized_shape), self.module_param(t, "weight"), None, eps, rms=True)
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.training or mod.running_mean is None:  # batch statistics: a reduction torch keeps
                raise NotFusable
            return self.batch_norm(x, *(self.module_param(t, a) for a in
                                        ("running_mean", "running_var", "weight", "bias")), mod.eps)
        if getattr(nn, type(mod).__name__, None) is type(mod) and type(mod).__name__ in LOSS_MODULES:
            return self.loss(LOSS_MODULES[type(mod).__name__], bind_module(mod, args, kw))
        if isinstance(mod, nn.GroupNorm):
            w = self.module_param(t, "weight") if mod.affine else None
            b = self.module_param(t, "bias") if mod.affine else None
            return self.group_norm(x, mod.num_groups, f"{self_path(t)}.num_groups", w, b, mod.eps)
        if type(mod) in (nn.Conv1d, nn.Conv2d, nn.Conv3d) and mod.padding_mode == "zeros" and isinstance(x, Val):
            return self.conv_module(node, x, t)
        if type(mod) in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) and isinstance(x, Val) \
                and mod.padding_mode == "zeros" and len(args) == 1 and not kw:  # no output_size at the call
            return self.conv_transpose_module(node, x, t)
        if isinstance(mod, nn.Linear):
            w = self.module_param(t, "weight")
            y = self.matmul(x, w, trans_b=True)
            b = self.module_param(t, "bias")
            return self.ew("add", y, b) if b is not None else y
        raise NotFusable

    def method_call(self, t: str, args: tuple, kw: dict):
        """A tensor method call, x.t(*args[1:], **kw)."""
        arg = _arg_getter(args, kw)
        x = self.a(args[0])
        if t.endswith("_") and not t.endswith("__"):  # in place: lower() rebinds the tensor it changed
            t = t[:-1]
        if t in _IDENTITY_METHODS:  # a kernel's output is contiguous; a view torch makes may not be
            if isinstance(x, Val) and x.kind == "view" and ("barrier" in x.mm or "moved" in x.mm):
                return x  # the moved layout's view: the kernels that read it take its strides
            if not isinstance(x, Val) or x.kind in ("view", "torch", "input", "param", "conv"):
                raise NotFusable
            return x
        if t in _BIN_METHODS:
            return self.ew(_BIN_METHODS[t], x, self.operand(args[1], args[0]))
        if t in _UN_METHODS and _one_operand(args, kw):  # x.round(decimals=2) is torch's
            return self.ew(t, x)
        if t in _RED_METHODS:
            return self.reduce(_RED_METHODS[t], x, arg(1, "dim"), arg(2, "keepdim", False), kw, of=args[0])
        if t in ("softmax", "log_softmax"):
            return self.softmax(x, arg(1, "dim"), t == "log_softmax")
        if t in ("argmax", "argmin"):
            return self.arg_reduce(t, x, arg(1, "dim"), arg(2, "keepdim", False))
        if t == "pow":
            return self.pow(x, args[1])
        if t in ("clamp", "clip"):
            return self.clamp(x, arg(1, "min", None), arg(2, "max", None))
        if t == "t" or (t == "transpose" and len(args) == 3 and sorted(
                d % max(len(x.shape), 1) for d in args[1:]) == [0, 1]):
            return self.transposed(x)
        if t in ("matmul", "mm", "bmm", "mv"):
            return self.matmul(x, self.a(args[1]), trans_b=False)
        if t in ("dot", "inner", "outer", "ger") and not kw:
            return self.vector_product(getattr(torch, t), x, self.a(args[1]))
        if t == "masked_fill":
            return self.masked_fill(x, self.a(args[1]), args[2])
        if t in ("clamp_min", "clamp_max"):
            return self.clamp_one_side(x, arg(1, t[-3:]), low=t == "clamp_min")
        if t in ("var", "std"):
            return self.variance(x, arg(1, "dim"), kw, std=t == "std", keepdim=arg(3, "keepdim", False),
                                 unbiased=arg(2, "unbiased", None))
        if t == "norm" and kw.get("dtype") is None:
            return self.vector_norm(x, arg(1, "p", "fro"), arg(2, "dim"), arg(3, "keepdim", False))
        if t == "logsumexp":
            return self.logsumexp(x, arg(1, "dim"), arg(2, "keepdim", False))
        if t in _CAST_METHODS or t in ("to", "type"):
            return self.cast(x, _CAST_METHODS.get(t) or arg(1, "dtype"), args[2:] if t == "to" else (), kw)
        raise NotFusable

    def function_call(self, node: fx.Node, t, args: tuple, kw: dict):
        """A call of the function t (torch.*, F.*, an operator)."""
        arg = _arg_getter(args, kw)
        if t in _BIN:
            a, b = self.operand(args[0], args[1]), self.operand(args[1], args[0])
            if not isinstance(a, Val) and not isinstance(b, Val):
                raise NotFusable
            if t in (torch.add, torch.sub) and kw.get("alpha", 1) != 1:
                raise NotFusable
            if t is torch.div and kw.get("rounding_mode") is not None:
                raise NotFusable
            return self.ew(_BIN[t], a, b)
        if t in _UN and _one_operand(args, kw):
            return self.ew(_UN[t], self.a(args[0]))
        if t is F.prelu and len(args) == 2 and not kw:
            return self.prelu(self.a(args[0]), self.a(args[1]))
        if t in (F.softmin, torch.lerp, torch.addcmul):
            return self.composite_call(t, args, kw)
        if t is torch.tensor:
            return self.tensor_constant(node)
        if t in (torch.cat, torch.concat, torch.concatenate) and set(kw) <= {"dim", "axis", "tensors"}:
            return self.concatenate(arg(0, "tensors"), kw.get("axis", arg(1, "dim", 0)))
        if t is torch.stack and set(kw) <= {"dim", "tensors"}:
            return self.stack(arg(0, "tensors"), arg(1, "dim", 0))
        if t in (torch.max, torch.min) and len(args) == 2 and isinstance(args[1], fx.Node):  # with a tensor
            return self.ew("maximum" if t is torch.max else "minimum", self.a(args[0]), self.a(args[1]))
        if t in _PARAM_FNS:
            name, params = _PARAM_FNS[t]
            values = [arg(i + 1, n, d) for i, (n, d) in enumerate(params)]
            if any(not isinstance(p, (int, float)) or isinstance(p, bool) for p in values):
                raise NotFusable
            return self.ew(":".join([name] + [str(float(p)) for p in values]), self.a(args[0]))
        if t is torch.masked_fill:
            return self.masked_fill(self.a(args[0]), self.a(args[1]), args[2])
        if t in (torch.clamp_min, torch.clamp_max):
            return self.clamp_one_side(self.a(args[0]), arg(1, "min" if t is torch.clamp_min else "max"),
                                       low=t is torch.clamp_min)
        if t in (torch.var, torch.std):
            return self.variance(self.a(args[0]), arg(1, "dim"), kw, std=t is torch.std,
                                 keepdim=arg(3, "keepdim", False), unbiased=arg(2, "unbiased", None))
        if t in (torch.norm, torch.linalg.vector_norm) and kw.get("dtype") is None and kw.get("out") is None:
            return self.vector_norm(self.a(args[0]), arg(1, "p" if t is torch.norm else "ord", 2), arg(2, "dim"),
                                    arg(3, "keepdim", False))
        if pool_call(t) is not None:
            return self.pool_function(t, args, kw, node)
        if t in (F.conv1d, F.conv2d, F.conv3d):
            return self.conv_function(node, args, kw)
        if t in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
            return self.conv_transpose_function(node, args, kw)
        if t in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
            return self.global_pool(self.a(args[0]), arg(1, "output_size"), "mean", of=args[0])
        if t is torch.logsumexp:
            return self.logsumexp(self.a(args[0]), arg(1, "dim"), arg(2, "keepdim", False))
        if t is F.normalize:
            return self.normalize(self.a(args[0]), arg(1, "p", 2.0), arg(2, "dim", 1), arg(3, "eps", 1e-12), kw)
        if t is F.instance_norm:
            if arg(1, "running_mean") is not None or arg(2, "running_var") is not None:
                raise NotFusable
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
            if t is F.hardtanh and (isinstance(lo, fx.Node) or isinstance(hi, fx.Node)):
                raise NotFusable
            return self.clamp(self.a(args[0]), lo, hi)
        if t in (torch.pow, operator.pow):
            return self.pow(self.a(args[0]), args[1])
        if t in (torch.zeros_like, torch.ones_like, torch.full_like) and set(kw) <= {"memory_format"} \
                and len(args) == (2 if t is torch.full_like else 1):
            value = args[1] if t is torch.full_like else float(t is torch.ones_like)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise NotFusable
            return self.ew(f"fill:{float(value)}", self.a(args[0]))
        if t is torch.where:
            c, a, b = (self.a(x) for x in args[:3])
            return self.ew("where", c, a, b, dtype=torch.promote_types(
                *[x.dtype if isinstance(x, Val) else torch.float32 for x in (a, b)]))
        if t in (torch.argmax, torch.argmin):
            return self.arg_reduce(t.__name__, self.a(args[0]), arg(1, "dim"), arg(2, "keepdim", False))
        if t in _RED_FNS:
            return self.reduce(_RED_FNS[t], self.a(args[0]), arg(1, "dim"), arg(2, "keepdim", False), kw,
                               of=args[0])
        if t in (torch.softmax, F.softmax, torch.log_softmax, F.log_softmax):
            if kw.get("dtype") is not None or (len(args) > 2 and args[2] is not None and t in (torch.softmax,
                                                                                            torch.log_softmax)):
                raise NotFusable
            return self.softmax(self.a(args[0]), arg(1, "dim"), t in (torch.log_softmax, F.log_softmax))
        if t is F.layer_norm:
            x = self.a(args[0])
            w, b = arg(2, "weight"), arg(3, "bias")
            return self.norm(x, _dims_of(arg(1, "normalized_shape")), self.a(w) if w is not None else None,
                             self.a(b) if b is not None else None, float(arg(4, "eps", 1e-5)), rms=False)
        if t is F.rms_norm:
            x = self.a(args[0])
            w, eps = arg(2, "weight"), arg(3, "eps")
            return self.norm(x, _dims_of(arg(1, "normalized_shape")), self.a(w) if w is not None else None, None,
                             float(eps) if eps is not None else torch.finfo(x.dtype).eps, rms=True)
        if t is attention:  # fx_attention matched only shapes its kernel takes
            q, k, v = (self.a(x) for x in args[:3])
            mm = {"causal": bool(args[4])}
            if args[3] is None:  # 1/sqrt(head_dim): the kernel's wrapper computes it from q's shape
                return self.new("attn", args=[q, k, v], shape=q.shape[:-1] + v.shape[-1:], dtype=q.dtype, mm=mm)
            number = isinstance(args[3], fx.Node) and isinstance(self.env[args[3]], Val) \
                and self.env[args[3]].mm.get("tuple")  # computed from sizes in forward: a python number
            scale = self.env[args[3]] if number else self.a(args[3])
            return self.new("attn", args=[q, k, v, scale], shape=q.shape[:-1] + v.shape[-1:], dtype=q.dtype, mm=mm)
        if t is F.batch_norm:
            if arg(5, "training", False):
                raise NotFusable
            stats = [arg(i, n) for i, n in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias"))]
            return self.batch_norm(self.a(args[0]), *(self.a(p) if p is not None else None for p in stats),
                                   float(arg(7, "eps", 1e-5)))
        if getattr(F, getattr(t, "__name__", ""), None) is t and t.__name__ in LOSS_FUNCTIONS:
            return self.loss(t.__name__, bind_call(t.__name__, args, kw))
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
        if t in (torch.matmul, operator.matmul, torch.mm, torch.bmm, torch.mv):
            return self.matmul(self.a(args[0]), self.a(args[1]), trans_b=False)
        if t in (torch.dot, torch.inner, torch.outer, torch.ger) and not kw:
            return self.vector_product(t, self.a(args[0]), self.a(args[1]))
        if t is torch.einsum and len(args) == 3 and isinstance(args[0], str) and not kw:
            return self.einsum(args[0], self.a(args[1]), self.a(args[2]))
        if t is F.glu:
            return self.glu(self.a(args[0]), args[1] if len(args) > 1 else kw.get("dim", -1))
        if t in (torch.addmm, torch.baddbmm, torch.addmv):  # beta * input + alpha * (m1 @ m2)
            beta, alpha = kw.get("beta", 1), kw.get("alpha", 1)
            if not all(type(v) in (int, float) for v in (beta, alpha)):
                raise NotFusable
            y = self.matmul(self.a(args[1]), self.a(args[2]), trans_b=False)
            y = y if alpha == 1 else self.ew("mul", y, float(alpha))
            if beta == 0:  # torch ignores the input then, NaN and all
                return y
            c = self.a(args[0])
            return self.ew("add", y, c if beta == 1 else self.ew("mul", c, float(beta)))
        if t in (F.dropout,) and not arg(2, "training", False):
            return self.a(args[0])
        if t is operator.getitem and isinstance(self.env.get(args[0]), tuple):
            return _field(self.env[args[0]], args[1])
        raise NotFusable

    def reduce(self, fn: str, x, dim, keepdim, kw, of: fx.Node | None = None):
        """A reduction of x over dim. `of`: x's FX node, where the model itself reduces it (x.sum(-1)):
        then a sum or mean of a product nothing else reads may become a matrix-vector product, and one
        over dims an earlier keepdim reduction left at 1 is none (`of_one`)."""
        if not isinstance(x, Val) or kw.get("dtype") is not None or isinstance(dim, fx.Node):
            raise NotFusable
        x = self.own_rows(x)
        if of is not None:
            one = self.of_one(x, dim, keepdim)
            if one is not None:
                return one
        if fn == "prod" and not (whole(dim) or dim is None and not keepdim):  # torch.prod takes one dim
            raise NotFusable
        unit = self._on_unit_source(x, dim, lambda v, d: self.reduce(fn, v, d, True, kw), keepdim)
        if unit is not None:
            return unit
        spatial = list(range(2, len(x.shape)))
        if fn in ("sum", "mean") and of is not None and "grouped" in x.mm and dim is not None \
                and self._read_once(of):
            reduced = self._reduced(x, dim)
            s = self.reduced_group_norm(fn, x, reduced)  # each channel's mean, from the input
            if s is not None:
                return self._squeeze(s, reduced, keepdim)
        if fn in ("sum", "mean") and of is not None and len(x.shape) in (3, 4, 5) and not x.squeezed \
                and dim is not None and self._reduced(x, dim) == [1] and self._read_once(of):
            s = self.channel_reduced_conv(fn, x)  # of a convolution: one output channel, the weight reduced
            if s is not None:
                return self._squeeze(s, [1], keepdim)
        if fn in ("sum", "mean") and of is not None and len(x.shape) in (3, 4, 5) and not x.squeezed \
                and dim is not None and 0 < len(reduced := self._reduced(x, dim)) and set(reduced) <= set(spatial):
            # of a convolution: its tap sums times its weight; where the convolution is read besides (x -
            # x.mean((2, 3, 4), keepdim=True)), only if its input is no larger than its output
            s = self.reduced_conv(fn, x, reduced, read_besides=not self._read_once(of))
            if s is not None:
                return self._squeeze(s, reduced, keepdim)
        runs = _runs(dim, len(x.shape))
        if len(runs) > 1 and not x.squeezed:
            # dims apart in memory, (0, 2): one reduction per run of adjacent dims, the innermost first (a
            # mean of equal-sized means is the mean)
            v = x
            for run in reversed(runs):
                v = self.reduce(fn, v, run, True, kw)
            return self._squeeze(v, [d for run in runs for d in run], keepdim)
        last = len(x.shape) - 1
        if fn in ("sum", "mean") and x.dtype == torch.float32 and last >= 1 and not x.squeezed \
                and dim in (-1, last, [-1], [last], (-1,), (last,)) and of is not None and self._read_once(of):
            s = self.reduced_product(fn, x)  # of a matmul: a matrix-vector product
            if s is not None:
                return self._squeeze(s, [last], keepdim)
        try:
            return self.red(fn, x, dim, bool(keepdim))
        except NotFusable:  # over middle dims: columns, or rows of the moved layout (the ops around join)
            moved = self._on_moved(x, dim, lambda xm, d: self.red(fn, xm, d, True), keepdim) if self.middle_rows \
                else None
            return moved if moved is not None else self.col(fn, x, dim, bool(keepdim))

    def of_one(self, x: Val, dim, keepdim) -> Val | None:
        """x itself (viewed without the dims where not keepdim) where every dim reduced is one an earlier
        keepdim reduction left at 1, at any size: a sum, mean, max, min, product or log-sum-exp of one
        element is that element (`x.sum(1, keepdim=True).max(1, keepdim=True)[0]`, KernelBench's chains
        of reductions), where a kernel each would be launched for nothing. None otherwise."""
        if x.squeezed or dim is None or isinstance(dim, bool) or not x.dtype.is_floating_point:
            return None  # (a sum of bools is an int64)
        dims = [dim] if whole(dim) else list(dim) if isinstance(dim, (list, tuple)) else None
        if not dims or not all(whole(d) and -len(x.shape) <= d < len(x.shape) for d in dims):
            return None
        dims = sorted({d % len(x.shape) for d in dims})
        return self._squeeze(x, dims, keepdim) if set(dims) <= _kept_ones(x) else None

    def arg_reduce(self, fn: str, x, dim, keepdim) -> Val:
        """torch.argmax / argmin of a float tensor: over one dim (the last: a row kernel, a middle one: the
        column kernel), or over all of it (dim None: the index into the flattened tensor)."""
        x = self.own_rows(x)
        if not isinstance(x, Val) or x.squeezed or not x.shape or not x.dtype.is_floating_point \
                or not isinstance(keepdim, bool) or (dim is None and keepdim) or not (dim is None or whole(dim)):
            raise NotFusable
        if dim is None:
            v = self.red(fn, x, None, False)
        else:
            try:
                v = self.red(fn, x, [dim], keepdim)
            except NotFusable:
                v = self.col(fn, x, [dim], keepdim)
        v.dtype = torch.int64
        return v

    def _read_once(self, node: fx.Node) -> bool:
        """Whether node, and each node of the same shape it is computed from up to the product, has one
        reader: else the product is needed anyway, and reducing it in another pass is work added
        (a hand-written layer norm's mean would leave its variance's Welford pass)."""
        shape = self.env[node].shape if isinstance(self.env.get(node), Val) else None
        todo = [node]
        while todo:
            n = todo.pop()
            v = self.env.get(n)
            if not isinstance(v, Val) or v.shape != shape or n.op not in ("call_function", "call_method",
                                                                          "call_module"):
                continue
            if len(n.users) != 1:
                return False
            if v.kind not in ("mm", "conv"):
                todo += n.all_input_nodes
        return True

    def python_arg(self, value, deps: list) -> str:
        """Python for a call's int argument read at run time: a literal (an int, None, a string, tuples of
        them), a model's int attribute, or a python value the forward computed (x.size(-1)); for the
        latter `deps` gets its value and the text a {i} slot."""
        if value is None or isinstance(value, str):
            return repr(value)
        if isinstance(value, bool):
            raise NotFusable
        if isinstance(value, AttrInt):
            return value.path
        if whole(value):
            return repr(int(value))
        if isinstance(value, (list, tuple)):
            inner = [self.python_arg(v, deps) for v in value]
            return "(" + ", ".join(inner) + ("," if len(inner) == 1 else "") + ")"
        if isinstance(value, fx.Node):
            known = self.env.get(value)
            if isinstance(known, Val) and known.mm.get("tuple"):
                deps.append(known)
                return "{" + str(len(deps) - 1) + "}"
            if whole(known):
                return self.python_arg(known, deps)
        raise NotFusable

    def topk(self, node: fx.Node) -> Val:
        """The values of torch.topk over the last dim, sorted; the indices stay torch's (ties have no
        one right order to check a kernel's against)."""
        args, kw = node.args, node.kwargs

        def arg(i, name, default):
            return args[i] if len(args) > i else kw.get(name, default)

        x, k, dim = self.own_rows(self.a(args[0])), arg(1, "k", None), arg(2, "dim", -1)
        if not isinstance(x, Val) or x.squeezed or not x.shape or not whole(k) or not _values_only(node) \
                or dim not in (-1, len(x.shape) - 1) or not arg(4, "sorted", True) or kw.get("out") is not None:
            raise NotFusable
        if not 0 < k <= _TOPK_MAX_K:  # the kernel unrolls one merge step per value kept
            raise NotFusable
        largest = bool(arg(3, "largest", True))
        return self.new("topk", fn="largest" if largest else "smallest", args=[x], shape=x.shape[:-1] + (k,),
                        dtype=x.dtype, mm={"k": k})

    def scan(self, node: fx.Node, fn: str) -> Val:
        """torch.cumsum / cumprod / cummax / cummin (their values) over the last dim of a float tensor, in
        its own dtype. Of a flipped tensor it is the reversed scan, flipped: flip(cumsum(flip(x))), a
        suffix sum, is one kernel reading x in place."""
        args, kw = node.args, node.kwargs
        x, dim = self.own_rows(self.a(args[0])), args[1] if len(args) > 1 else kw.get("dim")
        if not isinstance(x, Val) or x.squeezed or not x.shape or not x.dtype.is_floating_point \
                or not whole(dim) or kw.get("dtype") is not None or kw.get("out") is not None:
            raise NotFusable
        if dim % len(x.shape) != len(x.shape) - 1:  # down the columns: a kernel of its own (scan.py)
            return self.new("scan", fn=fn, args=[x], shape=x.shape, dtype=x.dtype, mm={"dim": dim % len(x.shape)})
        flipped = x.mm.get("flip_of")
        v = self.new("scan", fn=fn, args=[flipped if flipped is not None else x], shape=x.shape, dtype=x.dtype,
                     mm={"reverse": flipped is not None})
        return self.flip_last(v) if flipped is not None else v

    def flip_last(self, x: Val) -> Val:
        """x flipped along its last dim (a copy torch makes), marked so that a scan of it, or a flip of it,
        reads x itself."""
        if x.mm.get("flip_of") is not None:  # flip(flip(y)) is y
            return x.mm["flip_of"]
        v = self.new("torch", expr="{0}.flip(-1)", args=[x], shape=x.shape, dtype=x.dtype)
        v.mm["flip_of"] = x
        return v

    def matmul(self, a: Val, b: Val, trans_b: bool) -> Val:
        if not isinstance(a, Val) or not isinstance(b, Val) or any(  # a reduction's own result is a plain tensor
                v.squeezed and v.kind != "red" for v in (a, b)):
            raise NotFusable
        scaled = self.diagonal_product(a, b) if not trans_b else None
        if scaled is not None:
            return scaled
        ra, rb = len(a.shape), len(b.shape)
        if not trans_b and (ra, rb) in ((2, 1), (1, 2)):  # a matrix and a vector: the vector as a matrix
            column = rb == 1
            v = b if column else a
            as_matrix = self.view(f"{{0}}.reshape({'-1, 1' if column else '1, -1'})", [v],
                                  (v.shape[0], 1) if column else (1, v.shape[0]), v.dtype)
            y = self.matmul(a, as_matrix, False) if column else self.matmul(as_matrix, b, False)
            return self.view(f"{{0}}.squeeze({-1 if column else 0})", [y],
                             y.shape[:-1] if column else y.shape[1:], y.dtype)
        if "transpose_of" in b.mm:  # a @ w.T: w read as the transposed operand
            b, trans_b = b.mm["transpose_of"], not trans_b
        if a.dtype != b.dtype or not a.dtype.is_floating_point:
            raise NotFusable
        ra, rb = len(a.shape), len(b.shape)
        if ra < 2 or rb < 2:
            raise NotFusable
        # batched: equal leading dims on both sides (bmm, or matmul on (..., M, K) @ (..., K, N))
        if rb > 2 and (ra != rb or tuple(a.shape[:-2]) != tuple(b.shape[:-2]) or trans_b):
            raise NotFusable
        n = b.shape[0] if trans_b else b.shape[-1]
        shape = a.shape[:-1] + (n,)
        thin = self.thin_product(a, b, trans_b)
        if thin is not None:
            return thin
        return self.new("mm", args=[a, b], shape=tuple(shape), dtype=a.dtype,
                        mm={"trans_b": trans_b, "batched": rb > 2})


def _kept_ones(v: Val) -> set[int]:
    """The dims of v that are 1 because a keepdim reduction made them so, whatever the sizes: the reduced
    dims of a keepdim reduction (rows or columns, or rows of a moved layout viewed back); of an
    elementwise op, those its operands of its shape all have, where the others (broadcast into it) are
    1 too."""
    if v.kind == "red" and not v.squeezed:
        return set(range(len(v.shape) - v.k, len(v.shape)))
    if v.kind == "cred" and v.mm["keepdim"]:
        return set(range(*v.mm["dims"]))
    if v.kind == "conv" and v.mm.get("one_channel"):  # a convolution whose weight was reduced over channels
        return {1}
    if v.kind == "view" and "unit_of" in v.mm:  # a view adding dims of size 1: they are 1 at any size
        return {d for d, n in enumerate(v.shape) if n == 1}
    if v.kind == "view" and "moved" in v.mm:  # computed in a moved layout: its dims there, in v's order
        order = moved_order(v.mm["moved"][0], len(v.shape))
        return {order[d] for d in _kept_ones(v.args[0])}
    if v.kind != "ew":
        return set()
    operands = [a for a in v.args if isinstance(a, Val)]
    same = [a for a in operands if tuple(a.shape) == tuple(v.shape)]
    if not same:
        return set()
    kept = set.intersection(*(_kept_ones(a) for a in same))
    for a in operands:
        lead = len(v.shape) - len(a.shape)
        kept = {d for d in kept if d < lead or a.shape[d - lead] == 1}
    return kept


def _runs(dim, rank: int) -> list[list[int]]:
    """A reduction's dims (a list or tuple of ints) as runs of adjacent dims: (0, 2, 3) -> [[0], [2, 3]];
    [] for one dim, all dims (None), or anything else."""
    if not isinstance(dim, (list, tuple)) or not dim or not all(whole(d) for d in dim) or rank == 0:
        return []
    runs: list[list[int]] = []
    for d in sorted({d % rank for d in dim}):
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def _dims_of(shape) -> int:
    """How many dims a normalized_shape names: a literal, or x.shape[-2:] / x.size()[1:] taken in forward
    (an FX node: its length is the slice of x's rank)."""
    if isinstance(shape, int):
        return 1
    if isinstance(shape, (tuple, list)):
        return len(shape)
    if isinstance(shape, fx.Node) and shape.target is operator.getitem and isinstance(shape.args[1], slice):
        sizes = shape.args[0]
        of = sizes.args[0] if isinstance(sizes, fx.Node) and (
            sizes.target is getattr and sizes.args[1] == "shape" or sizes.op == "call_method"
            and sizes.target == "size" and len(sizes.args) == 1) else None
        meta = of.meta.get("tensor_meta") if isinstance(of, fx.Node) else None
        if hasattr(meta, "shape"):
            return len(range(*shape.args[1].indices(len(meta.shape))))
    raise NotFusable


def _one_operand(args: tuple, kw: dict) -> bool:
    """A unary call with nothing that changes what it computes (an inplace flag is lower()'s to handle;
    torch.round(x, decimals=2) is not round(x))."""
    return len(args) - sum(isinstance(a, bool) for a in args[1:]) == 1 and set(kw) <= {"inplace"}


def _apart_at(shape: tuple, stride) -> tuple | None:
    """The dims where a view's memory stops nesting, its last dim dense (a chunk or slice of an inner dim,
    or every other row and column of an NHWC image: the dims from each on are apart from those before),
    or None (dense, or its last dim not)."""
    last, breaks = _breaks(shape, stride)
    return breaks if last == 1 and breaks else None


def _stepped(shape: tuple, stride) -> tuple | None:
    """The dims where a view's memory stops nesting (maybe none), where its last dim takes every other
    element (`x[..., ::2]`, YOLOv5's Focus, GPT-J's rotary halves), else None. Read in place, each load
    uses half of the memory it touches, as a copy's read would, and the copy is saved."""
    last, breaks = _breaks(shape, stride)
    return breaks if last == 2 else None


def _dense(shape: tuple, stride) -> bool:
    """Whether a traced tensor is contiguous (dims of size 1 aside), or its strides are unknown."""
    last, breaks = _breaks(shape, stride)
    return last in (None, 1) and not breaks


def _breaks(shape: tuple, stride) -> tuple[int | None, tuple]:
    """A traced tensor's last stride (dims of size 1 aside; None where unknown or it has none) and the
    dims where its memory stops nesting (each stride the next dim's extent times its stride)."""
    if not stride or len(stride) != len(shape):
        return None, ()
    dims = [(n, st) for n, st in zip(shape, stride) if n != 1]
    if not dims:
        return None, ()
    kept = [d for d, n in enumerate(shape) if n != 1]
    return dims[-1][1], tuple(kept[i] for i in range(1, len(dims)) if dims[i - 1][1] != dims[i][0] * dims[i][1])


def _field(result: tuple, i) -> Val:
    """Field i of a (values, indices) result lowered as a pair: (values, its FX node) where only the
    values are read (`_values_only`: the indices' field, read by nothing, stands for the values and is
    dropped with the unread), (values, indices) where both are."""
    if i not in (0, 1):
        raise NotFusable
    return result[i] if isinstance(result[i], Val) else result[0]


def _values_only(node: fx.Node) -> bool:
    """Whether only the values of a (values, indices) result are read: `torch.max(x, 1)[0]`, `.values`, or
    `mx, _ = torch.max(x, 1)` (the indices' getitem, read by nothing, is dropped with the unused values)."""
    def values(u: fx.Node) -> bool:
        return u.target is operator.getitem and u.args[1] == 0 or u.target is getattr and u.args[1] == "values"
    return all(u.op == "call_function" and u.target in (operator.getitem, getattr) and (values(u) or not u.users)
               for u in node.users)


def _copy_needed(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether node's tensor must be a copy of its own: an in-place op (an in-place module's too) changes it,
    or forward returns it, directly or through views (a tensor of its own, as the reference's is)."""
    for u in node.users:
        module_in_place = u.op == "call_module" and getattr(gm.get_submodule(u.target), "inplace", False) is True
        if u.op == "output" or u.args and u.args[0] is node and (in_place(u) or module_in_place):
            return True
        if _is_view(u) and _copy_needed(gm, u):
            return True
    return False


def _is_view(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem or \
        node.op == "call_method" and node.target in _VIEW_METHODS | _IDENTITY_METHODS


def _sole_view(view: fx.Node) -> bool:
    """Whether nothing but `view` reads the tensor under it (through a chain of views, each the only
    reader of the one before): then changing the view in place changes nothing else anyone reads."""
    node = view
    while _is_view(node):
        base = node.args[0]
        if not isinstance(base, fx.Node) or len(base.users) != 1:
            return False
        node = base
    return True


def _arg_getter(args: tuple, kw: dict):
    """arg(i, name, default): the call's i-th positional argument, else its keyword `name`, else default."""
    return lambda i, name, default=None: args[i] if len(args) > i else kw.get(name, default)


def _positional(node: fx.Node) -> tuple[tuple, dict]:
    """A function call's arguments with those passed by keyword that its signature takes by position
    moved into place (F.linear(input=x, weight=w) as F.linear(x, w)), as the lowering reads them."""
    if node.op != "call_function" or not node.kwargs:
        return node.args, dict(node.kwargs)
    try:
        signatures = [inspect.signature(node.target)]
    except (TypeError, ValueError):  # a builtin op: its schema's signatures, one per overload
        signatures = get_signature_for_torch_op(node.target) or []
    for sig in signatures:
        try:
            bound = sig.bind(*node.args, **node.kwargs)
        except TypeError:
            continue
        return bound.args, bound.kwargs
    return node.args, dict(node.kwargs)


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
    if name == "math.sqrt":  # of a traced size (the tracer makes no other math node); candidates import math
        return f"math.sqrt({args})"
    if not name.startswith("torch."):
        raise Unsupported(f"function {name} is not from torch")
    return f"{_public_name(target, name)}({args})"


_PUBLIC_NAMESPACES = ("torch.nn.functional", "torch", "torch.special", "torch.linalg", "torch.fft")


def _public_name(target, name: str) -> str:
    """A public alias of a builtin the trace names by its private home (F.avg_pool2d is
    torch._C._nn.avg_pool2d): the static checks refuse a candidate that reaches into torch._C."""
    if not name.startswith("torch._"):
        return name
    leaf = name.rsplit(".", 1)[1]
    for space in _PUBLIC_NAMESPACES:
        module = importlib.import_module(space)
        # torch.linalg.norm is torch._C._linalg.linalg_norm: the namespace's prefix dropped
        for public in (leaf, leaf.removeprefix(space.split(".")[-1] + "_")):
            if getattr(module, public, None) is target:
                return f"{space}.{public}"
    return name


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
    sqrt = math.sqrt  # of a model's tagged int or float (1 / math.sqrt(self.head_dim)): still read at run time
    def traced_sqrt(x):  # and of a traced size (1 / math.sqrt(k.size(-1))): a node of the graph
        if isinstance(x, fx.Proxy):
            return tracer.create_proxy("call_function", sqrt, (x,), {})
        return tagged(sqrt(x), f"math.sqrt({x.path})") if isinstance(x, (AttrInt, AttrFloat)) else sqrt(x)

    math.sqrt = traced_sqrt
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        math.sqrt = sqrt
        _factories_lock.release()


def _layer_forward(layer: nn.TransformerEncoderLayer | nn.TransformerDecoderLayer, x, *memory):
    """A transformer encoder or decoder layer's forward without masks and without its fast path (which
    FX cannot trace): the same blocks (self-attention, the decoder's attention to the memory, the
    feed-forward), each with its norm before or after the residual, each submodule a call FX records."""
    def attend(y):
        return layer.dropout1(layer.self_attn(y, y, y, need_weights=False)[0])

    def attend_memory(y):
        return layer.dropout2(layer.multihead_attn(y, *memory, *memory, need_weights=False)[0])

    norm_ff, drop_ff = (layer.norm3, layer.dropout3) if memory else (layer.norm2, layer.dropout2)

    def feed_forward(y):
        return drop_ff(layer.linear2(layer.dropout(layer.activation(layer.linear1(y)))))

    blocks = [(layer.norm1, attend)] + ([(layer.norm2, attend_memory)] if memory else []) + [(norm_ff, feed_forward)]
    for norm, block in blocks:
        x = x + block(norm(x)) if layer.norm_first else norm(x + block(x))
    return x


def _stack_forward(stack: nn.TransformerEncoder | nn.TransformerDecoder, x, *memory):
    for layer in stack.layers:
        x = layer(x, *memory)
    return x if stack.norm is None else stack.norm(x)


# torch.nn modules FX would keep whole whose forward without masks is plain ops behind a fast path, and
# how many tensors they take
_PLAIN_FORWARDS = {nn.TransformerEncoderLayer: (_layer_forward, 1), nn.TransformerEncoder: (_stack_forward, 1),
                   nn.TransformerDecoderLayer: (_layer_forward, 2), nn.TransformerDecoder: (_stack_forward, 2)}


class _Tracer(fx.Tracer):
    """FX's tracer, going into the modules of _PLAIN_FORWARDS when called on their tensors alone."""

    def call_module(self, m: nn.Module, forward, args, kwargs):
        plain, n_tensors = _PLAIN_FORWARDS.get(type(m), (None, 0))
        if plain is not None and len(args) == n_tensors \
                and not any(v is not None and v is not False for v in kwargs.values()):
            return plain(m, *args)
        return super().call_module(m, forward, args, kwargs)


def _trace(model: nn.Module, n_inputs: int) -> fx.GraphModule:
    """The model's FX graph. Forward's parameters past the inputs get_inputs gives keep their defaults
    in every call the harness makes (a temperature=1.0): they are traced as those constants. A buffer
    indexed at trace time (self.table[None]) becomes a constant of the graph module that ModelNew
    lacks, and one sliced by a traced size fails: then the buffers are traced as attributes too."""
    params = list(inspect.signature(model.forward).parameters.values())[n_inputs:]
    fixed = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
             and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)} or None
    for proxy_buffers in (False, True):
        tracer = _Tracer()
        tracer.proxy_buffer_attributes = proxy_buffers
        try:
            with _traceable_factories(tracer):
                gm = fx.GraphModule(model, tracer.trace(model, concrete_args=fixed))
        except Exception:
            if proxy_buffers:
                raise
            continue  # a buffer sliced by a traced size (self.mask[:, :, :T, :T]) needs it traced too
        if not any(n.op == "get_attr" and n.target.startswith("_tensor_constant") for n in gm.graph.nodes):
            break
    if fixed:  # FX guards each fixed argument with an assert on a placeholder: both go
        for node in reversed(gm.graph.nodes):
            if node.target is torch._assert and "has been specialized" in str(node.args[1:]) \
                    or not node.users and (node.op == "call_function" and node.target is operator.eq
                                           or node.op == "placeholder" and node.args):
                gm.graph.erase_node(node)
        gm.recompile()
    return gm


def lower_module(model: nn.Module, example_inputs: list, middle_rows: bool = False) -> Graph:
    exported = is_aten_graph(model)
    saved = _tag_number_attrs(model)
    try:
        try:
            if exported:
                gm = torch_level(model)
            else:
                gm = _trace(model, len(example_inputs))
                expand_multihead_attention(gm)
        except Exception as e:
            raise Unsupported(f"torch.fx cannot trace the model: {type(e).__name__}: {e}") from None
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        for node, value in zip(placeholders, example_inputs):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                node.meta["example_number"] = value
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
            if not exported and fuse_attention(gm):  # written-out attention: one call, one kernel
                ShapeProp(gm).propagate(*example_inputs)
        # max/min with a dim return (values, indices): the values are a row reduction.
        low = _Lowerer(gm, middle_rows)
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


# kinds whose value is all they make
_PURE = ("view", "ew", "cat", "red", "cred", "mm", "scan", "topk", "attn", "pool", "conv")


def _drop_unused(g: Graph) -> None:
    """Computed values and python values (x.device) nothing reads go (a group norm's output viewed back
    when the next op stayed in the norm's layout; the ops before a norm that it redid in its layout; the
    values a decomposition built before it gave up and left the op to torch): a reader outside every
    region would keep their producer from joining its users' kernel, and an unread kernel is wasted time.
    Torch ops stay, but for flips and diagonal matrices: another may change a tensor in place."""
    outputs = set(map(id, g.outputs))
    while dead := [v for v in g.vals if (v.kind in _PURE or v.mm.get("tuple") or v.mm.get("flip_of") is not None
                                         or v.mm.get("diag_of") is not None)
                   and not g.users[id(v)]
                   and id(v) not in outputs]:
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
                try:
                    values = low.reduce(name, low.a(args[0]), dim, bool(keep), {}, of=args[0])
                    if _values_only(node):
                        return (values, node)
                    # the indices read too: an argmax beside the max (the same first-extreme, NaN-first
                    # rule), one kernel with it where partition merges the siblings
                    return (values, low.arg_reduce("arg" + name, low.a(args[0]), dim, bool(keep)))
                except NotFusable:
                    return low.torch_node(node)
        scan = _SCANS.get(t) if node.op == "call_function" else t if node.op == "call_method" and t in \
            _SCANS.values() else None
        if scan is not None:
            values_only = scan in ("cumsum", "cumprod") or _values_only(node)  # cummax / cummin: (values, indices)
            try:
                if not values_only:
                    raise NotFusable
                v = low.scan(node, scan)
                return v if scan in ("cumsum", "cumprod") else (v, node)
            except NotFusable:
                return low.torch_node(node)
        flip = node.op == "call_function" and t is torch.flip or node.op == "call_method" and t == "flip"
        if flip and isinstance(low.env.get(node.args[0]), Val):
            x = low.env[node.args[0]]
            dims = node.args[1:] if node.op == "call_method" and len(node.args) > 2 else \
                node.args[1] if len(node.args) > 1 else node.kwargs.get("dims")
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            if x.shape and not x.squeezed and [d % len(x.shape) for d in dims if isinstance(d, int)] == [
                    len(x.shape) - 1]:
                return low.flip_last(x)
        tri = {torch.tril: "tril", torch.triu: "triu"}.get(t) if node.op == "call_function" else \
            t if node.op == "call_method" and t in ("tril", "triu") else None
        if tri is not None and isinstance(low.env.get(node.args[0]), Val):
            offset = node.args[1] if len(node.args) > 1 else node.kwargs.get("diagonal", 0)
            if low.triangle_of_product(low.env[node.args[0]], node.args[0], tri == "triu", offset):
                return low.env[node.args[0]]
        diag = node.op == "call_function" and t is torch.diag or node.op == "call_method" and t == "diag"
        if diag and isinstance(low.env.get(node.args[0]), Val):
            offset = node.args[1] if len(node.args) > 1 else node.kwargs.get("diagonal", 0)
            if offset == 0 and len(low.env[node.args[0]].shape) == 1:
                return low.diag_matrix(low.env[node.args[0]])
        if (node.op == "call_function" and t is torch.topk) or (node.op == "call_method" and t == "topk"):
            try:
                return (low.topk(node), node)
            except NotFusable:
                return low.torch_node(node)
        if node.op == "call_function" and t is getattr and isinstance(low.env.get(node.args[0]), tuple):
            return _field(low.env[node.args[0]], {"values": 0, "indices": 1}.get(node.args[1]))
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
