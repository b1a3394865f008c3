"""The 8 largest values of each row, sorted descending (sort-based) (fp32)."""
import torch
import torch.nn as nn

rows = 16384
cols = 2048
top = 8


class Model(nn.Module):
    def __init__(self, top: int):
        super().__init__()
        self.top = top

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, self.top, dim=-1, largest=True, sorted=True).values


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return [top]
