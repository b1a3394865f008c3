"""Reductions over a run of middle dims (x.mean(dim=1) on (B, S, H)): the input is seen as
(pre, R, post) and each program reduces a (R, BLOCK_N) column strip of one `pre` index, loading
BLOCK_R x BLOCK_N tiles that are contiguous along `post` (coalesced), fp32 accumulation. When the
strips are too few to fill the GPU (x.sum(0) of a tall matrix), each strip's R rows are split over
several programs that write partial results, and a second launch combines them."""

from __future__ import annotations

from .codegen import RegionCode, divide_mean
from .partition import Region

_NEUTRAL = {"sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')"}


def emit(region: Region, idx: int) -> RegionCode:
    v = region.root
    if len(region.nodes) != 1 or v.kind != "cred" or v.fn not in _NEUTRAL:
        raise NotImplementedError("column regions hold one middle-dim reduction")
    x_v = v.args[0]
    d0, d1 = v.mm["dims"]
    keep = v.mm["keepdim"]
    P = f"COL{idx}"
    if v.fn in ("sum", "mean"):
        init, step, combine = "tl.zeros([BLOCK_R, BLOCK_N], dtype=tl.float32)", "acc += x", "res += part"
        final, scale = "tl.sum(acc, axis=0)", divide_mean(v, "R")
    else:
        fn = "tl.maximum" if v.fn == "max" else "tl.minimum"
        init = f"tl.full([BLOCK_R, BLOCK_N], {_NEUTRAL[v.fn]}, tl.float32)"
        step, combine = f"acc = {fn}(acc, x)", f"res = {fn}(res, part)"
        final, scale = f"tl.{v.fn}(acc, axis=0)", ""
    kname, wname = f"_col{idx}_kernel", f"_col{idx}"
    kernel = f"""{P}_BLOCK_N = 128  # output columns (contiguous) per program
{P}_BLOCK_R = 32  # reduced rows per loop step
{P}_NUM_WARPS = 4
{P}_SPLIT_PER_SM = 2  # column strips fewer than this many per SM have their rows split over programs


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
        acc = {init}
        for r0 in range(s * SPAN, s * SPAN + SPAN, BLOCK_R):
            rr = r0 + tl.arange(0, BLOCK_R)[:, None]
            x = tl.load(base + rr * POST + rn, mask=(rr < R) & cmask, other={_NEUTRAL[v.fn]}).to(tl.float32)
            {step}
        res = {final}
        if S == 1:
            tl.store(out_ptr + p * POST + cn, res{scale}, mask=cn < POST)
        else:
            tl.store(part_ptr + s * PLANE + p * POST + cn, res, mask=cn < POST)
    else:
        res = tl.load(part_ptr + p * POST + cn, mask=cn < POST, other=0.0)
        for k in range(1, S):
            part = tl.load(part_ptr + k * PLANE + p * POST + cn, mask=cn < POST, other=0.0)
            {combine}
        tl.store(out_ptr + p * POST + cn, res{scale}, mask=cn < POST)"""
    kept = f" + (1,) * {d1 - d0}" if keep else ""
    wrapper = f"""def {wname}(x):
    x = x.contiguous()
    shape = tuple(x.shape)
    pre, R, POST = math.prod(shape[:{d0}]), math.prod(shape[{d0}:{d1}]), math.prod(shape[{d1}:])
    out = torch.empty(shape[:{d0}]{kept} + shape[{d1}:], device=x.device, dtype=x.dtype)
    BLOCK_N = min({P}_BLOCK_N, triton.next_power_of_2(POST))
    n_tiles = triton.cdiv(POST, BLOCK_N)
    S, SPAN = _row_splits(pre * n_tiles, R, {P}_BLOCK_R, {P}_SPLIT_PER_SM, x.device)
    part = torch.empty((S, pre * POST) if S > 1 else (1,), device=x.device, dtype=torch.float32)
    {kname}[(pre * n_tiles * S,)](x, out, part, R, POST, n_tiles, S, SPAN, pre * POST, BLOCK_R={P}_BLOCK_R,
               BLOCK_N=BLOCK_N, STAGE=0, num_warps={P}_NUM_WARPS)
    if S > 1:
        {kname}[(pre * n_tiles,)](x, out, part, R, POST, n_tiles, S, SPAN, pre * POST, BLOCK_R={P}_BLOCK_R,
                   BLOCK_N=BLOCK_N, STAGE=1, num_warps={P}_NUM_WARPS)
    return out"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=[x_v])
