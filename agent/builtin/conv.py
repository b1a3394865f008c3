"""Conv1d/2d/3d as an implicit GEMM in Triton, with the elementwise tail (bias, batch-norm affine, activation,
scale, residual) as its epilogue: conv -> +bias -> BN -> SiLU is one kernel, the output written once.

The product is (N*OD*OH*OW) x (CI*KD*KH*KW) by (CI*KD*KH*KW) x CO: a row of A is one output pixel's
receptive field, gathered from x through its strides (NCHW or channels-last alike) with the padding
masked to 0; B is the weight, packed per call as (groups, KD*KH*KW, CI, CO/groups) so that a K step
reads adjacent output channels. 1-D and 2-D convolutions are 3-D ones with size-1 leading spatial
dims. Tiles and program order are the matmul template's. In fp32 the product is IEEE FMAs, or (the
TF32X3 switch) three TF32 tensor-core products that keep fp32's accuracy: with TF32 off, as the
harness computes fp32, cuDNN's own fp32 convolutions run on FMAs too. Padding "same" puts half the
padding in front, as torch does, the rest masked.

Groups are the grid's second axis: a program's tile holds one group's output channels and reads that
group's input channels. A group of fewer than 16 output channels (depthwise: 1) would fill no tl.dot
(N and K are at least 16 there); its tiles take outer products instead, an input channel and a tap at a
time, on tiles of many pixels by the group's few channels.

A transposed convolution (ConvTranspose1d/2d/3d, F.conv_transposeNd) is split by output phase: the
outputs o = q*S + r of one residue r (per dim) are reached by the taps t = t0 + j*T only, so each
phase is an ordinary implicit GEMM over its own taps. Gathering every tap and masking the misses
instead would spend S^d times the products (8x for a stride-2 3-D one). All phases run in one launch,
a tile's phases side by side, so they read the same input rows and write interleaved outputs together.
"""

from __future__ import annotations

import textwrap

import torch

from .codegen import DOT_MIN, PREPARED_CACHE, Leaf, RegionCode, leaf_groups
from .elementwise import fused_lines
from .ir import Val, made_once
from .matmul import product_source, product_tiles
from .partition import ROW_TILE_MAX_N, Region, operands, own
from .pool import POOL_GEOMETRY
from .rowreduce import one_per_row, reduce_helpers, row_epilogue


def group_outputs(conv: Val) -> int:
    """A convolution's output channels per group at the problem's own sizes (a shrunk trace may have fewer)."""
    return own(conv)[1] // conv.mm["groups"]


_PACKED_WEIGHT = '''def _packed_weight(w, groups, transposed):
    """w as (groups, taps, input channels of a group, output channels of a group), contiguous: what a K
    step of the implicit GEMM reads is adjacent output channels."""
    w = w.reshape(groups, w.shape[0] // groups, w.shape[1], -1)  # (G, COG, CI, taps); transposed (G, CI, COG, taps)
    return w.permute(0, 3, 1, 2).contiguous() if transposed else w.permute(0, 3, 2, 1).contiguous()'''


# The taps of one output phase of a transposed convolution, in one dim: outputs o = q*S + r are reached by
# the taps t = t0 + j*T (j < n), T = S / gcd(S, DL), which read input q + c - j*E, E = DL / gcd(S, DL).
TRANSPOSED_TAPS = '''@triton.jit
def _transposed_taps(r, P, S, DL, K, T):
    t0 = r * 0 - 1  # none found yet (an int32 like r, for the loop)
    for t in range(0, T):
        t0 = tl.where((t0 < 0) & ((r + P - t * DL) % S == 0), t, t0)
    n = tl.where((t0 >= 0) & (t0 < K), (K - t0 + T - 1) // T, 0)
    return t0, n, (r + P - t0 * DL) // S'''

# One tap's products, the input channels of the group inside: a_rows and row_ok (the tap's input pixels),
# w_cols (the tile's weight columns), WCI (the weight's stride from one input channel to the next) and wt
# (the tap's offset in the weight) set by the body around it. The weight comes packed as (groups, taps,
# CI, COG) (the wrapper's _packed_weight): a K step's rows of B are adjacent output channels, so its loads
# coalesce; in torch's own layouts neither B's rows nor its columns are adjacent (a 3x3 kernel's input
# channels are 9 apart), and a warp's 32 loads touched 32 sectors.
_TAP = """if FMA:  # an outer product per input channel: a group's few channels would fill no tl.dot
    for ci in range(0, CI):
        a = tl.load(a_rows + ci * sxc, mask=row_ok, other=0.0).to(tl.float32)
        b = tl.load(w_cols + ci * WCI + wt, mask=n_ok, other=0.0)
        acc += a * b.to(tl.float32)
else:
    for c0 in range(0, CI, BLOCK_K):
        ci = c0 + tl.arange(0, BLOCK_K)
        c_ok = ci < CI
        a = tl.load(a_rows + (ci * sxc)[None, :], mask=row_ok & c_ok[None, :], other=0.0)
        b = tl.load(w_cols + (ci * WCI + wt)[:, None], mask=c_ok[:, None] & n_ok, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
"""

# A program's output pixels (n, {o}d, {o}h, {o}w) and channels: the conv's own outputs (o, sizes OD, OH,
# OW), or with a pool after it whose windows tile them (partition.fuse_conv_pools), the pooled ones (q).
# Such a tile computes the conv outputs of its windows one window position at a time, pooling as they come.
_PIXELS = """pid_m, pid_n = _grouped_tile(tl.program_id(0), M, COG, BLOCK_M, BLOCK_N, GROUP_M)
g = tl.program_id(1)  # the group: its COG output channels read its own K // (KD * KH * KW) input channels
offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
local_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
offs_n = g * COG + local_n
{o}w = offs_m % {O}W
{o}h = (offs_m // {O}W) % {O}H
{o}d = (offs_m // ({O}W * {O}H)) % {O}D
nb = offs_m // ({O}W * {O}H * {O}D)
m_ok = offs_m[:, None] < M
n_ok = local_n[None, :] < COG
"""

_DIRECT = """id0 = (od * SD - PD)[:, None]
ih0 = (oh * SH - PH)[:, None]
iw0 = (ow * SW - PW)[:, None]
CI = K // (KD * KH * KW)  # the group's input channels
x_rows = x_ptr + (nb * sxn)[:, None] + g * CI * sxc
w_cols = w_ptr + g * K * COG + local_n[None, :]  # weight packed (G, KD * KH * KW, CI, COG)
WCI = COG
acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
if PER_TAP:  # tap by tap, input channels inside: a tap's addresses and padding masks are per pixel
    for tap in range(0, KD * KH * KW):
        i_d = id0 + (tap // (KW * KH)) * DD
        ih = ih0 + ((tap // KW) % KH) * DH
        iw = iw0 + (tap % KW) * DW
        a_rows = x_rows + i_d * sxd + ih * sxh + iw * sxw
        row_ok = m_ok & (i_d >= 0) & (i_d < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        wt = tap * CI * COG
""" + textwrap.indent(_TAP, " " * 8) + """\
else:  # the receptive field flat, (ci, kd, kh, kw) in one K loop: no K step half empty when CI is small
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
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
        b = tl.load(w_cols + ((offs_k % (KD * KH * KW)) * CI + ci)[:, None] * COG, mask=k_ok[:, None] & n_ok,
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
"""

# A transposed convolution's tile: its pixels (n, vd, vh, vw) are the outputs o = v * S + r of one phase r
_TRANSPOSED_TILE = """pid = tl.program_id(0)
phase = pid % (SD * SH * SW)  # a tile's phases are neighbouring programs
pid_m, pid_n = _grouped_tile(pid // (SD * SH * SW), MQ, COG, BLOCK_M, BLOCK_N, GROUP_M)
g = tl.program_id(1)  # the group: CI input channels (this group's) to COG output channels
rw = phase % SW
rh = (phase // SW) % SH
rd = phase // (SW * SH)
VD = (OD - rd + SD - 1) // SD  # this phase's outputs per dim
VH = (OH - rh + SH - 1) // SH
VW = (OW - rw + SW - 1) // SW
M = NB * VD * VH * VW
offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # this phase's output pixels (n, vd, vh, vw)
local_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
offs_n = g * COG + local_n  # output channels
vw = offs_m % tl.maximum(VW, 1)
vh = (offs_m // tl.maximum(VW, 1)) % tl.maximum(VH, 1)
vd = (offs_m // tl.maximum(VW * VH, 1)) % tl.maximum(VD, 1)
nb = offs_m // tl.maximum(VW * VH * VD, 1)
m_ok = offs_m[:, None] < M
n_ok = local_n[None, :] < COG
"""

# One phase's products for the pixels (nb, vd, vh, vw) (outputs o = v * S + r): the taps that reach it only
_TRANSPOSED_PHASE = """t0d, nd, cd = _transposed_taps(rd, PD, SD, DD, KD, TD)
t0h, nh, ch = _transposed_taps(rh, PH, SH, DH, KH, TH)
t0w, nw, cw = _transposed_taps(rw, PW, SW, DW, KW, TW)
id0 = (vd + cd)[:, None]
ih0 = (vh + ch)[:, None]
iw0 = (vw + cw)[:, None]
x_rows = x_ptr + (nb * sxn)[:, None] + g * CI * sxc
w_cols = w_ptr + g * (KD * KH * KW) * CI * COG + local_n[None, :]  # weight packed (G, KD * KH * KW, CI, COG)
WCI = COG
acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
if PER_TAP:  # this phase's taps one by one, input channels inside
    for tap in range(0, nd * nh * nw):
        jw = tap % nw
        jh = (tap // nw) % nh
        jd = tap // (nw * nh)
        i_d = id0 - jd * ED
        ih = ih0 - jh * EH
        iw = iw0 - jw * EW
        a_rows = x_rows + i_d * sxd + ih * sxh + iw * sxw
        row_ok = m_ok & (i_d >= 0) & (i_d < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        wt = (((t0d + jd * TD) * KH + t0h + jh * TH) * KW + t0w + jw * TW) * CI * COG
""" + textwrap.indent(_TAP, " " * 8) + """\
else:  # (ci, jd, jh, jw) flat in one K loop
    K = CI * nd * nh * nw
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        jw = offs_k % nw
        jh = (offs_k // nw) % nh
        jd = (offs_k // (nw * nh)) % nd
        ci = offs_k // (nw * nh * nd)
        i_d = id0 - (jd * ED)[None, :]
        ih = ih0 - (jh * EH)[None, :]
        iw = iw0 - (jw * EW)[None, :]
        k_ok = offs_k < K
        a_mask = m_ok & k_ok[None, :] & (i_d >= 0) & (i_d < D) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a = tl.load(x_rows + (ci * sxc)[None, :] + i_d * sxd + ih * sxh + iw * sxw, mask=a_mask, other=0.0)
        tap = ((t0d + jd * TD) * KH + t0h + jh * TH) * KW + t0w + jw * TW
        b = tl.load(w_cols + (tap * CI + ci)[:, None] * COG, mask=k_ok[:, None] & n_ok, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
od = vd * SD + rd
oh = vh * SH + rh
ow = vw * SW + rw
"""


# A pooled tile's window position `win` of a transposed convolution whose stride divides the window: the one
# phase of its outputs (od, oh, ow) in every window, and their pixels in that phase
_WINDOW_PHASE = """rd = (win // (WW * WH)) % SD
rh = ((win // WW) % WH) % SH
rw = (win % WW) % SW
vd = od // SD
vh = oh // SH
vw = ow // SW
"""

_OUTPUT = """spatial = OD * OH * OW
offs = (nb * CO * spatial + (od * OH + oh) * OW + ow)[:, None] + offs_n[None, :] * spatial  # NC(D)HW output
mask = m_ok & n_ok
"""


# A row epilogue's indices: the tile's output pixels are rows of the (N, *spatial, C) view, its channels
# the columns (the row kernel's names; a tile spans every channel)
_ROWS = """rm = (((nb * OD + od) * OH + oh) * OW + ow)[:, None]
rn = offs_n[None, :]
rmask = m_ok
cmask = n_ok
N = CO
"""


def _pooled(pool: Val, after: list[Val], per_output: str, root: Val) -> tuple[str, list[Val], list[Leaf]]:
    """A pooled tile's kernel body: each window position's conv outputs (`per_output`: the product, the
    tail and the pool's prologue for them, ending in the pool's input) pooled as they come, then the
    pool's epilogue (`after`) at the pooled output; and that epilogue's leaves."""
    values = operands(after, (pool,))
    pool_full = tuple(pool.shape)
    leaves = [Leaf(v, f"q{i}", leaf_groups(v, pool_full, 0, squeezed=False), 0, len(pool_full))
              for i, v in enumerate(values)]
    env = {id(pool): "pool_v"}
    tail = fused_lines(leaves, after, env, "poffs", "pmask")
    init = "tl.full((BLOCK_M, BLOCK_N), float('-inf'), tl.float32)" if pool.fn == "max" else \
        "tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)"
    window = "od = qd * WD + win // (WW * WH)\noh = qh * WH + (win // WW) % WH\now = qw * WW + win % WW\n"
    body = (_PIXELS.format(o="q", O="Q") + f"pooled = {init}\nfor win in range(0, WD * WH * WW):\n"
            + "\n".join("    " + line for line in (window + per_output).split("\n"))
            + "\npool_v = pooled" + ("" if pool.fn == "max" else " / (WD * WH * WW)")
            + "\nqspatial = QD * QH * QW"
            + "\npoffs = (nb * CO * qspatial + (qd * QH + qh) * QW + qw)[:, None] + offs_n[None, :] * qspatial"
            + "\npmask = m_ok & n_ok\n" + "\n".join(tail)
            + f"\ntl.store(out_ptr + poffs, {env[id(root)]}, mask=pmask)")
    return body, values, leaves


def _rows(region: Region, after: list[Val], value: str) -> tuple[list[str], list[Val], list[Leaf]]:
    """A row epilogue's lines (its leaves read in the (N, *spatial, C) layout) on the tile's conv output
    `value`, and its leaves. A full-size output goes where NC(D)HW puts it (the wrapper hands out its
    (N, *spatial, C) view), so what reads it after the forward moves it back is contiguous, not a copy."""
    rows = Region(kind="row", root=region.root, nodes=after, full=region.full, k=1)
    values = [v for v in rows.leaves() if v is not region.rows]
    split = len(rows.full) - 1
    leaves = [Leaf(v, f"in{i}", leaf_groups(v, rows.full, split), split, len(rows.full), v.squeezed,
                   "barrier" in v.mm) for i, v in enumerate(values)]
    return _ROWS.strip().split("\n") + row_epilogue(rows, leaves, {id(region.rows): value}, at="offs"), values, leaves


def emit(region: Region, idx: int, tf32x3: bool = False) -> RegionCode:
    """`region.rows`: a row kernel over the channels follows in the same kernel (partition.fuse_product_rows);
    a pool in the region: it pools the conv's outputs, windows apart (partition.fuse_conv_pools)."""
    conv = region.mm
    transposed = bool(conv.mm.get("transposed"))
    x_v, w_v, cfg_v = conv.args
    full = tuple(conv.shape)
    pool = next((n for n in region.nodes if n.kind == "pool"), None)
    total = next((n for n in region.nodes if n.kind == "red"), None) if region.rows is None and pool is None \
        else None  # a sum over the spatial dims (partition.fuse_conv_reductions); a row epilogue's are its own
    if pool is not None:  # the members at conv outputs (its tail, the pool's prologue), then the pool's epilogue
        nodes = [n for n in region.nodes if n is conv or id(n) in region.before]
    elif total is not None:  # the tail and the reduction's prologue, at conv outputs
        nodes = [n for n in region.nodes if n is not total]
    elif region.rows is not None:
        nodes = region.nodes[:[id(n) for n in region.nodes].index(id(region.rows))]
    else:
        nodes = region.nodes
    after = [n for n in region.nodes[len(nodes):] if n is not pool and n is not region.rows and n is not total]
    epi = [n for n in nodes if n is not conv]
    epi_leaves = operands(epi, (conv,))
    # the tail's operands, addressed by the output's flat NCHW offset as the elementwise kernel does
    leaves = [Leaf(v, f"e{i}", leaf_groups(v, full, 0, squeezed=False), 0, len(full))
              for i, v in enumerate(epi_leaves)]
    env = {id(conv): "acc"}
    epilogue = fused_lines(leaves, epi, env, "offs", "mask")
    value = env[id(nodes[-1])]
    more_leaves_v: list = []  # a row or pool epilogue's
    if pool is not None:
        v = env[id(pool.args[0])]
        epilogue.append(f"pooled = tl.where(mask & (({v} > pooled) | ({v} != {v})), {v}, pooled)"  # NaN wins
                        if pool.fn == "max" else f"pooled += tl.where(mask, {v}, 0.0)")
        per_output = (_WINDOW_PHASE + _TRANSPOSED_PHASE if transposed else _DIRECT) + _OUTPUT + "\n".join(epilogue)
        body, more_leaves_v, more = _pooled(pool, after, per_output, region.root)
        body = ("M = MQ  # the pooled pixels\n" if transposed else "") + body
        leaves += more
    elif total is not None:  # each image's share of the tile, added into its (N, C) sums
        v = env[id(total.args[0])]
        scale = " / spatial" if total.fn == "mean" else ""
        epilogue += [f"summed = tl.where(mask, {v}, 0.0)",
                     "n_lo = tl.min(tl.where(offs_m < M, nb, 1 << 30), axis=0)  # the tile's images",
                     "n_hi = tl.max(tl.where(offs_m < M, nb, 0), axis=0)",
                     "for n in range(n_lo, n_hi + 1):",
                     "    share = tl.sum(tl.where((nb == n)[:, None], summed, 0.0), axis=0)",
                     f"    tl.atomic_add(out_ptr + n * CO + offs_n, share{scale}, mask=local_n < COG)"]
    elif region.rows is None:
        epilogue.append(f"tl.store(out_ptr + offs, {value}, mask=mask)")
    else:
        lines, more_leaves_v, more = _rows(region, after, value)
        epilogue += lines
        leaves += more
    ieee = conv.dtype == torch.float32
    P = f"CONV{idx}"
    geometry = ["D", "H", "W", "OD", "OH", "OW", "sxn", "sxc", "sxd", "sxh", "sxw", "SD", "SH", "SW", "PD", "PH", "PW",
                "DD", "DH", "DW"]
    tiles = ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr", "GROUP_M: tl.constexpr",
             "PER_TAP: tl.constexpr", "FMA: tl.constexpr", "PRECISION: tl.constexpr"]
    pooled = ["QD", "QH", "QW", "WD", "WH", "WW"] * (pool is not None)
    if transposed:
        sizes = ["NB", "CO", "COG", "CI"] + geometry + ["KD", "KH", "KW", "TD", "TH", "TW", "ED", "EH", "EW", "MQ"] \
            + pooled
    else:  # a pool's sizes before the constexprs the launch names
        sizes = ["M", "CO", "COG", "K"] + geometry + pooled + [
            "KD: tl.constexpr", "KH: tl.constexpr", "KW: tl.constexpr"]
    params = ", ".join(["x_ptr", "w_ptr"] + [p for lf in leaves for p in lf.params()] + ["out_ptr"] + sizes + tiles)
    if pool is None:
        body = (_TRANSPOSED_TILE + _TRANSPOSED_PHASE if transposed else _PIXELS.format(o="o", O="O") + _DIRECT) \
            + _OUTPUT + "\n".join(epilogue)
    consts, precision = product_tiles(P, ieee, tf32x3)
    consts.append(f"{P}_PER_TAP = 1  # tuning switch: the conv's K loop tap by tap (1, where the channels fill a "
                  "K step) or flat (0)")
    consts.append(f"{P}_FMA_TILE = 1024  # outputs a program computes by outer products (a group's channels few)")
    kname, wname = f"_conv{idx}_kernel", f"_conv{idx}"
    odt = "x.dtype" if region.root.dtype == conv.dtype else str(region.root.dtype)
    names = [lf.name for lf in leaves]
    d = conv.mm["dims"]
    # The geometry (sizes, launch arguments, tiles) is a function of the shapes, strides and the conv's
    # settings alone: computed once per key by the plan (codegen's _memo), not each call.
    cfg_args = ["geometry"] + ["pool_cfg"] * bool(pool)
    device_arg = ", device" if pool is not None else ""  # a pooled grid's size goes by the SMs
    plan = [f"def {wname}_plan(xshape, xstride, wshape, {', '.join(cfg_args)}{device_arg}):",
            f'    """{wname}\'s sizes, tiles and launch arguments for these shapes and settings."""',
            f"    stride, padding, dilation = (_spatial3(0 if isinstance(v, str) else v, {d}, fill)",
            "                                 for v, fill in zip(geometry[:3], (1, 0, 1)))  # padding 'valid': 0",
            f"    size, kernel = _spatial3(xshape[2:], {d}, 1), _spatial3(wshape[2:], {d}, 1)",
            "    groups = int(geometry[3])"]
    if transposed:  # weight (CI, CO / groups, *kernel)
        plan += [f"    extra = _spatial3(geometry[4], {d}, 0)  # output_padding",
                 "    osize = [(n - 1) * s - 2 * p + dl * (k - 1) + e + 1",
                 "             for n, k, s, p, dl, e in zip(size, kernel, stride, padding, dilation, extra)]",
                 "    CO, COG, CI = wshape[1] * groups, wshape[1], xshape[1] // groups",
                 "    steps = [s // math.gcd(s, dl) for s, dl in zip(stride, dilation)]",
                 "    reach = [dl // math.gcd(s, dl) for s, dl in zip(stride, dilation)]",
                 "    M = xshape[0] * math.prod(-(-o // s) for o, s in zip(osize, stride))  # the largest phase"]
        sizes_args = ["xshape[0]", "CO", "COG", "CI"]
        extra_args = ["*kernel", "*steps", "*reach", "M"]
    else:
        plan += ["    osize = [(n + 2 * p - dl * (k - 1) - 1) // s + 1",
                 "             for n, k, s, p, dl in zip(size, kernel, stride, padding, dilation)]",
                 "    if geometry[1] == 'same':  # stride 1: half the padding in front (rounded down), the rest masked",
                 "        padding, osize = [dl * (k - 1) // 2 for dl, k in zip(dilation, kernel)], list(size)",
                 "    CO, CI = wshape[0], wshape[1]  # weight (CO, CI / groups, *kernel)",
                 "    COG = CO // groups",
                 "    M, K = xshape[0] * math.prod(osize), CI * math.prod(kernel)"]
        sizes_args = ["M", "CO", "COG", "K"]
        extra_args = []
    # Tap by tap, input channels inside, when they fill a K step (tl.dot's K is at least 16); flat, the
    # receptive field in one K loop, when they are few (an RGB input's 3) or the switch says so. A group
    # of fewer than 16 output channels (depthwise: 1) would fill no tl.dot: outer products, tap by tap.
    plan += ["    if xshape[1] != CI * groups or CO % groups:",
             "        raise ValueError(f'{xshape[1]} input and {CO} output channels do not split in {groups} groups')",
             f"    fma = COG < {DOT_MIN}",
             f"    per_tap = fma or ({P}_PER_TAP and CI >= {DOT_MIN})",
             f"    k_step = min({P}_BLOCK_K, _pow2(CI)) if per_tap else {P}_BLOCK_K",
             "    if fma:",
             "        block_n = _pow2(COG)",
             f"        block_m = max({P}_BLOCK_M, {P}_FMA_TILE // block_n)",
             "    else:",
             f"        block_n = max({DOT_MIN}, min({P}_BLOCK_N, _pow2(COG)))",
             f"        block_m = {P}_BLOCK_M",
             f"    full = (xshape[0], CO, *osize[{3 - d}:])"]
    per_row = region.rows is not None and one_per_row(region.root, tuple(region.full), 1)
    more_full = "full"  # the shape a row or pool epilogue's leaves are addressed in
    out_shape = "full" if total is None else "full[:2] + (1,) * (len(full) - 2)"  # a reduction's: (N, C, 1...)
    if pool is not None:
        plan += [f"    k, s, p, dl, q, divisor = _pool_geometry(osize[{3 - d}:], pool_cfg, False)",
                 "    if k != s or any(p) or any(v != 1 for v in dl) or divisor:",
                 "        raise ValueError(f'a pool in a convolution kernel takes windows apart (stride = kernel, no '",
                 "                         f'padding, dilation or divisor); this one: kernel {k}, stride {s}')",
                 *(["    if any(w % s for w, s in zip(k, stride)):",
                    "        raise ValueError(f'a pool in a transposed convolution kernel needs windows the '",
                    "                         f'stride divides; this one: window {k}, stride {stride}')"]
                   if transposed else []),
                 "    pool_full = (xshape[0], CO, *q[" + str(3 - d) + ":])",
                 "    M = xshape[0] * math.prod(q)  # pooled pixels",
                 "    # a program loops over its windows' positions: a grid of a few programs would leave SMs idle",
                 "    while block_m > 16 and _cdiv(M, block_m) * _cdiv(COG, block_n) * groups < 4 * _sm_count(device):",
                 "        block_m //= 2"]
        extra_args += ["*q", "*k"]
        more_full = out_shape = "pool_full"
    elif region.rows is not None:  # one tile spans a pixel's channels: rows of the (N, *spatial, C) view
        plan += [f"    block_n = max({DOT_MIN}, _pow2(CO))",
                 "    if groups != 1:",
                 "        raise ValueError('a row epilogue over the channels needs a convolution of one group')",
                 f"    if block_n > {ROW_TILE_MAX_N}:",
                 "        raise ValueError(f'a row epilogue over {CO} channels does not fit one tile '",
                 f"                         '({ROW_TILE_MAX_N} at most)')",
                 f"    block_m = min({P}_BLOCK_M, max(16, 8192 // block_n))",
                 f"    rows_full = (xshape[0], *osize[{3 - d}:], CO)"]
        more_full = "rows_full"
        out_shape = "full" if not per_row else ("rows_full[:-1]" if region.root.squeezed else "rows_full[:-1] + (1,)")
    if not transposed:
        extra_args += ["*kernel"]  # KD, KH, KW: constexprs
    launch_sizes = (sizes_args + ["*size", "*osize", "xstride[0]", "xstride[1]", f"*_spatial3(xstride[2:], {d}, 0)",
                                  "*stride", "*padding", "*dilation"] + extra_args)
    plan += ["    tiles = _cdiv(M, block_m) * _cdiv(COG, block_n)" + (" * math.prod(stride)  # every phase"
                                                                       if transposed and pool is None else ""),
             "    sizes = (" + ", ".join(launch_sizes) + ")",
             f"    return groups, full, {more_full}, {out_shape}, tiles, sizes, block_m, block_n, k_step, per_tap, fma"]
    # the shape each leaf is addressed in: the conv output's, a row epilogue's rows, the pooled output's
    fulls = {lf.name: "full" if i < len(epi_leaves) else "more_full" for i, lf in enumerate(leaves)}
    result = "out.movedim(1, -1)" if region.rows is not None and not per_row else "out"
    launch = ["x", "wp"] + [lf.wrapper_args(lf.name, fulls[lf.name]) for lf in leaves] + ["out", "*sizes"]
    w = [_PACKED_WEIGHT, "", "", *plan, "", "",
         f"def {wname}({', '.join(['x', 'w'] + names + cfg_args)}, prepared=None):",
         "    groups, full, more_full, out_shape, tiles, sizes, block_m, block_n, k_step, per_tap, fma = _memo(",
         f"        {wname}_plan, x.shape, x.stride(), w.shape, {', '.join(cfg_args)}{', x.device' * bool(pool)})",
         f"    wp = (_packed_weight(w, groups, {transposed}) if prepared is None  # packed once per weight",
         f"          else _prepared(prepared, {wname!r}, _packed_weight, w, groups, {transposed}))",
         f"    out = torch.{'zeros' if total is not None else 'empty'}(out_shape, device=x.device, dtype={odt})",
         *[f"    {lf.readable(lf.name, fulls[lf.name])}" for lf in leaves],
         "    if tiles == 0:", f"        return {result}",
         f"    {kname}[(tiles, groups)](" + ", ".join(launch) + ",",
         "        BLOCK_M=block_m, BLOCK_N=block_n,",
         f"        BLOCK_K=k_step, GROUP_M={P}_GROUP_M, PER_TAP=per_tap, FMA=fma,",
         f"        PRECISION={precision} if x.dtype == torch.float32 else \"tf32\",",
         f"        num_warps={P}_NUM_WARPS, num_stages={P}_NUM_STAGES)",
         f"    return {result}"]
    source = product_source(consts, kname, params, body, w)
    if transposed:
        source = TRANSPOSED_TAPS + "\n\n\n" + source
    if pool is not None:
        source = POOL_GEOMETRY + "\n\n\n" + source
    if region.rows is not None:  # the NaN-keeping max / min and prod a row epilogue may call
        source = reduce_helpers(after) + "\n\n\n" + source
    # a weight the model holds, or one made once from it (a pool folded into the weight), is packed once
    # (codegen's _prepared); one computed each forward is packed each call
    cache = [PREPARED_CACHE] if made_once(w_v) else []
    return RegionCode(source=source, wrapper=wname, args=[x_v, w_v] + epi_leaves + more_leaves_v
                      + [cfg_v] + ([pool.args[1]] if pool is not None else []) + cache)
