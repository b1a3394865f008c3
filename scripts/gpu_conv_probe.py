"""Where a convolution problem's time goes, per candidate (GPU; about 30 s per problem).

    python scripts/gpu_conv_probe.py [problem.py ...]   (default: the suite's convolution problems)

For each problem this times, side by side with the harness's timer (L2 flushed): eager; its first
convolution alone (for a 2-D one also with channels-last input, converted each call or not); every
template candidate (cuDNN + tail, the implicit-GEMM kernels in IEEE fp32 and 3xTF32, both layouts);
torch.compile. Then it lists the kernels the templates and torch.compile launch (torch.profiler), so a
gap shows as a kernel: a layout copy, a slower cuDNN algorithm, a tail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from kevolve.builtin import propose_candidates
from kevolve.tools.problem import instantiate, load_problem, shapes_for
from kevolve.tools.timing import l2_flush_buffer, time_cuda

ROOT = Path(__file__).resolve().parent.parent
CONV_PROBLEMS = ["conv_relu", "conv_bn_silu", "bf16_conv_gelu", "conv_transpose3d_scale_relu", "conv_softmax_channels",
                 "conv_relu_maxpool", "depthwise_conv_bn_relu6", "conv_transpose3d_maxpools_sum",
                 "conv_transpose1d_gelu_channel_norm"]
_CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
          torch.nn.ConvTranspose3d)


def _kernels(fn) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [(e.key[:90], e.device_time_total / 1e3) for e in prof.key_averages() if e.device_time_total > 0]


def probe(path: Path) -> None:
    prob = load_problem(path)
    with torch.device("cuda"):
        inst = instantiate(prob, shapes_for(prob, "cuda")[0], seed=0)
    model, inputs = inst.model.cuda().eval(), [x.cuda() for x in inst.inputs]
    conv = next(m for m in model.modules() if isinstance(m, _CONVS))
    x = inputs[0]
    flush = l2_flush_buffer()
    rows: list[tuple[str, object]] = [("eager", lambda: model(*inputs)), (f"{type(conv).__name__} alone",
                                                                           lambda: conv(x))]
    if type(conv) is torch.nn.Conv2d:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        rows += [("conv, input to channels-last each call",
                  lambda: conv(x.contiguous(memory_format=torch.channels_last))),
                 ("conv, channels-last input", lambda: conv(x_cl))]
    templates = {}
    for p in propose_candidates(path):
        ns: dict = {}
        exec(compile(p.source, f"{path.stem}_{p.strategy}.py", "exec"), ns)
        with torch.device("cuda"):
            candidate = ns["ModelNew"](*inst.init_inputs)
        candidate.load_state_dict(model.state_dict())
        candidate = candidate.cuda().eval()
        templates[p.strategy] = candidate
        rows.append((f"template {p.strategy}", lambda c=candidate: c(*inputs)))
    compiled = torch.compile(model)
    rows.append(("torch.compile", lambda: compiled(*inputs)))
    print(f"\n== {path.stem}  input {tuple(x.shape)} {x.dtype}")
    with torch.no_grad():
        ref = model(*inputs).float()
        for name, fn in rows:
            t = time_cuda(fn, flush=flush)
            # a template's error against eager, so a fast wrong kernel cannot pass for a fast one
            err = f"  max error {(fn().float() - ref).abs().max().item():.1e}" if name.startswith("template") else ""
            print(f"  {name:45s} {t.median_ms:8.4f} ms  (spread {t.spread:.1%}){err}", flush=True)
        for name, fn in [(f"template {s}", lambda c=c: c(*inputs)) for s, c in templates.items()] + [
                ("torch.compile", lambda: compiled(*inputs))]:
            print(f"  kernels of {name}:")
            for kernel, ms in _kernels(fn):
                print(f"    {ms:8.4f} ms  {kernel}")


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or [ROOT / "benchmarks/problems" / f"{n}.py" for n in CONV_PROBLEMS]
    torch.backends.cudnn.allow_tf32 = False  # as the harness computes fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    for path in paths:
        probe(path)


if __name__ == "__main__":
    main()
