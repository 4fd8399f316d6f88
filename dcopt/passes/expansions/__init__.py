"""Expansion rules, one file per op family; ``dcopt.passes.expand`` imports them on first use."""
