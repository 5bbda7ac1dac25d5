"""Preprocess throughput: frames/s of ``preprocess_type`` on 1 worker (baseline) and N workers.

Target (issue 2): the plant's 1,800 frames per type in under 10 minutes on 2 cores, i.e. at least
3 frames/s. Frames are synthetic full-size (2448x2048) plant-like frames from ``oringscan.synth``
unless ``--data`` points at a real data set. Also prints where one core spends its time per frame.

    python benchmarks/bench_preprocess.py                 # 40 synthetic frames, 1 vs 2 workers
    python benchmarks/bench_preprocess.py --frames 100 --workers 2
    python benchmarks/bench_preprocess.py --data dataset --model model1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402

from oringscan.config import Config  # noqa: E402
from oringscan.frames import read_frame  # noqa: E402
from oringscan.preprocess import preprocess_type  # noqa: E402
from oringscan.preprocess.coco import tile_annotations  # noqa: E402
from oringscan.preprocess.labelme import load_instances  # noqa: E402
from oringscan.preprocess.runner import discover_frames  # noqa: E402
from oringscan.roi import find_ring  # noqa: E402
from oringscan.tiling import ring_tiles  # noqa: E402

TARGET_FPS = 1800 / 600  # 1,800 frames in 10 minutes


def make_frames(root: Path, n_frames: int, seed: int) -> Path:
    from oringscan.synth import synthesize_dataset

    n_defect = max(1, n_frames // 3)
    t0 = time.perf_counter()
    synthesize_dataset(
        root,
        Config(),
        types=("model1",),
        n_good=n_frames - n_defect,
        n_defect=n_defect,
        n_rework=0,
        seed=seed,
        progress=False,
    )
    print(f"rendered {n_frames} synthetic frames in {time.perf_counter() - t0:.1f} s (not timed below)")
    return root


def stage_profile(config: Config, data_root: Path, oring_type: str, n: int) -> dict[str, float]:
    """Median CPU seconds per frame of each stage (one core; CPU time, so other load on the machine
    does not inflate it), on the first ``n`` frames."""
    cv2.setNumThreads(1)
    jobs, _, _ = discover_frames(config, data_root, oring_type)
    jobs = [j for j in jobs if j.label_path is not None][: n // 2] + [
        j for j in jobs if j.label_path is None
    ][: n // 2]
    stages: dict[str, list[float]] = {"read": [], "labels": [], "roi": [], "tiles": [], "clip": [], "png": []}
    ids = {c: i for i, c in enumerate(config.classes.names, start=1)}
    for job in jobs:
        t = time.process_time()
        frame = read_frame(job.image_path, config.frame)
        stages["read"].append(time.process_time() - t)
        t = time.process_time()
        instances = (
            load_instances(job.label_path, frame.image.shape, config.classes)[0] if job.label_path else []
        )
        stages["labels"].append(time.process_time() - t)
        t = time.process_time()
        roi = find_ring(frame.image, config.roi)
        stages["roi"].append(time.process_time() - t)
        t = time.process_time()
        tiles, _ = ring_tiles(frame.image, roi, config)
        stages["tiles"].append(time.process_time() - t)
        t = time.process_time()
        for tile in tiles:
            tile_annotations(instances, tile.box, ids, config.preprocess.min_instance_area)
        stages["clip"].append(time.process_time() - t)
        t = time.process_time()
        for tile in tiles:
            cv2.imencode(f".{config.preprocess.tile_format}", tile.image)
        stages["png"].append(time.process_time() - t)
    return {k: statistics.median(v) for k, v in stages.items() if v}


def timed_run(
    config: Config, data_root: Path, out_root: Path, oring_type: str, workers: int
) -> tuple[float, float, dict]:
    """Wall seconds, this process's CPU seconds (all the work when workers == 1), summary."""
    shutil.rmtree(out_root / oring_type, ignore_errors=True)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = preprocess_type(config, data_root, out_root, oring_type, progress=False, workers=workers)
    return time.perf_counter() - t0, time.process_time() - c0, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=40, help="synthetic frames to render (default 40)")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes for the measured run (default 2)"
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="a real data root instead of synthetic frames"
    )
    parser.add_argument("--model", default="model1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = Config()
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        tmp_path = Path(tmp)
        data_root = args.data or make_frames(tmp_path / "dataset", args.frames, args.seed)
        out_root = tmp_path / "output"

        profile = stage_profile(config, data_root, args.model, n=8)
        total = sum(profile.values())
        print(
            "\none core, median CPU per frame:  "
            + "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in profile.items())
        )
        print(f"  sum {total * 1000:.0f} ms -> at most {1 / total:.2f} frames/s per core")

        base_s, base_cpu, summary = timed_run(config, data_root, out_root, args.model, workers=1)
        n = summary["frames"]["found"]
        run_s, _, summary2 = timed_run(config, data_root, out_root, args.model, workers=args.workers)
        assert summary2["tiles"] == summary["tiles"], "worker count changed the output"

    base_fps, fps = n / base_s, n / run_s
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nmachine: {os.cpu_count()} cores, load average {load:.1f} at the end (other work slows the "
        "timings)"
    )
    print(f"\nframes: {n} ({summary['frames']['used']} used, {summary['tiles']['written']} tiles)")
    print(
        f"baseline 1 worker : {base_s:6.1f} s  {base_fps:5.2f} frames/s  (CPU {base_cpu / n * 1000:.0f} "
        "ms/frame: "
        f"{args.workers} idle cores would give ~{args.workers * n / base_cpu:.1f} frames/s)"
    )
    print(
        f"{args.workers} workers        : {run_s:6.1f} s  {fps:5.2f} frames/s  ({fps / base_fps:.2f}x the "
        "baseline)"
    )
    print(
        f"1,800 frames would take {1800 / fps / 60:.1f} min (target < 10 min = {TARGET_FPS:.1f} frames/s): "
        f"{'PASS' if fps >= TARGET_FPS else 'FAIL'} ({fps / TARGET_FPS:.2f}x the target)"
    )
    print("(process start-up is included; it weighs less on a full data set)")


if __name__ == "__main__":
    main()
