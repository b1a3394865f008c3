"""Regions of the lowered graph that one kernel each computes: grown backwards from each value, a
producer joins its consumers' region when all its users are there and the region's iteration space
can hold it (an elementwise value any region; a row reduction's input shape a row region...)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import concat
from .ir import Graph, Val

# A row epilogue's tile holds whole rows (or groups) of a product: at most this many columns (a 32 x 256 fp32
# accumulator)
ROW_TILE_MAX_N = 256


@dataclass(eq=False)
class Region:
    kind: str                          # ew | row | col | mm | conv | topk | scan | attn | pool
    root: Val
    nodes: list[Val] = field(default_factory=list)    # members, topological order once finalized
    full: tuple = ()                   # row: the reduction input's shape; pool, col, scan: the output's
    k: int = 0                         # row: trailing dims reduced
    mm: Val | None = None
    before: set = field(default_factory=set)  # pool, col: ids of the members computed before the reducer
    rows: Val | None = None            # mm, conv: the value whose rows a row epilogue reads (a conv's: the
                                       # (N, *spatial, C) view of its output)
    moved_back: tuple | None = None    # row: its output is read only viewed back by this (dims, to) move
    extras: list = field(default_factory=list)  # row: members it writes too, one value per row (read by
                                                # later regions or returned)
    systems: dict = field(default_factory=dict)  # ew, row: the members computed in a cat's piece (concat.py)

    def leaves(self) -> list[Val]:
        return operands(self.nodes)


def operands(nodes: list[Val], computed: tuple = ()) -> list[Val]:
    """The values `nodes` read that neither they nor `computed` compute, in order of first use: a
    kernel's leaves (a product's epilogue: computed = the product)."""
    members = {id(n) for n in list(nodes) + list(computed)}
    out: list[Val] = []
    for n in nodes:
        out += [a for a in n.args if isinstance(a, Val) and id(a) not in members and a not in out]
    return out


def _bcastable(shape: tuple, to: tuple) -> bool:
    if len(shape) > len(to):
        return False
    return all(s in (1, t) for s, t in zip(shape[::-1], to[::-1]))


def _epilogue_of(r: Region, shape: tuple) -> bool:
    """Whether elementwise region r can be the epilogue of a value of `shape` (a product's, a pool's): it
    writes that shape, nothing in it is a squeezed row value, and its operands broadcast into it."""
    return tuple(r.root.shape) == tuple(shape) and not any(n.squeezed for n in r.nodes) and \
        all(_bcastable(a.shape, shape) for n in r.nodes for a in n.args if isinstance(a, Val))


def _row_ok(v: Val, full: tuple, k: int) -> bool:
    if v.fn == "pick" and (tuple(full) != tuple(v.args[0].shape) or k != 1):
        return False  # its column index addresses the row it reads
    r = len(full)
    if v.squeezed:  # one value per row (on the left of the rows): a row's, or broadcast over some (a bias)
        return len(v.shape) == r - k and _bcastable(tuple(v.shape), tuple(full[: r - k]))
    return _bcastable(v.shape, full)


def partition(g: Graph, use_mm: bool = True) -> list[Region]:
    """Grow regions backwards; returns them in topological order of their roots. A pool's or a column
    reduction's prologue saves its input's write and read, but it can split another region apart (values
    computed inside it are then needed outside, which only a row kernel's one-per-row values can be:
    `Region.extras`); each reducer whose prologue costs kernels so is grown without one."""
    denied: set[int] = set()  # ids of the reducers that take no prologue
    regions = _grow(g, use_mm, denied)
    for r in list(regions):
        if r.kind in ("pool", "col") and r.before:
            reducer = next(n for n in r.nodes if n.kind in ("pool", "cred"))
            trial = _grow(g, use_mm, denied | {id(reducer)})
            if len(trial) < len(regions):
                denied.add(id(reducer))
                regions = trial
    return _merge_siblings(g, regions)


def _grow(g: Graph, use_mm: bool, denied: set[int]) -> list[Region]:
    regions: list[Region] = []
    outputs = set(map(id, g.outputs))
    fusable = {"ew", "cat", "red", "cred", "topk", "scan", "attn", "pool"} | ({"mm", "conv"} if use_mm else set())
    homes: dict[int, list[Region]] = {}  # the regions a value is in (several: redone in each reader)
    order = {id(v): i for i, v in enumerate(g.vals)}
    for v in reversed(g.vals):
        if v.kind == "conv" and not v.mm.get("implicit_gemm") or id(v) in homes:
            continue
        if v.kind not in fusable or not (v.dtype.is_floating_point or v.dtype == torch.bool
                                         or v.kind in ("red", "cred") and v.fn in ("argmax", "argmin")):
            continue
        users = g.users[id(v)]
        readers = _readers(users, homes)
        if len(readers) == 1 and readers[0] is not None and id(v) not in outputs \
                and _absorb(readers[0], v, users, denied):
            readers[0].nodes.append(v)
            homes[id(v)] = [readers[0]]
            continue
        chain = _redo_in_readers(g, v, readers, homes, outputs, denied, order)
        if chain:
            homes.update({id(n): readers for n in chain})
            continue
        home = _home_writing_it(g, v, readers, homes, denied, order)
        if home is not None:
            home.nodes.append(v)
            home.extras.append(v)
            homes[id(v)] = [home]
            continue
        rows = _rows_rooted_at(v, readers, order)
        if rows is not None:  # the row kernel writes v as its output, its own output besides
            rows.extras.insert(0, rows.root)
            rows.root = v
            rows.nodes.append(v)
            homes[id(v)] = [rows]
            continue
        if v.kind == "ew" and v.dtype == torch.bool:
            continue  # a mask is only worth a kernel inside a consumer's region
        kind = {"ew": "ew", "cat": "ew", "red": "row", "mm": "mm", "conv": "conv", "cred": "col", "topk": "topk",
                "scan": "scan", "attn": "attn", "pool": "pool"}[v.kind]
        r = Region(kind=kind, root=v, nodes=[v])
        if v.kind == "red":
            r.full, r.k = v.args[0].shape, v.k
        if v.kind in ("scan", "pool"):
            r.full, r.k = v.shape, 1
        if v.kind == "cred":
            r.full, r.k = v.shape, v.k
        if v.kind in ("mm", "conv"):
            r.mm = v
        regions.append(r)
        homes[id(v)] = [r]
    for r in regions:
        r.nodes.sort(key=lambda n: order[id(n)])
        keys = {u.mm.get("moved") for u in g.users[id(r.root)]}
        if r.kind == "row" and g.users[id(r.root)] and len(keys) == 1 and None not in keys \
                and len(next(iter(keys))[0]) == r.k and not any(o is r.root for o in g.outputs):
            r.moved_back = next(iter(keys))  # a softmax over channels, stored in NCHW order (rowreduce.py)
    regions.sort(key=lambda r: order[id(r.root)])
    return regions


def _merge_siblings(g: Graph, regions: list[Region]) -> list[Region]:
    """Row regions over the same rows, or column regions reducing the same dims of inputs of one shape,
    that both read a tensor of that shape, neither needing the other's values, merged into one kernel:
    the tensor is read once (a triplet loss's two distances from the anchor; a channel mean and max;
    Inductor fuses such reductions too). The merged kernel is called where one of them was (the host);
    the other's output becomes a value it writes besides its own (`Region.extras`) where anything else
    reads it, so that output must be one value per row (per output position), and the call must come
    after everything the guest reads and before everything that reads the guest's values."""
    order = {id(v): i for i, v in enumerate(g.vals)}
    outputs = set(map(id, g.outputs))
    out = list(regions)
    while (pair := _sibling_pair(g, out, order)) is not None:
        host, guest = pair
        host.nodes = sorted({id(n): n for n in host.nodes + guest.nodes}.values(), key=lambda n: order[id(n)])
        host.before |= guest.before
        host.systems.update(guest.systems)
        host.extras += [v for v in [guest.root] + guest.extras
                        if id(v) in outputs or any(u not in host.nodes for u in g.users[id(v)])]
        out.remove(guest)
    return out


def _sibling_pair(g: Graph, regions: list[Region], order: dict[int, int]) -> tuple[Region, Region] | None:
    """The first (host, guest) of sibling row regions that can be merged, or None."""
    for a in regions:
        for b in regions:
            if a is not b and order[id(a.root)] < order[id(b.root)]:
                host = _host_of(g, a, b, regions, order)
                if host is not None:
                    return host, b if host is a else a
    return None


def _host_of(g: Graph, a: Region, b: Region, regions: list[Region], order: dict[int, int]) -> Region | None:
    """Which of sibling row or column regions a and b (a's root first) can host the other's values, or None."""
    size = _sibling_size(a, b)
    if size is None:
        return None
    b_leaves = b.leaves()
    shared = [v for v in a.leaves() if v in b_leaves]
    if not any(math.prod(v.shape) == size for v in shared) \
            and not (concat.cats(a.nodes) and concat.cats(b.nodes) and sum(math.prod(v.shape) for v in shared) >= size):
        return None  # (a cat's pieces, read by both, are its size together)
    # where each value is there to read: a region's values at its call (its root's place in the graph), the
    # forward's arguments from the start, anything else (a parameter's read too) where the graph has it
    made = {id(n): order[id(r.root)] for r in regions for n in [r.root] + r.extras}

    def ready(v: Val) -> int:
        return made.get(id(v), -1 if v.kind == "input" else order[id(v)])

    def called(u: Val) -> int:
        at = [order[id(r.root)] for r in regions if any(n is u for n in r.nodes)]
        return min(at) if at else order[id(u)]

    # a column kernel reduces before its epilogue runs: one region's epilogue may read the other's values
    # (`amax(x, 1) - amin(x, 1)`), which the merged kernel then computes itself; its reductions' inputs may not
    inner = a.kind == "col"
    if inner and (_reduces_from(a, b) or _reduces_from(b, a)):
        return None
    written = [a.root] + a.extras
    up = _written_beside(b.root, a) and all(ready(v) < order[id(a.root)] or inner and v in written for v in b_leaves)
    down = _written_beside(a.root, b) and not any(v in b.nodes for v in written) and all(
        called(u) > order[id(b.root)] or inner and u in b.nodes
        for v in written for u in g.users[id(v)] if not any(u is n for n in a.nodes))
    read_by_b = inner and bool(g.users[id(a.root)]) and all(u in b.nodes for u in g.users[id(a.root)]) \
        and not any(o is a.root for o in g.outputs)
    if down and (not up or read_by_b):
        return b  # a's kernel moves down to b's call (where b's epilogue alone reads a's output, it is not written)
    return a if up else None  # b's kernel moves up to a's call


def _reduces_from(a: Region, b: Region) -> bool:
    """Whether what column region a reduces (its prologue, its reduction) reads a value of region b's."""
    return any(x in b.nodes for n in a.nodes if n.kind == "cred" or id(n) in a.before for x in n.args)


# a column kernel's reductions each keep a tile-sized accumulator (an arg reduction two: values, rows)
COL_MAX_ACCUMULATORS = 6


def _sibling_size(a: Region, b: Region) -> int | None:
    """The elements of the tensor sibling regions a and b both reduce (rows of one shape; column
    reductions all over the same dims of inputs of one shape, their accumulators few enough for one
    kernel), or None where they are no such pair."""
    if a.kind == b.kind == "row" and tuple(a.full) == tuple(b.full) and a.k == b.k \
            and not a.moved_back and not b.moved_back:
        return math.prod(a.full)
    if a.kind != "col" or b.kind != "col":
        return None
    creds = [n for r in (a, b) for n in r.nodes if n.kind == "cred"]
    if len({(tuple(c.args[0].shape), c.mm["dims"], tuple(c.shape)) for c in creds}) != 1 \
            or sum(1 + (c.fn in ("argmax", "argmin")) for c in creds) > COL_MAX_ACCUMULATORS:
        return None
    return math.prod(creds[0].args[0].shape)


def _written_beside(v: Val, r: Region) -> bool:
    """Whether region r's kernel can write v besides its output: one value per row of a row region, one
    per output position of a column region."""
    return _one_row_value(v, r) if r.kind == "row" else tuple(v.shape) == tuple(r.full) and not v.squeezed


# An elementwise value that several kernels read is computed in each of them instead of written once and
# read back (what Inductor does when it inlines a pointwise op into its users): up to this many ops, for
# up to this many kernels, from at most one tensor of its own size (the rest broadcast: a bias, a row's
# statistics), so no reader reads more than it did
REDO_MAX_OPS = 8
REDO_MAX_READERS = 4


def _readers(users: list[Val], homes: dict[int, list[Region]]) -> list[Region | None]:
    """The regions that read a value, once each; None for a reader in none (torch's)."""
    found: dict[int, Region | None] = {}
    for u in users:
        for r in homes.get(id(u), [None]):
            found[id(r)] = r
    return list(found.values())


def _redo_in_readers(g: Graph, v: Val, readers: list, homes: dict, outputs: set, denied: set[int],
                     order: dict[int, int]) -> list[Val]:
    """v and the elementwise values only it reads (transitively), added to every region that reads v, when
    each can take them: the chain (v first), or [] where v gets a kernel of its own as before. Nothing
    in the chain is an output or one value per row. A value the chain reads that others read too is a
    leaf of it; coming later in the backward walk, it may be redone in the same regions itself."""
    if v.kind not in ("ew", "cat") or id(v) in outputs or not 1 < len(readers) <= REDO_MAX_READERS \
            or None in readers:
        return []
    chain, todo = [], [v]
    while todo:
        n = todo.pop()
        if n.squeezed or id(n) in outputs or len(chain) >= REDO_MAX_OPS:
            return []
        chain.append(n)
        for a in n.args:
            if isinstance(a, Val) and a.kind == "ew" and a not in chain and a not in todo:
                if any(u not in chain and u not in todo and u is not n for u in g.users[id(a)]):
                    continue  # read outside the chain too: a leaf of it (redone itself later, maybe)
                todo.append(a)
    if sum(math.prod(a.shape) == math.prod(v.shape) for a in operands(chain)) > 1:
        return []  # each reader would read two full tensors where it reads one (a residual stream's sum)
    chain.sort(key=lambda n: -order[id(n)])  # as the regions grow: readers before what they read
    before = [set(r.before) for r in readers]  # a window region's prologue grows as it takes them
    for r in readers:
        for n in chain:
            inside = [u for u in g.users[id(n)] if r in homes.get(id(u), []) or u in chain]
            if not _absorb(r, n, inside, denied):
                for r2, b in zip(readers, before):
                    r2.before = b
                    for m in chain:
                        r2.systems.pop(id(m), None)
                return []
    for r in readers:
        r.nodes += chain
    return chain


def _home_writing_it(g: Graph, v: Val, readers: list, homes: dict, denied: set[int],
                     order: dict[int, int]) -> Region | None:
    """A row region that computes v, one value per row, among its reader regions, and writes it besides
    its own output for the others (and the caller, when v is returned): an instance norm's mean and
    variance, needed again by the column kernel after it; a row max returned and also subtracted. Every
    other reader must be called after it (its root later in the graph's order; a reader in none, torch's,
    later itself), which rules out cycles too."""
    if v.kind not in ("red", "ew") or v.fn in ("argmax", "argmin"):
        return None
    torch_readers = [u for u in g.users[id(v)] if id(u) not in homes]
    for home in sorted((r for r in readers if r is not None), key=lambda r: order[id(r.root)]):
        if home.kind not in ("row", "ew") or any(order[id(r.root)] <= order[id(home.root)]
                                                 for r in readers if r is not home and r is not None) \
                or any(order[id(u)] <= order[id(home.root)] for u in torch_readers):
            continue
        was = (home.kind, home.full, home.k)  # an elementwise region taking a reduction becomes a row one
        if _absorb(home, v, [u for u in g.users[id(v)] if home in homes.get(id(u), [])], denied) \
                and home.kind == "row" and _one_row_value(v, home) and id(v) not in home.systems:
            return home
        home.kind, home.full, home.k = was
    return None


def _rows_rooted_at(v: Val, readers: list, order: dict[int, int]) -> Region | None:
    """The row region among v's readers that can compute v too and write it as its output, its own output
    (one value per row) then written besides: `y = relu(x - c); y @ W + y.sum(-1)` is a row kernel writing
    y and its sums, then the product, where y had a kernel of its own and the sums' kernel read it back.
    v is elementwise at the rows' shape and read by another kernel or torch too (one reader would have
    taken it whole). The kernel is then called where v is, so everything else it reads must be made
    before v in the graph's order; what reads v or the region's values comes after v anyway, and later
    choices (a value homed in a region, siblings merged) go by the region's root, now v."""
    rows = [r for r in readers if r is not None and r.kind == "row"]
    if v.kind != "ew" or v.squeezed or len(readers) < 2 or len(rows) != 1:
        return None
    r = rows[0]
    if tuple(v.shape) != tuple(r.full) or r.moved_back or not _one_row_value(r.root, r) \
            or any(n.fn == "pick" or n.kind == "cat" for n in r.nodes):
        return None
    if any(a is not v and a.kind != "input" and order[id(a)] > order[id(v)] for a in r.leaves()):
        return None
    return r


def _one_row_value(v: Val, r: Region) -> bool:
    """Whether v holds exactly one value per row of row region r (a reduction's, squeezed or keepdim)."""
    split = len(r.full) - r.k
    rows = tuple(r.full[:split])
    return tuple(v.shape) == (rows if v.squeezed else rows + (1,) * r.k)


def _absorb(r: Region, v: Val, users: list[Val], denied: set[int]) -> bool:
    if v.kind == "cat" or any(n.kind == "cat" for n in r.nodes) \
            or any(u.kind == "cat" or id(u) in r.systems for u in users):  # (a chain redone in r: not in it yet)
        decided = _absorb_in_system(r, v, users)
        if decided is not None:
            return decided
    if r.kind in ("pool", "col") or v.kind in ("pool", "cred"):
        return _window_absorbs(r, v, users, denied)
    if r.kind == "scan" or v.kind == "scan":  # a scan's region: elementwise work before and after it
        return _scan_absorbs(r, v)
    if r.kind in ("mm", "conv", "topk", "attn") or v.kind in ("topk", "attn") \
            or v.kind in ("mm", "conv") and r.kind != "ew":
        return False
    if r.kind == "ew":
        if v.kind == "ew":
            return _bcastable(v.shape, r.root.shape) or v.squeezed
        if v.kind in ("mm", "conv"):
            if not _epilogue_of(r, v.shape):
                return False
            r.kind, r.mm = v.kind, v  # the product's epilogue
            return True
        # red: the elementwise region becomes the reduction's epilogue
        full, k = v.args[0].shape, v.k
        members = r.nodes + [v]
        if not all(_row_ok(n, full, k) for n in members):
            return False
        if not all(_row_ok(a, full, k) for n in r.nodes for a in n.args if isinstance(a, Val)):
            return False
        r.kind, r.full, r.k = "row", full, k
        return True
    # row region
    if v.kind == "red":
        return tuple(v.args[0].shape) == tuple(r.full) and v.k == r.k
    return _row_ok(v, r.full, r.k) and all(_row_ok(a, r.full, r.k) for a in v.args if isinstance(a, Val))


def _absorb_in_system(r: Region, v: Val, users: list[Val]) -> bool | None:
    """Whether a region reading a concatenation takes v, each value in one coordinate system (concat.py): a
    cat's piece, or the region's own. Elementwise and row regions take them (a row region's other values
    by its own rules: None); a piece is elementwise work."""
    if r.kind not in ("ew", "row"):
        return False
    s = concat.system_of(v, users, r.systems)
    if s is False:
        return False
    if r.kind == "row" and s is None:
        if v.kind == "cat":  # the rows' shape, never broadcast along its dim
            d = v.mm["dim"]
            fits = _row_ok(v, r.full, r.k) and len(r.full) >= -d and v.shape[d] == r.full[d]
        else:
            fits = None if v.kind in ("ew", "red") else False
    else:
        fits = concat.joins(v, s, tuple(r.root.shape))
    if fits is not False:
        if s is None:
            r.systems.pop(id(v), None)
        else:
            r.systems[id(v)] = s
    return fits


def _scan_absorbs(r: Region, v: Val) -> bool:
    """A scan joins the elementwise region after it (its epilogue); elementwise values join a scan's
    region (its prologue), when they broadcast into the scan's rows. One scan a region."""
    full = v.shape if v.kind == "scan" else r.full
    if "dim" in v.mm or r.kind == "scan" and "dim" in r.root.mm:  # a column scan's kernel takes no more
        return False
    if r.kind not in ("ew", "scan") or v.kind not in ("ew", "scan") or (r.kind == "scan") == (v.kind == "scan"):
        return False
    members = r.nodes + [v]
    if any(n.squeezed or not _row_ok(n, full, 1) for n in members) or \
            not all(_row_ok(a, full, 1) for n in members for a in n.args if isinstance(a, Val)):
        return False
    if v.kind == "scan":
        r.kind, r.full, r.k = "scan", full, 1
    return True


def _window_absorbs(r: Region, v: Val, users: list[Val], denied: set[int]) -> bool:
    """A pool or a column reduction (the region's reducer) joins the elementwise region after it, of its
    output's shape (its epilogue); elementwise values join the reducer's region before it (its prologue,
    computed at each input position it reads) when only the reducer and the prologue read them (a reducer
    in `denied` takes none), or after it when only the epilogue does. Values one per row (squeezed)
    stay out: they line up on the left."""
    kind = {"pool": "pool", "cred": "col"}.get(v.kind)
    if kind is not None:
        # an arg reduction's indices (ints) only through a conversion to float (`at.float() / C`)
        if r.kind != "ew" or not _epilogue_of(r, v.shape) or v.fn in ("argmax", "argmin") and any(
                n.fn != "cast:int" for n in r.nodes if v in n.args) \
                or any(isinstance(a, Val) and a.squeezed for n in r.nodes for a in n.args):
            return False
        r.kind, r.full, r.k = kind, tuple(v.shape), v.k if v.kind == "cred" else 1
        return True
    if r.kind not in ("pool", "col") or v.kind != "ew" or v.squeezed \
            or any(isinstance(a, Val) and a.squeezed for a in v.args):
        return False
    reducer = next(n for n in r.nodes if n.kind in ("pool", "cred"))
    prologue = [u is reducer and v is reducer.args[0] or id(u) in r.before for u in users]
    if all(prologue):
        if id(reducer) in denied:
            return False
        to = reducer.args[0].shape
    elif not any(prologue):
        to = r.full
    else:
        return False
    if not _bcastable(v.shape, to) or any(isinstance(a, Val) and not _bcastable(a.shape, to) for a in v.args):
        return False
    if all(prologue):
        r.before.add(id(v))
    return True


def fuse_product_rows(g: Graph, regions: list[Region]) -> list[Region] | None:
    """The regions with each product whose output only a row kernel over its columns reads merged into
    one region, for a tile that spans whole rows (ROW_TILE_MAX_N columns at most, at the problem's own
    sizes): a matmul (not over a triangle) read directly (softmax, a norm, a reduction over the last
    dim; the tile spans every column) or through a group norm's view (G groups of C / G columns; the
    tile spans whole groups); an implicit-GEMM convolution (one group) through the (N, *spatial, C) view
    of a reduction over its channels. One product a row kernel: another product it reads stays a kernel
    of its own. None when no pair is there."""
    region_of = {id(n): r for r in regions for n in r.nodes}
    shared = _shared(regions)
    out, fused = list(regions), False
    for rc in regions:
        if rc.kind not in ("conv", "mm") or any(o is rc.root for o in g.outputs):
            continue
        if rc.kind == "conv":
            if rc.mm.mm["groups"] != 1 or len(g.users[id(rc.root)]) != 1:
                continue
            view = g.users[id(rc.root)][0]
            rank = len(rc.root.shape)
            if view.kind != "view" or view.mm.get("barrier") != 1 \
                    or view.expr != f"{{0}}.movedim((1,), ({rank - 1},))" or any(o is view for o in g.outputs):
                continue
            rows, members, k, width = view, [view], 1, own(rc.mm)[1]  # the tile's columns: C
        elif "tri" in rc.mm.mm:
            continue
        else:
            rows, members, k, width = rc.root, [], 1, own(rc.mm)[-1]
            users = g.users[id(rc.root)]
            if len(users) == 1 and _group_rows(users[0], rc.root) and not any(o is users[0] for o in g.outputs):
                # a group norm's (..., G, C / G, 1...) view of the output: a row is a group's dims
                rows, members = users[0], [users[0]]
                k = len(rows.shape) - len(rc.root.shape)
                width = math.prod(own(rows)[len(rc.root.shape):])
        readers = g.users[id(rows)]
        rr = region_of.get(id(readers[0])) if readers else None
        if rr is None or rr not in out or rr.kind != "row" or rr.extras or rr.k != k \
                or any(n.kind == "cat" for n in rr.nodes) \
                or tuple(rr.full) != tuple(rows.shape) or width > ROW_TILE_MAX_N \
                or any(region_of.get(id(u)) is not rr or id(u) in shared for u in readers):
            continue
        merged = Region(kind=rc.kind, root=rr.root, nodes=rc.nodes + members + rr.nodes, full=rr.full, k=k,
                        mm=rc.mm, rows=rows)
        out[out.index(rr)] = merged
        out.remove(rc)
        fused = True
    return out if fused else None


def own(v: Val) -> tuple:
    """v's shape at the problem's own sizes (the traced one where no other is known)."""
    return v.own_shape or tuple(v.shape)


def _group_rows(view: Val, v: Val) -> bool:
    """Whether `view` splits v's last dim C into G groups of C / G (trailing 1s allowed), both powers of 2
    at the traced and the problem's own sizes: a group norm's rows, which a tile spanning whole groups
    holds as (BLOCK_M * groups in the tile, C / G)."""
    lead = len(v.shape) - 1
    if view.kind != "view" or "groups" not in view.mm:
        return False
    for shape, outer in ((tuple(view.shape), tuple(v.shape)), (own(view), own(v))):
        if len(shape) < lead + 2 or shape[:lead] != outer[:lead]:
            return False
        groups, per = shape[lead], math.prod(shape[lead + 1:])
        if not (groups > 1 and groups * per == outer[-1] and all(n & (n - 1) == 0 for n in (groups, per))
                and all(d == 1 for d in shape[lead + 2:])):
            return False
    return True


def fuse_conv_pools(g: Graph, regions: list[Region]) -> list[Region] | None:
    """The regions with each implicit-GEMM convolution whose output only a pool over all its spatial dims
    reads, through the pool's prologue or directly, merged with that pool's region: the conv's outputs
    are pooled as the kernel makes them (windows apart only; the kernel checks the geometry at run time).
    A transposed convolution's too where its stride divides the window (as traced): each window position
    is then one output phase for every window, so a tile's products there are one phase's (conv.py).
    None when no pair is there."""
    region_of = {id(n): r for r in regions for n in r.nodes}
    shared = _shared(regions)
    out, fused = list(regions), False
    for rc in regions:
        if rc.kind != "conv" or rc.rows is not None or any(o is rc.root for o in g.outputs):
            continue
        users = g.users[id(rc.root)]
        rp = region_of.get(id(users[0])) if users else None
        if rp is None or rp not in out or rp.kind != "pool" \
                or any(region_of.get(id(u)) is not rp or id(u) in shared for u in users):
            continue
        pool = next(n for n in rp.nodes if n.kind == "pool")
        if pool.mm["ceil"] or pool.mm.get("apart") is False or pool.mm["dims"] != rc.mm.mm["dims"] \
                or tuple(pool.args[0].shape) != tuple(rc.root.shape) \
                or any(u is not pool and id(u) not in rp.before for u in users) \
                or rc.mm.mm.get("transposed") and not _phase_per_window(rc.mm, pool):
            continue
        merged = Region(kind="conv", root=rp.root, nodes=rc.nodes + rp.nodes, mm=rc.mm,
                        before=rp.before | {id(n) for n in rc.nodes})
        out[out.index(rp)] = merged
        out.remove(rc)
        fused = True
    return out if fused else None


def fuse_conv_reductions(g: Graph, regions: list[Region]) -> list[Region] | None:
    """The regions with each implicit-GEMM convolution (fp32, one group) whose output only a row kernel
    summing or averaging it over all its spatial dims reads (a global average pool after a nonlinear
    tail: conv → BN → Mish → adaptive_avg_pool2d(1)), merged with that kernel's prologue and reduction:
    each tile adds its pixels' values per image and channel into the (N, C, 1...) output with atomics
    (conv.py), so the conv's output is never written. The row kernel's epilogue, which must wait for
    every tile, becomes an elementwise region of its own. None when no pair is there."""
    region_of = {id(n): r for r in regions for n in r.nodes}
    shared = _shared(regions)
    out, fused = list(regions), False
    for rc in regions:
        conv = rc.mm
        if rc.kind != "conv" or rc.rows is not None or any(n.kind == "pool" for n in rc.nodes) \
                or conv.mm["groups"] != 1 or conv.dtype != torch.float32 or any(o is rc.root for o in g.outputs):
            continue
        users = g.users[id(rc.root)]
        rr = region_of.get(id(users[0])) if users else None
        if rr is None or rr not in out or rr.kind != "row" or rr.extras or rr.moved_back \
                or any(n.kind == "cat" for n in rr.nodes) \
                or any(region_of.get(id(u)) is not rr or id(u) in shared for u in users):
            continue
        reds = [n for n in rr.nodes if n.kind == "red"]
        spatial = len(conv.shape) - 2
        if len(reds) != 1 or reds[0].fn not in ("sum", "mean") or reds[0].squeezed or rr.k != spatial \
                or tuple(rr.full) != tuple(conv.shape) or tuple(reds[0].args[0].shape) != tuple(conv.shape):
            continue
        red = reds[0]
        after = _computed_from(red, rr.nodes)
        prologue = [n for n in rr.nodes if n is not red and n not in after]
        if any(n.squeezed or not _bcastable(tuple(n.shape), tuple(conv.shape)) for n in prologue) \
                or any(u not in prologue and u is not red for n in prologue for u in g.users[id(n)]) \
                or any(n.squeezed for n in after):
            continue
        merged = Region(kind="conv", root=red, nodes=rc.nodes + prologue + [red], mm=conv)
        out[out.index(rr)] = merged
        if after:
            out.insert(out.index(merged) + 1, Region(kind="ew", root=rr.root, nodes=after))
        out.remove(rc)
        fused = True
    return out if fused else None


def _computed_from(v: Val, nodes: list[Val]) -> list[Val]:
    """The members of `nodes` (in topological order) computed from v, directly or not."""
    found: list[Val] = []
    for n in nodes:
        if any(a is v or a in found for a in n.args):
            found.append(n)
    return found


def _phase_per_window(conv: Val, pool: Val) -> bool:
    """Whether transposed convolution conv's stride divides pool's window in every dim, both as traced."""
    traced, window = conv.mm.get("traced"), pool.mm.get("window")
    if traced is None or window is None:
        return False
    stride = traced[0]
    stride = [stride] * len(window) if isinstance(stride, int) else list(stride) * (len(window) // len(stride))
    return len(stride) == len(window) and all(isinstance(s, int) and s > 0 and w % s == 0
                                              for s, w in zip(stride, window))


def _shared(regions: list[Region]) -> set[int]:
    """Ids of the values more than one region computes (redone in each of their readers)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for r in regions:
        ids = {id(n) for n in r.nodes}
        shared |= seen & ids
        seen |= ids
    return shared
