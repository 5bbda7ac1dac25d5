"""``oringscan inspect --engine ray``: a real local Ray (2 CPUs), the tests' tiny real models.

The Ray engine must give the in-process engine's records, JSON and overlays, frame for frame, keep
the skip-already-inspected rule, and leave exactly one record per frame when a worker process is
killed mid-run; ``oringscan reinspect --engine ray`` supersedes records with the in-process results.
Without Ray the flag is one line saying how to install it. One local Ray serves the whole module.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from support.pipeline import TinyModels

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.db.models import Frame, Run
from oringscan.pipeline import Inspector
from oringscan.pipeline.batch import inspect_paths
from oringscan.pipeline.ray_engine import RayEngine, RayOptions, WorkerError, inspect_paths_ray


@pytest.fixture(scope="module")
def local_ray() -> Any:
    """One small local Ray for the module (starting one costs seconds of CPU)."""
    ray = pytest.importorskip("ray", reason='Ray is optional: pip install "oringscan[ray]"')
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


def frames(models: TinyModels) -> list[Path]:
    """Defect, rework and a few good frames: every verdict path and overlays."""
    images = models.data_root / "images"
    return [
        *sorted((images / "model1defect").glob("*.bmp"))[:2],
        *sorted((images / "model1_rework").glob("*.bmp")),
        *sorted((images / "model1good").glob("*.bmp"))[:1],
    ]


def record_of(store: InspectionStore, frame_id: int) -> dict[str, Any]:
    """A frame record and its rows, without ids, times and where its overlay went."""
    with store.read_session() as session:
        frame = session.get(Frame, frame_id)
        assert frame is not None
        return {
            "path": frame.path,
            "sha256": frame.sha256,
            "frame_key": frame.frame_key,
            "verdict": frame.verdict,
            "reasons": frame.reasons,
            "screen": (
                frame.screen_score,
                frame.screen_threshold,
                frame.screen_flagged,
                frame.screen_marginal,
            ),
            "rework_verdict": frame.rework_verdict,
            "shape": (frame.frame_height, frame.frame_width),
            "model_fingerprint": frame.model_fingerprint,
            "overlay": None if frame.overlay_path is None else Path(frame.overlay_path).name,
            "tiles": [(t.x, t.y, t.w, t.h, round(t.score, 5), t.flagged) for t in frame.tiles],
            "defects": [(d.label, round(d.score, 5), d.x, d.y, d.w, d.h, d.mask_rle) for d in frame.defects],
            "measurements": [
                (m.metric, None if m.value is None else round(m.value, 5), m.fired, m.verdict)
                for m in frame.measurements
            ],
            "stages": sorted(frame.timings),
        }


def current_records(store: InspectionStore, run_id: int) -> dict[str, int]:
    with store.read_session() as session:
        rows = session.execute(select(Frame.path, Frame.id).where(Frame.run_id == run_id)).all()
    paths = [p for p, _ in rows]
    assert len(paths) == len(set(paths)), "a frame recorded twice in one run"
    return dict(rows)


@pytest.mark.slow
def test_ray_gives_the_in_process_records_json_and_overlays(
    tiny_models: TinyModels, local_ray: Any, tmp_path: Path
) -> None:
    config, root = tiny_models.config, tiny_models.output_root
    paths = frames(tiny_models)
    store = InspectionStore(f"sqlite:///{tmp_path / 'one db.db'}")
    local = inspect_paths(
        Inspector.load(config, root, "model1"), paths, store, output_root=tmp_path, progress=False
    )
    # Same database, --reinspect: a second run with the same models, each record superseding the first.
    ray_summary = inspect_paths_ray(
        config,
        root,
        "model1",
        paths,
        store,
        options=RayOptions(actors=1),
        reinspect=True,
        overlay_root=tmp_path,
    )
    assert [r.image for r in ray_summary.results] == [r.image for r in local.results]

    def plain(results: list[Any]) -> list[dict[str, Any]]:
        docs = [r.to_json() for r in results]
        for doc in docs:
            doc.pop("timings_ms")
        return docs

    assert plain(ray_summary.results) == plain(local.results)
    verdicts = {str(r.verdict) for r in local.results}
    assert len(verdicts) >= 2, verdicts  # not a trivially uniform batch
    first, second = current_records(store, local.run_id), current_records(store, ray_summary.run_id)
    assert set(first) == set(second) == {str(p.absolute()) for p in paths}
    for path, frame_id in first.items():
        assert record_of(store, second[path]) == record_of(store, frame_id), path
    # Overlays: same files, same pixels (PNG bytes), in each run's own folder.
    ours = sorted(local.overlay_dir.glob("*.png"))
    assert ours and [p.name for p in ours] == sorted(p.name for p in ray_summary.overlay_dir.glob("*.png"))
    for png in ours:
        assert (ray_summary.overlay_dir / png.name).read_bytes() == png.read_bytes(), png.name
    with store.read_session() as session:
        assert session.get(Run, ray_summary.run_id).engine == "ray"
    store.dispose()


@pytest.mark.slow
def test_a_killed_worker_still_leaves_one_record_per_frame(
    tiny_models: TinyModels, local_ray: Any, tmp_path: Path
) -> None:
    paths = frames(tiny_models)
    store = InspectionStore(f"sqlite:///{tmp_path / 'kill.db'}")
    engine = RayEngine(tiny_models.config, tiny_models.output_root, "model1", RayOptions(actors=2))
    engine.start()
    victim = engine.pids[0]
    killed: list[int] = []

    def kill_once(_result: Any) -> None:
        if not killed:
            os.kill(victim, signal.SIGKILL)  # the actor process, mid-run, with frames in flight
            killed.append(victim)

    try:
        summary = inspect_paths_ray(
            tiny_models.config,
            tiny_models.output_root,
            "model1",
            paths,
            store,
            engine=engine,
            on_result=kill_once,
            overlay_root=tmp_path,
        )
        restarted = local_ray.get(engine.actors[0].info.remote())["pid"]
        # The skip rule (same workers, no new start-up): nothing new to inspect with the same models.
        again = inspect_paths_ray(
            tiny_models.config,
            tiny_models.output_root,
            "model1",
            paths,
            store,
            engine=engine,
            overlay_root=tmp_path,
        )
    finally:
        engine.close()
    assert killed and restarted != victim  # Ray started a new worker process for the dead one
    records = current_records(store, summary.run_id)
    assert set(records) == {str(p.absolute()) for p in paths}  # every frame, exactly once
    assert not [r for r in summary.results if str(r.verdict) == "error"], [r.reasons for r in summary.results]
    run = store.run(summary.run_id)
    assert run is not None and run.status == "done" and run.n_frames == len(paths)
    assert again.results == [] and len(again.skipped) == len(paths)
    store.dispose()


@pytest.mark.slow
def test_missing_models_on_ray_are_one_line(tiny_models: TinyModels, local_ray: Any, tmp_path: Path) -> None:
    engine = RayEngine(tiny_models.config, tmp_path / "no models", "model1", RayOptions(actors=1))
    with pytest.raises(WorkerError) as caught:
        engine.start()
    engine.close()
    message = str(caught.value)
    assert "\n" not in message and "metadata.json" in message, message
    assert "model file not found; make it with: oringscan train screening --model model1" in message


@pytest.mark.slow
def test_reinspect_on_ray_supersedes_with_the_in_process_results(
    tiny_models: TinyModels, local_ray: Any, tmp_path: Path
) -> None:
    """``oringscan reinspect --engine ray`` on this module's Ray: each new record links to the one it
    supersedes and holds what the new models give in-process; a file that is gone is reported (exit 3)."""
    config = tiny_models.config
    archive = tmp_path / "archive"
    archive.mkdir()
    images = tiny_models.data_root / "images"
    sources = [
        next((images / "model1_rework").glob("*.bmp")),
        *sorted((images / "model1good").glob("*.bmp"))[:2],
    ]
    paths = [Path(shutil.copy(p, archive / p.name)) for p in sources]
    db = f"sqlite:///{tmp_path / 'plant.db'}"
    store = InspectionStore(db)
    old = inspect_paths(
        Inspector.load(config, tiny_models.output_root, "model1"),
        paths,
        store,
        output_root=tmp_path,
        progress=False,
        station="line 2",
    )
    gone = paths.pop()
    gone.unlink()
    new_root = tmp_path / "new models"  # retrained: here, the same models with the rework rules off
    shutil.copytree(
        tiny_models.output_root / "model1", new_root / "model1", ignore=shutil.ignore_patterns("inspections")
    )
    (new_root / "model1" / "rework_rules.toml").write_text("[settings]\nrework_disabled = true\n")

    args = ["reinspect", "--config", str(tiny_models.config_path), "--db", db, "--output", str(new_root)]
    out = CliRunner().invoke(cli, [*args, "--engine", "ray", "--actors", "1", "--no-progress", "--json"])
    assert out.exit_code == 3, out.output  # the gone file
    doc = json.loads(out.stdout)
    assert doc["selected"] == 3 and doc["reinspected"] == 2, doc
    assert [g["path"] for g in doc["gone"]] == [str(gone.absolute())]
    [new_run] = doc["runs"]

    def plain(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for d in docs:
            d.pop("timings_ms")
            d.pop("overlay_path", None)
        return sorted(docs, key=lambda d: d["image"])

    expected = inspect_paths(
        Inspector.load(config, new_root, "model1"), paths, None, output_root=tmp_path / "x", progress=False
    )
    assert plain(doc["results"]) == plain([r.to_json() for r in expected.results])
    with store.read_session() as session:
        assert session.get(Run, new_run).engine == "ray"
        new = session.scalars(select(Frame).where(Frame.run_id == new_run)).all()
        assert sorted(f.path for f in new) == sorted(str(p.absolute()) for p in paths)
        for record in new:
            before = session.get(Frame, record.supersedes_id)
            assert before is not None and before.run_id == old.run_id and before.path == record.path
            assert before.superseded_at is not None and record.station == "line 2"
    store.dispose()


def test_engine_ray_without_ray_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    frame = tmp_path / "a.bmp"
    frame.write_bytes(b"BM")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    result = CliRunner().invoke(
        cli, ["inspect", "--output", str(tmp_path), "--model", "model1", str(frame), "--engine", "ray"]
    )
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ['Error: the Ray engine needs Ray, which is not installed: pip install "oringscan[ray]"']


def test_engine_options_refuse_bad_values(tmp_path: Path) -> None:
    frame = tmp_path / "a.bmp"
    frame.write_bytes(b"BM")
    base = ["inspect", "--output", str(tmp_path), "--model", "model1", str(frame)]
    for extra in (["--engine", "spark"], ["--engine", "ray", "--actors", "0"]):
        result = CliRunner().invoke(cli, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
