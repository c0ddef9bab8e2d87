"""The ``segbench`` command line. Heavy imports (torch, timm, mlflow) wait until a command needs them."""

from __future__ import annotations

import errno
import gc
import os
import signal
import sys
import traceback

import typer

from segbench import __version__
from segbench.cli import gate, listing, log, report, run, zoo
from segbench.errors import UserError

app = typer.Typer(
    help="Benchmark and compare semantic segmentation models.",
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segbench {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an internal error "
                                                      "(or set SEGBENCH_DEBUG=1)."),
) -> None:
    """Benchmark and compare semantic segmentation models. Run with no command: the embedded default suite."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(run.run, overrides=[])


app.command("run")(run.run)
app.command("bench")(run.bench)
app.command("eval")(run.eval_)
app.command("score")(run.score)
app.command("log")(log.log)
app.command("report")(report.report)
app.command("gate")(gate.gate)
baseline_app = typer.Typer(help="Baselines for segbench gate.", no_args_is_help=True)
baseline_app.command("update")(gate.baseline_update)
app.add_typer(baseline_app, name="baseline")
zoo_app = typer.Typer(help="The model zoo: cards in zoo/*.yaml (or $SEGBENCH_ZOO).", no_args_is_help=True)
zoo_app.command("list")(zoo.zoo_list)
zoo_app.command("verify")(zoo.zoo_verify)
zoo_app.command("add")(zoo.zoo_add)
app.add_typer(zoo_app, name="zoo")
app.command("list")(listing.list_)


INTERNAL_ERROR = 3  # a bug in segbench, not the user's input: 1 stays "regression", 2 "bad input"
READS_AND_WRITES_WHOLE = "each file it wrote is complete (written whole), the others were not written"
INTERRUPTED = {  # what an interrupted command leaves behind; commands that run models: "run"
    "run": "open MLflow runs were marked KILLED, an output folder keeps its .partial suffix and no results were "
           "written",
    "report": f"the report is incomplete: {READS_AND_WRITES_WHOLE}",
    "gate": f"no verdict: {READS_AND_WRITES_WHOLE}",
    "baseline": "the baseline was not changed, or is complete (written whole)",
    "list": "nothing was written",
}
# file-system failures that are not segbench's bug: one line, exit 2 (a full disk, a read-only folder, a file where a
# folder is expected)
FILESYSTEM = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENOTDIR,
              errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def _raised_in(exc: BaseException) -> str:
    """The module whose code raised ``exc`` (the innermost frame of its traceback)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_globals.get("__name__", "?") if frame is not None else "?"


def entry() -> None:
    """Run the command of ``sys.argv`` and exit (in this process; the console script is :func:`console_script`):
    0 on success, 1 for a regression or a verification mismatch, 2 for bad input or a file-system failure (one
    line, no traceback), 3 for an internal error (its traceback only with --debug or SEGBENCH_DEBUG=1), 4 when a
    command finished and wrote its results but the tracking store failed on the way (``segbench log`` sends them
    later), 128 + N for signal N (Ctrl-C, SIGTERM, SIGHUP), after open MLflow runs were marked KILLED."""
    from segbench.cli.run import NOT_LOGGED
    from segbench.core.interrupts import signals_interrupt
    from segbench.errors import NotLogged

    # --debug is global: accepted in any position, not only before the command
    debug = "--debug" in sys.argv[1:] or os.environ.get("SEGBENCH_DEBUG", "") not in ("", "0")
    args = [arg for arg in sys.argv[1:] if arg != "--debug"]
    with signals_interrupt() as caught:
        try:
            code = app(args=args, prog_name="segbench", standalone_mode=False)  # typer returns 130 for an interrupt
        except UserError as exc:
            typer.echo(f"segbench: error: {exc}", err=True)
            sys.exit(2)
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.TyperException as exc:  # usage errors: unknown command or option, missing argument
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            typer.echo(f"segbench: error: {message} (see segbench --help)", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            code = 130
        except SystemExit as exc:  # a user's code called sys.exit (segbench's own exits are typer.Exit): reported
            where = _raised_in(exc)
            if where.startswith(("click", "typer")):  # click's own exit (a closed pipe)
                raise
            typer.echo(f"segbench: error: a user's module ({where}) called sys.exit({exc.code}); the command "
                       "stopped unfinished", err=True)
            sys.exit(2)
        except NotLogged as exc:  # zoo verify: a run finished, its store failed on the way
            typer.echo(f"segbench: not logged: {exc}", err=True)
            sys.exit(NOT_LOGGED)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in FILESYSTEM:
                where = f"'{exc.filename}': " if exc.filename else ""
                typer.echo(f"segbench: error: {where}{exc.strerror or exc} (a file-system error: free space, "
                           "permissions, or a file where a folder is expected)", err=True)
                sys.exit(2)
            from segbench.core.plugins import users_failure

            first = (str(exc).splitlines() or [""])[0][:300]
            users = users_failure(exc)
            if debug:
                traceback.print_exc()
            if users is not None:  # the user's code failed, not segbench
                typer.echo(f"segbench: error: {users}", err=True)
                sys.exit(2)
            if debug:
                sys.exit(INTERNAL_ERROR)
            typer.echo(f"segbench: internal error: {type(exc).__name__}: {first} (a bug in segbench, not in your "
                       "input; rerun with --debug or SEGBENCH_DEBUG=1 for the traceback, and please report it)",
                       err=True)
            sys.exit(INTERNAL_ERROR)
    if code == 130 or caught.signum is not None:
        signum = caught.signum or signal.SIGINT
        command = next((arg for arg in args if not arg.startswith("-")), "run")
        typer.echo(f"segbench: interrupted ({signal.Signals(signum).name}); "
                   + INTERRUPTED.get(command, INTERRUPTED["run"]), err=True)
        sys.exit(128 + signum)
    sys.exit(code if isinstance(code, int) else 0)


def console_script() -> None:
    """The ``segbench`` console script and ``python -m segbench``: :func:`entry` in a process that ends with it. On
    the way out its objects are frozen out of the garbage collector: the interpreter's last collections would walk
    every object of torch, timm and MLflow (about 1 s of CPU) just before the process frees them all."""
    try:
        entry()
    finally:
        gc.freeze()


if __name__ == "__main__":
    console_script()
