"""Does the light model learn on CPU? Synthetic frames -> preprocess -> train N minutes -> test AP50.

    python benchmarks/bench_segmentation_learning.py --workdir /tmp/seglearn [--minutes 20]
        [--defect 40 --good 8] [--input-size 384] [--threads 1] [--resume]

Prints the test split's tile segm/bbox AP50 and frame-level defect recall of the best checkpoint,
next to the same metrics of the untrained model (the baseline, measured in the same run), and
the training time actually spent. With ``--resume`` it continues an earlier run in the same
workdir for another ``--minutes`` (the data and checkpoints are kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--defect", type=int, default=40)
    parser.add_argument("--good", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=384)
    parser.add_argument("--backbone", default="resnet18_fpn")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("oringscan").setLevel(logging.ERROR)
    from oringscan.config import Config
    from oringscan.preprocess import preprocess_type
    from oringscan.segmentation import evaluate_segmentation, train_segmentation
    from oringscan.synth import synthesize_dataset

    config = Config()
    config = config.model_copy(
        update={
            "training": config.training.model_copy(
                update={
                    "backbone": args.backbone,
                    "input_size": args.input_size,
                    "batch_size": 2,
                    "num_workers": 0,
                    "warmup_iters": 50,
                    "lr": 0.01,
                    "lr_step_size": 30,
                    "val_max_tiles": 40,
                    "epochs": 200,
                }
            )
        }
    )
    data, output = args.workdir / "dataset", args.workdir / "output"
    if not (output / "model1" / "annotations" / "test.json").is_file():
        synthesize_dataset(data, config, ("model1",), args.good, args.defect, 0, args.seed, progress=False)
        preprocess_type(config, data, output, "model1", progress=False, workers=1)
    results: dict = {}
    if not args.resume:
        # Baseline: the untrained model (one iteration of training, so a checkpoint exists).
        train_segmentation(config, output, "model1", progress=False, max_minutes=0.001, echo=lambda _: None)
        base = evaluate_segmentation(config, output, "model1", data, progress=False)
        results["untrained"] = _row(base)
    start = time.monotonic()
    summary = train_segmentation(
        config, output, "model1", resume=args.resume, max_minutes=args.minutes, progress=False
    )
    spent = (time.monotonic() - start) / 60
    trained = evaluate_segmentation(config, output, "model1", data, progress=False)
    results["trained"] = {**_row(trained), "train_minutes": round(spent, 1), "epochs": summary["epochs_run"]}
    for name, row in results.items():
        print(
            f"{name:<9} test tiles segm AP50 {row['segm_AP50']:.3f}  bbox AP50 {row['bbox_AP50']:.3f}  "
            f"frame defect recall {row['recall']:.2f}"
            + (
                f"  after {row['train_minutes']} min, {row['epochs']} epoch(s)"
                if "train_minutes" in row
                else ""
            )
        )
    (args.workdir / "learning.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


def _row(metrics: dict) -> dict:
    tiles = metrics["tiles"] or {}
    return {
        "segm_AP50": (tiles.get("segm") or {}).get("AP50") or 0.0,
        "bbox_AP50": (tiles.get("bbox") or {}).get("AP50") or 0.0,
        "recall": metrics["frames"]["defect_recall"] or 0.0,
    }


if __name__ == "__main__":
    main()
