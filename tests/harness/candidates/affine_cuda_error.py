import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

cuda_source = """
__global__ void affine_kernel(const float* x, const float* w, const float* b, float* out, int n, int cols) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] * w[i % cols] + b[i % cols] + not_declared;
}

torch::Tensor affine(torch::Tensor x, torch::Tensor w, torch::Tensor b) {
    auto out = torch::empty_like(x);
    int n = x.numel();
    affine_kernel<<<(n + 255) / 256, 256>>>(x.data_ptr<float>(), w.data_ptr<float>(), b.data_ptr<float>(),
                                            out.data_ptr<float>(), n, x.size(-1));
    return out;
}
"""

ext = load_inline("affine_broken", cpp_sources="torch::Tensor affine(torch::Tensor x, torch::Tensor w, torch::Tensor b);",
                  cuda_sources=cuda_source, functions=["affine"])


class ModelNew(nn.Module):
    def __init__(self, cols):
        super().__init__()
        self.w = nn.Parameter(torch.empty(cols))
        self.b = nn.Parameter(torch.empty(cols))

    def forward(self, x):
        return ext.affine(x.contiguous(), self.w, self.b)
