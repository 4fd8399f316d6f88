"""The viewer's step list as a pipeline file that ``dcopt opt --pipeline FILE`` replays.

The file is plain Python in the format :func:`dcopt.passes.user_files.load_pipeline_file` reads:
``PIPELINE`` lists pass and pipeline names as strings and patches as ``PatchPass(URI)`` objects,
in the order the viewer ran them, so the replay gives the graph the viewer showed last.
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
    if any(s.kind == "patch" for s in steps):
        lines += ["from dcopt.passes.patches.as_pass import PatchPass", ""]
    lines.append("PIPELINE = [")
    for s in steps:
        item = f"PatchPass({s.spec!r})" if s.kind == "patch" else repr(s.spec)
        lines.append(f"    {item},{'  # added in dcopt view' if s.origin == USER else ''}")
    lines.append("]")
    return "\n".join(lines) + "\n"
