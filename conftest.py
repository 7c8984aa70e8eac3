"""Hypothesis profiles for every suite: `ci` (reproducible), `dev`, `thorough`; safe under pytest-xdist (`-n auto`).

Select with HYPOTHESIS_PROFILE (default: `ci` when CI is set, else `dev`). `VERIFIED_TA_HYPOTHESIS_DB=DIR` (and
`VERIFIED_TA_HYPOTHESIS_DB_SHARED=DIR` for a read-only shared copy, e.g. CI's) gives every profile a shared example
database (verified_ta.testing.database): every xdist worker and every machine that mounts DIR saves failing examples
there and replays them first. `ci` is reproducible in any process: derandomized without a database; with one
(Hypothesis forbids derandomize with a database) each test gets a fixed seed derived from its test id instead.
No Hypothesis state is shared between processes except through the database, which is built for concurrent use.
"""

import hashlib
import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import seed as hypothesis_seed

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


def test_id_seed(item: pytest.Item) -> int:
    """A Hypothesis seed from the test's module and function name: the same in every process and on every machine."""
    name = f"{item.module.__name__ if item.module else ''}::{getattr(item, 'originalname', item.name)}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Under `ci` with a database, seed each Hypothesis test from its id (derandomize is not allowed there)."""
    if PROFILE != "ci" or _DB is None:
        return
    for item in items:
        fn = getattr(item, "obj", None)
        if getattr(fn, "is_hypothesis_test", False) and getattr(fn, "_hypothesis_internal_use_seed", None) is None:
            hypothesis_seed(test_id_seed(item))(fn)


@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state, so unseeded draws are reproducible."""
    import torch

    torch.manual_seed(0)
