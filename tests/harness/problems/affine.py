"""y = x * w + b with per-column weights: outputs depend on weights and inputs."""
import torch
import torch.nn as nn

rows = 48
cols = 80


class Model(nn.Module):
    def __init__(self, cols):
        super().__init__()
        self.w = nn.Parameter(torch.randn(cols))
        self.b = nn.Parameter(torch.randn(cols))

    def forward(self, x):
        return x * self.w + self.b


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return [cols]
