"""Feature extractors PatchCore can stand on, and where pretrained weights come from.

Two families:

* ``resnet18`` / ``wide_resnet50_2`` / any timm CNN through anomalib's :class:`TimmFeatureExtractor`,
  with ImageNet weights taken only from local caches (torch hub, timm/HF hub cache) or an explicit
  ``screening.weights`` path; otherwise random initialisation and one warning.
* ``ringtexture``: a fixed, rotation-invariant filter bank built for light mottled rings (dark/bright
  spot strength at two scales, gradient, local contrast, context brightness, edge bending), pooled to 8 px cells.
  It needs no weights at all, which is what an air-gapped plant has; measured against random-init
  CNNs in ``benchmarks/bench_screening_accuracy.py``.

Both return ``{layer_name: (B, C, h, w)}`` like anomalib's extractors, so anomalib's
``PatchcoreModel`` uses them unchanged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oringscan.errors import ModelFileError

log = logging.getLogger(__name__)

RINGTEXTURE = "ringtexture"
RINGTEXTURE_LAYERS = ("fine", "coarse")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_warned_random_init: set[str] = set()


class RingTextureExtractor(nn.Module):
    """Rotation-invariant local statistics of a gray tile, two cell sizes (8 px and 16 px).

    Every channel is isotropic (blob strength, gradient magnitude, contrast), so a patch of ring at
    any angle looks like any other: the memory bank covers the ring with few frames, the way a polar
    unwrap would, but it works on the plain tiles the rest of the line uses.
    """

    fine_channels = 9
    coarse_channels = 4

    def __init__(self) -> None:
        super().__init__()
        # Per-channel scales set from the training data (so no channel dominates the distance).
        self.register_buffer("scale_fine", torch.ones(self.fine_channels))
        self.register_buffer("scale_coarse", torch.ones(self.coarse_channels))
        self.layers = list(RINGTEXTURE_LAYERS)
        self.out_dims = [self.fine_channels, self.coarse_channels]

    @staticmethod
    def _smooth(x: torch.Tensor, width: int, passes: int) -> torch.Tensor:
        """Repeated box filters: a near-Gaussian blur at a fraction of a convolution's cost."""
        r = width // 2
        for _ in range(passes):
            x = F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), width, 1)
        return x

    @staticmethod
    def _grad(x: torch.Tensor) -> torch.Tensor:
        gx = F.pad(x[..., :, 2:] - x[..., :, :-2], (1, 1, 0, 0), mode="replicate")
        gy = F.pad(x[..., 2:, :] - x[..., :-2, :], (0, 0, 1, 1), mode="replicate")
        return torch.sqrt(gx * gx + gy * gy + 1e-12)

    def raw_features(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        # Inputs are ImageNet-normalised 3-channel copies of a gray tile: undo it on channel 0.
        x = inputs[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        size = x.shape[-2:]
        half, quarter = F.avg_pool2d(x, 2), F.avg_pool2d(x, 4)
        g1 = self._smooth(x, 3, 1)  # sigma ~0.8 px
        g3h = self._smooth(half, 3, 3)  # sigma ~3 px, at half resolution
        g8q = self._smooth(quarter, 5, 3)  # sigma ~10 px, at quarter resolution
        dog_fine = g1 - F.interpolate(g3h, size=size, mode="bilinear", align_corners=False)
        dog_mid = g3h - F.interpolate(g8q, size=g3h.shape[-2:], mode="bilinear", align_corners=False)
        grad = self._grad(g1)
        # Smaller eigenvalue of the structure tensor: ~0 on flat ring and along a smooth edge, high
        # where an edge bends (bulges, bites, cut ends). Rotation invariant like everything here.
        gxh = F.pad(g3h[..., :, 2:] - g3h[..., :, :-2], (1, 1, 0, 0), mode="replicate")
        gyh = F.pad(g3h[..., 2:, :] - g3h[..., :-2, :], (0, 0, 1, 1), mode="replicate")
        jxx, jyy, jxy = (self._smooth(t, 3, 2) for t in (gxh * gxh, gyh * gyh, gxh * gyh))
        bend = 0.5 * ((jxx + jyy) - torch.sqrt((jxx - jyy) ** 2 + 4 * jxy * jxy + 1e-12)).clamp_min(0)
        bend = torch.sqrt(bend + 1e-12)
        cells = (size[0] // 8, size[1] // 8)

        def pool(t: torch.Tensor, stride: int, op: str, out: tuple[int, int]) -> torch.Tensor:
            k, p = stride + stride // 2, stride // 4
            y = (
                F.max_pool2d(t, k, stride, p)
                if op == "max"
                else F.avg_pool2d(t, k, stride, p, count_include_pad=False)
            )
            return (
                y if y.shape[-2:] == out else F.interpolate(y, size=out, mode="bilinear", align_corners=False)
            )

        mean1 = pool(g1, 8, "avg", cells)
        var1 = (pool(g1 * g1, 8, "avg", cells) - mean1 * mean1).clamp_min(0)
        fine = torch.cat(
            [
                pool(g8q, 2, "avg", cells),
                pool(-dog_fine, 8, "max", cells),
                pool(dog_fine, 8, "max", cells),
                pool(-dog_mid, 4, "max", cells),
                pool(dog_mid, 4, "max", cells),
                pool(grad, 8, "max", cells),
                pool(grad, 8, "avg", cells),
                torch.sqrt(var1 + 1e-12),
                pool(bend, 4, "max", cells),
            ],
            dim=1,
        )
        coarse_cells = (max(1, size[0] // 16), max(1, size[1] // 16))
        coarse = torch.cat(
            [
                pool(g8q, 4, "avg", coarse_cells),
                pool(self._grad(g8q), 4, "max", coarse_cells),
                pool(dog_mid.abs(), 8, "avg", coarse_cells),
                pool(bend, 8, "max", coarse_cells),
            ],
            dim=1,
        )
        return {"fine": fine, "coarse": coarse}

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            feats = self.raw_features(inputs)
            return {
                "fine": feats["fine"] / self.scale_fine.view(1, -1, 1, 1),
                "coarse": feats["coarse"] / self.scale_coarse.view(1, -1, 1, 1),
            }

    @torch.no_grad()
    def set_scales(self, inputs: torch.Tensor) -> None:
        """Scale each channel to unit spread on training tiles (robust to the black belt)."""
        feats = self.raw_features(inputs)
        for name, buf in (("fine", self.scale_fine), ("coarse", self.scale_coarse)):
            flat = feats[name].permute(1, 0, 2, 3).reshape(buf.numel(), -1)
            std = flat.std(dim=1)
            buf.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))


# ---------------------------------------------------------------------------------------------
# Pretrained weights: local files only.


def _cache_roots() -> tuple[list[Path], list[Path]]:
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ["HF_HUB_CACHE"]) if "HF_HUB_CACHE" in os.environ else hf_home / "hub"
    return [torch_home / "hub" / "checkpoints"], [hub]


def find_cached_weights(backbone: str) -> Path | None:
    """A locally cached ImageNet checkpoint for ``backbone`` (torchvision or timm naming), or None."""
    torch_dirs, hf_dirs = _cache_roots()
    for d in torch_dirs:
        if d.is_dir():
            hits = sorted(d.glob(f"{backbone}-*.pth")) + sorted(d.glob(f"{backbone}_*.pth"))
            if hits:
                return hits[0]
    for d in hf_dirs:
        if d.is_dir():
            for repo in sorted(d.glob(f"models--timm--{backbone}.*")):
                for name in ("model.safetensors", "pytorch_model.bin"):
                    hits = sorted(repo.glob(f"snapshots/*/{name}"))
                    if hits:
                        return hits[0]
    return None


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or torch file (``weights_only=True``: nothing executes)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding problem is a bad file
        raise ModelFileError(path, f"cannot read weights ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelFileError(path, "weights file holds no state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def build_extractor(
    backbone: str, layers: list[str], weights: Path | None, lookup: bool = True
) -> tuple[nn.Module, str | None]:
    """The feature extractor and where its weights came from (None: random init or not needed).

    ``lookup=False`` skips the weight search (a saved model brings its own extractor weights).
    """
    if backbone == RINGTEXTURE:
        return RingTextureExtractor().eval(), None
    if backbone == "lite0":  # ImageNet EfficientNet-Lite0 from its pip package (screening/extractors.py)
        from .extractors import Lite0Features

        lite = Lite0Features(list(layers), pretrained=lookup)
        return lite, lite.source
    from oringscan._deps import anomalib_import

    with anomalib_import():  # anomalib 2.7's import-time FutureWarnings (timm.models.layers, dinov2)
        from anomalib.models.components import TimmFeatureExtractor

    torch.manual_seed(0)  # random init must be the same model every time
    extractor = TimmFeatureExtractor(backbone=backbone, layers=list(layers), pre_trained=False).eval()
    if not lookup:
        return extractor, None
    path = Path(weights) if weights is not None else find_cached_weights(backbone)
    if path is None:
        if backbone not in _warned_random_init:
            _warned_random_init.add(backbone)
            log.warning(
                "no ImageNet weights for %s found locally (torch/timm caches or screening.weights): "
                "using random initialisation; screening accuracy will be lower",
                backbone,
            )
        return extractor, None
    state = load_state_file(path)
    target = extractor.feature_extractor
    wanted = target.state_dict()
    usable = {k: v for k, v in state.items() if k in wanted and v.shape == wanted[k].shape}
    missing = sorted(set(wanted) - set(usable))
    if missing:
        raise ModelFileError(
            path,
            f"not {backbone} weights: {len(missing)} of {len(wanted)} tensors missing (e.g. {missing[0]})",
        )
    target.load_state_dict(usable, strict=True)
    return extractor, str(path)
