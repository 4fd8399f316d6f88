"""The viewer's step list as a pipeline file that ``dcopt opt --pipeline FILE`` replays.

The file is plain Python in the format :func:`dcopt.passes.user_files.load_pipeline_file` reads:
``PIPELINE`` lists pass and pipeline names as strings, passes with options as
``get_pass(NAME, option=value)`` objects and patches as ``PatchPass(URI)`` objects (the URI holds
the patch's parameters), in the order the viewer ran them, so the replay gives the graph the
viewer showed last.
"""

from __future__ import annotations

from typing import Sequence

from dcopt.view.stages import USER, Step


def render(steps: Sequence[Step], model: str = "") -> str:
    lines = ['"""Pipeline exported by `dcopt view`' + (f" from {model}" if model else "") + '.',
             "",
             "Replay it with:",
             f"    dcopt opt {model or 'MODEL'} --pipeline THIS_FILE -o out.onnx",
             '"""', ""]
    imports = []
    if any(s.kind == "pass" and s.options for s in steps):
        imports.append("from dcopt.passes.base import get_pass")
    if any(s.kind == "patch" for s in steps):
        imports.append("from dcopt.passes.patches.as_pass import PatchPass")
    lines += imports + ([""] if imports else [])
    lines.append("PIPELINE = [")
    for s in steps:
        lines.append(f"    {_item(s)},{'  # added in dcopt view' if s.origin == USER else ''}")
    lines.append("]")
    return "\n".join(lines) + "\n"


def _item(step: Step) -> str:
    if step.kind == "patch":
        return f"PatchPass({step.spec!r})"
    if step.options:
        return f"get_pass({step.spec!r}, {', '.join(f'{k}={v!r}' for k, v in step.options)})"
    return repr(step.spec)
