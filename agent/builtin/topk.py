"""The k largest (or smallest) values of each row, sorted, as `torch.topk(x, k, dim=-1).values`.

One program holds BLOCK_M rows and walks them in BLOCK_N-column chunks, keeping a running top-k in
registers: each chunk is merged into it by k extraction steps (take the larger head of the two,
drop that one element), so the input is read once and nothing but the k values is written. A short
row is one chunk. torch ranks NaN above every number; the kernel counts a row's NaNs and puts them
where torch does (first when largest, last when smallest)."""

from __future__ import annotations

from .codegen import RegionCode
from .partition import Region


def emit(region: Region, idx: int) -> RegionCode:
    v = region.root
    if len(region.nodes) != 1 or v.kind != "topk":
        raise NotImplementedError("a top-k region holds one torch.topk")
    k, largest = v.mm["k"], v.fn == "largest"
    P = f"TOPK{idx}"
    kname, wname = f"_topk{idx}_kernel", f"_topk{idx}"
    kernel = f"""{P}_BLOCK_N = 2048  # columns per chunk: a longer row is merged chunk by chunk
{P}_TILE = 4096  # elements per chunk and program (rows x columns)
{P}_NUM_WARPS = 8


@triton.jit
def {kname}(x_ptr, out_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, K_PAD: tl.constexpr,
            LARGEST: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rmask = rm < M
    kk = tl.arange(0, K_PAD)[None, :]
    best = tl.full([BLOCK_M, K_PAD], float('-inf'), tl.float32)  # the running top-k, as keys, in order
    nans = tl.zeros([BLOCK_M, 1], dtype=tl.int32)
    for c in range(0, N, BLOCK_N):
        rn = c + tl.arange(0, BLOCK_N)[None, :]
        mask = rmask & (rn < N)
        x = tl.load(x_ptr + rm.to(tl.int64) * N + rn, mask=mask, other=0.0).to(tl.float32)
        nans += tl.sum((mask & (x != x)).to(tl.int32), axis=1)[:, None]
        if not LARGEST:  # keys: larger is better
            x = -x
        key = tl.where(mask & (x == x), x, float('-inf'))  # NaN and padding drop out
        merged = tl.full([BLOCK_M, K_PAD], float('-inf'), tl.float32)
        for i in tl.static_range(K_PAD):
            head_best = tl.max(best, axis=1)[:, None]
            head_chunk = tl.max(key, axis=1)[:, None]
            from_best = head_best >= head_chunk
            merged = tl.where(kk == i, tl.maximum(head_best, head_chunk), merged)
            # drop the element just taken (one occurrence: equal values each keep their place)
            at_best = tl.min(tl.where(best == head_best, kk, K_PAD), axis=1)[:, None]
            at_chunk = tl.min(tl.where(key == head_chunk, rn, N + BLOCK_N), axis=1)[:, None]
            best = tl.where(from_best & (kk == at_best), float('-inf'), best)
            key = tl.where((~from_best) & (rn == at_chunk), float('-inf'), key)
        best = merged
    if LARGEST:  # NaNs first: the numbers move right by the row's NaN count
        jj = tl.arange(0, K_PAD)[None, None, :]
        moved = tl.sum(tl.where((kk - nans)[:, :, None] == jj, best[:, None, :], 0.0), axis=2)
        values = tl.where(kk < nans, float('nan'), moved)
    else:  # NaNs last, after every number
        values = tl.where(kk >= N - nans, float('nan'), -best)
    tl.store(out_ptr + rm.to(tl.int64) * K + kk, values, mask=rmask & (kk < K))"""
    wrapper = f"""def {wname}(x):
    x = x.contiguous()
    N = x.shape[-1]
    M = x.numel() // N
    out = torch.empty(tuple(x.shape[:-1]) + ({k},), device=x.device, dtype=x.dtype)
    BLOCK_N = min({P}_BLOCK_N, _pow2(N))
    BLOCK_M = max(1, min({P}_TILE // BLOCK_N, _pow2(M)))
    {kname}[(_cdiv(M, BLOCK_M),)](x, out, M, N, {k}, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
               K_PAD=_pow2({k}), LARGEST={largest}, num_warps={P}_NUM_WARPS)
    return out"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=[v.args[0]])
