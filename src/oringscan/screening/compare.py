"""``evaluate compare``, its screening rows: one screening variant fitted, calibrated and tested.

The run (screening variants and segmentation stages side by side, the table, the chart) is
:mod:`oringscan.pipeline.variants`. A screening variant is ``[screening]`` settings over the
configured ones (``[compare] variants``, or :data:`DEFAULT_VARIANTS`). All are fitted on the same
good train tiles, get thresholds the same way (cross-fitted, the line's budget), are saved and loaded
back (what the line would run), and score the same test tiles in this process: frame AUROC, recall
and false rejects at the stored threshold, recall by defect size, seconds per frame (scoring only,
tiles in memory, this machine's threads), fit time, model size on disk. The production model
(``output/<type>/screening``) is not touched: variants go to ``output/<type>/compare/<variant>/``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config, ScreeningConfig
from oringscan.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_VARIANTS: list[dict[str, Any]] = [
    {"name": "patchcore / ringtexture", "screening": {"model": "patchcore", "backbone": "ringtexture"}},
    {"name": "patchcore / lite0", "screening": {"model": "patchcore", "backbone": "lite0"}},
    {"name": "padim / ringtexture", "screening": {"model": "padim", "backbone": "ringtexture"}},
    {"name": "padim / lite0", "screening": {"model": "padim", "backbone": "lite0"}},
    {"name": "fastflow / ringtexture", "screening": {"model": "fastflow", "backbone": "ringtexture"}},
]
# Not in the default list, because they are too slow for one CPU thread (add them under [compare] variants):
# FastFlow on lite0 and EfficientAD (its PDNs cost seconds per 256 px tile on one CPU thread).


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "variant"


def screening_variant(config: Config, name: str, settings: dict[str, Any]) -> Config:
    """``config`` with ``settings`` over its [screening]; a setting [screening] does not know is one
    ConfigError line naming the variant."""
    try:
        sc = ScreeningConfig.model_validate({**config.screening.model_dump(), **settings})
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, one line
        first = str(exc).splitlines()
        raise ConfigError(f"[compare] variant {name!r}: {' '.join(first[:3])}") from None
    return config.model_copy(update={"screening": sc})


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


def evaluate_variant(
    name: str,
    config: Config,
    output_root: Path,
    oring_type: str,
    directory: Path,
    test_images: list[np.ndarray],
) -> dict[str, Any]:
    """Fit one variant into ``directory``, load it back, score the test tiles; its row of the table."""
    from .data import load_split
    from .fit import fit_screening
    from .metrics import auroc, frame_scores, recall_at, recall_by_size
    from .model import ScreeningModel

    t0 = time.perf_counter()
    fit_screening(config, output_root, oring_type, progress=False, directory=directory)
    fit_s = time.perf_counter() - t0
    screen = ScreeningModel.load(directory, expected_type=oring_type)
    records = load_split(output_root, oring_type, "test")
    screen.score_images(test_images[:2])  # warm-up (lazy imports, allocator)
    t1 = time.perf_counter()
    scores, _ = screen.score_images(test_images, batch_size=config.screening.batch_size)
    score_s = time.perf_counter() - t1
    thr = screen.threshold
    fs, fd, _ = frame_scores(records, scores)
    n_good = int((~fd).sum())
    sizes = recall_by_size(records, scores, thr)
    return {
        "name": name,
        "model": screen.meta.model,
        "backbone": screen.meta.backbone,
        "pretrained": bool(screen.meta.pretrained),
        "input_size": screen.meta.input_size,
        "frames": int(len(fs)),
        "defect_frames": int(fd.sum()),
        "frame_auroc": auroc(fs, fd),
        "tile_auroc": auroc(scores, np.array([r.is_defect for r in records], dtype=bool)),
        "threshold": thr,
        "recall_at_threshold": recall_at(fs, fd, thr),
        "false_rejects": int((fs[~fd] > thr).sum()),
        "good_frames": n_good,
        "recall_by_size": {k: v["recall"] for k, v in sizes.items()},
        "defects_by_size": {k: v["n"] for k, v in sizes.items()},
        "seconds_per_frame": score_s / max(1, len(fs)),
        "fit_seconds": fit_s,
        "model_bytes": _dir_bytes(directory),
        "expected_false_reject_rate": screen.meta.calibration.get("expected_false_reject_rate"),
    }
