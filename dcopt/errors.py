"""User-facing errors.

Every error dcopt raises on bad input is a :class:`DcoptError` that knows *where* the
problem is (file, node, op, opset, input name) so the CLI can print one clear line and exit
non-zero instead of showing a traceback from deep inside numpy or onnx.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a model an error happened. Every field is optional."""

    file: str | None = None
    node: str | None = None
    op: str | None = None
    opset: int | None = None
    input: str | None = None
    argument: str | None = None

    def describe(self) -> str:
        parts = []
        if self.argument:
            parts.append(f"argument '{self.argument}'")
        if self.file:
            parts.append(f"file {self.file}")
        if self.node is not None:
            parts.append(f"node '{self.node}'")
        if self.op:
            parts.append(f"op {self.op}" + (f" (opset {self.opset})" if self.opset else ""))
        elif self.opset:
            parts.append(f"opset {self.opset}")
        if self.input:
            parts.append(f"input '{self.input}'")
        return ", ".join(parts)


class DcoptError(Exception):
    """Base class of every error meant for a user: message plus location."""

    exit_code = 1

    def __init__(self, message: str, location: Location | None = None, **where):
        self.message = message
        self.location = location if location is not None else Location(**where)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.location.describe()
        return f"{where}: {self.message}" if where else self.message

    def at(self, **where) -> "DcoptError":
        """Return the same error with missing location fields filled in."""
        merged = {k: getattr(self.location, k) for k in Location.__dataclass_fields__}
        for key, value in where.items():
            if merged.get(key) is None:
                merged[key] = value
        self.location = Location(**merged)
        self.args = (str(self),)
        return self


class ModelLoadError(DcoptError):
    """The model file could not be read (missing, truncated, garbage, unsafe external data)."""


class UnsupportedError(DcoptError):
    """The model uses something dcopt does not support (yet). Lists every offender at once."""

    def __init__(self, message: str, offenders: list[str] | None = None, location=None, **where):
        self.offenders = list(offenders or [])
        if self.offenders:
            message = message + ":\n  " + "\n  ".join(self.offenders)
        super().__init__(message, location, **where)


class StaticSizesNeeded(UnsupportedError):
    """A step that has no implementation for sizes bound at run time (a build for every size):
    compiling per size still works."""


class VerificationError(DcoptError):
    """The IR is malformed (cycle, dangling edge, type mismatch...). Lists every problem."""

    def __init__(self, problems: list[str], location=None, **where):
        self.problems = list(problems)
        super().__init__("invalid graph:\n  " + "\n  ".join(self.problems), location, **where)


class InputError(DcoptError):
    """A run was given wrong inputs: unknown name, missing input, wrong shape or dtype."""


class ExecutionError(DcoptError):
    """An op failed while executing; wraps the underlying exception with the node's location."""


class PassError(DcoptError):
    """A pass broke the graph (verification or equivalence check after it failed)."""


class ArgumentError(DcoptError, ValueError):
    """A Python API call got an argument of the wrong type or value; ``argument=`` names it.

    Also a ValueError, so code that validates arguments the usual Python way catches it too."""


class UserCodeError(DcoptError):
    """User code (a ``--pipeline``/``--patch-file`` file, a pass registered with ``register_pass``)
    raised or called ``sys.exit``; the message names the file and the pass."""
