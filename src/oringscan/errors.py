"""Errors a user can act on: each carries one line naming the file and the problem."""

from __future__ import annotations

import os
from pathlib import Path


class OringscanError(Exception):
    """Base for every error the CLI prints as one line instead of a traceback."""


def one_line(text: str) -> str:
    """Collapse a message (which may quote a library's multi-line error) onto one line."""
    return " ".join(str(text).split())


def path_text(path: os.PathLike[str] | str | None) -> str:
    """A file name as text that can always be printed and stored (UTF-8 / JSON / SQL).

    File names are bytes on Linux; one that is not valid UTF-8 arrives in Python with surrogate
    escapes, which any print or database write refuses. Its undecodable bytes become ``\\xNN``.
    """
    if path is None:
        return ""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("ascii")


class ConfigError(OringscanError):
    pass


class InputNotFoundError(OringscanError):
    """A file or folder named on the command line that does not exist (a typo): nothing was recorded."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = [path_text(p) for p in paths]
        names = ", ".join(self.paths)
        super().__init__(
            f"{names}: no such file or folder"
            if len(self.paths) == 1
            else f"no such files or folders: {names}"
        )


class FrameError(OringscanError):
    """A frame that cannot be read or is not a frame the plant's cameras make."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{path_text(self.path)}: {self.problem}" if self.path is not None else self.problem)


class LabelError(OringscanError):
    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{path_text(self.path)}: {self.problem}")


class ModelFileError(OringscanError):
    """A missing, corrupt or mismatched model file (checkpoint, memory bank, rules)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{path_text(self.path)}: {self.problem}")
