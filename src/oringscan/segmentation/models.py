"""Mask R-CNN builders: the seed's ResNet50-FPN (v1 and v2) and light backbones for CPU.

``backbone = "auto"`` (the default) resolves to the seed's ResNet50-FPN on CUDA and to the CPU
recipe otherwise: ``lite0_fpn``, an ImageNet EfficientNet-Lite0 whose weights install with pip
(see :mod:`oringscan.segmentation.backbones`), optionally guided by the screening anomaly map.

Pretrained weights are never downloaded. They come from ``training.weights`` (an explicit file) or
from the usual torch hub cache when the file is already there; otherwise the model starts from
random init with one warning. ``training.init_from`` then starts from a whole trained model (the
synthetic starting model shipped with oringscan, what ``auto`` on CPU uses: segmentation/pretrain.py).
Which source was used goes into the checkpoint, together with the normalisation layer type, so
inference rebuilds exactly the same module tree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    mobilenet_backbone,
    resnet_fpn_backbone,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, RPNHead, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from oringscan.config import TrainingConfig
from oringscan.errors import ModelFileError

log = logging.getLogger(__name__)

BACKBONES = ("resnet50_fpn", "resnet50_fpn_v2", "resnet18_fpn", "mobilenet_v3_fpn", "lite0_fpn")
LIGHT_BACKBONES = ("resnet18_fpn", "mobilenet_v3_fpn", "lite0_fpn")
# What ``backbone = "auto"`` picks (chosen from benchmarks/bench_segmentation_routes.py).
GPU_BACKBONE = "resnet50_fpn"
CPU_BACKBONE = "lite0_fpn"
# Off: at 3 CPU-minutes the anomaly channel (random-init FPN laterals) did not beat plain Lite0
# (test tile segm AP50 0.11 vs 0.14, recall 0.23 vs 0.50); it stays available per config.
CPU_ANOMALY_CHANNEL = False
# Seed defaults that do not fit a CPU: ``auto`` on CPU replaces those still at their default value.
# Chosen from benchmarks/bench_segmentation_routes.py (1 thread, CPU-minutes; README "Segmentation"):
# ImageNet Lite0 with its last 3 stages training at lr 0.01 on whole tiles is the one route that
# qualifies to call defects at 5, 10 and 25 minutes (val AP50 0.33 / 0.79 / 0.82; unseen defect
# frames `defect` on the truth 3/8, 7/8, 8/8; good frames `defect` 0/8 each); FAST_CPU_RECIPE, the
# default before, qualified only at 25 (0.82, 8/8) and in none of five 5- and 10-minute runs.
# On the second renderer's frames (--renderer plantlike) the choice holds: at 10 CPU-minutes test
# AP50 0.851 and 9/10 defect frames `defect` on the truth, against 0.717 and 5/10 for FAST_CPU_RECIPE.
# Since 2026-11-30 (second session) it starts from the synthetic starting model shipped with
# oringscan (segmentation/pretrain.py) instead of ImageNet alone: on the second renderer's frames,
# after 5 CPU-minutes, test AP50 0.954 and 9/10 defect frames on the truth against 0.763 and 7/10
# (0/20 good frames `defect` either way).
CPU_RECIPE: dict[str, Any] = {
    "input_size": 448,
    "batch_size": 2,
    "warmup_iters": 10,
    "lr": 0.01,
    "init_from": "synthetic",
}
# ``training.init_from`` value that keeps ImageNet alone where a recipe would start from a file.
NO_INIT = "none"
# Frozen ImageNet backbone (only the FPN and heads train, at lr 0.02), labelled defects copy-pasted
# onto half the train tiles, 448 px crops around a defect: 1.5x the iterations per CPU-second of
# CPU_RECIPE. The demo fine-tunes the synthetic start with it at lr 0.002 (from ImageNet, its former
# 7-epoch schedule measured val AP50 0.18-0.22 against 0.06 for CPU_RECIPE); route
# ``frozen_paste_crop`` of the benchmark.
FAST_CPU_RECIPE: dict[str, Any] = {
    "input_size": 448,
    "batch_size": 2,
    "warmup_iters": 10,
    "lr": 0.02,
    "trainable_backbone_layers": 0,
    "paste_prob": 0.5,
    "train_crop": 448,
}
# The light ResNet18's FPN is 128 channels wide (torchvision's 256 quadruples the cost of the
# stride-4 level, the one that sees pits of a few pixels).
LIGHT_FPN_CHANNELS = 128

# File names torchvision's hub cache uses (``<torch hub dir>/checkpoints/<name>``); detector
# (COCO) weights are preferred over ImageNet backbone weights.
_CACHE_FILES: dict[str, list[tuple[str, str]]] = {
    "resnet50_fpn": [
        ("coco", "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"),
        ("imagenet", "resnet50-0676ba61.pth"),
    ],
    "resnet50_fpn_v2": [
        ("coco", "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"),
        ("imagenet", "resnet50-11ad3fa6.pth"),
    ],
    "resnet18_fpn": [("imagenet", "resnet18-f37072fd.pth")],
    "mobilenet_v3_fpn": [("imagenet", "mobilenet_v3_large-8738ca79.pth")],
}

_warned_random_init = False


@dataclass(slots=True)
class ModelSpec:
    """Everything needed to rebuild the same module tree (stored in every checkpoint)."""

    backbone: str
    num_classes: int  # including background
    input_size: int
    anchor_sizes: list[int] | None
    frozen_bn: bool
    trainable_backbone_layers: int
    # A 4th input channel: the screening anomaly map divided by anomaly_scale, clipped to [0, 1].
    anomaly_channel: bool = False
    anomaly_scale: float | None = None

    @property
    def in_channels(self) -> int:
        return 4 if self.anomaly_channel else 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "anchor_sizes": None if self.anchor_sizes is None else list(self.anchor_sizes),
            "frozen_bn": self.frozen_bn,
            "trainable_backbone_layers": self.trainable_backbone_layers,
            "anomaly_channel": self.anomaly_channel,
            "anomaly_scale": self.anomaly_scale,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            backbone=str(data["backbone"]),
            num_classes=int(data["num_classes"]),
            input_size=int(data["input_size"]),
            anchor_sizes=None if data.get("anchor_sizes") is None else [int(a) for a in data["anchor_sizes"]],
            frozen_bn=bool(data["frozen_bn"]),
            trainable_backbone_layers=int(data["trainable_backbone_layers"]),
            anomaly_channel=bool(data.get("anomaly_channel", False)),
            anomaly_scale=None if data.get("anomaly_scale") is None else float(data["anomaly_scale"]),
        )


def resolve_backbone(name: str, device: torch.device | str) -> str:
    """``auto``: the seed's ResNet50-FPN where CUDA trains it, the CPU recipe otherwise."""
    if name != "auto":
        return name
    return GPU_BACKBONE if torch.device(device).type == "cuda" else CPU_BACKBONE


def cpu_recipe_overrides(training: TrainingConfig, device: torch.device | str) -> dict[str, Any]:
    """The CPU recipe's training settings when ``auto`` picks it, for fields left at the seed default."""
    if training.backbone != "auto" or resolve_backbone("auto", device) != CPU_BACKBONE:
        return {}
    defaults = type(training)()
    recipe = {k: v for k, v in CPU_RECIPE.items() if getattr(training, k) == getattr(defaults, k)}
    if training.anomaly_channel or training.anchor_sizes is not None:
        # The shipped starting model is plain Lite0-FPN with the default anchors: another
        # architecture starts from ImageNet (an explicit init_from is still checked, and refused).
        recipe.pop("init_from", None)
    return recipe


def resolve_anomaly_channel(setting: bool | None, backbone: str, requested_backbone: str) -> bool:
    """None follows the recipe (CPU_ANOMALY_CHANNEL for the auto-picked CPU backbone), off otherwise."""
    if setting is not None:
        if setting and backbone != "lite0_fpn":
            raise ValueError(f"training.anomaly_channel needs backbone lite0_fpn (got {backbone})")
        return setting
    return CPU_ANOMALY_CHANNEL and requested_backbone == "auto" and backbone == CPU_BACKBONE


def default_input_size(backbone: str, tile_size: int) -> int:
    """torchvision's 800 for the seed's ResNet50 models; the tile's own size for light backbones."""
    return tile_size if backbone in LIGHT_BACKBONES else 800


def default_anchor_sizes(backbone: str) -> list[int] | None:
    """Light backbones get smaller anchors (pits are a few pixels); ResNet50 keeps torchvision's."""
    if backbone == "lite0_fpn":
        return [8, 16, 32, 64, 128]  # levels at strides 4..64
    return [16, 32, 64, 128, 256] if backbone == "resnet18_fpn" else None


def find_pretrained(backbone: str, weights: Path | None) -> tuple[str, Path] | None:
    """(kind, path) of usable local weights, or None. Never downloads."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ModelFileError(path, "training.weights file not found")
        return "file", path
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    for kind, name in _CACHE_FILES.get(backbone, []):
        candidate = hub_dir / name
        if candidate.is_file():
            return kind, candidate
    return None


def _anchor_generator(sizes: list[int], levels: int) -> AnchorGenerator:
    if len(sizes) != levels:
        raise ValueError(f"training.anchor_sizes needs {levels} sizes for this backbone, got {len(sizes)}")
    return AnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=((0.5, 1.0, 2.0),) * levels)


def build_model(spec: ModelSpec) -> MaskRCNN:
    """A fresh (untrained) Mask R-CNN with the spec's module tree."""
    common: dict[str, Any] = {"min_size": spec.input_size, "max_size": spec.input_size}
    norm = FrozenBatchNorm2d if spec.frozen_bn else nn.BatchNorm2d
    layers = spec.trainable_backbone_layers
    if spec.anchor_sizes is not None and spec.backbone != "mobilenet_v3_fpn":
        common["rpn_anchor_generator"] = _anchor_generator(spec.anchor_sizes, 5)
    if spec.backbone == "resnet50_fpn_v2":
        model = maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=spec.num_classes, **common
        )
        _freeze_resnet(model.backbone.body, layers)
        return model
    if spec.backbone == "resnet50_fpn":
        backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=norm, trainable_layers=layers
        )
        return MaskRCNN(backbone, num_classes=spec.num_classes, **common)
    if spec.anomaly_channel and spec.backbone != "lite0_fpn":
        raise ValueError(f"the anomaly channel needs backbone lite0_fpn (got {spec.backbone})")
    if spec.backbone == "lite0_fpn":
        from oringscan.segmentation.backbones import LITE0_FPN_CHANNELS, LITE0_MEAN, LITE0_STD, Lite0FPN

        lite = Lite0FPN(LITE0_FPN_CHANNELS, spec.anomaly_channel, layers, spec.frozen_bn)
        mean, std = list(LITE0_MEAN), list(LITE0_STD)
        if spec.anomaly_channel:  # the map is already in [0, 1]: passed through unchanged
            mean, std = [*mean, 0.0], [*std, 1.0]
        return MaskRCNN(
            lite,
            **_light_heads(LITE0_FPN_CHANNELS, spec.num_classes),
            image_mean=mean,
            image_std=std,
            **common,
        )
    if spec.backbone == "resnet18_fpn":
        body = resnet18(norm_layer=norm)
        _freeze_resnet(body, layers)
        backbone = BackboneWithFPN(
            body,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=[64, 128, 256, 512],
            out_channels=LIGHT_FPN_CHANNELS,
            extra_blocks=LastLevelMaxPool(),
        )
        return MaskRCNN(backbone, **_light_heads(LIGHT_FPN_CHANNELS, spec.num_classes), **common)
    if spec.backbone == "mobilenet_v3_fpn":
        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large",
            weights=None,
            fpn=True,
            norm_layer=norm,
            trainable_layers=6 if layers >= 5 else layers,
        )
        sizes = spec.anchor_sizes or [32, 64, 128]
        names = ["0", "1"]
        anchors = _anchor_generator(sizes[:3] if len(sizes) > 3 else sizes, 3)
        return MaskRCNN(
            backbone,
            rpn_anchor_generator=anchors,
            **_light_heads(backbone.out_channels, spec.num_classes),
            box_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=7, sampling_ratio=2),
            mask_roi_pool=MultiScaleRoIAlign(featmap_names=names, output_size=14, sampling_ratio=2),
            **common,
        )
    raise ValueError(f"unknown backbone {spec.backbone!r}; choose one of {', '.join(BACKBONES)}")


def _light_heads(channels: int, num_classes: int) -> dict[str, Any]:
    """Cheap heads for CPU models that train from scratch.

    The mask head gets BatchNorm (plain heads let the mask loss explode in the first iterations
    without pretrained features) and 128 channels; fewer sampled RoIs and proposals, since a tile
    holds a handful of defects, keep a CPU iteration short.
    """
    return {
        "num_classes": None,
        "rpn_head": RPNHead(channels, 3),
        "box_head": TwoMLPHead(channels * 7 * 7, 512),
        "box_predictor": FastRCNNPredictor(512, num_classes),
        "mask_head": MaskRCNNHeads(channels, [128, 128, 128, 128], 1, norm_layer=nn.BatchNorm2d),
        "mask_predictor": MaskRCNNPredictor(128, 128, num_classes),
        "box_batch_size_per_image": 128,
        "rpn_pre_nms_top_n_train": 1000,
        "rpn_post_nms_top_n_train": 500,
        "rpn_pre_nms_top_n_test": 500,
        "rpn_post_nms_top_n_test": 300,
    }


def _freeze_resnet(body: nn.Module, trainable_layers: int) -> None:
    """Same rule as torchvision: train the last ``trainable_layers`` stages of the ResNet."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, parameter in body.named_parameters():
        if all(not name.startswith(layer) for layer in train):
            parameter.requires_grad_(False)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a bad file
        raise ModelFileError(path, f"cannot be read as torch weights ({type(exc).__name__}: {exc})") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict):
        raise ModelFileError(path, "does not hold a state dict")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


def load_pretrained(model: MaskRCNN, path: Path) -> int:
    """Copy every tensor whose name (full, or backbone-relative) and shape match; returns the count.

    Detector weights load whole except the class-specific heads; ImageNet weights land in the
    backbone body (the classifier is ignored).
    """
    state = _load_state(path)
    target = model.state_dict()
    prefixes = ["", "backbone.body.", "backbone.body.features."]
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in prefixes:
            name = prefix + key
            if key.startswith("features.") and prefix == "backbone.body.":
                name = prefix + key[len("features.") :]
            if name in target and target[name].shape == value.shape:
                matched[name] = value
                break
    if not matched:
        raise ModelFileError(path, "no tensor in this file fits the model (wrong backbone?)")
    model.load_state_dict(matched, strict=False)
    return len(matched)


def init_mask_logits(model: nn.Module) -> None:
    """Start the per-class mask logits near zero, so the mask BCE starts at ln 2 (~0.69).

    torchvision initialises this 1x1 conv with Kaiming (fan_out, relu): with 2-3 classes fan_out
    is 2-3, so each weight has std ~0.8-1 over 256 input channels and the first logits are in the
    tens; a random-init ResNet50 model then starts with a mask loss of ~20 (the 8.6 first-epoch
    mean of issue 17). Detectron2 initialises the same layer with std 0.001; so do we, for fresh
    models only (checkpoints and pretrained files overwrite it).
    """
    predictor = getattr(getattr(model, "roi_heads", None), "mask_predictor", None)
    logits = getattr(predictor, "mask_fcn_logits", None)
    if isinstance(logits, nn.Conv2d):
        nn.init.normal_(logits.weight, std=0.001)
        if logits.bias is not None:
            nn.init.zeros_(logits.bias)


def create_model(
    training: TrainingConfig,
    num_classes: int,
    tile_size: int,
    backbone: str | None = None,
    device: torch.device | str = "cpu",
    anomaly_scale: float | None = None,
) -> tuple[MaskRCNN, ModelSpec, str]:
    """A model ready to train, its spec, and where its starting weights came from.

    ``device`` resolves ``backbone = "auto"``; ``anomaly_scale`` (the screening map value that
    becomes 1.0) is required when the recipe uses the anomaly channel. ``training.init_from`` then
    overwrites the weights with those of a starting model (segmentation/pretrain.py).
    """
    model, spec, label = _create_fresh(training, num_classes, tile_size, backbone, device, anomaly_scale)
    if training.init_from and training.init_from.lower() != NO_INIT:
        from oringscan.segmentation.pretrain import load_init

        label = f"{label} + {load_init(model, spec.to_dict(), training.init_from)}"
    return model, spec, label


def _create_fresh(
    training: TrainingConfig,
    num_classes: int,
    tile_size: int,
    backbone: str | None,
    device: torch.device | str,
    anomaly_scale: float | None,
) -> tuple[MaskRCNN, ModelSpec, str]:
    global _warned_random_init
    requested = backbone or training.backbone
    backbone = resolve_backbone(requested, device)
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    anomaly = resolve_anomaly_channel(training.anomaly_channel, backbone, requested)
    if anomaly and anomaly_scale is None:
        raise ValueError("the anomaly channel needs anomaly_scale (the fitted screening threshold)")
    if backbone == "lite0_fpn":
        return _create_lite0(training, num_classes, tile_size, anomaly, anomaly_scale)
    found = find_pretrained(backbone, training.weights)
    spec = ModelSpec(
        backbone=backbone,
        num_classes=num_classes,
        input_size=training.input_size or default_input_size(backbone, tile_size),
        anchor_sizes=training.anchor_sizes
        if training.anchor_sizes is not None
        else default_anchor_sizes(backbone),
        frozen_bn=found is not None and backbone != "resnet50_fpn_v2",
        trainable_backbone_layers=training.trainable_backbone_layers if found is not None else 5,
    )
    model = build_model(spec)
    init_mask_logits(model)
    if found is None:
        if not _warned_random_init:
            log.warning(
                "no pretrained weights for %s in the torch cache (%s) and training.weights is not set: "
                "starting from random init (expect slower learning)",
                backbone,
                Path(torch.hub.get_dir()) / "checkpoints",
            )
            _warned_random_init = True
        return model, spec, "random-init"
    kind, path = found
    count = load_pretrained(model, path)
    log.info("loaded %d pretrained tensors (%s) from %s", count, kind, path)
    return model, spec, f"{kind}:{path}"


def _create_lite0(
    training: TrainingConfig, num_classes: int, tile_size: int, anomaly: bool, anomaly_scale: float | None
) -> tuple[MaskRCNN, ModelSpec, str]:
    """Lite0-FPN with the ImageNet weights of the installed package (or ``training.weights``)."""
    from oringscan.segmentation.backbones import load_lite0_imagenet

    state, source = load_lite0_imagenet(training.weights)
    spec = ModelSpec(
        backbone="lite0_fpn",
        num_classes=num_classes,
        input_size=training.input_size or default_input_size("lite0_fpn", tile_size),
        anchor_sizes=training.anchor_sizes
        if training.anchor_sizes is not None
        else default_anchor_sizes("lite0_fpn"),
        frozen_bn=True,
        trainable_backbone_layers=training.trainable_backbone_layers,
        anomaly_channel=anomaly,
        anomaly_scale=anomaly_scale if anomaly else None,
    )
    model = build_model(spec)
    init_mask_logits(model)
    count = model.backbone.load_imagenet(state)
    log.info(
        "loaded %d ImageNet tensors from %s %s (sha256 %s)",
        count,
        source["package"] or source["file"],
        source["version"] or "",
        source["sha256"][:12],
    )
    label = f"imagenet:{source['package'] or source['file']}=={source['version']} sha256:{source['sha256']}"
    return model, spec, label
