"""Matmul (nn.Linear, mm, bmm, matmul, addmm) as a tiled tl.dot kernel with grouped program
order and a fused epilogue (bias, activation, scale, residual), fp32 accumulation; and, where a row
kernel over its output's last dim follows (softmax, a norm, a log-sum-exp), with that kernel as the
epilogue of a tile that spans every column; or, for a group norm of its output, whole groups."""

from __future__ import annotations

import torch

from .codegen import DOT_MIN, GROUPED_TILE, TF32X3_NOTE, Leaf, RegionCode, emit_ew, leaf_groups
from .ir import Val
from .partition import ROW_TILE_MAX_N, Region, operands
from .rowreduce import one_per_row, reduce_helpers, row_epilogue


def product_tiles(P: str, ieee: bool, tf32x3: bool) -> tuple[list[str], str]:
    """A tiled product's tunable constants (named P_...) and the Python for its tl.dot precision. Tensor
    cores (bf16/fp16, or fp32 as 3xTF32) want 128x128 tiles and 8 warps; fp32 on FMAs does better with
    64x64 and 4. An fp32 tile is twice as wide in shared memory: K steps of 32, not 64."""
    cores = not ieee or tf32x3
    consts = [f"{P}_BLOCK_M = {128 if cores else 64}", f"{P}_BLOCK_N = {128 if cores else 64}",
              f"{P}_BLOCK_K = {32 if ieee else 64}", f"{P}_GROUP_M = 8", f"{P}_NUM_WARPS = {8 if cores else 4}",
              f"{P}_NUM_STAGES = 3"]
    if ieee:
        consts.append(f"{P}_TF32X3 = {int(tf32x3)}  {TF32X3_NOTE}")
    return consts, f'("tf32x3" if {P}_TF32X3 else "ieee")' if ieee else '"ieee"'


def _indent(text: str) -> str:
    return "\n".join("    " + line if line else "" for line in text.split("\n"))


def product_source(consts: list[str], kname: str, params: str, body: str, wrapper: list[str]) -> str:
    """A tiled product's region source: its constants, the grouped program order, the kernel (params,
    body unindented) and its wrapper's lines."""
    return "\n\n\n".join(["\n".join(consts), GROUPED_TILE, f"@triton.jit\ndef {kname}({params}):\n{_indent(body)}",
                           "\n".join(wrapper)])


def emit(region: Region, idx: int, tf32x3: bool = False) -> RegionCode:
    """`tf32x3`: an fp32 product as three TF32 tensor-core products, in tiles sized for tensor cores.
    `region.rows`: a row kernel over the product's last dim follows in the same kernel
    (partition.fuse_product_rows)."""
    mm = region.mm
    a_v, b_v = mm.args
    full = tuple(mm.shape)
    rank, split = len(full), len(full) - 1
    nodes, after = region.nodes, []
    grouped = region.rows is not None and region.rows.kind == "view"  # a group norm's: G rows to a product row
    if region.rows is not None:
        at = [id(n) for n in nodes].index(id(region.rows))
        nodes, after = nodes[:at + (not grouped)], nodes[at + 1:]
    epi = [n for n in nodes if n is not mm]
    epi_leaves = operands(epi, (mm,))
    leaves = [Leaf(v, f"e{i}", leaf_groups(v, full, split), split, rank, strided="barrier" in v.mm)
              for i, v in enumerate(epi_leaves)]
    ieee = mm.dtype == torch.float32
    P = f"MM{idx}"
    env = {id(mm): "acc"}
    epilogue = []
    for lf in leaves:
        addr, uses = lf.address("rm", "rn")
        cast = "" if lf.val.dtype == torch.bool else ".to(tl.float32)"
        if not lf.groups:
            epilogue.append(f"x_{lf.name} = tl.load({lf.name}_ptr){cast}")
        else:
            mask = {frozenset({"row"}): "rmask", frozenset({"col"}): "cmask"}.get(frozenset(uses), "mask")
            epilogue.append(f"x_{lf.name} = tl.load({lf.name}_ptr + {addr}, mask={mask}, other=0){cast}")
        env[id(lf.val)] = f"x_{lf.name}"
    for n in epi:
        env[id(n)] = n.name
        epilogue.append(f"{n.name} = {emit_ew(n, env)}")
    res = env[id(nodes[-1])]
    row_leaves: list[Val] = []  # a row epilogue's operands
    more: list[Leaf] = []  # their kernel leaves, addressed in the rows' shape
    if region.rows is None:
        epilogue.append(f"tl.store(out_ptr + rm * N + rn, {res}, mask=mask)")
    else:
        rows_full, k = tuple(region.full), region.k
        rows = Region(kind="row", root=region.root, nodes=after, full=rows_full, k=k)
        row_leaves = [v for v in rows.leaves() if v is not region.rows]
        cut = len(rows_full) - k
        more = [Leaf(v, f"r{i}", leaf_groups(v, rows_full, cut), cut, len(rows_full), v.squeezed, "barrier" in v.mm)
                for i, v in enumerate(row_leaves)]
        if grouped:  # the (BLOCK_M, BLOCK_N) tile, TG = BLOCK_N // GROUP_N whole groups of GROUP_N columns, as
            # (BLOCK_M * TG, GROUP_N) rows: row i*TG + t holds row i's group gi = pid_n*TG + t, row rm*G + gi
            # of the (M * G, GROUP_N) rows (G = N // GROUP_N); a tile wider than N has groups past G
            epilogue += ["gi = pid_n * (BLOCK_N // GROUP_N) + tl.arange(0, BLOCK_N // GROUP_N)[None, :]",
                         f"{res} = tl.reshape({res}, (BLOCK_M * (BLOCK_N // GROUP_N), GROUP_N))",
                         "rmask = tl.reshape(rmask & (gi < N // GROUP_N), (BLOCK_M * (BLOCK_N // GROUP_N), 1))",
                         "rm = tl.reshape(rm * (N // GROUP_N) + gi, (BLOCK_M * (BLOCK_N // GROUP_N), 1))",
                         "rn = tl.arange(0, GROUP_N)[None, :]", "N = GROUP_N", "cmask = rn < N", "mask = rmask & cmask"]
        epilogue += row_epilogue(rows, more, {id(region.rows): res})
        leaves += more
    split_k = region.rows is None  # a row epilogue needs whole rows of the finished product in one program
    params = ", ".join(["a_ptr", "b_ptr"] + [p for lf in leaves for p in lf.params()] + [
        "out_ptr", "M", "N", "K", "stride_ab", "stride_am", "stride_ak", "stride_bb", "stride_bk", "stride_bn"]
        + ["ws_ptr", "K_SPLIT"] * split_k + [
        "BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr", "BLOCK_K: tl.constexpr", "GROUP_M: tl.constexpr",
        "PRECISION: tl.constexpr"] + ["GROUP_N: tl.constexpr"] * grouped + ["PASS: tl.constexpr"] * split_k)
    dot = "tl.dot(a, b, acc, input_precision=PRECISION)"
    k_tiles, keep = "k_tiles = tl.cdiv(k_span, BLOCK_K)", ""
    if "tri" in mm.mm:  # tril / triu: a tile wholly outside the kept triangle is zeros, with no product
        upper, offset = mm.mm["tri"]
        outside = f"pid_n * BLOCK_N + BLOCK_N - 1 < pid_m * BLOCK_M + {offset}" if upper else \
            f"pid_n * BLOCK_N > pid_m * BLOCK_M + BLOCK_M - 1 + {offset}"
        k_tiles += f"\nif {outside}:\n    k_tiles = 0"
        op = ">=" if upper else "<="
        keep = f"acc = tl.where(offs_n[None, :] {op} offs_m[:, None] + {offset}, acc, 0.0)\n"
    head = """pid_m, pid_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
bid = tl.program_id(1)
offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)"""
    # PASS 0: the whole K loop, then the epilogue. A split product (too few tiles to fill the GPU): PASS 1, a
    # program per (tile, K span) stores its partial product; PASS 2 sums a tile's partials, then the epilogue.
    # the unsplit pass's k_lo a constant 0: the same kernel as before splits, its loads' alignment known
    span, ka, kb = ("if PASS == 1:\n    k_lo = tl.program_id(2) * K_SPLIT\n    k_span = tl.minimum(K - k_lo, K_SPLIT)"
                    "\nelse:\n    k_lo = 0\n    k_span = K",
                    "(k_lo + offs_k[None, :])", "(k_lo + offs_k[:, None])") if split_k else \
        ("k_span = K", "offs_k[None, :]", "offs_k[:, None]")
    product = f"""{span}
offs_k = tl.arange(0, BLOCK_K)
a_ptrs = a_ptr + bid * stride_ab + offs_m[:, None] * stride_am + {ka} * stride_ak
b_ptrs = b_ptr + bid * stride_bb + {kb} * stride_bk + offs_n[None, :] * stride_bn
{k_tiles}
for k in range(0, k_tiles):
    k_left = k_span - k * BLOCK_K
    a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
    b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & (offs_n[None, :] < N), other=0.0)
    acc = {dot}
    a_ptrs += BLOCK_K * stride_ak
    b_ptrs += BLOCK_K * stride_bk"""
    finish = f"""{keep}rm = bid * M + offs_m[:, None]
rn = offs_n[None, :]
rmask = offs_m[:, None] < M
cmask = rn < N
mask = rmask & cmask
""" + "\n".join(epilogue)
    if not split_k:
        body = "\n".join([head, product, finish])
    else:
        partials = """ws_tile = ws_ptr + (bid * M + offs_m[:, None]) * N + offs_n[None, :]
ws_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
ws_step = tl.num_programs(1) * M * N"""
        body = "\n".join([head, "if PASS == 2:", _indent(f"""{partials}
for s in range(0, tl.cdiv(K, K_SPLIT)):  # in a fixed order: the same sum every run
    acc += tl.load(ws_tile + s * ws_step, mask=ws_mask, other=0.0)"""), "else:", _indent(product),
                           "if PASS == 1:", _indent(f"""{partials}
tl.store(ws_tile + tl.program_id(2) * ws_step, acc, mask=ws_mask)"""), "else:", _indent(finish)])
    consts, precision = product_tiles(P, ieee, tf32x3)
    if region.rows is not None:  # 64 accumulator registers a thread at the tiles' warps (4 on FMAs, 8 on cores)
        consts.append(f"{P}_ROW_TILE = {8192 if ieee and not tf32x3 else 16384}  # a tile's elements when it spans "
                      "a row (rows = this / columns)")
    kname, wname = f"_mm{idx}_kernel", f"_mm{idx}"
    odt = "a.dtype" if region.root.dtype == mm.dtype else str(region.root.dtype)
    names = ["a", "b"] + [lf.name for lf in leaves] + ["groups"] * grouped  # G: the norm's, read at run time
    w = [f"def {wname}({', '.join(names)}):"]
    w += [f"    {lf.name} = {lf.name}.contiguous()" for lf in leaves if not lf.strided]
    if mm.mm.get("batched"):
        # leading dims flatten into one batch dim (a view for the usual strides, else a copy)
        w += ["    lead = tuple(a.shape[:-2])", "    a = a.reshape((-1,) + tuple(a.shape[-2:]))",
              "    b = b.reshape((-1,) + tuple(b.shape[-2:]))", "    BATCH, M, K = a.shape", "    N = b.shape[2]",
              "    full = lead + (M, N)",
              "    strides = (a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2))"]
    else:
        w += ["    K = a.shape[-1]", "    a2 = a.reshape(-1, K)", "    M, BATCH = a2.shape[0], 1"]
        if mm.mm.get("trans_b"):
            w += ["    N = b.shape[0]", "    strides = (0, a2.stride(0), a2.stride(1), 0, b.stride(1), b.stride(0))"]
        else:
            w += ["    N = b.shape[1]", "    strides = (0, a2.stride(0), a2.stride(1), 0, b.stride(0), b.stride(1))"]
        w += ["    full = tuple(a.shape[:-1]) + (N,)", "    a = a2"]
    shape = "full"
    if region.rows is not None:  # the rows' shape: the product's, or a group norm's view of it
        tail = tuple(region.full[rank - 1:])
        w += ["    rows_full = full" if not grouped else
              f"    rows_full = full[:-1] + (groups, N // groups){tail[2:] and f' + {tail[2:]}'}"]
        shape = "rows_full"
        if one_per_row(region.root, tuple(region.full), region.k):  # a value per row, stored at its row
            cut = len(region.full) - region.k
            shape = f"rows_full[:{cut}]" if region.root.squeezed else f"rows_full[:{cut}] + (1,) * {region.k}"
    # moved views (a residual permuted into the product's layout): read in place where their strides allow
    w += [f"    {lf.readable(lf.name, 'rows_full' if lf in more else 'full')}" for lf in leaves if lf.strided]
    w += [f"    out = torch.empty({shape}, device=a.device, dtype={odt})"]
    if split_k:
        # a split's K span at least (whole BLOCK_Ks): worth the second launch's few microseconds
        consts += [f"{P}_SPLIT_K_CHUNK = 1024  # a split program's K span at least",
                   f"{P}_SPLIT_PER_SM = 2  # a split product's programs an SM"]
        w += [f"    block_m, block_n = {P}_BLOCK_M, {P}_BLOCK_N",
              # tiles too few to fill the GPU (a small M x N): smaller ones (32 at least); where those still
              # leave half the SMs idle, K spans too, their partial products summed by a second pass
              "    while max(block_m, block_n) > 32 and \\",
              "            _cdiv(M, block_m) * _cdiv(N, block_n) * BATCH < _sm_count(a.device):",
              "        if block_m >= block_n:",
              "            block_m //= 2",
              "        else:",
              "            block_n //= 2",
              "    tiles = _cdiv(M, block_m) * _cdiv(N, block_n) * BATCH",
              "    splits, k_split = 1, K",
              "    if K and 2 * tiles <= _sm_count(a.device):",
              f"        chunk = _cdiv({P}_SPLIT_K_CHUNK, {P}_BLOCK_K) * {P}_BLOCK_K",
              f"        splits, k_split = _row_splits(tiles, K, chunk, {P}_SPLIT_PER_SM, a.device)"]
    elif not grouped:  # one tile spans a row; rows in fewer tiles than SMs take smaller tiles (tl.dot's 16 at least)
        w += [f"    block_n = max({DOT_MIN}, _pow2(N))",
              f"    if block_n > {ROW_TILE_MAX_N}:",
              "        raise ValueError(f'a row epilogue over {N} columns does not fit one tile '",
              f"                         '({ROW_TILE_MAX_N} at most)')"]
    else:  # a tile spans whole groups: the product's own tile width, or one group where that is wider
        w += ["    per = N // groups",
              f"    if N % groups or per & (per - 1) or per > {ROW_TILE_MAX_N}:",
              f"        raise ValueError(f'{{N}} columns are not {{groups}} groups of a power of 2 (at most "
              f"{ROW_TILE_MAX_N})')",
              f"    block_n = max({DOT_MIN}, per, min(_pow2(N), {P}_BLOCK_N))"]
    if region.rows is not None:
        w += [f"    block_m = min({P}_BLOCK_M, max({DOT_MIN}, {P}_ROW_TILE // block_n))",
              f"    while block_m > {DOT_MIN} and _cdiv(M, block_m) * _cdiv(N, block_n) * BATCH \\",
              "            < _sm_count(a.device):",
              "        block_m //= 2"]
    args = ", ".join(["a", "b"] + [lf.wrapper_args(lf.name, "rows_full" if lf in more else "full") for lf in leaves]
                     + ["out", "M", "N", "K", "*strides"] + ["ws", "k_split"] * split_k)

    def launch(grid: str, pass_: str) -> list[str]:
        return [f"    {kname}[{grid}]({args},",
                f"        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K={P}_BLOCK_K, GROUP_M={P}_GROUP_M,"
                + " GROUP_N=per," * grouped + f" PASS={pass_}," * split_k,
                # fp32 stays fp32: IEEE, or (the TF32X3 switch) three TF32 products that keep fp32's accuracy
                f"        PRECISION={precision} if a.dtype == torch.float32 else \"tf32\",",
                f"        num_warps={P}_NUM_WARPS, num_stages={P}_NUM_STAGES)"]
    w += ["    grid = (_cdiv(M, block_m) * _cdiv(N, block_n), BATCH)"]
    if split_k:
        w += ["    ws = out  # unread unless split",
              "    if splits > 1:  # the partial products, fp32",
              "        ws = torch.empty((splits, BATCH, M, N), device=a.device, dtype=torch.float32)"]
        w += ["    " + line for line in launch("grid + (splits,)", "1")]
        w += launch("grid", "2 if splits > 1 else 0")
    else:
        w += launch("grid", "0")
    w += ["    return out"]
    source = product_source(consts, kname, params, body, w)
    if region.rows is not None:  # the NaN-keeping max / min and prod a row epilogue may call
        source = reduce_helpers(after) + "\n\n\n" + source
    gexpr = [region.rows.mm["groups"]] if grouped else []
    return RegionCode(source=source, wrapper=wname, args=[a_v, b_v] + epi_leaves + row_leaves + gexpr)
