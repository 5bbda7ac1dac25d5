"""Segmentation speed and memory: per-tile inference per backbone, stitching per frame, peak RSS.

    python benchmarks/bench_segmentation.py [--threads 2] [--repeats 3] [--checkpoint PATH] [--json out.json]

Numbers are compared in the same run as ratios:
* per-tile inference of each backbone against the seed's resnet50_fpn (input 800, torchvision's
  default) on the same 640x640 tile;
* stitching one frame's tile predictions (crops + union-find) against the dense way (one
  2448x2048 bool mask per prediction, OR-ed and re-labelled);
* peak resident memory of full-frame inference (ROI + 9 tiles + stitching), each backbone in a
  fresh process, against the process's memory just after loading the model.

Models are random-init (timing does not depend on the weights) with the box score threshold at
0.5 so that, as with a trained model, few boxes reach the mask head; ``--checkpoint`` times a
trained model instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

BACKBONES = ("resnet50_fpn", "resnet18_fpn", "mobilenet_v3_fpn")


def _segmenter(backbone: str, checkpoint: str | None):
    import torch

    from oringscan.config import Config
    from oringscan.segmentation.inference import Segmenter
    from oringscan.segmentation.models import create_model

    config = Config()
    if checkpoint:
        return Segmenter.load(checkpoint, device="cpu", config=config)
    training = config.training.model_copy(update={"backbone": backbone})
    model, spec, _ = create_model(training, 2, 640)
    return Segmenter(model, spec, ["defect"], "bench", training, torch.device("cpu"))


def _frame() -> np.ndarray:
    from oringscan.synth import render_frame

    return render_frame("defect", np.random.default_rng(5)).image


def bench_tiles(threads: int, repeats: int, checkpoint: str | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    from oringscan.config import Config
    from oringscan.roi import find_ring
    from oringscan.tiling import ring_tiles

    gray = _frame()
    tiles, _ = ring_tiles(gray, find_ring(gray), Config())
    tile = max(tiles, key=lambda t: t.ring_fraction).image
    out = {}
    for backbone in [None] if checkpoint else BACKBONES:
        seg = _segmenter(backbone or "", checkpoint)
        seg.predict_arrays([tile])  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            seg.predict_arrays([tile])
            times.append(time.perf_counter() - start)
        out[seg.spec.backbone] = {
            "input_px": seg.spec.input_size,
            "ms_per_tile": 1000 * float(np.median(times)),
        }
    return out


def bench_stitch(repeats: int) -> dict:
    from oringscan.config import TilingConfig
    from oringscan.segmentation.stitching import stitch
    from oringscan.tiling import tile_grid
    from oringscan.types import Instance

    rng = np.random.default_rng(0)
    h, w = 2048, 2448
    boxes = tile_grid((400, 250, 1650, 1550), (h, w), TilingConfig())
    pieces = []
    for k in range(12):  # defects all over, many across tile borders, plus noisy duplicates
        defect = np.zeros((h, w), np.uint8)
        cx, cy = int(rng.integers(450, 2000)), int(rng.integers(300, 1750))
        if k % 2:
            cv2.line(defect, (cx - 150, cy - 40), (cx + 150, cy + 40), 1, 4)
        else:
            cv2.ellipse(
                defect,
                (cx, cy),
                (int(rng.integers(5, 80)), int(rng.integers(5, 40))),
                float(rng.uniform(0, 180)),
                0,
                360,
                1,
                -1,
            )
        for box in boxes:
            crop = defect[box.slices()].astype(bool)
            if crop.any():
                pieces.append(Instance("defect", float(rng.uniform(0.5, 1)), crop, (box.x, box.y)))
                if rng.random() < 0.3:
                    fat = cv2.dilate(crop.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                    pieces.append(Instance("defect", 0.4, fat, (box.x, box.y)))

    def dense() -> int:
        full = np.zeros((len(pieces), h, w), bool)  # what "one frame mask per prediction" costs
        for i, p in enumerate(pieces):
            full[i] = p.full_mask(h, w)
        n, _ = cv2.connectedComponents(full.any(axis=0).astype(np.uint8))
        return n - 1

    def timed(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000 * float(np.median(times))

    crops_ms = timed(lambda: stitch(pieces))
    dense_ms = timed(dense)
    return {
        "pieces": len(pieces),
        "instances": len(stitch(pieces)),
        "crop_stitch_ms": crops_ms,
        "dense_baseline_ms": dense_ms,
        "dense_baseline_MB": len(pieces) * h * w / 1e6,
        "crop_masks_MB": sum(p.mask.nbytes for p in pieces) / 1e6,
    }


def _child_memory(backbone: str, threads: int, checkpoint: str | None, frame_path: str) -> None:
    import torch

    torch.set_num_threads(threads)
    from oringscan.config import Config
    from oringscan.frames import read_frame

    seg = _segmenter(backbone, checkpoint)
    gray = read_frame(frame_path).image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    prediction = seg.predict_frame(gray, Config())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "backbone": seg.spec.backbone,
                "tiles": len(prediction.tiles),
                "frame_s": seconds,
                "rss_after_load_MB": before / 1024,
                "peak_rss_MB": peak / 1024,
            }
        )
    )


def bench_memory(threads: int, checkpoint: str | None) -> dict:
    import tempfile

    from oringscan.frames import write_frame

    out = {}
    frame_path = Path(tempfile.mkdtemp()) / "bench frame.bmp"
    write_frame(frame_path, _frame())
    for backbone in [BACKBONES[0]] if checkpoint else BACKBONES:
        cmd = [
            sys.executable,
            __file__,
            "--child-memory",
            backbone,
            "--threads",
            str(threads),
            "--frame",
            str(frame_path),
        ]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        data = json.loads(result.stdout.strip().splitlines()[-1])
        out[data["backbone"]] = data
    frame_path.unlink()
    frame_path.parent.rmdir()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--child-memory", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--frame", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        _child_memory(args.child_memory, args.threads, args.checkpoint, args.frame)
        return
    import logging

    logging.getLogger("oringscan").setLevel(logging.ERROR)
    results = {"threads": args.threads, "cpus": os.cpu_count()}
    results["tiles"] = bench_tiles(args.threads, args.repeats, args.checkpoint)
    base = results["tiles"].get("resnet50_fpn", {}).get("ms_per_tile")
    print(f"per-tile inference ({args.threads} thread(s), 640x640 tile):")
    for name, row in results["tiles"].items():
        ratio = f"  x{row['ms_per_tile'] / base:.2f} of resnet50_fpn" if base else ""
        print(f"  {name:<18} input {row['input_px']:>4}px  {row['ms_per_tile']:8.0f} ms/tile{ratio}")
    results["stitch"] = s = bench_stitch(args.repeats)
    print(
        f"stitching one frame: {s['pieces']} tile predictions -> {s['instances']} defects in "
        f"{s['crop_stitch_ms']:.1f} ms "
        f"(dense full-frame masks: {s['dense_baseline_ms']:.0f} ms, "
        f"x{s['dense_baseline_ms'] / s['crop_stitch_ms']:.0f}; "
        f"memory {s['crop_masks_MB']:.2f} MB of crops vs {s['dense_baseline_MB']:.0f} MB dense)"
    )
    results["memory"] = bench_memory(args.threads, args.checkpoint)
    print("full-frame inference (fresh process each):")
    for name, row in results["memory"].items():
        print(
            f"  {name:<18} {row['tiles']} tiles in {row['frame_s']:.1f} s, peak RSS {row['peak_rss_MB']:.0f} "
            "MB "
            f"(x{row['peak_rss_MB'] / row['rss_after_load_MB']:.2f} of {row['rss_after_load_MB']:.0f} MB "
            "after model load)"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
