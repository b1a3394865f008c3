"""A hand-written CUDA C++ candidate for examples/problems/scale_bias_gelu.py (load_inline)."""
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

cuda_source = r"""
__global__ void scale_bias_gelu_kernel(const float4* __restrict__ x, const float* __restrict__ scale,
                                       const float* __restrict__ bias, float4* __restrict__ out,
                                       long n4, int hidden) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = x[i];
    int col = (int)((i * 4) % hidden);
    float* e = reinterpret_cast<float*>(&v);
    #pragma unroll
    for (int k = 0; k < 4; ++k) {
        float y = e[k] * scale[col + k] + bias[col + k];
        e[k] = 0.5f * y * (1.0f + erff(y * 0.70710678118654752f));
    }
    out[i] = v;
}

torch::Tensor scale_bias_gelu(torch::Tensor x, torch::Tensor scale, torch::Tensor bias) {
    TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.size(-1) % 4 == 0, "contiguous CUDA input, hidden % 4 == 0");
    auto out = torch::empty_like(x);
    long n4 = x.numel() / 4;
    int threads = 256;
    long blocks = (n4 + threads - 1) / threads;
    scale_bias_gelu_kernel<<<blocks, threads>>>(reinterpret_cast<const float4*>(x.data_ptr<float>()),
        scale.data_ptr<float>(), bias.data_ptr<float>(), reinterpret_cast<float4*>(out.data_ptr<float>()),
        n4, (int)x.size(-1));
    return out;
}
"""

cpp_source = "torch::Tensor scale_bias_gelu(torch::Tensor x, torch::Tensor scale, torch::Tensor bias);"

ext = load_inline("scale_bias_gelu", cpp_sources=cpp_source, cuda_sources=cuda_source,
                  functions=["scale_bias_gelu"], extra_cuda_cflags=["-O3"])


class ModelNew(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(hidden))
        self.bias = nn.Parameter(torch.randn(hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ext.scale_bias_gelu(x.contiguous(), self.scale, self.bias)
