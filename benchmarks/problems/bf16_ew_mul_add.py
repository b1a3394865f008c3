"""bf16 elementwise: a * b + c with c broadcast along rows, then ReLU."""
import torch
import torch.nn as nn

rows = 8192
cols = 8192


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.relu(a * b + c)


def get_inputs():
    return [torch.randn(rows, cols, dtype=torch.bfloat16), torch.randn(rows, cols, dtype=torch.bfloat16),
            torch.randn(cols, dtype=torch.bfloat16)]


def get_init_inputs():
    return []
