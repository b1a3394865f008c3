"""The builtin Coder's template engine: candidates from a problem's FX graph, and tuning mutations.

    compiler_seed(problem_path, device) -> Proposal | None   # torch.compile's kernels, exported
    propose_candidates(problem) -> list[Proposal]   # seeds from templates
    mutate(source) -> list[Proposal]                # tunable variants of any Triton candidate
"""

from __future__ import annotations

import inspect
import logging
import re
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from . import attention, colreduce, conv, elementwise, matmul, pool, rowreduce, scan, topk
from .codegen import Plan, assemble, fold_library_bias
from .graph import lower_module
from .ir import Graph, Unsupported
from .mutate import mutate_source
from .partition import fuse_conv_pools, fuse_conv_reductions, fuse_product_rows, partition

log = logging.getLogger(__name__)

_EMITTERS = {"ew": elementwise.emit, "row": rowreduce.emit, "mm": matmul.emit, "col": colreduce.emit,
             "topk": topk.emit, "scan": scan.emit, "attn": attention.emit, "pool": pool.emit, "conv": conv.emit}
_PRODUCTS = {"mm", "attn", "conv"}  # emitters whose fp32 products can run as 3xTF32 (their tf32x3 option)


@dataclass
class Proposal:
    source: str
    strategy: str      # short label: fused-elementwise, row-reduction, matmul-epilogue, library+tail, ...
    family: str        # elementwise | reduction | matmul | library+tail | mixed
    notes: str = ""


# Elements the templates' trace shrinks a problem's inputs and weights to (values computed on the CPU); the
# larger ones are tried where a smaller one makes a dim 1 that is not at the problem's own sizes (a channel
# shuffle's channels per group), which the lowering may read as another program (a view adding a unit dim).
_TRACE_BUDGETS = (1 << 14, 1 << 17, 1 << 20)


class _TracesDiffer(Unsupported):
    """The graph traced at the shrunk sizes is not the one at the problem's own."""


def _load(problem, example_inputs, budget: int = _TRACE_BUDGETS[0]):
    """(problem source, reference model, small example inputs, the model and inputs at the problem's own
    sizes on the meta device or None where the small ones are those)."""
    from kevolve.tools.problem import instantiate, load_problem, on_meta, shrink_shape

    if isinstance(problem, (str, Path)):
        prob = load_problem(problem)
        source = prob.source
        if example_inputs is not None:
            inst = instantiate(prob, {}, seed=0)
            return source, inst.model, list(example_inputs), None
        shrunk = shrink_shape(prob, budget)
        inst = instantiate(prob, shrunk, seed=0)
        big = on_meta(prob, {}) if shrunk else None  # shapes only: no memory at the problem's own sizes
        return source, inst.model, inst.inputs, (big.model, big.inputs) if big is not None else None
    if isinstance(problem, types.ModuleType):
        source = inspect.getsource(problem)
        torch.manual_seed(0)
        model = problem.Model(*problem.get_init_inputs()).eval()
        inputs = list(example_inputs) if example_inputs is not None else list(problem.get_inputs())
        return source, model, inputs, None
    raise TypeError(f"propose_candidates takes a problem path or module, not {type(problem).__name__}")


def _lower(model, inputs, own, middle_rows: bool = False) -> Graph:
    """The module's graph, traced at the small inputs (values computed, checked on the CPU), each value's
    `own_shape` set from a second trace at the problem's own sizes on the meta device when one is given:
    the choices that depend on a size (a row epilogue's tile width) are made at the size the kernel
    will run at. Where the second trace fails it is ignored; where it does not match op for op, Unsupported."""
    graph = lower_module(model, inputs, middle_rows=middle_rows)
    if own is not None:
        try:
            big = lower_module(*own, middle_rows=middle_rows)
        except Exception as e:
            log.info("templates: no trace at the problem's own sizes (%s: %s)", type(e).__name__, e)
            return graph
        pairs = list(zip(graph.vals, big.vals))
        if len(big.vals) != len(graph.vals) or not all(
                a.kind == b.kind and a.fn == b.fn and len(a.shape) == len(b.shape) for a, b in pairs):
            # the model chose other ops at the small sizes (a branch on sizes): kernels of that program
            # would be checked right on the CPU and be wrong at the problem's own sizes
            raise _TracesDiffer(f"{len(graph.vals)} values against {len(big.vals)}")
        for a, b in pairs:
            a.own_shape = tuple(b.shape)
    return graph


def _label(plan: Plan, library: bool) -> tuple[str, str]:
    kinds = [r.kind for r in plan.regions if id(r) in plan.codes]
    torch_ops = [v for v in plan.graph.vals if v.kind == "torch" and not v.mm.get("tuple")]  # tuple: no work
    covered = {id(n) for r in plan.regions if id(r) in plan.codes for n in r.nodes}
    uncovered = [v for v in plan.graph.vals if v.kind in ("ew", "cat", "red", "cred", "topk", "scan", "attn", "pool")
                 + (() if library else ("mm", "conv"))
                 and id(v) not in covered and id(v) not in plan.torch_calls]  # torch_calls: a library's part
    has_mm = any(v.kind in ("mm", "conv") for v in plan.graph.vals)
    lib = library and has_mm or any(v.kind == "torch" and _is_library(v.expr) for v in torch_ops)
    if "mm" in kinds:
        strategy, family = "matmul-epilogue", "matmul"
    elif "conv" in kinds:
        strategy, family = "conv-implicit-gemm", "matmul"
    elif lib:
        strategy, family = "library+tail", "library+tail"
    elif "attn" in kinds:
        strategy, family = "flash-attention", "matmul"
    elif "topk" in kinds:
        strategy, family = "row-topk", "reduction"
    elif "scan" in kinds:
        strategy, family = "row-scan", "reduction"
    elif "pool" in kinds:
        strategy, family = "window-pool", "reduction"
    elif "row" in kinds or "col" in kinds:
        fns = {v.fn for r in plan.regions if r.kind == "row" for v in r.nodes}
        strategy = "row-softmax" if {"max", "exp", "sum"} <= fns else (
            "row-reduction" if "row" in kinds else "column-reduction")
        family = "reduction"
    else:
        strategy, family = "fused-elementwise", "elementwise"
    if (torch_ops and not lib) or uncovered or len(set(kinds)) > 1:
        family = "mixed" if family != "library+tail" else family
        strategy += "+split" if (torch_ops and not lib) or uncovered else ""
    return strategy, family


def _is_library(expr: str) -> bool:
    return any(s in expr for s in ("conv", "linear", "matmul", ".mm(", "bmm", "addmm", "self."))


def _build(graph: Graph, source: str, use_mm: bool, tf32x3: bool = False,
           regions: list | None = None) -> tuple[Plan, list[str]]:
    plan = Plan(graph, regions if regions is not None else partition(graph, use_mm=use_mm))
    notes = []
    ours: set[int] = set()  # convolutions our kernels compute (in NCHW; cuDNN's may hand on channels-last)
    for i, r in enumerate(plan.regions):  # in order: a region's producers come before it
        try:
            options = {"tf32x3": tf32x3} if r.kind in _PRODUCTS else {"ours": ours} if r.kind == "ew" else {}
            plan.codes[id(r)] = _EMITTERS[r.kind](r, i, **options)
            if r.kind == "conv":
                ours.add(id(r.mm))
        except Exception as e:  # a region a template cannot emit stays in torch
            notes.append(f"region {i} ({r.kind}) left to torch: {type(e).__name__}: {e}")
    if not use_mm:
        notes += fold_library_bias(plan)
    return plan, notes


def propose_candidates(problem, *, backend: str = "triton", example_inputs=None) -> list[Proposal]:
    """Template candidates for a problem file or module; [] when no template covers any of it."""
    if backend != "triton":
        return []
    for budget in _TRACE_BUDGETS:
        source, model, inputs, own = _load(problem, example_inputs, budget)
        try:
            graph = _lower(model, inputs, own)
            break
        except _TracesDiffer as e:
            if own is None or budget == _TRACE_BUDGETS[-1]:
                log.warning("templates: none, the model runs other ops at the sizes shrunk for tracing than at "
                            "its own (%s): it branches on its sizes", e)
                return []
        except Unsupported:
            return []
        except Exception as e:  # a lowering bug on a module no test had must cost the templates, not the session
            log.warning("templates: none, the lowering failed (%s: %s)", type(e).__name__, e)
            return []
    out = _variants(graph, source, "")
    if any(v.kind == "cred" and v.fn not in ("argmax", "argmin") for v in graph.vals):
        # A reduction over middle dims as rows of the moved layout too (its neighbours join the kernel),
        # not only as the column kernel (coalesced, alone): which is faster is for the timing to say.
        try:
            seen = {p.source for p in out}
            out += [p for p in _variants(_lower(model, inputs, own, middle_rows=True), source, "+middle-rows",
                                         switches=False) if p.source not in seen]
        except Exception as e:
            log.warning("templates: no middle-rows variant (%s: %s)", type(e).__name__, e)
    return out


def _variants(graph: Graph, source: str, suffix: str, switches: bool = True) -> list[Proposal]:
    """The candidates of one lowered graph: with matmuls as templates and, if it has any, as library calls;
    each with its switches (CHANNELS_LAST, PER_TAP, TF32X3) flipped as well."""
    out: list[Proposal] = []
    has_mm = any(v.kind == "mm" or v.kind == "conv" and v.mm.get("implicit_gemm") for v in graph.vals)
    # with a convolution, cuDNN's variant first: it is the one a compiler seed falls back on at other shapes
    first_mm = not any(v.kind == "conv" for v in graph.vals)
    # the switches of tl.dot products (a convolution whose groups are too narrow for tl.dot, depthwise,
    # takes outer products whatever they say)
    dot_convs = any(v.kind == "conv" and conv.group_outputs(v) >= conv.DOT_MIN for v in graph.vals)
    products = dot_convs or any(v.kind in ("mm", "attn") for v in graph.vals)
    for use_mm in ([first_mm, not first_mm] if has_mm else [True]):
        try:
            plan, notes = _build(graph, source, use_mm)
            if not plan.codes:
                continue
            strategy, family = _label(plan, library=not use_mm)
            strategy += suffix
            text = assemble(plan, source, f"kevolve builtin template candidate: {strategy}.")
        except Exception as e:  # as above: this variant is lost, the other may still come
            log.warning("templates: no %s variant (%s: %s)", "matmul" if use_mm else "library", type(e).__name__, e)
            continue
        if not _static_ok(text):
            continue
        kinds = ", ".join(f"{r.kind}:{len(r.nodes)} ops" for r in plan.regions if id(r) in plan.codes)
        note = "; ".join([f"regions [{kinds}]"] + notes)
        out.append(Proposal(source=text, strategy=strategy, family=family, notes=note))
        if not switches:
            continue
        # Both settings of a switch that changes what the hardware runs, from the start: convolutions in
        # either layout dominate such graphs; fp32 products run on FMAs or, as three TF32 products, on
        # tensor cores (on an H200 with Triton 3.6 the latter lost: 0.99 ms against 0.83 for a
        # 2048x2048x4096 product, cuBLAS 0.71; which wins elsewhere is for the timing to say).
        if "\nCHANNELS_LAST = 0" in text:
            out.append(Proposal(source=text.replace("\nCHANNELS_LAST = 0", "\nCHANNELS_LAST = 1", 1),
                                strategy=strategy + "+channels-last", family=family, notes=note))
        if dot_convs and re.search(r"^\w+_PER_TAP = [01]", text, re.M):  # a conv's K loop tap by tap and flat
            out.append(Proposal(source=re.sub(r"^(\w+_PER_TAP) = ([01])", lambda m: f"{m[1]} = {1 - int(m[2])}", text,
                                              flags=re.M),
                                strategy=strategy + ("+flat-k" if "_PER_TAP = 1" in text else "+per-tap"),
                                family=family, notes=note))
        if products and re.search(r"^\w+_TF32X3 = 0", text, re.M):  # built again: tensor cores want other tiles
            try:
                plan3, _ = _build(graph, source, use_mm, tf32x3=True)
                out.append(Proposal(source=assemble(plan3, source, f"kevolve builtin template candidate: {strategy}."),
                                    strategy=strategy + "+3xtf32", family=family, notes=note))
            except Exception as e:
                log.warning("templates: no 3xtf32 variant (%s: %s)", type(e).__name__, e)
    return out + _fused_variant(graph, source, suffix)


def _fused_variant(graph: Graph, source: str, suffix: str) -> list[Proposal]:
    """The candidate with each implicit-GEMM convolution that only a row kernel over its channels reads
    (softmax, a norm, min/max/sum over dim 1), a pool with windows apart, or a sum or mean over all its
    spatial dims (a global average pool after a nonlinear tail), merged with that kernel:
    the conv's output never goes through memory, where cuDNN + a row or pool kernel (Inductor's way)
    writes it and reads it back."""
    try:  # a bug here must cost this candidate only, not the others
        regions = partition(graph, use_mm=True)
        rows = fuse_product_rows(graph, regions)
        pools = fuse_conv_pools(graph, rows or regions)
        sums = fuse_conv_reductions(graph, pools or rows or regions)
        if rows is None and pools is None and sums is None:
            return []
        plan, notes = _build(graph, source, True, regions=sums or pools or rows)
        strategy, family = _label(plan, library=False)
        strategy += suffix + "+row-epilogue" * (rows is not None) + "+pool-epilogue" * (pools is not None) \
            + "+sum-epilogue" * (sums is not None)
        text = assemble(plan, source, f"kevolve builtin template candidate: {strategy}.")
    except Exception as e:
        log.warning("templates: no fused-epilogue variant (%s: %s)", type(e).__name__, e)
        return []
    if not plan.codes or not _static_ok(text):
        return []
    kinds = ", ".join(f"{r.kind}:{len(r.nodes)} ops" for r in plan.regions if id(r) in plan.codes)
    return [Proposal(source=text, strategy=strategy, family=family, notes="; ".join([f"regions [{kinds}]"] + notes))]


def _static_ok(text: str) -> bool:
    try:
        from kevolve.tools.static_checks import check_source
    except ImportError:
        return True
    try:
        report = check_source(text)
    except Exception:
        return True
    return bool(getattr(report, "ok", True)) and bool(getattr(report, "triton_kernels", True))


def mutate(source: str, *, verdict: dict | None = None, seed: int = 0, limit: int = 24) -> list[Proposal]:
    """Tunable variants of any Triton candidate source (block sizes, warps, stages, grouping)."""
    return [Proposal(source=s, strategy="tune", family="tuning", notes=d)
            for d, s in mutate_source(source, verdict=verdict, seed=seed, limit=limit)]


from .compiler_seed import compiler_seed  # noqa: E402  (it imports Proposal from here lazily)

__all__ = ["Proposal", "compiler_seed", "mutate", "propose_candidates"]
