"""Where runs live: ``$DCOPT_HOME`` (default ``$XDG_DATA_HOME/dcopt``, else ``~/.local/share/dcopt``).

Runs are data a user keeps (results to compare next week), not a cache to throw away, so they
live in the user's data directory, not beside the compile cache. Tests point ``DCOPT_HOME`` at a
temporary directory (``tests/conftest.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

RUNS = "runs"
INDEX = "runs.sqlite"


def dcopt_home() -> Path:
    explicit = os.environ.get("DCOPT_HOME")
    if explicit:
        return Path(explicit)
    data = os.environ.get("XDG_DATA_HOME")
    return (Path(data) if data else Path.home() / ".local" / "share") / "dcopt"


def runs_dir(home: Path | None = None) -> Path:
    """The directory holding one directory per run (named by run id)."""
    return (home or dcopt_home()) / RUNS
