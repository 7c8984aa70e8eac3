"""The shipped softmax and the gradient chain (P18, L6, T14–T16, SPEC §3 coordinate chain, L1–L3).

``softmax_rows`` runs unchanged on :class:`proofs.symarray.SymArray` inputs: its row max becomes a shift M (any
real: the proof holds for every M, and E(z − M)E(M) = E(z) ground instances make it cancel, L6), its division an
unknown w with w·den = num, exp the uninterpreted ``E``. Derivatives are dual numbers
(:class:`proofs.engine.Dual`) pushed through the shipped code. The SPEC softmax, where a statement needs it, is
the pair (f, α) with hypotheses E(z) = α∘f, α > 0, f 1 = 1 (one solution: α = ΣE(z)), and a derivative f' is
pinned by its defining equation (f·α)' = u', unique because α > 0.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import z3

from verified_ta import gradient
from verified_ta.gradient import chain_terms, compose_X, compose_Y, factor_gradients, gradient_from_p, value_factor_gradients
from verified_ta.products import kron, vec
from verified_ta.spec import spec

from .engine import Dual, Ops, Statement, SweptProof, lift, parts
from .symarray import SymArray

__all__ = ["PROOFS"]

V = dict[str, np.ndarray]


def _flat(*arrays: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=object).reshape(-1) for a in arrays])


def _unit(shape: tuple[int, ...], index: tuple[int, ...]) -> np.ndarray:
    e = np.zeros(shape, dtype=int).astype(object)
    e[index] = 1
    return e


def _perturb(x: np.ndarray, index: tuple[int, ...]) -> np.ndarray:
    """x + ε·e_index as a Dual array (forward derivative along one coordinate)."""
    return np.vectorize(Dual, otypes=[object])(x, _unit(x.shape, index))


def _shipped_softmax(z: np.ndarray, ops: Ops) -> np.ndarray:
    """The shipped ``softmax_rows`` on z (a SymArray: its row max is a shift, its division an unknown)."""
    return np.asarray(gradient.softmax_rows(SymArray(z, ops)))


def _column_max_softmax(z: Any) -> Any:
    """A planted bug for the controls: the *column* max subtracted (not a per-row shift, so it does not cancel)."""
    u = np.exp(z - z.max(axis=0, keepdims=True))
    return u / u.sum(axis=-1, keepdims=True)


@spec("P18", "L6")
def p18_shipped_softmax(v: V, ops: Ops, mutant: bool) -> Statement:
    """The shipped ``softmax_rows`` is the SPEC softmax: w·ΣE(z) = E(z) row by row (exp uninterpreted, the row max
    cancels by the L6 instances E(z − M)E(M) = E(z)), its rows sum to 1 and its entries are > 0.

    Control: the column max subtracted instead of the row max.
    """
    z = v["z"]
    w = np.asarray(_column_max_softmax(SymArray(z, ops))) if mutant else _shipped_softmax(z, ops)
    u = np.vectorize(ops.exp, otypes=[object])(z)
    ones = np.ones(z.shape[0], dtype=int).astype(object)
    return Statement(_flat(w * u.sum(axis=1)[:, None], w.sum(axis=1)), _flat(u, ones),
                     claimed_positive=list(w.reshape(-1)))


def _softmax_direction(v: V, ops: Ops) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f, J x, x): the shipped ``softmax_rows`` on the dual row z + εx gives f and the directional derivative J x."""
    z, x = v["z"], v["x"]
    f, jx = parts(_shipped_softmax(np.vectorize(Dual, otypes=[object])(z, x), ops))
    return f[0], jx[0], x[0]


@spec("T15")
def t15_softmax_jacobian(v: V, ops: Ops, mutant: bool) -> Statement:
    """∂f_i/∂z_j = f_i(δ_ij − f_j) for the shipped ``softmax_rows`` (f its output): by dual numbers along every
    direction x at once, J x = f∘x − ⟨f, x⟩f.

    Control: the wrong index f_i(δ_ij − f_i), i.e. J x = f∘x − f∘f·Σx.
    """
    f, jx, x = _softmax_direction(v, ops)
    claimed = f * x - (f * f * x.sum() if mutant else f * (f * x).sum())
    return Statement(jx, claimed)


@spec("T15")
def t15_jacobian_psd(v: V, ops: Ops, mutant: bool) -> Statement:
    """x^T J x = ½ Σ_ij f_i f_j (x_i − x_j)² ≥ 0 for the Jacobian J of the shipped ``softmax_rows`` (a sum of
    squares: J is PSD). T15 and Σf = 1 for the shipped code are a cut (proved first, from the code's own facts).

    Control: the factor ½ dropped.
    """
    f, jx, x = _softmax_direction(v, ops)
    ops.cut("shipped softmax: J x = f∘x − ⟨f,x⟩f, Σf = 1",
            [*(a == b for a, b in zip(jx, f * x - f * (f * x).sum())), z3.Sum(list(f)) == 1])
    n = len(f)
    half = ops.const(1 if mutant else Fraction(1, 2))
    sos = sum(f[i] * f[j] * (x[i] - x[j]) * (x[i] - x[j]) for i in range(n) for j in range(n)) * half
    return Statement(_flat([(x * jx).sum()]), _flat([sos]))


@spec("L6", "P21")
def l6_shift_cancels(v: V, ops: Ops, mutant: bool) -> Statement:
    """The shipped ``softmax_rows`` is invariant to a per-row shift c, given the instances E(z_k + c) = E(z_k)E(c)
    of E(a+b) = E(a)E(b) (L6: e^{−M} cancels in D^{-1}A).

    Control: only the first entry of the row shifted.
    """
    z, c = v["z"], v["c"][0]
    shifted = range(1 if mutant else z.shape[1])
    moved = z.copy()
    moved[:, shifted] = moved[:, shifted] + c
    ec = ops.exp(c)
    eqs = [(ops.exp(moved[j, k]), ops.exp(z[j, k]) * ec) for j in range(z.shape[0]) for k in shifted]
    return Statement(_shipped_softmax(moved, ops), _shipped_softmax(z, ops), equalities=eqs)


def _spec_q(f: np.ndarray, h: np.ndarray, e: np.ndarray) -> np.ndarray:
    """q = c h^T with c = f h − E (SPEC §3 table), written here independently of ``chain_terms``."""
    n, m = f.shape
    c = np.array([[sum(f[j, k] * h[k, o] for k in range(m)) - e[j, o] for o in range(h.shape[1])] for j in range(n)],
                 dtype=object)
    return np.array([[sum(c[j, o] * h[k, o] for o in range(h.shape[1])) for k in range(m)] for j in range(n)],
                    dtype=object)


@spec("T14")
def t14_inner_products(v: V, ops: Ops, mutant: bool) -> Statement:
    """On the shipped ``chain_terms`` (p1 = f∘q, r = p1 1): ⟨a, p1_j⟩ = ⟨a∘f_j, q_j⟩ = a^T diag(f_j) q_j and
    r_j = ⟨f_j, q_j⟩ for every row j and vector a (T14), q from the SPEC table.

    Control: diag(f_j) dropped (a^T q_j).
    """
    f, h, e, a = v["f"], v["h"], v["E"], v["a"]
    t = gradient.chain_terms(f, h, e)
    q = _spec_q(f, h, e)
    lhs, rhs = [], []
    for j in range(f.shape[0]):
        middle = a[j] @ q[j] if mutant else a[j] @ np.diag(f[j]) @ q[j]
        lhs += [(a[j] * t.p1[j]).sum(), (a[j] * t.p1[j]).sum(), t.r[j]]
        rhs += [((a[j] * f[j]) * q[j]).sum(), middle, (f[j] * q[j]).sum()]
    return Statement(_flat(lhs), _flat(rhs))


@spec("T16", "P25")
def t16_jacobian_product_and_row_sums(v: V, ops: Ops, mutant: bool) -> Statement:
    """Rows of the shipped p equal (diag(f_j0) − f_j0 f_j0^T) q_j0, and rows of p sum to 0 when rows of f sum to 1.

    p comes from the shipped ``chain_terms(f, h, E)``, q from the SPEC table. Control: p2 with column instead of
    row scaling (p1 − f·diag(1^T p1)).
    """
    f, h, e = v["f"], v["h"], v["E"]
    t = chain_terms(f, h, e)
    p = t.p1 - f * t.p1.sum(axis=0)[None, :] if mutant else t.p
    q = _spec_q(f, h, e)
    jac_q = np.stack([(np.diag(f[j]) - f[j][:, None] * f[j][None, :]) @ q[j] for j in range(f.shape[0])])
    zeros = np.zeros(f.shape[0], dtype=int).astype(object)
    return Statement(_flat(jac_q, p.sum(axis=1)), _flat(p, zeros), equalities=[(f[j].sum(), 1) for j in range(f.shape[0])])


def _big(a1: np.ndarray, a2: np.ndarray, a3: np.ndarray) -> np.ndarray:
    """𝔸 = A1⊗A2⊗A3 (n³ × d³; block j0 = rows j0·n² … (j0+1)·n² − 1)."""
    return kron(kron(a1, a2), a3)


def _scores(a1, a2, a3, x, s):
    """z = s · A1 X (A2⊗A3)^T (SPEC §3)."""
    return (a1 @ x @ kron(a2, a3).T) * s


@spec("L1", "T15", "T7")
def chain_coordinate_derivatives(v: V, ops: Ops, mutant: bool) -> Statement:
    """SPEC §3 lemma chain per coordinate x_i of vec(X), with exp uninterpreted:

    du_j0/dx_i = s·𝔸_j0,i ∘ u_j0;  dα_j0/dx_i = ⟨s·𝔸_j0,i, u_j0⟩;  df_j0/dx_i = s·𝔸_j0,i ∘ f_j0 − ⟨s·𝔸_j0,i, f_j0⟩ f_j0,
    derivatives taken by dual numbers through the scores z = s·A1 X (A2⊗A3)^T (dα = Σ du; df is proved by
    solving df·α + f·dα = du). Control: the 1/d scale missing in the claim.
    """
    a1, a2, a3, x = v["A1"], v["A2"], v["A3"], v["X"]
    n, d = a1.shape
    s = ops.const(Fraction(1, d))
    f, alpha = ops.softmax(_scores(a1, a2, a3, x, s), normaliser=True)
    big = _big(a1, a2, a3)
    claimed = ops.const(1) if mutant else s
    lhs, rhs = [], []
    for i in range(d * d * d):
        zd = _scores(lift(a1), a2, a3, _perturb(x, np.unravel_index(i, x.shape)), s)
        uv, ue = parts(np.vectorize(ops.exp_dual, otypes=[object])(zd))
        col = big[:, i].reshape(n, n * n) * claimed  # s·𝔸_{j0,i} for every j0
        du = col * uv
        dalpha = du.sum(axis=1)
        df = col * f - (col * f).sum(axis=1)[:, None] * f
        lhs += [ue, df * alpha[:, None] + f * dalpha[:, None]]  # du; df·α + f·α'
        rhs += [du, ue]  # claimed du; u'
    return Statement(_flat(*lhs), _flat(*rhs))


@spec("L1", "T16")
def chain_closed_form_gradient(v: V, ops: Ops, mutant: bool) -> Statement:
    """dLoss/dx_i of the loss written here, ½Σ(f h − E)² (dual numbers, df from the lemma above)
    = s·Σ_j0,i0 c[j0,i0]·𝔸_j0,i^T(diag(f_j0) − f_j0 f_j0^T)h_i0 (coordinate form)
    = vec(``gradient_from_p``(A1, A2, A3, p, s)) with p from the shipped ``chain_terms`` (L1), for every f, E and
    every value matrix h.

    h is a free n²×d matrix: the identity for all h contains h = (A4⊗A5)Y = (A4Y1)⊘(A5Y2) (T1, T8) and
    keeps the polynomials at degree 8 instead of 12, which is what lets z3 reach n = d = 3 (with h
    expanded it answers ``unknown`` at n = 2, d = 3 after 30 s). Control: L1 without the 1/d.
    """
    a1, a2, a3, e, h, f = (v[k] for k in ("A1", "A2", "A3", "E", "h", "f"))
    n, d = a1.shape
    s = ops.const(Fraction(1, d))
    grad = vec(gradient_from_p(a1, a2, a3, chain_terms(f, h, e).p, ops.const(1) if mutant else s))
    big = _big(a1, a2, a3)
    c = f @ h - e  # SPEC §3, not through chain_terms
    derivative, coordinate = [], []
    for i in range(d * d * d):
        col = big[:, i].reshape(n, n * n) * s
        df = col * f - (col * f).sum(axis=1)[:, None] * f
        derivative.append((c * (df @ h)).sum())  # d/dx_i of ½‖f h − E‖²
        coordinate.append(
            sum(col[j0] @ ((np.diag(f[j0]) - f[j0][:, None] * f[j0][None, :]) @ (h @ c[j0])) for j0 in range(n))
        )
    return Statement(_flat(derivative, coordinate), _flat(grad, grad))


@spec("L2")
def l2_factor_chain_rule(v: V, ops: Ops, mutant: bool) -> Statement:
    """d/dX_k ⟨G, X1(X2⊘X3)^T⟩ (dual numbers through ``compose_X``) = ``factor_gradients``(G, X1, X2, X3);
    control: X2 and X3 swapped in the call."""
    g, x1, x2, x3 = v["G"], v["X1"], v["X2"], v["X3"]
    got = factor_gradients(g, x1, x3, x2) if mutant else factor_gradients(g, x1, x2, x3)
    derivs = []
    for which, xk in enumerate((x1, x2, x3)):
        dk = np.empty(xk.shape, dtype=object)
        for idx in np.ndindex(*xk.shape):
            xs = [x1, x2, x3]
            xs[which] = _perturb(xk, idx)
            dk[idx] = (lift(g) * compose_X(*map(lift, xs))).sum().e
        derivs.append(dk)
    return Statement(_flat(*derivs), _flat(*got))


@spec("L3")
def l3_value_chain_rule(v: V, ops: Ops, mutant: bool) -> Statement:
    """dLoss/dY = (A4⊗A5)^T f^T c (dual numbers through ½‖f (A4⊗A5) Y − E‖², written here), and
    d/dY_k ⟨dY, Y1⊘Y2⟩ = ``value_factor_gradients``(dY, Y1, Y2); control: f c^T instead of f^T c (wrong index order)."""
    a4, a5, e, f, y, dy, y1, y2 = (v[k] for k in ("A4", "A5", "E", "f", "Y", "dY", "Y1", "Y2"))
    k45 = kron(a4, a5)
    c = f @ (k45 @ y) - e
    dY = np.empty(y.shape, dtype=object)
    for idx in np.ndindex(*y.shape):
        cd = lift(f) @ (lift(k45) @ _perturb(y, idx)) - e
        dY[idx] = sum(ci.v * ci.e for ci in cd.reshape(-1))
    formula = k45.T @ (f.T @ c)
    dfac = []
    for which, yk in enumerate((y1, y2)):
        dk = np.empty(yk.shape, dtype=object)
        for idx in np.ndindex(*yk.shape):
            ys = [y1, y2]
            ys[which] = _perturb(yk, idx)
            dk[idx] = (lift(dy) * compose_Y(*map(lift, ys))).sum().e
        dfac.append(dk)
    got = value_factor_gradients(dy, y2, y1) if mutant else value_factor_gradients(dy, y1, y2)
    return Statement(_flat(dY, *dfac), _flat(formula, *got))


PROOFS: list[SweptProof] = [
    SweptProof(
        ("P18", "L6"), "P18 shipped softmax_rows = SPEC softmax",
        "softmax_rows(z)·ΣE(z) = E(z); rows sum to 1; entries > 0 (max shift cancels by L6)", ("n", "m"),
        lambda s: {"z": (s["n"], s["m"])}, p18_shipped_softmax, "column max subtracted", dict(n=2, m=2),
        default_max=4,
    ),
    SweptProof(
        ("T15",), "T15 Jacobian of the shipped softmax_rows",
        "J x = f∘x − ⟨f,x⟩f, i.e. ∂f_i/∂z_j = f_i(δ_ij − f_j)",
        ("m",), lambda s: {"z": (1, s["m"]), "x": (1, s["m"])}, t15_softmax_jacobian, "wrong index: f_i(δ_ij − f_i)",
        dict(m=2), default_max=8,
    ),
    SweptProof(
        ("T15",), "T15 the Jacobian is PSD (SOS)",
        "x^T J x = ½Σ f_i f_j (x_i−x_j)² ≥ 0, J of the shipped softmax_rows",
        ("m",), lambda s: {"z": (1, s["m"]), "x": (1, s["m"])}, t15_jacobian_psd, "½ dropped", dict(m=2),
        default_max=8,
    ),
    SweptProof(
        ("L6", "P21"), "L6 shipped softmax_rows is shift invariant",
        "softmax_rows(z + c) = softmax_rows(z) given E(z_k+c) = E(z_k)E(c)", ("n", "m"),
        lambda s: {"z": (s["n"], s["m"]), "c": (1,)}, l6_shift_cancels, "only the first entry shifted",
        dict(n=1, m=2), default_max=4,
    ),
    SweptProof(
        ("T14",), "T14 inner products in the shipped chain_terms",
        "⟨a,p1_j⟩ = ⟨a∘f_j,q_j⟩ = a^T diag(f_j) q_j; r_j = ⟨f_j,q_j⟩", ("n", "m", "d"),
        lambda s: {"f": (s["n"], s["m"]), "h": (s["m"], s["d"]), "E": (s["n"], s["d"]), "a": (s["n"], s["m"])},
        t14_inner_products, "diag(f_j) dropped", dict(n=1, m=2, d=1), default_max=4,
    ),
    SweptProof(
        ("T16", "P25"), "T16 Jacobian product; rows of p sum to 0",
        "(diag(f)−ff^T)q = f∘q − ⟨f,q⟩f = p (shipped chain); p 1 = 0", ("n", "m", "d"),
        lambda s: {"f": (s["n"], s["m"]), "h": (s["m"], s["d"]), "E": (s["n"], s["d"])},
        t16_jacobian_product_and_row_sums, "column instead of row scaling in p2", dict(n=1, m=2, d=1),
        default_max=4,
    ),
    SweptProof(
        ("L1", "T15", "T7"), "§3 coordinate derivatives du, dα, df",
        "du/dx_i = s𝔸_i∘u; dα/dx_i = ⟨s𝔸_i,u⟩; df/dx_i = s𝔸_i∘f − ⟨s𝔸_i,f⟩f", ("n", "d"),
        lambda s: {"A1": (s["n"], s["d"]), "A2": (s["n"], s["d"]), "A3": (s["n"], s["d"]), "X": (s["d"], s["d"] ** 2)},
        chain_coordinate_derivatives, "missing 1/d", dict(n=1, d=2), default_max=3,
    ),
    SweptProof(
        ("L1", "T16"), "§3 dLoss/dx = coordinate form = L1",
        "d½‖fh−E‖²/dx_i = sΣc𝔸^T(diag f − ff^T)h = vec((1/d)A1^T p (A2⊗A3))_i for all f, E, h", ("n", "d"),
        lambda s: {
            "A1": (s["n"], s["d"]), "A2": (s["n"], s["d"]), "A3": (s["n"], s["d"]), "E": (s["n"], s["d"]),
            "h": (s["n"] ** 2, s["d"]), "f": (s["n"], s["n"] ** 2),
        },
        chain_closed_form_gradient, "missing 1/d", dict(n=1, d=2), default_max=3,
    ),
    SweptProof(
        ("L2",), "L2 chain rule to X1, X2, X3", "∂⟨G, X1(X2⊘X3)^T⟩/∂X_k = factor_gradients(G, X1, X2, X3)", ("d",),
        lambda s: {"G": (s["d"], s["d"] ** 2), "X1": (s["d"], s["d"]), "X2": (s["d"], s["d"]), "X3": (s["d"], s["d"])},
        l2_factor_chain_rule, "X2, X3 swapped in the call", dict(d=2), default_max=3,
    ),
    SweptProof(
        ("L3",), "L3 gradient in Y, Y1, Y2", "dLoss/dY = (A4⊗A5)^T f^T c; ∂⟨dY, Y1⊘Y2⟩/∂Y_k = value_factor_gradients",
        ("n", "d"),
        lambda s: {
            "A4": (s["n"], s["d"]), "A5": (s["n"], s["d"]), "E": (s["n"], s["d"]), "f": (s["n"], s["n"] ** 2),
            "Y": (s["d"] ** 2, s["d"]), "dY": (s["d"] ** 2, s["d"]), "Y1": (s["d"], s["d"]), "Y2": (s["d"], s["d"]),
        },
        l3_value_chain_rule, "Y1, Y2 swapped in the call", dict(n=1, d=2), default_max=3,
    ),
]
