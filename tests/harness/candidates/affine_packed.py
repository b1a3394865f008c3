import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def affine_kernel(x_ptr, w_ptr, b_ptr, out_ptr, n, cols, SCALE: tl.constexpr, HALF: tl.constexpr,
                  BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    col = offs % cols
    x = tl.load(x_ptr + offs, mask=mask)
    w = tl.load(w_ptr + col, mask=mask)
    b = tl.load(b_ptr + col, mask=mask)
    if HALF:
        y = (x.to(tl.float16) * w.to(tl.float16) + b.to(tl.float16)).to(tl.float32)
    else:
        y = x * w + b
    tl.store(out_ptr + offs, y * SCALE, mask=mask)


def affine(x, w, b, scale=1.0, half=False):
    x = x.contiguous()
    out = torch.empty_like(x)
    affine_kernel[(triton.cdiv(x.numel(), 256),)](x, w, b, out, x.numel(), x.shape[-1], SCALE=scale,
                                                  HALF=half, BLOCK=256)
    return out


class ModelNew(nn.Module):
    # Stores w and b as one (2, cols) tensor: converts the reference state itself.
    def __init__(self, cols):
        super().__init__()
        self.wb = nn.Parameter(torch.empty(2, cols))

    def load_reference_state(self, state_dict):
        with torch.no_grad():
            self.wb.copy_(torch.stack([state_dict["w"], state_dict["b"]]))

    def forward(self, x):
        return affine(x, self.wb[0], self.wb[1])
