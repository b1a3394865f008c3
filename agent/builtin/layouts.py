"""Layouts a row kernel computes in, other than the graph's own: a group norm's (N, G, C/G, H*W) rows,
and a reduction over middle dims moved to the end ((N, C, H, W) over C as (N, H, W, C) rows). The
elementwise ops that compute a value entering such a layout are done again in it from their leaves'
views (the kernel's prologue); ops on a value viewed back from it are done in it too (its epilogue)."""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from .ir import NotFusable, Val


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
        moved = self._over_middle_dims(x, dim)
        if moved is None:
            return None
        xm, (src, dst) = moved
        return self._squeeze(self._moved_back(compute(xm, list(dst)), (src, dst)), list(src), keepdim)

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
        v = self.view(f"{{0}}{index}.movedim({src}, {dst})", [a], tuple(padded_shape[d] for d in _moved_order(src, r)),
                      a.dtype)
        v.mm["barrier"] = src[0]  # the dims after the moved ones start here; in memory they are apart
        return v

    def _moved(self, v: Val, key: tuple) -> Val | None:
        """v in the layout `key`: its elementwise ops at full shape redone there from their leaves' views."""
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
        for pos, d in enumerate(_moved_order(src, len(y.shape))):
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


def _moved_order(src: tuple, rank: int) -> list[int]:
    """The original dim at each position of the moved layout: the others in order, then src."""
    return [d for d in range(rank) if d not in src] + list(src)
