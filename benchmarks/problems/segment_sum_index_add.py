"""Scatter-add of rows into buckets: out[idx[i]] += x[i] (fp32)."""
import torch
import torch.nn as nn

rows = 65536
dim = 512
buckets = 4096


class Model(nn.Module):
    def __init__(self, buckets: int):
        super().__init__()
        self.buckets = buckets

    def forward(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.buckets, x.shape[1], device=x.device, dtype=x.dtype)
        return out.index_add_(0, idx, x)


def get_inputs():
    return [torch.randn(rows, dim), torch.randint(0, buckets, (rows,))]


def get_init_inputs():
    return [buckets]
