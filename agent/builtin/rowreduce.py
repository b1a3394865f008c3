"""Row reductions over trailing dims (softmax, norms, sum/mean/max/min) with fused prologue and
epilogue. Rows that fit in registers are done in one pass, several rows per program. Long rows loop
over column chunks, one pass per reduction, recomputing the cheap elementwise work; a mean and the
variance around it (norms), or a max and the sum of exponentials below it (softmax), share one pass.
Long rows too few to fill the GPU are split: each row's columns spread over several programs, a
launch per reduction pass writing partial results that the next launch combines."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import concat
from .codegen import REDUCE_HELPERS, Leaf, RegionCode, divide_mean, emit_ew, padded, read_leaves
from .elementwise import out_dtype
from .ir import Val
from .partition import Region

_NEUTRAL = {"sum": "0.0", "mean": "0.0", "max": "float('-inf')", "min": "float('inf')", "prod": "1.0"}
_TL = {"sum": "tl.sum", "mean": "tl.sum", "max": "_amax", "min": "_amin", "prod": "_prod"}  # NaN-keeping
_COMBINE = {"max": "_max_combine", "min": "_min_combine", "prod": "_mul_combine"}
# argmax / argmin: the first index of the row's extreme, or of its first NaN (PyTorch's answers); per
# reduction: (the value no element loses to, the reduction of values, the comparison a later element wins by)
_ARG = {"argmax": ("float('-inf')", "tl.max", ">"), "argmin": ("float('inf')", "tl.min", "<")}


def _load(lf: Leaf, within: str = "") -> str:
    """lf's load at (rm, rn); `within`: a mask it must hold too (a cat's piece's range)."""
    addr, uses = lf.address("rm", "rn")
    cast = "" if lf.val.dtype == torch.bool else ".to(tl.float32)"
    if not lf.groups:
        return f"tl.load({lf.name}_ptr){cast}"
    mask = {frozenset({"row"}): "rmask", frozenset({"col"}): "cmask"}.get(frozenset(uses), "mask")
    return f"tl.load({lf.name}_ptr + {addr}, mask={mask}{' & ' + within if within else ''}, other=0){cast}"


@dataclass
class _Pass:
    """The reductions one pass over a row computes: one reduction, or a pair that shares its input:
    kind "welford": first = mean(e), second = sum or mean of (e - first)²;
    kind "softmax": first = max(e), second = sum(exp(e - first));
    kind "arg": first = argmax(e) or argmin(e), its partials the extreme value and its index."""
    kind: str            # one | welford | softmax | arg
    first: Val
    second: Val | None = None

    @property
    def slots(self) -> int:  # partial results per (row, split) in the split path
        return {"one": 1, "welford": 3, "softmax": 2, "arg": 2}[self.kind]


def _squared(v: Val) -> Val | None:
    if v.kind == "ew" and v.fn == "square":
        return v.args[0]
    if v.kind == "ew" and v.fn == "mul" and v.args[0] is v.args[1]:
        return v.args[0]
    return None


def _passes(region: Region) -> list[_Pass]:
    """The region's reductions in order, each pair merged into one pass."""
    members = {id(n) for n in region.nodes}
    reds = [n for n in region.nodes if n.kind == "red"]
    paired: dict[int, _Pass] = {}
    for second in reds:
        arg = second.args[0]
        if id(arg) not in members or arg.kind != "ew":
            continue
        kind, inner, want = "welford", _squared(arg), "mean"
        if arg.fn == "exp" and second.fn == "sum":
            kind, inner, want = "softmax", arg.args[0], "max"
        if inner is None or second.fn not in ("sum", "mean") or id(inner) not in members \
                or inner.kind != "ew" or inner.fn != "sub":
            continue
        e, first = inner.args
        if isinstance(first, Val) and id(first) in members and first.kind == "red" and first.fn == want \
                and first.args[0] is e and id(first) not in paired and not first.mm.get("correction"):
            paired[id(first)] = _Pass(kind, first, second)
    seconds = {id(p.second) for p in paired.values()}
    return [paired.get(id(n), _Pass("arg" if n.fn in _ARG else "one", n)) for n in reds if id(n) not in seconds]


class _Emitter:
    def __init__(self, region: Region, leaves: list[Leaf], reads: list | None = None, found: list[Val] = ()):
        """`reads`: each leaf's (value, system) where the region reads concatenations (`found`, concat.py)."""
        self.region = region
        systems = [s for _, s in reads] if reads else [None] * len(leaves)
        # each leaf by (value, system); a leaf of the region's own system is env's id(value), as it was
        self.leaf_at = {(id(lf.val), concat.key(s)): (lf, s) for lf, s in zip(leaves, systems)}
        self.leaf_of = {id(lf.val): lf for lf, s in zip(leaves, systems) if s is None}
        self.members = {id(n) for n in region.nodes}
        self.found = list(found)
        self.within = concat.systems(region.nodes) if found else {}

    def _system(self, n: Val, i: int):
        """The system n reads its arg i in."""
        return (n, i) if n.kind == "cat" else self.within.get(id(n))

    def _env_key(self, v: Val, s):
        return id(v) if s is None else (id(v), concat.key(s))

    def _cat_lines(self, c: Val, env: dict, lines: list[str], indent: str) -> None:
        """Cat c's coordinate and its pieces' ranges, once per scope: over the rows where its dim is one of
        theirs, over the columns otherwise."""
        j = self.found.index(c)
        if ("cat", j) not in env:
            env[("cat", j)] = True
            rank = len(self.region.full)
            rows = concat.over_rows(c, rank, rank - self.region.k)
            lines += [indent + x for x in concat.index_lines(j, c, "rm" if rows else "rn", None)]

    def values(self, targets: list[Val], env: dict[int, str], lines: list[str], indent: str, single: bool) -> None:
        """Emit, in topological order, every member or leaf the targets need and env lacks."""
        need: set = set()

        def visit(v, system=None):
            key = self._env_key(v, system) if id(v) not in self.members else id(v)
            if key in env or key in need:
                return
            need.add(key)
            if id(v) in self.members and not (v.kind == "red" and not single) and v.fn != "pick":
                for i, a in enumerate(v.args):
                    if isinstance(a, Val):
                        visit(a, self._system(v, i))

        for t in targets:
            visit(t)
        for c in self.found:
            if id(c) in need or any(s is not None and s[0] is c and self._env_key(lf.val, s) in need
                                    for lf, s in self.leaf_at.values()):
                self._cat_lines(c, env, lines, indent)
        for lf, s in self.leaf_at.values():
            key = self._env_key(lf.val, s)
            if key in need:
                env[key] = f"x_{lf.name}"
                # a piece's leaf: at its coordinates (read_leaves), masked to its range too
                within = "" if s is None else f"c{self.found.index(s[0])}_m{s[1]}"
                lines.append(f"{indent}x_{lf.name} = {_load(lf, within)}")
        for n in self.region.nodes:
            if id(n) not in need:
                continue
            if n.fn == "pick":
                lines += [indent + line for line in self.pick(n, env)]
            elif n.kind == "red":
                assert single, "looped reductions are bound before use"
                x = env[id(n.args[0])]
                if n.fn in _ARG:
                    lines += [indent + line for line in _arg_row(n, x)]
                    env[id(n)] = n.name
                    continue
                red = f"{_TL[n.fn]}(tl.where(mask, {x}, {_NEUTRAL[n.fn]}), axis=1)[:, None]"
                lines.append(f"{indent}{n.name} = {red}" + divide_mean(n, "N"))
            elif n.kind == "cat":
                names = [env[self._env_key(a, (n, i)) if id(a) not in self.members else id(a)]
                         for i, a in enumerate(n.args)]
                lines.append(f"{indent}{n.name} = {concat.select_expr(n, self.found.index(n), names)}")
            elif self.within.get(id(n)) is not None:  # in a piece: its leaves' loads there
                at = {id(a): env[self._env_key(a, self.within[id(n)])] for a in n.args
                      if isinstance(a, Val) and id(a) not in self.members}
                lines.append(f"{indent}{n.name} = {emit_ew(n, {**env, **at})}")
            else:
                lines.append(f"{indent}{n.name} = {emit_ew(n, env)}")
            env[id(n)] = n.name

    def pick(self, n: Val, env: dict[int, str]) -> list[str]:
        """Lines for `pick`: the row's element at the column its index leaf names (0 where that column is
        out of range, an ignored target). A leaf is loaded there; a value the region computes is computed
        there again from its leaves, so it never goes through memory."""
        src, idx = n.args
        col = self.leaf_of[id(idx)]
        c, ok = f"{n.name}_col", f"{n.name}_ok"
        caddr, _ = col.address("rm", "rn")
        lines = [f"{c} = tl.load({col.name}_ptr + {caddr}, mask=rmask, other=0).to(tl.int64)",
                 f"{ok} = rmask & ({c} >= 0) & ({c} < N)"]
        at: dict[int, str] = {}  # a value's name at the picked column

        def visit(v) -> None:
            if not isinstance(v, Val) or id(v) in at:
                return
            if id(v) in self.leaf_of:
                lf = self.leaf_of[id(v)]
                addr, uses = lf.address("rm", c)
                cast = "" if v.dtype == torch.bool else ".to(tl.float32)"
                load = f"tl.load({lf.name}_ptr + {addr}, mask={ok if 'col' in uses else 'rmask'}, other=0)" \
                    if lf.groups else f"tl.load({lf.name}_ptr)"
                at[id(v)] = f"{n.name}_{lf.name}"
                lines.append(f"{at[id(v)]} = {load}{cast}")
            elif v.kind == "red":  # a row value: the same at every column, if already computed
                if id(v) not in env:
                    raise NotImplementedError("the picked value needs a reduction computed after it")
                at[id(v)] = env[id(v)]
            else:
                for a in v.args:
                    visit(a)
                at[id(v)] = f"{n.name}_{v.name}"
                lines.append(f"{at[id(v)]} = {emit_ew(v, at)}")

        visit(src)
        return lines + [f"{n.name} = tl.where({ok}, {at[id(src)]}, 0.0)"]

    def chunks(self, lo: str, hi: str, indent: str = "") -> list[str]:
        return [f"{indent}for c in range({lo}, {hi}, BLOCK_N):",
                f"{indent}    rn = c + tl.arange(0, BLOCK_N)[None, :]",
                f"{indent}    cmask = rn < N", f"{indent}    mask = rmask & cmask"]

    def partial(self, p: _Pass, genv: dict[int, str], lo: str, hi: str) -> tuple[list[str], list[str]]:
        """Lines reducing the columns [lo, hi) of a pass into per-row partials, and the partials' names:
        one: [the sum (not yet divided) or extreme]; welford: [mean, M2, count]; softmax: [max, sum]."""
        a = p.first.name
        env = dict(genv)
        body: list[str] = []
        src = p.first.args[0]
        self.values([src], env, body, "        ", single=False)
        x = env[id(src)]
        if p.kind == "arg":
            # each lane keeps the first index of its own extreme (a later element must beat it strictly,
            # or be the lane's first, or be a NaN over a number), merged once at the end
            neutral, _, wins = _ARG[p.first.fn]
            body += [f"        l_x = {x}",
                     f"        l_new = mask & ((bi_{a} == N) | (l_x {wins} bv_{a})"
                     f" | ((l_x != l_x) & (bv_{a} == bv_{a})))",
                     f"        bv_{a} = tl.where(l_new, l_x, bv_{a})",
                     f"        bi_{a} = tl.where(l_new, rn, bi_{a})"]
            lines = [f"    bv_{a} = tl.full([BLOCK_M, BLOCK_N], {neutral}, tl.float32)",
                     f"    bi_{a} = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32) + N  # N: no element yet"]
            merge, parts = _merge_arg(p.first.fn, f"bv_{a}", f"bi_{a}", a, None)
            return lines + self.chunks(lo, hi, "    ") + body + merge, parts
        if p.kind == "one":
            n = p.first
            init = "tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)" if n.fn in ("sum", "mean") else (
                f"tl.full([BLOCK_M, BLOCK_N], {_NEUTRAL[n.fn]}, tl.float32)")
            if n.fn in ("sum", "mean"):
                body.append(f"        acc_{a} += tl.where(mask, {x}, 0.0)")
            else:
                body.append(f"        acc_{a} = {_COMBINE[n.fn]}(acc_{a}, tl.where(mask, {x}, {_NEUTRAL[n.fn]}))")
            lines = [f"    acc_{a} = {init}"] + self.chunks(lo, hi, "    ") + body
            lines.append(f"    part_{a} = {_TL[n.fn]}(acc_{a}, axis=1)[:, None]")
            return lines, [f"part_{a}"]
        lanes = "tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)"
        if p.kind == "welford":
            # each lane keeps the mean and M2 of its own elements (Welford), merged once at the end:
            # one pass, and no cancellation of a sum of squares against the squared sum. A lane still
            # inside the row has had an element in every chunk so far (rows end inside a chunk, never
            # start there), so its count is the chunk number: one reciprocal per chunk, where a
            # division per element kept an H200's MIO queue full (42% of stalls, group norm's split kernel)
            body += [f"        l_d = tl.where(mask, {x} - lmean_{a}, 0.0)",
                     f"        lmean_{a} += l_d * (1.0 / ((c - {lo}) // BLOCK_N + 1))",
                     f"        lm2_{a} += l_d * tl.where(mask, {x} - lmean_{a}, 0.0)",
                     f"        lcnt_{a} += mask.to(tl.float32)"]
            lines = [f"    lmean_{a} = {lanes}", f"    lm2_{a} = {lanes}", f"    lcnt_{a} = {lanes}"]
            merge, parts = _merge("welford", [f"lmean_{a}", f"lm2_{a}", f"lcnt_{a}"], a)
            return lines + self.chunks(lo, hi, "    ") + body + merge, parts
        # softmax: each lane's running max, and its sum of exponentials rescaled whenever that max grows
        body += [f"        l_x = tl.where(mask, {x}, float('-inf'))",
                 f"        l_max = tl.maximum(lmax_{a}, l_x)",
                 "        l_ref = tl.where(l_max == float('-inf'), 0.0, l_max)",
                 f"        lsum_{a} = lsum_{a} * tl.exp(lmax_{a} - l_ref) + tl.exp(l_x - l_ref)",
                 f"        lmax_{a} = l_max"]
        lines = [f"    lmax_{a} = tl.full([BLOCK_M, BLOCK_N], float('-inf'), tl.float32)", f"    lsum_{a} = {lanes}"]
        merge, parts = _merge("softmax", [f"lmax_{a}", f"lsum_{a}"], a)
        return lines + self.chunks(lo, hi, "    ") + body + merge, parts


def _merge(kind: str, arrays: list[str], a: str) -> tuple[list[str], list[str]]:
    """Lines merging a pair's partials along axis 1 (a program's lanes, or a row's splits) into per-row
    ones, and their names. Empty entries hold count 0 (welford) or max -inf and sum 0 (softmax)."""
    if kind == "welford":
        m, q, n = arrays
        return [f"    cnt_{a} = tl.sum({n}, axis=1)[:, None]",
                f"    mean_{a} = tl.sum({n} * {m}, axis=1)[:, None] / tl.maximum(cnt_{a}, 1.0)",
                f"    dev_{a} = {m} - mean_{a}",
                f"    m2_{a} = tl.sum({q} + {n} * dev_{a} * dev_{a}, axis=1)[:, None]"], [
            f"mean_{a}", f"m2_{a}", f"cnt_{a}"]
    mx, sm = arrays
    return [f"    max_{a} = tl.max({mx}, axis=1)[:, None]",
            f"    ref_{a} = tl.where(max_{a} == float('-inf'), 0.0, max_{a})",
            f"    sum_{a} = tl.sum({sm} * tl.exp({mx} - ref_{a}), axis=1)[:, None]"], [f"max_{a}", f"sum_{a}"]


def _arg_row(n: Val, x: str) -> list[str]:
    """One-pass lines for an argmax / argmin over a row held whole: its columns merged as a looped
    row's lanes are (_merge_arg)."""
    a = n.name
    merge, (_, index) = _merge_arg(n.fn, f"{a}_x", "rn", a, "mask")
    return [f"{a}_x = tl.where(mask, {x}, {_ARG[n.fn][0]})"] + [line.strip() for line in merge] + [f"{a} = {index}"]


def _merge_arg(fn: str, values: str, index: str, a: str, valid: str | None) -> tuple[list[str], list[str]]:
    """Lines merging (value, index) candidates along axis 1 (lanes, or a row's splits) into the row's
    (value, first index): NaN first, then the extreme; entries with index N, or not `valid`, hold none."""
    neutral, red, _ = _ARG[fn]
    held = f"({index} < N)" + (f" & {valid}" if valid else "")
    return [f"    held_{a} = {held}",
            f"    nan_{a} = ({values} != {values}) & held_{a}",
            f"    anynan_{a} = tl.max(nan_{a}.to(tl.int32), axis=1)[:, None] > 0",
            f"    best_{a} = {red}(tl.where(held_{a} & ({values} == {values}), {values}, {neutral}), axis=1)[:, None]",
            f"    hit_{a} = tl.where(anynan_{a}, nan_{a}, ({values} == best_{a}) & held_{a})",
            f"    idx_{a} = tl.min(tl.where(hit_{a}, {index}, N), axis=1)[:, None]",
            f"    val_{a} = tl.where(anynan_{a}, float('nan'), best_{a})"], [f"val_{a}", f"idx_{a}"]


def _bind(p: _Pass, parts: list[str]) -> list[str]:
    """The pass's reduction values (named after their Vals) from its partials over the whole row: a
    sum divided by N where the reduction is a mean (a welford pair's mean is one already)."""
    if p.kind == "one":
        return [f"    {p.first.name} = {parts[0]}" + divide_mean(p.first, "N")]
    if p.kind == "arg":
        return [f"    {p.first.name} = {parts[1]}"]
    return [f"    {p.first.name} = {parts[0]}", f"    {p.second.name} = {parts[1]}" + divide_mean(p.second, "N")]


def _stored(p: _Pass, parts: list[str]) -> list[str]:
    """The partials as the fp32 buffer holds them: an index's int32 bits as they are (exact at any N)."""
    return parts if p.kind != "arg" else [parts[0], f"{parts[1]}.to(tl.float32, bitcast=True)"]


def _combine_split(p: _Pass, slot: int) -> tuple[list[str], list[str]]:
    """Lines reading back the partials of every split of the row and combining them, and the names of
    the combined ones (as `_Emitter.partial` returns them for a whole row)."""
    a = p.first.name

    def load(k: int, other: str) -> str:
        return f"tl.load(part_ptr + ({slot + k} * M + rm) * S + ps, mask=pmask, other={other})"

    if p.kind == "one":
        fn = p.first.fn
        return [f"    part_{a} = {_TL[fn]}({load(0, _NEUTRAL[fn])}, axis=1)[:, None]"], [f"part_{a}"]
    if p.kind == "arg":  # the index's bits were stored in the fp32 buffer as they are
        merge, parts = _merge_arg(p.first.fn, "s_val", "s_idx", a, "pmask")
        loads = [f"    s_val = {load(0, '0.0')}", f"    s_idx = {load(1, '0.0')}.to(tl.int32, bitcast=True)"]
        return loads + merge, parts
    if p.kind == "welford":
        loads = [f"    s_mean = {load(0, '0.0')}", f"    s_m2 = {load(1, '0.0')}", f"    s_n = {load(2, '0.0')}"]
        merge, parts = _merge("welford", ["s_mean", "s_m2", "s_n"], a)
        return loads + merge, parts
    neg_inf = "float('-inf')"
    merge, parts = _merge("softmax", ["s_max", "s_sum"], a)
    return [f"    s_max = {load(0, neg_inf)}", f"    s_sum = {load(1, '0.0')}"] + merge, parts


def one_per_row(root: Val, full: tuple, k: int) -> bool:
    """Whether a row region's output holds one value per row (a reduction's), not one per element."""
    proot, split = padded(root, len(full)), len(full) - k
    return root.squeezed or (all(proot[d] == 1 for d in range(split, len(full))) and tuple(full[split:]) != (1,) * k)


def reduce_helpers(nodes: list[Val]) -> str:
    """The jit helpers a kernel reducing `nodes` calls (codegen.REDUCE_HELPERS), or nothing."""
    return REDUCE_HELPERS if any(n.kind in ("red", "cred") and n.fn in _COMBINE for n in nodes) else ""


def row_epilogue(region: Region, leaves: list[Leaf], env: dict[int, str], at: str = "rm * N + rn",
                 emitter: _Emitter | None = None) -> list[str]:
    """One-pass lines computing a row region's output and storing it, for a kernel that holds whole rows
    in a tile: rm (rows, [BLOCK_M, 1]), rn (columns, [1, BLOCK_N]), rmask, cmask, mask and N defined,
    and env naming the values it computed already (a convolution's output). `at`: where an output of
    the rows' shape goes (a value per row goes to rm)."""
    lines: list[str] = []
    (emitter or _Emitter(region, leaves)).values([region.root] + region.extras, env, lines, "", single=True)
    per_row = one_per_row(region.root, tuple(region.full), region.k)
    store = "rm, {}, mask=rmask" if per_row else at + ", {}, mask=mask"
    return lines + [f"tl.store(out_ptr + {store.format(env[id(region.root)])})"] + _extra_stores(region, env, "rmask")


def _extra_stores(region: Region, env: dict[int, str], mask: str) -> list[str]:
    """Stores of the values the region writes besides its output (partition's extras): one per row each."""
    return [f"tl.store(xo{j}_ptr + rm, {env[id(e)]}, mask={mask})" for j, e in enumerate(region.extras)]


def emit(region: Region, idx: int) -> RegionCode:
    full, k = tuple(region.full), region.k
    rank, split = len(full), len(full) - region.k
    found = concat.cats(region.nodes)
    if found and any(n.fn == "pick" for n in region.nodes):
        raise NotImplementedError("a pick beside a concatenation")
    reads = concat.leaf_reads(region.nodes) if found else [(v, None) for v in region.leaves()]
    leaves_v = [v for v, _ in reads]
    leaves = read_leaves(reads, found, full, split, lambda v: "barrier" in v.mm, squeezed=True)
    root = region.root
    row_out = one_per_row(root, full, k)
    # Rows of a moved layout ((N, H, W, C) over C) whose output is only read moved back: each element is
    # stored where the original order (NCHW) puts it, POST rows apart, so what reads it next needs no copy
    apart = region.moved_back if not row_out else None
    at = "(rm // POST) * (N * POST) + rn * POST + rm % POST" if apart else "rm * N + rn"
    P = f"ROW{idx}"
    extra_out = [f"xo{j}" for j in range(len(region.extras))]
    base = [p for lf in leaves for p in lf.params()] + concat.params(found) + ["out_ptr"] + [
        f"{x}_ptr" for x in extra_out] + ["M", "N"] + ["POST"] * bool(apart)
    blocks = ["BLOCK_M: tl.constexpr", "BLOCK_N: tl.constexpr"]
    params = ", ".join(base + blocks)
    split_params = ", ".join(base + ["part_ptr", "S", "SPAN", "PER_ROW"] + blocks + ["STAGE: tl.constexpr",
                                                                                     "S_BLOCK: tl.constexpr"])
    em = _Emitter(region, leaves, reads, found)
    passes = _passes(region)

    # single pass: the whole row in registers
    one = ["pid = tl.program_id(0)", "rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]",
           "rn = tl.arange(0, BLOCK_N)[None, :]", "rmask = rm < M", "cmask = rn < N", "mask = rmask & cmask"]
    one = ["    " + x for x in one + row_epilogue(region, leaves, {}, at=at, emitter=em)]

    def bound(p: _Pass, genv: dict[int, str]) -> None:
        genv[id(p.first)] = p.first.name
        if p.second is not None:
            genv[id(p.second)] = p.second.name

    def output(genv: dict[int, str], lo: str, hi: str, row_store_mask: str) -> list[str]:
        env = dict(genv)
        lines: list[str] = []
        if region.extras:  # one value per row each: from the bound reductions, before any column loop
            em.values(region.extras, env, lines, "    ", single=False)
            lines += ["    " + x for x in _extra_stores(region, env, row_store_mask)]
        if row_out:
            em.values([root], env, lines, "    ", single=False)
            return lines + [f"    tl.store(out_ptr + rm, {root.name}, mask={row_store_mask})"]
        lines += em.chunks(lo, hi, "    ")
        em.values([root], env, lines, "        ", single=False)
        return lines + [f"        tl.store(out_ptr + {at}, {env[id(root)]}, mask=mask)"]

    # looped: a pass per reduction (or pair), then the output pass; one program per row
    loop = ["    pid = tl.program_id(0)", "    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]",
            "    rmask = rm < M"]
    genv: dict[int, str] = {}
    for p in passes:
        lines, parts = em.partial(p, genv, "0", "N")
        loop += lines + _bind(p, parts)
        bound(p, genv)
    loop += output(genv, "0", "N", "rmask")

    # split: program (row, s) of a launch's PER_ROW a row takes the columns [s * SPAN, (s + 1) * SPAN);
    # launch STAGE i < len(passes) stores pass i's partials (S a row), the last launch writes the output
    spl = ["    pid = tl.program_id(0)",
           "    if STAGE % 2 == 1:  # odd launches walk backwards from where the last one ended, still in L2",
           "        pid = tl.num_programs(0) - 1 - pid",
           "    rm = pid // PER_ROW + tl.arange(0, BLOCK_M)[:, None]", "    s = pid % PER_ROW", "    rmask = rm < M",
           "    ps = tl.arange(0, S_BLOCK)[None, :]", "    pmask = rmask & (ps < S)"]
    slots = [sum(q.slots for q in passes[:i]) for i in range(len(passes))]  # each pass's first slot
    n_slots = sum(q.slots for q in passes)
    genv = {}
    combined: list[str] = []
    for i, p in enumerate(passes):
        lines, parts = em.partial(p, genv, "s * SPAN", "s * SPAN + SPAN")
        lines += [f"    tl.store(part_ptr + ({slots[i] + j} * M + rm) * S + s, {name}, mask=rmask)"
                  for j, name in enumerate(_stored(p, parts))]
        spl.append(f"    {'if' if i == 0 else 'elif'} STAGE == {i}:")
        spl += ["    " + x for x in combined + lines]
        lines, parts = _combine_split(p, slots[i])
        combined += lines + _bind(p, parts)
        bound(p, genv)
    spl.append("    else:")
    spl += ["    " + x for x in combined + output(genv, "s * SPAN", "s * SPAN + SPAN", "rmask & (s == 0)")]

    kname, lname, sname, wname = (f"_row{idx}_kernel", f"_row{idx}_loop_kernel", f"_row{idx}_split_kernel",
                                  f"_row{idx}")
    names = [lf.name for lf in leaves]
    launch = ", ".join([lf.wrapper_args(lf.name, "full") for lf in leaves] + concat.launch_args(found, rank, split)
                       + ["out"] + extra_out + ["M", "N"] + ["POST"] * bool(apart))
    if root.squeezed:
        out_shape = "full[:SPLIT]"
    elif row_out:
        out_shape = "full[:SPLIT] + (1,) * (len(full) - SPLIT)"
    else:
        out_shape = "full"
    consts = [f"{P}_MAX_SINGLE_PASS = 16384  # longest row done in one pass",
              f"{P}_TILE = 4096  # elements per program in the one-pass kernel",
              f"{P}_ELEMS_PER_WARP = 512", f"{P}_MAX_WARPS = 16",
              f"{P}_LOOP_BLOCK_N = 2048", f"{P}_LOOP_NUM_WARPS = 8",
              f"{P}_SPLIT_PER_SM = 2  # long rows fewer than this many per SM are split over several programs",
              f"{P}_OUT_PARTIALS_PER_BLOCK = 8  # a split row's output: a column block a program per 8 partials"]
    kernels = [(kname, params, one), (lname, params, loop), (sname, split_params, spl)]
    consts += ["", "", reduce_helpers(region.nodes)]
    src = "\n".join(consts) + "".join(f"\n\n\n@triton.jit\ndef {n}({ps}):\n" + "\n".join(body)
                                      for n, ps, body in kernels)
    wrapper = [f"def {wname}({', '.join(names)}):",
               f"    full = _full_shape([{', '.join(names)}], {tuple(lf.squeezed for lf in leaves)})"
               if not found else "    " + concat.wrapper_line(reads, found)]
    wrapper += [f"    {lf.readable(lf.name, 'full')}" for lf in leaves]  # moved views: in place
    wrapper += [f"    SPLIT = len(full) - {k}",
                "    M, N = math.prod(full[:SPLIT]), math.prod(full[SPLIT:])",
                f"    out = torch.empty({out_shape}, device=in0.device, dtype={out_dtype(root, leaves_v)})"]
    if apart:  # the original order's tensor instead, handed out as its moved view
        (dims, to), first = apart, apart[0][0]
        wrapper[-1] = f"    out = torch.empty(full[:{first}] + full[SPLIT:] + full[{first}:SPLIT], device=in0.device,"
        wrapper += [f"                      dtype={out_dtype(root, leaves_v)}).movedim({dims}, {to})",
                    f"    POST = math.prod(full[{first}:SPLIT])"]
    for x, e in zip(extra_out, region.extras):
        shape = "full[:SPLIT]" if e.squeezed else "full[:SPLIT] + (1,) * (len(full) - SPLIT)"
        wrapper.append(f"    {x} = torch.empty({shape}, device=in0.device, dtype={out_dtype(e, leaves_v)})")
    wrapper += [f"    if N <= {P}_MAX_SINGLE_PASS:",
                "        BLOCK_N = _pow2(N)",
                f"        BLOCK_M = min(max(1, {P}_TILE // BLOCK_N), _pow2(M))",
                f"        warps = min({P}_MAX_WARPS, max(1, BLOCK_M * BLOCK_N // {P}_ELEMS_PER_WARP))",
                f"        {kname}[(_cdiv(M, BLOCK_M),)]({launch}, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,",
                "                   num_warps=warps)",
                "        return out",
                f"    S, SPAN = _row_splits(M, N, {P}_LOOP_BLOCK_N, {P}_SPLIT_PER_SM, in0.device)",
                "    if S == 1:",
                f"        {lname}[(M,)]({launch}, BLOCK_M=1, BLOCK_N={P}_LOOP_BLOCK_N,",
                f"                   num_warps={P}_LOOP_NUM_WARPS)",
                "        return out",
                f"    part = torch.empty(({n_slots}, M, S), device=in0.device, dtype=torch.float32)",
                # the output launch is a streaming kernel: many short programs (Inductor's pointwise kernel
                # after a split reduction), each combining its row's S partials again, so a program's
                # columns grow with S; a value per row is one program's
                f"    out_span = {P}_LOOP_BLOCK_N * max(1, S // {P}_OUT_PARTIALS_PER_BLOCK)",
                f"    out_per_row = 1 if {row_out} else _cdiv(N, out_span)",
                f"    for stage in range({len(passes) + 1}):",
                f"        span, per_row = (SPAN, S) if stage < {len(passes)} else (out_span, out_per_row)",
                f"        {sname}[(M * per_row,)]({launch}, part, S, span, per_row, STAGE=stage,",
                f"                   S_BLOCK=_pow2(S), BLOCK_M=1, BLOCK_N={P}_LOOP_BLOCK_N,",
                f"                   num_warps={P}_LOOP_NUM_WARPS)",
                "    return out"]
    if extra_out:  # the output, then the values written besides it
        wrapper = [line.replace("return out", "return " + ", ".join(["out"] + extra_out)) for line in wrapper]
    if found:
        src += "\n\n\n" + concat.CAT_PLAN
    return RegionCode(source=src + "\n\n\n" + "\n".join(wrapper), wrapper=wname, args=leaves_v,
                      extras=list(region.extras))
