"""Archive re-inspection and several lines on one database (SQLite, and PostgreSQL when a server is set).

``reinspect`` runs recorded frames again with new models, links each new record to the one it
supersedes, reports frames whose file is gone or changed; ``db diff`` lists the parts whose verdict
changed. Several stations write one database at once while the dashboard's queries read it. The
database URL can come from ORINGSCAN_DB_URL and its password never reaches the output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support.pipeline import TinyModels

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.db.diff import diff_runs
from oringscan.db.models import Frame, Run
from oringscan.pipeline import Inspector
from oringscan.pipeline.batch import inspect_paths
from oringscan.pipeline.reinspect import Selection, reinspect


def retrained(models: TinyModels, where: Path) -> Path:
    """A copy of the models whose rework rules are switched off: the "new models" of a re-inspection."""
    root = where / "new models"
    shutil.copytree(
        models.output_root / "model1", root / "model1", ignore=shutil.ignore_patterns("inspections")
    )
    (root / "model1" / "rework_rules.toml").write_text(
        "[settings]\nrework_disabled = true\n", encoding="utf-8"
    )
    return root


def test_reinspect_supersedes_reports_gone_files_and_db_diff_lists_changes(
    tiny_models: TinyModels, db_url: str, tmp_path: Path
) -> None:
    config = tiny_models.config
    archive = tmp_path / "archive"
    archive.mkdir()
    images = tiny_models.data_root / "images"
    sources = [
        *sorted((images / "model1_rework").glob("*.bmp")),
        *sorted((images / "model1good").glob("*.bmp"))[:2],
    ]
    paths = [Path(shutil.copy(p, archive / p.name)) for p in sources]
    store = InspectionStore(db_url)
    old = inspect_paths(
        Inspector.load(config, tiny_models.output_root, "model1"),
        paths,
        store,
        output_root=tmp_path,
        progress=False,
        station="line 2",
    )
    old_verdicts = {r.image: str(r.verdict) for r in old.results}
    # The archive ages: one frame deleted, one overwritten by another frame.
    gone, changed = paths[-1], paths[-2]
    gone.unlink()
    shutil.copy(paths[0], changed)

    new_root = retrained(tiny_models, tmp_path)
    report = reinspect(store, config, new_root, Selection(oring_types=("model1",), stations=("line 2",)))
    assert report.selected == 4
    assert [r.path for r in report.gone] == [str(gone.absolute())]
    assert [r.path for r in report.changed] == [str(changed.absolute())]
    assert len(report.results) == 2 and len(report.run_ids) == 1
    new_run = report.run_ids[0]
    with store.read_session() as session:
        run = session.get(Run, new_run)
        assert run.engine == "in-process" and run.selection == {
            "oring_types": ["model1"],
            "stations": ["line 2"],
        }
        new = session.scalars(select(Frame).where(Frame.run_id == new_run)).all()
        for record in new:
            before = session.get(Frame, record.supersedes_id)
            assert before is not None and before.run_id == old.run_id and before.path == record.path
            assert before.superseded_at is not None and record.superseded_at is None
            assert record.station == "line 2" and record.model_fingerprint != before.model_fingerprint
        untouched = session.scalars(
            select(Frame).where(Frame.path.in_([str(gone.absolute()), str(changed.absolute())]))
        )
        assert all(f.superseded_at is None for f in untouched)  # reported, left as they were

    # The parts the old rules sent to rework are judged again without them: their verdict changed.
    was_rework = {str(p.absolute()) for p in paths[:2] if old_verdicts[str(p.absolute())] == "rework"}
    assert was_rework, old_verdicts  # the tiny models send at least one rework frame to rework
    for diff in (diff_runs(store, None, new_run), diff_runs(store, old.run_id, new_run)):
        assert diff.common == 2
        assert {r.path for r in diff.changed} == was_rework
        assert all(r.verdict_a == "rework" and r.verdict_b in ("good", "suspect") for r in diff.changed)
    # Again: the current records are made with the current models; nothing is inspected twice.
    again = reinspect(store, config, new_root, Selection(oring_types=("model1",)))
    assert again.results == [] and len(again.up_to_date) == 2

    runner = CliRunner()
    out = runner.invoke(cli, ["db", "diff", str(old.run_id), str(new_run), "--db", db_url, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    n_changed = len(was_rework)
    assert doc["in_both"] == 2 and len(doc["changed"]) == n_changed == sum(doc["transitions"].values())
    table = runner.invoke(cli, ["db", "diff", str(new_run), "--db", db_url])
    assert table.exit_code == 0 and f"verdict changed: {n_changed}" in table.output, table.output
    missing = runner.invoke(cli, ["db", "diff", "999", "--db", db_url])
    assert missing.exit_code == 1 and missing.output.strip().splitlines() == [
        "Error: run 999: not in the database"
    ]
    store.dispose()


def test_reinspect_cli_reports_gone_files_and_exits_3(tiny_models: TinyModels, tmp_path: Path) -> None:
    frame = tmp_path / "frames" / "part 1.bmp"
    frame.parent.mkdir()
    shutil.copy(next((tiny_models.data_root / "images" / "model1_rework").glob("*.bmp")), frame)
    db = f"sqlite:///{tmp_path / 'plant.db'}"
    base = ["--config", str(tiny_models.config_path), "--db", db]
    first = CliRunner().invoke(
        cli,
        [
            "inspect",
            "--model",
            "model1",
            "--output",
            str(tiny_models.output_root),
            *base,
            str(frame),
            "--no-progress",
            "--no-save-vis",
        ],
    )
    assert first.exit_code == 0, first.output
    frame.unlink()
    new_root = retrained(tiny_models, tmp_path)
    dry = CliRunner().invoke(cli, ["reinspect", "--output", str(new_root), *base, "--dry-run", "--json"])
    assert dry.exit_code == 0 and json.loads(dry.output)["selected"] == 1, dry.output
    out = CliRunner().invoke(cli, ["reinspect", "--output", str(new_root), *base, "--no-progress", "--json"])
    assert out.exit_code == 3, out.output
    doc = json.loads(out.stdout)  # the summary and the exit-3 line went to stderr
    assert (
        doc["selected"] == 1 and doc["reinspected"] == 0 and doc["gone"][0]["path"] == str(frame.absolute())
    )
    assert "Traceback" not in out.output


def test_reinspect_bad_inputs_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    nowhere = f"sqlite:///{tmp_path / 'none.db'}"
    out = runner.invoke(cli, ["reinspect", "--db", nowhere])
    assert (
        out.exit_code == 1 and out.output.count("\n") == 1 and "no inspection database here yet" in out.output
    )
    assert runner.invoke(cli, ["reinspect", "--db", nowhere, "--since", "last tuesday"]).exit_code == 2
    assert runner.invoke(cli, ["reinspect", "--db", nowhere, "--verdict", "great"]).exit_code == 2
    monkeypatch.setitem(sys.modules, "ray", None)
    out = runner.invoke(cli, ["reinspect", "--db", nowhere, "--engine", "ray"])
    assert out.exit_code == 1 and 'pip install "oringscan[ray]"' in out.output and out.output.count("\n") == 1


def test_database_url_from_the_environment_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line's URL (with its password) in ORINGSCAN_DB_URL; a server that is down: one line, masked."""
    monkeypatch.setenv("ORINGSCAN_DB_URL", "postgresql+psycopg://line3:s3cret-pw@127.0.0.1:1/plant")
    for args in (["db", "diff", "1", "2"], ["reinspect", "--dry-run"], ["db", "runs"]):
        out = CliRunner().invoke(cli, args)
        assert out.exit_code == 1, out.output
        assert "s3cret-pw" not in out.output and "127.0.0.1:1/plant" in out.output, out.output
        assert out.output.count("\n") == 1


WRITER = """
import sys
from oringscan.db import InspectionStore
from oringscan.testing.results import make_result

url, station, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = InspectionStore(url)
run = store.start_run(oring_type="model1", model_fingerprint="fp-lines", command="inspect " + station)
for i in range(n):
    verdict = ("good", "defect", "suspect", "rework")[i % 4]
    sha = (station.encode().hex() + f"{i:08x}").rjust(64, "0")
    result = make_result(verdict, image=f"/plant/{station}/f{i:03d}.bmp", sha256=sha, n_tiles=6, seed=i,
                         defects=[("cut", 0.9)] if verdict == "defect" else None)
    store.record_frame(run, result, frame_shape=(512, 612), station=station)
store.finish_run(run)
print("done", run)
"""


def test_several_stations_write_one_database_while_the_dashboard_reads(db_url: str) -> None:
    """Three lines' stations record at once (separate processes) into one database; the dashboard's
    queries read all along: every read succeeds and never goes backwards, every frame lands once."""
    n, stations = 20, ("st1", "st2", "st3")
    store = InspectionStore(db_url)  # migrated once here; the writers open it as it is
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, db_url, s, str(n)], stdout=subprocess.PIPE, text=True)
        for s in stations
    ]
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while any(w.poll() is None for w in writers) and time.monotonic() < deadline:
        page = store.review_queue(limit=5)  # the review queue page
        counts = store.verdict_counts()  # the overview page
        assert page.total <= sum(counts.values())
        seen.append(page.total)
        time.sleep(0.05)
    outputs = [w.communicate(timeout=60)[0] for w in writers]
    assert all(w.returncode == 0 for w in writers), outputs
    assert seen == sorted(seen)  # a reader never sees records disappear
    total = store.frames(limit=0)
    assert total.total == n * len(stations)
    for station in stations:
        assert store.frames(station=station, limit=0).total == n
    runs: list[Any] = [r for r in store.runs() if r.command and r.command.startswith("inspect st")]
    assert len(runs) == 3 and all(r.status == "done" and r.n_frames == n for r in runs)
    assert store.review_queue(limit=1).total == 3 * (n * 3 // 4)  # defect, suspect, rework of each
    store.dispose()


def test_run_diff_page_shows_the_changed_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's Run diff page (Streamlit AppTest, real SQLite): a re-inspection against the
    records it superseded, by default (the newest run)."""
    from support.dashboard import app_test, assert_clean

    from oringscan.dashboard.settings import DashboardSettings
    from oringscan.testing.results import make_result

    url = f"sqlite:///{(tmp_path / 'diff.db').as_posix()}"
    store = InspectionStore(url)
    old_run = store.start_run(oring_type="model1", model_fingerprint="old")
    before = ("good", "rework", "suspect", "defect")
    ids = [
        store.record_frame(
            old_run, make_result(v, image=f"/a/f{i}.bmp", sha256=f"{i:064x}"), frame_shape=(512, 612)
        )
        for i, v in enumerate(before)
    ]
    store.finish_run(old_run)
    new_run = store.start_run(oring_type="model1", model_fingerprint="new")
    after = ("good", "good", "defect", "defect")
    for i, (frame_id, verdict) in enumerate(zip(ids, after, strict=True)):
        result = make_result(verdict, image=f"/a/f{i}.bmp", sha256=f"{i:064x}")
        store.record_frame(new_run, result, frame_shape=(512, 612), supersedes=frame_id)
    store.finish_run(new_run)
    at = app_test(DashboardSettings(url, [tmp_path]), monkeypatch, "views/run_diff.py")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["parts in both"] == "4" and metrics["verdict changed"] == "2", metrics
    table = next(df.value for df in at.dataframe if "was" in df.value.columns)
    assert sorted(zip(table["was"], table["now"], strict=True)) == [("rework", "good"), ("suspect", "defect")]
    store.dispose()
