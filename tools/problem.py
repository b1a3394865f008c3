"""Problem files (KernelBench convention): load them and make their shape variants.

A problem file defines `Model`, `get_inputs()`, `get_init_inputs()` and usually module-level
integer constants that those functions read. Changing the constants and calling the functions
again gives the same problem at another size; that is how kevolve makes small shapes for the CPU
interpreter and extra shapes that catch kernels tied to one size.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import importlib.util
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .static_checks import parse_python


class ProblemError(ValueError):
    """The problem (or candidate) file cannot be used; the message is one line for the user."""


@dataclass
class Problem:
    path: Path
    source: str
    module: types.ModuleType
    constants: dict[str, int]  # module-level integer constants, as written in the file
    derived: list = field(default_factory=list)  # (names, code): module-level values computed from them

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def source_hash(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]

    def instantiate(self, shape: dict[str, int] | None = None, seed: int = 0) -> ProblemInstance:
        """Build the reference model and its inputs at `shape` (constants to override), seeded."""
        return instantiate(self, shape or {}, seed)


@dataclass
class ProblemInstance:
    model: torch.nn.Module
    init_inputs: list
    inputs: list
    shape: dict[str, int] = field(default_factory=dict)


def load_module(path: Path, name: str) -> types.ModuleType:
    """Import a Python file as a fresh module (not cached in sys.modules under a real name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ProblemError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # Registered while executing so dataclasses/pickle inside the file can find the module.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def parse_source(source: str, path: Path) -> ast.Module:
    try:
        return parse_python(source, str(path))
    except SyntaxError as e:
        raise ProblemError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None


def integer_constants(tree: ast.Module) -> dict[str, int]:
    """Module-level `NAME = <int literal>` assignments, `H, W = 32, 32` too, in file order (bools
    excluded)."""
    constants: dict[str, int] = {}
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        pairs = [(target, value)]
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            pairs = list(zip(target.elts, value.elts))
        for name, v in pairs:
            if isinstance(name, ast.Name) and isinstance(v, ast.Constant) and type(v.value) is int:
                constants[name.id] = v.value
    return constants


# What a derived value's expression may hold: names, literals, tuples, lists and arithmetic, so that
# evaluating it again has no effect but its value
_PURE = (ast.Name, ast.Constant, ast.Tuple, ast.List, ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop,
         ast.expr_context)


def derived_values(tree: ast.Module, constants: set[str]) -> list[tuple[tuple[str, ...], types.CodeType]]:
    """Module-level assignments computed from the constants (`bias_shape = (out_channels, 1, 1)`, as
    KernelBench writes a parameter's shape; `hidden = 4 * dim`), in file order, each as (the names it
    sets, its compiled statement): evaluated again whenever the constants change, so a shape built
    from a size follows it. Only names, literals, tuples, lists and arithmetic are taken."""
    known, out = set(constants), []
    for node in tree.body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        elts = target.elts if isinstance(target, ast.Tuple) else [target]
        if not all(isinstance(e, ast.Name) for e in elts) or {e.id for e in elts} & set(constants):
            continue
        parts = list(ast.walk(node.value))
        if not all(isinstance(n, _PURE) for n in parts) or not {n.id for n in parts if isinstance(n, ast.Name)} & known:
            continue
        names = tuple(e.id for e in elts)
        out.append((names, compile(ast.Module(body=[node], type_ignores=[]), "<derived>", "exec")))
        known |= set(names)
    return out


def load_problem(path: str | Path) -> Problem:
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"{path}: no such problem file")
    source = path.read_text()
    tree = parse_source(source, path)
    try:
        module = load_module(path, f"kevolve_problem_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}")
    except ProblemError:
        raise
    except Exception as e:  # the user's file raised while importing
        raise ProblemError(f"{path}: importing the problem failed: {type(e).__name__}: {e}") from None
    for required in ("Model", "get_inputs", "get_init_inputs"):
        if not hasattr(module, required):
            raise ProblemError(f"{path}: the problem defines no `{required}` (KernelBench convention)")
    if not (isinstance(module.Model, type) and issubclass(module.Model, torch.nn.Module)):
        raise ProblemError(f"{path}: `Model` is not a torch.nn.Module subclass")
    constants = integer_constants(tree)
    derived = derived_values(tree, set(constants))
    fixed = read_at_run_time(tree, set(constants) | {n for names, _ in derived for n in names})
    for names, code in reversed(derived):  # a value forward reads fixes the constants it is made of
        if fixed & set(names):
            fixed |= set(code.co_names)
    derived = [(names, code) for names, code in derived if not set(code.co_names) & fixed]
    return Problem(path=path, source=source, module=module,
                   constants={k: v for k, v in constants.items() if k not in fixed}, derived=derived)


def read_at_run_time(tree: ast.Module, names: set[str]) -> set[str]:
    """The module constants a function reads when the model runs (a method other than __init__, or a
    helper other than get_inputs/get_init_inputs): the harness sets constants only while it builds
    the model and inputs, so such a size cannot change (forward would build a mask of the old one)."""
    builders = {"get_inputs", "get_init_inputs"}
    functions = [f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name not in builders]
    for cls in (c for c in tree.body if isinstance(c, ast.ClassDef)):
        functions += [f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"]
    read = set()
    for fn in functions:
        local = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)}
        local |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        read |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                 and n.id in names and n.id not in local}
    return read


def _check_inputs(problem: Problem, inputs, what: str) -> list:
    if not isinstance(inputs, (list, tuple)):
        raise ProblemError(f"{problem.path}: {what}() must return a list, got {type(inputs).__name__}")
    return list(inputs)


# Building a problem seeds torch's global RNG and draws from it: two threads doing so at once (evaluators
# of a `kevolve bench --jobs` run) would interleave their draws, and the same seed would give other weights.
_rng_lock = threading.RLock()


def instantiate(problem: Problem, shape: dict[str, int], seed: int) -> ProblemInstance:
    """Set the constants, seed, then build the model and draw inputs (all on the CPU)."""
    with _rng_lock:
        return _instantiate(problem, shape, seed)


@contextlib.contextmanager
def constants_at(module: types.ModuleType, problem: Problem, shape: dict[str, int]):
    """The problem's constants set to `shape` (the rest to their own values) in `module` while building:
    the problem's module, or a candidate's, whose ModelNew.__init__ may read them as Model's does
    (nn.Linear(dim, dim) with a module-level dim)."""
    present = [name for name in problem.constants if hasattr(module, name)]
    saved = {name: getattr(module, name) for name in present}
    for name in present:
        setattr(module, name, shape.get(name, problem.constants[name]))
    for names, code in problem.derived:  # where the module holds them (a candidate may not)
        if all(hasattr(module, n) for n in names + code.co_names):
            saved.update({n: getattr(module, n) for n in names if n not in saved})
            exec(code, module.__dict__)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _instantiate(problem: Problem, shape: dict[str, int], seed: int) -> ProblemInstance:
    module = problem.module
    unknown = set(shape) - set(problem.constants)
    if unknown:
        raise ProblemError(f"{problem.path}: --shapes names unknown constants {sorted(unknown)}; "
                           f"the problem has {sorted(problem.constants)}")
    try:
        with constants_at(module, problem, shape):
            torch.manual_seed(seed)
            init_inputs = _check_inputs(problem, module.get_init_inputs(), "get_init_inputs")
            model = module.Model(*init_inputs).eval()
            inputs = _check_inputs(problem, module.get_inputs(), "get_inputs")
    except ProblemError:
        raise
    except Exception as e:
        raise ProblemError(f"{problem.path}: building the problem at {shape or 'its own shape'} failed: "
                           f"{type(e).__name__}: {e}") from None
    for i, x in enumerate(inputs):
        if not isinstance(x, (torch.Tensor, int, float, bool)):
            raise ProblemError(f"{problem.path}: get_inputs()[{i}] is a {type(x).__name__}; "
                               "inputs must be tensors (or plain numbers)")
    if not any(isinstance(x, torch.Tensor) for x in inputs):
        raise ProblemError(f"{problem.path}: get_inputs() returned no tensor")
    return ProblemInstance(model=model, init_inputs=init_inputs, inputs=inputs, shape=dict(shape))


def numel_of(instance: ProblemInstance) -> int:
    tensors = [x for x in instance.inputs if isinstance(x, torch.Tensor)]
    tensors += list(instance.model.state_dict().values())
    return sum(t.numel() for t in tensors)


# Constants at or under this are left alone when shrinking: they are usually kernel sizes,
# strides, head counts or group counts that other sizes must stay divisible by.
_SMALL_CONSTANT = 8


def shrink_shape(problem: Problem, budget_numel: int = 1 << 15) -> dict[str, int]:
    """Halve the largest size-like constants until inputs plus weights fit `budget_numel` elements.

    Halving keeps powers of two powers of two and divisibility by small factors, so problems
    whose sizes must divide one another still build. A halving at which the problem does not build,
    or its forward does not run on the meta device where it runs at the problem's own shape (a size
    that must match another), is not taken; the next largest size is tried, then two sizes at once.
    Where the forward runs on the meta device, the search builds there only (shapes, no memory). Where
    the shape found runs other ATen ops than the problem's own shape, sizes equal there are halved
    together (a model that compares them). Used for the CPU interpreter and the templates' trace.
    """
    full = on_meta(problem, {})
    own_ops = _forward_ops(full) if full is not None else None
    meta = own_ops is not None

    def build(shape: dict[str, int], forward: bool) -> ProblemInstance | None:  # None: not a shape it runs at
        if meta:
            instance = on_meta(problem, shape)
            return instance if instance is not None and (not forward or forward_runs(instance)) else None
        try:
            return instantiate(problem, shape, seed=0)
        except ProblemError:
            return None

    own = problem.constants
    equal = [[k for k in own if own[k] == v] for v in sorted(set(own.values()), reverse=True)
             if v > _SMALL_CONSTANT and list(own.values()).count(v) > 1]

    def search(forward: bool, tie: bool) -> dict[str, int]:
        shape = dict(problem.constants)
        for _ in range(64):
            instance = build(shape, forward)
            if instance is None or numel_of(instance) <= budget_numel:
                break
            sizes = sorted((k for k, v in shape.items() if v > _SMALL_CONSTANT), key=lambda k: -shape[k])
            # (tie: the largest with the sizes it equals at the problem's own shape while they still do), else
            # one size halved alone, else two at once (a LayerNorm over out_channels of a width that must equal it)
            tied = {k: g for g in equal if len({shape[n] for n in g}) == 1 for k in g} if tie else {}
            units = list(dict.fromkeys(tuple(tied.get(k, [k])) for k in sizes))
            for names in units + [(k,) for k in sizes] + [(a, b) for i, a in enumerate(sizes) for b in sizes[i + 1:]]:
                trial = dict(shape, **{k: shape[k] // 2 for k in names})
                if build(trial, forward) is not None:
                    shape = trial
                    break
            else:
                break
        return shape

    # The forward checked at the end only, first: a meta forward can take seconds (an nn.GRU's cells run
    # one by one, decomposed), and most problems run at every halving. Where the shape so found does not
    # run, the search is made again checking the forward at every step.
    shape = search(forward=False, tie=False)
    ops = _forward_ops(on_meta(problem, shape)) if meta else None
    if meta and ops is None:
        shape = search(forward=True, tie=False)
        ops = _forward_ops(on_meta(problem, shape))
    # A model may choose its ops by comparing sizes (MobileNet's residual only where inp == oup): where the
    # shrunk shape runs other ops than the problem's own, sizes equal at its own shape are halved together,
    # so the templates trace the program the problem runs. Only then: equal by chance (batch = features),
    # tied sizes would make a trace where two dims look alike.
    if meta and ops is not None and ops != own_ops and equal:
        tied_shape = search(forward=False, tie=True)
        if _forward_ops(on_meta(problem, tied_shape)) == own_ops:
            shape = tied_shape
    return {k: v for k, v in shape.items() if v != problem.constants[k]}


def on_meta(problem: Problem, shape: dict[str, int]) -> ProblemInstance | None:
    """The problem built at `shape` on the meta device, or None where it does not build there."""
    try:
        with torch.device("meta"):
            return instantiate(problem, shape, seed=0)
    except ProblemError:
        return None


def forward_runs(instance: ProblemInstance) -> bool:
    """Whether the instance's forward runs (on the meta device: shapes only, no arithmetic)."""
    try:
        with torch.no_grad():
            instance.model(*instance.inputs)
        return True
    except Exception:
        return False


def _forward_ops(instance: ProblemInstance | None) -> tuple[str, ...] | None:
    """The ATen ops the instance's forward runs, in order, or None where it does not run (the shrink
    search compares them; a caller that only asks whether it runs takes forward_runs, unrecorded)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    if instance is None:
        return None
    ops: list[str] = []
    try:
        with torch.no_grad(), Record():
            instance.model(*instance.inputs)
        return tuple(ops)
    except Exception:
        return None


def odd_shape(problem: Problem, base: dict[str, int]) -> dict[str, int] | None:
    """A second shape near `base` whose largest sizes are not multiples of 16 (catches hard-coding
    and missing masks). None when the problem has no constant that can change.

    Tried in turn: the two largest sizes odd, then each size alone; then the same as odd multiples of 8
    (a model that splits d_model into 8 heads takes those). The first shape at which the problem
    builds, and its forward runs on the meta device where it runs at `base`, is it: an odd d_model
    builds a multi-head model whose forward then fails in a view."""
    full = dict(problem.constants, **base)
    sizes = sorted((k for k, v in full.items() if v > _SMALL_CONSTANT), key=lambda k: -full[k])
    try:  # where the forward fails on meta at base too (data-dependent ops), meta cannot tell: build only
        meta_judges = _runs_on_meta(instantiate(problem, base, seed=0))
    except ProblemError:
        meta_judges = False

    def odd(v: int) -> int:
        return max(_SMALL_CONSTANT + 1, (v * 3) // 4 + 3) | 1

    def odd_eighths(v: int) -> int:
        return (v * 3) // 4 // 16 * 16 + 8

    for bump in (odd, odd_eighths):
        for keys in [sizes[:2]] + [[k] for k in sizes]:
            trial = dict(base, **{k: bump(full[k]) for k in keys})
            if trial == base:
                continue
            try:
                instance = instantiate(problem, trial, seed=0)
            except ProblemError:
                continue
            if not meta_judges or _runs_on_meta(instance):
                return trial
    return None


def _runs_on_meta(instance: ProblemInstance) -> bool:
    """Whether a CPU instance's forward runs on the meta device (shapes only, no arithmetic)."""
    try:
        model = copy.deepcopy(instance.model).to("meta")
    except Exception:
        return False
    inputs = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in instance.inputs]
    return forward_runs(ProblemInstance(model=model, init_inputs=instance.init_inputs, inputs=inputs))


def parse_shapes(text: str) -> list[dict[str, int]]:
    """`--shapes "batch_size=8,dim=1000;batch_size=3"` → [{'batch_size': 8, 'dim': 1000}, {...}]."""
    shapes = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        shape = {}
        for item in part.split(","):
            name, sep, value = item.partition("=")
            if not sep or not value.strip().lstrip("-").isdigit():
                raise ProblemError(f"--shapes: '{item.strip()}' is not NAME=INTEGER")
            shape[name.strip()] = int(value)
        shapes.append(shape)
    if not shapes:
        raise ProblemError("--shapes: no shape given")
    return shapes


def shapes_for(problem: Problem, device: str, user_shapes: list[dict[str, int]] | None = None) -> list[dict]:
    """The shapes a candidate is checked at; the first is the one it is timed at.

    GPU: the problem's own shape, then an odd variant. CPU (interpreter): a shrunk shape, then an
    odd variant of it. User-given shapes replace both.
    """
    if user_shapes:
        return user_shapes
    base = shrink_shape(problem) if device == "cpu" else {}
    shapes = [base]
    odd = odd_shape(problem, base)
    if odd is not None and odd != base:
        shapes.append(odd)
    return shapes
