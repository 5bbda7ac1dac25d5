"""Screening models beside PatchCore: anomalib's PaDiM, FastFlow and EfficientAD on the ring tiles.

``[screening] model = "patchcore" | "padim" | "fastflow" | "efficient_ad"`` picks one. Every model is
fitted on the same good train tiles, gets its thresholds the same way (out-of-fold worst-tile scores of
every good train+val frame, ``calibration_folds`` folds by source frame, the generalized Pareto tail of
``calibration.calibrate_good_scores``) and is saved the same way: ``memory_bank.safetensors`` holds
the model's tensors (state dict, no pickle), ``metadata.json`` the ScreeningMeta plus ``model`` and
``model_params``. Loading rebuilds the module from the metadata and loads the tensors strictly.

Backbones (all offline): ``ringtexture`` (the built-in filter bank), ``lite0`` (ImageNet
EfficientNet-Lite0 from its pip package), other timm CNNs (cached weights or random init, warned).

* PaDiM: anomalib's ``PadimModel`` (per-position Gaussian, Mahalanobis map) with our extractor.
* FastFlow: anomalib's ``FastflowModel`` flows on our extractor's stages (the extractor is frozen, so
  its features are computed once and every fold's flows train on them); the map is anomalib's
  ``-p`` in [-1, 0], shifted by +1 so scores are >= 0 like every screen's.
* EfficientAD (small): anomalib's ``EfficientAdModel``. Its teacher is normally a PDN distilled from
  WideResNet-101 on ImageNet and downloaded; that cannot happen here, so the teacher is distilled here
  from the configured backbone's features (``lite0``: ImageNet Lite0) on the plant's good tiles, and the
  ImageNet penalty batch is replaced by noise images. The map is anomalib's quantile-normalised
  ``0.5 map_st + 0.5 map_ae`` (quantiles from the training tiles), clipped at 0.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from oringscan.config import Config
from oringscan.errors import ConfigError, ModelFileError

from .backbones import IMAGENET_MEAN, IMAGENET_STD, RINGTEXTURE
from .extractors import build_features, default_layers
from .model import BANK_FILE, FORMAT_VERSION, META_FILE, ScreeningMeta, ScreeningModel, validate_meta

log = logging.getLogger(__name__)

MODELS = ("patchcore", "padim", "fastflow", "efficient_ad")
ALT_MODELS = MODELS[1:]


def default_input_size(model: str, backbone: str, tile_size: int) -> int:
    """The model's input side: the tile for the filter bank, 256 px for CNNs (EfficientAD's size)."""
    if backbone == RINGTEXTURE and model != "efficient_ad":
        return tile_size
    return 256


def default_params(model: str, backbone: str, layers: list[str], config: Config) -> dict[str, Any]:
    sc = config.screening
    if model == "padim":
        return {"n_features": sc.n_features, "seed": sc.seed}
    if model == "fastflow":
        return {
            "flow_steps": 8,
            "hidden_ratio": 1.0,
            "conv3x3_only": False,
            "train_steps": sc.train_steps,
            "lr": 1e-3,
            "seed": sc.seed,
        }
    if model == "efficient_ad":
        return {
            "distill_steps": sc.train_steps,
            "train_steps": sc.train_steps,
            "lr": 1e-4,
            "seed": sc.seed,
            "teacher": f"distilled here from {backbone} features",
        }
    raise ConfigError(f"screening.model {model!r}: choose one of {', '.join(MODELS)}")


# ----------------------------------------------------------------------------------------- nets
class _ListFeatures(nn.Module):
    """A ``{layer: features}`` extractor as the list anomalib's FastFlow expects."""

    def __init__(self, extractor: nn.Module, layers: list[str]) -> None:
        super().__init__()
        self.extractor = extractor
        self.layers = list(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.extractor(x)
        return [feats[k] for k in self.layers]


class EfficientAdNet(nn.Module):
    """anomalib's EfficientAdModel on ImageNet-normalised input (its PDNs normalise raw [0, 1] images)."""

    def __init__(self, teacher_channels: int) -> None:
        super().__init__()
        from oringscan._deps import anomalib_import

        with anomalib_import():
            from anomalib.models.image.efficient_ad.torch_model import EfficientAdModel, EfficientAdModelSize

        self.net = EfficientAdModel(teacher_out_channels=teacher_channels, model_size=EfficientAdModelSize.S)
        self.register_buffer("mean_in", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std_in", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std_in + self.mean_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self.raw(x))
        return out.anomaly_map.clamp_min(0)


def build_net(
    model: str,
    backbone: str,
    layers: list[str],
    input_size: int,
    params: dict[str, Any],
    weights: Path | None = None,
    lookup: bool = True,
) -> tuple[nn.Module, str | None]:
    """The model's module tree (untrained); returns (net, backbone weights source or None)."""
    from oringscan._deps import anomalib_import

    torch.manual_seed(int(params.get("seed", 0)))
    extractor, source = build_features(backbone, layers, weights, lookup=lookup)
    extractor.eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        probe = extractor(torch.zeros(1, 3, input_size, input_size))
    shapes = [tuple(probe[k].shape[1:]) for k in layers]
    if model == "padim":
        with anomalib_import():
            from anomalib.models.image.padim.torch_model import PadimModel

        net = PadimModel(backbone="resnet18", layers=["layer1"], pre_trained=False, n_features=1)
        net.feature_extractor = extractor
        net.backbone, net.layers = backbone, list(layers)
        total = sum(s[0] for s in shapes)
        n = min(int(params.get("n_features") or total), total)
        net.n_features_original, net.n_features = total, n
        gen = torch.Generator().manual_seed(int(params.get("seed", 0)))
        net.idx = torch.randperm(total, generator=gen)[:n]
        return net.eval(), source
    if model == "fastflow":
        with anomalib_import():
            from anomalib.models.image.fastflow.torch_model import FastflowModel, create_fast_flow_block

        net = FastflowModel(
            input_size=(input_size, input_size), backbone="resnet18", pre_trained=False, flow_steps=1
        )
        net.feature_extractor = _ListFeatures(extractor, layers)
        net.norms = nn.ModuleList([nn.LayerNorm(list(s), elementwise_affine=True) for s in shapes])
        net.fast_flow_blocks = nn.ModuleList(
            [
                create_fast_flow_block(
                    input_dimensions=list(s),
                    conv3x3_only=bool(params.get("conv3x3_only", False)),
                    hidden_ratio=float(params.get("hidden_ratio", 1.0)),
                    flow_steps=int(params.get("flow_steps", 8)),
                )
                for s in shapes
            ]
        )
        return net.eval(), source
    if model == "efficient_ad":
        channels = sum(s[0] for s in shapes)
        net = EfficientAdNet(channels)
        net.teacher_source = extractor  # used for distillation only; not part of the saved model
        return net.eval(), source
    raise ConfigError(f"screening.model {model!r}: choose one of {', '.join(ALT_MODELS)}")


# ----------------------------------------------------------------------------------------- maps
def alt_maps(net: nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) anomaly maps (>= 0) of an alternative's module for the preprocessed batch ``x``:
    the one scoring code of the torch screen and of its ONNX graph (export/alt_onnx.py)."""
    if kind == "padim":
        return net(x).anomaly_map
    if kind == "fastflow":
        return net(x).anomaly_map + 1.0
    return net(x)


# ----------------------------------------------------------------------------------------- model
class AltScreeningModel(ScreeningModel):
    """A fitted PaDiM / FastFlow / EfficientAD screen with PatchCore's interface (``score_tiles`` ...)."""

    def __init__(self, net: nn.Module, meta: ScreeningMeta, device: str = "cpu") -> None:  # noqa: D107
        self.net = net.eval()
        self.meta = meta
        self.device = torch.device(device)
        self.net.to(self.device)

    @property
    def kind(self) -> str:
        return str(getattr(self.meta, "model", "patchcore"))

    @property
    def memory_bank(self) -> torch.Tensor:
        """All the model's float tensors, flattened: what changes when it is refitted (fingerprints)."""
        parts = [
            v.detach().float().flatten().cpu()
            for v in self.net.state_dict().values()
            if v.is_floating_point()
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    # -------------------------------------------------------------------------------- scoring
    @torch.no_grad()
    def maps_from_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) anomaly maps (>= 0) at the model's input size."""
        return alt_maps(self.net, self.kind, x)

    @torch.no_grad()
    def maps_from_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """As :meth:`maps_from_input` from cached extractor outputs (PaDiM and FastFlow)."""
        net, size = self.net, self.meta.input_size
        if self.kind == "padim":
            emb = net.generate_embedding(dict(zip(net.layers, feats, strict=True)))
            return net.anomaly_map_generator(
                embedding=emb,
                mean=net.gaussian.mean,
                inv_covariance=net.gaussian.inv_covariance,
                image_size=(size, size),
            )
        hidden = [
            blk(norm(f))[0] for blk, norm, f in zip(net.fast_flow_blocks, net.norms, feats, strict=True)
        ]
        return net.anomaly_map_generator(hidden) + 1.0

    def _finish(
        self, part: list[np.ndarray], amap: torch.Tensor, maps: list[np.ndarray] | None
    ) -> np.ndarray:
        scores = amap.amax(dim=(-3, -2, -1)).float().cpu().numpy()
        if maps is not None:
            tile = self.meta.tile_size
            up = amap if amap.shape[-1] == tile else F.interpolate(amap, size=(tile, tile), mode="bilinear")
            for img, m in zip(part, up[:, 0].float().cpu().numpy(), strict=True):
                maps.append(np.ascontiguousarray(m[: img.shape[0], : img.shape[1]]))
        return scores

    @torch.no_grad()
    def score_images(
        self, images: list[np.ndarray], with_maps: bool = False, batch_size: int = 8
    ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """Tile scores (the map's maximum) and tile-size anomaly maps for gray tile images."""
        scores: list[np.ndarray] = []
        maps: list[np.ndarray] | None = [] if with_maps else None
        for start in range(0, len(images), batch_size):
            part = images[start : start + batch_size]
            scores.append(self._finish(part, self.maps_from_input(self.preprocess(part)), maps))
        return (np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)), maps

    # ---------------------------------------------------------------------------- persistence
    def state_tensors(self) -> dict[str, torch.Tensor]:
        skip = ("teacher_source.",)
        return {
            f"model.{k}": v.detach().float().cpu().contiguous()
            if v.is_floating_point()
            else v.cpu().contiguous()
            for k, v in self.net.state_dict().items()
            if not k.startswith(skip)
        }

    def save(self, directory: Path) -> Path:
        """memory_bank.safetensors (the model's state dict) and metadata.json (meta + model + params)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self.state_tensors(), str(directory / BANK_FILE))
        meta = dict(self.meta.to_json())
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        return directory

    @classmethod
    def from_meta(cls, meta: ScreeningMeta, tensors: dict[str, torch.Tensor], path: Path, device: str) -> Any:
        try:
            net, _ = build_net(
                meta.model, meta.backbone, meta.layers, meta.input_size, meta.model_params, lookup=False
            )
        except Exception as exc:  # noqa: BLE001 - an unknown model/backbone name in the metadata
            raise ModelFileError(path, f"cannot build {meta.model} on {meta.backbone!r}: {exc}") from None
        state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
        _fit_buffer_shapes(net, state)
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("teacher_source.")]
        if missing or unexpected:
            raise ModelFileError(
                path,
                f"tensors do not match a {meta.model} on {meta.backbone}: "
                f"{len(missing)} missing, {len(unexpected)} unexpected (e.g. {(missing + unexpected)[0]})",
            )
        if hasattr(net, "teacher_source"):
            del net.teacher_source
        return cls(net, meta, device=device)


def _fit_buffer_shapes(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Buffers anomalib creates empty (PaDiM's Gaussian) take the saved shapes before loading."""
    for name, value in state.items():
        module_name, _, attr = name.rpartition(".")
        module = net.get_submodule(module_name) if module_name else net
        buf = module._buffers.get(attr)
        if buf is not None and buf.shape != value.shape:
            module._buffers[attr] = torch.empty_like(value)


def load_any_screening(directory: Path, expected_type: str | None = None, device: str = "cpu") -> Any:
    """The screening model in ``directory`` whatever its kind (PatchCore or an alternative)."""
    directory = Path(directory)
    meta_path, bank_path = directory / META_FILE, directory / BANK_FILE
    kind = "patchcore"
    if meta_path.is_file():
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(meta_path, f"corrupt screening metadata ({exc})") from None
        kind = raw.get("model", "patchcore") if isinstance(raw, dict) else "patchcore"
    if kind == "patchcore":
        return ScreeningModel.load(directory, expected_type=expected_type, device=device)
    if kind not in ALT_MODELS:
        raise ModelFileError(meta_path, f"unknown screening model {kind!r} (one of {', '.join(MODELS)})")
    if not bank_path.is_file():
        raise ModelFileError(bank_path, "screening model file not found (run: oringscan train screening)")
    meta = validate_meta(raw, meta_path)
    if meta.format_version > FORMAT_VERSION:
        raise ModelFileError(meta_path, f"made by a newer oringscan (format {meta.format_version})")
    if expected_type is not None and meta.oring_type != expected_type:
        raise ModelFileError(
            meta_path, f"screening model is for o-ring type {meta.oring_type!r}, not {expected_type!r}"
        )
    if not isinstance(meta.model_params, dict):
        raise ModelFileError(meta_path, "'model_params' must be a JSON object")
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(bank_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad files
        raise ModelFileError(bank_path, f"corrupt model tensors ({type(exc).__name__}: {exc})") from None
    if any(not torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
        raise ModelFileError(bank_path, "model tensors hold NaN/inf values")
    return AltScreeningModel.from_meta(meta, tensors, bank_path, device)


# ----------------------------------------------------------------------------------------- fitting
def new_alt_model(config: Config, oring_type: str) -> AltScreeningModel:
    """An unfitted alternative screen with the configured model and backbone."""
    sc = config.screening
    model = sc.model
    backbone = sc.backbone
    layers = list(sc.layers) if sc.layers else default_layers(backbone)
    size = sc.input_size or default_input_size(model, backbone, config.tiling.tile_size)
    params = default_params(model, backbone, layers, config)
    net, source = build_net(model, backbone, layers, size, params, sc.weights)
    meta = ScreeningMeta(
        oring_type=oring_type,
        backbone=backbone,
        layers=layers,
        input_size=size,
        tile_size=config.tiling.tile_size,
        num_neighbors=1,
        threshold=math.inf,
        normalize_polarity=sc.normalize_polarity,
        pretrained=source is not None,
        weights_source=source,
    )
    meta.model = model
    meta.model_params = params
    from .model import resolve_device

    return AltScreeningModel(net, meta, device=resolve_device(sc.device))


def _extractor(screen: AltScreeningModel) -> nn.Module:
    net = screen.net
    if screen.kind == "padim":
        return net.feature_extractor
    if screen.kind == "fastflow":
        return net.feature_extractor.extractor
    return net.teacher_source


def _features(screen: AltScreeningModel, images: list[np.ndarray], batch: int) -> list[list[torch.Tensor]]:
    """Per tile, its extractor outputs (layer order), computed once (the extractor is frozen)."""
    ext, layers = _extractor(screen), screen.meta.layers
    out: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            feats = ext(screen.preprocess(images[start : start + batch]))
            for i in range(len(images[start : start + batch])):
                out.append([feats[k][i : i + 1].cpu() for k in layers])
    return out


def _stack(feats: list[list[torch.Tensor]], idx: list[int] | np.ndarray) -> list[torch.Tensor]:
    return [torch.cat([feats[i][j] for i in idx]) for j in range(len(feats[0]))]


def _fit_padim(screen: AltScreeningModel, feats: list[list[torch.Tensor]], idx: np.ndarray) -> None:
    net = screen.net
    embs = [
        net.generate_embedding(dict(zip(net.layers, _stack(feats, idx[s : s + 32]), strict=True)))
        for s in range(0, len(idx), 32)
    ]
    emb = torch.cat(embs)
    if emb.shape[0] < 2:
        raise ModelFileError(Path("train"), "PaDiM needs at least 2 good training tiles")
    net.gaussian.fit(emb)


def _fit_fastflow(screen: AltScreeningModel, feats: list[list[torch.Tensor]], idx: np.ndarray) -> None:
    from oringscan._deps import anomalib_import

    with anomalib_import():
        from anomalib.models.image.fastflow.loss import FastflowLoss

    p = screen.meta.model_params
    net = screen.net
    gen = torch.Generator().manual_seed(int(p.get("seed", 0)))
    params = [q for m in (net.norms, net.fast_flow_blocks) for q in m.parameters()]
    opt = torch.optim.Adam(params, lr=float(p.get("lr", 1e-3)), weight_decay=1e-5)
    loss_fn = FastflowLoss()
    net.train()
    batch = min(8, len(idx))
    for _ in range(int(p.get("train_steps", 200))):
        pick = idx[torch.randperm(len(idx), generator=gen)[:batch].numpy()]
        hidden, jac = [], []
        for blk, norm, f in zip(net.fast_flow_blocks, net.norms, _stack(feats, pick), strict=True):
            h, j = blk(norm(f.to(screen.device)))
            hidden.append(h)
            jac.append(j)
        loss = loss_fn(hidden, jac)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()


def _fit_efficient_ad(screen: AltScreeningModel, images: list[np.ndarray], idx: np.ndarray) -> None:
    """Teacher distilled from the backbone's features, then anomalib's student/autoencoder training."""
    p = screen.meta.model_params
    wrapper: EfficientAdNet = screen.net
    net = wrapper.net
    src = wrapper.teacher_source
    layers = screen.meta.layers
    gen = torch.Generator().manual_seed(int(p.get("seed", 0)))
    dev = screen.device

    def batch_of(n: int) -> torch.Tensor:
        pick = idx[torch.randperm(len(idx), generator=gen)[:n].numpy()]
        return screen.preprocess([images[i] for i in pick])

    def target(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        with torch.no_grad():
            feats = src(x)
            return torch.cat([F.interpolate(feats[k], size=size, mode="bilinear") for k in layers], 1)

    # 1. Teacher: regress the backbone's (per-channel standardised) features.
    teacher = net.teacher
    teacher.train()
    for q in teacher.parameters():
        q.requires_grad_(True)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-3, weight_decay=1e-5)
    with torch.no_grad():
        x0 = batch_of(min(8, len(idx)))
        t0 = target(x0, tuple(teacher(wrapper.raw(x0)).shape[-2:]))
        mu, sd = t0.mean((0, 2, 3), keepdim=True), t0.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    for _ in range(int(p.get("distill_steps", 200))):
        x = batch_of(min(4, len(idx)))
        out = teacher(wrapper.raw(x))
        loss = F.mse_loss(out, (target(x, tuple(out.shape[-2:])) - mu) / sd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    teacher.eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    # 2. Teacher channel statistics on the training tiles (anomalib's teacher_channel_mean_std).
    with torch.no_grad():
        outs = [
            teacher(wrapper.raw(batch_of(min(8, len(idx))))) for _ in range(max(1, min(8, len(idx) // 8)))
        ]
        allout = torch.cat(outs)
        net.mean_std["mean"].data = allout.mean((0, 2, 3), keepdim=True)
        net.mean_std["std"].data = allout.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    # 3. Student + autoencoder (anomalib's losses; noise images stand in for the ImageNet penalty batch).
    net.train()
    net.teacher.eval()
    opt = torch.optim.Adam(
        list(net.student.parameters()) + list(net.ae.parameters()),
        lr=float(p.get("lr", 1e-4)),
        weight_decay=1e-5,
    )
    for _ in range(int(p.get("train_steps", 200))):
        x = wrapper.raw(batch_of(1)).to(dev)
        noise = torch.rand(x.shape, generator=gen).to(dev)
        loss_st, loss_ae, loss_stae = net(x, noise)
        loss = loss_st + loss_ae + loss_stae
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    # 4. Map normalisation quantiles on the training tiles (anomalib takes them from good val images).
    with torch.no_grad():
        st, ae = [], []
        for s in range(0, len(idx), 8):
            x = wrapper.raw(screen.preprocess([images[i] for i in idx[s : s + 8]]))
            map_st, map_ae = net.get_maps(x, normalize=False)
            st.append(map_st.flatten())
            ae.append(map_ae.flatten())
        vst, vae = torch.cat(st), torch.cat(ae)
        vst, vae = (
            vst[torch.randperm(len(vst), generator=gen)[:1_000_000]],
            vae[torch.randperm(len(vae), generator=gen)[:1_000_000]],
        )
        net.quantiles["qa_st"].data = torch.quantile(vst, 0.9)
        net.quantiles["qb_st"].data = torch.quantile(vst, 0.995)
        net.quantiles["qa_ae"].data = torch.quantile(vae, 0.9)
        net.quantiles["qb_ae"].data = torch.quantile(vae, 0.995)


def _snapshot(screen: AltScreeningModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in screen.net.state_dict().items()}


def cross_fit_alt(
    screen: AltScreeningModel,
    images: list[np.ndarray],
    sources: list[str],
    in_final: np.ndarray,
    config: Config,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Out-of-fold worst-tile score of every good frame, and the final model (fitted on ``in_final``)."""
    from .fit import assign_folds

    sc = config.screening
    t0 = time.perf_counter()
    frames = sorted(set(sources))
    k = min(sc.calibration_folds, len(frames))
    if k < 2:
        raise ModelFileError(
            Path("train"), f"{len(frames)} good frame(s): at least 2 are needed to cross-fit a threshold"
        )
    fold_of = assign_folds(frames, k, sc.seed)
    folds = np.array([fold_of[s] for s in sources])
    if screen.meta.backbone == RINGTEXTURE:
        train_idx = np.flatnonzero(in_final)
        _extractor(screen).set_scales(screen.preprocess([images[i] for i in train_idx[: sc.batch_size]]))
    initial = _snapshot(screen)
    feats = _features(screen, images, sc.batch_size) if screen.kind in ("padim", "fastflow") else None

    def fit_on(idx: np.ndarray) -> None:
        screen.net.load_state_dict(initial, strict=False)
        if screen.kind == "padim":
            _fit_padim(screen, feats, idx)  # type: ignore[arg-type]
        elif screen.kind == "fastflow":
            _fit_fastflow(screen, feats, idx)  # type: ignore[arg-type]
        else:
            _fit_efficient_ad(screen, images, idx)

    def score(idx: np.ndarray) -> np.ndarray:
        if feats is not None:
            out = []
            with torch.no_grad():
                for s in range(0, len(idx), 8):
                    m = screen.maps_from_features(
                        [f.to(screen.device) for f in _stack(feats, idx[s : s + 8])]
                    )
                    out.append(m.amax(dim=(-3, -2, -1)).cpu().numpy())
            return np.concatenate(out)
        return screen.score_images([images[i] for i in idx])[0]

    oof: dict[str, float] = {}
    for f in range(k):
        if progress:
            progress(f"{screen.kind}: fold {f + 1}/{k}")
        fit_on(np.flatnonzero(folds != f))
        held = np.flatnonzero(folds == f)
        s = score(held)
        for i, v in zip(held, s, strict=True):
            oof[sources[i]] = max(oof.get(sources[i], -math.inf), float(v))
    if progress:
        progress(f"{screen.kind}: final model")
    fit_on(np.flatnonzero(in_final))
    stats = {
        "folds": k,
        "tiles": len(images),
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }
    return oof, stats


def fit_alternative(
    config: Config, output_root: Path, oring_type: str, directory: Path | None = None, progress: bool = True
) -> AltScreeningModel:
    """Fit the configured alternative on the good train tiles, cross-fit its thresholds on every good
    train+val frame (as PatchCore), save it to ``directory`` (default: the type's screening folder)."""
    from .calibration import history_entry
    from .data import fingerprint, good_frame_tiles, group_frames, load_split, read_tile
    from .fit import _defect_info, calibrate_thresholds, score_records, screening_dir
    from .model import _versions

    config.oring_type(oring_type)
    torch.manual_seed(config.screening.seed)
    train = load_split(output_root, oring_type, "train")
    train_good = good_frame_tiles(train) or [r for r in train if not r.is_defect]
    val = load_split(output_root, oring_type, "val")
    val_good = good_frame_tiles(val)
    bad_sources = {r.source for r in val if r.is_defect}
    val_defect = [r for r in val if r.source in bad_sources]
    pool = train_good + val_good
    if not train_good:
        raise ModelFileError(Path("train"), "no good training tiles to fit the screening model on")
    screen = new_alt_model(config, oring_type)
    images = [read_tile(r.path) for r in pool]
    in_final = np.array([True] * len(train_good) + [False] * len(val_good))
    say = (lambda msg: log.info("%s", msg)) if progress else None
    oof, stats = cross_fit_alt(screen, images, [r.source for r in pool], in_final, config, say)
    calibration = calibrate_thresholds(screen, oof, config)
    if val_defect:
        scores = score_records(screen, val_defect, config.screening.batch_size)
        calibration.update(_defect_info(val_defect, scores, screen.meta.threshold))
    meta = screen.meta
    meta.calibration = {**calibration, **stats}
    meta.oof_scores = {k: round(v, 6) for k, v in sorted(oof.items())}
    meta.n_train_tiles = len(train_good)
    meta.n_train_frames = len(group_frames(train_good))
    meta.bank_size = 0
    meta.train_fingerprint = fingerprint(train_good, extra=config.screening.model_dump_json())
    meta.versions = _versions()
    meta.created = datetime.now(UTC).isoformat(timespec="seconds")
    meta.history = [history_entry({}, calibration, sorted(oof), f"train screening ({meta.model})")]
    screen.save(Path(directory) if directory is not None else screening_dir(output_root, oring_type))
    return screen


def fit_any_screening(
    config: Config, output_root: Path, oring_type: str, directory: Path | None = None, progress: bool = True
) -> Any:
    """``[screening] model``: PatchCore or an alternative (``fit.fit_screening`` dispatches)."""
    from .fit import fit_screening

    return fit_screening(config, output_root, oring_type, progress=progress, directory=directory)


def meta_summary(meta: ScreeningMeta) -> dict[str, Any]:
    return {k: v for k, v in asdict(meta).items() if k not in ("oof_scores", "history", "calibration")}
