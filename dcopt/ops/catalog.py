"""Imports every module that registers reference implementations.

Adding an op family means adding a module under ``dcopt/ops/`` and one line here.
"""

import importlib

OP_MODULES = [
    "dcopt.ops.elementwise",
    "dcopt.ops.reduce",
    "dcopt.ops.nn",
    "dcopt.ops.tensor",
    "dcopt.ops.misc",
]

for _module in OP_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # a family not written yet; its ops report as unsupported
        if exc.name != _module:
            raise
