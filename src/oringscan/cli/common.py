"""What every command shares: --config/--data/--output, one-line errors, logging, thread counts."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from oringscan.config import Config, load_config
from oringscan.errors import OringscanError, one_line


@dataclass(slots=True)
class AppContext:
    """The effective configuration and the two roots, as every command sees them."""

    config: Config
    data_root: Path
    output_root: Path
    config_path: Path | None = None

    def type_output(self, model: str) -> Path:
        return self.output_root / model

    @property
    def db_url(self) -> str:
        if self.config.db.url:
            return self.config.db.url
        return f"sqlite:///{(self.output_root / 'inspections.db').as_posix()}"


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
    def wrapper(*args: Any, config_path: Path | None, data_root: Path, output_root: Path, **kwargs: Any) -> Any:
        config = load_config(config_path)
        app = AppContext(config=config, data_root=data_root, output_root=output_root, config_path=config_path)
        return func(*args, app=app, **kwargs)

    return wrapper


def model_option(required: bool = True, help_text: str | None = None) -> Callable[..., Any]:
    return click.option(
        "--model",
        "model",
        required=required,
        default=None,
        metavar="NAME",
        help=help_text or "O-ring type from the config (e.g. model1, model2).",
    )


class OneLineErrors(click.Group):
    """A group whose commands turn oringscan errors into one 'Error: file: problem' line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
