"""From an exported module's ATen graph back to the torch functions the lowering knows.

A module object handed to kevolve.optimize whose class source Python cannot find (a notebook's,
say) is saved with torch.export, and its Model is then an fx.GraphModule of `torch.ops.aten.*`
calls. Most of those ops are the same function as `torch.X` or `F.X` under the same name and with
the same positional arguments (both are generated from one schema), so each node's target is
swapped for that function; ops without such a twin stay ATen calls and are left to PyTorch.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn.functional as F

# ATen name → the function the lowering recognises, with the most positional arguments it takes
# (an ATen call with more keeps its ATen target).
_TWINS: dict[str, tuple] = {
    **{name: (getattr(torch, name), 3) for name in (
        "add", "sub", "mul", "div", "maximum", "minimum", "gt", "lt", "ge", "le", "eq", "relu", "sigmoid",
        "tanh", "exp", "log", "abs", "sqrt", "rsqrt", "neg", "square", "reciprocal", "erf", "clamp", "pow",
        "where", "sum", "mean", "amax", "amin", "softmax", "log_softmax", "matmul", "mm", "bmm", "addmm",
        "baddbmm")},
    **{name: (getattr(F, name), 3) for name in (
        "silu", "mish", "hardswish", "hardsigmoid", "gelu", "leaky_relu", "softplus", "hardtanh", "linear",
        "dropout")},
    "elu": (F.elu, 2),
    "cat": (torch.cat, 2),
    "stack": (torch.stack, 2),
    "layer_norm": (F.layer_norm, 5),
    "group_norm": (F.group_norm, 5),
    "rms_norm": (F.rms_norm, 4),
}
# ATen arguments the twin lacks and that do not change the result (cudnn_enable), dropped first.
_KEPT_ARGS = {"layer_norm": 5, "group_norm": 5}


def is_aten_graph(gm: torch.nn.Module) -> bool:
    return isinstance(gm, fx.GraphModule) and any(
        isinstance(n.target, torch._ops.OpOverload) for n in gm.graph.nodes if n.op == "call_function")


def torch_level(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` whose ATen calls with a torch twin call the twin instead."""
    gm = copy.deepcopy(gm)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and not node.users:  # export's input guard (_guards_fn)
            gm.graph.erase_node(node)
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = node.target.overloadpacket.__name__
        twin = _TWINS.get(name)
        node.args = node.args[:_KEPT_ARGS.get(name, len(node.args))]
        if twin is not None and len(node.args) <= twin[1]:
            node.target = twin[0]
    gm.recompile()
    return gm


def returns_one_tensor(gm: torch.nn.Module) -> bool:
    """An exported graph always returns a tuple; its output spec says whether the module returned one
    tensor (which the candidate must return too, not a 1-tuple)."""
    spec = getattr(gm, "_out_spec", None)
    return spec is not None and spec.is_leaf()
