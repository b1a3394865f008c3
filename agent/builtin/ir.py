"""The lowering's small IR: a value (`Val`) per primitive op, leaf or PyTorch call, and the graph of them.

`Val.mm` holds what a kind of value needs besides its op; the keys in use:
  mm (matmul): trans_b, batched, tri ((upper, offset): only that triangle of each product is kept);
  attn: causal; topk: k; cred: dims, keepdim;
  red (a mean): correction, where a variance divides by (count - correction);
  torch: conv2d (may take channels-last input), tuple (a python value or tuple: no kernel reads it),
         flip_of (x flipped along its last dim: a scan reads x), diag_of (torch.diag(v): a matmul scales by v);
  scan: reverse (a suffix scan, read from the last column);
  view: grouped (a group norm's output viewed back), moved (a moved layout's value viewed back),
        barrier (a moved view: dims at and after it are apart in memory from those before),
        transpose_of (w.T: a matmul reads w transposed instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class Unsupported(Exception):
    """The module cannot be traced or lowered at all."""


class AttrFloat(float):
    """A float attribute of the model (e.g. `self.scale = 1 / sqrt(head_dim)`), tagged with its path
    while tracing: its value depends on the init inputs, so it must stay a runtime value, never be
    baked into a kernel from the small instance the graph was traced on."""

    def __new__(cls, value: float, path: str):  # path: the python expression that reads it
        obj = super().__new__(cls, value)
        obj.path = path
        return obj


class NotFusable(Exception):
    """This op stays a PyTorch call (the lowering falls back to `torch_node`)."""


@dataclass(eq=False)
class Val:
    name: str
    kind: str                 # input | param | scalar | ew | red | cred | mm | topk | scan | attn | torch | view
    fn: str = ""              # ew/red primitive name
    args: list = field(default_factory=list)   # Vals or python numbers
    shape: tuple = ()
    dtype: torch.dtype = torch.float32
    expr: str = ""            # param/scalar: python expression; torch: python expression with {0}, {1}.. for args
    squeezed: bool = False    # a row value whose reduced dims were dropped (keepdim=False)
    k: int = 0                # red: number of trailing dims reduced
    mm: dict = field(default_factory=dict)  # per-kind details (the module docstring lists them)

    def __repr__(self) -> str:
        return f"Val({self.name}:{self.kind}:{self.fn or self.expr})"


@dataclass
class Graph:
    vals: list[Val]           # topological order
    inputs: list[Val]         # forward arguments, in order (None-valued args are not supported)
    outputs: list[Val]
    output_is_tuple: bool
    users: dict[int, list[Val]] = field(default_factory=dict)

    def compute_users(self) -> None:
        self.users = {id(v): [] for v in self.vals}
        for v in self.vals:
            for a in v.args:
                if isinstance(a, Val) and v not in self.users[id(a)]:
                    self.users[id(a)].append(v)
