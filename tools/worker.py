"""The worker: runs one candidate in its own process (`python -m kevolve.tools.worker`).

Started by kevolve.tools.sandbox with a clean environment in a fresh temporary folder. It
imports torch (and sets up the GPU) before any job arrives, says `ready` on its message pipe,
then reads one job folder from stdin, runs the stages below, writes result.json and the
outputs there, and exits. Nothing here compares against the reference: that happens in the
trusted harness process, which only reads what this process wrote.

Stages: import (CUDA C++ builds here) → build (ModelNew + the reference's weights) → compile
(first forward: Triton compiles here) → gpu_wait (GPU only: the GPU's lock, kevolve.tools.gpu_lock,
held to the end) → correctness (every trial) → kernels (which kernels ran, on which streams) →
timing (GPU only; the timed trial's outputs come from the timed runs).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from .cuda_compile import CudaBuildError, CudaNotRunnable, make_load_inline
from .gpu_lock import gpu_identity, gpu_lock
from .problem import constants_at, load_module, load_problem
from .sandbox import cap_address_space
from .static_checks import check_source
from .timing import l2_flush_buffer, time_cuda
from .trials import Trial, as_output_list, build_trial, set_math_precision


class StageError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def _send(channel, **message) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


# -- launch accounting -------------------------------------------------------------------------

def _count_interpreter_launches(counts: dict[str, int]) -> None:
    """Under TRITON_INTERPRET=1 there is no device trace: count launches of each @triton.jit."""
    from triton.runtime.interpreter import InterpretedFunction

    original = InterpretedFunction.run

    def run(self, *args, **kwargs):
        if not kwargs.get("warmup"):
            counts[self.fn.__name__] = counts.get(self.fn.__name__, 0) + 1
        return original(self, *args, **kwargs)

    InterpretedFunction.run = run


def _device_kernels(fn, workdir: Path) -> tuple[list[dict], bool]:
    """Kernels `fn` launched on the GPU (name, stream, duration) from a profiler trace, and whether
    any ran off the current stream. A marker kernel launched first names the current stream."""
    from torch.profiler import ProfilerActivity, profile

    marker = torch.zeros(1, device="cuda")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        marker.add_(1)
        fn()
        torch.cuda.synchronize()
    path = workdir / "trace.json"
    prof.export_chrome_trace(str(path))
    events = sorted((e for e in json.loads(path.read_text()).get("traceEvents", []) if e.get("cat") == "kernel"),
                    key=lambda e: e.get("ts", 0))
    path.unlink()
    if not events:
        return [], False
    current = events[0].get("args", {}).get("stream")
    kernels = [{"name": e["name"], "stream": e.get("args", {}).get("stream"), "us": e.get("dur", 0)}
               for e in events[1:]]
    return kernels, any(k["stream"] != current for k in kernels)


# -- output facts (EVAL.md items 2 and 7) -------------------------------------------------------

def _storage_span(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.data_ptr() + storage.nbytes()


def check_outputs(outputs: list, inputs: list, params: list[torch.Tensor], device: str) -> str | None:
    """A reason to reject the outputs as objects, or None. Values are judged elsewhere."""
    for i, out in enumerate(outputs):
        if type(out) is not torch.Tensor:
            return f"output {i} is a {type(out).__module__}.{type(out).__name__}, not a plain torch.Tensor"
        if out.device.type != device or out.is_meta:
            return f"output {i} is on {out.device}, expected {device}"
        try:
            lo, hi = _storage_span(out)
        except Exception as e:  # tensors without real storage raise here
            return f"output {i} has no real storage ({type(e).__name__})"
        for j, x in enumerate(inputs):
            if isinstance(x, torch.Tensor) and x.device == out.device:
                xlo, xhi = _storage_span(x)
                if lo < xhi and xlo < hi:
                    return f"output {i} shares memory with input {j} (returns or writes into an input)"
        for p in params:
            if p.device == out.device:
                plo, phi = _storage_span(p)
                if lo < phi and plo < hi:
                    return f"output {i} shares memory with a parameter"
    return None


# -- the stages -------------------------------------------------------------------------------

def _locate_error(exc: BaseException, candidate: Path, source: str) -> str:
    """'candidate.py:LINE: message' pointing at the candidate's own line where one can be found."""
    name = candidate.name
    try:
        from triton.compiler.errors import CompilationError
    except ImportError:  # pragma: no cover
        CompilationError = ()  # noqa: N806
    if CompilationError and isinstance(exc, CompilationError) and exc.src and hasattr(exc.node, "lineno"):
        first = exc.src.strip().splitlines()[0].strip()
        offset = next((i for i, line in enumerate(source.splitlines()) if line.strip() == first), None)
        message = (exc.error_message or str(exc).splitlines()[-1]).strip().splitlines()[-1]
        if offset is not None:
            return f"{name}:{offset + exc.node.lineno}: {message}"
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(candidate):
            line = frame.lineno
    text = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {text[-1] if text else ''}".strip()
    if "Interpreter" in type(exc).__name__ and exc.__cause__ is not None:
        return _locate_error(exc.__cause__, candidate, source)
    return f"{name}:{line}: {message}" if line else message


def _classify(exc: BaseException, stage: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in text or isinstance(exc, MemoryError):
        return "runtime_error"
    if "illegal memory access" in text or "device-side assert" in text or "unspecified launch failure" in text:
        return "crashed"
    if stage in ("import", "compile"):
        names = {type(e).__name__ for e in _chain(exc)}
        if names & {"CompilationError", "SyntaxError", "CudaBuildError", "UnsupportedLanguageConstruct"}:
            return "compile_error"
        if stage == "compile" and _raised_in_kernel(exc):
            return "compile_error"
    return "runtime_error"


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def _raised_in_kernel(exc: BaseException) -> bool:
    """Under the interpreter a kernel's type errors surface as Python errors inside its body."""
    return any("Interpreter" in type(e).__name__ or "triton" in type(e).__module__ for e in _chain(exc))


def _load_weights(model: torch.nn.Module, state_dict: dict) -> None:
    hook = getattr(model, "load_reference_state", None)
    if callable(hook):
        hook(state_dict)
        return
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise StageError("runtime_error", f"the reference's weights do not load into ModelNew ({detail}); "
                         "keep Model's parameter names or define load_reference_state(self, state_dict)") from None


def run_job(job: dict, job_dir: Path, channel) -> dict:
    device = job["device"]
    candidate = job_dir / "candidate.py"
    source = candidate.read_text()
    own = check_source(source).kernel_names
    result: dict = {"stage": "import", "outputs": {}, "checks": [], "launches": {}, "device_kernels": []}
    threads_before = {t.ident for t in threading.enumerate()}
    launches: dict[str, int] = {}
    if device == "cpu":
        _count_interpreter_launches(launches)
    cache = Path(job["cache_dir"])
    # The candidate's `from torch.utils.cpp_extension import load_inline` gets this one:
    # builds are keyed by source hash, and without a GPU it stops after an nvcc check.
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension.load_inline = make_load_inline(cpp_extension.load_inline, cache, device, source)

    def stage(name: str) -> None:
        result["stage"] = name
        _send(channel, event="stage", stage=name)

    problem = load_problem(job["problem"])
    trials = [Trial(**t) for t in job["trials"]]
    set_math_precision(job["precision"])
    held = contextlib.ExitStack()  # the GPU lock (GPU only), from the correctness stage to the end
    try:
        stage("import")
        module = load_module(candidate, "kevolve_candidate_" + hashlib.sha1(source.encode()).hexdigest()[:10])
        model_cls = getattr(module, "ModelNew", None)
        if not isinstance(model_cls, type) or not issubclass(model_cls, torch.nn.Module):
            raise StageError("runtime_error", "the candidate defines no ModelNew(nn.Module)")

        def build(trial: Trial):
            instance = build_trial(problem, trial, device)
            with torch.device(device), constants_at(module, problem, trial.shape):
                model = model_cls(*instance.init_inputs)
            _load_weights(model, instance.model.state_dict())
            return model.to(device).eval(), instance.inputs

        stage("build")
        # The first call (Triton compiles here) gets inputs of its own: freed copies of a trial's
        # inputs would hand a later allocation the answer to an op like ReLU (EVAL.md item 1).
        first = trials[0]
        warm_model, warm_inputs = build(Trial(-1, first.shape, first.seed + 104729, "normal"))
        stage("compile")
        with torch.no_grad():
            warm_model(*warm_inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        del warm_model, warm_inputs

        if device == "cuda":
            # Compiles run beside other candidates; what runs on the GPU from here on does not, so
            # another candidate's timing is never disturbed (the lock is this GPU's, machine-wide).
            stage("gpu_wait")
            held.enter_context(gpu_lock(cache, gpu_identity()))
        stage("correctness")
        # where this stage's time goes, summed over trials (the one-more-candidate latency budget)
        split = result["correctness_seconds"] = {"build": 0.0, "forward": 0.0, "checks": 0.0, "save": 0.0}
        for trial in trials:
            if trial.timed:
                continue
            mark = time.perf_counter()
            model, inputs = build(trial)
            pristine = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
            mark = _lap(split, "build", mark, device)
            with torch.no_grad():
                outputs = as_output_list(model(*inputs))
            mark = _lap(split, "forward", mark, device)
            reason = check_outputs(outputs, inputs, list(model.parameters()) + list(model.buffers()), device)
            if reason is None:
                for j, (x, y) in enumerate(zip(inputs, pristine)):
                    if isinstance(x, torch.Tensor) and not torch.equal(x, y):
                        reason = f"input {j} was modified in place"
            if reason:
                raise StageError("rejected", f"trial {trial.index} ({trial.distribution}): {reason}")
            mark = _lap(split, "checks", mark, device)
            path = job_dir / f"out_{trial.index}.pt"
            torch.save([o.detach().cpu() for o in outputs], path)
            result["outputs"][str(trial.index)] = path.name
            _lap(split, "save", mark, device)

        timed = [t for t in trials if t.timed]
        if device == "cuda" and timed:
            stage("kernels")
            model, inputs = build(timed[0])
            with torch.no_grad():
                kernels, side_streams = _device_kernels(lambda: model(*inputs), job_dir)
            result["device_kernels"] = kernels
            stage("timing")
            holder: list = []

            def forward():
                holder[:] = [model(*inputs)]

            with torch.no_grad():
                timing = time_cuda(forward, flush=l2_flush_buffer(), sync_all=side_streams)
            # No synchronize before saving: work left on a side stream shows up as a wrong output.
            outputs = as_output_list(holder[0])
            reason = check_outputs(outputs, inputs, list(model.parameters()), device)
            if reason:
                raise StageError("rejected", f"timed runs: {reason}")
            path = job_dir / f"out_{timed[0].index}.pt"
            torch.save([o.detach().cpu() for o in outputs], path)
            result["outputs"][str(timed[0].index)] = path.name
            result["timing"] = timing.to_dict()
        stage("done")
    except CudaNotRunnable as e:
        result.update(status="unverified", error=str(e))
    except StageError as e:
        result.update(status=e.status, error=str(e))
    except BaseException as e:  # noqa: BLE001 - every failure of candidate code is a result
        status = _classify(e, result["stage"])
        where = str(e) if isinstance(e, CudaBuildError) else _locate_error(e, candidate, source)
        if "can't allocate memory" in str(e) or isinstance(e, (torch.OutOfMemoryError, MemoryError)):
            where = f"out of memory: {str(e).strip().splitlines()[0][:200]}"
        result.update(status=status, error=where, traceback=traceback.format_exc(limit=-8)[-4000:])
    else:
        result["status"] = "ok"
    finally:
        held.close()
    result["launches"] = launches
    extra = [t.name for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    if extra and result.get("status") == "ok":
        result.update(status="rejected", error=f"the candidate left background threads running: {extra}")
    result["own_kernels"] = own
    return result


def run_profile(job: dict, job_dir: Path, torch_profiler: bool = False) -> None:
    """For Nsight Compute: warm up, then run the forward `repeat` times inside the NVTX range
    `kevolve_profile`, so the profiler sees the candidate's kernels and not its autotuning.
    With `torch_profiler` (no ncu here), write torch.profiler kernel times instead."""
    problem = load_problem(job["problem"])
    set_math_precision(job["precision"])
    source = (job_dir / "candidate.py").read_text()
    # The same hashed CUDA build as the evaluation's, so a profile never recompiles.
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension.load_inline = make_load_inline(cpp_extension.load_inline, Path(job["cache_dir"]), "cuda", source)
    module = load_module(job_dir / "candidate.py", "kevolve_candidate_profiled")
    trial = Trial(**job["trials"][0])
    instance = build_trial(problem, trial, "cuda")
    with torch.device("cuda"):
        model = module.ModelNew(*instance.init_inputs)
    _load_weights(model, instance.model.state_dict())
    model = model.to("cuda").eval()
    inputs = instance.inputs
    with torch.no_grad(), contextlib.ExitStack() as held:
        model(*inputs)  # Triton compiles here: CPU work, before the GPU's lock
        torch.cuda.synchronize()
        # Only what runs on the GPU holds its lock, not the profiler's start-up or its report.
        held.enter_context(gpu_lock(Path(job["cache_dir"]), gpu_identity()))
        for _ in range(2):
            model(*inputs)
        torch.cuda.synchronize()
        if torch_profiler:
            from kevolve.profiling import kernel_times_with_torch_profiler

            names = check_source((job_dir / "candidate.py").read_text()).kernel_names
            times = kernel_times_with_torch_profiler(lambda: model(*inputs), names, repeats=10)
            (job_dir / "kernel_times.json").write_text(json.dumps([t.__dict__ for t in times]))
            return
        torch.cuda.nvtx.range_push("kevolve_profile")
        for _ in range(job.get("repeat", 1)):
            model(*inputs)
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()


def _lap(split: dict, key: str, since: float, device: str) -> float:
    """Add the seconds since `since` (GPU work finished) to split[key]; return now."""
    if device == "cuda":
        torch.cuda.synchronize()
    now = time.perf_counter()
    split[key] = round(split[key] + now - since, 4)
    return now


def _die_with_parent() -> None:
    """End this worker when the process that started it dies (a Ray worker lost mid-task, a harness
    killed with SIGKILL): an orphaned candidate must not keep running or hold a GPU lock. A polling
    thread, not PR_SET_PDEATHSIG, which fires when the starting *thread* ends, not the process."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="kevolve-parent-watch", daemon=True).start()


def _prepare(device: str, memory_bytes: int) -> None:
    if device == "cuda":
        torch.cuda.init()
        torch.empty(1, device="cuda").add_(1)
        # The host-memory cap does not bound GPU memory; leave a tenth of the card to others.
        torch.cuda.set_per_process_memory_fraction(0.9)
        # The profiler's first start costs seconds; pay it before a job arrives.
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]):
            torch.empty(1, device="cuda").add_(1)
            torch.cuda.synchronize()
    else:
        import triton  # noqa: F401  (imported before the cap: its import maps a lot of memory)

        if memory_bytes:
            cap_address_space(memory_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kevolve-worker")
    parser.add_argument("--fd", type=int, help="message pipe to the harness")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-bytes", type=int, default=0)
    parser.add_argument("--profile", help="run a job folder for a profiler and exit")
    parser.add_argument("--torch-profiler", action="store_true", help="with --profile: torch.profiler times")
    args = parser.parse_args(argv)
    if args.profile:
        job_dir = Path(args.profile)
        run_profile(json.loads((job_dir / "job.json").read_text()), job_dir, args.torch_profiler)
        return 0
    channel = os.fdopen(args.fd, "w") if args.fd else sys.stderr
    _die_with_parent()
    _prepare(args.device, args.memory_bytes)
    _send(channel, event="ready", pid=os.getpid())
    line = sys.stdin.readline().strip()
    if not line:
        return 0
    job_dir = Path(line)
    started = time.perf_counter()
    result = run_job(json.loads((job_dir / "job.json").read_text()), job_dir, channel)
    result["worker_seconds"] = round(time.perf_counter() - started, 3)
    (job_dir / "result.json").write_text(json.dumps(result))
    _send(channel, event="done")
    channel.close()
    sys.stdout.flush()
    # Skip interpreter teardown: a candidate's atexit hooks or CUDA teardown have nothing to add.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
