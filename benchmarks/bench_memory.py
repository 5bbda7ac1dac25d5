"""Peak memory (RSS) of segmentation training and evaluation against the number of val tiles (issue 17).

    python benchmarks/bench_memory.py [--tiles 100 500 2000] [--baseline-tiles 4 8 16] [--tile-size 640]
                                      [--input-size 64] [--cases train,eval,baseline,pipeline] [--full-heads]
                                      [--frames 10 40 160]

Every case runs in a fresh subprocess (``--case``); its peak resident memory is the child's
``ru_maxrss`` from ``os.wait4`` (cross-checked against the child's own ``VmHWM``). Tiles are
synthetic: smooth random ``--tile-size`` PNGs written as a COCO split, every fifth with one
labelled defect. The model is an untrained Mask R-CNN (``--backbone``, default resnet18_fpn, at
``--input-size`` px so the backbone is cheap on one CPU thread); untrained, it emits the maximum
of 100 detections on every tile at the COCO score floor, each mask pasted at tile size, which is
what made memory explode. Unless ``--full-heads``, the mask head is narrowed to one 16-channel
conv (the detections and their tile-size masks are the same; only the head's convolutions, the
bulk of CPU time with 100 RoIs per tile, get cheaper).

Cases:
  eval      ``evaluate_segmentation`` (what ``oringscan predict --evaluate`` and ``evaluate
            segmentation`` run) on a test split of N tiles, one tile per frame.
  baseline  the old gathering: raw model outputs (dense masks) of every tile kept until COCO
            evaluation. Only small N are feasible (each tile holds 100 x tile-size float masks).
  train     ``train_segmentation`` on CPU, one thread, one short epoch (8 defect tiles, batch 2),
            then its validation of N val tiles.
  pipeline  ``evaluate_pipeline`` (what ``oringscan evaluate pipeline`` runs) on N frames: quarter-size
            synthetic frames (612x512, 160 px tiles, as tests/support/pipeline.py), a fitted PatchCore
            screening model and calibrated rework rules, and the untrained segmenter; the screening
            threshold is forced to ~0 and ``[pipeline] defect_min_score = 0`` so every ring tile of every
            frame is segmented and all of its (up to 100) detections are reported, overlays written.
            The N frames are links to the synthesized ones (memory does not depend on pixel content).

Prints one table: case, tiles, peak RSS, ratio to the smallest N of the case, seconds.
Target (issue 17): <= 4 GB at 2,000 tiles and flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "model1"


# ----------------------------------------------------------------------------- data
def write_tiles(image_dir: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` smooth random gray tiles (cheap to write, look like texture, not noise)."""
    import cv2
    import numpy as np

    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = image_dir / f"tile_{i:05d}.png"
        if not path.is_file():
            small = rng.integers(60, 200, (size // 16, size // 16), dtype=np.uint8)
            cv2.imwrite(str(path), cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC))
        paths.append(path)
    return paths


def write_split(
    type_dir: Path, split: str, tiles: list[Path], size: int, n_classes: int, defect_every: int = 5
) -> Path:
    """A COCO split over the given tile files (absolute paths), every ``defect_every``-th labelled."""
    images, annotations = [], []
    for i, path in enumerate(tiles, start=1):
        images.append({"id": i, "file_name": str(path.resolve()), "width": size, "height": size})
        if i % defect_every == 0:
            x, y = size // 4 + (i * 37) % (size // 2), size // 4 + (i * 53) % (size // 2)
            w, h = max(8, size // 16), max(6, size // 24)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": 1 + i % n_classes,
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "area": float(w * h),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    ann = type_dir / "annotations" / f"{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": []}), encoding="utf-8"
    )
    return ann


def categories(ann: Path, names: list[str]) -> None:
    data = json.loads(ann.read_text(encoding="utf-8"))
    data["categories"] = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    ann.write_text(json.dumps(data), encoding="utf-8")


# ----------------------------------------------------------------------------- child side
def bench_config(args: argparse.Namespace) -> Any:
    from oringscan.config import Config

    config = Config()
    training = config.training.model_copy(
        update={
            "backbone": args.backbone,
            "input_size": args.input_size,
            "device": "cpu",
            "batch_size": 2,
            "epochs": 1,
            "num_workers": 0,
            "warmup_iters": 2,
            "negative_ratio": 0.0,
            "amp": False,
        }
    )
    pipeline = config.pipeline.model_copy(update={"tile_batch_size": 4})
    return config.model_copy(update={"training": training, "pipeline": pipeline})


def tiny_maskrcnn(spec: Any) -> Any:
    """A minimal torchvision Mask R-CNN (one 16-channel conv as backbone, small heads) that still
    proposes 300 boxes and keeps 100 detections per tile, each with a tile-size pasted mask."""
    from torch import nn
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    backbone = nn.Sequential(nn.Conv2d(3, 16, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 16
    return MaskRCNN(
        backbone,
        num_classes=None,
        min_size=spec.input_size,
        max_size=spec.input_size,
        rpn_anchor_generator=AnchorGenerator(sizes=((4, 8, 16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)),
        rpn_post_nms_top_n_test=300,
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        box_head=TwoMLPHead(16 * 7 * 7, 32),
        box_predictor=FastRCNNPredictor(32, spec.num_classes),
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        mask_head=MaskRCNNHeads(16, [8], 1),
        mask_predictor=MaskRCNNPredictor(8, 8, spec.num_classes),
    )


def narrow_heads(full: bool, tiny: bool = False) -> None:
    """Unless ``full``, every Mask R-CNN the project builds in this process gets a one-conv mask
    head; with ``tiny`` it is replaced by :func:`tiny_maskrcnn` altogether."""
    if full and not tiny:
        return
    from torch import nn
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    import oringscan.segmentation.engine as engine
    import oringscan.segmentation.inference as inference
    import oringscan.segmentation.models as models

    original = models.build_model

    def build(spec: Any) -> Any:
        if tiny:
            return tiny_maskrcnn(spec)
        model = original(spec)
        channels = model.backbone.out_channels
        model.roi_heads.mask_head = MaskRCNNHeads(channels, [16], 1, norm_layer=nn.BatchNorm2d)
        model.roi_heads.mask_predictor = MaskRCNNPredictor(16, 16, spec.num_classes)
        return model

    for module in (models, inference, engine):
        if hasattr(module, "build_model"):
            module.build_model = build


def count_detections() -> dict[str, int]:
    """Counts the tiles and detections every ``predict_records`` call returns (for the table)."""
    import oringscan.segmentation.coco_eval as coco_eval
    import oringscan.segmentation.engine as engine
    import oringscan.segmentation.evaluation as evaluation

    seen = {"tiles": 0, "detections": 0, "kept_bytes": 0}
    original = coco_eval.predict_records

    def counted(*a: Any, **k: Any) -> Any:
        out = original(*a, **k)
        seen["tiles"] += len(out)
        seen["detections"] += sum(len(p) for p in out.values())
        seen["kept_bytes"] += sum(p.nbytes for p in out.values())
        return out

    for module in (evaluation, engine):
        module.predict_records = counted
    return seen


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("oringscan").setLevel(logging.ERROR)
    narrow_heads(args.full_heads, args.tiny_model)
    seen = count_detections()
    config = bench_config(args)
    root = Path(args.workdir) / f"{args.case}_{args.n}"
    start = time.perf_counter()
    if args.case == "eval":
        from oringscan.segmentation.evaluation import evaluate_segmentation

        metrics = evaluate_segmentation(
            config,
            root,
            MODEL,
            checkpoint=Path(args.checkpoint),
            device="cpu",
            full_frames=False,
            progress=False,
        )
        extra = {"segm_AP": metrics["tiles"]["segm"]["AP"] if metrics["tiles"] else None}
    elif args.case == "baseline":
        extra = run_baseline(config, root, Path(args.checkpoint), seen)
    elif args.case == "pipeline":
        extra = run_pipeline(args, seen)
    elif args.case == "train":
        from oringscan.segmentation.engine import train_segmentation

        summary = train_segmentation(config, root, MODEL, progress=False, echo=lambda _line: None)
        extra = {"val_tiles": summary["val_tiles"], "epochs": summary["epochs_run"]}
    else:
        raise SystemExit(f"unknown case {args.case}")
    return {
        "case": args.case,
        "tiles": seen.get("frames", args.n),
        "seconds": time.perf_counter() - start,
        "vm_hwm_mb": vm_hwm_mb(),
        "detections_per_tile": seen["detections"] / seen["tiles"] if seen["tiles"] else None,
        "kept_mb": seen["kept_bytes"] / 2**20,
        **extra,
    }


def run_baseline(config: Any, root: Path, checkpoint: Path, seen: dict[str, int]) -> dict[str, Any]:
    """The gathering before issue 17: every tile's raw output (dense masks) kept until COCO evaluation."""
    from oringscan.segmentation.coco_eval import coco_metrics
    from oringscan.segmentation.dataset import load_coco_split, read_gray, to_model_input
    from oringscan.segmentation.evaluation import COCO_SCORE_FLOOR
    from oringscan.segmentation.inference import Segmenter, run_model

    segmenter = Segmenter.load(checkpoint, device="cpu", expected_type=MODEL, config=config)
    records = load_coco_split(root / MODEL / "annotations" / "test.json", segmenter.class_names)
    segmenter.model.roi_heads.score_thresh = COCO_SCORE_FLOOR
    outputs = {}
    batch = config.pipeline.tile_batch_size
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        for record, output in zip(
            chunk,
            run_model(segmenter.model, [to_model_input(read_gray(r.path)) for r in chunk], segmenter.device),
            strict=True,
        ):
            outputs[record.image_id] = output
    seen["tiles"] += len(outputs)
    seen["detections"] += sum(len(o["scores"]) for o in outputs.values())
    metrics = coco_metrics(records, outputs, segmenter.class_names, config.training.mask_threshold)
    return {"segm_AP": metrics["segm"]["AP"] if metrics else None}


PIPELINE_SIZE = (612, 512)


def pipeline_config(args: argparse.Namespace) -> Any:
    """Quarter-size frames and 160 px tiles (tests/support/pipeline.py's recipe), light models."""
    config = bench_config(args)
    config.frame.width, config.frame.height = PIPELINE_SIZE
    config.tiling.tile_size, config.tiling.overlap = 160, 20
    config.screening.coreset_ratio = 0.02
    config.preprocess.workers = 1
    config.rework.k_sigma = 2.5
    # Every instance counts (no calibration file needed), so every detection is reported and kept.
    config.pipeline.defect_min_score = 0.0
    return config


def prepare_pipeline(args: argparse.Namespace) -> None:
    """Synthesize, preprocess, fit screening, save an untrained segmenter, calibrate rework; then one
    split per N that lists N distinct frame files (links to the synthesized ones, truth by folder)."""
    import torch

    from oringscan.preprocess import preprocess_type
    from oringscan.rework_rules import calibrate_rules
    from oringscan.screening import fit_screening
    from oringscan.segmentation.checkpoints import save_checkpoint
    from oringscan.segmentation.models import create_model
    from oringscan.synth import synthesize_dataset
    from oringscan.workspace import TypeWorkspace

    narrow_heads(args.full_heads, args.tiny_model)
    config = pipeline_config(args)
    root = Path(args.workdir) / "pipeline"
    data_root, output_root = root / "dataset", root / "output"
    paths = TypeWorkspace.from_config(config, output_root, MODEL).models
    if not paths.rework_rules.is_file():
        synthesize_dataset(
            data_root,
            config,
            types=(MODEL,),
            n_good=8,
            n_defect=4,
            n_rework=2,
            seed=0,
            color_fraction=0.25,
            progress=False,
            size=PIPELINE_SIZE,
        )
        preprocess_type(config, data_root, output_root, MODEL, progress=False, workers=1)
        fit_screening(config, output_root, MODEL, progress=False)
        names = list(config.classes.names)
        torch.manual_seed(0)
        model, spec, pretrained = create_model(config.training, len(names) + 1, config.tiling.tile_size)
        save_checkpoint(
            paths.segmentation_checkpoint,
            {
                "model": model.state_dict(),
                "spec": spec.to_dict(),
                "class_names": names,
                "oring_type": MODEL,
                "epoch": 0,
                "config": config.model_dump(mode="json"),
                "pretrained": pretrained,
                "backbone": spec.backbone,
            },
        )
        calibrate_rules(config, data_root, output_root, MODEL, progress=False)
    spec = config.oring_type(MODEL)
    frames = []
    for folder in (spec.good_folder, spec.defect_folder):
        frames += sorted(
            p for p in (data_root / "images" / folder).iterdir() if not p.name.startswith("bench_")
        )
    for n in args.frames:
        images = []
        for i in range(n):
            source = frames[i % len(frames)]
            link = source.parent / f"bench_{i:05d}{source.suffix}"
            if not link.exists():
                link.symlink_to(source.name)
            images.append({"id": i + 1, "source_image": str(link.relative_to(data_root))})
        ann = output_root / MODEL / "annotations" / f"bench{n}.json"
        ann.write_text(json.dumps({"images": images, "annotations": [], "categories": []}), encoding="utf-8")


def run_pipeline(args: argparse.Namespace, seen: dict[str, int]) -> dict[str, Any]:
    """``evaluate_pipeline`` over the N-frame split with every ring tile segmented."""
    from oringscan.pipeline import Inspector, evaluate_pipeline
    from oringscan.segmentation.inference import Segmenter

    config = pipeline_config(args)
    root = Path(args.workdir) / "pipeline"
    inspector = Inspector.load(config, root / "output", MODEL, device="cpu")
    inspector.screening.meta.threshold = 1e-12  # every tile flagged: all of them are segmented
    inspector.screening.meta.marginal_threshold = None
    original = Segmenter.predict_arrays

    def counted(self: Any, images: Any, *a: Any, **k: Any) -> Any:
        out = original(self, images, *a, **k)
        seen["tiles"] += len(out)
        seen["detections"] += sum(len(group) for group in out)
        return (
            out  # (no "kept" bytes: evaluate_pipeline drops each frame's masks once its overlay is written)
        )

    Segmenter.predict_arrays = counted  # type: ignore[method-assign]
    report = evaluate_pipeline(
        inspector,
        root / "dataset",
        root / "output",
        split=f"bench{args.n}",
        out_dir=root / f"evaluation_{args.n}",
        progress=False,
    )
    seen["frames"] = len(report["frames_detail"])
    return {"frames": seen["frames"], "tiles_per_frame": seen["tiles"] / max(1, seen["frames"])}


# ----------------------------------------------------------------------------- parent side
def prepare(args: argparse.Namespace) -> Path:
    """Tiles, one COCO split per case and N, and an untrained checkpoint; returns the checkpoint."""
    import torch

    from oringscan.segmentation.checkpoints import save_checkpoint
    from oringscan.segmentation.models import create_model

    narrow_heads(args.full_heads, args.tiny_model)
    config = bench_config(args)
    names = list(config.classes.names)
    work = Path(args.workdir)
    counts = sorted(set(args.tiles) | set(args.baseline_tiles))
    tiles = write_tiles(work / "tiles", max(counts), args.tile_size)
    train_tiles = write_tiles(work / "train_tiles", 8, args.tile_size, seed=1)
    for case, ns in (("eval", args.tiles), ("baseline", args.baseline_tiles), ("train", args.tiles)):
        for n in ns:
            type_dir = work / f"{case}_{n}" / MODEL
            split = "val" if case == "train" else "test"
            categories(write_split(type_dir, split, tiles[:n], args.tile_size, len(names)), names)
            if case == "train":
                categories(
                    write_split(type_dir, "train", train_tiles, args.tile_size, len(names), defect_every=1),
                    names,
                )
    torch.manual_seed(0)
    model, spec, pretrained = create_model(config.training, len(names) + 1, args.tile_size)
    checkpoint = work / "untrained.pth"
    save_checkpoint(
        checkpoint,
        {
            "model": model.state_dict(),
            "spec": spec.to_dict(),
            "class_names": names,
            "oring_type": MODEL,
            "epoch": 0,
            "config": config.model_dump(mode="json"),
            "pretrained": pretrained,
            "backbone": spec.backbone,
        },
    )
    return checkpoint


def child(args: argparse.Namespace, case: str, n: int, checkpoint: Path) -> dict[str, Any]:
    cmd = (
        [
            sys.executable,
            __file__,
            "--case",
            case,
            "--n",
            str(n),
            "--checkpoint",
            str(checkpoint),
            "--workdir",
            str(args.workdir),
            "--backbone",
            args.backbone,
            "--input-size",
            str(args.input_size),
            "--tile-size",
            str(args.tile_size),
        ]
        + (["--full-heads"] if args.full_heads else [])
        + (["--tiny-model"] if args.tiny_model else [])
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ORINGSCAN_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        problem = (err.read().strip().splitlines() or ["no output"])[-1]
    if proc.returncode != 0 or not lines:
        return {"case": case, "tiles": n, "error": f"exit {proc.returncode}: {problem}"}
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument(
        "--baseline-tiles",
        type=int,
        nargs="*",
        default=[4, 8, 16],
        help="the old gathering holds ~164 MB per 640 px tile: keep these small",
    )
    parser.add_argument("--tile-size", type=int, default=640)
    parser.add_argument(
        "--input-size", type=int, default=64, help="model input px (the tile is resized to this)"
    )
    parser.add_argument("--backbone", default="resnet18_fpn")
    parser.add_argument("--cases", default="eval,baseline,train,pipeline")
    parser.add_argument(
        "--frames", type=int, nargs="+", default=[10, 40, 160], help="frame counts of the pipeline case"
    )
    parser.add_argument(
        "--full-heads", action="store_true", help="keep the backbone's own mask head (slow on CPU)"
    )
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="a minimal Mask R-CNN (one conv backbone) instead of --backbone: memory of gathering only",
    )
    parser.add_argument("--workdir", type=Path, default=Path("bench-memory"))
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)), flush=True)
        return

    os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
    started = time.perf_counter()
    wanted = args.cases.split(",")
    checkpoint = (
        prepare(args) if set(wanted) & {"eval", "baseline", "train"} else Path(args.workdir) / "untrained.pth"
    )
    if "pipeline" in wanted:
        prepare_pipeline(args)
    model = (
        "tiny Mask R-CNN"
        if args.tiny_model
        else f"{args.backbone}, {'full' if args.full_heads else 'narrow'} mask head"
    )
    print(
        f"data ready in {time.perf_counter() - started:.0f} s ({args.tile_size} px tiles, pipeline: "
        f"{PIPELINE_SIZE[0]}x{PIPELINE_SIZE[1]} frames, 160 px tiles; {model}, input {args.input_size} px)",
        flush=True,
    )
    counts = {
        "eval": args.tiles,
        "baseline": args.baseline_tiles,
        "train": args.tiles,
        "pipeline": args.frames,
    }
    plan = [(c, n) for c in ("eval", "baseline", "train", "pipeline") if c in wanted for n in counts[c]]
    rows = []
    for case, n in plan:
        row = child(args, case, n, checkpoint)
        rows.append(row)
        if "error" in row:
            print(f"{case:<9} {n:>6} tiles  ERROR {row['error']}", flush=True)
        else:
            unit = "frames" if case == "pipeline" else "tiles"
            print(
                f"{case:<9} {n:>6} {unit:<6}  peak {row['peak_rss_mb']:8.0f} MB  {row['seconds']:6.0f} s  "
                f"{row['detections_per_tile'] or 0:.0f} det/tile",
                flush=True,
            )
    print()
    print(
        f"{'case':<9} {'N':>6} {'peak RSS MB':>12} {'x smallest':>11} {'det/tile':>9} {'kept MB':>8} {'s':>7}"
        "   (N: tiles; frames for pipeline)"
    )
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case and "error" not in r]
        base = mine[0]["peak_rss_mb"] if mine else None
        for r in mine:
            print(
                f"{case:<9} {r['tiles']:>6} {r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] / base:>11.2f} "
                f"{r['detections_per_tile'] or 0:>9.0f} {r.get('kept_mb', 0):>8.1f} {r['seconds']:>7.0f}"
            )
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
