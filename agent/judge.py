"""The Judge role: reads the evaluation (and profile) and names one thing to fix or optimize next.

Two modes: fix (the candidate failed: the one issue and the minimal fix) and optimize (it passed: the
one bottleneck, the one change, a short strategy label the archive uses as a niche). Every backend
answers the same JSON; when an LLM Judge fails, the rule-based verdict stands in and the session goes on.
"""

from __future__ import annotations

import math

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

# Optimize mode by the profile's bound class (DESIGN.md "Profiling"), when no counter says more.
# The wording matters: kevolve.builtin.mutate orders its variants by words in the verdict
# ("memory"/"vector" → larger tunables, "latency"/"parallel"/"occupancy" → smaller, "tile" → larger BLOCK).
OPTIMIZE_ADVICE = {
    "memory": ("memory bandwidth", "cut the bytes moved: fuse the passes and widen loads (bigger BLOCK, vectorized "
                                   "access)", "cut-bytes"),
    "latency": ("latency (too little parallelism)", "launch more programs or give each more independent work: "
                                                     "re-balance BLOCK and num_warps", "more-parallelism"),
    "compute": ("compute throughput", "tile for reuse and use tensor cores (tl.dot) with more num_stages",
                "tiling"),
}
NEAR_SOL = 0.90      # above this fraction of the roofline, little is left to win
REREAD = 1.5         # DRAM bytes over the compulsory bytes above this: data is read more than once
DRAM_ROOF_PCT = 80.0
HALF = ("float16", "bfloat16", "fp16", "bf16")


def mode_for(evaluation: dict | None) -> str:
    return "optimize" if evaluation and evaluation.get("status") == "accepted" else "fix"


def _verdict(bottleneck: str, change: str, strategy: str) -> dict:
    return {"mode": "optimize", "bottleneck": bottleneck, "change": change, "strategy": strategy}


def _sol_fraction(evaluation: dict, profile: dict) -> float | None:
    """The harness's roofline fraction (timed with L2 flushed) first; the profiler's as a fallback."""
    value = (evaluation.get("timing") or {}).get("sol_fraction")
    if value is None:
        value = profile.get("sol_fraction")
    return float(value) if isinstance(value, (int, float)) else None


def _kernels(profile: dict) -> list[dict]:
    """Per-kernel reports with counters, slowest first (profile_dict's `kernels`)."""
    out = [k for k in profile.get("kernels") or [] if isinstance(k, dict) and k.get("metrics")]
    return sorted(out, key=lambda k: -(k["metrics"].get("duration_s") or 0.0))


def _tensor_cores_allowed(profile: dict, precision: str | None) -> bool:
    """fp32 problems are judged with TF32 off: tensor cores only where inputs are half or --precision allows."""
    dtype = str((profile.get("cost") or {}).get("dtype") or "")
    return dtype in HALF or (precision or "fp32") in ("tf32", "fp16", "bf16")


def _memory_rule(k: dict, profile: dict, n_kernels: int) -> dict:
    m, cost = k["metrics"], profile.get("cost") or {}
    name, pct = m.get("name", "kernel"), m.get("dram_throughput_pct")
    if n_kernels > 1:
        return _verdict(f"memory-bound across {n_kernels} kernels: each pass writes and re-reads its intermediate",
                        "fuse the kernels into one so intermediates stay in registers, then widen the loads "
                        "(bigger BLOCK)", "fuse")
    moved, needed = m.get("dram_bytes"), cost.get("min_bytes")
    if moved and needed and moved > REREAD * needed:
        return _verdict(f"memory: {name} moves {moved / needed:.1f}x the compulsory bytes (data re-read from DRAM)",
                        "cut the bytes: keep each row/tile on chip for all its passes (one read, one write) and fuse "
                        "neighbouring ops; a bigger BLOCK covers a whole row", "cut-bytes")
    if pct is not None and pct >= DRAM_ROOF_PCT:
        return _verdict(f"memory: {name} runs DRAM at {pct:.0f}% of peak with compulsory traffic only",
                        "only fewer bytes help: narrower storage for intermediates, fuse with neighbours; otherwise "
                        "a larger BLOCK per program for wider vector loads", "cut-bytes")
    l2 = m.get("l2_hit_pct")
    return _verdict(f"memory-side bound below DRAM peak ({pct or 0:.0f}% DRAM, L2 hit {l2 or 0:.0f}%): narrow "
                    "or uncoalesced loads", "raise the vector width: bigger BLOCK, contiguous unit-stride loads along "
                    "the fastest dimension, fewer masked lanes", "vectorize")


def _latency_rule(k: dict, profile: dict) -> dict:
    m = k["metrics"]
    sms = (profile.get("device") or {}).get("sm_count") or 0
    grid = m.get("grid") or []
    blocks = math.prod(grid) if grid else 0
    if blocks and sms and blocks < sms:
        return _verdict(f"latency: grid of {blocks} programs cannot fill {sms} SMs",
                        "more parallelism: smaller BLOCK per program (or split the reduction / split-K) so at least "
                        f"{2 * sms} programs launch", "more-parallelism")
    theo, limiters = m.get("theoretical_occupancy_pct"), m.get("occupancy_limiters") or []
    if theo is not None and theo < 50 and limiters:
        return _verdict(f"latency: occupancy capped at {theo:.0f}% by {', '.join(limiters)}",
                        "raise occupancy: fewer registers and shared memory per program (smaller tiles, fewer "
                        "num_stages) or fewer num_warps per program", "occupancy")
    stalls = m.get("stalls") or []
    top = stalls[0] if stalls else {}
    if top.get("reason") in ("long_scoreboard", "lg_throttle") and (top.get("fraction") or 0) > 0.4:
        # Too few memory requests in flight per warp: give each program more work (a tile, not a word).
        return _verdict(f"warps wait on memory loads ({top['reason']} {top['fraction']:.0%} of stalls) with little "
                        "data in flight", "bigger tiles: a larger BLOCK per program and more num_stages so more "
                        "vector loads are in flight", "bigger-tiles")
    return _verdict("latency (too little independent work in flight)",
                    "more parallelism: re-balance BLOCK and num_warps, launch more programs", "more-parallelism")


def _compute_rule(k: dict, profile: dict, precision: str | None, source: str) -> dict:
    m = k["metrics"]
    tensor = m.get("tensor_pipe_pct") or 0.0
    matmul = "tl.dot" in source or "matmul" in str(m.get("name", "")).lower() or "gemm" in str(m.get("name", ""))
    if tensor < 10 and _tensor_cores_allowed(profile, precision):
        return _verdict(f"compute: {m.get('name', 'kernel')} does its math on the CUDA cores (tensor pipe "
                        f"{tensor:.0f}%)", "use tensor cores: tl.dot on BLOCK_M x BLOCK_N x BLOCK_K tiles in the "
                        "input's half precision with fp32 accumulation", "tensor-cores")
    if tensor < 10 and matmul:
        # fp32 with TF32 off: no tensor cores, and a hand-written fp32 tl.dot is far behind cuBLAS.
        return _verdict("compute: fp32 matmul on the CUDA cores (TF32 is off, no tensor cores allowed)",
                        "keep the matmul on the library (torch.mm / cuBLAS) and fuse everything after it into one "
                        "Triton tail kernel", "library+tail")
    if tensor >= 10:
        return _verdict(f"compute: tensor pipe at {tensor:.0f}%, tiling limits reuse",
                        "better tiling: bigger BLOCK_M/BLOCK_N tiles, more num_stages, grouped program order for L2 "
                        "reuse", "tiling")
    return _verdict(f"compute: {m.get('name', 'kernel')} at the SM roof",
                    "fewer instructions per result: cheaper math (exp2, rsqrt), less index arithmetic, "
                    "bigger tile per program", "tiling")


def optimize_verdict(evaluation: dict, profile: dict | None, *, precision: str | None = None,
                     source: str = "") -> dict:
    """Optimize mode: the roofline first (near it, stop pushing), then the slowest kernel's class and counters."""
    profile = profile or {}
    sol = _sol_fraction(evaluation, profile)
    if sol is not None and sol >= NEAR_SOL:
        return _verdict(f"near the speed of light: {sol:.0%} of the roofline bound, little left to win",
                        "try the remaining tunables sparingly (one BLOCK or num_warps step); otherwise keep this "
                        "kernel", "near-sol")
    kernels = _kernels(profile)
    if kernels:
        top = kernels[0]
        kind = (top.get("bound") or {}).get("kind")
        if kind == "memory":
            return _memory_rule(top, profile, len(kernels))
        if kind == "latency":
            return _latency_rule(top, profile)
        if kind == "compute":
            return _compute_rule(top, profile, precision, source)
    bound = profile.get("bound")
    if isinstance(bound, dict):  # per-kernel classes: the slowest kernel's counts
        bound = next(iter(bound.values()), None)
    if bound in OPTIMIZE_ADVICE:
        return _verdict(*OPTIMIZE_ADVICE[bound])
    # No counters (torch.profiler fallback, or none at all): judge against the roofline class.
    times = profile.get("kernel_times") or []
    if profile.get("problem_class") == "memory" and len(times) > 1:
        return _verdict(f"memory-bound problem run as {len(times)} kernels", "fuse the kernels into one and widen "
                        "the loads (bigger BLOCK)", "fuse")
    if profile.get("problem_class") in OPTIMIZE_ADVICE:
        bottleneck, change, strategy = OPTIMIZE_ADVICE[profile["problem_class"]]
        where = f" ({sol:.0%} of speed of light)" if sol is not None else ""
        return _verdict(f"{bottleneck}{where}, by the roofline (no counters)", change, strategy)
    return _verdict("unknown (no profile here)", "tune block size, num_warps and num_stages", "tune")


def rule_verdict(evaluation: dict | None, profile: dict | None = None, *, precision: str | None = None,
                 source: str = "") -> dict:
    """The builtin Judge: fix advice by status; optimize advice from the roofline and the profile."""
    if evaluation is None:
        return {"mode": "fix", "bottleneck": "no candidate was produced", "change": "write a complete candidate file",
                "strategy": "fix"}
    status = evaluation.get("status", "crashed")
    if status != "accepted":
        error = (evaluation.get("error") or "").strip().splitlines()
        return {"mode": "fix", "bottleneck": f"{status}: {error[0][:300] if error else 'no detail'}",
                "change": FIX_ADVICE.get(status, "fix the failure quoted here"), "strategy": "fix"}
    return optimize_verdict(evaluation, profile, precision=precision, source=source)


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
        return rule_verdict(ctx.get("evaluation_full"), ctx.get("profile"), precision=ctx.get("precision"),
                            source=ctx.get("candidate_source") or "")


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
