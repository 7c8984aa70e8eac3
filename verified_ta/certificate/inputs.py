"""What ``verified-ta certify`` is asked (SPEC L5, L6): entry bound B, length n, head dimension d, target ε, the
scale s, the dtype, the memory limit and the time budget; and the score interval [0, 2M] they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..polynomial import FAMILIES, parse_fraction
from .limits import MAX_DEGREE

__all__ = [
    "TARGETS", "DTYPE_NAMES", "SCALES", "MAX_B", "MAX_N", "MAX_D", "DEFAULT_MEMORY_LIMIT_BYTES",
    "CertifyInputs", "scale_upper", "score_interval",
]

TARGETS = ("forward", "gradient")
DTYPE_NAMES = ("float64", "float32")
#: the named scales; any other scale is an exact positive rational "p/q" (a float given on the command line is exact)
SCALES = ("1/d", "1/sqrt(d)")
MAX_B = 1e6  # every bound line (the gradient one grows like n·d²·B⁷) stays a finite float
MAX_N = 10**15
MAX_D = 4096
#: the fast path's default feature budget (``verified_ta.features.DEFAULT_MEMORY_LIMIT_BYTES``, restated so that
#: certify need not import torch-backed modules to parse its options; a test keeps the two equal)
DEFAULT_MEMORY_LIMIT_BYTES = 4 << 30


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")


def _check_real(name: str, value: Any, lo: float, hi: float, *, open_lo: bool = True, open_hi: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (lo < value if open_lo else lo <= value) and (value < hi if open_hi else value <= hi)
    if not ok:
        interval = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}; got {value!r}")


@dataclass(frozen=True)
class CertifyInputs:
    """Inputs of ``verified-ta certify`` (SPEC L5–L11; docs/certificate.md §0).

    B bounds every entry of Q, K1, K2, V1, V2; ε bounds the chosen ``target``'s total error (forward: ‖Att̃ − Att‖∞,
    gradient: ‖G̃ − G‖∞); ``scale`` is "1/d", "1/sqrt(d)" or an exact rational "p/q"; ``degree`` fixes the degree
    (no search); ``memory_limit_bytes`` is the feature budget of the fast path; ``time_limit_s`` the wall-clock
    budget of one call (None: no limit, the library default; the CLI's default is ``limits.DEFAULT_TIME_LIMIT_S``).
    ValueError naming the field and the allowed range.
    """

    B: float
    n: int
    d: int
    eps: float
    target: str = "forward"
    dtype: str = "float64"
    family: str = "auto"
    gap: float = 0.01
    scale: str = "1/d"
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES
    degree: int | None = None
    time_limit_s: float | None = None

    def __post_init__(self) -> None:
        _check_real("B", self.B, 0.0, MAX_B)
        _check_int("n", self.n, 1, MAX_N)
        _check_int("d", self.d, 1, MAX_D)
        _check_real("eps", self.eps, 0.0, 1.0, open_hi=True)
        _check_real("gap", self.gap, 0.0, 1.0, open_hi=True)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {self.dtype!r}")
        if self.family not in ("auto", *FAMILIES):
            raise ValueError(f"family must be one of auto, {', '.join(FAMILIES)}; got {self.family!r}")
        scale_upper(self.scale, self.d)
        _check_int("memory_limit_bytes", self.memory_limit_bytes, 1, 1 << 80)
        if self.degree is not None:
            _check_int("degree", self.degree, 0, MAX_DEGREE)
        if self.time_limit_s is not None:
            _check_real("time_limit_s", self.time_limit_s, 0.0, 86400.0)

    @property
    def torch_dtype(self):
        import torch

        return {"float64": torch.float64, "float32": torch.float32}[self.dtype]

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == "float64" else 4


def scale_upper(scale: Any, d: int) -> Fraction:
    """An exact rational s⁺ >= |s| for the scale named by ``scale`` (1/d exactly; 1/sqrt(d) rounded up to a float).

    ValueError for anything else than "1/d", "1/sqrt(d)" or a positive rational string "p/q" (at most 40 characters).
    """
    if scale == "1/d":
        return Fraction(1, d)
    if scale == "1/sqrt(d)":
        up = 1 / math.sqrt(d)
        while Fraction(up) ** 2 * d < 1:
            up = math.nextafter(up, math.inf)
        return Fraction(up)
    if isinstance(scale, str) and len(scale) <= 40:
        try:
            value = parse_fraction(scale, "scale")
        except ValueError:
            value = None
        if value is not None and 0 < value <= 10**6:
            return value
    raise ValueError(f"scale must be one of {', '.join(SCALES)} or a rational 'p/q' in (0, 1e6]; got {scale!r}")


def score_interval(inputs: CertifyInputs) -> tuple[Fraction, Fraction, Fraction]:
    """(M, 0, 2M): M >= s·d·B³ (L5, rounded up to a float), and the shifted interval [0, 2M] (L6)."""
    from ..error_bounds import score_bound

    M = Fraction(score_bound(inputs.B, inputs.d, scale_upper(inputs.scale, inputs.d)))
    return M, Fraction(0), 2 * M
