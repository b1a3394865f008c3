"""A diagonal matrix built from a vector, times a matrix (torch.diag(v) @ b) (fp32)."""
import torch
import torch.nn as nn

n = 4096
m = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.diag(v) @ b


def get_inputs():
    return [torch.randn(n), torch.randn(n, m)]


def get_init_inputs():
    return []
