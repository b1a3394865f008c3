"""The compiler seed: what torch.compile (Inductor) generates for a problem, as a standalone candidate.

    compiler_seed(problem_path, device) -> Proposal | None

Inductor runs in a subprocess (`python -m kevolve.builtin.compiler_seed PROBLEM DEVICE OUT.json`):
it is slow, may crash, and is configured here in ways the session's process must not see. The
module is compiled with dynamic shapes (the harness checks a second, odd shape), and Inductor's
Python output code is rewritten into a candidate file: its Triton kernels as plain `@triton.jit`
functions (the `triton_helpers` they call copied in), one launcher per kernel with the launch
config Inductor chose, and its `call(args)` function with Inductor's runtime helpers replaced by
torch ops. Nothing of torch.compile / torch._inductor is left at run time. Where the dynamic compile
fixes a size even so (a convolution's channels) or fails, the static compile's kernels run at the
timed shape only and the problem's first template everywhere else.

On the CPU there is no CUDA Inductor output; Inductor's Triton CPU backend produces the same kind of
source, and only the step that would compile it needs a GPU target. The subprocess gives Inductor a
fixed backend hash and takes the output code before it is loaded, so the export is testable under
the Triton interpreter.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import hashlib
import inspect
import json
import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kevolve.tools.static_checks import dotted_name

from .codegen import EXPM1, LOG1P, NAN_EXTREMES, TANH_JIT
from .mutate import UNTUNED_MARK

log = logging.getLogger(__name__)

STRATEGY, FAMILY = "compiler-seed", "compiler"
_SMALL_CONSTANT = 8  # as kevolve.tools.problem: constants up to this are kernel sizes, groups, heads; kept as is


class SeedError(Exception):
    """Inductor's output cannot be exported; the message is the one-line reason."""


def compiler_seed(problem_path: str | Path, device: str, timeout_s: float = 240.0):
    """Inductor's kernels for the problem as a candidate (Proposal), or None with the reason logged.

    The export (tens of seconds) is cached by problem source, device, torch version and this file."""
    from . import Proposal, _static_ok

    start = time.monotonic()
    if not Path(problem_path).is_file():
        return _none(f"{problem_path}: no such problem file")
    cache = _cache_path(Path(problem_path), device)
    data = _read_json(cache) if cache else None
    if data is None:
        data = _export_in_subprocess(Path(problem_path), device, timeout_s)
        if cache is not None and not data.get("transient"):
            _write_json(cache, data)
    if data.get("error"):
        return _none(data["error"])
    source = data["source"]
    if not _static_ok(source):
        return _none("the exported file fails the static checks")
    notes = f"{data.get('notes', '')}; export {data.get('seconds', 0):.0f} s, now {time.monotonic() - start:.1f} s"
    return Proposal(source=source, strategy=STRATEGY, family=FAMILY, notes=notes)


def _cache_path(problem_path: Path, device: str) -> Path | None:
    try:
        from importlib.metadata import version

        from kevolve.tools.evaluate import default_cache_dir

        text = problem_path.read_text()
        # a saved module object's problem reads its graph from files beside it: those are part of the key
        data = [hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(problem_path.parent.iterdir())
                if f.is_file() and f != problem_path and repr(f.name) in text]
        # the export reads the problem through kevolve.tools.problem, and takes a template from the
        # engine where Inductor's kernels hold at one shape: a change to either is a change of the seed
        from kevolve.tools import problem as problem_module

        engine = [*sorted(Path(__file__).parent.glob("*.py")), Path(problem_module.__file__)]
        key = "\0".join([text, *data, device, version("torch"), version("triton"), *(f.read_text() for f in engine)])
    except Exception:  # no cache is only slower
        return None
    return default_cache_dir() / "compiler-seed" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)
    except OSError:
        pass


def _export_in_subprocess(problem_path: Path, device: str, timeout_s: float) -> dict:
    """{"source", "notes", "seconds"} or {"error"} (with "transient" when a retry might do better)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kevolve-compiler-seed-") as tmp:
        out = Path(tmp) / "seed.json"
        env = dict(os.environ)
        if device == "cpu":
            env["TRITON_INTERPRET"] = "1"
        else:
            env.pop("TRITON_INTERPRET", None)
        # The CPU export fakes Triton's backend hash: its cache entries must not reach the user's cache.
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        env["TRITON_CACHE_DIR"] = str(Path(tmp) / "triton")
        cmd = [sys.executable, "-m", "kevolve.builtin.compiler_seed", str(problem_path.resolve()), device, str(out)]
        try:
            proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"torch.compile took over {timeout_s:.0f} s", "transient": True}
        except OSError as e:
            return {"error": f"could not start the export: {e}", "transient": True}
        data = _read_json(out)
        if data is None:
            tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
            return {"error": f"the export process failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}"}
    data["seconds"] = time.monotonic() - start
    return data


def _none(reason: str):
    log.warning("compiler seed: none (%s)", reason.splitlines()[0][:300] if reason else "no reason")
    return None


# -- the subprocess: run Inductor, capture its output code ------------------------------------------

class _Captured(Exception):
    pass


def _configure(device: str, size_values: set[int], float_inputs: bool = False) -> None:
    import torch
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config
    import torch.fx.experimental._config as fx_config

    # Every size symbolic, parameters included, one symbol per dim: the candidate must run at any shape.
    dynamo_config.force_parameter_static_shapes = False
    dynamo_config.force_nn_module_property_static_shapes = False
    dynamo_config.allow_unspec_int_on_nn_module = True  # LayerNorm(hidden) keeps hidden as a module int
    fx_config.use_duck_shape = False
    # Float attributes (eps) are constants, unless one depends on a size (1/sqrt(head_dim)): then floats
    # are graph inputs, read from the module at each call.
    dynamo_config.specialize_float = not float_inputs
    # A warning raised in forward (InstanceNorm on a size it was not built for) breaks the one graph
    # the export needs; Dynamo can hold it and raise it after the graph instead.
    dynamo_config.reorderable_logging_functions.add(warnings.warn)
    inductor_config.force_disable_caches = True
    # Ints equal to a problem size stay symbolic wherever they come from (LayerNorm(hidden).normalized_shape).
    # (torch 2.12 and later; on older releases such an int is fixed and _specialized says so)
    if hasattr(torch.compiler.config, "dynamic_values"):
        torch.compiler.config.dynamic_values = ",".join(str(v) for v in sorted(size_values))
    if device == "cpu":
        import torch.utils._triton as torch_triton

        inductor_config.cpu_backend = "triton"
        # Only the kernel cache key needs a real Triton target; the source does not depend on it.
        torch_triton.triton_hash_with_backend = lambda: "0" * 64
    torch._dynamo.reset()


_captured: list = []  # [output code, loaded module or None] per compile (see _capture_output_code)


def _capture_output_code(device: str) -> list:
    """Patch PyCodeCache (once per process) so Inductor's output module source is kept (and, on the
    CPU, never loaded). Returns the list this compile's output lands in, emptied."""
    from torch._inductor import codecache

    _captured.clear()
    if getattr(codecache.PyCodeCache.load_by_key_path, "kevolve_capture", False):
        return _captured
    original = codecache.PyCodeCache.load_by_key_path.__func__

    def load_by_key_path(cls, key, path, *args, **kwargs):
        text = Path(path).read_text()
        if "def call(" not in text:
            return original(cls, key, path, *args, **kwargs)
        if device == "cpu":
            _captured.append([text, None])
            raise _Captured()
        module = original(cls, key, path, *args, **kwargs)
        _captured.append([text, module])
        return module

    load_by_key_path.kevolve_capture = True
    codecache.PyCodeCache.load_by_key_path = classmethod(load_by_key_path)
    return _captured


@dataclass
class _Compiled:
    code: str            # Inductor's output module
    module: Any          # that module, loaded (GPU: its autotuner's choices), or None
    inputs: list         # per graph input: (Dynamo source, dtype when passed as a 0-dim tensor)
    examples: list       # per graph input: (shape, stride) of a tensor, else None
    n_out: int
    ref_type: str


def _run_inductor(problem_path: str, device: str, shape: dict, dynamic: bool | None = None) -> _Compiled:
    """Inductor's output for the problem at `shape`: with dynamic sizes (None: when the problem has size
    constants), or specialized to that shape."""
    import torch
    from torch._inductor.compile_fx import compile_fx

    from kevolve.tools.problem import instantiate, load_problem

    prob = load_problem(problem_path)
    # The sizes the harness changes between shapes (see kevolve.tools.problem): these must not be baked in,
    # at their values in this shape (a CPU shape may have shrunk a channel count to a small value).
    sizes = {shape.get(k, v) for k, v in prob.constants.items() if v > _SMALL_CONSTANT}
    # Without size constants the harness checks one shape only: a static compile is then both allowed
    # and what torch.compile gives a user by default (a saved module object, say).
    dynamic = bool(sizes) if dynamic is None else dynamic
    inst = instantiate(prob, shape, seed=0)
    model = inst.model.to(device)
    inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inst.inputs]
    with torch.no_grad():
        ref = model(*inputs)
    n_out = len(ref) if isinstance(ref, (tuple, list)) else 1
    _configure(device, {v for v in sizes if v > _SMALL_CONSTANT} if dynamic else set(),
               float_inputs=dynamic and bool(_size_dependent_floats(prob, shape, inst.model)))
    if device == "cuda":
        # Another session (a bench with --jobs, a Ray node) may be timing on this GPU: Inductor's
        # autotuning waits for the GPU's lock as a timing does; the compile around it does not.
        from kevolve.tools.evaluate import default_cache_dir
        from kevolve.tools.gpu_lock import gpu_identity, gpu_lock, lock_inductor_autotuning

        lock_inductor_autotuning(lambda: gpu_lock(default_cache_dir(), gpu_identity()))
    _unbuiltin(model, sizes)
    captured = _capture_output_code(device)
    differ = _differ_elsewhere(prob, shape, inst.model) if dynamic else None
    sources: list[list[tuple[str, str | None]]] = []
    examples: list[list] = []
    fixed: list[str] = []

    def backend(gm, example_inputs):
        sources.append([(_through_closures(name, model), t)
                        for name, t in (_graph_input(n) for n in gm.graph.nodes if n.op == "placeholder")])
        examples.append([(tuple(x.shape), tuple(x.stride())) if isinstance(x, torch.Tensor) and not dynamic
                         else None for x in example_inputs])
        try:
            return compile_fx(gm, example_inputs)
        finally:
            fixed[:] = _specialized(example_inputs, sizes, differ)

    compiled = torch.compile(model, backend=backend, dynamic=dynamic, fullgraph=True)
    try:
        with torch.no_grad():  # an inference graph: no saved activations among the outputs
            compiled(*inputs)
    except Exception as e:
        if not any(isinstance(x, _Captured) for x in _chain(e)):
            raise SeedError(f"torch.compile failed: {_first_line(e)}") from None
    if fixed and dynamic:
        raise SeedError(f"torch.compile fixed a size ({', '.join(fixed[:3])}): its kernels hold at one shape only")
    # Dynamo may restart a trace (a float attribute first traced as a tensor): the last graph is the one kept.
    if not sources or len(captured) != 1:
        raise SeedError(f"torch.compile made {len(captured)} output modules, not one")
    return _Compiled(captured[0][0], captured[0][1], sources[-1], examples[-1], n_out, type(ref).__name__)


def _size_dependent_floats(prob, shape: dict, model) -> list[str]:
    """Float attributes whose value changes with the problem's sizes (`self.scale = dim ** -0.5`), found by
    building the model again at the harness's odd shape: baked in as constants, they hold at one shape only."""
    from kevolve.tools.problem import instantiate, odd_shape

    odd = odd_shape(prob, shape)
    if odd is None:
        return []
    other = dict(instantiate(prob, odd, seed=0).model.named_modules())
    changed = []
    for name, module in model.named_modules():
        there = vars(other.get(name, object()))
        changed += [f"{name}.{k}".lstrip(".") for k, v in vars(module).items()
                    if type(v) is float and k in there and there[k] != v]
    return changed


def _unbuiltin(model, sizes: set[int]) -> None:
    """Dynamo reads the attributes of torch.nn's own modules, and tuples of ints anywhere, as constants
    (LayerNorm's normalized_shape). Traced as a user subclass's attribute and as a list, a size in them
    stays symbolic (dynamic_values)."""
    import torch

    subclasses: dict[type, type] = {}
    for m in model.modules():
        cls = type(m)
        if cls.__module__.startswith("torch.nn.") and cls is not torch.nn.Module:
            if cls not in subclasses:
                subclasses[cls] = type(cls.__name__, (cls,), {"__module__": "kevolve_compiler_seed"})
            m.__class__ = subclasses[cls]
        for name, value in list(vars(m).items()):
            if isinstance(value, tuple) and value and all(type(v) is int for v in value) and set(value) & sizes:
                m.__dict__[name] = list(value)


def _differ_elsewhere(prob, shape: dict, model):
    """Whether two of Dynamo's size sources differ at another shape the problem runs at (the harness's
    odd one, or one size halved): two sizes a guard made one that need not be equal. A source that
    cannot be read is taken as equal (Inductor unifies sizes an op requires equal, as x's last dim and a
    Linear's input, and those never differ)."""
    from kevolve.tools.problem import forward_runs, odd_shape, on_meta

    full = dict(prob.constants, **shape)
    others = [odd_shape(prob, shape)] + [dict(shape, **{k: v // 2}) for k, v in full.items() if v > _SMALL_CONSTANT]
    names = list(inspect.signature(model.forward).parameters)
    locals_ = []
    for other in others:  # built here, not in Dynamo's backend, where tensors made are fake
        inst = on_meta(prob, other) if other is not None else None
        if inst is not None and forward_runs(inst):
            locals_.append({"self": inst.model, **dict(zip(names, inst.inputs))})

    def differ(a: str, b: str) -> bool:
        for local in locals_:
            try:
                if eval(a, {}, {"L": local}) != eval(b, {}, {"L": local}):  # noqa: S307 (sizes of the model's own)
                    return True
            except Exception:
                continue
        return False

    return differ


def _specialized(example_inputs, sizes: set[int], differ=None) -> list[str]:
    """Sizes that started symbolic and that a guard then fixed to one value, or to another size that
    `differ` says is not always equal, as `source = value`. Small values are left out unless a problem
    size has that value here: the harness never changes constants up to _SMALL_CONSTANT (groups, kernel
    sizes), but a shrunk shape can bring a size down to one."""
    from torch._guards import detect_fake_mode

    fake = detect_fake_mode(example_inputs)
    env = getattr(fake, "shape_env", None)
    if env is None:
        return []

    def source(sym) -> str | None:
        srcs = env.var_to_sources.get(sym) or []
        name = srcs[0].name if srcs else None
        return name() if callable(name) else name

    out = []
    for sym, value in env.replacements.items():
        if source(sym) is None:
            continue
        if getattr(value, "is_Integer", False) and (int(value) > _SMALL_CONSTANT or int(value) in sizes):
            out.append(f"{source(sym)} = {value}")
        elif getattr(value, "is_Symbol", False) and source(value) is not None and differ is not None \
                and differ(source(sym), source(value)):
            # two sizes equal at this shape made one (a buffer sliced to the sequence, minGPT's mask, with
            # seq_len = max_seqlen): its kernels index one with the other, wrong where they differ
            out.append(f"{source(sym)} = {source(value)}")
    return out


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def _chain(e: BaseException):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def _graph_input(node) -> tuple[str, str | None]:
    """Dynamo's source of a graph input, and the dtype when Dynamo passes a Python number as a 0-dim
    tensor (an unspecialized float): the exported forward must pass it so too."""
    arg = node.meta.get("grapharg")
    source = getattr(arg, "source", None)
    if source is None:
        raise SeedError(f"graph input {node.name} has no source")
    name = source.name
    fake = getattr(arg, "fake_tensor", None)
    as_tensor = str(fake.dtype) if getattr(arg, "pass_arg_as_tensor", False) and fake is not None else None
    return (name() if callable(name) else name), as_tensor


def _through_closures(name: str, model) -> str:
    """Dynamo's source of a weight a lambda closes over (`self.mlpf = lambda x: m.c_proj(...)`, minGPT):
    `L['self'].mlpf.__closure__[0].cell_contents.c_proj.weight`, which the static checks refuse,
    named by the module's own path instead (`L['self'].mlp.c_proj.weight`) where the cell holds one."""
    found = re.match(r"(L\['self'\](?:\.\w+)*\.__closure__\[\d+\]\.cell_contents)", name)
    if found is None:
        return name
    try:
        held = eval(found[1].replace("L['self']", "self", 1), {}, {"self": model})  # noqa: S307 (the model's own)
    except Exception:
        return name
    path = next((p for p, m in model.named_modules() if m is held), None)
    if path is None:
        return name
    return _through_closures(("L['self']." + path).rstrip(".") + name[found.end():], model)


def _source_expr(name: str, as_tensor: str | None = None) -> str:
    """Dynamo's source of a graph input as Python inside ModelNew.forward (locals are forward's own)."""
    expr = re.sub(r"L\['([A-Za-z_]\w*)'\]", r"\1", name)
    expr = re.sub(r"\._(?:modules|parameters|buffers)\['([A-Za-z_]\w*)'\]", r".\1", expr)
    try:
        ast.parse(expr, mode="eval")
    except SyntaxError:
        raise SeedError(f"graph input {name} is not a local of forward") from None
    if "G[" in expr or "L[" in expr:
        raise SeedError(f"graph input {name} is not a local of forward")
    return f"torch.as_tensor({expr}, dtype={as_tensor})" if as_tensor else expr


# -- parsing the output code ------------------------------------------------------------------------

def _kernels(code: str) -> tuple[dict[str, str], ast.FunctionDef]:
    """{kernel name: Triton source} from `name = async_compile.triton('name', '''...''')`, and `call`."""
    tree = ast.parse(code)
    kernels: dict[str, str] = {}
    call = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            f = node.value.func
            if isinstance(f, ast.Attribute) and f.attr != "triton" and _dotted(f).startswith("async_compile."):
                raise SeedError(f"Inductor made a non-Triton kernel ({_dotted(f)})")
            if isinstance(f, ast.Attribute) and _dotted(f) == "async_compile.triton":
                name, src = (a.value for a in node.value.args[:2])
                kernels[name] = src
        if isinstance(node, ast.FunctionDef) and node.name == "call":
            call = node
    if call is None:
        raise SeedError("no call() in Inductor's output code")
    return kernels, call


def _dotted(node: ast.AST) -> str:
    return dotted_name(node) or ""


def _kernel_meta(name: str, src: str) -> dict:
    """Configs, triton_meta and inductor_meta of one kernel: its module is run with the autotuner replaced."""
    from torch._inductor.runtime import triton_heuristics

    seen: dict = {}

    def cached_autotune(size_hints, configs, triton_meta, heuristic_type, filename=None, inductor_meta=None, **_):
        seen.update(configs=configs, triton_meta=triton_meta, inductor_meta=inductor_meta or {},
                    size_hints=size_hints if isinstance(size_hints, dict) else {})
        return lambda fn: fn

    original = triton_heuristics.cached_autotune
    triton_heuristics.cached_autotune = cached_autotune
    # From a real file: outside the interpreter, @triton.jit reads the function's source with inspect.
    with tempfile.TemporaryDirectory(prefix="kevolve-seed-") as tmp:
        path = Path(tmp) / f"{name}.py"
        path.write_text(src)
        try:
            exec(compile(src, str(path), "exec"), {"__file__": str(path), "__name__": name})
        finally:
            triton_heuristics.cached_autotune = original
    if not seen.get("configs"):
        raise SeedError(f"kernel {name}: no launch config")
    return seen


def _constexpr_params(src: str) -> set[str]:
    """The parameters of a kernel's source annotated `tl.constexpr`."""
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef))
    return {a.arg for a in fn.args.args if a.annotation is not None and "constexpr" in ast.unparse(a.annotation)}


def _pick_config(meta: dict, device: str, src: str):
    """Inductor's first heuristic config. Under the interpreter each program is Python work: the config
    with the largest blocks, XBLOCK then doubled up to the size hint. A kernel whose x mask is constant
    (`xmask = tl.full(...)`) takes blocks that divide its size only: Inductor drops the mask where the size
    is a multiple of its largest block (TRITON_MAX_BLOCK, 4096), so it is doubled up to that, no further
    (past it, a program of 16384 wrote beyond a 12288-element output)."""
    configs = meta["configs"]
    if device != "cpu":
        return configs[0]
    blocks = lambda c: math.prod(v for k, v in c.kwargs.items() if k.endswith("BLOCK"))  # noqa: E731
    config = copy.copy(max(configs, key=blocks))
    kwargs = dict(config.kwargs)
    x_hint = (meta.get("size_hints") or {}).get("x", 1)
    if "xmask" not in src or re.search(r"\bxmask = tl\.full\(", src):
        x_hint = min(x_hint, 4096)
    if meta["inductor_meta"].get("grid_type") in ("Grid1D", "Grid2D") and "XBLOCK" in kwargs:
        while kwargs["XBLOCK"] < x_hint and blocks(config) * 2 <= 1 << 14:
            kwargs["XBLOCK"] *= 2
            config.kwargs = kwargs
    config.kwargs = kwargs
    return config


def _tuned_config(module, name: str):
    """The config Inductor's autotuner kept for a kernel (GPU), or None."""
    kernel = getattr(module, name, None) if module is not None else None
    try:
        launchers = getattr(kernel, "launchers", None)
        return launchers[0].config if launchers else None
    except (AttributeError, IndexError, TypeError):  # another Inductor's autotuner: its first heuristic config
        return None


# -- rewriting ----------------------------------------------------------------------------------------

_BUILTINS = set(dir(builtins))
_KERNEL_GLOBALS = {"tl", "triton", "libdevice"}
_TL_MATH = {"exp", "exp2", "log", "log2", "sin", "cos", "sqrt", "sqrt_rn", "rsqrt", "abs", "floor", "ceil", "erf",
            "fma", "div_rn"}
# Under the interpreter tl.reduce with a jit combine function runs it once per element in Python (a seed's
# argmin over 20 x 30 values took minutes), so there the seed's reductions are built from tl.max/tl.min,
# made NaN where a NaN was (as Inductor's are, which tl.max alone is not); with_index: the first index of
# the first NaN, else of the extreme, as Inductor's combine keeps it.
_INTERPRETER_HELPERS = {"maximum": "tl.maximum", "minimum": "tl.minimum"}
_INTERPRETER_REDUCTIONS = {f"{fn}2": NAN_EXTREMES[fn].replace(f"def _a{fn}(", f"def _ih_{fn}2(")  # the templates'
                           for fn in ("max", "min")}
_INTERPRETER_REDUCTIONS |= {f"{fn}_with_index": f"""@triton.jit
def _ih_{fn}_with_index(value, index, dim: tl.constexpr):
    nan = value != value
    anynan = tl.max(nan.to(tl.int32), dim) > 0
    best = tl.{fn}(tl.where(nan, {far}, value), dim)
    hit = tl.where(tl.expand_dims(anynan, dim), nan, value == tl.expand_dims(best, dim))
    first = tl.min(tl.where(hit, index, 2147483647), dim)
    return tl.where(anynan, float('nan'), best).to(value.dtype), first.to(index.dtype)"""
    for fn, far in (("max", "float('-inf')"), ("min", "float('inf')"))}
_INTERPRETER_LIBDEVICE = {name: f"@triton.jit\ndef _ih__ld_{name}(x):\n    return {body}" for name, body in {
    "log1p": LOG1P.format(a="x"),  # precise near 0, as the templates' (codegen)
    "expm1": EXPM1.format(a="x"),
    "isnan": "x != x",
    "isinf": "tl.abs(x) == float('inf')",
    "trunc": "tl.where(x >= 0, tl.floor(x), tl.ceil(x))",
}.items()} | {"tanh": TANH_JIT.replace("def _tanh(", "def _ih__ld_tanh(")}  # precise near 0 (codegen)


def _free_names(fn: ast.FunctionDef) -> set[str]:
    bound = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    loads = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            else:
                loads.add(node.id)
    return loads - bound - _BUILTINS


class _Helpers:
    """triton_helpers functions a kernel calls, copied in as `_ih_NAME` with their own dependencies."""

    def __init__(self, interpreter: bool):
        import inspect

        from torch._inductor.runtime import triton_helpers

        tree = ast.parse(inspect.getsource(triton_helpers))
        self.defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.emitted: dict[str, str] = {}
        self.interpreter = interpreter

    def libdevice(self, name: str) -> str:
        """Triton's interpreter has no libdevice (extern calls): tl.math where it has the function, else
        a short tl equivalent. Only the CPU export does this; on the GPU the kernels keep libdevice."""
        if name in _TL_MATH:
            return f"tl.math.{name}"
        if name not in _INTERPRETER_LIBDEVICE:
            raise SeedError(f"libdevice.{name} has no equivalent under Triton's interpreter")
        self.emitted["_ld_" + name] = _INTERPRETER_LIBDEVICE[name]
        return "_ih__ld_" + name

    def use(self, name: str) -> str:
        if name in self.emitted:
            return "_ih_" + name
        if self.interpreter and name in _INTERPRETER_REDUCTIONS:
            self.emitted[name] = _INTERPRETER_REDUCTIONS[name]
            return "_ih_" + name
        fn = self.defs.get(name)
        if fn is None or not any(_dotted(d) == "triton.jit" for d in fn.decorator_list):
            raise SeedError(f"triton_helpers.{name} is not a plain @triton.jit function")
        self.emitted[name] = ""  # placeholder: recursion through mutual helpers ends here
        fn = _Rename(self).visit(ast.parse(ast.unparse(fn)).body[0])
        fn.name = "_ih_" + name
        fn.decorator_list = [ast.parse("triton.jit", mode="eval").body]
        unknown = _free_names(fn) - _KERNEL_GLOBALS - {"_ih_" + n for n in self.emitted}
        if unknown:
            raise SeedError(f"triton_helpers.{name} needs {sorted(unknown)}")
        self.emitted[name] = ast.unparse(ast.fix_missing_locations(fn))
        return "_ih_" + name

    def source(self) -> str:
        return "\n\n\n".join(s for s in self.emitted.values() if s)


class _Rename(ast.NodeTransformer):
    """Inside kernels and helpers: `triton_helpers.f` / a sibling helper `f` → `_ih_f`; `math` → `tl.math`."""

    def __init__(self, helpers: _Helpers, in_kernel: bool = False):
        self.helpers, self.in_kernel = helpers, in_kernel

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name):
            if node.value.id == "triton_helpers" and self.helpers.interpreter and node.attr in _INTERPRETER_HELPERS:
                return ast.copy_location(ast.parse(_INTERPRETER_HELPERS[node.attr], mode="eval").body, node)
            if node.value.id == "triton_helpers":
                return ast.copy_location(ast.Name(self.helpers.use(node.attr), ast.Load()), node)
            if node.value.id == "tl_math":
                return ast.copy_location(ast.parse(f"tl.math.{node.attr}", mode="eval").body, node)
            if node.value.id == "libdevice" and self.helpers.interpreter:
                return ast.copy_location(ast.parse(self.helpers.libdevice(node.attr), mode="eval").body, node)
            if node.value.id == "math" and not self.in_kernel:  # triton_helpers' `math` is tl.math
                return ast.copy_location(ast.parse(f"tl.math.{node.attr}", mode="eval").body, node)
        return self.generic_visit(node)

    def visit_Name(self, node):
        if not self.in_kernel and isinstance(node.ctx, ast.Load) and node.id in self.helpers.defs \
                and node.id not in ("triton", "tl"):
            return ast.copy_location(ast.Name(self.helpers.use(node.id), ast.Load()), node)
        return node


def _kernel_source(name: str, src: str, helpers: _Helpers) -> tuple[str, list[str], set[str]]:
    """(plain @triton.jit source, its parameter names, module names it needs)."""
    tree = ast.parse(src)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if fn is None:
        raise SeedError(f"kernel {name}: no function of that name in its source")
    fn.decorator_list = [ast.parse("triton.jit", mode="eval").body]
    # Combine functions Inductor defines beside the kernel (a scan's `_triton_helper_fn_add0`): copied
    # in, named after their kernel, since the static and dynamic outputs each define their own.
    local = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and n is not fn
             and [_dotted(d) for d in n.decorator_list] == ["triton.jit"]}
    renames = {old: f"_{name}_{old.lstrip('_')}" for old in local.keys() & _free_names(fn)}
    parts = []
    for old, new in sorted(renames.items()):
        helper = _Rename(helpers, in_kernel=True).visit(local[old])
        helper.name = new
        if _free_names(helper) - _KERNEL_GLOBALS - {"_ih_" + n for n in helpers.emitted}:
            raise SeedError(f"kernel {name}: its helper {old} needs more than Triton")
        parts.append(ast.unparse(ast.fix_missing_locations(helper)))
    fn = _Rename(helpers, in_kernel=True).visit(fn)
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id in renames:
            node.id = renames[node.id]
    unknown = _free_names(fn) - _KERNEL_GLOBALS - {"_ih_" + n for n in helpers.emitted} - set(renames.values())
    if unknown:
        raise SeedError(f"kernel {name} needs {sorted(unknown)}")
    needs = _free_names(fn) & {"libdevice"}
    text = "\n\n\n".join([*parts, ast.unparse(ast.fix_missing_locations(fn))])
    return text, [a.arg for a in fn.args.args], needs


def _launcher(name: str, params: list[str], meta: dict, config, constexprs: set[str]) -> tuple[str, list[str]]:
    """A plain launcher for one kernel: Inductor's grid for the chosen config, the config as keywords.

    The grid's block sizes (XBLOCK...) become module-level constants that both the grid and the
    launch read, so a tuning mutation of one stays consistent with the other. A persistent
    reduction's R*_BLOCK (a whole row per block) is passed through a plain local, out of the
    mutations' reach: a smaller one would cut rows short."""
    from torch._inductor.runtime.triton_heuristics import GridExpr, config_to_dict

    inductor_meta = meta["inductor_meta"]
    if inductor_meta.get("extra_launcher_args") or inductor_meta.get("grid_type") in (
            None, "FixedGrid", "PrecomputedGrid", "CooperativeReductionGrid") or "Combo" in str(
            inductor_meta.get("grid_type")):
        raise SeedError(f"kernel {name}: launch grid {inductor_meta.get('grid_type')} is not exported")
    constants = {k: v for k, v in (meta["triton_meta"].get("constants") or {}).items() if isinstance(k, str)}
    keywords = {k: v for k, v in config.kwargs.items() if k in params}
    # A constexpr parameter Inductor fixed is a keyword; a plain one Triton specializes (a size of 1:
    # a scalar output's xnumel) is still passed by the call, and goes on positionally.
    keywords.update({k: v for k, v in constants.items() if k in constexprs and k not in keywords})
    positional = [p for p in params if p not in keywords]
    blocks = {k: v for k, v in keywords.items() if k in ("XBLOCK", "YBLOCK", "ZBLOCK") and isinstance(v, int)}
    try:  # the grid with the block sizes as names
        grid = GridExpr.from_meta(inductor_meta, {**config_to_dict(config), **{k: k for k in blocks}})
    except Exception:  # a grid type that does arithmetic on them: the chosen sizes, fixed
        grid, blocks = GridExpr.from_meta(inductor_meta, config), {}
    persistent = name.startswith("triton_per_") or bool(inductor_meta.get("persistent_reduction"))
    tunables = [f"{name.upper()}_{k} = {v!r}" for k, v in blocks.items()]
    body = [f"{k} = {name.upper()}_{k}" for k in blocks]
    body += [f"{k} = {v!r}" for k, v in constants.items() if k not in positional]  # grid may read them
    body += list(grid.prefix)
    kw = []
    for k, v in keywords.items():
        if k in blocks:
            kw.append(f"{k}={k}")
        elif persistent and re.fullmatch(r"R\d*_?BLOCK", k):
            body.append(f"whole_row_{k.lower()} = {v!r}")
            kw.append(f"{k}=whole_row_{k.lower()}")
        else:
            kw.append(f"{k}={v!r}")
    kw += [f"num_warps={config.num_warps}", f"num_stages={config.num_stages}"]
    body.append(f"{name}[({grid.x_grid}, {grid.y_grid}, {grid.z_grid})]({', '.join(positional + kw)})")
    text = f"def _launch_{name}({', '.join(positional)}):\n" + "\n".join("    " + line for line in body)
    if tunables:
        text = "\n".join(tunables) + "\n\n\n" + text
    return text, positional


_SHIMS = {
    "empty_strided_cpu": 'def empty_strided_cpu(size, stride, dtype):\n'
                         '    return torch.empty_strided(size, stride, dtype=dtype, device="cpu")',
    "empty_strided_cuda": 'def empty_strided_cuda(size, stride, dtype):\n'
                          '    return torch.empty_strided(size, stride, dtype=dtype, device="cuda")',
    # Inductor's reinterpret_tensor: a view of the same storage, its offset counted from the tensor's own.
    "reinterpret_tensor": 'def reinterpret_tensor(t, size, stride, offset):\n'
                          '    return t.as_strided(size, stride, t.storage_offset() + offset)',
    "aten": "aten = torch.ops.aten",
}
_DROP_CALLS = {"assert_size_stride", "assert_alignment", "get_raw_stream", "torch.cuda.set_device",
               "check_tensor_metadata"}


class _CallRewriter(ast.NodeTransformer):
    """Inductor's call(args) → plain code: launches through our launchers, extern kernels as torch ops."""

    def __init__(self, kernels: dict[str, list[str]]):
        self.kernels = kernels

    def _drop(self, node) -> bool:
        value = node.value if isinstance(node, (ast.Expr, ast.Assign)) else None
        return isinstance(value, ast.Call) and _dotted(value.func) in _DROP_CALLS

    def _body(self, stmts: list) -> list:
        out = []
        for s in stmts:
            if self._drop(s):
                continue
            if isinstance(s, ast.With) and all("DeviceGuard" in _dotted(i.context_expr.func)
                                               for i in s.items if isinstance(i.context_expr, ast.Call)):
                out.extend(self._body(s.body))
                continue
            out.append(self.visit(s))
        return out or [ast.Pass()]

    def visit_FunctionDef(self, node):
        node.body = self._body(node.body)
        return node

    def visit_With(self, node):
        node.body = self._body(node.body)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "run" and isinstance(f.value, ast.Name) \
                and f.value.id in self.kernels:
            if any(k.arg != "stream" for k in node.keywords):
                raise SeedError(f"kernel {f.value.id} is launched with {[k.arg for k in node.keywords]}")
            if len(node.args) != len(self.kernels[f.value.id]):
                raise SeedError(f"kernel {f.value.id}: {len(node.args)} launch arguments for "
                                f"{len(self.kernels[f.value.id])} parameters")
            return ast.copy_location(ast.Call(ast.Name(f"_launch_{f.value.id}", ast.Load()), node.args, []), node)
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "extern_kernels":
            import torch

            if not hasattr(torch, f.attr):
                raise SeedError(f"extern kernel {f.attr} has no torch equivalent")
            node.func = ast.copy_location(ast.parse(f"torch.{f.attr}", mode="eval").body, f)
        return node


def _call_source(call: ast.FunctionDef, kernels: dict[str, list[str]],
                 name: str = "_inductor_call") -> tuple[str, int, set[str]]:
    """(module-level `name(args)` source, number of outputs, shims it needs)."""
    call = _CallRewriter(kernels).visit(ast.parse(ast.unparse(call)).body[0])
    call.name = name
    call.args.args = [a for a in call.args.args if a.arg != "self"]
    returns = [n for n in ast.walk(call) if isinstance(n, ast.Return)]
    if len(returns) != 1 or not isinstance(returns[0].value, (ast.Tuple, ast.List)):
        raise SeedError("call() does not end in one tuple of outputs")
    allowed = {"torch", "math"} | set(_SHIMS) | {f"_launch_{k}" for k in kernels}
    unknown = _free_names(call) - allowed
    if unknown:
        raise SeedError(f"call() needs {sorted(unknown)}")
    return ast.unparse(ast.fix_missing_locations(call)), len(returns[0].value.elts), _free_names(call) & set(_SHIMS)


def export_source(problem_path: str, device: str) -> tuple[str, str]:
    """(candidate source, notes) for the problem; SeedError when Inductor's output cannot be exported.

    Two of Inductor's outputs, as torch.compile itself behaves: kernels specialized to the shape the
    harness times (persistent reductions, sizes folded in) run when every input has that shape and
    stride; the dynamic-shape kernels run at any other shape, or, where the dynamic compile fixed a
    size or failed, the problem's first template."""
    from kevolve.tools.problem import load_problem, shapes_for, shrink_shape

    prob = load_problem(problem_path)
    helpers = _Helpers(interpreter=device == "cpu")
    dynamic, parts, pinned = None, None, None
    try:
        dynamic = _run_inductor(problem_path, device, shrink_shape(prob, 1 << 14) if device == "cpu" else {})
        parts = _variant(dynamic, "", helpers, device)
    except SeedError as e:  # a fixed size (a conv's channels), or a failure: the static kernels at the timed
        dynamic, pinned = None, e  # shape and a template's at any other may still make a seed (below)
    static, parts_static, static_note = None, None, ""
    if any(v > _SMALL_CONSTANT for v in prob.constants.values()):  # else the dynamic compile was static already
        try:
            static = _run_inductor(problem_path, device, shapes_for(prob, device)[0], dynamic=False)
            parts_static = _variant(static, "_static", helpers, device)
        except Exception as e:  # the dynamic kernels alone still make a seed
            if dynamic is None:
                raise SeedError(f"{pinned}, and the static compile failed: {_first_line(e)}") from None
            static, static_note = None, f"; no shape-specialized kernels ({_first_line(e)})"
    source, notes = _assemble(problem_path, helpers, dynamic, parts, static, parts_static, pinned, static_note)
    if dynamic is not None:
        # Inductor may fold a value made from a size into a constant with no guard (1/sqrt(head_dim) in
        # nn.MultiheadAttention): the dynamic kernels then hold at the compiled shape only. They are run
        # once where the harness runs them, and where they are wrong, a template takes those shapes.
        wrong = _dynamic_kernels_wrong(problem_path, source, device)
        if wrong:
            pinned = SeedError(f"its dynamic-shape kernels are wrong at another shape ({wrong})")
            if static is None:
                raise pinned
            source, notes = _assemble(problem_path, helpers, None, None, static, parts_static, pinned, "")
    return source, notes


def _assemble(problem_path: str, helpers: _Helpers, dynamic: _Compiled | None, parts, static: _Compiled | None,
              parts_static, pinned: SeedError | None, static_note: str) -> tuple[str, str]:
    """The candidate file from the dynamic and static outputs there are: the static kernels at the timed
    shape, the dynamic ones elsewhere, or where there are none, the problem's first template."""
    import torch

    from .codegen import model_init_source

    problem_source = Path(problem_path).read_text()
    prelude, init, sig = model_init_source(problem_source)
    fargs = ast.parse(f"def f({sig}): pass").body[0].args
    if {a.arg for a in fargs.args} & {"_outs", "_args"}:
        raise SeedError("forward has an argument named _outs or _args")
    ref_type = (dynamic or static).ref_type
    outs = "_outs[0]" if ref_type not in ("tuple", "list") else f"{ref_type}(_outs)"
    general = ""
    if static is None:
        if dynamic is None:  # no size constants: nothing to be static about
            raise pinned
        body = [f"            _outs = _inductor_call([{', '.join(_source_expr(n, t) for n, t in dynamic.inputs)}])"]
        guard = ""
    else:
        args = f"_args = [{', '.join(_source_expr(n, t) for n, t in static.inputs)}]"
        if dynamic is None:
            general, strategy = _general_template(problem_path, problem_source, pinned)
            static_note = f"; at other shapes the {strategy} template ({pinned})"
            body = [f"            {args}",
                    "            if not _at_static_shape(_args):  # a shape the static kernels do not fit",
                    f"                return _GeneralModel.forward({_call_args(fargs)})",
                    "            _outs = _inductor_call_static(_args)"]
            parts = parts_static
        else:
            call = f"_inductor_call([{', '.join(_source_expr(n, t) for n, t in dynamic.inputs)}])"
            body = [f"            {args}",
                    f"            _outs = _inductor_call_static(_args) if _at_static_shape(_args) else {call}"]
            parts = [p | q if isinstance(p, set) else p + q for p, q in zip(parts, parts_static)]
        guard = ("# Shape and stride of each tensor the specialized kernels were compiled for (None: not a tensor)\n"
                 f"_STATIC_LAYOUT = {static.examples!r}\n\n\n"
                 "def _at_static_shape(args):\n"
                 "    return all(layout is None or (tuple(a.shape), a.stride()) == layout\n"
                 "               for a, layout in zip(args, _STATIC_LAYOUT))")
    kernel_parts, launchers, calls, needs, shims, names = parts

    header = ["import math", "import torch", "import torch.nn as nn", "import triton", "import triton.language as tl"]
    if "libdevice" in needs or "libdevice" in helpers.source():
        header.append("from triton.language.extra import libdevice")
    prelude = "\n".join(line for line in prelude.split("\n") if line.strip() not in header)
    shapes = "at its timed shape and " + ("dynamic shapes" if dynamic else "a template's kernels at any other shape")
    doc = (f'"""kevolve compiler seed: the Triton kernels torch.compile (Inductor, torch {torch.__version__}) '
           f'generated for this problem\n{shapes if static else "with dynamic shapes"}, '
           f'exported with plain launchers; no torch.compile at run time."""')
    forward = "\n".join([f"    def forward({sig}):",
                         "        with torch.no_grad():  # extern ops write into out= buffers; weights need no grad",
                         *body, f"        return {outs}"])
    model = "class ModelNew(nn.Module):\n" + "\n".join(
        "    " + line if line else "" for line in init.rstrip().split("\n")) + "\n\n" + forward
    parts = [doc, "\n".join(header), prelude, helpers.source(), *kernel_parts, *launchers,
             *(_SHIMS[s] for s in sorted(shims)), *calls, guard, model]
    source = "\n\n\n".join(p.strip("\n") for p in parts if p.strip()) + "\n"
    if general:
        clash = (_top_level_names(source) & _top_level_names(general)) - _top_level_names(problem_source)
        if clash:
            raise SeedError(f"{pinned}, and the template for other shapes reuses the names {sorted(clash)[:3]}")
        source = source.rstrip("\n") + f"\n\n\n{UNTUNED_MARK}\n" + general
    notes = f"{len(names)} Inductor kernel(s): {', '.join(names)}{static_note}"
    return source, notes


def _dynamic_kernels_wrong(problem_path: str, source: str, device: str) -> str | None:
    """Where the exported file's output is off from the problem's own at the harness's other shapes
    (where the dynamic kernels run): the shape and how far, else None. The tolerance is TF32's: this
    looks for a size baked in, which is far off, not for rounding, which the harness judges."""
    import torch

    from kevolve.tools.compare import compare_outputs
    from kevolve.tools.problem import constants_at, instantiate, load_module, load_problem, shapes_for
    from kevolve.tools.trials import as_output_list

    prob = load_problem(problem_path)
    held = contextlib.ExitStack()
    if device == "cuda":  # a bench's other sessions may be timing on this GPU
        from kevolve.tools.evaluate import default_cache_dir
        from kevolve.tools.gpu_lock import gpu_identity, gpu_lock

        held.enter_context(gpu_lock(default_cache_dir(), gpu_identity()))
    with held, tempfile.TemporaryDirectory(prefix="kevolve-seed-check-") as tmp:
        path = Path(tmp) / "seed_check.py"
        path.write_text(source)
        module = load_module(path, "kevolve_seed_check")
        for shape in shapes_for(prob, device)[1:]:
            inst = instantiate(prob, shape, seed=0)
            try:
                with torch.device(device), constants_at(module, prob, shape):
                    model = module.ModelNew(*inst.init_inputs).eval()
                model.load_state_dict(inst.model.state_dict())
                inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inst.inputs]
                with torch.no_grad():
                    got, want = as_output_list(model(*inputs)), as_output_list(inst.model.to(device)(*inputs))
            except Exception as e:
                return f"{shape}: {_first_line(e)}"
            check = compare_outputs(got, want, None, "tf32")
            if not check.passed:
                return f"{shape}: {check.detail}"
    return None


def _general_template(problem_path: str, problem_source: str, why: SeedError) -> tuple[str, str]:
    """(source, strategy) of the problem's first template candidate, as the seed's path for shapes
    its static kernels do not fit: without the imports and the problem's own definitions (the seed
    has them), its ModelNew renamed _GeneralModel; comments and decorators kept."""
    from . import propose_candidates

    props = propose_candidates(problem_path)
    if not props:
        raise SeedError(f"{why}, and no template covers the problem at other shapes")
    source = props[0].source
    lines = source.split("\n")
    own = _top_level_names(problem_source)
    keep: list[str] = []
    after_constant = False
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Expr) and isinstance(
                node.value, ast.Constant)) or (_names_defined(node) and _names_defined(node) <= own):
            continue
        start = min([d.lineno for d in getattr(node, "decorator_list", [])] + [node.lineno])
        text = "\n".join(lines[start - 1:node.end_lineno])
        if isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            text = text.replace("class ModelNew(", "class _GeneralModel(", 1)
        constant = isinstance(node, ast.Assign)
        if constant and after_constant:  # a block of constants stays one block
            keep[-1] += "\n" + text
        else:
            keep.append(text)
        after_constant = constant
    return "\n\n\n".join(keep) + "\n", props[0].strategy


def _names_defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _top_level_names(source: str) -> set[str]:
    return {name for node in ast.parse(source).body for name in _names_defined(node)}


def _call_args(fargs: ast.arguments) -> str:
    """`self, x, y, *rest, **kw`: forward's own arguments passed on, as its signature names them."""
    parts = [a.arg for a in fargs.posonlyargs + fargs.args]
    if fargs.vararg:
        parts.append("*" + fargs.vararg.arg)
    parts += [f"{a.arg}={a.arg}" for a in fargs.kwonlyargs]
    if fargs.kwarg:
        parts.append("**" + fargs.kwarg.arg)
    return ", ".join(parts)


def _variant(compiled: _Compiled, suffix: str, helpers: _Helpers,
             device: str) -> tuple[list, list, list, set, set, list]:
    """One Inductor output as (kernels, launchers, [its call function], needs, shims, kernel names); its
    kernels and call function carry `suffix` so two outputs fit in one file."""
    code = compiled.code
    if suffix:
        for name in _kernels(code)[0]:
            code = re.sub(rf"\b{name}\b", name + suffix, code)
    kernel_srcs, call = _kernels(code)
    if not kernel_srcs:
        raise SeedError("Inductor generated no Triton kernel (only library calls)")
    kernel_parts, launchers, params_of, needs = [], [], {}, set()
    for name, src in kernel_srcs.items():
        text, params, need = _kernel_source(name, src, helpers)
        meta = _kernel_meta(name, src)
        config = _tuned_config(compiled.module, name.removesuffix(suffix)) or _pick_config(meta, device, src)
        launch, positional = _launcher(name, params, meta, config, _constexpr_params(src))
        kernel_parts.append(text)
        launchers.append(launch)
        params_of[name] = positional
        needs |= need
    call_text, n_call_out, shims = _call_source(call, params_of, "_inductor_call" + suffix)
    if n_call_out != compiled.n_out:
        raise SeedError(f"call() returns {n_call_out} outputs, the module {compiled.n_out}")
    return kernel_parts, launchers, [call_text], needs, shims, list(kernel_srcs)


def main(argv: list[str] | None = None) -> int:
    problem, device, out = (argv or sys.argv[1:])[:3]
    try:
        source, notes = export_source(problem, device)
        result = {"source": source, "notes": notes}
    except SeedError as e:
        result = {"error": str(e)}
    except Exception as e:  # Inductor's own failures: a reason, never a traceback to the session
        result = {"error": _first_line(e)}
    Path(out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
