"""``dcopt bench``: time a model with dcopt beside its peers, in one run.

A thin wrapper over the benchmark harness (``python -m benchmarks.run``). It runs the harness in
a fresh Python process because the harness must adjust OpenBLAS's environment before numpy is
imported, and this process has imported numpy already.
"""

from __future__ import annotations

import subprocess
import sys

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--threads", default=2, show_default=True, help="Intra-op threads for every runtime.")
@click.option("--reps", default=50, show_default=True, help="Timed calls per runtime (at most).")
@click.option("--runtimes", default=None, help="Subset of dcopt,onnxruntime,torch,openvino (default: all installed).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full result as JSON.")
@click.option("--quick", is_flag=True, help="Few repetitions (a smoke test, not a measurement).")
def bench(models, threads, reps, runtimes, json_path, quick):
    """Benchmark MODELS (.onnx) with dcopt and onnxruntime/torch/OpenVINO side by side.

    With no MODELS, runs the standard set (light zoo, BERT, GPT-2, MLP)."""
    command = [sys.executable, "-m", "benchmarks.run", "--threads", str(threads), "--reps", str(reps)]
    for model in models:
        command += ["--model-file", model]
    if runtimes:
        command += ["--runtimes", runtimes]
    if json_path:
        command += ["--json", json_path]
    if quick:
        command.append("--quick")
    click.get_current_context().exit(subprocess.call(command))  # not SystemExit: that one means user code exited
