"""Softmax over the channels (dim 1) of an NCHW activation plus a per-channel bias, then a per-channel
scale (fp32): the reduced dim is not the contiguous one."""
import torch
import torch.nn as nn

batch_size = 32
channels = 64
height = 56
width = 56


class Model(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(channels, 1, 1) * 0.1)
        self.scale = nn.Parameter(torch.rand(channels, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x + self.bias, dim=1) * self.scale


def get_inputs():
    return [torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return [channels]
