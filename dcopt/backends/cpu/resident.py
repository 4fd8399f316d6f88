"""Keeping a compiling process's resident memory down between phases.

Why: a compile's phases (passes, code generation, LLVM, the first run) each allocate and free
hundreds of MB; glibc keeps freed blocks below its dynamic mmap threshold in the heap, so each
phase's garbage would sit under the next phase's peak. The first run touches every weight, so
that is where a compile's peak resident memory is set: everything freed before it is returned.

The same holds for LLVM's own machine code: compiling the kernels faults in about 60-75 MB of
``libllvmlite.so`` (code and read-only data, counted in the process's resident set) that a run
never executes. Those pages are clean copies of the file; :func:`release_toolchain_pages` unmaps
them from the process, the page cache keeps them, and a later compile faults them back in (minor
faults, a few ms).
"""

from __future__ import annotations

import sys

#: shared objects whose clean pages a compiled model's run never needs
_TOOLCHAIN_LIBRARIES = ("libllvmlite",)
_MADV_DONTNEED = 4
#: the ranges found by the first call that found any (a loaded library does not move, and
#: reading ``smaps`` costs milliseconds: every compile in a test suite releases them)
_ranges: list[tuple[int, int]] = []


def return_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere): after code generation (the unpacked weights), after LLVM (its working memory),
    before a session's warm-up run."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def toolchain_ranges(smaps: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` address ranges in ``smaps`` (the text of ``/proc/self/smaps``) that are
    safe to drop: mappings of a toolchain library that cannot be written (no ``w`` permission)
    and hold no private dirty page. Why both checks: a relocated read-only segment (RELRO) was
    written before it was protected, and dropping its pages would lose the relocations."""
    ranges, current = [], None
    for line in smaps.splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and not head[0].endswith(":"):
            path = head[5] if len(head) > 5 else ""
            writable = "w" in head[1] or not head[1].endswith("p")
            current = None if writable or not any(lib in path for lib in _TOOLCHAIN_LIBRARIES) else head[0]
        elif current is not None and head[0] == "Private_Dirty:":
            if int(head[1]) == 0:
                start, end = current.split("-")
                ranges.append((int(start, 16), int(end, 16)))
            current = None
    return ranges


def release_toolchain_pages() -> int:
    """Unmap the clean pages of LLVM's library from this process (``madvise(MADV_DONTNEED)`` on
    its read-only, never-written mappings; Linux only, a no-op elsewhere) and return how many
    bytes of address range were released. Called before a session's first run, after every
    kernel is compiled or loaded."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    try:
        if not _ranges:
            with open("/proc/self/smaps") as f:
                _ranges.extend(toolchain_ranges(f.read()))
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for start, end in _ranges:
        if madvise(start, end - start, _MADV_DONTNEED) == 0:
            released += end - start
    return released
