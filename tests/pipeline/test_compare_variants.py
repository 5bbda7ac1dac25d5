"""``oringscan evaluate compare`` with screening models and segmentation stages side by side: one
run on tiny synthetic tiles, every variant on the same test split, production models untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.segmentation import tiny_config, write_tiny_coco

from oringscan.cli.main import cli
from oringscan.config import Config, config_to_toml
from oringscan.errors import ConfigError
from oringscan.pipeline.policy import DefectGate
from oringscan.pipeline.variants import (
    DEFAULT_STAGE_VARIANTS,
    configured_variants,
    markdown_table,
    tile_decisions,
)
from oringscan.types import Instance
from oringscan.workspace import TypeWorkspace

VARIANTS = """
[[compare.variants]]
name = "patchcore"
screening = { model = "patchcore", backbone = "ringtexture" }
[[compare.variants]]
name = "maskrcnn / resnet18"
segmentation = { stage = "maskrcnn", epochs = 1, input_size = 64, val_max_tiles = 3 }
[[compare.variants]]
name = "semantic / lraspp"
segmentation = { stage = "semantic", semantic_model = "lraspp_mobilenet_v3_large", epochs = 1 }
[[compare.variants]]
name = "classifier / mobilenet"
segmentation = { stage = "classifier", classifier_model = "mobilenet_v3_small", epochs = 1 }
"""


def _inst(label: str, score: float) -> Instance:
    return Instance(label, score, np.ones((2, 2), bool), (0, 0))


def test_tile_decisions_follow_the_defect_gate() -> None:
    per_tile = [[_inst("hole", 0.4), _inst("scratch", 0.7)], [_inst("hole", 0.6)], []]
    gate = DefectGate(True, 0.5, {"scratch": 0.8})
    best, called = tile_decisions(per_tile, gate)
    assert best.tolist() == [0.7, 0.6, 0.0]
    assert called.tolist() == [0.0, 1.0, 0.0]  # the scratch needs 0.8, the hole 0.5
    _, never = tile_decisions(per_tile, DefectGate(False, reason="not calibrated"))
    assert never.tolist() == [0.0, 0.0, 0.0]  # an unqualified stage calls nothing


def test_variants_are_screening_or_segmentation_settings_with_one_line_errors() -> None:
    kinds = {v.name: v.kind for v in configured_variants(Config())}
    assert {v["name"] for v in DEFAULT_STAGE_VARIANTS} <= set(kinds)
    assert kinds["patchcore / ringtexture"] == "screening" and kinds["semantic"] == "segmentation"
    semantic = next(v for v in configured_variants(Config()) if v.name == "semantic")
    assert semantic.config.segmentation.stage == "semantic" and semantic.slug == "semantic"
    bad = Config.model_validate({"compare": {"variants": [{"name": "x", "segmentation": {"stage": "unet"}}]}})
    with pytest.raises(ConfigError, match="variant 'x'"):
        configured_variants(bad)
    with pytest.raises(Exception, match="not both"):
        Config.model_validate(
            {"compare": {"variants": [{"name": "y", "screening": {"model": "padim"}, "segmentation": {}}]}}
        )


def test_markdown_table_marks_unqualified_stages_and_failures() -> None:
    row = {
        "name": "semantic",
        "kind": "segmentation",
        "frame_auroc": 0.9,
        "recall_at_threshold": 0.0,
        "qualified": False,
        "false_rejects": 0,
        "good_frames": 4,
        "recall_by_size": {"few_px": 0.0, "tens_of_px": None, "large": 0.0},
        "seconds_per_frame": 0.5,
        "fit_seconds": 12.0,
        "model_bytes": 2_500_000,
    }
    table = markdown_table([row, {"name": "broken", "kind": "screening", "error": "ValueError: x"}])
    assert (
        "| semantic | 2nd stage | 0.900 | not qualified | 0 / 4 | 0.00 | - | 0.00 | 0.50 | 12 | 2.5 MB |"
        in table
    )
    assert "| broken | screening | failed: ValueError: x |" in table


@pytest.mark.slow
def test_compare_runs_screening_and_second_stages_on_the_same_split(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    write_tiny_coco(out, counts={"train": (4, 3), "val": (3, 2), "test": (2, 2)})
    config = tiny_config()
    config = config.model_copy(
        update={
            "frame": config.frame.model_copy(update={"accept_any_size": True}),
            "tiling": config.tiling.model_copy(update={"tile_size": 96, "overlap": 16}),
            "screening": config.screening.model_copy(
                update={"batch_size": 4, "calibration_folds": 2, "max_bank_size": 256}
            ),
            # Every instance counts: the classifier (an instance per tile) must then call every frame.
            "pipeline": config.pipeline.model_copy(update={"defect_min_score": 0.0}),
        }
    )
    config_path = tmp_path / "compare.toml"
    config_path.write_text(config_to_toml(config) + VARIANTS, encoding="utf-8")
    monkeypatch.setenv("ORINGSCAN_THREADS", str(torch.get_num_threads()))
    args = ["evaluate", "compare", "--model", "model1", "--output", str(out), "--config", str(config_path)]
    result = CliRunner().invoke(cli, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "| classifier / mobilenet | 2nd stage |" in result.output
    root = out / "model1" / "compare"
    rows = {r["name"]: r for r in json.loads((root / "compare.json").read_text())["variants"]}
    assert list(rows) == ["patchcore", "maskrcnn / resnet18", "semantic / lraspp", "classifier / mobilenet"]
    assert not [r["error"] for r in rows.values() if "error" in r]
    for r in rows.values():  # the same split for every variant
        assert (r["frames"], r["defect_frames"], r["good_frames"]) == (4, 2, 2)
        assert r["seconds_per_frame"] > 0 and r["fit_seconds"] > 0 and r["model_bytes"] > 0
        assert r["frame_auroc"] is None or 0 <= r["frame_auroc"] <= 1
    stages = {n: r for n, r in rows.items() if r["kind"] == "segmentation"}
    assert [r["model"] for r in stages.values()] == ["maskrcnn", "semantic", "classifier"]
    for r in stages.values():
        assert r["epochs"] == 1 and r["qualified"] is True  # defect_min_score decides
        assert r["checkpoint_bytes"] > r["model_bytes"]  # the checkpoint holds the optimizer too
    classifier = stages["classifier / mobilenet"]
    assert classifier["recall_at_threshold"] == 1.0 and classifier["false_rejects"] == 2
    assert all(v in (None, 1.0) for v in classifier["recall_by_size"].values())
    # Each stage trained in its own workspace; the type's own checkpoint folder was never written.
    assert not TypeWorkspace(out, "model1").checkpoints_dir.exists()
    for slug in ("maskrcnn-resnet18", "semantic-lraspp", "classifier-mobilenet"):
        assert (root / slug / "model1" / "checkpoints" / "best_model.pth").is_file()
        assert (root / slug / "model1" / "annotations").is_symlink()
    assert (root / "compare.png").stat().st_size > 1000
