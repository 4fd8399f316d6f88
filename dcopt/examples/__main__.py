"""Rebuild the bundled example models: ``python -m dcopt.examples``."""

from dcopt.examples import write_examples

for path in write_examples():
    print(f"wrote {path}")
