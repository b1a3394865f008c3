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

from .codegen import REDUCE_HELPERS, Leaf, RegionCode, leaf_groups
from .elementwise import out_dtype
from .partition import Region
from .rowreduce import _Emitter

# per scan: (neutral element, the chunk's scan of x along axis {ax}, the chunk's total along it (kept as a
# size-1 dim by {keep}), how the carry joins a value)
_SCAN = {
    "cumsum": ("0.0", "tl.cumsum({x}, axis={ax}, reverse={r})", "tl.sum({x}, axis={ax}){keep}", "{a} + {b}"),
    "cumprod": ("1.0", "tl.cumprod({x}, axis={ax}, reverse={r})", "_prod({x}, {ax}){keep}",
                "{a} * {b}"),
    "cummax": ("float('-inf')", "tl.associative_scan({x}, {ax}, _max_combine, reverse={r})",
               "_amax({x}, {ax}){keep}", "_max_combine({a}, {b})"),
    "cummin": ("float('inf')", "tl.associative_scan({x}, {ax}, _min_combine, reverse={r})",
               "_amin({x}, {ax}){keep}", "_min_combine({a}, {b})"),
}  # the combines keep NaN, as torch's scans do (codegen.REDUCE_HELPERS)
_ROWS = {"ax": 1, "keep": "[:, None]"}  # a row kernel's chunk: (BLOCK_M, BLOCK_N), scanned along axis 1
_COLUMNS = {"ax": 0, "keep": "[None, :]", "r": False}  # a column kernel's: (BLOCK_R, BLOCK_N), along axis 0
_ACC = {"cumprod": "tl.float64"}  # the combining dtype where it is not fp32 (see the docstring)
_TORCH_ACC = {"tl.float32": "torch.float32", "tl.float64": "torch.float64"}


def emit(region: Region, idx: int) -> RegionCode:
    if region.root.kind == "scan" and region.root.mm.get("dim") is not None:
        return _emit_columns(region, idx)
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
             f"        {v.name} = (" + join.format(a=chunk_scan.format(x="s_x", r=reverse, **_ROWS), b="carry")
             + ").to(tl.float32)",
             "        carry = " + join.format(a="carry", b=total.format(x="s_x", **_ROWS))]
    env[id(v)] = v.name
    em.values([root], env, body, "        ", single=False)
    body.append(f"        tl.store(out_ptr + rm * N + rn, {env[id(root)]}, mask=mask)")
    kname, wname, P = f"_scan{idx}_kernel", f"_scan{idx}", f"SCAN{idx}"
    params = ", ".join([p for lf in leaves for p in lf.params()] + ["out_ptr", "M", "N", "BLOCK_M: tl.constexpr",
                                                                    "BLOCK_N: tl.constexpr"])
    first = "((N + BLOCK_N - 1) // BLOCK_N - 1) * BLOCK_N - c0" if reverse else "c0"
    kernel = [f"{P}_BLOCK_N = 2048  # columns per chunk: a longer row carries its total from chunk to chunk",
              f"{P}_TILE = 4096  # elements per chunk and program (rows x columns)", f"{P}_NUM_WARPS = 8", "", ""]
    if v.fn != "cumsum":
        kernel += [REDUCE_HELPERS, "", ""]
    kernel += ["@triton.jit", f"def {kname}({params}):",
               "    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]", "    rmask = rm < M",
               f"    carry = tl.full([BLOCK_M, 1], {neutral}, {acc})  # the chunks so far, combined",
               "    for c0 in range(0, N, BLOCK_N):",
               f"        c = {first}" + ("  # the last chunk first" if reverse else ""), *body]
    names = [lf.name for lf in leaves]
    launch = ", ".join([lf.wrapper_args(lf.name, "full") for lf in leaves] + ["out", "M", "N"])
    wrapper = [f"def {wname}({', '.join(names)}):",
               f"    full = _full_shape([{', '.join(names)}], {tuple(lf.squeezed for lf in leaves)})",
               *[f"    {lf.readable(lf.name, 'full')}" for lf in leaves],
               f"    out = torch.empty(full, device=in0.device, dtype={out_dtype(root, leaves_v)})",
               "    if out.numel() == 0:", "        return out",
               "    N = full[-1]", "    M = out.numel() // N",
               f"    BLOCK_N = min({P}_BLOCK_N, _pow2(N))",
               f"    BLOCK_M = max(1, min({P}_TILE // BLOCK_N, _pow2(M)))",
               f"    {kname}[(_cdiv(M, BLOCK_M),)]({launch}, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,",
               f"               num_warps={P}_NUM_WARPS)",
               "    return out"]
    return RegionCode(source="\n".join(kernel) + "\n\n\n" + "\n".join(wrapper), wrapper=wname, args=leaves_v)


def _emit_columns(region: Region, idx: int) -> RegionCode:
    """A scan down a dim that is not the last (cumsum over dim 0): x seen as (pre, R, post), each program
    walks BLOCK_N adjacent columns of one `pre` down their R rows in BLOCK_R-row chunks (coalesced
    loads), the carry a row of BLOCK_N values. Strips too few to fill the GPU split their rows over S
    programs: a first launch stores each span's total, the second starts each span from the totals of
    the spans above it."""
    v = region.root
    if len(region.nodes) != 1:
        raise NotImplementedError("a column scan's region holds the scan alone")
    neutral, chunk_scan, total, join = _SCAN[v.fn]
    acc = _ACC.get(v.fn, "tl.float32")
    kname, wname, P = f"_cscan{idx}_kernel", f"_cscan{idx}", f"CSCAN{idx}"
    d = v.mm["dim"]
    lines = [f"{P}_BLOCK_N = 64  # adjacent columns per program", f"{P}_BLOCK_R = 32  # rows per chunk",
             f"{P}_NUM_WARPS = 4",
             f"{P}_SPLIT_PER_SM = 2  # column strips fewer than this many per SM have their rows split", "", ""]
    if v.fn != "cumsum":
        lines += [REDUCE_HELPERS, "", ""]
    cast = f".to({acc})" if acc != "tl.float32" else ""
    lines += ["@triton.jit",
              f"def {kname}(x_ptr, out_ptr, part_ptr, R, POST, n_tiles, S, SPAN, PLANE, BLOCK_R: tl.constexpr,",
              "        BLOCK_N: tl.constexpr, STAGE: tl.constexpr):",
              "    # STAGE 0: program (strip, s) stores its span's total in part[s]; STAGE 1: it scans its span",
              "    pid = tl.program_id(0)",
              "    s = pid % S",
              "    strip = pid // S",
              "    p = (strip // n_tiles).to(tl.int64)",
              "    cn = (strip % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]",
              "    cmask = cn < POST",
              "    base = p * R * POST",
              f"    carry = tl.full([1, BLOCK_N], {neutral}, {acc})",
              "    if STAGE == 1:",
              "        for k in range(0, s):  # the spans above this one",
              "            t = tl.load(part_ptr + k * PLANE + p * POST + cn, mask=cmask, other=" + neutral + ")" + cast,
              "            carry = " + join.format(a="carry", b="t"),
              "    for r0 in range(s * SPAN, tl.minimum(s * SPAN + SPAN, R), BLOCK_R):",
              "        rr = r0 + tl.arange(0, BLOCK_R)[:, None]",
              "        mask = (rr < R) & cmask  # spans are whole chunks (_row_splits)",
              f"        s_x = tl.where(mask, tl.load(x_ptr + base + rr * POST + cn, mask=mask, other={neutral})"
              f".to(tl.float32), {neutral}){cast}",
              "        if STAGE == 1:",
              "            y = (" + join.format(a=chunk_scan.format(x="s_x", **_COLUMNS), b="carry")
              + ").to(tl.float32)",
              "            tl.store(out_ptr + base + rr * POST + cn, y, mask=mask)",
              "        carry = " + join.format(a="carry", b=total.format(x="s_x", **_COLUMNS)),
              "    if STAGE == 0:",
              "        tl.store(part_ptr + s * PLANE + p * POST + cn, carry, mask=cmask)"]
    wrapper = [f"def {wname}(x):",
               "    x = x.contiguous()",
               "    shape = tuple(x.shape)",
               f"    pre, R, POST = math.prod(shape[:{d}]), shape[{d}], math.prod(shape[{d + 1}:])",
               "    out = torch.empty_like(x)",
               "    if out.numel() == 0:", "        return out",
               f"    BLOCK_N = min({P}_BLOCK_N, _pow2(POST))",
               "    n_tiles = _cdiv(POST, BLOCK_N)",
               f"    S, SPAN = _row_splits(pre * n_tiles, R, {P}_BLOCK_R, {P}_SPLIT_PER_SM, x.device)",
               f"    part = torch.empty((S, pre * POST), device=x.device, dtype={_TORCH_ACC[acc]})",
               "    for stage in ((0, 1) if S > 1 else (1,)):",
               f"        {kname}[(pre * n_tiles * S,)](x, out, part, R, POST, n_tiles, S, SPAN, pre * POST,",
               f"            BLOCK_R={P}_BLOCK_R, BLOCK_N=BLOCK_N, STAGE=stage, num_warps={P}_NUM_WARPS)",
               "    return out"]
    return RegionCode(source="\n".join(lines) + "\n\n\n" + "\n".join(wrapper), wrapper=wname, args=[v.args[0]])
