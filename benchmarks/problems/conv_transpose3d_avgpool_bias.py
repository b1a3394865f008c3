"""ConvTranspose3d at stride 2, a scale, AvgPool3d(2), a bias and a scale (fp32): an upsampling whose
output only feeds an average pool as wide as its stride (the pool is a convolution of the input)."""
import torch
import torch.nn as nn

batch_size = 32
in_channels = 8
out_channels = 16
depth, height, width = 16, 32, 32


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1)
        self.pool = nn.AvgPool3d(2)
        self.bias = nn.Parameter(torch.randn(out_channels, 1, 1, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x) * 0.5
        x = self.pool(x)
        return (x + self.bias) * 2.0


def get_inputs():
    return [torch.randn(batch_size, in_channels, depth, height, width)]


def get_init_inputs():
    return [in_channels, out_channels]
