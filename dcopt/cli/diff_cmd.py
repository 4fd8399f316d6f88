"""``dcopt diff A B``: what changed between two versions of a model (not two builds: that is
``dcopt builds diff``). A and B are model files of any format dcopt sniffs, or manifests that a
``dcopt git`` repository committed (rebuilt from its store)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click


def read_version(path: str, argument: str):
    """A model file, or a committed manifest rebuilt from its repository's store."""
    from dcopt.errors import ModelLoadError
    from dcopt.versions.git import load_version

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read the file: {exc.strerror or exc}", file=path, argument=argument) from None
    if not data:
        raise ModelLoadError("file is empty", file=path, argument=argument)
    return load_version(data, path, p, cwd=p.parent if p.parent.is_dir() else None)


def _build_diff(a, b) -> list[str]:
    """Compile both versions and say which kernels the second build reuses."""
    import dcopt
    from dcopt.kernels.diff import diff_builds

    with tempfile.TemporaryDirectory(prefix="dcopt-diff-") as tmp:
        dirs = []
        for tag, model in (("a", a), ("b", b)):
            src = Path(tmp) / f"{tag}.{'onnx' if model.format.name == 'onnx' else model.format.name}"
            src.write_bytes(model.data)
            session = dcopt.compile(src, warm=False)
            dirs.append(session.save(Path(tmp) / f"{tag}.dcopt"))
        d = diff_builds(*dirs)
        total = d.kernels_same + len(d.kernels_changed) + len(d.steps_added)
        return [f"builds: {d.kernels_same} of {total} kernels reused, {len(d.kernels_changed)} changed, "
                f"{len(d.steps_added)} step(s) added, {len(d.steps_removed)} removed"] + \
               [f"  {line}" for line in d.stat()]


@click.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print the difference as JSON.")
@click.option("--rtol", type=float, default=1e-4, show_default=True,
              help="Singular values below RTOL times the largest do not count toward a delta's rank.")
@click.option("--compile", "compile_both", is_flag=True,
              help="Also compile both versions and diff the builds: which kernels are reused.")
def diff_cmd(a, b, as_json, rtol, compile_both):
    """What changed from model A to model B: nodes, attributes, wiring, and per parameter the
    largest change, relative L2 change, fraction changed and rank of the delta; and whether a
    build's kernels can be reused (weights only) or not (structure)."""
    from dcopt.versions.diff import diff_models

    ma, mb = read_version(a, "A"), read_version(b, "B")
    result = diff_models(ma, mb, rtol=rtol)
    builds = _build_diff(ma, mb) if compile_both else None
    if as_json:
        out = result.to_json()
        if builds is not None:
            out["builds"] = builds
        click.echo(json.dumps(out, indent=1))
        return
    for line in result.lines() + (builds or []):
        click.echo(line)
