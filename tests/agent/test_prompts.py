"""Prompt templates: every context piece shows up when given, and its section goes when missing."""

from __future__ import annotations

import json

import pytest

from kevolve.llm import parse_json_answer, validate_json
from kevolve.prompts import JUDGE_SCHEMA, TEMPLATES, coder_messages, judge_messages, render

PROBLEM = "import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n    def forward(self, x):\n" \
          "        return torch.relu(x)\n"
PARENT = "class ModelNew(nn.Module):\n    pass  # PARENT_MARK\n"

FULL = {
    "problem_source": PROBLEM,
    "backend": "triton",
    "device_facts": {"name": "NVIDIA H100 80GB HBM3", "peak_bandwidth_gbs": 3352.0, "sm_count": 132},
    "parent_source": PARENT,
    "parent_eval": {"status": "incorrect", "error": "mismatch on shape (3, 17)", "max_abs_error": 0.25,
                    "max_rel_error": 1.0, "failing_checks": [{"name": "odd_shape", "passed": False,
                                                              "detail": "tail elements wrong"}],
                    "timing": None, "log_tail": "Traceback: LOG_MARK"},
    "profile_summary": "relu_kernel: memory-bound, DRAM 41% of peak",
    "judge_plan": {"mode": "fix", "bottleneck": "the tail is not masked", "change": "add mask=offs < n",
                   "strategy": "fix-mask"},
    "inspirations": [{"id": "c0007", "source": "# INSPIRATION_MARK\n", "strategy": "vectorize-loads",
                      "speedup": 1.8}, "# SECOND_INSPIRATION\n"],
    "user_hint": "try BLOCK=1024",
}


def user(messages):
    assert [m["role"] for m in messages] == ["system", "user"]
    return messages[1]["content"]


def test_coder_sees_every_piece():
    msgs = coder_messages(FULL)
    system, text = msgs[0]["content"], user(msgs)
    assert "class ModelNew(nn.Module)" in system and "load_reference_state" in system
    assert "torch.compile" in system and "ONE fenced code block" in system
    assert "Backend: Triton" in system and "tl.constexpr" in system and "num_warps" in system
    for piece in ("return torch.relu(x)", "NVIDIA H100", "peak_bandwidth_gbs: 3352", "PARENT_MARK",
                  "status: incorrect", "mismatch on shape (3, 17)", "failed check odd_shape: tail elements wrong",
                  "max_abs_error 0.25", "LOG_MARK", "memory-bound, DRAM 41%", "add mask=offs < n", "fix-mask",
                  "INSPIRATION_MARK", "c0007", "1.8x eager", "SECOND_INSPIRATION", "try BLOCK=1024"):
        assert piece in text, piece
    assert "{{" not in text and "}}" not in text


def test_missing_pieces_are_omitted():
    text = user(coder_messages({"problem_source": PROBLEM}))
    assert "return torch.relu(x)" in text
    for heading in ("## Device", "## Current candidate", "## How the current", "## Profile", "reviewer's plan",
                    "## Other candidates", "## Hint"):
        assert heading not in text
    assert "\n\n\n" not in text
    assert "Answer with ONE fenced" in text
    text = user(coder_messages({"problem_source": PROBLEM, "parent_source": None, "user_hint": "", "inspirations": []}))
    assert "## Current candidate" not in text and "## Hint" not in text


def test_cuda_backend_conventions():
    system = coder_messages({"problem_source": PROBLEM, "backend": "cuda"})[0]["content"]
    assert "Backend: CUDA C++" in system and "load_inline" in system and "Backend: Triton" not in system
    with pytest.raises(ValueError, match="unknown backend"):
        coder_messages({"problem_source": PROBLEM, "backend": "metal"})


def test_sources_with_fences_and_braces_survive():
    tricky = 'SRC = """\n```\n{{problem_source}} {x}\n"""\n'
    text = user(coder_messages({"problem_source": tricky}))
    assert tricky.strip() in text
    assert "````python" in text  # a longer fence than the one inside


def test_accepted_evaluation_shows_timing_not_logs():
    ev = {"status": "accepted", "timing": {"candidate_ms": 0.0123, "eager_ms": 0.05, "compile_ms": 0.02,
                                           "speedup_vs_eager": 4.07, "speedup_vs_compile": 1.63, "spread": 0.02},
          "log_tail": "noise", "max_abs_error": 1e-7}
    text = user(coder_messages({"problem_source": PROBLEM, "parent_source": PARENT, "parent_eval": ev}))
    assert "candidate 0.0123 ms" in text and "4.07x vs eager" in text and "1.63x vs torch.compile" in text
    assert "noise" not in text and "mismatch" not in text
    ev = {"status": "accepted", "timing": None, "timing_note": "CPU interpreter: correctness only"}
    assert "timing: none (CPU interpreter" in user(coder_messages({"problem_source": PROBLEM, "parent_eval": ev}))


def judge_ctx(**extra):
    return {"problem_source": PROBLEM, "candidate_source": PARENT, "backend": "triton",
            "evaluation": {"status": "compile_error", "error": "SyntaxError: expected ':'"},
            "profile_summary": "PROFILE_MARK", "device_facts": {"name": "H100"},
            "history": [{"round": 1, "id": "c0001", "status": "accepted", "strategy": "seed"}]} | extra


def test_judge_fix_mode():
    msgs = judge_messages(judge_ctx(), "fix")
    system, text = msgs[0]["content"], user(msgs)
    assert '"mode": "fix" or "optimize"' in system and "strategy" in system and "JSON" in system
    assert "Mode: fix" in text and "minimal" in text
    assert "SyntaxError: expected ':'" in text and "PARENT_MARK" in text and "return torch.relu(x)" in text
    assert "round: 1, id: c0001" in text
    assert "PROFILE_MARK" not in text  # a failed candidate has no profile worth reading


def test_judge_optimize_mode():
    ev = {"status": "accepted", "timing": {"candidate_ms": 0.5, "eager_ms": 1.0, "speedup_vs_eager": 2.0}}
    text = user(judge_messages(judge_ctx(evaluation=ev), "optimize"))
    assert "Mode: optimize" in text and "PROFILE_MARK" in text and "2x vs eager" in text
    assert "bottleneck" in text
    # The graph's context also carries the full evaluation; it is used when the compact one is missing.
    text = user(judge_messages(judge_ctx(evaluation=None, evaluation_full=ev), "optimize"))
    assert "candidate 0.5 ms" in text
    text = user(judge_messages({"problem_source": PROBLEM}, "optimize"))
    assert "## Profile" not in text and "## Earlier rounds" not in text


def test_judge_bad_mode():
    with pytest.raises(ValueError, match="fix or optimize"):
        judge_messages(judge_ctx(), "rewrite")


def test_judge_schema():
    good = {"mode": "fix", "bottleneck": "tail not masked", "change": "mask the loads", "strategy": "fix-mask",
            "confidence": 0.9, "reasoning": "rows of 17 fail"}
    assert validate_json(good, JUDGE_SCHEMA) == []
    assert parse_json_answer(json.dumps(good), JUDGE_SCHEMA) == good
    minimal = {k: good[k] for k in JUDGE_SCHEMA["required"]}
    assert validate_json(minimal, JUDGE_SCHEMA) == []
    assert validate_json(good | {"strategy": ""}, JUDGE_SCHEMA)
    assert validate_json(good | {"strategy": "x" * 200}, JUDGE_SCHEMA)
    assert validate_json(good | {"confidence": 1.5}, JUDGE_SCHEMA)


def test_templates_exist_and_render():
    names = {p.stem for p in TEMPLATES.glob("*.md")}
    assert {"coder", "coder_system", "judge_system", "judge_fix", "judge_optimize", "conventions_triton",
            "conventions_cuda"} <= names
    template = "a\n{{#x}}\nX={{x}}\n{{/x}}\nb{{y}}\n"
    assert render(template, {"x": "1"}) == "a\nX=1\n\nb\n"
    assert render(template, {"x": ""}) == "a\nb\n"
