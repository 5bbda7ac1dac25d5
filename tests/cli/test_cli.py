"""The command line as a script sees it: what starts without torch, and the exit-code table.

Exit codes (cli/common.py ExitCode, README "Exit codes"): 0 all processed, 1 the command failed
(missing model, bad config; --strict at the first input error), 2 usage (including a named path
that does not exist), 3 some inputs were errors (each reported, the rest processed).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support.pipeline import SIZE, TinyModels, tiny_config

from oringscan.cli.main import cli
from oringscan.config import config_to_toml
from oringscan.frames import write_frame

ROOT = Path(__file__).resolve().parents[2]  # the repository
HEAVY = ("torch", "torchvision", "anomalib", "timm", "lightning")

# One interpreter runs the commands that need no model in turn and reports, after each, which heavy
# modules it has imported (the order matters: `db --help` first, before anything loads SQLAlchemy).
_PROBE = r"""
import importlib, json, pkgutil, sys
from oringscan.cli.main import cli
HEAVY = {heavy!r}
report = {{}}
for args in {commands!r}:
    try:
        cli(args, prog_name="oringscan", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
    report[" ".join(args)] = {{"code": code, "heavy": [m for m in HEAVY if m in sys.modules],
                               "sqlalchemy": "sqlalchemy" in sys.modules}}
import oringscan.dashboard as dashboard  # `oringscan dashboard` serves these pages: no model in them
for info in pkgutil.iter_modules(dashboard.__path__):
    if info.name != "app":  # the Streamlit script itself runs on import
        importlib.import_module("oringscan.dashboard." + info.name)
report["dashboard pages"] = {{"code": 0, "heavy": [m for m in HEAVY if m in sys.modules], "sqlalchemy": True}}
print("PROBE" + json.dumps(report))
"""


def test_commands_that_need_no_model_import_no_torch(tmp_path: Path) -> None:
    commands = [
        ["db", "--help"],
        ["config", "show"],
        ["--help"],
        ["db", "frames", "--help"],
        ["synth", "--help"],
        ["dashboard", "--help"],
        ["inspect", "--help"],
        ["train", "--help"],
        ["evaluate", "screening", "--help"],
    ]
    probe = _PROBE.format(heavy=HEAVY, commands=commands)
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout[run.stdout.index("PROBE") + 5 :])
    for name, entry in report.items():
        assert entry["code"] == 0, (name, entry)
        assert entry["heavy"] == [], f"`oringscan {name}` imported {entry['heavy']}"
    # The database CLI's help is built without SQLAlchemy (the store loads it when a command runs).
    assert report["db --help"]["sqlalchemy"] is False
    assert "FutureWarning" not in run.stderr and "Warning" not in run.stderr, run.stderr


def test_lazy_package_exports_all_resolve() -> None:
    """Every name a package lists in __all__ is importable (the lazy table and the modules agree)."""
    import importlib

    for package in (
        "screening",
        "segmentation",
        "pipeline",
        "rework_rules",
        "preprocess",
        "synth",
        "db",
        "dashboard",
    ):
        module = importlib.import_module(f"oringscan.{package}")
        for name in module.__all__:
            assert getattr(module, name) is not None, f"oringscan.{package}.{name}"
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    return {_norm(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_import_is_declared_in_pyproject() -> None:
    """Each third-party module imported under src/ belongs to a distribution pyproject declares."""
    imported: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "oringscan").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                imported.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    declared = _declared_distributions()
    owners = packages_distributions()
    undeclared = []
    for top, where in sorted(imported.items()):
        if top in sys.stdlib_module_names or top == "oringscan":
            continue
        dists = owners.get(top)
        assert dists, f"{top} (imported in {where}) is not installed"
        if not any(_norm(d) in declared for d in dists):
            undeclared.append(f"{top} ({', '.join(dists)}; imported in {where})")
    assert not undeclared, "imported but not in pyproject.toml: " + "; ".join(undeclared)


# --- exit codes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A quarter-size config, one good frame, one broken frame, an empty output root."""
    from oringscan.synth import render_frame

    base = tmp_path_factory.mktemp("cli exit codes")
    config_path = base / "small.toml"
    config_path.write_text(config_to_toml(tiny_config()), encoding="utf-8")
    frames = base / "frames"
    frames.mkdir()
    write_frame(frames / "a_good.bmp", render_frame("good", np.random.default_rng(3), size=SIZE).image)
    (frames / "b_broken.bmp").write_bytes(b"BM not really a bitmap")
    return {
        "config": config_path,
        "frames": frames,
        "good": frames / "a_good.bmp",
        "broken": frames / "b_broken.bmp",
        "out": base / "no models here",
    }


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_measure_exit_codes(small_setup: dict[str, Path]) -> None:
    base = [
        "measure",
        "--config",
        str(small_setup["config"]),
        "--output",
        str(small_setup["out"]),
        "--model",
        "model1",
        "--no-rules",
    ]
    code, out = _run(*base, str(small_setup["good"]))
    assert code == 0, out
    code, out = _run(*base, str(small_setup["frames"]), "--json")
    assert code == 3, out  # the broken frame is reported (verdict error), the good one measured
    assert "1 of 2 input(s) were errors" in out
    code, out = _run(*base, str(small_setup["frames"]), "--strict")
    assert code == 1 and "--strict" in out and "b_broken.bmp" in out, out
    code, out = _run(*base, str(small_setup["frames"] / "typo"))
    assert code == 2 and "typo: no such file or folder" in out and len(out.strip().splitlines()) == 1, out
    # Without --strict a missing path next to real ones counts as an input error; with it, usage.
    code, out = _run(*base, str(small_setup["good"]), str(small_setup["frames"] / "typo"), "--strict")
    assert code == 2, out
    code, out = _run(
        "measure",
        "--config",
        str(small_setup["config"]),
        "--output",
        str(small_setup["out"]),
        "--model",
        "model1",
        str(small_setup["good"]),
    )
    assert code == 1 and "rework_rules.toml" in out, out  # no rules file: the command failed


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "{typo}"],
        ["watch", "{typo}"],
        ["screen", "--folder", "{typo}"],
        ["screen", "--image", "{typo}"],
        ["predict", "--folder", "{typo}"],
        ["predict", "--full-image", "{typo}"],
        ["measure", "{typo}"],
        ["preprocess", "--data", "{typo}"],
    ],
)
def test_a_mistyped_path_is_a_usage_error(small_setup: dict[str, Path], command: list[str]) -> None:
    typo = str(small_setup["frames"].parent / "fraems")
    args = [a.replace("{typo}", typo) for a in command]
    code, out = _run(
        *args[:1],
        "--config",
        str(small_setup["config"]),
        "--output",
        str(small_setup["out"]),
        *(["--model", "model1"] if args[0] != "preprocess" else []),
        *args[1:],
    )
    assert code == 2, out
    assert "fraems" in out


@pytest.mark.parametrize(
    "command",
    [["inspect", "{frames}"], ["screen", "--folder", "{frames}"], ["predict", "--folder", "{frames}"]],
)
def test_a_missing_model_fails_the_command(small_setup: dict[str, Path], command: list[str]) -> None:
    args = [a.replace("{frames}", str(small_setup["frames"])) for a in command]
    code, out = _run(
        args[0],
        "--config",
        str(small_setup["config"]),
        "--output",
        str(small_setup["out"]),
        "--model",
        "model1",
        *args[1:],
        *(["--db", "sqlite://"] if args[0] == "inspect" else []),
    )
    assert code == 1, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "not found" in lines[0], out


def test_exit_codes_are_in_every_batch_commands_help() -> None:
    for command in (
        ["--help"],
        ["inspect", "--help"],
        ["watch", "--help"],
        ["screen", "--help"],
        ["predict", "--help"],
        ["measure", "--help"],
        ["preprocess", "--help"],
        ["evaluate", "pipeline", "--help"],
        ["calibrate", "rework", "--help"],
    ):
        code, out = _run(*command)
        assert code == 0 and "Exit codes" in out and "3  done, but some inputs were errors" in out, command


@pytest.mark.slow
def test_broken_frame_exit_codes_with_models(tiny_models: TinyModels, tmp_path: Path) -> None:
    """inspect, screen and predict: a broken frame gives 3 (the rest processed); --strict gives 1."""
    folder = tmp_path / "frames"
    folder.mkdir()
    good = sorted((tiny_models.data_root / "images" / "model1good").glob("*.bmp"))[0]
    shutil.copy(good, folder / "a_good.bmp")
    (folder / "b_broken.bmp").write_bytes(b"BM not really a bitmap")
    common = [
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(tiny_models.output_root),
        "--model",
        "model1",
    ]
    db = ["--db", f"sqlite:///{(tmp_path / 'i.db').as_posix()}", "--no-progress", "--no-save-vis"]

    code, out = _run("inspect", *common, str(folder), *db, "--json")
    assert code == 3, out
    rows = json.loads(out[out.index("[") : out.rindex("]") + 1])
    assert sorted(r["verdict"] == "error" for r in rows) == [False, True]
    code, out = _run("inspect", *common, str(folder), *db, "--reinspect", "--strict")
    assert code == 1 and "--strict" in out and "b_broken.bmp" in out, out
    code, out = _run("inspect", *common, str(folder / "a_good.bmp"), *db, "--reinspect")
    assert code == 0, out

    code, out = _run("screen", *common, "--folder", str(folder), "--threads", "1")
    assert code == 3 and "b_broken.bmp" in out, out
    code, out = _run("screen", *common, "--folder", str(folder), "--threads", "1", "--strict")
    assert code == 1 and "--strict" in out, out
    code, out = _run("screen", *common, "--image", str(folder / "a_good.bmp"), "--threads", "1")
    assert code == 0, out

    code, out = _run("predict", *common, "--folder", str(folder), "--device", "cpu", "--threads", "1")
    assert code == 3, out
    code, out = _run("predict", *common, "--image", str(folder / "b_broken.bmp"), "--device", "cpu")
    assert code == 3 and len(out.strip().splitlines()) == 1, out
    code, out = _run("predict", *common, "--folder", str(folder), "--device", "cpu", "--strict")
    assert code == 1 and "--strict" in out, out

    # watch: the broken frame already in the folder stops a --strict watcher (exit 1).
    code, out = _run(
        "watch",
        *common,
        str(folder),
        "--db",
        f"sqlite:///{(tmp_path / 'w.db').as_posix()}",
        "--poll",
        "0.05",
        "--stable-polls",
        "1",
        "--no-save-vis",
        "--strict",
    )
    assert code == 1 and "b_broken.bmp" in out, out


@pytest.mark.slow
def test_save_vis_flag_decides_the_heatmaps_too(tiny_models: TinyModels, tmp_path: Path) -> None:
    """--save-vis/--no-save-vis reaches the Inspector's heatmaps, not only the recorder's pictures."""
    from oringscan.pipeline.batch import inspect_paths
    from oringscan.pipeline.inspector import Inspector

    config = tiny_models.config.model_copy(deep=True)
    config.pipeline.save_overlays = False  # the config says no pictures; the flag says yes
    inspector = Inspector.load(config, tiny_models.output_root, tiny_models.model)
    # model1_defect_0001: a defect the tiny screen flags (0000's is too subtle for the tiny models'
    # threshold, the highest of 7 cross-fitted good scores).
    defect = sorted((tiny_models.data_root / "images" / "model1defect").glob("*.bmp"))[1]
    summary = inspect_paths(
        inspector, [defect], None, output_root=tmp_path, save_overlays=True, progress=False
    )
    (result,) = summary.results
    assert result.verdict != "good" and result.overlay_path, result
    overlay = Path(result.overlay_path)
    assert overlay.is_file() and overlay.with_name(overlay.stem + "_heat.png").is_file()
    assert result.screening is not None and result.screening.anomaly_maps is not None

    summary = inspect_paths(
        inspector, [defect], None, output_root=tmp_path, save_overlays=False, progress=False
    )
    (result,) = summary.results
    assert (
        result.overlay_path is None and result.screening is not None and result.screening.anomaly_maps is None
    )
