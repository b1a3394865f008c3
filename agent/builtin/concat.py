"""Concatenation read in place: `torch.cat` (and `torch.stack`) joins the kernel that reads it, as a select.

A kernel reading `cat([a, b], d)` computes, at each output element, a's value where the element's
coordinate along d is in a's range and b's (at that coordinate less a's size) where it is in b's. Each
piece's loads are masked to its range, so every element is read once; the elementwise work that makes
a piece (`-x2` in a rotary embedding's `cat((-x2, x1), -1)`) joins too, computed at the piece's
coordinates. Nothing is copied: where torch writes each piece, reads it back into the concatenation and
reads that again, the kernel reads the inputs once (Inductor lowers a small cat of pointwise values the
same way).

The value is a `cat` Val (its pieces its args, `mm["dim"]` the dim counted from the right). Inside a
region, each value is computed in one coordinate system: the region's own, or piece i of one cat
(`system_of`); a leaf read in two is loaded once in each. Elementwise and row regions take a cat (a row
kernel's along its columns or its rows); one read by anything else (a product, a convolution, a pool, a
torch op) is a kernel of its own that writes it, its pieces' work fused in. The kernels' side of it:
`codegen.read_leaves` (a piece's leaf addressed at the cat's coordinate less its offset),
`elementwise._emit_cat` and `rowreduce._Emitter`.
"""

from __future__ import annotations

from .ir import NotFusable, Val


class ConcatMixin:
    def concatenate(self, tensors, dim) -> Val:
        """torch.cat of floating tensors of one dtype and rank: a `cat` value (one piece: itself)."""
        if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int) \
                or isinstance(dim, bool):
            raise NotFusable
        return self.cat_of([self.a(t) for t in tensors], dim)

    def stack(self, tensors, dim) -> Val:
        """torch.stack: the cat of its tensors each given a dim of size 1 at `dim` (an elementwise chain of
        leaves done again at that shape, so it joins the cat's kernel; anything else viewed there)."""
        if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(dim, int) \
                or isinstance(dim, bool):
            raise NotFusable
        pieces = [self.a(t) for t in tensors]
        if not all(isinstance(p, Val) and not p.squeezed and p.shape == pieces[0].shape for p in pieces):
            raise NotFusable
        rank = len(pieces[0].shape) + 1
        if not -rank <= dim < rank:
            raise NotFusable
        d = dim % rank
        shape = tuple(pieces[0].shape[:d]) + (1,) + tuple(pieces[0].shape[d:])
        cat = self.cat_of([self._unit_redone(p, shape) if p.kind == "ew" and self._leaf_chain(p)
                           else self._unit_mapped(p, tuple(p.shape), shape) for p in pieces], d)
        if cat.kind == "cat" and d == rank - 1:
            cat.mm["stacked"] = pieces  # along a new last dim: flattened, its pieces interleave
        return cat

    def interleaved(self, node) -> Val | None:
        """`torch.stack(pieces, -1).flatten(-2)` (or a reshape or view merging those two dims; GPT-J's rotary
        `stack((-x2, x1), -1).flatten(-2)`): a cat of the pieces whose coordinate i along the last dim is
        piece i % n's element i // n (`interleave`), where the flattened view of the stack had been a copy
        of it. None where node is no such view."""
        x = self.env.get(node.args[0]) if node.args else None
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, Val) or x.kind != "cat" or "stacked" not in x.mm or not hasattr(meta, "shape") \
                or node.op != "call_method" or node.target not in ("flatten", "reshape", "view"):
            return None
        pieces = x.mm["stacked"]
        shape = tuple(meta.shape)
        if shape != tuple(x.shape[:-2]) + (x.shape[-2] * x.shape[-1],) or len(x.shape) < 2:
            return None
        return self.new("cat", args=list(pieces), shape=shape, dtype=x.dtype, mm={"dim": -1, "interleave": True})

    def cat_of(self, pieces: list, dim: int) -> Val:
        if not all(isinstance(p, Val) for p in pieces):
            raise NotFusable
        first = pieces[0]
        rank = len(first.shape)
        # a cat of cats along the same dim is one cat (one select, where a cat inside a piece is none)
        pieces = [q for p in pieces for q in (p.args if p.kind == "cat" and rank and p.mm["dim"] == dim % rank - rank
                                                and not p.mm.get("interleave") else [p])]
        if rank == 0 or not -rank <= dim < rank or any(
                len(p.shape) != rank or p.squeezed or p.dtype != first.dtype or not p.dtype.is_floating_point
                or p.mm.get("tuple") or _copied(p) for p in pieces):
            raise NotFusable
        d = dim % rank
        if any(tuple(p.shape[:d]) + tuple(p.shape[d + 1:]) != tuple(first.shape[:d]) + tuple(first.shape[d + 1:])
               for p in pieces):
            raise NotFusable
        if len(pieces) == 1:
            return first
        shape = tuple(first.shape[:d]) + (sum(p.shape[d] for p in pieces),) + tuple(first.shape[d + 1:])
        return self.new("cat", args=pieces, shape=shape, dtype=first.dtype, mm={"dim": d - rank})


def _copied(v: Val) -> bool:
    """Whether a kernel reading v copies it first (a transpose, a permute, a moved layout's view): torch's
    cat reads those in place, so a cat of one stays torch's (a copy and then the cat's kernel had been
    more launches and bytes than torch's one)."""
    return bool(v.mm.get("copied")) or v.kind == "view" and ("transpose_of" in v.mm or "moved" in v.mm
                                                                and not v.mm.get("dense_last"))


def piece_shape(s: tuple, full: tuple) -> tuple:
    """Piece i of a cat (s = (cat, i)) in a kernel over `full`: full's shape, the cat's dim the piece's size."""
    cat, i = s
    d = len(full) + cat.mm["dim"]
    return tuple(full[:d]) + (cat.args[i].shape[cat.mm["dim"]],) + tuple(full[d + 1:])


def piece_groups(groups: list[tuple[int, int]], s: tuple, full: tuple, j: int) -> tuple[list, tuple | None]:
    """A leaf of piece s[1] of cat j read in a kernel over `full`: its broadcast groups at the piece's shape
    (`groups`) with the cat's dim a group of its own, and that group's shift (its index: the cat's
    coordinate less the piece's offset; None where the leaf is broadcast along it). Every other group's index is the
    kernel's own, so the compiler sees a contiguous last dim where the kernel's is (a piece's flat index
    computed first and divided again per group had hidden it: the loads were a float each, not four)."""
    d = len(full) + s[0].mm["dim"]
    out = []
    for a, b in groups:
        out += [(x, y) for x, y in ((a, min(b, d)), (max(a, d), min(b, d + 1)), (max(a, d + 1), b)) if x < y]
    at = next((k for k, g in enumerate(out) if g == (d, d + 1)), None)
    index = f"c{j}_at // {len(s[0].args)}" if s[0].mm.get("interleave") else f"c{j}_at - c{j}_o{s[1]}"
    return out, None if at is None else (at, index)


def system_of(v: Val, users: list[Val], systems: dict[int, tuple]) -> tuple | None | bool:
    """The system v is computed in inside a region whose members `users` read it (`systems`: the members'
    piece systems by id; others are the region's own): None, (cat, i), or False where its readers are
    in two (or a cat reads it twice)."""
    found: dict[tuple, tuple | None] = {}
    for u in users:
        if u.kind == "cat":
            at = [i for i, a in enumerate(u.args) if a is v]
            if len(at) != 1:
                return False
            s = (u, at[0])
        else:
            s = systems.get(id(u))
        found[(id(s[0]), s[1]) if s else None] = s
    return next(iter(found.values())) if len(found) == 1 else False


def joins(v: Val, s: tuple | None, shape: tuple) -> bool:
    """Whether v can be computed in system s of an elementwise region writing `shape`: its shape fits the
    system's (a piece's, or the region's), no cat inside a piece, and a cat in the region's own system
    spans the region's size along its dim (never broadcast along it)."""
    if v.squeezed or v.kind not in ("ew", "cat"):
        return False
    if s is not None:
        cat, i = s
        return v.kind != "cat" and _fits(v.shape, cat.args[i].shape)
    if v.kind == "cat":
        d = v.mm["dim"]
        return _fits(v.shape, shape) and len(shape) >= -d and v.shape[d] == shape[d]
    return _fits(v.shape, shape)


def _fits(shape: tuple, to: tuple) -> bool:
    return len(shape) <= len(to) and all(s in (1, t) for s, t in zip(shape[::-1], to[::-1]))


def systems(nodes: list[Val]) -> dict[int, tuple]:
    """Each member's piece system (members in the region's own are absent), from the cats down."""
    members = {id(n) for n in nodes}
    found: dict[int, tuple] = {}
    for n in reversed(nodes):  # readers first
        if n.kind == "cat":
            for i, a in enumerate(n.args):
                if id(a) in members:
                    found[id(a)] = (n, i)
        elif id(n) in found:
            for a in n.args:
                if isinstance(a, Val) and id(a) in members:
                    found[id(a)] = found[id(n)]
    return found


def leaf_reads(nodes: list[Val]) -> list[tuple[Val, tuple | None]]:
    """The leaves `nodes` read, each with the system it is read in, in order of first read: a leaf read in
    two systems (the region's own and a piece's) is two reads."""
    members = {id(n) for n in nodes}
    within = systems(nodes)
    out: list[tuple[Val, tuple | None]] = []
    seen: set = set()
    for n in nodes:
        for i, a in enumerate(n.args):
            if not isinstance(a, Val) or id(a) in members:
                continue
            s = (n, i) if n.kind == "cat" else within.get(id(n))
            if (id(a), key(s)) not in seen:
                seen.add((id(a), key(s)))
                out.append((a, s))
    return out


def cats(nodes: list[Val]) -> list[Val]:
    return [n for n in nodes if n.kind == "cat"]


def index_lines(j: int, c: Val, idx: str, mask: str | None) -> list[str]:
    """Cat j's coordinate along its dim from the flat index `idx` (the kernel's, or its rows' or columns'
    in a row kernel), and per piece the mask of its range
    (`mask` and it; None: the range alone). The kernel's constants: c{j}_inner and c{j}_size, the dim's
    inner extent and size in idx's space; c{j}_o{i}, the pieces' bounds along it."""
    p = f"c{j}"
    lines = [f"{p}_at = ({idx} // {p}_inner) % {p}_size"]
    for i in range(len(c.args)):
        both = f"{mask} & " if mask else ""
        lines.append(f"{p}_m{i} = {both}" + _in_piece(c, j, i))
    return lines


def _in_piece(c: Val, j: int, i: int) -> str:
    """Whether cat j's coordinate is piece i's: in its range, or (interleaved) i modulo the pieces."""
    if c.mm.get("interleave"):
        return f"(c{j}_at % {len(c.args)} == {i})"
    return f"(c{j}_at >= c{j}_o{i}) & (c{j}_at < c{j}_o{i + 1})"


def key(s: tuple | None):
    """A system as a dict key."""
    return (id(s[0]), s[1]) if s else None


def select_expr(c: Val, j: int, names: list[str]) -> str:
    """Cat j's value, its pieces' values `names`: each piece's where the coordinate is its."""
    expr = names[-1]
    for i in range(len(names) - 2, -1, -1):
        at = f"c{j}_at % {len(names)} == {i}" if c.mm.get("interleave") else f"c{j}_at < c{j}_o{i + 1}"
        expr = f"tl.where({at}, {names[i]}, {expr})"
    return expr


def params(found: list[Val]) -> list[str]:
    return [p for j, c in enumerate(found)
            for p in [f"c{j}_inner: tl.constexpr", f"c{j}_size: tl.constexpr"]
            + [f"c{j}_o{i}: tl.constexpr" for i in range(len(c.args) + 1)]]


def wrapper_line(reads: list[tuple[Val, tuple | None]], found: list[Val]) -> str:
    """The wrapper's line computing the kernel's shape and each cat's constants from its leaves."""
    own = [f"in{i}.shape" for i, (_, s) in enumerate(reads) if s is None]
    squeezed = tuple(v.squeezed for v, s in reads if s is None)
    per_cat = []
    for c in found:
        pieces = [[f"in{i}.shape" for i, (_, s) in enumerate(reads) if s is not None and s[0] is c and s[1] == k]
                  for k in range(len(c.args))]
        if any(not p for p in pieces):
            raise NotFusable("a piece with no tensor of its own")
        per_cat.append(f"({c.mm['dim']}, ({', '.join('(' + ', '.join(p) + ',)' for p in pieces)}))")
    return (f"full, cats = _memo(_cat_plan, ({', '.join(own)}{',' if len(own) == 1 else ''}), {squeezed}, "
            f"({', '.join(per_cat)},))")


def launch_args(found: list[Val], rank: int | None = None, split: int = 0) -> list[str]:
    """Each cat's constants at launch (the wrapper's `cats`); in a row kernel (`rank` dims, rows before
    `split`), the inner extent of a cat over a dim of the rows counts rows only."""
    return [f"cats[{j}][0]{' // N' if rank is not None and over_rows(c, rank, split) else ''}, cats[{j}][1], "
            f"*cats[{j}][2]" for j, c in enumerate(found)]


def over_rows(c: Val, rank: int, split: int) -> bool:
    """Whether cat c's dim is one of a row kernel's rows (rank dims, rows before `split`)."""
    return rank + c.mm["dim"] < split


CAT_PLAN = '''def _cat_plan(own, squeezed, cats):
    """The shape of a kernel reading concatenations (`own`: its other leaves' shapes, `squeezed` those
    lined up on the left; per cat its dim, from the right, and per piece its leaves' shapes), and per
    cat: its dim's inner extent (over every dim after it) and size, and its pieces' bounds along it."""
    rank = max(len(s) for s in list(own) + [s for _, pieces in cats for p in pieces for s in p])

    def size(shapes, d):  # broadcast: the size that is not 1
        return next((s[d] for s in shapes if s[d] != 1), 1)

    padded = [tuple(s) + (1,) * (rank - len(s)) if sq else (1,) * (rank - len(s)) + tuple(s)
              for s, sq in zip(own, squeezed)]
    sizes = []
    for dim, pieces in cats:
        shapes = [[(1,) * (rank - len(s)) + tuple(s) for s in p] for p in pieces]
        n = [size(p, dim) for p in shapes]
        rest = [size([s for p in shapes for s in p], d) for d in range(rank)]
        rest[dim] = sum(n)
        padded.append(tuple(rest))
        sizes.append(n)
    full = tuple(size(padded, d) for d in range(rank))
    out = []
    for (dim, _), n in zip(cats, sizes):
        d = rank + dim
        bounds = [sum(n[:i]) for i in range(len(n) + 1)]
        out.append((math.prod(full[d + 1:]), full[d], tuple(bounds)))
    return full, tuple(out)'''
