"""Matmuls whose use makes most of their work unneeded, rewritten to the work that is needed:

- diag(v) @ B and A @ diag(v): a scaling of B's rows or A's columns (N² work, not N³);
- tril / triu of a product: the product's template skips the tiles outside the triangle;
- a product with a side of one (fp32): a @ v a row reduction, x @ W with one row a column reduction,
  an outer product a broadcast multiply, where a matmul tile would pad that side to 16 or 32;
- a sum or mean over the last dim of a product (after bias adds and scalings): the sum of x·W's
  columns is x times the sum of W's columns, a matrix-vector product (GEMM → GEMV);
- a sum or mean over a convolution's channels: the convolution with its weight reduced over them;
- a mean or sum over every spatial dim of a convolution (after per-channel affines and scalings, a
  global average pool): a convolution is linear, so the sum of its outputs is, per input channel and
  kernel tap, the sum of the inputs that tap reads (`_tap_sums`, one read of x) times the weight, a
  (N, CI·taps) x (CI·taps, CO) product. The convolution itself is never computed. Over a leading or
  trailing run of spatial dims: the input's sums per tap of those dims (a product with a 0/1 matrix),
  then a lower-rank convolution over the others. A sum through a shift is the mean times the count.

Average pools of convolutions and products are folded into their weights the same way (pool_folds.py).
Beside them, einsums that are matmuls are lowered as those matmuls. They are the lowerer's methods
(graph._Lowerer). The roofline counts the same work as needed
(kevolve.profiling.roofline._structured_products), so a kernel doing less is not 'faster than light'."""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from .ir import PREPARED_CACHE, NotFusable, Val, made_once, whole
from .partition import own


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

    def thin_product(self, a: Val, b: Val, trans_b: bool) -> Val | None:
        """a @ b (b read as (N, K) where trans_b) with N, M or K equal to 1, in fp32: N = 1 (a matrix-vector
        product, batched too) is a row reduction of a times b's row, M = 1 a column (or, with trans_b,
        row) reduction, K = 1 (an outer product) a broadcast multiply. A matmul tile pads the side of
        one to 16 or 32 and wastes the rest of its work; these read each operand once, at the memory's
        speed, as cuBLAS's GEMV does. None otherwise."""
        if a.dtype != torch.float32 or b.dtype != a.dtype or len(a.shape) < 2 or a.squeezed or b.squeezed:
            return None
        k, n = a.shape[-1], (b.shape[0] if trans_b else b.shape[-1])
        if len(b.shape) > 2:  # batched (b's batch dims are a's): only a @ v, v as (..., 1, K)
            if n != 1 or trans_b:
                return None
            v = self.view("{0}.transpose(-2, -1)", [b], tuple(b.shape[:-2]) + (1, k), b.dtype)
            return self.red("sum", self.ew("mul", a, v), -1, True)

        def as_row(v: Val) -> Val:  # a (K, 1) or (N, 1) operand as the (1, K) or (1, N) row it holds
            return v if v.shape[0] == 1 else self.view("{0}.reshape(1, -1)", [v], (1, v.shape[0]), v.dtype)

        if n == 1:
            return self.red("sum", self.ew("mul", a, b if trans_b else as_row(b)), -1, True)
        if k == 1:
            return self.ew("mul", a, as_row(b) if trans_b else b)
        if len(a.shape) == 2 and a.shape[0] == 1:
            if trans_b:  # (N, K) rows each dotted with a's row: (N, 1), viewed as the (1, N) result
                return as_row(self.red("sum", self.ew("mul", a, b), -1, True))
            a_col = self.view("{0}.reshape(-1, 1)", [a], (k, 1), a.dtype)
            return self.col("sum", self.ew("mul", a_col, b), 0, True)
        return None

    def vector_product(self, t, a, b) -> Val:
        """torch.dot / inner of two vectors (a sum of their product) and torch.outer / ger (a broadcast
        multiply), fp32; other shapes and dtypes stay torch's."""
        a, b = self.own_rows(a), self.own_rows(b)
        if not isinstance(a, Val) or not isinstance(b, Val) or len(a.shape) != 1 or len(b.shape) != 1 \
                or a.dtype != torch.float32 or b.dtype != a.dtype or a.squeezed or b.squeezed:
            raise NotFusable
        if t in (torch.outer, torch.ger):
            column = self.view("{0}.reshape(-1, 1)", [a], (a.shape[0], 1), a.dtype)
            return self.ew("mul", column, self.view("{0}.reshape(1, -1)", [b], (1, b.shape[0]), b.dtype))
        return self.red("sum", self.ew("mul", a, b), -1, False)

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
        the dim's size), scalings by scalars and negation: the same reduction applied to W's rows (or
        columns) first, then x times that vector, one row reduction. The result keeps the reduced dim
        (size 1); None where y is not of that form."""
        def product(y: Val) -> Val | None:
            x, w = y.args
            if y.mm.get("batched") or "tri" in y.mm or len(w.shape) != 2 or w.squeezed or x.squeezed:
                return None
            if y.mm["trans_b"]:  # W is (N, K): its columns reduced, (1, K)
                w_reduced = self.reduce(fn, w, 0, True, {})
            else:  # (K, N): its rows reduced, (K, 1), viewed as (1, K)
                rows = self.reduce(fn, w, 1, True, {})
                w_reduced = self.view("{0}.reshape(1, -1)", [rows], (1, w.shape[0]), w.dtype)
            return self.red("sum", self.ew("mul", x, w_reduced), -1, True)

        def operand(c, y: Val, scaling: bool):  # a vector along the reduced (last) dim
            along = isinstance(c, Val) and not c.squeezed and len(c.shape) <= len(y.shape) \
                and all(n == 1 for n in c.shape[:-1])
            return self._reduced_operand(fn, c, scaling, along)

        return self._through_affines(y, "mm", product, operand)

    def reduced_conv(self, fn: str, y: Val, dims: list[int], read_besides: bool = False) -> Val | None:
        """sum or mean over spatial dims `dims` of y (kept, size 1), where y is a one-group convolution (or
        a transposed one) followed only by adds of per-channel vectors or numbers, scalings by them and
        negation: over every spatial dim, the tap sums of its input times its weight (module docstring);
        over a leading or trailing run of them, `_partly_reduced`. A shift adds once per position summed,
        so a sum through one is the mean times the positions' count (`_output_count`, at run time). None
        where y is not of that form. `read_besides`: the convolution is computed anyway (`y - y.mean(...)`);
        then only where its input is no larger than its output (at the problem's sizes), the tap sums
        reading less than a reduction of y would, and the work after needing no pass over y of its own:
        the subtraction joins the convolution's kernel (its implicit-GEMM variant) or cuDNN's tail."""
        convs: list[Val] = []

        def conv(y: Val, how: str) -> Val | None:
            x, w, cfg = y.args
            if y.mm["groups"] != 1 or y.dtype != torch.float32 or x.squeezed:
                return None
            if read_besides and (len(dims) < len(y.shape) - 2 or math.prod(own(x)) > math.prod(own(y))):
                return None
            convs.append(y)
            transposed = bool(y.mm.get("transposed"))
            if len(dims) < len(y.shape) - 2:
                return self._partly_reduced(how, y, dims)
            n, ci = x.shape[0], x.shape[1]
            taps = math.prod(w.shape[2:])
            t = self.new("torch", expr=f"_tap_sums({{0}}, {{1}}.shape[2:], {{2}}, {transposed}, {how == 'mean'})",
                         args=[x, w, cfg], shape=(n, ci * taps), dtype=y.dtype)
            # the weight as (CO, CI·taps): a transposed convolution's is (CI, CO, *kernel), a copy made once
            w2 = self._made_once("_tap_weight", [w], "", (y.shape[1], ci * taps), w.dtype) if transposed else \
                self.view("{0}.reshape({0}.shape[0], -1)", [w], (y.shape[1], ci * taps), w.dtype)
            s = self.matmul(t, w2, trans_b=True)
            # viewed to the keepdim shape, marked so that elementwise work on it joins the product's kernel
            return self._unit_view(s, tuple(y.shape[:2]) + (1,) * (len(y.shape) - 2))

        def operand(c, y: Val, scaling: bool, how: str):
            return c if (_per_channel(c, y) or _number(c)) and (scaling or how == "mean") else None

        folded = self._through_affines(y, "conv", lambda v: conv(v, fn), lambda *a: operand(*a, fn))
        if folded is not None or fn != "sum":
            return folded
        mean = self._through_affines(y, "conv", lambda v: conv(v, "mean"), lambda *a: operand(*a, "mean"))
        if mean is None:
            return None
        x, w, cfg = convs[-1].args
        count = self.new("torch", args=[x, w, cfg], shape=(), dtype=torch.float32,
                         expr=f"_memo(_output_count, {{0}}.shape[2:], {{1}}.shape[2:], {{2}}, "
                              f"{bool(convs[-1].mm.get('transposed'))}, {tuple(d - 2 for d in dims)}, {{0}}.device)")
        return self.ew("mul", mean, count)

    def channel_reduced_conv(self, fn: str, y: Val) -> Val | None:
        """sum or mean over the channels (dim 1, kept) of y, a one-group convolution (or transposed one) in
        fp32 followed only by adds of per-channel vectors (a bias: its own sum or mean) or of numbers (a
        mean only), scalings by numbers and negation: a convolution is linear in its weight, so this is
        the convolution with the weight summed or averaged over its output channels, one output channel
        (`_channel_reduced_weight`, made once per model). A ConvTranspose3d of 16
        channels then their mean computes 1/16 of the products. None where y is not of that form."""
        def conv(y: Val) -> Val | None:
            x, w, cfg = y.args
            if y.mm["groups"] != 1 or y.dtype != torch.float32 or x.squeezed or w.squeezed:
                return None
            dim = 1 if y.mm.get("transposed") else 0  # (CI, CO, *kernel) or (CO, CI, *kernel)
            w_reduced = self._made_once("_channel_reduced_weight", [w], f", {dim}, {fn == 'mean'}",
                                        tuple(1 if d == dim else n for d, n in enumerate(w.shape)), w.dtype)
            return self.new("conv", args=[x, w_reduced, cfg], shape=(y.shape[0], 1) + tuple(y.shape[2:]),
                            dtype=y.dtype, mm=dict(y.mm, one_channel=True))

        return self._through_affines(y, "conv", conv,
                                     lambda c, y, scaling: self._reduced_operand(fn, c, scaling, _per_channel(c, y)))

    def _reduced_operand(self, fn: str, c, scaling: bool, along: bool):
        """What a scaling by c or a shift by c becomes when a sum or mean over one dim moves inside it: a
        number stays (a shift only under a mean: a sum would add it once per element); a tensor that
        varies `along` that dim, as a shift, is its own sum or mean, kept as (1, ..., 1) to broadcast.
        None: not linear there."""
        if _number(c):
            return c if scaling or fn == "mean" else None
        if not scaling and along:
            return self.reduce(fn, c, list(range(len(c.shape))), True, {})
        return None

    def _partly_reduced(self, fn: str, y: Val, dims: list[int]) -> Val | None:
        """The sum or mean of convolution y over a leading or trailing run of its spatial dims (ConvTranspose3d
        then a mean over depth): per input channel, x summed over the positions each tap of those dims
        reads (one product with a 0/1 matrix, `_partial_tap_sums`), then a convolution over the other
        dims whose input channels are (channel, tap) pairs (`_partial_tap_weight`, made once). The
        convolution over the reduced dims is never computed. None for a run in the middle."""
        x, w, cfg = y.args
        d, transposed, mean = len(y.shape) - 2, bool(y.mm.get("transposed")), fn == "mean"
        first, count = dims[0] - 2, len(dims)
        if dims != list(range(dims[0], dims[0] + count)) or first not in (0, d - count):
            return None
        taps = math.prod(w.shape[2 + first:2 + first + count])
        kept = [j for j in range(2, 2 + d) if j not in dims]
        hits = self.new("torch", expr=f"_memo(_tap_matrix, {{0}}.shape[2:], {{1}}.shape[2:], {{2}}, {transposed}, "
                                      f"{mean}, {tuple(j - 2 for j in dims)}, {{0}}.device)",
                        args=[x, w, cfg], shape=(taps, math.prod(x.shape[j] for j in dims)), dtype=y.dtype)
        sums = self.new("torch", expr=f"_partial_tap_sums({{0}}, {{1}}, {first}, {count})", args=[x, hits],
                        shape=(x.shape[0], x.shape[1] * taps) + tuple(x.shape[j] for j in kept), dtype=y.dtype)
        w_kept = tuple(w.shape[j] for j in kept)
        w2 = self._made_once("_partial_tap_weight", [w], f", {transposed}, {first}, {count}",
                             ((w.shape[0] * taps, w.shape[1]) if transposed else (w.shape[0], w.shape[1] * taps))
                             + w_kept, w.dtype)
        cfg2 = self.new("torch", expr=f"_memo(_kept_geometry, {{0}}, {d}, {first}, {count}, {transposed})", args=[cfg],
                        shape=(), dtype=torch.float32, mm={"tuple": True})
        s = self.new("conv", args=[sums, w2, cfg2], shape=tuple(y.shape[:2]) + tuple(y.shape[j] for j in kept),
                     dtype=y.dtype, mm=dict(y.mm, dims=d - count, conv2d=d - count == 2, traced=None))
        return self._unit_view(s, tuple(1 if j in dims else n for j, n in enumerate(y.shape)))

    def _made_once(self, maker: str, args: list, extra: str, shape: tuple, dtype) -> Val:
        """maker(*args` + extra`) as a torch value: made once per model (codegen's _prepared) where each
        tensor it reads is a parameter or made once itself, every forward otherwise (a computed tensor's
        storage comes back with its version reset, so the cache could not tell it changed)."""
        slots = ", ".join(f"{{{i}}}" for i in range(len(args)))
        v = self.new("torch", expr=f"{maker}({slots}{extra})", args=args, shape=shape, dtype=dtype)
        if all(made_once(a) or a.mm.get("tuple") for a in args):
            v.expr = f"_prepared({PREPARED_CACHE}, {v.name!r}, {maker}, {slots}{extra})"
        return v

    def _through_affines(self, y: Val, kind, base, operand) -> Val | None:
        """A reduction of y computed another way, through the adds, subtractions, scalings and negations
        between y and a value of `kind` (a Val kind, or a test of a Val): base(that value) is its reduced
        form (None: it has none), and operand(c, op's value, scaling) what a scaling by c or a shift by c
        becomes (None: not linear there). None where y is not of that form."""
        if (kind(y) if callable(kind) else y.kind == kind):
            return base(y)
        if y.kind != "ew" or y.squeezed or y.fn not in ("add", "sub", "mul", "div", "neg"):
            return None
        if y.fn == "neg":
            inner = self._through_affines(y.args[0], kind, base, operand)
            return None if inner is None else self.ew("neg", inner)
        u, c = y.args
        swapped = not isinstance(u, Val) or u.kind == "scalar" or u.shape != y.shape
        if swapped:
            u, c = c, u
        if not isinstance(u, Val) or u.shape != y.shape or swapped and y.fn == "div":  # c / u is not linear
            return None
        other = operand(c, y, y.fn in ("mul", "div"))
        inner = self._through_affines(u, kind, base, operand) if other is not None else None
        if inner is None:
            return None
        if y.fn != "sub":
            return self.ew(y.fn, inner, other)
        return self.ew("sub", other, inner) if swapped else self.ew("sub", inner, other)

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


def _per_channel(c, y: Val) -> bool:
    """Whether c is a tensor that varies along the channels of y = (N, C, *spatial) only: (C, 1, ..) or
    (1, C, 1, ..)."""
    spatial = len(y.shape) - 2
    return isinstance(c, Val) and c.kind != "scalar" and not c.squeezed \
        and spatial < len(c.shape) <= len(y.shape) and all(d == 1 for d in c.shape[-spatial:]) \
        and all(d == 1 for d in c.shape[:-(spatial + 1)])


def _number(c) -> bool:
    """Whether c is the same at every position: a Python number, a scalar attribute, a tensor of one value
    (a 0-dim Parameter)."""
    return not isinstance(c, Val) or c.kind == "scalar" or not c.squeezed and all(n == 1 for n in c.shape)


def _per_dim(v, d: int) -> list[int]:
    """A traced int or per-dim tuple (of 1 or d values) as d values."""
    return [v] * d if isinstance(v, int) else list(v) * (d // len(v))


# the helpers a candidate file takes when its forward (or another helper) calls the function each is named by
TAP_SUM_HELPERS = {"_tap_sums": '''TAP_SUMS_TILE = 2048  # input positions a program reads a step
TAP_SUMS_NUM_WARPS = 4


@triton.jit
def _tap_hits(i, k, S: tl.constexpr, P, D, O, TRANSPOSED: tl.constexpr):
    \"\"\"Whether kernel tap k of one spatial dim reads input position i for some output o (broadcast).\"\"\"
    if TRANSPOSED:  # o = i * S - P + k * D
        o = i * S - P + k * D
        return (o >= 0) & (o < O)
    t = i + P - k * D  # o = (i + P - k * D) / S, when a whole number
    return (t >= 0) & (t % S == 0) & (t < O * S)


@triton.jit
def _tap_sums_kernel(x_ptr, out_ptr, R, rows_per_split, I1, I2, O0, O1, O2, P0, P1, P2, D0, D1, D2, scale,
                     S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
                     N_TAPS: tl.constexpr, K01: tl.constexpr, K2P: tl.constexpr, TRANSPOSED: tl.constexpr,
                     SPLIT: tl.constexpr, BR: tl.constexpr, BC: tl.constexpr):
    # Separable: a plane's rows are its (i0, i1), its columns i2. Each row's sums over the columns a tap
    # k2 reads, then those row sums over the rows a tap pair (k0, k1) reads: about K2 adds an input.
    plane = tl.program_id(0)  # one (sample, input channel)
    part = tl.program_id(1)
    k01 = tl.arange(0, K01)
    k2s = tl.arange(0, K2P)
    k0 = k01 // K1
    k1 = k01 % K1
    acc = tl.zeros([K2P, K01], tl.float32)
    first = part * rows_per_split
    last = tl.minimum(first + rows_per_split, R)
    base = x_ptr + plane.to(tl.int64) * R * I2
    for r0 in range(first, last, BR):
        rows = r0 + tl.arange(0, BR)
        row_ok = rows < last
        hit01 = _tap_hits((rows // I1)[:, None], k0[None, :], S0, P0, D0, O0, TRANSPOSED) \\
            & _tap_hits((rows % I1)[:, None], k1[None, :], S1, P1, D1, O1, TRANSPOSED) & row_ok[:, None]
        for c0 in range(0, I2, BC):
            cols = c0 + tl.arange(0, BC)
            x = tl.load(base + rows[:, None] * I2 + cols[None, :], mask=row_ok[:, None] & (cols < I2)[None, :],
                        other=0).to(tl.float32)
            for k2 in tl.static_range(K2):
                hit2 = _tap_hits(cols, k2, S2, P2, D2, O2, TRANSPOSED) & (cols < I2)
                row_sums = tl.sum(tl.where(hit2[None, :], x, 0.0), axis=1)
                per_pair = tl.sum(tl.where(hit01, row_sums[:, None], 0.0), axis=0)
                acc += tl.where(k2s[:, None] == k2, per_pair[None, :], 0.0)
    # taps in the weight's order: (k0 * K1 + k1) * K2 + k2
    taps = k01[None, :] * K2 + k2s[:, None]
    ok = (k2s[:, None] < K2) & (taps < N_TAPS)
    tl.store(out_ptr + (plane * SPLIT + part) * N_TAPS + taps, acc * scale, mask=ok)


def _tap_plan(spatial, kernel, cfg, transposed, mean, planes, device):
    \"\"\"Launch settings of _tap_sums at these sizes: the output sizes as the convolution computes them,
    each per-dim value padded in front to 3 dims; the tile, and the split of each plane's rows over
    programs (enough programs to fill the GPU).\"\"\"
    d = len(spatial)
    geometry = _spatial_geometry(spatial, kernel, cfg, transposed)
    stride, padding, dilation, out = (_spatial3(v, d, fill) for v, fill in zip(geometry, (1, 0, 1, 1)))
    size, kernel = _spatial3(spatial, d, 1), _spatial3(kernel, d, 1)
    rows = size[0] * size[1]
    bc = min(_pow2(size[2]), 128)
    br = max(2, min(_pow2(rows), TAP_SUMS_TILE // bc))
    split = max(1, min(_cdiv(rows, br), _cdiv(4 * _sm_count(device), planes)))
    rows_per_split = _cdiv(_cdiv(rows, split), br) * br
    return dict(R=rows, rows_per_split=rows_per_split, I1=size[1], I2=size[2], O=out, P=padding, D=dilation,
                S=stride, K=kernel, n_taps=math.prod(kernel), k01=_pow2(kernel[0] * kernel[1]),
                k2p=_pow2(kernel[2]), split=_cdiv(rows, rows_per_split), br=br, bc=bc,
                scale=1.0 / math.prod(out) if mean else 1.0)


def _tap_sums(x, kernel, cfg, transposed, mean):
    \"\"\"(N, CI·taps): per sample, input channel and kernel tap, the sum (mean: over the output positions,
    divided by their count) of the inputs that tap reads over all output positions of the convolution.\"\"\"
    x = x.contiguous()
    n, ci = x.shape[:2]
    p = _memo(_tap_plan, tuple(x.shape[2:]), tuple(kernel), cfg, transposed, mean, n * ci, x.device)
    out = torch.empty((n * ci, p["split"], p["n_taps"]), device=x.device, dtype=torch.float32)
    _tap_sums_kernel[(n * ci, p["split"])](
        x, out, p["R"], p["rows_per_split"], p["I1"], p["I2"], *p["O"], *p["P"], *p["D"], p["scale"], *p["S"],
        p["K"][1], p["K"][2], N_TAPS=p["n_taps"], K01=p["k01"], K2P=p["k2p"], TRANSPOSED=transposed,
        SPLIT=p["split"], BR=p["br"], BC=p["bc"], num_warps=TAP_SUMS_NUM_WARPS)
    out = out.sum(1) if p["split"] > 1 else out.squeeze(1)
    return out.reshape(n, -1).to(x.dtype)''',
    "_spatial_geometry": '''def _spatial_geometry(spatial, kernel, cfg, transposed):
    """(stride, padding, dilation, output size) per spatial dim of a convolution (a transposed one: output
    padding in cfg[4]) as PyTorch computes them, padding 'same' as the front padding it means."""
    d = len(spatial)
    stride, padding, dilation = (_spatial3(0 if isinstance(v, str) else v, d, fill)[-d:]  # padding 'valid': 0
                                 for v, fill in zip(cfg[:3], (1, 0, 1)))
    if transposed:
        out = [(n - 1) * s - 2 * p + dl * (k - 1) + e + 1 for n, k, s, p, dl, e in
               zip(spatial, kernel, stride, padding, dilation, _spatial3(cfg[4], d, 0)[-d:])]
    elif cfg[1] == "same":  # stride 1: half the padding in front (rounded down), the output the input's size
        padding, out = [dl * (k - 1) // 2 for dl, k in zip(dilation, kernel)], list(spatial)
    else:
        out = [(n + 2 * p - dl * (k - 1) - 1) // s + 1 for n, k, s, p, dl in
               zip(spatial, kernel, stride, padding, dilation)]
    return stride, padding, dilation, out''',
    "_channel_reduced_weight": '''def _channel_reduced_weight(w, dim, mean):
    """A convolution's weight summed (or averaged) over its output channels, kept: one output channel."""
    return w.mean(dim, keepdim=True) if mean else w.sum(dim, keepdim=True)''',
    "_tap_weight": '''def _tap_weight(w):
    """A transposed convolution's weight (CI, CO, *kernel) as (CO, CI·taps), in the tap sums' order."""
    return w.transpose(0, 1).reshape(w.shape[1], -1)''',
    "_output_count": '''def _output_count(spatial, kernel, cfg, transposed, dims, device):
    """How many output positions a convolution has over spatial dims `dims`, as a 0-d tensor."""
    out = _spatial_geometry(spatial, kernel, cfg, transposed)[3]
    return torch.tensor(float(math.prod(out[j] for j in dims)), device=device)''',
    "_partial_tap_sums": '''def _tap_matrix(spatial, kernel, cfg, transposed, mean, dims, device):
    """(taps, positions) of the spatial dims `dims` together (row-major): 1 where the tap reads the input
    position for some output position (a mean's: 1 / the outputs' count over those dims), else 0."""
    stride, padding, dilation, out = _spatial_geometry(spatial, kernel, cfg, transposed)
    hits = torch.ones((1, 1), device=device)
    for j in dims:
        i, k = torch.arange(spatial[j], device=device)[None, :], torch.arange(kernel[j], device=device)[:, None]
        if transposed:  # output o = i·s - p + k·dilation
            o = i * stride[j] - padding[j] + k * dilation[j]
            hit = (o >= 0) & (o < out[j])
        else:  # o = (i + p - k·dilation) / s, when a whole number
            t = i + padding[j] - k * dilation[j]
            hit = (t >= 0) & (t % stride[j] == 0) & (t < out[j] * stride[j])
        hits = torch.kron(hits, hit.float())
    return hits / math.prod(out[j] for j in dims) if mean else hits


def _partial_tap_sums(x, hits, first, count):
    """(N, CI·taps, *kept): per input channel, the sums of x over the positions each tap of spatial dims
    first .. first + count - 1 reads (hits: _tap_matrix), the other spatial dims kept; one product."""
    n, ci, spatial = x.shape[0], x.shape[1], list(x.shape[2:])
    run = math.prod(spatial[first:first + count])
    kept = spatial[:first] + spatial[first + count:]
    if first == 0:  # leading dims: (taps, run) @ (N·CI, run, rest)
        t = torch.matmul(hits, x.reshape(n * ci, run, -1))
    else:  # trailing dims: (N·CI, lead, run) @ (run, taps), the taps then put before the kept dims
        t = torch.matmul(x.reshape(n * ci, -1, run), hits.t()).transpose(1, 2)
    return t.reshape(n, ci * hits.shape[0], *kept)


def _partial_tap_weight(w, transposed, first, count):
    """The weight of the convolution over the kept dims: the reduced dims' taps joined to the input
    channels in the tap sums' order, (CO, CI·taps, *kept) (transposed: (CI·taps, CO, *kept))."""
    reduced = list(range(2 + first, 2 + first + count))
    kept = [j for j in range(2, w.dim()) if j not in reduced]
    if transposed:
        w = w.permute(0, *reduced, 1, *kept)
        return w.reshape(-1, *w.shape[1 + count:])
    w = w.permute(0, 1, *reduced, *kept)
    return w.reshape(w.shape[0], -1, *w.shape[2 + count:])


def _kept_geometry(cfg, d, first, count, transposed):
    """cfg of that convolution: each per-dim value at the kept dims, one group."""
    def kept(v, fill):
        v = _spatial3(v, d, fill)[-d:]
        return tuple(v[:first] + v[first + count:])

    geometry = (kept(cfg[0], 1), cfg[1] if isinstance(cfg[1], str) else kept(cfg[1], 0), kept(cfg[2], 1), 1)
    return geometry + (kept(cfg[4], 0),) if transposed else geometry''',
}
