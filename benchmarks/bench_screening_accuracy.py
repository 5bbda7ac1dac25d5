"""Screening accuracy per variant on synthetic frames, no downloaded weights, CPU.

    ORINGSCAN_TEST_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_screening_accuracy.py \
        [--train 24 --test-good 16 --test-defect 16] [--variants ringtexture,resnet18@320]

Renders frames with ``oringscan.synth``, cuts them with ``oringscan.preprocess`` (cached under
``--work``), fits each variant on the good train tiles, and prints frame AUROC, recall at <= 2 % good
frames flagged, recall by defect size, and seconds per frame (2 shared cores here: numbers are noisy).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from oringscan.config import Config, ScreeningConfig
from oringscan.screening.data import good_frame_tiles, group_frames, load_split
from oringscan.screening.fit import fit_bank, new_model, score_records
from oringscan.screening.metrics import SIZE_BINS, auroc, frame_scores, recall_at_frr

VARIANTS = {
    # name: ScreeningConfig overrides
    "ringtexture": {"backbone": "ringtexture"},
    "ringtexture_k1": {"backbone": "ringtexture", "num_neighbors": 1},
    "ringtexture_bank4k": {"backbone": "ringtexture", "max_bank_size": 4096},
    "ringtexture@320": {"backbone": "ringtexture", "input_size": 320},
    "resnet18@256": {"backbone": "resnet18", "input_size": 256},
    "resnet18@320": {"backbone": "resnet18", "input_size": 320},
    "resnet18_l1l2@320": {"backbone": "resnet18", "input_size": 320, "layers": ["layer1", "layer2"]},
    "resnet18@640": {"backbone": "resnet18", "input_size": 640},
}


def build_data(work: Path, n_good: int, n_defect: int, seed: int) -> Path:
    """Synthetic frames -> preprocess output (cached); every split is used by the caller."""
    from oringscan.preprocess import preprocess_type
    from oringscan.synth import synthesize_dataset

    out = work / f"out_{n_good}_{n_defect}_{seed}"
    if (out / "model1" / "annotations" / "test.json").is_file():
        return out
    data = work / f"data_{n_good}_{n_defect}_{seed}"
    if not (data / "manifest.json").is_file():
        synthesize_dataset(
            data,
            Config(),
            types=("model1",),
            n_good=n_good,
            n_defect=n_defect,
            n_rework=0,
            seed=seed,
            color_fraction=0.25,
            progress=True,
        )
    preprocess_type(Config(), data, out, "model1", progress=True, workers=1)
    return out


def all_tiles(out: Path) -> list:
    return [r for split in ("train", "val", "test") for r in load_split(out, "model1", split)]


def evaluate_variant(name: str, overrides: dict, train_out: Path, test_out: Path, frr: float = 0.02) -> dict:
    cfg = Config()
    cfg.screening = ScreeningConfig(**{**cfg.screening.model_dump(), **overrides})
    train = good_frame_tiles(all_tiles(train_out))
    test = all_tiles(test_out)
    model = new_model(cfg, "model1")
    t0 = time.perf_counter()
    fit_stats = fit_bank(model, train, cfg, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score_records(model, test, cfg.screening.batch_size)
    n_frames = len(group_frames(test))
    per_frame = (time.perf_counter() - t0) / max(1, n_frames)
    fs, fd, _ = frame_scores(test, scores)
    recall, thr = recall_at_frr(fs, fd, frr)
    tile_pos = np.array([r.is_defect for r in test])
    by_size = {}
    for bin_name, lo, hi in SIZE_BINS:
        hits = [bool(scores[i] > thr) for i, r in enumerate(test) for a in r.defect_areas if lo <= a < hi]
        by_size[bin_name] = (round(sum(hits) / len(hits), 3) if hits else None, len(hits))
    return {
        "variant": name,
        "frame_auroc": auroc(fs, fd),
        "tile_auroc": auroc(scores, tile_pos),
        f"frame_recall@frr{frr:g}": recall,
        "recall_by_size": by_size,
        "s_per_frame": round(per_frame, 3),
        "fit_s": round(fit_s, 1),
        "bank": fit_stats["bank_size"],
        "frames": {
            "train": len(group_frames(train)),
            "test_good": int((~fd).sum()),
            "test_defect": int(fd.sum()),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/oringscan_bench_screening"))
    ap.add_argument("--train", type=int, default=24, help="good frames to fit on")
    ap.add_argument("--test-good", type=int, default=16)
    ap.add_argument("--test-defect", type=int, default=16)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--variants", default="ringtexture,resnet18@320")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("ORINGSCAN_TEST_THREADS", "1")))
    train_out = build_data(args.work, args.train, 0, args.seed)
    test_out = build_data(args.work, args.test_good, args.test_defect, args.seed + 1000)
    rows = []
    for name in args.variants.split(","):
        row = evaluate_variant(name, VARIANTS[name], train_out, test_out)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| variant | frame AUROC | tile AUROC | recall @<=2% FRR | few px | tens px | large | s/frame | "
        "fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sizes = [r["recall_by_size"][b][0] for b, _, _ in SIZE_BINS]
        rec = r["frame_recall@frr0.02"]
        print(
            f"| {r['variant']} | {r['frame_auroc']:.3f} | {r['tile_auroc']:.3f} | {rec:.3f} | "
            + " | ".join("-" if s is None else f"{s:.2f}" for s in sizes)
            + f" | {r['s_per_frame']:.2f} | {r['fit_s']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
