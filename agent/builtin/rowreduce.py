"""Row reductions over trailing dims (softmax, norms, sum/mean/max/min) with fused prologue and
epilogue. Rows that fit in registers are done in one pass, several rows per program; long rows
loop over column chunks, one pass per reduction, recomputing the cheap elementwise work."""

from __future__ import annotations

import torch

from .codegen import Leaf, RegionCode, emit_ew, leaf_groups, padded
from .elementwise import out_dtype
from .graph import Region, Val

_NEUTRAL = {"sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')"}
_TL = {"sum": "tl.sum", "mean": "tl.sum", "max": "tl.max", "min": "tl.min"}


def _load(lf: Leaf) -> str:
    addr, uses = lf.address("rm", "rn")
    cast = "" if lf.val.dtype == torch.bool else ".to(tl.float32)"
    if not lf.groups:
        return f"tl.load({lf.name}_ptr){cast}"
    mask = {frozenset({"row"}): "rmask", frozenset({"col"}): "cmask"}.get(frozenset(uses), "mask")
    return f"tl.load({lf.name}_ptr + {addr}, mask={mask}, other=0){cast}"


class _Emitter:
    def __init__(self, region: Region, leaves: list[Leaf]):
        self.region = region
        self.leaf_of = {id(lf.val): lf for lf in leaves}
        self.members = {id(n) for n in region.nodes}

    def values(self, targets: list[Val], env: dict[int, str], lines: list[str], indent: str, single: bool) -> None:
        """Emit, in topological order, every member or leaf the targets need and env lacks."""
        need: set[int] = set()

        def visit(v):
            if id(v) in env or id(v) in need:
                return
            need.add(id(v))
            if id(v) in self.members and not (v.kind == "red" and not single):
                for a in v.args:
                    if isinstance(a, Val):
                        visit(a)

        for t in targets:
            visit(t)
        for lf_id, lf in self.leaf_of.items():
            if lf_id in need:
                env[lf_id] = f"x_{lf.name}"
                lines.append(f"{indent}x_{lf.name} = {_load(lf)}")
        for n in self.region.nodes:
            if id(n) not in need:
                continue
            if n.kind == "red":
                assert single, "looped reductions are bound before use"
                x = env[id(n.args[0])]
                red = f"{_TL[n.fn]}(tl.where(mask, {x}, {_NEUTRAL[n.fn]}), axis=1)[:, None]"
                lines.append(f"{indent}{n.name} = {red}" + (" / N" if n.fn == "mean" else ""))
            else:
                lines.append(f"{indent}{n.name} = {emit_ew(n, env)}")
            env[id(n)] = n.name


def emit(region: Region, idx: int) -> RegionCode:
    full, k = tuple(region.full), region.k
    rank, split = len(full), len(full) - region.k
    leaves_v = region.leaves()
    leaves = [Leaf(v, f"in{i}", leaf_groups(v, full, split), split, rank, v.squeezed)
              for i, v in enumerate(leaves_v)]
    root = region.root
    proot = padded(root, rank)
    row_out = root.squeezed or (all(proot[d] == 1 for d in range(split, rank)) and full[split:] != (1,) * k)
    out_addr = "rm" if row_out else "rm * N + rn"
    out_mask = "rmask" if row_out else "mask"
    P = f"ROW{idx}"
    params = ", ".join([p for lf in leaves for p in lf.params()] + ["out_ptr", "M", "N",
                                                                      "BLOCK_M: tl.constexpr",
                                                                      "BLOCK_N: tl.constexpr"])
    em = _Emitter(region, leaves)
    # single pass: the whole row in registers
    one = ["pid = tl.program_id(0)", "rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]",
           "rn = tl.arange(0, BLOCK_N)[None, :]", "rmask = rm < M", "cmask = rn < N", "mask = rmask & cmask"]
    env: dict[int, str] = {}
    em.values([root], env, one, "", single=True)
    one.append(f"tl.store(out_ptr + {out_addr}, {root.name}, mask={out_mask})")
    # looped: one pass per reduction, then the output pass
    loop = ["pid = tl.program_id(0)", "rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]", "rmask = rm < M"]
    genv: dict[int, str] = {}
    for n in [n for n in region.nodes if n.kind == "red"]:
        init = "tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)" if n.fn in ("sum", "mean") else (
            f"tl.full([BLOCK_M, BLOCK_N], {_NEUTRAL[n.fn]}, tl.float32)")
        loop += [f"acc_{n.name} = {init}", "for c in range(0, N, BLOCK_N):",
                 "    rn = c + tl.arange(0, BLOCK_N)[None, :]", "    cmask = rn < N", "    mask = rmask & cmask"]
        env = dict(genv)
        em.values([n.args[0]], env, loop, "    ", single=False)
        x = env[id(n.args[0])]
        if n.fn in ("sum", "mean"):
            loop.append(f"    acc_{n.name} += tl.where(mask, {x}, 0.0)")
        else:
            fn = "tl.maximum" if n.fn == "max" else "tl.minimum"
            loop.append(f"    acc_{n.name} = {fn}(acc_{n.name}, tl.where(mask, {x}, {_NEUTRAL[n.fn]}))")
        loop.append(f"{n.name} = {_TL[n.fn]}(acc_{n.name}, axis=1)[:, None]" + (" / N" if n.fn == "mean" else ""))
        genv[id(n)] = n.name
    if row_out:
        env = dict(genv)
        em.values([root], env, loop, "", single=False)
        loop.append(f"tl.store(out_ptr + rm, {root.name}, mask=rmask)")
    else:
        loop += ["for c in range(0, N, BLOCK_N):", "    rn = c + tl.arange(0, BLOCK_N)[None, :]",
                 "    cmask = rn < N", "    mask = rmask & cmask"]
        env = dict(genv)
        em.values([root], env, loop, "    ", single=False)
        loop.append(f"    tl.store(out_ptr + rm * N + rn, {env[id(root)]}, mask=mask)")
    kname, lname, wname = f"_row{idx}_kernel", f"_row{idx}_loop_kernel", f"_row{idx}"
    names = [lf.name for lf in leaves]
    launch = ", ".join([lf.wrapper_args(lf.name, "full") for lf in leaves] + ["out", "M", "N"])
    if root.squeezed:
        out_shape = "full[:SPLIT]"
    elif row_out:
        out_shape = "full[:SPLIT] + (1,) * (len(full) - SPLIT)"
    else:
        out_shape = "full"
    consts = [f"{P}_MAX_SINGLE_PASS = 16384  # longest row done in one pass",
              f"{P}_TILE = 4096  # elements per program in the one-pass kernel",
              f"{P}_ELEMS_PER_WARP = 512", f"{P}_MAX_WARPS = 16",
              f"{P}_LOOP_BLOCK_N = 2048", f"{P}_LOOP_NUM_WARPS = 8"]
    src = "\n".join(consts) + "\n\n\n@triton.jit\n" + f"def {kname}({params}):\n" + "\n".join(
        "    " + x for x in one) + "\n\n\n@triton.jit\n" + f"def {lname}({params}):\n" + "\n".join(
        "    " + x for x in loop)
    wrapper = [f"def {wname}({', '.join(names)}):"]
    wrapper += [f"    {n} = {n}.contiguous()" for n in names]
    wrapper += [f"    full = _full_shape([{', '.join(names)}], {[lf.squeezed for lf in leaves]})",
                f"    SPLIT = len(full) - {k}",
                "    M, N = math.prod(full[:SPLIT]), math.prod(full[SPLIT:])",
                f"    out = torch.empty({out_shape}, device=in0.device, dtype={out_dtype(root, leaves_v)})",
                f"    if N <= {P}_MAX_SINGLE_PASS:",
                "        BLOCK_N = triton.next_power_of_2(N)",
                f"        BLOCK_M = min(max(1, {P}_TILE // BLOCK_N), triton.next_power_of_2(M))",
                f"        warps = min({P}_MAX_WARPS, max(1, BLOCK_M * BLOCK_N // {P}_ELEMS_PER_WARP))",
                f"        {kname}[(triton.cdiv(M, BLOCK_M),)]({launch}, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,",
                "                   num_warps=warps)",
                "    else:",
                f"        {lname}[(M,)]({launch}, BLOCK_M=1, BLOCK_N={P}_LOOP_BLOCK_N,",
                f"                   num_warps={P}_LOOP_NUM_WARPS)",
                "    return out"]
    return RegionCode(source=src + "\n\n\n" + "\n".join(wrapper), wrapper=wname, args=leaves_v)
