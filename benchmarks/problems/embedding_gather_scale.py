"""Embedding lookup (a row gather by integer ids) scaled by sqrt(dim), as in transformer inputs (fp32)."""
import math

import torch
import torch.nn as nn

vocab = 32768
dim = 1024
tokens = 16384


class Model(nn.Module):
    def __init__(self, vocab: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.scale = math.sqrt(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) * self.scale


def get_inputs():
    return [torch.randint(0, vocab, (tokens,))]


def get_init_inputs():
    return [vocab, dim]
