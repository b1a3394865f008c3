"""scripts/traffic_cpu.py, run as a user runs it: launches and bytes per forward, counted on meta tensors."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "traffic_cpu.py"

PROBLEMS = {
    "scale_bias": """import torch
import torch.nn as nn

M, N = 64, 128


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Parameter(torch.randn(N))

    def forward(self, x):
        return x * 2.0 + self.b


def get_inputs():
    return [torch.randn(M, N)]


def get_init_inputs():
    return []
""",
    "gather_scale": """import torch
import torch.nn as nn

V, D, B = 1000, 64, 256


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(V, D)

    def forward(self, idx):
        return self.table(idx) * 3.0


def get_inputs():
    return [torch.randint(0, V, (B,))]


def get_init_inputs():
    return []
""",
}


def test_launches_and_bytes_per_forward_are_counted(tmp_path):
    for name, text in PROBLEMS.items():
        (tmp_path / f"{name}.py").write_text(text)
    out = tmp_path / "traffic.json"
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--json", str(out)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())
    fused = rows[str(tmp_path / "scale_bias.py")]
    x, b = 64 * 128 * 4, 128 * 4
    assert fused["min_bytes"] == 2 * x + b
    launches = fused["candidates"]["fused-elementwise"]
    assert [(kind, n) for kind, n, _ in launches] == [("triton", "_ew0_kernel")], launches
    assert launches[0][2] == 2 * x + b  # x and b read, the output written: each once
    gathered = rows[str(tmp_path / "gather_scale.py")]["candidates"]
    kinds = {s: [(kind, n) for kind, n, _ in v] for s, v in gathered.items()}
    assert any(("torch", "embedding") in k and len(k) == 2 for k in kinds.values()), kinds  # torch's gather
    assert "scale_bias" in run.stdout and "1.00x" in run.stdout, run.stdout
