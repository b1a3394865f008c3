"""Layouts a row kernel computes in, other than the graph's own: a group norm's (N, G, C/G, H*W) rows,
a reduction over middle dims moved to the end ((N, C, H, W) over C as (N, H, W, C) rows), and a value's
shape on the other side of a view that only adds or drops dims of size 1 (`x.unsqueeze(1)` into an
InstanceNorm2d, `.squeeze(1)` out of it). The elementwise ops that compute a value entering such a
layout are done again in it from their leaves' views (the kernel's prologue); ops on a value viewed
back from it are done in it too (its epilogue)."""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from .ir import NotFusable, Val, whole


class LayoutMixin:
    """Methods of the lowerer (graph._Lowerer) for the row layouts; they build values with its ew/view/new."""

    # -- reductions over middle dims, as rows: (N, C, H, W) over C is read as (N, H, W, C) rows in place --
    def _over_middle_dims(self, x, dim) -> tuple[Val, tuple] | None:
        """x in the layout where the middle dims `dim` covers are trailing (a view: the row kernel reads
        its strides), with the elementwise ops computing x redone there; None when they are trailing
        already or not one run of dims."""
        if not isinstance(x, Val) or x.squeezed or isinstance(dim, fx.Node) or not x.shape:
            return None
        try:
            dims = self._reduced(x, dim)
        except NotFusable:
            return None
        r, k = len(x.shape), len(dims)
        if dims != list(range(dims[0], dims[0] + k)) or dims[-1] == r - 1:
            return None
        key = (tuple(dims), tuple(range(r - k, r)))
        xm = self._moved(x, key)
        return (xm, key) if xm is not None else None

    def _on_moved(self, x, dim, compute, keepdim=True) -> Val | None:
        """compute(x in the moved layout, its trailing dims), a keepdim result there, viewed back in x's
        dim order (without the reduced dims unless keepdim); None where _over_middle_dims gives none."""
        unit = self._on_unit_source(x, dim, compute, keepdim)
        if unit is not None:
            return unit
        moved = self._over_middle_dims(x, dim)
        if moved is None:
            return None
        xm, (src, dst) = moved
        return self._squeeze(self._moved_back(compute(xm, list(dst)), (src, dst)), list(src), keepdim)

    def _on_unit_source(self, x, dim, compute, keepdim=True) -> Val | None:
        """compute(the value x views with dims of size 1 added, its trailing dims), a keepdim result there,
        viewed back as x is (without the reduced dims unless keepdim): the softmax over channels of a
        global pool's (N, C, 1, 1) is over the rows of its (N, C). None where x is no such view or the
        dims reduced are not that value's trailing ones."""
        if not isinstance(x, Val) or "unit_of" not in x.mm or x.squeezed:
            return None
        src, dims = x.mm["unit_of"], self._reduced(x, dim)
        data = [d for d, n in enumerate(x.shape) if n != 1]  # in order, the dims of src over 1
        src_data = [i for i, n in enumerate(src.shape) if n != 1]
        mapped = [src_data[data.index(d)] for d in dims if d in data]
        r = len(src.shape)
        if len(data) != len(src_data) or not mapped or mapped != list(range(r - len(mapped), r)):
            return None
        out = compute(src, mapped)  # a reduction's keepdim result, or a softmax's of src's shape
        shape = list(x.shape)
        for d, i in zip(data, src_data):
            shape[d] = out.shape[i]
        return self._squeeze(self._unit_view(out, tuple(shape)), dims, keepdim)

    def _moved_operand(self, a: Val, key: tuple) -> Val | None:
        """An operand of an op in x's shape, as its view in the layout `key` = (dims, where they go)."""
        if a.squeezed or a.mm.get("tuple"):
            return None
        if not a.shape or a.kind == "scalar":
            return a  # broadcasts the same in any layout
        src, dst = key
        r = dst[-1] + 1  # the moved dims go last
        if len(a.shape) > r:
            return None
        pad = r - len(a.shape)
        padded_shape = (1,) * pad + tuple(a.shape)
        index = f"[{'None, ' * pad}...]" if pad else ""
        v = self.view(f"{{0}}{index}.movedim({src}, {dst})", [a], tuple(padded_shape[d] for d in moved_order(src, r)),
                      a.dtype)
        v.mm["barrier"] = src[0]  # the dims after the moved ones start here; in memory they are apart
        return v

    def _moved(self, v: Val, key: tuple) -> Val | None:
        """v in the layout `key`: its elementwise ops at full shape redone there from their leaves' views;
        a value computed in that layout and viewed back is that value (a max over channels after a softmax
        over them reads the softmax's rows, in its kernel)."""
        if v.kind == "view" and v.mm.get("moved") == key:
            return v.args[0]
        memo = (id(v), key)  # a value two ops read is moved once (one leaf of the kernel)
        if memo not in self.relaid:
            if v.kind != "ew" or v.squeezed or v.fn == "pick":
                self.relaid[memo] = self._moved_operand(v, key)
            else:
                args = [self._moved(a, key) if isinstance(a, Val) else a for a in v.args]
                self.relaid[memo] = None if any(a is None for a in args) else self.ew(
                    v.fn, *args, dtype=v.dtype)
        return self.relaid[memo]

    def _moved_back(self, y: Val, key: tuple) -> Val:
        """y, computed in the layout `key`, viewed in the original dim order; later elementwise ops see
        through it (they are done in the layout too)."""
        src, dst = key
        shape = [0] * len(y.shape)
        for pos, d in enumerate(moved_order(src, len(y.shape))):
            shape[d] = y.shape[pos]
        v = self.view(f"{{0}}.movedim({dst}, {src})", [y], tuple(shape), y.dtype)
        v.mm["moved"] = key
        return v

    def _in_moved_layout(self, fn: str, args, dtype) -> Val | None:
        """An elementwise op on a value computed in a moved layout, done in that layout (as for a group
        norm's), so the row kernel that computed it takes the op as its epilogue."""
        views = [a for a in args if isinstance(a, Val) and "moved" in a.mm]
        if not views:
            return None
        key = views[0].mm["moved"]
        r = len(views[0].shape)
        if len(torch.broadcast_shapes(*[a.shape for a in args if isinstance(a, Val)])) != r:
            return None
        moved = []
        for a in args:
            if isinstance(a, Val) and "moved" in a.mm:
                if a.mm["moved"] != key:
                    return None
                moved.append(a.args[0])
            elif isinstance(a, Val):
                moved.append(self._moved(a, key))
                if moved[-1] is None:
                    return None
            else:
                moved.append(a)
        return self._moved_back(self.ew(fn, *moved, dtype=dtype), key)

    # -- a group norm's rows: (N, C, *spatial) as (N, G, C/G, prod(spatial)) --
    def _in_group_layout(self, fn: str, args, dtype) -> Val | None:
        """An elementwise op on a group norm's output, done in the norm's (N, G, C/G, spatial) layout and
        viewed back, so that the norm's row kernel takes it as epilogue instead of a kernel of its own
        running behind the reshape. None when an operand does not map into that layout."""
        views = [a for a in args if isinstance(a, Val) and "grouped" in a.mm]
        if not views:
            return None
        x, gexpr = views[0].mm["grouped"]
        shape = tuple(x.shape)
        if tuple(torch.broadcast_shapes(*[a.shape for a in args if isinstance(a, Val)])) != shape:
            return None
        if any(isinstance(a, Val) and "grouped" not in a.mm and a.kind not in _LEAF_KINDS
               and not (a.kind == "ew" and self._leaf_chain(a)) for a in args):
            return None  # a reduction of the norm's output (a LayerNorm after it): its kernel's rows, not G's
        g = views[0].args[0].shape[1]  # the layout's G
        moved = []
        for a in args:
            if not isinstance(a, Val):
                moved.append(a)
            elif "grouped" in a.mm:
                ax, ag = a.mm["grouped"]
                if tuple(ax.shape) != shape or ag != gexpr:
                    return None
                moved.append(a.args[0])
            else:
                moved.append(self._regrouped(a, shape, gexpr, g))
                if moved[-1] is None:
                    return None
        return self._grouped_view(self.ew(fn, *moved, dtype=dtype), x, gexpr)

    def _group_operand(self, a: Val, shape: tuple, gexpr: str, g: int) -> Val | None:
        """An operand of an op on shape (N, C, *spatial), as its view in the group norm's (N, G, C/G,
        prod(spatial)) layout, sized from its own shape: (N or 1, C or 1, all spatial dims or none).
        None when it broadcasts otherwise."""
        if a.squeezed:
            return None
        pad = len(shape) - len(a.shape)
        pa = (1,) * pad + tuple(a.shape)
        spatial = pa[2:] == tuple(shape[2:])
        if pa[0] not in (1, shape[0]) or pa[1] not in (1, shape[1]) or not (
                spatial or all(d == 1 for d in pa[2:])):
            return None
        dims = [(f"{{0}}.shape[{0 - pad}]", shape[0]) if pa[0] != 1 else ("1", 1)]
        dims += [(gexpr, g), (f"{{0}}.shape[{1 - pad}] // {gexpr}", shape[1] // g)] if pa[1] != 1 else [("1", 1)] * 2
        dims += [("-1", math.prod(shape[2:])) if spatial and math.prod(shape[2:]) != 1 else ("1", 1)]
        return self.view(f"{{0}}.reshape({', '.join(e for e, _ in dims)})", [a], tuple(n for _, n in dims),
                         a.dtype)

    def _regrouped(self, v: Val, shape: tuple, gexpr: str, g: int) -> Val | None:
        """v, the input of a group norm, in the norm's layout: the elementwise ops that compute it at
        full shape are done again in that layout (their leaves viewed into it), so the norm's row kernel
        takes them as prologue (a convolution's bias, a scale) instead of reading their output."""
        if v.kind != "ew" or tuple(v.shape) != shape or v.squeezed or v.fn == "pick":
            return self._group_operand(v, shape, gexpr, g)
        key = (id(v), gexpr)  # a value two ops read is redone once
        if key not in self.relaid:
            args = [self._regrouped(a, shape, gexpr, g) if isinstance(a, Val) else a for a in v.args]
            out_shape = (shape[0], g, shape[1] // g, math.prod(shape[2:]))
            self.relaid[key] = None if any(a is None for a in args) else self.new(
                "ew", fn=v.fn, args=args, shape=out_shape, dtype=v.dtype)
        return self.relaid[key]

    @staticmethod
    def _full_leaf(v: Val) -> Val | None:
        """A value v's elementwise ops read that is not itself elementwise and has v's whole shape."""
        for a in v.args if v.kind == "ew" else ():
            if isinstance(a, Val) and tuple(a.shape) == tuple(v.shape) and not a.squeezed:
                found = a if a.kind != "ew" else LayoutMixin._full_leaf(a)
                if found is not None:
                    return found
        return None

    def _grouped_view(self, y: Val, x: Val, gexpr: str) -> Val:
        """y, in a group norm's row layout, viewed back as x's shape; later elementwise ops see through it.
        A 2-D x (a Linear's output) is y's dims from 1 on flattened: x itself is not read, so a product
        that computes x can hold the norm in its kernel (partition.fuse_product_rows) and never write x."""
        if len(x.shape) == 2:
            v = self.view("{0}.flatten(1)", [y], x.shape, y.dtype)
        else:
            v = self.view("{0}.reshape({1}.shape)", [y, x], x.shape, y.dtype)
        v.mm["grouped"] = (x, gexpr)
        return v

    # -- views that only add or drop dims of size 1 --
    def unit_view(self, node: fx.Node) -> Val | None:
        """node's value when node only adds or drops dims of size 1 of a computed value, else None (it
        stays a torch call). An elementwise chain of leaves is done again at the view's shape (the kernel
        reading the view takes it as prologue); the view of any other computed value is marked, so that
        elementwise ops on it are done at that value's shape (the kernel computing it takes them)."""
        x = self.env.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, Val) or not hasattr(meta, "shape") or not _unit_only(node) \
                or x.mm.get("tuple") or x.kind in _LEAF_KINDS and "unit_of" not in x.mm:
            return None
        shape = tuple(meta.shape)
        if x.squeezed:  # x.mean((2, 3)).view(B, C, 1, 1): the keepdim reduction, whose kernel takes what follows
            rows = tuple(x.args[0].shape[:len(x.args[0].shape) - x.k]) if x.kind == "red" else None
            return self.new("red", fn=x.fn, args=list(x.args), shape=shape, dtype=x.dtype, k=x.k,
                            mm=dict(x.mm)) if rows is not None and shape == rows + (1,) * x.k else None
        if _data_dims(x.shape) != _data_dims(shape):
            return None
        if x.kind == "ew" and self._leaf_chain(x):
            return self._unit_redone(x, shape)
        return self._unit_view(x.mm.get("unit_of", x), shape)

    def _unit_viewed(self, node: fx.Node) -> fx.Node:
        """The node that `node` views through reshapes only adding or dropping dims of size 1, each read
        once (node itself where it is no such view)."""
        while _unit_only(node) and len(node.users) == 1 and node.args and isinstance(node.args[0], fx.Node) \
                and isinstance(self.env.get(node), Val) and "unit_of" in self.env[node].mm:
            node = node.args[0]
        return node

    def _leaf_chain(self, v: Val) -> bool:
        """Whether v is elementwise ops on leaves alone (no reduction or product under it)."""
        return all(not isinstance(a, Val) or a.kind in _LEAF_KINDS and "unit_of" not in a.mm
                   or a.kind == "ew" and not a.squeezed and self._leaf_chain(a) for a in v.args)

    def _unit_redone(self, v: Val, shape: tuple) -> Val:
        """The elementwise chain v at `shape` (v's shape with dims of size 1 added or dropped), its
        full-shape ops redone there and its other operands viewed there."""
        args = []
        for a in v.args:
            if isinstance(a, Val) and a.kind == "ew" and tuple(a.shape) == tuple(v.shape):
                args.append(self._unit_redone(a, shape))
            elif isinstance(a, Val) and a.shape and a.kind != "scalar":
                args.append(self._unit_mapped(a, v.shape, shape))
            else:
                args.append(a)
        return self.new("ew", fn=v.fn, args=args, shape=shape, dtype=v.dtype)

    def _unit_view(self, src: Val, shape: tuple) -> Val:
        """src at `shape` (dims of size 1 added or dropped), marked as such a view of it: elementwise work on
        the view is done at src's shape, in the kernel computing src."""
        v = self._unit_mapped(src, tuple(src.shape), tuple(shape))
        v.mm["unit_of"] = src
        return v

    def _unit_mapped(self, a: Val, frm: tuple, to: tuple) -> Val:
        """a, which broadcasts to shape `frm`, viewed at shape `to` (the same dims of size over 1, in
        order): a reshape that reads a's own sizes at run time, so it holds at any shape. One view per
        tensor and shape: a kernel reading y twice reads one leaf."""
        memo = (id(a), "unit", tuple(frm), tuple(to))
        if memo not in self.relaid:
            self.relaid[memo] = self._unit_reshaped(a, frm, to)
        return self.relaid[memo]

    def _unit_reshaped(self, a: Val, frm: tuple, to: tuple) -> Val:
        reads = _unit_reads(a.shape, frm, to)
        dims = ", ".join(f"{{0}}.shape[{i}]" if i >= 0 else "1" for i in reads)
        dims = "()" if not to else dims + "," if len(to) == 1 else dims  # reshape((n,)) as reshape(n,)
        return self.view(f"{{0}}.reshape({dims})", [a], tuple(a.shape[i] if i >= 0 else 1 for i in reads),
                         a.dtype)

    def _in_unit_layout(self, fn: str, args, dtype) -> Val | None:
        """An elementwise op on a marked view of a computed value, done at that value's shape with the
        other operands (leaves) viewed there, and viewed back; None when an operand is another computed
        value (it is in the graph's layout) or the op broadcasts past the view's shape."""
        views = [a for a in args if isinstance(a, Val) and "unit_of" in a.mm]
        if not views:
            return None
        src, shape = views[0].mm["unit_of"], tuple(views[0].shape)
        vals = [a for a in args if isinstance(a, Val)]
        if any(a.squeezed for a in vals) or tuple(torch.broadcast_shapes(*[a.shape for a in vals])) != shape:
            return None
        mapped = []
        for a in args:
            if isinstance(a, Val) and "unit_of" in a.mm:
                if tuple(a.shape) != shape or a.mm["unit_of"].shape != src.shape:
                    return None
                mapped.append(a.mm["unit_of"])
            elif not isinstance(a, Val) or a.kind == "scalar" or not a.shape:
                mapped.append(a)
            elif a.kind in _LEAF_KINDS or a.kind == "ew" and not a.squeezed and self._leaf_chain(a):
                padded = (1,) * (len(shape) - len(a.shape)) + tuple(a.shape)
                if any(m != 1 for m, n in zip(padded, shape) if n == 1):
                    return None
                if a.kind in _LEAF_KINDS:
                    mapped.append(self._unit_mapped(a, shape, src.shape))
                else:  # leaves' work (a batch norm's rsqrt(var + eps)): redone there
                    reads = _unit_reads(a.shape, shape, src.shape)
                    mapped.append(self._unit_redone(a, tuple(a.shape[i] if i >= 0 else 1 for i in reads)))
            else:
                return None
        return self._unit_view(self.ew(fn, *mapped, dtype=dtype), shape)

    # -- a user's permute that is the moved layout or its way back --
    def moved_view(self, node: fx.Node) -> Val | None:
        """node's value when node permutes x so that one run of dims moves to the end (ConvNeXt's
        `x.permute(0, 2, 3, 1)` before a LayerNorm over channels), or back (`y.permute(0, 3, 1, 2)`): the
        moved layout's own views, so a row kernel reads x in place through its strides (no copy) and the
        ops after the way back join that kernel; else None (a torch call). Both readings fit most such
        permutes (moving dim 1 last is moving dims 2.. forward): a value a kernel computes from a
        reduction or a product is taken back, anything else moved."""
        x = self.env.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        meta = node.meta.get("tensor_meta")
        if not isinstance(x, Val) or x.squeezed or x.mm.get("tuple") or not hasattr(meta, "shape") \
                or len(x.shape) < 3:
            return None
        perm = _permutation(node, len(x.shape))
        if perm is None:
            return None
        to_end, back = _moved_key(perm, to_end=True), _moved_key(perm, to_end=False)
        computed = x.kind in ("red", "mm", "attn") or x.kind == "ew" and not self._leaf_chain(x)
        if to_end is not None and _rows_after(self.gm, node, len(x.shape)):
            computed = False  # `gelu(y).transpose(1, 2)` into a LayerNorm: its rows are the moved layout's
        if back is not None and (computed or to_end is None):
            v = self._moved_back(x, back)
        elif to_end is not None:
            v = self._moved(x, to_end)
        else:
            return None
        return v if v is not None and tuple(v.shape) == tuple(meta.shape) else None


# ops over the last dim(s) of their input that a row kernel computes: a permute into one of them moves a
# run of dims to the end (its rows), even where the permute could also be the way back from such a layout
_NORM_MODULES = (torch.nn.LayerNorm, torch.nn.RMSNorm)  # over their last dims, always
_SOFTMAX_MODULES = (torch.nn.Softmax, torch.nn.LogSoftmax)
_ROW_FUNCTIONS = {"layer_norm", "rms_norm", "softmax", "log_softmax", "mean", "sum", "amax", "amin", "max", "min",
                  "var", "std", "logsumexp", "norm", "prod"}


def _rows_after(gm: fx.GraphModule, node: fx.Node, rank: int) -> bool:
    """Whether a user of node normalizes or reduces over node's last dim: a LayerNorm (module or
    function, which always does), or a softmax, norm or reduction whose `dim` names it."""
    for u in node.users:
        if u.op == "call_module":
            m = gm.get_submodule(u.target)
            if isinstance(m, _NORM_MODULES) or isinstance(m, _SOFTMAX_MODULES) and m.dim in (-1, rank - 1):
                return True
            continue
        name = u.target if u.op == "call_method" else getattr(u.target, "__name__", None)
        if u.op not in ("call_method", "call_function") or name not in _ROW_FUNCTIONS:
            continue
        if name in ("layer_norm", "rms_norm"):
            return True
        dim = u.kwargs.get("dim", u.args[1] if len(u.args) > 1 else None)
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if any(whole(d) and d % rank == rank - 1 for d in dims):
            return True
    return False


# values kernels read as they are (computed by no kernel of the candidate's)
_LEAF_KINDS = ("input", "param", "scalar", "torch", "view")


def _unit_reads(shape: tuple, frm: tuple, to: tuple) -> list[int]:
    """For each dim of `to`: the dim of a value of `shape` (broadcast to `frm`, whose dims over 1 are
    to's, in order) under it, or -1 where it is 1."""
    pad = len(frm) - len(shape)
    data = iter([p - pad for p, n in enumerate(frm) if n != 1])  # the value's dim under each data dim of frm
    return [-1 if n == 1 else next(data) for n in to]
_UNIT_METHODS = {"squeeze", "unsqueeze", "view", "reshape", "flatten", "unflatten"}
_UNIT_FNS = {torch.squeeze, torch.unsqueeze, torch.reshape, torch.flatten}


def _unit_only(node: fx.Node) -> bool:
    """Whether node is a reshape that keeps the order of its input's elements (with the shapes alike but
    for dims of size 1, it only adds or drops those): no transpose, permute or gather."""
    if node.op == "call_method":
        return node.target in _UNIT_METHODS
    if node.op != "call_function":
        return False
    if node.target in _UNIT_FNS:
        return True
    if node.target is operator.getitem and len(node.args) == 2:
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        return all(i is None or i is Ellipsis or isinstance(i, int) and not isinstance(i, bool)
                   or i == slice(None) for i in index)
    return False


def _data_dims(shape) -> tuple:
    return tuple(n for n in shape if n != 1)


def moved_order(src: tuple, rank: int) -> list[int]:
    """The original dim at each position of the moved layout: the others in order, then src."""
    return [d for d in range(rank) if d not in src] + list(src)


def _permutation(node: fx.Node, rank: int) -> list[int] | None:
    """The dim order node makes of its input (output dim i is input dim perm[i]): permute, transpose and
    movedim as methods or torch functions, with int arguments; None for anything else."""
    fns = {torch.permute: "permute", torch.transpose: "transpose", torch.movedim: "movedim"}
    name = node.target if node.op == "call_method" else fns.get(node.target) if node.op == "call_function" else None
    names = {"permute": ("dims",), "transpose": ("dim0", "dim1"), "movedim": ("source", "destination")}.get(name)
    if names is None:
        return None
    args = list(node.args[1:])
    if name == "permute" and len(args) > 1:  # x.permute(0, 2, 1)
        args = [tuple(args)]
    args += [node.kwargs[k] for k in names[len(args):] if k in node.kwargs]
    if len(args) != len(names):
        return None
    ints = [a if isinstance(a, (tuple, list)) else [a] for a in args]
    if not all(isinstance(i, int) and not isinstance(i, bool) for a in ints for i in a):
        return None
    if name == "permute":
        perm = [d % rank for d in ints[0]]
        return perm if sorted(perm) == list(range(rank)) else None
    if name == "transpose":
        perm = list(range(rank))
        a, b = args[0] % rank, args[1] % rank
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    return _movedim_perm(rank, [d % rank for d in ints[0]], [d % rank for d in ints[1]])


def _movedim_perm(rank: int, src: list[int], dst: list[int]) -> list[int] | None:
    """torch.movedim's dim order: src dims at the dst positions, the others in order around them."""
    if len(src) != len(dst) or len(set(src)) != len(src) or len(set(dst)) != len(dst):
        return None
    out: list[int | None] = [None] * rank
    for s_, d in zip(src, dst):
        out[d] = s_
    rest = iter(i for i in range(rank) if i not in src)
    return [o if o is not None else next(rest) for o in out]


def _moved_key(perm: list[int], to_end: bool) -> tuple | None:
    """The moved layout's key (dims, where they go) when perm moves one run of dims to the end (to_end),
    or the trailing run back to where such a key had moved it from; None when it does neither."""
    rank = len(perm)
    for k in range(1, rank):
        for d0 in range(rank - k):
            src, dst = list(range(d0, d0 + k)), list(range(rank - k, rank))
            if (_movedim_perm(rank, src, dst) if to_end else _movedim_perm(rank, dst, src)) == perm:
                return tuple(src), tuple(dst)
    return None
