"""Scans along each row (cumsum, cumprod, cummax, cummin, forwards or reversed) with the elementwise work
before and after them fused: `torch.cumsum(x * mask, dim=-1)`, `flip(cumsum(flip(x)))`, a scale after.

One program holds BLOCK_M rows and walks them in BLOCK_N-column chunks (last chunk first when reversed):
the scan within a chunk, combined with the carry, the total of the chunks before it, kept in registers.
Each leaf is read once and the output written once; values are combined in fp32 and stored in the
output's dtype, as torch accumulates, but for products: a running product of fp32 values leaves fp32's
range and comes back (1e30 * 1e10 * 1e-5) where the exact product never left it, and torch's CPU
cumprod, accumulating in double, has the finite value there. In fp64 the product overflows only when
the result itself does."""

from __future__ import annotations

from .codegen import Leaf, RegionCode, leaf_groups
from .elementwise import out_dtype
from .partition import Region
from .rowreduce import _Emitter

# per scan: (neutral element, the chunk's scan of x, the chunk's total, how the carry joins a value)
_SCAN = {
    "cumsum": ("0.0", "tl.cumsum({x}, axis=1, reverse={r})", "tl.sum({x}, axis=1)[:, None]", "{a} + {b}"),
    "cumprod": ("1.0", "tl.cumprod({x}, axis=1, reverse={r})", "tl.reduce({x}, 1, _mul_combine)[:, None]",
                "{a} * {b}"),
    "cummax": ("float('-inf')", "tl.associative_scan({x}, 1, _max_combine, reverse={r})",
               "tl.max({x}, axis=1)[:, None]", "tl.maximum({a}, {b})"),
    "cummin": ("float('inf')", "tl.associative_scan({x}, 1, _min_combine, reverse={r})",
               "tl.min({x}, axis=1)[:, None]", "tl.minimum({a}, {b})"),
}
_ACC = {"cumprod": "tl.float64"}  # the combining dtype where it is not fp32 (see the docstring)
_COMBINERS = {"cumprod": ("_mul_combine", "a * b"), "cummax": ("_max_combine", "tl.maximum(a, b)"),
              "cummin": ("_min_combine", "tl.minimum(a, b)")}


def emit(region: Region, idx: int) -> RegionCode:
    scans = [n for n in region.nodes if n.kind == "scan"]
    root = region.root
    if len(scans) != 1 or root.squeezed or tuple(root.shape) != tuple(region.full):
        raise NotImplementedError("a scan region holds one scan and writes rows of its shape")
    v = scans[0]
    full = tuple(region.full)
    rank, split = len(full), len(full) - 1
    leaves_v = region.leaves()
    leaves = [Leaf(lv, f"in{i}", leaf_groups(lv, full, split), split, rank, lv.squeezed, "barrier" in lv.mm)
              for i, lv in enumerate(leaves_v)]
    neutral, chunk_scan, total, join = _SCAN[v.fn]
    reverse = bool(v.mm.get("reverse"))
    em = _Emitter(region, leaves)
    env: dict[int, str] = {}
    body = ["        rn = c + tl.arange(0, BLOCK_N)[None, :]", "        cmask = rn < N",
            "        mask = rmask & cmask"]
    em.values([v.args[0]], env, body, "        ", single=False)
    x = f"tl.where(mask, {env[id(v.args[0])]}, {neutral})"
    acc = _ACC.get(v.fn, "tl.float32")
    body += [f"        s_x = {x}" + (f".to({acc})" if acc != "tl.float32" else ""),
             f"        {v.name} = (" + join.format(a=chunk_scan.format(x="s_x", r=reverse), b="carry")
             + ").to(tl.float32)",
             "        carry = " + join.format(a="carry", b=total.format(x="s_x"))]
    env[id(v)] = v.name
    em.values([root], env, body, "        ", single=False)
    body.append(f"        tl.store(out_ptr + rm * N + rn, {env[id(root)]}, mask=mask)")
    kname, wname, P = f"_scan{idx}_kernel", f"_scan{idx}", f"SCAN{idx}"
    params = ", ".join([p for lf in leaves for p in lf.params()] + ["out_ptr", "M", "N", "BLOCK_M: tl.constexpr",
                                                                    "BLOCK_N: tl.constexpr"])
    first = "((N + BLOCK_N - 1) // BLOCK_N - 1) * BLOCK_N - c0" if reverse else "c0"
    kernel = [f"{P}_BLOCK_N = 2048  # columns per chunk: a longer row carries its total from chunk to chunk",
              f"{P}_TILE = 4096  # elements per chunk and program (rows x columns)", f"{P}_NUM_WARPS = 8", "", ""]
    if v.fn in _COMBINERS:
        name, expr = _COMBINERS[v.fn]
        kernel += ["@triton.jit", f"def {name}(a, b):", f"    return {expr}", "", ""]
    kernel += ["@triton.jit", f"def {kname}({params}):",
               "    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]", "    rmask = rm < M",
               f"    carry = tl.full([BLOCK_M, 1], {neutral}, {acc})  # the chunks so far, combined",
               "    for c0 in range(0, N, BLOCK_N):",
               f"        c = {first}" + ("  # the last chunk first" if reverse else ""), *body]
    names = [lf.name for lf in leaves]
    launch = ", ".join([lf.wrapper_args(lf.name, "full") for lf in leaves] + ["out", "M", "N"])
    wrapper = [f"def {wname}({', '.join(names)}):",
               f"    full = _full_shape([{', '.join(names)}], {[lf.squeezed for lf in leaves]})",
               *[f"    {lf.readable(lf.name, 'full')}" for lf in leaves],
               f"    out = torch.empty(full, device=in0.device, dtype={out_dtype(root, leaves_v)})",
               "    if out.numel() == 0:", "        return out",
               "    N = full[-1]", "    M = out.numel() // N",
               f"    BLOCK_N = min({P}_BLOCK_N, triton.next_power_of_2(N))",
               f"    BLOCK_M = max(1, min({P}_TILE // BLOCK_N, triton.next_power_of_2(M)))",
               f"    {kname}[(triton.cdiv(M, BLOCK_M),)]({launch}, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,",
               f"               num_warps={P}_NUM_WARPS)",
               "    return out"]
    return RegionCode(source="\n".join(kernel) + "\n\n\n" + "\n".join(wrapper), wrapper=wname, args=leaves_v)
