"""Rigorous certificates for the polynomial method (SPEC L5–L11, P31, P32, P41; docs/certificate.md).

* :func:`certify_polynomial` encloses sup_{x∈[a,b]} |P(x)e^{-x} − 1| between a lower bound (witness
  points) and an upper bound (Taylor models on sub-intervals, adaptive bisection of the worst piece) in
  Arb ball arithmetic (python-flint). P is first shifted exactly in rationals (``fmpq_poly``) to each
  piece's centre, so the only rounded quantity per piece is e^{-c}.
* :func:`minimal_degree` finds, per family, the least degree whose certified upper bound is ≤ ε and
  refutes the degree below it (lower bound > ε).
* the floating-point term of evaluating features and dot products in float64/float32 comes from
  :mod:`verified_ta.error_bounds` (``forward_rounding_term``/``gradient_rounding_term``) and is added to δ.
* :func:`build_certificate` assembles the full certificate (JSON via :func:`certificate_to_json`), and
  :func:`verify_certificate` re-checks one from its JSON alone, piece by piece.

python-flint is imported lazily: ``import verified_ta`` works without it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import math
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .polynomial import FAMILIES, Polynomial, as_fraction, build_polynomial, fraction_str, parse_fraction

if TYPE_CHECKING:
    from .report import CheckRow

__all__ = [
    "ApproxBound",
    "Piece",
    "certify_polynomial",
    "recheck_pieces",
    "poisson_tail",
    "sollya_supnorm",
    "taylor_degree",
    "DegreeResult",
    "minimal_degree",
    "regime",
    "rank_exponent",
    "fast_path_costs",
    "score_interval",
    "witness_lower",
    "decimal_up",
    "decimal_down",
    "build_certificate",
    "certificate_to_json",
    "CertifyInputs",
    "Certificate",
    "VerifyResult",
    "verify_certificate",
    "quick_certify_rows",
]

DEFAULT_GAP = Fraction(1, 100)
METHOD = "Taylor models in Arb: exact fmpq shift of P to each piece centre c, e^{-h} to order K with Lagrange remainder"


# --- exact/decimal helpers ----------------------------------------------------------------------


def _arb_to_fraction(x) -> Fraction:
    """The exact value of an exact arb (an endpoint from ``.upper()``/``.lower()``)."""
    man, exp = x.man_exp()
    man, exp = int(man), int(exp)
    return Fraction(man) * Fraction(2) ** exp


def decimal_up(x: Fraction, digits: int = 17) -> str:
    """Decimal string >= x with ``digits`` significant digits (outward rounding for upper bounds)."""
    return _decimal(x, digits, ROUND_CEILING)


def decimal_down(x: Fraction, digits: int = 17) -> str:
    """Decimal string <= x with ``digits`` significant digits (outward rounding for lower bounds)."""
    return _decimal(x, digits, ROUND_FLOOR)


def _decimal(x: Fraction, digits: int, rounding: str) -> str:
    with localcontext() as ctx:
        ctx.prec = digits
        ctx.rounding = rounding
        value = Decimal(x.numerator) / Decimal(x.denominator)  # one correctly-rounded division
        value = value.normalize()  # inside the context: strips zeros, never rounds (digits <= ctx.prec)
    return format(value, "e") if value != 0 else "0"


def _parse_decimal(text: str, name: str) -> Fraction:
    try:
        return Fraction(Decimal(text))
    except (ArithmeticError, ValueError, TypeError):
        raise ValueError(f"{name} must be a decimal string; got {text!r}") from None


@contextlib.contextmanager
def _arb_precision(bits: int) -> Iterator[None]:
    """Set flint's global ``ctx.prec`` for the block and restore it afterwards."""
    from flint import ctx

    saved = ctx.prec
    ctx.prec = bits
    try:
        yield
    finally:
        ctx.prec = saved


def _fmpq(x: Fraction):
    from flint import fmpq

    return fmpq(x.numerator, x.denominator)


def _fmpq_poly(coefficients: Sequence[Fraction]):
    from flint import fmpq_poly

    return fmpq_poly([_fmpq(c) for c in coefficients])


# --- one piece: a Taylor-model enclosure --------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """Sub-interval [lo, hi] with a rigorous ``upper`` >= sup |P(x)e^{-x} − 1| on it (exp truncated at order K)."""

    lo: Fraction
    hi: Fraction
    order: int
    upper: Fraction


def _enclose(poly_q, lo: Fraction, hi: Fraction, order: int | None, tol: Fraction):
    """Enclose f(x) = P(x)e^{-x} − 1 on [lo, hi] (SPEC L7; proof in docs/certificate.md §1).

    With c = (lo+hi)/2, r = (hi−lo)/2, P_c(h) = P(c+h) exactly and E_K(h) = Σ_{k≤K} (−h)^k/k!:
    f(c+h) = e^{-c}(P_c E_K)(h) − 1 + e^{-c} P_c(h) R_K(h), |R_K(h)| ≤ r^{K+1} e^r/(K+1)!, so
    sup |f| ≤ Σ_k |q_k| r^k + e^{-c} Σ_k |p_k| r^k · r^{K+1} e^r/(K+1)!, q = e^{-c} P_c E_K − 1.
    Returns (upper arb endpoint, ball for f(c), K). ``order=None`` picks the least K with remainder ≤ tol.
    """
    from flint import arb, fmpq_poly

    c, r = (lo + hi) / 2, (hi - lo) / 2
    pc = poly_q(fmpq_poly([_fmpq(c), 1]))
    coeffs = pc.coeffs()
    r_q = _fmpq(r)
    pabs = sum((abs(p) * r_q**k for k, p in enumerate(coeffs)), _fmpq(Fraction(0)))
    e_c = (-arb(_fmpq(c))).exp()
    scale = e_c * arb(pabs) * arb(r_q).exp()

    def remainder(k: int):
        return scale * arb(r_q) ** (k + 1) / arb.fac_ui(k + 1)

    if order is None:
        order = 2
        tol_arb = arb(_fmpq(tol))
        while order < 400 and not (remainder(order).upper() <= tol_arb.lower()):
            order += 1
    exp_trunc = fmpq_poly([_fmpq(Fraction((-1) ** k, math.factorial(k))) for k in range(order + 1)])
    q = (pc * exp_trunc).coeffs()
    total = remainder(order)
    r_arb = arb(r_q)
    power = arb(1)
    center = None
    for k, qk in enumerate(q):
        term = e_c * arb(qk)
        if k == 0:
            term -= 1
            center = term
        total += abs(term) * power
        power *= r_arb
    return total.upper(), center, order


@dataclass
class ApproxBound:
    """Certified enclosure lower <= sup_{[a,b]} |P(x)e^{-x} − 1| <= upper (SPEC L7, P32)."""

    lower: Fraction
    upper: Fraction
    witness: Fraction
    pieces: list[Piece]
    precision_bits: int
    seconds: float
    status: str  # "tight" (upper <= (1+gap)·lower), "decided" (stopped at a decision threshold), "max-pieces"
    method: str = METHOD

    @property
    def piece_count(self) -> int:
        return len(self.pieces)


def _witness_value(poly_q, x: Fraction):
    """Ball for f(x) = P(x)e^{-x} − 1 at a rational point x (P(x) exact)."""
    from flint import arb

    return arb(poly_q(_fmpq(x))) * (-arb(_fmpq(x))).exp() - 1


def certify_polynomial(
    poly: Polynomial,
    *,
    gap: Fraction | float = DEFAULT_GAP,
    decide: Fraction | float | None = None,
    max_pieces: int = 20000,
) -> ApproxBound:
    """Rigorous [lower, upper] for sup_{[a,b]} |P(x)e^{-x} − 1| (SPEC L7; docs/certificate.md §1).

    Bisects the piece with the largest upper bound until upper <= (1+gap)·lower. With ``decide = ε``
    it also stops as soon as upper <= ε or lower > ε (used by the degree search).
    """
    gap = as_fraction(gap)
    if gap <= 0:
        raise ValueError(f"gap must be > 0; got {gap}")
    start = time.perf_counter()
    a, b = poly.interval
    poly_q = _fmpq_poly(poly.coefficients)
    initial = 4 * (poly.degree + 2)
    edges = [a + (b - a) * Fraction(i, initial) for i in range(initial + 1)]
    # a first look at the error level sets the working precision
    with _arb_precision(256):
        level = max(abs(float(_witness_value(poly_q, x).mid())) for x in edges[::2] + [edges[-1]])
    level = max(level, 2.0**-900)
    prec = 96 + max(0, math.ceil(-math.log2(level)))
    for _attempt in range(4):
        with _arb_precision(prec):
            result = _adaptive(
                poly_q, edges, gap, None if decide is None else as_fraction(decide), max_pieces, prec, Fraction(level)
            )
        if result is not None:
            result.seconds = time.perf_counter() - start
            return result
        prec *= 2
    raise RuntimeError("certify_polynomial: precision escalation did not converge")


def _adaptive(poly_q, edges, gap, decide, max_pieces, prec, level: Fraction):
    """Bisection loop of :func:`certify_polynomial`; None when ball radii reach the gap (needs more precision)."""
    best_lower, witness = Fraction(0), edges[0]
    tol = level * gap / 64  # exp-truncation remainder per piece, well below the gap at this error level

    def note_witness(x: Fraction, ball) -> None:
        nonlocal best_lower, witness
        low = Fraction(0) if ball.contains(0) else _arb_to_fraction(abs(ball).lower())
        if low > best_lower:
            best_lower, witness = low, x

    for x in (edges[0], edges[-1]):
        note_witness(x, _witness_value(poly_q, x))
    heap: list[tuple[Fraction, int, Piece]] = []  # (−upper, insertion number, piece): never compares pieces
    counter = itertools.count()
    pending = list(zip(edges[:-1], edges[1:]))
    while True:
        for lo, hi in pending:
            upper, center, order = _enclose(poly_q, lo, hi, None, tol)
            if _arb_to_fraction(center.rad()) > tol:
                return None
            note_witness((lo + hi) / 2, center)
            piece = Piece(lo, hi, order, _arb_to_fraction(upper))
            heapq.heappush(heap, (-piece.upper, next(counter), piece))
        top = heap[0][2].upper
        status = None
        if top <= (1 + gap) * best_lower:
            status = "tight"
        elif decide is not None and (top <= decide or best_lower > decide):
            status = "decided"
        elif len(heap) >= max_pieces:
            status = "max-pieces"
        if status is not None:
            pieces = sorted((p for _, _, p in heap), key=lambda p: p.lo)
            return ApproxBound(best_lower, top, witness, pieces, prec, 0.0, status)
        _, _, worst = heapq.heappop(heap)
        mid = (worst.lo + worst.hi) / 2
        pending = [(worst.lo, mid), (mid, worst.hi)]


def recheck_pieces(
    coefficients: Sequence[Fraction], interval: tuple[Fraction, Fraction], pieces: Sequence[Piece], prec: int
) -> list[str]:
    """Re-enclose every stored piece (no search) and list the problems: gaps in the cover, bounds too low."""
    problems: list[str] = []
    a, b = interval
    if not pieces:
        return ["no pieces"]
    if pieces[0].lo != a or pieces[-1].hi != b:
        problems.append(f"pieces cover [{pieces[0].lo}, {pieces[-1].hi}], not the interval [{a}, {b}]")
    for prev, nxt in zip(pieces[:-1], pieces[1:]):
        if prev.hi != nxt.lo:
            problems.append(f"pieces are not contiguous at {prev.hi} / {nxt.lo}")
    poly_q = _fmpq_poly(coefficients)
    with _arb_precision(prec):
        for i, p in enumerate(pieces):
            if not p.lo < p.hi:
                problems.append(f"piece {i} is empty: [{p.lo}, {p.hi}]")
                continue
            if p.order < 0:  # E_K would be empty and the "− 1" of f dropped: the enclosure would not hold
                problems.append(f"piece {i}: exp truncation order must be >= 0; got {p.order}")
                continue
            upper, _, _ = _enclose(poly_q, p.lo, p.hi, p.order, Fraction(0))
            if _arb_to_fraction(upper) > p.upper:
                problems.append(
                    f"piece {i} [{float(p.lo):.6g}, {float(p.hi):.6g}]: recomputed bound "
                    f"{float(_arb_to_fraction(upper)):.6e} exceeds the stored {float(p.upper):.6e}"
                )
    return problems


def witness_lower(coefficients: Sequence[Fraction], x: Fraction, prec: int) -> Fraction:
    """Rigorous lower bound on |P(x)e^{-x} − 1| at the witness x."""
    with _arb_precision(prec):
        ball = _witness_value(_fmpq_poly(coefficients), x)
        return Fraction(0) if ball.contains(0) else _arb_to_fraction(abs(ball).lower())


# --- cross-checks -------------------------------------------------------------------------------


def poisson_tail(b: Fraction, g: int, prec: int = 256) -> tuple[Fraction, Fraction]:
    """Enclosure of P[Poisson(b) > g] = 1 − e^{-b} Σ_{k≤g} b^k/k!: the exact sup of |T_g(x)e^{-x} − 1| on [0, b].

    For Taylor at 0, T_g(x)e^{-x} − 1 = −P[Poisson(x) > g], increasing in x (SPEC L7, docs/certificate.md §2).
    """
    from flint import arb

    b = as_fraction(b)
    partial = sum((b**k / math.factorial(k) for k in range(g + 1)), Fraction(0))
    bits = prec
    while True:
        with _arb_precision(bits):
            tail = 1 - (-arb(_fmpq(b))).exp() * arb(_fmpq(partial))
            if tail.rad() * 2**20 < abs(tail.mid()) or bits > 1 << 15:
                return _arb_to_fraction(tail.lower()), _arb_to_fraction(tail.upper())
        bits *= 2


def sollya_supnorm(poly: Polynomial, accuracy_bits: int = 30, timeout_s: float = 60.0) -> tuple[Fraction, Fraction] | None:
    """Sollya's ``supnorm(P, exp(x), [a;b], relative, 2^-bits)`` when the ``sollya`` binary exists; None otherwise."""
    exe = shutil.which("sollya")
    if exe is None:
        return None
    a, b = poly.interval
    terms = " + ".join(f"({c.numerator})/({c.denominator})*x^{k}" for k, c in enumerate(poly.coefficients))
    script = (
        f"prec=300!; display=decimal!;\n"
        f"P = {terms};\n"
        f"r = supnorm(P, exp(x), [({a.numerator})/({a.denominator}); ({b.numerator})/({b.denominator})], relative, 2^(-{accuracy_bits}));\n"
        "print(inf(r)); print(sup(r));\nquit;\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sollya", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        out = subprocess.run([exe, path], capture_output=True, text=True, timeout=timeout_s)
    finally:
        os.unlink(path)
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    try:
        return Fraction(Decimal(lines[-2])), Fraction(Decimal(lines[-1]))
    except (IndexError, ValueError, ArithmeticError):
        raise RuntimeError(f"could not parse sollya output: {out.stdout!r} {out.stderr!r}") from None


# --- degrees ------------------------------------------------------------------------------------


def taylor_degree(b: Fraction, eps: Fraction, max_degree: int = 100000) -> int:
    """Least g with P[Poisson(b) > g] <= ε: the least Taylor-at-0 degree reaching ε on [0, b] (Arb, rigorous upper side).

    The partial sums e^{-b} Σ_{k≤g} b^k/k! are accumulated in one pass at a precision covering e^{±b} and ε.
    """
    from flint import arb

    b, eps = as_fraction(b), as_fraction(eps)
    bits = 96 + max(0, eps.denominator.bit_length() - eps.numerator.bit_length()) + 2 * math.ceil(float(b) * 1.45)
    with _arb_precision(bits):
        ball_b, ball_eps = arb(_fmpq(b)), arb(_fmpq(eps))
        term = (-ball_b).exp()
        partial = term
        for g in range(max_degree + 1):
            tail = 1 - partial
            if tail.upper() <= ball_eps.lower():
                return g
            term = term * ball_b / (g + 1)
            partial += term
    raise ValueError(f"no Taylor degree <= {max_degree} reaches eps = {float(eps):.3g} on [0, {float(b):.3g}]")


@dataclass
class DegreeResult:
    """Least degree of ``family`` certified to ε (``bound.upper <= ε``) and the refutation of degree − 1."""

    family: str
    degree: int
    polynomial: Polynomial
    bound: ApproxBound
    below: ApproxBound | None  # certificate for degree − 1; refuted iff below.lower > ε
    probes: int
    eps: Fraction

    @property
    def minimal(self) -> bool:
        """True when degree − 1 is refuted (its certified lower bound exceeds ε), or degree = 0."""
        return self.degree == 0 or (self.below is not None and self.below.lower > self.eps)


_GUESS = {"taylor": 1.0, "taylor-mid": 1.0, "chebyshev": 0.8, "minimax": 0.5}


def minimal_degree(
    family: str, interval: Sequence[Any], eps: Fraction | float, *, gap: Fraction | float = DEFAULT_GAP, max_degree: int = 400
) -> DegreeResult:
    """Least degree g of ``family`` whose certified sup |P e^{-x} − 1| is <= ε (SPEC L7, P32; assumes error falls with g).

    Probes start at a guess from the Taylor degree, gallop, then bisect; degree g−1 is certified too, so
    the result says whether g is minimal (g−1's certified lower bound > ε) for this family's construction.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    eps = as_fraction(eps)
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in the open interval (0, 1); got {float(eps)!r}")
    a, b = as_fraction(interval[0]), as_fraction(interval[1])
    probes: dict[int, tuple[Polynomial, ApproxBound]] = {}

    def probe(g: int) -> tuple[Polynomial, ApproxBound]:
        if g not in probes:
            poly = build_polynomial(family, g, (a, b))
            probes[g] = (poly, certify_polynomial(poly, gap=gap, decide=eps))
        return probes[g]

    def passes(g: int) -> bool:
        return probe(g)[1].upper <= eps

    reference = taylor_degree(b - a, eps) if a >= 0 else max_degree // 2
    lo, hi = -1, None  # lo fails (or is −1), hi passes
    g = max(0, min(max_degree, round(_GUESS[family] * reference)))
    step = 1
    while hi is None:
        if passes(g):
            hi = g
        else:
            lo = g
            if g >= max_degree:
                raise ValueError(f"family {family!r} does not reach eps = {float(eps):.3g} with degree <= {max_degree}")
            g, step = min(max_degree, g + step), step * 2
    step = 1
    while lo == -1 and hi > 0:  # gallop down until a failure is found
        g = max(0, hi - step)
        if passes(g):
            hi, step = g, step * 2
            if g == 0:
                break
        else:
            lo = g
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    poly, bound = probe(hi)
    below = probe(hi - 1)[1] if hi > 0 else None
    return DegreeResult(family, hi, poly, bound, below, len(probes), eps)


# --- regime, rank and costs (SPEC L11, P31, P41) -------------------------------------------------


def regime(B: float, n: int) -> dict[str, Any]:
    """Where B sits against the ∛ln n threshold (L11): B³/ln n and B / ∛ln n (no regime at n = 1)."""
    M = B**3
    if n < 2:
        return {"B_cubed": M, "ln_n": 0.0, "B_cubed_over_ln_n": None, "B_over_threshold": None,
                "verdict": "n = 1: no asymptotic regime"}
    ln_n = math.log(n)
    ratio = M / ln_n
    threshold = ln_n ** (1 / 3)
    verdict = (
        "B³ well below ln n: almost-linear regime (L11)" if ratio < 0.25
        else "B³ comparable to ln n: rank grows like n^Θ(1) (L11 boundary, SETH-hard side)" if ratio <= 4
        else "B³ above ln n: beyond the almost-linear regime"
    )
    return {"B_cubed": M, "ln_n": ln_n, "B_cubed_over_ln_n": ratio, "threshold_B": threshold,
            "B_over_threshold": B / threshold, "verdict": verdict}


def rank_exponent(n: int, B: float, d: int, eps: Fraction | float | None = None) -> float:
    """log r / log n with r = C(g+d, d) and g the least Taylor degree reaching ε (default ε = 1/n) on [0, 2B³] (P41)."""
    from .features import feature_rank

    if n < 2:
        raise ValueError(f"n must be >= 2 for log r / log n; got {n}")
    eps = Fraction(1, n) if eps is None else as_fraction(eps)
    g = taylor_degree(2 * as_fraction(B) ** 3, eps)
    return math.log(feature_rank(g, d)) / math.log(n)


def fast_path_costs(n: int, d: int, g: int, itemsize: int, target: str = "forward") -> dict[str, Any]:
    """Operation-count model of the fast path (A1/A2, O(n·r·d) / O(n·r·d²)) against the exact Θ(n³d) path, and the crossover n.

    Counts multiply-adds of the dominant products in ``verified_ta.fast`` (forward: features 3nr, V^T V1 and
    W^T V2 2·2nrd, U·(…) 2nrd and the normaliser 4nr; gradient adds the three d²×n×r contractions 6nrd² and
    the two d³r einsums) against the exact path (forward 2n³d scores + 3n³ softmax + 2n³d values; the
    gradient about three times that). A model, not a measurement: benchmarks/bench_fast.py measures.
    """
    from .features import feature_memory_bytes, feature_rank

    r = feature_rank(g, d)

    def fast(m: int) -> int:
        f = 3 * m * r + 6 * m * r * d + 4 * m * r
        return f if target == "forward" else 2 * f + 6 * m * r * d * d + 4 * d**3 * r

    def exact(m: int) -> int:
        f = 4 * m**3 * d + 3 * m**3
        return f if target == "forward" else 3 * f

    lo, hi = 1, 2
    while fast(hi) >= exact(hi):
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fast(mid) < exact(mid) else (mid, hi)
    crossover = 1 if fast(1) < exact(1) else hi
    return {
        "rank": r,
        "fast_flops": fast(n),
        "exact_flops": exact(n),
        "speedup": exact(n) / fast(n),
        "fast_memory_bytes": feature_memory_bytes(n, n, n, g, d, itemsize),
        "exact_memory_bytes_materialised": n**3 * itemsize,
        "exact_memory_bytes_streaming": 6 * n * d * itemsize,
        "crossover_n": crossover,
        "fast_pays": n >= crossover,
    }


# --- the full certificate (SPEC §5–6; `verified-ta certify`) ----------------------------------------

FORMAT = "verified-ta certificate v1"
TARGETS = ("forward", "gradient")
DTYPE_NAMES = ("float64", "float32")
_REL_SLACK = Fraction(1, 10**12)  # stored decimal bounds may exceed recomputed ones by this much (17-digit rounding)


@dataclass(frozen=True)
class CertifyInputs:
    """Inputs of ``verified-ta certify``: entry bound B, length n, head dimension d, target ε (scale s = 1/d)."""

    B: float
    n: int
    d: int
    eps: float
    target: str = "forward"
    dtype: str = "float64"
    family: str = "auto"
    gap: float = 0.01

    def __post_init__(self) -> None:
        from .validation import check_open_unit, check_positive_int

        if isinstance(self.B, bool) or not isinstance(self.B, (int, float)) or not math.isfinite(self.B) or self.B <= 0:
            raise ValueError(f"B must be a finite number > 0; got {self.B!r}")
        check_positive_int("n", self.n)
        check_positive_int("d", self.d)
        check_open_unit("eps", self.eps)
        check_open_unit("gap", self.gap)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {self.target!r}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {self.dtype!r}")
        if self.family not in ("auto", *FAMILIES):
            raise ValueError(f"family must be one of auto, {', '.join(FAMILIES)}; got {self.family!r}")

    @property
    def torch_dtype(self):
        import torch

        return {"float64": torch.float64, "float32": torch.float32}[self.dtype]

    @property
    def itemsize(self) -> int:
        return 8 if self.dtype == "float64" else 4


def score_interval(B: float, d: int) -> tuple[Fraction, Fraction, Fraction]:
    """(M, 0, 2M): M >= s·d·B³ (L5, rounded up to a float), and the shifted interval [0, 2M] (L6)."""
    from .error_bounds import score_bound

    M = Fraction(score_bound(B, d))
    return M, Fraction(0), 2 * M


def _bound_lines(inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction, approx_upper: Fraction) -> dict[str, Any]:
    """Floating-point term, totals, and the L9/L10 error lines from the certified δ (shared by build and verify)."""
    from .error_bounds import forward_error_bound, forward_rounding_term, gradient_error_bounds, gradient_rounding_term, value_bound

    eps, n, d, B = Fraction(inputs.eps), inputs.n, inputs.d, inputs.B
    delta = approx_upper
    lines: list[dict[str, Any]] = []
    out: dict[str, Any] = {"lines": lines}
    V = value_bound(B)  # ||V1 ⊘ V2||∞ <= B² (L5)
    if delta >= 1:
        out.update(rho=None, fp_message="approximation error >= 1: no bound", total=None, meets_target=False)
        return out
    try:
        fp_forward = forward_rounding_term(shifted, M, d, n, n, inputs.torch_dtype, delta, 1)
        eta_fp = Fraction(fp_forward)
        rho: Fraction | None = eta_fp / (2 + eta_fp)  # fp term as a relative entry error (η = 2ρ/(1−ρ) inverted)
        fp_message = f"{inputs.dtype} rounding of features and dot products adds ρ <= {float(rho):.3e} (relative, per entry)"
    except ValueError as exc:
        rho, fp_message = None, f"{inputs.dtype} cannot reach ε: {exc}"
    total = None if rho is None else delta + rho
    meets = total is not None and total <= eps
    if rho is not None and rho >= eps:
        fp_message += f"; this alone exceeds ε = {inputs.eps:g}: {inputs.dtype} cannot reach ε on this range"
    out.update(rho=rho, fp_message=fp_message, total=total, meets_target=meets)

    def line(name: str, value: float | None, tag: str, spec_id: str, note: str = "") -> None:
        lines.append({"name": name, "value": value, "tag": tag, "spec": spec_id, "note": note})

    line("forward approximation ||Att̃ − Att||∞ <= 2δ/(1−δ)·B²", forward_error_bound(delta, V), "proved", "L9",
         "δ = certified approximation error, ||V1⊘V2||∞ <= B² (L5)")
    fwd_fp = None
    if rho is not None:
        fwd_fp = forward_rounding_term(shifted, M, d, n, n, inputs.torch_dtype, delta, V)
    line(f"forward floating-point term ({inputs.dtype})", fwd_fp, "derived", "A1", "Higham γ_k, docs/bounds.md")
    line("forward total", None if fwd_fp is None else forward_error_bound(delta, V) + fwd_fp, "derived", "L9")
    H = Fraction(V)
    E_norm = H  # assumption: targets within the value range, ||E||∞ <= B²
    eta = 2 * delta / (1 - delta)
    c_inf = (1 + eta) * H + E_norm
    q_norm = d * c_inf * H
    a_norms = (B, B, B)  # assumption: X_i = I, so ||A_i||∞ = ||Q||∞ etc. <= B
    g_bounds = gradient_error_bounds(delta, H, q_norm, n, d, a_norms)
    note = "assumes X_i = Y_i = I (||A_i||∞ <= B) and ||E||∞ <= B²; scales with ||A1||∞||A2||∞||A3||∞"
    line("gradient ||c̃ − c||∞ <= ηH", g_bounds.c, "derived", "L10")
    line("gradient max_j ||p̃_j − p_j||₁", g_bounds.p_row_l1, "derived", "L10")
    line("gradient approximation ||G̃ − G||∞", g_bounds.G, "derived", "L10", note)
    grad_fp = None
    if rho is not None:
        try:
            grad_fp = gradient_rounding_term(shifted, M, n, d, inputs.torch_dtype, delta, H, E_norm, d * c_inf, a_norms)
        except ValueError:
            grad_fp = None
    line(f"gradient floating-point term ({inputs.dtype})", grad_fp, "derived", "A2", note)
    line("gradient total", None if grad_fp is None else g_bounds.G + grad_fp, "derived", "L10")
    return out


@dataclass
class Certificate:
    """Everything ``verified-ta certify`` claims, with exact rationals where a re-check needs them."""

    inputs: CertifyInputs
    M: Fraction
    polynomial: Polynomial
    approx: ApproxBound
    degree_table: list[dict[str, Any]]
    cross_checks: list[dict[str, Any]]
    bounds: dict[str, Any]
    regime: dict[str, Any]
    costs: dict[str, Any]
    empirical: dict[str, Any] | None
    verdict: str
    exit_code: int
    message: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: exact rationals as "p/q", certified bounds as outward-rounded decimal strings."""
        a, b = self.polynomial.interval
        bounds = dict(self.bounds)
        for key in ("rho", "total"):
            if bounds.get(key) is not None:
                bounds[key] = decimal_up(bounds[key])
        return {
            "format": FORMAT,
            "inputs": asdict(self.inputs),
            "scale": f"1/{self.inputs.d}",
            "M": fraction_str(self.M),
            "interval": [fraction_str(a), fraction_str(b)],
            "regime": self.regime,
            "polynomial": {
                "family": self.polynomial.family,
                "degree": self.polynomial.degree,
                "coefficients": self.polynomial.coefficient_strings(),
                "sha256": self.polynomial.sha256(),
            },
            "coefficients": self.polynomial.coefficient_strings(),
            "degree_table": self.degree_table,
            "approx_error": {
                "lower": decimal_down(self.approx.lower),
                "upper": decimal_up(self.approx.upper),
                "witness": fraction_str(self.approx.witness),
                "method": self.approx.method,
                "precision_bits": self.approx.precision_bits,
                "piece_count": self.approx.piece_count,
                "seconds": self.approx.seconds,
                "status": self.approx.status,
                "pieces": [[fraction_str(p.lo), fraction_str(p.hi), p.order, decimal_up(p.upper)] for p in self.approx.pieces],
            },
            "cross_checks": self.cross_checks,
            "bounds": bounds,
            "costs": self.costs,
            "empirical": self.empirical,
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Certificate":
        """Parse :meth:`to_json` output (bounds become the stored decimal values, exactly)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT!r} certificate")
        inputs = CertifyInputs(**data["inputs"])
        poly_json = data["polynomial"]
        coeffs = [parse_fraction(c, "coefficients") for c in data["coefficients"]]
        if poly_json["coefficients"] != data["coefficients"]:
            raise ValueError("polynomial.coefficients and coefficients differ")
        interval = tuple(parse_fraction(x, "interval") for x in data["interval"])
        poly = Polynomial(poly_json["family"], interval, tuple(coeffs))
        ae = data["approx_error"]
        pieces = [
            Piece(parse_fraction(lo, "piece lo"), parse_fraction(hi, "piece hi"), int(k), _parse_decimal(u, "piece upper"))
            for lo, hi, k, u in ae["pieces"]
        ]
        approx = ApproxBound(
            _parse_decimal(ae["lower"], "approx_error.lower"), _parse_decimal(ae["upper"], "approx_error.upper"),
            parse_fraction(ae["witness"], "witness"), pieces, int(ae["precision_bits"]), float(ae["seconds"]), ae["status"],
            ae["method"],
        )
        bounds = dict(data["bounds"])
        for key in ("rho", "total"):
            if bounds.get(key) is not None:
                bounds[key] = _parse_decimal(bounds[key], f"bounds.{key}")
        return cls(inputs, parse_fraction(data["M"], "M"), poly, approx, data["degree_table"], data["cross_checks"], bounds,
                   data["regime"], data["costs"], data["empirical"], data["verdict"], int(data["exit_code"]), data["message"])


def _verdict(inputs: CertifyInputs, approx: ApproxBound, bounds: dict[str, Any]) -> tuple[str, int, str]:
    eps = Fraction(inputs.eps)
    if bounds["meets_target"]:
        return "certified", 0, f"certified: δ + ρ <= {decimal_up(bounds['total'], 6)} <= ε = {inputs.eps:g}"
    if bounds["rho"] is None or bounds["rho"] >= eps:
        return "target missed", 1, bounds["fp_message"]
    if approx.lower > eps:
        return "target missed", 1, f"approximation error >= {decimal_down(approx.lower, 6)} > ε (proved by witness)"
    return "inconclusive", 2, f"certified total {decimal_up(bounds['total'], 6)} > ε = {inputs.eps:g} but not refuted"


def build_certificate(inputs: CertifyInputs, empirical: int = 0, progress: Any = None) -> Certificate:
    """Search, certify and assemble (SPEC L5–L11). ``progress(str)`` is called between stages. ValueError on bad input."""
    from .features import DEFAULT_MEMORY_LIMIT_BYTES, check_feature_memory, feature_rank

    say = progress or (lambda _msg: None)
    if isinstance(empirical, bool) or not isinstance(empirical, int) or empirical < 0:
        raise ValueError(f"empirical must be an integer >= 0; got {empirical!r}")
    M, a, b = score_interval(inputs.B, inputs.d)
    eps, gap = Fraction(inputs.eps), Fraction(inputs.gap)
    # budget for the polynomial: ε minus an estimate of the floating-point term (Taylor coefficients)
    g_taylor = taylor_degree(b, eps)
    est = _bound_lines(inputs, build_polynomial("taylor", g_taylor, (a, b)).shifted(M), M, Fraction(0))["rho"]
    eps_poly = eps - est if est is not None and est <= eps / 2 else eps / 2
    table: list[dict[str, Any]] = []
    results: dict[str, DegreeResult] = {}
    for fam in FAMILIES:
        say(f"degree search: {fam}")
        try:
            res = minimal_degree(fam, (a, b), eps_poly, gap=gap)
        except ValueError as exc:
            table.append({"family": fam, "degree": None, "rank": None, "note": str(exc)})
            continue
        results[fam] = res
        table.append({
            "family": fam, "degree": res.degree, "rank": feature_rank(res.degree, inputs.d),
            "upper": decimal_up(res.bound.upper, 6), "minimal": res.minimal,
            "below_lower": None if res.below is None else decimal_down(res.below.lower, 6), "probes": res.probes,
        })
    if not results:
        raise ValueError(f"no family reaches eps = {inputs.eps:g} on [0, {float(b):g}]")
    if inputs.family == "auto":
        chosen = min(results.values(), key=lambda r: (r.degree, r.bound.upper))
    elif inputs.family in results:
        chosen = results[inputs.family]
    else:
        raise ValueError(f"family {inputs.family!r} does not reach eps = {inputs.eps:g} on [0, {float(b):g}]")
    poly = chosen.polynomial
    check_feature_memory(inputs.n, inputs.n, inputs.n, poly.degree, inputs.d, inputs.itemsize, 1, DEFAULT_MEMORY_LIMIT_BYTES)
    say("tight certificate")
    approx = certify_polynomial(poly, gap=gap)
    say("cross-checks")
    checks = _cross_checks(poly, approx, results.get("taylor"), gap)
    shifted = poly.shifted(M)
    bounds = _bound_lines(inputs, shifted, M, _parse_decimal(decimal_up(approx.upper), "upper"))  # as stored
    verdict, code, message = _verdict(inputs, approx, bounds)
    if approx.status == "max-pieces" and code == 0:
        message += f" (enclosure not tight: upper/lower = {float(approx.upper / approx.lower):.3g})"
    emp = None
    if empirical:
        say(f"empirical: {empirical} instances")
        emp = _empirical(inputs, shifted, M, approx.upper, empirical)
        if emp["worst_ratio"] is not None and emp["worst_ratio"] > 1:
            verdict, code, message = "inconclusive", 2, f"an observed error exceeds its bound (ratio {emp['worst_ratio']:.3g})"
    return Certificate(
        inputs, M, poly, approx, table, checks, bounds, regime(inputs.B, inputs.n),
        fast_path_costs(inputs.n, inputs.d, poly.degree, inputs.itemsize, inputs.target), emp, verdict, code, message,
    )


def _cross_checks(poly: Polynomial, approx: ApproxBound, taylor: DegreeResult | None, gap: Fraction) -> list[dict[str, Any]]:
    """Poisson-tail formula for Taylor at 0 (on the chosen P when Taylor, else on the Taylor entry), and Sollya."""
    checks: list[dict[str, Any]] = []
    subject = (poly, approx) if poly.family == "taylor" else None
    if subject is None and taylor is not None:
        subject = (taylor.polynomial, certify_polynomial(taylor.polynomial, gap=gap))
    if subject is not None and subject[0].interval[0] == 0:
        p, bound = subject
        lo, hi = poisson_tail(p.interval[1], p.degree)
        agrees = bound.lower <= hi and lo <= bound.upper
        checks.append({
            "name": "poisson-tail", "polynomial": f"taylor degree {p.degree}", "exact": [decimal_down(lo), decimal_up(hi)],
            "certified": [decimal_down(bound.lower), decimal_up(bound.upper)], "agrees": agrees,
            "relative_gap": float((bound.upper - lo) / lo) if lo > 0 else None,
        })
    try:
        sol = sollya_supnorm(poly)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        checks.append({"name": "sollya-supnorm", "skipped": f"sollya failed: {exc}"})
    else:
        if sol is None:
            checks.append({"name": "sollya-supnorm", "skipped": "no sollya binary on PATH"})
        else:
            agrees = approx.lower <= sol[1] and sol[0] <= approx.upper
            checks.append({"name": "sollya-supnorm", "exact": [decimal_down(sol[0]), decimal_up(sol[1])], "agrees": agrees})
    return checks


def _empirical(inputs: CertifyInputs, shifted: Sequence[Fraction], M: Fraction, delta: Fraction, count: int) -> dict[str, Any]:
    """``count`` instances (even: uniform in [−B, B]; odd: adversarial, scores at ±M): observed error / bound vs mpmath."""
    import numpy as np
    import torch

    from .error_bounds import forward_error_bound, forward_rounding_term, gradient_error_bounds, gradient_rounding_term
    from .fast import fast_objective_gradient, fast_tensor_attention
    from .gradient import compose_X, compose_Y
    from .oracles import mp_attention, mp_gradient
    from .products import khatri_rao

    n, d, B, dtype = min(inputs.n, 6), inputs.d, inputs.B, inputs.torch_dtype
    rows = []
    for i in range(count):
        gen = torch.Generator().manual_seed(i)

        def draw(rows_: int, bound: float) -> torch.Tensor:
            if i % 2 == 0:
                return ((torch.rand(rows_, d, generator=gen, dtype=torch.float64) * 2 - 1) * bound).to(dtype)
            signs = torch.randint(0, 2, (rows_, 1), generator=gen).to(torch.float64) * 2 - 1
            return (signs * bound * torch.ones(rows_, d, dtype=torch.float64)).to(dtype)

        q, k1, k2, v1, v2 = (draw(n, B) for _ in range(5))
        if inputs.target == "forward":
            approx = fast_tensor_attention(q, k1, k2, v1, v2, shifted)
            exact, _ = mp_attention(q, k1, k2, v1, v2, dps=40)
            observed = float(np.max(np.abs(exact - approx.double().numpy().astype(object))))
            vn = float(v1.abs().max()) * float(v2.abs().max())
            bound = forward_error_bound(delta, vn) + forward_rounding_term(shifted, M, d, n, n, dtype, delta, vn)
        else:
            eye = torch.eye(d, dtype=dtype)
            E = draw(n, B * B)
            res = fast_objective_gradient(q, k1, k2, v1, v2, E, eye, eye, eye, eye, eye, shifted)
            X, Y = compose_X(eye, eye, eye).double(), compose_Y(eye, eye).double()
            exact = mp_gradient(*(t.double() for t in (q, k1, k2, v1, v2, E)), X, Y, dps=40)
            observed = float(np.max(np.abs(exact - res.G.double().numpy().astype(object))))
            h = khatri_rao(v1.double(), v2.double())
            H = float(h.abs().max())
            c = res.c.double()
            q_norm = float((c @ h.T).abs().max())
            a_norms = tuple(float(t.abs().max()) for t in (q, k1, k2))
            c_l1 = float(c.abs().sum(-1).max())
            bound = gradient_error_bounds(delta, H, q_norm, n, d, a_norms).G + gradient_rounding_term(
                shifted, M, n, d, dtype, delta, H, float(E.abs().max()), c_l1, a_norms)
        rows.append({"kind": "random" if i % 2 == 0 else "adversarial", "observed": observed, "bound": bound,
                     "ratio": observed / bound if bound > 0 else math.inf})
    return {"n": n, "d": d, "target": inputs.target, "instances": rows,
            "worst_ratio": max((r["ratio"] for r in rows), default=None)}


@dataclass
class VerifyResult:
    """Outcome of :func:`verify_certificate`: ``ok`` iff ``problems`` is empty."""

    ok: bool
    problems: list[str]
    pieces_checked: int
    seconds: float


def verify_certificate(data: dict[str, Any] | str) -> VerifyResult:
    """Re-check a certificate from its JSON alone, piece by piece, without any search (SPEC L5–L10).

    Recomputes: the SHA-256 of the coefficients; M and [0, 2M] from the inputs (L5, L6); every piece's
    Taylor-model bound at the stored precision and order (must not exceed the stored one); the witness
    lower bound; the stored [lower, upper] against those (equal up to 17-digit rounding); the Poisson
    cross-check for Taylor; the floating-point term, totals, L9/L10 lines and the verdict. The degree
    table (search results for other families) is reported, not re-checked.
    """
    start = time.perf_counter()
    problems: list[str] = []
    try:
        raw = json.loads(data) if isinstance(data, str) else data
        cert = Certificate.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        return VerifyResult(False, [f"malformed certificate: {exc}"], 0, time.perf_counter() - start)
    poly, approx, inputs = cert.polynomial, cert.approx, cert.inputs
    if raw["polynomial"]["sha256"] != poly.sha256():
        problems.append("SHA-256 of the coefficients does not match: the polynomial was changed")
    if raw["polynomial"]["degree"] != poly.degree:
        problems.append(f"stated degree {raw['polynomial']['degree']} != {poly.degree} (number of coefficients − 1)")
    M, a, b = score_interval(inputs.B, inputs.d)
    if cert.M != M or poly.interval != (a, b):
        problems.append(f"M / interval do not follow from B = {inputs.B}, d = {inputs.d}: expected M = {M}, [0, {b}]")
    problems += recheck_pieces(poly.coefficients, poly.interval, approx.pieces, approx.precision_bits)
    top = max((p.upper for p in approx.pieces), default=Fraction(0))
    if not top <= approx.upper <= top * (1 + _REL_SLACK):
        problems.append(f"approx_error.upper {float(approx.upper):.17g} is not the largest piece bound {float(top):.17g}")
    low = witness_lower(poly.coefficients, approx.witness, approx.precision_bits)
    if not approx.lower <= low or approx.lower < low * (1 - _REL_SLACK):
        problems.append(f"approx_error.lower {float(approx.lower):.17g} is not the witness bound {float(low):.17g}")
    if approx.lower > approx.upper:
        problems.append(f"approx_error.lower {float(approx.lower):.17g} exceeds upper {float(approx.upper):.17g}")
    if approx.status == "tight" and approx.upper > (1 + Fraction(inputs.gap)) * approx.lower:
        problems.append("status 'tight' but upper > (1 + gap)·lower")
    for check in cert.cross_checks:
        if check.get("name") == "poisson-tail" and poly.family == "taylor":
            lo, hi = poisson_tail(poly.interval[1], poly.degree)
            if not (approx.lower <= hi and lo <= approx.upper):
                problems.append("Poisson-tail cross-check disagrees with the certified enclosure")
    bounds = _bound_lines(inputs, poly.shifted(M), M, approx.upper)
    for key in ("rho", "total"):
        stored, fresh = cert.bounds.get(key), bounds[key]
        fresh = None if fresh is None else _parse_decimal(decimal_up(fresh), key)
        if stored != fresh:
            problems.append(f"bounds.{key} = {stored} but recomputes to {fresh}")
    if cert.bounds.get("lines") != bounds["lines"]:
        problems.append("error-bound lines (L9, L10, floating-point terms) do not recompute to the stored values")
    verdict, code, _ = _verdict(inputs, approx, bounds)
    if cert.empirical and cert.empirical.get("worst_ratio") is not None and cert.empirical["worst_ratio"] > 1:
        verdict, code = "inconclusive", 2
    if (cert.verdict, cert.exit_code) != (verdict, code):
        problems.append(f"verdict {cert.verdict!r} (exit {cert.exit_code}) but the checks give {verdict!r} (exit {code})")
    return VerifyResult(not problems, problems, len(approx.pieces), time.perf_counter() - start)


def certificate_to_json(cert: Certificate) -> str:
    """The certificate as indented JSON text."""
    return json.dumps(cert.to_json(), indent=2) + "\n"


def quick_certify_rows() -> list[CheckRow]:
    """A quick certify for ``verified-ta check`` (a few seconds): P32 / L7 bounds, the Poisson cross-check, L7's
    minimax-versus-Taylor degree, and a certificate that verifies and fails once a coefficient is tampered."""
    from .report import CheckRow

    rows: list[CheckRow] = []
    eps = Fraction(1, 10**6)
    taylor = build_polynomial("taylor", 12, (0, 2))
    bound = certify_polynomial(taylor)
    rows.append(CheckRow.compare("P32", "Taylor g=12 on [0, 2]: certified sup |Pe^-x − 1| <= ε", float(bound.upper), float(eps),
                                 f"[{decimal_down(bound.lower, 4)}, {decimal_up(bound.upper, 4)}], {bound.piece_count} pieces"))
    lo, hi = poisson_tail(Fraction(2), 12)
    inside = bound.lower <= hi and lo <= bound.upper
    rows.append(CheckRow.compare("L7", "Poisson-tail formula inside the Arb enclosure (upper/exact − 1 <= gap)",
                                 float((bound.upper - lo) / lo) if inside else math.inf, float(DEFAULT_GAP),
                                 f"exact {decimal_up(hi, 6)}"))
    mm = minimal_degree("minimax", (0, 16), Fraction(1, 1000))
    gt = taylor_degree(Fraction(16), Fraction(1, 1000))
    rows.append(CheckRow.compare("L7", "relative minimax degree <= 0.6 × Taylor degree ([0,16], ε=1e-3)",
                                 mm.degree, 0.6 * gt, f"minimax {mm.degree} (minimal: {mm.minimal}) vs Taylor {gt}"))
    cert = build_certificate(CertifyInputs(B=1.0, n=256, d=2, eps=1e-6))
    data = cert.to_json()
    ok = verify_certificate(data)
    tampered = json.loads(json.dumps(data))
    c0 = parse_fraction(tampered["coefficients"][1], "c")
    tampered["coefficients"][1] = tampered["polynomial"]["coefficients"][1] = fraction_str(c0 * (1 + Fraction(1, 10**4)))
    tampered["polynomial"]["sha256"] = Polynomial(cert.polynomial.family, cert.polynomial.interval,
                                                  tuple(parse_fraction(c, "c") for c in tampered["coefficients"])).sha256()
    bad = verify_certificate(tampered)
    rows.append(CheckRow("L9", "certificate (B=1, n=256, d=2) verifies from its JSON", 0.0 if ok.ok else 1.0, 0.0, ok.ok,
                         f"{cert.verdict}, {ok.pieces_checked} pieces re-checked in {ok.seconds:.2f}s"))
    rows.append(CheckRow("L7", "tampered coefficient (re-hashed) is rejected", 0.0 if not bad.ok else 1.0, 0.0, not bad.ok,
                         bad.problems[0][:80] if bad.problems else "accepted: BUG"))
    return rows
