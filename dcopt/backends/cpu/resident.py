"""Keeping a compiling process's resident memory down between phases.

Why: a compile's phases (passes, code generation, LLVM, the first run) each allocate and free
hundreds of MB; glibc keeps freed blocks below its dynamic mmap threshold in the heap, so each
phase's garbage would sit under the next phase's peak. The first run touches every weight, so
that is where a compile's peak resident memory is set: everything freed before it is returned.
"""

from __future__ import annotations


def return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere): after code generation (the unpacked weights), after LLVM (its working memory),
    before a session's warm-up run."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass
