"""Plain matmul with a scaled output and a residual add: (a @ b) * 0.125 + c (fp32)."""
import torch
import torch.nn as nn

m = 2048
k = 2048
n = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b) * 0.125 + c


def get_inputs():
    return [torch.randn(m, k), torch.randn(k, n), torch.randn(m, n)]


def get_init_inputs():
    return []
