"""Screening models beside PatchCore (PaDiM, FastFlow, EfficientAD): fit, calibrate, save/load, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.synthdata import make_small_dataset

from oringscan.cli.main import cli
from oringscan.config import Config
from oringscan.errors import ConfigError, ModelFileError
from oringscan.screening.data import load_split, read_tile
from oringscan.screening.model import BANK_FILE, META_FILE, ScreeningModel

BASE = {
    "tiling": {"tile_size": 160, "overlap": 20},
    "frame": {"accept_any_size": True},
    "screening": {"batch_size": 4, "calibration_folds": 2, "train_steps": 3, "max_bank_size": 512},
}
TOML = """
[tiling]
tile_size = 160
overlap = 20
[frame]
accept_any_size = true
[screening]
batch_size = 4
calibration_folds = 2
max_bank_size = 512
[[compare.variants]]
name = "patchcore"
screening = { model = "patchcore" }
[[compare.variants]]
name = "padim"
screening = { model = "padim" }
"""


def _config(**screening: object) -> Config:
    return Config.model_validate({**BASE, "screening": {**BASE["screening"], **screening}})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Small frames (612 x 512, 160 px tiles) preprocessed into train/val/test splits."""
    from oringscan.preprocess import preprocess_type

    base = tmp_path_factory.mktemp("alt models")
    data = make_small_dataset(
        base, n_good=8, n_defect=3, n_rework=0, seed=3, color_fraction=0.0, size=(612, 512)
    )
    out = base / "out"
    preprocess_type(_config(), data, out, "model1", progress=False, workers=1)
    test = load_split(out, "model1", "test")
    return {"base": base, "out": out, "test": [read_tile(r.path) for r in test]}


@pytest.fixture(scope="module", params=["padim", "fastflow"])
def fitted_alt(
    prepared: dict, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """Each alternative fitted once on the module's data set (read-only for the tests)."""
    from oringscan.screening.fit import fit_screening

    kind = request.param
    directory = tmp_path_factory.mktemp("fitted") / kind
    config = _config(model=kind)
    screen = fit_screening(config, prepared["out"], "model1", progress=False, directory=directory)
    return {"kind": kind, "dir": directory, "screen": screen}


def test_alternative_fits_calibrates_saves_and_loads_without_pickles(
    prepared: dict, fitted_alt: dict
) -> None:
    from oringscan.screening.alternatives import AltScreeningModel

    kind, directory, screen = fitted_alt["kind"], fitted_alt["dir"], fitted_alt["screen"]
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["model"] == kind and meta["backbone"] == "ringtexture"
    assert isinstance(meta["model_params"], dict)
    assert 0 < meta["threshold"] < float("inf") and meta["oof_scores"]  # cross-fitted like PatchCore
    assert meta["calibration"]["folds"] == 2
    from safetensors.torch import load_file

    assert all(k.startswith("model.") for k in load_file(str(directory / BANK_FILE)))
    loaded = ScreeningModel.load(directory, expected_type="model1")  # dispatches on metadata "model"
    assert isinstance(loaded, AltScreeningModel) and loaded.kind == kind
    a, _ = screen.score_images(prepared["test"])
    b, maps = loaded.score_images(prepared["test"], with_maps=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (b >= 0).all() and maps is not None and maps[0].shape == prepared["test"][0].shape
    with pytest.raises(ModelFileError, match="model2"):
        ScreeningModel.load(directory, expected_type="model2")


def test_broken_alternative_files_are_one_line_errors(fitted_alt: dict, tmp_path: Path) -> None:
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(fitted_alt["dir"], directory)
    meta = json.loads((directory / META_FILE).read_text())
    (directory / META_FILE).write_text(json.dumps({**meta, "model": "dinomaly"}))
    with pytest.raises(ModelFileError, match="unknown screening model 'dinomaly'"):
        ScreeningModel.load(directory)
    (directory / META_FILE).write_text(json.dumps({**meta, "backbone": "lite0"}))
    with pytest.raises(ModelFileError, match="do not match|cannot build"):
        ScreeningModel.load(directory)
    (directory / META_FILE).write_text(json.dumps(meta))
    (directory / BANK_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match="corrupt"):
        ScreeningModel.load(directory)


@pytest.mark.slow
def test_efficient_ad_with_a_teacher_distilled_here(prepared: dict, tmp_path: Path) -> None:
    """EfficientAD's downloaded teacher is replaced by one distilled from the backbone on good tiles
    (2 tiles, one step each: the machinery, not the accuracy; its autoencoder needs 256 px input)."""
    from oringscan.screening.alternatives import _fit_efficient_ad, new_alt_model

    config = _config(model="efficient_ad", train_steps=1)
    screen = new_alt_model(config, "model1")
    assert screen.meta.input_size == 256 and "distilled here" in screen.meta.model_params["teacher"]
    images = prepared["test"][:2]
    teacher_before = screen.net.net.teacher.conv1.weight.detach().clone()
    _fit_efficient_ad(screen, images, np.arange(2))
    assert not torch.equal(teacher_before, screen.net.net.teacher.conv1.weight)  # distilled, not random
    net = screen.net.net
    assert float(net.mean_std["std"].detach().min()) > 0 and float(net.quantiles["qb_st"].detach()) > 0
    screen.meta.threshold = 1.0
    screen.save(tmp_path / "ead")
    loaded = ScreeningModel.load(tmp_path / "ead")
    saved = screen.net.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.net.state_dict().items())
    b, maps = loaded.score_images(images[:1], with_maps=True)
    assert np.isfinite(b).all() and (b >= 0).all() and maps is not None and maps[0].shape == images[0].shape


def test_compare_runs_every_variant_on_the_same_split(prepared: dict) -> None:
    config_path = prepared["base"] / "compare.toml"
    config_path.write_text(TOML, encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "compare",
            "--model",
            "model1",
            "--output",
            str(prepared["out"]),
            "--config",
            str(config_path),
        ]
        + ["--threads", "1"],
    )
    assert result.exit_code == 0, result.output
    assert "| patchcore |" in result.output and "| padim |" in result.output
    root = prepared["out"] / "model1" / "compare"
    data = json.loads((root / "compare.json").read_text())
    rows = {r["name"]: r for r in data["variants"]}
    assert set(rows) == {"patchcore", "padim"}
    for r in rows.values():
        assert r["frames"] == rows["patchcore"]["frames"] > 0  # same split for every variant
        assert (
            0 <= r["false_rejects"] <= r["good_frames"]
            and r["seconds_per_frame"] > 0
            and r["model_bytes"] > 0
        )
    assert rows["padim"]["model"] == "padim"
    assert (root / "compare.png").stat().st_size > 1000
    assert not (prepared["out"] / "model1" / "screening").exists()  # the production model is untouched


def test_unknown_variant_settings_are_config_errors() -> None:
    from oringscan.pipeline.variants import configured_variants

    bad = Config.model_validate({"compare": {"variants": [{"name": "x", "screening": {"modle": "padim"}}]}})
    with pytest.raises(ConfigError, match="variant 'x'"):
        configured_variants(bad)
    with pytest.raises(Exception, match="model"):
        Config.model_validate({"screening": {"model": "dinomaly"}})
