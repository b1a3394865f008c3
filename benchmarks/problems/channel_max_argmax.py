"""The max over channels of an NCHW tensor and where it is (`torch.max(x, dim=1)`, both returned; fp32).

The values and the indices reduce the same columns: one pass over x gives both.
"""
import torch
import torch.nn as nn

batch_size = 32
channels = 64
height, width = 128, 128


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor):
        values, indices = torch.max(x, dim=1)
        return values, indices


def get_inputs():
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return []
