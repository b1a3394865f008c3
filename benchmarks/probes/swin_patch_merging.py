"""Probe (not in the suite): Swin Transformer's patch merging. Four views taking every other row and column
of an NHWC image are concatenated, then a LayerNorm and a Linear down to 2C. The views are read in place
and the cat is read in the norm's row kernel."""
import torch
import torch.nn as nn

batch = 16
side = 56
channels = 96


class Model(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * c)
        self.reduction = nn.Linear(4 * c, 2 * c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


def get_inputs():
    return [torch.randn(batch, side, side, channels)]


def get_init_inputs():
    return [channels]
