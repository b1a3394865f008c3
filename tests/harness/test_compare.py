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
    wrong[7] += 5.0
    result = compare_tensor(wrong, eager, ref64, "fp32")
    assert not result.passed and "1 of 4096" in result.detail


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
