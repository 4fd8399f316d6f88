"""The ``dcopt`` command. Each subcommand lives in its own module; this file wires them up
and turns every :class:`~dcopt.errors.DcoptError` into one clear line and a non-zero exit."""

from __future__ import annotations

import traceback

import click
from rich.console import Console

from dcopt import __version__
from dcopt.errors import DcoptError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class DcoptGroup(click.Group):
    """A click group that reports errors as one line (``--verbose`` for the traceback) and
    imports a subcommand's module only when that subcommand runs (``dcopt compile`` on a warm
    hit must not pay for the modules of ``bench`` or ``report``)."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in COMMANDS:
            import importlib

            module, attr = COMMANDS[name]
            command = getattr(importlib.import_module(f"dcopt.cli.{module}"), attr)
            self.add_command(command, name)
        return command

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
        except SystemExit as exc:  # dcopt exits through click; this is user code (a patch, a pass)
            if verbose:
                traceback.print_exc()
            err_console.print(f"error: {_exit_origin(exc)}called sys.exit({exc.code!r}) while dcopt was running it; "
                              "stopped, nothing written", markup=False)
            ctx.exit(1)
        except MemoryError as exc:  # an allocation no size check covered, or the machine running out
            if verbose:
                traceback.print_exc()
            err_console.print(f"error: out of memory{f': {exc}' if str(exc) else ''}", markup=False)
            ctx.exit(1)
        except Exception as exc:  # a bug in dcopt, not bad input: still one line, non-zero exit
            if verbose:
                traceback.print_exc()
            err_console.print(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)",
                              markup=False)
            ctx.exit(2)


def _exit_origin(exc: SystemExit) -> str:
    """'file F, line N: ' of the code that called sys.exit (the innermost frame of the traceback)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"file {tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno}: " if tb is not None else ""


@click.group(cls=DcoptGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="dcopt")
def app(verbose: bool) -> None:
    """dcopt: a data-centric optimizing compiler for ML models."""


#: The subcommands: name -> (module under dcopt.cli, command object), imported on first use.
COMMANDS = {
    "inspect": ("inspect_cmd", "inspect"), "run": ("run_cmd", "run"), "compile": ("compile_cmd", "compile_cmd"),
    "opt": ("opt_cmd", "opt"), "report": ("report_cmd", "report"), "patch": ("patch_cmd", "patch_command"),
    "patches": ("patch_cmd", "patches_group"), "convert": ("convert_cmd", "convert"), "bench": ("bench_cmd", "bench"),
    "kernels": ("kernels_cmd", "kernels"), "builds": ("builds_cmd", "builds"), "ops": ("ops_cmd", "ops"),
}


def main() -> None:
    app(prog_name="dcopt")
