import pytest
import torch

from kevolve.profiling.roofline import (
    Cost,
    classify,
    impossible_speedup,
    reference_cost,
    ridge_point,
    roofline_class,
    speed_of_light_ms,
)


class Add(torch.nn.Module):
    def forward(self, a, b):
        return a + b


class MatMul(torch.nn.Module):
    def forward(self, a, b):
        return a @ b


def test_linear_cost():
    cost = reference_cost(torch.nn.Linear(1024, 512), [torch.randn(64, 1024)])
    assert cost.flops == 2 * 64 * 1024 * 512
    assert cost.weight_bytes == (1024 * 512 + 512) * 4
    assert cost.input_bytes == 64 * 1024 * 4 and cost.output_bytes == 64 * 512 * 4
    assert cost.min_bytes == cost.weight_bytes + cost.input_bytes + cost.output_bytes
    assert cost.dtype == "float32"
    assert cost.intensity == pytest.approx(cost.flops / cost.min_bytes)


def test_big_matmul_counts_on_meta_without_computing():
    n = 4096
    a = torch.empty(n, n, dtype=torch.bfloat16)
    cost = reference_cost(MatMul(), [a, a])
    assert cost.flops == 2 * n**3 and cost.dtype == "bfloat16"
    assert cost.input_bytes == n * n * 2  # the same tensor passed twice is read once


def test_real_run_when_meta_fails():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            return x[x > 0].sum().reshape(1)

    cost = reference_cost(DataDependent(), [torch.ones(100)])
    assert cost.input_bytes == 400 and cost.output_bytes == 4


def test_a_gathered_table_counts_the_distinct_rows_read():
    """An embedding reads only the rows its ids name (each once); a table the forward also reads
    whole (tied to an output projection) counts in full."""
    class Lookup(torch.nn.Module):
        def __init__(self, tied: bool):
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 64)
            self.tied = tied

        def forward(self, ids, rows, picks):
            y = self.embed(ids) + torch.index_select(rows, 0, picks).sum(0)
            return y @ self.embed.weight.t() if self.tied else y

    ids, picks = torch.tensor([5, 7, 5, 9, 7, 5]), torch.tensor([1, 2, 1])
    rows = torch.randn(50, 64)
    cost = reference_cost(Lookup(tied=False), [ids, rows, picks])
    assert cost.weight_bytes == 3 * 64 * 4  # ids 5, 7, 9
    assert cost.input_bytes == 6 * 8 + 2 * 64 * 4 + 3 * 8  # the ids, 2 rows of `rows`, the picks
    assert reference_cost(Lookup(tied=True), [ids, rows, picks]).weight_bytes == 1000 * 64 * 4


def test_speed_of_light_memory_and_compute(h100):
    add = Cost(flops=2**26, min_bytes=3 * 4 * 2**26, dtype="float32")
    assert speed_of_light_ms(add, h100) == pytest.approx(3 * 4 * 2**26 / 3.352e12 * 1e3, rel=1e-3)
    assert speed_of_light_ms(add, h100, copy_bandwidth=3.0e12) == pytest.approx(3 * 4 * 2**26 / 3.0e12 * 1e3)
    assert roofline_class(add, h100) == "memory"
    n = 4096
    mm = Cost(flops=2 * n**3, min_bytes=3 * n * n * 2, dtype="bfloat16")
    assert speed_of_light_ms(mm, h100) == pytest.approx(2 * n**3 / h100.peak_flops["bf16_tensor"] * 1e3)
    assert roofline_class(mm, h100) == "compute"
    assert ridge_point(h100, "bfloat16") == pytest.approx(h100.peak_flops["bf16_tensor"] / 3.352e12, rel=1e-3)
    # fp32 stays on CUDA cores (TF32 is off in the reference): the same matmul in fp32 is 16× slower at best.
    mm32 = Cost(flops=2 * n**3, min_bytes=3 * n * n * 4, dtype="float32")
    assert speed_of_light_ms(mm32, h100) == pytest.approx(16 * speed_of_light_ms(mm, h100), rel=1e-6)
    assert speed_of_light_ms(add, None) is None


@pytest.mark.parametrize("args, kind", [
    ((259e-6, 90.68, 4.95, 90.68), "memory"),
    ((259e-6, 85.0, 30.0, 20.0), "memory"),           # busy in L2/L1, not DRAM
    ((2e-3, 40.0, 88.0, 10.0, 75.0), "compute"),
    ((2e-3, 30.0, 20.0, 25.0), "latency"),
    # Triton bf16 matmul 4096³ on an H100 (ncu): L1 as busy as the SM, tensor pipe at 79 %.
    ((248.2e-6, 76.84, 75.67, 26.23, 78.88), "compute"),
    ((248.2e-6, 76.84, 75.67, 26.23, 0.0), "memory"),            # nothing busy: waiting
    ((3e-6, 90.0, 10.0, 90.0), "latency"),            # a few µs: launch-bound whatever the counters say
    ((None, None, None), "unknown"),
])
def test_classify(args, kind):
    assert classify(*args).kind == kind


def test_classify_reports_relevant_peak():
    b = classify(259e-6, 90.68, 4.95, 90.68)
    assert b.pct_of_peak == 90.68 and "DRAM" in b.reason
    b = classify(259e-6, 85.0, 30.0, 20.0)
    assert b.pct_of_peak == 85.0 and "L1/L2" in b.reason
    b = classify(2e-3, 40.0, 88.0, 10.0, 75.0)
    assert b.pct_of_peak == 88.0 and "tensor pipe at 75" in b.reason


def test_impossible_speedup():
    assert impossible_speedup(0.1, 0.24)             # 2.4× faster than light
    assert not impossible_speedup(0.23, 0.24)        # within the slack (measurement noise, clocks)
    assert not impossible_speedup(0.30, 0.24)
    assert impossible_speedup(0.23, 0.24, slack=1.0)
    assert not impossible_speedup(0.01, None)


def test_a_product_with_a_built_diagonal_matrix_counts_as_a_scaling():
    """torch.diag(v) @ B is B's rows scaled (N·M multiplies), not a dense N·N·M product; a product with
    a dense matrix still counts in full."""
    class DiagProducts(torch.nn.Module):
        def forward(self, v, b, c):
            return torch.diag(v) @ b, c @ v.diag(), c @ b

    n, m = 300, 200
    cost = reference_cost(DiagProducts(), [torch.randn(n), torch.randn(n, m), torch.randn(m, n)])
    assert cost.flops == n * m + m * n + 2 * m * n * m


def test_a_product_cut_to_a_triangle_counts_the_triangles_entries():
    class TriProducts(torch.nn.Module):
        def forward(self, a, b):
            return torch.tril(a @ b), torch.triu(torch.bmm(a[None], b[None]), 2)

    n = 64
    cost = reference_cost(TriProducts(), [torch.randn(n, n), torch.randn(n, n)])
    lower = n * (n + 1) // 2  # entries on and below the diagonal
    upper = (n - 2) * (n - 1) // 2  # entries from the second diagonal above up
    assert cost.flops == 2 * n * lower + 2 * n * upper


def test_a_sum_over_a_products_last_dim_counts_as_a_matrix_vector_product():
    """sum_j (x @ W.T + b)_ij / 2 is x times W's column sums: 2·M·K + N·K, not 2·M·K·N; a sum over
    the other dim, or of a product scaled per element, counts the whole product."""
    class Reduced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 32)

        def forward(self, x, y):
            return (self.linear(x) / 2).sum(dim=1), (x @ y).mean(0), ((x @ y) * x[:, :1]).sum(-1)

    m, k, n = 16, 64, 32
    cost = reference_cost(Reduced(), [torch.randn(m, k), torch.randn(k, n)])
    gemv = 2 * m * k + n * k
    assert cost.flops == gemv + 2 * (2 * m * k * n)


def test_a_global_pool_of_a_convolution_counts_the_tap_sums_and_a_small_product():
    """The spatial mean of (conv(x) + b) · s is each input summed per kernel tap, times the weight
    (N·CI·taps·input size + 2·N·CI·taps·CO), whatever the convolution's dense count; a mean over
    the last dim is the input summed per tap of it, then a 1-D transposed convolution; a mean after a
    nonlinearity counts the whole convolution."""
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.up = torch.nn.ConvTranspose2d(3, 8, 3, stride=2)

        def forward(self, x):
            return ((self.conv(x) * 0.5).mean(dim=(2, 3)), self.up(x).mean(-1),
                    torch.relu(self.up(x)).sum(dim=(-2, -1)))

    n, ci, co, h, w, taps = 2, 3, 8, 10, 12, 9
    x = torch.randn(n, ci, h, w)
    cost = reference_cost(Pooled(), [x])
    dense_up = 2 * n * ci * h * w * co * taps  # a transposed convolution's: each input times each tap
    over_w = 2 * n * ci * 3 * (h * w + co * h * 3)  # 3 taps of w: sums, then 3 taps of h at each input row
    assert cost.flops == x.numel() * taps + 2 * n * ci * taps * co + over_w + dense_up


def test_a_sum_over_a_convolutions_channels_counts_one_output_channel():
    """The channels' mean of conv(x) + b (or their sum, negated) is the convolution with the weight
    reduced over its output channels: 1/CO of the dense count; after a nonlinearity, the whole one."""
    class Reduced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean(1, keepdim=True), (-self.conv(x)).sum(dim=1), torch.relu(self.conv(x)).mean(1)

    n, ci, co, h, w = 2, 3, 8, 5, 6
    dense = 2 * n * co * h * w * ci * 9
    assert reference_cost(Reduced(), [torch.randn(n, ci, h, w)]).flops == 2 * dense // co + dense


def test_a_mean_over_a_run_of_a_convolutions_dims_counts_the_lower_rank_convolution():
    """A mean over depth of a Conv3d is the input summed per depth tap (2·N·CI·KD·D·H·W) and a 2-D
    convolution with CI·KD input channels at the outputs' (H, W); a mean over the middle dim alone counts
    the whole convolution."""
    class Reduced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean(2), self.conv(x).mean(3)

    n, ci, co, d, h, w = 2, 3, 8, 4, 5, 6
    dense = 2 * n * co * d * h * w * ci * 27
    over_depth = 2 * n * ci * 3 * d * h * w + 2 * n * co * h * w * ci * 3 * 9
    assert reference_cost(Reduced(), [torch.randn(n, ci, d, h, w)]).flops == over_depth + dense


def test_an_average_pool_that_tiles_a_convolution_counts_the_folded_convolution():
    """AvgPool(2) of a 3x3 convolution is a 4x4 one at stride 2 (16 taps at a quarter of the outputs);
    a pool whose windows overlap counts the whole convolution."""
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x):
            pool = torch.nn.functional.avg_pool2d
            return pool(self.conv(x) * 2, 2), pool(self.conv(x), 3, 2)

    x = torch.randn(2, 3, 10, 12)
    dense = 2 * 2 * 8 * 10 * 12 * 3 * 9
    assert reference_cost(Pooled(), [x]).flops == 2 * 2 * 8 * 5 * 6 * 3 * 16 + dense


def test_an_average_pool_over_a_products_features_counts_the_pooled_product():
    """AvgPool1d(4) over the features of a linear layer is a product with a quarter of the outputs (25
    features: 6 windows, the last feature dropped); a pool whose windows overlap, or a max pool, counts
    the whole product."""
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 25)

        def forward(self, x):
            avg_pool, max_pool = torch.nn.functional.avg_pool1d, torch.nn.functional.max_pool1d
            return (avg_pool((self.linear(x) * 2).unsqueeze(1), 4), avg_pool(self.linear(x).unsqueeze(1), 4, 2),
                    max_pool(self.linear(x).unsqueeze(1), 4))

    m, k = 16, 64
    dense = 2 * m * k * 25
    assert reference_cost(Pooled(), [torch.randn(m, k)]).flops == 2 * m * k * 6 + 2 * dense


def test_an_average_pool_of_a_transposed_convolution_counts_the_convolution_it_folds_into():
    """AvgPool(2) of a 3-tap transposed convolution at stride 2 (padding 1) is a 2-tap convolution of
    its input at stride 1, at the pooled outputs; avg_pool1d of a 1-D one folds the same way; a window
    the stride does not divide counts the whole transposed convolution."""
    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(3, 8, 3, stride=2, padding=1)
            self.line = torch.nn.ConvTranspose1d(3, 8, 3, stride=2, padding=1)

        def forward(self, x, z):
            pool = torch.nn.functional.avg_pool2d
            return pool(self.up(x), 2), torch.nn.functional.avg_pool1d(self.line(z), 2), pool(self.up(x), 3)

    x, z = torch.randn(2, 3, 10, 12), torch.randn(2, 3, 11)
    dense = 2 * 2 * 3 * 10 * 12 * 8 * 9  # a transposed convolution's: each input times each tap
    pooled = 2 * 2 * 8 * 9 * 11 * 3 * 4  # (19, 23) outputs pooled to (9, 11), 2 x 2 offsets
    line = 2 * 2 * 8 * 10 * 3 * 2  # 21 outputs pooled to 10, 2 offsets
    assert reference_cost(Pooled(), [x, z]).flops == pooled + line + dense
