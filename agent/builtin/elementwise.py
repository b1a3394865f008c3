"""Fused elementwise chains: one flat 1D kernel per region, broadcasts by index arithmetic."""

from __future__ import annotations

from dataclasses import replace

import torch

from . import concat
from .codegen import Leaf, RegionCode, emit_ew, leaf_groups, read_leaves
from .ir import Val
from .partition import Region


def load_line(leaf: Leaf, index: str, mask: str, var: str, row: str = "") -> str:
    """var loaded from the leaf at the flat `index` (or, a leaf split at its rows, at (row, index): `row`
    a program's one row, so a leaf only it addresses is one value, loaded unmasked)."""
    addr, uses = leaf.address(row, index)
    cast = "" if leaf.val.dtype == torch.bool else ".to(tl.float32)"
    if not leaf.groups:
        return f"{var} = tl.load({leaf.name}_ptr){cast}"
    if uses == {"row"}:
        return f"{var} = tl.load({leaf.name}_ptr + {addr}){cast}"
    return f"{var} = tl.load({leaf.name}_ptr + {addr}, mask={mask}, other=0){cast}"


def fused_lines(leaves: list[Leaf], nodes: list[Val], env: dict[int, str], index: str, mask: str,
                values: list[Val] | None = None, row: str = "") -> list[str]:
    """Lines loading each leaf at the flat `index` (masked by `mask`; `row`: the row index of leaves split
    at their rows) and computing `nodes` from them, in order; env maps each value to its variable
    (entries already there, a pool's result say, are kept). `values`: the graph's values the leaves
    load, where a leaf holds a re-laid-out copy of its own."""
    lines = []
    for lf, v in zip(leaves, values or [lf.val for lf in leaves]):
        env[id(v)] = f"x_{lf.name}"
        lines.append(load_line(lf, index, mask, f"x_{lf.name}", row))
    for n in nodes:
        env[id(n)] = n.name
        lines.append(f"{n.name} = {emit_ew(n, env)}")
    return lines


def emit(region: Region, idx: int, ours: set[int] | frozenset = frozenset()) -> RegionCode:
    """`ours`: the ids of convolutions a Triton kernel of this candidate computes (NCHW, never NHWC)."""
    found = concat.cats(region.nodes)
    if found:
        return _emit_cat(region, idx, found)
    leaves_v = region.leaves()
    full = tuple(region.root.shape)
    P = f"EW{idx}"
    # One tile of BLOCK elements; the kernel runs one tile per program, or (PERSISTENT, a tuning
    # choice) a grid of a few programs per SM that stride over all the tiles.
    kernel, launch = _kernel(region, full, [v.shape for v in leaves_v], f"_ew{idx}")
    kernel = _with_constants(P, kernel)
    names = [f"in{i}" for i in range(len(leaves_v))]
    wrapper = [f"def _ew{idx}({', '.join(names)}):"]
    # A convolution's output under CHANNELS_LAST: the kernel runs in that memory order (NHWC), as the
    # same flat loop over permuted views, instead of copying it to NCHW first.
    if len(full) == 4 and any(v.mm.get("conv2d") and id(v) not in ours for v in leaves_v):
        perm = (0, 2, 3, 1)
        shapes = [tuple(((1,) * (4 - len(v.shape)) + tuple(v.shape))[d] for d in perm) for v in leaves_v]
        text, nhwc_launch = _kernel(region, tuple(full[d] for d in perm), shapes, f"_ew{idx}_nhwc")
        kernel += "\n\n\n" + text
        wrapper += [f"    if _nhwc([{', '.join(names)}]):",
                    f"        {', '.join(names)} = {', '.join(f'_as_nhwc({n})' for n in names)}",
                    *["        " + line for line in _launch_lines(nhwc_launch, names, region, leaves_v, P)],
                    "        return out.permute(0, 3, 1, 2)"]
    if any(_in_place(v) for v in leaves_v):
        wrapper.append(f"    full = _full_shape([{', '.join(names)}], {(False,) * len(names)})")
    wrapper += [f"    {n} = {n}.contiguous()" if not _in_place(v) else
                f"    {n} = _readable({n}, full, 0, {tuple(leaf_groups(v, full, 0, squeezed=False))}, False)"
                for n, v in zip(names, leaves_v)]
    wrapper += ["    " + line for line in _launch_lines(launch, names, region, leaves_v, P)]
    wrapper.append("    return out")
    return RegionCode(source=kernel + "\n\n\n" + "\n".join(wrapper), wrapper=f"_ew{idx}", args=leaves_v)


def _in_place(v: Val) -> bool:
    """Whether the flat kernel reads leaf v through its strides (where they allow): a view apart in memory at
    some dims whose last dim is dense (a chunk or slice of an inner dim) or takes every other element.
    Anything else is made contiguous first: a moved layout read flat in place would load one element per
    memory sector."""
    return "barrier" in v.mm and bool(v.mm.get("dense_last") or v.mm.get("stepped"))


def _kernel(region: Region, full: tuple, shapes: list[tuple], prefix: str) -> tuple[str, tuple[str, str]]:
    """One flat kernel over `full`, the region's leaves broadcast into it from `shapes` (theirs, or a
    permuted layout's): (source, (kernel name, launch args))."""
    rank = len(full)
    leaves_v = region.leaves()
    laid_out = [replace(v, shape=shape) for v, shape in zip(leaves_v, shapes)]
    leaves = [Leaf(v, f"in{i}", leaf_groups(v, full, 0, squeezed=False), 0, rank, strided=_in_place(v))
              for i, v in enumerate(laid_out)]
    body = ["mask = offs < n_elements"] + fused_lines(leaves, region.nodes, {}, "offs", "mask", leaves_v)
    body.append(f"tl.store(out_ptr + offs, {region.root.name}, mask=mask)")
    params = [p for lf in leaves for p in lf.params()] + ["out_ptr", "n_elements"]
    return _flat_kernel(prefix, params, body), \
        (f"{prefix}_kernel", ", ".join([lf.wrapper_args(lf.name, "full") for lf in leaves] + ["out", "n"]))


def _flat_kernel(prefix: str, params: list[str], body: list[str]) -> str:
    """The kernel text: `body` over one tile of flat offsets `offs`, a tile per program or (PERSISTENT)
    a grid of a few programs per SM striding over them."""
    kname, tname = f"{prefix}_kernel", f"{prefix}_tile"
    return "\n".join([
        "@triton.jit", f"def {tname}({', '.join(params)}, offs):"] + ["    " + b for b in body] + [
        "", "", "@triton.jit",
        f"def {kname}({', '.join(params)}, BLOCK: tl.constexpr, PERSISTENT: tl.constexpr):",
        "    if PERSISTENT:",
        "        for start in range(tl.program_id(0) * BLOCK, n_elements, tl.num_programs(0) * BLOCK):",
        f"            {tname}({', '.join(_names(params))}, start + tl.arange(0, BLOCK))",
        "    else:",
        f"        {tname}({', '.join(_names(params))}, tl.program_id(0) * BLOCK + tl.arange(0, BLOCK))"])


def _emit_cat(region: Region, idx: int, found: list[Val]) -> RegionCode:
    """A flat kernel whose region reads concatenations (concat.py): each leaf loaded at the kernel's index
    (a piece's at the cat's coordinate less its offset, codegen.read_leaves) under its system's mask,
    each cat a select of its pieces."""
    full = tuple(region.root.shape)
    P, prefix = f"EW{idx}", f"_ew{idx}"
    reads = concat.leaf_reads(region.nodes)
    leaves = read_leaves(reads, found, full, 0, _in_place, squeezed=False)
    within = concat.systems(region.nodes)
    var = {(id(v), concat.key(s)): f"x_{lf.name}" for (v, s), lf in zip(reads, leaves)}
    body = ["mask = offs < n_elements"]
    body += [x for j, c in enumerate(found) for x in concat.index_lines(j, c, "offs", "mask")]
    body += [load_line(lf, "offs", "mask" if s is None else f"c{found.index(s[0])}_m{s[1]}", f"x_{lf.name}")
             for (_, s), lf in zip(reads, leaves)]
    env: dict[int, str] = {}

    def read(n: Val, i: int) -> str:  # n's arg i: a leaf's load in n's system (a cat's piece i: in piece i's)
        a = n.args[i]
        return var.get((id(a), concat.key((n, i) if n.kind == "cat" else within.get(id(n)))), env.get(id(a), ""))

    for n in region.nodes:
        if n.kind == "cat":
            expr = concat.select_expr(n, found.index(n), [read(n, i) for i in range(len(n.args))])
        else:
            expr = emit_ew(n, {**env, **{id(a): read(n, i) for i, a in enumerate(n.args) if isinstance(a, Val)}})
        env[id(n)] = n.name
        body.append(f"{n.name} = {expr}")
    body.append(f"tl.store(out_ptr + offs, {region.root.name}, mask=mask)")
    params = [p for lf in leaves for p in lf.params()] + concat.params(found) + ["out_ptr", "n_elements"]
    kernel = _with_constants(P, _flat_kernel(prefix, params, body))
    names = [lf.name for lf in leaves]
    wrapper = [f"def {prefix}({', '.join(names)}):", "    " + concat.wrapper_line(reads, found)]
    wrapper += [f"    {lf.name} = " + (f"_readable({lf.name}, full, 0, {tuple(lf.groups)}, False)"
                                           if lf.strided else f"{lf.name}.contiguous()") for lf in leaves]
    args = [lf.wrapper_args(lf.name, "full") for lf in leaves] + concat.launch_args(found) + ["out", "n"]
    leaves_v = [v for v, _ in reads]
    launch = _launch_lines((f"{prefix}_kernel", ", ".join(args)), names, region, leaves_v, P)
    wrapper += ["    " + line for line in launch[1:]]  # the shape: from _cat_plan, above
    wrapper.append("    return out")
    source = kernel + "\n\n\n" + concat.CAT_PLAN + "\n\n\n" + "\n".join(wrapper)
    return RegionCode(source=source, wrapper=prefix, args=leaves_v)


def _with_constants(P: str, kernel: str) -> str:
    """The kernel's source after its tuning constants (mutate.py's switches)."""
    return "\n".join([f"{P}_BLOCK = 2048", f"{P}_NUM_WARPS = 8", f"{P}_PERSISTENT = 0", "", "", kernel])


def _launch_lines(launch: tuple[str, str], names: list[str], region: Region, leaves_v: list[Val], P: str) -> list[str]:
    kname, args = launch
    return [f"full = _full_shape([{', '.join(names)}], {(False,) * len(names)})",
            f"out = torch.empty(full, device=in0.device, dtype={out_dtype(region.root, leaves_v)})",
            "n = out.numel()",
            f"tiles = _cdiv(n, {P}_BLOCK)",
            f"grid = _persistent_grid(tiles, out.device) if {P}_PERSISTENT else (tiles,)",
            f"{kname}[grid]({args}, BLOCK={P}_BLOCK, PERSISTENT={P}_PERSISTENT, num_warps={P}_NUM_WARPS)"]


def _names(params: list[str]) -> list[str]:
    return [p.split(":")[0].strip() for p in params]


def out_dtype(root: Val, leaves: list[Val]) -> str:
    """The reference's dtype; follows the first leaf at run time when they agree (fp32 vs bf16 runs)."""
    for i, v in enumerate(leaves):
        if v.dtype.is_floating_point and v.kind != "scalar":
            return f"in{i}.dtype" if v.dtype == root.dtype else str(root.dtype)
    return str(root.dtype)


def leaves_read(nodes: list[Val], first: Val, names: dict) -> list[Val]:
    """The leaves (keys of `names`) that `nodes` read, and `first` when it is one, in the leaves' order: a
    prologue's or an epilogue's share of its region's leaves."""
    found: list[Val] = []
    for v in [first] + [a for n in nodes for a in n.args if isinstance(a, Val)]:
        if id(v) in names and v not in found:
            found.append(v)
    return sorted(found, key=lambda v: int(names[id(v)][2:]))
