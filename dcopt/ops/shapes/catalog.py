"""Imports every module that registers shape rules (one per module of :mod:`dcopt.ops`)."""

import importlib

RULE_MODULES = [
    "dcopt.ops.elementwise",
    "dcopt.ops.shapes.elementwise",
    "dcopt.ops.shapes.reduce",
    "dcopt.ops.shapes.normalization",
    "dcopt.ops.shapes.attention",
    "dcopt.ops.shapes.nn",
    "dcopt.ops.shapes.recurrent",
    "dcopt.ops.shapes.sampling",
    "dcopt.ops.shapes.tensor",
    "dcopt.ops.shapes.indexing",
    "dcopt.ops.shapes.signal",
    "dcopt.ops.shapes.misc",
    "dcopt.ops.shapes.groups",
    "dcopt.ops.shapes.loops",
    "dcopt.ops.shapes.dcopt_attention",
    "dcopt.ops.shapes.layout_ops",
]

for _module in RULE_MODULES:
    importlib.import_module(_module)
