"""ReLU on inputs in [0, 1): the identity passes on the problem's own inputs (EVAL.md item 9)."""
import torch
import torch.nn as nn

batch_size = 64
dim = 96


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.relu(x)


def get_inputs():
    return [torch.rand(batch_size, dim)]


def get_init_inputs():
    return []
