"""The console every command prints its results through.

rich wraps at 80 columns when stdout is not a terminal, which cut file names, output names and
table cells in half as soon as a user piped ``dcopt`` into ``less``, ``grep`` or a file. A
terminal keeps its own width; anything else gets lines as long as they need to be (up to
:data:`PIPED_WIDTH`, or ``$COLUMNS`` when set).
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

PIPED_WIDTH = 400


def stdout_console(**options) -> Console:
    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        options.setdefault("width", PIPED_WIDTH)
    return Console(**options)
