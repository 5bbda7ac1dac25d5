"""``oringscan demo`` end to end, scaled down: every real step, a filled database at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.pipeline.demo import DemoPlan, run_demo


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
    assert "--workdir" in run.output and "--minutes" in run.output and "10 minutes" in run.output
