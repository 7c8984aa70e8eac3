"""Tile configurations of the exact kernels: the candidates the dispatcher may launch, and the choice among them.

Every candidate listed here is compiled for sm_90 by the offline gate (:mod:`verified_ta.kernels.gate`, the
``verified-ta kernels`` command): it must compile, must not spill registers in fp16/bf16 and must use ``wgmma``.
The dispatcher only ever launches a candidate (or the interpreter's 16×16 tile), so a config that fails the gate
cannot be picked. On CUDA, :func:`pick_config` times the candidates once per key (kernel, dtype, d, n bucket, causal,
windowed) and keeps the fastest. Importing this module needs neither triton nor a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["KernelConfig", "INTERPRETER_CONFIG", "TUNABLE", "candidates", "k1_owner_passes", "pick_config",
           "split_count", "tune_key"]


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch parameters of one kernel (BLOCK_M queries × BLOCK_N k2 rows; tl.dot needs both >= 16)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two >= 16 (a tl.dot tile); got {v!r}")
        for name, allowed in (("num_warps", (1, 2, 4, 8, 16)), ("num_stages", (1, 2, 3, 4, 5))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}")


#: the only tile the CPU interpreter runs (tiny sizes; n = 17 leaves one-row tails in every loop)
INTERPRETER_CONFIG = KernelConfig(16, 16, 1, 1)

_C = KernelConfig
#: (kernel, "16bit" | "fp32", d) -> candidates, first = the default before tuning. Sized by the gate's register and
#: shared-memory report (benchmarks/RESULTS.md, "Compile gate"): 16-bit candidates keep every accumulator in registers
#: (no spills) and use wgmma (its M tile is 64 rows per warpgroup, so BLOCK_M >= 64 where BLOCK_M is a dot's M);
#: fp32 runs IEEE dots from smaller tiles (its operands double the shared memory of a stage).
_TABLE: dict[tuple[str, str, int], tuple[KernelConfig, ...]] = {}
for _d in (16, 32, 64, 128):
    _wide = _d == 128
    _TABLE["forward", "16bit", _d] = ((_C(128, 32, 8, 3), _C(64, 32, 8, 2)) if _wide
                                      else (_C(128, 64, 8, 3), _C(128, 128, 8, 3), _C(64, 64, 4, 3)))
    _TABLE["forward-window", "16bit", _d] = ((_C(64, 32, 8, 2), _C(128, 16, 8, 3)) if _wide
                                             else (_C(64, 32, 4, 3), _C(128, 32, 8, 3)))
    _TABLE["dq", "16bit", _d] = ((_C(64, 64, 8, 2), _C(64, 32, 8, 2)) if _wide
                                 else (_C(64, 64, 4, 3), _C(128, 64, 8, 2)))
    _TABLE["k1_owner", "16bit", _d] = ((_C(64, 64, 8, 2), _C(64, 32, 8, 2)) if _wide
                                       else (_C(64, 64, 8, 2), _C(64, 32, 8, 2)))
    _TABLE["k2_owner", "16bit", _d] = ((_C(32, 64, 8, 2),) if _wide else (_C(64, 64, 8, 2), _C(32, 64, 4, 2)))
    # float32 (IEEE FMA dots, no tensor cores): the least-spilling tiles of a sweep (RESULTS.md, "Compile gate")
    _fwd32 = (_C(64, 32, 8, 2), _C(32, 32, 8, 2)) if _wide else (_C(64, 64, 8, 2), _C(32, 32, 8, 2))
    _TABLE["forward", "fp32", _d] = _TABLE["forward-window", "fp32", _d] = _fwd32
    _TABLE["dq", "fp32", _d] = (_C(32, 32, 8, 2),) if _wide else (_C(32, 32, 8, 2), _C(64, 32, 8, 2))
    _TABLE["k1_owner", "fp32", _d] = (_C(32, 32, 4, 2),) if _wide else (_C(64, 32, 8, 2), _C(32, 32, 4, 2))
    _TABLE["k2_owner", "fp32", _d] = (_C(32, 16, 8, 2),) if _wide else (_C(32, 32, 8, 2),)

TUNABLE = ("forward", "dq", "k1_owner", "k2_owner")


def _dtype_class(dtype: torch.dtype) -> str:
    return "fp32" if dtype == torch.float32 else "16bit"


def candidates(kernel: str, dtype: torch.dtype, d: int, windowed: bool = False) -> tuple[KernelConfig, ...]:
    """The configs the dispatcher may launch for ``kernel`` (one of :data:`TUNABLE`) at this dtype and d."""
    if kernel not in TUNABLE:
        raise ValueError(f"kernel must be one of {TUNABLE}; got {kernel!r}")
    name = "forward-window" if kernel == "forward" and windowed else kernel
    return _TABLE[name, _dtype_class(dtype), d]


def k1_owner_passes(d: int) -> tuple[tuple[bool, bool], ...]:
    """(WANT_DK, WANT_DV) per K1-owner launch: one pass for both below d = 128; at d = 128 two float32 BLOCK_M×d
    accumulators spill, so dK1 and dV1 take one pass each (5 n³d-sized products per tile instead of 4)."""
    return ((True, False), (False, True)) if d >= 128 else ((True, True),)


def tune_key(kernel: str, dtype: torch.dtype, d: int, n: int, causal: bool, windowed: bool) -> tuple:
    """Autotuning key: the n bucket is the next power of two (tiles behave alike within a bucket)."""
    return kernel, str(dtype), d, 1 << max(0, n - 1).bit_length(), causal, windowed


_TUNED: dict[tuple, KernelConfig] = {}


def pick_config(kernel: str, dtype: torch.dtype, d: int, n: int, causal: bool, windowed: bool,
                timer: Callable[[KernelConfig], float] | None = None) -> KernelConfig:
    """The interpreter's tile under ``TRITON_INTERPRET=1``; else the fastest candidate by ``timer`` (cached per
    :func:`tune_key`), or the first candidate when no timer is given (nothing tuned yet)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return INTERPRETER_CONFIG
    options = candidates(kernel, dtype, d, windowed)
    key = tune_key(kernel, dtype, d, n, causal, windowed)
    if key in _TUNED:
        return _TUNED[key]
    if timer is None or len(options) == 1:
        return options[0]
    times = {c: timer(c) for c in options}
    _TUNED[key] = min(options, key=lambda c: times[c])
    return _TUNED[key]


def split_count(programs: int, n1: int, device: torch.device, min_rows: int = 128, most: int = 16) -> int:
    """k1 splits so a forward of ``programs`` (query tiles × batch·heads) fills ≥ 2 waves of the GPU's SMs.

    1 on a CPU; each split keeps at least ``min_rows`` k1 rows, at most ``most`` splits.
    """
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = -(-2 * sms // max(programs, 1))
    return max(1, min(want, n1 // min_rows, most))
