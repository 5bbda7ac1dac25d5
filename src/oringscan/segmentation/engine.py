"""The training loop, in the spirit of torchvision's ``references/detection``.

SGD with momentum and weight decay, a linear warmup over the first iterations then StepLR per
epoch, AMP with a GradScaler on CUDA only, a guard against non-finite losses, validation segm mAP
after every epoch with early stopping, TensorBoard logs, ``training_history.json`` and
``checkpoints/{latest,best_model}.pth``. Every epoch reseeds from (seed, epoch), so ``resume``
continues exactly where the interrupted run would have gone.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from oringscan import __version__ as oringscan_version
from oringscan.config import Config
from oringscan.errors import ModelFileError, OringscanError
from oringscan.segmentation.anomaly import CACHE_DIR as ANOMALY_CACHE_DIR
from oringscan.segmentation.anomaly import anomaly_scale, attach_anomaly_maps, load_type_screening
from oringscan.segmentation.checkpoints import load_checkpoint, save_checkpoint
from oringscan.segmentation.coco_eval import TilePrediction, coco_metrics, predict_records
from oringscan.segmentation.dataset import (
    TileDataset,
    TileRecord,
    collate,
    read_gray,
    train_transforms,
)
from oringscan.segmentation.inference import resolve_device
from oringscan.segmentation.models import (
    ModelSpec,
    build_model,
    cpu_recipe_overrides,
    create_model,
    resolve_anomaly_channel,
    resolve_backbone,
)
from oringscan.segmentation.visualize import grid, overlay
from oringscan.timeutil import utc_iso
from oringscan.types import Instance
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

MAX_BAD_LOSSES = 5


class TrainingError(OringscanError):
    pass


def budget_clock(kind: str) -> Callable[[], float]:
    """What ``max_minutes`` counts: wall time, or this process's CPU time (fair budgets on a shared machine)."""
    return time.process_time if kind == "cpu" else time.monotonic


@dataclass(slots=True)
class BudgetSchedule:
    """The learning rate x ``gamma`` at fixed fractions of a time budget (``lr_schedule = "budget"``).

    StepLR counts epochs, which a time budget does not know in advance: a 5-minute run would end
    at the high rate, whose weights swing from epoch to epoch. Checked after every iteration.
    """

    clock: Callable[[], float]
    start: float
    seconds: float
    fractions: list[float]
    gamma: float
    applied: int = 0

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        used = self.clock() - self.start
        due = sum(1 for f in self.fractions if used >= f * self.seconds)
        while self.applied < due:
            for group in optimizer.param_groups:
                group["lr"] *= self.gamma
            self.applied += 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _val_subset(records: list[TileRecord], limit: int | None) -> list[TileRecord]:
    """Labelled tiles first, then good ones, up to ``limit`` (deterministic)."""
    if limit is None or len(records) <= limit:
        return records
    positives = [r for r in records if r.is_defect]
    negatives = [r for r in records if not r.is_defect]
    return (positives + negatives)[:limit]


def _apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    known = set(type(config.training).model_fields)
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise TypeError(f"unknown training override(s): {', '.join(unknown)}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    training = type(config.training).model_validate({**config.training.model_dump(), **clean})
    return config.model_copy(update={"segmentation": training})


def train_segmentation(
    config: Config,
    output_root: Path,
    oring_type: str,
    *,
    resume: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train (or resume) the Mask R-CNN of o-ring type ``model`` on its preprocess output.

    ``overrides`` replace fields of ``config.training`` (epochs, batch_size, lr, backbone, device,
    max_minutes, num_workers, ...). Returns a summary: epochs run, best epoch and metric, paths.
    """
    if config.segmentation.stage != "maskrcnn":  # a second stage (segmentation/stages.py)
        from oringscan.segmentation.dense_engine import train_dense_stage

        return train_dense_stage(
            config, output_root, oring_type, resume=resume, progress=progress, echo=echo, **overrides
        )
    config.oring_type(oring_type)
    say = echo or (lambda line: tqdm.write(line))
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    type_dir = workspace.root
    latest_path, best_path = workspace.latest_checkpoint, workspace.best_checkpoint
    class_names = list(config.classes.names)

    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(latest_path, expected_type=oring_type)
        if list(state["class_names"]) != class_names:
            raise ModelFileError(
                latest_path, f"checkpoint classes {state['class_names']} differ from config {class_names}"
            )
        saved = Config.model_validate(state["config"])
        base = _apply_overrides(
            config, {**saved.training.model_dump(), "backbone": state["spec"]["backbone"]}
        )
        config = _apply_overrides(base, overrides)
    else:
        config = _apply_overrides(config, overrides)
    device = resolve_device(config.training.device)
    recipe = {} if state is not None else cpu_recipe_overrides(config.training, device)
    if recipe:
        config = _apply_overrides(config, recipe)
    cfg = config.training
    use_amp = cfg.amp and device.type == "cuda"
    seed_everything(cfg.seed)

    train_records = workspace.read_split("train", class_names)
    val_records = workspace.read_split("val", class_names) if workspace.has_split("val") else []
    train_ds = _train_dataset(train_records, cfg)
    if not train_ds.positives:
        raise TrainingError(f"{workspace.annotations('train')}: no labelled defect tiles to train on")
    val_eval = _val_subset(val_records, cfg.val_max_tiles)
    if not any(r.is_defect for r in val_eval):
        log.warning(
            "%s: no labelled defects in the validation split; best_model.pth follows the latest epoch",
            workspace.annotations("val"),
        )
    tile_size = max(r.width for r in train_records)

    requested_backbone = cfg.backbone
    if state is not None:
        spec = ModelSpec.from_dict(state["spec"])
        uses_anomaly, scale = spec.anomaly_channel, spec.anomaly_scale
    else:
        backbone_name = resolve_backbone(cfg.backbone, device)
        uses_anomaly = resolve_anomaly_channel(cfg.anomaly_channel, backbone_name, cfg.backbone)
        scale = None
    if uses_anomaly:
        screening = load_type_screening(Path(output_root), oring_type)
        scale = scale if scale is not None else anomaly_scale(screening)
        computed = sum(
            attach_anomaly_maps(records, screening, type_dir / ANOMALY_CACHE_DIR, scale, split, progress)
            for split, records in (("train", train_records), ("val", val_records))
        )
        if computed:
            say(f"screening anomaly maps of {computed} tiles cached in {type_dir / ANOMALY_CACHE_DIR}")
    if state is not None:
        net = build_model(spec)
        net.load_state_dict(state["model"])
        pretrained = str(state.get("pretrained", "unknown"))
    else:
        net, spec, pretrained = create_model(
            cfg, len(class_names) + 1, tile_size, device=device, anomaly_scale=scale
        )
    net.to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best_metric, best_epoch, bad_epochs, history = 0, -1.0, -1, 0, []
    run_name = f"{spec.backbone}_{datetime.now(UTC):%Y%m%d-%H%M%S}"
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if use_amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        best_metric = float(state.get("best_metric", -1.0))
        best_epoch = int(state.get("best_epoch", -1))
        bad_epochs = int(state.get("bad_epochs", 0))
        run_name = str(state.get("run_name", run_name))
        history_path = workspace.training_history
        if history_path.is_file():
            history = [
                h
                for h in json.loads(history_path.read_text(encoding="utf-8")).get("epochs", [])
                if h["epoch"] < start_epoch
            ]
        if bad_epochs >= cfg.patience:
            say(f"resume: early stopping had already ended this run at epoch {start_epoch}")
        ignored = [k for k in ("lr", "momentum", "weight_decay") if overrides.get(k) is not None]
        if ignored:
            say(f"resume: {', '.join(ignored)} ignored, the optimizer continues with its saved state")

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(workspace.tensorboard_dir / run_name))
    summary: dict[str, Any] = {
        "model": oring_type,
        "backbone": spec.backbone,
        "backbone_requested": requested_backbone,
        "anomaly_channel": spec.anomaly_channel,
        "cpu_recipe": recipe,
        "pretrained": pretrained,
        "device": str(device),
        "amp": use_amp,
        "train_tiles": len(train_ds.positives) + len(train_ds.negatives),
        "train_defect_tiles": len(train_ds.positives),
        "val_tiles": len(val_eval),
        "checkpoint": str(best_path),
        "latest": str(latest_path),
        "tensorboard": str(workspace.tensorboard_dir),
    }
    say(
        f"training {oring_type}: {spec.backbone}{' (auto)' if requested_backbone == 'auto' else ''}"
        f"{' + screening anomaly channel' if spec.anomaly_channel else ''} ({pretrained}), "
        f"{summary['train_defect_tiles']} defect + "
        f"{len(train_ds.negatives)} good train tiles (negative ratio {cfg.negative_ratio}), {len(val_eval)} val tiles, "
        f"device {device}{' with AMP' if use_amp else ''}, input {spec.input_size}px"
    )
    clock = budget_clock(cfg.budget_clock)
    deadline = None if cfg.max_minutes is None else clock() + 60.0 * cfg.max_minutes
    schedule = (
        BudgetSchedule(clock, clock(), 60.0 * cfg.max_minutes, list(cfg.lr_budget_steps), cfg.lr_gamma)
        if cfg.lr_schedule == "budget" and cfg.max_minutes is not None
        else None
    )
    stopped = "epochs"
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs >= cfg.patience:
                stopped = "early-stopping"
                break
            seed_everything(cfg.seed + epoch)
            train_ds.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                train_ds,
                batch_size=cfg.batch_size,
                shuffle=True,
                collate_fn=collate,
                num_workers=cfg.num_workers,
                generator=torch.Generator().manual_seed(cfg.seed + epoch),
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            started = time.monotonic()
            with _train_input_size(net, cfg.train_crop, tile_size):
                losses, cut_short = _train_one_epoch(
                    net,
                    optimizer,
                    loader,
                    device,
                    epoch,
                    cfg,
                    scaler,
                    use_amp,
                    writer,
                    deadline,
                    progress,
                    schedule,
                )
            lr_now = optimizer.param_groups[0]["lr"]
            if schedule is None:
                lr_scheduler.step()
            # Compact per-tile predictions (RLE masks, <= 100 per tile), encoded batch by batch.
            val_outputs = (
                predict_records(net, val_eval, device, cfg.batch_size, mask_threshold=cfg.mask_threshold)
                if val_eval
                else {}
            )
            metrics = (
                coco_metrics(val_eval, val_outputs, class_names, cfg.mask_threshold) if val_eval else None
            )
            segm_ap = None if metrics is None else metrics["segm"]["AP"]
            score = -1.0 if segm_ap is None else float(segm_ap)
            improved = segm_ap is None or score > best_metric
            if improved:
                best_metric, best_epoch, bad_epochs = max(score, best_metric), epoch, 0
            else:
                bad_epochs += 1
            record = {
                "epoch": epoch,
                "lr": lr_now,
                "seconds": round(time.monotonic() - started, 2),
                "partial": cut_short,
                **{(k if k.startswith("loss_") else f"loss_{k}"): v for k, v in losses.items()},
                "val": None
                if metrics is None
                else {t: {k: metrics[t][k] for k in ("AP", "AP50", "AP75")} for t in metrics},
            }
            history.append(record)
            _log_epoch(writer, val_eval, val_outputs, cfg, class_names, record, epoch)
            del val_outputs
            payload = {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "scaler": scaler.state_dict() if use_amp else {},
                "epoch": epoch,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "spec": spec.to_dict(),
                "backbone": spec.backbone,
                "backbone_requested": requested_backbone,
                "class_names": class_names,
                "oring_type": oring_type,
                "config": config.model_dump(mode="json"),
                "pretrained": pretrained,
                "run_name": run_name,
                "metrics": {}
                if metrics is None
                else {t: {k: metrics[t][k] for k in ("AP", "AP50", "AP75")} for t in metrics},
                "created": utc_iso(),
                "oringscan_version": oringscan_version,
            }
            save_checkpoint(latest_path, payload)
            if improved:
                save_checkpoint(best_path, payload)
            _write_history(workspace.training_history, oring_type, spec, history, best_epoch, best_metric)
            val_text = (
                "val: no labelled defects"
                if metrics is None
                else (
                    f"val segm AP {metrics['segm']['AP']:.3f} AP50 {metrics['segm']['AP50']:.3f} | "
                    f"bbox AP50 {metrics['bbox']['AP50']:.3f}"
                )
            )
            say(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {losses.get('total', float('nan')):.3f} "
                f"(mask {losses.get('loss_mask', float('nan')):.3f})  lr {lr_now:.5f}  {val_text}  "
                f"best {max(best_metric, 0):.3f}@{best_epoch + 1}  {record['seconds']:.0f}s"
                + ("  [time budget reached]" if cut_short else "")
            )
            if cut_short or (deadline is not None and clock() > deadline):
                stopped = "max-minutes"
                break
    finally:
        writer.close()
    if stopped == "epochs" and bad_epochs >= cfg.patience:
        stopped = "early-stopping"
    summary.update(
        {
            "epochs_run": len(history),
            "last_epoch": epoch,
            "best_epoch": best_epoch,
            "best_segm_AP": best_metric if best_metric >= 0 else None,
            "stopped": stopped,
            "history": str(workspace.training_history),
            "final_val": history[-1]["val"] if history else None,
        }
    )
    if best_path.is_file():  # the score a defect needs on val, and whether this model may call one at all
        from oringscan.segmentation.calibration import calibrate_segmentation

        calibration = calibrate_segmentation(
            config, output_root, oring_type, best_path, device=str(device), progress=progress
        )
        summary["calibration"] = calibration.to_json()
        say(calibration.summary)
    return summary


def _train_dataset(records: list[TileRecord], cfg: Any) -> TileDataset:
    """Plain tiles, or tiles with pasted defects / crops around defects when the config asks."""
    if cfg.paste_prob > 0 or cfg.train_crop is not None:
        from oringscan.segmentation.pasting import PastingTileDataset

        return PastingTileDataset(
            records,
            train_transforms(cfg),
            cfg.negative_ratio,
            cfg.seed,
            paste_prob=cfg.paste_prob,
            paste_max=cfg.paste_max,
            crop=cfg.train_crop,
        )
    return TileDataset(records, train_transforms(cfg), cfg.negative_ratio, cfg.seed)


@contextmanager
def _train_input_size(net: torch.nn.Module, crop: int | None, tile_size: int) -> Iterator[None]:
    """Crops go into the model at the scale whole tiles do at inspection (input_size / tile_size)."""
    transform = getattr(net, "transform", None)
    if crop is None or transform is None or crop >= tile_size:
        yield
        return
    saved = (transform.min_size, transform.max_size)
    side = max(32, round(crop * transform.max_size / tile_size))
    transform.min_size, transform.max_size = (side,), side
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


def _train_one_epoch(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    epoch: int,
    cfg: Any,
    scaler: torch.amp.GradScaler,
    use_amp: bool,
    writer: Any,
    deadline: float | None,
    progress: bool,
    schedule: BudgetSchedule | None = None,
) -> tuple[dict[str, float], bool]:
    """One pass over the loader; returns mean losses and whether the time budget cut it short."""
    net.train()
    warmup = None
    if epoch == 0 and cfg.warmup_iters > 0:
        iters = max(1, min(cfg.warmup_iters, len(loader) - 1))
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / 1000, total_iters=iters)
    sums: dict[str, float] = {}
    count, bad_in_a_row, cut_short = 0, 0, False
    bar = tqdm(
        loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress, leave=False
    )
    for step, (images, targets) in enumerate(bar):
        images = [img.to(device, non_blocking=True) for img in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device_type=device.type, enabled=use_amp):
            loss_dict = net(images, targets)
            loss = sum(loss_dict.values())
        loss_value = float(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        if not math.isfinite(loss_value):
            bad_in_a_row += 1
            log.warning(
                "epoch %d step %d: non-finite loss (%s), batch skipped",
                epoch + 1,
                step,
                {k: float(v) for k, v in loss_dict.items()},
            )
            if bad_in_a_row >= MAX_BAD_LOSSES:
                raise TrainingError(
                    f"training diverged: {bad_in_a_row} non-finite losses in a row at epoch {epoch + 1}; "
                    f"lower --lr (now {cfg.lr})"
                )
            continue
        bad_in_a_row = 0
        if use_amp:
            scaler.scale(loss).backward()
            if cfg.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip_norm)
            optimizer.step()
        if warmup is not None and step < warmup.total_iters:
            warmup.step()
        if schedule is not None:
            schedule.step(optimizer)
        count += 1
        for k, v in loss_dict.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["total"] = sums.get("total", 0.0) + loss_value
        global_step = epoch * len(loader) + step
        if step % 10 == 0:
            writer.add_scalar("train/loss", loss_value, global_step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.5f}")
        if deadline is not None and budget_clock(cfg.budget_clock)() > deadline:
            cut_short = True
            break
    return {k: v / max(1, count) for k, v in sums.items()}, cut_short


def _log_epoch(
    writer: Any,
    val_records: list[TileRecord],
    val_outputs: dict[int, TilePrediction],
    cfg: Any,
    class_names: list[str],
    record: dict[str, Any],
    epoch: int,
) -> None:
    """Every loss term, lr and val AP, plus a grid picture of validation predictions."""
    for key, value in record.items():
        if key.startswith("loss_"):
            writer.add_scalar(f"epoch/{key}", value, epoch)
    writer.add_scalar("epoch/lr", record["lr"], epoch)
    for iou_type, values in (record["val"] or {}).items():
        for name, value in values.items():
            if value is not None:
                writer.add_scalar(f"val/{iou_type}_{name}", value, epoch)
    shown = [r for r in val_records if r.is_defect][:6] or val_records[:6]
    if not shown:
        return
    outputs = val_outputs
    pictures = []
    for r in shown:
        gray = read_gray(r.path)
        truth = [Instance("truth", 1.0, m.astype(bool), (0, 0)) for m in r.masks()]
        found = outputs[r.image_id].instances(class_names, (0, 0), cfg.score_threshold)
        pictures.append(overlay(gray, found, class_names, truth=truth)[:, :, ::-1])
    writer.add_image(
        "val/predictions", np.ascontiguousarray(grid(pictures, columns=3)), epoch, dataformats="HWC"
    )
    writer.flush()


def _write_history(
    path: Path, oring_type: str, spec: ModelSpec, history: list[dict[str, Any]], best_epoch: int, best: float
) -> None:
    data = {
        "model": oring_type,
        "backbone": spec.backbone,
        "best_epoch": best_epoch,
        "best_segm_AP": best if best >= 0 else None,
        "epochs": history,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)
