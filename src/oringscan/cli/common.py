"""What every command shares: --config/--data/--output, one-line errors, exit codes, logging, threads.

Nothing here imports torch, numpy or pydantic at module level: `oringscan db --help` imports this.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oringscan.errors import InputNotFoundError, OringscanError, one_line

if TYPE_CHECKING:
    from oringscan.config import Config
    from oringscan.workspace import TypeWorkspace


class ExitCode(IntEnum):
    """What every command's exit status means (the same table in ``--help`` and the README)."""

    OK = 0  # every input processed, whatever the verdicts
    FAILED = 1  # the command failed: missing model, bad config, unexpected error; --strict stop
    USAGE = 2  # click's usage errors, and a named file or folder that does not exist
    INPUT_ERRORS = 3  # done, but some inputs were errors (unreadable frame, no ring): each reported


EXIT_CODES_HELP = """\b
Exit codes (every command):
  0  done: every input processed (whatever the verdicts: a defect is a result, not an error)
  1  the command failed: missing model, bad config, database trouble, unexpected error;
     with --strict also the first input that is an error (the batch stops there)
  2  usage: unknown option, missing argument, a named file or folder that does not exist
  3  done, but some inputs were errors (unreadable or broken frame, no ring found): each one is
     reported (and recorded as an error by inspect/watch); the rest were processed"""


class InputErrorStop(OringscanError):
    """``--strict``: the first input that was an error stops the batch (exit 1)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{one_line(problem)} (--strict: stopped at the first input error)")


def strict_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--strict``: the first input error stops the batch with exit 1 (default: go on, exit 3)."""
    return click.option(
        "--strict",
        is_flag=True,
        help="Stop at the first input that is an error (unreadable frame, no ring) and exit 1. "
        "Default: report it, go on with the rest, exit 3 at the end.",
    )(func)


def _missing(paths: Iterable[Path | str | None]) -> list[str]:
    return [
        str(p)
        for p in paths
        if p is not None and not any(ch in str(p) for ch in "*?[") and not os.path.lexists(p)
    ]


def require_paths(*paths: Path | str | None) -> None:
    """Usage error (exit 2, one line) for named files/folders that do not exist; globs are left alone."""
    missing = _missing(paths)
    if missing:
        raise InputNotFoundError(missing)


def check_inputs(paths: Iterable[Path | str], strict: bool = False) -> None:
    """Before any work: usage error (exit 2) when none of the named inputs exists, or with
    ``--strict`` when any does not. Otherwise the batch reports the missing ones and goes on (exit 3)."""
    paths = list(paths)
    missing = _missing(paths)
    if missing and (strict or len(missing) == len(paths)):
        raise InputNotFoundError(missing)


def exit_for_input_errors(n_errors: int, n_inputs: int | None = None) -> None:
    """End a batch command: exit 3 when some inputs were errors (the output is already printed)."""
    if n_errors:
        what = f"{n_errors} of {n_inputs} input(s)" if n_inputs is not None else f"{n_errors} input(s)"
        click.echo(f"{what} were errors (exit {int(ExitCode.INPUT_ERRORS)})", err=True)
        raise click.exceptions.Exit(int(ExitCode.INPUT_ERRORS))


# The inspection database's URL for every command (several lines sharing one PostgreSQL).
DB_URL_ENV = "ORINGSCAN_DB_URL"


@dataclass(slots=True)
class AppContext:
    """The effective configuration and the two roots, as every command sees them."""

    config: Config
    data_root: Path
    output_root: Path
    config_path: Path | None = None

    def workspace(self, oring_type: str) -> TypeWorkspace:
        """The type's part of the output root (checks the type is configured)."""
        from oringscan.workspace import TypeWorkspace

        return TypeWorkspace.from_config(self.config, self.output_root, oring_type)

    def type_output(self, oring_type: str) -> Path:
        return self.workspace(oring_type).root

    @property
    def db_url(self) -> str:
        """--db wins where a command has it; then ORINGSCAN_DB_URL (keeps a PostgreSQL password out
        of config files), then [db] url, then the SQLite file under the output root."""
        from_env = os.environ.get(DB_URL_ENV, "").strip()
        if from_env:
            return from_env
        if self.config.db.url:
            return self.config.db.url
        from oringscan.workspace import default_db_url

        return default_db_url(self.output_root)


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --config, --data and --output and passes ``app: AppContext`` instead."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar="ORINGSCAN_CONFIG",
        help="TOML config file (defaults reproduce the seed pipeline). Env: ORINGSCAN_CONFIG.",
    )
    @click.option(
        "--data",
        "data_root",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("dataset"),
        show_default=True,
        help="Data root holding images/<folder>/*.bmp and labels/<folder>/*.json.",
    )
    @click.option(
        "--output",
        "output_root",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("output"),
        show_default=True,
        help="Output root; each o-ring type gets output/<model>/.",
    )
    @functools.wraps(func)
    def wrapper(
        *args: Any, config_path: Path | None, data_root: Path, output_root: Path, **kwargs: Any
    ) -> Any:
        from oringscan.config import load_config  # pydantic: only when a command runs, not for --help

        config = load_config(config_path)
        app = AppContext(config=config, data_root=data_root, output_root=output_root, config_path=config_path)
        return func(*args, app=app, **kwargs)

    return wrapper


def model_option(required: bool = True, help_text: str | None = None) -> Callable[..., Any]:
    return click.option(
        "--model",
        "oring_type",
        required=required,
        default=None,
        metavar="NAME",
        help=help_text or "O-ring type from the config (e.g. model1, model2).",
    )


class UsageLine(click.ClickException):
    """A usage problem found by the command (a path that does not exist): one line, exit 2."""

    exit_code = int(ExitCode.USAGE)


class InputErrorLine(click.ClickException):
    """The one input a command was given is an error (unreadable, no ring): one line, exit 3."""

    exit_code = int(ExitCode.INPUT_ERRORS)


class OneLineErrors(click.Group):
    """A group whose commands turn oringscan errors into one 'Error: file: problem' line (exit 1).

    A named input that does not exist is a usage error (exit 2), like click's own ``exists=True``.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputNotFoundError as exc:
            raise UsageLine(one_line(str(exc))) from None
        except OringscanError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except KeyboardInterrupt:
            raise click.Abort() from None


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("oringscan")
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.DEBUG))
    root.propagate = False


def set_threads(threads: int | None) -> None:
    """Pin torch/OpenCV thread counts (torch is ~10x slower when it oversubscribes 2 cores)."""
    n = threads or int(os.environ.get("ORINGSCAN_THREADS", "0")) or (os.cpu_count() or 1)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover
        pass
    if "torch" in __import__("sys").modules:
        import torch

        torch.set_num_threads(n)
