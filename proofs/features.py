"""The polynomial-feature identity L8 and its rank P31, proved on the shipped ``verified_ta.features``.

The shipped feature code is torch-only. :class:`ObjectTensor` runs it unchanged on numpy object arrays of z3
terms (or exact Fractions in a replay) through torch's ``__torch_function__`` protocol: ``monomials`` and
``query_features`` execute their own multi-index recurrence (``multi_indices(g, d).parents/.variables``), so
V, W and the monomials of U are the shipped code's. The only part re-expressed here is the weight vector
c_α = a_|α| · multinomial(|α|; α) · s^|α| for *symbolic* a_t and s (the shipped ``_query_weights`` takes
numbers and rounds each weight to float once); it reads ``degrees`` and ``multinomials`` from the shipped
table, and the statement also checks it against the shipped ``query_features`` at dyadic (a, s), where the
shipped float weights are exact.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

from verified_ta.features import feature_rank, monomials, multi_indices, query_features
from verified_ta.products import khatri_rao
from verified_ta.spec import spec

from .engine import Ops, Statement, SweptProof

__all__ = ["PROOFS", "ObjectTensor", "l8_builder", "DYADIC_SCALE", "dyadic_coefficients"]

V = dict[str, np.ndarray]

#: the numeric scale at which the shipped ``query_features`` is compared (a power of two: weights stay exact)
DYADIC_SCALE = Fraction(1, 2)


def dyadic_coefficients(g: int) -> list[Fraction]:
    """a_t = (t+1)/2^t: distinct, non-zero, and every shipped weight a_t·m·2^-t is exact in float64."""
    return [Fraction(t + 1, 2**t) for t in range(g + 1)]


def _exact(x: Any) -> Any:
    """A float64 value as its exact Fraction (torch weights are multiplied into object arrays exactly)."""
    return Fraction(float(x)) if isinstance(x, (float, np.floating)) else x


class ObjectTensor:
    """A numpy object array that the shipped torch feature code accepts (``__torch_function__``).

    Supports exactly what ``verified_ta.features.monomials`` / ``query_features`` use: ``shape``,
    ``device``, ``dtype``, ``[...]``, ``index_select``, ``*`` (with another ObjectTensor or a float tensor,
    taken at its exact value), ``torch.ones_like`` and ``torch.cat``. Anything else raises ``TypeError``.
    """

    def __init__(self, a: np.ndarray) -> None:
        self.a = np.asarray(a, dtype=object)

    shape = property(lambda self: self.a.shape)
    device = property(lambda self: torch.device("cpu"))
    dtype = property(lambda self: torch.float64)

    def __getitem__(self, idx: Any) -> "ObjectTensor":
        return ObjectTensor(self.a[idx])

    def index_select(self, dim: int, index: torch.Tensor) -> "ObjectTensor":
        return ObjectTensor(np.take(self.a, index.numpy(), axis=dim))

    def __mul__(self, other: Any) -> "ObjectTensor":
        if isinstance(other, ObjectTensor):
            return ObjectTensor(self.a * other.a)
        if isinstance(other, torch.Tensor):
            return ObjectTensor(self.a * np.vectorize(_exact, otypes=[object])(other.numpy()))
        return NotImplemented

    @classmethod
    def __torch_function__(cls, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.ones_like:
            return ObjectTensor(np.ones(args[0].shape, dtype=int).astype(object))
        if func is torch.cat:
            return ObjectTensor(np.concatenate([b.a for b in args[0]], axis=kwargs.get("dim", args[1] if len(args) > 1 else 0)))
        raise TypeError(f"ObjectTensor does not implement {func}")


def shipped_monomials(x: np.ndarray, g: int) -> np.ndarray:
    """``verified_ta.features.monomials`` run on an object array (rows of x → all x^α, |α| ≤ g)."""
    return monomials(ObjectTensor(x), g).a


def _product(xs: list[Any]) -> Any:
    out: Any = 1
    for x in xs:
        out = out * x
    return out


def query_weights(a: np.ndarray, s: Any, d: int, drop_multinomial: bool = False, power_shift: int = 0) -> np.ndarray:
    """c_α = a_|α| · multinomial(|α|; α) · s^|α| from the shipped table, for symbolic a and s (L8).

    ``drop_multinomial`` / ``power_shift`` are the planted bugs of the negative controls (multinomial
    factor 1; s^(|α|+shift)).
    """
    table = multi_indices(len(a) - 1, d)
    return np.array(
        [a[t] * (1 if drop_multinomial else m) * _product([s] * max(t + power_shift, 0))
         for t, m in zip(table.degrees, table.multinomials)],
        dtype=object,
    )


def _polynomial_of_scores(q: np.ndarray, k1: np.ndarray, k2: np.ndarray, a: np.ndarray, s: Any) -> np.ndarray:
    """P(S) = Σ_t a_t (s·⟨q_i, k1_j∘k2_k⟩)^t entrywise, S from the shipped ``khatri_rao`` (n_q × n1·n2)."""
    z = (q @ khatri_rao(k1, k2).T) * s
    power = np.ones(z.shape, dtype=int).astype(object)
    total = power * a[0]
    for t in range(1, len(a)):
        power = power * z
        total = total + power * a[t]
    return total


def l8_builder(drop_multinomial: bool = False, power_shift: int = 0) -> Callable[[V, Ops, bool], Statement]:
    """The L8 statement; ``mutant=True`` applies the given planted bug to the weights (see :func:`query_weights`)."""

    @spec("L8", "P30")
    def l8_factorisation(v: V, ops: Ops, mutant: bool) -> Statement:
        """Σ_t a_t (s⟨q_i, k1_j∘k2_k⟩)^t = [U (V⊘W)^T]_{i,(j,k)} for symbolic q, k1, k2, a_0..a_g, s, with V, W and the
        monomials of U from the shipped ``monomials``; and the symbolic weights equal the shipped
        ``query_features`` at dyadic (a, s)."""
        q, k1, k2, a, s = v["q"], v["k1"], v["k2"], v["a"], v["s"][0]
        g, d = len(a) - 1, q.shape[1]
        bug = dict(drop_multinomial=drop_multinomial, power_shift=power_shift) if mutant else {}
        u = shipped_monomials(q, g) * query_weights(a, s, d, **bug)
        rhs = u @ khatri_rao(shipped_monomials(k1, g), shipped_monomials(k2, g)).T
        a0 = dyadic_coefficients(g)
        shipped_u = query_features(ObjectTensor(q), a0, float(DYADIC_SCALE)).a
        adapter_u = shipped_monomials(q, g) * query_weights(
            np.array([ops.const(x) for x in a0], dtype=object), ops.const(DYADIC_SCALE), d, **bug
        )
        lhs = _polynomial_of_scores(q, k1, k2, a, s)
        return Statement(np.concatenate([lhs.reshape(-1), shipped_u.reshape(-1)]),
                         np.concatenate([rhs.reshape(-1), adapter_u.reshape(-1)]))

    return l8_factorisation


@spec("P31")
def p31_feature_count(v: V, ops: Ops, mutant: bool) -> Statement:
    """The shipped features are the C(g+d, d) distinct monomials x^α, |α| ≤ g: column j of ``monomials`` is
    Π_l x_l^{α_l} for the table's α_j, the α_j are distinct with |α_j| ≤ g, and U, V and ``feature_rank`` all
    count C(g+d, d). Control: the papers' looser count C(3(g+d), 3g) claimed as the rank."""
    x, g = v["x"], v["a"].shape[0] - 1
    d = x.shape[1]
    table = multi_indices(g, d)
    feats = shipped_monomials(x, g)
    u = query_features(ObjectTensor(x), dyadic_coefficients(g), float(DYADIC_SCALE)).a
    distinct = len({alpha for alpha in table.exponents if len(alpha) == d and sum(alpha) <= g})
    claimed = math.comb(3 * (g + d), 3 * g) if mutant else math.comb(g + d, d)
    by_exponent = [_product([x[0, l] for l in range(d) for _ in range(alpha[l])]) for alpha in table.exponents]
    counts = [feats.shape[1], u.shape[1], distinct, feature_rank(g, d)]
    return Statement(np.array([*feats[0], *counts], dtype=object),
                     np.array([*by_exponent, *[claimed] * len(counts)], dtype=object))


PROOFS: list[SweptProof] = [
    SweptProof(
        ("L8", "P30"), "L8 polynomial features",
        "Σ_t a_t(s⟨q,k1∘k2⟩)^t = U(V⊘W)^T, U = a_|α|·multinomial(α)·s^|α|·q^α, V = k1^α, W = k2^α (shipped monomials)",
        ("n", "d", "g"),
        lambda s: {"q": (s["n"], s["d"]), "k1": (s["n"], s["d"]), "k2": (s["n"], s["d"]), "a": (s["g"] + 1,), "s": (1,)},
        l8_builder(drop_multinomial=True), "multinomial factor dropped", dict(n=1, d=2, g=2),
        default_max=4, dim_min={"g": 0},
    ),
    SweptProof(
        ("P31",), "P31 feature count", "monomials(x, g) = the C(g+d, d) distinct x^α, |α| ≤ g; = feature_rank(g, d)",
        ("d", "g"), lambda s: {"x": (1, s["d"]), "a": (s["g"] + 1,)},
        p31_feature_count, "papers' count C(3(g+d), 3g) as the rank", dict(d=1, g=1), default_max=4, dim_min={"g": 0},
    ),
]
