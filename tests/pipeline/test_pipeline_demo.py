"""``oringscan demo`` end to end, scaled down: every real step, a filled database at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.pipeline.demo import DEMO_MODEL, DemoPlan, demo_config, run_demo, write_demo_config


@pytest.mark.slow
def test_demo_fills_a_database_and_prints_the_dashboard_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    plan = DemoPlan(
        n_good=5,
        n_defect=2,
        n_rework=1,
        line_good=3,
        line_defect=1,
        line_rework=0,
        size=(612, 512),
        tile_size=160,
        overlap=20,
        input_size=None,
        workers=1,
    )
    workdir = tmp_path / "demo dir"
    out = run_demo(workdir, minutes=0.05, seed=3, plan=plan, progress=False)
    assert sum(out["counts"].values()) == 4
    store = InspectionStore(out["db_url"])
    frames = store.frames(limit=None)
    assert len(frames) == 4 and {f.run_id for f in frames} == {out["run_id"]}
    assert all(f.station == "demo" for f in frames)
    assert store.run(out["run_id"]).status == "done"
    store.dispose()
    printed = capsys.readouterr().out
    assert (
        "oringscan dashboard --config" in printed and "--db sqlite:///" in printed and "frames/s" in printed
    )
    assert (workdir / "demo.toml").is_file()
    # The printed dashboard command starts as printed: its config switches login off on loopback only.
    from oringscan.config import load_config
    from oringscan.dashboard.server import check_login_setup
    from oringscan.dashboard.settings import DashboardSettings
    from oringscan.errors import ConfigError

    demo_settings = DashboardSettings.from_config(
        load_config(workdir / "demo.toml"), out["db_url"], workdir, workdir
    )
    check_login_setup(demo_settings, "127.0.0.1")
    with pytest.raises(ConfigError, match="without login"):
        check_login_setup(demo_settings, "0.0.0.0")
    for step in ("synth", "preprocess", "screening", "segmentation", "rework", "inspect", "total"):
        assert step in out["timings_s"]


def test_demo_help_teaches_the_options():
    run = CliRunner().invoke(cli, ["demo", "--help"])
    assert run.exit_code == 0
    assert "--workdir" in run.output and "--minutes" in run.output and "5 minutes" in run.output
    assert "fixed schedule" in run.output


def test_the_demo_validates_on_enough_defects_with_a_fixed_schedule():
    """The segmenter's calibration needs >= 3 true hits at precision 0.9 on val: the demo's val split
    holds 6 of its defect frames (the plant default 0.15 gave 1-2), and training is a fixed number of
    epochs (no time budget), so a seed gives the same model on any machine."""
    from oringscan.preprocess.split import split_counts

    plan = DemoPlan()
    config = demo_config(plan)
    assert split_counts(plan.n_defect, config.split)["val"] >= 6
    t = config.training
    assert (t.epochs, t.lr_step_size, t.max_minutes) == (plan.epochs, plan.lr_step_size, None)
    assert t.patience >= t.epochs and t.lr_step_size < t.epochs  # no early stop; the low lr at the end
    # The precision target and the qualification floor stay the plant's.
    s = config.segmentation
    assert (s.defect_precision, s.min_ap50, s.min_find_ap, s.min_true_positives) == (0.9, 0.3, 0.3, 3)
    # Calibration sees every val tile (the good ones show the false alarms), not the per-epoch subset.
    assert t.val_max_tiles == plan.val_max_tiles and s.calibration_max_tiles is None


def test_the_demo_dashboard_shows_a_confirmed_defect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A demo-like record of a confirmed defect (calibrated gate, the policy's verdict, the overlay the
    pipeline saves), opened with the settings of the dashboard command the demo prints: the frame
    view shows the verdict, the picture with one mask crop per defect, and each defect's class and box."""
    import numpy as np
    from support.dashboard import app_test, assert_clean

    from oringscan.config import load_config
    from oringscan.dashboard.settings import DashboardSettings
    from oringscan.frames import write_frame
    from oringscan.pipeline.inspector import FrameInspection
    from oringscan.pipeline.overlays import save_overlay
    from oringscan.pipeline.policy import DefectGate, confident_defects, decide_verdict
    from oringscan.roi import find_ring
    from oringscan.segmentation.calibration import SegmentationCalibration
    from oringscan.testing.sample_db import draw_ring
    from oringscan.types import (
        InspectionResult,
        Instance,
        ReworkResult,
        ReworkVerdict,
        ScreeningResult,
        TileBox,
        TileScore,
        Verdict,
    )

    workdir = tmp_path / "demo dir"
    plan = DemoPlan(size=(612, 512), tile_size=160, overlap=20)
    _, config_path = write_demo_config(workdir, plan)
    config = load_config(config_path)
    gray, truth = draw_ring(np.random.default_rng(4), (512, 612), with_defects=True)
    assert truth
    frame = (
        workdir / "line" / "images" / config.oring_type(DEMO_MODEL).defect_folder / "model1_defect_0000.bmp"
    )
    write_frame(frame, gray)
    # The segmenter reports the demo's one class; one instance scores below the calibrated score.
    scores = [0.93] * len(truth) + [0.41]
    found = [Instance("defect", s, d.mask, d.offset) for s, d in zip(scores, [*truth, truth[0]], strict=True)]
    calibration = SegmentationCalibration(
        True, "", 0.62, ap50=0.5, precision=0.92, recall=0.6, val_defects=22
    )
    gate = DefectGate.from_calibration(calibration, config.pipeline)
    defects = confident_defects(found, config.pipeline, gate)
    assert len(defects) == len(truth)
    roi = find_ring(gray, config.roi)
    screening = ScreeningResult(4.2, 3.1, True, False, [TileScore(TileBox(300, 100, 160, 160), 4.2, True)])
    verdict, reasons = decide_verdict(
        roi, screening, defects, ReworkResult(ReworkVerdict.PASS, []), config.pipeline, gate
    )
    assert verdict is Verdict.DEFECT
    result = InspectionResult(str(frame.absolute()), verdict, reasons, DEMO_MODEL, screening, defects)
    output_root = workdir / "output"
    overlay = save_overlay(
        FrameInspection(result, gray, roi), output_root / DEMO_MODEL / "overlay.png", config
    )
    result.overlay_path = str(overlay.absolute())
    db_url = f"sqlite:///{(output_root / 'inspections.db').absolute().as_posix()}"
    store = InspectionStore(db_url)
    run_id = store.start_run(DEMO_MODEL)
    frame_id = store.record_frame(run_id, result, frame_shape=gray.shape[:2], station="demo")
    store.finish_run(run_id)
    store.dispose()

    settings = DashboardSettings.from_config(config, db_url, workdir / "line", output_root)
    at = app_test(settings, monkeypatch, "views/frame_view.py", frame=str(frame_id))
    assert_clean(at)
    assert at.title[0].value == f"Frame #{frame_id}: defect"
    # The frame with masks and boxes, one crop per defect, the overlay saved at inspection time.
    assert len(at.get("image")) == 1 + len(defects) + 1
    table = next(df.value for df in at.dataframe if "class" in getattr(df.value, "columns", []))
    assert table["class"].tolist() == ["defect"] * len(defects)
    assert sorted(zip(table["x"], table["y"], table["w"], table["h"], strict=True)) == sorted(
        d.bbox for d in defects
    )
    assert any("Overlay saved at inspection time" in e.label for e in at.expander)
