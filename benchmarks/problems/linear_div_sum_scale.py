"""Linear, divided by 2, summed over the features, scaled (KernelBench's Gemm -> Divide -> Sum -> Scaling) (fp32)."""
import torch
import torch.nn as nn

batch = 4096
in_features = 4096
out_features = 4096


class Model(nn.Module):
    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x) / 2
        return torch.sum(y, dim=1, keepdim=True) * self.scale


def get_inputs():
    return [torch.randn(batch, in_features)]


def get_init_inputs():
    return [in_features, out_features, 1.5]
