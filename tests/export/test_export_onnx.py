"""ONNX export: PatchCore and Mask R-CNN graphs agree with torch; the onnx runtime is what the pipeline loads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from oringscan.config import Config  # noqa: E402
from oringscan.errors import ModelFileError  # noqa: E402
from oringscan.roi import find_ring  # noqa: E402
from oringscan.screening.fit import fit_stream, new_model  # noqa: E402
from oringscan.screening.model import ScreeningModel  # noqa: E402
from oringscan.screening.onnx_export import (  # noqa: E402
    ONNX_FILE,
    OnnxScreeningModel,
    export_screening_onnx,
    parity,
)
from oringscan.synth import render_frame  # noqa: E402
from oringscan.tiling import ring_tiles  # noqa: E402

CFG = {
    "tiling": {"tile_size": 160, "overlap": 20},
    "frame": {"accept_any_size": True},
    "screening": {"max_bank_size": 700, "batch_size": 4},
}


def _tiles(config: Config, kind: str, seed: int) -> list[np.ndarray]:
    frame = render_frame(kind, np.random.default_rng(seed), size=(612, 512))  # type: ignore[arg-type]
    gray = frame.image if frame.image.ndim == 2 else frame.image.mean(2).astype(np.uint8)
    roi = find_ring(gray, config.roi)
    tiles, _ = ring_tiles(gray, roi, config)
    return [t.image for t in tiles]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A PatchCore screen fitted on two rendered frames' tiles, saved like `train screening` saves it."""
    torch.manual_seed(0)
    config = Config.model_validate(CFG)
    good = _tiles(config, "good", 1) + _tiles(config, "good", 2)
    screen = new_model(config, "model1")
    fit_stream(screen, iter([good[i : i + 4] for i in range(0, len(good), 4)]), len(good), config, False)
    screen.meta.threshold = 1.5
    directory = tmp_path_factory.mktemp("onnx") / "screening"
    screen.save(directory)
    screen = ScreeningModel.load(directory, expected_type="model1")
    check = _tiles(config, "defect", 5) + good[:3]
    return {"config": config, "screen": screen, "dir": directory, "check": check}


def test_screening_graph_matches_torch_and_holds_the_bank_once(fitted: dict) -> None:
    screen, directory = fitted["screen"], fitted["dir"]
    rows = int(screen.memory_bank.shape[0])
    info = export_screening_onnx(screen, directory, chunk_rows=128, check_tiles=fitted["check"])
    assert info["parity"]["tiles"] == len(fitted["check"]) > 4
    assert info["parity"]["max_score_diff"] < 1e-4
    assert info["parity"]["max_map_diff"] < 1e-4
    graph = onnx.load(str(directory / ONNX_FILE))
    bank_like = [i for i in graph.graph.initializer if list(i.dims) == [rows, screen.memory_bank.shape[1]]]
    assert len(bank_like) == 1  # the bank is one constant of its real size, not folded into copies
    # The kNN walks the bank in chunks: one distance product per chunk, never queries x whole bank.
    matmuls = [n for n in graph.graph.node if n.op_type == "MatMul"]
    assert len(matmuls) >= math.ceil(rows / 128)
    assert json.loads((directory / "model.onnx.json").read_text())["bank_rows"] == rows


def test_onnx_screen_gives_the_same_verdicts_and_refuses_a_stale_graph(fitted: dict, tmp_path: Path) -> None:
    screen, directory = fitted["screen"], fitted["dir"]
    if not (directory / ONNX_FILE).is_file():
        export_screening_onnx(screen, directory)
    onnx_screen = OnnxScreeningModel.load(directory, expected_type="model1")
    assert parity(screen, onnx_screen, fitted["check"][:3])["max_score_diff"] < 1e-4
    from oringscan.types import Tile, TileBox

    tiles = [Tile(TileBox(0, 0, img.shape[1], img.shape[0]), img) for img in fitted["check"]]
    a, b = screen.score_tiles(tiles), onnx_screen.score_tiles(tiles)
    assert [t.flagged for t in a.tiles] == [t.flagged for t in b.tiles]
    assert abs(a.score - b.score) < 1e-4 and a.flagged == b.flagged
    with pytest.raises(ModelFileError, match="other"):
        OnnxScreeningModel.load(directory, expected_type="other")
    # A refitted bank next to an old graph: refused, never silently paired.
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("metadata.json", "model.onnx", "model.onnx.json", "memory_bank.safetensors"):
        (stale / name).write_bytes((directory / name).read_bytes())
    with open(stale / "memory_bank.safetensors", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(ModelFileError, match="older fit"):
        OnnxScreeningModel.load(stale)
    (stale / "model.onnx").write_bytes(b"not onnx")
    (stale / "model.onnx.json").unlink()
    with pytest.raises(ModelFileError, match="cannot load ONNX"):
        OnnxScreeningModel.load(stale)


def test_pipeline_runtime_onnx_loads_the_exported_screen(fitted: dict, tmp_path: Path) -> None:
    from oringscan.export.models import load_screening_stage

    directory = fitted["dir"]
    if not (directory / ONNX_FILE).is_file():
        export_screening_onnx(fitted["screen"], directory)
    config = Config.model_validate({**CFG, "pipeline": {"runtime": "onnx"}})
    assert isinstance(load_screening_stage(directory, "model1", config), OnnxScreeningModel)
    torch_stage = load_screening_stage(directory, "model1", Config.model_validate(CFG))
    assert type(torch_stage) is ScreeningModel
    for name in ("metadata.json", "memory_bank.safetensors"):  # a fitted model never exported
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    with pytest.raises(ModelFileError, match="export model"):
        load_screening_stage(tmp_path, "model1", config)


def test_openvino_ir_from_the_onnx_screen_matches_torch(fitted: dict) -> None:
    pytest.importorskip("openvino")
    from oringscan.export.models import to_openvino

    screen, directory = fitted["screen"], fitted["dir"]
    if not (directory / ONNX_FILE).is_file():
        export_screening_onnx(screen, directory)
    xml, info = to_openvino(directory / ONNX_FILE, screen, fitted["check"][:4])
    assert xml.is_file() and xml.with_suffix(".bin").stat().st_size > 0
    # OpenVINO's CPU plugin agrees to ~4e-3 here (onnxruntime: 1e-4); the pipeline does not run it.
    assert info["parity"]["max_score_diff"] < 1e-2


@pytest.mark.slow
def test_mask_rcnn_graph_gives_the_same_instances(tmp_path: Path) -> None:
    """torchvision Mask R-CNN (lite0_fpn) -> ONNX opset 17: same instances through the torch post-processing."""
    from oringscan.export.segmentation_onnx import OnnxSegmenter, export_segmenter_onnx
    from oringscan.segmentation.inference import Segmenter
    from oringscan.segmentation.models import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec("lite0_fpn", 2, 128, None, True, 3)
    training = Config().training.model_copy(update={"score_threshold": 0.3})
    seg = Segmenter(build_model(spec).eval(), spec, ["defect"], "model1", training, torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [(rng.random((128, 128)) * 255).astype(np.uint8)]
    out = tmp_path / "best_model.onnx"
    info = export_segmenter_onnx(seg, out, check_images=images)
    p = info["parity"]
    assert p["instances_torch"] == p["instances_onnx"] > 0
    assert p["identical"] >= 0.9 * p["instances_torch"]  # a random model's masks hover at 0.5
    assert p["max_score_diff"] < 1e-4
    onnx_seg = OnnxSegmenter.from_torch(seg, out)
    assert onnx_seg.exported_threshold == pytest.approx(0.3) and onnx_seg.class_names == ["defect"]


@pytest.mark.slow
def test_export_cli_and_onnx_runtime_inspect_like_torch(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`oringscan export model` on a trained type, then `[pipeline] runtime = "onnx"` inspects frames
    with the same verdicts, screening scores (1e-4) and defects as torch."""
    import shutil

    from click.testing import CliRunner

    from oringscan.cli.main import cli
    from oringscan.export.segmentation_onnx import OnnxSegmenter
    from oringscan.pipeline import Inspector

    out = tmp_path / "output"
    shutil.copytree(tiny_models.output_root, out)
    args = ["export", "model", "--model", tiny_models.model, "--output", str(out)]
    result = CliRunner().invoke(cli, [*args, "--config", str(tiny_models.config_path), "--check-tiles", "4"])
    assert result.exit_code == 0, result.output
    assert "screening:" in result.output and "segmentation:" in result.output, result.output
    config = tiny_models.config
    torch_insp = Inspector.load(config, out, tiny_models.model)
    onnx_config = config.model_copy(
        update={"pipeline": config.pipeline.model_copy(update={"runtime": "onnx"})}
    )
    onnx_insp = Inspector.load(onnx_config, out, tiny_models.model)
    assert isinstance(onnx_insp.screening, OnnxScreeningModel) and isinstance(
        onnx_insp.segmenter, OnnxSegmenter
    )
    frames = sorted((tiny_models.data_root / "images").glob("model1*/*.bmp"))[::3][:4]
    from oringscan.frames import read_frame

    for path in frames:
        gray = read_frame(path, config.frame).image
        a, b = torch_insp.inspect_array(gray, path.name), onnx_insp.inspect_array(gray, path.name)
        assert a.verdict == b.verdict, (path.name, a.reasons, b.reasons)
        assert a.screening is not None and b.screening is not None
        assert abs(a.screening.score - b.screening.score) < 1e-4
        assert [(d.label, d.offset, d.area) for d in a.defects] == [
            (d.label, d.offset, d.area) for d in b.defects
        ]


# --- the second stages -------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["semantic", "classifier"])
def second_stage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A semantic segmenter / tile classifier trained one epoch on tiny COCO tiles (as `train segmentation`)."""
    from support.segmentation import tiny_config, write_tiny_coco

    from oringscan.segmentation import train_segmentation

    root = tmp_path_factory.mktemp(f"{request.param} onnx")
    write_tiny_coco(root, counts={"train": (3, 2), "val": (2, 1), "test": (2, 2)})
    config = tiny_config()
    seg = config.segmentation.model_copy(
        update={
            "stage": request.param,
            "epochs": 1,
            "semantic_model": "lraspp_mobilenet_v3_large",  # random init, small: the graph, not accuracy
            "classifier_model": "mobilenet_v3_small",
        }
    )
    config = config.model_copy(update={"segmentation": seg})
    train_segmentation(config, root, "model1", progress=False, echo=lambda _line: None)
    return {"stage": request.param, "root": root, "config": config}


def test_second_stage_exports_with_parity_and_runs_under_onnx_runtime(
    second_stage: dict, tmp_path: Path
) -> None:
    """`export model` takes whichever stage the checkpoint holds; onnxruntime gives torch's
    probabilities (1e-4), instances and tile decisions; `runtime = "onnx"` loads the graph."""
    import os

    from click.testing import CliRunner

    from oringscan.cli.main import cli
    from oringscan.config import config_to_toml
    from oringscan.export.dense_onnx import OnnxNet, dense_parity
    from oringscan.segmentation import stage_from_config
    from oringscan.segmentation.dataset import read_gray
    from oringscan.types import Tile, TileBox
    from oringscan.workspace import TypeWorkspace

    stage_name, root, config = second_stage["stage"], second_stage["root"], second_stage["config"]
    config_path = tmp_path / "stage.toml"
    config_path.write_text(config_to_toml(config), encoding="utf-8")
    args = ["export", "model", "--model", "model1", "--output", str(root), "--config", str(config_path)]
    result = CliRunner().invoke(cli, [*args, "--stage", "segmentation", "--check-tiles", "4", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout[result.stdout.index("{") :])["segmentation"]
    assert info["stage"] == stage_name and info["opset"] == 17
    parity = info["parity"]
    assert parity["tiles"] == 4 and parity["max_probability_diff"] < 1e-4 and parity["max_score_diff"] < 1e-4
    assert parity["instances_torch"] == parity["instances_onnx"] == parity["identical"]
    assert parity["same_tile_decisions"] is True

    workspace = TypeWorkspace.from_config(config, root, "model1")
    torch_stage = stage_from_config(config, workspace, "cpu")
    onnx_config = config.model_copy(
        update={"pipeline": config.pipeline.model_copy(update={"runtime": "onnx"})}
    )
    onnx_stage = stage_from_config(onnx_config, workspace, "cpu")
    assert type(onnx_stage) is type(torch_stage) and isinstance(onnx_stage.model, OnnxNet)
    assert not isinstance(torch_stage.model, OnnxNet)  # the twin is a copy: the torch stage is untouched
    grays = [read_gray(r.path) for r in workspace.read_split("test", ["defect"])]
    low = dense_parity(torch_stage, onnx_stage, grays)
    assert low["max_probability_diff"] < 1e-4 and low["same_tile_decisions"]
    every = [
        torch_stage.predict_arrays(grays, score_threshold=0.0),
        onnx_stage.predict_arrays(grays, score_threshold=0.0),
    ]
    assert sum(map(len, every[0])) > 0  # instances to compare, not an empty match
    if stage_name == "classifier":
        assert sum(map(len, every[0])) == len(grays)  # every tile at score 0: the decisions are real
    assert [[(i.label, i.offset, i.area) for i in t] for t in every[0]] == [
        [(i.label, i.offset, i.area) for i in t] for t in every[1]
    ]
    for a, b in zip(every[0], every[1], strict=True):
        assert all(abs(p.score - q.score) < 1e-4 for p, q in zip(a, b, strict=True))
    tiles = [Tile(TileBox(50 + 100 * k, 40, g.shape[1], g.shape[0]), g, 1.0) for k, g in enumerate(grays)]
    assert [(d.label, d.offset, d.area) for d in torch_stage.predict_tiles(tiles)] == [
        (d.label, d.offset, d.area) for d in onnx_stage.predict_tiles(tiles)
    ]

    # A checkpoint retrained after the export: refused, never silently paired with the old graph.
    ckpt = workspace.best_checkpoint
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(ModelFileError, match="another checkpoint"):
        stage_from_config(onnx_config, workspace, "cpu")
    summary = ckpt.with_name("best_model.onnx.json")
    other = "semantic" if stage_name == "classifier" else "classifier"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "stage": other}))
    with pytest.raises(ModelFileError, match=f"holds the {other} stage"):
        stage_from_config(onnx_config, workspace, "cpu")


# --- the screening alternatives ----------------------------------------------------------------

ALT_CFG = {**CFG, "screening": {"batch_size": 4, "calibration_folds": 2, "train_steps": 2}}


def _alt_screen(kind: str, config: Config, good: list[np.ndarray], sources: list[str]):  # type: ignore[no-untyped-def]
    """PaDiM / FastFlow cross-fitted on the good tiles as `train screening` does (two folds, two flow
    steps); EfficientAD (256 px PDNs, minutes to fit on one core) random-initialised with its
    statistics set, so the graph runs the branches of a fitted model: parity, not accuracy."""
    from oringscan.screening.alternatives import cross_fit_alt, new_alt_model

    torch.manual_seed(0)
    screen = new_alt_model(config, "model1")
    if kind != "efficient_ad":
        cross_fit_alt(screen, good, sources, np.ones(len(good), dtype=bool), config)
        return screen
    net = screen.net.net
    net.mean_std["mean"].data = torch.full_like(net.mean_std["mean"], 0.1)
    net.mean_std["std"].data = torch.full_like(net.mean_std["std"], 2.0)
    with torch.no_grad():
        st, ae = net.get_maps(screen.net.raw(screen.preprocess(good[:2])), normalize=False)
    for name, t in (("st", st), ("ae", ae)):
        net.quantiles[f"qa_{name}"].data = torch.quantile(t.flatten(), 0.9)
        net.quantiles[f"qb_{name}"].data = torch.quantile(t.flatten(), 0.995)
    del screen.net.teacher_source
    return screen


@pytest.fixture(scope="module", params=["padim", "fastflow", "efficient_ad"])
def alt_fitted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An alternative screen saved in a type's workspace, as `train screening` leaves it."""
    from oringscan.workspace import TypeWorkspace

    kind = request.param
    config = Config.model_validate({**ALT_CFG, "screening": {**ALT_CFG["screening"], "model": kind}})
    g1, g2 = _tiles(config, "good", 1), _tiles(config, "good", 2)
    screen = _alt_screen(kind, config, g1 + g2, ["a"] * len(g1) + ["b"] * len(g2))
    n = 1 if kind == "efficient_ad" else 5
    check = _tiles(config, "defect", 5)[:n] + g1[:1]
    # The threshold between the middle scores of the check tiles: flagged and passed tiles to compare.
    s = np.sort(screen.score_images(check)[0])
    screen.meta.threshold = float(s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    root = tmp_path_factory.mktemp(f"alt {kind}")
    directory = TypeWorkspace.from_config(config, root, "model1").models_for(None).screening_dir
    screen.save(directory)
    loaded = ScreeningModel.load(directory, expected_type="model1")
    return {"kind": kind, "config": config, "root": root, "dir": directory, "screen": loaded, "check": check}


def test_alternative_screen_exports_with_parity_and_runs_under_onnx_runtime(alt_fitted: dict) -> None:
    """PaDiM, FastFlow and EfficientAD export as PatchCore does (same files, inputs and outputs);
    onnxruntime gives torch's tile scores (1e-4) and maps, and `runtime = "onnx"` loads the graph."""
    from oringscan.screening.alternatives import AltScreeningModel
    from oringscan.types import Tile, TileBox
    from oringscan.workspace import TypeWorkspace

    kind, screen, directory, check = (alt_fitted[k] for k in ("kind", "screen", "dir", "check"))
    assert isinstance(screen, AltScreeningModel) and screen.kind == kind
    info = export_screening_onnx(screen, directory, check_tiles=check)
    summary = json.loads((directory / "model.onnx.json").read_text())
    assert summary["model"] == kind == info["model"] and summary["opset"] == 17
    graph = onnx.load(str(directory / ONNX_FILE))
    assert [o.name for o in graph.graph.output] == ["scores", "anomaly_maps"]
    p = info["parity"]
    assert p["tiles"] == len(check) and p["max_score_diff"] < 1e-4
    if kind == "padim":
        # The filter bank's sqrt-of-variance channels near zero amplify float32 rounding (different
        # per runtime) and PaDiM's inverse covariance multiplies it: ~2e-4 on maps that reach ~50.
        _, maps = screen.score_images(check, with_maps=True)
        assert maps is not None and maps[0].shape == check[0].shape
        assert p["max_map_diff"] < 1e-5 * max(float(m.max()) for m in maps)
    else:
        assert p["max_map_diff"] < 1e-4

    config = alt_fitted["config"]
    onnx_config = config.model_copy(
        update={"pipeline": config.pipeline.model_copy(update={"runtime": "onnx"})}
    )
    workspace = TypeWorkspace.from_config(config, alt_fitted["root"], "model1")
    onnx_screen = ScreeningModel.from_config(onnx_config, workspace)  # what the Inspector loads
    assert isinstance(onnx_screen, OnnxScreeningModel) and onnx_screen.meta.model == kind
    tiles = [Tile(TileBox(0, 0, img.shape[1], img.shape[0]), img) for img in check]
    a, b = screen.score_tiles(tiles), onnx_screen.score_tiles(tiles)
    assert abs(a.score - b.score) < 1e-4 and a.flagged == b.flagged
    assert [t.flagged for t in a.tiles] == [t.flagged for t in b.tiles]
    assert any(t.flagged for t in a.tiles) and not all(t.flagged for t in a.tiles)  # decisions to compare


def test_alternative_exports_from_the_cli_and_a_foreign_or_stale_graph_is_refused(
    alt_fitted: dict, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from oringscan.cli.main import cli
    from oringscan.config import config_to_toml

    directory, kind = alt_fitted["dir"], alt_fitted["kind"]
    config_path = tmp_path / "alt.toml"
    config_path.write_text(config_to_toml(alt_fitted["config"]), encoding="utf-8")
    args = ["export", "model", "--model", "model1", "--output", str(alt_fitted["root"])]
    args += ["--config", str(config_path), "--stage", "screening", "--check-tiles", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (
        f"screening: {directory / ONNX_FILE}" in result.output and f"{kind} on ringtexture" in result.output
    )
    for name in ("metadata.json", "model.onnx", "model.onnx.json", "memory_bank.safetensors"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    summary = json.loads((tmp_path / "model.onnx.json").read_text())
    (tmp_path / "model.onnx.json").write_text(json.dumps({**summary, "model": "patchcore"}))
    with pytest.raises(
        ModelFileError, match=f"holds a patchcore screen, the fitted model is {alt_fitted['kind']}"
    ):
        OnnxScreeningModel.load(tmp_path)
    (tmp_path / "model.onnx.json").write_text(json.dumps(summary))
    with open(tmp_path / "memory_bank.safetensors", "ab") as fh:
        fh.write(b" ")
    with pytest.raises(ModelFileError, match="older fit"):
        OnnxScreeningModel.load(tmp_path)
