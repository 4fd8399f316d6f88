"""``dcopt view``: explore MODEL through the pipeline in a browser, or export the same views.

    dcopt view model.onnx                      # serves http://127.0.0.1:PORT/ and opens the browser
    dcopt view model.onnx --no-browser --port 8765
    dcopt view model.onnx --profile            # also compile and time every kernel
    dcopt view model.onnx --export view.html   # one self-contained HTML file, no server
    dcopt view model.onnx --build out.dcopt --run 1   # a build and a benchmark run side by side
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from dcopt.cli.pipeline_options import parse_dims, pipeline_options
from dcopt.errors import DcoptError


def write_html(path: str | os.PathLike, text: str) -> Path:
    """Write an HTML file atomically (a temporary sibling renamed into place)."""
    from dcopt.outputs import check_output_path

    target = check_output_path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        raise DcoptError(f"cannot write '{path}': an HTML export must end in .html")
    if target.is_dir() or not target.parent.is_dir():
        raise DcoptError(f"cannot write '{path}': " + ("it is a directory" if target.is_dir() else
                                                        f"directory '{target.parent}' does not exist"))
    from dcopt.outputs import write_file

    write_file(target, text)
    return target


def measure_profile(model: str, pipeline, dims: dict[str, int]) -> list[dict]:
    """Compile MODEL as ``dcopt compile`` does and time every step on random inputs."""
    import dcopt

    steps, label = pipeline
    if not all(isinstance(s, str) for s in steps):
        raise DcoptError("--profile needs a pipeline of names (-O or --passes), not a pipeline file's objects")
    session = dcopt.compile(model, pipeline=",".join(steps) or "O0", dims=dims or None)
    return session.profile()


def open_session(model: str, pipeline, dims: tuple[str, ...], lower: bool, profile: bool,
                 build: str | None = None, run: str | None = None):
    from dcopt.view.api import ViewerAPI
    from dcopt.view.build_panel import find_build
    from dcopt.view.run_panel import find_run
    from dcopt.view.session import ViewSession

    if build:
        find_build(build)  # a wrong --build or --run fails now, not after the pipeline ran
    if run:
        find_run(run)
    bindings = parse_dims(dims)
    steps, _ = pipeline
    timings = measure_profile(model, pipeline, bindings) if profile else None
    return ViewerAPI(ViewSession(model, steps, dims=bindings, lower=lower, profile=timings), build=build, run=run)


@click.command("view")
@click.argument("model", type=click.Path(dir_okay=False))
@pipeline_options(default_level="3")
@click.option("--dim", "dims", multiple=True, metavar="SYMBOL=N", help="Bind a symbolic dim (default 1).")
@click.option("--port", default=0, show_default=True, help="Port on 127.0.0.1 (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser; print the address.")
@click.option("--export", "export_path", type=click.Path(dir_okay=False),
              help="Write the views as one self-contained HTML file instead of serving them.")
@click.option("--lower/--no-lower", default=True, show_default=True,
              help="Also show the loop-level stages dcopt compile runs (loop expansion, kernel source).")
@click.option("--profile", is_flag=True, help="Compile the model and show each kernel's measured time.")
@click.option("--build", "build", metavar="DIR", help="Show this build (a dcopt compile -o directory, or a "
              "cache key prefix) beside the graph: manifest, passes, kernels with their source and nodes.")
@click.option("--run", "run", metavar="RUN", help="Show this recorded run (index, id prefix or label; dcopt runs "
              "ls) beside the build: its figures and, for a benchmark, latency charts per runtime.")
def view(model, pipeline, dims, port, no_browser, export_path, lower, profile, build, run):
    """Explore MODEL's IR through the pipeline in a local web app (or export it as HTML)."""
    start = time.perf_counter()
    api = open_session(model, pipeline, dims, lower, profile, build, run)
    stages = len(api.session.stages)
    if export_path:
        from dcopt.view.page import static_page

        target = write_html(export_path, static_page(api))
        click.echo(f"wrote {target} ({stages} stages, {target.stat().st_size / 1e6:.1f} MB) "
                   f"in {time.perf_counter() - start:.1f} s")
        return
    from dcopt.view.server import ViewServer

    server = ViewServer(api, port)
    click.echo(f"dcopt view: {Path(model).name}, {stages} stages ready in {time.perf_counter() - start:.1f} s")
    click.echo(f"serving {server.url} (Ctrl-C to stop)")
    if not no_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.httpd.server_close()
