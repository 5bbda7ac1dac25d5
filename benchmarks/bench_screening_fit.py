"""Fit memory: peak RSS of the streaming fit for growing frame counts, against anomalib's own fit.

    ORINGSCAN_TEST_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_screening_fit.py \
        [--frames 50,100,200] [--anomalib-frames 50] [--backbone ringtexture|resnet18 --input-size 320]

Each measurement runs in a fresh process (peak RSS = ru_maxrss). Tiles come from a few rendered
synthetic frames, rotated/flipped and re-lit so every tile differs (rendering 200 frames would take
longer than fitting them). anomalib's fit keeps every embedding (``embedding_store``), stacks them and
projects them before its greedy loop; its peak is reached before the loop, so the loop is cut to one
centre to keep the run short.
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

import numpy as np

POOL_FRAMES = 6


def tile_pool(work: Path) -> np.ndarray:
    """Ring tiles of a few synthetic good frames (cached)."""
    path = work / "tile_pool.npy"
    if path.is_file():
        return np.load(path)
    from oringscan.config import Config
    from oringscan.roi import find_ring
    from oringscan.synth import render_frame
    from oringscan.tiling import ring_tiles

    cfg, tiles = Config(), []
    for i in range(POOL_FRAMES):
        gray = render_frame("good", np.random.default_rng(100 + i), polarity="light").image
        tiles += [
            t.image for t in ring_tiles(gray, find_ring(gray, cfg.roi), cfg)[0] if t.image.shape == (640, 640)
        ]
    work.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack(tiles))
    return np.stack(tiles)


def tile_batches(pool: np.ndarray, n_tiles: int, batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for start in range(0, n_tiles, batch):
        out = []
        for i in range(start, min(n_tiles, start + batch)):
            t = pool[i % len(pool)]
            t = np.rot90(t, k=(i // len(pool)) % 4)
            if (i // (4 * len(pool))) % 2:
                t = t[:, ::-1]
            gain = rng.uniform(0.9, 1.1)
            out.append(np.clip(t.astype(np.float32) * gain, 0, 255).astype(np.uint8))
        yield out


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    from oringscan.config import Config
    from oringscan.screening.fit import fit_stream, new_model

    pool = tile_pool(args.work)
    cfg = Config()
    cfg.screening.backbone = args.backbone
    cfg.screening.input_size = args.input_size
    n_tiles = args.n_frames * args.tiles_per_frame
    model = new_model(cfg, "model1")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.mode == "ours":
        stats = fit_stream(
            model, tile_batches(pool, n_tiles, cfg.screening.batch_size), n_tiles, cfg, progress=False
        )
        bank_mb = stats["bank_size"] * model.memory_bank.shape[1] * 4 / 2**20
    else:
        from anomalib.models.components import KCenterGreedy

        pc = model.patchcore.train()
        if args.backbone == "ringtexture":
            pc.feature_extractor.set_scales(model.preprocess(next(tile_batches(pool, 8, 8))))
        with torch.no_grad():
            for images in tile_batches(pool, n_tiles, cfg.screening.batch_size):
                pc(model.preprocess(images))
        bank = torch.vstack(pc.embedding_store)
        pc.embedding_store.clear()
        sampler = KCenterGreedy(embedding=bank, sampling_ratio=1.0 / bank.shape[0])
        sampler.select_coreset_idxs()
        bank_mb = 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": args.mode,
                "backbone": args.backbone,
                "frames": args.n_frames,
                "tiles": n_tiles,
                "peak_rss_mb": round(peak),
                "fit_rss_mb": round(peak - base),
                "bank_mb": round(bank_mb, 1),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/oringscan_bench_screening"))
    ap.add_argument("--frames", default="50,100,200")
    ap.add_argument("--anomalib-frames", default="50")
    ap.add_argument("--tiles-per-frame", type=int, default=9)
    ap.add_argument("--backbone", default="ringtexture")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--child", choices=["ours", "anomalib"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n-frames", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    tile_pool(args.work)
    runs = [("ours", int(n)) for n in args.frames.split(",") if n]
    runs += [("anomalib", int(n)) for n in args.anomalib_frames.split(",") if n]
    rows = []
    for mode, n in runs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--n-frames",
            str(n),
            "--work",
            str(args.work),
            "--backbone",
            args.backbone,
            "--tiles-per-frame",
            str(args.tiles_per_frame),
        ]
        if args.input_size:
            cmd += ["--input-size", str(args.input_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        row = (
            json.loads(line[-1]) if line else {"mode": mode, "frames": n, "error": out.stderr.strip()[-300:]}
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    ours = [r for r in rows if r.get("mode") == "ours" and "fit_rss_mb" in r]
    if ours:
        first = ours[0]
        print(f"\nours, {args.backbone}: fit RSS minus bank, ratio to {first['frames']} frames:")
        base = max(1, first["fit_rss_mb"] - first["bank_mb"])
        for r in ours:
            print(
                f"  {r['frames']:>5} frames: {r['fit_rss_mb'] - r['bank_mb']:.0f} MB "
                f"(x{(r['fit_rss_mb'] - r['bank_mb']) / base:.2f}), "
                f"bank {r['bank_mb']} MB, {r['seconds']} s"
            )
    for r in rows:
        if r.get("mode") == "anomalib" and "fit_rss_mb" in r:
            same = next((o for o in ours if o["frames"] == r["frames"]), None)
            ratio = f" = x{r['fit_rss_mb'] / max(1, same['fit_rss_mb']):.1f} ours" if same else ""
            print(f"  anomalib {r['frames']} frames: {r['fit_rss_mb']} MB{ratio}")


if __name__ == "__main__":
    main()
