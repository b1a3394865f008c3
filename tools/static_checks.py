"""Static checks on a candidate's source: the cheapest stage, before any process starts.

The candidate runs in a worker process, but it shares that process with the worker's own timing
and reporting code, so anything that could patch that code is refused here (EVAL.md items 4, 6,
12, 16). The rule is an allow-list of imports plus a deny-list of introspection: a kernel file
needs torch, triton and a little arithmetic, nothing that reaches into other modules.
"""

from __future__ import annotations

import ast
import re
import threading
from dataclasses import dataclass, field

ALLOWED_IMPORTS = {
    "torch", "triton", "math", "typing", "functools", "dataclasses", "numbers", "operator",
    "itertools", "collections", "enum", "__future__",
}
# Reaching into frames, code objects or other modules' globals would let a candidate patch the
# worker's timers and checks.
FORBIDDEN_NAMES = {
    "exec", "eval", "compile", "open", "__import__", "globals", "locals", "vars", "setattr",
    "delattr", "breakpoint", "input", "memoryview",
}
FORBIDDEN_ATTRIBUTES = {
    "__globals__", "__code__", "__builtins__", "__subclasses__", "__closure__", "__dict__",
    "__class__", "__bases__", "__mro__", "__getattribute__", "__setattr__", "__import__",
    "f_globals", "f_locals", "f_back", "gi_frame", "tb_frame", "__loader__", "__spec__",
}
# torch entry points that bring their own compiler or a way out of the sandbox.
FORBIDDEN_TORCH = [
    (re.compile(r"^torch\.(compile|jit|_dynamo|_inductor|export|fx)\b"), "calls torch's own compiler"),
    (re.compile(r"^torch\.(cuda\.(set_stream|_sleep|memory\._record)|_C)\b"), "reaches into torch internals"),
    (re.compile(r"^torch\.(backends\..*(allow_tf32|fp32_precision|reduced_precision|\.flags\b)"
                r"|set_float32_matmul_precision)"),
     "changes torch's precision"),
    (re.compile(r"^torch\.(save|load|hub|distributed|multiprocessing)\b"), "reads or writes outside the worker"),
    (re.compile(r"^torch\.utils\.(data|tensorboard|benchmark)\b"), "is not kernel code"),
    (re.compile(r"^triton\.(testing|runtime\.driver)\b"), "is not kernel code"),
]


@dataclass
class StaticReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    triton_kernels: list[str] = field(default_factory=list)   # @triton.jit function names
    cuda_kernels: list[str] = field(default_factory=list)     # __global__ function names
    cuda_sources: list[tuple[int, str]] = field(default_factory=list)  # (first line in file, text)
    uses_load_inline: bool = False
    defines_model_new: bool = False
    syntax_error: str | None = None

    @property
    def kernel_names(self) -> list[str]:
        return self.triton_kernels + self.cuda_kernels

    @property
    def backend(self) -> str:
        return "cuda" if self.cuda_kernels or self.uses_load_inline else "triton"


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def dotted_name(node: ast.AST) -> str | None:
    """`a.b.c` for a chain of attributes on a name; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


_GLOBAL_FN = re.compile(r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?[\w:<>\s\*]*?\b(\w+)\s*\(")


def _is_triton_jit(decorator: ast.AST) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = dotted_name(target) or ""
    return name.endswith("jit") or name.endswith("autotune") or name.endswith("heuristics")


# CPython 3.11 keeps the AST builder's recursion counter in state the threads share: two threads parsing
# at once (an executor's evaluations, the Coder beside them) can fail with "SystemError: AST constructor
# recursion depth mismatch". Seen here with two evaluations of compiler-seed variants at once.
_parse_lock = threading.Lock()


def parse_python(source: str, filename: str = "<unknown>") -> ast.Module:
    """ast.parse, one thread at a time. Use this in code that may run beside other threads."""
    with _parse_lock:
        return ast.parse(source, filename=filename)


def _names_of_parameters(tree: ast.Module) -> set[int]:
    """ids of the Name nodes that read a function's own parameter (Triton's helpers call one `input`),
    not the builtin of that name: uses inside the function, nested ones included, as Python scopes them."""
    out: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = fn.args
            names = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if p}
            body = fn.body if isinstance(fn.body, list) else [fn.body]
            out |= {id(n) for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id in names}
    return out


def check_source(source: str, filename: str = "candidate.py") -> StaticReport:
    """Parse and vet a candidate. `ok` is False with reasons when it must be rejected."""
    report = StaticReport(ok=True)
    try:
        tree = parse_python(source, filename)
    except SyntaxError as e:
        report.ok = False
        report.syntax_error = f"{filename}:{e.lineno}: {e.msg}"
        return report

    aliases: dict[str, str] = {}  # local name -> module path, so `import torch as T` can't hide T.compile
    parameters = _names_of_parameters(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root not in ALLOWED_IMPORTS:
                    report.problems.append(f"line {line}: imports {alias.name} (allowed: torch, triton, math, ...)")
                aliases[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] not in ALLOWED_IMPORTS:
                report.problems.append(f"line {line}: imports from {module or '.'} (allowed: torch, triton, math, ...)")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES and id(node) not in parameters:
            report.problems.append(f"line {line}: uses {node.id}()")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            report.problems.append(f"line {line}: touches .{node.attr}")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            report.problems.append(f"line {line}: rebinds names with {type(node).__name__.lower()}")
        elif isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            report.defines_model_new = True
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_is_triton_jit(d) for d in node.decorator_list):
                report.triton_kernels.append(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__global__" in node.value:
            report.cuda_sources.append((line, node.value))
            report.cuda_kernels.extend(_GLOBAL_FN.findall(node.value))

        # Assigning to an attribute of anything but `self` could patch a module for everyone in the
        # process, also through a local alias (`cuda = torch.cuda; cuda.Event = ...`).
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute):
                        root = _root_name(sub)
                        if root != "self":
                            where = dotted_name(sub) or f"{root}.{sub.attr}"
                            report.problems.append(f"line {line}: assigns to {where} (patches a module; "
                                                   "only self.* attributes may be set)")

    for node in ast.walk(tree):
        name = dotted_name(node) if isinstance(node, ast.Attribute) else None
        if not name:
            continue
        head, _, rest = name.partition(".")
        resolved = aliases.get(head, head) + ("." + rest if rest else "")
        if resolved.endswith("load_inline") or resolved.endswith("cpp_extension.load"):
            report.uses_load_inline = True
        for pattern, why in FORBIDDEN_TORCH:
            if pattern.match(resolved):
                report.problems.append(f"line {node.lineno}: {resolved} {why}")
                break
    for local, full in aliases.items():
        if full.endswith("load_inline"):
            report.uses_load_inline = True
        for pattern, why in FORBIDDEN_TORCH:
            if pattern.match(full):
                report.problems.append(f"imports {full} as {local}: {why}")

    report.problems = sorted(set(report.problems), key=lambda p: (len(p.split(":")[0]), p))
    report.ok = not report.problems
    return report
