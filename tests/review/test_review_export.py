"""Review -> export -> preprocess, through the real CLI on full-size synthetic frames and SQLite.

A frame the machine called suspect is reviewed as a defect with a box of a class the config knows
but no model ever saw ("hole"); another suspect frame is confirmed with the machine's own mask; a
third is overridden to good. ``export reviews`` writes them into a fresh data set, a rerun adds
nothing, and ``preprocess`` turns the export into COCO tiles with the reviewed classes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.review.export import MANIFEST
from oringscan.types import InspectionResult, Instance, Verdict

FULL = (2048, 2448)
CONFIG = """
[classes]
names = ["defect", "hole"]
label_map = { hole = "hole" }

[frame]
accept_any_size = false
"""


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def _truth_box(label_file: Path) -> tuple[int, int, int, int]:
    """The bounding box of the first labelled defect (the synthetic truth)."""
    shape = json.loads(label_file.read_text(encoding="utf-8"))["shapes"][0]
    pts = np.asarray(shape["points"], dtype=float)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
    return int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    """Frames from the line (synthetic, full size) recorded as the pipeline records suspects."""
    from support.synthdata import make_small_dataset

    tmp = tmp_path_factory.mktemp("review_export")
    data = make_small_dataset(tmp, n_good=2, n_defect=2, n_rework=0, seed=11, color_fraction=0.0)
    line_dir = tmp / "line frames"  # where the camera put them: not the training data set
    line_dir.mkdir()
    frames = sorted((data / "images" / "model1defect").glob("*.bmp")) + sorted(
        (data / "images" / "model1good").glob("*.bmp")
    )
    copies = [Path(shutil.copy(f, line_dir / f.name)) for f in frames]
    url = f"sqlite:///{(tmp / 'inspections.db').as_posix()}"
    store = InspectionStore(url)
    run_id = store.start_run(oring_type="model1", model_fingerprint="fp")
    ids = []
    for i, path in enumerate(copies):
        defects = []
        if i == 1:  # the machine segmented this one's defect: a mask at the truth box
            x, y, w, h = _truth_box(data / "labels" / "model1defect" / f"{path.stem}.json")
            defects = [Instance("defect", 0.7, np.ones((h, w), bool), (x, y))]
        result = InspectionResult(
            image=str(path),
            verdict=Verdict.SUSPECT,
            reasons=["screening flagged"],
            oring_type="model1",
            defects=defects,
            sha256=f"{i:064x}",
        )
        ids.append(store.record_frame(run_id, result, frame_shape=FULL))
    config = tmp / "plant.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return {
        "tmp": tmp,
        "data": data,
        "url": url,
        "store": store,
        "ids": ids,
        "frames": copies,
        "config": config,
    }


def test_review_export_preprocess_round_trip(line) -> None:
    store, ids, url, config = line["store"], line["ids"], line["url"], str(line["config"])
    x, y, w, h = _truth_box(line["data"] / "labels" / "model1defect" / f"{line['frames'][0].stem}.json")
    out = run(
        "db", "review", str(ids[0]), "--db", url, "--config", config, "--decision", "defect",
        "--label", "hole", "--box", f"{x},{y},{w},{h}", "--operator", "anna",
    )  # fmt: skip
    assert "1 defect(s) marked" in out
    defect_id = store.frame_detail(ids[1]).defects[0].id
    run(
        "db", "review", str(ids[1]), "--db", url, "--config", config, "--decision", "defect",
        "--confirm", str(defect_id), "--operator", "anna",
    )  # fmt: skip
    for frame_id in ids[2:]:
        run("db", "review", str(frame_id), "--db", url, "--decision", "good", "--operator", "bob",
            "--comment", "lint on the belt")  # fmt: skip

    export = line["tmp"] / "training set"
    out = run("export", "reviews", "--db", url, "--data", str(export), "--config", config)
    assert "4 written" in out
    manifest = json.loads((export / MANIFEST).read_text(encoding="utf-8"))["frames"]
    assert sorted(e["frame_id"] for e in manifest.values()) == sorted(ids)
    hole_label = json.loads(
        (export / "labels" / "model1defect" / f"{line['frames'][0].stem}.json").read_text()
    )
    assert [(s["label"], s["shape_type"]) for s in hole_label["shapes"]] == [("hole", "rectangle")]
    assert (hole_label["imageWidth"], hole_label["imageHeight"]) == (FULL[1], FULL[0])
    confirmed = json.loads(
        (export / "labels" / "model1defect" / f"{line['frames'][1].stem}.json").read_text()
    )
    assert [(s["label"], s["shape_type"]) for s in confirmed["shapes"]] == [("defect", "mask")]
    for frame in line["frames"][2:]:
        assert (export / "images" / "model1good" / frame.name).is_file()
        assert (
            json.loads((export / "labels" / "model1good" / f"{frame.stem}.json").read_text())["shapes"] == []
        )

    # Idempotent: a rerun writes nothing, the files stay as they are.
    before = sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file())
    assert "4 unchanged" in run("export", "reviews", "--db", url, "--data", str(export), "--config", config)
    assert sorted(p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()) == before

    # preprocess takes the export as it is: the reviewed class reaches the COCO tiles.
    output = line["tmp"] / "output"
    run("preprocess", "--model", "model1", "--data", str(export), "--output", str(output), "--config", config)
    counts: dict[str, int] = {}
    for split in ("train", "val", "test"):
        coco = json.loads((output / "model1" / "annotations" / f"{split}.json").read_text())
        names = {c["id"]: c["name"] for c in coco["categories"]}
        for ann in coco["annotations"]:
            counts[names[ann["category_id"]]] = counts.get(names[ann["category_id"]], 0) + 1
    assert counts.get("hole", 0) >= 1 and counts.get("defect", 0) >= 1, counts


def test_a_newer_review_moves_the_export_and_a_gone_image_is_one_line(line, tmp_path) -> None:
    store, url, config = line["store"], line["url"], str(line["config"])
    export = tmp_path / "set"
    frame_id = line["ids"][3]
    run("db", "review", str(frame_id), "--db", url, "--decision", "good", "--operator", "bob")
    run("export", "reviews", "--db", url, "--data", str(export), "--config", config)
    name = line["frames"][3].name
    assert (export / "images" / "model1good" / name).is_file()
    run("db", "review", str(frame_id), "--db", url, "--decision", "rework", "--operator", "eve",
        "--comment", "flash")  # fmt: skip
    assert "1 updated" in run("export", "reviews", "--db", url, "--data", str(export), "--config", config)
    assert not (export / "images" / "model1good" / name).exists()  # moved, not duplicated
    assert (export / "images" / "model1_rework" / name).is_file()

    # A reviewed frame whose picture was deleted: one line, exit 3, everything else exported.
    gone = line["tmp"] / "line frames" / "deleted.bmp"
    shutil.copy(line["frames"][2], gone)
    run_id = store.runs(limit=1)[0].id
    gone_id = store.record_frame(
        run_id,
        InspectionResult(image=str(gone), verdict=Verdict.SUSPECT, oring_type="model1", sha256="e" * 64),
        frame_shape=FULL,
    )
    store.add_review(gone_id, "anna", "good", "nothing there")
    gone.unlink()
    result = CliRunner().invoke(
        cli,
        ["export", "reviews", "--db", url, "--data", str(export), "--config", config],
        catch_exceptions=False,
    )
    assert result.exit_code == 3, result.output
    line_out = [ln for ln in result.output.splitlines() if "deleted.bmp" in ln]
    assert len(line_out) == 1 and "image file is gone" in line_out[0], result.output
    assert len(store.reviews(gone_id)) == 1  # nothing lost: the review stays


def test_frames_already_in_the_data_set_are_not_copied_again(line) -> None:
    """Exporting into the data set the frames came from: nothing duplicated, its labels kept."""
    data, url, config = line["data"], line["url"], str(line["config"])
    originals = {p: p.read_bytes() for p in (data / "labels").rglob("*.json")}
    store = line["store"]
    # A review whose frame lies in the data set under the same name (the line copied it from there).
    result = CliRunner().invoke(
        cli,
        ["export", "reviews", "--db", url, "--data", str(data), "--config", config],
        catch_exceptions=False,
    )
    assert result.exit_code in (0, 3), result.output
    assert "already in the data set" in result.output
    for frame in line["frames"][:3]:  # each of them is in the data set once, as before
        assert len(list((data / "images").rglob(frame.name))) == 1
    assert all(p.read_bytes() == b for p, b in originals.items())
    assert store.reviews(line["ids"][0])
