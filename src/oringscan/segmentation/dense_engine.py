"""Training, calibration and evaluation of the second stages (semantic segmenter, tile classifier).

The same data and the same shape as the Mask R-CNN engine (``segmentation/engine.py``): the
preprocess COCO tiles (defect tiles plus a seeded per-epoch sample of good ones, optional
copy-paste, the same joint augmentations), SGD with momentum, a linear warmup then StepLR, a
budget (``max_minutes`` on the wall or CPU clock) that cuts the running epoch short, validation
after every epoch with early stopping, ``checkpoints/{latest,best_model}.pth`` and
``training_history.json``, and a calibration on val at the end. What differs is the target:

- semantic: a per-pixel class map from the instance masks (background 0), weighted cross-entropy
  (defect pixels are rare: each class weighs sqrt(background/class pixels), at most 20); validated
  by tile segm AP of its connected components, calibrated like Mask R-CNN (pycocotools matching).
- classifier: a tile is a defect when it holds any annotation (good tiles drawn 1:1 at least);
  cross-entropy; validated and calibrated per tile (average precision, the score where defect
  tiles reach ``defect_precision``), since it draws no outline to match.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from oringscan import __version__ as oringscan_version
from oringscan.config import Config
from oringscan.errors import ModelFileError
from oringscan.segmentation.calibration import (
    SegmentationCalibration,
    average_precision,
    calibrate_from_outputs,
    calibration_targets,
    file_sha256,
    lowest_score_for_precision,
    no_val_split,
    save_calibration,
    score_curve,
)
from oringscan.segmentation.coco_eval import coco_metrics
from oringscan.segmentation.dataset import TileDataset, TileRecord, read_gray
from oringscan.segmentation.dense_models import DenseSpec, build_dense_model, create_dense_model
from oringscan.segmentation.engine import (
    MAX_BAD_LOSSES,
    TrainingError,
    _apply_overrides,
    _train_dataset,
    _val_subset,
    budget_clock,
    seed_everything,
)
from oringscan.segmentation.inference import resolve_device
from oringscan.segmentation.stages import (
    DenseStage,
    load_stage_checkpoint,
    resize_input,
    save_stage_checkpoint,
)
from oringscan.timeutil import utc_iso
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

MAX_CLASS_WEIGHT = 20.0


class DenseTiles(torch.utils.data.Dataset):
    """The Mask R-CNN tile dataset (sampling, pasting, augmentations), its targets made dense:
    a class map (semantic) or 0/1 (classifier), images resized to the model's input."""

    def __init__(self, base: TileDataset, stage: str, input_size: int) -> None:
        self.base = base
        self.stage = stage
        self.input_size = input_size

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.base[index]
        image = resize_input(image[None, :3], self.input_size)[0]
        masks, labels = target["masks"], target["labels"]
        if self.stage == "classifier":
            return image, torch.tensor(int(bool(masks.numel()) and bool(masks.any())))
        classes = torch.zeros(masks.shape[-2:], dtype=torch.int64)
        for mask, label in zip(masks, labels, strict=True):
            classes[mask.bool()] = int(label)
        if tuple(classes.shape) != (self.input_size, self.input_size):
            classes = F.interpolate(classes[None, None].float(), size=(self.input_size,) * 2, mode="nearest")
            classes = classes[0, 0].long()
        return image, classes


def class_weights(records: Sequence[TileRecord], num_classes: int) -> torch.Tensor:
    """Cross-entropy weights from the labelled areas: rare defect pixels count more (capped)."""
    pixels = np.zeros(num_classes + 1)
    for r in records:
        pixels[0] += r.width * r.height
        for ann in r.annotations:
            pixels[ann.class_index] += ann.area
            pixels[0] -= ann.area
    weights = np.ones(num_classes + 1)
    for k in range(1, num_classes + 1):
        if pixels[k] > 0:
            weights[k] = min(MAX_CLASS_WEIGHT, max(1.0, math.sqrt(pixels[0] / pixels[k])))
    return torch.tensor(weights, dtype=torch.float32)


def tile_scores(stage: DenseStage, records: Sequence[TileRecord], batch_size: int = 4) -> np.ndarray:
    """Per tile, the stage's defect score: the classifier's probability, or the semantic stage's
    best instance score (0 when it finds none)."""
    from oringscan.segmentation.classifier import TileClassifier

    out: list[float] = []
    for start in range(0, len(records), max(1, batch_size)):
        grays = [read_gray(r.path) for r in records[start : start + batch_size]]
        if isinstance(stage, TileClassifier):
            out.extend(stage.logits(grays).softmax(1)[:, 1].tolist())
        else:
            found = stage.predict_arrays(grays, batch_size=len(grays), score_threshold=0.0)
            out.extend(max((i.score for i in group), default=0.0) for group in found)
    return np.asarray(out, dtype=float)


def tile_classification(scores: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Tile-level average precision and AUROC of defect scores (None where undefined)."""
    n_pos = int(truth.sum())
    if n_pos == 0:
        return {"tiles": len(truth), "defect_tiles": 0, "AP": None, "AUROC": None}
    curve = score_curve(scores, truth.astype(bool), n_pos)
    n_neg = len(truth) - n_pos
    auroc = None
    if n_neg:
        pos, neg = scores[truth], scores[~truth]
        auroc = float((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
            n_pos * n_neg
        )
    return {
        "tiles": len(truth),
        "defect_tiles": n_pos,
        "AP": round(average_precision(curve.precision, curve.recall), 4),
        "AUROC": None if auroc is None else round(auroc, 4),
    }


def validate(
    stage: DenseStage, records: Sequence[TileRecord], batch_size: int
) -> tuple[float | None, dict[str, Any] | None]:
    """(the number best_model.pth follows, the metrics): tile segm AP (semantic) or tile AP (classifier)."""
    if not any(r.is_defect for r in records):
        return None, None
    if stage.stage == "classifier":
        truth = np.asarray([r.is_defect for r in records], dtype=bool)
        metrics = tile_classification(tile_scores(stage, records, batch_size), truth)
        return metrics["AP"], {"tile": metrics}
    outputs = stage.predict_records(records, batch_size)
    coco = coco_metrics(records, outputs, stage.class_names, stage.training.mask_threshold)
    assert coco is not None
    value = coco["segm"]["AP"]
    return (0.0 if value is None else float(value)), {
        t: {k: coco[t][k] for k in ("AP", "AP50", "AP75")} for t in coco
    }


def train_dense_stage(
    config: Config,
    output_root: Path,
    oring_type: str,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train the ``[segmentation] stage`` (semantic or classifier) of ``oring_type``; a summary
    shaped like :func:`~oringscan.segmentation.engine.train_segmentation`'s."""
    config.oring_type(oring_type)
    say = echo or (lambda line: tqdm.write(line))
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    latest_path, best_path = workspace.latest_checkpoint, workspace.best_checkpoint
    class_names = list(config.classes.names)
    stage_name = config.segmentation.stage
    if stage_name not in ("semantic", "classifier"):
        raise ValueError(f"train_dense_stage trains the semantic or classifier stage, not {stage_name!r}")
    if overrides.get("backbone") is not None:
        say(
            f"note: --backbone is Mask R-CNN's; the {stage_name} stage's network is [segmentation] "
            f"{stage_name}_model"
        )
    overrides = {k: v for k, v in overrides.items() if k != "backbone"}

    state: dict[str, Any] | None = None
    if resume:
        state = load_stage_checkpoint(latest_path, stage_name, oring_type)
        if list(state["class_names"]) != class_names:
            raise ModelFileError(
                latest_path, f"checkpoint classes {state['class_names']} differ from config {class_names}"
            )
        saved = Config.model_validate(state["config"])
        config = _apply_overrides(_apply_overrides(config, saved.segmentation.model_dump()), overrides)
    else:
        config = _apply_overrides(config, overrides)
    cfg = config.segmentation
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    train_records = workspace.read_split("train", class_names)
    val_records = workspace.read_split("val", class_names) if workspace.has_split("val") else []
    if not any(r.is_defect for r in train_records):
        raise TrainingError(f"{workspace.annotations('train')}: no labelled defect tiles to train on")
    val_eval = _val_subset(val_records, cfg.val_max_tiles)
    tile_size = max(max(r.width, r.height) for r in train_records)
    # Whole tiles at inspection scale (crops would change what a classifier sees); a classifier
    # sees at least as many good tiles as defect ones.
    data_cfg = cfg.model_copy(
        update={
            "train_crop": None,
            "negative_ratio": max(1.0, cfg.negative_ratio)
            if stage_name == "classifier"
            else cfg.negative_ratio,
        }
    )
    if state is not None:
        spec = DenseSpec.from_dict(state["spec"])
        net = build_dense_model(spec)
        net.load_state_dict(state["model"])
        pretrained = str(state.get("pretrained", "unknown"))
    else:
        arch = cfg.semantic_model if stage_name == "semantic" else cfg.classifier_model
        outputs = len(class_names) + 1 if stage_name == "semantic" else 2
        spec = DenseSpec(
            stage_name, arch, outputs, cfg.input_size or tile_size, cfg.trainable_backbone_layers
        )
        net, pretrained = create_dense_model(spec)
    net.to(device)
    from oringscan.segmentation.stages import _STAGE_CLASSES

    stage_class = _STAGE_CLASSES()[stage_name]  # wraps net for validation (sets it to eval)
    dataset = DenseTiles(_train_dataset(train_records, data_cfg), stage_name, spec.input_size)
    weights = class_weights(train_records, len(class_names)) if stage_name == "semantic" else None
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)

    start_epoch, best_metric, best_epoch, bad_epochs, history = 0, -1.0, -1, 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_metric = float(state.get("best_metric", -1.0))
        best_epoch, bad_epochs = int(state.get("best_epoch", -1)), int(state.get("bad_epochs", 0))
        if workspace.training_history.is_file():
            saved_history = json.loads(workspace.training_history.read_text(encoding="utf-8"))
            history = [h for h in saved_history.get("epochs", []) if h["epoch"] < start_epoch]
    metric_name = "val tile AP" if stage_name == "classifier" else "val segm AP"
    say(
        f"training {oring_type}: {stage_name} stage, {spec.arch} ({pretrained}), "
        f"{len(dataset.base.positives)} defect + {len(dataset.base.negatives)} good train tiles, "
        f"{len(val_eval)} val tiles, device {device}, input {spec.input_size}px"
    )
    clock = budget_clock(cfg.budget_clock)
    deadline = None if cfg.max_minutes is None else clock() + 60.0 * cfg.max_minutes
    stopped, epoch = "epochs", start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs):
        if bad_epochs >= cfg.patience:
            stopped = "early-stopping"
            break
        seed_everything(cfg.seed + epoch)
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
            drop_last=len(dataset) > cfg.batch_size,  # BatchNorm needs 2+ tiles per batch
        )
        started = time.monotonic()
        loss, cut_short = _train_one_epoch(
            net, optimizer, loader, device, epoch, cfg, weights, deadline, progress
        )
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        value, metrics = validate(
            stage_class(net, spec, class_names, oring_type, cfg, device), val_eval, cfg.batch_size
        )
        score = -1.0 if value is None else float(value)
        improved = value is None or score > best_metric
        if improved:
            best_metric, best_epoch, bad_epochs = max(score, best_metric), epoch, 0
        else:
            bad_epochs += 1
        history.append(
            {
                "epoch": epoch,
                "lr": lr_now,
                "seconds": round(time.monotonic() - started, 2),
                "partial": cut_short,
                "loss": loss,
                "val": metrics,
            }
        )
        payload = {
            "stage": stage_name,
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_metric": best_metric,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "spec": spec.to_dict(),
            "class_names": class_names,
            "oring_type": oring_type,
            "config": config.model_dump(mode="json"),
            "pretrained": pretrained,
            "metrics": metrics or {},
            "created": utc_iso(),
            "oringscan_version": oringscan_version,
        }
        save_stage_checkpoint(latest_path, payload)
        if improved:
            save_stage_checkpoint(best_path, payload)
        _write_history(workspace.training_history, oring_type, spec, history, best_epoch, best_metric)
        say(
            f"epoch {epoch + 1}/{cfg.epochs}  loss {loss:.3f}  lr {lr_now:.5f}  "
            f"{'val: no labelled defects' if value is None else f'{metric_name} {value:.3f}'}  "
            f"best {max(best_metric, 0):.3f}@{best_epoch + 1}  {history[-1]['seconds']:.0f}s"
            + ("  [time budget reached]" if cut_short else "")
        )
        if cut_short or (deadline is not None and clock() > deadline):
            stopped = "max-minutes"
            break
    if stopped == "epochs" and bad_epochs >= cfg.patience:
        stopped = "early-stopping"
    summary: dict[str, Any] = {
        "model": oring_type,
        "stage": stage_name,
        "backbone": spec.arch,
        "pretrained": pretrained,
        "device": str(device),
        "metric": metric_name,
        "epochs_run": len(history),
        "last_epoch": epoch,
        "best_epoch": best_epoch,
        "best_segm_AP": best_metric if best_metric >= 0 else None,  # the engine's key: the metric above
        "stopped": stopped,
        "checkpoint": str(best_path),
        "latest": str(latest_path),
        "history": str(workspace.training_history),
        "final_val": history[-1]["val"] if history else None,
    }
    if best_path.is_file():
        calibration = calibrate_dense_stage(config, output_root, oring_type, best_path, device=str(device))
        summary["calibration"] = calibration.to_json()
        say(calibration.summary)
    return summary


def _train_one_epoch(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    epoch: int,
    cfg: Any,
    weights: torch.Tensor | None,
    deadline: float | None,
    progress: bool,
) -> tuple[float, bool]:
    """One pass; (mean loss, whether the budget cut it short)."""
    net.train()
    warmup = None
    if epoch == 0 and cfg.warmup_iters > 0 and len(loader) > 1:
        iters = max(1, min(cfg.warmup_iters, len(loader) - 1))
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000, total_iters=iters)
    weight = None if weights is None else weights.to(device)
    total, count, bad, cut_short = 0.0, 0, 0, False
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False
    )
    for step, (images, targets) in enumerate(bar):
        logits = net(images.to(device))
        loss = F.cross_entropy(logits, targets.to(device), weight=weight)
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            bad += 1
            if bad >= MAX_BAD_LOSSES:
                raise TrainingError(
                    f"training diverged: {bad} non-finite losses in a row at epoch {epoch + 1}; "
                    f"lower --lr (now {cfg.lr})"
                )
            continue
        bad = 0
        loss.backward()
        if cfg.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip_norm)
        optimizer.step()
        if warmup is not None and step < warmup.total_iters:
            warmup.step()
        total, count = total + value, count + 1
        bar.set_postfix(loss=f"{value:.3f}")
        if deadline is not None and budget_clock(cfg.budget_clock)() > deadline:
            cut_short = True
            break
    return total / max(1, count), cut_short


def _write_history(
    path: Path, oring_type: str, spec: DenseSpec, history: list[dict[str, Any]], best_epoch: int, best: float
) -> None:
    data = {
        "model": oring_type,
        "stage": spec.stage,
        "backbone": spec.arch,
        "best_epoch": best_epoch,
        "best_segm_AP": best if best >= 0 else None,
        "epochs": history,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


# --- calibration --------------------------------------------------------------------------------


def calibrate_tiles(
    scores: np.ndarray, truth: np.ndarray, settings: Any, created: str = ""
) -> SegmentationCalibration:
    """The classifier's calibration: per val tile, its score against whether it holds a defect.

    Qualified when the tile average precision (its find AP: a tile is what it finds) reaches
    ``min_find_ap`` and some score gives defect tiles ``defect_precision`` with
    ``min_true_positives`` of them (``ap50`` holds the same tile AP: it has no outlines).
    """
    base = {
        **calibration_targets(settings),
        "val_tiles": len(truth),
        "val_defects": int(truth.sum()),
        "created": created,
    }
    if not truth.any():
        return SegmentationCalibration(
            False, "no labelled defects in the validation split to show it finds them", None, **base
        )
    curve = score_curve(scores, truth.astype(bool), int(truth.sum()))
    ap = round(average_precision(curve.precision, curve.recall), 4)
    at = lowest_score_for_precision(curve, settings.defect_precision, settings.min_true_positives)
    if ap < settings.min_find_ap:
        return SegmentationCalibration(
            False,
            f"val tile AP {ap:.2f} < {settings.min_find_ap:.2f} (tile classifier)",
            None,
            ap50=ap,
            find_ap=ap,
            **base,
        )
    if at is None:
        return SegmentationCalibration(
            False,
            f"no score reaches precision {settings.defect_precision:.2f} on val tiles with at least "
            f"{settings.min_true_positives} defect tiles (best {max(curve.precision):.2f})",
            None,
            ap50=ap,
            find_ap=ap,
            **base,
        )
    return SegmentationCalibration(
        True,
        "",
        round(float(curve.scores[at]), 4),
        {},
        ap50=ap,
        find_ap=ap,
        precision=round(float(curve.precision[at]), 4),
        recall=round(float(curve.recall[at]), 4),
        **base,
    )


def calibrate_dense_stage(
    config: Config,
    output_root: Path | str,
    oring_type: str,
    checkpoint: Path | str | None = None,
    device: str = "auto",
    write: bool = True,
    progress: bool = False,
) -> SegmentationCalibration:
    """Predict val with a second stage's checkpoint, calibrate, write the file next to it."""
    from oringscan.segmentation.stages import _STAGE_CLASSES

    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    path = Path(checkpoint) if checkpoint is not None else workspace.best_checkpoint
    path = path / "best_model.pth" if path.is_dir() else path
    stage = _STAGE_CLASSES()[config.segmentation.stage].load(path, device, oring_type, config)
    records = workspace.read_split("val", stage.class_names) if workspace.has_split("val") else []
    records = _val_subset(records, config.segmentation.calibration_max_tiles)
    batch = config.pipeline.tile_batch_size
    if not records:
        calibration = no_val_split(config.segmentation, workspace.annotations("val"))
    elif stage.stage == "classifier":
        truth = np.asarray([r.is_defect for r in records], dtype=bool)
        calibration = calibrate_tiles(
            tile_scores(stage, records, batch), truth, config.segmentation, utc_iso()
        )
    else:
        outputs = stage.predict_records(records, batch, progress)
        calibration = calibrate_from_outputs(
            records,
            outputs,
            stage.class_names,
            config.segmentation,
            stage.training.mask_threshold,
            stage.training,
        )
    calibration.checkpoint_sha256 = file_sha256(path)
    if write:
        save_calibration(calibration, path)
    return calibration


# --- evaluation ---------------------------------------------------------------------------------


def evaluate_dense_stage(
    config: Config,
    output_root: Path,
    oring_type: str,
    data_root: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
    full_frames: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """The test split as ``evaluate_segmentation`` reports it (tile segm/bbox AP, frame defect
    recall), plus per-tile classification (AP, AUROC of the tile's best score); same files."""
    from oringscan.segmentation.evaluation import _plots, frame_metrics
    from oringscan.segmentation.stages import _STAGE_CLASSES

    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    path = Path(checkpoint) if checkpoint is not None else workspace.best_checkpoint
    stage = _STAGE_CLASSES()[config.segmentation.stage].load(path, device, oring_type, config)
    class_names, cfg = stage.class_names, stage.training
    records = workspace.read_split("test", class_names)
    batch = config.pipeline.tile_batch_size
    out_dir = workspace.inference_results
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = stage.predict_records(records, batch, progress)
    tile_metrics = coco_metrics(records, outputs, class_names, cfg.mask_threshold)
    truth_tiles = np.asarray([r.is_defect for r in records], dtype=bool)
    classification = tile_classification(tile_scores(stage, records, batch), truth_tiles)

    frames, per_frame, _ = frame_metrics(
        stage,
        records,
        outputs,
        config,
        workspace,
        data_root,
        full_frames=full_frames,
        batch_size=batch,
        progress=progress,
    )
    metrics: dict[str, Any] = {
        "model": oring_type,
        "stage": stage.stage,
        "checkpoint": str(path),
        "backbone": stage.spec.arch,
        "test_tiles": len(records),
        "tiles": tile_metrics,
        "tile_classification": classification,
        "frames": frames,
        "per_frame": per_frame,
        "plots": _plots(out_dir, tile_metrics, [], class_names),
    }
    if stage.stage == "classifier":
        metrics["note"] = "the classifier draws no outline: segm/bbox AP measure its tile-area instances"
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    metrics["path"] = str(out_dir / "metrics.json")
    return metrics
