"""Code-generating backends: each renders the lowered IR (:mod:`dcopt.driver`) and runs it.

A backend may offer *library routines* for some ops (a generated conv kernel, OpenBLAS):
:func:`library_chooser` returns the module whose ``choose(graph, node)`` names the routine
``select-impl`` records as the node's ``dcopt.impl`` (or None to leave the op to its pure
expansion), so the choice is made once, in the IR, and the backend only follows it.
"""

from __future__ import annotations


def library_chooser(target: str | None):
    """The target's routine chooser (None for targets without library routines)."""
    if target == "cpu":
        from dcopt.backends.cpu import choose

        return choose
    return None
