"""Mean over the middle dimension of (batch, seq, hidden): a strided (non-contiguous) reduction (fp32)."""
import torch
import torch.nn as nn

batch_size = 32
seq_len = 1024
hidden = 2048


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def get_inputs():
    return [torch.randn(batch_size, seq_len, hidden)]


def get_init_inputs():
    return []
