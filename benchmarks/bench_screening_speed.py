"""Coreset and scoring speed against anomalib, on the same embeddings, bank and tiles.

    ORINGSCAN_TEST_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_screening_speed.py \
        [--backbones ringtexture,resnet18] [--coreset-tiles 7] [--frames 3]

1. Coreset: anomalib's ``KCenterGreedy`` versus ours (exact greedy, ``batch=1``, and the batched
   default) on the embeddings of ``--coreset-tiles`` good tiles at 10 %: seconds and coverage (the
   largest distance from any patch to its nearest coreset member, full embedding space; smaller is better).
2. Scoring: per full frame (its ring tiles), ``ScreeningModel.score_tiles`` versus anomalib's
   ``PatchcoreModel.forward`` (the torch model its Engine and inferencers run) with the same bank;
   the scores must agree within 1e-4 relative.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from oringscan.config import Config
from oringscan.roi import find_ring
from oringscan.screening.coreset import k_center_greedy, min_sq_distances
from oringscan.screening.fit import fit_stream, new_model
from oringscan.synth import render_frame
from oringscan.tiling import ring_tiles


def frame_tiles(seed: int, kind: str = "good") -> list:
    cfg = Config()
    gray = render_frame(kind, np.random.default_rng(seed), polarity="light").image
    return ring_tiles(gray, find_ring(gray, cfg.roi), cfg)[0]


def bench_backbone(backbone: str, n_coreset_tiles: int, n_frames: int) -> dict:
    cfg = Config()
    cfg.screening.backbone = backbone
    model = new_model(cfg, "model1")
    train = [t.image for s in range(3) for t in frame_tiles(200 + s)]
    fit_stream(model, (train[i : i + 8] for i in range(0, len(train), 8)), len(train), cfg, progress=False)
    row: dict = {
        "backbone": backbone,
        "bank": int(model.memory_bank.shape[0]),
        "dim": int(model.memory_bank.shape[1]),
    }

    # 1. coreset on the same embeddings
    with torch.no_grad():
        emb = model.embed(model.preprocess(train[:n_coreset_tiles]))
    x = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1]).contiguous()
    k = max(1, int(0.1 * x.shape[0]))
    from anomalib.models.components import KCenterGreedy

    def coverage(sel: torch.Tensor) -> float:
        return float(min_sq_distances(x, sel).max().sqrt())

    torch.manual_seed(0)
    t0 = time.perf_counter()
    ref = KCenterGreedy(embedding=x, sampling_ratio=k / x.shape[0]).sample_coreset()
    t_ref = time.perf_counter() - t0
    row["coreset"] = {
        "patches": int(x.shape[0]),
        "k": k,
        "anomalib_s": round(t_ref, 2),
        "anomalib_cover": coverage(ref),
    }
    proj = x
    if x.shape[1] > 128:
        from oringscan.screening.coreset import gaussian_projection

        proj = x @ gaussian_projection(x.shape[1], 128)
    for batch in (1, 16):
        t0 = time.perf_counter()
        idx = k_center_greedy(proj, k, batch=batch)
        t = time.perf_counter() - t0
        row["coreset"][f"ours_b{batch}_s"] = round(t, 2)
        row["coreset"][f"ours_b{batch}_cover"] = coverage(x[idx])
        row["coreset"][f"ours_b{batch}_speedup"] = round(t_ref / t, 1)

    # 2. scoring per frame, same bank, same tiles
    ours_t, ref_t, worst_rel = [], [], 0.0
    for f in range(n_frames):
        tiles = frame_tiles(300 + f, "defect" if f % 2 else "good")
        t0 = time.perf_counter()
        res = model.score_tiles(tiles)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.patchcore(model.preprocess([t.image for t in tiles]))
        ref_t.append(time.perf_counter() - t0)
        ours_s = np.array([t.score for t in res.tiles])
        ref_s = out.pred_score.numpy()
        worst_rel = max(worst_rel, float(np.max(np.abs(ours_s - ref_s) / np.maximum(np.abs(ref_s), 1e-12))))
    row["scoring"] = {
        "tiles_per_frame": len(tiles),
        "ours_s_per_frame": round(float(np.median(ours_t)), 3),
        "anomalib_s_per_frame": round(float(np.median(ref_t)), 3),
        "speedup": round(float(np.median(ref_t) / np.median(ours_t)), 1),
        "max_rel_score_diff": worst_rel,
        "same_scores": worst_rel <= 1e-4,
    }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="ringtexture,resnet18")
    ap.add_argument("--coreset-tiles", type=int, default=7)
    ap.add_argument("--frames", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("ORINGSCAN_TEST_THREADS", "1")))
    for backbone in args.backbones.split(","):
        print(json.dumps(bench_backbone(backbone, args.coreset_tiles, args.frames)), flush=True)


if __name__ == "__main__":
    main()
