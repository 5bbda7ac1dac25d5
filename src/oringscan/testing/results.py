"""Inspection results as the pipeline makes them, for the database tests (no models needed)."""

from __future__ import annotations

import numpy as np

from oringscan.types import (
    InspectionResult,
    Instance,
    MetricCheck,
    ReworkResult,
    ReworkVerdict,
    ScreeningResult,
    TileBox,
    TileScore,
    Verdict,
)


def make_result(
    verdict: str = "good",
    *,
    image: str = "/plant/line 1/frame_0001.bmp",
    sha256: str | None = None,
    oring_type: str | None = "model1",
    n_tiles: int = 4,
    score: float = 0.5,
    threshold: float = 1.0,
    defects: list[tuple[str, float]] | None = None,
    fired: list[str] | None = None,
    seed: int = 0,
) -> InspectionResult:
    """A complete result as the pipeline makes one: tiles, defect masks, rework checks, timings."""
    rng = np.random.default_rng(seed)
    tiles = [
        TileScore(
            TileBox(540 * (i % 4), 540 * (i // 4), 640, 640),
            float(score) * (i + 1) / n_tiles,
            flagged=bool(score * (i + 1) / n_tiles > threshold),
        )
        for i in range(n_tiles)
    ]
    instances = []
    for k, (label, defect_score) in enumerate(defects or []):
        mask = np.zeros((20, 30), dtype=bool)
        mask[3 + k : 12 + k, 4:25] = True
        mask[rng.integers(3, 12), rng.integers(4, 25)] = False
        instances.append(Instance(label, np.float32(defect_score), mask, (800 + 40 * k, 600 + 10 * k)))
    checks = [
        MetricCheck(
            name,
            value=1.0 + 0.1 * i,
            lower=0.9,
            upper=1.05 if name in (fired or []) else 1.5,
            fired=name in (fired or []),
            verdict="rework" if name in (fired or []) else None,
            message=f"{name} out of limits" if name in (fired or []) else "",
            unit="ratio",
        )
        for i, name in enumerate(
            ["ovality", "wall_ratio", *(f for f in (fired or []) if f not in ("ovality", "wall_ratio"))]
        )
    ]
    rework = ReworkResult(ReworkVerdict.REWORK if fired else ReworkVerdict.PASS, list(fired or []), checks)
    error = "truncated BMP: 1000 of 5013558 bytes" if verdict == "error" else None
    return InspectionResult(
        image=image,
        verdict=Verdict(verdict),
        reasons=[f"{verdict} because test"] if verdict != "good" else [],
        oring_type=oring_type,
        screening=None
        if verdict == "error"
        else ScreeningResult(
            score=np.float32(score),
            threshold=threshold,
            flagged=score > threshold,
            marginal=0.9 * threshold < score <= threshold,
            tiles=tiles,
        ),
        defects=instances,
        rework=None if verdict == "error" else rework,
        timings_ms={"read": 12.5, "roi": 30.0, "screening": 120.0 + seed, "total": 200.0 + seed},
        error=error,
        sha256=sha256 or f"{seed:064x}",
    )
