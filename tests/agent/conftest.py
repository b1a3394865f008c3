"""Shared pieces for the session tests: a tiny problem, scripted candidates, a scripted Coder.

Everything runs on the CPU under the Triton interpreter; one candidate costs about a second.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kevolve.coder import CoderFailed, Proposal

PROBLEM = textwrap.dedent('''
    """ReLU on signed inputs: tiny, so the interpreter is quick."""
    import torch
    import torch.nn as nn

    batch_size = 8
    dim = 48


    class Model(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            return torch.relu(x)


    def get_inputs():
        return [torch.randn(batch_size, dim)]


    def get_init_inputs():
        return []
''')

KERNEL = '''
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0), mask=mask)


class ModelNew(nn.Module):
    def forward(self, x){colon}
        x = x.contiguous()
        out = torch.empty_like(x)
        relu_kernel[(triton.cdiv(x.numel(), {block}),)](x, out, x.numel(), BLOCK={block})
        return out
'''

BROKEN = KERNEL.format(colon="", block=128)  # a syntax error: "def forward(self, x)" without its colon
FIXED = KERNEL.format(colon=":", block=128)
FASTER = KERNEL.format(colon=":", block=512)


def fenced(source: str, words: str = "Here is the kernel.") -> str:
    return f"{words}\n\n```python\n{source.strip()}\n```\n"


@pytest.fixture(autouse=True)
def _private_kernel_library(tmp_path, monkeypatch):
    """Each test its own kernel library: a session must not start from another test's kernel."""
    monkeypatch.setenv("KEVOLVE_LIBRARY", str(tmp_path / "kernel-library.sqlite"))


@pytest.fixture
def problem_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_relu.py"
    path.write_text(PROBLEM)
    return path


class ScriptedCoder:
    """A Coder that hands out fixed sources in order (None: fail that round)."""

    spec = "scripted"

    def __init__(self, sources: list[str | None]):
        self.sources = list(sources)
        self.calls = 0

    def write(self, ctx: dict, **_) -> Proposal:
        self.calls += 1
        source = self.sources.pop(0) if self.sources else None
        if source is None:
            raise CoderFailed("scripted: nothing this round")
        plan = ctx.get("judge_plan") or {}
        return Proposal(source=source, strategy=plan.get("strategy"), operator="scripted")


@pytest.fixture
def kernels() -> dict[str, str]:
    return {"broken": BROKEN, "fixed": FIXED, "faster": FASTER}


@pytest.fixture
def scripted_coder():
    return ScriptedCoder


@pytest.fixture
def fence():
    return fenced


def _verdict_json(schema: dict, mode: str, strategy: str, **values) -> str:
    """A Judge answer that satisfies JUDGE_SCHEMA, whatever else the schema grows to require."""
    import json

    out: dict = {"mode": mode, "bottleneck": "the tail of the row", "change": "mask the tail", "strategy": strategy}
    out.update(values)
    for key in schema.get("required", []):
        if key in out:
            continue
        prop = schema.get("properties", {}).get(key, {})
        kind = prop.get("type", "string")
        kind = kind[0] if isinstance(kind, list) else kind
        out[key] = prop["enum"][0] if "enum" in prop else {"string": "n/a", "number": 0.5, "integer": 1,
                                                            "boolean": False, "array": [], "object": {}}[kind]
    return json.dumps(out)


@pytest.fixture
def verdict_json():
    return _verdict_json


@pytest.fixture
def llm_env(tmp_path, monkeypatch):
    """The real openai client against a fake server: fast retries, a short timeout, priced models."""
    prompts = pytest.importorskip("kevolve.prompts", reason="kevolve.prompts has not landed")
    if not hasattr(prompts, "JUDGE_SCHEMA"):
        pytest.skip("kevolve.prompts has not landed (only its templates folder)")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123456")
    config = tmp_path / "kevolve.toml"
    config.write_text(textwrap.dedent("""
        [llm]
        timeout_s = 1.0
        max_retries = 2
        backoff_s = 0.01
        backoff_max_s = 0.05

        [prices]
        "coder-m" = [1.0, 2.0]
        "judge-m" = [0.5, 1.0]
    """))
    return config
