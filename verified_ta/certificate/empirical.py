"""``certify --empirical K``: observed error / bound on K small instances against the mpmath oracle (SPEC L9, L10).

A sanity check reported in the certificate's ``unverified`` section: it can only downgrade a verdict (an observed
error above its bound is a bug to report), never support one. Instances alternate between uniform entries in
[−B, B] and adversarial ones (rows of ±B, so scores reach ±M); n = min(n, 6) keeps the oracle cheap.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, Sequence

from .inputs import CertifyInputs, scale_upper
from .limits import TimeLimit

__all__ = ["empirical_instances"]

ORACLE_DPS = 40  # digits of the mpmath oracle: far below the float64 rounding terms being compared


def empirical_instances(
    inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction, delta: Fraction, count: int, limit: TimeLimit
) -> dict[str, Any]:
    """``count`` instances (stops early at the time limit): observed ‖approx − exact‖∞ against its bound."""
    import numpy as np
    import torch

    from ..error_bounds import forward_error_bound, forward_rounding_term, gradient_error_bounds, gradient_rounding_term
    from ..fast import fast_objective_gradient, fast_tensor_attention
    from ..gradient import compose_X, compose_Y
    from ..oracles import mp_attention, mp_gradient
    from ..products import khatri_rao

    n, d, B, dtype = min(inputs.n, 6), inputs.d, inputs.B, inputs.torch_dtype
    scale = (None if inputs.scale == "1/d" else 1 / math.sqrt(d) if inputs.scale == "1/sqrt(d)"
             else float(Fraction(inputs.scale)))
    rows = []
    for i in range(count):
        if limit.expired():
            break
        gen = torch.Generator().manual_seed(i)

        def draw(rows_: int, bound: float) -> torch.Tensor:
            if i % 2 == 0:
                return ((torch.rand(rows_, d, generator=gen, dtype=torch.float64) * 2 - 1) * bound).to(dtype)
            signs = torch.randint(0, 2, (rows_, 1), generator=gen).to(torch.float64) * 2 - 1
            return (signs * bound * torch.ones(rows_, d, dtype=torch.float64)).to(dtype)

        q, k1, k2, v1, v2 = (draw(n, B) for _ in range(5))
        if inputs.target == "forward":
            approx = fast_tensor_attention(q, k1, k2, v1, v2, shifted, scale=scale)
            exact, _ = mp_attention(q, k1, k2, v1, v2, scale=scale, dps=ORACLE_DPS)
            observed = float(np.max(np.abs(exact - approx.double().numpy().astype(object))))
            vn = float(v1.abs().max()) * float(v2.abs().max())
            bound = forward_error_bound(delta, vn) + forward_rounding_term(shifted, M, d, n, n, dtype, delta, vn)
        else:
            eye = torch.eye(d, dtype=dtype)
            E = draw(n, B * B)
            res = fast_objective_gradient(q, k1, k2, v1, v2, E, eye, eye, eye, eye, eye, shifted, scale=scale)
            X, Y = compose_X(eye, eye, eye).double(), compose_Y(eye, eye).double()
            exact = mp_gradient(*(t.double() for t in (q, k1, k2, v1, v2, E)), X, Y, scale=scale, dps=ORACLE_DPS)
            observed = float(np.max(np.abs(exact - res.G.double().numpy().astype(object))))
            h = khatri_rao(v1.double(), v2.double())
            H = float(h.abs().max())
            c = res.c.double()
            q_norm = float((c @ h.T).abs().max())
            a_norms = tuple(float(t.abs().max()) for t in (q, k1, k2))
            c_l1 = float(c.abs().sum(-1).max())
            s_up = scale_upper(inputs.scale, d)
            bound = gradient_error_bounds(delta, H, q_norm, n, d, a_norms, s_up).G + gradient_rounding_term(
                shifted, M, n, d, dtype, delta, H, float(E.abs().max()), c_l1, a_norms, s_up)
        rows.append({"kind": "random" if i % 2 == 0 else "adversarial", "observed": observed, "bound": bound,
                     "ratio": observed / bound if bound > 0 else None})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    return {"n": n, "d": d, "target": inputs.target, "requested": count, "instances": rows,
            "worst_ratio": max(ratios, default=None)}
