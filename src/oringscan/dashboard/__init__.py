"""oringscan.dashboard: the Streamlit review pages (`oringscan dashboard`).

Pages: review queue, frame view (overlays, defect crops, measurements, decision form), overview,
runs. Data comes only through ``oringscan.db``; images only from under the configured roots.
Names are imported on first use, so ``oringscan --help`` does not pay for OpenCV and Streamlit.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageRefused": "images",
    "ImageRoots": "images",
    "ImageUnavailable": "images",
    "encode_jpeg": "images",
    "HotSpot": "hotspots",
    "find_hotspots": "hotspots",
    "DefectMark": "overlays",
    "OverlayLayers": "overlays",
    "TileHeat": "overlays",
    "defect_crop": "overlays",
    "render_overlay": "overlays",
    "ring_geometry": "overlays",
    "APP_SCRIPT": "server",
    "launch": "server",
    "DashboardSettings": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oringscan.dashboard' has no attribute {name!r}")
    return getattr(importlib.import_module(f"oringscan.dashboard.{module}"), name)
