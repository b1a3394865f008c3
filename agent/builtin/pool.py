"""Windowed pooling (max and average, 1-D to 3-D, any kernel, stride, padding, dilation, ceil mode) with
the elementwise work before and after it fused: conv -> batch norm -> relu -> max pool -> scale is one
kernel after the convolution, reading the convolution's output once and writing the pooled output.

One flat kernel over the output: each element walks its window, computing the prologue (the work
before the pool) at each input position it reads, and the epilogue at its own. The window's geometry
(kernel, stride, padding, dilation, divisor) is read from the module or the call's arguments at run
time, never baked from the traced instance. Padded positions are skipped by a max and add zero to an
average, whose divisor follows PyTorch: the window clipped to the padded input, or (count_include_pad
off) to the input itself, or divisor_override. A NaN in a window is its max, as in PyTorch.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .codegen import Leaf, RegionCode, leaf_groups
from .elementwise import fused_lines, leaves_read, out_dtype
from .ir import NotFusable, Val, self_path
from .partition import Region
from .products import _per_dim

_MODULES = {nn.MaxPool1d: ("max", 1), nn.MaxPool2d: ("max", 2), nn.MaxPool3d: ("max", 3),
            nn.AvgPool1d: ("avg", 1), nn.AvgPool2d: ("avg", 2), nn.AvgPool3d: ("avg", 3)}
_FUNCTIONS = {F.max_pool1d: ("max", 1), F.max_pool2d: ("max", 2), F.max_pool3d: ("max", 3),
              F.avg_pool1d: ("avg", 1), F.avg_pool2d: ("avg", 2), F.avg_pool3d: ("avg", 3)}
# the functions' parameters after the input, in order (torch's own signatures)
_MAX_PARAMS = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_PARAMS = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False,
             "count_include_pad": True, "divisor_override": None}


def pool_call(target) -> tuple[str, int] | None:
    """("max" | "avg", spatial dims) for a pooling module class or function, else None."""
    return _MODULES.get(target) if isinstance(target, type) else _FUNCTIONS.get(target)


class PoolMixin:
    """Lowering of pooling modules and functions to a `pool` value (see the module docstring)."""

    def pool_module(self, target: str, mod: nn.Module, x, node: fx.Node) -> Val:
        fn, dims = _MODULES[type(mod)]
        if getattr(mod, "return_indices", False):
            raise NotFusable
        path = self_path(target)
        geometry = [f"{path}.kernel_size", f"{path}.stride", f"{path}.padding",
                    f"{path}.dilation" if fn == "max" else "1",
                    f"{path}.divisor_override" if hasattr(mod, "divisor_override") else "None"]
        apart = _windows_apart(mod.kernel_size, mod.stride, mod.padding, getattr(mod, "dilation", 1),
                               getattr(mod, "divisor_override", None))
        return self._pool(fn, dims, x, "(" + ", ".join(geometry) + ")", [], bool(mod.ceil_mode),
                          bool(getattr(mod, "count_include_pad", True)), node, apart, mod.kernel_size)

    def pool_function(self, target, args: tuple, kw: dict, node: fx.Node) -> Val:
        fn, dims = _FUNCTIONS[target]
        names = _MAX_PARAMS if fn == "max" else _AVG_PARAMS
        if set(kw) - set(names) or len(args) > len(names) + 1:
            raise NotFusable
        bound = dict(_DEFAULTS, **dict(zip(names, args[1:])), **kw)
        ceil, include_pad = bound["ceil_mode"], bound.get("count_include_pad", True)
        if bound.get("return_indices") or not isinstance(ceil, bool) or not isinstance(include_pad, bool):
            raise NotFusable
        deps: list[Val] = []
        geometry = [self.python_arg(bound[n], deps) for n in ("kernel_size", "stride", "padding")]
        geometry += [self.python_arg(bound.get("dilation", 1), deps),
                     self.python_arg(bound.get("divisor_override"), deps)]
        given = [bound[n] for n in ("kernel_size", "stride", "padding")] + [bound.get("dilation", 1),
                                                                          bound.get("divisor_override")]
        apart = None if any(isinstance(v, fx.Node) for v in given) else _windows_apart(*given)
        return self._pool(fn, dims, self.a(args[0]), "(" + ", ".join(geometry) + ")", deps, ceil, include_pad,
                          node, apart, given[0])

    def _pool(self, fn: str, dims: int, x, geometry: str, deps: list, ceil: bool, include_pad: bool,
              node: fx.Node, apart: bool | None, kernel) -> Val:
        """`apart`: whether the windows neither overlap nor leave gaps nor pad (None: known at run time);
        `kernel`: the window as traced."""
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, Val) or x.squeezed or not hasattr(meta, "shape") \
                or not x.dtype.is_floating_point or len(x.shape) not in (dims + 1, dims + 2):
            raise NotFusable
        cfg = self.new("torch", expr=geometry, args=deps, shape=(), dtype=torch.float32, mm={"tuple": True})
        if apart and not ceil and isinstance(node.args[0], fx.Node) \
                and self._read_once(self._unit_viewed(node.args[0])):  # folds (pool_folds.py)
            folded = self.pooled_conv(x, cfg, dims, kernel, tuple(meta.shape)) if fn == "avg" else None
            if folded is None and fn == "avg" and dims == 1:
                folded = self.pooled_product(x, cfg, tuple(meta.shape))
            if folded is None:
                folded = self.stacked_pool(fn, x, cfg, dims, tuple(meta.shape), tuple(_per_dim(kernel, dims)))
            if folded is not None:
                return folded
        window = tuple(_per_dim(kernel, dims)) if apart is not None else None  # as traced, where known
        return self.new("pool", fn=fn, args=[x, cfg], shape=tuple(meta.shape), dtype=x.dtype,
                        mm={"dims": dims, "ceil": ceil, "include_pad": include_pad, "apart": apart, "window": window})


def _windows_apart(kernel, stride, padding, dilation, divisor) -> bool | None:
    """Whether pooling windows tile the input: stride = kernel, no padding, dilation or divisor override."""
    def per_dim(v):
        return (v,) if isinstance(v, int) else tuple(v)

    try:
        k, p, dl = per_dim(kernel), per_dim(padding), per_dim(dilation)
        s = per_dim(stride) if stride not in (None, (), []) else k
    except TypeError:  # a value only the run knows
        return None
    d = max(len(k), len(s))
    return (k * d)[:d] == (s * d)[:d] and all(v == 0 for v in p) and all(v == 1 for v in dl) and divisor is None


POOL_GEOMETRY = '''def _pool_geometry(spatial, cfg, ceil):
    """(kernel, stride, padding, dilation, output sizes) per spatial dim, as PyTorch's pooling computes
    them, each padded on the left to 3 dims; and the divisor override (0: none)."""
    d = len(spatial)

    def per_dim(v):  # an int, or a tuple of one (repeated) or d ints
        v = [int(v)] if isinstance(v, int) else [int(i) for i in v]
        return v * d if len(v) == 1 else v

    kernel, stride, padding, dilation = (per_dim(v) for v in (cfg[0], cfg[1] or cfg[0], cfg[2], cfg[3]))
    out = []
    for n, k, s, p, dl in zip(spatial, kernel, stride, padding, dilation):
        o = (n + 2 * p - dl * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
        if ceil and (o - 1) * s >= n + p:  # the last window must start inside the input or its left padding
            o -= 1
        out.append(o)
    lead = [1] * (3 - d)
    return (tuple(lead + kernel), tuple(lead + stride), tuple([0] * (3 - d) + padding), tuple(lead + dilation),
            tuple(lead + out), int(cfg[4] or 0))'''


def emit(region: Region, idx: int) -> RegionCode:
    pools = [n for n in region.nodes if n.kind == "pool"]
    if len(pools) != 1 or tuple(region.root.shape) != tuple(pools[0].shape):
        raise NotImplementedError("a pool region holds one pool and writes its output's shape")
    pool = pools[0]
    x_v, cfg_v = pool.args
    before = [n for n in region.nodes if id(n) in region.before]
    after = [n for n in region.nodes if n is not pool and id(n) not in region.before]
    leaves_v = [v for v in region.leaves() if v is not cfg_v]
    names = {id(v): f"in{i}" for i, v in enumerate(leaves_v)}
    pro_v = leaves_read(before, x_v, names)
    epi_v = leaves_read(after, pool, names)
    in_full, out_full = tuple(x_v.shape), tuple(pool.shape)
    pro = [Leaf(v, f"{names[id(v)]}p", leaf_groups(v, in_full, 0, squeezed=False), 0, len(in_full))
           for v in pro_v]
    epi = [Leaf(v, f"{names[id(v)]}e", leaf_groups(v, out_full, 0, squeezed=False), 0, len(out_full))
           for v in epi_v]
    P = f"POOL{idx}"

    env: dict[int, str] = {}
    window = fused_lines(pro, before, env, "xi", "ok")  # the prologue at one input position the window reads
    e = env[id(x_v)]
    if pool.fn == "max":  # NaN wins, as in PyTorch's kernels
        window.append(f"acc = tl.where(ok & (({e} > acc) | ({e} != {e})), {e}, acc)")
    else:
        window.append(f"acc += tl.where(ok, {e}, 0.0)")
    env = {id(pool): "pooled"}
    tail = fused_lines(epi, after, env, "offs", "mask")  # the epilogue at the output

    dims3 = ("0", "1", "2")
    # the sizes too: each output element's window position is three divisions and three remainders by
    # them, a multiply and a shift each where they are constants (as for Leaf.params)
    geometry = [f"{g}{i}: tl.constexpr" for g in ("I", "O", "K", "S", "P", "D") for i in dims3]
    params = ([p for lf in pro + epi for p in lf.params()] + ["out_ptr", "n_out"] + geometry
              + ["DIVISOR: tl.constexpr", "INCLUDE_PAD: tl.constexpr", "BLOCK: tl.constexpr"])
    init = "tl.full([BLOCK], float('-inf'), tl.float32)" if pool.fn == "max" else "tl.zeros([BLOCK], tl.float32)"
    kname, wname = f"_pool{idx}_kernel", f"_pool{idx}"
    lines = [f"{P}_BLOCK = 512  # output elements per program", f"{P}_NUM_WARPS = 4", "", "", POOL_GEOMETRY, "", "",
             "@triton.jit", f"def {kname}({', '.join(params)}):",
             "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)",
             "    mask = offs < n_out",
             "    o2 = offs % O2", "    t = offs // O2", "    o1 = t % O1", "    t = t // O1", "    o0 = t % O0",
             "    plane = t // O0",
             f"    acc = {init}",
             "    for k0 in range(K0):  # outer window dims loop, the innermost is unrolled",
             "        i0 = o0 * S0 - P0 + k0 * D0",
             "        ok0 = mask & (i0 >= 0) & (i0 < I0)",
             "        for k1 in range(K1):",
             "            i1 = o1 * S1 - P1 + k1 * D1",
             "            ok1 = ok0 & (i1 >= 0) & (i1 < I1)",
             "            for k2 in tl.static_range(K2):",
             "                i2 = o2 * S2 - P2 + k2 * D2",
             "                ok = ok1 & (i2 >= 0) & (i2 < I2)",
             "                xi = ((plane * I0 + i0) * I1 + i1) * I2 + i2",
             *["                " + w for w in window]]
    if pool.fn == "max":
        lines.append("    pooled = acc")
    else:
        lines += ["    if DIVISOR != 0:", "        pooled = acc / DIVISOR", "    else:",
                  "        count = tl.full([BLOCK], 1.0, tl.float32)"]
        for i in dims3:
            lines += [f"        s{i} = o{i} * S{i} - P{i}",
                      f"        e{i} = tl.minimum(s{i} + K{i}, I{i} + P{i})",
                      "        if INCLUDE_PAD:",
                      f"            count *= (e{i} - s{i}).to(tl.float32)",
                      "        else:",
                      f"            count *= (tl.minimum(e{i}, I{i}) - tl.maximum(s{i}, 0)).to(tl.float32)"]
        lines.append("        pooled = acc / count")
    lines += ["    " + t for t in tail]
    lines.append(f"    tl.store(out_ptr + offs, {env[id(region.root)]}, mask=mask)")

    args = [f"in{i}" for i in range(len(leaves_v))]
    d = pool.mm["dims"]
    pro_names = [names[id(lf.val)] for lf in pro]
    launch = [lf.wrapper_args(names[id(lf.val)], "in_full") for lf in pro] + \
        [lf.wrapper_args(names[id(lf.val)], "out_full") for lf in epi]
    wrapper = [f"def {wname}({', '.join(args + ['cfg'])}):",
               *[f"    {a} = {a}.contiguous()" for a in args],
               f"    in_full = _full_shape([{', '.join(pro_names)}], {(False,) * len(pro_names)})",
               f"    k, s, p, dl, o, divisor = _memo(_pool_geometry, in_full[-{d}:], cfg, {pool.mm['ceil']})",
               f"    out_full = in_full[:-{d}] + tuple(o[-{d}:])",
               f"    out = torch.empty(out_full, device={pro_names[0]}.device,",
               f"                      dtype={out_dtype(region.root, leaves_v)})",
               "    n_out = out.numel()",
               "    if n_out == 0:", "        return out",
               f"    I = {'[1] * ' + str(3 - d) + ' + ' if d < 3 else ''}list(in_full[-{d}:])",
               f"    {kname}[(_cdiv(n_out, {P}_BLOCK),)]({', '.join(launch + ['out', 'n_out'])}, *I, *o,",
               "        *k, *s, *p, *dl, DIVISOR=divisor, "
               f"INCLUDE_PAD={pool.mm['include_pad']}, BLOCK={P}_BLOCK, num_warps={P}_NUM_WARPS)",
               "    return out"]
    return RegionCode(source="\n".join(lines) + "\n\n\n" + "\n".join(wrapper), wrapper=wname,
                      args=leaves_v + [cfg_v])
