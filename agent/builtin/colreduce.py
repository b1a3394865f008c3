"""Reductions over a run of middle dims (x.mean(dim=1) on (B, S, H)): the input is seen as
(pre, R, post) and each program reduces a (R, BLOCK_N) column strip of one `pre` index, loading
BLOCK_R x BLOCK_N tiles that are contiguous along `post` (coalesced), fp32 accumulation. When the
strips are too few to fill the GPU (x.sum(0) of a tall matrix), each strip's R rows are split over
several programs that write partial results, and a second launch combines them."""

from __future__ import annotations

from .codegen import RegionCode, divide_mean
from .partition import Region
from .rowreduce import reduce_helpers

_NEUTRAL = {"sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')",
            "argmax": "float('-inf')", "argmin": "float('inf')", "prod": "1.0"}


def _steps(v) -> tuple[list[str], list[str], list[str], list[str], str]:
    """(init, step, final, combine, answer): the accumulator's start, one tile x's step, the strip's
    result `res` from it, a split's partial `part` joining `res`, and what the output holds."""
    neutral = _NEUTRAL[v.fn]
    if v.fn in ("sum", "mean"):
        return (["acc = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)"], ["acc += x"],
                ["res = tl.sum(acc, axis=0)"], ["res += part"], "res" + divide_mean(v, "R"))
    if v.fn == "prod":
        return (["acc = tl.full([BLOCK_R, BLOCK_N], 1.0, tl.float32)"], ["acc *= x"], ["res = _prod(acc, 0)"],
                ["res *= part"], "res")
    if v.fn in ("max", "min"):
        fn = f"_{v.fn}_combine"  # NaN-keeping, as torch's (rowreduce.reduce_helpers)
        return ([f"acc = tl.full([BLOCK_R, BLOCK_N], {neutral}, tl.float32)"], [f"acc = {fn}(acc, x)"],
                [f"res = _a{v.fn}(acc, 0)"], [f"res = {fn}(res, part)"], "res")
    # argmax / argmin: each lane keeps the first row of its extreme (a later row must beat it strictly, be
    # the lane's first, or be a NaN over a number); lanes merge to the first row of the column's first
    # NaN, else of its extreme (PyTorch's answer); splits, in row order, combine by the same rule
    wins, red = (">", "tl.max") if v.fn == "argmax" else ("<", "tl.min")
    return ([f"acc = tl.full([BLOCK_R, BLOCK_N], {neutral}, tl.float32)",
             "bi = tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.int32) + R  # R: no row yet"],
            ["new = (rr < R) & cmask & ((bi == R) | (x " + wins + " acc) | ((x != x) & (acc == acc)))",
             "acc = tl.where(new, x, acc)", "bi = tl.where(new, rr, bi)"],
            ["nan = acc != acc", "anynan = tl.max(nan.to(tl.int32), axis=0)[None, :] > 0",
             f"best = {red}(tl.where(nan, {neutral}, acc), axis=0)[None, :]",
             "hit = tl.where(anynan, nan, acc == best) & (bi < R)",
             "idx = tl.min(tl.where(hit, bi, R), axis=0)",
             "res = tl.sum(tl.where(anynan, float('nan'), best), axis=0)  # the one value of each column"],
            ["part_idx = tl.load(part_ptr + (S + k) * PLANE + p * POST + cn, mask=cn < POST, other=0.0)"
             ".to(tl.int32, bitcast=True)",
             f"take = (part {wins} res) | ((part != part) & (res == res))",
             "res = tl.where(take, part, res)", "idx = tl.where(take, part_idx, idx)"], "idx")


def _lines(lines: list[str], indent: int) -> str:
    return ("\n" + " " * indent).join(lines)


def emit(region: Region, idx: int) -> RegionCode:
    v = region.root
    if len(region.nodes) != 1 or v.kind != "cred" or v.fn not in _NEUTRAL:
        raise NotImplementedError("column regions hold one middle-dim reduction")
    x_v = v.args[0]
    d0, d1 = v.mm["dims"]
    keep = v.mm["keepdim"]
    P = f"COL{idx}"
    arg = v.fn in ("argmax", "argmin")
    init, step, final, combine, answer = _steps(v)
    # an arg reduction's partials: the values, then (S planes on) its indices' int32 bits as they are
    store_index = ["tl.store(part_ptr + (S + s) * PLANE + p * POST + cn, idx.to(tl.float32, bitcast=True), "
                   "mask=cn < POST)"] if arg else []
    load_index = ["idx = tl.load(part_ptr + S * PLANE + p * POST + cn, mask=cn < POST, other=0.0)"
                  ".to(tl.int32, bitcast=True)"] if arg else []
    kname, wname = f"_col{idx}_kernel", f"_col{idx}"
    kernel = f"""{P}_BLOCK_N = 128  # output columns (contiguous) per program
{P}_BLOCK_R = 32  # reduced rows per loop step
{P}_NUM_WARPS = 4
{P}_SPLIT_PER_SM = 2  # column strips fewer than this many per SM have their rows split over programs
{reduce_helpers([v])}


@triton.jit
def {kname}(x_ptr, out_ptr, part_ptr, R, POST, n_tiles, S, SPAN, PLANE, BLOCK_R: tl.constexpr,
            BLOCK_N: tl.constexpr, STAGE: tl.constexpr):
    # STAGE 0: program (strip, s) reduces rows [s * SPAN, (s + 1) * SPAN) of its column strip, into out
    # when S == 1, else into part[s] (PLANE = pre * POST values each); STAGE 1: program (strip) combines them
    pid = tl.program_id(0)
    if STAGE == 0:
        s = pid % S
        strip = pid // S
    else:
        strip = pid
    p = (strip // n_tiles).to(tl.int64)
    cn = (strip % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    if STAGE == 0:
        rn = cn[None, :]
        cmask = rn < POST
        base = x_ptr + p * R * POST
        {_lines(init, 8)}
        for r0 in range(s * SPAN, s * SPAN + SPAN, BLOCK_R):
            rr = r0 + tl.arange(0, BLOCK_R)[:, None]
            x = tl.load(base + rr * POST + rn, mask=(rr < R) & cmask, other={_NEUTRAL[v.fn]}).to(tl.float32)
            {_lines(step, 12)}
        {_lines(final, 8)}
        if S == 1:
            tl.store(out_ptr + p * POST + cn, {answer}, mask=cn < POST)
        else:
            {_lines(["tl.store(part_ptr + s * PLANE + p * POST + cn, res, mask=cn < POST)"] + store_index, 12)}
    else:
        {_lines(["res = tl.load(part_ptr + p * POST + cn, mask=cn < POST, other=0.0)"] + load_index, 8)}
        for k in range(1, S):
            part = tl.load(part_ptr + k * PLANE + p * POST + cn, mask=cn < POST, other=0.0)
            {_lines(combine, 12)}
        tl.store(out_ptr + p * POST + cn, {answer}, mask=cn < POST)"""
    kept = f" + (1,) * {d1 - d0}" if keep else ""
    wrapper = f"""def {wname}(x):
    x = x.contiguous()
    shape = tuple(x.shape)
    pre, R, POST = math.prod(shape[:{d0}]), math.prod(shape[{d0}:{d1}]), math.prod(shape[{d1}:])
    out = torch.empty(shape[:{d0}]{kept} + shape[{d1}:], device=x.device, dtype={"torch.int64" if arg else "x.dtype"})
    BLOCK_N = min({P}_BLOCK_N, _pow2(POST))
    n_tiles = _cdiv(POST, BLOCK_N)
    S, SPAN = _row_splits(pre * n_tiles, R, {P}_BLOCK_R, {P}_SPLIT_PER_SM, x.device)
    part = torch.empty(({2 if arg else 1} * S, pre * POST) if S > 1 else (1,), device=x.device,
                       dtype=torch.float32)
    {kname}[(pre * n_tiles * S,)](x, out, part, R, POST, n_tiles, S, SPAN, pre * POST, BLOCK_R={P}_BLOCK_R,
               BLOCK_N=BLOCK_N, STAGE=0, num_warps={P}_NUM_WARPS)
    if S > 1:
        {kname}[(pre * n_tiles,)](x, out, part, R, POST, n_tiles, S, SPAN, pre * POST, BLOCK_R={P}_BLOCK_R,
                   BLOCK_N=BLOCK_N, STAGE=1, num_warps={P}_NUM_WARPS)
    return out"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=[x_v])
