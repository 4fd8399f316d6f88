"""``dcopt bench``: time a model with dcopt beside its peers, in one run.

A thin wrapper over the benchmark harness (``python -m benchmarks.run``). It runs the harness in
a fresh Python process because the harness must adjust OpenBLAS's environment before numpy is
imported, and this process has imported numpy already. Every benchmark is a recorded run
(:mod:`dcopt.runs.bench`); ``--matrix`` runs a project file's matrix (:mod:`dcopt.runs.project`).
"""

from __future__ import annotations

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--threads", default=2, show_default=True, help="Intra-op threads for every runtime.")
@click.option("--reps", default=50, show_default=True, help="Timed calls per runtime (at most).")
@click.option("--runtimes", default=None, help="Subset of dcopt,onnxruntime,torch,openvino (default: all installed).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full result as JSON.")
@click.option("--quick", is_flag=True, help="Few repetitions (a smoke test, not a measurement).")
@click.option("-O", "level", type=click.Choice(["0", "1", "2", "3"]), default=None,
              help="Pipeline dcopt compiles with (default O3).")
@click.option("--passes", metavar="SPEC", help='Pass spec dcopt compiles with instead of -O, e.g. "fold,cse,dce".')
@click.option("--patch", "patches", multiple=True, metavar="URI", help="Idea patch dcopt applies (repeatable).")
@click.option("--plot", type=click.Path(file_okay=False), help="Also write charts (latency, speedup) as PNG into DIR.")
@click.option("--matrix", is_flag=True, help="Run the project file's benchmark matrix, each cell a recorded run.")
@click.option("--project", type=click.Path(dir_okay=False), help="Project file for --matrix (default ./dcopt.yaml).")
@click.option("--baseline", metavar="RUN", help="A recorded bench run to compare with (index, id prefix or label).")
@click.option("--fail-if-slower", metavar="PCT", help="With --baseline: exit 1 if dcopt's latency grew more than PCT.")
@click.option("--no-record", is_flag=True, help="Do not record the benchmark as a run (DCOPT_NO_RECORD=1 does the same).")
def bench(models, threads, reps, runtimes, json_path, quick, level, passes, patches, plot, matrix, project, baseline,
          fail_if_slower, no_record):
    """Benchmark MODELS (.onnx) with dcopt and onnxruntime/torch/OpenVINO side by side.

    With no MODELS, runs the standard set (light zoo, BERT, GPT-2, MLP). Each benchmark is a recorded
    run (dcopt runs ls); --matrix runs every cell of dcopt.yaml's matrix; --baseline RUN
    --fail-if-slower 5% is a regression gate."""
    import sys

    from dcopt.errors import InputError
    from dcopt.runs.bench import check_regression, parse_percent, run_bench

    if level and passes:
        raise InputError("give only one of -O and --passes")
    if matrix and (models or level or passes or patches):
        raise InputError("--matrix takes its models, pipelines and patches from the project file; "
                         "give no MODELS, -O, --passes or --patch with it")
    if fail_if_slower and not baseline:
        raise InputError("--fail-if-slower needs --baseline RUN (the run to compare with)")
    gate = None
    if baseline:
        from dcopt.runs.select import list_runs, select_one

        gate = (select_one(baseline, list_runs()), parse_percent(fail_if_slower) if fail_if_slower else None)
    options = dict(click.get_current_context().params)
    options.pop("no_record")
    argv = list(sys.argv)
    if matrix:
        from dcopt.runs.project import load_project

        proj = load_project(project)
        settings = {"threads": threads, "reps": reps, "runtimes": runtimes, "quick": quick, **proj.bench}
        cells = proj.cells()
        done = []
        for i, cell in enumerate(cells, 1):
            click.echo(f"[{i}/{len(cells)}] {cell.label}", err=True)
            cell_options = {**options, **settings, "model": cell.model, "pipeline": cell.pipeline_spec,
                            "patch_set": cell.patch_set, "patches": list(cell.patches), "project": str(proj.path)}
            done.append(run_bench([cell.model_path], cell_options, argv=argv, pipeline=cell.pipeline_spec,
                                  patches=cell.patches, record=not no_record, label=cell.label, **settings))
        results = [(cell.label, metrics) for cell, (_, metrics) in zip(cells, done)]
        if not no_record:
            from dcopt.cli.runs_cmd import print_compare

            print_compare([run_id for run_id, _ in done])
    else:
        pipeline = passes or f"O{level or 3}"
        results = [("", run_bench(list(models), options, argv=argv, threads=threads, reps=reps, runtimes=runtimes,
                                  quick=quick, pipeline=pipeline, patches=patches, json_path=json_path, plot=plot,
                                  record=not no_record)[1])]
    if gate is not None:
        base, limit = gate
        failures = [line for where, metrics in results
                    for line in check_regression(base, metrics, limit if limit is not None else float("inf"),
                                                 f" [{where}]" if where else "")]
        if failures:
            raise InputError("slower than the baseline: " + "; ".join(failures))
