"""Tensor products in the project's single gauge (SPEC §1: numpy C order, 0-based).

Every function works on numpy arrays (float or ``object`` dtype, so z3 and mpmath entries work too)
and on torch tensors, and broadcasts over leading batch dimensions ``(..., rows, cols)``.
Only elementwise products and ``reshape`` are used, so the index maps are the ones proved in T17.
"""

from __future__ import annotations

from typing import Any

__all__ = ["kron", "khatri_rao", "face_split", "vec", "unvec", "pair_index"]


def _check_matrix(name: str, x: Any) -> tuple[int, ...]:
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., rows, cols); got shape {shape}")
    return shape


def _batch(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    batches = {s[:-2] for s in shapes}
    if len(batches) != 1:
        raise ValueError(f"batch dimensions must match; got {[s[:-2] for s in shapes]}")
    return shapes[0][:-2]


def pair_index(i1: int, i2: int, n2: int) -> int:
    """Row of the pair (i1, i2) in a ⊗/⊘ product whose second factor has n2 rows (SPEC §1, T17)."""
    return i1 * n2 + i2


def kron(a: Any, b: Any) -> Any:
    """Kronecker product A ⊗ B: ``[(i1*n2+i2), (j1*d2+j2)] = A[i1,j1]·B[i2,j2]`` (= ``numpy.kron``)."""
    sa, sb = _check_matrix("a", a), _check_matrix("b", b)
    batch = _batch(sa, sb)
    (n1, d1), (n2, d2) = sa[-2:], sb[-2:]
    out = a[..., :, None, :, None] * b[..., None, :, None, :]
    return out.reshape(*batch, n1 * n2, d1 * d2)


def khatri_rao(c: Any, d: Any) -> Any:
    """Column-wise Kronecker C ⊘ D: ``[(i1*n2+i2), l] = C[i1,l]·D[i2,l]`` (SPEC §1)."""
    sc, sd = _check_matrix("c", c), _check_matrix("d", d)
    batch = _batch(sc, sd)
    if sc[-1] != sd[-1]:
        raise ValueError(f"khatri_rao needs equal column counts; got c {sc} and d {sd}")
    n1, n2, k = sc[-2], sd[-2], sc[-1]
    return (c[..., :, None, :] * d[..., None, :, :]).reshape(*batch, n1 * n2, k)


def face_split(c: Any, d: Any) -> Any:
    """Row-wise Kronecker C ⊖ D: ``[i, (l1*k2+l2)] = C[i,l1]·D[i,l2]`` (SPEC §1)."""
    sc, sd = _check_matrix("c", c), _check_matrix("d", d)
    batch = _batch(sc, sd)
    if sc[-2] != sd[-2]:
        raise ValueError(f"face_split needs equal row counts; got c {sc} and d {sd}")
    n, k1, k2 = sc[-2], sc[-1], sd[-1]
    return (c[..., :, :, None] * d[..., :, None, :]).reshape(*batch, n, k1 * k2)


def vec(x: Any) -> Any:
    """Row-major vectorisation ``vec(X) = X.reshape(-1)`` of the last two dimensions (SPEC §1)."""
    s = _check_matrix("x", x)
    return x.reshape(*s[:-2], s[-2] * s[-1])


def unvec(v: Any, rows: int, cols: int) -> Any:
    """Inverse of :func:`vec`: the last dimension (length rows·cols) back to ``(rows, cols)`` (T17)."""
    s = tuple(getattr(v, "shape", ()))
    if len(s) < 1 or rows < 1 or cols < 1 or s[-1] != rows * cols:
        raise ValueError(f"unvec needs a last dimension of rows*cols = {rows}*{cols} >= 1; got shape {s}")
    return v.reshape(*s[:-1], rows, cols)
