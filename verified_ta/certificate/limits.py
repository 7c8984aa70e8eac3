"""Limits of certify and --verify: the time budget of one call and the caps on untrusted certificates.

Every limit is a named constant here so that the CLI, the docs (docs/certificate.md §7) and the tests quote
the same numbers. A certificate that ``build_certificate`` can produce never exceeds a cap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "MAX_DEGREE",
    "MAX_ORDER",
    "MAX_PIECES",
    "MIN_PRECISION_BITS",
    "MAX_PRECISION_BITS",
    "MAX_FILE_BYTES",
    "MAX_NESTING",
    "MAX_RATIONAL_DIGITS",
    "MAX_ENDPOINT_DIGITS",
    "TimeLimit",
]

#: wall-clock seconds one certify call may spend after start-up (the CLI's ``--time-limit``); the call then
#: answers with what it has (each stage checks the clock between steps of at most a few hundred milliseconds)
DEFAULT_TIME_LIMIT_S = 4.0
#: largest polynomial degree searched or accepted (the least degree needed grows like 2M: B³ ≳ 200 is out of reach)
MAX_DEGREE = 400
#: largest exp-truncation order K of one Taylor-model piece (the enclosure picks K <= MAX_ORDER itself)
MAX_ORDER = 400
#: most pieces in one enclosure (``certify_polynomial``'s ``max_pieces``)
MAX_PIECES = 20000
#: Arb working precision of an enclosure: flint needs >= 2 bits; certify starts at 96 (+ the error level's bits)
#: and doubles at most 3 times, never beyond MAX_PRECISION_BITS
MIN_PRECISION_BITS = 53
MAX_PRECISION_BITS = 1 << 15
#: largest certificate file ``--verify`` reads, and deepest JSON nesting it parses (a certificate nests 4 deep)
MAX_FILE_BYTES = 32 << 20
MAX_NESTING = 16
#: most decimal digits in one exact rational of a certificate (numerator or denominator; below Python's 4300-digit
#: int-to-text limit), and in a piece endpoint (dyadic subdivisions of [0, 2M]: a few dozen digits in practice)
MAX_RATIONAL_DIGITS = 4000
MAX_ENDPOINT_DIGITS = 1000


@dataclass
class TimeLimit:
    """A wall-clock budget: ``check()`` raises ``TimeoutError`` once ``seconds`` have passed since creation."""

    seconds: float | None

    def __post_init__(self) -> None:
        self.start = time.monotonic()

    @property
    def deadline(self) -> float | None:
        """The ``time.monotonic()`` value at which the budget ends (None: unlimited)."""
        return None if self.seconds is None else self.start + self.seconds

    def expired(self) -> bool:
        return self.seconds is not None and time.monotonic() > self.start + self.seconds

    def check(self) -> None:
        if self.expired():
            raise TimeoutError(f"time limit of {self.seconds:g} s reached")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self, unlimited: float) -> float:
        """Seconds left, or ``unlimited`` when there is no limit."""
        return unlimited if self.seconds is None else self.seconds - self.elapsed()
