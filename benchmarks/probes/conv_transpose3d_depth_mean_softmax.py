"""Probe (not in the suite): a mean over depth of a stride-2 ConvTranspose3d, a bias, a softmax over
channels, tanh and a scale: the input's depth-tap sums and a 2-D transposed convolution, the 3-D
output never built."""
import torch
import torch.nn as nn

batch_size = 16
in_channels = 16
out_channels = 32
depth, height, width = 16, 32, 32


class Model(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1)
        self.bias = nn.Parameter(torch.randn(1, out_channels, 1, 1, 1) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.up(x).mean(dim=2, keepdim=True) + self.bias
        return torch.tanh(torch.softmax(x, dim=1)) * 2.0


def get_inputs():
    return [torch.randn(batch_size, in_channels, depth, height, width)]


def get_init_inputs():
    return [in_channels, out_channels]
