"""SPEC IDs (../shared/SPEC.md) and the ``@spec`` tag that tests, properties and proofs carry.

``verified-ta coverage`` reads the tags statically (AST), so a tag must be a literal
``@spec("T1", ...)`` decorator. Unknown IDs raise at import time, so a typo cannot hide coverage.
"""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

SPEC_IDS: dict[str, str] = {
    "T1": "(A⊗B)(C⊘D) = (AC)⊘(BD)",
    "T2": "(C⊘D)^T = C^T ⊖ D^T",
    "T3": "(V⊘W)^T(P⊘R) = (V^T P)∘(W^T R)",
    "T4": "(V⊘W)^T(a⊗b) = (V^T a)∘(W^T b)",
    "T5": "(U1V1^T)∘(U2V2^T) = (U1⊖U2)(V1⊖V2)^T",
    "T6": "Hadamard of two ⊘-factorisations",
    "T7": "vec(A X B^T) = (A⊗B) vec(X)",
    "T8": "A1 X1 (X2⊘X3)^T (A2⊗A3)^T = (A1X1)((A2X2)⊘(A3X3))^T",
    "T9": "identity tensor I⊘I",
    "T10": "[Q(K1⊘K2)^T][i,a*n+b] = Σ_l Q K1 K2",
    "T11": "G1(G2⊘G3)^T is the mode-1 unfolding",
    "T12": "(A2⊗A3)^T(V⊘W) = (A2^T V)⊘(A3^T W)",
    "T13": "Kronecker transpose, mixed product, ⊘ associativity",
    "T14": "⟨x∘y, z⟩ = ⟨x, y∘z⟩",
    "T15": "softmax Jacobian",
    "T16": "(diag(f) − ff^T)q = f∘q − ⟨f,q⟩f; rows of p sum to 0",
    "T17": "index maps are bijections; vec/unvec inverse",
    "L1": "closed-form gradient dLoss/dX",
    "L2": "chain rule to X1, X2, X3",
    "L3": "gradient in Y, Y1, Y2",
    "L4": "gradients in Q, K1, K2, V1, V2",
    "L5": "bounded entries: score range",
    "L6": "shift by M",
    "L7": "polynomial degree for relative error",
    "L8": "low-rank polynomial features",
    "L9": "forward error bound",
    "L10": "gradient error bound",
    "L11": "almost-linear regime",
    "L12": "derivative bounds for the hardness reduction",
    "A1": "fast forward",
    "A2": "fast gradient",
    "A3": "hardness reduction",
    "P15": "forward equals einsum and the mpmath oracle",
    "P16": "invariance to ⊘ row order shared by K and V",
    "P17": "K2 = V2 = 1 gives matrix attention",
    "P18": "softmax rows ≥ 0 and sum to 1",
    "P19": "||Att||∞ ≤ ||V1||∞||V2||∞",
    "P20": "L5 score range",
    "P21": "invariance to per-row score shifts",
    "P22": "(k1,v1)↔(k2,v2) swap symmetry",
    "P23": "rank-1 logits factorise into two matrix attentions",
    "P24": "L1 = autograd = finite differences = coordinate form",
    "P25": "rows of p sum to 0; p2 = diag(r) f",
    "P26": "d/dλ Loss(λX0) = ⟨∇Loss, X0⟩",
    "P27": "G is affine in E",
    "P28": "E = f h ⇒ G = 0",
    "P29": "L2, L3, L4",
    "P30": "L8 exact factorisation",
    "P31": "rank formula",
    "P32": "certified relative error ≤ ε, monotone in g",
    "P33": "L9 on random and adversarial inputs",
    "P34": "T4 normaliser",
    "P35": "A2 equals L1 on f̃",
    "P36": "L10 holds",
    "P37": "no n×n² allocation on the fast path",
    "P38": "L12 derivative bounds",
    "P39": "Riemann-sum error ≤ b/m",
    "P40": "F(0) closed form",
    "P41": "log r / log n trend",
}


def spec(*ids: str) -> Callable[[F], F]:
    """Tag a test, property or proof with the SPEC IDs it covers (read by ``verified-ta coverage``)."""
    unknown = [i for i in ids if i not in SPEC_IDS]
    if not ids or unknown:
        raise ValueError(f"spec() needs known SPEC IDs; unknown: {unknown or 'none given'}")

    def decorate(fn: F) -> F:
        fn.spec_ids = tuple(getattr(fn, "spec_ids", ())) + ids  # type: ignore[attr-defined]
        try:
            import pytest
        except ImportError:  # proofs run outside pytest too
            return fn
        return pytest.mark.spec(*ids)(fn)

    return decorate
