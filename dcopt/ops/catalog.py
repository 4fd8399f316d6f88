"""Imports every module that registers reference implementations.

Adding an op family means adding a module under ``dcopt/ops/`` and one line here.
"""

import importlib

OP_MODULES = [
    "dcopt.ops.elementwise",
    "dcopt.ops.reduce",
    "dcopt.ops.normalization",
    "dcopt.ops.attention",
    "dcopt.ops.nn",
    "dcopt.ops.recurrent",
    "dcopt.ops.sampling",
    "dcopt.ops.tensor",
    "dcopt.ops.indexing",
    "dcopt.ops.signal",
    "dcopt.ops.misc",
    "dcopt.ops.groups",
    "dcopt.ops.loops",
    "dcopt.ops.dcopt_attention",
    "dcopt.ops.layout_ops",
]

for _module in OP_MODULES:
    importlib.import_module(_module)
