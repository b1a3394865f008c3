"""A hand-written Triton candidate for examples/problems/softmax.py: one program per row."""
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def _softmax_kernel(x_ptr, out_ptr, n_cols, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride + cols, mask=mask, other=-float("inf"))
    x = x - tl.max(x, axis=0)
    e = tl.exp(x)
    tl.store(out_ptr + row * stride + cols, e / tl.sum(e, axis=0), mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        rows, cols = x.reshape(-1, x.shape[-1]).shape
        out = torch.empty_like(x)
        block = triton.next_power_of_2(cols)
        _softmax_kernel[(rows,)](x, out, cols, cols, BLOCK=block, num_warps=8 if block >= 2048 else 4)
        return out
