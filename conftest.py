"""Hypothesis profiles for every suite: `ci` (derandomized, no database), `dev`, `thorough`.

Select with HYPOTHESIS_PROFILE (default: `ci` when CI is set, else `dev`).
"""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))



@pytest.fixture(autouse=True)
def _seed_torch():
    """Every test starts from the same torch RNG state, so unseeded draws are reproducible."""
    import torch

    torch.manual_seed(0)
