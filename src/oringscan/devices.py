"""One device rule for every stage: ``auto`` takes CUDA when present, else the CPU; asking for CUDA
on a machine without it is one clear error (not a silent CPU run, not a torch traceback)."""

from __future__ import annotations

from oringscan.errors import OringscanError


class DeviceError(OringscanError):
    """A device name this machine cannot run on."""


def resolve_device(name: str | None) -> str:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> the torch device string to use here."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {name}: no CUDA GPU is available on this machine (use --device cpu or auto)"
        )
    try:
        return str(torch.device(name))
    except RuntimeError:
        raise DeviceError(f"--device {name}: unknown device (use auto, cpu or cuda)") from None
