"""Inclusive prefix sum along each row (the row-scan template) (fp32)."""
import torch
import torch.nn as nn

rows = 4096
cols = 8192


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return []
