"""dcopt: a data-centric optimizing compiler for ML models."""

__version__ = "0.1.0"

from dcopt.compiled import compile, load  # noqa: E402,A004  (light: the backend loads on first use)

__all__ = ["compile", "load", "__version__"]
