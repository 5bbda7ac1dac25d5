"""Synthetic frame speed: frames/s for rendering and for writing a data set.

Run: ``python benchmarks/bench_synth.py [--frames 12] [--threads 1]``

The baseline in the same run is the unavoidable floor of one full-size frame: drawing a full frame
of Gaussian grain and writing it as a BMP. Results are printed as seconds per frame, frames/s and
the ratio to that floor, so numbers from a busy machine still compare. Target: well under 1 s per
frame (aim 0.2 s) on one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from oringscan.config import Config
from oringscan.frames import write_frame
from oringscan.synth import FULL_SIZE, render_frame, synthesize_dataset


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=12, help="frames per measurement")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    parser.add_argument("--workers", type=int, default=1, help="processes for the data-set measurement")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    width, height = FULL_SIZE
    n = args.frames

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)

        def floor(i: int) -> None:
            grain = np.random.default_rng(i).standard_normal((height, width), dtype=np.float32)
            write_frame(tmp_path / "floor.bmp", np.clip(grain * 4 + 128, 0, 255).astype(np.uint8))

        floor_s = statistics.median(_timed(floor, n))
        rows = []
        for label, kind, options in (
            ("good gray", "good", {}),
            ("good colour", "good", {"color": True}),
            ("defect gray", "defect", {}),
            ("rework gray", "rework", {}),
            ("good binned", "good", {"size": (width // 2, height // 2)}),
        ):
            times = _timed(lambda i, k=kind, o=options: render_frame(k, np.random.default_rng(i), **o), n)
            rows.append((label, statistics.median(times), max(times)))

        start = time.perf_counter()
        per_kind = max(1, n // 3)
        summary = synthesize_dataset(
            tmp_path / "ds",
            Config(),
            types=("model1",),
            n_good=per_kind,
            n_defect=per_kind,
            n_rework=per_kind,
            seed=1,
            progress=False,
            workers=args.workers,
        )
        dataset_s = (time.perf_counter() - start) / summary["frames"]

    print(f"bench_synth: {n} frames each, OpenCV threads {args.threads}, cpu count {os.cpu_count()}")
    print(f"{'measurement':<28}{'median s/frame':>16}{'max s':>10}{'frames/s':>10}{'x floor':>10}")
    print(
        f"{'floor (grain + BMP write)':<28}{floor_s:>16.3f}{floor_s:>10.3f}{1 / floor_s:>10.2f}{1.0:>10.2f}"
    )
    for label, median, worst in rows:
        print(
            f"{'render ' + label:<28}{median:>16.3f}{worst:>10.3f}{1 / median:>10.2f}"
            f"{median / floor_s:>10.2f}"
        )
    print(
        f"{'dataset (render+write+json)':<28}{dataset_s:>16.3f}{'':>10}{1 / dataset_s:>10.2f}"
        f"{dataset_s / floor_s:>10.2f}"
    )
    worst_full = max(median for label, median, _ in rows if "binned" not in label)
    verdict = "OK" if worst_full < 1.0 else "TOO SLOW"
    print(f"target: < 1 s per full frame (aim 0.2 s): slowest median {worst_full:.3f} s -> {verdict}")


if __name__ == "__main__":
    main()
