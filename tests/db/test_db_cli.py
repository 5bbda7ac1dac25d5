"""``oringscan db ...`` end to end through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.testing.results import make_result

DAY = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def filled(db_url: str) -> dict[str, int]:
    store = InspectionStore(db_url)
    try:
        run1 = store.start_run(oring_type="model1", model_fingerprint="fp-1", started_at=DAY)
        ids = {}
        for i, (verdict, defects) in enumerate(
            [
                ("good", None),
                ("defect", [("cut", 0.9), ("pit", 0.6)]),
                ("suspect", None),
                ("good", None),
                ("error", None),
            ]
        ):
            result = make_result(
                verdict,
                image=f"/plant/line 1/frame {i}.bmp",
                score=2.0 if defects else 0.5,
                defects=defects,
                seed=i,
            )
            ids[f"{verdict}{i}"] = store.record_frame(run1, result, inspected_at=DAY + timedelta(days=i // 3))
        store.finish_run(run1, n_skipped=1)
        run2 = store.start_run(oring_type="model2", started_at=DAY + timedelta(days=2))
        ids["m2"] = store.record_frame(
            run2,
            make_result("rework", oring_type="model2", fired=["ovality"], seed=9),
            inspected_at=DAY + timedelta(days=2),
        )
        ids["run1"], ids["run2"] = run1, run2
        return ids
    finally:
        store.dispose()


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_frames_json_is_one_array_of_records(db_url: str, filled: dict[str, int]) -> None:
    rows = json.loads(invoke("db", "frames", "--db", db_url, "--json"))
    assert isinstance(rows, list) and len(rows) == 6
    assert all({"image", "verdict", "run_id"} <= set(r) for r in rows)
    assert {r["image"] for r in rows} >= {"/plant/line 1/frame 1.bmp"}
    defect = next(r for r in rows if r["verdict"] == "defect")
    assert defect["run_id"] == filled["run1"] and defect["n_defects"] == 2
    only = json.loads(
        invoke(
            "db",
            "frames",
            "--db",
            db_url,
            "--json",
            "--verdict",
            "defect",
            "--verdict",
            "suspect",
            "--type",
            "model1",
        )
    )
    assert sorted(r["verdict"] for r in only) == ["defect", "suspect"]
    since = json.loads(
        invoke("db", "frames", "--db", db_url, "--json", "--since", "2026-03-03", "--until", "2026-03-04")
    )
    assert sorted(r["verdict"] for r in since) == ["error", "good"]
    assert (
        json.loads(invoke("db", "frames", "--db", db_url, "--json", "--run", str(filled["run2"])))[0][
            "verdict"
        ]
        == "rework"
    )
    assert len(json.loads(invoke("db", "frames", "--db", db_url, "--json", "--limit", "2"))) == 2


def test_tables_csv_and_stats(db_url: str, filled: dict[str, int]) -> None:
    table = invoke("db", "frames", "--db", db_url)
    assert "Frames (6 matching)" in table and "/plant/line 1/frame 1.bmp" in table and "defect" in table
    runs = invoke("db", "runs", "--db", db_url)
    assert "model1" in runs and "model2" in runs and "done" in runs and "running" in runs
    runs_json = json.loads(invoke("db", "runs", "--db", db_url, "--json"))
    assert [r["n_frames"] for r in runs_json] == [1, 5] and runs_json[1]["n_skipped"] == 1

    defects = list(csv.DictReader(io.StringIO(invoke("db", "defects", "--db", db_url, "--csv"))))
    assert sorted(d["label"] for d in defects) == ["cut", "pit"]
    assert all(d["image"] == "/plant/line 1/frame 1.bmp" and int(d["area_px"]) > 0 for d in defects)
    assert "cut" in invoke("db", "defects", "--db", db_url, "--label", "cut")

    invoke(
        "db",
        "review",
        str(filled["defect1"]),
        "--db",
        db_url,
        "--decision",
        "good",
        "--operator",
        "anna",
        "--comment",
        "lint",
    )
    stats = json.loads(invoke("db", "stats", "--db", db_url, "--json"))
    assert stats["n_frames"] == 6 and stats["n_overridden"] == 1
    day1 = next(r for r in stats["yield_by_day"] if r["day"] == "2026-03-02")
    assert (day1["oring_type"], day1["total"], day1["good"], day1["yield"]) == (
        "model1",
        3,
        1,
        pytest.approx(1 / 3),
    )
    assert {(r["label"], r["defects"]) for r in stats["defects_by_class"]} == {("cut", 1), ("pit", 1)}
    assert stats["review_overrides"] == [
        {"oring_type": "model1", "verdict": "defect", "decision": "good", "frames": 1, "changed": True}
    ]
    text = invoke("db", "stats", "--db", db_url)
    assert "Yield per type per day" in text and "override" in text and "33.3%" in text
    yield_csv = list(csv.DictReader(io.StringIO(invoke("db", "stats", "--db", db_url, "--csv"))))
    assert len(yield_csv) == 3 and yield_csv[0]["day"] == "2026-03-02"


def test_review_and_show_keep_the_history(db_url: str, filled: dict[str, int]) -> None:
    frame = str(filled["suspect2"])
    out = invoke("db", "review", frame, "--db", db_url, "--decision", "defect", "--operator", "anna")
    assert "1 review(s)" in out
    out = invoke(
        "db", "review", frame, "--db", db_url, "--decision", "good", "--operator", "ben", "--comment", "dust"
    )
    assert "2 review(s)" in out
    shown = invoke("db", "show", frame, "--db", db_url)
    assert "anna" in shown and "ben" in shown and "dust" in shown
    detail = json.loads(invoke("db", "show", frame, "--db", db_url, "--json"))
    assert [r["decision"] for r in detail["reviews"]] == ["defect", "good"]
    assert detail["frame"]["review_decision"] == "good" and len(detail["tiles"]) == 4
    unreviewed = json.loads(
        invoke("db", "frames", "--db", db_url, "--json", "--unreviewed", "--verdict", "suspect")
    )
    assert unreviewed == []


def test_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["db", "frames", "--output", str(tmp_path / "no output")])
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("Error:") and "no inspection database" in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    url = f"sqlite:///{(tmp_path / 'i.db').as_posix()}"
    assert "schema at revision" in invoke("db", "migrate", "--db", url)
    unknown = runner.invoke(
        cli, ["db", "review", "7", "--db", url, "--decision", "good", "--operator", "anna"]
    )
    assert unknown.exit_code == 1 and "frame 7: not in the database" in unknown.output
    bad_time = runner.invoke(cli, ["db", "frames", "--db", url, "--since", "last tuesday"])
    assert bad_time.exit_code == 2 and "is not a time" in bad_time.output
    both = runner.invoke(cli, ["db", "frames", "--db", url, "--json", "--csv"])
    assert both.exit_code == 2


def test_default_database_is_under_the_output_root(tmp_path: Path) -> None:
    output = tmp_path / "my output"
    store = InspectionStore(f"sqlite:///{(output / 'inspections.db').as_posix()}")
    store.record_frame(store.start_run(oring_type="model1"), make_result("defect", defects=[("cut", 0.8)]))
    store.dispose()
    rows = json.loads(invoke("db", "frames", "--output", str(output), "--json"))
    assert [r["verdict"] for r in rows] == ["defect"]
