"""Reverse cumulative product along each row (flip, cumprod, flip: a suffix product), scaled (fp32)."""
import torch
import torch.nn as nn

rows = 4096
cols = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x.flip(-1), dim=-1).flip(-1) * 0.5


def get_inputs():
    # values near 1, so that a row's running product neither overflows nor underflows
    return [1.0 + 0.01 * torch.randn(rows, cols)]


def get_init_inputs():
    return []
