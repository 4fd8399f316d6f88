"""torch stays an optional extra: with torch unimportable, dcopt imports, the CLI works, and a
.pt2 file gets a clear error instead of a traceback."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import sys
    sys.modules["torch"] = None          # make "import torch" fail, as on a machine without it
    import numpy as np
    import dcopt, dcopt.api, dcopt.backend, dcopt.passes, dcopt.passes.patches
    from dcopt.examples import TINY_RESNET
    graph = dcopt.api.load_graph(TINY_RESNET)
    out = dcopt.api.run(graph, dcopt.api.random_inputs(graph, bindings={"N": 2}))
    assert out["probs"].shape == (2, 10)
    from dcopt.passes import build_pipeline
    build_pipeline("O3")(graph)
    from dcopt.cli import app
    try:
        app(["inspect", str(TINY_RESNET)], standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code
    try:
        dcopt.api.load_graph(sys.argv[1])
    except dcopt.errors.ModelLoadError as exc:
        assert "needs PyTorch" in str(exc), exc
    else:
        raise AssertionError(".pt2 without torch should fail clearly")
    assert "torch" not in {m.split(".")[0] for m, v in sys.modules.items() if v is not None}
    print("ok without torch")
''')


def test_package_works_without_torch(tmp_path):
    fake = tmp_path / "model.pt2"
    fake.write_bytes(b"PK\\x03\\x04 not really")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(fake)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ok without torch" in result.stdout
