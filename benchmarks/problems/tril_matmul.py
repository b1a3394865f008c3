"""The lower triangle of a product of two lower-triangular matrices (matmul, then tril) (fp32)."""
import torch
import torch.nn as nn

n = 4096


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.tril(torch.matmul(a, b))


def get_inputs():
    return [torch.tril(torch.randn(n, n)), torch.tril(torch.randn(n, n))]


def get_init_inputs():
    return []
