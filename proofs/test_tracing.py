"""The tracer's model of numpy (proofs/tracing.py) agrees with numpy entry by entry, and refuses what it cannot model.

The all-sizes proofs trust this model (indexing with ... : None, broadcasting *, C-order reshape, .T, @); here the
shipped products run both ways at concrete sizes: on numpy arrays of distinct primes (a product of entries
names its factors), and on Traced arrays with constant sizes evaluated to numbers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("z3")

from proofs.tracing import NotTraceable, Poly, SymbolicBranch, Trace, Traced, concrete_value  # noqa: E402
from verified_ta.products import face_split, khatri_rao, kron, unvec, vec  # noqa: E402
from verified_ta.spec import spec  # noqa: E402

pytestmark = [pytest.mark.z3, pytest.mark.timeout(120)]


def _primes(count: int) -> list[int]:
    out, k = [], 2
    while len(out) < count:
        if all(k % p for p in out if p * p <= k):
            out.append(k)
        k += 1
    return out


def _inputs(*shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Integer arrays of distinct primes: every product of entries identifies its factors."""
    primes = iter(_primes(sum(math.prod(s) for s in shapes)))
    return [np.array([next(primes) for _ in range(math.prod(s))], dtype=object).reshape(s) for s in shapes]


def _traced(arr: np.ndarray) -> Traced:
    return Traced(arr.shape, lambda idx: arr[tuple(int(i) for i in idx)], None)


def _evaluate(t: Traced) -> np.ndarray:
    shape = tuple(int(s) for s in t.shape)
    out = np.empty(shape, dtype=object)
    for idx in itertools.product(*(range(s) for s in shape)):
        out[idx] = concrete_value(t.entry(tuple(Poly(i) for i in idx)))
    return out


CASES = {
    "kron": (lambda a, b: kron(a, b), [(2, 3), (3, 2)]),
    "khatri_rao": (lambda a, b: khatri_rao(a, b), [(3, 2), (4, 2)]),
    "face_split": (lambda a, b: face_split(a, b), [(3, 2), (3, 4)]),
    "vec": (lambda a: vec(a), [(3, 4)]),
    "unvec(vec)": (lambda a: unvec(vec(a), 2, 6), [(3, 4)]),
    "transpose, @": (lambda a, b: kron(a, b).T @ khatri_rao(a, b), [(2, 3), (3, 3)]),
    "reshape with -1": (lambda a: a.reshape(-1, 2), [(3, 4)]),
    "broadcast *": (lambda a, b: a[..., :, None, :] * b[..., None, :, :], [(2, 3), (4, 3)]),
}


@spec("T17")
@pytest.mark.parametrize("name", CASES)
def test_traced_entries_equal_numpy(name):
    fn, shapes = CASES[name]
    arrays = _inputs(*shapes)
    want = np.asarray(fn(*arrays))
    got = fn(*map(_traced, arrays))
    assert tuple(int(s) for s in got.shape) == want.shape
    assert np.array_equal(_evaluate(got), want)


@spec("T17")
def test_symbolic_division_records_its_side_condition():
    trace = Trace()
    n, i1, i2 = Poly("n"), Poly("i1"), Poly("i2")
    hi, lo = (i1 * n + i2).divmod_by(n, trace)
    assert (hi, lo) == (i1, i2)
    assert trace.side_conditions == [(i1, i2, n)]  # proved later: 0 <= i2 < n, i1 >= 0
    with pytest.raises(NotTraceable, match="not a product of sizes"):
        (i1 * n + i2).divmod_by(n + 1, trace)


@spec("T17")
def test_size_comparisons_are_answered_only_when_every_size_agrees():
    n, m = Poly("n"), Poly("m")
    assert not (n < 1) and n * m >= 1 and n * m != n + n * m and n == n and bool(n)  # so for every size >= 1
    with pytest.raises(SymbolicBranch, match="> 64"):
        _ = n * m > 64
    with pytest.raises(SymbolicBranch, match="depends on the sizes"):
        _ = n * m == n  # equal exactly when m = 1
    with pytest.raises(SymbolicBranch):
        _ = bool(n - 2)
    with pytest.raises(SymbolicBranch):
        _ = n - m < 0


@spec("T17")
def test_unmodelled_operations_are_refused():
    a = Traced((Poly("n"), Poly("d")), lambda idx: 0, Trace())
    with pytest.raises(NotTraceable, match="only ..., : and None"):
        a[0]
    with pytest.raises(NotTraceable, match="do not broadcast"):
        a * Traced((Poly("m"), Poly("d")), lambda idx: 0, Trace())
    with pytest.raises(NotTraceable, match="cannot reshape"):
        a.reshape(Poly("n"), Poly("n"))
