"""Rotary position embedding of queries and keys, LLaMA / GPT-NeoX style: rotate_half concatenates the
negated second half of the head dim before the first (fp32)."""
import torch
import torch.nn as nn

batch = 4
heads = 32
tokens = 1024
head_dim = 128


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class Model(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        q_embed = q * cos + rotate_half(q) * sin
        k_embed = k * cos + rotate_half(k) * sin
        return q_embed, k_embed


def get_inputs():
    angles = torch.arange(tokens)[:, None] * (10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim))[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return [torch.randn(batch, heads, tokens, head_dim), torch.randn(batch, heads, tokens, head_dim),
            angles.cos(), angles.sin()]


def get_init_inputs():
    return []
