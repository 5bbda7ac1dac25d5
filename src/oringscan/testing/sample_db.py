"""A realistic-looking inspection database without models: for the dashboard's tests and benchmark.

Frames are ``oringscan.synth`` renders (a handful of image files shared by many records, so
10,000 records do not need 50 GB of BMPs); every record goes through ``InspectionStore.record_frame`` like the
pipeline's, so the dashboard reads exactly what the pipeline writes. Seeded: the same arguments
give the same database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from oringscan.frames import write_frame
from oringscan.synth import render_frame
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

VERDICT_SHARES = {"good": 0.80, "defect": 0.08, "suspect": 0.05, "rework": 0.05, "error": 0.02}
STAGES = ("read", "roi", "screening", "segmentation", "rework")


@dataclass(slots=True)
class SampleFrame:
    path: Path
    image: np.ndarray
    defects: list[Instance]


def _instance(defect: dict[str, Any], score: float) -> Instance:
    """A drawn defect (oringscan.synth's truth: integer polygons) as the segmenter reports one."""
    x0, y0, w, h = defect["bbox"]
    mask = np.zeros((h, w), np.uint8)
    parts = [np.asarray(part, np.int32) - (x0, y0) for part in defect["polygons"]]
    cv2.fillPoly(mask, parts, 1)
    return Instance(defect["label"], score, mask > 0, (int(x0), int(y0)))


def draw_ring(
    rng: np.random.Generator, shape: tuple[int, int], with_defects: bool
) -> tuple[np.ndarray, list[Instance]]:
    """A frame from ``oringscan.synth`` (light ring, gray) and its drawn defects as Instances."""
    h, w = shape
    frame = render_frame("defect" if with_defects else "good", rng, size=(w, h), polarity="light")
    defects = [_instance(d, float(rng.uniform(0.55, 0.99))) for d in frame.truth["defects"]]
    return frame.image, defects


def make_sample_images(
    folder: Path, n_images: int, *, shape: tuple[int, int] = (2048, 2448), seed: int = 0
) -> list[SampleFrame]:
    """``n_images`` ring pictures (``.bmp`` at full size, ``.png`` when smaller, as the cameras vary)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n_images):
        image, defects = draw_ring(rng, shape, with_defects=i % 4 != 0)
        path = folder / f"ring {i:03d}.{'bmp' if shape == (2048, 2448) else 'png'}"
        write_frame(path, image)
        out.append(SampleFrame(path, image, defects))
    return out


def _tiles(
    rng: np.random.Generator, shape: tuple[int, int], threshold: float, worst: float
) -> list[TileScore]:
    h, w = shape
    step = max(32, int(540 * w / 2448))
    size = max(32, int(640 * w / 2448))
    boxes = [
        TileBox(x, y, min(size, w - x), min(size, h - y))
        for y in range(0, h - step // 2, step)
        for x in range(0, w - step // 2, step)
    ]
    scores = rng.uniform(0.2, 0.8, len(boxes)) * threshold
    scores[int(rng.integers(len(boxes)))] = worst
    return [TileScore(b, float(s), bool(s >= threshold)) for b, s in zip(boxes, scores, strict=True)]


def _checks(rng: np.random.Generator, rework: bool) -> list[MetricCheck]:
    specs = [
        ("outer_radius", 650.0, 4.0),
        ("inner_radius", 390.0, 4.0),
        ("wall_min", 255.0, 5.0),
        ("wall_range", 6.0, 2.0),
        ("concentricity_px", 3.0, 1.5),
        ("outer_circularity", 0.995, 0.002),
    ]
    fire = int(rng.integers(len(specs))) if rework else -1
    out = []
    for i, (name, mean, sd) in enumerate(specs):
        lower, upper = mean - 2.5 * sd, mean + 2.5 * sd
        value = rng.normal(mean, sd * 0.6)
        if i == fire:
            value = upper + sd * rng.uniform(0.2, 2.0)
        fired = not (lower <= value <= upper)
        out.append(
            MetricCheck(
                name,
                float(value),
                lower,
                upper,
                fired,
                "rework" if fired else None,
                f"{name} {value:.2f} above {upper:.2f}" if fired else "",
                "px" if "circ" not in name else "",
            )
        )
    return out


def sample_result(
    rng: np.random.Generator, frame: SampleFrame, verdict: str, oring_type: str, threshold: float
) -> InspectionResult:
    """What the pipeline would have said about this picture, for the chosen verdict."""
    shape = frame.image.shape[:2]
    if verdict == "error":
        problem = f"{frame.path}: no ring found (frame too dark)"
        return InspectionResult(
            image=str(frame.path),
            verdict=Verdict.ERROR,
            reasons=[problem],
            oring_type=oring_type,
            error=problem,
            timings_ms={"read": 20.0, "roi": 30.0},
        )
    flagged = verdict in ("defect", "suspect")
    worst = threshold * (rng.uniform(1.05, 2.5) if flagged else rng.uniform(0.3, 0.85))
    tiles = _tiles(rng, shape, threshold, worst)
    screening = ScreeningResult(worst, threshold, flagged, False, tiles)
    # Same picture, a fresh score per record (as a model's would vary with the frame's noise).
    defects = (
        [Instance(d.label, float(rng.uniform(0.5, 0.99)), d.mask, d.offset) for d in frame.defects]
        if verdict == "defect"
        else []
    )
    if verdict == "defect" and not defects:
        defects = [
            Instance(
                "pit", 0.8, np.ones((6, 6), bool), (shape[1] // 2 + 500 * shape[1] // 2448, shape[0] // 2)
            )
        ]
    rework = ReworkResult(
        ReworkVerdict.REWORK if verdict == "rework" else ReworkVerdict.PASS,
        [],
        _checks(rng, verdict == "rework"),
    )
    rework.reasons = [c.message for c in rework.checks if c.fired]
    reasons = {
        "good": ["screening below threshold, geometry within limits"],
        "defect": [f"{len(defects)} defect(s) segmented: " + ", ".join(sorted({d.label for d in defects}))],
        "suspect": [
            f"screening score {worst:.3g} above threshold {threshold:.3g}, segmentation found nothing"
        ],
        "rework": rework.reasons,
    }[verdict]
    timings = {stage: float(rng.gamma(4.0, 25.0)) for stage in STAGES}
    timings["total"] = sum(timings.values())
    return InspectionResult(
        image=str(frame.path),
        verdict=Verdict(verdict),
        reasons=reasons,
        oring_type=oring_type,
        screening=screening,
        defects=defects,
        rework=rework,
        timings_ms=timings,
    )


def fill_sample_database(
    store: Any,
    image_folder: Path,
    n_frames: int,
    *,
    seed: int = 0,
    n_images: int = 6,
    shape: tuple[int, int] = (2048, 2448),
    types: tuple[str, ...] = ("model1", "model2"),
    days: int = 7,
    runs_per_type: int = 2,
    review_fraction: float = 0.15,
    verdict_shares: dict[str, float] | None = None,
    end: datetime | None = None,
    progress: bool = False,
) -> list[int]:
    """Record ``n_frames`` frames in runs spread over ``days`` days; returns the frame ids in order."""
    rng = np.random.default_rng(seed)
    images = make_sample_images(image_folder, n_images, shape=shape, seed=seed)
    end = end or datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    start = end - timedelta(days=days)
    wanted = verdict_shares or VERDICT_SHARES
    names = list(wanted)
    shares = np.array(list(wanted.values()), dtype=float)
    shares /= shares.sum()
    runs = []
    for t_index, oring_type in enumerate(types):
        for r in range(runs_per_type):
            began = start + timedelta(days=days * r / runs_per_type, hours=t_index)
            run_id = store.start_run(
                oring_type,
                model_fingerprint=f"{oring_type}-fp{r}",
                model_versions={
                    "screening": f"patchcore-{oring_type}-v{r + 1}",
                    "segmentation": f"maskrcnn-{oring_type}-v{r + 1}",
                    "rework_rules": f"rules-{oring_type}-2026-11",
                },
                command=f"oringscan inspect --model {oring_type} line/",
                started_at=began,
                host="line-pc",
            )
            runs.append((run_id, oring_type, r))
    thresholds = {t: 1.0 + 0.5 * i for i, t in enumerate(types)}
    frame_ids = []
    span = (end - start).total_seconds()
    iterator: Any = range(n_frames)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="sample frames", unit="frame")
    for i in iterator:
        oring_type = types[i % len(types)]
        block = (i * runs_per_type) // max(1, n_frames)
        run_id = next(rid for rid, t, r in runs if t == oring_type and r == block)
        verdict = names[int(rng.choice(len(names), p=shares))]
        frame = images[int(rng.integers(len(images)))]
        if verdict == "defect" and not frame.defects:
            frame = next((f for f in images if f.defects), frame)
        result = sample_result(rng, frame, verdict, oring_type, thresholds[oring_type])
        inspected = start + timedelta(seconds=span * (i + 0.5) / n_frames)
        frame_id = store.record_frame(
            run_id,
            result,
            frame_shape=shape,
            inspected_at=inspected,
            station=f"cam{1 + i % 2}",
            mm_per_px=0.02,
        )
        frame_ids.append(frame_id)
        if verdict in ("defect", "suspect", "rework") and rng.random() < review_fraction:
            decision = verdict if verdict != "suspect" else ("good" if rng.random() < 0.7 else "defect")
            if rng.random() < 0.1:
                decision = "good"
            store.add_review(
                frame_id,
                operator=str(rng.choice(["Ana", "Jonas", "Mehmet"])),
                decision=decision,
                comment="checked at the line",
                created_at=inspected + timedelta(minutes=20),
            )
    for run_id, _, _ in runs:
        store.finish_run(run_id, finished_at=end)
    return frame_ids
