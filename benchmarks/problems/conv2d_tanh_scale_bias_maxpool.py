"""Conv2d (3 -> 16 channels), tanh, a scale, a per-channel bias and a 2x2 max pool (fp32), written
as KernelBench's level 2 writes it: the bias's shape made from a size at module level."""
import torch
import torch.nn as nn

batch_size = 128
in_channels = 3
out_channels = 16
height, width = 128, 128
kernel_size = 3
scaling_factor = 2.0
bias_shape = (out_channels, 1, 1)
pool_kernel_size = 2


class Model(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, scaling_factor, bias_shape, pool_kernel_size):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)
        self.scaling_factor = scaling_factor
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.max_pool = nn.MaxPool2d(pool_kernel_size)

    def forward(self, x):
        x = torch.tanh(self.conv(x))
        x = x * self.scaling_factor + self.bias
        return self.max_pool(x)


def get_inputs():
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [in_channels, out_channels, kernel_size, scaling_factor, bias_shape, pool_kernel_size]
