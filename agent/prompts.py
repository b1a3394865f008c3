"""Prompts for the Coder and the Judge, rendered from the templates in agent/prompts/*.md.

Templates use two constructs only: `{{name}}` (the formatted context value) and
`{{#name}} ... {{/name}}` (a section dropped when the context has no value for `name`), so a missing
piece of context simply leaves its section out. Values are inserted once and never re-scanned,
so sources containing `{{` are safe.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "prompts"
MAX_TEXT = 24_000  # characters of any one source or log shown; longer ones keep their head and tail
MAX_INSPIRATIONS = 3
MAX_HISTORY = 12

JUDGE_SCHEMA: dict = {
    "type": "object",
    "required": ["mode", "bottleneck", "change", "strategy"],
    "properties": {
        "mode": {"type": "string", "enum": ["fix", "optimize"]},
        "bottleneck": {"type": "string", "minLength": 1},
        "change": {"type": "string", "minLength": 1},
        "strategy": {"type": "string", "minLength": 1, "maxLength": 60},  # the archive's niche label
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reasoning": {"type": "string"},
    },
}

BACKENDS = ("triton", "cuda")


def load_template(name: str) -> str:
    return (TEMPLATES / f"{name}.md").read_text()


_SECTION = re.compile(r"\{\{#(\w+)\}\}[ \t]*\n?(.*?)\{\{/\1\}\}[ \t]*\n?", re.S)
_VAR = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict[str, str]) -> str:
    """Fill a template: sections whose value is empty go, `{{name}}` becomes the value."""
    kept = _SECTION.sub(lambda m: m.group(2) + "\n" if values.get(m.group(1)) else "", template)
    text = _VAR.sub(lambda m: values.get(m.group(1)) or "", kept)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ---------------------------------------------------------------- formatting context values


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters cut] ...\n{text[-half:]}"


def _code(text: Any) -> str:
    return _clip(str(text).strip("\n")) if text else ""


def _fence(text: str, lang: str = "") -> str:
    """A fence longer than any backtick run inside, so a source that contains ``` stays intact."""
    run = max((len(m) for m in re.findall(r"`{3,}", text)), default=2)
    mark = "`" * (run + 1)
    return f"{mark}{lang}\n{text.strip(chr(10))}\n{mark}"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _plain(value: Any) -> str:
    """A string as is; a dict as `- key: value` lines; anything else as JSON."""
    if value is None or value == "" or value == {} or value == []:
        return ""
    if isinstance(value, str):
        return _clip(value.strip())
    if isinstance(value, dict):
        return "\n".join(f"- {k}: {_scalar(v)}" for k, v in value.items() if v is not None and v != "")
    return _clip(json.dumps(value, indent=2, default=str))


def format_timing(timing: dict | None) -> str:
    if not timing:
        return ""
    parts = []
    if timing.get("candidate_ms") is not None:
        parts.append(f"candidate {timing['candidate_ms']:.4g} ms")
    for key, label in (("eager_ms", "eager"), ("compile_ms", "torch.compile")):
        if timing.get(key) is not None:
            parts.append(f"{label} {timing[key]:.4g} ms")
    for key, label in (("speedup_vs_eager", "vs eager"), ("speedup_vs_compile", "vs torch.compile")):
        if timing.get(key) is not None:
            parts.append(f"{timing[key]:.3g}x {label}")
    if timing.get("spread") is not None:
        parts.append(f"spread {timing['spread']:.3g}")
    return ", ".join(parts)


def format_evaluation(ev: Any) -> str:
    """An evaluation (compact or full harness JSON) as the lines a model needs: verdict, failures, errors, timing."""
    if not ev:
        return ""
    if isinstance(ev, str):
        return _clip(ev.strip())
    lines = [f"status: {ev.get('status', 'unknown')}"]
    if ev.get("duplicate_of"):
        lines.append(f"duplicate of: {ev['duplicate_of']} (the same code was already tried)")
    if ev.get("error"):
        lines.append("error:\n" + _fence(_clip(str(ev["error"]).strip(), 4000), "text"))
    failing = ev.get("failing_checks")
    if failing is None and isinstance(ev.get("checks"), list):
        failing = [c for c in ev["checks"] if not c.get("passed")]
    for c in (failing or [])[:5]:
        lines.append(f"failed check {c.get('name', '?')}: {_clip(str(c.get('detail', '')).strip(), 1500)}")
    errs = [f"{k} {ev[k]:.3g}" for k in ("max_abs_error", "max_rel_error") if isinstance(ev.get(k), (int, float))]
    if errs and ev.get("status") != "accepted":
        lines.append("mismatch: " + ", ".join(errs))
    timing = format_timing(ev.get("timing"))
    if timing:
        lines.append(f"timing: {timing}")
    elif ev.get("timing_note"):
        lines.append(f"timing: none ({ev['timing_note']})")
    log = ev.get("log_tail") or ev.get("log")
    if log and ev.get("status") != "accepted":
        lines.append("log (tail):\n" + _fence(str(log)[-3000:].strip(), "text"))
    return "\n".join(lines)


def format_plan(plan: Any) -> str:
    if not plan:
        return ""
    if isinstance(plan, str):
        return plan.strip()
    keys = ("mode", "bottleneck", "change", "strategy")
    lines = [f"- {k}: {plan[k]}" for k in keys if plan.get(k)]
    return "\n".join(lines) or _plain(plan)


def format_inspirations(items: Any) -> str:
    if not items:
        return ""
    if isinstance(items, (str, dict)):
        items = [items]
    parts = []
    for i, item in enumerate(list(items)[:MAX_INSPIRATIONS], 1):
        if isinstance(item, str):
            source, facts = item, []
        else:
            source = item.get("source") or ""
            facts = [str(item[k]) for k in ("id", "strategy", "status") if item.get(k)]
            speed = item.get("speedup") or item.get("speedup_vs_eager")
            if isinstance(speed, (int, float)):
                facts.append(f"{speed:.3g}x eager")
        if not source.strip():
            continue
        head = f"### Inspiration {i}" + (f" ({', '.join(facts)})" if facts else "")
        parts.append(f"{head}\n\n{_fence(_code(source), 'python')}")
    return "\n\n".join(parts)


def format_history(history: Any) -> str:
    if not history:
        return ""
    if isinstance(history, str):
        return _clip(history.strip())
    lines = []
    for h in list(history)[-MAX_HISTORY:]:
        if isinstance(h, dict):
            lines.append("- " + ", ".join(f"{k}: {_scalar(v)}" for k, v in h.items() if v not in (None, "")))
        else:
            lines.append(f"- {h}")
    return "\n".join(lines)


def _backend(ctx: dict) -> str:
    backend = (ctx.get("backend") or "triton").lower()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (triton or cuda)")
    return backend


def _code_value(value: Any) -> str:
    code = _code(value)
    return _fence(code, "python") if code.strip() else ""


# ---------------------------------------------------------------- messages


def coder_system(backend: str = "triton") -> str:
    return load_template("coder_system").strip() + "\n\n" + load_template(f"conventions_{backend}").strip() + "\n"


def coder_messages(ctx: dict) -> list[dict]:
    """System (contract + backend conventions) and user (problem, parent, evaluation, profile, plan, ...)."""
    backend = _backend(ctx)
    values = {
        "problem_source": _code_value(ctx.get("problem_source")),
        "device_facts": _plain(ctx.get("device_facts")),
        "parent_source": _code_value(ctx.get("parent_source")),
        "parent_eval": format_evaluation(ctx.get("parent_eval")),
        "profile_summary": _plain(ctx.get("profile_summary")),
        "judge_plan": format_plan(ctx.get("judge_plan")),
        "inspirations": format_inspirations(ctx.get("inspirations")),
        "user_hint": _plain(ctx.get("user_hint")),
    }
    return [{"role": "system", "content": coder_system(backend)},
            {"role": "user", "content": render(load_template("coder"), values)}]


def judge_messages(ctx: dict, mode: str) -> list[dict]:
    """mode "fix": the failure and the minimal fix; "optimize": the one bottleneck, change and strategy."""
    if mode not in ("fix", "optimize"):
        raise ValueError(f"judge mode must be fix or optimize, not {mode!r}")
    backend = _backend(ctx)
    values = {
        "problem_source": _code_value(ctx.get("problem_source")),
        "candidate_source": _code_value(ctx.get("candidate_source")),
        "evaluation": format_evaluation(ctx.get("evaluation") or ctx.get("evaluation_full")),
        "profile_summary": _plain(ctx.get("profile_summary")),
        "device_facts": _plain(ctx.get("device_facts")),
        "history": format_history(ctx.get("history")),
    }
    system = load_template("judge_system").strip() + "\n\n" + load_template(f"conventions_{backend}").strip() + "\n"
    return [{"role": "system", "content": system},
            {"role": "user", "content": render(load_template(f"judge_{mode}"), values)}]
