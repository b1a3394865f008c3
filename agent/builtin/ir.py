"""The lowering's small IR: a value (`Val`) per primitive op, leaf or PyTorch call, and the graph of them.

`Val.mm` holds what a kind of value needs besides its op; the keys in use:
  mm (matmul): trans_b, batched, tri ((upper, offset): only that triangle of each product is kept);
  attn: causal; topk: k; cred: dims, keepdim; cat: dim (counted from the right), interleave (a flattened
  stack along the last dim: its coordinate c is piece c % n's c // n), stacked (a stack's pieces);
  red (a mean): correction, where a variance divides by (count - correction);
  torch: conv2d (may take channels-last input), tuple (a python value or tuple: no kernel reads it),
         flip_of (x flipped along its last dim: a scan reads x), diag_of (torch.diag(v): a matmul scales by v);
  scan: reverse (a suffix scan, read from the last column);
  view: grouped (a group norm's output viewed back), groups (a group norm's rows: G's python expression),
        moved (a moved layout's value viewed back),
        barrier (a moved view: dims at and after it are apart in memory from those before),
        dense_last (with barrier, torch's too: a chunk or slice of an inner dim, its last dim dense),
        breaks (with barrier, torch's: every dim where such a view's memory stops nesting, where more than one),
        stepped (with barrier, torch's: a view whose last dim takes every other element; barrier 0 if it nests),
        transpose_of (w.T: a matmul reads w transposed instead).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch

# where a candidate keeps what it makes from weights alone, once per model (codegen's _prepared)
PREPARED_CACHE = "self._kevolve_prepared"


def self_path(target: str) -> str:
    """Python that reads a module attribute from its FX target: net.0.weight -> self.net[0].weight
    (an nn.Sequential or nn.ModuleList indexes its children)."""
    return "self" + "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in target.split("."))


class Unsupported(Exception):
    """The module cannot be traced or lowered at all."""


class _Tagged:
    """Arithmetic on a tagged model attribute keeps the tag: `1.0 / self.head_dim ** 0.5` or
    `self.d_model // self.n_heads` computed in forward reads the attributes at run time too, where the
    plain number would bake the traced instance's value (a head_dim of the shrunk shape) in."""

    path: str
    _base: type  # float or int: the plain number's type

    def __new__(cls, value, path: str):  # path: the python expression that reads it
        obj = super().__new__(cls, value)
        obj.path = path
        return obj

    def _plain(self):
        return self._base(self)

    def _apply(self, other, fn, symbol: str, reflected: bool = False):
        if isinstance(other, _Tagged):
            rendered, plain = other.path, other._plain()
        elif isinstance(other, (int, float)) and not isinstance(other, bool):
            rendered, plain = repr(other), other
        else:
            return NotImplemented
        a, b = (plain, self._plain()) if reflected else (self._plain(), plain)
        left, right = (rendered, self.path) if reflected else (self.path, rendered)
        return tagged(fn(a, b), f"({left} {symbol} {right})")

    def __add__(self, o): return self._apply(o, operator.add, "+")
    def __radd__(self, o): return self._apply(o, operator.add, "+", True)
    def __sub__(self, o): return self._apply(o, operator.sub, "-")
    def __rsub__(self, o): return self._apply(o, operator.sub, "-", True)
    def __mul__(self, o): return self._apply(o, operator.mul, "*")
    def __rmul__(self, o): return self._apply(o, operator.mul, "*", True)
    def __truediv__(self, o): return self._apply(o, operator.truediv, "/")
    def __rtruediv__(self, o): return self._apply(o, operator.truediv, "/", True)
    def __floordiv__(self, o): return self._apply(o, operator.floordiv, "//")
    def __rfloordiv__(self, o): return self._apply(o, operator.floordiv, "//", True)
    def __pow__(self, o): return self._apply(o, operator.pow, "**")
    def __rpow__(self, o): return self._apply(o, operator.pow, "**", True)
    def __neg__(self): return tagged(-self._plain(), f"(-{self.path})")


class AttrFloat(_Tagged, float):
    """A float attribute of the model (e.g. `self.scale = 1 / sqrt(head_dim)`), tagged with its path
    while tracing: its value depends on the init inputs, so it must stay a runtime value, never be
    baked into a kernel from the small instance the graph was traced on."""

    _base = float


class AttrInt(_Tagged, int):
    """An int attribute of the model's own modules (`self.head_dim = d_model // n_heads`), tagged with
    its path while tracing, for the same reason: a PyTorch call left in the candidate
    (`x.view(b, t, self.n_heads, self.head_dim)`) reads it at run time. A template that needs a
    number (top-k's k) takes its value, as it did before."""

    _base = int


def tagged(value, path: str):
    """`value` tagged with the expression that computes it at run time, if it is a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return AttrInt(value, path) if isinstance(value, int) else AttrFloat(value, path)


def in_place(node) -> bool:
    """Whether an FX call changes its first argument in place: x.mul_(2), F.relu(x, inplace=True) (an
    in-place module, nn.ReLU(inplace=True), is known by its attribute instead)."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return isinstance(name, str) and name.endswith("_") and not name.endswith("__") \
        or node.kwargs.get("inplace") is True


def whole(x) -> bool:
    """An int, a model's int attribute (AttrInt) included, and not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


class NotFusable(Exception):
    """This op stays a PyTorch call (the lowering falls back to `torch_node`)."""


@dataclass(eq=False)
class Val:
    name: str
    kind: str                 # input | param | scalar | ew | cat | red | cred | mm | topk | scan | attn | torch | view
    fn: str = ""              # ew/red primitive name
    args: list = field(default_factory=list)   # Vals or python numbers
    shape: tuple = ()
    dtype: torch.dtype = torch.float32
    expr: str = ""            # param/scalar: python expression; torch: python expression with {0}, {1}.. for args
    squeezed: bool = False    # a row value whose reduced dims were dropped (keepdim=False)
    k: int = 0                # red: number of trailing dims reduced
    mm: dict = field(default_factory=dict)  # per-kind details (the module docstring lists them)
    own_shape: tuple | None = None  # the shape at the problem's own sizes, where it was traced at shrunk ones

    def __repr__(self) -> str:
        return f"Val({self.name}:{self.kind}:{self.fn or self.expr})"


def made_once(v: Val) -> bool:
    """Whether v is the same every forward of a model: a parameter, or made from parameters once per model
    (codegen's _prepared)."""
    return v.kind == "param" or v.kind == "torch" and v.expr.startswith("_prepared(")


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
