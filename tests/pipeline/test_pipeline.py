"""The inspection pipeline with real (tiny) models: camera callback, batch CLI, JSON, overlays,
broken inputs, rerun skipping, folder watching and the pipeline evaluation."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from support.pipeline import SIZE, TinyModels

from oringscan.cli.main import cli
from oringscan.db import FrameFilter, InspectionStore
from oringscan.frames import write_frame
from oringscan.pipeline import FrameRecorder, Inspector, Prefetcher, watch_folder
from oringscan.pipeline.batch import start_run
from oringscan.synth import render_frame
from oringscan.types import Verdict

STAGES = {"normalize", "roi", "tiles", "screening", "rework", "total"}


@pytest.fixture(scope="session")
def tiny_inspector(tiny_models: TinyModels) -> Inspector:
    return Inspector.load(tiny_models.config, tiny_models.output_root, tiny_models.model)


def frames_of(models: TinyModels, folder: str) -> list[Path]:
    return sorted((models.data_root / "images" / folder).glob("*.bmp"))


def cli_args(models: TinyModels, *args: str) -> list[str]:
    return [*args[:1], "--config", str(models.config_path), "--data", str(models.data_root), *args[1:]]


# --- camera callback ---------------------------------------------------------------------------


def test_inspect_array_gives_one_result_with_stage_timings(tiny_inspector: Inspector):
    frame = render_frame("good", np.random.default_rng(123), oring_type="model1", size=SIZE)
    result = tiny_inspector.inspect_array(frame.image, "cam0/0001")
    assert result.verdict in (Verdict.GOOD, Verdict.SUSPECT), result.reasons
    assert result.image == "cam0/0001" and result.oring_type == "model1"
    assert STAGES <= set(result.timings_ms)
    assert result.screening is not None and len(result.screening.tiles) > 4
    assert result.rework is not None and result.rework.checks
    doc = result.to_json()
    assert {"image", "verdict", "reasons", "screen_score", "defects", "rework", "timings_ms"} <= set(doc)
    json.dumps(doc)
    # The same frame 2x2-binned by the camera is scaled up and inspected, not refused.
    binned = cv2.resize(frame.image, (SIZE[0] // 2, SIZE[1] // 2), interpolation=cv2.INTER_AREA)
    again = tiny_inspector.inspect_array(binned, "cam0/0001-binned")
    assert again.verdict is not Verdict.ERROR, again.reasons


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((SIZE[1], SIZE[0]), np.uint16), "16-bit"),
        (np.full((SIZE[1], SIZE[0]), 18, np.uint8), "ring"),
        (np.zeros((600, 800), np.uint8), "expected 612x512"),
        (np.zeros((SIZE[1], SIZE[0], 2), np.uint8), "channel"),
    ],
)
def test_inspect_array_never_raises_for_a_bad_frame(
    tiny_inspector: Inspector, array: np.ndarray, needle: str
):
    result = tiny_inspector.inspect_array(array, "bad")
    assert result.verdict is Verdict.ERROR
    assert needle in result.error and needle in " ".join(result.reasons)


# --- batch CLI: broken inputs, JSON, database, overlays, rerun ---------------------------------


@pytest.fixture(scope="module")
def messy_batch(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real frames, the same defect frame as a PNG, and every kind of broken input."""
    folder = tmp_path_factory.mktemp("batch") / "line 3 frames"
    folder.mkdir()
    good = frames_of(tiny_models, "model1good")[0]
    bad = frames_of(tiny_models, "model1defect")[1]  # one the tiny screen flags (0000's is too subtle)
    files = {
        "good": shutil.copy(good, folder / "a_good.bmp"),
        "defect": shutil.copy(bad, folder / "b_defect.bmp"),
    }
    image = cv2.imread(str(bad), cv2.IMREAD_UNCHANGED)
    write_frame(folder / "c_defect.png", image)
    files["png"] = folder / "c_defect.png"
    files["zero"] = folder / "d_zero.bmp"
    files["zero"].write_bytes(b"")
    data = good.read_bytes()
    files["truncated"] = folder / "e_truncated.bmp"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["dir"] = folder / "f_folder.bmp"
    files["dir"].mkdir()
    files["deep"] = folder / "g_16bit.png"
    gray16 = (cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image).astype(np.uint16) * 257
    write_frame(files["deep"], gray16)
    files["size"] = folder / "h_wrong_size.bmp"
    write_frame(files["size"], np.zeros((600, 800), np.uint8))
    files["text"] = folder / "i_not_an_image.bmp"
    files["text"].write_text("camera log line, not a frame")
    return {k: Path(v) for k, v in files.items()} | {"folder": folder}


EXPECTED_ERRORS = {
    "zero": "empty file",
    "truncated": "truncated BMP",
    "dir": "directory",
    "deep": "16-bit",
    "size": "expected 612x512",
    "text": "not a BMP",
}


def test_batch_records_every_frame_and_goes_on_after_broken_files(
    tiny_models: TinyModels, messy_batch: dict[str, Path], tmp_path: Path, db_url: str
):
    url = db_url
    out = tmp_path / "out dir"
    shutil.copytree(
        tiny_models.output_root / "model1",
        out / "model1",
        ignore=shutil.ignore_patterns("images", "annotations", "runs", "inspections"),
    )
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        "model1",
        str(messy_batch["folder"]),
        "--db",
        url,
        "--json",
        "--no-progress",
    ]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 3, run.output  # some inputs were errors: each recorded, the rest inspected
    results = {Path(r["image"]).name: r for r in json.loads(run.stdout)}
    assert len(results) == 9
    for key, needle in EXPECTED_ERRORS.items():
        r = results[messy_batch[key].name]
        assert r["verdict"] == "error", r
        assert needle in r["error"] and needle in r["reasons"][0], r
    for key in ("good", "defect", "png"):
        r = results[messy_batch[key].name]
        assert r["verdict"] != "error", r
        assert r["screen_score"] is not None and {"screening", "rework", "total"} <= set(r["timings_ms"])
    # The PNG of the defect frame is inspected like the BMP (same pixels, same verdict).
    assert results[messy_batch["png"].name]["verdict"] == results[messy_batch["defect"].name]["verdict"]
    assert results[messy_batch["defect"].name]["verdict"] != "good"
    assert "good" in run.stderr and "frames/s" in run.stderr  # the summary table went to stderr

    store = InspectionStore(url)
    frames = store.frames(limit=None)
    assert len(frames) == 9 and len({f.run_id for f in frames}) == 1
    run_row = store.run(frames[0].run_id)
    assert run_row.status == "done" and run_row.n_frames == 9
    by_name = {Path(f.image).name: f for f in frames}
    for key in ("good", "defect", "png"):
        detail = store.frame_detail(by_name[messy_batch[key].name].id)
        assert detail.tiles and detail.measurements
    # Every non-good inspected frame has its overlay picture (and heatmap) under the run folder.
    flagged = [f for f in frames if f.verdict not in ("good", "error")]
    assert flagged
    for f in flagged:
        overlay = Path(f.overlay_path)
        assert overlay.parent.parent == out / "model1" / "inspections"
        assert overlay.parent.name.startswith(f"run-{f.run_id}_")
        picture = cv2.imread(str(overlay))
        assert picture is not None and picture.shape[1] == SIZE[0] // 2
        assert overlay.with_name(overlay.stem + "_heat.png").is_file()

    # A rerun skips every file recorded with these models: content by sha256, and files with no
    # content to recognise (the folder named like an image) by path, so no second error record.
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout) == []
    assert "skipped" in rerun.stderr
    assert len(store.frames(limit=None)) == 9
    # --reinspect records a file again.
    forced = CliRunner().invoke(
        cli,
        [
            *args[:7],
            str(messy_batch["good"]),
            "--db",
            url,
            "--json",
            "--no-progress",
            "--reinspect",
            "--no-save-vis",
        ],
    )
    assert forced.exit_code == 0, forced.output
    assert len(json.loads(forced.stdout)) == 1
    assert (
        len(
            store.frames(
                FrameFilter(sha256=results[messy_batch["good"].name].get("sha256") or None), limit=None
            )
        )
        >= 1
    )
    assert len(store.frames(limit=None)) == 10
    store.dispose()


def test_missing_model_is_one_clear_line(
    tiny_models: TinyModels, messy_batch: dict[str, Path], tmp_path: Path
):
    run = CliRunner().invoke(
        cli,
        [
            "inspect",
            "--config",
            str(tiny_models.config_path),
            "--output",
            str(tmp_path),
            "--model",
            "model1",
            str(messy_batch["good"]),
            "--db",
            f"sqlite:///{(tmp_path / 'x.db').as_posix()}",
        ],
    )
    assert run.exit_code == 1
    lines = run.output.strip().splitlines()
    assert len(lines) == 1 and "model file not found" in lines[0] and "oringscan train screening" in lines[0]
    empty = tmp_path / "no frames here"
    empty.mkdir()
    run = CliRunner().invoke(
        cli,
        [
            "inspect",
            "--config",
            str(tiny_models.config_path),
            "--output",
            str(tiny_models.output_root),
            "--model",
            "model1",
            str(empty),
            "--db",
            f"sqlite:///{(tmp_path / 'y.db').as_posix()}",
        ],
    )
    assert (
        run.exit_code == 1 and "no frames found" in run.output and len(run.output.strip().splitlines()) == 1
    )
    run = CliRunner().invoke(
        cli,
        ["inspect", "--config", str(tiny_models.config_path), "--model", "model3", str(messy_batch["good"])],
    )
    assert run.exit_code == 1 and "unknown o-ring type 'model3'" in run.output


# --- background reading ------------------------------------------------------------------------


def test_prefetcher_reads_ahead_in_order_and_keeps_problems(tiny_models: TinyModels, tmp_path: Path):
    good = frames_of(tiny_models, "model1good")[:3]
    empty = tmp_path / "empty.bmp"
    empty.write_bytes(b"")
    paths = [good[0], empty, tmp_path / "missing.bmp", *good[1:]]
    reader = Prefetcher(paths, tiny_models.config.frame, depth=2)
    items = []
    for item in reader:
        items.append(item)
        if len(items) == 1:
            time.sleep(0.3)  # the reader thread fills its queue meanwhile
            assert reader._queue.qsize() == 2
    assert [i.path for i in items] == paths
    assert [i.problem is None for i in items] == [True, False, False, True, True]
    assert "empty file" in items[1].problem and "not found" in items[2].problem
    assert items[0].sha256 and items[2].sha256 is None
    assert not reader._thread.is_alive()
    # Stopping early ends the reader thread too.
    early = Prefetcher(good, tiny_models.config.frame, depth=1)
    for _ in early:
        break
    assert not early._thread.is_alive()


# --- watching a camera folder ------------------------------------------------------------------


def test_watch_takes_each_file_once_when_it_is_complete(
    tiny_models: TinyModels, tiny_inspector: Inspector, tmp_path: Path
):
    url = f"sqlite:///{(tmp_path / 'watch.db').as_posix()}"
    store = InspectionStore(url)
    camera = tmp_path / "camera out"
    camera.mkdir()
    run_id = start_run(store, tiny_inspector, kind="watch", note=str(camera))
    recorder = FrameRecorder(tiny_inspector, store, run_id, save_overlays=False)
    stop = threading.Event()
    seen = []
    thread = threading.Thread(
        target=watch_folder,
        kwargs={
            "recorder": recorder,
            "folder": camera,
            "poll_s": 0.05,
            "stable_polls": 2,
            "give_up_s": 1.0,
            "stop": stop,
            "on_result": seen.append,
        },
    )
    thread.start()
    try:
        data = frames_of(tiny_models, "model1good")[1].read_bytes()
        target = camera / "frame 0001.bmp"
        with open(target, "wb") as fh:  # the camera writes slowly: half, a pause, the rest
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(0.5)  # long enough to look "stable" but it does not decode yet
            fh.write(data[len(data) // 2 :])
        (camera / "notes.txt").write_text("not a frame")
        garbage = camera / "broken.bmp"
        garbage.write_bytes(b"BM" + b"\0" * 100)  # settles, never decodes: an error after give_up_s
        deadline = time.monotonic() + 60
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(timeout=60)
    names = sorted(Path(r.image).name for r in seen)
    assert names == ["broken.bmp", "frame 0001.bmp"]
    by_name = {Path(r.image).name: r for r in seen}
    assert by_name["frame 0001.bmp"].verdict is not Verdict.ERROR, by_name["frame 0001.bmp"].reasons
    assert by_name["broken.bmp"].verdict is Verdict.ERROR
    assert len(store.frames(FrameFilter(run_id=run_id), limit=None)) == 2
    store.dispose()


# --- evaluation --------------------------------------------------------------------------------


def test_evaluate_pipeline_confusion_matrix_and_plots(tiny_models: TinyModels, tmp_path: Path):
    args = [
        "evaluate",
        "pipeline",
        "--config",
        str(tiny_models.config_path),
        "--data",
        str(tiny_models.data_root),
        "--output",
        str(tiny_models.output_root),
        "--model",
        "model1",
        "--out",
        str(tmp_path / "eval"),
        "--json",
    ]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    matrix = report["confusion"]
    assert set(matrix) == {"good", "defect", "rework"}
    n_rework = len(frames_of(tiny_models, "model1_rework"))
    assert sum(matrix["rework"].values()) == n_rework
    assert sum(sum(row.values()) for row in matrix.values()) == len(report["frames_detail"]) >= n_rework + 2
    for key in ("defect_recall", "false_reject_rate", "rework_recall"):
        assert report[key] is None or 0.0 <= report[key] <= 1.0
    for png in report["plots"].values():
        assert cv2.imread(png) is not None
    assert (tmp_path / "eval" / "report.json").is_file()
