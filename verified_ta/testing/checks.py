"""Conformance checks for anyone's tensor-attention implementation (SPEC §2, P15, P17, P18, P21, P22, L4).

An implementation is a callable ``fn(q, k1, k2, v1, v2, *, scale, causal) -> out`` or ``(out, lse)`` on tensors
``(batch, heads, n, d)`` (plus ``window=(w1, w2)`` when windows are tested; k1, k2, v1, v2 may have fewer heads
than q when grouped-query heads are tested). Every check evaluates it on one
:class:`~verified_ta.testing.strategies.ConformCase` and returns a :class:`Measurement` (error, tolerance);
:mod:`verified_ta.testing.runner` drives the checks with Hypothesis. Tolerances:

- float64: twice the derived rounding bound of :func:`verified_ta.fp_bounds.attention_rounding_bounds`
  (implementation and float64 reference each within it), or once (plus one rounding) against the mpmath oracle;
- float32/bfloat16/float16: the FlashAttention rule of :mod:`verified_ta.kernels.accuracy`, the one the package's
  kernels are tested with: max error against the float64 truth <= 2 × the worst of the same-dtype torch
  evaluations' errors (:func:`~verified_ta.kernels.accuracy.same_dtype_results`) + :func:`~verified_ta.kernels.accuracy.rounding_floors`. A comparison of two evaluations of
  the implementation (a symmetry) allows the sum of both evaluations' tolerances.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..fp_bounds import attention_rounding_bounds, gamma
from ..kernels.accuracy import (
    AttentionResult,
    abs_error,
    flash_rule_tolerance,
    rounding_floors,
    same_dtype_results,
)
from ..masks import check_window
from ..report import error_ratio
from ..reference import tensor_attention_backward, tensor_attention_forward
from ..validation import check_positive_int
from .defaults import CONFORM_DEFAULTS, DTYPE_NAMES
from .strategies import ConformCase

__all__ = [
    "GRADIENT_NAMES",
    "ImplementationError",
    "Implementation",
    "load_impl",
    "ConformConfig",
    "make_config",
    "Measurement",
    "Example",
    "Check",
    "CHECKS",
    "PROBE",
    "check_by_name",
]

#: the five L4 gradients, in the order of the inputs
GRADIENT_NAMES = ("dq", "dk1", "dk2", "dv1", "dv2")
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
#: decimal digits of the mpmath oracle (P15); its own error is far below float64's unit roundoff
ORACLE_DPS = 30
#: per-row score shifts of the large-logit check: past exp's overflow threshold of the arithmetic (float64: e^709.8;
#: float32, in which fused kernels accumulate every lower precision: e^88.7)
LARGE_LOGIT = {torch.float64: 1000.0, torch.float32: 96.0, torch.bfloat16: 96.0, torch.float16: 96.0}


class ImplementationError(Exception):
    """The implementation broke the calling convention (wrong return type, dtype or shape; not differentiable;
    called ``sys.exit``)."""


def _kind(x: Any) -> str:
    """A returned value's type as users know it (``numpy.ndarray``, ``torch.Tensor``, ``None``)."""
    if x is None:
        return "None"
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__.split('.')[0]}.{t.__name__}"


@dataclass(frozen=True)
class Implementation:
    """A user's callable ``fn(q, k1, k2, v1, v2, *, scale, causal)`` returning ``out`` or ``(out, lse)``.

    ``target`` is the ``MODULE:CALLABLE`` it was loaded from (a worker process re-imports it). ``heartbeat``, set in
    a worker process, is a shared double that holds the start time of the call in progress (0 between calls), so
    that the parent can stop a call that runs past its timeout.
    """

    fn: Callable[..., Any]
    name: str
    target: str | None = None
    heartbeat: Any = field(default=None, compare=False, repr=False)

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Marks a call into the user's code (forward or backward); ``sys.exit`` in it is a convention error."""
        if self.heartbeat is not None:
            self.heartbeat.value = time.monotonic()
        try:
            yield
        except SystemExit as exc:
            raise ImplementationError(f"{self.name} called sys.exit({exc.code!r}); it must return or raise") from None
        finally:
            if self.heartbeat is not None:
                self.heartbeat.value = 0.0

    def __call__(self, q, k1, k2, v1, v2, **kw) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(out, lse or None)`` after checking the calling convention."""
        with self._calling():
            result = self.fn(q, k1, k2, v1, v2, **kw)
        return self._unpack(result, q)

    def grad(self, out: torch.Tensor, leaves: list[torch.Tensor], upstream: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The implementation's backward: ∂⟨dO, out⟩/∂leaves (zeros for unused leaves)."""
        if not out.requires_grad:
            raise ImplementationError(
                f"{self.name} returned an output that does not require grad; test a forward-only "
                "implementation with --forward-only"
            )
        with self._calling():
            grads = torch.autograd.grad(out, leaves, grad_outputs=upstream, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))

    def _unpack(self, result: Any, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Name the common mistakes: None, numpy arrays, tuples of the wrong length, wrong dtype, device or shape."""
        want = "out or (out, lse) as torch tensors"
        if result is None:
            raise ImplementationError(f"{self.name} returned None (a missing return statement?); return {want}")
        if isinstance(result, torch.Tensor):
            out, lse = result, None
        elif isinstance(result, (tuple, list)):
            kinds = ", ".join(_kind(x) for x in result)
            if len(result) != 2 or not all(isinstance(t, torch.Tensor) for t in result):
                raise ImplementationError(f"{self.name} returned a {type(result).__name__} ({kinds}); return {want}")
            out, lse = result
        else:
            hint = " (convert with torch.from_numpy? that breaks autograd: compute in torch)" if "numpy" in _kind(
                result) else ""
            raise ImplementationError(f"{self.name} returned {_kind(result)}{hint}; return {want}")
        if out.dtype != q.dtype:
            raise ImplementationError(
                f"{self.name} returned out in {out.dtype} for {q.dtype} inputs; return the inputs' dtype "
                "(accumulate in higher precision inside, round once at the end)")
        if out.device != q.device:
            raise ImplementationError(f"{self.name} returned out on {out.device} for inputs on {q.device}")
        if tuple(out.shape) != tuple(q.shape):
            hint = " (transposed?)" if tuple(out.shape) == (*q.shape[:-2], q.shape[-1], q.shape[-2]) else ""
            raise ImplementationError(
                f"{self.name} returned out of shape {tuple(out.shape)}{hint}; expected q's shape {tuple(q.shape)}")
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
    except SystemExit as exc:
        raise ValueError(f"impl module {module_name!r} called sys.exit({exc.code!r}) on import") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ValueError(f"impl: module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"impl {target!r} must name a callable; got {type(fn).__name__}")
    return Implementation(fn=fn, name=target, target=target)


def _default_head_dims() -> tuple[int, ...]:
    return tuple(int(x) for x in CONFORM_DEFAULTS["head_dims"].split(","))


@dataclass(frozen=True)
class ConformConfig:
    """What to test: device, dtype, causal masking (and its window), grouped heads, the backward, shapes, budget.

    ``window`` (with ``causal``) is passed to the implementation as ``window=(w1, w2)`` in causal cases;
    ``kv_heads`` gives k1, k2, v1, v2 that many heads and q a multiple of them. ``database`` is a directory of
    Hypothesis' example database (failing examples saved there replay first on the next run).
    """

    device: str = CONFORM_DEFAULTS["device"]
    dtype: torch.dtype = torch.float64
    causal: bool = False
    backward: bool = True
    max_examples: int = CONFORM_DEFAULTS["max_examples"]
    seed: int | None = CONFORM_DEFAULTS["seed"]
    min_n: int = CONFORM_DEFAULTS["min_n"]
    max_n: int = CONFORM_DEFAULTS["max_n"]
    head_dims: tuple[int, ...] = field(default_factory=_default_head_dims)
    max_batch: int = 2
    max_heads: int = 2
    max_bound: float = CONFORM_DEFAULTS["max_bound"]
    window: tuple[int | None, int | None] | None = None
    kv_heads: int | None = None
    database: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]'; got {self.device!r}")
        for name in ("max_examples", "min_n", "max_batch", "max_heads"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("max_n", self.max_n, self.min_n)
        if not self.head_dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.head_dims):
            raise ValueError(f"head_dims must be a non-empty tuple of integers >= 1; got {self.head_dims!r}")
        if not (isinstance(self.max_bound, (int, float)) and math.isfinite(self.max_bound) and 0 < self.max_bound <= 16):
            raise ValueError(f"max_bound must lie in (0, 16]; got {self.max_bound!r}")
        if self.seed is not None:
            check_positive_int("seed", self.seed, 0)
            if self.database is not None:
                raise ValueError("seed and database exclude each other: a fixed seed makes Hypothesis ignore the "
                                 "example database; a database run draws fresh examples and replays saved failures")
        if self.window is not None:
            if not self.causal:
                raise ValueError(f"window={self.window!r} is a causal sliding window: it needs causal=True (--causal)")
            check_window(self.window, True)
        if self.kv_heads is not None:
            check_positive_int("kv_heads", self.kv_heads)

    @property
    def exact(self) -> bool:
        """float64: derived bounds; otherwise the FlashAttention rule."""
        return self.dtype == torch.float64


def _parse_ints(name: str, text: str, *, allow_none: bool = False) -> tuple:
    """``"16,32"`` -> (16, 32); with ``allow_none``, ``"none"`` or an empty item is None."""
    items = []
    for item in text.split(","):
        item = item.strip()
        if allow_none and item.lower() in ("", "none"):
            items.append(None)
            continue
        try:
            items.append(int(item))
        except ValueError:
            raise ValueError(f"{name} must be comma-separated integers (e.g. 16,32); got {text!r}") from None
    return tuple(items)


def make_config(
    *,
    device: str = CONFORM_DEFAULTS["device"],
    dtype: str = CONFORM_DEFAULTS["dtype"],
    causal: bool = False,
    forward_only: bool = False,
    max_examples: int = CONFORM_DEFAULTS["max_examples"],
    seed: int | None = CONFORM_DEFAULTS["seed"],
    min_n: int = CONFORM_DEFAULTS["min_n"],
    max_n: int = CONFORM_DEFAULTS["max_n"],
    head_dims: str = CONFORM_DEFAULTS["head_dims"],
    max_bound: float = CONFORM_DEFAULTS["max_bound"],
    window: str | None = None,
    kv_heads: int | None = None,
    database: str | Path | None = None,
) -> ConformConfig:
    """A :class:`ConformConfig` from command-line strings (shared by the CLI and the pytest plugin).

    ``window`` is ``"W1,W2"`` (``none`` for an unbounded side).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    dims = _parse_ints("head_dims", head_dims)
    win = None
    if window is not None:
        win = _parse_ints("window", window, allow_none=True)
        if len(win) != 2:
            raise ValueError(f"window must be W1,W2 (two integers >= 1, or none); got {window!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no CUDA device; use --device cpu")
    return ConformConfig(
        device=device, dtype=DTYPES[dtype], causal=causal, backward=not forward_only,
        max_examples=max_examples, seed=seed, min_n=min_n, max_n=max_n, head_dims=dims, max_bound=max_bound,
        window=win, kv_heads=kv_heads, database=None if database is None else str(database),
    )


@dataclass(frozen=True)
class Measurement:
    """One example's verdict: ``error <= tolerance`` (both finite) passes."""

    error: float
    tolerance: float
    detail: str = ""
    raised: str = ""  # the implementation raised: the message and a short traceback (an ERROR, not a FAIL)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance

    @property
    def ratio(self) -> float:
        """error / tolerance (what Hypothesis maximises); inf for a non-finite error."""
        return error_ratio(self.error, self.tolerance)


def _worst(*ms: Measurement) -> Measurement:
    return max(ms, key=lambda m: (not m.passed, m.ratio))


def _abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a − b| in float64 on the CPU; a NaN or Inf in ``a`` counts as an infinite error."""
    return abs_error(a, b).nan_to_num(nan=math.inf, posinf=math.inf)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    err = _abs_diff(a, b)
    return float(err.max()) if err.numel() else 0.0


class Example:
    """One input set (exact float64 values representable in the tested dtype) and lazily evaluated quantities.

    The float64 reference and its bounds are computed on the tested device (``--device cuda`` builds them on the
    GPU); comparisons happen in float64 on the CPU.
    """

    def __init__(self, impl: Implementation, config: ConformConfig, case: ConformCase, exact: tuple[torch.Tensor, ...],
                 window: tuple[int | None, int | None] | None = None):
        self.impl, self.config, self.case = impl, config, case
        # round once to the tested dtype: the float64 values are then exactly the tested inputs
        self.inputs = tuple(t.to(dtype=config.dtype, device=config.device) for t in exact)
        self.exact = tuple(t.to(torch.float64) for t in self.inputs)
        self.window = window
        self.ref_kw = {"scale": case.scale, "causal": case.causal, "window": window}
        self.kw = {"scale": case.scale, "causal": case.causal}
        if config.window is not None:  # the implementation takes window= only when windows are tested
            self.kw["window"] = window
        self.group = self.inputs[0].shape[-3] // self.inputs[1].shape[-3]
        self._bounds: dict[bool, dict[str, torch.Tensor]] = {}

    @classmethod
    def of(cls, impl: Implementation, config: ConformConfig, case: ConformCase) -> "Example":
        """The example of ``case``, shared by the checks that draw the same case (their reference work is reused)."""
        return _example(impl, config, case)

    def derived(self, exact: tuple[torch.Tensor, ...], *, swap_window: bool = False) -> "Example":
        """The same case on other inputs (a property's second evaluation); ``swap_window`` exchanges w1 and w2."""
        window = self.window[::-1] if swap_window and self.window is not None else self.window
        return Example(self.impl, self.config, self.case, exact, window)

    @cached_property
    def upstream(self) -> torch.Tensor:
        return self.case.upstream(self.config.dtype, self.config.device)

    @cached_property
    def impl_out(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.no_grad():
            return self.impl(*self.inputs, **self.kw)

    def run_impl_backward(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """A fresh forward and the five L4 gradients for the upstream dO (autograd through the implementation)."""
        leaves = [t.detach().clone().requires_grad_(True) for t in self.inputs]
        out, _ = self.impl(*leaves, **self.kw)
        return out.detach(), self.impl.grad(out, leaves, self.upstream)

    @cached_property
    def impl_grads(self) -> tuple[torch.Tensor, ...]:
        return self.run_impl_backward()[1]

    @cached_property
    def reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float64 reference ``(out, lse)`` (SPEC §2) on the exact inputs."""
        return tensor_attention_forward(*self.exact, **self.ref_kw)

    @cached_property
    def reference_grads(self) -> tuple[torch.Tensor, ...]:
        """The L4 backward in float64."""
        out, lse = self.reference
        return tensor_attention_backward(self.upstream.to(torch.float64), *self.exact, out, lse, **self.ref_kw)

    def truth(self, name: str) -> torch.Tensor:
        """The float64 reference value of out, lse or a gradient."""
        if name in ("out", "lse"):
            return self.reference[name == "lse"]
        return self.reference_grads[GRADIENT_NAMES.index(name)]

    def bounds(self, backward: bool = False) -> dict[str, torch.Tensor]:
        """Derived float64 rounding bounds (``fp_bounds.attention_rounding_bounds``), per head of q; a key-side
        gradient's bound is the sum over the query heads that read it (grouped-query heads)."""
        if backward in self._bounds:
            return self._bounds[backward]
        q, k1, k2, v1, v2 = self.exact
        up = self.upstream.to(torch.float64) if backward else None
        batch, heads, g = q.shape[0], q.shape[1], self.group
        per_head = [
            attention_rounding_bounds(q[b, h], *(x[b, h // g] for x in (k1, k2, v1, v2)),
                                      None if up is None else up[b, h], **self.ref_kw)
            for b in range(batch) for h in range(heads)
        ]
        out = {}
        for key in per_head[0]:
            stacked = torch.stack([hd[key] for hd in per_head]).reshape(batch, heads, *per_head[0][key].shape)
            if key in GRADIENT_NAMES[1:]:
                stacked = stacked.reshape(batch, heads // g, g, *stacked.shape[2:]).sum(2)
            out[key] = stacked
        self._bounds[backward] = out
        return out

    @cached_property
    def same_dtype(self) -> list[AttentionResult]:
        """The FlashAttention rule's baselines (:func:`verified_ta.kernels.accuracy.same_dtype_results`), each in the
        tested dtype on the tested device, with autograd for dO."""
        return same_dtype_results(self.inputs, self.upstream, dtype=self.config.dtype, **self.ref_kw)

    @cached_property
    def floors(self) -> dict[str, float]:
        """:func:`verified_ta.kernels.accuracy.rounding_floors` of this example. Grouped heads: computed on keys
        repeated to q's heads, a key gradient's floor times the group size (its error sums over the group).
        A window's pairs are a subset of the causal ones, so the causal floor (all terms >= 0) covers them."""
        inputs = [self.inputs[0], *(x.repeat_interleave(self.group, dim=-3) for x in self.inputs[1:])]
        exact = AttentionResult(*self.reference, self.reference_grads)
        floors = rounding_floors(inputs, self.upstream, exact, scale=self.case.scale, causal=self.case.causal,
                                 dtype=self.config.dtype)
        return {k: v * (self.group if k in GRADIENT_NAMES[1:] else 1) for k, v in floors.items()}

    def rule(self, name: str, truth: torch.Tensor | None = None) -> float:
        """The FlashAttention rule's tolerance for quantity ``name`` (out, lse or a gradient) of this example:
        2 × the worse same-dtype baseline's max error against ``truth`` (default: the float64 reference) + floor."""
        truth = self.truth(name) if truth is None else truth
        base = max(_max_diff(r.get(name), truth) for r in self.same_dtype)
        return flash_rule_tolerance(base, self.floors[name])

    def compare(self, label: str, value: torch.Tensor, truth: torch.Tensor, *, tol64: Callable[[], torch.Tensor],
                rule: Callable[[], float]) -> Measurement:
        """|value − truth| against ``tol64`` (float64, entrywise) or the FlashAttention ``rule`` (lower precision).

        Callables, so only the tolerance that applies is computed.
        """
        if tuple(value.shape) != tuple(truth.shape):
            return Measurement(math.inf, 0.0, f"{label}: shape {tuple(value.shape)}, expected {tuple(truth.shape)}")
        err = _abs_diff(value, truth)
        if err.numel() == 0:
            return Measurement(0.0, 0.0, f"{label}: empty")
        if self.config.exact:
            tol = tol64().to("cpu", torch.float64)
            ratio = torch.where(err == 0, torch.zeros_like(err), err / tol)
            idx = tuple(int(i) for i in torch.unravel_index(torch.argmax(ratio), ratio.shape))
            return Measurement(float(err[idx]), float(tol[idx]), f"{label} at {list(idx)} (float64 bound)")
        return Measurement(float(err.max()), rule(), f"{label} (FlashAttention rule)")


@functools.lru_cache(maxsize=4)
def _example(impl: Implementation, config: ConformConfig, case: ConformCase) -> Example:
    return Example(impl, config, case, tuple(case.inputs()), case.window)


# --- the checks ---------------------------------------------------------------------------------------------


def _against_reference(ex: Example, name: str, label: str, value: torch.Tensor) -> Measurement:
    """A quantity (out, lse or a gradient) against the float64 reference: 2 × its bound, or the rule."""
    return ex.compare(label, value, ex.truth(name), tol64=lambda: 2 * ex.bounds(name in GRADIENT_NAMES)[name],
                      rule=lambda: ex.rule(name))


def _check_forward(ex: Example) -> Measurement:
    """P15: out against the float64 reference."""
    return _against_reference(ex, "out", "out", ex.impl_out[0])


def _returned_lse(ex: Example) -> torch.Tensor:
    _, lse = ex.impl_out
    if lse is None:
        raise ImplementationError(f"{ex.impl.name} returned no lse on this call but did on the probe")
    return lse


def _check_lse(ex: Example) -> Measurement:
    """P15: the returned LSE is the natural-log log-sum-exp of the scaled scores."""
    return _against_reference(ex, "lse", "lse", _returned_lse(ex))


def _check_oracle(ex: Example) -> Measurement:
    """P15: out (and lse) against the mpmath oracle at ORACLE_DPS digits; the truth is rounded once to float64."""
    from ..oracles import mp_attention

    mp_out, mp_lse = mp_attention(*(x.cpu() for x in ex.exact), dps=ORACLE_DPS, **ex.ref_kw)
    truths = {"out": torch.tensor(mp_out.astype(float), dtype=torch.float64),
              "lse": torch.tensor(mp_lse.astype(float), dtype=torch.float64)}
    u = gamma(1, torch.float64)
    out, lse = ex.impl_out
    returned = {"out": out} if lse is None else {"out": out, "lse": lse}
    return _worst(*(
        ex.compare(f"{name} vs mpmath", value, truths[name],
                   tol64=lambda name=name: ex.bounds()[name].cpu() + u * truths[name].abs(),
                   rule=lambda name=name: ex.rule(name, truths[name]))
        for name, value in returned.items()
    ))


def _gradient_check(index: int) -> Callable[[Example], Measurement]:
    name = GRADIENT_NAMES[index]

    def check(ex: Example) -> Measurement:
        """L4: one gradient for a random upstream dO against the float64 L4 backward."""
        return _against_reference(ex, name, name, ex.impl_grads[index])

    check.__name__ = f"_check_{name}"
    return check


def _check_large_logits(ex: Example) -> Measurement:
    """P15, P21: every query row's scores shifted by ±c past exp's overflow threshold (c = LARGE_LOGIT: 1000 in
    float64, 96 otherwise); out and lse still equal the reference. Without the row-max subtraction exp overflows
    (or underflows to a 0/0), and so does an LSE computed as log Σ exp.

    The last coordinate of k1 and k2 is set to 1 and q's to ±c/s, so the shift is ±c up to the other coordinates'
    bounded contribution; the reference is evaluated on exactly these inputs.
    """
    q, k1, k2, v1, v2 = (t.clone() for t in ex.exact)
    k1[..., -1] = 1.0
    k2[..., -1] = 1.0
    gen = torch.Generator().manual_seed(ex.case.seed + 4)
    sign = torch.randint(0, 2, q.shape[:-1], generator=gen).to(torch.float64) * 2 - 1
    q[..., -1] = sign.to(q.device) * (LARGE_LOGIT[ex.config.dtype] / ex.case.scale)
    big = ex.derived((q, k1, k2, v1, v2))
    out, lse = big.impl_out
    ms = [_against_reference(big, "out", "out with rows shifted by ±c", out)]
    if lse is not None:
        ms.append(_against_reference(big, "lse", "lse with rows shifted by ±c", lse))
    return _worst(*ms)


def _check_normalisation(ex: Example) -> Measurement:
    """P18: pair-softmax weights are >= 0 and sum to 1: V1 = V2 = 1 gives out = 1; V1, V2 >= 0 gives out >= 0."""
    q, k1, k2, v1, v2 = ex.exact
    ones = ex.derived((q, k1, k2, torch.ones_like(v1), torch.ones_like(v2)))
    nonneg = ex.derived((q, k1, k2, v1.abs(), v2.abs()))
    target = torch.ones_like(ones.exact[0]).cpu()
    m_ones = ones.compare(
        "out with V1 = V2 = 1 (row sums)", ones.impl_out[0], target,
        tol64=lambda: ones.bounds()["out"], rule=lambda: ones.rule("out", target),
    )
    zero = torch.zeros_like(target)
    m_nonneg = nonneg.compare(
        "negative part of out with V1, V2 >= 0", nonneg.impl_out[0].clamp(max=0), zero,
        tol64=lambda: nonneg.bounds()["out"], rule=lambda: nonneg.rule("out"),
    )
    return _worst(m_ones, m_nonneg)


def _pair_property(ex: Example, other: Example, label: str, rows: slice = slice(None)) -> Measurement:
    """Two evaluations of the implementation whose exact outputs are equal (on ``rows``).

    The tolerance is the sum of both evaluations' largest allowances (float64 bound or FlashAttention rule): each is
    within its own of the common truth. A symmetry test, so the bound need not be attributed entry by entry (an
    implementation of another function would make that attribution meaningless).
    """
    a, b = ex.impl_out[0][..., rows, :], other.impl_out[0][..., rows, :]
    return other.compare(
        label, b, a.detach().to("cpu", torch.float64),
        tol64=lambda: (ex.bounds()["out"].amax() + other.bounds()["out"].amax()).expand(a.shape),
        rule=lambda: ex.rule("out") + other.rule("out"),
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
    q_shifted[..., -1] += shift.to(q.device)
    base = ex.derived((q, k1, k2, v1, v2))
    return _pair_property(base, base.derived((q_shifted, k1, k2, v1, v2)), "out after a per-row score shift")


def _check_swap(ex: Example) -> Measurement:
    """P22: swapping (k1, v1) with (k2, v2) (and the window's sides) leaves out unchanged."""
    q, k1, k2, v1, v2 = ex.exact
    return _pair_property(ex, ex.derived((q, k2, k1, v2, v1), swap_window=True), "out after (k1,v1)<->(k2,v2)")


def _check_matrix_reduction(ex: Example) -> Measurement:
    """P17: K2 = V2 = 1 gives matrix softmax attention softmax(s·Q K1^T) V1 (torch SDPA in float64 is the truth).

    Under a window (w1, w2) every visible a has the same number of visible b, so the k1 side's window is the
    matrix attention's mask; grouped heads use SDPA's own ``enable_gqa`` semantics (head h reads h // g).
    """
    q, k1, k2, v1, v2 = ex.exact
    red = ex.derived((q, k1, torch.ones_like(k2), v1, torch.ones_like(v2)))
    q64, k64, v64 = red.exact[0], red.exact[1], red.exact[3]
    if ex.group > 1:
        k64, v64 = (x.repeat_interleave(ex.group, dim=-3) for x in (k64, v64))
    mask = None
    if ex.case.causal:
        i = torch.arange(ex.case.n, device=q64.device)
        mask = i[None, :] <= i[:, None]
        if ex.window is not None and ex.window[0] is not None:
            mask = mask & (i[None, :] > i[:, None] - ex.window[0])
    truth = torch.nn.functional.scaled_dot_product_attention(q64, k64, v64, attn_mask=mask, scale=ex.case.scale)
    return red.compare(
        "out with K2 = V2 = 1 vs matrix attention", red.impl_out[0], truth.cpu(),
        tol64=lambda: 2 * red.bounds()["out"], rule=lambda: red.rule("out", truth.cpu()),
    )


def _check_causal(ex: Example) -> Measurement:
    """SPEC §2 causal pairs (a <= i, b <= i): changing keys and values after position t leaves rows <= t unchanged."""
    q, k1, k2, v1, v2 = ex.exact
    gen = torch.Generator().manual_seed(ex.case.seed + 3)
    t = int(torch.randint(ex.case.n - 1, (1,), generator=gen))
    future = [x.clone() for x in (k1, k2, v1, v2)]
    for x in future:
        fresh = torch.rand(x[..., t + 1:, :].shape, generator=gen, dtype=torch.float64) * 2 - 1
        x[..., t + 1:, :] = fresh.to(x.device) * ex.case.bound
    return _pair_property(ex, ex.derived((q, *future)), f"out rows <= {t} after changing keys/values > {t}",
                          slice(0, t + 1))


def _check_determinism(ex: Example) -> Measurement:
    """Two runs on the same inputs (and dO) give bitwise-equal out and, with the backward, all five L4 gradients."""
    def run() -> list[torch.Tensor]:
        if not ex.config.backward:
            with torch.no_grad():
                return [ex.impl(*ex.inputs, **ex.kw)[0]]
        out, grads = ex.run_impl_backward()
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
    """A named conformance check: its SPEC IDs, what it needs from the implementation, and how it measures.

    Pickles as its name (a worker process looks it up in :data:`CHECKS`).
    """

    name: str
    spec_ids: tuple[str, ...]
    summary: str
    measure: Callable[[Example], Measurement]
    needs: frozenset[str] = field(default_factory=frozenset)  # subset of {"lse", "backward", "causal"}
    cases: str = "general"  # which case strategy: general, oracle, causal

    def __reduce__(self):
        return (check_by_name, (self.name,))


CHECKS: tuple[Check, ...] = (
    Check("forward", ("P15",), "out equals the float64 reference", _check_forward),
    Check("forward_mpmath", ("P15",), "out and lse equal the mpmath oracle on tiny inputs", _check_oracle, cases="oracle"),
    Check("lse", ("P15",), "returned LSE is the natural-log log-sum-exp", _check_lse, frozenset({"lse"})),
    *(
        Check(f"grad_{g[1:]}", ("L4", "P29"), f"{g} for a random dO equals the float64 L4 backward",
              _gradient_check(i), frozenset({"backward"}))
        for i, g in enumerate(GRADIENT_NAMES)
    ),
    Check("large_logits", ("P15", "P21"), "rows shifted by ±c past exp's overflow still equal the reference",
          _check_large_logits),
    Check("pair_softmax_normalisation", ("P18",), "pair weights are >= 0 and sum to 1", _check_normalisation),
    Check("shift_invariance", ("P21",), "per-row score shifts leave out unchanged", _check_shift),
    Check("swap_symmetry", ("P22",), "(k1,v1)<->(k2,v2) leaves out unchanged", _check_swap),
    Check("matrix_reduction", ("P17",), "K2 = V2 = 1 gives matrix softmax attention", _check_matrix_reduction),
    Check("causal_mask", ("P15",), "rows <= t ignore keys and values after t", _check_causal,
          frozenset({"causal"}), cases="causal"),
    Check("determinism", ("L4",), "two runs (forward and backward) are bitwise equal", _check_determinism),
)


#: the pseudo-check a failed probe call is reported under (one ERROR for the run, not one per check)
PROBE = Check("probe", (), "the implementation can be called on a small input", _check_forward)


def check_by_name(name: str) -> Check:
    """The check called ``name`` (or :data:`PROBE`); ValueError naming the known ones otherwise."""
    for check in (*CHECKS, PROBE):
        if check.name == name:
            return check
    raise ValueError(f"check must be one of {', '.join(c.name for c in CHECKS)}; got {name!r}")
