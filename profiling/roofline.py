"""Roofline: what the reference must do at least (FLOPs, bytes) and how fast that can possibly be.

The minimum bytes are every input, output, parameter and buffer moved once: no kernel can do
with less DRAM traffic (unless data stays in L2 between calls, which the harness flushes). A
tensor the forward only gathers rows of (an embedding table) counts the distinct rows read; a product
with a diagonal matrix the forward built counts as the scaling it is, one cut to a triangle counts
the triangle's entries, and a sum over a product's last dim counts as the matrix-vector product it is.
The speed-of-light time is the larger of bytes / peak bandwidth and FLOPs / peak FLOP/s, so a
measured time below it is an evaluation bug until shown otherwise (EVAL.md item 14).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .device import DeviceFacts, peak_flops_for

# Thresholds for classing a kernel by ncu's speed-of-light percentages.
BUSY_PCT = 50.0        # below this on both the memory and SM side, the kernel is mostly waiting
LATENCY_S = 5e-6       # a few µs: launch overhead and ramp-up dominate whatever the kernel does


@dataclass
class Cost:
    flops: float
    min_bytes: float
    dtype: str                 # the dominant floating dtype, e.g. "float32"
    input_bytes: float = 0.0
    output_bytes: float = 0.0
    weight_bytes: float = 0.0

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte of compulsory traffic."""
        return self.flops / self.min_bytes if self.min_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"intensity": self.intensity}


def _tensors(obj: Any):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _storage_key(t) -> int:
    try:  # _cdata is the storage's own address: stable, and distinct on the meta device too
        return t.untyped_storage()._cdata
    except Exception:
        return id(t)


def _unique_bytes(tensors, seen: set, partial: dict[int, float] | None = None) -> float:
    """Bytes of distinct storages: a weight tied to two modules or a view counts once. A storage in
    `partial` is one the forward only gathers from: it counts the bytes it gathers."""
    total = 0.0
    for t in tensors:
        key = _storage_key(t)
        if key in seen:
            continue
        seen.add(key)
        full = t.numel() * t.element_size()
        total += min(full, (partial or {}).get(key, full))
    return total


def _gathered_bytes(run: Callable[[], Any], real_of: dict[int, Any]) -> tuple[Any, dict[int, float]]:
    """Run the forward and find the storages it only reads rows of (an embedding table, an
    index_select source): {storage: bytes of the distinct rows read}. The distinct count needs the
    indices' values: those of a real input stand in for its meta copy; otherwise every index counts."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    aten = torch.ops.aten
    gathered: dict[int, float] = {}
    full_use: set[int] = set()

    def rows(index) -> int:
        real = real_of.get(id(index))
        if real is not None and real.numel() == index.numel():
            return int(torch.unique(real).numel())
        return index.numel()

    class Gathers(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            source = None
            if func is aten.embedding.default:
                source, dim, index = args[0], 0, args[1]
            elif func is aten.index_select.default:
                source, dim, index = args[0], args[1], args[2]
            if source is not None:
                row = source.numel() // max(1, source.shape[dim]) * source.element_size()
                key = _storage_key(source)
                gathered[key] = gathered.get(key, 0.0) + rows(index) * row
            for a in tree_leaves((args, kwargs)):  # tensors inside lists too (cat, stack)
                if isinstance(a, torch.Tensor) and a is not source:
                    full_use.add(_storage_key(a))
            return func(*args, **kwargs)

    with Gathers():
        out = run()
    return out, {k: v for k, v in gathered.items() if k not in full_use}


def _structured_products():
    """A dispatch mode that finds matmul work the forward's own structure makes unneeded, which a FLOP
    counter counts as dense 2·M·K·N (kevolve.builtin.products rewrites each to the needed work):
    - a product with a diagonal matrix the forward built (torch.diag of a vector): a scaling, M·N;
    - a product cut to a triangle (torch.tril / triu): the entries outside need no product;
    - a sum or mean over the last dim of a product, after bias adds and scalings: x times W's
      reduced columns, a matrix-vector product (2·M·K, plus N·K to reduce W);
    - a sum or mean over every spatial dim of a one-group convolution, after per-channel affines: each
      input summed once per kernel tap, times the weight (N·CI·taps·input size, plus 2·N·CI·taps·CO);
      over a leading or trailing run of them: the input summed per tap of those dims, then a
      convolution over the others with (channel, tap) pairs as its input channels;
    - a sum or mean over a convolution's channels: the convolution with one output channel;
    - an average pool that tiles a convolution's output: the convolution with the pool in its weight,
      at the pooled outputs with (window - 1)·stride + (taps - 1)·dilation + 1 taps a dim (of a
      transposed one whose stride divides the window: the input offsets whose taps reach a window);
    - an average pool that tiles a product's last dim: the product with N / window outputs a row.
    `excess` is the FLOPs counted beyond the needed; a kernel that skips them would otherwise run
    'faster than the speed of light'."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import conv_flop_count

    aten = torch.ops.aten
    affine_ops = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.neg.default)

    def per_dim(v, d: int) -> list:  # an int, or a list of 1 or d ints, as d ints
        v = [v] if isinstance(v, int) else list(v)
        return v * (d // len(v))

    def tiles(args, d: int) -> bool:  # an avg_pool{1,2,3}d's windows tile its input: stride = kernel, no padding
        # (input, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override), defaults left out
        _, kernel, stride, padding, ceil, _, divisor = list(args) + [None] * (7 - len(args))
        return per_dim(kernel, d) == per_dim(stride or kernel, d) and not any(per_dim(padding or 0, d)) \
            and not ceil and divisor is None

    def per_channel(t, shape) -> bool:  # a number, or a tensor that varies along dim 1 of (N, C, ...) only
        return not isinstance(t, torch.Tensor) or t.dim() == 0 or (
            t.dim() <= len(shape) and all(n == 1 for i, n in enumerate(t.shape, len(shape) - t.dim()) if i != 1))

    def along_last(t, shape) -> bool:  # a number, or a tensor that varies along the last dim only
        return not isinstance(t, torch.Tensor) or t.dim() == 0 or (
            t.dim() <= len(shape) and all(n == 1 for n in t.shape[:-1]))

    def partly_reduced(geometry, run: list[int]) -> float | None:
        # a sum over a leading or trailing run of a convolution's spatial dims: the input summed per tap of
        # those dims (a product with a 0/1 matrix), then a convolution over the other dims with taps x
        # channels as its input channels; None for any other dims
        kernel, transposed, xs, outs = geometry[3:]
        d, kept = len(kernel), [j for j in range(len(kernel)) if j not in run]
        if not run or run != list(range(run[0], run[0] + len(run))) or run[0] not in (0, d - len(run)):
            return None
        taps = math.prod(kernel[j] for j in run)
        positions = math.prod((xs if transposed else outs)[2 + j] for j in kept)
        per_tap = math.prod(xs[2:]) + outs[1] * positions * math.prod(kernel[j] for j in kept)
        return 2.0 * xs[0] * xs[1] * taps * per_tap

    class Tracked(dict):
        """storage key -> info, for tensors still alive: a freed tensor's storage address is reused."""

        def add(self, t, info) -> None:
            self[_storage_key(t)] = (weakref.ref(t), info)

        def info(self, t):
            ref, info = self.get(_storage_key(t), (lambda: None, None))
            return info if ref() is not None else None

    class StructuredProducts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.diagonal = Tracked()
            # a product, or a bias add / scaling of one: (batch, M, K, N, whether it is the product itself)
            self.products = Tracked()
            # a convolution, or a per-channel affine of one: (FLOPs counted for it, FLOPs its pooled sum needs)
            self.convs = Tracked()
            self.excess = 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            product = next((self.products.info(a) for a in tensors[:1] if self.products.info(a)), None)
            if func is aten.diag_embed.default and args[0].dim() == 1 and list(args[1:]) in ([], [0]) \
                    and not kwargs:
                self.diagonal.add(out, True)
            elif func is aten.mm.default and any(self.diagonal.info(a) for a in args[:2]):
                (m, k), n = args[0].shape, args[1].shape[1]
                self.excess += 2.0 * m * k * n - m * n
            elif func in (aten.mm.default, aten.bmm.default, aten.addmm.default):
                a, b = args[-2:]
                *batch, m, k = a.shape
                self.products.add(out, (batch[0] if batch else 1, m, k, b.shape[-1], func is not aten.addmm.default))
            elif func in (aten.tril.default, aten.triu.default) and product and product[4]:
                batch, m, k, n, _ = product
                self.products.add(args[0], None)  # its saving counted once
                offset = args[1] if len(args) > 1 else 0
                rows = torch.arange(m) + offset
                kept = (rows + 1).clamp(0, n) if func is aten.tril.default else (n - rows).clamp(0, n)
                self.excess += 2.0 * batch * k * (m * n - int(kept.sum()))
            elif func is aten.convolution.default and args[8] == 1 and out.dim() > 2:
                x, w, transposed = args[0], args[1], args[6]
                taps = math.prod(w.shape[2:])
                counted = conv_flop_count(list(x.shape), list(w.shape), list(out.shape), transposed)
                needed = x.numel() * taps + 2.0 * x.shape[0] * x.shape[1] * taps * out.shape[1]
                d = out.dim() - 2
                # stride, padding, dilation, kernel, transposed, the input's and output's shapes
                geometry = (per_dim(args[3], d), per_dim(args[4], d), per_dim(args[5], d), list(w.shape[2:]),
                            transposed, list(x.shape), list(out.shape))
                self.convs.add(out, (counted, needed, geometry))
            elif (func in affine_ops or func is aten._native_batch_norm_legit_no_training.default
                  or func is aten.native_batch_norm.default and not args[5]) \
                    and any(self.convs.info(a) for a in tensors):  # an inference batch norm: an affine
                found = [a for a in tensors[:1] if self.convs.info(a)] if isinstance(out, tuple) else \
                    [a for a in tensors if self.convs.info(a) and a.shape == out.shape]
                rest = [a for a in args if not any(a is f for f in found)]
                y = out[0] if isinstance(out, tuple) else out  # a batch norm's: (y, statistics)
                if len(found) == 1 and (isinstance(out, tuple) or all(per_channel(a, y.shape) for a in rest)) \
                        and not (func is aten.div.Tensor and found[0] is not args[0]):
                    self.convs.add(y, self.convs.info(found[0]))
            elif func in (aten.sum.dim_IntList, aten.mean.dim) and self.convs.info(args[0]) and args[1]:
                counted, needed, geometry = self.convs.info(args[0])
                dims = sorted(d % args[0].dim() for d in args[1])
                if dims == [1]:  # over the channels: the convolution with one output channel
                    needed = counted / args[0].shape[1]
                elif dims != list(range(2, args[0].dim())):
                    needed = partly_reduced(geometry, [d - 2 for d in dims])
                if needed is not None:
                    self.convs.add(args[0], None)  # its saving counted once
                    self.excess += max(0.0, counted - needed)
            elif func in (aten.avg_pool2d.default, aten.avg_pool3d.default) and self.convs.info(args[0]) \
                    and tiles(args, out.dim() - 2):
                counted, _, (stride, padding, dilation, kernel, transposed, xs, outs) = self.convs.info(args[0])
                positions = math.prod((xs if transposed else outs)[2:])  # each counted once a tap
                window = per_dim(args[1], out.dim() - 2)  # avg_pool1d's: (1, k) over an (N, C, 1, L) view
                lead, window = window[:-len(kernel)], window[-len(kernel):]
                # the convolution with the pool in its weight, at the pooled outputs: a convolution's taps
                # combined; a transposed one's, the input offsets whose taps reach a window (its stride
                # dividing the window)
                taps = math.prod((k - 1 + p) // s + (dl * (t - 1) - p) // s + 1 if transposed else
                                 (k - 1) * s + (t - 1) * dl + 1
                                 for k, s, p, t, dl in zip(window, stride, padding, kernel, dilation))
                if all(k == 1 for k in lead) and not (transposed and any(k % s for k, s in zip(window, stride))):
                    self.convs.add(args[0], None)
                    self.excess += max(0.0, counted * (1 - out[0, 0].numel() * taps
                                                       / (positions * math.prod(kernel))))
            elif func in (aten.avg_pool1d.default, aten.avg_pool2d.default) and product \
                    and args[0].shape[-1] == product[3] and args[0].stride(-1) == 1 \
                    and tiles(args, pool_dims := 1 if func is aten.avg_pool1d.default else 2) \
                    and all(w == 1 for w in per_dim(args[1], pool_dims)[:-1]):
                batch, m, k, n, _ = product  # (avg_pool1d runs as avg_pool2d over a (.., 1, N) view)
                self.products.add(args[0], None)
                self.excess += 2.0 * batch * m * k * (n - n // per_dim(args[1], pool_dims)[-1])
            elif func in affine_ops:
                found = [a for a in tensors if self.products.info(a) and a.shape == out.shape]
                rest = [a for a in args if not any(a is f for f in found)]
                if len(found) == 1 and all(along_last(a, out.shape) for a in rest) \
                        and not (func is aten.div.Tensor and found[0] is not args[0]):  # c / y is not affine
                    self.products.add(out, self.products.info(found[0])[:4] + (False,))
            elif func in (aten.sum.dim_IntList, aten.mean.dim) and product \
                    and list(args[1]) in ([-1], [args[0].dim() - 1]):
                batch, m, k, n, _ = product
                self.products.add(args[0], None)
                if batch == 1:
                    self.excess += 2.0 * m * k * n - (2.0 * m * k + n * k)
            return out

    return StructuredProducts()


def reference_cost(model: Any, inputs: list, on_meta: bool = True) -> Cost:
    """FLOPs (torch.utils.flop_counter) and minimum bytes of one forward of `model(*inputs)`.

    Runs on the meta device when it can (no arithmetic, any size, no GPU), otherwise for real on
    whatever device the tensors are on."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def count(m, xs, real_of):
        with torch.no_grad(), FlopCounterMode(display=False) as counter, _structured_products() as structured:
            out, partial = _gathered_bytes(lambda: m(*xs), real_of)
        return counter.get_total_flops() - structured.excess, out, partial

    real = {id(x): x for x in inputs if isinstance(x, torch.Tensor)}
    run_model, run_inputs = model, inputs
    if on_meta:
        try:
            run_model = copy.deepcopy(model).to("meta")
            memo: dict[int, Any] = {}  # the same tensor passed twice stays one tensor (read once)
            run_inputs = [memo.setdefault(id(x), x.to("meta")) if isinstance(x, torch.Tensor) else x
                          for x in inputs]
            flops, out, partial = count(run_model, run_inputs, {id(memo[k]): x for k, x in real.items()})
        except Exception:  # data-dependent ops, custom objects: count for real
            run_model, run_inputs = model, inputs
            flops, out, partial = count(model, inputs, real)
    else:
        flops, out, partial = count(model, inputs, real)
    weights = list(run_model.parameters()) + list(run_model.buffers())
    seen: set = set()
    weight_bytes = _unique_bytes(weights, seen, partial)
    input_bytes = _unique_bytes(_tensors(run_inputs), seen, partial)
    output_bytes = _unique_bytes(_tensors(out), set())
    return Cost(flops=float(flops), min_bytes=input_bytes + output_bytes + weight_bytes,
                dtype=_dominant_dtype(weights + list(_tensors(inputs)) + list(_tensors(out))),
                input_bytes=input_bytes, output_bytes=output_bytes, weight_bytes=weight_bytes)


def _dominant_dtype(tensors) -> str:
    by_dtype: dict[str, float] = {}
    for t in tensors:
        if t.is_floating_point():
            name = str(t.dtype).replace("torch.", "")
            by_dtype[name] = by_dtype.get(name, 0.0) + t.numel() * t.element_size()
    return max(by_dtype, key=by_dtype.get) if by_dtype else "float32"


def speed_of_light_ms(cost: Cost, facts: DeviceFacts | None, copy_bandwidth: float | None = None,
                      allow_tf32: bool = False) -> float | None:
    """Lower bound on one forward's time: max(bytes / bandwidth, FLOPs / peak FLOP/s), in ms.

    `copy_bandwidth` (bytes/s, e.g. from `measure_copy_bandwidth`) overrides the NVML peak: it is
    what a kernel can really reach, so the bound gets tighter. None when the device is unknown."""
    if facts is None:
        return None
    bandwidth = copy_bandwidth or facts.peak_dram_bytes_per_s
    peak = peak_flops_for(facts, cost.dtype, allow_tf32)
    times = []
    if bandwidth:
        times.append(cost.min_bytes / bandwidth)
    if peak and cost.flops:
        times.append(cost.flops / peak)
    return max(times) * 1e3 if times else None


def ridge_point(facts: DeviceFacts, dtype: str, copy_bandwidth: float | None = None,
                allow_tf32: bool = False) -> float | None:
    """FLOP/byte where the roofline turns: below it a problem is memory-bound at best."""
    bandwidth = copy_bandwidth or facts.peak_dram_bytes_per_s
    peak = peak_flops_for(facts, dtype, allow_tf32)
    return peak / bandwidth if peak and bandwidth else None


def roofline_class(cost: Cost, facts: DeviceFacts | None, copy_bandwidth: float | None = None) -> str:
    """What the problem is bound by at best, from intensity alone: memory or compute."""
    ridge = ridge_point(facts, cost.dtype, copy_bandwidth) if facts else None
    if ridge is None:
        return "unknown"
    return "memory" if cost.intensity < ridge else "compute"


def measure_copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 20, device: str = "cuda") -> float:
    """Achievable DRAM bandwidth in bytes/s from a large device-to-device copy (reads + writes)."""
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    return 2.0 * nbytes / seconds


@dataclass
class Bound:
    kind: str            # memory | compute | latency | unknown
    pct_of_peak: float | None  # of the relevant peak: DRAM bandwidth (memory) or SM throughput (compute)
    reason: str


def classify(duration_s: float | None, memory_pct: float | None, sm_pct: float | None,
             dram_pct: float | None = None, tensor_pct: float | None = None,
             busy_pct: float = BUSY_PCT, latency_s: float = LATENCY_S) -> Bound:
    """Class one kernel from ncu's speed-of-light percentages.

    memory_pct is the memory side's busiest unit (DRAM, L2 or L1), sm_pct the SM side's."""
    if memory_pct is None and sm_pct is None:
        return Bound("unknown", None, "no throughput counters")
    mem, sm = memory_pct or 0.0, sm_pct or 0.0
    if duration_s is not None and duration_s < latency_s:
        return Bound("latency", max(mem, sm),
                     f"runs {duration_s * 1e6:.1f} µs: launch and ramp-up dominate (memory {mem:.0f} %, SM {sm:.0f} %)")
    if max(mem, sm) < busy_pct:
        return Bound("latency", max(mem, sm),
                     f"neither memory ({mem:.0f} %) nor SM ({sm:.0f} %) is busy: warps wait on latency "
                     "(too little parallelism or dependent loads)")
    # Tensor cores busy half the time or more is compute-bound whatever L1 says: a tiled matmul keeps
    # L1/shared memory as busy as its SM (seen on H100: SM 76 %, L1 77 %, tensor pipe 79 %).
    if (tensor_pct or 0.0) >= busy_pct and tensor_pct >= 0.8 * mem:
        return Bound("compute", max(sm, tensor_pct),
                     f"tensor pipe at {tensor_pct:.0f} %, SM at {sm:.0f} % of peak, memory at {mem:.0f} %")
    if mem >= sm:
        pct = dram_pct if dram_pct is not None and dram_pct >= 0.8 * mem else mem
        where = "DRAM" if pct is dram_pct else "the memory hierarchy (L1/L2)"
        return Bound("memory", pct, f"{where} at {pct:.0f} % of peak, SM at {sm:.0f} %")
    extra = f", tensor pipe {tensor_pct:.0f} %" if tensor_pct else ""
    return Bound("compute", sm, f"SM at {sm:.0f} % of peak{extra}, memory at {mem:.0f} %")


def impossible_speedup(candidate_ms: float, sol_ms: float | None, slack: float = 0.8) -> bool:
    """True when a measured time beats the speed of light by more than the slack allows
    (candidate_ms < slack × sol_ms): flag for review and re-measure, do not celebrate."""
    if sol_ms is None or sol_ms <= 0 or candidate_ms is None:
        return False
    return candidate_ms < slack * sol_ms
