import torch
import torch.nn as nn

n = 64


class Model(nn.Module):
    def forward(self, x):
        return torch.full_like(x, 3.0)  # the same whatever the input


def get_inputs():
    return [torch.randn(n, n)]


def get_init_inputs():
    return []
