"""Readable terminal summaries (rich) of evaluation results."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {"accepted": "bold green", "unverified": "yellow"}


def print_evaluation(result: dict, problem: Path, candidate: Path, console: Console | None = None) -> None:
    console = console or Console()
    style = STATUS_STYLE.get(result["status"], "bold red")
    console.print(f"[bold]{candidate}[/] against [bold]{problem}[/]: [{style}]{result['status']}[/]")
    if result.get("error"):
        console.print(f"  {result['error']}", markup=False)
    if result.get("problem_warning"):
        console.print(f"  [bold yellow]warning:[/] {result['problem_warning']}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail", overflow="fold")
    for check in result["checks"]:
        mark = "[green]ok[/]" if check["passed"] else "[red]FAIL[/]"
        table.add_row(check["name"], mark, check["detail"])
    console.print(table)
    if result.get("max_abs_error") is not None:
        console.print(f"  max abs error {result['max_abs_error']:.3g}, max rel error {result['max_rel_error']:.3g}")
    timing = result.get("timing")
    if timing:
        line = (f"  candidate {timing['candidate_ms']:.4f} ms (spread {timing['spread']:.1%}) | eager "
                f"{timing['eager_ms']:.4f} ms → {timing['speedup_vs_eager']:.2f}×")
        if timing.get("compile_ms"):
            line += f" | torch.compile {timing['compile_ms']:.4f} ms → {timing['speedup_vs_compile']:.2f}×"
        console.print(line)
    elif result.get("timing_note"):
        console.print(f"  timing: {result['timing_note']}")
    if result.get("gpu_compile_note"):
        console.print(f"  {result['gpu_compile_note']}", markup=False)
    custom = "yes" if result.get("custom_kernel") else "no"
    console.print(f"  custom kernel: {custom}; device: {result['device'].get('name')}; "
                  f"{result['seconds'].get('total', 0):.1f} s")
