"""Average pools folded into the weight of the linear op they pool, which then computes only the pooled
outputs: a pool whose windows tile its input (kernel = stride, no padding) averages outputs that are
each a weighted sum of inputs, so the average is one weighted sum with averaged weights.

- of a convolution: one convolution at stride window·stride, each window's taps summed into one kernel
  of (k - 1)·stride + (taps - 1)·dilation + 1 a dim (`_pooled_weight`);
- of a transposed convolution whose stride divides the window: a convolution of its input at stride
  window / stride, over the input offsets whose taps reach a window (`_pooled_transposed_weight`), the
  output never built at the upsampled size;
- of a product's last dim (avg_pool1d over a Linear's features): the product with each window of the
  weight's output rows averaged into one, the window's size times less work (`_window_means`);
- of a pool of the same kind (max of max, average of average) whose windows tile too: one pool.

Per-channel (per-feature) shifts and numbers pass through, as in products.py. Folded weights are made
once per weight (`_made_once`); the geometry is read at run time. These are the lowerer's methods
(graph._Lowerer); the roofline counts the folded work as needed (kevolve.profiling.roofline)."""

from __future__ import annotations

import torch

from .ir import Val
from .products import _number, _per_channel, _per_dim


class PoolFoldMixin:
    def pooled_conv(self, y: Val, pool_cfg: Val, dims: int, kernel, shape: tuple) -> Val | None:
        """An average pool whose windows tile y (kernel = stride, no padding), where y is a convolution
        (fp32, its geometry known when traced) through per-channel affines: a convolution with the pool
        folded into its weight, its output the pool's (`dims` spatial dims, `kernel` the window as traced,
        `shape` the pool's output). Of a convolution: each window's taps summed into one kernel of
        (k - 1)·stride + (taps - 1)·dilation + 1 per dim at stride k·stride (`_pooled_weight`); of a
        transposed one whose stride divides the window (one group): `_pooled_transposed`. Weights are
        made once per weight. None where y is not of that form."""
        def conv(c: Val) -> Val | None:
            x, w, cfg = c.args
            traced, d = c.mm.get("traced"), c.mm["dims"]
            if c.dtype != torch.float32 or traced is None or d != dims or isinstance(traced[1], str) \
                    or len(shape) != len(c.shape):
                return None
            stride, padding, dilation = (_per_dim(v, d) for v in traced)
            window, out = _per_dim(kernel, d), (shape[0], c.shape[1]) + tuple(shape[2:])
            if c.mm.get("transposed"):
                return self._pooled_transposed(c, pool_cfg, window, out)
            taps = [(k - 1) * s + (t - 1) * dl + 1 for k, s, t, dl in zip(window, stride, w.shape[2:], dilation)]
            w2 = self._made_once("_pooled_weight", [w, cfg, pool_cfg], f", {d}", tuple(w.shape[:2]) + tuple(taps),
                                 w.dtype)
            cfg2 = self.new("torch", expr=f"_memo(_pooled_geometry, {{0}}, {{1}}, {d})", args=[cfg, pool_cfg], shape=(),
                            dtype=torch.float32, mm={"tuple": True})
            traced2 = (tuple(s * k for s, k in zip(stride, window)), tuple(padding), 1)  # a second pool folds too
            return self.new("conv", args=[x, w2, cfg2], shape=out, dtype=c.dtype, mm=dict(c.mm, traced=traced2))

        def operand(c, y: Val, scaling: bool):  # a per-channel value or a number: the same on every window
            return c if _per_channel(c, y) or _number(c) else None

        return self._through_affines(y, "conv", conv, operand)

    def stacked_pool(self, fn: str, x: Val, cfg: Val, dims: int, shape: tuple, window: tuple) -> Val | None:
        """A pool whose windows tile x (kernel = stride, no padding), where x is a pool of the same kind
        whose windows tile its input too: one pool with the windows' product as its window
        (`_stacked_pool_geometry`; floor(floor(n / a) / b) = floor(n / (a·b)), so the sizes agree), the
        first pool's output never written. None where x is not of that form."""
        if x.kind != "pool" or x.fn != fn or x.mm["dims"] != dims or x.mm["apart"] is not True or x.mm["ceil"]:
            return None
        inner, inner_cfg = x.args
        both = self.new("torch", expr=f"_memo(_stacked_pool_geometry, {{0}}, {{1}}, {dims})", args=[inner_cfg, cfg],
                        shape=(), dtype=torch.float32, mm={"tuple": True})
        inner_window = x.mm.get("window")
        both_window = tuple(a * b for a, b in zip(inner_window, window)) if inner_window else None
        return self.new("pool", fn=fn, args=[inner, both], shape=shape, dtype=x.dtype,
                        mm=dict(x.mm, window=both_window))

    def _pooled_transposed(self, c: Val, pool_cfg: Val, window: list, out: tuple) -> Val | None:
        """The average pool (window k, a multiple of the stride s) of a transposed convolution c, as a
        convolution of c's input at stride k / s: output j of a dim averages the outputs jk .. jk + k - 1,
        which input i = j·k/s + e reaches through tap t where 0 <= e·s - p + t·dilation < k, so the
        weight of offset e is the sum of those taps over k (`_pooled_transposed_weight`); the offsets e
        the taps reach start at lo <= 0 or past it, and the input is padded (or cropped) to match
        (`_transposed_pool_plan`). None for groups or a stride that does not divide the window."""
        x, w, cfg = c.args
        d = c.mm["dims"]
        stride, padding, dilation = (_per_dim(v, d) for v in c.mm["traced"])
        if c.mm["groups"] != 1 or any(k % s for k, s in zip(window, stride)):
            return None
        taps = [(k - 1 + p) // s + (dl * (t - 1) - p) // s + 1
                for k, s, p, dl, t in zip(window, stride, padding, dilation, w.shape[2:])]
        w2 = self._made_once("_pooled_transposed_weight", [w, cfg, pool_cfg], f", {d}",
                             (w.shape[1], w.shape[0]) + tuple(taps), w.dtype)
        plan = self.new("torch", args=[x, w, cfg, pool_cfg], shape=(), dtype=torch.float32, mm={"tuple": True},
                        expr=f"_memo(_transposed_pool_plan, {{0}}.shape[2:], {{1}}.shape[2:], {{2}}, {{3}}, {d})")
        steps = [k // s for k, s in zip(window, stride)]
        x2 = self.new("torch", expr="_padded_input({0}, {1}[0])", args=[x, plan], dtype=x.dtype,
                      shape=tuple(x.shape[:2]) + tuple((j - 1) * m + t for j, m, t in zip(out[2:], steps, taps)))
        cfg2 = self.new("torch", expr="{0}[1]", args=[plan], shape=(), dtype=torch.float32, mm={"tuple": True})
        return self.new("conv", args=[x2, w2, cfg2], shape=out, dtype=c.dtype,
                        mm=dict(c.mm, transposed=False, traced=(tuple(steps), 0, 1)))

    def pooled_product(self, x: Val, pool_cfg: Val, shape: tuple) -> Val | None:
        """A 1-D average pool whose windows tile the last dim of x (kernel = stride, no padding), where x is
        a matmul with a 2-D weight (or a view of one adding dims of size 1, `.unsqueeze(1)` for the pool's
        channel) through adds of vectors along that dim and of numbers, scalings by numbers and negation:
        the matmul with each window of the weight's output rows averaged into one (`_window_means`, made
        once per weight), the window's size times less work; `shape` is the pool's output. None where x
        is not of that form."""
        src = x.mm.get("unit_of", x)
        if x.squeezed or src.squeezed or not src.shape or src.shape[-1] != x.shape[-1]:
            return None
        pooled, last = shape[-1], src.shape[-1]

        def product(y: Val) -> Val | None:
            a, w = y.args
            if y.mm.get("batched") or "tri" in y.mm or len(w.shape) != 2 or a.squeezed:
                return None
            trans_b = y.mm["trans_b"]  # W is (N, K): its rows pooled; else (K, N): its columns
            w2 = self._made_once("_window_means", [w, pool_cfg], f", {0 if trans_b else 1}",
                                 (pooled, w.shape[1]) if trans_b else (w.shape[0], pooled), w.dtype)
            return self.matmul(a, w2, trans_b)

        def operand(c, y: Val, scaling: bool):  # a number is the same on every window, a vector is pooled too
            if _number(c) or c.shape and c.shape[-1] == 1 and not c.squeezed:
                return c
            if scaling or c.squeezed or len(c.shape) > len(y.shape) or any(n != 1 for n in c.shape[:-1]) \
                    or c.shape[-1] != last:
                return None
            return self._made_once("_window_means", [c, pool_cfg], f", {len(c.shape) - 1}",
                                   tuple(c.shape[:-1]) + (pooled,), c.dtype)

        y = self._through_affines(src, "mm", product, operand)
        if y is None or src is x:
            return y
        return self._unit_view(y, shape)  # back to the pool's (B, 1, N / k)


# the helpers a candidate file takes when its forward calls the function each is named by (codegen)
POOLED_HELPERS = {
    "_pooled_weight": '''def _pooled_geometry(cfg, pool_cfg, d):
    """(stride, padding, dilation, groups) of a convolution with an average pool that tiles its output
    folded in: stride times the window, the same padding, no dilation (it is in the weight)."""
    stride, padding = _spatial3(cfg[0], d, 1)[-d:], _spatial3(cfg[1], d, 0)[-d:]
    window = _spatial3(pool_cfg[0], d, 1)[-d:]
    return tuple(s * k for s, k in zip(stride, window)), tuple(padding), 1, cfg[3]


def _pooled_weight(w, cfg, pool_cfg, d):
    """The weight of that convolution: tap t of w lands at t·dilation and a window's offset j at j·stride,
    summed over the window and divided by its size (a transposed convolution of w with a box of ones)."""
    stride, dilation = _spatial3(cfg[0], d, 1)[-d:], _spatial3(cfg[2], d, 1)[-d:]
    window = _spatial3(pool_cfg[0], d, 1)[-d:]
    conv_t = (torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
              torch.nn.functional.conv_transpose3d)[d - 1]
    box = w.new_ones((1, 1, *window))
    out = conv_t(w.reshape(-1, 1, *w.shape[2:]), box, stride=tuple(dilation), dilation=tuple(stride))
    return out.reshape(*w.shape[:2], *out.shape[2:]) / math.prod(window)''',
    "_pooled_transposed_weight": '''def _pooled_transposed_weight(w, cfg, pool_cfg, d):
    """The weight (CO, CI, *offsets) of the convolution an average pool of a transposed convolution is
    (PoolFoldMixin._pooled_transposed): offset e of a dim takes tap t where 0 <= e·s - p + t·dilation < k."""
    stride, padding, dilation = _spatial3(cfg[0], d, 1)[-d:], _spatial3(cfg[1], d, 0)[-d:], _spatial3(cfg[2], d, 1)[-d:]
    window = _spatial3(pool_cfg[0], d, 1)[-d:]
    out = w.transpose(0, 1)
    for i, (t, s, p, dl, k) in enumerate(zip(w.shape[2:], stride, padding, dilation, window)):
        e = torch.arange(-((dl * (t - 1) - p) // s), (k - 1 + p) // s + 1, device=w.device)[:, None]
        reached = e * s - p + torch.arange(t, device=w.device)[None, :] * dl
        hits = ((reached >= 0) & (reached < k)).to(w.dtype)  # (offsets, taps)
        out = torch.movedim(torch.tensordot(out, hits, dims=([2 + i], [1])), -1, 2 + i)
    return (out / math.prod(window)).contiguous()


def _transposed_pool_plan(spatial, kernel, cfg, pool_cfg, d):
    """(F.pad's padding of the input, (stride, padding, dilation, groups)) of that convolution: its
    input padded by -lo before and as much after as its J pooled outputs need, the part both sides share
    as the convolution's own padding."""
    stride, padding, dilation = _spatial3(cfg[0], d, 1)[-d:], _spatial3(cfg[1], d, 0)[-d:], _spatial3(cfg[2], d, 1)[-d:]
    extra, window = _spatial3(cfg[4], d, 0)[-d:], _spatial3(pool_cfg[0], d, 1)[-d:]
    pads, shared, steps = [], [], []
    for n, t, s, p, dl, e, k in zip(spatial, kernel, stride, padding, dilation, extra, window):
        lo, hi, m = -((dl * (t - 1) - p) // s), (k - 1 + p) // s, k // s
        pooled = ((n - 1) * s - 2 * p + dl * (t - 1) + e + 1) // k
        before, after = -lo, (pooled - 1) * m + hi + 1 - n
        both = max(0, min(before, after))
        pads.append((before - both, after - both))
        shared.append(both)
        steps.append(m)
    return tuple(v for pair in reversed(pads) for v in pair), (tuple(steps), tuple(shared), 1, 1)


def _padded_input(x, pad):
    return torch.nn.functional.pad(x, pad) if any(pad) else x''',
    "_stacked_pool_geometry": '''def _stacked_pool_geometry(inner, outer, d):
    """(kernel, stride, padding, dilation, divisor) of one pool doing two whose windows tile their inputs."""
    window = tuple(a * b for a, b in zip(_spatial3(inner[0], d, 1)[-d:], _spatial3(outer[0], d, 1)[-d:]))
    return window, window, 0, 1, None''',
    "_window_means": '''def _window_means(t, pool_cfg, dim):
    """t's entries along dim averaged over each window of an average pool that tiles it (its rest, under
    one window, dropped as the pool drops it)."""
    k = _spatial3(pool_cfg[0], 1, 1)[-1]
    n = t.shape[dim] // k
    return t.narrow(dim, 0, n * k).unflatten(dim, (n, k)).mean(dim + 1)''',
}
