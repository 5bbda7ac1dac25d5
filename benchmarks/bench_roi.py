"""Ring ROI benchmark: find_ring ms/frame and mask IoU on plant-like frames, against a baseline.

    python benchmarks/bench_roi.py                 # 16 random frames + 8 named hard cases
    python benchmarks/bench_roi.py --frames 40 --variant low_contrast_grey --seed 3

Frames come from ``oringscan.testing.plantlike`` (an independent renderer, not oringscan.synth): gradients,
vignetting, shadows, low contrast, lint across the edge and the bore, both polarities, r_out
500-800. The baseline, run on the same frames in the same run, is the ROI as it was before the
plant-robustness rework (one global Otsu, polarity from the border, 3x3 opening at half resolution,
largest component, every hole but the bore filled): its IoU and time are printed alongside, and
the time as a ratio.

Target: find_ring <= 150 ms/frame on one core; IoU >= 0.98 on every frame (status ok).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from oringscan.roi import find_ring  # noqa: E402
from oringscan.testing.plantlike import hard_scenes, iou, random_plant_scene, render_plant_frame  # noqa: E402


def baseline_ring_mask(gray: np.ndarray) -> np.ndarray | None:
    """The ROI before the plant-robustness rework: one global Otsu at half resolution, polarity from
    the border, 3x3 opening, largest component, full-resolution refinement in a 9x9 band, every hole
    but the largest filled. Kept here (mask only) as the baseline."""
    h, w = gray.shape
    small = cv2.GaussianBlur(cv2.resize(gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (5, 5), 0)
    t, light = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate(
        [light[:4].ravel(), light[-4:].ravel(), light[:, :4].ravel(), light[:, -4:].ravel()]
    )
    dark = border.mean() > 0.5
    fg = cv2.morphologyEx(
        (1 - light) if dark else light, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    )
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    sx, sy, sw, sh = (int(v) for v in stats[k, :4])
    x0, y0, x1, y1 = (
        max(0, 2 * sx - 8),
        max(0, 2 * sy - 8),
        min(w, 2 * (sx + sw) + 8),
        min(h, 2 * (sy + sh) + 8),
    )
    comp = cv2.resize((labels == k).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]
    gray_c = gray[y0:y1, x0:x1]
    band = cv2.dilate(comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))) > 0
    raw = (((gray_c <= t) if dark else (gray_c > t)) & band).astype(np.uint8)
    n2, labels2, stats2, _ = cv2.connectedComponentsWithStats(raw, connectivity=8)
    if n2 > 1:
        raw = (labels2 == 1 + int(np.argmax(stats2[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    nh, hl, hs, _ = cv2.connectedComponentsWithStats(1 - raw, connectivity=4)
    touches = np.zeros(nh, bool)
    for edge in (hl[0], hl[-1], hl[:, 0], hl[:, -1]):
        touches[np.unique(edge)] = True
    touches[0] = True  # label 0: the ring itself
    holes = np.nonzero(~touches)[0]
    filled = raw.astype(bool)
    if len(holes):
        fill = np.zeros(nh, bool)
        fill[holes] = True
        fill[holes[int(np.argmax(hs[holes, cv2.CC_STAT_AREA]))]] = False
        filled |= fill[hl]
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = filled
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant", default="any", choices=["any", "light", "low_contrast", "low_contrast_grey", "dark"]
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per frame (the median counts)")
    parser.add_argument(
        "--no-hard", action="store_true", help="skip the named hard cases (oringscan.testing.plantlike)"
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(args.seed)
    scenes = [
        (f"random {i}", random_plant_scene(rng, args.variant), args.seed * 1000 + i)
        for i in range(args.frames)
    ]
    if not args.no_hard:
        scenes += [(name, scene, 7) for name, scene in hard_scenes().items()]
    rows = []
    print(
        f"{'frame':28} {'ring/belt':>9} {'r_out':>5} {'status':8} {'IoU':>7} {'bore':>7} {'ms':>6}"
        f" | {'base IoU':>8} {'base ms':>7}"
    )
    for name, scene, seed in scenes:
        frame = render_plant_frame(scene, seed=seed)
        times, base_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            roi = find_ring(frame.image)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            base = baseline_ring_mask(frame.image)
            base_times.append(time.perf_counter() - t0)
        ring_iou = iou(roi.ring_mask, frame.ring) if roi.ring_mask is not None else 0.0
        bore_iou = iou(roi.bore_mask, frame.bore) if roi.bore_mask is not None else 0.0
        base_iou = iou(base, frame.ring) if base is not None else 0.0
        rows.append(
            (ring_iou, float(np.median(times)), base_iou, float(np.median(base_times)), roi.status == "ok")
        )
        print(
            f"{name:28} {scene.ring_level:4.0f}/{scene.belt_level:<4.0f} {scene.r_out:5.0f} "
            f"{roi.status:8} {ring_iou:7.4f} {bore_iou:7.4f} {rows[-1][1] * 1000:6.1f} | {base_iou:8.4f} "
            f"{rows[-1][3] * 1000:7.1f}"
        )
    arr = np.array(rows, dtype=float)
    ms, base_ms = arr[:, 1].mean() * 1000, arr[:, 3].mean() * 1000
    print(
        f"\nfind_ring: {ms:.1f} ms/frame mean (max {arr[:, 1].max() * 1000:.1f}), IoU mean "
        f"{arr[:, 0].mean():.4f} "
        f"min {arr[:, 0].min():.4f}, status ok {int(arr[:, 4].sum())}/{len(rows)}"
    )
    print(
        f"baseline : {base_ms:.1f} ms/frame mean, IoU mean {arr[:, 2].mean():.4f} min {arr[:, 2].min():.4f}"
    )
    print(
        f"time ratio find_ring/baseline: {ms / base_ms:.2f}; frames with IoU >= 0.98: "
        f"{int((arr[:, 0] >= 0.98).sum())}/{len(rows)} (baseline "
        f"{int((arr[:, 2] >= 0.98).sum())}/{len(rows)})"
    )


if __name__ == "__main__":
    main()
