"""Argument types shared by the CLI verbs (kept light: no torch, no langgraph)."""

from __future__ import annotations

import argparse
import re

SPEC = re.compile(r"^(builtin|manual|openai:\S+)$")


def parse_duration(text: str) -> float:
    """'20m', '1h30m', '90s', '1.5h'; a bare number is minutes."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration like 20m, 1h30m or 90s")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def role_spec(text: str) -> str:
    if not SPEC.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a role is builtin, manual or openai:MODEL")
    return text
