"""Tuning mutations for any Triton candidate source, ours or an LLM's.

Tunables are found through `ast`: module-level ALL_CAPS int constants whose names say what they
tune (BLOCK, TILE, WARPS, STAGES, GROUP, PERSISTENT...), `num_warps=` / `num_stages=` / `BLOCK_*=` / `GROUP_*=`
int literals in calls, and the same keys in `triton.Config` dicts. Each variant changes one site,
rewriting only that literal's characters so the rest of the file stays byte-identical.
Nothing at or below a top-level `UNTUNED_MARK` line is a site: code the timed shape never runs
(a compiler seed's template for other shapes) would only spend evaluations.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from kevolve.tools.static_checks import parse_python

_TUNABLE = re.compile(r"(BLOCK|TILE|WARP|STAGE|GROUP|ELEMS|CHUNK|SINGLE_PASS|PER_SM|XBLOCK|RBLOCK|PERSISTENT|"
                      r"CHANNELS_LAST|TF32X3|PER_TAP)", re.I)
_ALL_CAPS = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
UNTUNED_MARK = "# kevolve: untuned below (not run at the timed shape)"


@dataclass
class Site:
    name: str
    value: int
    line: int          # 1-based
    col: int
    end_col: int
    where: str         # "constant" | "launch" | "config"


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


def _int_literal(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    return None


def find_sites(source: str) -> list[Site]:
    tree = parse_python(source)
    sites: list[Site] = []

    lines = source.split("\n")
    end = lines.index(UNTUNED_MARK) + 1 if UNTUNED_MARK in lines else len(lines) + 1

    def add(name: str, node: ast.AST, where: str) -> None:
        v = _int_literal(node)
        if v is not None and node.lineno == node.end_lineno and node.lineno < end:
            sites.append(Site(name, v, node.lineno, node.col_offset, node.end_col_offset, where))

    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if _ALL_CAPS.match(name) and _TUNABLE.search(name):
                add(name, node.value, "constant")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg and (kw.arg in ("num_warps", "num_stages") or (
                        _ALL_CAPS.match(kw.arg) and _TUNABLE.search(kw.arg))):
                    add(kw.arg, kw.value, "launch")
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and _TUNABLE.search(k.value):
                    add(k.value, v, "config")
    return sites


def _choices(site: Site, uses_dot: bool) -> list[int]:
    n, v = site.name.upper(), site.value
    if any(s in n for s in ("PERSISTENT", "CHANNELS_LAST", "TF32X3", "PER_TAP")):  # switches: one program per
        # tile <-> a few per SM looping over tiles; NCHW <-> NHWC; IEEE <-> 3xTF32; a conv's K loop by tap <-> flat
        return [1 - v] if v in (0, 1) else []
    if "STAGE" in n:
        return [x for x in (v - 1, v + 1) if 1 <= x <= 6]
    if "WARP" in n and "ELEMS" not in n:
        lo, hi = 1, 16
    elif "GROUP" in n:
        lo, hi = 1, 32
    elif "ELEMS" in n:
        lo, hi = 32, 4096
    elif "SINGLE_PASS" in n:
        lo, hi = 1024, 65536
    elif "PER_SM" in n:
        lo, hi = 1, 32
    elif uses_dot and re.search(r"(^|_)(BLOCK_?[MNK]|BLOCK_SIZE_[MNK])$", n):
        lo, hi = 16, 256
    elif re.search(r"(^|_)([XYZ]|R\d*_?)BLOCK$", n):  # Inductor's: a reduction's XBLOCK is often 1 to 8.
        # At most Inductor's own largest (TRITON_MAX_BLOCK): it drops a mask where the size is a multiple of that
        lo, hi = 1, 1024 if re.search(r"(^|_)[YZ]BLOCK$", n) else 4096
    else:
        lo, hi = 64, 16384
    if not _pow2(v):
        return []
    return [x for x in (v // 2, v * 2) if lo <= x <= hi]


def _replace(source: str, site: Site, new: int) -> str:
    lines = source.split("\n")
    line = lines[site.line - 1]
    # col offsets are in UTF-8 bytes
    b = line.encode()
    lines[site.line - 1] = (b[: site.col] + str(new).encode() + b[site.end_col:]).decode()
    return "\n".join(lines)


def _score(site: Site, new: int, verdict: dict | None) -> int:
    """Order variants by what the Judge said: memory-bound wants wider tiles, latency-bound more programs."""
    if not verdict:
        return 0
    text = " ".join(str(v) for v in verdict.values()).lower()
    up = new > site.value
    if "latency" in text or "parallel" in text or "occupancy" in text:
        return 1 if not up and "STAGE" not in site.name.upper() else 0
    if "memory" in text or "bandwidth" in text or "vector" in text:
        return 1 if up else 0
    if "compute" in text or "tile" in text:
        return 1 if up and "BLOCK" in site.name.upper() else 0
    return 0


def mutate_source(source: str, *, verdict: dict | None = None, seed: int = 0,
                  limit: int = 24) -> list[tuple[str, str]]:
    """(description, new source) pairs, one tunable changed in each; [] when nothing is tunable."""
    try:
        sites = find_sites(source)
    except SyntaxError:
        return []
    uses_dot = "tl.dot" in source
    variants: list[tuple[int, int, str, str]] = []
    seen = {source}
    for i, site in enumerate(sites):
        for new in _choices(site, uses_dot):
            text = _replace(source, site, new)
            if text in seen:
                continue
            try:
                parse_python(text)
            except SyntaxError:
                continue
            seen.add(text)
            desc = f"{site.name} {site.value} -> {new} ({site.where}, line {site.line})"
            variants.append((-_score(site, new, verdict), i, desc, text))
    if seed and variants:
        k = seed % len(variants)
        variants = variants[k:] + variants[:k]
    variants.sort(key=lambda t: t[0])  # stable: keeps the seed's rotation within a score
    return [(d, t) for _, _, d, t in variants[:limit]]
