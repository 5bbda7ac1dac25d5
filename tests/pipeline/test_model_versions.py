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


def test_compare_says_what_a_candidate_changes(
    tiny_models: TinyModels, workspace: TypeWorkspace, tmp_path: Path
):
    from oringscan.pipeline.compare import compare_versions

    config = tiny_models.config.model_copy(deep=True)
    config.rework.rules_file = None
    workspace.versions.snapshot("first")
    workspace.versions.promote("v0001")
    rules = workspace.working_models.rework_rules
    rules.write_text(
        rules.read_text(encoding="utf-8")
        + '\n[[rule]]\nmetric = "outer_radius"\nupper = 1.0\nverdict = "rework"\n'
        + 'message = "every ring too big"\nsource = "manual"\n',
        encoding="utf-8",
    )
    result = compare_versions(
        config, tiny_models.data_root, workspace.output_root, "model1", "working", progress=False
    )
    assert result["baseline"] == "v0001" and result["frames"] > 0
    good_changed = [c for c in result["changed"] if c["truth"] == "good"]
    assert good_changed and all(c["candidate"] == "rework" and c["change"] == "worse" for c in good_changed)
    assert result["metrics"]["false_reject_rate"]["verdict"] == "worse"
    assert result["stages"]["rework"]["verdict"] == "worse"
    out = Path(result["out_dir"])
    assert (out / "compare.json").is_file() and (out / "compare.png").is_file()
    page = (out / "compare.html").read_text(encoding="utf-8")
    assert "worse" in page and "<img" in page
    with pytest.raises(OringscanError, match="same models"):
        compare_versions(
            config, tiny_models.data_root, workspace.output_root, "model1", "v0001", progress=False
        )
