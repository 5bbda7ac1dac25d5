"""Errors a user can act on: each carries one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class OringscanError(Exception):
    """Base for every error the CLI prints as one line instead of a traceback."""


def one_line(text: str) -> str:
    """Collapse a message (which may quote a library's multi-line error) onto one line."""
    return " ".join(str(text).split())


class ConfigError(OringscanError):
    pass


class FrameError(OringscanError):
    """A frame that cannot be read or is not a frame the plant's cameras make."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


class LabelError(OringscanError):
    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")


class ModelFileError(OringscanError):
    """A missing, corrupt or mismatched model file (checkpoint, memory bank, rules)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = one_line(problem)
        super().__init__(f"{self.path}: {self.problem}")
