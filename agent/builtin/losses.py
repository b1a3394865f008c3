"""Losses and distances as primitives: a term per element (or per row), then torch's reduction of it.

Every loss is lowered from its F.<function>'s arguments, bound by name with their defaults: a call
binds its own, an nn module binds its inputs and its attributes of the same names (nn.MSELoss's
`reduction`, nn.TripletMarginLoss's `margin`, `p`, `eps`, `swap`), so one code path serves both.
The terms are elementwise values and row reductions that the templates fuse like any others: a mean
over everything is one long row split across programs; a per-row distance shares its row kernel."""

from __future__ import annotations

import inspect

import torch
import torch.fx as fx
import torch.nn.functional as F

from .ir import NotFusable, Val, whole

# nn.<Module> → the F.<function> its forward calls
LOSS_MODULES = {"L1Loss": "l1_loss", "MSELoss": "mse_loss", "SmoothL1Loss": "smooth_l1_loss",
                "HuberLoss": "huber_loss", "KLDivLoss": "kl_div", "TripletMarginLoss": "triplet_margin_loss",
                "MarginRankingLoss": "margin_ranking_loss", "HingeEmbeddingLoss": "hinge_embedding_loss",
                "SoftMarginLoss": "soft_margin_loss", "BCELoss": "binary_cross_entropy",
                "BCEWithLogitsLoss": "binary_cross_entropy_with_logits", "NLLLoss": "nll_loss",
                "CrossEntropyLoss": "cross_entropy", "PairwiseDistance": "pairwise_distance",
                "CosineSimilarity": "cosine_similarity", "CosineEmbeddingLoss": "cosine_embedding_loss"}
_MODULE_ATTRS = {"PairwiseDistance": {"p": "norm"}}  # arguments a module keeps under another name


def _builtin_signature(*params: tuple) -> inspect.Signature:
    return inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                **({"default": d[0]} if d else {})) for name, *d in params])


# C builtins inspect cannot read; their arguments as torch documents them
_SIGNATURES = {"pairwise_distance": _builtin_signature(("x1",), ("x2",), ("p", 2.0), ("eps", 1e-6), ("keepdim", False)),
               "cosine_similarity": _builtin_signature(("x1",), ("x2",), ("dim", 1), ("eps", 1e-8))}
LOSS_FUNCTIONS = set(LOSS_MODULES.values())


def _signature(name: str) -> inspect.Signature:
    return _SIGNATURES.get(name) or inspect.signature(getattr(F, name))


def bind_call(name: str, args: tuple, kw: dict) -> dict:
    """F.<name>(*args, **kw)'s arguments by name, defaults filled in."""
    bound = _signature(name).bind(*args, **kw)
    bound.apply_defaults()
    return dict(bound.arguments)


def bind_module(mod: torch.nn.Module, args: tuple, kw: dict) -> dict:
    """The arguments of the F.<function> an nn loss module calls: its inputs, then its attributes."""
    cls = type(mod).__name__
    sig = _signature(LOSS_MODULES[cls])
    bound = sig.bind_partial(*args, **kw)
    alias = _MODULE_ATTRS.get(cls, {})
    for name in sig.parameters:
        if name not in bound.arguments and hasattr(mod, alias.get(name, name)):
            bound.arguments[name] = getattr(mod, alias.get(name, name))
    bound.apply_defaults()
    return dict(bound.arguments)


def _number(x) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise NotFusable
    return float(x)


class LossMixin:
    """Methods of the lowerer (graph._Lowerer); they build values with its ew/red/reduce."""

    def loss(self, name: str, bound: dict) -> Val:
        """F.<name> from its bound arguments (see bind_call / bind_module); NotFusable for weights and
        the legacy size_average / reduce arguments."""
        if any(bound.get(k) is not None for k in ("weight", "pos_weight", "size_average", "reduce")):
            raise NotFusable
        # tensors become values; numbers stay (a model float attribute, AttrFloat, is read at run time
        # where it enters arithmetic, as a margin does, and baked where it picks the formula: p, beta)
        b = {k: self.a(v) if isinstance(v, fx.Node) else v for k, v in bound.items()}
        tensors = [v for v in b.values() if isinstance(v, Val)]
        if not tensors or any(v.squeezed for v in tensors):
            raise NotFusable
        if name == "cross_entropy":
            return self.cross_entropy(b["input"], b["target"], b["ignore_index"], b["reduction"],
                                      _number(b["label_smoothing"]))
        if name == "cosine_embedding_loss":
            return self.cosine_embedding_loss(b["input1"], b["input2"], b["target"], b["margin"], b["reduction"])
        if name == "nll_loss":
            return self._picked_loss(b["input"], b["target"], b["ignore_index"], b["reduction"], lse=None)
        if name == "cosine_similarity":
            return self.cosine_similarity(b["x1"], b["x2"], b["dim"], b["eps"])
        if name == "pairwise_distance":
            return self._pairwise_distance(b["x1"], b["x2"], b["p"], b["eps"], b["keepdim"])
        if not all(v.dtype.is_floating_point for v in tensors):
            raise NotFusable
        term, reduction = self._loss_term(name, b), b["reduction"]
        if reduction == "batchmean" and name == "kl_div" and len(term.shape) > 1:
            # the sum over the first dim's size, read at run time: the mean over it of each row's sum
            rows = self.reduce("sum", term, list(range(1, len(term.shape))), True, {})
            return self.reduce("mean", rows, None, False, {})
        if reduction == "none":
            return term
        if reduction not in ("mean", "sum") and not (reduction == "batchmean" and name == "kl_div"):
            raise NotFusable
        return self.reduce("sum" if reduction == "sum" else "mean", term, None, False, {})

    def _loss_term(self, name: str, b: dict) -> Val:
        """The unreduced loss, as ATen computes it: stable where its formula is (BCE with logits, as
        (1 - y)·x - logsigmoid(x)), overflowing where its formula does (soft margin's exp), so that
        a float64 reference that overflows too does not fail the candidate."""
        if name in ("l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"):
            d = self.ew("sub", b["input"], b["target"])
            if name == "mse_loss":
                return self.ew("square", d)
            return self._distance_term(name, self.ew("abs", d), b.get("beta", b.get("delta")))
        x, y = b.get("input"), b.get("target")
        if name == "kl_div":
            if b["log_target"]:  # the target holds log-probabilities
                return self.ew("mul", self.ew("exp", y), self.ew("sub", y, x))
            # target * (log(target) - input), 0 where the target is 0 (torch's xlogy)
            xlogy = self.ew("where", self.ew("eq", y, 0.0), 0.0, self.ew("mul", y, self.ew("log", y)), dtype=y.dtype)
            return self.ew("sub", xlogy, self.ew("mul", y, x))
        if name == "binary_cross_entropy":  # each log clamped at -100, as torch does
            log_x = self.clamp_one_side(self.ew("log", x), -100.0, low=True)
            log_1mx = self.clamp_one_side(self.ew("log1p", self.ew("neg", x)), -100.0, low=True)
            return self.ew("sub", self.ew("mul", self.ew("sub", y, 1.0), log_1mx), self.ew("mul", y, log_x))
        if name == "binary_cross_entropy_with_logits":
            return self.ew("sub", self.ew("mul", self.ew("sub", 1.0, y), x), self.ew("logsigmoid", x))
        if name == "soft_margin_loss":  # log1p(exp(-y·x)), overflowing where torch's does
            return self.ew("log1p", self.ew("exp", self.ew("neg", self.ew("mul", y, x))))
        if name == "hinge_embedding_loss":  # x where y is 1, max(margin - x, 0) where y is -1
            hinge = self.clamp_one_side(self.ew("sub", self.a(b["margin"]), x), 0.0, low=True)
            return self.ew("add", self.ew("where", self.ew("eq", y, 1.0), 0.0, hinge, dtype=x.dtype),
                           self.ew("where", self.ew("eq", y, -1.0), 0.0, x, dtype=x.dtype))
        if name == "margin_ranking_loss":  # max(-y·(x1 - x2) + margin, 0)
            x1, x2 = b["input1"], b["input2"]
            gap = self.ew("mul", self.ew("neg", y), self.ew("sub", x1, x2))
            return self.clamp_one_side(self.ew("add", gap, self.a(b["margin"])), 0.0, low=True)
        if name == "triplet_margin_loss":
            a, pos, neg = b["anchor"], b["positive"], b["negative"]
            d_pos = self._pairwise_distance(a, pos, b["p"], b["eps"], False)
            d_neg = self._pairwise_distance(a, neg, b["p"], b["eps"], False)
            if b["swap"]:  # the harder of the two negatives' distances
                d_neg = self.ew("minimum", d_neg, self._pairwise_distance(pos, neg, b["p"], b["eps"], False))
            gap = self.ew("add", self.ew("sub", d_pos, d_neg), self.a(b["margin"]))
            return self.clamp_one_side(gap, 0.0, low=True)
        raise NotFusable

    def _distance_term(self, name: str, d: Val, param) -> Val:
        """The term of |a - b| = d: l1, smooth L1 (quadratic below beta, over beta) or Huber (times delta)."""
        if name == "l1_loss":
            return d
        p = _number(param)
        if p < 0:
            raise NotFusable
        if p == 0.0:  # smooth L1 with beta 0 is L1 (torch refuses a Huber delta of 0)
            if name == "huber_loss":
                raise NotFusable
            return d
        quad = self.ew("mul", self.ew("square", d), 0.5 / p if name == "smooth_l1_loss" else 0.5)
        lin = self.ew("sub", d, 0.5 * p) if name == "smooth_l1_loss" else self.ew("mul", self.ew("sub", d, 0.5 * p), p)
        return self.ew("where", self.ew("lt", d, p), quad, lin, dtype=d.dtype)

    def _pairwise_distance(self, a, b, p, eps, keepdim) -> Val:
        """||a - b + eps||_p over the last dim (torch adds eps to the difference), for p = 1 or 2."""
        if not isinstance(a, Val) or not isinstance(b, Val) or not a.shape or not b.shape:
            raise NotFusable
        diff = self.ew("add", self.ew("sub", a, b), self.a(eps))
        return self.vector_norm(diff, _number(p), -1, bool(keepdim))

    def cross_entropy(self, x, t, ignore_index, reduction, smoothing: float = 0.0) -> Val:
        """Cross-entropy of (M, C) logits against class indices: per row the log-sum-exp minus the
        target's logit, which the row kernel reads at that column only (`pick`). With label smoothing
        e, torch's (1 - e) * nll + e / C * (C * lse - the row's sum), per row: lse - (1 - e) * x[target]
        - e * mean(x), reduced as the nll is (ignored rows 0, the mean over the rest)."""
        if not isinstance(x, Val) or len(x.shape) != 2 or not 0.0 <= smoothing <= 1.0:
            raise NotFusable
        m = self.red("max", x, -1, True)
        lse = self.ew("add", m, self.ew("log", self.red("sum", self.ew("exp", self.ew("sub", x, m)), -1, True)))
        if smoothing:
            lse = self.ew("sub", lse, self.ew("mul", self.red("mean", x, -1, True), smoothing))
        return self._picked_loss(x, t, ignore_index, reduction, lse, 1.0 - smoothing)

    def _picked_loss(self, x, t, ignore_index, reduction, lse, share: float = 1.0) -> Val:
        """Per row of (M, C) `x`, (lse or 0) minus x at the target's column (times `share`), 0 where the
        target is ignore_index; then the mean over the rows not ignored, or the sum (cross-entropy;
        nll_loss)."""
        if not isinstance(x, Val) or not isinstance(t, Val) or len(x.shape) != 2 or x.squeezed \
                or tuple(t.shape) != tuple(x.shape[:1]) or t.dtype not in (torch.int64, torch.int32) \
                or not x.dtype.is_floating_point or reduction not in ("none", "mean", "sum") \
                or not whole(ignore_index):
            raise NotFusable
        tc = self.view("{0}.reshape(-1, 1)", [t], (x.shape[0], 1), t.dtype)
        picked = self.new("ew", fn="pick", args=[x, tc], shape=(x.shape[0], 1), dtype=x.dtype)
        if share != 1.0:
            picked = self.ew("mul", picked, share)
        per_row = self.ew("sub", lse, picked) if lse is not None else self.ew("neg", picked)
        loss = self.ew("where", self.ew("eq", tc, float(ignore_index)), 0.0, per_row, dtype=x.dtype)
        # the batch sum reads the loss through a view, so the per-row kernel stays one and writes it
        flat = self.view("{0}.reshape(-1)", [loss], tuple(x.shape[:1]), x.dtype)
        if reduction == "none":
            return flat
        total = self.red("sum", flat, None, False)
        if reduction == "sum":
            return total
        kept = self.ew("where", self.ew("eq", t, float(ignore_index)), 0.0, 1.0, dtype=x.dtype)
        return self.ew("div", total, self.red("sum", kept, None, False))

    def cosine_similarity(self, a, b, dim, eps) -> Val:
        """The dot product of a and b along dim over the product of their norms, each at least eps (as
        torch, which divides each by its clamped norm before the sum). Over a middle dim all of it is done
        in the layout where that dim is last, so the three sums share one row kernel."""
        if not isinstance(a, Val) or not isinstance(b, Val) or not isinstance(dim, int) or a.squeezed \
                or b.squeezed or not isinstance(eps, (int, float)) or tuple(a.shape) != tuple(b.shape):
            raise NotFusable
        dims = self._reduced(a, dim)
        moved = self._over_middle_dims(a, dims)
        if moved is not None:
            am, key = moved
            bm = self._moved(b, key)
            if bm is not None:
                cos = self._cosine(am, bm, list(key[1]), eps)
                return self._squeeze(self._moved_back(cos, key), list(key[0]), False)
        return self._squeeze(self._cosine(a, b, dims, eps), dims, False)

    def cosine_embedding_loss(self, a, b, y, margin, reduction) -> Val:
        """Per row of (M, D) (or one (D,) pair), torch's cos = a.b / sqrt((|a|^2 + 1e-12)(|b|^2 + 1e-12));
        1 - cos where the target is 1, max(cos - margin, 0) where it is -1, 0 elsewhere; then reduced."""
        if not isinstance(a, Val) or not isinstance(b, Val) or not isinstance(y, Val) or len(a.shape) not in (1, 2) \
                or tuple(a.shape) != tuple(b.shape) or tuple(y.shape) != tuple(a.shape[:-1]) \
                or not a.dtype.is_floating_point or reduction not in ("none", "mean", "sum"):
            raise NotFusable
        # kept dims: the target, viewed as a column, lines up with each row's sums
        dot = self.reduce("sum", self.ew("mul", a, b), -1, True, {})
        sq = [self.ew("add", self.reduce("sum", self.ew("square", v), -1, True, {}), 1e-12) for v in (a, b)]
        cos = self.ew("div", dot, self.ew("sqrt", self.ew("mul", *sq)))
        neg = self.clamp_one_side(self.ew("sub", cos, self.a(margin)), 0.0, low=True)
        yc = self.view("{0}.reshape(-1, 1)" if y.shape else "{0}.reshape(1)", [y], tuple(cos.shape), y.dtype)
        term = self.ew("add", self.ew("where", self.ew("eq", yc, 1.0), self.ew("sub", 1.0, cos), 0.0, dtype=cos.dtype),
                       self.ew("where", self.ew("eq", yc, -1.0), neg, 0.0, dtype=cos.dtype))
        if reduction == "none":
            return self.view("{0}.reshape(-1)" if y.shape else "{0}.reshape(())", [term], tuple(y.shape), term.dtype)
        return self.reduce(reduction, term, None, False, {})

    def _cosine(self, a: Val, b: Val, dims: list[int], eps: float) -> Val:
        dot = self.reduce("sum", self.ew("mul", a, b), dims, True, {})
        na = self.clamp_one_side(self.vector_norm(a, 2, dims, True), eps, low=True)
        nb = self.clamp_one_side(self.vector_norm(b, 2, dims, True), eps, low=True)
        return self.ew("div", dot, self.ew("mul", na, nb))
