"""Defaults of ``verified-ta conform`` (CLI, pytest plugin, :class:`~verified_ta.testing.checks.ConformConfig`) and
``verified-ta check``, in one torch-free module so that ``verified-ta --help`` imports nothing heavy.

Conform's defaults are sized to find the bugs fused kernels have (issue 11): sequence lengths up to 2·64 + 1 (tile
edges, :data:`verified_ta.testing.strategies.TILE_EDGES`), head dimensions 1–128 (kernels specialise d >= 16),
entries up to B = 2, and a large-logit check; a correct float64 implementation takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

__all__ = ["CONFORM_DEFAULTS", "CHECK_DEFAULTS", "DTYPE_NAMES"]

CONFORM_DEFAULTS: dict = {
    "device": "cpu",
    "dtype": "float64",
    "max_examples": 25,
    "seed": None,
    "min_n": 1,
    "max_n": 129,
    "head_dims": "1,2,3,4,8,16,32,64,128",
    "max_bound": 2.0,
    "timeout": 600.0,
    "workers": 1,
}

CHECK_DEFAULTS: dict = {"n": 4, "d": 3, "seed": 0, "trials": 3}

#: dtype names accepted by --dtype (torch.<name>)
DTYPE_NAMES = ("float64", "float32", "bfloat16", "float16")
