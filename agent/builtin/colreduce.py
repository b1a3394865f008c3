"""Reductions over a run of middle dims (x.mean(dim=1) on (B, S, H)): the input is seen as
(pre, R, post) and each program reduces a (R, BLOCK_N) column strip of one `pre` index, loading
BLOCK_R x BLOCK_N tiles that are contiguous along `post` (coalesced), fp32 accumulation. When the
strips are too few to fill the GPU (x.sum(0) of a tall matrix), each strip's R rows are split over
several programs that write partial results, and a second launch combines them.

Elementwise work before the reduction (its prologue, at the input's shape) is computed on each tile as
it is loaded, and work after it (its epilogue, at the output's shape) on the result before the store:
conv -> scale -> min over channels -> tanh is the conv and one kernel, the scaled tensor never written.
Leaves are addressed split at the reduced dims: (pre index, flat index over the rest), so a per-channel
operand's index arithmetic stays in 32 bits."""

from __future__ import annotations

import re

from .codegen import Leaf, RegionCode, divide_mean, leaf_groups
from .elementwise import fused_lines, leaves_read, out_dtype
from .partition import Region
from .rowreduce import reduce_helpers

_NEUTRAL = {"sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')",
            "argmax": "float('-inf')", "argmin": "float('inf')", "prod": "1.0"}


def _steps(v, index_plane: str = "S + k") -> tuple[list[str], list[str], list[str], list[str], str]:
    """(init, step, final, combine, answer): the accumulator's start, one tile x's step, the strip's
    result `res` from it, a split's partial `part` joining `res`, and what the output holds. An arg
    reduction's split k left its indices in partial plane `index_plane`."""
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
            ["nans = acc != acc", "anynan = tl.max(nans.to(tl.int32), axis=0)[None, :] > 0",
             f"best = {red}(tl.where(nans, {neutral}, acc), axis=0)[None, :]",
             "hit = tl.where(anynan, nans, acc == best) & (bi < R)",
             "idx = tl.min(tl.where(hit, bi, R), axis=0)",
             "res = tl.sum(tl.where(anynan, float('nan'), best), axis=0)  # the one value of each column"],
            [f"part_idx = tl.load(part_ptr + {index_plane} * PLANE + p * POST + cn, mask=cn < POST, other=0.0)"
             ".to(tl.int32, bitcast=True)",
             f"take = (part {wins} res) | ((part != part) & (res == res))",
             "res = tl.where(take, part, res)", "idx = tl.where(take, part_idx, idx)"], "idx")


def _block_r(prologue: bool, accumulators: int) -> int:
    """Rows per loop step: a prologue's tiles take registers too, and so does each accumulator past two
    (a (BLOCK_R, 128) fp32 tile is 32 registers a thread at 32 rows and 4 warps)."""
    return 8 if prologue or accumulators > 4 else 32 if accumulators <= 2 else 16


def _lines(lines: list[str], indent: int) -> str:
    return ("\n" + " " * indent).join(lines)


_OWN_NAMES = re.compile(r"\b(acc|x|res|part|bi|new|nans|anynan|best|hit|idx|part_idx|take)\b")


def _named(lines: list[str], tag: str) -> list[str]:
    """A reduction's step lines with its own names (acc0, x0, res0, part0, idx0... for tag "0") where a
    kernel does several; as they are for tag ""."""
    return [_OWN_NAMES.sub(rf"\g<1>{tag}", line) for line in lines] if tag else lines


def emit(region: Region, idx: int) -> RegionCode:
    """One or several reductions over the same dims of inputs of one shape (partition's siblings: amin
    and amax of x, a channel mean and max), each with its own accumulator, in one pass over the tiles."""
    creds = [n for n in region.nodes if n.kind == "cred"]
    if not creds or any(c.fn not in _NEUTRAL for c in creds) \
            or len({(tuple(c.args[0].shape), c.mm["dims"], c.shape) for c in creds}) > 1:
        raise NotImplementedError("column regions hold middle-dim reductions alike")
    v = creds[0]
    x_v = v.args[0]
    d0, d1 = v.mm["dims"]
    keep = v.mm["keepdim"]
    P = f"COL{idx}"
    several = len(creds) > 1
    tags = [str(i) if several else "" for i in range(len(creds))]  # each reduction's names: acc0, x0, res0...
    # a split's partial planes, S for each reduction's values and S more for an arg reduction's indices (their
    # int32 bits), one reduction after another: reduction i's come after first[i] * S planes
    args_of = [c.fn in ("argmax", "argmin") for c in creds]
    first = [sum(1 + a for a in args_of[:i]) for i in range(len(creds))]
    planes = first[-1] + 1 + args_of[-1]  # runs of S planes in all: one per accumulator tile
    before = [n for n in region.nodes if id(n) in region.before]
    after = [n for n in region.nodes if n.kind != "cred" and id(n) not in region.before]
    leaves_v = region.leaves()
    names = {id(a): f"in{i}" for i, a in enumerate(leaves_v)}
    in_full, out_full = tuple(x_v.shape), tuple(v.shape)
    pro = [Leaf(a, f"{names[id(a)]}p", leaf_groups(a, in_full, d0, squeezed=False), d0, len(in_full))
           for a in leaves_read(before + creds, x_v, names)]
    epi = [Leaf(a, f"{names[id(a)]}e", leaf_groups(a, out_full, d0, squeezed=False), d0, len(out_full))
           for a in leaves_read(after, v, names) if a is not v]
    env: dict[int, str] = {}
    if before or several:  # at a tile of input positions; lanes off the tile hold the reduction's neutral value
        # ci: the flat index over the reduced dims and those after them
        prologue = ["ci = rr * POST + rn"] + fused_lines(pro, before, env, "ci", "ok", row="p")
        tile = [f"x{t} = tl.where(ok, {env[id(c.args[0])]}, {_NEUTRAL[c.fn]})" for t, c in zip(tags, creds)]
    else:  # x itself (contiguous), loaded with the neutral value off the tile; its offset written out
        # term by term, which took 56 registers on sm_90 where the leaf's address (p * stride + ci) took 64
        prologue = []
        tile = [f"x = tl.load({pro[0].name}_ptr + p * R * POST + rr * POST + rn, mask=ok, "
                f"other={_NEUTRAL[v.fn]}).to(tl.float32)"]
    env = {id(c): f"reduced{t}" for t, c in zip(tags, creds)}
    epilogue = fused_lines(epi, after, env, "cn", "omask", row="p")  # at the output

    def plane(i: int, j: str, index: bool = False) -> str:  # reduction i's partial j (of its indices)
        terms = [f"{first[i]} * S"] * (first[i] > 0) + ["S"] * index + [j] * (j != "0")
        return terms[0] if len(terms) == 1 else f"({' + '.join(terms)})"

    # each reduction's (init, step, final, combine, [answer]) lines, under its own names where several
    steps = [[_named(lines, t) for lines in (*st[:4], [st[4]])]
             for i, (t, c) in enumerate(zip(tags, creds)) for st in [_steps(c, plane(i, "k", index=True))]]
    init, step, final = ([line for st in steps for line in st[j]] for j in range(3))
    answers = [f"{env[id(c)]} = {st[4][0]}" for c, st in zip(creds, steps)]
    saved = [f"tl.store(part_ptr + {plane(i, 's')} * PLANE + p * POST + cn, res{t}, mask=omask)"
             for i, t in enumerate(tags)]
    loaded = [f"res{t} = tl.load(part_ptr + " + (f"{plane(i, '0')} * PLANE + " if first[i] else "")
              + "p * POST + cn, mask=omask, other=0.0)" for i, t in enumerate(tags)]
    combined = [line for i, (t, st) in enumerate(zip(tags, steps)) for line in
                [f"part{t} = tl.load(part_ptr + {plane(i, 'k')} * PLANE + p * POST + cn, mask=omask, other=0.0)"]
                + st[3]]
    # an arg reduction's indices, stored as the int32 bits they are
    store_index = [f"tl.store(part_ptr + {plane(i, 's', index=True)} * PLANE + p * POST + cn, "
                   f"idx{t}.to(tl.float32, bitcast=True), mask=omask)" for i, t in enumerate(tags) if args_of[i]]
    load_index = [f"idx{t} = tl.load(part_ptr + {plane(i, '0', index=True)} * PLANE + p * POST + cn, "
                  "mask=omask, other=0.0).to(tl.int32, bitcast=True)" for i, t in enumerate(tags) if args_of[i]]
    outs = [("out", region.root)] + [(f"xo{j}", e) for j, e in enumerate(region.extras)]  # extras: siblings'
    store = answers + epilogue + [f"tl.store({o}_ptr + p * POST + cn, {env[id(e)]}, mask=omask)" for o, e in outs]
    kname, wname = f"_col{idx}_kernel", f"_col{idx}"
    params = ", ".join([p for lf in pro + epi for p in lf.params()] + [f"{o}_ptr" for o, _ in outs]
                       + ["part_ptr", "R", "POST", "n_tiles", "S", "SPAN", "PLANE"])
    block_r = _block_r(bool(before), planes)
    kernel = f"""{P}_BLOCK_N = 128  # output columns (contiguous) per program
{P}_BLOCK_R = {block_r}  # reduced rows per loop step (a prologue's tiles take registers too)
{P}_NUM_WARPS = 4
{P}_SPLIT_PER_SM = 2  # column strips fewer than this many per SM have their rows split over programs
{reduce_helpers(creds)}


@triton.jit
def {kname}({params}, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr, STAGE: tl.constexpr):
    # STAGE 0: program (strip, s) reduces rows [s * SPAN, (s + 1) * SPAN) of its column strip, into out
    # when S == 1, else into part[s] (PLANE = pre * POST values each); STAGE 1: program (strip) combines them
    pid = tl.program_id(0)
    if STAGE == 0:
        s = pid % S
        strip = pid // S
    else:
        strip = pid
    p = (strip // n_tiles).to(tl.int64)  # the index over the dims before the reduced ones
    cn = (strip % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    omask = cn < POST
    if STAGE == 0:
        rn = cn[None, :]
        cmask = rn < POST
        {_lines(init, 8)}
        for r0 in range(s * SPAN, s * SPAN + SPAN, BLOCK_R):
            rr = r0 + tl.arange(0, BLOCK_R)[:, None]
            ok = (rr < R) & cmask
            {_lines(prologue + tile + step, 12)}
        {_lines(final, 8)}
        if S == 1:
            {_lines(store, 12)}
        else:
            {_lines(saved + store_index, 12)}
    else:
        {_lines(loaded + load_index, 8)}
        for k in range(1, S):
            {_lines(combined, 12)}
        {_lines(store, 8)}"""
    args = [f"in{i}" for i in range(len(leaves_v))]
    pro_names = [names[id(lf.val)] for lf in pro]
    launch = ", ".join([lf.wrapper_args(names[id(lf.val)], "in_full") for lf in pro]
                       + [lf.wrapper_args(names[id(lf.val)], "out_full") for lf in epi]
                       + [o for o, _ in outs] + ["part", "R", "POST", "n_tiles", "S", "SPAN", "pre * POST"])
    kept = f" + (1,) * {d1 - d0}" if keep else ""
    allocs = [f"{o} = torch.empty(out_full, device={pro_names[0]}.device, dtype={out_dtype(e, leaves_v)})"
              for o, e in outs]
    wrapper = f"""def {wname}({', '.join(args)}):
    {_lines([f"{a} = {a}.contiguous()" for a in args], 4)}
    in_full = _full_shape([{', '.join(pro_names)}], {(False,) * len(pro)})
    pre, R, POST = math.prod(in_full[:{d0}]), math.prod(in_full[{d0}:{d1}]), math.prod(in_full[{d1}:])
    out_full = in_full[:{d0}]{kept} + in_full[{d1}:]
    {_lines(allocs, 4)}
    BLOCK_N = min({P}_BLOCK_N, _pow2(POST))
    n_tiles = _cdiv(POST, BLOCK_N)
    S, SPAN = _row_splits(pre * n_tiles, R, {P}_BLOCK_R, {P}_SPLIT_PER_SM, {pro_names[0]}.device)
    part = torch.empty(({planes} * S, pre * POST) if S > 1 else (1,), device={pro_names[0]}.device,
                       dtype=torch.float32)
    {kname}[(pre * n_tiles * S,)]({launch}, BLOCK_R={P}_BLOCK_R,
               BLOCK_N=BLOCK_N, STAGE=0, num_warps={P}_NUM_WARPS)
    if S > 1:
        {kname}[(pre * n_tiles,)]({launch}, BLOCK_R={P}_BLOCK_R,
                   BLOCK_N=BLOCK_N, STAGE=1, num_warps={P}_NUM_WARPS)
    return {', '.join(o for o, _ in outs)}"""
    return RegionCode(source=kernel + "\n\n\n" + wrapper, wrapper=wname, args=leaves_v, extras=list(region.extras))
