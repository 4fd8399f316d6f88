"""The ``dcopt`` command. Each subcommand lives in its own module; this file wires them up
and turns every :class:`~dcopt.errors.DcoptError` into one clear line and a non-zero exit."""

from __future__ import annotations

import os
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

    def add_command(self, cmd, name=None):
        """Every command added, however it is added, takes ``-q``/``--progress``."""
        _add_display_options(cmd)
        super().add_command(cmd, name)

    def format_commands(self, ctx, formatter):
        """The command list with each command's whole first sentence (click cuts it to fit 80
        columns, which is what a pipe gets: 'Benchmark MODELS (.onnx) with dcopt and...');
        the formatter wraps long ones instead."""
        rows = [(name, self.get_command(ctx, name).get_short_help_str(limit=1000)) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        from dcopt.cli.progress_display import LiveSteps
        from dcopt.progress import reporting

        verbose = bool(ctx.params.get("verbose"))
        display = LiveSteps(err_console, lambda: ctx.meta.get(PROGRESS_KEY))
        try:
            with reporting(display):
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
        except BrokenPipeError:  # the reader of our output went away (`dcopt diff a b | head`)
            _silence_stdout()
            ctx.exit(1)
        except SystemExit as exc:  # dcopt exits through click; this is user code (a patch, a pass)
            if _from_rich(exc):  # rich exits 1 when the reader of a pipe went away (`dcopt ... | head`)
                ctx.exit(1)
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
        finally:
            display.close()


#: Where ``-q``/``--progress``/``--no-progress`` leave their choice (root context's meta):
#: False (off), True (on), or absent (on when stderr is a terminal).
PROGRESS_KEY = "dcopt.progress"


def _set_progress(value):
    def callback(ctx, _param, given):
        if given:
            ctx.find_root().meta[PROGRESS_KEY] = value
    return callback


def _display_options() -> list[click.Option]:
    return [click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, callback=_set_progress(False),
                         help="No progress display."),
            click.Option(["--progress"], is_flag=True, expose_value=False, callback=_set_progress(True),
                         help="Show progress even when stderr is not a terminal.")]


def _add_display_options(command: click.Command) -> None:
    """Every subcommand (and each of a group's) takes ``-q``/``--progress`` after its name, where
    users type them (``dcopt compile m.onnx -o b -q``), declared once here."""
    commands = command.commands.values() if isinstance(command, click.Group) else [command]
    for cmd in commands:
        taken = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        cmd.params.extend(o for o in _display_options() if not taken & set(o.opts))


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's flush at exit does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def _from_rich(exc: SystemExit) -> bool:
    """Whether rich's console raised this exit (its broken-pipe handling)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}rich{os.sep}" in tb.tb_frame.f_code.co_filename


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
    "diff": ("diff_cmd", "diff_cmd"), "merge": ("merge_cmd", "merge"), "git": ("git_cmd", "git_group"),
    "runs": ("runs_cmd", "runs"), "view": ("view_cmd", "view"),
}


def main() -> None:
    app(prog_name="dcopt")
