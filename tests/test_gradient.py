"""Closed-form gradient API (issue #2): L4 Function under gradcheck/gradgradcheck, chunking, bad input."""

from __future__ import annotations

import pytest
import torch

from verified_ta import gradient as gr
from verified_ta.fp_bounds import objective_rounding_bounds
from verified_ta.reference import tensor_attention_reference
from verified_ta.spec import spec


def _objective(n=3, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, d)] * 6 + [(d, d * d), (d * d, d)]
    return [torch.rand(s, generator=g, dtype=torch.float64) * 2 - 1 for s in shapes]


@spec("L4", "P29")
@pytest.mark.parametrize("causal", [False, True])
def test_l4_function_passes_gradcheck_and_gradgradcheck(causal):
    g = torch.Generator().manual_seed(0)
    x = [(torch.rand(2, 4, 3, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_() for _ in range(5)]

    def f(*t):
        return tensor_attention_reference(*t, causal=causal, return_lse=True, chunk_size=3)

    assert torch.autograd.gradcheck(f, x, fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda *t: f(*t)[0], x, fast_mode=True)


@spec("L1")
def test_chunked_gradient_matches_materialised_for_every_chunk_size():
    args = _objective(n=5)
    bounds = objective_rounding_bounds(*args)
    loss0, G0 = gr.closed_form_gradient(*args)
    for chunk in (1, 2, 5, 7):
        loss1, G1 = gr.closed_form_gradient(*args, chunk_size=chunk)
        # same sums in another order: each within the order-free γ-bound of the exact value, so within twice of each other
        assert ((G1 - G0).abs() <= 2 * bounds["G"]).all()
        assert abs(float(loss1 - loss0)) <= 2 * float(bounds["loss"])


@pytest.mark.parametrize(
    "index, shape, match",
    [(0, (3, 3), "A2 must have shape"), (5, (2, 2), "E must have shape"), (6, (2, 2), "X must have shape"),
     (7, (4,), "Y must be a 2-D matrix")],
)
def test_bad_shapes_are_rejected(index, shape, match):
    args = _objective()
    if index == 0:
        index = 1
    args[index] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        gr.closed_form_gradient(*args)


def test_bad_values_and_chunks_are_rejected():
    args = _objective()
    args[6] = args[6].clone()
    args[6][0, 0] = float("inf")
    with pytest.raises(ValueError, match="X must be finite"):
        gr.closed_form_gradient(*args)
    args = _objective()
    args[0] = args[0].to(torch.int64)
    with pytest.raises(ValueError, match="A1 dtype"):
        gr.loss(*args)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1"):
        gr.closed_form_gradient(*_objective(), chunk_size=0)
    with pytest.raises(ValueError, match="n >= 1"):
        gr.closed_form_gradient(*[torch.zeros(0, 2)] * 6, torch.zeros(2, 4), torch.zeros(4, 2))
