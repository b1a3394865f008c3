"""report.html: self-contained, every section drawn, readable in headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kevolve.report import highlight_python, render_report, write_report
from kevolve.session import Store

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def cpu_session(tmp_path_factory):
    import contextlib
    import io

    from kevolve.cli import main

    ws = tmp_path_factory.mktemp("ws")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["optimize", str(ROOT / "examples/problems/scale_bias_gelu.py"), "--rounds", "2",
                     "--device", "cpu", "--workspace", str(ws)]) == 0
    return next(ws.iterdir())


def gpu_like_session(path: Path) -> Path:
    """A session folder as an H100 run leaves it: timings, islands, a profile with cost and peaks, LLM costs."""
    import json

    path.mkdir()
    (path / "session.json").write_text(json.dumps({
        "id": path.name, "problem": {"path": "/x/softmax.py"}, "device": {"name": "NVIDIA H100 80GB HBM3"},
        "settings": {"coder": "openai:m", "judge": "builtin"}}))
    store, t0 = Store(path / "archive.sqlite"), time.time() - 100
    store.add_event({"ts": t0, "kind": "session_start", "data": {}})
    rows = [("c0001", None, 0, "accepted", 1.4), ("c0002", "c0001", 0, "accepted", 2.1),
            ("c0003", "c0001", 1, "incorrect", None), ("c0004", "c0003", 1, "accepted", 2.6)]
    for i, (cid, parent, island, status, speed) in enumerate(rows):
        store.add_candidate(round=i + 1, source=f"# {cid}\nimport triton\n\n@triton.jit\ndef k(x):\n    pass\n",
                            parent_id=parent, strategy="tiling", operator="mutate", island=island)
        timing = {"candidate_ms": 0.1 / speed, "eager_ms": 0.1, "compile_ms": 0.08, "speedup_vs_eager": speed,
                  "speedup_vs_compile": speed * 0.8, "spread": 0.01, "sol_fraction": speed / 4} if speed else None
        store.add_evaluation(cid, {"status": status, "correct": bool(speed), "custom_kernel": True, "timing": timing,
                                   "error": None if speed else "max abs error 3.2 at [0, 5]"})
        store.conn.execute("UPDATE candidates SET created_ts=? WHERE id=?", (t0 + 20 * (i + 1), cid))
        if speed:
            store.set_profile(cid, {"summary": "DRAM 71% of peak; L2 hit 40%", "problem_class": "memory",
                                    "kernel_total_s": 0.1 / speed / 1e3, "cost": {"flops": 1e8, "min_bytes": 5e7},
                                    "device": {"peak_flops": {"fp32": 6.7e13}, "peak_dram_bytes_per_s": 3.35e12},
                                    "kernels": [{"bound": {"kind": "memory", "pct_of_peak": 71.0, "reason": "DRAM"},
                                                 "metrics": {"name": "k", "duration_s": 4e-5}}]})
    store.add_event({"ts": t0 + 90, "kind": "new_best", "data": {"id": "c0004"}})
    store.add_verdict(4, "c0004", {"mode": "optimize", "bottleneck": "DRAM", "change": "vectorize", "strategy": "vec"},
                      "builtin")
    from types import SimpleNamespace

    store.add_llm_reply(1, "coder", 0, SimpleNamespace(text="x", model="m", prompt_tokens=900, completion_tokens=300,
                                                       cost_usd=0.0123, latency_s=4.0, attempts=1))
    store.close()
    return path


def assert_self_contained(text: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "no network fetches"
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text


def test_cpu_report_written_at_session_end(cpu_session):
    report = cpu_session / "report.html"
    assert report.is_file()
    text = report.read_text()
    assert_self_contained(text)
    for heading in ("Speedup over time", "Lineage", "Roofline", "Best kernel", "Profile of the best kernel",
                    "Candidates", "Costs"):
        assert heading in text, heading
    assert "No timing in this session" in text and "No roofline" in text and "builtin Coder and Judge ($0)" in text
    assert '<span class="k">def</span>' in text and "@" in text  # the best kernel, highlighted
    # no GPU here: best.py was compiled for an H100 at the session's end, and the report says how it came out
    assert "Compiled for an H100 on this machine: best.py compiles for sm_90: 1 kernel, at most" in text


def test_gpu_session_draws_speedups_islands_roofline_profile_and_costs(tmp_path):
    text = render_report(__import__("kevolve.report", fromlist=["load_session"]).load_session(
        gpu_like_session(tmp_path / "gpu-session")))
    assert_self_contained(text)
    assert "island 0" in text and "island 1" in text and "speedup vs eager" in text
    assert "GFLOP/s" in text and "Ridge point" in text and "compute peak 67.0 TFLOP/s" in text
    assert "DRAM 71% of peak" in text and "2.60x eager" in text and "$0.0123" in text
    assert text.count("<circle") >= 4 + 4 + 3  # speedups, lineage nodes, roofline points
    assert "max abs error 3.2" in text


def test_highlighter_keeps_the_source_exactly():
    source = ('import triton\n\n@triton.jit\ndef k(x_ptr, n: "tl.constexpr"):  # a comment <b>\n'
              '    s = """doc\n  more"""\n    return 1.5e-3 & 0x1F\n')
    out = highlight_python(source)
    assert html.unescape(re.sub(r"<[^>]+>", "", out)) == source
    assert '<span class="c"># a comment &lt;b&gt;</span>' in out and '<span class="f">k</span>' in out
    assert highlight_python("def broken(:\n  'x") .startswith('<span class="k">def</span>')


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path, cpu_session):
    gpu = write_report(gpu_like_session(tmp_path / "gpu-session"))
    for name, report in (("cpu", cpu_session / "report.html"), ("gpu", gpu)):
        png = tmp_path / f"{name}.png"
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                        "--window-size=1100,2400", f"--screenshot={png}", report.as_uri()],
                       check=True, capture_output=True, timeout=90)
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000  # a drawn page, not a blank one
