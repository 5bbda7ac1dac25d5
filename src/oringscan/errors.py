"""Errors a user can act on: each carries one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class OringscanError(Exception):
    """Base for every error the CLI prints as one line instead of a traceback."""


class ConfigError(OringscanError):
    pass


class FrameError(OringscanError):
    """A frame that cannot be read or is not a frame the plant's cameras make."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class LabelError(OringscanError):
    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelFileError(OringscanError):
    """A missing, corrupt or mismatched model file (checkpoint, memory bank, rules)."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
