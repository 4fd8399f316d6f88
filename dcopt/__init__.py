"""dcopt: a data-centric optimizing compiler for ML models."""

__version__ = "0.1.0"
