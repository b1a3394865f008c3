"""Probe (not in the suite): an elementwise value two reductions read (a row log-sum-exp and a column
max): each kernel computes it from x, nothing written in between."""
import torch
import torch.nn as nn

rows = 8192
cols = 2048


class Model(nn.Module):
    def __init__(self, cols):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(cols))

    def forward(self, x):
        y = x * torch.sigmoid(x) * self.scale
        return y - y.logsumexp(dim=1, keepdim=True) - y.amax(dim=0, keepdim=True)


def get_inputs():
    return [torch.randn(rows, cols)]


def get_init_inputs():
    return [cols]
