"""Linear (512 -> 1024 features), GroupNorm (16 groups of 64), Swish, a per-feature scale, Swish
(fp32): Gemm -> GroupNorm as KernelBench's level 2 writes it, its rows too wide for one tile."""
import torch
import torch.nn as nn

batch_size = 4096
in_features = 512
out_features = 1024
num_groups = 16


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int, num_groups: int):
        super().__init__()
        self.gemm = nn.Linear(in_features, out_features)
        self.group_norm = nn.GroupNorm(num_groups, out_features)
        self.scale = nn.Parameter(torch.rand(out_features) + 0.5)
        with torch.no_grad():
            self.group_norm.weight.uniform_(0.5, 1.5)
            self.group_norm.bias.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group_norm(self.gemm(x))
        x = x * torch.sigmoid(x) * self.scale
        return x * torch.sigmoid(x)


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features, num_groups]
