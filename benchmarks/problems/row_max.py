"""Max over the last dimension after an elementwise abs: amax(|x|, dim=-1), a per-row absmax (fp32)."""
import torch
import torch.nn as nn

rows = 8192
cols = 8192


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(torch.abs(x), dim=-1)


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
