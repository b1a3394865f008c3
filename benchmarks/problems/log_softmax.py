"""LogSoftmax over wide rows, a vocabulary-like last dimension (fp32)."""
import torch
import torch.nn as nn

batch_size = 2048
vocab = 16384


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(x, dim=1)


def get_inputs():
    return [torch.randn(batch_size, vocab)]


def get_init_inputs():
    return []
