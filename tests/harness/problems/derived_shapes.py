import torch
import torch.nn as nn

batch_size = 16
in_channels = 4
out_channels = 64
height, width = 32, 48
bias_shape = (out_channels, 1, 1)  # KernelBench's way: a parameter's shape made from a size
hidden = out_channels * 2
mask_shape = (width,)  # read by forward when it runs: width cannot change


class Model(nn.Module):
    def __init__(self, bias_shape, hidden):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bias = nn.Parameter(torch.randn(bias_shape))
        self.fc = nn.Linear(width, hidden)

    def forward(self, x):
        x = torch.relu(self.conv(x) + self.bias) * torch.ones(mask_shape, device=x.device)
        return self.fc(x)


def get_inputs():
    return [torch.randn(batch_size, in_channels, height, width)]


def get_init_inputs():
    return [bias_shape, hidden]
