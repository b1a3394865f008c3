"""NCHW elementwise chain: per-channel scale (broadcast over H, W), SiLU, plus a residual input (fp32)."""
import torch
import torch.nn as nn

batch_size = 32
channels = 256
height = 64
width = 64


class Model(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(1, channels, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        y = x * self.scale
        return y * torch.sigmoid(y) + residual


def get_inputs():
    return [torch.randn(batch_size, channels, height, width), torch.randn(batch_size, channels, height, width)]


def get_init_inputs():
    return [channels]
