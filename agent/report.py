"""report.html: one self-contained page per session (inline CSS and SVG, no script, no network).

Sections: summary, speedup over time by island, lineage tree, roofline, the best kernel's source
(highlighted), its profile, candidates and costs. Everything is read from the session folder, so
`kevolve report SESSION` redraws it at any time, also while the session runs.
"""

from __future__ import annotations

import html
import io
import json
import keyword
import sqlite3
import time
import tokenize
from pathlib import Path

from kevolve.archive import bound_class


def _kind(bound) -> str | None:
    return bound.get("kind") if isinstance(bound, dict) else bound


COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2"]
STATUS_COLOR = {"accepted": "#16a34a", "pending": "#9ca3af", "duplicate": "#ca8a04"}
FAIL_COLOR = "#dc2626"


# -- reading a session (read-only: a running session keeps writing) ------------------------------------


def load_session(path: Path) -> dict:
    """session.json, candidates, evaluations, verdicts, llm calls and events of a session folder."""
    path = Path(path)
    info = json.loads((path / "session.json").read_text())
    data = {"path": path, "info": info, "candidates": [], "evaluations": {}, "profiles": {}, "verdicts": [],
            "llm_calls": [], "events": [], "meta": {}}
    db = path / "archive.sqlite"
    if db.is_file():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
        conn.row_factory = sqlite3.Row
        try:
            data["candidates"] = [dict(r) for r in conn.execute("SELECT * FROM candidates ORDER BY created_ts, id")]
            for r in conn.execute("SELECT candidate_id, json, profile FROM evaluations"):
                data["evaluations"][r[0]] = json.loads(r[1])
                if r[2]:
                    data["profiles"][r[0]] = json.loads(r[2])
            data["verdicts"] = [{**dict(r), "json": json.loads(r["json"])}
                                for r in conn.execute("SELECT * FROM verdicts ORDER BY round")]
            data["llm_calls"] = [dict(r) for r in conn.execute("SELECT * FROM llm_calls ORDER BY ts")]
            data["events"] = [{**dict(r), "data": json.loads(r["data"])}
                              for r in conn.execute("SELECT * FROM events ORDER BY id")]
            data["meta"] = {r[0]: json.loads(r[1]) for r in conn.execute("SELECT key, value FROM meta")}
        finally:
            conn.close()
    return data


def best_id(data: dict) -> str | None:
    best = None
    for e in data["events"]:
        if e["kind"] == "new_best":
            best = e["data"].get("id")
        elif e["kind"] in ("round_end", "session_end") and e["data"].get("best"):
            best = e["data"]["best"]
    return best


def status_of(data: dict, running_within_s: float = 120.0) -> str:
    """ended: REASON | stopped (resumable) | running, from the last events."""
    events = data["events"]
    if not events:
        return "new"
    last = events[-1]
    if last["kind"] == "session_end":
        return f"ended: {last['data'].get('reason', '')}"
    if last["kind"] == "interrupted":
        return "stopped (resumable)"
    if time.time() - last["ts"] < running_within_s:
        return "running"
    return "stopped (resumable)"


def cost_usd(data: dict) -> float:
    ledger = data["meta"].get("ledger") or {}
    if ledger.get("total_usd") is not None:
        return float(ledger["total_usd"])
    return float(sum(c.get("cost_usd") or 0.0 for c in data["llm_calls"]))


def costs_by_role(data: dict) -> dict[str, dict]:
    roles: dict[str, dict] = {}
    for c in data["llm_calls"]:
        r = roles.setdefault(c["role"], {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                                         "latency_s": 0.0, "model": c.get("model")})
        r["calls"] += 1
        for k in ("prompt_tokens", "completion_tokens", "cost_usd", "latency_s"):
            r[k] += c.get(k) or 0
    return roles


def start_ts(data: dict) -> float:
    if data["events"]:
        return data["events"][0]["ts"]
    return min((c["created_ts"] for c in data["candidates"]), default=time.time())


# -- small drawing helpers -----------------------------------------------------------------------------


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def status_color(status: str | None) -> str:
    return STATUS_COLOR.get(status or "pending", FAIL_COLOR)


def highlight_python(source: str) -> str:
    """Python source as HTML spans (keywords, strings, comments, numbers, decorators, names defined)."""
    out, pos_line, pos_col = [], 1, 0
    lines = source.splitlines(keepends=True)

    def take(to_line: int, to_col: int) -> str:  # the raw text between two token positions
        nonlocal pos_line, pos_col
        if (to_line, to_col) <= (pos_line, pos_col):
            return ""
        if to_line == pos_line:
            text = lines[pos_line - 1][pos_col:to_col]
        else:
            text = lines[pos_line - 1][pos_col:] + "".join(lines[pos_line:to_line - 1]) + lines[to_line - 1][:to_col]
        pos_line, pos_col = to_line, to_col
        return text

    prev = ""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.ENDMARKER or tok.start[0] > len(lines):
                break
            out.append(esc(take(*tok.start)))
            text = take(*tok.end)
            cls = None
            if tok.type == tokenize.COMMENT:
                cls = "c"
            elif tok.type == tokenize.STRING:
                cls = "s"
            elif tok.type == tokenize.NUMBER:
                cls = "n"
            elif tok.type == tokenize.NAME and keyword.iskeyword(tok.string):
                cls = "k"
            elif tok.type == tokenize.NAME and prev in ("def", "class"):
                cls = "f"
            elif tok.type == tokenize.NAME and prev == "@":
                cls = "d"
            elif tok.type == tokenize.NAME and tok.string in ("tl", "triton", "torch", "nn", "self"):
                cls = "b"
            out.append(f'<span class="{cls}">{esc(text)}</span>' if cls else esc(text))
            if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                prev = tok.string
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    out.append(esc(take(len(lines), len(lines[-1])) if lines else ""))
    return "".join(out)


def _axis(x0: float, x1: float, n: int = 5) -> list[float]:
    if x1 <= x0:
        return [x0]
    return [x0 + (x1 - x0) * i / (n - 1) for i in range(n)]


def svg_plot(series: list[dict], *, xlabel: str, ylabel: str, width: int = 760, height: int = 300,
             log: bool = False, hline: float | None = None, hline_label: str = "") -> str:
    """Scatter plus step lines. series: {"name", "color", "points": [(x, y, tooltip, fill)], "step": bool}."""
    import math

    pts = [p for s in series for p in s["points"]]
    if not pts:
        return ""
    ml, mr, mt, mb = 60, 20, 16, 42
    fx = (lambda v: math.log10(max(v, 1e-12))) if log else (lambda v: v)
    xs = [fx(p[0]) for p in pts]
    ys = [p[1] for p in pts] + ([hline] if hline is not None else [])
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.12 or 1.0
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1

    def sx(v: float) -> float:
        return ml + (fx(v) - x0) / (x1 - x0) * (width - ml - mr)

    def sy(v: float) -> float:
        return height - mb - (v - y0) / (y1 - y0) * (height - mt - mb)

    g = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" class="plot">']
    for v in _axis(y0, y1):
        g.append(f'<line x1="{ml}" x2="{width - mr}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" class="grid"/>'
                 f'<text x="{ml - 6}" y="{sy(v) + 4:.1f}" class="tick" text-anchor="end">{v:.3g}</text>')
    for v in _axis(x0, x1):
        label = f"{10 ** v:.3g}" if log else f"{v:.3g}"
        px = ml + (v - x0) / (x1 - x0) * (width - ml - mr)
        g.append(f'<text x="{px:.1f}" y="{height - mb + 16}" class="tick" text-anchor="middle">{label}</text>')
    g.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{height - mb}" class="axis"/>'
             f'<line x1="{ml}" x2="{width - mr}" y1="{height - mb}" y2="{height - mb}" class="axis"/>')
    g.append(f'<text x="{(ml + width - mr) / 2}" y="{height - 6}" class="label" text-anchor="middle">{esc(xlabel)}'
             f'</text><text x="14" y="{(mt + height - mb) / 2}" class="label" text-anchor="middle" '
             f'transform="rotate(-90 14 {(mt + height - mb) / 2})">{esc(ylabel)}</text>')
    if hline is not None:
        g.append(f'<line x1="{ml}" x2="{width - mr}" y1="{sy(hline):.1f}" y2="{sy(hline):.1f}" class="ref"/>'
                 f'<text x="{width - mr - 4}" y="{sy(hline) - 5:.1f}" class="tick" text-anchor="end">'
                 f'{esc(hline_label)}</text>')
    for s in series:
        if s.get("step") and len(s["points"]) > 1:
            best, path = None, []
            for x, y, *_ in sorted(s["points"]):
                best = y if best is None else max(best, y)
                path.append(f"{'M' if not path else 'L'}{sx(x):.1f},{sy(best):.1f}")
            g.append(f'<path d="{" ".join(path)}" fill="none" stroke="{s["color"]}" stroke-width="2" opacity=".6"/>')
        for x, y, tip, fill in s["points"]:
            g.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{fill or s["color"]}" '
                     f'stroke="{s["color"]}" stroke-width="1.5"><title>{esc(tip)}</title></circle>')
    lx = ml + 10
    for s in series:
        if s.get("name"):
            g.append(f'<circle cx="{lx}" cy="{mt + 6}" r="5" fill="{s["color"]}"/>'
                     f'<text x="{lx + 9}" y="{mt + 10}" class="tick">{esc(s["name"])}</text>')
            lx += 14 + 7 * len(s["name"])
    g.append("</svg>")
    return "".join(g)


# -- sections ------------------------------------------------------------------------------------------


def section_speedup(data: dict) -> str:
    t0 = start_ts(data)
    timed = [c for c in data["candidates"] if c["speedup"] is not None]
    if not timed:
        series = [{"name": "", "color": "#6b7280", "points": [
            ((c["created_ts"] - t0), 1.0 if c["status"] == "accepted" else 0.0,
             f"{c['id']} {c['status']}", status_color(c["status"])) for c in data["candidates"]]}]
        note = ('<p class="note">No timing in this session: it ran on the CPU under the Triton interpreter, '
                "which checks correctness only. Each point is a candidate (1 = correct, 0 = failed) over time.</p>")
        return note + svg_plot(series, xlabel="seconds since start", ylabel="correct", height=200)
    islands = sorted({c["island"] for c in timed})
    series = [{"name": f"island {i}", "color": COLORS[n % len(COLORS)], "step": True,
               "points": [((c["created_ts"] - t0), c["speedup"], f"{c['id']}: {c['speedup']:.2f}x ({c['strategy']})",
                           None) for c in timed if c["island"] == i]} for n, i in enumerate(islands)]
    return svg_plot(series, xlabel="seconds since start", ylabel="speedup vs eager (x)", hline=1.0,
                    hline_label="eager")


def section_lineage(data: dict, best: str | None) -> str:
    cands = data["candidates"]
    if not cands:
        return '<p class="note">No candidates yet.</p>'
    children: dict[str | None, list[dict]] = {}
    ids = {c["id"] for c in cands}
    for c in cands:
        children.setdefault(c["parent_id"] if c["parent_id"] in ids else None, []).append(c)
    order: list[tuple[dict, int]] = []

    def walk(parent: str | None, depth: int) -> None:
        for c in children.get(parent, []):
            order.append((c, depth))
            walk(c["id"], depth + 1)

    walk(None, 0)
    row_h, col_w, left = 26, 110, 20
    max_depth = max(d for _, d in order)
    width, height = max(left * 2 + (max_depth + 1) * col_w + 160, 400), row_h * len(order) + 20
    pos = {c["id"]: (left + d * col_w, 16 + i * row_h) for i, (c, d) in enumerate(order)}
    g = [f'<svg viewBox="0 0 {width} {height}" width="{min(width, 900)}" class="tree">']
    for c, _ in order:
        if c["parent_id"] in pos:
            (px, py), (x, y) = pos[c["parent_id"]], pos[c["id"]]
            g.append(f'<path d="M{px + 6},{py} V{y} H{x - 6}" fill="none" stroke="#cbd5e1" stroke-width="1.5"/>')
    for c, _ in order:
        x, y = pos[c["id"]]
        speed = f"{c['speedup']:.2f}x" if c["speedup"] else ("ok" if c["status"] == "accepted" else c["status"])
        ring = ' stroke="#111827" stroke-width="2.5"' if c["id"] == best else ""
        g.append(f'<circle cx="{x}" cy="{y}" r="6" fill="{status_color(c["status"])}"{ring}>'
                 f'<title>{esc(c["id"])} {esc(c["status"])} {esc(c["operator"])}</title></circle>'
                 f'<text x="{x + 12}" y="{y + 4}" class="node">{esc(c["id"])}'
                 f'{" ★" if c["id"] == best else ""} <tspan class="dim">{esc(c["strategy"] or c["operator"])} · '
                 f'{esc(speed)}</tspan></text>')
    g.append("</svg>")
    return "".join(g)


def svg_roofline(points: list[tuple[float, float, dict]], roof: tuple[float, float] | None,
                 width: int = 760, height: int = 320) -> str:
    """Log-log roofline: the bandwidth slope and compute ceiling (when peaks are known) and one point a candidate."""
    import math

    ml, mr, mt, mb = 64, 20, 16, 42
    xs = [x for x, _, _ in points] + ([roof[0] / roof[1]] if roof else [])
    ys = [y for _, y, _ in points] + ([roof[0] / 1e9] if roof else [])
    x0, x1 = math.floor(math.log10(min(xs) / 4)), math.ceil(math.log10(max(xs) * 4))
    y0, y1 = math.floor(math.log10(min(ys) / 4)), math.ceil(math.log10(max(ys) * 2))

    def sx(v: float) -> float:
        return ml + (math.log10(v) - x0) / (x1 - x0) * (width - ml - mr)

    def sy(v: float) -> float:
        return height - mb - (math.log10(max(v, 10 ** y0)) - y0) / (y1 - y0) * (height - mt - mb)

    g = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" class="plot">']
    for e in range(y0, y1 + 1):
        g.append(f'<line x1="{ml}" x2="{width - mr}" y1="{sy(10 ** e):.1f}" y2="{sy(10 ** e):.1f}" class="grid"/>'
                 f'<text x="{ml - 6}" y="{sy(10 ** e) + 4:.1f}" class="tick" text-anchor="end">{10.0 ** e:g}</text>')
    for e in range(x0, x1 + 1):
        g.append(f'<text x="{sx(10 ** e):.1f}" y="{height - mb + 16}" class="tick" text-anchor="middle">'
                 f"{10.0 ** e:g}</text>")
    g.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{height - mb}" class="axis"/>'
             f'<line x1="{ml}" x2="{width - mr}" y1="{height - mb}" y2="{height - mb}" class="axis"/>'
             f'<text x="{(ml + width - mr) / 2}" y="{height - 6}" class="label" text-anchor="middle">'
             "arithmetic intensity (FLOP/byte)</text>"
             f'<text x="14" y="{(mt + height - mb) / 2}" class="label" text-anchor="middle" '
             f'transform="rotate(-90 14 {(mt + height - mb) / 2})">GFLOP/s</text>')
    if roof:
        peak_g, bw_g = roof[0] / 1e9, roof[1] / 1e9
        ridge = roof[0] / roof[1]
        left = 10.0 ** x0
        g.append(f'<path d="M{sx(left):.1f},{sy(left * bw_g):.1f} L{sx(ridge):.1f},{sy(peak_g):.1f} '
                 f'L{sx(10.0 ** x1):.1f},{sy(peak_g):.1f}" fill="none" stroke="#0f172a" stroke-width="2"/>'
                 f'<text x="{width - mr - 4}" y="{sy(peak_g) - 6:.1f}" class="tick" text-anchor="end">compute peak '
                 f'{peak_g / 1e3:.1f} TFLOP/s</text><text x="{sx(ridge) + 6:.1f}" y="{sy(peak_g) + 14:.1f}" '
                 f'class="tick">ridge {ridge:.1f}</text>')
    for x, y, c in points:
        g.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{status_color(c["status"])}" '
                 f'stroke="#1e3a8a" stroke-width="1"><title>{esc(c["id"])}: {y:.1f} GFLOP/s at {x:.2f} FLOP/B'
                 "</title></circle>")
    best = max(points, key=lambda p: p[1])
    g.append(f'<text x="{sx(best[0]) + 9:.1f}" y="{sy(best[1]) + 4:.1f}" class="tick">{esc(best[2]["id"])} '
             f"{best[1]:.0f} GFLOP/s</text></svg>")
    return "".join(g)


def _peaks(profile: dict) -> tuple[float | None, float | None]:
    dev = profile.get("device") or {}
    flops = max((dev.get("peak_flops") or {}).values(), default=None)
    return flops, dev.get("peak_dram_bytes_per_s")


def section_roofline(data: dict) -> str:
    points, roof = [], None
    for c in data["candidates"]:
        prof = data["profiles"].get(c["id"]) or {}
        timing = (data["evaluations"].get(c["id"]) or {}).get("timing") or {}
        cost = prof.get("cost") or {}
        seconds = prof.get("kernel_total_s") or ((timing.get("candidate_ms") or 0) / 1e3)
        if cost.get("flops") and cost.get("min_bytes") and seconds:
            points.append((cost["flops"] / cost["min_bytes"], cost["flops"] / seconds / 1e9, c))
            peak_f, peak_b = _peaks(prof)
            if peak_f and peak_b:
                roof = (peak_f, peak_b)
    if points:
        note = (f'<p class="note">Ridge point {roof[0] / roof[1]:.1f} FLOP/byte; peak {roof[0] / 1e12:.1f} TFLOP/s, '
                f'{roof[1] / 1e9:.0f} GB/s. Points: candidates (attained GFLOP/s at the problem\'s compulsory '
                "traffic); the closer to the roof, the less is left.</p>") if roof else ""
        return note + svg_roofline(points, roof)
    sol = [(c, (data["evaluations"].get(c["id"]) or {}).get("timing") or {}) for c in data["candidates"]]
    sol = [(c, t["sol_fraction"]) for c, t in sol if t.get("sol_fraction")]
    if sol:
        t0 = start_ts(data)
        series = [{"name": "", "color": "#2563eb", "points": [
            (c["created_ts"] - t0, f, f"{c['id']}: {f:.0%} of speed of light", status_color(c["status"]))
            for c, f in sol]}]
        return ('<p class="note">Each candidate as a fraction of the roofline\'s speed-of-light time for this problem '
                "(1.0 = on the roofline).</p>" + svg_plot(series, xlabel="seconds since start",
                                                          ylabel="fraction of speed of light", hline=1.0,
                                                          hline_label="roofline"))
    return ('<p class="note">No roofline: no candidate was timed or profiled on a GPU in this session '
            "(a CPU session checks correctness only).</p>")


def section_profile(data: dict, best: str | None) -> str:
    prof = data["profiles"].get(best or "")
    if not prof or prof.get("unavailable"):
        compiled = [e["data"]["summary"] for e in data["events"] if e["kind"] == "gpu_compile"]
        return ('<p class="note">No profile for the best candidate (profiles need a GPU; Nsight Compute where '
                "allowed, else torch.profiler).</p>"
                + (f'<p>Compiled for an H100 on this machine: best.py {esc(compiled[-1])}.</p>' if compiled else ""))
    rows = []
    for k in prof.get("kernels") or []:
        m, kind = k.get("metrics") or {}, _kind(k.get("bound"))
        rows.append(f"<tr><td>{esc(m.get('name') or k.get('name'))}</td><td>{esc(kind)}</td>"
                    f"<td>{esc(_num(m.get('duration_s'), 1e6, 'µs'))}</td><td>{esc(m.get('sm_throughput_pct'))}</td>"
                    f"<td>{esc(m.get('dram_throughput_pct'))}</td><td>{esc(m.get('registers_per_thread'))}</td></tr>")
    table = ("<table><tr><th>kernel</th><th>bound</th><th>time</th><th>SM %</th><th>DRAM %</th><th>regs</th></tr>"
             + "".join(rows) + "</table>") if rows else ""
    source = "fallback: torch.profiler" if prof.get("is_fallback") else prof.get("source", "ncu")
    return (f'<p>Bound: <b>{esc(bound_class(prof))}</b> · source: {esc(source)}</p>{table}'
            f'<pre class="summary">{esc(prof.get("summary", ""))}</pre>')


def _num(v, scale: float, unit: str) -> str:
    return f"{v * scale:.1f} {unit}" if isinstance(v, (int, float)) else ""


def section_candidates(data: dict, best: str | None) -> str:
    rows = []
    for c in data["candidates"]:
        ev = data["evaluations"].get(c["id"]) or {}
        result = f"{c['speedup']:.2f}x" if c["speedup"] else ("correct" if c["status"] == "accepted" else
                                                               (ev.get("error") or "").strip()[:120])
        rows.append(f'<tr><td>{esc(c["id"])}{" ★" if c["id"] == best else ""}</td><td>{c["round"]}</td>'
                    f'<td>{esc(c["parent_id"] or "-")}</td><td>{c["island"]}</td>'
                    f'<td>{esc(c["strategy"] or c["operator"])}</td>'
                    f'<td><span class="pill" style="background:{status_color(c["status"])}">{esc(c["status"])}</span>'
                    f'</td><td class="err">{esc(result)}</td></tr>')
    return ("<table><tr><th>id</th><th>round</th><th>parent</th><th>island</th><th>strategy</th><th>status</th>"
            "<th>speedup / error</th></tr>" + "".join(rows) + "</table>")


def section_costs(data: dict) -> str:
    roles = costs_by_role(data)
    rows = "".join(f"<tr><td>{esc(r)}</td><td>{esc(v['model'])}</td><td>{v['calls']}</td><td>{v['prompt_tokens']}</td>"
                   f"<td>{v['completion_tokens']}</td><td>${v['cost_usd']:.4f}</td><td>{v['latency_s']:.1f}s</td></tr>"
                   for r, v in roles.items())
    table = ("<table><tr><th>role</th><th>model</th><th>calls</th><th>prompt tok</th><th>completion tok</th>"
             f"<th>cost</th><th>wait</th></tr>{rows}</table>") if rows else \
        '<p class="note">No LLM calls: builtin Coder and Judge ($0).</p>'
    try:
        from kevolve.graph import time_breakdown

        spent = time_breakdown(data["events"])
        times = ", ".join(f"{k} {v:.1f}s" for k, v in spent.items() if v)
    except ImportError:
        times = ""
    active = data["meta"].get("active_s")
    return (table + f"<p>Total: <b>${cost_usd(data):.4f}</b>"
            + (f" · active time {active:.1f}s" if active else "") + (f" · {esc(times)}" if times else "") + "</p>")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f8fafc;color:#0f172a}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.sub{color:#64748b;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;
padding:10px 14px;min-width:140px}.card b{display:block;font-size:20px}.card span{color:#64748b;font-size:12px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:4px 16px 12px;margin-top:14px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid #f1f5f9;vertical-align:top}th{color:#475569;font-weight:600}
.err{color:#475569;max-width:420px;overflow-wrap:anywhere}
.pill{color:#fff;border-radius:9px;padding:1px 8px;font-size:12px}
.note{color:#64748b;font-style:italic}
svg text{font:11px system-ui,sans-serif;fill:#334155}svg .label{font-size:12px;fill:#475569}
svg .grid{stroke:#eef2f7}svg .axis{stroke:#94a3b8}svg .ref{stroke:#94a3b8;stroke-dasharray:4 4}
svg .node{font:12px ui-monospace,monospace;fill:#0f172a}svg .dim{fill:#64748b}
pre{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:6px;overflow:auto;font:12px/1.4 ui-monospace,
SFMono-Regular,Menlo,monospace}pre.summary{background:#f1f5f9;color:#0f172a;white-space:pre-wrap}
.k{color:#c084fc}.s{color:#86efac}.c{color:#64748b;font-style:italic}.n{color:#fdba74}.f{color:#60a5fa}
.d{color:#f472b6}.b{color:#67e8f9}
"""


def render_report(data: dict) -> str:
    info, best = data["info"], best_id(data)
    best_row = next((c for c in data["candidates"] if c["id"] == best), None)
    dev = (info.get("device") or {}).get("name") or (info.get("device") or {}).get("type") or "?"
    if best_row is None:
        best_text = "none verified"
    elif best_row["speedup"]:
        best_text = f"{best_row['speedup']:.2f}x eager"
    else:
        best_text = "correct (no timing)"
    vs_compile = f"{best_row['speedup_vs_compile']:.2f}x" if best_row and best_row["speedup_vs_compile"] else "–"
    cards = [("best", f"{best or '–'}", best_text), ("vs torch.compile", vs_compile, "speedup"),
             ("candidates", str(len(data["candidates"])),
              f"{sum(c['status'] == 'accepted' for c in data['candidates'])} correct"),
             ("cost", f"${cost_usd(data):.4f}", status_of(data))]
    card_html = "".join(f"<div class='card'><span>{esc(a)}</span><b>{esc(b)}</b><span>{esc(c)}</span></div>"
                        for a, b, c in cards)
    verdict = data["verdicts"][-1]["json"] if data["verdicts"] else None
    verdict_html = (f"<p><b>{esc(verdict.get('mode'))}</b>: {esc(verdict.get('bottleneck'))} → "
                    f"{esc(verdict.get('change'))} <i>[{esc(verdict.get('strategy'))}]</i></p>") if verdict else ""
    source = best_row["source"] if best_row else ""
    src_html = f"<pre>{highlight_python(source)}</pre>" if source else '<p class="note">No verified kernel yet.</p>'
    problem = Path((info.get("problem") or {}).get("path", "?")).name
    warning = next((e["data"].get("message") for e in data["events"] if e["kind"] == "problem_warning"), None)
    warning_html = f"<p class='note'><b>Warning:</b> {esc(warning)}.</p>" if warning else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>kevolve · {esc(info.get('id'))}</title><style>{CSS}</style></head><body><main>",
        f"<h1>kevolve report · {esc(problem)}</h1>",
        f"<div class='sub'>session {esc(info.get('id'))} · {esc(dev)} · coder "
        f"{esc((info.get('settings') or {}).get('coder'))}, judge {esc((info.get('settings') or {}).get('judge'))}"
        f" · written {time.strftime('%Y-%m-%d %H:%M')}</div>",
        f"<div class='cards'>{card_html}</div>{warning_html}",
        f"<section><h2>Speedup over time, by island</h2>{section_speedup(data)}</section>",
        f"<section><h2>Lineage</h2>{section_lineage(data, best)}</section>",
        f"<section><h2>Roofline</h2>{section_roofline(data)}</section>",
        f"<section><h2>Best kernel{' · ' + esc(best) if best else ''}</h2>{src_html}</section>",
        f"<section><h2>Profile of the best kernel</h2>{section_profile(data, best)}</section>",
        f"<section><h2>Judge's latest verdict</h2>{verdict_html or '<p class=note>none yet</p>'}</section>",
        f"<section><h2>Candidates</h2>{section_candidates(data, best)}</section>",
        f"<section><h2>Costs</h2>{section_costs(data)}</section>",
        "</main></body></html>\n",
    ]
    return "".join(parts)


def write_report(session_path: str | Path, out: str | Path | None = None) -> Path:
    """Write (or redraw) report.html for a session folder; returns its path."""
    data = load_session(Path(session_path))
    out = Path(out) if out else Path(session_path) / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(render_report(data))
    tmp.replace(out)
    return out
