"""Model versions: training stores a version, a promoted version decides parts until another is
promoted, rollback returns to the one before, and a damaged version is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.pipeline import TinyModels

from oringscan.cli.main import cli
from oringscan.errors import ModelFileError, OringscanError
from oringscan.pipeline.inspector import Inspector
from oringscan.workspace import TypeWorkspace


@pytest.fixture
def workspace(tiny_models: TinyModels, tmp_path: Path) -> TypeWorkspace:
    """A private copy of the tiny models' output (the session's copy stays as it is)."""
    shutil.copytree(tiny_models.output_root / "model1", tmp_path / "output" / "model1")
    config = tiny_models.config.model_copy(deep=True)
    config.rework.rules_file = None
    return TypeWorkspace.from_config(config, tmp_path / "output", "model1")


def _retrain_rules(workspace: TypeWorkspace) -> None:
    """Stand-in for a recalibration: the working rules file changes."""
    rules = workspace.working_models.rework_rules
    rules.write_text(rules.read_text(encoding="utf-8") + "\n# recalibrated\n", encoding="utf-8")


def test_promoted_version_decides_until_another_is_promoted(
    tiny_models: TinyModels, workspace: TypeWorkspace
):
    config = tiny_models.config.model_copy(deep=True)
    config.rework.rules_file = None
    versions = workspace.versions
    assert versions.current() is None and workspace.models == workspace.working_models
    first = versions.snapshot("first")
    assert first.id == "v0001" and versions.snapshot("again").id == "v0001"  # nothing changed: no new one
    versions.promote("v0001", operator="qe", reason="pilot")
    inspector = Inspector.load(config, workspace.output_root, "model1")
    assert inspector.model_versions()["version"] == "v0001"
    assert "versions/v0001" in inspector.model_versions()["files"]["rework_rules"]
    pinned = inspector.fingerprint

    _retrain_rules(workspace)
    second = versions.snapshot("recalibrated")
    assert second.id == "v0002"
    # The candidate does not decide parts until promoted.
    assert Inspector.load(config, workspace.output_root, "model1").fingerprint == pinned
    versions.promote("v0002")
    assert Inspector.load(config, workspace.output_root, "model1").fingerprint != pinned
    assert versions.rollback(operator="qe") == ("v0002", "v0001")
    assert Inspector.load(config, workspace.output_root, "model1").fingerprint == pinned
    assert [e["to"] for e in versions.history()] == ["v0001", "v0002", "v0001"]
    # v0001 was the first promoted: a second rollback has nowhere to go (not back to v0002).
    with pytest.raises(ModelFileError, match="nothing to roll back"):
        versions.rollback()
    assert versions.current() == "v0001"


def test_unknown_or_damaged_version_is_refused(workspace: TypeWorkspace):
    versions = workspace.versions
    with pytest.raises(ModelFileError, match="none yet"):
        versions.promote("v0001")
    versions.snapshot()
    with pytest.raises(ModelFileError, match="stored: v0001"):
        versions.promote("v0009")
    rules = workspace.root / "versions" / "v0001" / "rework_rules.toml"
    rules.write_text("# edited in place\n", encoding="utf-8")
    with pytest.raises(ModelFileError, match="damaged"):
        versions.promote("v0001")
    with pytest.raises(ModelFileError, match="nothing to roll back"):
        versions.rollback()


def test_models_cli_lists_promotes_and_rolls_back(tiny_models: TinyModels, workspace: TypeWorkspace):
    base = ["--config", str(tiny_models.config_path), "--output", str(workspace.output_root)]
    runner = CliRunner()
    listed = runner.invoke(cli, ["models", "list", *base, "--model", "model1"])
    assert listed.exit_code == 0 and "no stored versions yet" in listed.output
    assert (
        runner.invoke(cli, ["models", "snapshot", *base, "--model", "model1", "--note", "a"]).exit_code == 0
    )
    _retrain_rules(workspace)
    assert (
        runner.invoke(cli, ["models", "snapshot", *base, "--model", "model1"]).output.strip()
        == "model1: v0002"
    )
    promoted = runner.invoke(cli, ["models", "promote", *base, "--model", "model1", "v0001"])
    assert promoted.exit_code == 0 and "newest models -> v0001" in promoted.output
    listed = runner.invoke(cli, ["models", "list", *base, "--model", "model1"])
    assert "* v0001" in listed.output and "  v0002" in listed.output
    bad = runner.invoke(cli, ["models", "promote", *base, "--model", "model1", "v0042"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "no such model version" in bad.output
    # compare: an unknown candidate is one line before any frame is inspected; nothing is written
    bad = runner.invoke(cli, ["compare", *base, "--model", "model1", "--candidate", "v0042"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "no model version 'v0042'" in bad.output
    assert not (workspace.root / "evaluation").exists()


def _reviewed_frames_db(
    tiny_models: TinyModels, workspace: TypeWorkspace, tmp_path: Path
) -> tuple[str, dict]:
    """A database where people reviewed frames outside the test split (truth: their decision).

    Returns the URL and {image: review decision} of the reviewed frames compare must take; beside
    them: an unreviewed frame, a reviewed frame whose picture is gone and one of another type.
    """
    from oringscan.db import InspectionStore
    from oringscan.pipeline.evaluate import split_frames
    from oringscan.testing.results import make_result

    in_split = {
        p
        for p, _ in split_frames(
            tiny_models.config, tiny_models.data_root, workspace.output_root, "model1", "test"
        )
    }
    outside = sorted(
        p
        for p in (tiny_models.data_root / "images").rglob("*.bmp")
        if p not in in_split and "model1" in str(p)
    )
    good = [p for p in outside if "good" in p.parent.name]
    assert len(good) >= 3, outside
    gone = tmp_path / "deleted.bmp"
    url = f"sqlite:///{(tmp_path / 'reviews.db').as_posix()}"
    store = InspectionStore(url)
    try:
        run = store.start_run(oring_type="model1")
        ids = {
            p: store.record_frame(run, make_result("suspect", image=str(p), sha256=f"{i:064x}"))
            for i, p in enumerate([good[0], good[1], good[2], gone])
        }
        other = store.record_frame(
            run, make_result("suspect", image=str(good[2]), oring_type="model2", sha256="f" * 64)
        )
        store.add_review(ids[good[0]], "anna", "good")
        store.add_review(ids[good[1]], "anna", "good")
        store.add_review(ids[good[1]], "bob", "defect", "a nick the folder missed")  # the newest decides
        store.add_review(ids[gone], "anna", "defect")
        store.add_review(other, "anna", "defect")
        # good[2]: recorded, never reviewed
    finally:
        store.dispose()
    return url, {str(good[0]): "good", str(good[1]): "defect"}


def test_compare_frames_take_reviewed_frames_with_the_review_as_truth(
    tiny_models: TinyModels, workspace: TypeWorkspace, tmp_path: Path
):
    from oringscan.pipeline.compare import compare_frames

    url, reviewed = _reviewed_frames_db(tiny_models, workspace, tmp_path)
    plain = compare_frames(tiny_models.config, tiny_models.data_root, workspace.output_root, "model1")
    frames = compare_frames(
        tiny_models.config, tiny_models.data_root, workspace.output_root, "model1", db_url=url
    )
    assert {str(p): (t, src) for p, t, src in frames if src == "review"} == {
        image: (decision, "review") for image, decision in reviewed.items()
    }
    assert [f for f in frames if f[2] == "split"] == plain and len(frames) == len(plain) + 2


def test_compare_says_what_a_candidate_changes_on_the_split_and_the_reviewed_frames(
    tiny_models: TinyModels, workspace: TypeWorkspace, tmp_path: Path
):
    """`oringscan compare --db`: both versions on the test split and on the frames people reviewed."""
    import json

    from oringscan.pipeline.compare import compare_versions

    config = tiny_models.config.model_copy(deep=True)
    config.rework.rules_file = None
    url, reviewed = _reviewed_frames_db(tiny_models, workspace, tmp_path)
    workspace.versions.snapshot("first")
    workspace.versions.promote("v0001")
    rules = workspace.working_models.rework_rules
    rules.write_text(
        rules.read_text(encoding="utf-8")
        + '\n[[rule]]\nmetric = "outer_radius"\nupper = 1.0\nverdict = "rework"\n'
        + 'message = "every ring too big"\nsource = "manual"\n',
        encoding="utf-8",
    )
    base = ["--config", str(tiny_models.config_path), "--output", str(workspace.output_root)]
    base += ["--data", str(tiny_models.data_root)]
    shown = CliRunner().invoke(
        cli, ["compare", *base, "--model", "model1", "--candidate", "working", "--db", url, "--json"]
    )
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.output.strip().splitlines()[-1])
    assert result["baseline"] == "v0001" and result["reviewed_frames"] == len(reviewed) == 2
    assert sum(sum(row.values()) for row in result["confusion"]["working"].values()) == result["frames"]
    good_changed = [c for c in result["changed"] if c["truth"] == "good"]
    assert good_changed and all(c["candidate"] == "rework" and c["change"] == "worse" for c in good_changed)
    from_reviews = {c["image"]: c for c in result["changed"] if c["source"] == "review"}
    assert from_reviews and all(c["truth"] == reviewed[image] for image, c in from_reviews.items())
    assert result["metrics"]["false_reject_rate"]["verdict"] == "worse"
    assert result["stages"]["rework"]["verdict"] == "worse"
    out = Path(result["out_dir"])
    assert (out / "compare.json").is_file() and (out / "compare.png").is_file()
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "worse" in page and "<img" in page and "(review)" in page
    with pytest.raises(OringscanError, match="same models"):
        compare_versions(
            config, tiny_models.data_root, workspace.output_root, "model1", "v0001", progress=False
        )


def test_promotions_and_rollbacks_are_recorded_in_the_database(
    tiny_models: TinyModels, workspace: TypeWorkspace, tmp_path: Path
):
    from oringscan.db import InspectionStore

    base = ["--config", str(tiny_models.config_path), "--output", str(workspace.output_root)]
    db = f"sqlite:///{(tmp_path / 'line.db').as_posix()}"
    runner = CliRunner()
    workspace.versions.snapshot("first")
    _retrain_rules(workspace)
    workspace.versions.snapshot("second")

    def models(*args: str) -> str:
        result = runner.invoke(cli, ["models", *args, *base, "--model", "model1"])
        assert result.exit_code == 0, result.output
        return result.output

    # No database configured and none under the output root: the file side only, nothing created.
    assert "newest models -> v0001" in models("promote", "v0001", "--operator", "qe")
    assert not (workspace.output_root / "inspections.db").exists()
    assert "history.jsonl (no database)" in models("history")

    models("promote", "v0002", "--operator", "anna", "--reason", "fewer false rejects", "--db", db)
    models("rollback", "--operator", "bob", "--reason", "line 2 complaints", "--db", db)
    store = InspectionStore(db)
    try:
        rows = store.promotions("model1")
        assert [(r.action, r.previous, r.version, r.operator, r.reason) for r in rows] == [
            ("rollback", "v0002", "v0001", "bob", "line 2 complaints"),
            ("promote", "v0001", "v0002", "anna", "fewer false rejects"),
        ]
        assert rows[0].created_at is not None and rows[0].host
        assert store.promotions("model2") == []
    finally:
        store.dispose()
    # The file side keeps its own record, each with its action.
    assert [(e["to"], e["action"]) for e in workspace.versions.history()] == [
        ("v0001", "promote"),
        ("v0002", "promote"),
        ("v0001", "rollback"),
    ]
    shown = models("history", "--db", db).splitlines()
    assert "rollback" in shown[1] and "v0002 -> v0001 by bob: line 2 complaints" in shown[1]
    assert "promote" in shown[2] and "v0001 -> v0002 by anna" in shown[2]

    # A database that cannot be opened: one line, and the models in use did not change.
    bad = runner.invoke(
        cli, ["models", "promote", *base, "--model", "model1", "v0002", "--db", "nosuchdriver://x"]
    )
    assert bad.exit_code == 1 and bad.output.count("\n") == 1, bad.output
    assert workspace.versions.current() == "v0001"


def test_migration_0005_adds_append_only_promotions_to_an_existing_database(store):
    """On SQLite, and on PostgreSQL when ORINGSCAN_TEST_PG_URL names a server."""
    from alembic import command
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DBAPIError

    from oringscan.db.migrate import alembic_config, head_revision

    store.record_promotion("model1", "promote", "v0001", None, "qe", "before the downgrade")
    cfg = alembic_config(store.url)
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "model_promotions" not in inspect(store.engine).get_table_names()
    assert store.migrate() == head_revision()
    store.record_promotion("model1", "promote", "v0003", None, "qe", "after 0005")
    store.record_promotion("model1", "rollback", "v0002", "v0003", "qe")
    assert [(r.action, r.reason) for r in store.promotions()] == [
        ("rollback", None),
        ("promote", "after 0005"),
    ]
    with pytest.raises(OringscanError, match="action must be"):
        store.record_promotion("model1", "delete", "v0003", None)
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("UPDATE model_promotions SET version = 'v0009'"))
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(text("DELETE FROM model_promotions"))
    assert len(store.promotions()) == 2


def test_export_writes_the_promoted_versions_graph_and_onnx_inspection_uses_it(
    tiny_models: TinyModels, workspace: TypeWorkspace
):
    """`export model` exports what decides parts: the promoted version, not the working copy."""
    from oringscan.export.models import export_model
    from oringscan.screening.onnx_export import ONNX_FILE

    config = tiny_models.config.model_copy(deep=True)
    config.rework.rules_file = None
    workspace.versions.snapshot("first")
    workspace.versions.promote("v0001")
    report = export_model(config, workspace.output_root, "model1", check_tiles=2)
    graph = report.files["screening"]
    assert graph == workspace.models.screening_dir / ONNX_FILE and "versions/v0001" in str(graph)
    assert graph.is_file() and not (workspace.working_models.screening_dir / ONNX_FILE).exists()
    assert "versions/v0001" in str(report.files["segmentation"]) and report.files["segmentation"].is_file()
    config.pipeline.runtime = "onnx"
    inspector = Inspector.load(config, workspace.output_root, "model1")  # the version is not "damaged"
    assert inspector.model_versions()["version"] == "v0001"
