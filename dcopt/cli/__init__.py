"""The ``dcopt`` command. Each subcommand lives in its own module; this file wires them up
and turns every :class:`~dcopt.errors.DcoptError` into one clear line and a non-zero exit."""

from __future__ import annotations

import sys
import traceback

import click
from rich.console import Console

from dcopt import __version__
from dcopt.errors import DcoptError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class DcoptGroup(click.Group):
    """A click group that reports errors as one line (``--verbose`` for the traceback)."""

    def invoke(self, ctx):
        verbose = bool(ctx.params.get("verbose"))
        try:
            return super().invoke(ctx)
        except DcoptError as exc:
            if verbose:
                traceback.print_exc()
            err_console.print(f"error: {exc}", markup=False)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False)
            ctx.exit(130)
        except Exception as exc:  # a bug in dcopt, not bad input: still one line, non-zero exit
            if verbose:
                traceback.print_exc()
            err_console.print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
                              markup=False)
            ctx.exit(2)


@click.group(cls=DcoptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="dcopt")
def app(verbose: bool) -> None:
    """dcopt: a data-centric optimizing compiler for ML models."""


def _register() -> None:
    from dcopt.cli import (bench_cmd, builds_cmd, compile_cmd, convert_cmd, inspect_cmd, kernels_cmd, ops_cmd, opt_cmd, patch_cmd, report_cmd,
                           run_cmd)

    app.add_command(inspect_cmd.inspect)
    app.add_command(run_cmd.run)
    app.add_command(convert_cmd.convert)
    app.add_command(ops_cmd.ops)
    app.add_command(opt_cmd.opt)
    app.add_command(report_cmd.report)
    app.add_command(kernels_cmd.kernels)
    app.add_command(builds_cmd.builds)
    app.add_command(patch_cmd.patch_command)
    app.add_command(patch_cmd.patches_group)
    app.add_command(bench_cmd.bench)
    app.add_command(compile_cmd.compile_cmd)


_register()


def main() -> None:
    app(prog_name="dcopt")
