"""The Python API: `kevolve.optimize(...)` runs a session and hands back the kernel as a module.

    import kevolve
    kernel = kevolve.optimize(model, [x], rounds=5)      # or kevolve.optimize("problem.py")
    y = kernel.module(x)                                   # the reference's weights, ready to call
    kernel.save("fast.py"); again = kevolve.load("fast.py", model)

A module object becomes a problem file in the session (DESIGN.md "Problem"): torch.export where it
works, else pickled with its class; either way `get_init_inputs()` is empty and `ModelNew()` takes
no constructor arguments, whatever the module's own constructor took.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kevolve.tools.problem import ProblemError

INIT_MARK = "KEVOLVE_INIT_INPUTS = "  # saved kernels carry their constructor arguments on this line

PROBLEM_TEMPLATE = '''"""kevolve problem saved from a {cls} module object by kevolve.optimize ({how}).

The reference is the module exactly as the user built it (weights included); its inputs are the
example inputs given. get_init_inputs() is empty: ModelNew() takes no constructor arguments.

Parameters and buffers (name: shape, dtype):
{params}

The module's source, as far as Python can find it:

{source}
"""
from pathlib import Path

import torch
import torch.nn as nn

_HERE = Path(__file__).resolve().parent
_SAVED = _HERE / {saved!r}
_INPUTS = _HERE / {inputs!r}
_CLASSES = {classes!r}  # (module, name) of each class below as pickled: unpickling finds them here

import math  # noqa: E402,F401  (for the classes below)
import torch.nn.functional as F  # noqa: E402,F401

{class_defs}


if True:  # loading helpers, in a block so a Coder copying this file's classes leaves them out
    def _same_module(self, mode=True):
        return self  # an exported module is inference-only already; train()/eval() would raise

    def _load():
        if _SAVED.suffix == ".pt2":
            import types

            module = torch.export.load(str(_SAVED)).module()
            module.train = types.MethodType(_same_module, module)
            module.eval = types.MethodType(_same_module, module)
            return module
        import pickle
        import types

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if [module, name] in _CLASSES:
                    return globals()[name]
                return super().find_class(module, name)

        return torch.load(_SAVED, weights_only=False, pickle_module=types.SimpleNamespace(
            Unpickler=Unpickler, load=pickle.load, __name__="pickle"))

    def _adopt(model, saved):
        vars(model).update(vars(saved))  # parameters, buffers, submodules and plain attributes


{model_class}


def get_inputs():
    return list(torch.load(_INPUTS, weights_only=False))


def get_init_inputs():
    return []
'''


class OptimizeError(RuntimeError):
    """The session ended without a verified kernel; `.session_path` and `.report_path` say where to look."""

    def __init__(self, message: str, session_path: Path | None = None, report_path: Path | None = None):
        super().__init__(message)
        self.session_path, self.report_path = session_path, report_path


@dataclass
class OptimizedKernel:
    """The best verified candidate of a session, with the reference's weights loaded into `.module`."""

    module: Any  # torch.nn.Module
    source: str
    path: Path  # the kernel file (the session's best.py)
    session_path: Path
    candidate_id: str
    speedup_vs_eager: float | None  # None on a CPU session (correctness only, no timing)
    speedup_vs_compile: float | None
    report_path: Path | None
    init_inputs: list = field(default_factory=list)

    def save(self, path: str | Path) -> Path:
        """Write the kernel as one standalone file; `kevolve.load(path, reference)` builds it again."""
        path = Path(path)
        path.write_text(self.source.rstrip("\n") + f"\n\n{INIT_MARK}{self.init_inputs!r}\n")
        return path

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)


# -- module object → problem file ----------------------------------------------------------------------


def _params_listing(module) -> str:
    rows = [f"    {name}: {tuple(t.shape)}, {str(t.dtype).replace('torch.', '')}"
            for name, t in list(module.state_dict().items())[:200]]
    return "\n".join(rows) or "    (none)"


def _class_source(module) -> str:
    try:
        text = inspect.getsource(type(module))
    except (OSError, TypeError):
        text = f"(source of {type(module).__qualname__} not available)\n"
    return text.replace('"""', "'''").replace("\\", "\\\\")


def save_module_problem(module, example_inputs, folder: Path, name: str | None = None) -> Path:
    """Write a problem file (plus its .pt2/.pkl and inputs file) for a module object into `folder`."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ProblemError("kevolve.optimize: expected an nn.Module or a problem file path, "
                           f"got {type(module).__name__}")
    if example_inputs is None:
        raise ProblemError("kevolve.optimize: a module object needs example_inputs (a list of forward arguments)")
    inputs = list(example_inputs) if isinstance(example_inputs, (list, tuple)) else [example_inputs]
    inputs = [x.detach().cpu() if isinstance(x, torch.Tensor) else x for x in inputs]  # the harness moves them
    module = module.eval()
    try:
        device = next(iter(module.state_dict().values())).device
    except StopIteration:
        device = torch.device("cpu")
    if device.type != "cpu":
        module = _cpu_copy(module)
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", name or type(module).__name__).lower() or "module"
    folder.mkdir(parents=True, exist_ok=True)
    inputs_name = f"{stem}.inputs.pt"
    torch.save(inputs, folder / inputs_name)
    path = folder / f"{stem}.py"
    for saved, how, classes, class_defs in _saved_forms(module, inputs, folder, stem):
        model_class = _model_class(module) if saved.endswith(".pkl") else _exported_class(folder / saved)
        path.write_text(PROBLEM_TEMPLATE.format(cls=type(module).__qualname__, how=how, classes=classes,
                                                model_class=model_class,
                                                params=_params_listing(module), source=_class_source(module),
                                                class_defs=class_defs, saved=saved, inputs=inputs_name))
        if _loads_back(path, module, inputs):
            return path
    raise ProblemError(f"{type(module).__name__}: neither pickling with its class source nor torch.export gives a "
                       "module that reproduces it; save it as a problem file (Model, get_inputs, get_init_inputs)")


def _cpu_copy(module):
    import copy

    return copy.deepcopy(module).cpu()


EXPORTED_MODEL = '''class Model(nn.Module):
    """The exported module: Model() gives a fresh copy of it (its own parameter names). A class built
    from this __init__ under another name (a candidate) gets the same parameters and buffers, by name
    and shape; the harness loads the weights."""

    def __new__(cls, *args, **kwargs):
        if cls.__name__ == "Model":  # the reference: the exported module itself
            return _load()
        return super().__new__(cls)

    def __init__(self):
        nn.Module.__init__(self)
{skeleton}
    def forward(self, {sig}):  # the exported graph's inputs (Model() runs the exported module itself)
        raise NotImplementedError
'''

# Registers every parameter and buffer of the saved module under its own name and shape.
SKELETON = '''        for name, shape, dtype, kind in {spec!r}:
            owner, *path = self, *name.split(".")[:-1]
            for part in path:
                if part not in owner._modules:
                    owner.add_module(part, nn.Module())
                owner = owner._modules[part]
            t = torch.zeros(shape, dtype=getattr(torch, dtype))
            if kind == "parameter":
                owner.register_parameter(name.split(".")[-1], nn.Parameter(t))
            else:
                owner.register_buffer(name.split(".")[-1], t)
'''

MODEL_CLASS = '''class Model({base}):
    """The saved {base} with its weights. A class built from this __init__ under another name (a
    candidate) gets the same parameters and buffers, by name and shape; the harness loads the weights."""

    def __init__(self):
        nn.Module.__init__(self)
        if type(self).__name__ == "Model":  # the reference: the saved module itself
            _adopt(self, _load())
            return
{skeleton}
    def forward(self, {sig}):
        return super().forward({call})
'''


def _skeleton(module) -> str:
    params = {n for n, _ in module.named_parameters()}
    spec = [(n, tuple(t.shape), str(t.dtype).replace("torch.", ""), "parameter" if n in params else "buffer")
            for n, t in module.state_dict().items()]
    return SKELETON.format(spec=spec)


def _exported_class(pt2: Path) -> str:
    """The problem's Model for an exported module, with the exported graph's inputs as forward's."""
    import torch

    module = torch.export.load(str(pt2)).module()
    inputs = [n.name for n in module.graph.nodes if n.op == "placeholder"]
    return EXPORTED_MODEL.format(skeleton=_skeleton(module), sig=", ".join(inputs))


def _model_class(module) -> str:
    """The problem's Model: a subclass of the module's class, so the Coder sees real code and names."""
    names, call = [], []
    for i, prm in enumerate(inspect.signature(type(module).forward).parameters.values()):
        if i == 0:
            continue
        if prm.kind is prm.VAR_POSITIONAL:
            names.append(f"*{prm.name}"), call.append(f"*{prm.name}")
        elif prm.kind is prm.VAR_KEYWORD:
            names.append(f"**{prm.name}"), call.append(f"**{prm.name}")
        else:
            names.append(prm.name if prm.default is prm.empty else f"{prm.name}={prm.default!r}")
            call.append(prm.name)
    return MODEL_CLASS.format(base=type(module).__name__, skeleton=_skeleton(module), sig=", ".join(names),
                              call=", ".join(call))


def _user_classes(module) -> list[type]:
    """The module's own classes (not torch's), deepest first, so each is defined before it is used."""
    seen: list[type] = []
    for m in reversed(list(module.modules())):
        cls = type(m)
        if not cls.__module__.startswith("torch") and cls not in seen:
            seen.append(cls)
    return seen


def _saved_forms(module, inputs: list, folder: Path, stem: str):
    """The ways to save the module, best for the Coder first: pickled with its classes' source inlined
    (the builtin Coder traces the real class), then torch.export (any module export can trace)."""
    import torch

    try:
        classes = _user_classes(module)
        defs = "\n\n".join(inspect.getsource(c) for c in classes)
        torch.save(module, folder / f"{stem}.pkl")
    except Exception:  # no source to find, or not picklable: export is the other way
        defs = None
    if defs is not None:
        yield (f"{stem}.pkl", "pickled with its class", [[c.__module__, c.__qualname__] for c in classes], defs)
    (folder / f"{stem}.pkl").unlink(missing_ok=True)
    try:
        torch.export.save(torch.export.export(module, tuple(inputs)), str(folder / f"{stem}.pt2"))
    except Exception:
        return
    yield (f"{stem}.pt2", "torch.export", [], "")


def _loads_back(path: Path, module, inputs: list) -> bool:
    """The saved problem builds a module that gives the module's own outputs (as the worker will build it)."""
    import torch

    from kevolve.tools.problem import load_problem

    try:
        again = load_problem(path).instantiate({}, seed=0)
        with torch.no_grad():
            return _same(module(*inputs), again.model(*again.inputs))
    except Exception:
        return False


def _same(a, b) -> bool:
    import torch

    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# -- running a session ---------------------------------------------------------------------------------


def _seconds(time_budget) -> float | None:
    if time_budget is None or isinstance(time_budget, (int, float)):
        return None if time_budget is None else float(time_budget)
    from kevolve.cli_args import parse_duration

    return parse_duration(str(time_budget))


def optimize(model_or_path, example_inputs=None, *, coder: str = "builtin", judge: str = "builtin",
             rounds: int | None = None, time: float | str | None = None, device: str | None = None,
             workspace: str | Path | None = None, budget_usd: float | None = None, backend: str = "triton",
             precision: str = "fp32", timeout: float = 120.0, config: str | Path | None = None, seed: int = 0,
             batch: int = 1, executor: str = "local", workers: int | None = None, ray_address: str | None = None,
             progress: bool = True) -> OptimizedKernel:
    """Run a session on a module object (with example inputs) or a problem file; return the best kernel.

    time: seconds, or a duration like "20m". batch, executor, workers, ray_address: as the CLI's
    --batch, --executor, --workers, --ray-address. Raises ProblemError for bad input and OptimizeError when
    the session ends with no verified kernel."""
    from kevolve.session import create_session, default_workspace
    from kevolve.session_cli import UNLIMITED_ROUNDS, _summary, _write_report, build_runtime

    workspace = Path(workspace) if workspace else default_workspace()
    time_s = _seconds(time)
    if rounds is not None and rounds < 1:
        raise ProblemError(f"rounds={rounds}: give at least 1")
    rounds = rounds if rounds is not None else (10 if time_s is None else UNLIMITED_ROUNDS)
    staged: Path | None = None
    if isinstance(model_or_path, (str, os.PathLike)):
        problem = Path(model_or_path)
        if not problem.is_file():
            raise ProblemError(f"{problem}: no such problem file")
    else:
        staged = Path(tempfile.mkdtemp(prefix="kevolve-module-"))
        problem = save_module_problem(model_or_path, example_inputs, staged)
    settings = {"problem": str(problem), "coder": coder, "judge": judge, "rounds": rounds, "time_s": time_s,
                "budget_usd": budget_usd, "backend": backend, "device": device, "precision": precision,
                "timeout_s": timeout, "config": str(config) if config else None, "interactive": False, "seed": seed,
                "batch": batch, "executor": executor, "workers": workers, "ray_address": ray_address}
    try:
        session = create_session(problem, settings, device={}, workspace=workspace)
        if staged is not None:  # the data files travel with the session's copy of the problem
            for f in staged.iterdir():
                if f.name != problem.name:
                    shutil.copy2(f, session.path / f.name)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    try:
        rt = build_runtime(session, settings)
    except Exception as e:
        session.close()
        if type(e).__name__ in ("CoderUnavailable", "ConfigError", "UsageError"):
            raise ProblemError(str(e)) from None
        raise
    if progress:
        print(f"kevolve: session {session.id} in {session.path}", flush=True)
    from kevolve.graph import run_graph
    from kevolve.live import live_view

    out = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    try:
        with live_view(rt, enabled=progress):
            values = run_graph(rt, resume=False)
        with out:
            _summary(rt, values)
            _write_report(rt)
    finally:
        rt.evaluator.close()
    path = session.path
    session.close()
    return _kernel_from_session(path, device=device)


def _kernel_from_session(path: Path, device: str | None = None) -> OptimizedKernel:
    from kevolve.report import best_id, load_session

    data = load_session(path)
    best = best_id(data)
    row = next((c for c in data["candidates"] if c["id"] == best), None)
    report = path / "report.html"
    report = report if report.is_file() else None
    if row is None:
        raise OptimizeError(f"session {path.name} ended with no verified kernel; see {report or path}", path, report)
    problem = _load_problem(path / "problem.py")
    seed = (data["info"].get("settings") or {}).get("seed", 0)
    instance = problem.instantiate({}, seed=seed)  # the same weights the harness checked against
    module = build_module(row["source"], instance.model, instance.init_inputs, device=device)
    return OptimizedKernel(module=module, source=row["source"], path=path / "best.py", session_path=path,
                           candidate_id=best, speedup_vs_eager=row["speedup"],
                           speedup_vs_compile=row["speedup_vs_compile"], report_path=report,
                           init_inputs=list(instance.init_inputs))


def _load_problem(path: Path):
    from kevolve.tools.problem import load_problem

    return load_problem(path)


# -- building the kernel module ------------------------------------------------------------------------


def build_module(source: str, reference, init_inputs: list | None = None, *, device: str | None = None):
    """ModelNew from a kernel's source, with the reference module's weights, on `device`."""
    import torch

    from kevolve.tools.problem import load_module

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # Triton kernels run on the CPU only under the interpreter (set before import)
        os.environ.setdefault("TRITON_INTERPRET", "1")
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / "kevolve-kernels"
    folder.mkdir(exist_ok=True)
    file = folder / f"kernel_{digest}.py"  # triton.jit reads the function source from a real file
    if not file.is_file():
        file.write_text(source)
    mod = load_module(file, f"kevolve_kernel_{digest}")
    if not hasattr(mod, "ModelNew"):
        raise ProblemError("the kernel file defines no ModelNew")
    model = mod.ModelNew(*(init_inputs or []))
    state = reference.state_dict()
    if hasattr(model, "load_reference_state"):
        model.load_reference_state(state)
    else:
        model.load_state_dict(state)
    return model.to(device).eval()


def load(path: str | Path, reference_module, *, device: str | None = None):
    """A kernel saved with OptimizedKernel.save (or any best.py) as a module with `reference_module`'s weights."""
    import ast

    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such kernel file")
    source = path.read_text()
    init_inputs: list = []
    for line in source.splitlines():
        if line.startswith(INIT_MARK):
            init_inputs = ast.literal_eval(line[len(INIT_MARK):])
    return build_module(source, reference_module, init_inputs, device=device)
