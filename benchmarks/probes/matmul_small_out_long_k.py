"""Probe (not in the suite): a plain product whose 256 x 256 output is 16 tiles of 64 x 64, on a GPU of
132 SMs, over K = 65536 (fp32): the template takes smaller tiles, then splits K over more programs and
sums their partial tiles in a second pass. Inductor writes no Triton kernel here (cuBLAS), so there is
no compiler seed: the template is all the session has against torch.compile."""
import torch
import torch.nn as nn

M = 256
N = 256
K = 65536


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
