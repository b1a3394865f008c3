"""A hand-written CUDA C++ candidate for examples/problems/scale_bias_gelu.py (load_inline)."""
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

cuda_source = r"""
__device__ __forceinline__ float gelu(float y) {
    return 0.5f * y * (1.0f + erff(y * 0.70710678118654752f));
}

// Four elements a thread through 16-byte loads when rows are a multiple of 4 long.
__global__ void scale_bias_gelu_vec4_kernel(const float4* __restrict__ x, const float* __restrict__ scale,
                                            const float* __restrict__ bias, float4* __restrict__ out,
                                            long n4, int hidden) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = x[i];
    int col = (int)((i * 4) % hidden);
    v.x = gelu(v.x * scale[col] + bias[col]);
    v.y = gelu(v.y * scale[col + 1] + bias[col + 1]);
    v.z = gelu(v.z * scale[col + 2] + bias[col + 2]);
    v.w = gelu(v.w * scale[col + 3] + bias[col + 3]);
    out[i] = v;
}

__global__ void scale_bias_gelu_kernel(const float* __restrict__ x, const float* __restrict__ scale,
                                       const float* __restrict__ bias, float* __restrict__ out,
                                       long n, int hidden) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i >= n) return;
    int col = (int)(i % hidden);
    out[i] = gelu(x[i] * scale[col] + bias[col]);
}

torch::Tensor scale_bias_gelu(torch::Tensor x, torch::Tensor scale, torch::Tensor bias) {
    TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.scalar_type() == torch::kFloat, "contiguous fp32 CUDA input");
    auto out = torch::empty_like(x);
    int hidden = (int)x.size(-1);
    int threads = 256;
    if (hidden % 4 == 0) {
        long n4 = x.numel() / 4;
        scale_bias_gelu_vec4_kernel<<<(n4 + threads - 1) / threads, threads>>>(
            reinterpret_cast<const float4*>(x.data_ptr<float>()), scale.data_ptr<float>(), bias.data_ptr<float>(),
            reinterpret_cast<float4*>(out.data_ptr<float>()), n4, hidden);
    } else {
        long n = x.numel();
        scale_bias_gelu_kernel<<<(n + threads - 1) / threads, threads>>>(
            x.data_ptr<float>(), scale.data_ptr<float>(), bias.data_ptr<float>(), out.data_ptr<float>(), n, hidden);
    }
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
