"""Written-out attention found in the FX graph and replaced by one `attention(q, k, v, scale, causal)` call.

    o = softmax(mask?(scale?(q @ k.transpose(-2, -1))), dim=-1) @ v

`scale` is a multiply or divide by a number (a model float attribute stays a runtime value); the
optional mask is `masked_fill(triu(ones(s, s), 1), -inf)`, the causal mask, or minGPT's form of it,
`masked_fill(buf[:, :, :s, :s] == 0, -inf)` of a buffer holding tril(ones). The rewritten graph has
the same outputs; the template engine lowers the call to a flash-attention kernel (attention.py),
which never writes the (seq x seq) scores. A form not matched stays as it was, op by op.

nn.MultiheadAttention's self- and cross-attention are written out first (`expand_multihead_attention`):
its input projection, the heads' `attention` call and its output projection, so a template covers it too.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .ir import AttrInt, in_place, self_path


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale, causal: bool) -> torch.Tensor:
    """What the matched ops compute (the graph runs this while its shapes are propagated). A scale of
    None is 1/sqrt(head_dim), read from q when it runs (scaled_dot_product_attention's default)."""
    s = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if causal:
        n = s.shape[-1]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=s.device).triu(1), float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


_MATMULS = (torch.matmul, operator.matmul, torch.bmm)
_SOFTMAXES = (torch.softmax, F.softmax)


def _is_call(node, fns=(), methods=()) -> bool:
    return isinstance(node, fx.Node) and (
        (node.op == "call_function" and node.target in fns) or (node.op == "call_method" and node.target in methods))


def _arg(node: fx.Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _rank(node) -> int | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return len(meta.shape) if hasattr(meta, "shape") else None


def _last_dim(node, dim) -> bool:
    r = _rank(node)
    return isinstance(dim, int) and r is not None and dim % r == r - 1


def _softmax_input(gm: fx.GraphModule, node) -> fx.Node | None:
    if _is_call(node, _SOFTMAXES, ("softmax",)) and len(node.args) <= 2 and node.kwargs.get("dtype") is None \
            and _last_dim(node.args[0], _arg(node, 1, "dim")):
        return node.args[0]
    if isinstance(node, fx.Node) and node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.Softmax) and _last_dim(node.args[0], mod.dim):
            return node.args[0]
    return None


def _causal_mask(node) -> bool:
    """triu(ones(s, s), diagonal=1), as a method or a function."""
    if not _is_call(node, (torch.triu,), ("triu",)) or _arg(node, 1, "diagonal", 0) != 1:
        return False
    ones = node.args[0]
    return _is_call(ones, (torch.ones,)) and len(ones.args) == 2


def _lower_triangle_kept(gm: fx.GraphModule, node) -> bool:
    """`buf[..., :t, :t] == 0` of a buffer that holds tril(ones(n, n)) (minGPT's registered mask, sliced
    to the sequence): true exactly above the diagonal, as the causal mask is, for any t up to n. The
    buffer's values are read as the model was built; a candidate assumes them, as the module's own
    construction makes them."""
    if not _is_call(node, (operator.eq, torch.eq), ("eq",)) or len(node.args) != 2 or node.args[1] != 0:
        return False
    sliced = node.args[0]
    if not _is_call(sliced, (operator.getitem,)) or not isinstance(sliced.args[1], tuple):
        return False
    buf = sliced.args[0]
    if not isinstance(buf, fx.Node) or buf.op != "get_attr":
        return False
    value = operator.attrgetter(buf.target)(gm)
    index = sliced.args[1]
    if not isinstance(value, torch.Tensor) or value.dim() < 2 or len(index) != value.dim() \
            or value.shape[-1] != value.shape[-2] or any(d != 1 for d in value.shape[:-2]):
        return False
    *lead, rows, cols = index
    if any(i != slice(None) for i in lead) or not all(
            isinstance(i, slice) and i.start in (None, 0) and i.step in (None, 1) for i in (rows, cols)):
        return False
    n = value.shape[-1]
    return bool(torch.equal(value.reshape(n, n) != 0, torch.ones(n, n, dtype=torch.bool).tril()))


def _number(x) -> bool:
    """A number, or a node that computes one from sizes (1.0 / math.sqrt(k.size(-1))), not a tensor."""
    if isinstance(x, fx.Node):
        return x.op == "call_function" and _rank(x) is None and "tensor_meta" not in x.meta
    return isinstance(x, float | int) and not isinstance(x, bool)


def _unscaled(gm: fx.GraphModule, node) -> tuple[fx.Node, float | fx.Node] | None:
    """(scores, scale) for `scores * c`, `c * scores`, `scores / c`; (node, 1.0) otherwise."""
    if _is_call(node, (operator.mul, torch.mul), ("mul",)):
        a, b = node.args[:2]
        if _number(b):
            return a, b
        if _number(a):
            return b, a
        return None
    if _is_call(node, (operator.truediv, torch.div), ("div",)) and not node.kwargs:
        a, b = node.args[:2]
        if isinstance(b, fx.Node) and _number(b):
            with gm.graph.inserting_before(node):
                return a, gm.graph.call_function(operator.truediv, (1.0, b))
        if _number(b) and b:
            return a, _reciprocal(b)
        return None
    return node, 1.0


def _reciprocal(c):
    path = getattr(c, "path", None)  # graph._AttrFloat: a model attribute, read at run time
    if path is None:
        return 1.0 / c
    return type(c)(1.0 / c, f"(1.0 / {path})")


def _transposed(node) -> fx.Node | None:
    """x for x.transpose(-2, -1) (the last two dims, however they are named)."""
    if not _is_call(node, (torch.transpose,), ("transpose",)) or len(node.args) != 3 or node.kwargs:
        return None
    r = _rank(node)
    dims = node.args[1:]
    if r is None or r < 2 or not all(isinstance(d, int) for d in dims) or {d % r for d in dims} != {r - 2, r - 1}:
        return None
    return node.args[0]


def _same_batch(q, k, v) -> bool:
    """One (batch, head) per program: q, k and v of one dtype, 3-D or more, the same leading dims (no
    broadcast k/v shared across heads)."""
    metas = [n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None for n in (q, k, v)]
    if not all(hasattr(m, "shape") and len(m.shape) >= 3 for m in metas):
        return False
    return len({m.dtype for m in metas}) == 1 and len({tuple(m.shape[:-2]) for m in metas}) == 1


_SDPA = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _sdpa(node: fx.Node) -> tuple | None:
    """(q, k, v, scale, causal) of F.scaled_dot_product_attention without a mask, dropout or grouped
    heads, where the kernel takes its shapes (causal: square, as its mask aligns)."""
    if node.op != "call_function" or node.target is not F.scaled_dot_product_attention or len(node.args) > 8:
        return None
    bound = dict(zip(_SDPA, node.args)) | dict(node.kwargs)
    q, k, v = (bound.get(n) for n in _SDPA[:3])
    if bound.get("attn_mask") is not None or bound.get("dropout_p", 0.0) != 0.0 or bound.get("enable_gqa") \
            or not all(isinstance(x, fx.Node) for x in (q, k, v)) or not _same_batch(q, k, v):
        return None
    causal = bool(bound.get("is_causal", False))
    if causal and q.meta["tensor_meta"].shape[-2] != k.meta["tensor_meta"].shape[-2]:
        return None
    return q, k, v, bound.get("scale"), causal


def fuse_attention(gm: fx.GraphModule) -> int:
    """Replace every matched attention in `gm` (shapes propagated) by one call; the number replaced."""
    found = 0
    for out in list(gm.graph.nodes):
        sdpa = _sdpa(out)
        if sdpa is not None:
            with gm.graph.inserting_before(out):
                out.replace_all_uses_with(gm.graph.call_function(attention, sdpa))
            found += 1
            continue
        if not _is_call(out, _MATMULS, ("matmul", "bmm")) or len(out.args) != 2:
            continue
        probs, v = out.args
        while isinstance(probs, fx.Node) and probs.op == "call_module" \
                and isinstance(gm.get_submodule(probs.target), (nn.Dropout, nn.Identity)):
            probs = probs.args[0]  # the model runs in eval mode: a dropout passes its input on
        x = _softmax_input(gm, probs)
        if x is None:
            continue
        causal, masked = False, x
        if _is_call(x, (), ("masked_fill",)) and len(x.args) == 3 and x.args[2] == -math.inf \
                and (_causal_mask(x.args[1]) or _lower_triangle_kept(gm, x.args[1])):
            *lead, rows, cols = tuple(x.args[1].meta["tensor_meta"].shape)
            if rows != cols or tuple(x.meta["tensor_meta"].shape[-2:]) != (rows, cols) or any(d != 1 for d in lead):
                continue
            causal, masked = True, x.args[0]
        unscaled = _unscaled(gm, masked)
        if unscaled is None:
            continue
        scores, scale = unscaled
        if not _is_call(scores, _MATMULS, ("matmul", "bmm")):
            continue
        q, kt = scores.args[:2]
        k = _transposed(kt)
        chain = [n for n in (kt, scores, masked, x, probs) if isinstance(n, fx.Node)]
        if k is None or any(len(n.users) != 1 for n in dict.fromkeys(chain[1:])) or not _same_batch(q, k, v):
            continue
        with gm.graph.inserting_before(out):
            fused = gm.graph.call_function(attention, (q, k, v, scale, causal))
        out.replace_all_uses_with(fused)
        found += 1
    if found:
        # the replaced chain goes; an in-place op nothing reads (y.add_(1)) is not dead: it changes y
        gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or in_place(n))
        gm.recompile()
    return found


_MHA_ARGS = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")


def _plain_attention(gm: fx.GraphModule, node: fx.Node) -> nn.MultiheadAttention | None:
    """The module of an nn.MultiheadAttention call that attends a tensor to itself, or to another one
    that is both key and value (cross-attention), with no mask, no added key/value bias and no dropout
    (eval), whose attention weights nothing reads; else None."""
    if node.op != "call_module":
        return None
    mod = gm.get_submodule(node.target)
    if type(mod) is not nn.MultiheadAttention or not mod._qkv_same_embed_dim or mod.bias_k is not None \
            or mod.add_zero_attn or (mod.training and mod.dropout > 0):
        return None
    bound = dict(zip(_MHA_ARGS, node.args)) | dict(node.kwargs)
    q, k, v = (bound.get(n) for n in _MHA_ARGS[:3])
    if not isinstance(q, fx.Node) or not isinstance(k, fx.Node) or k is not v \
            or bound.get("key_padding_mask") is not None \
            or bound.get("attn_mask") is not None or bound.get("is_causal", False):
        return None
    for user in node.users:  # (output, weights): only the output may be read
        if not (user.op == "call_function" and user.target is operator.getitem and user.args[1] in (0, 1)) \
                or user.args[1] == 1 and user.users:
            return None
    return mod


def _rows(graph: fx.Graph, t: fx.Node | None, start, length) -> fx.Node | None:
    """A node of rows start..start+length of a parameter (a view), or None for no parameter."""
    return graph.call_method("narrow", (t, 0, start, length)) if t is not None else None


def expand_multihead_attention(gm: fx.GraphModule) -> int:
    """Write each plain attention of nn.MultiheadAttention out as the ops it runs: the input projection
    (one product for self-attention; the query's rows, then the key's and value's, for
    cross-attention), the heads split off, `attention` (scaled by 1/sqrt(head_dim), as the module
    does), the heads merged and the output projection. The number written out."""
    found = 0
    for node in list(gm.graph.nodes):
        mod = _plain_attention(gm, node)
        if mod is None:
            continue
        path = self_path(node.target)
        heads = AttrInt(mod.num_heads, f"{path}.num_heads")  # read at run time, as the module does
        # (seq, batch, embed), or (batch, seq, embed): the heads' layout is (batch, heads, seq, head_dim)
        split, merge = ((0, 2, 1, 3), (0, 2, 1, 3)) if mod.batch_first else ((1, 2, 0, 3), (2, 0, 1, 3))
        graph = gm.graph
        bound = dict(zip(_MHA_ARGS, node.args)) | dict(node.kwargs)
        query, memory = bound["query"], bound["key"]
        with graph.inserting_before(node):
            weight = graph.get_attr(f"{node.target}.in_proj_weight")
            bias = graph.get_attr(f"{node.target}.in_proj_bias") if mod.in_proj_bias is not None else None
            if query is memory:
                qkv = graph.call_function(F.linear, (query, weight, bias))
                parts = [graph.call_function(operator.getitem, (graph.call_method("chunk", (qkv, 3), {"dim": -1}), i))
                         for i in range(3)]
            else:  # the weight's first third of rows projects the query; the other two, the memory to k and v
                embed = AttrInt(mod.embed_dim, f"{path}.embed_dim")
                twice = AttrInt(2 * mod.embed_dim, f"2 * {path}.embed_dim")

                kv = graph.call_function(F.linear, (memory, *(_rows(graph, t, embed, twice) for t in (weight, bias))))
                kv = graph.call_method("chunk", (kv, 2), {"dim": -1})
                parts = [graph.call_function(F.linear, (query, *(_rows(graph, t, 0, embed) for t in (weight, bias))))] \
                    + [graph.call_function(operator.getitem, (kv, i)) for i in range(2)]
            q, k, v = (graph.call_method("permute", (graph.call_method("unflatten", (part, -1, (heads, -1))),
                                                     *split)) for part in parts)
            heads_out = graph.call_function(attention, (q, k, v, None, False))
            merged = graph.call_method("flatten", (graph.call_method("permute", (heads_out, *merge)), 2))
            out = graph.call_module(f"{node.target}.out_proj", (merged,))
        for user in list(node.users):
            if user.args[1] == 0:
                user.replace_all_uses_with(out)
            graph.erase_node(user)
        graph.erase_node(node)
        found += 1
    if found:
        gm.recompile()
    return found
