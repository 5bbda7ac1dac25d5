"""Who may decide on the dashboard: login (Streamlit AppTest), roles, escaping, and refusing to serve
the network without login. Real SQLite databases, real argon2 hashes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.dashboard import SampleDb, app_test, assert_clean, make_sample_db

from oringscan.cli.main import cli
from oringscan.dashboard.server import check_login_setup
from oringscan.dashboard.settings import DashboardSettings
from oringscan.db import StoreError
from oringscan.db.users import add_user, authenticate, list_users, set_disabled
from oringscan.errors import ConfigError
from oringscan.types import InspectionResult, Verdict

FRAME = "views/frame_view.py"
PASSWORD = "correct horse battery"


@pytest.fixture()
def db(tmp_path: Path) -> SampleDb:
    return make_sample_db(tmp_path, n_frames=12, seed=7, with_broken=False)


def _login_settings(db: SampleDb) -> DashboardSettings:
    return dataclasses.replace(db.settings(), require_login=True)


def _log_in(at, name: str, password: str):  # noqa: ANN001, ANN202 - AppTest
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    return at.button[0].click().run()


def test_users_have_hashed_passwords_and_roles(db: SampleDb) -> None:
    anna = add_user(db.store, "anna", "operator", PASSWORD)
    add_user(db.store, "eve", "engineer", PASSWORD)
    with db.store.read_session() as s:
        from oringscan.db.models import User

        stored = {u.name: u.password_hash for u in s.query(User)}
    assert stored["anna"].startswith("$argon2id$") and PASSWORD not in stored["anna"]
    assert stored["anna"] != stored["eve"]  # salted
    assert authenticate(db.store, "anna", PASSWORD) == anna
    assert authenticate(db.store, "anna", "wrong password") is None
    assert authenticate(db.store, "nobody", PASSWORD) is None
    roles = {u.name: u for u in list_users(db.store)}
    assert roles["anna"].may("review") and not roles["anna"].may("settings")
    assert roles["eve"].may("review") and roles["eve"].may("settings")
    with pytest.raises(StoreError, match="exists already"):
        add_user(db.store, "anna", "engineer", PASSWORD)
    with pytest.raises(StoreError, match="at least 8"):
        add_user(db.store, "bob", "operator", "short")
    with pytest.raises(StoreError, match="role must be"):
        add_user(db.store, "bob", "admin", PASSWORD)
    set_disabled(db.store, "anna", True)
    assert authenticate(db.store, "anna", PASSWORD) is None


def test_users_add_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'i.db').as_posix()}"
    runner = CliRunner()
    added = runner.invoke(
        cli,
        ["users", "add", "anna", "--role", "operator", "--password-stdin", "--db", url],
        input=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    prompted = runner.invoke(
        cli, ["users", "add", "eve", "--role", "engineer", "--db", url], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert prompted.exit_code == 0, prompted.output
    listing = runner.invoke(cli, ["users", "list", "--db", url])
    assert "anna\toperator" in listing.output and "eve\tengineer" in listing.output
    again = runner.invoke(
        cli,
        ["users", "add", "anna", "--role", "operator", "--password-stdin", "--db", url],
        input=PASSWORD + "\n",
    )
    assert again.exit_code != 0 and again.output.strip() == "Error: anna: a user of that name exists already"


def test_no_login_off_this_machine_and_no_login_without_users(db: SampleDb, tmp_path: Path) -> None:
    open_settings = db.settings()  # require_login False
    check_login_setup(open_settings, "127.0.0.1")  # the plant may switch login off on loopback
    with pytest.raises(ConfigError, match="without login") as refused:
        check_login_setup(open_settings, "0.0.0.0")
    assert "require_login = true" in str(refused.value) and "oringscan users add" in str(refused.value)
    with pytest.raises(ConfigError, match="no dashboard users yet"):
        check_login_setup(_login_settings(db), "0.0.0.0")
    add_user(db.store, "anna", "operator", PASSWORD)
    check_login_setup(_login_settings(db), "0.0.0.0")
    # The command says it in one line and does not start.
    config = tmp_path / "open.toml"
    config.write_text("[dashboard]\nrequire_login = false\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["dashboard", "--config", str(config), "--db", db.url, "--host", "0.0.0.0"]
    )
    assert result.exit_code != 0
    assert (
        result.output.startswith("Error: dashboard on 0.0.0.0 without login")
        and result.output.count("\n") == 1
    )


def test_pages_wait_for_a_login(db: SampleDb, monkeypatch) -> None:
    at = app_test(_login_settings(db), monkeypatch)
    assert_clean(at)
    assert any("No dashboard users yet" in e.value for e in at.error)
    assert not at.dataframe  # nothing of the record is shown
    add_user(db.store, "anna", "operator", PASSWORD)
    at = app_test(_login_settings(db), monkeypatch)
    assert [t.value for t in at.title] == ["oringscan review"] and not at.dataframe
    at = _log_in(at, "anna", "not her password")
    assert any("Wrong name or password" in e.value for e in at.error) and not at.dataframe
    at = _log_in(at, "anna", PASSWORD)
    assert_clean(at)
    assert at.title[0].value == "Review queue" and at.dataframe
    assert any("Logged in as" in c.value and "anna" in c.value for c in at.sidebar.caption)


def test_a_decision_is_the_logged_in_users(db: SampleDb, monkeypatch) -> None:
    anna = add_user(db.store, "anna", "operator", PASSWORD)
    frame = db.store.review_queue(limit=1).items[0]
    at = app_test(_login_settings(db), monkeypatch, frame=str(frame.id))
    at = _log_in(at, "anna", PASSWORD)
    at.switch_page(FRAME).run()
    assert_clean(at)
    assert not [t for t in at.text_input if t.key == "f_operator"], "no typed name when users log in"
    at.radio(key=f"f_decision_{frame.id}").set_value("good")
    at.text_area(key=f"f_comment_{frame.id}").input("lint")
    next(b for b in at.button if b.label == "Record decision").click().run()
    assert_clean(at)
    reviews = db.store.reviews(frame.id)
    assert [(r.operator, r.decision, r.comment) for r in reviews] == [("anna", "good", "lint")]
    from oringscan.db.models import Review

    with db.store.read_session() as s:
        assert s.get(Review, reviews[0].id).user_id == anna.id


def test_everything_shown_in_markdown_is_escaped(tmp_path: Path, monkeypatch) -> None:
    db = make_sample_db(tmp_path, n_frames=4, seed=2, with_broken=False)
    run_id = db.store.start_run(oring_type="model1", command="inspect `rm -rf` **now**")
    hostile_reason = "**FAKE: approved by QA** [click](http://evil.example) :red[alarm] $x$ <img src=x>"
    result = InspectionResult(
        image=str(db.root / "frames" / "[x](http://a).png"),
        verdict=Verdict.SUSPECT,
        reasons=[hostile_reason],
        oring_type="model1",
        error=None,
    )
    frame_id = db.store.record_frame(run_id, result, frame_shape=(512, 612))
    db.store.add_review(frame_id, "**the boss** <script>", "defect", "see [here](http://evil.example)")
    at = app_test(db.settings(), monkeypatch, FRAME, frame=str(frame_id))
    assert_clean(at)
    sources = " ".join(
        [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    )
    for raw in ("**FAKE", "[click](", ":red[", "$x$", "<img src=x>", "**the boss**", "<script>", "[x](http"):
        assert raw not in sources, raw
    assert "\\*\\*FAKE\\: approved by QA\\*\\*" in sources  # shown as typed, not as bold
    plain = re.sub(r"\\(.)", r"\1", sources)
    assert hostile_reason in plain and "**the boss** <script>" in plain


def test_the_runs_page_shows_a_dead_run_as_interrupted(db: SampleDb, monkeypatch) -> None:
    import subprocess
    import sys

    from sqlalchemy import update

    from oringscan.db.models import Run

    run_id = db.store.start_run(oring_type="model1", command="inspect frames/")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with db.store.write_session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(pid=dead.pid))
    assert db.store.run(run_id).status == "running"  # nobody has looked yet
    at = app_test(db.settings(), monkeypatch, "views/runs.py")
    assert_clean(at)
    table = at.dataframe[0].value
    assert table.loc[table["run"] == run_id, "status"].tolist() == ["interrupted"]
