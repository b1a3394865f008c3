"""Conv1d/2d/3d as an implicit GEMM in Triton, with the elementwise tail (bias, batch-norm affine, activation,
scale, residual) as its epilogue: conv -> +bias -> BN -> SiLU is one kernel, the output written once.

The product is (N*OD*OH*OW) x (CI*KD*KH*KW) by (CI*KD*KH*KW) x CO: a row of A is one output pixel's
receptive field, gathered from x through its strides (NCHW or channels-last alike) with the padding
masked to 0; B is the weight, read as its (CO, CI*KD*KH*KW) matrix transposed. 1-D and 2-D convolutions
are 3-D ones with size-1 leading spatial dims. Tiles and program order are the matmul
template's. In fp32 the product is IEEE FMAs, or (the TF32X3 switch) three TF32 tensor-core products
that keep fp32's accuracy: with TF32 off, as the harness computes fp32, cuDNN's own fp32 convolutions
run on FMAs too. One group, int padding; a depthwise or `padding="same"` convolution stays cuDNN's.
"""

from __future__ import annotations

import torch

from .codegen import Leaf, RegionCode, leaf_groups
from .elementwise import fused_lines
from .matmul import product_source, product_tiles
from .partition import Region

_SPATIAL3 = '''def _spatial3(v, d, fill):
    """An int, or d per-dim values, as three: `fill` in front (1-D and 2-D convolutions as 3-D ones)."""
    v = [int(v)] * d if isinstance(v, int) else [int(i) for i in v]
    return [fill] * (3 - len(v)) + v'''


def emit(region: Region, idx: int, tf32x3: bool = False) -> RegionCode:
    conv = region.mm
    x_v, w_v, cfg_v = conv.args
    full = tuple(conv.shape)
    epi = [n for n in region.nodes if n is not conv]
    members = {id(n) for n in region.nodes}
    epi_leaves: list = []
    for n in epi:
        epi_leaves += [a for a in n.args if hasattr(a, "kind") and id(a) not in members and a not in epi_leaves]
    # the tail's operands, addressed by the output's flat NCHW offset as the elementwise kernel does
    leaves = [Leaf(v, f"e{i}", leaf_groups(v, full, 0, squeezed=False), 0, len(full))
              for i, v in enumerate(epi_leaves)]
    env = {id(conv): "acc"}
    epilogue = fused_lines(leaves, epi, env, "offs", "mask")
    ieee = conv.dtype == torch.float32
    P = f"CONV{idx}"
    params = ", ".join(["x_ptr", "w_ptr"] + [p for lf in leaves for p in lf.params()] + [
        "out_ptr", "M", "CO", "K", "D", "H", "W", "OD", "OH", "OW", "sxn", "sxc", "sxd", "sxh", "sxw",
        "SD", "SH", "SW", "PD", "PH", "PW", "DD", "DH", "DW", "KD: tl.constexpr", "KH: tl.constexpr",
        "KW: tl.constexpr", "BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr",
        "GROUP_M: tl.constexpr", "PRECISION: tl.constexpr"])
    body = """pid_m, pid_n = _grouped_tile(tl.program_id(0), M, CO, BLOCK_M, BLOCK_N, GROUP_M)
offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels (n, od, oh, ow)
offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
ow = offs_m % OW
oh = (offs_m // OW) % OH
od = (offs_m // (OW * OH)) % OD
nb = offs_m // (OW * OH * OD)
id0 = (od * SD - PD)[:, None]
ih0 = (oh * SH - PH)[:, None]
iw0 = (ow * SW - PW)[:, None]
x_rows = x_ptr + (nb * sxn)[:, None]
m_ok = offs_m[:, None] < M
acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
for k0 in range(0, K, BLOCK_K):
    offs_k = k0 + tl.arange(0, BLOCK_K)  # (ci, kd, kh, kw) of the receptive field
    kw = offs_k % KW
    kh = (offs_k // KW) % KH
    kd = (offs_k // (KW * KH)) % KD
    ci = offs_k // (KW * KH * KD)
    i_d = id0 + (kd * DD)[None, :]
    ih = ih0 + (kh * DH)[None, :]
    iw = iw0 + (kw * DW)[None, :]
    k_ok = offs_k < K
    a_mask = m_ok & k_ok[None, :] & (i_d >= 0) & (i_d < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    a = tl.load(x_rows + (ci * sxc)[None, :] + i_d * sxd + ih * sxh + iw * sxw, mask=a_mask, other=0.0)
    b = tl.load(w_ptr + offs_n[None, :] * K + offs_k[:, None], mask=k_ok[:, None] & (offs_n[None, :] < CO),
                other=0.0)
    acc = tl.dot(a, b, acc, input_precision=PRECISION)
spatial = OD * OH * OW
offs = (nb * CO * spatial + (od * OH + oh) * OW + ow)[:, None] + offs_n[None, :] * spatial  # NC(D)HW output
mask = m_ok & (offs_n[None, :] < CO)
""" + "\n".join(epilogue) + f"\ntl.store(out_ptr + offs, {env[id(region.root)]}, mask=mask)"
    consts, precision = product_tiles(P, ieee, tf32x3)
    kname, wname = f"_conv{idx}_kernel", f"_conv{idx}"
    odt = "x.dtype" if region.root.dtype == conv.dtype else str(region.root.dtype)
    names = [lf.name for lf in leaves]
    d = conv.mm["dims"]
    w = [_SPATIAL3, "", "", f"def {wname}({', '.join(['x', 'w'] + names + ['geometry'])}):",
         f"    stride, padding, dilation = (_spatial3(v, {d}, fill) for v, fill in zip(geometry[:3], (1, 0, 1)))",
         "    w = w.contiguous()",
         *[f"    {n} = {n}.contiguous()" for n in names],
         f"    size, kernel = _spatial3(x.shape[2:], {d}, 1), _spatial3(w.shape[2:], {d}, 1)",
         "    osize = [(n + 2 * p - dl * (k - 1) - 1) // s + 1",
         "             for n, k, s, p, dl in zip(size, kernel, stride, padding, dilation)]",
         f"    out = torch.empty((x.shape[0], w.shape[0], *osize[{3 - d}:]), device=x.device, dtype={odt})",
         "    M, CO, K = x.shape[0] * math.prod(osize), w.shape[0], x.shape[1] * math.prod(kernel)",
         "    if M == 0 or CO == 0:", "        return out",
         "    full = tuple(out.shape)",
         f"    grid = (triton.cdiv(M, {P}_BLOCK_M) * triton.cdiv(CO, {P}_BLOCK_N),)",
         f"    {kname}[grid](" + ", ".join(["x", "w"] + [lf.wrapper_args(lf.name, "full") for lf in leaves]
                                       + ["out", "M", "CO", "K", "*size", "*osize", "x.stride(0)", "x.stride(1)",
                                          f"*_spatial3(x.stride()[2:], {d}, 0)", "*stride", "*padding",
                                          "*dilation"]) + ",",
         f"        KD=kernel[0], KH=kernel[1], KW=kernel[2], BLOCK_M={P}_BLOCK_M, BLOCK_N={P}_BLOCK_N,",
         f"        BLOCK_K={P}_BLOCK_K, GROUP_M={P}_GROUP_M,",
         f"        PRECISION={precision} if x.dtype == torch.float32 else \"tf32\",",
         f"        num_warps={P}_NUM_WARPS, num_stages={P}_NUM_STAGES)",
         "    return out"]
    return RegionCode(source=product_source(consts, kname, params, body, w), wrapper=wname,
                      args=[x_v, w_v] + epi_leaves + [cfg_v])
