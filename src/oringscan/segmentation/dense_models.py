"""The second stages' networks: a per-pixel semantic segmenter and a good/defect tile classifier.

Both take a batch of 3-channel tiles in [0, 1] and return logits (``(B, K+1, H, W)`` per pixel,
class 0 the background; ``(B, 2)`` per tile), normalising inside the module so training, inference
and export feed the same thing. A :class:`DenseSpec` stored in the checkpoint rebuilds the same
module tree. Starting weights are never downloaded: EfficientNet-Lite0 comes from its pip package
(:mod:`oringscan.segmentation.backbones`), torchvision's ImageNet backbones only from files already in
the torch hub cache; otherwise random init with one warning (the checkpoint records which).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SEMANTIC_MODELS = (
    "lite0_fpn",
    "lraspp_mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3_resnet50",
)
CLASSIFIER_MODELS = ("lite0", "mobilenet_v3_small", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet backbone files in torchvision's hub cache (``<torch hub dir>/checkpoints/<name>``).
_BACKBONE_FILES = {
    "lraspp_mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
    "deeplabv3_resnet50": "resnet50-0676ba61.pth",
    "mobilenet_v3_small": "mobilenet_v3_small-047dcff4.pth",
    "resnet18": "resnet18-f37072fd.pth",
}
SEMANTIC_HEAD_CHANNELS = 64


@dataclass(slots=True)
class DenseSpec:
    """What rebuilds a second stage's module tree (stored in its checkpoint)."""

    stage: str  # "semantic" or "classifier"
    arch: str
    num_outputs: int  # semantic: classes + background; classifier: 2 (good, defect)
    input_size: int  # tiles are resized to input_size x input_size
    trainable_stages: int = 5  # Lite0 encoder stages that train (frozen BN either way)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenseSpec:
        return cls(
            stage=str(data["stage"]),
            arch=str(data["arch"]),
            num_outputs=int(data["num_outputs"]),
            input_size=int(data["input_size"]),
            trainable_stages=int(data.get("trainable_stages", 5)),
        )


class Normalized(nn.Module):
    """Normalises [0, 1] input for the wrapped network and returns a plain logits tensor."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net((x - self.mean) / self.std)
        return out["out"] if isinstance(out, dict) else out


class Lite0Semantic(nn.Module):
    """EfficientNet-Lite0 features + FPN, a semantic-FPN head: every level (strides 4-32) through a
    3x3 conv, summed at stride 4, a 1x1 classifier, upsampled to the input (pits are a few px)."""

    def __init__(self, num_classes: int, trainable_stages: int = 5) -> None:
        super().__init__()
        from oringscan.segmentation.backbones import LITE0_FPN_CHANNELS, Lite0FPN

        self.backbone = Lite0FPN(LITE0_FPN_CHANNELS, False, trainable_stages, frozen_bn=True)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(LITE0_FPN_CHANNELS, SEMANTIC_HEAD_CHANNELS, 3, padding=1, bias=False),
                nn.GroupNorm(8, SEMANTIC_HEAD_CHANNELS),
                nn.ReLU(inplace=True),
            )
            for _ in range(4)
        )
        self.classifier = nn.Conv2d(SEMANTIC_HEAD_CHANNELS, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        size = feats["0"].shape[-2:]
        summed = torch.zeros((), device=x.device)
        for i, head in enumerate(self.heads):
            level = head(feats[str(i)])
            summed = summed + (
                level if i == 0 else F.interpolate(level, size=size, mode="bilinear", align_corners=False)
            )
        return F.interpolate(self.classifier(summed), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _hub_file(arch: str) -> Path | None:
    name = _BACKBONE_FILES.get(arch)
    if name is None:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def build_dense_model(spec: DenseSpec) -> nn.Module:
    """The module tree of ``spec`` with random weights (a checkpoint or :func:`create_dense_model` fills it)."""
    import torchvision.models as tvm
    import torchvision.models.segmentation as tvs

    if spec.stage == "semantic":
        if spec.arch == "lite0_fpn":
            from oringscan.segmentation.backbones import LITE0_MEAN, LITE0_STD

            return Normalized(Lite0Semantic(spec.num_outputs, spec.trainable_stages), LITE0_MEAN, LITE0_STD)
        if spec.arch in SEMANTIC_MODELS:
            builder = getattr(tvs, spec.arch)
            net = builder(weights=None, weights_backbone=None, num_classes=spec.num_outputs, aux_loss=False)
            return Normalized(net, IMAGENET_MEAN, IMAGENET_STD)
    elif spec.stage == "classifier":
        if spec.arch == "lite0":
            from oringscan.segmentation.backbones import LITE0_MEAN, LITE0_STD, lite0_classifier

            model: Any = lite0_classifier()
            model.reset_classifier(spec.num_outputs)
            return Normalized(model, LITE0_MEAN, LITE0_STD)
        if spec.arch in CLASSIFIER_MODELS:
            return Normalized(
                getattr(tvm, spec.arch)(num_classes=spec.num_outputs), IMAGENET_MEAN, IMAGENET_STD
            )
    raise ValueError(f"unknown {spec.stage} model {spec.arch!r}")


def create_dense_model(spec: DenseSpec) -> tuple[nn.Module, str]:
    """A model ready to train and where its starting weights came from (never a download)."""
    model = build_dense_model(spec)
    net: Any = model.net if isinstance(model, Normalized) else model
    if spec.arch in ("lite0_fpn", "lite0"):
        from oringscan.segmentation.backbones import load_lite0_imagenet

        state, source = load_lite0_imagenet()
        if spec.arch == "lite0_fpn":
            net.backbone.load_imagenet(state)
        else:
            own = net.state_dict()
            net.load_state_dict(
                {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}, False
            )
        return model, f"imagenet ({source['package']} {source['version']})"
    path = _hub_file(spec.arch)
    if path is None:
        log.warning(
            "%s %s: no ImageNet weights in the torch hub cache (%s); starting from random init, "
            "which needs far more data and time",
            spec.stage,
            spec.arch,
            Path(torch.hub.get_dir()) / "checkpoints",
        )
        return model, "random init"
    state = torch.load(path, map_location="cpu", weights_only=True)
    target = net.backbone if spec.stage == "semantic" else net
    own = target.state_dict()
    # torchvision's segmentation backbones keep the classifier's names (``features.N`` for MobileNet
    # is ``N`` inside an IntermediateLayerGetter); match by name, then by the ``features.`` strip.
    matched = {}
    for key, value in state.items():
        for name in (key, key.removeprefix("features.")):
            if name in own and own[name].shape == value.shape:
                matched[name] = value
                break
    target.load_state_dict(matched, strict=False)
    return model, f"imagenet backbone ({path.name}, {len(matched)} tensors)"
