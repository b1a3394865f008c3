"""Per-sample cross-entropy of logits against integer targets: a log-sum-exp and a gather per row (fp32).

Per sample (reduction="none"): a mean over the batch is nearly constant for random logits, so the
harness could not tell a real kernel from one returning a constant.
"""
import torch
import torch.nn as nn

batch_size = 4096
classes = 32000


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, targets, reduction="none")


def get_inputs():
    return [torch.randn(batch_size, classes), torch.randint(0, classes, (batch_size,))]


def get_init_inputs():
    return []
