"""Shared Hypothesis example databases, Hypothesis' own way (issue 13).

A failing example saved under a directory replays first (Hypothesis' reuse phase) on the next run of the same
test in any process or on any machine that mounts the directory. ``VERIFIED_TA_HYPOTHESIS_DB=DIR`` selects a
read-write :class:`~hypothesis.database.DirectoryBasedExampleDatabase` for the test suite (conftest.py) and
``verified-ta conform --database DIR`` for conform; ``VERIFIED_TA_HYPOTHESIS_DB_SHARED=DIR`` adds a read-only copy
(for example a CI artefact of the main branch's database), multiplexed with the local one as Hypothesis documents:
its examples replay, but nothing this run finds is written into it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

__all__ = ["DATABASE_ENV", "SHARED_DATABASE_ENV", "example_database", "database_from_env"]

DATABASE_ENV = "VERIFIED_TA_HYPOTHESIS_DB"
SHARED_DATABASE_ENV = "VERIFIED_TA_HYPOTHESIS_DB_SHARED"


def example_database(path: str | Path, shared: str | Path | None = None) -> ExampleDatabase:
    """A directory database at ``path`` (created if missing), multiplexed with a read-only ``shared`` one if given."""
    local = DirectoryBasedExampleDatabase(str(path))
    if shared is None:
        return local
    return MultiplexedDatabase(local, ReadOnlyDatabase(DirectoryBasedExampleDatabase(str(shared))))


def database_from_env(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> ExampleDatabase | None:
    """The database named by ``VERIFIED_TA_HYPOTHESIS_DB`` (and ``..._SHARED``), or None when it is unset."""
    path = environ.get(DATABASE_ENV)
    if not path:
        return None
    return example_database(path, environ.get(SHARED_DATABASE_ENV) or None)
