"""Hypothesis profiles for every suite: `ci` (reproducible), `dev`, `thorough`; safe under pytest-xdist (`-n auto`).

Select with HYPOTHESIS_PROFILE (default: `ci` when CI is set, else `dev`). `VERIFIED_TA_HYPOTHESIS_DB=DIR` (and
`VERIFIED_TA_HYPOTHESIS_DB_SHARED=DIR` for a read-only shared copy, e.g. CI's) gives every profile a shared example
database (verified_ta.testing.database): every xdist worker and every machine that mounts DIR saves failing examples
there and replays them first. Without a database `ci` is derandomized: each test's seed is derived from the test
itself (Hypothesis' function digest), so every xdist worker and every machine draws the same examples. With one it
is a campaign (Hypothesis disables the database under a fixed seed or derandomize): fresh examples each run, saved
failures first. No Hypothesis state is shared between processes except through the database, which is built for
concurrent use.
"""

import os

import pytest
from hypothesis import HealthCheck, settings

from verified_ta.testing.database import database_from_env

_DB = database_from_env()
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
_SHARED = {} if _DB is None else {"database": _DB}

settings.register_profile(
    "ci", max_examples=40, **_COMMON, **({"derandomize": True, "database": None} if _DB is None else _SHARED)
)
settings.register_profile("dev", max_examples=60, **_COMMON, **_SHARED)
settings.register_profile("thorough", max_examples=1000, **_COMMON, **_SHARED)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state, so unseeded draws are reproducible."""
    import torch

    torch.manual_seed(0)
