"""The Judge role: reads the evaluation (and profile) and names one thing to fix or optimize next.

Two modes: fix (the candidate failed: the one issue and the minimal fix) and optimize (it passed: the
one bottleneck, the one change, a short strategy label the archive uses as a niche). Every backend
answers the same JSON; when an LLM Judge fails, the rule-based verdict stands in and the session goes on.
"""

from __future__ import annotations

from kevolve.coder import RecordedChat, compact_evaluation

# What each failure usually needs; the evaluation's own error line is quoted beside it.
FIX_ADVICE = {
    "compile_error": "make the file compile: fix the syntax or Triton/CUDA compile error quoted here",
    "runtime_error": "fix the launch: grid, argument order, dtypes and pointer arithmetic",
    "incorrect": "fix the numerics: masks on the tail, index math (row/column strides) and accumulation dtype",
    "rejected": "remove what the static checks refuse and make the candidate's own kernel do the work",
    "timeout": "a kernel hangs or is far too slow: check loop bounds and grid size",
    "crashed": "an illegal memory access: check masks and every pointer offset against the tensor sizes",
    "unverified": "the kernel could not be verified here; keep it simple and standard",
    "duplicate": "this is the same code as an earlier candidate: make a real change",
}

# Optimize mode by the profile's bound class (DESIGN.md "Profiling").
OPTIMIZE_ADVICE = {
    "memory": ("memory bandwidth", "cut the bytes moved: fuse the passes and widen loads (bigger BLOCK, vectorized "
                                   "access)", "cut-bytes"),
    "latency": ("latency (too little parallelism)", "launch more programs or give each more independent work: "
                                                     "re-balance BLOCK and num_warps", "more-parallelism"),
    "compute": ("compute throughput", "tile for reuse and use tensor cores (tl.dot) with more num_stages",
                "tiling"),
}


def mode_for(evaluation: dict | None) -> str:
    return "optimize" if evaluation and evaluation.get("status") == "accepted" else "fix"


def rule_verdict(evaluation: dict | None, profile: dict | None = None) -> dict:
    """The builtin Judge: a few rules over the evaluation and the profile's bound class."""
    if evaluation is None:
        return {"mode": "fix", "bottleneck": "no candidate was produced", "change": "write a complete candidate file",
                "strategy": "fix"}
    status = evaluation.get("status", "crashed")
    if status != "accepted":
        error = (evaluation.get("error") or "").strip().splitlines()
        return {"mode": "fix", "bottleneck": f"{status}: {error[0][:300] if error else 'no detail'}",
                "change": FIX_ADVICE.get(status, "fix the failure quoted here"), "strategy": "fix"}
    bound = (profile or {}).get("bound")
    if isinstance(bound, dict):  # per-kernel classes: the slowest kernel's counts
        bound = next(iter(bound.values()), None)
    if bound in OPTIMIZE_ADVICE:
        bottleneck, change, strategy = OPTIMIZE_ADVICE[bound]
        return {"mode": "optimize", "bottleneck": bottleneck, "change": change, "strategy": strategy}
    # No profile (CPU interpreter, or ncu unavailable): tune the tunables.
    return {"mode": "optimize", "bottleneck": "unknown (no profile here)",
            "change": "tune block size, num_warps and num_stages", "strategy": "tune"}


class LLMJudge:
    """openai:MODEL or manual: judge_messages + JSON answer validated by kevolve.llm.parse_json_answer."""

    def __init__(self, spec: str, chat):
        self.spec, self.chat = spec, chat

    def judge(self, ctx: dict, mode: str, *, chat: RecordedChat) -> dict:
        from kevolve.llm import ask, parse_json_answer
        from kevolve.prompts import JUDGE_SCHEMA, judge_messages

        messages = judge_messages(ctx, mode=mode)
        verdict, _ = ask(chat, messages, role="judge", parse=_json_parser(parse_json_answer, JUDGE_SCHEMA),
                         repair_hint="Answer with one JSON object matching the schema, nothing else.")
        verdict = dict(verdict)
        verdict.setdefault("mode", mode)
        return verdict


class BuiltinJudge:
    spec = "builtin"

    def judge(self, ctx: dict, mode: str, **_) -> dict:
        return rule_verdict(ctx.get("evaluation_full"), ctx.get("profile"))


def _json_parser(parse_json_answer, schema):
    def parse(text: str):
        try:
            return parse_json_answer(text, schema)
        except TypeError:  # a parser that takes the text only
            return parse_json_answer(text)
    return parse


def judge_context(*, problem_source: str, candidate_source: str | None, evaluation: dict | None,
                  profile: dict | None, device_facts: dict | None, backend: str, history: list[dict]) -> dict:
    return {"problem_source": problem_source, "candidate_source": candidate_source,
            "evaluation": compact_evaluation(evaluation), "evaluation_full": evaluation,
            "profile_summary": (profile or {}).get("summary"), "profile": profile, "device_facts": device_facts,
            "backend": backend, "history": history}


def make_judge(spec: str, chat=None):
    if spec == "builtin" or chat is None:
        return BuiltinJudge()
    return LLMJudge(spec, chat)
