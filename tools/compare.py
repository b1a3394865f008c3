"""Correctness: a candidate's outputs against the fp32 reference and a float64 reference.

Two tests per output tensor, both in the trusted process (EVAL.md item 4):
- elementwise: |cand - ref| <= atol + rtol * |ref| everywhere, NaN only where the reference has NaN.
  atol grows with the output's rms magnitude (the atol times it, never below the atol; the atol of a
  bf16/fp16 output is that dtype's): rounding errors are absolute at the size of the values a kernel
  adds up, so a prefix sum's element that cancels to ~1 among partial sums of ~600 is off by ~1e-3
  in any fp32 order of summation (Inductor's own cumsum failed a fixed atol on the H100), while a
  wrong element is off by far more;
- normwise precision: ||cand - ref64|| / ||ref64|| may exceed the fp32 reference's own error only
  by a small factor, with a floor per precision. This is what catches a candidate computing in
  TF32, fp16 or bf16 under a tolerance that its outputs would otherwise pass (item 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    norm_floor: float  # normwise relative error allowed however exact the reference is


# --precision: what the user lets the candidate compute in. fp32 is the default and strictest.
TOLERANCES = {
    "fp32": Tolerance(1e-4, 1e-4, 1e-5),
    "tf32": Tolerance(5e-3, 5e-3, 5e-3),
    "fp16": Tolerance(1e-2, 1e-2, 1e-2),
    "bf16": Tolerance(2e-2, 2e-2, 2e-2),
}
# When the reference itself computes in half precision, its outputs set the floor.
_DTYPE_FLOOR = {torch.float16: "fp16", torch.bfloat16: "bf16"}
NORM_FACTOR = 16.0


def tolerance_for(precision: str, dtype: torch.dtype) -> Tolerance:
    chosen = TOLERANCES[precision]
    floor = TOLERANCES.get(_DTYPE_FLOOR.get(dtype, "fp32"))
    return Tolerance(max(chosen.atol, floor.atol), max(chosen.rtol, floor.rtol),
                     max(chosen.norm_floor, floor.norm_floor))


@dataclass
class Comparison:
    passed: bool
    detail: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0


def _norm_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    finite = torch.isfinite(b)
    a, b = a[finite].double(), b[finite].double()
    denom = b.norm().item()
    diff = (a - b).norm().item()
    return diff / denom if denom > 0 else diff


def _truth_where_the_reference_overflowed(c: torch.Tensor, r: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The reference, with the float64 result (rounded to the output's dtype) in its place where the two
    disagree on being finite and the candidate sides with the truth. A running product overflows in one
    order of operations and not in another (1e30 * 1e10 * 1e-5): torch's CUDA cumprod accumulates in
    fp32 and its CPU one in double. A candidate computing the exact product is right against either;
    one that overflowed as the reference did is too; one matching neither still fails."""
    same_as_ref = (c == r) | (torch.isnan(c) & torch.isnan(r))
    ref_overflowed = ~torch.isfinite(r) & torch.isfinite(truth) & ~same_as_ref
    truth_overflows = torch.isfinite(r) & torch.isinf(truth) & (c == truth)
    return torch.where(ref_overflowed | truth_overflows, truth, r)


def compare_tensor(cand: torch.Tensor, ref: torch.Tensor, ref64: torch.Tensor | None,
                   precision: str) -> Comparison:
    if cand.shape != ref.shape:
        return Comparison(False, f"shape {tuple(cand.shape)}, expected {tuple(ref.shape)}")
    if cand.dtype != ref.dtype:
        return Comparison(False, f"dtype {cand.dtype}, expected {ref.dtype}")
    tol = tolerance_for(precision, ref.dtype)
    c, r = cand.double(), ref.double()
    r_own = r  # the reference as computed, for its own normwise error
    if ref64 is not None and ref64.shape == ref.shape and ref.is_floating_point():
        r = _truth_where_the_reference_overflowed(c, r, ref64.to(c.device).to(ref.dtype).double())
    nan_ref, nan_cand = torch.isnan(r), torch.isnan(c)
    if not torch.equal(nan_ref, nan_cand):
        where = (nan_ref != nan_cand).nonzero()[0].tolist()
        return Comparison(False, f"NaN mismatch at index {where}", float("inf"), float("inf"))
    inf_ref = torch.isinf(r)
    if not torch.equal(inf_ref, torch.isinf(c)) or not torch.equal(r[inf_ref], c[inf_ref]):
        return Comparison(False, "Inf mismatch", float("inf"), float("inf"))
    ok = ~(nan_ref | inf_ref)
    err = (c - r).abs()[ok]
    if err.numel() == 0:
        return Comparison(True, "no finite values")
    # a bf16/fp16 reference's own tolerance scales too: it rounds intermediates at their magnitude
    atol = max(tol.atol, tol.atol * r[ok].pow(2).mean().sqrt().item())
    bound = atol + tol.rtol * r.abs()[ok]
    max_abs = err.max().item()
    max_rel = (err / (r.abs()[ok] + tol.atol)).max().item()
    bad = err > bound
    if bad.any() and ref64 is not None and ref64.shape == ref.shape:
        # A candidate closer to the float64 truth than the reference is not wrong: a bf16 reference
        # rounds every intermediate, a fused kernel computing in fp32 rounds once (EVAL.md item 8
        # compares with the reference's own error, in both directions).
        t = ref64.to(c.device).double()[ok]
        own = (r[ok] - t).abs()
        bad &= (c[ok] - t).abs() > own + atol + tol.rtol * t.abs()
    if bad.any():
        count = int(bad.sum())
        worst = int(torch.argmax(err - bound))
        return Comparison(False, f"{count} of {err.numel()} elements off (worst: got {c[ok][worst].item():.6g}, "
                                 f"expected {r[ok][worst].item():.6g}; atol={atol:.3g} rtol={tol.rtol:g})",
                          max_abs, max_rel)
    if ref64 is not None and ref.is_floating_point():
        cand_err = _norm_rel(c, ref64.to(c.device))
        ref_err = _norm_rel(r_own, ref64.to(c.device))
        allowed = max(tol.norm_floor, NORM_FACTOR * ref_err)
        if cand_err > allowed:
            return Comparison(False, f"precision: normwise error vs float64 {cand_err:.2e} > allowed {allowed:.2e} "
                                     f"(the fp32 reference's own is {ref_err:.2e}; lower precision than "
                                     f"--precision {precision}?)", max_abs, max_rel)
    return Comparison(True, f"max abs {max_abs:.3g}", max_abs, max_rel)


def compare_outputs(cands: list, refs: list, refs64: list | None, precision: str) -> Comparison:
    if len(cands) != len(refs):
        return Comparison(False, f"{len(cands)} outputs, expected {len(refs)}")
    worst = Comparison(True, "")
    details = []
    for i, (c, r) in enumerate(zip(cands, refs)):
        if not isinstance(r, torch.Tensor):
            if c != r:
                return Comparison(False, f"output {i}: {c!r}, expected {r!r}")
            continue
        one = compare_tensor(c, r, refs64[i] if refs64 else None, precision)
        worst.max_abs_error = max(worst.max_abs_error, one.max_abs_error)
        worst.max_rel_error = max(worst.max_rel_error, one.max_rel_error)
        if not one.passed:
            prefix = f"output {i}: " if len(refs) > 1 else ""
            return Comparison(False, prefix + one.detail, worst.max_abs_error, worst.max_rel_error)
        details.append(one.detail)
    worst.detail = "; ".join(details)
    return worst
