"""Unit tests of verified_ta.products (SPEC §1): shapes, batching, numpy/torch/object-dtype agreement, bad input."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch

from verified_ta.products import face_split, khatri_rao, kron, unvec, vec
from verified_ta.spec import spec

RNG = np.random.default_rng(0)


def rand(*shape: int) -> np.ndarray:
    return RNG.uniform(-1, 1, shape)


BINARY = {
    "kron": (kron, (2, 3), (4, 5), (8, 15)),
    "khatri_rao": (khatri_rao, (2, 3), (5, 3), (10, 3)),
    "face_split": (face_split, (4, 2), (4, 3), (4, 6)),
}


@spec("T17")
@pytest.mark.parametrize("name", BINARY)
def test_shapes_and_batching(name):
    fn, sa, sb, sout = BINARY[name]
    a, b = rand(2, 3, *sa), rand(2, 3, *sb)
    out = fn(a, b)
    assert out.shape == (2, 3, *sout)
    for idx in np.ndindex(2, 3):  # batched = per-item, bitwise (one product per entry)
        assert np.array_equal(out[idx], fn(a[idx], b[idx]))


@spec("T17")
def test_vec_unvec_shapes():
    x = rand(2, 3, 4)
    assert vec(x).shape == (2, 12)
    assert unvec(vec(x), 3, 4).shape == (2, 3, 4)
    assert vec(rand(1, 1)).shape == (1,)


@spec("T13")
@pytest.mark.parametrize("name", BINARY)
def test_numpy_and_torch_agree_bitwise(name):
    fn, sa, sb, _ = BINARY[name]
    a, b = rand(2, *sa), rand(2, *sb)
    t = fn(torch.from_numpy(a), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor)
    assert np.array_equal(t.numpy(), fn(a, b))


def _objects(x: np.ndarray, kind) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(x.shape):
        out[idx] = kind(float(x[idx]))
    return out


@spec("T13")
@pytest.mark.parametrize("name", BINARY)
def test_object_arrays_exact(name):
    """Fractions give the exact products; float64 results are those rounded once (IEEE products are correctly
    rounded), and 50-digit mpf products of doubles are exact (106 bits < 166), so all three agree exactly."""
    fn, sa, sb, _ = BINARY[name]
    a, b = rand(*sa), rand(*sb)
    exact = fn(_objects(a, Fraction), _objects(b, Fraction))
    assert exact.dtype == object and isinstance(exact.flat[0], Fraction)
    assert np.array_equal(np.vectorize(float)(exact).astype(np.float64), fn(a, b))
    with mpmath.workdps(50):
        mp = fn(_objects(a, mpmath.mpf), _objects(b, mpmath.mpf))
        assert all(m == mpmath.mpf(e.numerator) / e.denominator for m, e in zip(mp.flat, exact.flat))  # 2^k denominators


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: kron(np.ones(3), np.ones((2, 2))), "a must have at least 2 dimensions"),
        (lambda: khatri_rao(np.ones((2, 2)), np.ones(3)), "d must have at least 2 dimensions"),
        (lambda: face_split(np.ones(()), np.ones((2, 2))), "c must have at least 2 dimensions"),
        (lambda: vec(np.ones(4)), "x must have at least 2 dimensions"),
        (lambda: kron(np.ones((2, 2, 2)), np.ones((3, 2, 2))), "batch dimensions must match"),
        (lambda: khatri_rao(np.ones((2, 3)), np.ones((2, 4))), "equal column counts"),
        (lambda: face_split(np.ones((2, 3)), np.ones((3, 3))), "equal row counts"),
        (lambda: unvec(np.ones(6), 4, 2), "rows\\*cols"),
        (lambda: unvec(np.ones(6), 0, 6), "rows\\*cols"),
        (lambda: unvec(np.ones(()), 1, 1), "rows\\*cols"),
    ],
)
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
