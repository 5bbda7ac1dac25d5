"""Issue 13's target: a defect class the first model never saw is learned from exported reviews.

The first model (``tiny_models``: classes from the default config, "defect" only) has no "hole".
On the line, operators review frames and draw a box around a hole in each (a disk of the belt's
gray level inside the ring: what a punched-through o-ring shows). ``export reviews`` writes them
into a fresh data set, ``preprocess`` tiles it and a short training (EfficientNet-Lite0 FPN from
its pip-installed ImageNet weights, frozen backbone, 10 epochs of ~11 defect tiles, one thread)
gives a model that finds the holes, labelled "hole", on frames nobody reviewed.

Cost: about 50 s of CPU on one thread (synth, export, preprocess, training, 3 predictions); the
training runs a fixed number of epochs with a fixed seed, so the result does not depend on load.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from support.pipeline import SIZE, TinyModels, tiny_config

from oringscan.db import InspectionStore
from oringscan.review.export import export_reviews
from oringscan.review.shapes import ShapeMark
from oringscan.testing.results import make_result

pytestmark = pytest.mark.slow

CLASSES = ["defect", "hole"]
N_REVIEWED, N_HELD_OUT = 10, 3
HOLE_RADIUS = 7


def _punch_hole(path: Path, rng: np.random.Generator, config) -> tuple[int, int, int, int]:
    """A hole inside the ring (belt gray level), written into the frame; returns its box X,Y,W,H."""
    from oringscan.roi import find_ring

    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    roi = find_ring(gray, config.roi)
    assert roi.ring_mask is not None and roi.belt_level is not None, roi.reason
    inside = cv2.erode(roi.ring_mask.astype(np.uint8), np.ones((3 * HOLE_RADIUS, 3 * HOLE_RADIUS), np.uint8))
    ys, xs = np.nonzero(inside)
    k = int(rng.integers(len(xs)))
    cx, cy = int(xs[k]), int(ys[k])
    cv2.circle(gray, (cx, cy), HOLE_RADIUS, int(roi.belt_level), -1)
    assert cv2.imwrite(str(path), gray)
    side = 2 * HOLE_RADIUS + 1
    return cx - HOLE_RADIUS, cy - HOLE_RADIUS, side, side


def _overlaps(found: tuple[int, int, int, int], truth: tuple[int, int, int, int]) -> bool:
    fx, fy, fw, fh = found
    tx, ty, tw, th = truth
    ix = max(0, min(fx + fw, tx + tw) - max(fx, tx))
    iy = max(0, min(fy + fh, ty + th) - max(fy, ty))
    return ix * iy >= 0.3 * min(fw * fh, tw * th)


def test_a_class_the_first_model_never_saw_is_learned_from_exported_reviews(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    from oringscan.preprocess import preprocess_type
    from oringscan.segmentation import train_segmentation
    from oringscan.segmentation.inference import Segmenter
    from oringscan.synth import synthesize_dataset

    torch.set_num_threads(1)
    logging.getLogger("oringscan").setLevel(logging.ERROR)
    first = Segmenter.load(
        tiny_models.output_root / "model1" / "checkpoints" / "best_model.pth", device="cpu"
    )
    assert "hole" not in first.class_names  # the first model cannot even name it

    config = tiny_config()
    config.classes.names = list(CLASSES)
    config.classes.label_map = {"hole": "hole"}
    t = config.training
    t.backbone, t.trainable_backbone_layers = "lite0_fpn", 0  # ImageNet features, heads trained
    t.epochs, t.max_minutes, t.lr, t.warmup_iters, t.val_max_tiles = 10, None, 0.01, 10, 4

    # The line: good-looking parts with a hole punched through, recorded as the pipeline records them.
    line = tmp_path / "line"
    synthesize_dataset(
        line,
        config,
        types=("model1",),
        n_good=N_REVIEWED + N_HELD_OUT,
        n_defect=0,
        n_rework=0,
        seed=3,
        color_fraction=0.0,
        progress=False,
        size=SIZE,
    )
    frames = sorted(line.rglob("*.bmp"))
    assert len(frames) == N_REVIEWED + N_HELD_OUT
    rng = np.random.default_rng(0)
    holes = {f: _punch_hole(f, rng, config) for f in frames}

    # Operators mark each reviewed hole with a box of the new class.
    store = InspectionStore(f"sqlite:///{(tmp_path / 'inspections.db').as_posix()}")
    try:
        run = store.start_run(oring_type="model1")
        for i, frame in enumerate(frames[:N_REVIEWED]):
            frame_id = store.record_frame(
                run, make_result("suspect", image=str(frame), sha256=f"{i:064x}"), frame_shape=SIZE[::-1]
            )
            store.add_review(
                frame_id, "anna", "defect", shapes=[ShapeMark("hole", box=holes[frame])], classes=CLASSES
            )
        report = export_reviews(store, tmp_path / "data", config, image_roots=[tmp_path])
    finally:
        store.dispose()
    assert not report.skipped and len(report.entries) == N_REVIEWED

    output = tmp_path / "output"
    preprocess_type(config, tmp_path / "data", output, "model1", progress=False, workers=1)
    train_segmentation(config, output, "model1", progress=False, echo=lambda _line: None)
    learned = Segmenter.load(
        output / "model1" / "checkpoints" / "best_model.pth", device="cpu", config=config
    )
    assert learned.class_names == CLASSES

    # Frames nobody reviewed: the new model finds their holes and calls them "hole".
    found = 0
    for frame in frames[N_REVIEWED:]:
        gray = cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE)
        instances = learned.predict_frame(gray, config).instances
        boxes = [
            (i.offset[0], i.offset[1], i.mask.shape[1], i.mask.shape[0])
            for i in instances
            if i.label == "hole" and i.score >= 0.5
        ]
        found += any(_overlaps(b, holes[frame]) for b in boxes)
    assert found >= N_HELD_OUT - 1, f"only {found} of {N_HELD_OUT} unseen holes found as 'hole'"
