"""Errors of model versioning: a store object missing or damaged, a merge that cannot be made,
a broken plugin.

All are :class:`~dcopt.errors.DcoptError`: the CLI prints one line and exits non-zero, and the
git filters turn them into a failed filter run, so git stops instead of writing a wrong model.
"""

from __future__ import annotations

from dcopt.errors import DcoptError


class StoreError(DcoptError):
    """A parameter's object is missing from the store or its bytes do not hash to its name."""


class MergeConflict(DcoptError):
    """Three versions cannot be merged with the chosen strategy; lists every conflict at once."""

    def __init__(self, conflicts: list[str], location=None, **where):
        self.conflicts = list(conflicts)
        super().__init__(f"{len(self.conflicts)} merge conflict(s), nothing written:\n  "
                         + "\n  ".join(self.conflicts), location, **where)


class PluginError(DcoptError):
    """A format or merge-strategy plugin (an entry point of an installed package) is broken: it
    fails to import, is not what its group expects, or raised while dcopt used it. The message
    names the entry point (group, name and ``module:attr``), so the user knows which package to
    fix or uninstall; dcopt itself is not at fault."""
