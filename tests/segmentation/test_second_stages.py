"""The second stages beside Mask R-CNN (``[segmentation] stage = "semantic" | "classifier"``): trained
briefly on tiny synthetic COCO tiles, saved, loaded back the way the Inspector loads them, and run
through the Inspector's SegmentationStage Protocol on a real frame."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.segmentation import tiny_config, write_tiny_coco

from oringscan.cli.main import cli
from oringscan.config import Config, config_to_toml
from oringscan.errors import ModelFileError
from oringscan.pipeline.inspector import Inspector, SegmentationStage
from oringscan.rework_rules.checker import ReworkReport
from oringscan.roi import RingROI
from oringscan.segmentation import stage_from_config, train_segmentation
from oringscan.segmentation.classifier import TileClassifier, tile_region
from oringscan.segmentation.dataset import read_gray
from oringscan.segmentation.semantic import SemanticSegmenter, components_to_instances
from oringscan.types import (
    Instance,
    ReworkResult,
    ReworkVerdict,
    ScreeningResult,
    Tile,
    TileBox,
    TileScore,
    Verdict,
)
from oringscan.workspace import TypeWorkspace

COUNTS = {"train": (5, 2), "val": (3, 1), "test": (2, 1)}


def stage_config(stage: str, **extra: Any) -> Config:
    config = tiny_config()
    seg = config.segmentation.model_copy(
        update={"stage": stage, "epochs": 2, "lr": 0.02, "patience": 5, "val_max_tiles": 4, **extra}
    )
    return config.model_copy(update={"segmentation": seg})


@pytest.fixture(scope="module")
def semantic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config, dict[str, Any]]:
    root = tmp_path_factory.mktemp("semantic out")
    write_tiny_coco(root, counts=COUNTS)
    config = stage_config("semantic")  # lite0_fpn: ImageNet encoder from the installed package
    return root, config, train_segmentation(config, root, "model1", progress=False)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config, dict[str, Any]]:
    root = tmp_path_factory.mktemp("classifier out")
    write_tiny_coco(root, counts=COUNTS)
    config = stage_config("classifier", classifier_model="mobilenet_v3_small")  # random init: fast
    return root, config, train_segmentation(config, root, "model1", progress=False)


# --- pure parts ---------------------------------------------------------------------------------


def test_components_become_instances_with_class_score_and_offset() -> None:
    probs = np.zeros((3, 40, 50), np.float32)
    probs[0] = 1.0
    probs[:, 5:10, 6:14] = np.array([0.1, 0.8, 0.1])[:, None, None]  # class 1, mean 0.8
    probs[:, 20:30, 30:33] = np.array([0.3, 0.1, 0.6])[:, None, None]  # class 2, mean 0.6
    probs[:, 35, 45] = np.array([0.0, 1.0, 0.0])  # one pixel: below min_area
    found = components_to_instances(probs, ["hole", "scratch"], (100, 200), 0.5, 0.5, min_area=2)
    assert [(i.label, round(i.score, 3), i.offset, i.mask.shape) for i in found] == [
        ("hole", 0.8, (106, 205), (5, 8)),
        ("scratch", 0.6, (130, 220), (10, 3)),
    ]
    assert all(i.mask.dtype == bool and i.mask.all() for i in found)
    assert (
        components_to_instances(probs, ["hole", "scratch"], score_threshold=0.7, min_area=2)[0].label
        == "hole"
    )
    assert len(components_to_instances(probs, ["hole", "scratch"], score_threshold=0.7, min_area=2)) == 1


def test_classifier_region_is_the_ring_or_the_maps_hot_part() -> None:
    gray = np.zeros((20, 20), np.uint8)
    gray[:, 8:] = 120  # the ring fills the right part, the blanked belt the left
    assert tile_region(gray).sum() == 20 * 12
    amap = np.zeros((20, 20), np.float32)
    amap[2:5, 10:13] = 3.0
    hot = tile_region(gray, amap)
    assert hot.sum() == 9 and hot[2:5, 10:13].all()
    assert tile_region(np.zeros((4, 4), np.uint8)).all()  # nothing kept: the whole tile


# --- trained stages -----------------------------------------------------------------------------


def _tiles(root: Path, config: Config, split: str = "test") -> list[Tile]:
    records = TypeWorkspace.from_config(config, root, "model1").read_split(split, ["defect"])
    return [
        Tile(TileBox(100 + 200 * k, 300, r.width, r.height), read_gray(r.path), 1.0)
        for k, r in enumerate(records)
    ]


def test_semantic_stage_trains_loads_like_the_inspector_and_places_instances(semantic) -> None:
    root, config, summary = semantic
    assert summary["stage"] == "semantic" and summary["epochs_run"] == 2 and summary["stopped"] == "epochs"
    assert summary["pretrained"].startswith("imagenet")
    workspace = TypeWorkspace.from_config(config, root, "model1")
    stage = stage_from_config(config, workspace, "cpu")
    assert isinstance(stage, SemanticSegmenter)
    assert stage.calibration is not None and stage.calibration.val_tiles == 4  # written by training
    assert stage.describe()["stage"] == "semantic" and stage.describe()["backbone"] == "lite0_fpn"
    tiles = _tiles(root, config)
    per_tile = stage.predict_arrays(
        [t.image for t in tiles], [(t.box.x, t.box.y) for t in tiles], score_threshold=0
    )
    assert sum(map(len, per_tile)) > 0, "two epochs from ImageNet find the dark defects' pixels"
    for tile, found in zip(tiles, per_tile, strict=True):
        at_origin = stage.predict_arrays([tile.image], score_threshold=0)[0]
        assert [(i.offset[0] - tile.box.x, i.offset[1] - tile.box.y) for i in found] == [
            i.offset for i in at_origin
        ]
        for inst in found:
            x, y, w, h = inst.bbox
            assert inst.label == "defect" and 0 < inst.score <= 1 and inst.mask.dtype == bool
            assert tile.box.x <= x and x + w <= tile.box.x2 and tile.box.y <= y and y + h <= tile.box.y2
    stitched = stage.predict_tiles(tiles)  # the stitching Mask R-CNN's instances go through
    assert all(isinstance(i, Instance) and i.score >= config.segmentation.score_threshold for i in stitched)


def test_semantic_stage_is_evaluated_by_the_cli_with_tile_ap(semantic, tmp_path, monkeypatch) -> None:
    root, config, _ = semantic
    monkeypatch.setenv("ORINGSCAN_THREADS", str(torch.get_num_threads()))  # the CLI keeps the tests' threads
    config_path = tmp_path / "semantic.toml"
    config_path.write_text(config_to_toml(config), encoding="utf-8")
    args = ["evaluate", "segmentation", "--config", str(config_path), "--output", str(root)]
    result = CliRunner().invoke(cli, [*args, "--model", "model1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout[result.stdout.index("{") :])
    assert metrics["stage"] == "semantic" and metrics["test_tiles"] == 3
    assert set(metrics["tiles"]) == {"bbox", "segm"} and 0 <= metrics["tiles"]["segm"]["AP"] <= 1
    assert metrics["frames"]["defects"] >= 2 and metrics["tile_classification"]["defect_tiles"] == 2


def test_classifier_stage_calls_defect_tiles_with_their_ring_area(classifier) -> None:
    root, config, summary = classifier
    assert summary["stage"] == "classifier" and summary["metric"] == "val tile AP"
    assert summary["pretrained"] == "random init"
    stage = stage_from_config(config, TypeWorkspace.from_config(config, root, "model1"), "cpu")
    assert isinstance(stage, TileClassifier)
    assert stage.calibration is not None and stage.calibration.val_defects == 3  # defect tiles, per tile
    tiles = _tiles(root, config)
    per_tile = stage.predict_arrays(
        [t.image for t in tiles], [(t.box.x, t.box.y) for t in tiles], score_threshold=0
    )
    for tile, found in zip(tiles, per_tile, strict=True):
        (inst,) = found  # one instance per tile at score 0: the whole ring area of the tile
        assert inst.label == "defect" and inst.offset == (tile.box.x, tile.box.y) and inst.mask.all()
        assert inst.mask.shape == tile.image.shape
    maps = [np.zeros(t.image.shape, np.float32) for t in tiles]
    maps[0][10:20, 30:50] = 1.0
    hot = stage.predict_arrays([tiles[0].image], [(0, 0)], anomaly_maps=maps[:1], score_threshold=0)[0][0]
    assert hot.offset == (30, 10) and hot.mask.shape == (10, 20)


def test_budget_cuts_training_short_and_resume_continues(tmp_path) -> None:
    write_tiny_coco(tmp_path, counts={"train": (3, 1), "val": (2, 1)})
    config = stage_config("classifier", classifier_model="mobilenet_v3_small", epochs=2)
    cut = train_segmentation(config, tmp_path, "model1", progress=False, max_minutes=1e-6)
    assert cut["stopped"] == "max-minutes" and cut["epochs_run"] == 1
    resumed = train_segmentation(config, tmp_path, "model1", progress=False, resume=True, max_minutes=10.0)
    assert resumed["epochs_run"] == 2 and resumed["last_epoch"] == 1 and resumed["stopped"] == "epochs"
    history = json.loads(TypeWorkspace.from_config(config, tmp_path, "model1").training_history.read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1] and history["epochs"][0]["partial"] is True


def test_checkpoint_of_another_stage_or_corrupt_is_one_clear_error(semantic, tmp_path) -> None:
    root, config, _ = semantic
    workspace = TypeWorkspace.from_config(config, root, "model1")
    for wanted in ("maskrcnn", "classifier"):
        other = config.model_copy(
            update={"segmentation": config.segmentation.model_copy(update={"stage": wanted})}
        )
        with pytest.raises(ModelFileError, match=f"holds a semantic segmentation stage, but .* = '{wanted}'"):
            stage_from_config(other, workspace, "cpu")
    broken = TypeWorkspace.from_config(config, tmp_path, "model1")
    broken.best_checkpoint.parent.mkdir(parents=True)
    broken.best_checkpoint.write_bytes(workspace.best_checkpoint.read_bytes()[:5000])  # truncated
    with pytest.raises(ModelFileError) as info:
        stage_from_config(config, broken, "cpu")
    assert str(broken.best_checkpoint) in str(info.value) and "\n" not in str(info.value)
    assert "not a readable segmentation checkpoint" in str(info.value)
    data = torch.load(workspace.best_checkpoint, weights_only=True)
    data["spec"]["num_outputs"] = 5  # weights of another head
    torch.save(data, broken.best_checkpoint)
    with pytest.raises(ModelFileError, match="weights do not fit the saved semantic model"):
        stage_from_config(config, broken, "cpu")


# --- through the Inspector ----------------------------------------------------------------------


class FlagAll:
    """Screening stand-in that flags every tile (so the stage under test sees them all)."""

    shape_screen = None

    def score_tiles(self, tiles: list[Tile], with_maps: bool = False) -> ScreeningResult:
        return ScreeningResult(2.0, 1.0, True, False, [TileScore(t.box, 2.0, True) for t in tiles])

    def describe(self) -> dict[str, Any]:
        return {"backbone": "flag-all"}


class PassRework:
    def inspect(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkReport:
        assert isinstance(image_or_roi, RingROI)
        return ReworkReport(ReworkResult(ReworkVerdict.PASS, []), None, image_or_roi)


def ring_frame() -> np.ndarray:
    rng = np.random.default_rng(1)
    image = np.full((512, 612), 18, np.float32)
    cv2.circle(image, (306, 256), 165, 150.0, -1)
    cv2.circle(image, (306, 256), 98, 18.0, -1)
    cv2.ellipse(image, (306, 110), (14, 6), 0, 0, 360, 35.0, -1)  # a dark defect on the ring
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("which", ["semantic", "classifier"])
def test_second_stage_runs_in_the_inspector(which, semantic, classifier) -> None:
    root, config, _ = semantic if which == "semantic" else classifier
    config = config.model_copy(deep=True)
    config.frame.width, config.frame.height = 612, 512
    config.tiling.tile_size, config.tiling.overlap = 160, 20
    config.pipeline.save_overlays = False
    config.pipeline.defect_min_score = 0.05  # decide from this score whatever the tiny calibration says
    stage: SegmentationStage = stage_from_config(
        config, TypeWorkspace.from_config(config, root, "model1"), "cpu"
    )
    inspector = Inspector(config, "model1", FlagAll(), stage, PassRework())
    result = inspector.inspect_array(ring_frame(), "ring.bmp")
    assert result.error is None, result.reasons
    assert inspector.model_versions()["segmentation"]["stage"] == which
    assert all(isinstance(d, Instance) and d.label == "defect" and d.score >= 0.05 for d in result.defects)
    # Flagged everywhere: a confirmed defect makes it "defect", none leaves it to a person.
    assert result.verdict is (Verdict.DEFECT if result.defects else Verdict.SUSPECT), result.reasons
    if which == "classifier":  # one instance per defect tile at most (overlapping ones stitched), on tiles
        assert len(result.defects) <= len(result.screening.tiles)
        x0 = min(t.box.x for t in result.screening.tiles)
        x1 = max(t.box.x2 for t in result.screening.tiles)
        assert all(x0 <= d.bbox[0] and d.bbox[0] + d.bbox[2] <= x1 for d in result.defects)


@pytest.mark.slow
def test_inspector_load_builds_the_configured_stage_from_a_preprocessed_type(tiny_models, tmp_path) -> None:
    """The real path: preprocess tiles of synthetic frames, the type's screening and rework models,
    a semantic stage trained on those tiles, Inspector.load, a frame, a model version."""
    import shutil

    source = TypeWorkspace.from_config(tiny_models.config, tiny_models.output_root, "model1")
    copy = tmp_path / "output"
    shutil.copytree(
        source.root, copy / "model1", ignore=shutil.ignore_patterns("checkpoints", "versions", "runs")
    )
    config = tiny_models.config.model_copy(deep=True)
    config.segmentation.stage = "semantic"
    config.segmentation.epochs = 1
    summary = train_segmentation(config, copy, "model1", progress=False, echo=lambda _line: None)
    assert summary["stage"] == "semantic" and summary["epochs_run"] == 1
    workspace = TypeWorkspace.from_config(config, copy, "model1")
    assert workspace.versions.snapshot("semantic").files  # versions take the second stage's files alike
    inspector = Inspector.load(config, copy, "model1", device="cpu")
    assert isinstance(inspector.segmenter, SemanticSegmenter)
    assert inspector.model_versions()["segmentation"]["stage"] == "semantic"
    frame = next(p for p in sorted(tiny_models.data_root.rglob("*.bmp")))
    result = inspector.inspect_array(cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE), frame.name)
    assert result.verdict is not Verdict.ERROR, result.reasons
    # The default stage on this checkpoint: one line that says what the file holds.
    config.segmentation.stage = "maskrcnn"
    with pytest.raises(ModelFileError, match="holds a semantic segmentation stage"):
        Inspector.load(config, copy, "model1", device="cpu")
