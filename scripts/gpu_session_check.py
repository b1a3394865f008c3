"""A scripted 5-round LLM session on a GPU: where the wall time goes (issue 4's H100 check).

    python scripts/gpu_session_check.py [cuda|cpu]     (needs langgraph and openai importable)

A real local OpenAI-compatible server (tests/agent/fake_openai.py, on 127.0.0.1) plays Coder and
Judge with scripted answers: a kernel that fails to compile, its fix, two faster variants and a
CUDA C++ one; `kevolve optimize` runs against it through the real openai client on the GPU, and its
summary prints the time per part (LLM wait, compile, correctness, timing, profiling).
On the device machine, langgraph and openai are missing: carry their wheels (see the device notes
in the project docs) and put them on PYTHONPATH first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.agent.fake_openai import FakeOpenAI, answer  # noqa: E402

PROBLEM = ROOT / "examples/problems/scale_bias_gelu.py"
TRITON = (ROOT / "examples/candidates/scale_bias_gelu_triton.py").read_text()
CUDA = (ROOT / "examples/candidates/scale_bias_gelu_cuda.py").read_text()


def fence(source: str) -> str:
    return f"Here is the whole file.\n\n```python\n{source}\n```\n"


def verdict(mode: str, strategy: str, change: str) -> str:
    return json.dumps({"mode": mode, "bottleneck": "scripted", "change": change, "strategy": strategy})


def main() -> int:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"  # "cpu" for a dry run of the script itself
    broken = TRITON.replace("tl.math.erf(y * 0.7071067811865476)", "tl.math.erf(y * inv_sqrt2)")
    bigger = TRITON.replace("BLOCK = 1024", "BLOCK = 4096")
    warps = TRITON.replace("BLOCK=BLOCK)", "BLOCK=BLOCK, num_warps=8)").replace("BLOCK = 1024", "BLOCK = 2048")
    coder = [answer(fence(s)) for s in (broken, TRITON, bigger, CUDA, warps)] * 2
    judge = [answer(verdict("fix", "fix-compile", "define the constant")),
             answer(verdict("optimize", "block-size", "raise BLOCK")),
             answer(verdict("optimize", "num-warps", "more warps")),
             answer(verdict("optimize", "cuda-vec4", "16-byte loads")),
             answer(verdict("optimize", "block-size", "try 2048"))] * 2
    with FakeOpenAI(scripts={"coder-m": coder, "judge-m": judge}) as fake, \
            tempfile.TemporaryDirectory() as workspace:
        env = dict(os.environ, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="sk-local-test")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "kevolve.cli", "optimize", str(PROBLEM), "--coder",
                               "openai:coder-m", "--judge", "openai:judge-m", "--rounds", "5", "--device", device,
                               "--workspace", workspace], env=env, text=True)
        print(f"\nwall time of the 5-round session: {time.perf_counter() - started:.1f} s "
              f"({len(fake.requests)} LLM requests)")
        return done.returncode


if __name__ == "__main__":
    sys.exit(main())
