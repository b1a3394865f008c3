"""Matmuls whose use makes most of their work unneeded, rewritten to the work that is needed:

- diag(v) @ B and A @ diag(v): a scaling of B's rows or A's columns (N² work, not N³);
- tril / triu of a product: the product's template skips the tiles outside the triangle;
- a sum or mean over the last dim of a product (after bias adds and scalings): the sum of x·W's
  columns is x times the sum of W's columns, a matrix-vector product (GEMM → GEMV).

Beside them, einsums that are matmuls are lowered as those matmuls. They are the lowerer's methods
(graph._Lowerer). The roofline counts the same work as needed
(kevolve.profiling.roofline._structured_products), so a kernel doing less is not 'faster than light'."""

from __future__ import annotations

import torch.fx as fx

from .ir import NotFusable, Val, whole


class ProductsMixin:
    def diag_matrix(self, x: Val) -> Val:
        """torch.diag of a vector: the matrix torch builds, marked so that a matmul with it scales the
        other operand's rows or columns instead (the matrix itself is then never built)."""
        v = self.new("torch", expr="torch.diag({0})", args=[x], shape=(x.shape[0],) * 2, dtype=x.dtype)
        v.mm["diag_of"] = x
        return v

    def diagonal_product(self, a: Val, b: Val) -> Val | None:
        """a @ b where one side is diag(v), as a scaling; None otherwise."""
        if a.dtype != b.dtype or len(a.shape) < 2 or len(b.shape) < 2:
            return None
        if a.mm.get("diag_of") is not None:  # diag(v) @ b: b's rows scaled
            v = a.mm["diag_of"]
            return self.ew("mul", self.view("{0}.reshape(-1, 1)", [v], (v.shape[0], 1), v.dtype), b)
        if b.mm.get("diag_of") is not None:  # a @ diag(v): a's columns scaled
            return self.ew("mul", a, b.mm["diag_of"])
        return None

    def triangle_of_product(self, x: Val, node: fx.Node, upper: bool, offset) -> bool:
        """torch.tril / triu of a matmul nothing else reads: the product keeps its triangle itself (its
        template skips the tiles outside, half the work of a square product). False: torch's op."""
        if x.kind != "mm" or "tri" in x.mm or len(node.users) != 1 or not whole(offset) \
                or not (len(x.args[0].shape) == 2 or x.mm.get("batched")):
            return False
        x.mm["tri"] = (upper, offset)
        return True

    def reduced_product(self, fn: str, y: Val) -> Val | None:
        """sum or mean over the last dim of y, where y is a 2-D-weight matmul x @ W (or x @ W.T) followed
        only by adds of vectors along that dim (a bias), of scalars (a mean only: a sum would need
        the dim's size), scalings and negation: the same reduction applied to W's rows (or columns)
        first, then x times that vector, one row reduction. The result keeps the reduced dim (size 1);
        None where y is not of that form."""
        if y.kind == "mm":
            x, w = y.args
            if y.mm.get("batched") or "tri" in y.mm or len(w.shape) != 2 or w.squeezed or x.squeezed:
                return None
            if y.mm["trans_b"]:  # W is (N, K): its columns reduced, (1, K)
                w_reduced = self.reduce(fn, w, 0, True, {})
            else:  # (K, N): its rows reduced, (K, 1), viewed as (1, K)
                rows = self.reduce(fn, w, 1, True, {})
                w_reduced = self.view("{0}.reshape(1, -1)", [rows], (1, w.shape[0]), w.dtype)
            return self.red("sum", self.ew("mul", x, w_reduced), -1, True)
        if y.kind != "ew" or y.squeezed or y.fn not in ("add", "sub", "mul", "div", "neg"):
            return None
        if y.fn == "neg":
            inner = self.reduced_product(fn, y.args[0])
            return None if inner is None else self.ew("neg", inner)
        u, c = y.args
        swapped = not isinstance(u, Val) or u.kind == "scalar" or u.shape != y.shape
        if swapped:
            u, c = c, u
        if not isinstance(u, Val) or u.shape != y.shape:
            return None
        scalar = not isinstance(c, Val) or c.kind == "scalar"
        if y.fn in ("mul", "div"):  # by a scalar: the reduction scales (c / u does not)
            inner = self.reduced_product(fn, u) if scalar and not (swapped and y.fn == "div") else None
            return None if inner is None else self.ew(y.fn, inner, c)
        if scalar:
            if fn != "mean":
                return None
            shift = c
        elif not c.squeezed and len(c.shape) <= len(y.shape) and all(n == 1 for n in c.shape[:-1]):
            # a vector along the reduced dim: its own sum or mean, kept as (1, ..., 1) to broadcast
            shift = self.reduce(fn, c, list(range(len(c.shape))), True, {})
        else:
            return None
        inner = self.reduced_product(fn, u)
        if inner is None:
            return None
        if y.fn == "add":
            return self.ew("add", inner, shift)
        return self.ew("sub", shift, inner) if swapped else self.ew("sub", inner, shift)

    def einsum(self, equation: str, a, b) -> Val:
        """A two-operand einsum that is a (batched) matmul: 'bik,kj->bij', 'bij,bjk->bik', 'bhqd,bhkd->bhqk'
        (b read transposed), 'ij,jk->ik'. Others stay torch's."""
        if not isinstance(a, Val) or not isinstance(b, Val) or "->" not in equation:
            raise NotFusable
        inputs, out = equation.replace(" ", "").split("->")
        sa, sb = (inputs.split(",") + [""])[:2] if inputs.count(",") == 1 else ("", "")
        if len(sa) != len(a.shape) or len(sb) != len(b.shape) or len(sa) < 2 or len(sb) < 2 \
                or len(set(sa)) != len(sa) or len(set(sb)) != len(sb) or not (sa + sb).isalpha():
            raise NotFusable
        batch, m, k = sa[:-2], sa[-2], sa[-1]
        n = sb[-1] if sb[-2] == k else sb[-2] if sb[-1] == k else None
        if n is None or n in sa or k in out or out != batch + m + n or sb[:-2] not in ("", batch) \
                or (len(sb) > 2 and len(sb) != len(sa)):
            raise NotFusable
        if sb[-2] == k:  # (..., m, k) @ (k, n) or (..., k, n)
            return self.matmul(a, b, False)
        if len(sb) == 2:  # (..., m, k) @ (n, k).T
            return self.matmul(a, b, True)
        bt = self.view("{0}.transpose(-2, -1)", [b], tuple(b.shape[:-2]) + (b.shape[-1], b.shape[-2]), b.dtype)
        return self.matmul(a, bt, False)
