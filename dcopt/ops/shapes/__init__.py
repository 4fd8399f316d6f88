"""dcopt's own shape and type rules, one per op (``dcopt.ops.shapes.registry``), grouped by family
like the reference implementations in :mod:`dcopt.ops`. :mod:`dcopt.ir.shape_inference` applies
them to whole graphs."""

from dcopt.ops.shapes.registry import (  # noqa: F401
    SequenceOf, ShapeContext, ShapeInferenceError, is_data_dependent, lookup, ops_with_rules, shape_inputs,
    shape_rule,
)
