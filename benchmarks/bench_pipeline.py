"""Hybrid pipeline vs the seed's way (Mask R-CNN on every ring tile), in one run, on one batch.

    python benchmarks/bench_pipeline.py [--workdir oringscan-demo] [--frames 10] [--minutes 3]

Uses the models of an ``oringscan demo`` work dir when they are there (else trains them the
demo's way first), renders a fresh batch of full-size synthetic frames, 80% good, and inspects it
twice: the hybrid pipeline (PatchCore screening of every ring tile, Mask R-CNN only on flagged
tiles, rework rules) and the baseline (Mask R-CNN on every ring tile, nothing else). Prints
frames/s of both and their ratio, both defect recalls, false-reject rates, and the hybrid's
time per frame by stage.

Goal (issue 6): hybrid >= 4x the baseline's frames/s at equal defect recall.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from oringscan.cli.common import set_threads
from oringscan.config import load_config
from oringscan.frames import read_frame
from oringscan.pipeline import Inspector, Prefetcher, confident_defects, inspect_paths
from oringscan.pipeline.demo import DEMO_MODEL, DemoPlan, build_demo_models
from oringscan.roi import find_ring
from oringscan.synth import synthesize_dataset
from oringscan.tiling import ring_tiles
from oringscan.types import Verdict


def models_ready(workdir: Path) -> bool:
    out = workdir / "output" / DEMO_MODEL
    return all(
        p.is_file()
        for p in (
            workdir / "demo.toml",
            out / "screening" / "metadata.json",
            out / "checkpoints" / "best_model.pth",
            out / "rework_rules.toml",
        )
    )


def baseline(inspector: Inspector, frames: list[Path]) -> tuple[dict[Path, bool], float, int]:
    """The seed's way: Mask R-CNN on every ring tile. Returns (defect found per frame, seconds, tiles)."""
    config = inspector.config
    found: dict[Path, bool] = {}
    n_tiles = 0
    start = time.perf_counter()
    for item in Prefetcher(frames, config.frame):
        if item.frame is None:
            found[item.path] = False
            continue
        roi = find_ring(item.frame.image, config.roi)
        tiles, _ = ring_tiles(item.frame.image, roi, config) if roi.usable else ([], 0)
        n_tiles += len(tiles)
        instances = inspector.segmenter.predict_tiles(tiles, batch_size=config.pipeline.tile_batch_size)
        found[item.path] = bool(
            confident_defects(instances, config.pipeline, inspector.gate)
        )  # calibrated score
    return found, time.perf_counter() - start, n_tiles


def rate(hits: int, total: int) -> float | None:
    return None if total == 0 else hits / total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("oringscan-demo"))
    parser.add_argument("--frames", type=int, default=10, help="batch size (80%% good)")
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="segmentation training budget if models are missing"
    )
    parser.add_argument(
        "--train-good",
        type=int,
        default=24,
        help="good frames to train on if models are missing (more = a steadier screening threshold)",
    )
    parser.add_argument("--train-defect", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
    set_threads(args.threads)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    if not models_ready(args.workdir):
        print(f"no demo models in {args.workdir}: training them the demo's way first")
        build_demo_models(
            args.workdir,
            minutes=args.minutes,
            plan=DemoPlan(n_good=args.train_good, n_defect=args.train_defect, n_rework=3),
        )
    config = load_config(args.workdir / "demo.toml")
    n_defect = max(1, round(args.frames * 0.2))
    n_good = args.frames - n_defect
    batch_root = args.workdir / "bench_batch"
    synthesize_dataset(
        batch_root,
        config,
        types=(DEMO_MODEL,),
        n_good=n_good,
        n_defect=n_defect,
        n_rework=0,
        seed=2024,
        progress=False,
        size=(config.frame.width, config.frame.height),
    )
    spec = config.oring_type(DEMO_MODEL)
    good = sorted((batch_root / "images" / spec.good_folder).glob("*.bmp"))
    bad = sorted((batch_root / "images" / spec.defect_folder).glob("*.bmp"))
    frames = sorted(good + bad)
    is_defect = {p: p in set(bad) for p in frames}

    config.pipeline.save_overlays = False
    inspector = Inspector.load(config, args.workdir / "output", DEMO_MODEL)
    inspector.with_maps = False
    inspector.inspect_array(read_frame(frames[0], config.frame).image, "warm-up")  # lazy imports, allocations

    summary = inspect_paths(inspector, frames, None, save_overlays=False, progress=False)
    hybrid_s = summary.seconds
    verdicts = {Path(r.image): r.verdict for r in summary.results}
    verdicts = {p: verdicts[p.absolute()] for p in frames}
    seed_found, seed_s, seed_tiles = baseline(inspector, frames)

    n_bad, n_good_frames = sum(is_defect.values()), len(frames) - sum(is_defect.values())
    hybrid = {
        "frames_per_s": len(frames) / hybrid_s,
        "defect_recall_not_passed": rate(
            sum(is_defect[p] and verdicts[p] is not Verdict.GOOD for p in frames), n_bad
        ),
        "defect_recall_strict": rate(
            sum(is_defect[p] and verdicts[p] is Verdict.DEFECT for p in frames), n_bad
        ),
        "false_reject_rate": rate(
            sum(not is_defect[p] and verdicts[p] is not Verdict.GOOD for p in frames), n_good_frames
        ),
        "segmented_tiles": sum(
            sum(t.flagged for t in r.screening.tiles) for r in summary.results if r.screening
        ),
        "ms_per_frame_by_stage": {k: round(v, 1) for k, v in summary.mean_timings().items()},
        "verdicts": summary.counts,
    }
    seed = {
        "frames_per_s": len(frames) / seed_s,
        "defect_recall": rate(sum(is_defect[p] and seed_found[p] for p in frames), n_bad),
        "false_reject_rate": rate(sum(not is_defect[p] and seed_found[p] for p in frames), n_good_frames),
        "segmented_tiles": seed_tiles,
    }
    report: dict[str, Any] = {
        "frames": len(frames),
        "good": n_good_frames,
        "defect": n_bad,
        "frame_size": [config.frame.width, config.frame.height],
        "threads": torch.get_num_threads(),
        "segmentation_backbone": config.training.backbone,
        "hybrid": hybrid,
        "seed_every_tile": seed,
        "speedup": hybrid["frames_per_s"] / seed["frames_per_s"],
    }

    def pct(v: float | None) -> str:
        return "   -" if v is None else f"{100 * v:5.1f}%"

    print(
        f"\nbatch: {len(frames)} frames {config.frame.width}x{config.frame.height} ({n_good_frames} good, "
        f"{n_bad} defect),"
        f" {torch.get_num_threads()} torch thread(s)"
    )
    print(
        f"{'method':34} {'frames/s':>9} {'s/frame':>8} {'tiles segm.':>11} {'recall':>8} {'false rej.':>10}"
    )
    print(
        f"{'hybrid (screen + segm. flagged)':34} {hybrid['frames_per_s']:9.3f} "
        f"{1 / hybrid['frames_per_s']:8.2f} "
        f"{hybrid['segmented_tiles']:11d} {pct(hybrid['defect_recall_not_passed']):>8} "
        f"{pct(hybrid['false_reject_rate']):>10}"
    )
    print(f"{'  strict (verdict defect)':34} {'':9} {'':8} {'':11} {pct(hybrid['defect_recall_strict']):>8}")
    print(
        f"{'seed: Mask R-CNN on every tile':34} {seed['frames_per_s']:9.3f} {1 / seed['frames_per_s']:8.2f} "
        f"{seed['segmented_tiles']:11d} {pct(seed['defect_recall']):>8} {pct(seed['false_reject_rate']):>10}"
    )
    print(f"speedup hybrid / seed: {report['speedup']:.2f}x (goal >= 4x at equal recall)")
    print(
        "hybrid ms/frame by stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in hybrid["ms_per_frame_by_stage"].items())
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
