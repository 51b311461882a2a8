"""Every test runs with its own XDG cache and config folders, so no test reads or writes
the real ~/.cache/auditor or ~/.config/auditor/cache.key.

The folders are set when this file is imported, before any test module imports auditor
(``auditor.cache.DEFAULT_CACHE_DIR`` is computed at import), and the autouse fixture keeps
them in place for the whole session and removes them afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="auditor-tests-xdg-"))
_ENV = {"XDG_CACHE_HOME": str(_HOME / "cache"), "XDG_CONFIG_HOME": str(_HOME / "config")}
os.environ.update(_ENV)
os.environ.pop("AUDITOR_CACHE_KEY", None)


@pytest.fixture(autouse=True, scope="session")
def isolated_xdg_dirs() -> Iterator[Path]:
    """The session's private XDG folders (cache and config), removed at the end."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _ENV.items():
            mp.setenv(name, value)
        mp.delenv("AUDITOR_CACHE_KEY", raising=False)
        yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)
