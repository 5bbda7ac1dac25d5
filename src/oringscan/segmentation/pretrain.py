"""A starting model learnt from synthetic frames, so a plant's few labelled frames only fine-tune it.

The issue's third route ("examples without labelling"): the CPU recipe trained on frames rendered by
``oringscan.synth`` (defects of every kind, from pits of a few pixels to half a tile), then written
as an *init file*: the tensors that training changed (the ImageNet ones stay in the pip package), in
float16, with the model spec and how the file was made. ``training.init_from`` (``--init-from``)
starts a run from such a file, from any segmentation checkpoint, or from ``"synthetic"``: the file
shipped in this package (``pretrained/lite0_fpn_synthetic.pt``, made by ``oringscan pretrain
segmentation`` with the settings in its ``made_by`` field). ``plant_good`` adds the plant's own good
frames, with synthetic defects pasted onto them (the issue's "pasted onto the plant's own good tiles").

Only weights cross over: the optimizer, schedule and early stopping start fresh, and the run's own
classes decide the class-specific layers (loaded when their count matches, else left fresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from oringscan.config import Config
from oringscan.errors import ConfigError, ModelFileError

log = logging.getLogger(__name__)

INIT_FORMAT = "oringscan-segmentation-init/1"
SYNTHETIC = "synthetic"
SHIPPED_FILE = "lite0_fpn_synthetic.pt"
# Layers whose shape follows the number of classes: loaded only when the counts match.
CLASS_LAYERS = (
    "roi_heads.box_predictor.cls_score.",
    "roi_heads.box_predictor.bbox_pred.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
)
# Spec fields that must agree between the file and the model being built (the rest, e.g. the number
# of classes or trainable stages, may differ).
MATCHING_SPEC = ("backbone", "anchor_sizes", "anomaly_channel")


def shipped_init_path() -> Path:
    """The synthetic starting model installed with oringscan."""
    return Path(str(resources.files("oringscan.segmentation") / "pretrained" / SHIPPED_FILE))


def resolve_init(source: str | Path) -> Path:
    """``"synthetic"`` -> the shipped file; anything else is a path that must exist."""
    path = shipped_init_path() if str(source) == SYNTHETIC else Path(source)
    if not path.is_file():
        what = (
            "the shipped synthetic starting model is missing (reinstall oringscan)"
            if str(source) == SYNTHETIC
            else "training.init_from file not found"
        )
        raise ModelFileError(path, what)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_init(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, spec) of an init file or a training checkpoint; one clear error otherwise."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ModelFileError(path, f"cannot be read as torch weights ({type(exc).__name__}: {exc})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("model"), dict)
        or not isinstance(data.get("spec"), dict)
    ):
        raise ModelFileError(
            path, "is not an oringscan segmentation checkpoint or init file (no model and spec)"
        )
    tensors = {k: v for k, v in data["model"].items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(path, "holds no weights")
    return tensors, dict(data["spec"])


def load_init(model: nn.Module, spec: dict[str, Any], source: str | Path) -> str:
    """Copy the weights of ``source`` into ``model`` (built from ``spec``); returns a label for the record.

    The file must come from the same architecture (backbone, anchors, anomaly channel); every one
    of its tensors must fit by name and shape except the class-specific layers when the number of
    classes differs, which keep their fresh initialisation.
    """
    path = resolve_init(source)
    tensors, file_spec = read_init(path)
    for key in MATCHING_SPEC:
        if file_spec.get(key) != spec.get(key):
            raise ModelFileError(
                path,
                f"was trained with {key} {file_spec.get(key)!r}, this run builds {spec.get(key)!r}: "
                "start from a file of the same backbone",
            )
    target = model.state_dict()
    same_classes = file_spec.get("num_classes") == spec.get("num_classes")
    loaded: dict[str, torch.Tensor] = {}
    misfit: list[str] = []
    for name, value in tensors.items():
        if not same_classes and name.startswith(CLASS_LAYERS):
            continue
        if name not in target or target[name].shape != value.shape:
            misfit.append(name)
            continue
        loaded[name] = value.to(target[name].dtype)
    if misfit:
        raise ModelFileError(
            path,
            f"{len(misfit)} of its tensors do not fit this model (e.g. {misfit[0]}): another architecture",
        )
    model.load_state_dict(loaded, strict=False)
    kept = "" if same_classes else f", class layers fresh ({file_spec.get('num_classes')} classes there)"
    log.info("started from %d tensors of %s%s", len(loaded), path, kept)
    name = SYNTHETIC if str(source) == SYNTHETIC else str(path)
    return f"init:{name} sha256:{_sha256(path)}"


def export_init(
    checkpoint: Path, out_file: Path, baseline: dict[str, torch.Tensor], made_by: dict[str, Any]
) -> dict[str, Any]:
    """Write the tensors of ``checkpoint`` that differ from ``baseline`` (the fresh ImageNet model)
    as float16, with its spec and ``made_by``; returns the file's summary."""
    from oringscan.segmentation.checkpoints import load_checkpoint

    state = load_checkpoint(checkpoint)
    changed = {
        name: value.to(torch.float16) if value.is_floating_point() else value
        for name, value in state["model"].items()
        if name not in baseline or not torch.equal(baseline[name], value)
    }
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": INIT_FORMAT,
        "model": changed,
        "spec": dict(state["spec"]),
        "class_names": list(state["class_names"]),
        "pretrained": str(state.get("pretrained", "")),
        "made_by": json.dumps(made_by, sort_keys=True),
    }
    torch.save(payload, out_file)
    return {
        "file": str(out_file),
        "tensors": len(changed),
        "of": len(state["model"]),
        "megabytes": round(out_file.stat().st_size / 1e6, 1),
        "sha256": _sha256(out_file),
    }


def pretrain_synthetic(
    workdir: Path | str,
    out_file: Path | str,
    *,
    minutes: float = 30.0,
    clock: str = "wall",
    n_defect: int = 60,
    n_good: int = 20,
    seed: int = 7,
    size: tuple[int, int] | None = None,
    workers: int = 2,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    config: Config | None = None,
    oring_type: str | None = None,
    plant_data: Path | str | None = None,
    plant_good: int = 0,
) -> dict[str, Any]:
    """Render synthetic frames, train the CPU recipe on them for ``minutes``, write the init file.

    ``oring_type`` (default: the first configured) decides the rendering style. With ``plant_good``
    > 0, that many of the plant's own good frames of the type (``plant_data/images/<good folder>``,
    a seeded choice) join the good frames, and half the training tiles get synthetic defects pasted
    in (``training.paste_prob`` 0.5 unless configured): the start then also learns what the plant's
    defect-free rubber, light and background look like, without a labelled frame.

    Everything is seeded (frames, split, training); ``clock="cpu"`` counts the training process's
    CPU time instead of wall time (a shared machine then gives the same model as an idle one).
    """
    from oringscan.preprocess import preprocess_type
    from oringscan.segmentation.engine import train_segmentation
    from oringscan.segmentation.models import NO_INIT, ModelSpec
    from oringscan.synth import synthesize_dataset

    say = echo or (lambda line: log.info(line))
    out_file = Path(out_file)
    check_writable(out_file)  # before the minutes of training, not after
    workdir = Path(workdir)
    data_root, output_root = workdir / "dataset", workdir / "output"
    config = config.model_copy(deep=True) if config is not None else Config()
    size = size or (config.frame.width, config.frame.height)  # the configured frame (the plant's 2448x2048)
    config.frame.width, config.frame.height = size
    config.preprocess.workers = workers
    oring_type = oring_type or next(iter(config.types))
    config.oring_type(oring_type)  # an unknown type: one clear line before any work
    if plant_good > 0 and plant_data is None:
        raise ConfigError("pretrain: plant_good needs plant_data (the data root of the plant's frames)")
    plant_frames = (
        choose_plant_good(config, Path(plant_data), oring_type, plant_good, seed)
        if plant_good > 0 and plant_data is not None
        else []
    )
    started = time.perf_counter()
    say(f"rendering {n_defect} defect + {n_good} good synthetic frames of {oring_type} (seed {seed})")
    synthesize_dataset(
        data_root,
        config,
        types=(oring_type,),
        n_good=n_good,
        n_defect=n_defect,
        n_rework=0,
        seed=seed,
        progress=progress,
        workers=workers,
        size=size,
    )
    if plant_frames:
        say(f"adding {len(plant_frames)} of the plant's own good frames from {plant_frames[0].parent}")
        link_frames(plant_frames, data_root / "images" / config.oring_type(oring_type).good_folder)
    preprocess_type(config, data_root, output_root, oring_type, progress=progress, workers=workers)
    t = config.training
    if plant_frames and t.paste_prob == 0.0:  # off (the default): paste synthetic defects onto them
        t.paste_prob = 0.5
    t.budget_clock = clock  # type: ignore[assignment]
    t.init_from = NO_INIT  # from ImageNet, not from a starting model (the CPU recipe's default)
    # Validation picks the best epoch; 30 tiles keep it a small share of the budget (the calibration
    # at the end still predicts all of val).
    t.val_max_tiles = t.val_max_tiles or 30
    # A budgeted run long enough to settle: the lr falls at 0.7 and 0.9 of the minutes (StepLR's
    # 15 epochs would not come round in 30 CPU-minutes of ~115 iterations each).
    t.lr_schedule = "budget"
    summary = train_segmentation(
        config, output_root, oring_type, progress=progress, echo=say, max_minutes=minutes, seed=seed
    )
    saved = torch.load(summary["checkpoint"], map_location="cpu", weights_only=True)
    baseline = fresh_baseline(ModelSpec.from_dict(saved["spec"]))
    made_by = {
        "command": "oringscan pretrain segmentation",
        "minutes": minutes,
        "clock": clock,
        "n_defect": n_defect,
        "n_good": n_good,
        "seed": seed,
        "size": list(size),
        "oring_type": oring_type,
        "plant_good": len(plant_frames),
        "plant_folder": str(plant_frames[0].parent) if plant_frames else None,
        "paste_prob": t.paste_prob,
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
        "best_segm_AP": summary.get("best_segm_AP"),
        "calibration": {
            k: (summary.get("calibration") or {}).get(k)
            for k in ("qualified", "ap50", "find_ap", "threshold")
        },
        "oringscan_version": saved.get("oringscan_version"),
    }
    result = export_init(Path(summary["checkpoint"]), Path(out_file), baseline, made_by)
    result["made_by"] = made_by
    result["seconds"] = round(time.perf_counter() - started, 1)
    say(
        f"wrote {result['file']}: {result['tensors']} of {result['of']} tensors changed by training, "
        f"{result['megabytes']} MB, sha256 {result['sha256'][:12]}"
    )
    return result


def choose_plant_good(config: Config, data_root: Path, oring_type: str, count: int, seed: int) -> list[Path]:
    """``count`` good frames of ``oring_type`` under ``data_root`` (all when fewer), a seeded choice
    among the frames preprocess would take (``discover_frames``: same file types, same skips)."""
    import numpy as np

    from oringscan.preprocess.runner import discover_frames

    folder = data_root / "images" / config.oring_type(oring_type).good_folder
    if not folder.is_dir():
        raise ConfigError(f"{folder}: folder of the plant's good {oring_type} frames not found")
    jobs, _, _ = discover_frames(config, data_root, oring_type)
    frames = [job.image_path for job in jobs if job.kind == "good"]
    if not frames:
        extensions = ", ".join(sorted({e.lower() for e in config.frame.extensions}))
        raise ConfigError(f"{folder}: no good frames ({extensions}) to learn the plant's look from")
    if len(frames) <= count:
        return frames
    picked = np.random.default_rng(seed).choice(len(frames), size=count, replace=False)
    return [frames[i] for i in sorted(picked)]


def link_frames(frames: list[Path], folder: Path) -> None:
    """Symlink (copy where links are refused) ``frames`` into ``folder`` as ``plant_<name>``."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("plant_*"):  # an earlier run's choice (another --plant-good)
        stale.unlink()
    for frame in frames:
        target = folder / f"plant_{frame.name}"
        try:
            target.symlink_to(frame.resolve())
        except OSError:
            shutil.copy2(frame, target)


def check_writable(out_file: Path) -> None:
    """Refuse an init file that could not be written, before any work: one line naming it."""
    if out_file.is_dir():
        raise ModelFileError(out_file, "is a folder: --out names the init file to write")
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        probe = out_file.parent / f".{out_file.name}.writable"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ModelFileError(out_file, f"cannot be written ({exc.strerror or exc})") from None


def fresh_baseline(spec: Any) -> dict[str, torch.Tensor]:
    """The weights a fresh model of ``spec`` starts with (ImageNet where it has them): what an init
    file need not carry."""
    from oringscan.config import TrainingConfig
    from oringscan.segmentation.models import NO_INIT, create_model

    training = TrainingConfig(
        backbone=spec.backbone,
        input_size=spec.input_size,
        anchor_sizes=list(spec.anchor_sizes),
        trainable_backbone_layers=spec.trainable_backbone_layers,
        anomaly_channel=spec.anomaly_channel,
        init_from=NO_INIT,
    )
    torch.manual_seed(0)
    model, _, _ = create_model(training, spec.num_classes, spec.input_size, anomaly_scale=spec.anomaly_scale)
    return model.state_dict()
