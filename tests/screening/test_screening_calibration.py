"""Screening operating points: the line's budget split, tail-fitted thresholds, metadata checks,
recalibration."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.synthdata import make_small_dataset

from oringscan.budget import FalseRejectBudget, split_budget, split_false_reject_budget
from oringscan.cli.main import cli
from oringscan.config import Config, load_config
from oringscan.errors import ConfigError, ModelFileError
from oringscan.frames import write_frame
from oringscan.screening.calibration import (
    CalibrationError,
    calibrate_good_scores,
    check_frames_folder,
    recalibrate,
    robust_outliers,
    tail_threshold,
)
from oringscan.screening.fit import new_model
from oringscan.screening.model import META_FILE, ScreeningModel
from oringscan.synth import render_frame

# ----------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("budget", "explicit", "expected"),
    [
        (0.05, {}, (0.01, 0.02, 0.02)),  # the documented default split 20/40/40
        (0.10, {}, (0.02, 0.04, 0.04)),
        (0.05, {"screening": 0.03}, (0.03, 0.01, 0.01)),  # the rest shared in the default proportions
        (0.05, {"review": 0.0}, (0.05 / 3, 0.0, 0.1 / 3)),  # no marginal band
        (0.05, {"rework": 0.01, "review": 0.01}, (0.03, 0.01, 0.01)),
        (0.05, {"screening": 0.01, "review": 0.01, "rework": 0.01}, (0.01, 0.01, 0.01)),  # under budget: kept
        (0.05, {"screening": 0.05}, (0.05, 0.0, 0.0)),
    ],
)
def test_budget_split_table(budget: float, explicit: dict, expected: tuple[float, float, float]) -> None:
    got = split_budget(budget, explicit)
    assert isinstance(got, FalseRejectBudget)
    assert (got.screening, got.review, got.rework) == pytest.approx(expected)
    assert got.total <= budget + 1e-12


@pytest.mark.parametrize(
    ("budget", "explicit", "match"),
    [
        (0.05, {"screening": 0.03, "rework": 0.03}, "add up to 0.06"),
        (0.0, {}, "between 0 and 1"),
        (0.05, {"screening": -0.01}, "negative"),
        (0.05, {"paint": 0.01}, "unknown"),
    ],
)
def test_budget_split_errors(budget: float, explicit: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        split_budget(budget, explicit)


def test_budget_from_config_file(tmp_path: Path) -> None:
    assert split_false_reject_budget(Config()) == FalseRejectBudget(0.01, 0.02, 0.02)
    path = tmp_path / "line.toml"
    path.write_text(
        "[pipeline]\nfalse_reject_budget = 0.08\n[screening]\nreview_rate = 0.03\n", encoding="utf-8"
    )
    b = split_false_reject_budget(load_config(path))
    assert (b.screening, b.review, b.rework) == pytest.approx((0.05 / 3, 0.03, 0.1 / 3))
    frozen = b
    with pytest.raises(AttributeError):
        frozen.screening = 0.5  # type: ignore[misc]


# ----------------------------------------------------------------------------------------- tail fit


def _frame_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Worst of 9 tiles, as a frame scores."""
    return 2.0 + 0.3 * rng.normal(size=(n, 9)).max(1)


def test_tail_threshold_holds_on_unseen_frames() -> None:
    rng = np.random.default_rng(0)
    unseen = _frame_scores(rng, 200_000)
    measured, covered = [], 0
    for seed in range(8):  # 8 pilot sets of 200 good frames each
        fit = tail_threshold(_frame_scores(rng, 200), 0.01, seed=seed, bootstrap=100)
        assert fit.method == "gpd" and fit.n_frames == 200
        measured.append(float((unseen > fit.threshold).mean()))
        covered += fit.interval[0] <= measured[-1] <= fit.interval[1]
    assert 0.005 <= float(np.mean(measured)) <= 0.02 and max(measured) < 0.035
    assert covered >= 6
    # The old rule with 6 val frames: their maximum, exceeded by about 1 frame in 7.
    old = float((unseen > _frame_scores(rng, 6).max()).mean())
    assert old > 0.05


def test_too_few_frames_for_the_target_is_said_plainly(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(1)
    scores = _frame_scores(rng, 12)
    with caplog.at_level(logging.WARNING):
        info = calibrate_good_scores(scores, [f"f{i}" for i in range(12)], 0.01, 0.02)
    assert info["flag_fit"]["method"] == "empirical" and info["threshold"] == pytest.approx(scores.max())
    assert info["expected_false_reject_rate"] == pytest.approx(1 / 13)
    assert "12 good frames support a false-reject target of about 7.7%; asked 1.0%" in info["statement"]
    assert "empirical quantile of 12 good frames" in caplog.text
    lo, hi = info["expected_false_reject_interval"]
    assert lo < 1 / 13 < hi


def test_one_outlier_frame_does_not_move_the_threshold() -> None:
    rng = np.random.default_rng(2)
    scores = _frame_scores(rng, 60)
    names = [f"f{i}" for i in range(61)]
    clean = calibrate_good_scores(scores, names[:60], 0.01, 0.02)
    dirty = calibrate_good_scores(np.append(scores, 40.0), names, 0.01, 0.02)
    assert dirty["outlier_frames"] == [{"frame": "f60", "score": 40.0}]
    assert abs(dirty["threshold"] / clean["threshold"] - 1) < 0.02
    assert robust_outliers(scores).size == 0


def test_marginal_band_is_a_share_of_good_frames() -> None:
    rng = np.random.default_rng(3)
    scores = _frame_scores(rng, 300)
    info = calibrate_good_scores(scores, [str(i) for i in range(300)], 0.01, 0.03)
    assert info["marginal_threshold"] < info["threshold"]
    unseen = _frame_scores(rng, 100_000)
    band = float(((unseen > info["marginal_threshold"]) & (unseen <= info["threshold"])).mean())
    assert 0.015 <= band <= 0.05
    assert info["expected_review_rate"] == pytest.approx(0.03, abs=0.01)
    none = calibrate_good_scores(scores, [str(i) for i in range(300)], 0.01, 0.0)
    assert none["marginal_threshold"] is None
    old = calibrate_good_scores(scores, [str(i) for i in range(300)], 0.01, None, marginal_fraction=0.9)
    assert old["marginal_threshold"] == pytest.approx(0.9 * old["threshold"])


# ----------------------------------------------------------------------------------------- model file


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (unfitted-by-data) ringtexture model with a small random bank, saved."""
    cfg = Config()
    screen = new_model(cfg, "model1")
    dim = int(screen.embed(screen.preprocess([np.full((64, 64), 120, np.uint8)])).shape[1])
    screen.set_memory_bank(torch.rand(64, dim, generator=torch.Generator().manual_seed(0)))
    screen.meta.threshold = 2.5
    screen.meta.marginal_threshold = 2.3
    return screen.save(tmp_path_factory.mktemp("model") / "screening")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("threshold", "NaN", "'threshold'"),
        ("threshold", "Infinity", "'threshold'"),
        ("threshold", "-1.0", "'threshold'"),
        ("threshold", '"2.5"', "'threshold'"),
        ("threshold", "null", "'threshold'"),
        ("format_version", "[1]", "'format_version'"),
        ("format_version", '"1"', "'format_version'"),
        ("marginal_threshold", "3.0", "'marginal_threshold'"),
        ("input_size", '"640"', "'input_size'"),
        ("layers", '"fine"', "'layers'"),
    ],
)
def test_bad_metadata_values_are_one_line_errors(
    saved_model: Path, tmp_path: Path, key: str, value: str, match: str
) -> None:
    copy = tmp_path / "m"
    shutil.copytree(saved_model, copy)
    meta = copy / META_FILE
    raw = json.loads(meta.read_text())
    raw[key] = "__X__"
    meta.write_text(json.dumps(raw).replace('"__X__"', value), encoding="utf-8")
    with pytest.raises(ModelFileError, match=match) as err:
        ScreeningModel.load(copy)
    assert str(meta) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["threshold", "oring_type", "backbone", "layers", "tile_size"])
def test_missing_metadata_key_is_named(saved_model: Path, tmp_path: Path, key: str) -> None:
    copy = tmp_path / "m"
    shutil.copytree(saved_model, copy)
    raw = json.loads((copy / META_FILE).read_text())
    del raw[key]
    (copy / META_FILE).write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ModelFileError, match=f"no '{key}' key"):
        ScreeningModel.load(copy)


def test_good_metadata_loads(saved_model: Path) -> None:
    m = ScreeningModel.load(saved_model, expected_type="model1")
    assert m.threshold == 2.5 and m.meta.marginal_threshold == 2.3


# ----------------------------------------------------------------------------------------- recalibration


def test_recalibrate_records_history_and_refuses_bad_sets(saved_model: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(saved_model, copy)
    screen = ScreeningModel.load(copy)
    screen.meta.calibration = {"ring_size": {"n_frames": 30, "outer_radius_px": 650.0, "inner_ratio": 0.6}}
    cfg = Config()
    rng = np.random.default_rng(4)
    scores = 2.2 + 0.1 * rng.normal(size=(40, 9)).max(1)  # lighting drift: a bit higher than before
    names = [f"new/f{i}.bmp" for i in range(40)]
    same = [(650.0 + rng.normal(0, 3), 390.0 + rng.normal(0, 2)) for _ in range(40)]
    with pytest.raises(CalibrationError, match="at least 10"):
        recalibrate(screen, names[:5], scores[:5], cfg)
    with pytest.raises(CalibrationError, match="score above the model's threshold"):
        recalibrate(screen, names, scores + 1.0, cfg)
    smaller = [(605.0 + rng.normal(0, 3), 345.0 + rng.normal(0, 2)) for _ in range(40)]
    with pytest.raises(CalibrationError, match="not the size of the 'model1' rings"):
        recalibrate(screen, names, scores, cfg, sizes=smaller)
    assert screen.meta.threshold == 2.5 and not screen.meta.history  # nothing changed by a refusal
    info = recalibrate(screen, names, scores, cfg, sizes=same, source="test")
    screen.save_meta(copy)
    again = ScreeningModel.load(copy)
    last = again.meta.history[-1]
    assert last["old_threshold"] == 2.5 and last["new_threshold"] == pytest.approx(info["threshold"])
    assert last["n_frames"] == 40 and last["source"] == "test" and last["date"]
    assert again.threshold == pytest.approx(info["threshold"]) and again.meta.calibration["recalibrated"]
    # One outlier frame among the new ones does not move the threshold much.
    screen2 = ScreeningModel.load(saved_model)
    with_outlier = recalibrate(screen2, [*names, "new/odd.bmp"], np.append(scores, 9.0), cfg)
    assert abs(with_outlier["threshold"] / info["threshold"] - 1) < 0.02
    assert with_outlier["outlier_frames"][0]["frame"] == "new/odd.bmp"


def test_another_types_folder_is_refused(tmp_path: Path) -> None:
    cfg = Config()
    with pytest.raises(CalibrationError, match="'model2'"):
        check_frames_folder(cfg, "model1", tmp_path / "good")  # model2's good folder
    with pytest.raises(CalibrationError, match="defect"):
        check_frames_folder(cfg, "model1", tmp_path / "model1defect")
    check_frames_folder(cfg, "model1", tmp_path / "model1good")
    check_frames_folder(cfg, "model1", tmp_path / "after_relamping")


SMALL = (816, 683)  # a third of a frame: one tile per ring keeps the end-to-end test short
TOML = """
[frame]
accept_any_size = true
[screening]
max_bank_size = 1024
batch_size = 4
"""


@pytest.mark.slow
def test_cli_train_then_recalibrate_and_refuse_another_type(tmp_path: Path) -> None:
    from oringscan.preprocess import preprocess_type

    config_path = tmp_path / "small.toml"
    config_path.write_text(TOML, encoding="utf-8")
    cfg = load_config(config_path)
    data = make_small_dataset(
        tmp_path, n_good=14, n_defect=2, n_rework=0, seed=3, color_fraction=0.0, size=SMALL, config=cfg
    )
    out = tmp_path / "out"
    preprocess_type(cfg, data, out, "model1", progress=False, workers=1)
    runner = CliRunner()
    common = ["--model", "model1", "--output", str(out), "--config", str(config_path), "--threads", "1"]
    common += ["--data", str(data)]  # the source frames: the ring-shape screen measures them
    r = runner.invoke(cli, ["train", "screening", *common, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "good frames support a false-reject target of about" in r.output
    assert "shape screen: threshold 13.86 px" in r.output  # at the lint height (1.15 x 12 px) on these rings
    for typ in ("model1", "model2"):
        folder = tmp_path / f"new {typ}"
        for i in range(10):
            frame = render_frame(
                "good", np.random.default_rng(500 + i), oring_type=typ, size=SMALL, polarity="light"
            )
            write_frame(folder / f"f{i}.bmp", frame.image)
    meta_path = out / "model1" / "screening" / META_FILE
    before = json.loads(meta_path.read_text())
    r = runner.invoke(cli, ["calibrate", "screening", *common, "--frames", str(tmp_path / "new model2")])
    assert r.exit_code != 0 and "not the size of the 'model1' rings" in r.output
    assert json.loads(meta_path.read_text()) == before  # refused: nothing written
    r = runner.invoke(cli, ["calibrate", "screening", *common, "--frames", str(tmp_path / "new model1")])
    assert r.exit_code == 0, r.output
    after = json.loads(meta_path.read_text())
    assert after["history"][-1]["old_threshold"] == pytest.approx(before["threshold"])
    assert after["history"][-1]["n_frames"] == 10 and math.isfinite(after["threshold"])
    assert after["calibration"]["shape_screen"] == before["calibration"]["shape_screen"]  # kept
    assert "10 good frames support a false-reject target of about 9.1%" in r.output
