"""A hand-written Triton candidate for examples/problems/scale_bias_gelu.py."""
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _scale_bias_gelu_kernel(x_ptr, scale_ptr, bias_ptr, out_ptr, n_elements, hidden, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    col = offsets % hidden
    x = tl.load(x_ptr + offsets, mask=mask)
    y = x * tl.load(scale_ptr + col, mask=mask) + tl.load(bias_ptr + col, mask=mask)
    # exact (erf) GELU, as torch.nn.functional.gelu's default
    out = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    tl.store(out_ptr + offsets, out, mask=mask)


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(hidden))
        self.bias = nn.Parameter(torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty_like(x)
        n = x.numel()
        BLOCK = 1024
        _scale_bias_gelu_kernel[(triton.cdiv(n, BLOCK),)](
            x, self.scale, self.bias, out, n, x.shape[-1], BLOCK=BLOCK)
        return out
