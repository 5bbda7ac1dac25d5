"""Training a few iterations on tiny tiles, exact resume, and the predict/evaluate CLI on the result."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.segmentation import tiny_config, write_tiny_coco

from oringscan.cli.main import cli
from oringscan.config import config_to_toml
from oringscan.frames import write_frame
from oringscan.segmentation import Segmenter, train_segmentation
from oringscan.tiling import ring_tiles

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(output root, config file) after one epoch of the light model on tiny tiles."""
    root = tmp_path_factory.mktemp("seg out")  # a space in the path on purpose
    write_tiny_coco(root)
    config = tiny_config()
    summary = train_segmentation(config, root, "model1", progress=False, epochs=1)
    assert summary["epochs_run"] == 1
    config_path = root / "tiny config.toml"
    config_path.write_text(config_to_toml(config), encoding="utf-8")
    return root, config_path


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_writes_finite_losses_history_tensorboard_and_weights_only_checkpoints(trained) -> None:
    root, _ = trained
    type_dir = root / "model1"
    history = json.loads((type_dir / "training_history.json").read_text())
    (epoch,) = history["epochs"]
    losses = {k: v for k, v in epoch.items() if k.startswith("loss_")}
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} <= set(
        losses
    )
    assert all(math.isfinite(v) for v in losses.values())
    assert epoch["val"]["segm"]["AP"] is not None
    for name in ("best_model.pth", "latest.pth"):
        state = _state(type_dir / "checkpoints" / name)  # weights_only=True: plain data only
        assert state["oring_type"] == "model1" and state["class_names"] == ["defect"]
        assert state["backbone"] == "resnet18_fpn" and state["pretrained"] == "random-init"
        assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "config", "spec"} <= set(state)
    events = list((type_dir / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 1000  # scalars and the prediction grid image


def test_resume_continues_exactly_like_an_uninterrupted_run(trained, tmp_path) -> None:
    root, _ = trained
    config = tiny_config()
    # Interrupted after epoch 1 (the fixture), then resumed to 2 epochs ...
    resumed = train_segmentation(config, root, "model1", progress=False, resume=True, epochs=2)
    assert resumed["epochs_run"] == 2 and resumed["last_epoch"] == 1
    # ... equals two epochs in one go.
    write_tiny_coco(tmp_path)
    straight = train_segmentation(config, tmp_path, "model1", progress=False, epochs=2)
    assert straight["epochs_run"] == 2
    a, b = _state(root / "model1/checkpoints/latest.pth"), _state(tmp_path / "model1/checkpoints/latest.pth")
    assert a["epoch"] == b["epoch"] == 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 2
    # Resuming a finished run keeps its epoch count (the saved config says 2): nothing more to do.
    again = train_segmentation(config, root, "model1", progress=False, resume=True)
    assert again["epochs_run"] == 2
    history = json.loads((root / "model1/training_history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]


def test_segmenter_predicts_tiles_in_frame_coordinates(trained) -> None:
    root, _ = trained
    segmenter = Segmenter.load(
        root / "model1/checkpoints/best_model.pth", device="cpu", expected_type="model1"
    )
    segmenter.training = segmenter.training.model_copy(update={"score_threshold": 0.0, "min_mask_area": 1})
    from oringscan.segmentation.dataset import read_gray

    tile = read_gray(next((root / "model1/images/test").glob("*.png")))
    (local,) = segmenter.predict_arrays([tile])
    (shifted,) = segmenter.predict_arrays([tile], offsets=[(1000, 700)])
    assert len(local) == len(shifted)
    for a, b in zip(local, shifted, strict=True):
        assert (b.offset[0] - a.offset[0], b.offset[1] - a.offset[1]) == (1000, 700)
        assert np.array_equal(a.mask, b.mask)


def _frame(tmp_path: Path) -> Path:
    from support.synthdata import frame

    synth = frame("defect", seed=3)
    path = tmp_path / "frame one.bmp"
    write_frame(path, synth.image)
    return path


def test_predict_full_image_writes_overlay_labelme_and_json(trained, tmp_path) -> None:
    root, config_path = trained
    path = _frame(tmp_path)
    vis = tmp_path / "vis"
    args = [
        "predict",
        "--config",
        str(config_path),
        "--output",
        str(root),
        "--model",
        "model1",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, [*args, "--full-image", str(path), "--json", "--vis-dir", str(vis)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("[") :])
    (entry,) = payload
    assert entry["image"] == str(path) and entry["tiles"] >= 4
    for inst in entry["instances"]:
        assert set(inst) == {"label", "score", "bbox", "area", "polygon"} and len(inst["bbox"]) == 4
    assert (vis / "frame one_overlay.png").is_file()
    labelme = json.loads((vis / "frame one.json").read_text())
    assert labelme["imagePath"] == "../frame one.bmp" and labelme["imageWidth"] == 2448

    # The same frame through the API: the tile grid is preprocess's, instances are crops.
    from oringscan.config import load_config
    from oringscan.frames import read_frame
    from oringscan.roi import find_ring

    config = load_config(config_path)
    gray = read_frame(path).image
    tiles, _ = ring_tiles(gray, find_ring(gray, config.roi), config)
    segmenter = Segmenter.load(
        root / "model1/checkpoints/best_model.pth", device="cpu", expected_type="model1", config=config
    )
    found = segmenter.predict_tiles(tiles)
    assert len(found) == len(entry["instances"])
    assert all(inst.mask.shape != gray.shape for inst in found)


def test_predict_folder_records_broken_files_and_goes_on(trained, tmp_path) -> None:
    root, config_path = trained
    folder = tmp_path / "tiles dir"
    folder.mkdir()
    for src in sorted((root / "model1/images/test").glob("*.png"))[:2]:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "readme.txt").write_text("ignored: not an image type")
    args = [
        "predict",
        "--config",
        str(config_path),
        "--output",
        str(root),
        "--model",
        "model1",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, [*args, "--folder", str(folder), "--json", "--save-vis"])
    assert (
        result.exit_code == 3
    )  # one broken file: recorded, the rest predicted (exit 3: some inputs were errors)
    payload = json.loads(result.stdout[result.stdout.index("[") :])
    assert len(payload) == 3
    broken = next(e for e in payload if e["image"].endswith("broken.png"))
    assert "cannot be decoded" in broken["error"]
    assert sum(1 for e in payload if "overlay" in e) == 2


def test_bad_inputs_give_one_clear_line(trained, tmp_path) -> None:
    root, config_path = trained
    runner = CliRunner()
    base = ["predict", "--config", str(config_path), "--device", "cpu"]

    def one_line(args: list[str], *needles: str) -> None:
        result = runner.invoke(cli, [*base, *args])
        assert result.exit_code != 0
        lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        for needle in needles:
            assert needle in lines[0], lines[0]

    tile = next((root / "model1/images/test").glob("*.png"))
    one_line(
        ["--output", str(tmp_path), "--model", "model1", "--image", str(tile)],
        "best_model.pth",
        "checkpoint not found",
    )
    other = root / "model1/checkpoints/best_model.pth"
    one_line(
        ["--output", str(root), "--model", "model2", "--checkpoint", str(other), "--image", str(tile)],
        "trained for o-ring type 'model1', not 'model2'",
    )
    empty = tmp_path / "empty folder"
    empty.mkdir()
    one_line(
        ["--output", str(root), "--model", "model1", "--folder", str(empty)], "empty folder", "no image files"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    one_line(
        ["--output", str(root), "--model", "model1", "--image", str(notes)], "notes.txt", "not an image file"
    )
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    one_line(
        ["--output", str(root), "--model", "model1", "--image", str(fake)], "fake.png", "cannot be decoded"
    )
    one_line(["--output", str(root), "--model", "model1", "--full-image", str(tile)], "expected 2448x2048")
    result = runner.invoke(cli, [*base, "--output", str(root), "--model", "model1"])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_evaluate_writes_metrics_and_plots(trained) -> None:
    root, config_path = trained
    args = [
        "predict",
        "--config",
        str(config_path),
        "--output",
        str(root),
        "--model",
        "model1",
        "--device",
        "cpu",
        "--evaluate",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "segm AP" in result.output and "defects found" in result.output
    metrics = json.loads((root / "model1/inference_results/metrics.json").read_text())
    for iou_type in ("bbox", "segm"):
        assert set(metrics["tiles"][iou_type]) == {"AP", "AP50", "AP75", "per_class"}
        assert "defect" in metrics["tiles"][iou_type]["per_class"]
    frames = metrics["frames"]
    # The tiny set's frames are not on disk: frames are re-assembled from their test tiles.
    assert frames["read_from"] == {"tiles": frames["frames"]} and frames["defects"] >= 3
    assert (root / "model1/inference_results/pr_curve.png").is_file()
