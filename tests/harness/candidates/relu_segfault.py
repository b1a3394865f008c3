import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0), mask=mask)


def relu(x, out=None):
    out = torch.empty_like(x) if out is None else out
    relu_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)
    return out


@triton.jit
def wild_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = (tl.arange(0, BLOCK) + 1) * 400_000_000  # int32 wraps: wild addresses
    tl.store(out_ptr + offs, tl.load(x_ptr + offs))


class ModelNew(nn.Module):
    # Reads far outside any allocation: a segfault under the interpreter, an illegal access on a GPU.
    def forward(self, x):
        out = torch.empty_like(x)
        wild_kernel[(1,)](x, out, BLOCK=256)
        return out
