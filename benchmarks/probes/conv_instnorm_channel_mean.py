"""Probe (not in the suite): an instance norm before a mean over channels: a row kernel writing the
norm's mean and variance, a column kernel normalizing as it loads (the normalized tensor never written)."""
import torch
import torch.nn as nn

batch_size = 32
in_channels = 8
out_channels = 64
height = width = 96
kernel_size = 3


class Model(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.norm = nn.InstanceNorm2d(out_channels)

    def forward(self, x):
        x = self.norm(self.conv(x))
        return torch.sigmoid(x.mean(dim=1, keepdim=True))


def get_inputs():
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size]
