"""Screening: fit + score on tiny synthetic data, anomalib parity, persistence, CLI, calibration."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.synthdata import make_small_dataset

from oringscan.cli.main import cli
from oringscan.config import Config
from oringscan.errors import ModelFileError
from oringscan.frames import write_frame
from oringscan.screening import ScreeningModel, save_heatmap, screening_dir
from oringscan.screening.backbones import build_extractor, find_cached_weights
from oringscan.screening.coreset import StreamingCoreset, k_center_greedy, min_sq_distances
from oringscan.screening.data import load_split
from oringscan.screening.fit import calibrate
from oringscan.screening.metrics import auroc, best_f1, recall_by_size
from oringscan.screening.model import BANK_FILE, META_FILE, quantile_higher
from oringscan.synth import render_frame
from oringscan.types import Tile, TileBox

TOML = """
[screening]
max_bank_size = 2048
batch_size = 4
"""


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic frames -> preprocess -> `oringscan train screening` through the CLI (once)."""
    from oringscan.preprocess import preprocess_type

    base = tmp_path_factory.mktemp("screening with space")
    config_path = base / "screen.toml"
    config_path.write_text(TOML, encoding="utf-8")
    data = make_small_dataset(base, n_good=8, n_defect=3, n_rework=0, seed=3, color_fraction=0.0)
    out = base / "out"
    config = Config()
    preprocess_type(config, data, out, "model1", progress=False, workers=1)
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "screening",
            "--model",
            "model1",
            "--output",
            str(out),
            "--config",
            str(config_path),
            "--no-progress",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    return {"data": data, "out": out, "config_path": config_path, "train_output": result.output}


@pytest.fixture(scope="session")
def model(trained: dict) -> ScreeningModel:
    return ScreeningModel.load(screening_dir(trained["out"], "model1"), expected_type="model1")


def test_train_writes_bank_and_metadata(trained: dict, model: ScreeningModel) -> None:
    assert "threshold" in trained["train_output"]
    d = screening_dir(trained["out"], "model1")
    meta = json.loads((d / META_FILE).read_text())
    for key in (
        "backbone",
        "layers",
        "input_size",
        "threshold",
        "train_fingerprint",
        "pretrained",
        "versions",
        "oring_type",
    ):
        assert key in meta
    assert (
        meta["oring_type"] == "model1" and meta["pretrained"] is False and meta["backbone"] == "ringtexture"
    )
    assert meta["versions"]["anomalib"].startswith("2.7")
    assert 0 < meta["bank_size"] <= 2048 and len(meta["train_fingerprint"]) == 16
    cal = meta["calibration"]
    assert math.isfinite(cal["threshold"]) and model.threshold == pytest.approx(cal["threshold"])
    # Cross-fitted on every good train+val frame; the few frames here cannot support 1 %: said plainly.
    assert cal["folds"] >= 2 and cal["n_good_frames"] == len(meta["oof_scores"]) >= 6
    assert cal["false_reject_rate_target"] == pytest.approx(0.01)
    lo, hi = cal["expected_false_reject_interval"]
    assert 0 <= lo <= cal["expected_false_reject_rate"] <= hi <= 1
    assert "support a false-reject target of about" in cal["statement"] and "asked 1.0%" in cal["statement"]
    assert cal["statement"] in trained["train_output"]
    assert meta["history"] and meta["history"][0]["source"] == "train screening"
    assert meta["marginal_threshold"] is None or meta["marginal_threshold"] <= meta["threshold"]


def test_score_tiles_frame_is_worst_tile(model: ScreeningModel) -> None:
    frame = render_frame("defect", np.random.default_rng(11)).image
    result = model.score_frame(frame, with_maps=True)
    scores = [t.score for t in result.tiles]
    assert len(scores) >= 4 and result.score == pytest.approx(max(scores))
    assert result.flagged == (result.score > result.threshold)
    assert all(t.flagged == (t.score > result.threshold) for t in result.tiles)
    assert result.anomaly_maps is not None and result.anomaly_maps[0].shape == (640, 640)
    j = result.to_json()
    assert set(j) >= {"score", "threshold", "flagged", "marginal", "tiles"}


def test_defect_scores_above_good(model: ScreeningModel) -> None:
    """A clear dark hole in a good frame's ring must raise that tile's score."""
    good = render_frame("good", np.random.default_rng(5), polarity="light").image
    from oringscan.roi import find_ring

    roi = find_ring(good)
    depth = cv2.distanceTransform(roi.ring_mask.astype(np.uint8), cv2.DIST_L2, 5)
    cy, cx = np.unravel_index(int(np.argmax(depth)), depth.shape)  # the middle of the wall
    holed = good.copy()
    cv2.circle(holed, (int(cx), int(cy)), 6, 20, -1)
    before, after = model.score_frame(good), model.score_frame(holed)
    assert after.score > before.score * 1.2


def test_same_scores_as_anomalib(model: ScreeningModel, trained: dict) -> None:
    """Our batched path equals anomalib's PatchcoreModel.forward on the same tiles."""
    recs = load_split(trained["out"], "model1", "val")[:4]
    images = [cv2.imread(str(r.path), cv2.IMREAD_GRAYSCALE) for r in recs]
    ours, maps = model.score_images(images, with_maps=True)
    with torch.no_grad():
        ref = model.patchcore(model.preprocess(images))
    np.testing.assert_allclose(ours, ref.pred_score.numpy(), rtol=1e-4)
    np.testing.assert_allclose(np.stack(maps), ref.anomaly_map[:, 0].numpy(), rtol=1e-3, atol=1e-3)


def test_round_trip_and_errors(model: ScreeningModel, trained: dict, tmp_path: Path) -> None:
    src = screening_dir(trained["out"], "model1")
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    again = ScreeningModel.load(copy, expected_type="model1")
    tile = load_split(trained["out"], "model1", "val")[0]
    img = cv2.imread(str(tile.path), cv2.IMREAD_GRAYSCALE)
    assert again.score_images([img])[0][0] == pytest.approx(model.score_images([img])[0][0], rel=1e-6)
    assert torch.equal(again.memory_bank, model.memory_bank)

    with pytest.raises(ModelFileError, match="model1.*not 'model2'"):
        ScreeningModel.load(copy, expected_type="model2")
    with pytest.raises(ModelFileError, match="not found"):
        ScreeningModel.load(tmp_path / "nowhere", expected_type="model1")

    bank = copy / BANK_FILE
    bank.write_bytes(bank.read_bytes()[: bank.stat().st_size // 3])
    with pytest.raises(ModelFileError, match="corrupt memory bank"):
        ScreeningModel.load(copy, expected_type="model1")
    (copy / META_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelFileError, match="corrupt screening metadata"):
        ScreeningModel.load(copy, expected_type="model1")


def test_cli_screen_json_frames_tiles_and_a_broken_file(trained: dict, tmp_path: Path) -> None:
    folder = tmp_path / "in put"
    frame = render_frame("good", np.random.default_rng(21)).image
    write_frame(folder / "frame.bmp", frame)
    tile = load_split(trained["out"], "model1", "val")[0]
    shutil.copy(tile.path, folder / "tile.png")
    (folder / "broken.bmp").write_bytes(b"BM not really")
    heat = tmp_path / "heat"
    result = CliRunner().invoke(
        cli,
        [
            "screen",
            "--model",
            "model1",
            "--output",
            str(trained["out"]),
            "--folder",
            str(folder),
            "--json",
            "--heatmaps",
            str(heat),
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 3, result.output  # broken.bmp is an error; the rest were screened
    rows = json.loads(result.stdout[result.stdout.index("[") :])
    by_name = {Path(r["image"]).name: r for r in rows}
    assert set(by_name) == {"frame.bmp", "tile.png", "broken.bmp"}
    assert "error" in by_name["broken.bmp"] and "broken.bmp" in by_name["broken.bmp"]["error"]
    for name in ("frame.bmp", "tile.png"):
        r = by_name[name]
        assert set(r) >= {"image", "score", "threshold", "flagged", "tiles"}
        assert r["score"] == pytest.approx(max(t["score"] for t in r["tiles"]), abs=1e-5)
        for t in r["tiles"]:
            assert set(t) >= {"x", "y", "w", "h", "score", "flagged"}
    assert len(by_name["tile.png"]["tiles"]) == 1 and len(by_name["frame.bmp"]["tiles"]) >= 4
    assert (heat / "frame_heatmap.png").is_file()


def test_cli_screen_needs_one_input_and_a_model(trained: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["screen", "--model", "model1", "--output", str(trained["out"])])
    assert r.exit_code != 0 and "--image" in r.output
    image = tmp_path / "x.bmp"  # exists: the missing model2 screen is what fails
    image.write_bytes(b"BM")
    r = runner.invoke(
        cli, ["screen", "--model", "model2", "--output", str(trained["out"]), "--image", str(image)]
    )
    assert r.exit_code == 1 and "not found" in r.output and len(r.output.strip().splitlines()) == 1


def test_cli_evaluate(trained: dict) -> None:
    r = CliRunner().invoke(
        cli,
        [
            "evaluate",
            "screening",
            "--model",
            "model1",
            "--output",
            str(trained["out"]),
            "--split",
            "val",
            "--no-progress",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    ev = screening_dir(trained["out"], "model1") / "evaluation"
    m = json.loads((ev / "metrics.json").read_text())
    assert {"tiles", "frames", "recall_by_defect_size", "threshold"} <= set(m)
    assert set(m["recall_by_defect_size"]) == {"few_px", "tens_of_px", "large"}
    assert (ev / "histogram.png").is_file()
    if m["frames"]["n_defect"] and m["frames"]["n"] > m["frames"]["n_defect"]:
        assert (ev / "roc.png").is_file()


def test_heatmap_png(model: ScreeningModel, tmp_path: Path) -> None:
    tile = np.full((640, 640), 160, np.uint8)
    cv2.circle(tile, (300, 300), 8, 10, -1)
    result = model.score_tiles([Tile(TileBox(0, 0, 640, 640), tile, 1.0)], with_maps=True)
    path = save_heatmap(tmp_path / "h.png", tile, result)
    img = cv2.imread(str(path))
    assert img.shape == (640, 640, 3)
    assert img[300, 300, 2] > img[300, 300, 0]  # the hole is drawn hot (red over blue)


def test_calibration_threshold_at_false_reject_rate(model: ScreeningModel) -> None:
    from oringscan.workspace import TileAnnotation, TileRecord

    rng = np.random.default_rng(0)
    records, scores = [], []
    for i in range(200):  # 200 good frames with 2 tiles each, 20 defect frames
        for j in range(2):
            records.append(TileRecord(Path(f"g{i}_{j}.png"), 640, 640, source_image=f"good{i}", tile_x=j))
            scores.append(rng.normal(1.0, 0.1))
    for i in range(20):
        area = 50.0 if i % 2 else 5000.0
        records.append(
            TileRecord(
                Path(f"d{i}.png"), 640, 640, source_image=f"bad{i}", annotations=[TileAnnotation(1, [], area)]
            )
        )
        scores.append(2.0 + i * 0.01)
    cfg = Config()
    cfg.screening.false_reject_rate = 0.05  # explicit: the whole (default 5 %) budget
    cfg.screening.marginal_fraction = 0.9  # an old config's fixed band still works
    saved = (model.meta.threshold, model.meta.marginal_threshold)
    try:
        info = calibrate(model, records, np.array(scores), cfg)
    finally:
        model.meta.threshold, model.meta.marginal_threshold = saved
    assert info["frame_false_reject_rate"] <= 0.05 and info["frame_false_reject_rate"] >= 0.03
    assert info["frame_recall_at_threshold"] == 1.0 and info["best_f1_frame"]["f1"] == 1.0
    assert info["marginal_threshold"] == pytest.approx(0.9 * info["threshold"])
    sizes = recall_by_size(records, np.array(scores), info["threshold"])
    assert sizes["few_px"]["n"] == 10 and sizes["large"]["n"] == 10 and sizes["tens_of_px"]["n"] == 0


def test_metric_helpers() -> None:
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == 1.0
    assert auroc(np.array([0.1, 0.2]), np.array([0, 0])) is None
    assert auroc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert best_f1(np.array([0.1, 0.9]), np.array([0, 1]))["f1"] == 1.0
    assert quantile_higher(np.arange(1, 101), 0.99) == 99
    assert quantile_higher(np.arange(1, 11), 0.99) == 10


def test_k_center_greedy_covers_like_anomalib() -> None:
    from anomalib.models.components import KCenterGreedy

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(3000, 16, generator=gen) * s for s in (0.2, 1.0, 3.0)])
    ours = x[k_center_greedy(x, 200, batch=16)]
    torch.manual_seed(0)
    ref = KCenterGreedy(x, sampling_ratio=200 / len(x)).sample_coreset()
    r_ours = min_sq_distances(x, ours).max().sqrt()
    r_ref = min_sq_distances(x, ref).max().sqrt()
    assert len(ours) == 200 and r_ours <= 1.25 * r_ref


def test_streaming_coreset_bounded_and_reaches_target() -> None:
    gen = torch.Generator().manual_seed(1)
    stream = StreamingCoreset(dim=32, target=500, total=20_000, chunk_rows=4000, proj_dim=16)
    peak = 0
    for _ in range(10):
        stream.add(torch.randn(2000, 32, generator=gen))
        peak = max(peak, stream._buffered + stream.bank.shape[0])
    bank = stream.finish()
    assert bank.shape == (500, 32) and peak <= 4000 + 500


def test_pretrained_weights_from_cache_and_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import timm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert find_cached_weights("resnet18") is None
    with caplog.at_level(logging.WARNING):
        _, source = build_extractor("resnet18", ["layer2", "layer3"], None)
    assert source is None
    ckpt_dir = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.manual_seed(123)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    torch.save(state, ckpt_dir / "resnet18-f37072fd.pth")
    extractor, source = build_extractor("resnet18", ["layer2", "layer3"], None)
    assert source is not None and source.endswith("resnet18-f37072fd.pth")
    assert torch.equal(extractor.feature_extractor.state_dict()["conv1.weight"], state["conv1.weight"])
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="bad.pth"):
        build_extractor("resnet18", ["layer2"], bad)


def test_dark_rings_are_inverted_light_rings_kept() -> None:
    from oringscan.config import Config
    from oringscan.roi import find_ring
    from oringscan.screening.model import light_ring
    from oringscan.tiling import ring_tiles

    cfg = Config()
    for polarity, inverted in (("light", False), ("dark", True)):
        gray = render_frame("good", np.random.default_rng(4), polarity=polarity).image
        tiles, _ = ring_tiles(gray, find_ring(gray, cfg.roi), cfg)
        for t in tiles:
            out = light_ring(t.image)
            assert (not np.array_equal(out, t.image)) == inverted
            assert np.array_equal(out == 0, t.image == 0)  # the subtracted background stays 0
