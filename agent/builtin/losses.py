"""Losses and similarities as primitives: a pointwise term between two tensors, then a mean or sum over
everything (a row kernel over one long row, split across programs), or a row reduction per vector."""

from __future__ import annotations

from .ir import NotFusable, Val

# F.<name> or nn.<Module>: the pointwise term's parameter (its keyword and default), if it has one
POINTWISE_LOSSES = {"l1_loss": None, "mse_loss": None, "smooth_l1_loss": ("beta", 1.0),
                    "huber_loss": ("delta", 1.0), "kl_div": ("log_target", False)}
LOSS_MODULES = {"L1Loss": "l1_loss", "MSELoss": "mse_loss", "SmoothL1Loss": "smooth_l1_loss",
                "HuberLoss": "huber_loss", "KLDivLoss": "kl_div"}


def loss_call(name: str, bound: dict) -> tuple[str, object]:
    """(reduction, parameter) of F.<name>'s bound arguments; NotFusable for the legacy size_average /
    reduce arguments or a weight."""
    if bound.get("size_average") is not None or bound.get("reduce") is not None \
            or bound.get("weight") is not None:
        raise NotFusable
    param = POINTWISE_LOSSES[name]
    return bound.get("reduction", "mean"), bound.get(param[0], param[1]) if param else None


class LossMixin:
    """Methods of the lowerer (graph._Lowerer); they build values with its ew/red/reduce."""

    def pointwise_loss(self, name: str, a, b, reduction, param) -> Val:
        """F.l1_loss / mse_loss / smooth_l1_loss / huber_loss / kl_div (input a, target b), reduced as
        torch reduces it: none, mean, sum, or (kl_div) batchmean, the sum over the first dim's size."""
        if not isinstance(a, Val) or not isinstance(b, Val) or a.squeezed or b.squeezed \
                or not a.dtype.is_floating_point or reduction not in ("none", "mean", "sum", "batchmean") \
                or (reduction == "batchmean" and name != "kl_div") \
                or isinstance(param, Val):
            raise NotFusable
        if name == "kl_div":
            if param:  # log_target: the target holds log-probabilities
                term = self.ew("mul", self.ew("exp", b), self.ew("sub", b, a))
            else:  # target * (log(target) - input), 0 where the target is 0 (torch's xlogy)
                xlogy = self.ew("where", self.ew("eq", b, 0.0), 0.0, self.ew("mul", b, self.ew("log", b)),
                                dtype=b.dtype)
                term = self.ew("sub", xlogy, self.ew("mul", b, a))
        else:
            d = self.ew("sub", a, b)
            if name == "mse_loss":
                term = self.ew("square", d)
            else:
                term = self._distance_term(name, self.ew("abs", d), param)
        if reduction == "none":
            return term
        if reduction == "batchmean" and len(term.shape) > 1:
            # the sum over the first dim's size, read at run time: the mean over it of each row's sum
            rows = self.reduce("sum", term, list(range(1, len(term.shape))), True, {})
            return self.reduce("mean", rows, None, False, {})
        return self.reduce("sum" if reduction == "sum" else "mean", term, None, False, {})

    def _distance_term(self, name: str, d: Val, param) -> Val:
        """The term of |a - b| = d: l1, smooth L1 (quadratic below beta, over beta) or Huber (times delta)."""
        if name == "l1_loss":
            return d
        if not isinstance(param, (int, float)) or isinstance(param, bool) or param < 0:
            raise NotFusable
        p = float(param)
        if p == 0.0:  # smooth L1 with beta 0 is L1 (torch refuses a Huber delta of 0)
            if name == "huber_loss":
                raise NotFusable
            return d
        quad = self.ew("mul", self.ew("square", d), 0.5 / p if name == "smooth_l1_loss" else 0.5)
        lin = self.ew("sub", d, 0.5 * p) if name == "smooth_l1_loss" else self.ew("mul", self.ew("sub", d, 0.5 * p), p)
        return self.ew("where", self.ew("lt", d, p), quad, lin, dtype=d.dtype)

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

    def _cosine(self, a: Val, b: Val, dims: list[int], eps: float) -> Val:
        dot = self.reduce("sum", self.ew("mul", a, b), dims, True, {})
        na = self.clamp_one_side(self.vector_norm(a, 2, dims, True), eps, low=True)
        nb = self.clamp_one_side(self.vector_norm(b, 2, dims, True), eps, low=True)
        return self.ew("div", dot, self.ew("mul", na, nb))
