"""Conformance checks for anyone's tensor-attention implementation (SPEC §2, P15, P17, P18, P21, P22, L4).

An implementation is a callable ``fn(q, k1, k2, v1, v2, *, scale, causal) -> out`` or ``(out, lse)`` on tensors
``(batch, heads, n, d)``. Every check evaluates it on one :class:`~verified_ta.testing.strategies.ConformCase`
and returns a :class:`Measurement` (error, tolerance); :mod:`verified_ta.testing.runner` drives the checks with
Hypothesis. Tolerances:

- float64: twice the derived rounding bound of :func:`verified_ta.fp_bounds.attention_rounding_bounds`
  (implementation and float64 reference each within it), or once against the mpmath oracle;
- float32/bfloat16/float16 (FlashAttention rule): max error against the float64 truth
  <= 2 × the same-dtype torch reference's error + a rounding floor γ_{n²+2}(dtype) · magnitude (magnitude = the
  quantity evaluated on absolute values: the floor is the order-free error bound of the final accumulation).
"""

from __future__ import annotations

import importlib
import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from ..fp_bounds import attention_rounding_bounds, gamma, rounding_bound
from ..kernels.accuracy import abs_error, flash_rule_tolerance, reference_result
from ..kernels.baselines import kronecker_mask
from ..reference import tensor_attention_backward, tensor_attention_forward, tensor_attention_reference
from ..validation import FLOAT_DTYPES
from .strategies import ConformCase

__all__ = [
    "GRADIENT_NAMES",
    "ImplementationError",
    "Implementation",
    "load_impl",
    "ConformConfig",
    "make_config",
    "Measurement",
    "Check",
    "CHECKS",
    "l4_magnitudes",
]

#: the five L4 gradients, in the order of the inputs
GRADIENT_NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")
DTYPE_NAMES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: decimal digits of the mpmath oracle (P15); its own error is far below float64's unit roundoff
ORACLE_DPS = 30


class ImplementationError(Exception):
    """The implementation broke the calling convention (wrong return type or shape, not differentiable)."""


@dataclass(frozen=True)
class Implementation:
    """A user's callable ``fn(q, k1, k2, v1, v2, *, scale, causal)`` returning ``out`` or ``(out, lse)``."""

    fn: Callable[..., Any]
    name: str

    def __call__(self, q, k1, k2, v1, v2, *, scale: float, causal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(out, lse or None)`` after checking the calling convention."""
        result = self.fn(q, k1, k2, v1, v2, scale=scale, causal=causal)
        if isinstance(result, torch.Tensor):
            out, lse = result, None
        elif isinstance(result, (tuple, list)) and len(result) == 2 and all(isinstance(t, torch.Tensor) for t in result):
            out, lse = result
        else:
            raise ImplementationError(f"{self.name} must return out or (out, lse) tensors; got {type(result).__name__}")
        if tuple(out.shape) != tuple(q.shape):
            raise ImplementationError(f"{self.name} returned out of shape {tuple(out.shape)}; expected {tuple(q.shape)}")
        if lse is not None and tuple(lse.shape) != tuple(q.shape[:-1]):
            raise ImplementationError(
                f"{self.name} returned lse of shape {tuple(lse.shape)}; expected {tuple(q.shape[:-1])}"
            )
        return out, lse


def load_impl(target: str, search_path: str | Path | None = None) -> Implementation:
    """Import ``MODULE:CALLABLE`` (``search_path`` is put on ``sys.path`` first, like ``python -m`` does with the cwd)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"impl must have the form MODULE:CALLABLE (e.g. mypkg.attention:forward); got {target!r}")
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"impl module {module_name!r} cannot be imported: {exc}") from exc
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"impl: module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"impl {target!r} must name a callable; got {type(fn).__name__}")
    return Implementation(fn=fn, name=target)


@dataclass(frozen=True)
class ConformConfig:
    """What to test: device, dtype, whether causal masking and the backward are supported, shapes and budget."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    causal: bool = False
    backward: bool = True
    max_examples: int = 25
    seed: int | None = None
    min_n: int = 1
    max_n: int = 6
    head_dims: tuple[int, ...] = (1, 2, 3, 4)
    max_batch: int = 2
    max_heads: int = 2
    max_bound: float = 2.0

    def __post_init__(self) -> None:
        if self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {self.dtype}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]'; got {self.device!r}")
        for name, lo in (("max_examples", 1), ("min_n", 1), ("max_batch", 1), ("max_heads", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}")
        if isinstance(self.max_n, bool) or not isinstance(self.max_n, int) or self.max_n < self.min_n:
            raise ValueError(f"max_n must be an integer >= min_n = {self.min_n}; got {self.max_n!r}")
        if not self.head_dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.head_dims):
            raise ValueError(f"head_dims must be a non-empty tuple of integers >= 1; got {self.head_dims!r}")
        if not (isinstance(self.max_bound, (int, float)) and math.isfinite(self.max_bound) and 0 < self.max_bound <= 16):
            raise ValueError(f"max_bound must lie in (0, 16]; got {self.max_bound!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be an integer >= 0 or None; got {self.seed!r}")

    @property
    def exact(self) -> bool:
        """float64: derived bounds; otherwise the FlashAttention rule."""
        return self.dtype == torch.float64


def make_config(
    *,
    device: str = "cpu",
    dtype: str = "float64",
    causal: bool = False,
    forward_only: bool = False,
    max_examples: int = 25,
    seed: int | None = None,
    min_n: int = 1,
    max_n: int = 6,
    head_dims: str = "1,2,3,4",
    max_bound: float = 2.0,
) -> ConformConfig:
    """A :class:`ConformConfig` from command-line strings (shared by the CLI and the pytest plugin)."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {dtype!r}")
    try:
        dims = tuple(int(x) for x in head_dims.split(","))
    except ValueError:
        raise ValueError(f"head_dims must be comma-separated integers >= 1 (e.g. 16,32); got {head_dims!r}") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device; use --device cpu")
    return ConformConfig(
        device=device, dtype=DTYPE_NAMES[dtype], causal=causal, backward=not forward_only,
        max_examples=max_examples, seed=seed, min_n=min_n, max_n=max_n, head_dims=dims, max_bound=max_bound,
    )


@dataclass(frozen=True)
class Measurement:
    """One example's verdict: ``error <= tolerance`` (both finite) passes."""

    error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance

    @property
    def ratio(self) -> float:
        """error / tolerance (what Hypothesis maximises); inf for a non-finite error."""
        if not math.isfinite(self.error):
            return math.inf
        if self.tolerance <= 0:
            return 0.0 if self.error == 0 else math.inf
        return self.error / self.tolerance


def _worst(*ms: Measurement) -> Measurement:
    return max(ms, key=lambda m: (not m.passed, m.ratio))


def _abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a − b| in float64 on the CPU; a NaN or Inf in ``a`` counts as an infinite error."""
    return abs_error(a, b).nan_to_num(nan=math.inf, posinf=math.inf)


def l4_magnitudes(q, k1, k2, v1, v2, grad_out=None, *, scale: float, causal: bool) -> dict[str, torch.Tensor]:
    """SPEC §2 and L4 evaluated on absolute values (float64, materialised): the scale of each result's terms.

    ``out`` = Σ P|v1||v2|; dS-magnitude = P(|dO|·|V1∘V2| + Σ|dO||out|); dQ = |s| Σ dS|k1||k2|, and so on.
    """
    z = torch.einsum("...il,...al,...bl->...iab", q, k1, k2) * scale
    if causal:
        n_q, n1, n2 = z.shape[-3:]
        z = z.masked_fill(~kronecker_mask(n_q, n1, n2, device=z.device).reshape(n_q, n1, n2), -math.inf)
    p = torch.softmax(z.flatten(-2), -1).reshape(z.shape)
    aq, a1, a2, b1, b2 = (t.abs() for t in (q, k1, k2, v1, v2))
    out = torch.einsum("...iab,...al,...bl->...il", p, b1, b2)
    mags = {"out": out}
    if grad_out is None:
        return mags
    do = grad_out.abs()
    ds = p * (torch.einsum("...il,...al,...bl->...iab", do, b1, b2) + (do * out).sum(-1)[..., None, None])
    s = abs(scale)
    mags["dq"] = s * torch.einsum("...iab,...al,...bl->...il", ds, a1, a2)
    mags["dk1"] = s * torch.einsum("...iab,...il,...bl->...al", ds, aq, a2)
    mags["dk2"] = s * torch.einsum("...iab,...il,...al->...bl", ds, aq, a1)
    mags["dv1"] = torch.einsum("...iab,...il,...bl->...al", p, do, b2)
    mags["dv2"] = torch.einsum("...iab,...il,...al->...bl", p, do, b1)
    return mags


class Example:
    """One input set (exact float64 values representable in the tested dtype) and lazily evaluated quantities."""

    def __init__(self, impl: Implementation, config: ConformConfig, case: ConformCase, exact: tuple[torch.Tensor, ...]):
        self.impl, self.config, self.case = impl, config, case
        # round once to the tested dtype: the float64 values are then exactly the tested inputs
        self.inputs = tuple(t.to(dtype=config.dtype, device=config.device) for t in exact)
        self.exact = tuple(t.to("cpu", torch.float64) for t in self.inputs)
        self.kw = {"scale": case.scale, "causal": case.causal}

    @classmethod
    def of(cls, impl: Implementation, config: ConformConfig, case: ConformCase) -> "Example":
        return cls(impl, config, case, tuple(case.inputs()))

    def derived(self, exact: tuple[torch.Tensor, ...]) -> "Example":
        """The same case on other inputs (a property's second evaluation)."""
        return Example(self.impl, self.config, self.case, exact)

    @cached_property
    def upstream(self) -> torch.Tensor:
        return self.case.upstream(self.config.dtype, self.config.device)

    @cached_property
    def impl_out(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return self.impl(*self.inputs, **self.kw)

    def impl_grads(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A fresh forward and the five L4 gradients for the upstream dO (autograd through the implementation)."""
        leaves = [t.detach().clone().requires_grad_(True) for t in self.inputs]
        out, _ = self.impl(*leaves, **self.kw)
        if not out.requires_grad:
            raise ImplementationError(
                f"{self.impl.name} returned an output that does not require grad; test a forward-only "
                "implementation with --forward-only"
            )
        grads = torch.autograd.grad(out, leaves, grad_outputs=self.upstream, allow_unused=True)
        return out.detach(), tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))

    @cached_property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float64 reference ``(out, lse)`` (SPEC §2) on the exact inputs."""
        return tensor_attention_forward(*self.exact, **self.kw)

    @cached_property
    def reference_grads(self) -> tuple[torch.Tensor, ...]:
        """The L4 backward in float64."""
        out, lse = self.reference
        up = self.upstream.to("cpu", torch.float64)
        return tensor_attention_backward(up, *self.exact, out, lse, **self.kw)

    @cached_property
    def same_dtype(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The package reference evaluated in the tested dtype on the tested device (the FlashAttention baseline)."""
        with torch.no_grad():
            return tensor_attention_reference(*self.inputs, return_lse=True, **self.kw)

    def same_dtype_grads(self) -> tuple[torch.Tensor, ...]:
        """The five L4 gradients of the package reference in the tested dtype (autograd, upstream dO)."""
        return reference_result(self.inputs, self.upstream, dtype=self.config.dtype, **self.kw).grads

    def bounds(self, backward: bool = False) -> dict[str, torch.Tensor]:
        """Derived float64 rounding bounds (``fp_bounds.attention_rounding_bounds``), stacked over batch and heads."""
        up = self.upstream.to("cpu", torch.float64) if backward else None
        heads = []
        for b in range(self.case.batch):
            for h in range(self.case.heads):
                heads.append(attention_rounding_bounds(
                    *(t[b, h] for t in self.exact), None if up is None else up[b, h], **self.kw
                ))
        return {k: torch.stack([hd[k] for hd in heads]).reshape(*self.exact[0].shape[:2], *heads[0][k].shape) for k in heads[0]}

    def magnitudes(self, backward: bool = False) -> dict[str, torch.Tensor]:
        up = self.upstream.to("cpu", torch.float64) if backward else None
        return l4_magnitudes(*self.exact, up, **self.kw)

    def compare(
        self,
        label: str,
        value: torch.Tensor,
        truth: torch.Tensor,
        *,
        tol64: Callable[[], torch.Tensor],
        baseline_error: Callable[[], torch.Tensor],
        magnitude: Callable[[], torch.Tensor],
    ) -> Measurement:
        """|value − truth| against ``tol64`` (float64, entrywise) or the FlashAttention rule (lower precision).

        ``baseline_error`` is the same-dtype torch reference's deviation on the same question; the rounding floor is
        γ_{n²+2}(dtype) · ``magnitude``: Higham's order-free bound for the final accumulation of at most n² terms,
        which any summation order meets (a smaller floor makes the rule flaky on tiny inputs, where the reference's
        own error can vanish by luck). Callables, so only the tolerance that applies is computed.
        """
        if tuple(value.shape) != tuple(truth.shape):
            return Measurement(math.inf, 0.0, f"{label}: shape {tuple(value.shape)}, expected {tuple(truth.shape)}")
        err = _abs_diff(value, truth)
        if err.numel() == 0:
            return Measurement(0.0, 0.0, f"{label}: empty")
        if self.config.exact:
            tol = tol64()
            ratio = torch.where(err == 0, torch.zeros_like(err), err / tol)
            idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(ratio), ratio.shape))
            return Measurement(float(err[idx]), float(tol[idx]), f"{label} at {list(idx)} (float64 bound)")
        base = float(baseline_error().max())
        floor = float(rounding_bound(magnitude(), self.case.n**2 + 2, self.config.dtype).max())
        return Measurement(
            float(err.max()), flash_rule_tolerance(base, floor),
            f"{label} (FlashAttention rule: reference error {base:.2e}, floor {floor:.2e})",
        )


# --- the checks ---------------------------------------------------------------------------------------------


def _check_forward(ex: Example) -> Measurement:
    """P15: out against the float64 reference."""
    out, _ = ex.impl_out
    return ex.compare(
        "out", out, ex.reference[0],
        tol64=lambda: 2 * ex.bounds()["out"],
        baseline_error=lambda: _abs_diff(ex.same_dtype[0], ex.reference[0]),
        magnitude=lambda: ex.magnitudes()["out"],
    )


def _check_lse(ex: Example) -> Measurement:
    """P15: the returned LSE is the natural-log log-sum-exp of the scaled scores."""
    _, lse = ex.impl_out
    if lse is None:
        raise ImplementationError(f"{ex.impl.name} returned no lse on this call but did on the probe")
    ref = ex.reference[1]
    return ex.compare(
        "lse", lse, ref,
        tol64=lambda: 2 * ex.bounds()["lse"],
        baseline_error=lambda: _abs_diff(ex.same_dtype[1], ref),
        magnitude=lambda: ref.abs() + 1,
    )


def _check_oracle(ex: Example) -> Measurement:
    """P15: out (and lse) against the mpmath oracle at ORACLE_DPS digits; the truth is rounded once to float64."""
    from ..oracles import mp_attention

    mp_out, mp_lse = mp_attention(*ex.exact, dps=ORACLE_DPS, **ex.kw)
    out_true = torch.tensor(mp_out.astype(float), dtype=torch.float64)
    lse_true = torch.tensor(mp_lse.astype(float), dtype=torch.float64)
    u = gamma(1, torch.float64)
    out, lse = ex.impl_out
    ms = [ex.compare(
        "out vs mpmath", out, out_true,
        tol64=lambda: ex.bounds()["out"] + u * out_true.abs(),
        baseline_error=lambda: _abs_diff(ex.same_dtype[0], out_true),
        magnitude=lambda: ex.magnitudes()["out"],
    )]
    if lse is not None:
        ms.append(ex.compare(
            "lse vs mpmath", lse, lse_true,
            tol64=lambda: ex.bounds()["lse"] + u * lse_true.abs(),
            baseline_error=lambda: _abs_diff(ex.same_dtype[1], lse_true),
            magnitude=lambda: lse_true.abs() + 1,
        ))
    return _worst(*ms)


def _gradient_check(index: int) -> Callable[[Example], Measurement]:
    name = GRADIENT_NAMES[index]

    def check(ex: Example) -> Measurement:
        """L4: one gradient for a random upstream dO against the float64 L4 backward."""
        grad = ex.impl_grads()[1][index]
        truth = ex.reference_grads[index]
        return ex.compare(
            name, grad, truth,
            tol64=lambda: 2 * ex.bounds(backward=True)[name],
            baseline_error=lambda: _abs_diff(ex.same_dtype_grads()[index], truth),
            magnitude=lambda: ex.magnitudes(backward=True)[name],
        )

    check.__name__ = f"_check_{name}"
    return check


def _check_normalisation(ex: Example) -> Measurement:
    """P18: pair-softmax weights are >= 0 and sum to 1: V1 = V2 = 1 gives out = 1; V1, V2 >= 0 gives out >= 0."""
    q, k1, k2, v1, v2 = ex.exact
    ones = ex.derived((q, k1, k2, torch.ones_like(v1), torch.ones_like(v2)))
    nonneg = ex.derived((q, k1, k2, v1.abs(), v2.abs()))
    target = torch.ones_like(ones.exact[0])
    m_ones = ones.compare(
        "out with V1 = V2 = 1 (row sums)", ones.impl_out[0], target,
        tol64=lambda: ones.bounds()["out"],
        baseline_error=lambda: _abs_diff(ones.same_dtype[0], target),
        magnitude=lambda: target,
    )
    zero = torch.zeros_like(target)
    m_nonneg = nonneg.compare(
        "negative part of out with V1, V2 >= 0", nonneg.impl_out[0].clamp(max=0), zero,
        tol64=lambda: nonneg.bounds()["out"],
        baseline_error=lambda: _abs_diff(nonneg.same_dtype[0].clamp(max=0), zero),
        magnitude=lambda: nonneg.magnitudes()["out"],
    )
    return _worst(m_ones, m_nonneg)


def _pair_property(ex: Example, other: Example, label: str, rows: slice = slice(None)) -> Measurement:
    """Two evaluations of the implementation whose exact outputs are equal (on ``rows``).

    The float64 tolerance is the sum of both evaluations' largest out bounds: a symmetry test, so the bound need not
    be attributed entry by entry (an implementation of another function would make that attribution meaningless).
    """
    a, b = ex.impl_out[0][..., rows, :], other.impl_out[0][..., rows, :]
    return other.compare(
        label, b, a.detach().to("cpu", torch.float64),
        tol64=lambda: (ex.bounds()["out"].amax() + other.bounds()["out"].amax()).expand(a.shape),
        baseline_error=lambda: _abs_diff(other.same_dtype[0], ex.same_dtype[0])[..., rows, :],
        magnitude=lambda: (ex.magnitudes()["out"] + other.magnitudes()["out"])[..., rows, :],
    )


def _check_shift(ex: Example) -> Measurement:
    """P21: adding c_i to every score of query row i leaves out unchanged.

    The last coordinate of k1 and k2 is set to 1, so moving q[i, -1] by an integer t_i shifts row i's scores by
    s·t_i exactly. q[:, -1] is put on a grid of 2^(E−8) with |q| + 3 < 2^E, so q and q + t are exact in every
    dtype down to bfloat16 (8 significant bits).
    """
    q, k1, k2, v1, v2 = (t.clone() for t in ex.exact)
    k1[..., -1] = 1.0
    k2[..., -1] = 1.0
    step = 2.0 ** (math.ceil(math.log2(ex.case.bound + 4)) - 8)
    q[..., -1] = torch.round(q[..., -1] / step) * step
    gen = torch.Generator().manual_seed(ex.case.seed + 2)
    shift = torch.randint(-3, 4, q.shape[:-1], generator=gen).to(torch.float64)
    q_shifted = q.clone()
    q_shifted[..., -1] += shift
    base = ex.derived((q, k1, k2, v1, v2))
    return _pair_property(base, base.derived((q_shifted, k1, k2, v1, v2)), "out after a per-row score shift")


def _check_swap(ex: Example) -> Measurement:
    """P22: swapping (k1, v1) with (k2, v2) leaves out unchanged."""
    q, k1, k2, v1, v2 = ex.exact
    return _pair_property(ex, ex.derived((q, k2, k1, v2, v1)), "out after (k1,v1)<->(k2,v2)")


def _check_matrix_reduction(ex: Example) -> Measurement:
    """P17: K2 = V2 = 1 gives matrix softmax attention softmax(s·Q K1^T) V1 (torch SDPA in float64 is the truth)."""
    q, k1, k2, v1, v2 = ex.exact
    red = ex.derived((q, k1, torch.ones_like(k2), v1, torch.ones_like(v2)))
    q64, k64, v64 = red.exact[0], red.exact[1], red.exact[3]
    truth = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, scale=ex.case.scale, is_causal=ex.case.causal)
    return red.compare(
        "out with K2 = V2 = 1 vs matrix attention", red.impl_out[0], truth,
        tol64=lambda: 2 * red.bounds()["out"],
        baseline_error=lambda: _abs_diff(red.same_dtype[0], truth),
        magnitude=lambda: red.magnitudes()["out"],
    )


def _check_causal(ex: Example) -> Measurement:
    """SPEC §2 causal pairs (a <= i, b <= i): changing keys and values after position t leaves rows <= t unchanged."""
    q, k1, k2, v1, v2 = ex.exact
    gen = torch.Generator().manual_seed(ex.case.seed + 3)
    t = int(torch.randint(ex.case.n - 1, (1,), generator=gen))
    future = [x.clone() for x in (k1, k2, v1, v2)]
    for x in future:
        x[..., t + 1:, :] = (torch.rand(x[..., t + 1:, :].shape, generator=gen, dtype=torch.float64) * 2 - 1) * ex.case.bound
    return _pair_property(ex, ex.derived((q, *future)), f"out rows <= {t} after changing keys/values > {t}", slice(0, t + 1))


def _check_determinism(ex: Example) -> Measurement:
    """Two runs on the same inputs (and dO) give bitwise-equal out and, with the backward, all five L4 gradients."""
    def run() -> list[torch.Tensor]:
        if not ex.config.backward:
            with torch.no_grad():
                return [ex.impl(*ex.inputs, **ex.kw)[0]]
        out, grads = ex.impl_grads()
        return [out, *grads]

    first, second = run(), run()
    labels = ("out", *GRADIENT_NAMES)
    worst, where = 0.0, "out"
    for label, a, b in zip(labels, first, second):
        both_nan = torch.isnan(a) & torch.isnan(b)
        diff = float(_abs_diff(a, b).masked_fill(both_nan.cpu(), 0.0).max()) if a.numel() else 0.0
        if diff > worst:
            worst, where = diff, label
    return Measurement(worst, 0.0, f"largest run-to-run difference in {where}" if worst else "bitwise equal")


@dataclass(frozen=True)
class Check:
    """A named conformance check: its SPEC IDs, what it needs from the implementation, and how it measures."""

    name: str
    spec_ids: tuple[str, ...]
    summary: str
    measure: Callable[[Example], Measurement]
    needs: frozenset[str] = field(default_factory=frozenset)  # subset of {"lse", "backward", "causal"}
    cases: str = "general"  # which case strategy: general, oracle, causal


CHECKS: tuple[Check, ...] = (
    Check("forward", ("P15",), "out equals the float64 reference", _check_forward),
    Check("forward_mpmath", ("P15",), "out and lse equal the mpmath oracle on tiny inputs", _check_oracle, cases="oracle"),
    Check("lse", ("P15",), "returned LSE is the natural-log log-sum-exp", _check_lse, frozenset({"lse"})),
    *(
        Check(f"grad_{g[1:]}", ("L4", "P29"), f"{g} for a random dO equals the float64 L4 backward",
              _gradient_check(i), frozenset({"backward"}))
        for i, g in enumerate(GRADIENT_NAMES)
    ),
    Check("pair_softmax_normalisation", ("P18",), "pair weights are >= 0 and sum to 1", _check_normalisation),
    Check("shift_invariance", ("P21",), "per-row score shifts leave out unchanged", _check_shift),
    Check("swap_symmetry", ("P22",), "(k1,v1)<->(k2,v2) leaves out unchanged", _check_swap),
    Check("matrix_reduction", ("P17",), "K2 = V2 = 1 gives matrix softmax attention", _check_matrix_reduction),
    Check("causal_mask", ("P15",), "rows <= t ignore keys and values after t", _check_causal,
          frozenset({"causal"}), cases="causal"),
    Check("determinism", ("L4",), "two runs (forward and backward) are bitwise equal", _check_determinism),
)
