"""Package exports imported on first use (PEP 562), so a command that needs no model imports no torch.

``import oringscan.screening.cli`` runs ``oringscan/screening/__init__.py`` first; if that imported
its API eagerly, ``oringscan --help`` would load torch, anomalib and torchvision (seconds).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: ``exports`` maps a name to its submodule."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's name
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:  # noqa: N807
        return sorted(exports)

    return __getattr__, __dir__
