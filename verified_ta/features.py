"""Low-rank polynomial features of tensor-attention scores (SPEC L8, L6).

For P(z + M) = Σ_{t≤g} a_t z^t (the shifted coefficients, L6) and z = s⟨q, k1∘k2⟩, index features by the
multi-indices α ∈ N^d with |α| ≤ g (graded order, :func:`multi_indices`):

    U[i,α] = a_|α| · multinomial(|α|; α) · s^|α| · q_i^α,   V[j,α] = k1_j^α,   W[j,α] = k2_j^α,

so that P(S + M) = U (V ⊘ W)^T exactly (multinomial theorem), with rank r = C(g+d, d) (P30, P31).
Everything is batched over leading dimensions ``(..., n, d)``, differentiable, and holds O(n·r) numbers.
"""

from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from numbers import Rational, Real
from typing import TYPE_CHECKING, Sequence

from .validation import check_positive_int

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MEMORY_LIMIT_BYTES",
    "MultiIndexTable",
    "multi_indices",
    "feature_rank",
    "feature_memory_bytes",
    "check_feature_memory",
    "scan_memory_bytes",
    "check_scan_memory",
    "exact_coefficients",
    "monomials",
    "query_weights",
    "query_features",
    "feature_maps",
]

#: default cap on the feature tensors of one fast-path call (U, V, W and their autograd copies)
DEFAULT_MEMORY_LIMIT_BYTES = 4 << 30


@dataclass(frozen=True)
class MultiIndexTable:
    """All α ∈ N^d with |α| ≤ g in graded order, and how to build each monomial from a lower one.

    ``exponents[k]`` is the k-th α; ``degrees[k] = |α|``; ``multinomials[k] = |α|! / Π α_l!``.
    For degree t ≥ 1 the block ``offsets[t]:offsets[t+1]`` satisfies x^α = x[var] · x^{α − e_var} with
    ``parents[t-1]`` (positions of α − e_var in the degree t−1 block) and ``variables[t-1]``.
    """

    g: int
    d: int
    exponents: tuple[tuple[int, ...], ...]
    degrees: tuple[int, ...]
    multinomials: tuple[int, ...]
    offsets: tuple[int, ...]
    parents: tuple[tuple[int, ...], ...]
    variables: tuple[tuple[int, ...], ...]

    @property
    def rank(self) -> int:
        return len(self.exponents)


def _check_degree_dim(g: int, d: int) -> None:
    check_positive_int("degree g", g, minimum=0)
    check_positive_int("head dimension d", d)


def feature_rank(g: int, d: int) -> int:
    """P31: the number of multi-indices α ∈ N^d with |α| ≤ g, r = C(g+d, d)."""
    _check_degree_dim(g, d)
    return math.comb(g + d, d)


@lru_cache(maxsize=32)
def multi_indices(g: int, d: int) -> MultiIndexTable:
    """The multi-index table of L8 (graded; within a degree, combinations of variables in lexicographic order)."""
    _check_degree_dim(g, d)
    exponents: list[tuple[int, ...]] = []
    multinomials: list[int] = []
    degrees: list[int] = []
    offsets = [0]
    parents: list[tuple[int, ...]] = []
    variables: list[tuple[int, ...]] = []
    previous: dict[tuple[int, ...], int] = {(): 0}
    for t in range(g + 1):
        combos = list(itertools.combinations_with_replacement(range(d), t))
        if t > 0:
            parents.append(tuple(previous[c[1:]] for c in combos))
            variables.append(tuple(c[0] for c in combos))
        for c in combos:
            alpha = tuple(c.count(l) for l in range(d))
            exponents.append(alpha)
            degrees.append(t)
            multinomials.append(math.factorial(t) // math.prod(math.factorial(a) for a in alpha))
        previous = {c: k for k, c in enumerate(combos)}
        offsets.append(len(exponents))
    return MultiIndexTable(
        g, d, tuple(exponents), tuple(degrees), tuple(multinomials), tuple(offsets), tuple(parents), tuple(variables)
    )


def feature_memory_bytes(n_q: int, n1: int, n2: int, g: int, d: int, itemsize: int = 8, batch: int = 1) -> int:
    """Bytes the fast path holds for features: U, V, W and their per-degree monomial blocks (×2), plus r×d sums."""
    r = feature_rank(g, d)
    return batch * itemsize * (2 * (n_q + n1 + n2) * r + 4 * r * d)


def check_feature_memory(
    n_q: int, n1: int, n2: int, g: int, d: int, itemsize: int, batch: int, memory_limit_bytes: int
) -> None:
    """Raise ``ValueError`` naming ``memory_limit_bytes`` when the features of rank C(g+d, d) would not fit (L8, L11)."""
    need = feature_memory_bytes(n_q, n1, n2, g, d, itemsize, batch)
    if need > memory_limit_bytes:
        raise ValueError(
            f"features of rank r = C(g+d, d) = C({g}+{d}, {d}) = {feature_rank(g, d)} need {need} bytes, over "
            f"memory_limit_bytes = {memory_limit_bytes}; lower the degree g or the head dimension d"
        )


def scan_memory_bytes(n_q: int, n_k: int, g: int, d: int, chunk: int, itemsize: int = 8, batch: int = 1) -> int:
    """Bytes the chunked scan of A1 holds at its peak (the backward): per step the features of C rows of q, k1, k2
    (3·C·r, twice with their autograd copies), six C × r × (d+1) prefix/suffix tensors, and the ⌈n/C⌉ pairs of
    r × (d+1) carries; plus the O(n·d) inputs, outputs and gradients (16·n·(d+1))."""
    r = feature_rank(g, d)
    steps = -(-max(n_q, n_k) // chunk)
    per_batch = 6 * chunk * r + 6 * chunk * r * (d + 1) + (2 * steps + 4) * r * (d + 1) + 16 * max(n_q, n_k) * (d + 1)
    return batch * itemsize * per_batch


def check_scan_memory(
    n_q: int, n_k: int, g: int, d: int, chunk: int, itemsize: int, batch: int, memory_limit_bytes: int
) -> None:
    """Raise ``ValueError`` naming ``memory_limit_bytes`` when :func:`scan_memory_bytes` exceeds it (L8, L11)."""
    need = scan_memory_bytes(n_q, n_k, g, d, chunk, itemsize, batch)
    if need > memory_limit_bytes:
        raise ValueError(
            f"the feature scan at rank r = C(g+d, d) = C({g}+{d}, {d}) = {feature_rank(g, d)}, chunk {chunk}, batch "
            f"{batch} needs {need} bytes, over memory_limit_bytes = {memory_limit_bytes}; lower the degree g (smaller "
            f"B or larger ε), the head dimension d, the chunk size or the batch"
        )


def exact_coefficients(coefficients: Sequence[Real]) -> tuple[Fraction, ...]:
    """The shifted coefficients a_0..a_g as exact rationals (floats convert exactly); finite, not all zero."""
    if len(coefficients) == 0:
        raise ValueError("coefficients must hold a_0..a_g with g >= 0; got an empty sequence")
    out = []
    for t, a in enumerate(coefficients):
        torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: do not import it here
        if torch is not None and isinstance(a, torch.Tensor):
            a = a.item()
        if not isinstance(a, (Rational, float)) or isinstance(a, bool) or (isinstance(a, float) and not math.isfinite(a)):
            raise ValueError(f"coefficients[{t}] must be a finite rational or float; got {a!r}")
        out.append(Fraction(a))
    if all(a == 0 for a in out):
        raise ValueError("coefficients must not all be zero")
    return tuple(out)


def monomials(x: torch.Tensor, g: int) -> torch.Tensor:
    """All monomials x^α, |α| ≤ g, of the rows of x ``(..., n, d)`` → ``(..., n, r)`` (graded order, L8)."""
    import torch

    table = multi_indices(g, x.shape[-1])
    blocks = [torch.ones_like(x[..., :1])]
    for t in range(1, g + 1):
        parent = torch.tensor(table.parents[t - 1], device=x.device)
        var = torch.tensor(table.variables[t - 1], device=x.device)
        blocks.append(blocks[-1].index_select(-1, parent) * x.index_select(-1, var))
    return torch.cat(blocks, dim=-1)


def query_weights(coefficients: Sequence[Fraction], scale: float, d: int, dtype, device) -> torch.Tensor:
    """c_α = a_|α| · multinomial(|α|; α) · s^|α| ``(r,)``, each rounded once from its exact rational value (to
    float64, then to ``dtype``)."""
    import torch

    return torch.tensor(_weights(tuple(coefficients), scale, d), dtype=torch.float64, device=device).to(dtype)


@lru_cache(maxsize=64)
def _weights(coefficients: tuple[Fraction, ...], scale: float, d: int) -> tuple[float, ...]:
    table = multi_indices(len(coefficients) - 1, d)
    s = Fraction(scale)
    return tuple(float(coefficients[t] * m * s**t) for t, m in zip(table.degrees, table.multinomials))


def query_features(q: torch.Tensor, coefficients: Sequence[Real], scale: float) -> torch.Tensor:
    """U of L8: ``(..., n, r)`` with U[i,α] = a_|α| · multinomial(|α|; α) · s^|α| · q_i^α."""
    from .reference import resolve_scale

    a = exact_coefficients(coefficients)
    s = resolve_scale(scale, q.shape[-1])
    return monomials(q, len(a) - 1) * query_weights(a, s, q.shape[-1], q.dtype, q.device)


def feature_maps(
    q: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, coefficients: Sequence[Real], scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U, V, W) of L8 with P(S + M) = U (V ⊘ W)^T, S = s · Q (K1 ⊘ K2)^T (P30)."""
    g = len(exact_coefficients(coefficients)) - 1
    return query_features(q, coefficients, scale), monomials(k1, g), monomials(k2, g)
