"""Trials: which shapes, seeds and input distributions a candidate is checked on.

Both the trusted harness and the worker build a trial's model and inputs from its description
(shape, seed, distribution), so no input tensor crosses the process boundary: the same seeded RNG
(CPU, or the GPU's Philox generator when the trial is built there) gives both sides the same
numbers. On a GPU everything is drawn on the device: drawing 16M numbers on the CPU and copying
them over costs more than the rest of an evaluation. Each trial has its own seed, so weights vary with the inputs
(EVAL.md item 10), and the distributions differ so that an op that is the identity on the
problem's own inputs (ReLU on [0, 1)) is caught (item 9).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .problem import Problem, ProblemInstance

# "problem" keeps get_inputs() as written; the others redraw every floating-point input.
DISTRIBUTIONS = ("problem", "uniform_signed", "large", "small", "normal")


@dataclass(frozen=True)
class Trial:
    index: int
    shape: dict
    seed: int
    distribution: str
    timed: bool = False  # the trial whose outputs come from the timed runs

    def to_dict(self) -> dict:
        return asdict(self)


def plan_trials(shapes: list[dict], base_seed: int, timed: bool) -> list[Trial]:
    """Four distributions at the first shape, two at each other shape, plus a timed trial."""
    trials: list[Trial] = []
    for s, shape in enumerate(shapes):
        kinds = ("problem", "uniform_signed", "large", "small") if s == 0 else ("problem", "normal")
        for kind in kinds:
            trials.append(Trial(len(trials), shape, base_seed + 7919 * len(trials), kind))
    if timed:
        trials.append(Trial(len(trials), shapes[0], base_seed + 7919 * len(trials), "problem", timed=True))
    return trials


def _redraw(x: torch.Tensor, distribution: str, generator: torch.Generator) -> torch.Tensor:
    if not x.is_floating_point() or distribution == "problem":
        return x
    where = {"generator": generator, "dtype": torch.float32, "device": generator.device}
    normal = torch.randn(x.shape, **where)
    if distribution == "uniform_signed":
        values = torch.rand(x.shape, **where) * 4.0 - 2.0
    elif distribution == "large":
        values = normal * 10.0
    elif distribution == "small":
        values = normal * 1e-2
    else:
        values = normal
    return values.to(x.device, x.dtype)


def set_math_precision(precision: str) -> None:
    """TF32 in cuBLAS and cuDNN only where `precision` allows it. The reference always computes
    with it off ("fp32"): a TF32 reference would pass TF32 candidates and fail honest fp32 ones
    (EVAL.md item 8). A candidate's worker runs under the session's --precision, so a library call
    it makes (F.conv2d: torch leaves cuDNN's TF32 on by default) computes as the user allowed."""
    allow = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def build_trial(problem: Problem, trial: Trial, device: str = "cpu") -> ProblemInstance:
    """The reference model and inputs of one trial, built on `device` (identical in every process).

    Tensors the problem creates without naming a device land on `device`; the model and inputs
    are then moved there in case the problem named the CPU explicitly."""
    with torch.device(device):
        instance = problem.instantiate(trial.shape, seed=trial.seed)
    generator = torch.Generator(device=device).manual_seed(trial.seed + 1)
    instance.inputs = [_redraw(x.to(device), trial.distribution, generator) if isinstance(x, torch.Tensor) else x
                       for x in instance.inputs]
    instance.model = instance.model.to(device)
    return instance


def as_output_list(out) -> list:
    """A forward's result as a list: a tensor → [tensor]; tuples and lists are flattened one level."""
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]
