"""Idea patches: rule-based graph rewrites that one team writes and any team applies by name.

Anchored on PyGlove's symbolic patching: an inventor writes rules for models they have never
seen and registers them under a name; anyone applies them with a URI-like string::

    from dcopt.passes.patches import apply_patches
    report = apply_patches(graph, ["fold_batchnorm", "swap_activation?from=Relu&to=Gelu"], explain=True)
    print(report.format(explain=True))      # where each patch matched, refused (and why), the diff
    patched = report.graph                  # metadata["dcopt.patches"] records the history

Writing one (see :mod:`dcopt.passes.patches.registry`)::

    from dcopt.passes.patches import Param, patch
    from dcopt.passes import Op, Var, RewriteRule, fuse_to

    @patch("leaky_relu", kind="idea", params=[Param("alpha", float, 0.01, "slope for x < 0")])
    def leaky_relu(graph, *, alpha):
        \"\"\"Replace Relu by LeakyRelu.\"\"\"
        return RewriteRule("relu->leaky", Op("Relu", Var("x")), fuse_to("LeakyRelu", "x", alpha=alpha))

and ``dcopt patch model.onnx -p "leaky_relu?alpha=0.1" --patch-file my_ideas.py -o out.onnx``.

Layout: ``registry`` (Param, Patch, @patch, discovery), ``uri`` (parsing and checking URIs),
``apply`` (chains, structural diff, history), ``validate`` (numerical and structural checks),
``edit``/``sites`` (helpers the built-ins share), and one module per built-in patch family.
"""

from dcopt.passes.patches.apply import (HISTORY_KEY, PatchReport, PatchStep, PatchValidationError, StructuralDiff,
                                        apply_patches, patch_history)
from dcopt.passes.patches.registry import (ENTRY_POINT_GROUP, REQUIRED, Param, Patch, PatchError, PatchOutcome,
                                           UnknownPatchError, available_patches, discovery_errors, get_patch,
                                           load_entry_points, load_patch_file, patch, register_patch,
                                           unregister_patch)
from dcopt.passes.patches.uri import PatchCall, PatchURIError, format_uri, make_call, parse_uri
from dcopt.passes.patches.validate import NumericallyEquivalent, StructurallySound, Validator

__all__ = [
    "ENTRY_POINT_GROUP", "HISTORY_KEY", "REQUIRED", "NumericallyEquivalent", "Param", "Patch", "PatchCall",
    "PatchError", "PatchOutcome", "PatchReport", "PatchStep", "PatchURIError", "PatchValidationError",
    "StructuralDiff", "StructurallySound", "UnknownPatchError", "Validator", "apply_patches", "available_patches",
    "discovery_errors", "format_uri", "get_patch", "load_entry_points", "load_patch_file", "make_call", "parse_uri",
    "patch", "patch_history", "register_patch", "unregister_patch",
]
