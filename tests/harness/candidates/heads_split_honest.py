import torch
import torch.nn as nn
import triton
import triton.language as tl

d_model = 64  # the candidate's own copy of the constant, set by the harness at each trial's shape
heads = 8


@triton.jit
def scale_kernel(x_ptr, w_ptr, out_ptr, n, cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    w = tl.load(w_ptr + offs % cols, mask=mask)
    tl.store(out_ptr + offs, x * w, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.heads = heads
        self.w = nn.Parameter(torch.empty(d_model))

    def forward(self, x):
        b, t, d = x.shape
        x = x.contiguous()
        scaled = torch.empty_like(x)
        scale_kernel[(triton.cdiv(x.numel(), 256),)](x, self.w, scaled, x.numel(), d, BLOCK=256)
        y = scaled.view(b, t, self.heads, d // self.heads)
        return (y * y.softmax(dim=-1)).reshape(b, t, d)
