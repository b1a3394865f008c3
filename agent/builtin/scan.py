"""Prefix sums along each row, as `torch.cumsum(x, dim=-1)`.

One program holds BLOCK_M rows and walks them in BLOCK_N-column chunks: `tl.cumsum` within a chunk,
plus the running total of the chunks before it, carried in registers. The input is read once and the
output written once; the sums accumulate in fp32 and are stored in the input's dtype, as torch does."""

from __future__ import annotations

from .codegen import RegionCode
from .partition import Region


def emit(region: Region, idx: int) -> RegionCode:
    v = region.root
    if len(region.nodes) != 1 or v.kind != "scan":
        raise NotImplementedError("a scan region holds one torch.cumsum")
    P = f"SCAN{idx}"
    kname, wname = f"_scan{idx}_kernel", f"_scan{idx}"
    kernel = f"""{P}_BLOCK_N = 2048  # columns per chunk: a longer row carries its total from chunk to chunk
{P}_TILE = 4096  # elements per chunk and program (rows x columns)
{P}_NUM_WARPS = 8


@triton.jit
def {kname}(x_ptr, out_ptr, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    rmask = rm < M
    row = rm.to(tl.int64) * N
    carry = tl.zeros([BLOCK_M, 1], dtype=tl.float32)  # the sum of the row's chunks so far
    for c in range(0, N, BLOCK_N):
        rn = c + tl.arange(0, BLOCK_N)[None, :]
        mask = rmask & (rn < N)
        x = tl.load(x_ptr + row + rn, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row + rn, (tl.cumsum(x, axis=1) + carry).to(out_ptr.dtype.element_ty), mask=mask)
        carry += tl.sum(x, axis=1)[:, None]"""
    wrapper = f"""def {wname}(x):
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    N = x.shape[-1]
    M = x.numel() // N
    BLOCK_N = min({P}_BLOCK_N, triton.next_power_of_2(N))
    BLOCK_M = max(1, min({P}_TILE // BLOCK_N, triton.next_power_of_2(M)))
    {kname}[(triton.cdiv(M, BLOCK_M),)](x, out, M, N, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
               num_warps={P}_NUM_WARPS)
    return out"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=[v.args[0]])
