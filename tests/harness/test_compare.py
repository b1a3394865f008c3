"""The comparison rules of docs/evaluation.md, on constructed outputs."""

import torch

from kevolve.tools.compare import compare_tensor


def test_fused_bf16_result_closer_to_float64_passes():
    torch.manual_seed(0)
    a, b, c = (torch.randn(4096, dtype=torch.float64) * 10 for _ in range(3))
    a16, b16, c16 = (x.to(torch.bfloat16) for x in (a, b, c))
    eager = torch.relu(a16 * b16 + c16)  # rounds a*b to bf16 before the add
    fused = torch.relu(a16.float() * b16.float() + c16.float()).to(torch.bfloat16)  # rounds once
    ref64 = torch.relu(a16.double() * b16.double() + c16.double())
    assert compare_tensor(fused, eager, ref64, "fp32").passed
    wrong = fused.clone()
    wrong[7] += 0.1 * eager.double().pow(2).mean().sqrt().item()  # 7 at 189: 5 bf16 ulps there pass
    result = compare_tensor(wrong, eager, ref64, "fp32")
    assert not result.passed and "1 of 4096" in result.detail


def test_a_bf16_chain_that_cancels_passes_rounded_once_and_a_wrong_element_fails():
    """(norm(x) + y + x) * y in bf16, x a library op's bf16 output (a bmm), x and y ~ 10: where the sum
    cancels among terms of ~30, the eager reference's bf16 roundings (an ulp of 0.125 there, times y)
    leave it ~1 off. torch.compile's kernel and a template compute the chain in fp32 and round once:
    more accurate in norm, yet ~1 from the reference at some elements, and, since x's own rounding
    error is in both and not in the float64 result, sometimes farther from it than the reference.
    The atol of a bf16 output scales with its rms, as fp32's does, so they pass; an element off by
    10% of the rms does not. (A fixed 0.02 refused 11-21 of these 4788 elements, and so refused
    torch.compile's own kernels on such a problem.)"""
    torch.manual_seed(0)
    x64 = torch.randn(4, 21, 57, dtype=torch.float64) * 10
    x = x64.to(torch.bfloat16)  # the bmm's output, rounded the same in eager and in a candidate
    y = (torch.randn(4, 21, 57, dtype=torch.float64) * 10).to(torch.bfloat16)

    def chain(xx, dt):
        xx, yy = xx.to(dt), y.to(dt)
        return ((torch.nn.functional.instance_norm(xx) + yy) + xx) * yy

    eager, ref64, fused = chain(x, torch.bfloat16), chain(x64, torch.float64), chain(x, torch.float32)
    fused = fused.to(torch.bfloat16)
    assert (fused.double() - ref64).norm() < (eager.double() - ref64).norm()  # more accurate overall
    assert ((fused.double() - eager.double()).abs() > 0.5).any()  # ~1 off the reference somewhere
    assert compare_tensor(fused, eager, ref64, "fp32").passed
    wrong = fused.clone()
    wrong[1, 2, 3] += 0.1 * eager.double().pow(2).mean().sqrt().item()
    result = compare_tensor(wrong, eager, ref64, "fp32")
    assert not result.passed and "1 of" in result.detail


def test_nan_where_the_reference_is_finite_fails():
    ref = torch.ones(8)
    cand = ref.clone()
    cand[3] = float("nan")
    assert not compare_tensor(cand, ref, ref.double(), "fp32").passed


def test_uniform_small_relative_error_fails_the_norm_test_only():
    ref = torch.randn(1000)
    result = compare_tensor(ref * (1 + 3e-5), ref, ref.double(), "fp32")
    assert not result.passed and result.detail.startswith("precision")
    assert compare_tensor(ref * (1 + 3e-5), ref, ref.double(), "tf32").passed


def test_a_prefix_sum_in_another_fp32_order_passes_and_a_wrong_element_fails():
    """Element by element, a sequential fp32 scan is ~1e-3 off where a row's partial sums (~600) cancel
    to ~1: honest fp32, as Inductor's scan is; the normwise test still bounds it. One element off by
    0.5 is a bug."""
    torch.manual_seed(0)
    x = torch.randn(256, 8192) * 10
    ref64 = torch.cumsum(x.double(), 1)
    ref = ref64.float()  # a reference as exact as fp32 allows (a tree-ordered scan)
    seq = torch.empty_like(x)
    acc = torch.zeros(x.shape[0])
    for j in range(x.shape[1]):  # one fp32 add per element, in order
        acc = acc + x[:, j]
        seq[:, j] = acc
    assert (seq - ref).abs().max() > 1e-3  # not a trivial pass: a fixed atol of 1e-4 refuses this
    assert compare_tensor(seq, ref, ref64, "fp32").passed
    wrong = seq.clone()
    wrong[3, 100] += 0.5
    result = compare_tensor(wrong, ref, ref64, "fp32")
    assert not result.passed and "1 of" in result.detail


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to TF32 (10 mantissa bits), as a tensor core reads fp32."""
    bits = x.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_fp32_products_from_three_tf32_ones_pass_and_from_one_fail():
    """The precision tests tell emulated fp32 (head*head + head*rest + rest*head, what the templates'
    TF32X3 switch asks Triton for) from plain TF32, at both input scales the harness draws."""
    torch.manual_seed(0)
    for scale in (1.0, 10.0):
        a, b = torch.randn(256, 1024) * scale, torch.randn(1024, 256) * scale
        ref, ref64 = a @ b, a.double() @ b.double()
        a_hi, b_hi = _tf32(a), _tf32(b)
        a_lo, b_lo = _tf32(a - a_hi), _tf32(b - b_hi)
        assert compare_tensor((a_hi @ b_hi + a_hi @ b_lo) + a_lo @ b_hi, ref, ref64, "fp32").passed
        assert not compare_tensor(a_hi @ b_hi, ref, ref64, "fp32").passed
        assert compare_tensor(a_hi @ b_hi, ref, ref64, "tf32").passed


def test_a_product_the_reference_overflowed_in_its_own_order_is_judged_against_float64():
    """A running product of values ~10 leaves fp32's range and, after a small factor, comes back: fp32
    accumulation (torch's CUDA cumprod) has inf there, double accumulation (its CPU one) the finite
    value. The exact product passes against either reference; an overflowed one passes only against
    the reference that overflowed the same way, and one matching neither fails."""
    x = torch.tensor([1e30, 1e10, 1e-5, 3.0, 2.0])
    fp32_order = torch.cumprod(x, 0)  # sequential in fp32: inf from the second element on
    for i in range(1, 5):
        fp32_order[i] = fp32_order[i - 1] * x[i]
    exact = torch.cumprod(x.double(), 0)
    assert torch.isinf(fp32_order[2]) and torch.isfinite(exact.float()[2])
    assert compare_tensor(exact.float(), fp32_order, exact, "fp32").passed  # double accumulation, CUDA reference
    assert compare_tensor(fp32_order, fp32_order, exact, "fp32").passed  # the reference's own order
    assert compare_tensor(exact.float(), exact.float(), exact, "fp32").passed  # the CPU reference
    assert not compare_tensor(fp32_order, exact.float(), exact, "fp32").passed  # overflowed where nothing did
    wrong = exact.float().clone()
    wrong[3] *= 1.5
    assert not compare_tensor(wrong, fp32_order, exact, "fp32").passed
    zeroed = fp32_order.clone()
    zeroed[2:] = 0.0  # finite, but not the truth
    assert not compare_tensor(zeroed, fp32_order, exact, "fp32").passed
