"""Small problems in the KernelBench convention, one per template family plus mixed cases."""

HEADER = "import math\n\nimport torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"

PROBLEMS = {
    # (a) elementwise: broadcasts along a middle dim, two inputs, where, scalars, many activations
    "ew_broadcast": """
B = 2
C = 33
L = 40

class Model(nn.Module):
    def __init__(self, c, length):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(c, 1))
        self.bias = nn.Parameter(torch.randn(length))

    def forward(self, x, y):
        z = x * self.scale + self.bias - 0.5 * y
        z = torch.where(z > 0, F.gelu(z, approximate="tanh"), F.silu(z) / 2.0)
        return torch.clamp(z, min=-1.5, max=2.0) + torch.sigmoid(y)

def get_inputs():
    return [torch.randn(B, C, L), torch.randn(B, C, L)]

def get_init_inputs():
    return [C, L]
""",
    "ew_activations": """
M = 4
N = 37

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.Mish()

    def forward(self, x):
        a = self.act(x) + F.softplus(x * 3.0) + F.hardswish(x) + F.leaky_relu(x, 0.2) + F.elu(x)
        b = torch.tanh(x) * F.gelu(x) - torch.abs(x) + torch.exp(-torch.abs(x)) + torch.log(x * x + 1.0)
        return a * b + torch.relu(x).pow(2) + torch.sqrt(torch.abs(x) + 0.1)

def get_inputs():
    return [torch.randn(M, N) * 3]

def get_init_inputs():
    return []
""",
    "ew_fills": """
M = 4
N = 37

class Model(nn.Module):
    def forward(self, x, y):
        a = torch.where(x > 0, y, torch.zeros_like(y)) + torch.ones_like(x) * 2.0
        return torch.maximum(a, torch.full_like(x, float("-inf"))) * torch.full_like(y, 0.5)

def get_inputs():
    return [torch.randn(M, N), torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # (b) row reductions
    "softmax_pair": """
M = 5
N = 37

class Model(nn.Module):
    def forward(self, x):
        return torch.softmax(x * 2.0, dim=-1) + torch.log_softmax(x, dim=1)

def get_inputs():
    return [torch.randn(M, N) * 4]

def get_init_inputs():
    return []
""",
    "layernorm": """
B = 2
S = 3
D = 37

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        with torch.no_grad():
            self.ln.weight.normal_()
            self.ln.bias.normal_()

    def forward(self, x):
        return torch.relu(self.ln(x + 1.0))

def get_inputs():
    return [torch.randn(B, S, D)]

def get_init_inputs():
    return [D]
""",
    "rmsnorm": """
M = 6
D = 45

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d))
        self.eps = 1e-6

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

def get_inputs():
    return [torch.randn(M, D)]

def get_init_inputs():
    return [D]
""",
    "reductions": """
B = 2
C = 3
H = 5
W = 7

class Model(nn.Module):
    def forward(self, x):
        s = x.sum(-1) * 0.5 + torch.max(x, dim=-1)[0]
        pooled = torch.mean(x, dim=(2, 3))
        return s, pooled, torch.amin(x, dim=-1, keepdim=True) - x

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    # tensors beside a reduction's squeezed result, lined up on its right as torch broadcasts them
    "squeezed_rows": """
B = 3
C = 5
N = 33

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(C))

    def forward(self, x, y):
        s = torch.relu(x.sum(-1) * 2.0 + self.bias)
        m = x.mean(-1) - y
        return s, m * y

def get_inputs():
    return [torch.randn(B, C, N), torch.randn(B, C)]

def get_init_inputs():
    return []
""",
    "unit_views": """
B = 4
F = 24

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.InstanceNorm2d(1)
        self.w = nn.Parameter(torch.randn(F))

    def forward(self, x, y):
        a = torch.softmax((x * 2.0 + 1.0).unsqueeze(1), dim=-1).squeeze(1) * self.w
        n = self.norm(x.unsqueeze(1).unsqueeze(1)).squeeze(1).squeeze(1)
        total = x.sum(dim=(0, 1), keepdim=True).squeeze() * 2.0  # a 0-d view
        centered = y - y.amax(-1).view(y.shape[0], 1)  # the keepdim max
        return a, (n + y) * y[None, :, :][0], total, centered

def get_inputs():
    return [torch.randn(B, F), torch.randn(B, F)]

def get_init_inputs():
    return []
""",
    "layer_norm_after_group_norm": """
B = 2
C = 12
H = 5
W = 6

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.rand(C) + 0.5)
        self.b = nn.Parameter(torch.randn(C))

    def forward(self, x):
        y = F.group_norm(x, 2, self.w, self.b, eps=1e-5)
        return torch.relu(F.layer_norm(y, y.shape[-2:])) + x

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    "pooled_head": """
B = 3
C = 16
H = 5
W = 6
CLASSES = 10

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(C, CLASSES)

    def forward(self, x):
        return self.head(torch.relu(x).mean(dim=(2, 3)))

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    # global pools of convolutions: never computed, their tap sums times the weight (products.reduced_conv)
    "conv_global_mean": """
B = 3
CI = 5
CO = 7
H = 11
W = 9

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(CI, CO, 3, stride=2, padding=1)
        self.shift = nn.Parameter(torch.randn(CO, 1, 1))

    def forward(self, x):
        y = self.conv(x) * 0.5 + self.shift
        return torch.softmax(y.mean(dim=(2, 3), keepdim=True), dim=1)

def get_inputs():
    return [torch.randn(B, CI, H, W)]

def get_init_inputs():
    return []
""",
    "conv_transpose_global_pool": """
B = 2
CI = 4
CO = 6
D = 5
H = 6
W = 7

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose3d(CI, CO, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm3d(CO)

    def forward(self, x):
        return F.adaptive_avg_pool3d(-self.bn(self.up(x)), 1).flatten(1)

def get_inputs():
    return [torch.randn(B, CI, D, H, W)]

def get_init_inputs():
    return []
""",
    "conv1d_dilated_sum": """
B = 3
CI = 6
CO = 4
L = 40

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(CI, CO, 5, padding=3, dilation=2, bias=False)
        self.same = nn.Conv1d(CI, CO, 4, padding="same", dilation=3, bias=False)

    def forward(self, x):
        return (self.conv(x) / 3.0).sum(-1) - self.same(x).mean(2)

def get_inputs():
    return [torch.randn(B, CI, L)]

def get_init_inputs():
    return []
""",
    # average pools whose windows tile a convolution's output: folded into its weight (pool_folds.pooled_conv)
    "conv_avg_pools_folded": """
B = 2
CI = 3
CO = 5
H = 12
W = 10
L = 30

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(CI, CO, 3, padding=1)
        self.bn = nn.BatchNorm2d(CO)
        self.pool = nn.AvgPool2d(2)
        self.line = nn.Conv1d(CI, CO, 3, stride=2, padding=1, dilation=2)

    def forward(self, x, y):
        a = torch.sigmoid(self.pool(self.bn(self.conv(x)) * 2.0)).sum(dim=(1, 2, 3))
        b = F.avg_pool1d(self.line(y), 3)
        return a, torch.tanh(b)

def get_inputs():
    return [torch.randn(B, CI, H, W), torch.randn(B, CI, L)]

def get_init_inputs():
    return []
""",
    "linear_pooled_features": """
B = 4
S = 6
K = 20
N = 26

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(K, N) * 0.2)
        self.b = nn.Parameter(torch.randn(N))
        self.fc = nn.Linear(K, N)
        self.pool = nn.AvgPool1d(4)

    def forward(self, x, y):
        a = F.avg_pool1d((x @ self.w + self.b) * 0.5 - 1.0, 3)  # N = 26: 8 windows, the last 2 features dropped
        c = torch.relu(self.pool(self.fc(y).unsqueeze(1))).squeeze(1)
        d = F.avg_pool1d(x @ (self.w * 2.0), 2)  # a weight the forward computes
        return a, c, d

def get_inputs():
    return [torch.randn(B, S, K), torch.randn(B, K)]

def get_init_inputs():
    return []
""",
    "conv_transpose_avg_pools": """
B = 2
CI = 3
CO = 4
D = 4
H = 5
W = 6
L = 9

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.up3 = nn.ConvTranspose3d(CI, CO, 3, stride=2, padding=1)
        self.pool3 = nn.AvgPool3d(2)
        self.bias = nn.Parameter(torch.randn(CO, 1, 1, 1))
        self.up2 = nn.ConvTranspose2d(CI, CO, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0))
        self.bn = nn.BatchNorm2d(CO)
        self.w1 = nn.Parameter(torch.randn(CI, CO, 4) * 0.3)

    def forward(self, x, y, z):
        a = (self.pool3(self.up3(x) * 0.5) + self.bias) * 2.0
        b = F.avg_pool2d(F.avg_pool2d(self.bn(self.up2(y)), 2), 2)  # a stride-(2, 1) transposed conv, pooled twice
        c = torch.tanh(F.avg_pool1d(F.conv_transpose1d(z, self.w1, stride=1, padding=2, dilation=2), 3))
        return a, b, c

def get_inputs():
    return [torch.randn(B, CI, D, H, W), torch.randn(B, CI, H + 3, W + 4), torch.randn(B, CI, L)]

def get_init_inputs():
    return []
""",
    "conv_partial_means": """
B = 2
CI = 3
CO = 5
D = 4
H = 6
W = 7

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose3d(CI, CO, 3, stride=(1, 2, 2), padding=1, output_padding=(0, 1, 1))
        self.bias = nn.Parameter(torch.randn(1, CO, 1, 1, 1))
        self.conv = nn.Conv2d(CI, CO, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
        self.line = nn.Conv3d(CI, CO, 2, padding="same")
        self.plain = nn.Conv2d(CI, CO, 3, stride=2, bias=False)

    def forward(self, x, y):
        a = torch.tanh(torch.softmax(self.up(x).mean(dim=2, keepdim=True) + self.bias, dim=1)) * 2.0
        b = (self.conv(y) * 0.5).sum(-1)  # its bias added once per position summed: the mean times W'
        c = self.line(x).mean((3, 4))  # a trailing run of two
        d = -self.plain(y).sum(2, keepdim=True)
        return a, b, c, d

def get_inputs():
    return [torch.randn(B, CI, D, H, W), torch.randn(B, CI, H + 2, W + 3)]

def get_init_inputs():
    return []
""",
    "conv_biased_sums": """

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose3d(3, 4, 3, stride=2)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x, v):
        a = torch.sum(self.bn(self.conv(x)) * 0.5 + 1.0, dim=(2, 3))  # shifts: the mean times H'·W'
        b = (self.conv(x) - 2.0).sum(-1, keepdim=True)  # a trailing dim of a biased convolution
        c = self.up(v).sum(2)  # over depth
        return a, b, c

def get_inputs():
    return [torch.randn(2, 3, 11, 13), torch.randn(2, 3, 4, 5, 6)]

def get_init_inputs():
    return []
""",
    "squeeze_excite": """
B = 3
C = 16
H = 5
W = 6

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(C, C // 4)
        self.fc2 = nn.Linear(C // 4, C)

    def forward(self, x):
        s = torch.relu(self.fc1(x.mean(dim=(2, 3))))
        s = torch.sigmoid(self.fc2(s)).view(x.shape[0], x.shape[1], 1, 1)
        return x * s

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    # (c) matmul with epilogue: bias, relu, scale, residual
    "linear_epilogue": """
M = 37
K = 40
N = 33

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)

    def forward(self, x, r):
        return torch.relu(self.fc(x)) * 0.5 + r

def get_inputs():
    return [torch.randn(M, K), torch.randn(M, N)]

def get_init_inputs():
    return [K, N]
""",
    "bmm_scale": """
B = 3
M = 17
K = 20
N = 19

class Model(nn.Module):
    def forward(self, a, b):
        return torch.sigmoid(torch.bmm(a, b) * 0.25)

def get_inputs():
    return [torch.randn(B, M, K), torch.randn(B, K, N)]

def get_init_inputs():
    return []
""",
    "matmul_3d_addmm": """
B = 2
S = 5
K = 24
N = 18

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.w = nn.Parameter(torch.randn(k, n))
        self.b = nn.Parameter(torch.randn(n))

    def forward(self, x):
        y = torch.matmul(x, self.w)
        z = torch.addmm(self.b, x[0], self.w)
        u = torch.baddbmm(y, x, self.w.expand(B, K, N), beta=0.5, alpha=2.0)  # 0.5 y + 2 (x @ w)
        v = torch.addmm(self.b.expand(S, N) * float("nan"), x[1], self.w, beta=0)  # the input ignored
        return F.gelu(y) - z, u, v

def get_inputs():
    return [torch.randn(B, S, K)]

def get_init_inputs():
    return [K, N]
""",
    # (d) library conv + fused tail
    "conv_tail": """
B = 2
CI = 3
CO = 8
H = 9

class Model(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, 3, padding=1)
        self.gamma = nn.Parameter(torch.randn(co, 1, 1))

    def forward(self, x):
        return torch.tanh(torch.relu(self.conv(x)) * self.gamma + 1.0)

def get_inputs():
    return [torch.randn(B, CI, H, H)]

def get_init_inputs():
    return [CI, CO]
""",
    # inference batch norm: a per-channel affine from the running statistics, fused into the conv's tail
    # (2-D) and into a row reduction's epilogue (1-D, no affine)
    "conv_bn": """
B = 2
CI = 3
CO = 8
H = 9

class Model(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(co)
        self.bn1d = nn.BatchNorm1d(co, affine=False)
        with torch.no_grad():
            for bn in (self.bn, self.bn1d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = F.silu(self.bn(self.conv(x)))
        return y, self.bn1d(y.mean(dim=(2, 3)))

def get_inputs():
    return [torch.randn(B, CI, H, H)]

def get_init_inputs():
    return [CI, CO]
""",
    # a tail of one operand, the conv's output
    "conv_gelu": """
B = 2
CI = 3
CO = 8
H = 9

class Model(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, 3, padding=1)

    def forward(self, x):
        return F.gelu(self.conv(x))

def get_inputs():
    return [torch.randn(B, CI, H, H)]

def get_init_inputs():
    return [CI, CO]
""",
    # mixed: a sort is not covered, the parts around it are
    "mixed_split": """
M = 4
N = 37

class Model(nn.Module):
    def forward(self, x):
        y = torch.sort(torch.relu(x) * 2.0, dim=0).values
        return torch.softmax(y - 1.0, dim=-1), torch.flip(x, dims=[0]) + 1.0

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # prefix sums along rows, as a function and as a method, one with an elementwise op after it
    "row_scan": """
M = 6
N = 37

class Model(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=-1) * 0.5, x.cumsum(1)

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # argmax / argmin: over the last dim (a prologue), a middle dim (keepdim), all of it; many ties and
    # NaNs, where PyTorch answers the first index of the first NaN, else of the extreme; products likewise;
    # max / min and cummax / cummin over the same NaNs (each NaN kept, as torch's)
    "arg_reductions": """
B = 2
R = 5
N = 9

class Model(nn.Module):
    def forward(self, x):
        p = torch.nan_to_num(x, 0.5) * 0.25 + 1.0
        return (torch.argmax(x * 2.0 - 1.0, dim=-1), x.argmin(dim=1, keepdim=True), torch.argmax(x),
                torch.argmin(torch.abs(x), -1), torch.argmax(x[:, :, 1:3], dim=1),
                torch.prod(p, dim=-1), p.prod(1, keepdim=True), p.prod(),
                torch.amax(x * 2.0, dim=-1), x.amin(dim=1, keepdim=True), torch.max(x), torch.cummax(x, -1).values,
                torch.cummin(x, 1).values)

def get_inputs():
    x = torch.randint(-3, 4, (B, R, N)).float()
    x[0, 1, 2] = float("nan")
    x[1, :, 4] = float("nan")
    return [x]

def get_init_inputs():
    return []
""",
    # reductions over dims apart in memory: one kernel per run of adjacent dims, the innermost first
    "apart_reductions": """
A = 3
B = 5
C = 4
D = 7

class Model(nn.Module):
    def forward(self, x):
        return (torch.mean(x, dim=(0, 2)), torch.relu(x.sum(dim=[1, 3])) * 2.0,
                torch.amax(x, dim=(0, 2, 3), keepdim=True), x.amin((-1, 1)))

def get_inputs():
    return [torch.randn(A, B, C, D)]

def get_init_inputs():
    return []
""",
    # convolutions (1-D to 3-D, modules and F.conv2d) as implicit GEMMs with their tails: stride, padding,
    # dilation and a kernel not square, no bias, a residual, groups (16 output channels each: tl.dot),
    # depthwise (outer products), padding="same" with an even kernel (more padding behind than in front), a
    # 1x1 one on pooled values whose output an elementwise kernel broadcasts (squeeze-and-excitation)
    "conv_geometries": """
B = 2
C = 5
H = 11
W = 9

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Conv2d(c, 7, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
        self.b = nn.Conv2d(c, c, 1, bias=False)
        self.same = nn.Conv2d(c, 4, (3, 4), padding="same", dilation=(1, 3))
        self.depthwise = nn.Conv2d(c, c, 3, groups=c)
        self.grouped = nn.Conv2d(2 * c, 32, 3, stride=2, padding=1, groups=2)
        self.se = nn.Conv2d(c, c, 1)
        self.c1 = nn.Conv1d(c, 3, 4, stride=2, padding=1)
        self.c3 = nn.Conv3d(c, 4, (2, 3, 3), stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1))
        self.wf = nn.Parameter(torch.randn(6, c, 3, 3) * 0.2)
        self.bf = nn.Parameter(torch.randn(6))
        self.step = 2

    def forward(self, x, y):
        f = F.conv2d(x, self.wf, self.bf, stride=self.step, padding=1)
        return (torch.relu(self.a(x)) * 0.5, self.b(x) + x, torch.tanh(self.same(x)), self.depthwise(x) - 1.0,
                self.c1(x.flatten(2)), torch.sigmoid(self.c3(y)), F.gelu(f), self.grouped(torch.cat([x, -x], 1)),
                torch.sigmoid(self.se(x.mean((2, 3), keepdim=True))) * x)  # squeeze-and-excitation

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 4, H, W)]

def get_init_inputs():
    return [C]
""",
    # transposed convolutions as implicit GEMMs split by output phase: strides above the kernel (phases no
    # tap reaches), dilation sharing a factor with the stride, output_padding, 1-D to 3-D, F.conv_transpose2d,
    # groups (2 output channels each); 16 and 17 output channels take tl.dot, fewer outer products
    "transposed_geometries": """
B = 2
C = 5
H = 7
W = 6
L = 9

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.up = nn.ConvTranspose2d(c, 16, 3, stride=2, padding=1, output_padding=1)
        self.t3 = nn.ConvTranspose3d(c, 4, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1), dilation=(1, 2, 1),
                                     bias=False)
        self.t1 = nn.ConvTranspose1d(c, 3, 4, stride=3, padding=2)
        self.holes = nn.ConvTranspose2d(c, 4, 3, stride=2, padding=1, dilation=2)
        self.sparse = nn.ConvTranspose2d(c, 3, 2, stride=3)
        self.grouped = nn.ConvTranspose2d(c * 2, 4, 3, stride=2, groups=2)
        self.wf = nn.Parameter(torch.randn(c, 17, 3, 3) * 0.2)
        self.bf = nn.Parameter(torch.randn(17))

    def forward(self, x, y, s):
        f = F.conv_transpose2d(x, self.wf, self.bf, stride=2, padding=(0, 1))
        return (torch.relu(self.up(x)) * 0.5, torch.sigmoid(self.t3(y)), self.t1(s) - 1.0, self.holes(x),
                torch.tanh(self.sparse(x)), self.grouped(torch.cat([x, x], 1)), F.gelu(f))

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 3, H, W), torch.randn(B, C, L)]

def get_init_inputs():
    return [C]
""",
    # row kernels over a convolution's channels merged into it (the conv tile spans every channel): softmax
    # after a tail, log-sum-exp after a transposed conv, min and mean over dim 1 (as rows of the moved layout);
    # 16 output channels, so tl.dot (fewer would take outer products: conv_geometries has those)
    "conv_row_epilogues": """
B = 2
C = 5
O = 16
H = 7
W = 6

class Model(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.conv = nn.Conv2d(c, o, 3, padding=1)
        self.up = nn.ConvTranspose2d(c, o, 3, stride=2, padding=1, output_padding=1)
        self.c3 = nn.Conv3d(c, o, (1, 3, 3))
        self.bn = nn.BatchNorm2d(o)
        self.other = nn.Conv2d(c, o, 1)

    def forward(self, x):
        s = torch.softmax(self.bn(self.conv(x)) * 2.0, dim=1)
        u = torch.logsumexp(self.up(x), dim=1, keepdim=True)
        m = torch.min(self.conv(x + 1.0), dim=1, keepdim=True)[0]
        v = torch.mean(torch.relu(self.c3(x[:, :, None])), dim=1)
        two = torch.softmax(self.conv(x) + self.other(x), dim=1)  # one of the two convs joins it
        return s, torch.tanh(u), m, v, two

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return [C, O]
""",
    # row kernels over a matmul's last dim merged into it (the tile spans every column): a log-sum-exp after
    # a bias and an activation, a layer norm then GELU, a 4-D matmul's softmax plus a residual, a sum over 5
    # columns without keepdim, a GroupNorm of a Linear's 32 outputs in 4 groups (rows of 8 through its view);
    # the second product of a row (y reads both) stays a kernel of its own
    "matmul_row_epilogues": """
B = 6
K = 20
N = 24
S = 5

class Model(nn.Module):
    def __init__(self, k, n, s):
        super().__init__()
        self.fc = nn.Linear(k, n)
        self.norm = nn.LayerNorm(n)
        self.narrow = nn.Linear(k, s, bias=False)
        self.other = nn.Linear(k, n)
        self.wide = nn.Linear(k, 32)
        self.gn = nn.GroupNorm(4, 32)
        self.tiny = nn.Linear(k, 8)
        self.gn2 = nn.GroupNorm(2, 8)

    def forward(self, x, q, kt, r):
        lse = torch.logsumexp(torch.sigmoid(self.fc(x)) * 2.0, dim=1, keepdim=True)
        ln = F.gelu(self.norm(self.fc(x)))
        att = torch.softmax(torch.matmul(q, kt) * 0.25, dim=-1) + r
        total = torch.relu(self.narrow(x)).sum(dim=1) * 0.5
        y = torch.softmax(self.fc(x) * self.other(x), dim=-1)
        gn = F.silu(self.gn(self.wide(x))) * 2.0
        gn2 = self.gn2(self.tiny(x)) - 1.0  # a tile (16 columns at least) wider than the 2 groups
        return lse, ln, att, total, y, gn, gn2

def get_inputs():
    return [torch.randn(B, K), torch.randn(2, 3, B, K), torch.randn(2, 3, K, N), torch.randn(B, N)]

def get_init_inputs():
    return [K, N, S]
""",
    # pools after convolutions, their windows apart, computed in the convolution's kernel (1-D to 3-D, max and
    # average, a prologue and an epilogue, a kernel size known at run time); overlapping windows stay a pool kernel
    "conv_pool_epilogues": """
B = 2
C = 5
O = 16
H = 11
W = 10

class Model(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.conv = nn.Conv2d(c, o, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.bias = nn.Parameter(torch.randn(o, 1, 1))
        self.c3 = nn.Conv3d(c, o, 2)
        self.c1 = nn.Conv1d(c, o, 3)
        self.overlap = nn.MaxPool2d(3, stride=2)

    def forward(self, x, y):
        a = torch.sigmoid(self.pool(torch.relu(self.conv(x) + self.bias))) * 2.0
        b = F.avg_pool3d(torch.tanh(self.c3(y)), 2) - 1.0
        z = self.conv(x * 0.5)
        c = F.max_pool2d(z, x.size(-1) // 2)
        d = self.overlap(torch.relu(self.conv(x - 1.0)))
        e = F.max_pool1d(self.c1(x.flatten(2)), 4)
        return a, b, c, d, e

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 5, 6, 7)]

def get_init_inputs():
    return [C, O]
""",
    # max pools after transposed convolutions whose stride divides the window (each window position is one
    # output phase): 1-D to 3-D, stacked pools, groups, a tail and an epilogue; a window the stride does not
    # divide stays a pool kernel
    "conv_transpose_pool_epilogues": """
B = 2
C = 4
O = 16
H = 4
W = 5

class Model(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.up2 = nn.ConvTranspose2d(c, o, 4, stride=2, padding=1)
        self.up3 = nn.ConvTranspose3d(c, o, 3, stride=2, padding=1, output_padding=1)
        self.up1 = nn.ConvTranspose1d(c, o, 3, stride=(3,), padding=1)
        self.grouped = nn.ConvTranspose2d(c * 2, o * 2, 3, stride=(1, 2), groups=2)
        self.odd = nn.ConvTranspose2d(c, o, 3, stride=2)

    def forward(self, x, y):
        a = torch.relu(F.max_pool2d(self.up2(x), 2)) * 0.5
        b = F.max_pool3d(F.max_pool3d(torch.tanh(self.up3(y)), 2), (1, 2, 2)).sum(1, keepdim=True)
        c = F.max_pool1d(self.up1(x.flatten(2)) - 1.0, 6)
        d = F.max_pool2d(self.grouped(torch.cat([x, x], 1)), (3, 2))
        e = F.max_pool2d(self.odd(x), 3)
        return a, b, c, d, e

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 3, H, W)]

def get_init_inputs():
    return [C, O]
""",
    # a mean or sum over every spatial dim of a convolution after a nonlinear tail (a global average pool):
    # in the convolution's kernel, each tile adding its images' shares; 1-D to 3-D, transposed, an epilogue
    "conv_global_sums": """
B = 3
C = 4
O = 16
H = 5
W = 6

class Model(nn.Module):
    def __init__(self, c, o):
        super().__init__()
        self.conv = nn.Conv2d(c, o, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(o)
        self.c3 = nn.Conv3d(c, o, 2)
        self.up = nn.ConvTranspose2d(c, o, 3, stride=2)
        self.c1 = nn.Conv1d(c, o, 3)

    def forward(self, x, y):
        a = F.adaptive_avg_pool2d(F.mish(self.bn(self.conv(x))), 1).flatten(1) + 1.0
        b = F.gelu(self.c3(y)).mean([2, 3, 4], keepdim=True)
        c = torch.relu(self.up(x)).sum((2, 3), keepdim=True) * 2.0
        d = torch.tanh(self.c1(x.flatten(2))).mean(-1, keepdim=True)
        return a, b, c, d

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 3, H, W)]

def get_init_inputs():
    return [C, O]
""",
    # windowed pooling: prologue and epilogue fused, ceil mode, padding, dilation, count_include_pad off,
    # divisor_override, a kernel size the forward reads from x, 1-D on (C, L)
    "pools": """
B = 2
C = 3
H = 11
W = 10
L = 13

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)
        self.avg3 = nn.AvgPool3d(2, stride=1, divisor_override=3)
        self.bias = nn.Parameter(torch.randn(C, 1, 1))

    def forward(self, x, s):
        y = torch.sigmoid(self.pool(torch.relu(x * 2.0 + self.bias))) * 3.0
        a = F.avg_pool1d(s, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        g = F.max_pool2d(x, kernel_size=x.size(-1), stride=1)
        v = self.avg3(x[None]) - 1.0
        return y, a, g, v

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(C, L)]

def get_init_inputs():
    return []
""",
    # pools of pools: windows that tile both times are one pool; overlapping ones stay two
    "stacked_pools": """
B = 2
C = 3
D = 6
H = 13
W = 14

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.MaxPool3d(2)
        self.second = nn.MaxPool3d((1, 3, 2))
        self.bias = nn.Parameter(torch.randn(C, 1, 1, 1))

    def forward(self, x, y):
        a = torch.sum(self.second(self.first(x + self.bias)), dim=1, keepdim=True)
        b = torch.tanh(F.avg_pool2d(F.avg_pool2d(y * 2.0, 2), (3, 2)))
        c = F.max_pool2d(F.max_pool2d(y, 3, stride=2), 2)  # the first windows overlap: two pools
        return a, b, c

def get_inputs():
    return [torch.randn(B, C, D, H, W), torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    # cumprod, cummax / cummin values, a suffix sum through flips, a masked prefix sum (its prologue), scans
    # down the columns
    "scans_more": """
M = 6
N = 37

class Model(nn.Module):
    def forward(self, x, mask):
        suffix = torch.cumsum(x.flip(-1), dim=-1).flip(-1)
        return (torch.cumprod(x * 0.5 + 1.0, dim=1), torch.cummax(x, dim=-1)[0] - x.cummin(1).values,
                suffix, torch.cumsum(x * mask, dim=-1), torch.cumsum(x, dim=0), x.cumprod(0) * 2.0,
                torch.cummax(x[None], dim=1).values)

def get_inputs():
    return [torch.randn(M, N), torch.randint(0, 2, (M, N)).bool()]

def get_init_inputs():
    return []
""",
    # pointwise losses (module and functional, each reduction), KL divergence, cosine similarity, log1p
    "losses": """
M = 6
N = 37

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.mse = nn.MSELoss()
        self.huber = nn.HuberLoss(delta=0.5)

    def forward(self, a, b, p, q):
        cos = F.cosine_similarity(a, b, dim=1)
        kl = F.kl_div(torch.log(p), q, reduction="batchmean")
        return (self.mse(a, b), F.l1_loss(a, b, reduction="sum"), F.smooth_l1_loss(a, b, beta=0.3),
                self.huber(a, b), kl, torch.mean(1 - cos), torch.log1p(a.abs()) + torch.expm1(b * 0.1),
                F.mse_loss(a, b, reduction="none"))

def get_inputs():
    return [torch.randn(M, N), torch.randn(M, N), torch.rand(M, N).softmax(-1), torch.rand(M, N).softmax(-1)]

def get_init_inputs():
    return []
""",
    # the other losses, module and functional, with a model float attribute as a margin
    "losses_more": """
M = 6
N = 37

class Model(nn.Module):
    def __init__(self, margin):
        super().__init__()
        self.bce = nn.BCEWithLogitsLoss()
        self.nll = nn.NLLLoss(ignore_index=2)
        self.pd = nn.PairwiseDistance(p=1.0)
        self.triplet = nn.TripletMarginLoss(margin=margin, swap=True)
        self.margin = margin
        self.cel = nn.CosineEmbeddingLoss(margin=0.1)

    def forward(self, x, y, z, labels, sign, same):
        return (self.bce(x, torch.sigmoid(y)), F.binary_cross_entropy(torch.sigmoid(x), torch.sigmoid(y)),
                F.soft_margin_loss(x, sign, reduction="sum"), F.hinge_embedding_loss(x, sign, margin=self.margin),
                F.margin_ranking_loss(x, y, sign, margin=0.1), self.nll(F.log_softmax(x, dim=1), labels),
                F.nll_loss(torch.log_softmax(y, -1), labels, reduction="none"), self.pd(x, y),
                F.pairwise_distance(x, z, keepdim=True), self.triplet(x, y, z), self.cel(x, y, same),
                F.cosine_embedding_loss(x, z, same, reduction="none"))

def get_inputs():
    return [torch.randn(M, N), torch.randn(M, N), torch.randn(M, N), torch.randint(0, N, (M,)),
            torch.randint(0, 2, (M, N)).float() * 2 - 1, torch.randint(0, 2, (M,)) * 2 - 1]

def get_init_inputs():
    return [0.7]
""",
    # forward's arguments named in capitals (FX's node names are lowercase)
    "capital_arguments": """
B = 2
M = 9
K = 17

class Model(nn.Module):
    def forward(self, A, B_):
        return torch.bmm(A, B_) * 2.0

def get_inputs():
    return [torch.randn(B, M, K), torch.randn(B, K, M)]

def get_init_inputs():
    return []
""",
    # a matmul with a diagonal matrix, on either side: a scaling of rows or columns
    "diag_matmul": """
N = 20
M = 13

class Model(nn.Module):
    def forward(self, a, b, c):
        return torch.diag(a) @ b, torch.matmul(c, a.diag()) * 2.0

def get_inputs():
    return [torch.randn(N), torch.randn(N, M), torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # products cut to a triangle (tril, triu, offsets, batched), one with an epilogue after the cut
    "tri_products": """
N = 21

class Model(nn.Module):
    def forward(self, a, b):
        return (torch.tril(torch.matmul(a, b)), (a @ b).triu(2) + 1.0,
                torch.tril(torch.bmm(a[None], b[None]), -3))

def get_inputs():
    return [torch.tril(torch.randn(N, N)), torch.randn(N, N)]

def get_init_inputs():
    return []
""",
    # sums and means over a product's last dim: matrix-vector products (a bias, scalings, a shift)
    "reduced_products": """
B = 5
K = 19
N = 11

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.linear = nn.Linear(k, n)
        self.w = nn.Parameter(torch.randn(k, n))
        self.scale = 1.5
        self.shift = nn.Parameter(torch.randn(1, 1))

    def forward(self, x):
        a = torch.sum(self.linear(x) / 2, dim=1, keepdim=True) * self.scale
        b = (0.5 - (x @ self.w + self.linear.bias)).mean(-1)
        c = (x @ self.w + self.shift).sum(-1)  # a (1, 1) shift adds N times to the sum: not folded
        return a, b, c

def get_inputs():
    return [torch.randn(B, K)]

def get_init_inputs():
    return [K, N]
""",
    # NaN through the elementwise max and clamp family: torch keeps it (tl.maximum alone would drop it)
    "nan_activations": """
M = 4
N = 9

class Model(nn.Module):
    def forward(self, x, y):
        return (torch.relu(x), torch.clamp(x, -0.5, 0.5), torch.maximum(x, y), torch.minimum(y, x),
                F.hardswish(x), F.relu6(x), F.hardtanh(x), F.hardsigmoid(x))

def get_inputs():
    x = torch.randn(M, N) * 4
    x[0, :3] = float("nan")
    y = torch.randn(M, N)
    y[1, 2] = float("nan")
    return [x, y]

def get_init_inputs():
    return []
""",
    # a product read twice (a layer norm written out after a Linear): its mean stays in the row kernel
    "layer_norm_by_hand": """
B = 5
K = 19
N = 11

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.linear = nn.Linear(k, n)

    def forward(self, x):
        y = self.linear(x)
        mu = y.mean(-1, keepdim=True)
        return (y - mu) / torch.sqrt(((y - mu) ** 2).mean(-1, keepdim=True) + 1e-5)

def get_inputs():
    return [torch.randn(B, K)]

def get_init_inputs():
    return [K, N]
""",
    # how real models are written: nn.Sequential / ModuleList children, an int attribute from the
    # sizes in a view, a scale from math.sqrt of it, .contiguous() before a view, chained in-place ops,
    # a forward argument with a default, a buffer indexed in forward, sizes read from module constants
    "model_idioms": """
B = 3
T = 10
D = 16

class Model(nn.Module):
    def __init__(self, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = D // heads
        self.proj = nn.Sequential(nn.Linear(D, D), nn.ReLU())
        self.experts = nn.ModuleList([nn.Linear(D, D) for _ in range(2)])
        self.register_buffer("pos", torch.arange(T * D).float().reshape(T, D) / (T * D))

    def forward(self, x, temperature=1.0):
        b, t, d = x.shape
        h = self.proj(x) + self.pos[None, :, :]
        q = h.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        att = (q @ q.transpose(-2, -1)) / math.sqrt(self.head_dim)
        y = (att.softmax(-1) @ q).transpose(1, 2).contiguous().view(b, t, d)
        y.mul_(2.0).add_(0.5)
        return (self.experts[0](y) + self.experts[1](y)) / temperature

def get_inputs():
    return [torch.randn(B, T, D)]

def get_init_inputs():
    return [2]
""",
    # F.scaled_dot_product_attention: causal at its default scale (1/sqrt of a head_dim that varies
    # with the sizes), and with a scale given
    "sdpa": """
B = 2
H = 2
S = 24
E = 16

class Model(nn.Module):
    def forward(self, q, k, v):
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return causal, F.scaled_dot_product_attention(q, k, v, scale=0.3) * 2.0

def get_inputs():
    return [torch.randn(B, H, S, E), torch.randn(B, H, S, E), torch.randn(B, H, S, E)]

def get_init_inputs():
    return []
""",
    # small ops: rounding, sign, general powers, softmin (function and module), Softmax2d, masks made
    # floats, lerp, addcmul, PReLU, a number argument, tanh, selu
    "small_ops": """
M = 6
N = 37

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.prelu = nn.PReLU(N)
        self.softmin = nn.Softmin(dim=0)
        self.softmax2d = nn.Softmax2d()

    def forward(self, x, y, s: float):
        r = torch.round(x * 4.0) + x.floor() - torch.ceil(y) + torch.trunc(x * 3.0) + torch.sign(y)
        p = (x.abs() + 0.1) ** 2.5 + F.softmin(y, dim=1) + self.softmin(x) + self.softmax2d(y.unsqueeze(-1)).squeeze(-1)
        p = p * (x > 0.25).float() - (y < 0).to(x.dtype).sum(-1, keepdim=True)
        return (r, p, torch.lerp(x, y, 0.3) * s, torch.addcmul(x, x, y, value=0.5), self.prelu(x), torch.tanh(y),
                F.selu(y))

def get_inputs():
    return [torch.randn(M, N), torch.randn(M, N), 1.5]

def get_init_inputs():
    return []
""",
    # einsums that are matmuls (b read transposed in one), a vector on either side of a matmul, glu
    "einsum_vectors_glu": """
B = 2
M = 9
K = 13

class Model(nn.Module):
    def forward(self, a, w, q, v):
        scores = torch.einsum("bhqd,bhkd->bhqk", q, q) * 0.5
        return (torch.einsum("bik,kj->bij", a, w), scores, w @ v, torch.matmul(v, w.T), F.glu(a, dim=-1))

def get_inputs():
    return [torch.randn(B, M, 2 * K), torch.randn(2 * K, K), torch.randn(B, 2, M, K), torch.randn(K)]

def get_init_inputs():
    return []
""",
    # clamp with tensor bounds (broadcast per column), as a function and as a method, one side only too
    "clamp_tensor_bounds": """
M = 6
N = 37

class Model(nn.Module):
    def forward(self, x, lo, hi):
        return torch.clamp(x, min=lo, max=hi) * 2.0, x.clamp(min=lo) + torch.clip(x, lo * 0.5, hi)

def get_inputs():
    return [torch.randn(M, N), -torch.rand(N), torch.rand(N)]

def get_init_inputs():
    return []
""",
    # attention written out: 4D matmul with a transposed B, a scale that is a model float attribute
    # following the init inputs (1/sqrt(head_dim): never baked from the traced instance)
    "attention": """
import math

B = 2
H = 3
S = 17
D = 8

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, q, k, v):
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        return torch.matmul(torch.softmax(scores, dim=-1), v)

def get_inputs():
    return [torch.randn(B, H, S, D), torch.randn(B, H, S, D), torch.randn(B, H, S, D)]

def get_init_inputs():
    return [D]
""",
    # causal attention, 3-D (bmm), scaled by dividing by a model attribute, the mask built in forward
    # from the traced sequence length, a value head size unlike the query's
    "causal_attention": """
import math

B = 3
S = 37
D = 8
DV = 12

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.temperature = math.sqrt(d)

    def forward(self, q, k, v):
        s = q.shape[1]
        scores = torch.bmm(q, k.transpose(1, 2)) / self.temperature
        mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
        return torch.bmm(F.softmax(scores.masked_fill(mask, float('-inf')), dim=-1), v)

def get_inputs():
    return [torch.randn(B, S, D), torch.randn(B, S, D), torch.randn(B, S, DV)]

def get_init_inputs():
    return [D]
""",
    # a model built by a helper method and a class attribute (ResNet's `expansion`, DenseNet's
    # `_make_layer`): ModelNew must have both for the model's own __init__ to run
    "helper_method_block": """
N = 6
F_IN = 20

class Model(nn.Module):
    expansion = 2

    def __init__(self, features, layers):
        super().__init__()
        self.blocks = nn.ModuleList([self._block(features) for _ in range(layers)])

    def _block(self, features):
        return nn.Sequential(nn.Linear(features, features * self.expansion), nn.ReLU(),
                             nn.Linear(features * self.expansion, features))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x

def get_inputs():
    return [torch.randn(N, F_IN)]

def get_init_inputs():
    return [F_IN, 2]
""",
    # the op depends on a size being over a threshold: at the sizes shrunk for tracing the model runs
    # another program than at its own, so no template (they would be right there and wrong here)
    "threshold_branch": """
N = 2048
FEATURES = 1024

class Model(nn.Module):
    def __init__(self, n, features):
        super().__init__()
        self.large = n * features > (1 << 20)  # every shrunk size the templates may trace at is not

    def forward(self, x):
        return torch.relu(x) * 2.0 if self.large else torch.sigmoid(x) * 2.0

def get_inputs():
    return [torch.randn(N, FEATURES)]

def get_init_inputs():
    return [N, FEATURES]
""",
    # minGPT's causal self-attention: the mask a registered tril buffer sliced to the sequence, the scale
    # from a traced size, a dropout between the softmax and the product with v
    "gpt_attention": """
import math

B = 2
T = 37
C = 24
NH = 2

class Model(nn.Module):
    def __init__(self, n_embd, n_head, max_len):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout = nn.Dropout(0.1)
        self.register_buffer("bias", torch.tril(torch.ones(max_len, max_len)).view(1, 1, max_len, max_len))
        self.n_head = n_head
        self.n_embd = n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)

def get_inputs():
    return [torch.randn(B, T, C)]

def get_init_inputs():
    return [C, NH, 2 * T]
""",
    # nn.MultiheadAttention as models use it: sequence-first with biases, then batch-first without,
    # its weights not asked for; a third call reads the weights, and stays the module's own
    "multihead_attention": """
L = 12
N = 2
E = 16

class Model(nn.Module):
    def __init__(self, e):
        super().__init__()
        self.attn = nn.MultiheadAttention(e, 2)
        self.cross = nn.MultiheadAttention(e, 2, bias=False, batch_first=True)
        self.probe = nn.MultiheadAttention(e, 2)

    def forward(self, x):
        a, _ = self.attn(x, x, x)
        y = a.transpose(0, 1) + 1.0
        b = self.cross(y, y, y, need_weights=False)[0]
        c, weights = self.probe(x, x, x)
        return b.transpose(0, 1) * c + weights.sum()

def get_inputs():
    return [torch.randn(L, N, E)]

def get_init_inputs():
    return [E]
""",
    # torch.nn's transformer encoder: a post-norm layer (batch-first), then a stack of two pre-norm GELU
    # layers with a final norm (sequence-first), traced through the fast path FX cannot follow
    "transformer_encoder": """
B = 2
T = 10
D = 16

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.post = nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
        layer = nn.TransformerEncoderLayer(d, 2, 24, dropout=0.1, activation="gelu", norm_first=True)
        self.stack = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(d), enable_nested_tensor=False)

    def forward(self, x):
        y = self.post(x)
        return self.stack(y.transpose(0, 1)).transpose(0, 1)

def get_inputs():
    return [torch.randn(B, T, D)]

def get_init_inputs():
    return [D]
""",
    # torch.nn's decoder: a post-norm layer (batch-first) attending to a memory of another length, then a
    # stack of two pre-norm layers (sequence-first); cross-attention projects the target and the memory apart
    "transformer_decoder": """
B = 2
T = 9
S = 13
D = 16

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.post = nn.TransformerDecoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True)
        layer = nn.TransformerDecoderLayer(d, 2, 24, dropout=0.1, norm_first=True, bias=False)
        self.stack = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(d))

    def forward(self, tgt, memory):
        y = self.post(tgt, memory)
        return self.stack(y.transpose(0, 1), memory.transpose(0, 1)).transpose(0, 1)

def get_inputs():
    return [torch.randn(B, T, D), torch.randn(B, S, D)]

def get_init_inputs():
    return [D]
""",
    # the scores alone (no product with v): no attention to fuse, each matmul and the softmax a kernel
    "attention_scores": """
import math

B = 2
H = 3
S = 17
D = 8

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, q, k):
        return torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)

def get_inputs():
    return [torch.randn(B, H, S, D), torch.randn(B, H, S, D)]

def get_init_inputs():
    return [D]
""",
    # reductions over middle / leading dims (column kernel), keepdim or not, with elementwise after
    "middle_reductions": """
B = 3
S = 37
H = 140

class Model(nn.Module):
    def forward(self, x, y):
        a = x.mean(dim=1)
        b = torch.sum(y, dim=(1, 2), keepdim=True)
        c = torch.amax(x, dim=0)
        return a * 3.0 - 1.0, c, torch.relu(b) * 2.0, torch.amin(y, 1)

def get_inputs():
    return [torch.randn(B, S, H), torch.randn(B, S, 5, H)]

def get_init_inputs():
    return []
""",
    # group_norm: a row reduction over (C/G x spatial) per (batch, group), per-channel affine
    "group_norm": """
B = 2
C = 6
G = 2
H = 5
W = 7

class Model(nn.Module):
    def __init__(self, groups, channels):
        super().__init__()
        self.gn = nn.GroupNorm(groups, channels)
        with torch.no_grad():
            self.gn.weight.normal_()
            self.gn.bias.normal_()

    def forward(self, x, y):
        return torch.relu(self.gn(x * 2.0)), F.group_norm(y, 2, eps=1e-3)

def get_inputs():
    return [torch.randn(B, C, H, W) + 0.5, torch.randn(B, C, W)]

def get_init_inputs():
    return [G, C]
""",
    # elementwise work after a group norm, done in the norm's row layout so that its kernel takes it: a
    # per-channel parameter and a full-shape residual map into that layout; a (1, 1, H, 1) operand does
    # not, and its op stays a kernel of its own
    "group_norm_epilogue": """
B = 2
C = 4
G = 2
H = 5
W = 4

class Model(nn.Module):
    def __init__(self, groups, channels):
        super().__init__()
        self.gn = nn.GroupNorm(groups, channels)
        self.scale = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x, r, col):
        y = self.gn(x)
        y = y * torch.sigmoid(y) * self.scale + r
        return y * 0.5, y + col

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, H, W), torch.randn(1, 1, H, 1)]

def get_init_inputs():
    return [G, C]
""",
    # reductions that pair up in one pass over a long row: a mean and the variance around it, far from
    # zero (a sum of squares minus the squared sum would cancel); a max and the sum of exponentials
    # under it; and a whole-tensor sum, one row that only a split spreads over programs
    "paired_reductions": """
M = 3
N = 50

class Model(nn.Module):
    def forward(self, x):
        y = x + 300.0
        mu = y.mean(-1, keepdim=True)
        var = ((y - mu) ** 2).mean(-1, keepdim=True)
        return (y - mu) * torch.rsqrt(var + 1e-5), torch.softmax(x * 3.0, dim=-1), x.sum()

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # reductions over dims an earlier keepdim reduction left at 1 (KernelBench's chains: sum, then max,
    # mean, log-sum-exp of one element each), and one over a dim that is 1 only as traced: a real one
    "reduction_chains": """
M = 5
N = 40

class Model(nn.Module):
    def forward(self, x, y):
        s = torch.sum(x * 2.0, dim=1, keepdim=True) - x.amax(dim=1, keepdim=True).amin(1, keepdim=True)
        m = torch.max(s, dim=1, keepdim=True)[0]
        a = torch.mean(m + 1.0, dim=1, keepdim=True)
        lse = torch.logsumexp(a * 0.5, dim=1, keepdim=True)
        return torch.logsumexp(lse, dim=1), lse.amin(-1), y.sum(1)

def get_inputs():
    return [torch.randn(M, N), torch.randn(M, 1)]

def get_init_inputs():
    return []
""",
    # cross-entropy against class indices: the target's logit read directly (from a tensor of its own
    # when the logits are computed), ignored targets, the three reductions, label smoothing
    "cross_entropy": """
M = 6
C = 37

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.loss = nn.CrossEntropyLoss(ignore_index=3)

        self.smoothed = nn.CrossEntropyLoss(ignore_index=3, label_smoothing=0.2)

    def forward(self, logits, target):
        return (self.loss(logits, target), F.cross_entropy(logits * 2.0, target, reduction="none"),
                F.cross_entropy(logits, target, reduction="sum", ignore_index=5), self.smoothed(logits, target),
                F.cross_entropy(logits, target, reduction="none", label_smoothing=0.1))

def get_inputs():
    return [torch.randn(M, C) * 3, torch.randint(0, 8, (M,))]

def get_init_inputs():
    return []
""",
    # top-k values along the last dim: ties (rounded values), NaN (torch ranks it above every number),
    # largest and smallest, `.values` and `[0]`, an elementwise epilogue in a kernel of its own
    "topk": """
B = 3
R = 5
N = 37
K = 4

class Model(nn.Module):
    def forward(self, x):
        y = torch.where(x > 1.5, float('nan'), torch.round(x * 2.0))
        return torch.topk(y, K, dim=-1).values * 2.0, y.topk(3, dim=2, largest=False)[0]

def get_inputs():
    return [torch.randn(B, R, N)]

def get_init_inputs():
    return []
""",
    # the indices of a top-k are torch's: ties have no one order to check a kernel's against
    "topk_indices": """
M = 4
N = 37

class Model(nn.Module):
    def forward(self, x):
        return torch.topk(x, 3).indices

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    "uncovered": """
M = 4
N = 37

class Model(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=0).values

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # activations with and without parameters, one-sided clamps, a mask filled with -inf and a number
    "activations_more": """
M = 5
N = 37

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.celu = nn.CELU(0.7)
        self.shrink = nn.Softshrink(0.3)

    def forward(self, x):
        a = F.softsign(x) + F.selu(x) + F.logsigmoid(x * 4.0) + F.tanhshrink(x) + self.celu(x)
        b = F.threshold(x, 0.1, -2.0) + self.shrink(x) + F.hardshrink(x, 0.4) + torch.selu(x)
        c = torch.clamp_min(x, -0.5) * x.clamp_max(0.25)
        m = torch.softmax(x.masked_fill(x > 1.0, float("-inf")), dim=-1)
        return a * b + c, m.masked_fill(x < -1.0, 0.5)

def get_inputs():
    return [torch.randn(M, N) * 2]

def get_init_inputs():
    return []
""",
    # var / std with and without the correction, over the last dims and a middle one; logsumexp;
    # F.normalize; an instance norm
    "statistics": """
B = 3
C = 4
L = 19

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.inorm = nn.InstanceNorm1d(c, affine=True)

    def forward(self, x):
        v = torch.var(x, dim=-1, keepdim=True) + x.std(dim=(1, 2), unbiased=False, keepdim=True)
        s = torch.std(x * 3.0 + 100.0, dim=1)
        lse = torch.logsumexp(x * 2.0, dim=-1) + x.logsumexp(1).sum(-1, keepdim=True)
        n = F.normalize(x, dim=-1) + F.normalize(x, p=1.0, dim=2)
        return v * n + self.inorm(x), s, lse

def get_inputs():
    return [torch.randn(B, C, L)]

def get_init_inputs():
    return [C]
""",
    # elementwise work before a group norm: redone in the norm's layout, its kernel's prologue; its value
    # also read after the norm
    "group_norm_prologue": """
B = 2
C = 4
G = 2
L = 7

class Model(nn.Module):
    def __init__(self, groups, channels):
        super().__init__()
        self.gn = nn.GroupNorm(groups, channels)
        self.scale = nn.Parameter(torch.randn(channels, 1))

    def forward(self, x, y):
        z = torch.tanh(x * 2.0 + 1.0) - y * self.scale
        return self.gn(z) + z

def get_inputs():
    return [torch.randn(B, C, L), torch.randn(B, C, L)]

def get_init_inputs():
    return [G, C]
""",
    # dtype conversions inside a chain, and sizes read from tensors at run time (x.shape, .size(), .device)
    "casts_and_sizes": """
B = 3
C = 5
L = 8

class Model(nn.Module):
    def forward(self, x, h):
        y = (h.float() * x + 1.0).to(torch.float16)  # (the interpreter rounds bf16 wrongly, not fp16)
        z = torch.relu(x).view(x.shape[0], -1)[:, : x.size(1) * 2].to(x.dtype)
        return y, z + torch.ones(x.size(0), 1, device=x.device, dtype=x.dtype)

def get_inputs():
    return [torch.randn(B, C, L), torch.randn(B, C, L).to(torch.float16)]

def get_init_inputs():
    return []
""",
    # python numbers the forward computes from sizes, beside a tensor: scalars in the kernels (a ReLU
    # attention's 1/sqrt(d) is its score product's epilogue); beside another number, python (a slice bound)
    "size_numbers": """
B = 2
T = 6
D = 8

class Model(nn.Module):
    def forward(self, q, k, v):
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        y = F.relu(att) @ v
        n = y.shape[-1] * 2
        return y[..., : n // 4] / n - y.size(1) + y.mean(-1, keepdim=True).mul(y.size(2))

def get_inputs():
    return [torch.randn(B, T, D), torch.randn(B, T, D), torch.randn(B, T, D)]

def get_init_inputs():
    return []
""",
    # a Linear over channels-last pixels, its NCHW residual permuted into the product's layout: the
    # product's epilogue reads x in place through its strides (it had been a contiguous copy of x)
    "permuted_residual_product": """
B = 2
C = 8
H = 3
W = 5

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x):
        y = self.fc(x.permute(0, 2, 3, 1))
        return x + 0.5 * y.permute(0, 3, 1, 2)

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return [C]
""",
    # expand / expand_as / broadcast_to read only by arithmetic with a tensor of the expanded shape: the
    # kernel broadcasts the small operand itself; beside a number the expand stays (the result needs it)
    "expanded_operands": """
B = 2
C = 3
H = 4
W = 5

class Model(nn.Module):
    def forward(self, x, y, z):
        a = x * torch.sigmoid(y).expand_as(x)
        b = torch.broadcast_to(z.view(1, -1, 1, 1), x.shape) + x
        c = y.expand(-1, -1, H, W) * 2.0
        return a + b, c

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 1, 1), torch.randn(C)]

def get_init_inputs():
    return []
""",
    # a 0-d parameter after a reduction whose reduced dims end in a 1: a scalar load, not a column operand
    "scalar_after_reduced_ones": """
B = 4
G = 2
C = 5

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.5))

    def forward(self, m, mu):
        return (m - mu).mean(dim=[1, 2, 3], keepdim=True) * self.s

def get_inputs():
    return [torch.randn(B, G, C, 1), torch.randn(B, G, 1, 1)]

def get_init_inputs():
    return []
""",
    # a convolution centered by its own spatial mean (read besides the mean): the mean from the input's tap
    # sums, so the subtraction joins the convolution's kernel; a downsampling one (input larger than its
    # output) keeps the reduction of its output
    "conv_centered": """
B = 2
CI = 3
CO = 6
S = 7

class Model(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.up = nn.ConvTranspose2d(ci, co, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(co)
        self.down = nn.Conv2d(ci, 2, 3, stride=2)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = self.bn(self.up(x))
        z = self.down(x)
        return y - y.mean(dim=(2, 3), keepdim=True), z - z.mean((2, 3), keepdim=True)

def get_inputs():
    return [torch.randn(B, CI, S, S + 2)]

def get_init_inputs():
    return [CI, CO]
""",
    # sums and means over a convolution's channels (through its bias, a shift and scalings): the
    # convolution of the weight reduced over output channels, one channel computed; a per-channel
    # scaling in between keeps the whole convolution
    "conv_channel_means": """
B = 2
CI = 3
CO = 8
L = 9

class Model(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.conv = nn.Conv2d(ci, co, 3, padding=1)
        self.up = nn.ConvTranspose1d(ci, co, 4, stride=2, padding=1)
        self.scale = nn.Parameter(torch.rand(co, 1, 1) + 0.5)

    def forward(self, x, s):
        mean = (self.conv(x) * 0.5 + 1.0).mean(dim=1, keepdim=True)
        total = -torch.sum(self.up(s) - 2.0 * self.up.bias.view(1, -1, 1), dim=1)
        scaled = (self.conv(x) * self.scale).mean(1)
        return torch.softmax(mean, dim=1) + mean, total, scaled

def get_inputs():
    return [torch.randn(B, CI, L, L + 1), torch.randn(B, CI, L)]

def get_init_inputs():
    return [CI, CO]
""",
    # sums and means over whole channels of group norms (through affines after them): each channel's
    # mean of the input, the group's statistics from its channels'; the normalized tensor never written
    "group_norm_channel_means": """
B = 3
C = 8
G = 2
H = 5
W = 6

class Model(nn.Module):
    def __init__(self, c, g):
        super().__init__()
        self.gn = nn.GroupNorm(g, c)
        self.plain = nn.GroupNorm(g // 2, c, eps=1e-3, affine=False)
        self.bias = nn.Parameter(torch.randn(c, 1, 1))
        with torch.no_grad():
            self.gn.weight.uniform_(0.5, 1.5)
            self.gn.bias.uniform_(-0.5, 0.5)

    def forward(self, x, y):
        per_channel = (self.gn(x + self.bias) * 2.0 - self.bias).mean(dim=[2, 3])
        total = torch.sum(self.plain(y) * 3.0 + 1.0, dim=[1, 2, 3, 4])
        over_batch = self.gn(x).sum([0, 2, 3], keepdim=True)
        return per_channel, total, over_batch

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, 2, H, W)]

def get_init_inputs():
    return [C, G]
""",
    # products with a side of one: a @ v (1-D, (K, 1), batched, torch.mv, addmv), one row times a weight
    # (a Linear's and a plain one), outer products, dot: reductions and broadcast multiplies, not matmuls
    "thin_products": """
B = 3
M = 9
K = 20
N = 11

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.fc = nn.Linear(k, n)
        self.w = nn.Parameter(torch.randn(k, n))

    def forward(self, x, x3, v, r, u, vb):
        mv = torch.relu(x @ v.unsqueeze(1)) + torch.matmul(x, v).unsqueeze(1)
        batched = (x3 @ v.unsqueeze(-1)).sum(0) - torch.bmm(x3, vb).mean(0)
        lin = torch.tanh(self.fc(r)) - r @ self.w
        vec = torch.addmv(torch.mv(x, v), x, v, beta=0.5, alpha=2.0) * torch.dot(v, v) + x.mv(v)
        return mv * batched + u @ lin + torch.outer(vec, lin[0]) + v.dot(v)

def get_inputs():
    return [torch.randn(M, K), torch.randn(B, M, K), torch.randn(K), torch.randn(1, K), torch.randn(M, 1),
            torch.randn(B, K, 1)]

def get_init_inputs():
    return [K, N]
""",
    # x @ w.T, x @ w.t(), x.matmul(w.transpose(0, 1)): the weight is read as a linear's, not copied
    "matmul_transposed_weight": """
M = 9
K = 20
N = 11

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, k))
        self.w2 = nn.Parameter(torch.randn(n, k))

    def forward(self, x):
        y = torch.matmul(x, self.weight.T) / 2.0 + x @ self.w2.t()
        return torch.sum(y, dim=1, keepdim=True) * 1.5 + x.matmul(self.w2.transpose(0, 1))

def get_inputs():
    return [torch.randn(M, K)]

def get_init_inputs():
    return [K, N]
""",
    # reductions over middle dims with work around them: each a row kernel over a moved view of x,
    # read in place through its strides
    "middle_dim_rows": """
B = 3
C = 5
H = 4
W = 6

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(c, 1, 1))

    def forward(self, x):
        y = torch.sigmoid(torch.softmax(x * 2.0 + self.bias, dim=1)) * self.bias
        lse = torch.logsumexp(x, dim=1, keepdim=True)
        return y + lse, torch.std(x * 3.0 + 100.0, dim=(1, 2)), F.normalize(x, dim=1), F.log_softmax(x, dim=2)

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return [C]
""",
    # in-place ops: later readers of a tensor see what x.mul_(), x.add_(), clamp_() and an in-place ReLU
    # did to it, and earlier readers what it was before
    "in_place_ops": """
B = 4
C = 6
L = 10

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(c, 1))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        a = x * 2.0
        b = a + 1.0
        a.mul_(3.0)
        a.add_(self.bias)
        c = a.clamp_(min=-1.0)
        d = a * 1.0
        d += b
        e = torch.tanh(d)
        self.act(e)
        return a + b + c + d + F.relu(e, inplace=True)

def get_inputs():
    return [torch.randn(B, C, L)]

def get_init_inputs():
    return [C]
""",
    # an in-place op on a view changes the tensor under it: no template
    "in_place_on_a_view": """
M = 4
N = 6

class Model(nn.Module):
    def forward(self, x):
        y = x * 1.0
        y[:, 0].mul_(2.0)
        return y + 1.0

def get_inputs():
    return [torch.randn(M, N)]

def get_init_inputs():
    return []
""",
    # KernelBench's "Matmul_Min_Subtract" idiom: a constant made a tensor on x's device and dtype in forward
    "linear_min_constant": """
M = 9
K = 20
N = 11

class Model(nn.Module):
    def __init__(self, k, n, constant):
        super().__init__()
        self.linear = nn.Linear(k, n)
        self.constant = constant

    def forward(self, x):
        x = self.linear(x)
        x = torch.min(x, torch.tensor(self.constant, device=x.device, dtype=x.dtype))
        return x - self.constant

def get_inputs():
    return [torch.randn(M, K)]

def get_init_inputs():
    return [K, N, 0.25]
""",
    # global pooling modules and functions, torch.norm / x.norm() / linalg.vector_norm over trailing and
    # middle dims, keepdim both ways
    "norms_and_global_pools": """
B = 3
C = 5
H = 4
W = 6


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.gmp = nn.AdaptiveMaxPool2d(1)

    def forward(self, x):
        a = self.gap(torch.relu(x)) + self.gmp(x) + F.adaptive_avg_pool2d(x * 2.0, 1)
        n = torch.norm(x, p=2, dim=1, keepdim=True) + x.norm(dim=-1, keepdim=True).sum(-1, keepdim=True)
        v = torch.linalg.vector_norm(x, ord=1, dim=(2, 3)) + torch.norm(x)
        return a + n, v, x / x.norm(p=2, dim=1, keepdim=True)


def get_inputs():
    return [torch.randn(B, C, H, W)]


def get_init_inputs():
    return []
""",
    # a plain reduction over a middle dim with work before and after it (KernelBench's Conv2d_Min_Tanh_Tanh
    # tail): the column kernel, and a variant with rows of the moved layout that takes the work in
    "middle_min_epilogue": """
B = 3
C = 5
H = 4
W = 7

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(c, 1, 1))

    def forward(self, x):
        y = torch.min(x + self.bias, dim=1, keepdim=True)[0]
        return torch.tanh(torch.tanh(y)), (x * 2.0).amax(dim=(1, 2))

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return [C]
""",
    "column_prologues": """
B = 3
C = 6
H = 5
W = 7

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(c, 1, 1))
        self.norm = nn.InstanceNorm2d(c)

    def forward(self, x, g):
        a = torch.tanh(torch.amin(x * g + self.bias, dim=1, keepdim=True)) * 2.0
        b = torch.sigmoid(self.norm(x).mean(dim=1))
        c = torch.relu(x - 0.5).sum(dim=(0, 1))
        d = (x * self.bias).argmax(dim=1)
        return a, b, c, d

def get_inputs():
    return [torch.randn(B, C, H, W), torch.rand(B, 1, 1, 1)]

def get_init_inputs():
    return [C]
""",
    "redone_in_readers": """
N = 6
D = 40

class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.randn(d))
        self.w = nn.Parameter(torch.randn(d, d) * 0.1)

    def forward(self, x):
        y = x * torch.sigmoid(x) * self.scale
        out = y - y.logsumexp(dim=1, keepdim=True) - y.amax(dim=0, keepdim=True)
        m = torch.relu(x + 1.0)
        return out, m.sum(dim=-1, keepdim=True) * (m @ self.w)

def get_inputs():
    return [torch.randn(N, D)]

def get_init_inputs():
    return [D]
""",
    "returned_row_values": """
R = 5
D = 48

class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x, y):
        m = x.amax(dim=-1, keepdim=True)
        s = y.sum(dim=-1)
        return m, torch.exp(x - m) * 0.5, s, torch.tanh(y) * s[:, None]

def get_inputs():
    return [torch.randn(R, D), torch.randn(R, D)]

def get_init_inputs():
    return []
""",
    "sibling_row_reductions": """
B = 6
D = 40

class Model(nn.Module):
    def __init__(self, margin: float):
        super().__init__()
        self.margin = margin

    def forward(self, a, p, n):
        loss = F.triplet_margin_loss(a, p, n, margin=self.margin)
        near = (a - p).abs().sum(-1)
        tail = torch.relu(near - 1.0).mean(-1)
        order = torch.flip(near, [0])
        spread = (a * order[:, None]).amin(-1)
        return loss, tail, spread

def get_inputs():
    return [torch.randn(B, D), torch.randn(B, D), torch.randn(B, D)]

def get_init_inputs():
    return [0.5]
""",
    "sibling_column_reductions": """
B = 3
C = 10
L = 17

class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x, y):
        lo = torch.amin(x, dim=1)
        hi = torch.amax(x, dim=1)
        where = torch.argmax(x, dim=1)
        spread = (hi - lo) / (hi.abs() + lo.abs() + 1e-3)
        avg = torch.mean(y, dim=1, keepdim=True)
        top, at = torch.max(y, dim=1, keepdim=True)
        gate = torch.sigmoid(torch.cat([avg, top], dim=1))
        peak = (y - avg).amax(1, keepdim=True)
        return spread, gate, peak * 2.0, where, at.float() * 0.25

def get_inputs():
    return [torch.randn(B, C, L), torch.randn(B, C, L)]

def get_init_inputs():
    return []
""",
    "permuted_row_norm": """
B = 3
C = 12
L = 7

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(L, L)
        self.ln = nn.LayerNorm(C)

    def forward(self, x):
        y = F.gelu(self.fc(x))
        z = self.ln(y.transpose(1, 2)).transpose(1, 2)
        return z, torch.softmax(torch.tanh(x).transpose(1, 2), dim=-1)

def get_inputs():
    return [torch.randn(B, C, L)]

def get_init_inputs():
    return []
""",
    "clones_and_detach": """
B = 3
D = 20

class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x, idx):
        a = torch.relu(x) * 2.0
        keep = a.clone().detach()
        y = (a + 1.0) * keep + keep
        c = a.clone()
        c.index_fill_(1, idx, -1.0)
        return y, c, torch.softmax(a.mean(1, keepdim=True), dim=1) + a

def get_inputs():
    return [torch.randn(B, D), torch.tensor([1, 3])]

def get_init_inputs():
    return []
""",
    "chunked_gates": """
B = 4
H = 24
L = 5

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(H, 3 * H)

    def forward(self, x, y):
        r, z, n = self.fc(x).chunk(3, 1)
        gated = torch.sigmoid(r) * torch.tanh(n) + z
        return gated, F.glu(y, dim=1) * 2.0, y[:, :, 1:] + 1.0

def get_inputs():
    return [torch.randn(B, H), torch.randn(B, 2 * L, 7)]

def get_init_inputs():
    return []
""",
    "row_value_and_product": """
B = 8
K = 40
N = 24

class Model(nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(k, n) * 0.1)

    def forward(self, x):
        y = torch.relu(x - 0.1)
        return y @ self.weight + y.sum(dim=-1, keepdim=True)

def get_inputs():
    return [torch.randn(B, K)]

def get_init_inputs():
    return [K, N]
""",
    "permuted_layer_norms": """
B = 2
C = 12
H = 5
W = 6
L = 9

class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln = nn.LayerNorm(c)
        self.ln1 = nn.LayerNorm(c)
        self.gamma = nn.Parameter(torch.randn(c))

    def forward(self, x, s):
        y = self.ln(x.permute(0, 2, 3, 1)) * self.gamma
        y = y.permute(0, 3, 1, 2) + x
        t = self.ln1(s.permute(0, 2, 1).contiguous())
        t = torch.nn.functional.silu(t).transpose(1, 2) * s
        return y, t, s.transpose(1, 2) * 2.0

def get_inputs():
    return [torch.randn(B, C, H, W), torch.randn(B, C, L)]

def get_init_inputs():
    return [C]
""",
    "middle_reductions_of_one": """
B = 2
C = 6
H = 5
W = 7

class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        y = torch.clamp(torch.logsumexp(x, dim=1, keepdim=True) - 1.0, -1.0, 1.0)
        z = torch.amin(x * 2.0, dim=1, keepdim=True)
        w = torch.softmax(x, dim=1) * 2.0 - 0.5
        return torch.max(y, dim=1, keepdim=True)[0], z.mean(dim=1), w.amax(dim=1)

def get_inputs():
    return [torch.randn(B, C, H, W)]

def get_init_inputs():
    return []
""",
    # torch.cat read by the kernels that read it (concat.py): a rotary embedding's halves of one input, a
    # value thrice along a middle dim, cats of cats, cats that row kernels reduce (along their columns and
    # along their rows), a cat returned and summed, one read by three kernels, a stack
    "concatenations": """
B = 2
H = 3
T = 5
D = 4


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class Model(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(3 * d)

    def forward(self, q, cos, sin, a, b, img):
        rotated = q * cos + rotate_half(q) * sin
        thrice = torch.cat([a, a, a.tanh()], 1) * 2.0
        nested = torch.cat([torch.cat([a, a.neg()], 0), a * 3.0], 0).sigmoid()
        normed = self.norm(torch.cat([a, F.gelu(b)], -1))
        kept = torch.concat((a.abs(), b), dim=-1)
        soft = torch.softmax(torch.cat([a * 2.0, b.exp()], -1), -1)
        rows = F.layer_norm(torch.cat([a, a.tanh() + 1.0], 0), (D,))  # the cat along the rows
        shared = torch.cat([b, a.abs()], -1)  # read by two kernels: made again in each, never written
        # Swin's patch merging: every other row and column of an NHWC image, read in place
        merged = F.layer_norm(torch.cat([img[:, 0::2, 0::2, :], img[:, 1::2, 0::2, :], img[:, 1::2, 1::2, :]], -1),
                              (3 * D,))
        stacked = torch.stack([a, torch.relu(a)], dim=2) + 1.0  # a cat of the two, each given a dim of 1
        focus = torch.cat([img[..., ::2, ::2], img[..., 1::2, 1::2]], 1) * 2.0  # every other element, in place
        gptj = q * cos + torch.stack((-q[..., 1::2], q[..., ::2]), -1).flatten(-2) * sin  # interleaved halves
        return (rotated, thrice, nested, normed, kept, kept.sum(-1), soft, rows, torch.relu(shared) * 0.5,
                shared.amax(-1), torch.softmax(shared, -1), merged, stacked, focus, gptj)


def get_inputs():
    return [torch.randn(B, H, T, 2 * D), torch.randn(T, 2 * D), torch.randn(T, 2 * D), torch.randn(B, T, D),
            torch.randn(B, T, 2 * D), torch.randn(B, 2 * T, 2 * T, D)]


def get_init_inputs():
    return [D]
""",
}

EXPECTED_FAMILIES = {
    "reduction_chains": {"reduction"},
    "ew_broadcast": {"elementwise"},
    "ew_activations": {"elementwise"},
    "ew_fills": {"elementwise"},
    "softmax_pair": {"reduction", "mixed"},
    "layernorm": {"reduction"},
    "rmsnorm": {"reduction"},
    "reductions": {"reduction", "mixed"},
    "squeezed_rows": {"reduction", "mixed"},
    "unit_views": {"reduction", "mixed"},
    "layer_norm_after_group_norm": {"reduction"},
    "linear_epilogue": {"matmul", "library+tail"},
    "squeeze_excite": {"mixed", "library+tail"},
    "conv_global_mean": {"mixed", "library+tail", "matmul"},
    "conv_avg_pools_folded": {"mixed", "library+tail", "matmul"},
    "conv_transpose_global_pool": {"mixed", "library+tail", "matmul"},
    "linear_pooled_features": {"matmul", "library+tail", "mixed"},
    "conv_transpose_avg_pools": {"mixed", "library+tail", "matmul"},
    "conv_partial_means": {"mixed", "library+tail", "matmul"},
    "conv_biased_sums": {"mixed", "library+tail", "matmul"},
    "stacked_pools": {"reduction", "mixed"},
    "conv1d_dilated_sum": {"mixed", "library+tail", "matmul"},
    "pooled_head": {"mixed", "library+tail"},
    "bmm_scale": {"matmul", "library+tail"},
    "matmul_3d_addmm": {"matmul", "library+tail", "mixed"},
    "conv_tail": {"library+tail", "matmul"},
    "conv_bn": {"library+tail", "mixed"},
    "conv_gelu": {"library+tail", "matmul", "mixed"},
    "mixed_split": {"mixed"},
    "uncovered": set(),
    "topk": {"reduction", "mixed"},
    "row_scan": {"reduction"},  # the scale after the scan is its epilogue
    "scans_more": {"reduction", "mixed"},
    "pools": {"reduction", "mixed"},
    "conv_geometries": {"library+tail", "matmul", "mixed"},
    "transposed_geometries": {"library+tail", "matmul", "mixed"},
    "conv_row_epilogues": {"library+tail", "matmul", "mixed"},
    "conv_pool_epilogues": {"library+tail", "matmul", "mixed"},
    "conv_global_sums": {"library+tail", "matmul", "mixed"},
    "conv_transpose_pool_epilogues": {"library+tail", "matmul", "mixed"},
    "matmul_row_epilogues": {"library+tail", "matmul", "mixed"},
    "apart_reductions": {"reduction", "mixed"},
    "arg_reductions": {"reduction", "mixed"},
    "losses": {"reduction", "mixed"},
    "losses_more": {"reduction", "mixed"},
    "capital_arguments": {"matmul", "library+tail"},
    "diag_matmul": {"elementwise"},
    "tri_products": {"mixed", "library+tail"},  # a[None] is a view torch makes
    "reduced_products": {"reduction", "mixed", "library+tail", "matmul"},
    "layer_norm_by_hand": {"mixed", "library+tail", "matmul"},  # matmul: the norm in the product's kernel
    "nan_activations": {"elementwise"},
    "model_idioms": {"mixed", "library+tail", "matmul"},
    "sdpa": {"matmul", "mixed"},  # the default scale is a value torch computes
    "small_ops": {"elementwise", "reduction", "mixed"},
    "einsum_vectors_glu": {"matmul", "mixed", "library+tail"},
    "clamp_tensor_bounds": {"elementwise"},
    "topk_indices": set(),
    "attention": {"matmul"},
    "causal_attention": {"matmul"},
    "gpt_attention": {"mixed", "matmul", "library+tail"},
    "multihead_attention": {"mixed", "matmul", "library+tail"},
    "transformer_encoder": {"mixed", "matmul", "library+tail"},
    "transformer_decoder": {"mixed", "matmul", "library+tail"},
    "threshold_branch": set(),
    "helper_method_block": {"matmul", "library+tail", "mixed"},
    "attention_scores": {"mixed", "matmul", "reduction", "library+tail"},
    "middle_reductions": {"reduction", "mixed"},
    "group_norm": {"reduction", "mixed"},
    "paired_reductions": {"reduction", "mixed"},
    "group_norm_epilogue": {"reduction", "mixed"},
    "cross_entropy": {"reduction", "mixed"},  # the x * 2.0 prologue and relu epilogue sit across views
    "activations_more": {"elementwise", "reduction", "mixed"},
    "statistics": {"reduction", "mixed"},
    "group_norm_prologue": {"reduction"},
    "casts_and_sizes": {"elementwise", "mixed"},
    "size_numbers": {"matmul", "mixed", "library+tail"},
    "permuted_residual_product": {"matmul", "library+tail"},
    "concatenations": {"mixed"},
    "expanded_operands": {"mixed"},
    "scalar_after_reduced_ones": {"reduction"},
    "conv_centered": {"mixed", "library+tail"},
    "conv_channel_means": {"mixed", "library+tail"},
    "group_norm_channel_means": {"mixed", "reduction"},
    "thin_products": {"reduction", "mixed"},
    "matmul_transposed_weight": {"matmul", "library+tail", "mixed"},
    "middle_dim_rows": {"reduction"},
    "in_place_ops": {"elementwise"},
    "in_place_on_a_view": set(),
    "linear_min_constant": {"matmul", "library+tail"},
    "norms_and_global_pools": {"reduction", "mixed"},
    "middle_min_epilogue": {"reduction", "mixed"},
    "column_prologues": {"reduction", "mixed"},
    "redone_in_readers": {"matmul", "mixed", "library+tail"},
    "returned_row_values": {"reduction"},
    "sibling_row_reductions": {"reduction", "mixed"},
    "sibling_column_reductions": {"reduction", "mixed"},
    "permuted_row_norm": {"matmul", "library+tail", "mixed", "reduction"},
    "clones_and_detach": {"elementwise", "reduction", "mixed"},
    "chunked_gates": {"matmul", "library+tail", "mixed", "elementwise"},
    "row_value_and_product": {"matmul", "library+tail", "mixed"},
    "permuted_layer_norms": {"reduction", "mixed"},
    "middle_reductions_of_one": {"reduction", "mixed"},
}
