"""Two inputs, one broadcast along rows: tanh(a) * clamp(b, -1, 1) + 0.5 * a * col (fp32)."""
import torch
import torch.nn as nn

rows = 4096
cols = 8192


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a) * torch.clamp(b, -1.0, 1.0) + 0.5 * a * col


def get_inputs():
    return [torch.randn(rows, cols), torch.randn(rows, cols), torch.randn(rows, 1)]


def get_init_inputs():
    return []
