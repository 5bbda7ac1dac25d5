"""``oringscan calibrate rework`` and ``oringscan measure`` end to end (CliRunner, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from support.rework import SCENES, SPECS, binned_frame, write_dataset

from oringscan.cli.main import cli
from oringscan.frames import write_frame
from oringscan.synth.exact import EdgeArc, RingSpec


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("rework cli")
    data = base / "dataset"
    write_dataset(data, n_good=5)
    frames = base / "frames to check"
    frames.mkdir()
    write_frame(frames / "good.bmp", binned_frame(SPECS["round"], SCENES["plant"], seed=3))
    flash = RingSpec(arcs=[EdgeArc("outer", 30.0, 50.0, 12.0)])
    write_frame(
        frames / "flash.bmp", cv2.cvtColor(binned_frame(flash, SCENES["plain"], seed=4), cv2.COLOR_GRAY2BGR)
    )
    write_frame(frames / "offset.bmp", binned_frame(SPECS["offset"], SCENES["plain"], seed=5))
    whole = (frames / "good.bmp").read_bytes()
    (frames / "corrupt.bmp").write_bytes(whole[: len(whole) // 2])  # a transfer cut short
    blank = binned_frame(SPECS["round"], SCENES["plain"]) * 0 + 18
    write_frame(frames / "no ring.bmp", blank)
    return {"data": data, "output": base / "output", "frames": frames}


def _run(*args: str) -> tuple[int, str]:
    """Exit code and stdout (progress bars go to stderr); all output when the command failed."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout if result.exit_code in (0, 3) else result.output


def test_calibrate_measure_and_recalibrate(workspace: dict[str, Path]) -> None:
    data, output, frames = workspace["data"], workspace["output"], workspace["frames"]
    common = ["--data", str(data), "--output", str(output)]

    # Measuring before calibrating: one clear line.
    code, out = _run("measure", "--model", "model1", *common, str(frames / "good.bmp"))
    assert code != 0 and "rework_rules.toml: rules file not found" in out and "calibrate rework" in out

    code, out = _run("calibrate", "rework", "--model", "model1", *common, "--dry-run")
    assert code == 0 and "Dry run" in out and not (output / "model1" / "rework_rules.toml").exists()
    code, out = _run("calibrate", "rework", "--model", "model1", *common)
    assert code == 0, out
    rules_path = output / "model1" / "rework_rules.toml"
    assert rules_path.is_file() and "added" in out and "outer_protrusion_px" in out and "Wrote" in out

    # JSON: one array, one object per frame, the broken files recorded and the batch going on.
    code, out = _run("measure", "--model", "model1", *common, "--json", str(frames))
    assert code == 3, out  # exit 3: some inputs were errors (corrupt.bmp, no ring.bmp), the rest measured
    items = {Path(i["image"]).name: i for i in json.loads(out)}
    assert set(items) == {"good.bmp", "flash.bmp", "offset.bmp", "corrupt.bmp", "no ring.bmp"}
    for item in items.values():
        assert set(item) >= {"image", "verdict", "reasons", "metrics", "fired"}
    assert items["good.bmp"]["verdict"] == "pass" and items["good.bmp"]["fired"] == []
    assert items["good.bmp"]["metrics"]["outer_radius"] == pytest.approx(650.3, abs=1.0)
    assert items["flash.bmp"]["verdict"] == "rework" and "outer_protrusion_px" in items["flash.bmp"]["fired"]
    assert items["flash.bmp"]["metrics"]["outer_protrusion_px"] == pytest.approx(12.0, abs=2.0)
    assert items["offset.bmp"]["verdict"] == "rework" and "concentricity_px" in items["offset.bmp"]["fired"]
    assert items["corrupt.bmp"]["verdict"] == "error" and "truncated" in items["corrupt.bmp"]["reasons"][0]
    assert items["no ring.bmp"]["verdict"] == "error" and "no ring" in items["no ring.bmp"]["reasons"][0]

    # Table and pictures.
    code, out = _run(
        "measure",
        "--model",
        "model1",
        *common,
        "--save-vis",
        str(frames / "flash.bmp"),
        str(frames / "good.bmp"),
    )
    assert code == 0, out
    assert "flash.bmp: REWORK" in out and "good.bmp: PASS" in out and "excess flash on the outer edge" in out
    assert "Summary: 1 pass, 1 rework" in out
    for stem in ("flash", "good"):
        picture = cv2.imread(str(output / "model1" / "measurements" / f"{stem}_rework.png"))
        assert picture is not None and picture.shape == (2048, 2448, 3)

    # Hand edit, recalibrate: kept and reported.
    text = rules_path.read_text(encoding="utf-8")
    start = text.index('metric = "concentricity_px"')
    line_start = text.index("upper = ", start)
    line_end = text.index("\n", line_start)
    rules_path.write_text(text[:line_start] + "upper = 25.0" + text[line_end:], encoding="utf-8")
    code, out = _run("measure", "--model", "model1", *common, "--json", str(frames / "offset.bmp"))
    assert "concentricity_px" not in json.loads(out)[0]["fired"]
    code, out = _run("calibrate", "rework", "--model", "model1", *common)
    assert code == 0 and "kept-hand-edited" in out and "hand-edited/manual rule(s) kept" in out
    assert "upper = 25.0" in rules_path.read_text(encoding="utf-8")


def test_broken_rules_file_and_unknown_model_are_one_line(workspace: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rule]]\nmetric = "outer_radius"\nlower = 700.0\nupper = 600.0\n', encoding="utf-8")
    code, out = _run(
        "measure", "--model", "model1", "--rules", str(bad), str(workspace["frames"] / "good.bmp")
    )
    assert code != 0 and out.strip().count("\n") == 0 and "rule 1 (outer_radius)" in out and str(bad) in out
    code, out = _run("measure", "--model", "nosuch", "--no-rules", str(workspace["frames"] / "good.bmp"))
    assert code != 0 and "unknown o-ring type 'nosuch'" in out


def test_help_teaches_the_metrics() -> None:
    code, out = _run("calibrate", "rework", "--help")
    assert code == 0 and "mean +/- k" in out and "concentricity_pct" in out
    code, out = _run("measure", "--help")
    assert code == 0 and "--save-vis" in out and "--json" in out
