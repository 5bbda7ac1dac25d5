"""Starting models (``training.init_from``): the shipped synthetic one, pretrain files, bad files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support.pipeline import TinyModels, tiny_config

from oringscan.cli.main import cli
from oringscan.config import TrainingConfig
from oringscan.errors import ModelFileError
from oringscan.segmentation import pretrain
from oringscan.segmentation.models import create_model


def _lite0(init_from: str | None, num_classes: int = 2) -> tuple[torch.nn.Module, str]:
    training = TrainingConfig(backbone="lite0_fpn", input_size=448, init_from=init_from)
    model, _, label = create_model(training, num_classes, 640)
    return model, label


def _one_line(exc: pytest.ExceptionInfo, path: Path, needle: str) -> None:
    text = str(exc.value)
    assert "\n" not in text and str(path) in text and needle in text, text


def test_shipped_synthetic_start_loads_every_tensor_it_holds() -> None:
    path = pretrain.shipped_init_path()
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert data["format"] == pretrain.INIT_FORMAT and data["spec"]["backbone"] == "lite0_fpn"
    made_by = json.loads(data["made_by"])
    assert made_by["command"] == "oringscan pretrain segmentation" and made_by["calibration"]["qualified"]
    model, label = _lite0("synthetic")
    state = model.state_dict()
    for name, value in data["model"].items():
        assert torch.equal(state[name], value.to(state[name].dtype)), name
    assert "init:synthetic sha256:" in label and label.startswith("imagenet:")
    # The heads are not ImageNet's fresh ones: the file changed them.
    fresh, _ = _lite0(None)
    box = "roi_heads.box_predictor.cls_score.weight"
    assert box in data["model"] and not torch.equal(fresh.state_dict()[box], state[box])


def test_other_class_count_keeps_its_class_layers_fresh() -> None:
    data = torch.load(pretrain.shipped_init_path(), map_location="cpu", weights_only=True)["model"]
    model, _ = _lite0("synthetic", num_classes=4)
    state = model.state_dict()
    assert state["roi_heads.box_predictor.cls_score.weight"].shape[0] == 4
    shared = "roi_heads.box_head.fc6.weight"
    assert torch.equal(state[shared], data[shared].float())


def test_bad_or_mismatched_start_files_give_one_clear_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelFileError) as exc:
        _lite0(str(garbage))
    _one_line(exc, garbage, "cannot be read as torch weights")

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(pretrain.shipped_init_path().read_bytes()[:100_000])
    with pytest.raises(ModelFileError) as exc:
        _lite0(str(truncated))
    _one_line(exc, truncated, "cannot be read")

    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ModelFileError) as exc:
        _lite0(str(missing))
    _one_line(exc, missing, "not found")

    # The Lite0 package's ImageNet state dict is weights, but no oringscan starting model.
    from oringscan.segmentation.backbones import lite0_weights_path

    with pytest.raises(ModelFileError) as exc:
        _lite0(str(lite0_weights_path()))
    _one_line(exc, lite0_weights_path(), "no model and spec")

    data = torch.load(pretrain.shipped_init_path(), map_location="cpu", weights_only=True)
    other = tmp_path / "resnet18.pt"
    torch.save({**data, "spec": {**data["spec"], "backbone": "resnet18_fpn"}}, other)
    with pytest.raises(ModelFileError) as exc:
        _lite0(str(other))
    _one_line(exc, other, "was trained with backbone 'resnet18_fpn'")

    reshaped = tmp_path / "reshaped.pt"
    model = dict(data["model"])
    model["roi_heads.box_head.fc6.weight"] = torch.zeros(3, 3)
    torch.save({**data, "model": model}, reshaped)
    with pytest.raises(ModelFileError) as exc:
        _lite0(str(reshaped))
    _one_line(exc, reshaped, "do not fit this model")


def test_pretrain_writes_a_start_that_a_training_run_takes(tmp_path: Path, tiny_models: TinyModels) -> None:
    """`oringscan pretrain segmentation` end to end at quarter size; then `train --init-from` starts
    from it, and the run records where its weights came from."""
    config = tiny_config()
    config_path = tmp_path / "tiny.toml"
    from oringscan.config import config_to_toml

    config_path.write_text(config_to_toml(config), encoding="utf-8")
    out = tmp_path / "start.pt"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "pretrain", "segmentation", "--config", str(config_path), "--out", str(out),
            "--workdir", str(tmp_path / "work"), "--minutes", "0.05", "--defect", "3", "--good", "3",
            "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "done:" in result.output and out.is_file()
    data = torch.load(out, map_location="cpu", weights_only=True)
    assert data["format"] == pretrain.INIT_FORMAT and data["spec"]["backbone"] == "resnet18_fpn"
    assert json.loads(data["made_by"])["n_defect"] == 3

    # A fresh model of the same recipe starts with exactly the file's weights (float16 -> float32).
    training = config.training.model_copy(update={"init_from": str(out)})
    model, _, label = create_model(training, 2, config.tiling.tile_size)
    for name, value in data["model"].items():
        assert torch.equal(model.state_dict()[name], value.float()), name
    assert f"init:{out}" in label

    # train segmentation --init-from, on a copy of the tiny models' tiles.
    work = tmp_path / "tiny"
    shutil.copytree(tiny_models.output_root / "model1" / "annotations", work / "model1" / "annotations")
    shutil.copytree(tiny_models.output_root / "model1" / "images", work / "model1" / "images")
    result = runner.invoke(
        cli,
        [
            "train", "segmentation", "--config", str(tiny_models.config_path), "--output", str(work),
            "--model", "model1", "--init-from", str(out), "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(work / "model1" / "checkpoints" / "best_model.pth", weights_only=True)
    assert f"init:{out}" in checkpoint["pretrained"]

    # A start of another backbone is refused in one line, naming the file.
    result = runner.invoke(
        cli,
        [
            "train", "segmentation", "--config", str(tiny_models.config_path), "--output", str(work),
            "--model", "model1", "--init-from", "synthetic", "--threads", "1",
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "lite0_fpn" in result.output and pretrain.SHIPPED_FILE in result.output


def test_pretrain_refuses_an_out_it_could_not_write_before_any_work(tmp_path: Path) -> None:
    """An --out under a file is one line naming it, before any frame is rendered; so is a folder."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x", encoding="utf-8")
    out, work = blocker / "start.pt", tmp_path / "work"
    result = CliRunner().invoke(
        cli, ["pretrain", "segmentation", "--out", str(out), "--workdir", str(work), "--minutes", "0.05"]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(out) in lines[0], result.output
    assert "cannot be written" in lines[0] and not work.exists()  # nothing rendered
    with pytest.raises(ModelFileError) as exc:
        pretrain.check_writable(tmp_path)
    _one_line(exc, tmp_path, "is a folder")


def test_pretrain_learns_from_the_plants_own_good_frames_with_synthetic_defects_pasted(
    tmp_path: Path,
) -> None:
    """--plant-good: a seeded choice of the plant's good frames joins the training tiles (linked,
    not copied), pasting is on, and the file records it; a missing folder is one clear line."""
    from oringscan.errors import ConfigError
    from oringscan.synth import synthesize_dataset

    config = tiny_config()
    plant = tmp_path / "plant"  # the plant's data root: 4 good frames of another seed
    synthesize_dataset(plant, config, ("model1",), 4, 0, 0, seed=99, progress=False, size=config_size(config))
    good_folder = config.oring_type("model1").good_folder
    result = pretrain.pretrain_synthetic(
        tmp_path / "work", tmp_path / "start.pt", minutes=0.05, n_defect=3, n_good=2, workers=1,
        progress=False, config=config, oring_type="model1", plant_data=plant, plant_good=3,
    )  # fmt: skip
    made = result["made_by"]
    assert (
        made["plant_good"] == 3 and made["paste_prob"] == 0.5 and made["plant_folder"].endswith(good_folder)
    )
    linked = sorted((tmp_path / "work" / "dataset" / "images" / good_folder).glob("plant_*"))
    assert len(linked) == 3 and all(p.is_symlink() for p in linked)
    annotations = tmp_path / "work" / "output" / "model1" / "annotations"
    names = [
        i["file_name"]
        for s in ("train", "val", "test")
        for i in json.loads((annotations / f"{s}.json").read_text())["images"]
    ]
    assert any("__plant_model1_good_" in n for n in names)  # cut into tiles like any good frame
    chosen = pretrain.choose_plant_good(config, plant, "model1", 3, seed=7)
    assert [p.name for p in chosen] == [p.name.removeprefix("plant_") for p in linked]

    with pytest.raises(ConfigError) as exc:
        pretrain.pretrain_synthetic(
            tmp_path / "w2", tmp_path / "s2.pt", config=config, plant_data=tmp_path / "nowhere", plant_good=2
        )
    assert "\n" not in str(exc.value) and str(tmp_path / "nowhere") in str(exc.value)
    assert not (tmp_path / "w2").exists()


def config_size(config) -> tuple[int, int]:
    return config.frame.width, config.frame.height


def test_a_broken_plant_frame_is_recorded_and_the_pretraining_goes_on(tmp_path: Path) -> None:
    """A garbage .bmp among the plant's good frames: preprocess records it, the others are used."""
    from oringscan.synth import synthesize_dataset

    config = tiny_config()
    plant = tmp_path / "plant"
    synthesize_dataset(plant, config, ("model1",), 2, 0, 0, seed=98, progress=False, size=config_size(config))
    good = plant / "images" / config.oring_type("model1").good_folder
    (good / "zz_broken.bmp").write_bytes(b"not a bitmap")
    result = pretrain.pretrain_synthetic(
        tmp_path / "work", tmp_path / "start.pt", minutes=0.05, n_defect=3, n_good=2, workers=1,
        progress=False, config=config, plant_data=plant, plant_good=3,
    )  # fmt: skip
    assert result["made_by"]["plant_good"] == 3 and (tmp_path / "start.pt").is_file()
    summary = json.loads((tmp_path / "work" / "output" / "model1" / "dataset_summary.json").read_text())
    (skipped,) = [s for s in summary["skipped"] if s["file"].endswith("plant_zz_broken.bmp")]
    assert "not a BMP" in skipped["reason"]
