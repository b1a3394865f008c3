"""Pieces every template shares: Triton expressions for primitives, broadcast addressing of
leaves, the torch rendering of uncovered primitives, and the assembly of the candidate file."""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass, field

import torch

from kevolve.tools.static_checks import parse_python

from . import concat
from .ir import PREPARED_CACHE, Graph, Val
from .partition import Region
from .pool_folds import POOLED_HELPERS
from .products import TAP_SUM_HELPERS

_TANH = "_tanh({a})"  # HELPERS' jit function

# log1p and expm1 without libdevice, to a few ulps near 0 where log(1 + x) and exp(x) - 1 lose all of x:
# the rounding of u = 1 + x (or u = exp(x)) is undone by the factor x / (u - 1) (Goldberg, Kahan)
LOG1P = ("tl.where(tl.abs({a}) < 0.5, tl.where(1.0 + ({a}) == 1.0, {a},"
          " tl.log(1.0 + ({a})) * (({a}) / ((1.0 + ({a})) - 1.0))), tl.log(1.0 + ({a})))")
EXPM1 = ("tl.where(tl.abs({a}) < 0.5, tl.where(tl.exp({a}) == 1.0, {a},"
          " (tl.exp({a}) - 1.0) * (({a}) / tl.log(tl.exp({a})))), tl.exp({a}) - 1.0)")


def _softplus(a: str, beta: float, th: float) -> str:
    return f"tl.where({a} * {beta} > {th}, {a}, tl.log(1.0 + tl.exp({a} * {beta})) / {beta})"


def _max(a: str, b: str) -> str:  # NaN wins, as in torch.maximum, relu and clamp (tl.maximum drops it)
    return f"tl.maximum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"


def _min(a: str, b: str) -> str:
    return f"tl.minimum({a}, {b}, propagate_nan=tl.PropagateNan.ALL)"


def tl_expr(fn: str, a: list[str]) -> str:
    """A Triton expression for one primitive on fp32 operands (strings)."""
    name, *p = fn.split(":")
    x = a[0]
    b, c = (a + [x, x])[1], (a + [x, x, x])[2]
    binops = {"add": "+", "sub": "-", "mul": "*", "div": "/", "gt": ">", "lt": "<", "ge": ">=", "le": "<=",
              "eq": "=="}
    if name in binops:
        return f"{a[0]} {binops[name]} {a[1]}"
    simple = {"maximum": _max(x, b), "minimum": _min(x, b), "relu": _max(x, "0.0"),
              "sigmoid": f"tl.sigmoid({x})", "tanh": _TANH.format(a=x),
              "exp": f"tl.exp({x})", "log": f"tl.log({x})", "abs": f"tl.abs({x})", "sqrt": f"tl.sqrt({x})",
              "rsqrt": f"tl.rsqrt({x})", "neg": f"-{x}", "square": f"{x} * {x}", "reciprocal": f"1.0 / {x}",
              "erf": f"tl.math.erf({x})", "silu": f"{x} * tl.sigmoid({x})",
              "gelu": f"0.5 * {x} * (1.0 + tl.math.erf({x} * 0.7071067811865476))",
              "gelu_tanh": f"0.5 * {x} * (1.0 + " + _TANH.format(
                  a=f"(0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x}))") + ")",
              "hardswish": f"{x} * {_min(_max(f'{x} + 3.0', '0.0'), '6.0')} / 6.0",
              "hardsigmoid": _min(_max(f"{x} / 6.0 + 0.5", "0.0"), "1.0"),
              "relu6": _min(_max(x, "0.0"), "6.0"),
              "mish": f"{x} * " + _TANH.format(a=_softplus(x, 1.0, 20.0)),
              "where": f"tl.where({x}, {b}, {c})", "softsign": f"{x} / (1.0 + tl.abs({x}))",
              "selu": f"1.0507009873554805 * tl.where({x} > 0.0, {x}, 1.6732632423543772 * "
                      + EXPM1.format(a=x) + ")",
              # log(1 + e) loses e below fp32's epsilon next to 1: an absolute error under 6e-8
              "logsigmoid": f"tl.minimum({x}, 0.0) - tl.log(1.0 + tl.exp(-tl.abs({x})))",
              "tanhshrink": f"{x} - " + _TANH.format(a=x),
              "log1p": LOG1P.format(a=x), "expm1": EXPM1.format(a=x),
              "floor": f"tl.floor({x})", "ceil": f"tl.ceil({x})",
              "trunc": f"tl.where({x} >= 0.0, tl.floor({x}), tl.ceil({x}))",
              "sign": f"tl.where({x} > 0.0, 1.0, tl.where({x} < 0.0, -1.0, {x}))",  # NaN and ±0 stay
              # half to even, as torch.round: adding 1.5 * 2**23 leaves no fraction bits, so the add rounds
              # in fp32's own mode (to nearest, ties to even); at or over 2**23 every float is whole
              "round": f"tl.where(tl.abs({x}) < 8388608.0, ({x} + 12582912.0) - 12582912.0, {x})",
              # the kernel computes in fp32 and the store converts to the value's dtype; an integer (an
              # arg reduction's indices, in the kernel that found them) is made fp32 here
              "cast": f"{x}.to(tl.float32)" if p else x}
    if name in simple:
        return simple[name]
    if name == "fill":  # zeros_like / ones_like / full_like: x's shape, one value (x's NaN or inf too)
        return f"(tl.zeros_like({x}) + {fmt_float(float(p[0]))})"
    if name == "leaky_relu":
        return f"tl.where({x} >= 0.0, {x}, {x} * {float(p[0])})"
    if name == "elu":
        return f"tl.where({x} > 0.0, {x}, {float(p[0])} * " + EXPM1.format(a=x) + ")"  # as torch: expm1
    if name == "softplus":
        return _softplus(x, float(p[0]), float(p[1]))
    if name == "celu":
        return f"tl.where({x} > 0.0, {x}, {float(p[0])} * " + EXPM1.format(a=f"({x} / {float(p[0])})") + ")"
    if name == "threshold":
        return f"tl.where({x} > {float(p[0])}, {x}, {float(p[1])})"
    if name == "softshrink":
        lam = float(p[0])
        return f"tl.where({x} > {lam}, {x} - {lam}, tl.where({x} < -{lam}, {x} + {lam}, 0.0))"
    if name == "hardshrink":
        return f"tl.where(tl.abs({x}) > {float(p[0])}, {x}, 0.0)"
    if name == "clamp":
        out = x
        if p[0] != "None":
            out = _max(out, str(float(p[0])))
        if p[1] != "None":
            out = _min(out, str(float(p[1])))
        return out
    raise KeyError(fn)


def divide_mean(v: Val, count: str) -> str:
    """What turns a reduction's accumulated sum into its value: ' / count' for a mean, ' / (count - c)'
    for a variance's mean of squares with a correction (unbiased: c = 1), '' otherwise."""
    if v.fn != "mean":
        return ""
    c = v.mm.get("correction")
    return f" / ({count} - {c})" if c else f" / {count}"


def torch_expr(v: Val) -> str:
    """PyTorch code for a primitive that no region took (slots {0}, {1}... are its Val args)."""
    slots, i = [], 0
    for a in v.args:
        if isinstance(a, Val):
            slots.append("{" + str(i) + "}")
            i += 1
        else:
            slots.append(repr(a))
    if v.kind == "mm":
        fn = "torch.nn.functional.linear" if v.mm.get("trans_b") else "torch.matmul"
        if "tri" in v.mm:  # the library's product, then its triangle
            upper, offset = v.mm["tri"]
            return f"torch.{'triu' if upper else 'tril'}({fn}({slots[0]}, {slots[1]}), {offset})"
        return f"{fn}({slots[0]}, {slots[1]})"
    if v.kind in ("red", "cred"):
        r = len(v.args[0].shape)
        dims = list(range(r - v.k, r)) if v.kind == "red" else list(range(*v.mm["dims"]))
        keep = not v.squeezed if v.kind == "red" else v.mm["keepdim"]
        if v.fn in ("argmax", "argmin", "prod"):  # one dim, or all of them (flattened)
            one = f", dim={dims[0]}, keepdim={keep}" if len(dims) == 1 else ""
            return f"torch.{v.fn}({slots[0]}{one})"
        fn = {"sum": "torch.sum", "mean": "torch.mean", "max": "torch.amax", "min": "torch.amin"}[v.fn]
        if v.mm.get("correction"):  # sum / (count - correction)
            return (f"(torch.sum({slots[0]}, dim={dims}, keepdim={keep}) / (math.prod({slots[0]}.shape[d] "
                    f"for d in {dims}) - {v.mm['correction']}))")
        return f"{fn}({slots[0]}, dim={dims}, keepdim={keep})"
    if v.kind == "attn":  # no scale: the default, 1/sqrt(head size)
        scale = f"float({slots[3]})" if len(slots) > 3 else "None"
        return (f"torch.nn.functional.scaled_dot_product_attention({slots[0]}, {slots[1]}, {slots[2]}, "
                f"is_causal={v.mm['causal']}, scale={scale})")
    if v.kind == "topk":
        return f"torch.topk({slots[0]}, {v.mm['k']}, dim=-1, largest={v.fn == 'largest'}).values"
    if v.kind == "conv":  # cuDNN's; slots[2]: (stride, padding, dilation, groups[, output_padding])
        g, d = slots[2], v.mm["dims"]
        if v.mm.get("transposed"):
            return (f"torch.nn.functional.conv_transpose{d}d({slots[0]}, {slots[1]}, None, {g}[0], {g}[1], {g}[4], "
                    f"{g}[3], {g}[2])")
        return f"torch.nn.functional.conv{d}d({slots[0]}, {slots[1]}, None, *{g})"
    if v.kind == "pool":  # slots[1]: its geometry, (kernel, stride, padding, dilation, divisor override)
        d, ceil, cfg = v.mm["dims"], v.mm["ceil"], slots[1]
        if v.fn == "max":
            return f"torch.nn.functional.max_pool{d}d({slots[0]}, *{cfg}[:4], ceil_mode={ceil})"
        divisor = f", divisor_override={cfg}[4]" if d > 1 else ""
        return (f"torch.nn.functional.avg_pool{d}d({slots[0]}, {cfg}[0], {cfg}[1], {cfg}[2], ceil_mode={ceil}, "
                f"count_include_pad={v.mm['include_pad']}{divisor})")
    if v.kind == "cat" and v.mm.get("interleave"):
        return f"torch.stack([{', '.join(slots)}], dim=-1).flatten(-2)"
    if v.kind == "cat":
        return f"torch.cat([{', '.join(slots)}], dim={v.mm['dim']})"
    if v.kind == "scan":
        x = f"{slots[0]}.flip(-1)" if v.mm.get("reverse") else slots[0]
        scan = f"torch.{v.fn}({x}, dim={v.mm.get('dim', -1)})" + (".values" if v.fn in ("cummax", "cummin") else "")
        return f"{scan}.flip(-1)" if v.mm.get("reverse") else scan
    name, *p = v.fn.split(":")
    ops = {"add": "+", "sub": "-", "mul": "*", "div": "/", "gt": ">", "lt": "<", "ge": ">=", "le": "<=",
           "eq": "=="}
    if name in ops:
        return f"({slots[0]} {ops[name]} {slots[1]})"
    F = "torch.nn.functional"
    table = {"gelu_tanh": f"{F}.gelu({{}}, approximate='tanh')", "gelu": f"{F}.gelu({{}})",
             "silu": f"{F}.silu({{}})", "mish": f"{F}.mish({{}})", "hardswish": f"{F}.hardswish({{}})",
             "hardsigmoid": f"{F}.hardsigmoid({{}})", "relu6": f"{F}.relu6({{}})",
             "softsign": f"{F}.softsign({{}})", "logsigmoid": f"{F}.logsigmoid({{}})",
             "tanhshrink": f"{F}.tanhshrink({{}})", "cast": f"{{}}.to({v.dtype})"}
    if name in table:
        return table[name].format(slots[0])
    if name == "where":
        return f"torch.where({', '.join(slots)})"
    if name == "pick":  # out-of-range columns (ignored targets) read column 0; a where drops them
        return f"{slots[0]}.gather(-1, {slots[1]}.clamp(0, {slots[0]}.shape[-1] - 1))"
    if name in ("maximum", "minimum"):
        return f"torch.{name}({slots[0]}, torch.as_tensor({slots[1]}))"
    if name == "fill":
        return f"torch.full_like({slots[0]}, {fmt_float(float(p[0]))})"
    if name == "leaky_relu":
        return f"{F}.leaky_relu({slots[0]}, {p[0]})"
    if name == "elu":
        return f"{F}.elu({slots[0]}, {p[0]})"
    if name == "softplus":
        return f"{F}.softplus({slots[0]}, {p[0]}, {p[1]})"
    if name in ("celu", "softshrink", "hardshrink", "threshold"):
        return f"{F}.{name}({slots[0]}, {', '.join(p)})"
    if name == "clamp":
        return f"torch.clamp({slots[0]}, {p[0]}, {p[1]})"
    return f"torch.{name}({slots[0]})"


# --------------------------------------------------------------------------------------------
# broadcast addressing

def padded(v: Val, rank: int) -> tuple:
    s = tuple(v.shape)
    return s + (1,) * (rank - len(s)) if v.squeezed else (1,) * (rank - len(s)) + s


def leaf_groups(v: Val, full: tuple, split: int, squeezed: bool = True) -> list[tuple[int, int]]:
    """Runs of dims the leaf really has (not broadcast), never crossing the row/column split, nor a
    view's barrier (where dims that are apart in memory meet: (N, H, W, C) seen in NCHW memory)."""
    r = len(full)
    p = padded(v, r) if squeezed else (1,) * (r - len(v.shape)) + tuple(v.shape)
    barrier = v.mm.get("barrier")
    breaks = v.mm.get("breaks", ())
    # the leaf's own dims, not the 1s padding it to the full rank: a 0-d parameter after a reduction
    # whose reduced dims end in a 1 had matched that 1 and read as a column operand (its load then took
    # the row's tile shape)
    own = range(len(v.shape)) if squeezed and v.squeezed else range(r - len(v.shape), r)
    groups: list[tuple[int, int]] = []
    start = None
    for d in range(r + 1):
        present = d < r and d in own and p[d] == full[d]
        if start is not None and (not present or d == split or d == barrier or d in breaks):
            groups.append((start, d))
            start = None
        if present and start is None:
            start = d
    return groups


@dataclass
class Leaf:
    """One leaf operand of a kernel: its pointer name, broadcast groups and load code."""
    val: Val
    name: str
    groups: list[tuple[int, int]]
    split: int
    rank: int
    squeezed: bool = False
    strided: bool = False  # read in place through its strides (a moved view), not made contiguous first
    shift: tuple | None = None  # (group, expression): that group's index (a cat's piece: its coordinate less
                                # the piece's offset, concat.py), not the flat index's

    def params(self) -> list[str]:
        """The kernel's parameters for this leaf: its pointer, then per group the divisor and modulus that
        take the group's index from the flat one and the stride. The divisor and modulus are constexpr,
        so the compiler divides by a constant (a multiply and a shift), where a division by a run-time
        value was a float reciprocal and about a dozen instructions of correction per element: a group
        norm's output pass took 48 instructions an element in sm_90 code, 19 with them constant. The
        stride stays a run-time value. A new shape compiles the kernel again, as torch.compile's static
        kernels do."""
        out = [f"{self.name}_ptr"]
        for j in range(len(self.groups)):
            out += [f"{self.name}_i{j}: tl.constexpr", f"{self.name}_s{j}: tl.constexpr", f"{self.name}_t{j}"]
        return out

    def address(self, row: str, col: str) -> tuple[str, set]:
        """Offset expression and which index spaces ({'row','col'}) it uses."""
        terms, uses = [], set()
        for j, (a, b) in enumerate(self.groups):
            in_row = b <= self.split
            idx = row if in_row else col
            uses.add("row" if in_row else "col")
            lo, hi = (0, self.split) if in_row else (self.split, self.rank)
            t = idx
            if self.shift is not None and self.shift[0] == j:
                t = f"({self.shift[1]})"
            else:
                if b != hi:
                    t = f"({t} // {self.name}_i{j})"
                if a != lo:
                    t = f"({t} % {self.name}_s{j})"
            if b != self.rank or self.strided:
                t = f"{t} * {self.name}_t{j}"
            terms.append(t)
        return (" + ".join(terms) if terms else "0"), uses

    def wrapper_args(self, var: str, full: str) -> str:
        if not self.groups:
            return var
        return f"{var}, *_bcast_args({var}, {full}, {self.split}, {tuple(self.groups)}, {self.squeezed})"

    def readable(self, var: str, full: str) -> str:
        """The wrapper's line that hands the kernel var: contiguous, or a strided leaf in place where one
        stride per group addresses it."""
        if not self.strided:
            return f"{var} = {var}.contiguous()"
        return f"{var} = _readable({var}, {full}, {self.split}, {tuple(self.groups)}, {self.squeezed})"


def read_leaves(reads: list[tuple[Val, tuple | None]], found: list[Val], full: tuple, split: int,
                strided, squeezed: bool) -> list[Leaf]:
    """A kernel's leaves (in0, in1..) where it reads concatenations (concat.py): each read (value, system)
    addressed in the kernel's coordinates, a piece's at its coordinate along the cat's dim less its offset.
    `strided(v)`: whether v is read in place through its strides; `squeezed`: row values on the left."""
    out = []
    for i, (v, s) in enumerate(reads):
        sq = squeezed and v.squeezed
        if s is None:
            out.append(Leaf(v, f"in{i}", leaf_groups(v, full, split, squeezed), split, len(full), sq, strided(v)))
            continue
        groups, shift = concat.piece_groups(leaf_groups(v, concat.piece_shape(s, full), split, squeezed), s, full,
                                            found.index(s[0]))
        out.append(Leaf(v, f"in{i}", groups, split, len(full), sq, strided(v), shift))
    return out


# fp32 products on tensor cores: each operand split into a TF32 head and a TF32 remainder, three products
# summed in fp32 (the remainders' product dropped), accurate to about fp32's own rounding; plain TF32 is
# not, and the harness's precision test refuses it. Whether the hardware's TF32 rounding keeps it so is
# for that same test to say, candidate by candidate.
DOT_MIN = 16  # tl.dot's smallest N and K (a conv group of fewer output channels takes outer products)
TF32X3_NOTE = "# tuning switch: fp32 products as three TF32 products (tensor cores) instead of IEEE FMAs"


# A model's number (self.scale) reaches a kernel as a 0-d tensor on the device, made once per value and
# device: made each forward, its fill kernel would cost as much as a small problem's whole kernel.
SCALAR_HELPER = '''_SCALARS = {}


def _scalar(value, device):
    key = (float(value), str(device))
    if key not in _SCALARS:
        if len(_SCALARS) > 64:  # a number that changes every call (or NaN, never equal): no growth
            _SCALARS.clear()
        _SCALARS[key] = torch.full((), key[0], dtype=torch.float32, device=device)
    return _SCALARS[key]'''


# A kernel that reads weights alone (a matrix-vector rewrite's column sums of W) gives the same tensor
# every forward until a weight changes, as an inference engine prepares weights once. A weight replaced
# or moved has a new storage; one changed in place (an optimizer step, load_state_dict) a new version.
# A change through `.data` bumps neither, and is not seen. Only for tensors the model holds: a tensor
# passed in may come at a freed one's address with the same version.
PREPARED_HELPER = '''def _prepared(cache, name, make, *args):
    """make(*args), made again only when a tensor argument's storage, version, shape or dtype moves."""
    key = tuple((a.data_ptr(), a._version, a.shape, a.dtype) if isinstance(a, torch.Tensor) else a for a in args)
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, make(*args))
    return hit[1]'''


# torch.compile switches convolutions to channels-last (NHWC), the layout cuDNN's tensor-core kernels
# read; whether that pays (bf16: usually; fp32 without TF32: not always) is for the timing to say.
CHANNELS_LAST_HELPER = '''CHANNELS_LAST = 0  # tuning switch: convolutions read channels-last (NHWC) input


def _channels_last(x):
    return x.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST else x


def _nhwc(tensors):
    """True when the 4-D operands that span the image come channels-last (and not also NCHW)."""
    big = [t for t in tensors if t.dim() == 4 and t.shape[1] > 1 and t.shape[2] * t.shape[3] > 1]
    return bool(big) and all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
                             for t in big)


def _as_nhwc(t):
    """An operand as a contiguous (N, H, W, C) tensor: a view of channels-last memory, no copy."""
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(0, 2, 3, 1).contiguous()'''

# tanh for every kernel of a candidate file (HELPERS), and for a compiler seed under the interpreter
TANH_JIT = '''@triton.jit
def _tanh(x):
    # tanh(|x|) = -expm1(-2|x|) / (2 + expm1(-2|x|)), expm1 by Kahan's trick: no libdevice (the interpreter
    # has none), no overflow, and a few ulps near 0, where 2 * sigmoid(2x) - 1 loses x to the rounding of
    # 0.5 + x (1e-5 of tanh(0.01): the harness's small-input trial failed every tanh template on it)
    u = -2.0 * tl.abs(x)
    e = tl.exp(u)
    kahan = (u > -0.5) & (e != 1.0)  # (the log's argument elsewhere is 0.5: no log(0) or division by 0)
    em = tl.where(kahan, (e - 1.0) * (u / tl.log(tl.where(kahan, e, 0.5))), tl.where(e == 1.0, u, e - 1.0))
    t = -em / (2.0 + em)
    return tl.where(x < 0.0, -t, t)'''

HELPERS = '''
# Host arithmetic around the launches is memoised by shapes and strides, and done with plain ints: a
# forward's Python comes on top of every launch, and triton.cdiv, triton.next_power_of_2 (2 µs a call in
# Triton 3.6) and torch.broadcast_shapes (12 µs) had made it 20-70 µs, more than a small kernel runs.
_MEMO = {}


def _memo(fn, *key):
    """fn(*key), computed once per key (shapes, strides, the kernel's constants and settings); each call
    where the key holds a list (a setting passed as one), which cannot be hashed."""
    try:
        hit = _MEMO.get((fn, key))
    except TypeError:
        return fn(*key)
    if hit is None:
        if len(_MEMO) > 4096:  # shapes that change every call: no growth
            _MEMO.clear()
        hit = _MEMO[(fn, key)] = fn(*key)
    return hit


def _cdiv(a, b):
    return -(-a // b)


def _pow2(n):
    """The least power of two >= n (1 for n <= 1)."""
    return 1 << max(0, n - 1).bit_length()


def _spatial3(v, d, fill):
    """An int, or d per-dim values, as three: `fill` in front (1-D and 2-D convolutions as 3-D ones)."""
    v = [int(v)] * d if isinstance(v, int) else [int(i) for i in v]
    return [fill] * (3 - len(v)) + v


def _padded(shape, stride, full, squeezed):
    """A leaf's sizes and strides over the kernel's full rank (broadcast dims: size 1, stride 0)."""
    pad = [(1, 0)] * (len(full) - len(shape))
    dims = list(zip(shape, stride))
    return dims + pad if squeezed else pad + dims


def _bcast_plan(shape, stride, full, split, groups, squeezed):
    dims = _padded(shape, stride, full, squeezed)
    args = []
    for a, b in groups:
        end = split if b <= split else len(full)
        strides = [st for n, st in dims[a:b] if n != 1]
        args += [math.prod(full[b:end]), math.prod(full[a:b]), strides[-1] if strides else 0]
    return tuple(args)


def _bcast_args(t, full, split, groups, squeezed):
    """(inner, size, stride) per broadcast group of a leaf, for index arithmetic: a group's stride is
    its innermost dim's (see _readable)."""
    return _memo(_bcast_plan, t.shape, t.stride(), full, split, groups, squeezed)


def _nested(shape, stride, full, groups, squeezed):
    dims = _padded(shape, stride, full, squeezed)
    for a, b in groups:
        run = [(n, st) for n, st in dims[a:b] if n != 1]
        if any(outer != n * st for (_, outer), (n, st) in zip(run, run[1:])):
            return False
    return True


def _readable(t, full, split, groups, squeezed):
    """t itself when one stride per group addresses it (each group's dims nest in memory: a contiguous
    tensor, or a view that keeps its groups apart), else a contiguous copy."""
    return t if _memo(_nested, t.shape, t.stride(), full, groups, squeezed) else t.contiguous()


def _broadcast(shapes, squeezed):
    rank = max(len(s) for s in shapes)
    padded = [tuple(s) + (1,) * (rank - len(s)) if sq else tuple(s) for s, sq in zip(shapes, squeezed)]
    return tuple(torch.broadcast_shapes(*padded))


def _full_shape(tensors, squeezed):
    """Broadcast shape of the leaves; squeezed row values line up on the left."""
    return _memo(_broadcast, tuple(t.shape for t in tensors), squeezed)


_SMS = {}


def _sm_count(device):
    if device not in _SMS:
        _SMS[device] = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    return _SMS[device]


def _persistent_grid(tiles, device):
    """Programs for a persistent kernel: a few per SM (a GPU), never more than there are tiles."""
    return (max(1, min(tiles, _sm_count(device) * 4)),)


def _row_splits(rows, n, block, per_sm, device):
    """(splits, span) for rows of n elements too few to fill the GPU (a row kernel's rows, a column
    kernel's strips): rows x splits programs come to about per_sm per SM, each taking span elements
    (whole blocks) of its row."""
    splits = max(1, min(_cdiv(_sm_count(device) * per_sm, rows), _cdiv(n, block), 1024))
    span = _cdiv(_cdiv(n, splits), block) * block
    return _cdiv(n, span), span
''' + "\n\n\n" + TANH_JIT


# a tiled product's program order (matmul and convolution templates): GROUP_M row-tiles in a row share each
# column-tile of the second operand while it is in L2
GROUPED_TILE = '''@triton.jit
def _grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    return first_pid_m + ((pid % num_pid_in_group) % group_size_m), (pid % num_pid_in_group) // group_size_m'''


# tl.max / tl.min, made NaN where a NaN was: tl.reduce with _max_combine is the same on a GPU, but the
# interpreter runs a jit combine once per element in Python (500x slower on a 64 x 1024 tile)
NAN_EXTREMES = {fn: f'''@triton.jit
def _a{fn}(x, axis: tl.constexpr):
    return tl.where(tl.max((x != x).to(tl.int32), axis) > 0, float('nan'), tl.{fn}(x, axis))'''
                for fn in ("max", "min")}

# Reductions and scans combine with these: Triton has no tl.prod, and its tl.max/tl.min (and tl.maximum
# without propagate_nan) drop NaN on the GPU, where torch's max, amax, min and cummax keep it.
REDUCE_HELPERS = '''@triton.jit
def _mul_combine(a, b):
    return a * b


@triton.jit
def _max_combine(a, b):
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _prod(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _mul_combine)''' + "\n\n\n" + NAN_EXTREMES["max"] + "\n\n\n" + NAN_EXTREMES["min"]


def dtype_str(d: torch.dtype) -> str:
    return str(d)


def fmt_float(x: float) -> str:
    if x != x:
        return "float('nan')"
    if x in (float("inf"), float("-inf")):
        return f"float('{x}')"
    return repr(float(x))


def emit_ew(v: Val, env: dict[int, str]) -> str:
    args = [env[id(a)] if isinstance(a, Val) else fmt_float(a) for a in v.args]
    return tl_expr(v.fn, args)


# --------------------------------------------------------------------------------------------
# file assembly

@dataclass
class RegionCode:
    """What a family template returns for one region."""
    source: str              # constants + kernel(s) + wrapper
    wrapper: str             # wrapper function name
    args: list[Val | str]    # the wrapper's arguments, in order (a str: python the forward evaluates)
    extras: list[Val] = field(default_factory=list)  # values it returns after its root's (partition's extras)


@dataclass
class Plan:
    graph: Graph
    regions: list[Region]
    codes: dict[int, RegionCode] = field(default_factory=dict)   # id(region) -> code
    # values a torch call computes from other values than their op's: id -> (expr with {0}.. slots, args)
    torch_calls: dict[int, tuple[str, list[Val]]] = field(default_factory=dict)


def fold_library_bias(plan: Plan) -> list[str]:
    """A Linear's bias that no other work joined (a model's last layer) goes into cuBLAS's epilogue,
    F.linear with its bias as torch.compile's addmm, instead of a kernel reading and writing the product
    again; unless that kernel is the candidate's only one (a candidate must run a kernel of its own)."""
    g, notes = plan.graph, []
    outputs = {id(o) for o in g.outputs}
    coded = [r for r in plan.regions if id(r) in plan.codes]
    for r in coded:
        if len(plan.codes) < 2:
            break
        if r.kind != "ew" or len(r.nodes) != 1 or r.nodes[0].fn != "add":
            continue
        add = r.nodes[0]
        operands = [a for a in add.args if isinstance(a, Val)]
        products = [a for a in operands if a.kind == "mm"]
        if len(operands) != 2 or len(products) != 1:
            continue
        mm = products[0]
        bias = operands[1] if operands[0] is mm else operands[0]
        if not mm.mm.get("trans_b") or "tri" in mm.mm or id(mm) in outputs or g.users[id(mm)] != [add] \
                or tuple(bias.shape) != (mm.shape[-1],) or bias.dtype != mm.dtype or add.shape != mm.shape:
            continue
        del plan.codes[id(r)]
        plan.torch_calls[id(add)] = ("torch.nn.functional.linear({0}, {1}, {2})", [*mm.args[:2], bias])
        notes.append(f"{add.name}: the Linear's bias in cuBLAS's epilogue (F.linear)")
    return notes


def _torch_args(plan: Plan, v: Val) -> list[Val]:
    """The values the torch call computing v reads (a folded Linear's x, w and b; else v's operands)."""
    return [a for a in plan.torch_calls.get(id(v), ("", v.args))[1] if isinstance(a, Val)]


def _var(v: Val | str) -> str:
    return v if isinstance(v, str) else v.expr if v.kind == "input" else v.name


def model_init_source(problem_source: str) -> tuple[str, str, str]:
    """(imports + helper classes + constants, the Model class body but its forward: __init__, the methods it
    calls (a `_make_layer`) and class attributes (`expansion = 1`), forward's signature) from the problem."""
    tree = parse_python(problem_source)
    lines = problem_source.splitlines()
    keep, members, init, sig = [], [], None, None
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if all(n.split(".")[0] in ("torch", "math", "typing", "functools") for n in names):
                keep.append(ast.get_source_segment(problem_source, node))
        elif isinstance(node, ast.Assign) and all(
                isinstance(c, ast.Constant) and isinstance(c.value, (int, float, str, bool))
                for c in (node.value.elts if isinstance(node.value, ast.Tuple) else [node.value])):
            keep.append(ast.get_source_segment(problem_source, node))
        elif isinstance(node, ast.ClassDef) and node.name == "Model":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "forward":
                    sig = ast.unparse(item.args)  # defaults are kept in the signature text
                elif not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)):  # not a docstring
                    start = min([d.lineno for d in getattr(item, "decorator_list", [])] + [item.lineno])
                    members.append(textwrap.dedent("\n".join(lines[start - 1:item.end_lineno])))
            if any(isinstance(item, ast.FunctionDef) and item.name == "__init__" for item in node.body):
                init = "\n\n".join(members) + "\n"
        elif isinstance(node, ast.ClassDef) or (isinstance(node, ast.FunctionDef)
                                                and node.name not in ("get_inputs", "get_init_inputs")):
            keep.append(ast.get_source_segment(problem_source, node))
    if init is None:
        init = "def __init__(self):\n    super().__init__()\n" + "".join(f"\n{m}\n" for m in members)
    init = init.replace("super(Model, self)", "super()")
    return "\n".join(keep), init, sig or "self, *args"


# torch-level helpers, by the function a forward's torch call (or another of them) calls
CALL_HELPERS = {**TAP_SUM_HELPERS, **POOLED_HELPERS}


def called_helpers(exprs: list[str]) -> list[str]:
    """The CALL_HELPERS texts the forward's torch expressions call, with those the texts call in turn."""
    def calls(text: str, name: str) -> bool:
        return re.search(rf"(?<![\w.]){name}\b", text) is not None

    names = [n for n in CALL_HELPERS if any(calls(e, n) for e in exprs)]
    for name in names:  # grows while it is read: each new text may call others
        names += [n for n in CALL_HELPERS if n not in names and calls(CALL_HELPERS[name], n)]
    return [CALL_HELPERS[n] for n in CALL_HELPERS if n in names]


def _prepared_once(plan: Plan, region_of_root: dict, needed: set[int]) -> set[int]:
    """The kernels (by their output's id) that read parameters alone, directly or through other such
    kernels and free views (a matrix-vector rewrite's column sums of a weight): made once per model
    and made again when a parameter changes, not every forward. Only where nothing but kernels and
    library convolutions or products read the result: a returned tensor, or one another torch call
    could change in place, is made every time."""
    g = plan.graph
    from_params: set[int] = set()
    read_by_torch = {id(o) for o in g.outputs}
    for v in g.vals:
        if id(v) not in needed:
            continue
        if id(v) in region_of_root:
            code = plan.codes[id(region_of_root[id(v)])]
            args = code.args
            if args and not code.extras and all(isinstance(a, Val) and id(a) in from_params or a == PREPARED_CACHE
                                                for a in args):
                from_params.add(id(v))
            continue
        deps = _torch_args(plan, v)
        if v.kind not in ("conv", "mm"):  # cuDNN's and cuBLAS's calls read their operands, never write them
            read_by_torch |= {id(a) for a in deps}
        if v.kind == "param" or v.kind == "view" and deps and all(id(a) in from_params for a in deps):
            from_params.add(id(v))
    return {i for i in from_params if i in region_of_root and i not in read_by_torch}


def _unrepeated(source: str, defined: set[str]) -> str:
    """A region's source without the top-level functions an earlier region's defined word for word (the
    helpers each template carries: _grouped_tile, _pool_geometry, the reduction combiners); `defined`
    collects the texts of those it keeps."""
    lines = source.split("\n")
    dropped: set[int] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef):
            start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
            text = "\n".join(lines[start:node.end_lineno])
            if text in defined:
                dropped.update(range(start, node.end_lineno))
            defined.add(text)
    if not dropped:
        return source
    kept = "\n".join(line for i, line in enumerate(lines) if i not in dropped)
    return re.sub(r"\n{4,}", "\n\n\n", kept).strip("\n")


def assemble(plan: Plan, problem_source: str, header_note: str) -> str:
    g = plan.graph
    prelude, init, sig = model_init_source(problem_source)
    region_of_root = {id(r.root): r for r in plan.regions if id(r) in plan.codes}
    # a value two regions compute (partition's redone ones) is made by torch where one of them is torch's
    members = {id(n) for r in plan.regions if id(r) in plan.codes for n in r.nodes} - \
        {id(n) for r in plan.regions if id(r) not in plan.codes for n in r.nodes}
    # values a region's call returns besides its root (before the root in the graph's order; read after it)
    returned = {id(e): r.root for r in region_of_root.values() for e in plan.codes[id(r)].extras}
    # which values the forward must materialize
    needed: set[int] = {id(o) for o in g.outputs}
    for r in region_of_root.values():
        needed |= {id(a) for a in plan.codes[id(r)].args}
    for v in reversed(g.vals):
        if id(v) in needed and id(v) not in region_of_root and id(v) not in returned and v.kind not in ("input",):
            needed |= {id(a) for a in _torch_args(plan, v)}
    needed |= {id(returned[i]) for i in needed if i in returned}  # the call that returns it
    prepared = _prepared_once(plan, region_of_root, needed)
    caches = prepared or any(PREPARED_CACHE in plan.codes[id(r)].args for r in region_of_root.values()) \
        or any(v.kind == "torch" and PREPARED_CACHE in v.expr for v in g.vals if id(v) in needed)
    owner, attr = PREPARED_CACHE.split(".")
    body = [f"if not hasattr({owner}, {attr!r}):", f"    {PREPARED_CACHE} = {{}}"] if caches else []
    for v in g.vals:
        if id(v) not in needed or v.kind == "input" or id(v) in returned:
            continue
        if id(v) in region_of_root:
            code = plan.codes[id(region_of_root[id(v)])]
            args = ", ".join(_var(a) for a in code.args)
            if id(v) in prepared:
                body.append(f"{v.name} = _prepared({PREPARED_CACHE}, {v.name!r}, {code.wrapper}, {args})")
            else:
                body.append(f"{', '.join(x.name for x in [v] + code.extras)} = {code.wrapper}({args})")
        elif id(v) in members:
            raise AssertionError(f"{v} is inside a region but used outside it")
        elif v.kind == "param":
            body.append(f"{v.name} = {v.expr}")
        elif id(v) in plan.torch_calls:
            expr, args = plan.torch_calls[id(v)]
            body.append(f"{v.name} = {expr.format(*(_var(a) for a in args))}")
        elif v.kind == "scalar":  # a model float attribute, read at run time (it may follow the init inputs)
            dev = f"{_var(g.inputs[0])}.device" if g.inputs else "None"
            body.append(f"{v.name} = _scalar({v.expr.format(*(_var(a) for a in v.args))}, {dev})")
        else:
            expr = v.expr if v.kind in ("torch", "view") else torch_expr(v)
            deps = [_var(a) for a in v.args if isinstance(a, Val)]
            if v.mm.get("conv2d"):
                deps[0] = f"_channels_last({deps[0]})"
            body.append(f"{v.name} = {expr.format(*deps)}")
    outs = [_var(o) for o in g.outputs]
    ret = f"return ({', '.join(outs)},)" if g.output_is_tuple else f"return {outs[0]}"
    body.append(ret)
    header = ["import math", "import torch", "import torch.nn as nn", "import triton", "import triton.language as tl"]
    prelude = "\n".join(line for line in prelude.split("\n") if line.strip() not in header)
    parts = [f'"""{header_note}"""', "\n".join(header), prelude, HELPERS]
    if any(v.mm.get("conv2d") for v in g.vals if id(v) in needed and id(v) not in region_of_root):  # cuDNN's
        parts.append(CHANNELS_LAST_HELPER)
    if any(v.kind == "scalar" for v in g.vals if id(v) in needed):
        parts.append(SCALAR_HELPER)
    parts += called_helpers([v.expr for v in g.vals if id(v) in needed and v.kind == "torch"])
    if caches:
        parts.append(PREPARED_HELPER)
    defined: set[str] = set()
    for r in plan.regions:
        if id(r) in plan.codes:
            parts.append(_unrepeated(plan.codes[id(r)].source, defined))
    cls = ["class ModelNew(nn.Module):", textwrap.indent(init.rstrip(), "    "), "",
           f"    def forward({sig}):"]
    cls += ["        " + line for line in body]
    parts.append("\n".join(cls))
    return "\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"

