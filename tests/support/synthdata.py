"""Shared synthetic data for every part's tests (oringscan.synth, the project's renderer).

``make_small_dataset`` writes a fresh data set; the session fixtures ``small_dataset`` and
``small_dataset_both_types`` (tests/conftest.py) render theirs once per test run (about 0.15 s per
full-size frame on one core). The data root holds ``images/<folder>/*.bmp``,
``labels/<folder>/*.json``, rework truth sidecars and ``manifest.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config
from oringscan.synth import FULL_SIZE, SynthFrame, render_frame, synthesize_dataset


def make_small_dataset(
    tmp_path: Path,
    n_good: int = 4,
    n_defect: int = 3,
    n_rework: int = 2,
    types: Sequence[str] = ("model1",),
    seed: int = 0,
    *,
    config: Config | None = None,
    color_fraction: float = 0.25,
    size: tuple[int, int] = FULL_SIZE,
) -> Path:
    """Write a small synthetic data set under ``tmp_path / "dataset"`` and return that data root."""
    root = Path(tmp_path) / "dataset"
    synthesize_dataset(
        root,
        config or Config(),
        types=tuple(types),
        n_good=n_good,
        n_defect=n_defect,
        n_rework=n_rework,
        seed=seed,
        color_fraction=color_fraction,
        progress=False,
        size=size,
    )
    return root


def load_manifest(data_root: Path) -> dict[str, Any]:
    """The manifest written by synthesize_dataset (per-frame truth under ``entries``)."""
    return json.loads((Path(data_root) / "manifest.json").read_text(encoding="utf-8"))


def frame(kind: str = "good", seed: int = 0, **kwargs: Any) -> SynthFrame:
    """One rendered frame in memory (same seed and arguments, same pixels)."""
    return render_frame(kind, np.random.default_rng(seed), **kwargs)  # type: ignore[arg-type]
