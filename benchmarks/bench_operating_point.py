"""Screening operating points on unseen parts: old calibration vs cross-fitted tail fit, side by side.

    python benchmarks/bench_operating_point.py [--sizes 20,40,100,200] [--unseen-good 160] [--defect 32]
                                               [--reduce 3] [--screen-input PX] [--scores OUT.json]

Frames come from the SECOND renderer, ``oringscan.testing.plantlike`` (independent of ``oringscan.synth``):
one o-ring type (outer radius 650 +/- 8 px, inner 390 +/- 5 px, light ring), random lighting
gradients, vignetting, shadows, lint, dust, blur, JPEG and sensor noise; defect frames carry
plantlike's labelled pits (15-45 px across) and edge bulges (20-40 px proud). Every frame is rendered
at full size, then reduced ``--reduce`` times (default 3: 816 x 683, one 640 px tile per ring, cheap
on a shared CPU; defects shrink with it; 1: full 2448 x 2048, 9 tiles per ring, ~9x the CPU) and goes
through the real ROI (``find_ring``) and tiling (``ring_tiles``) with ``frame.accept_any_size``.
Rendered frames and their tiles are cached under /tmp/oringscan_bench_op/ (``_r1`` etc. for other
reductions; delete to re-render). ``--screen-input`` sets ``screening.input_size`` (tiles resized
before the features); ``--scores`` writes every test frame's score, the thresholds and each defect
frame's pit and bulge sizes (which defects are missed).

For each fit size N (nested: the first N of one pool of good frames):
* old: bank on the "train" share (70/85 of N, as the 70/15/15 split), threshold = 99th percentile of
  the "val" share's frame scores (``quantile_higher``), marginal band 0.9 x threshold;
* new: the same final bank; thresholds cross-fitted on all N frames (``screening.fit.cross_fit`` +
  ``calibrate_thresholds``, 5 folds, generalized Pareto tail), default budget (1 % flag, 2 % review);
  plus the ring-shape screen (``screening/shape.py``, default ``shape_share = 0.25`` of rework's 2 %:
  0.5 %; texture keeps its 1 %), its threshold calibrated on the same N frames' rework
  measurement; a frame is flagged when either flags it. ``--shape-share 0``: the texture screen alone.
  Two shape screens side by side: "old" (the first version: the flash rule's protrusion, held over
  ``flash_min_arc_deg``, floor ``rework.min_excursion_limit_px``) and "new" (lint-aware: the profile
  held over 2 x ``roi.lint_max_width_px`` of arc, floor 1.15 x that width); px limits are divided by
  ``--reduce`` as the frames are.
Both are scored on the same unseen good and defect frames: unseen good flagged, recall (defect frames
flagged), unseen good sent to review (marginal band), and the new calibration's expected rate with
its interval. Each frame's rework measurement is cached next to its tiles (``shape.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from oringscan.config import Config  # noqa: E402
from oringscan.roi import find_ring  # noqa: E402
from oringscan.screening.fit import calibrate_thresholds, cross_fit, new_model, score_records  # noqa: E402
from oringscan.screening.metrics import auroc, frame_scores, recall_at_frr  # noqa: E402
from oringscan.screening.model import quantile_higher  # noqa: E402
from oringscan.screening.shape import (  # noqa: E402
    bulge_score,
    calibrate_shape_screen,
    flag_rates,
    lint_envelope,
    shape_score,
)
from oringscan.testing.plantlike import line_scene as plant_scene  # noqa: E402
from oringscan.testing.plantlike import render_plant_frame  # noqa: E402
from oringscan.tiling import ring_tiles  # noqa: E402
from oringscan.workspace import TileAnnotation, TileRecord  # noqa: E402

CACHE_ROOT = Path("/tmp/oringscan_bench_op")


def cache_dir(reduce: int) -> Path:
    """Rendered tiles per reduction factor (the 3x cache keeps its old place)."""
    return CACHE_ROOT if reduce == 3 else CACHE_ROOT.with_name(f"{CACHE_ROOT.name}_r{reduce}")


def cached_frame_tiles(kind: str, seed: int, config: Config, reduce: int = 3) -> list[TileRecord]:
    """Render (once) -> reduce -> ROI -> ring tiles written as PNG; the frame's tile records."""
    name = f"{kind}_{seed:05d}"
    folder = cache_dir(reduce) / name
    index = folder / "tiles.json"
    if not index.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        frame = render_plant_frame(plant_scene(kind, seed), seed=seed).image
        small = (
            frame
            if reduce == 1
            else cv2.resize(
                frame, (frame.shape[1] // reduce, frame.shape[0] // reduce), interpolation=cv2.INTER_AREA
            )
        )
        cv2.imwrite(str(folder / "frame.png"), small)
        roi = find_ring(small, config.roi)
        tiles, _ = ring_tiles(small, roi, config) if roi.usable else ([], 0)
        rows = []
        for t in tiles:
            path = folder / f"x{t.box.x}_y{t.box.y}.png"
            cv2.imwrite(str(path), t.image)
            rows.append({"path": path.name, "x": t.box.x, "y": t.box.y, "w": t.box.w, "h": t.box.h})
        index.write_text(json.dumps({"roi": str(roi.status), "tiles": rows}), encoding="utf-8")
    rows = json.loads(index.read_text(encoding="utf-8"))["tiles"]
    areas = [TileAnnotation(1, [], 1000.0)] if kind == "defect" else []
    return [
        TileRecord(folder / r["path"], r["w"], r["h"], name, r["x"], r["y"], annotations=list(areas))
        for r in rows
    ]


def cached_shape(kind: str, seed: int, reduce: int = 3) -> dict[str, float] | None:
    """The rework measurement of the cached frame (px of that frame; None: not measurable), cached."""
    from oringscan.rework_rules import ReworkChecker, RulesFile

    folder = cache_dir(reduce) / f"{kind}_{seed:05d}"
    path = folder / "shape.json"
    if not path.is_file():
        gray = cv2.imread(str(folder / "frame.png"), cv2.IMREAD_GRAYSCALE)
        config = Config()
        report = ReworkChecker(RulesFile(), config=config.rework, roi_config=config.roi).inspect(gray)
        m = report.measurement
        path.write_text(json.dumps(None if m is None else m.values), encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def cached_bulge(kind: str, seed: int, arc_px: float, reduce: int = 3) -> float:
    """The lint-aware shape score (``bulge_score`` over ``arc_px``) of the cached frame, cached (NaN:
    not measurable)."""
    from oringscan.rework_rules import ReworkChecker, RulesFile

    folder = cache_dir(reduce) / f"{kind}_{seed:05d}"
    path = folder / f"bulge_{arc_px:.2f}.json"
    if not path.is_file():
        gray = cv2.imread(str(folder / "frame.png"), cv2.IMREAD_GRAYSCALE)
        config = Config()
        report = ReworkChecker(RulesFile(), config=config.rework, roi_config=config.roi).inspect(gray)
        m = report.measurement
        path.write_text(json.dumps(None if m is None else bulge_score(m, arc_px)[0]), encoding="utf-8")
    value = json.loads(path.read_text(encoding="utf-8"))
    return math.nan if value is None else float(value)


def defect_sizes(seed: int) -> dict[str, list[float]]:
    """The rendered defects of a defect frame, full-size px: pit diameters, bulge heights."""
    scene = plant_scene("defect", seed)
    return {
        "pits_px": [round(p[2], 1) for p in scene.labelled_pits],
        "bulges_proud_px": [round(b[1], 1) for b in scene.labelled_bulges],
    }


def frame_level(records: list[TileRecord], scores: np.ndarray) -> dict[str, float]:
    fs, _, names = frame_scores(records, scores)
    return dict(zip(names, (float(v) for v in fs), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,40,100,200")
    ap.add_argument("--unseen-good", type=int, default=160)
    ap.add_argument("--defect", type=int, default=32)
    ap.add_argument(
        "--reduce", type=int, default=3, help="frames reduced this many times (1 = full 2448x2048; slow)"
    )
    ap.add_argument(
        "--screen-input",
        type=int,
        default=None,
        help="screening.input_size: tiles resized to this before the features (default: the tile size)",
    )
    ap.add_argument(
        "--shape-share", type=float, default=None, help="screening.shape_share (default: the config's)"
    )
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--scores", type=Path, default=None, help="per-frame test scores, thresholds and defect sizes (JSON)"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    config = Config()
    config.frame.accept_any_size = True
    config.screening.device = "cpu"
    config.screening.input_size = args.screen_input
    if args.shape_share is not None:
        config.screening.shape_share = args.shape_share
    texture_rate, shape_rate = flag_rates(config)
    t0 = time.perf_counter()
    red = args.reduce
    pool = [cached_frame_tiles("good", 1000 + i, config, red) for i in range(max(sizes))]
    unseen_good = [cached_frame_tiles("good", 5000 + i, config, red) for i in range(args.unseen_good)]
    defect = [cached_frame_tiles("defect", 9000 + i, config, red) for i in range(args.defect)]
    print(f"frames ready in {time.perf_counter() - t0:.0f} s ({cache_dir(red)})", flush=True)
    shape_of: dict[str, float] = {}  # old: the flash rule's protrusion
    bulge_of: dict[str, float] = {}  # new: held over 2 x lint width
    lint = lint_envelope(config.roi.lint_max_width_px / red)
    if shape_rate > 0:
        jobs = [("good", 1000 + i) for i in range(max(sizes))] + [
            ("good", 5000 + i) for i in range(args.unseen_good)
        ]
        for kind, seed in jobs + [("defect", 9000 + i) for i in range(args.defect)]:
            v = cached_shape(kind, seed, red)
            shape_of[f"{kind}_{seed:05d}"] = math.nan if v is None else shape_score(v)
            bulge_of[f"{kind}_{seed:05d}"] = cached_bulge(kind, seed, lint.arc_px, red)
        print(f"rework measurements ready in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.render_only:
        return
    missing = sum(not f for f in pool + unseen_good + defect)
    if missing:
        print(f"warning: {missing} frames without a usable ring are left out")
    test_records = [r for f in unseen_good + defect for r in f]
    rows = []
    per_frame: dict[int, dict] = {}
    for n in sizes:
        t1 = time.perf_counter()
        frames = [f for f in pool[:n] if f]
        n_train = round(len(frames) * 70 / 85)
        train, val = frames[:n_train], frames[n_train:]
        records = [r for f in frames for r in f]
        in_final = [i < sum(len(f) for f in train) for i in range(len(records))]
        screen = new_model(config, "bench")
        oof, stats = cross_fit(screen, records, in_final, config, progress=False)
        new = calibrate_thresholds(screen, oof, config, flag_rate=texture_rate)
        fit_names = sorted({r.source for f in frames for r in f})
        sc = config.screening
        tail = {"tail_fraction": sc.tail_fraction, "min_tail_points": sc.min_tail_points}
        floor = config.rework.min_excursion_limit_px / red
        shape = bulge = None
        if shape_rate > 0:
            shape = calibrate_shape_screen(
                [shape_of[name] for name in fit_names], fit_names, shape_rate, floor, **tail
            )
            bulge = calibrate_shape_screen(
                [bulge_of[name] for name in fit_names],
                fit_names,
                shape_rate,
                floor,
                lint_px=lint.width_px,
                **tail,
            )
        val_records = [r for f in val for r in f]
        val_scores = frame_level(val_records, score_records(screen, val_records, config.screening.batch_size))
        old_thr = quantile_higher(np.array(list(val_scores.values())), 0.99)
        test = frame_level(test_records, score_records(screen, test_records, config.screening.batch_size))
        good = np.array([v for k, v in test.items() if k.startswith("good")])
        bad = np.array([v for k, v in test.items() if k.startswith("defect")])
        good_names = [k for k in test if k.startswith("good")]
        bad_names = [k for k in test if k.startswith("defect")]
        shape_thr = math.inf if shape is None else shape.threshold
        good_shape = np.array([shape_of.get(k, math.nan) > shape_thr for k in good_names])
        bad_shape = np.array([shape_of.get(k, math.nan) > shape_thr for k in bad_names])
        both_good = (good > new["threshold"]) | good_shape
        both_bad = (bad > new["threshold"]) | bad_shape
        bulge_thr = math.inf if bulge is None else bulge.threshold
        good_bulge = np.array([bulge_of.get(k, math.nan) > bulge_thr for k in good_names])
        bad_bulge = np.array([bulge_of.get(k, math.nan) > bulge_thr for k in bad_names])
        lint_good = (good > new["threshold"]) | good_bulge
        lint_bad = (bad > new["threshold"]) | bad_bulge
        row = {
            "n_good_fit": len(frames),
            "n_val_old": len(val),
            "unseen_good": int(good.size),
            "unseen_defect": int(bad.size),
            "old_threshold": old_thr,
            "old_flagged": float((good > old_thr).mean()),
            "old_recall": float((bad > old_thr).mean()),
            "old_review": float(((good > 0.9 * old_thr) & (good <= old_thr)).mean()),
            "new_threshold": new["threshold"],
            "new_flagged": float((good > new["threshold"]).mean()),
            "new_recall": float((bad > new["threshold"]).mean()),
            "new_review": (
                float(((good > new["marginal_threshold"]) & (good <= new["threshold"])).mean())
                if new["marginal_threshold"] is not None
                else 0.0
            ),
            "expected": new["expected_false_reject_rate"],
            "interval": new["expected_false_reject_interval"],
            "expected_review": new.get("expected_review_rate"),
            "method": new["flag_fit"]["method"],
            # The ranking limit, whatever the threshold: AUROC and the recall at the threshold
            # that flags at most 2 % of the unseen good frames.
            "auroc": auroc(
                np.concatenate([good, bad]), np.r_[np.zeros(good.size), np.ones(bad.size)].astype(bool)
            ),
            "recall_at_2pct_unseen": recall_at_frr(
                np.concatenate([good, bad]), np.r_[np.zeros(good.size), np.ones(bad.size)].astype(bool), 0.02
            )[0],
            "texture_rate": texture_rate,
            "shape_threshold": None if shape is None else shape.threshold,
            "shape_flagged": float(good_shape.mean()),
            "shape_recall": float(bad_shape.mean()),
            "shape_expected": None if shape is None else shape.info["expected_false_reject_rate"],
            "shape_interval": None if shape is None else shape.info["expected_false_reject_interval"],
            "shape_method": None if shape is None else shape.info["method"],
            "both_flagged": float(both_good.mean()),
            "both_recall": float(both_bad.mean()),
            "both_missed": [k for k, hit in zip(bad_names, both_bad, strict=True) if not hit],
            "both_false": [k for k, hit in zip(good_names, both_good, strict=True) if hit],
            "bulge_threshold": None if bulge is None else bulge.threshold,
            "bulge_flagged": float(good_bulge.mean()),
            "bulge_recall": float(bad_bulge.mean()),
            "bulge_expected": None if bulge is None else bulge.info["expected_false_reject_rate"],
            "bulge_interval": None if bulge is None else bulge.info["expected_false_reject_interval"],
            "bulge_method": None if bulge is None else bulge.info["method"],
            "bulge_good_max": None if bulge is None else bulge.info["good_frame_score_max"],
            "lint_flagged": float(lint_good.mean()),
            "lint_recall": float(lint_bad.mean()),
            "lint_missed": [k for k, hit in zip(bad_names, lint_bad, strict=True) if not hit],
            "lint_false": [k for k, hit in zip(good_names, lint_good, strict=True) if hit],
            "statement": new["statement"],
            "seconds": round(time.perf_counter() - t1, 1),
            "fit_seconds": stats["fit_seconds"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.scores:
            per_frame[n] = {
                "old_threshold": old_thr,
                "new_threshold": new["threshold"],
                "shape_threshold": row["shape_threshold"],
                "scores": test,
                "shape_scores": {k: shape_of.get(k) for k in test},
                "bulge_threshold": row["bulge_threshold"],
                "bulge_scores": {k: bulge_of.get(k) for k in test},
            }
    print(
        "\n| good frames fitted | old calibration: flagged / recall | new texture: flagged / recall "
        "| old shape: threshold px, flagged / recall | new shape (lint-aware): threshold px, flagged / recall "
        "| texture + old shape: flagged / recall | **texture + new shape: flagged** | **recall** |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["bulge_threshold"] is None:
            continue
        print(
            f"| {r['n_good_fit']} | {r['old_flagged']:.1%} / {r['old_recall']:.3f} "
            f"| {r['new_flagged']:.1%} / {r['new_recall']:.3f} "
            f"| {r['shape_threshold']:.2f}, {r['shape_flagged']:.1%} / {r['shape_recall']:.3f} "
            f"| {r['bulge_threshold']:.2f}, {r['bulge_flagged']:.1%} / {r['bulge_recall']:.3f} "
            f"| {r['both_flagged']:.1%} / {r['both_recall']:.3f} "
            f"| **{r['lint_flagged']:.1%}** | **{r['lint_recall']:.3f}** |"
        )
    print(
        "\n| good frames fitted | old: unseen good flagged / recall | new texture: flagged / recall "
        "| old shape (flash-held): threshold px, flagged / recall | **new texture + old shape: unseen good "
        "flagged** | recall | expected texture + old shape (90 % intervals) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["interval"]
        shape_cell, exp_cell = "-", f"{r['expected']:.1%} ({lo:.1%}-{hi:.1%})"
        if r["shape_threshold"] is not None:
            slo, shi = r["shape_interval"]
            shape_cell = f"{r['shape_threshold']:.2f}, {r['shape_flagged']:.1%} / {r['shape_recall']:.3f}"
            exp_cell += f" + {r['shape_expected']:.1%} ({slo:.1%}-{shi:.1%})"
        print(
            f"| {r['n_good_fit']} | {r['old_flagged']:.1%} / {r['old_recall']:.3f} "
            f"| {r['new_flagged']:.1%} / {r['new_recall']:.3f} | {shape_cell} "
            f"| **{r['both_flagged']:.1%}** | {r['both_recall']:.3f} | {exp_cell} |"
        )
    print(
        "\n| good frames fitted | old: unseen good flagged | old: recall | new: unseen good flagged | new: recall "
        "| new: expected (90 % interval) | new: sent to review (expected) | frame AUROC | recall at 2 % unseen FRR |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["interval"]
        rev = "-" if r["expected_review"] is None else f"{r['expected_review']:.1%}"
        print(
            f"| {r['n_good_fit']} (old val: {r['n_val_old']}) | {r['old_flagged']:.1%} | {r['old_recall']:.3f} "
            f"| **{r['new_flagged']:.1%}** | {r['new_recall']:.3f} | {r['expected']:.1%} ({lo:.1%}-{hi:.1%}) "
            f"| {r['new_review']:.1%} ({rev}) | {r['auroc']:.3f} | {r['recall_at_2pct_unseen']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if args.scores:
        sizes_of = {f"defect_{9000 + i:05d}": defect_sizes(9000 + i) for i in range(args.defect)}
        args.scores.write_text(
            json.dumps({"fits": per_frame, "defects": sizes_of}, indent=1), encoding="utf-8"
        )


if __name__ == "__main__":
    main()
