"""The three segmentation stages (maskrcnn, semantic, classifier) on the same quarter-size frames.

    python benchmarks/bench_second_stages.py --workdir /tmp/stages [--minutes 1] [--good 10 --defect 20]

Synthesises frames (612 x 512, 160 px tiles), preprocesses them once, then per stage: a copy of the
tiles, training for ``--minutes`` of this process's CPU time (one thread), the test split through
``evaluate_segmentation`` (frames from their tiles), CPU time per tile of prediction. Prints one JSON
line per stage and writes ``<workdir>/result.json`` (the README's "Second stages" table).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--good", type=int, default=10)
    parser.add_argument("--defect", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from oringscan.config import Config
    from oringscan.preprocess import preprocess_type
    from oringscan.segmentation import evaluate_segmentation, load_stage, train_segmentation
    from oringscan.segmentation.dataset import read_gray
    from oringscan.synth import synthesize_dataset
    from oringscan.workspace import TypeWorkspace

    logging.getLogger("oringscan").setLevel(logging.ERROR)
    work, size = args.workdir, (612, 512)
    config = Config()
    config.frame.width, config.frame.height = size
    config.tiling.tile_size, config.tiling.overlap = 160, 20
    config.preprocess.workers = 1
    data, base = work / "dataset", work / "base"
    if not (base / "model1" / "annotations").is_dir():
        synthesize_dataset(
            data, config, types=("model1",), n_good=args.good, n_defect=args.defect, n_rework=0, seed=5,
            progress=False, size=size,
        )  # fmt: skip
        preprocess_type(config, data, base, "model1", progress=False, workers=1)
    t = config.training
    t.backbone, t.input_size, t.lr, t.batch_size, t.num_workers, t.amp = "lite0_fpn", 160, 0.02, 2, 0, False
    t.epochs, t.patience, t.paste_prob, t.budget_clock, t.max_minutes = 100, 100, 0.5, "cpu", args.minutes
    rows = {}
    for stage in ("maskrcnn", "semantic", "classifier"):
        out = work / f"out-{stage}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(base, out)
        cfg = config.model_copy(deep=True)
        cfg.segmentation.stage = stage  # type: ignore[assignment]
        start = time.process_time()
        summary = train_segmentation(cfg, out, "model1", progress=False, echo=lambda _line: None)
        fit = time.process_time() - start
        metrics = evaluate_segmentation(cfg, out, "model1", data, progress=False, full_frames=False)
        checkpoint = TypeWorkspace.from_config(cfg, out, "model1").best_checkpoint
        model = load_stage(checkpoint, "cpu", "model1", cfg)
        records = TypeWorkspace.from_config(cfg, out, "model1").read_split("test", ["defect"])
        grays = [read_gray(r.path) for r in records]
        start = time.process_time()
        model.predict_arrays(grays, batch_size=4)
        per_tile = (time.process_time() - start) / max(1, len(grays))
        calibration, frames = summary.get("calibration", {}), metrics["frames"]
        rows[stage] = {
            "epochs": summary["epochs_run"],
            "fit_cpu_s": round(fit, 1),
            "qualified": calibration.get("qualified"),
            "reason": calibration.get("reason"),
            "segm_AP50": metrics["tiles"]["segm"]["AP50"],
            "bbox_AP50": metrics["tiles"]["bbox"]["AP50"],
            "tile_AP": (metrics.get("tile_classification") or {}).get("AP"),
            "defect_recall": frames["defect_recall"],
            "false_positives": frames["false_positives"],
            "good_frames_flagged": f"{frames['good_frames_flagged']}/{frames['good_frames']}",
            "cpu_ms_per_tile": round(1000 * per_tile, 1),
            "checkpoint_MB": round(checkpoint.stat().st_size / 2**20, 1),
            "test_tiles": metrics["test_tiles"],
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        }
        print(json.dumps({"stage": stage, **rows[stage]}), flush=True)
    (work / "result.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
