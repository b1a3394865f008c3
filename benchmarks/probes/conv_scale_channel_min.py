"""Probe (not in the suite): a column reduction with work before and after it (conv, scale, min over
channels, tanh): cuDNN's conv and one column kernel."""
import torch
import torch.nn as nn

batch_size = 64
in_channels = 16
out_channels = 64
height = width = 128
kernel_size = 3
scale = 2.0


class Model(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, scale):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.scale = scale

    def forward(self, x):
        x = self.conv(x) * self.scale
        x = torch.min(x, dim=1, keepdim=True)[0]
        return torch.tanh(x)


def get_inputs():
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size, scale]
