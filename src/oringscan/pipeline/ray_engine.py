"""Inspection on Ray: frames read and cut into ring tiles as tasks, the models in actors, the database
written by the driver.

Why Ray and not a home-made scheduler: it already places work on CPU and GPU workers of one or many
machines, keeps a stateful worker (here: an :class:`Inspector` with its three models loaded once),
restarts a worker process that died and retries the calls it had not answered.

Flow, per frame: a **prepare task** hashes and decodes the file (as the in-process reader does), then
runs the stages that need no model, :func:`~oringscan.pipeline.inspector.prepare_frame` (ring ROI,
ring tiles, rework geometry with the ROI), and returns a small description plus the prepared frame,
which stays in Ray's object store; the **driver** applies the skip-already-inspected rule on the
description and hands the prepared frame to an **actor**, which holds the models and runs the same
:meth:`Inspector.inspect_prepared` (screening, segmentation of the flagged tiles, verdict) and the same
overlay code (:class:`FrameRecorder`) as the in-process engine; the **driver alone writes the
database**, one transaction per frame, in the run it opened. The in-process engine runs the same two
halves one after the other (``inspect_loaded``), so records, JSON and overlays are those of
``oringscan inspect`` without Ray.

One record per frame even when a worker dies: actors are created with ``max_restarts`` and
``max_task_retries`` (Ray starts a new process, which loads the models again, and re-sends the
calls it had not answered); a frame whose call still fails is sent to another actor once more and
then recorded as an ``error`` with the reason; the writer is idempotent (a frame the driver already
recorded is never recorded again, and the database's unique index refuses a second current record
of the same frame and models).

Ray is optional (``pip install "oringscan[ray]"``); without it :func:`require_ray` raises one line
saying how to install it. Workers must see the frame files and the output folder under the same
paths as the driver (one machine, or shared storage).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from oringscan.config import Config
from oringscan.errors import InputNotFoundError, OringscanError, one_line, path_text
from oringscan.frames import iter_image_files
from oringscan.pipeline.batch import (
    BatchSummary,
    FrameRecorder,
    ReadFrame,
    missing_inputs,
    read_one,
    record_result,
    run_folder_name,
    sigterm_as_interrupt,
)
from oringscan.pipeline.inspector import Inspector, PreparedFrame, ReworkStage, error_result, prepare_frame
from oringscan.types import InspectionResult
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = 'the Ray engine needs Ray, which is not installed: pip install "oringscan[ray]"'
# Frames each actor holds (one being inspected, one waiting): the actor never idles between frames.
PER_ACTOR_IN_FLIGHT = 2
# Ray CPU resource a prepare task asks for (read, decode, ROI, tiles, geometry: one thread, some of it
# waiting on the disk); the actors leave at least this much free, else the tasks would wait forever.
PREPARE_TASK_CPUS = 0.5
# Task worker processes started (and the pipeline imported in them) while the actors load their models.
TASK_WORKERS_WARMED = 2
# How often the driver wakes up while waiting (heartbeat of the run record, Ctrl-C).
WAIT_S = 5.0


class RayNotInstalledError(OringscanError):
    """``--engine ray`` without Ray installed."""


class WorkerError(OringscanError):
    """The inspection workers could not start (model files) or all died."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayNotInstalledError(RAY_INSTALL_HINT) from None
    return ray


@dataclass(frozen=True, slots=True)
class RayOptions:
    """How to reach Ray and how many workers to run.

    ``address``: an existing cluster (``ray://host:10001`` or ``auto``); None starts a local Ray
    (and stops it at the end). ``actors``: inspection workers, each with its own copy of the models.
    ``gpus_per_actor``: None = 1 (or a share) when the cluster has GPUs and the device is not cpu.
    ``threads``: torch/OpenCV threads per actor (None: the local cores shared out, at least 1).
    """

    address: str | None = None
    actors: int = 1
    num_cpus: int | None = None
    gpus_per_actor: float | None = None
    threads: int | None = None
    max_restarts: int = 3
    object_store_mb: int = 1024

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise OringscanError(f"--actors must be at least 1 (got {self.actors})")


@dataclass(slots=True)
class FrameJob:
    """One frame to inspect. Re-inspection fills the record it supersedes and what to keep from it."""

    path: Path
    overlay_name: str = "frame.png"
    expect_key: str | None = None  # reinspect: the file must still hold this frame
    supersedes: int | None = None
    station: str | None = None
    captured_at: datetime | None = None


@dataclass(slots=True)
class Outcome:
    """What became of one job: inspected (``result``), or skipped with the reason."""

    job: FrameJob
    key: str | None
    result: InspectionResult | None = None
    shape: tuple[int, int] | None = None
    fingerprint: str | None = None
    skipped: str | None = None


@dataclass(slots=True)
class EngineModels:
    """What the driver knows of the models the actors loaded: enough to open the run and record.

    Duck-types the parts of :class:`Inspector` that ``batch.start_run`` and ``record_result`` read.
    """

    config: Config
    oring_type: str
    fingerprint: str
    versions: dict[str, Any] = field(default_factory=dict)
    segmentation_notice: str = ""

    def model_versions(self) -> dict[str, Any]:
        return self.versions


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """One overlay file name per frame, decided before any frame is inspected (several workers
    write into one folder): ``<stem>.png``, or ``<stem>_<n>.png`` when stems repeat in the batch."""
    stems = [p.stem or "frame" for p in paths]
    seen: dict[str, int] = {}
    names = []
    for stem in stems:
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        names.append(f"{stem}.png" if n == 0 else f"{stem}_{n}.png")
    return names


@dataclass(slots=True)
class TiledFrame:
    """What a prepare task hands an actor: the read frame (path, hash, decoding problem) and, when it
    decoded, its ring, ring tiles and rework geometry (sharing the decoded frame: shipped once)."""

    item: ReadFrame
    prepared: PreparedFrame | None


def inspect_tiled(
    recorder: FrameRecorder, tiled: TiledFrame, overlay_dir: Path | None, name: str
) -> InspectionResult:
    """Finish a prepared frame with the recorder's models and save its overlay as ``name`` (no store:
    the driver records). A frame that did not decode becomes the recorder's ``error`` result."""
    item = tiled.item
    inspection = None
    if tiled.prepared is not None:
        frame_name = path_text(item.path.absolute())
        inspection = recorder.inspector.inspect_prepared(tiled.prepared, frame_name, sha256=item.sha256)
    recorder.overlay_dir = overlay_dir
    result = recorder.process(item, inspection=inspection, overlay_name=name)
    assert result is not None  # no store: never "recorded elsewhere"
    return result


def frame_shape(item: ReadFrame) -> tuple[int, int] | None:
    """The frame size the RLE masks are stored at (as the in-process recorder takes it)."""
    return None if item.frame is None else (int(item.frame.image.shape[0]), int(item.frame.image.shape[1]))


def slim(result: InspectionResult) -> InspectionResult:
    """The result without the screening heatmaps (used for the overlay only, large to ship back)."""
    if result.screening is not None:
        result.screening.anomaly_maps = None
    return result


class InspectWorker:
    """Ray actor body: one Inspector, its models loaded once; finishes prepared frames (screening,
    segmentation, verdict) and saves their overlays."""

    def __init__(
        self,
        config: Config,
        output_root: str,
        oring_type: str,
        device: str | None,
        threads: int,
        save_overlays: bool | None,
    ) -> None:
        from oringscan.cli.common import set_threads

        os.environ["OMP_NUM_THREADS"] = str(threads)
        set_threads(threads)
        self.problem: str | None = None
        self.recorder: FrameRecorder | None = None
        try:
            inspector = Inspector.load(config, output_root, oring_type, device=device)
            set_threads(threads)  # torch is imported now
            self.recorder = FrameRecorder(inspector, save_overlays=save_overlays)
        except OringscanError as exc:  # told to the driver by info(): one line, no traceback
            self.problem = one_line(str(exc))

    def info(self) -> dict[str, Any]:
        if self.recorder is None:
            return {"problem": self.problem or "models not loaded", "pid": os.getpid()}
        inspector = self.recorder.inspector
        return {
            "fingerprint": inspector.fingerprint,
            "versions": inspector.model_versions(),
            "notice": inspector.segmentation_notice,
            "pid": os.getpid(),
        }

    def rework_stage(self) -> ReworkStage:
        """The rework rules this actor loaded: the prepare tasks measure with exactly these."""
        assert self.recorder is not None
        return self.recorder.inspector.rework

    def inspect(
        self, tiled: TiledFrame, overlay_dir: str | None, name: str
    ) -> tuple[InspectionResult, tuple[int, int] | None, str]:
        assert self.recorder is not None
        result = inspect_tiled(self.recorder, tiled, None if overlay_dir is None else Path(overlay_dir), name)
        return slim(result), frame_shape(tiled.item), self.recorder.inspector.fingerprint


def prepare_task(path: str, config: Config, rework: ReworkStage) -> tuple[dict[str, Any], TiledFrame]:
    """Ray task: read, hash and decode one file, then its ring ROI, tiles and rework geometry; a small
    description for the driver, the prepared frame for an actor."""
    import cv2

    cv2.setNumThreads(1)  # one task, one core's share
    item = read_one(Path(path), config.frame)
    prepared = None
    if item.frame is not None:
        name = path_text(item.path.absolute())
        prepared = for_actor(prepare_frame(item.frame, name, config, rework, {"read": item.read_ms}))
    return {"key": item.key, "sha256": item.sha256, "problem": item.problem}, TiledFrame(item, prepared)


def warm_up() -> int:
    """Ray task that only gets its worker process to import this module (the pipeline) and OpenCV."""
    import cv2

    cv2.setNumThreads(1)
    return os.getpid()


def for_actor(prepared: PreparedFrame) -> PreparedFrame:
    """What an actor needs of the ROI is its status (the verdict) and ring mask (the overlay): the
    other frame-size masks and level maps the geometry was measured with stay here (they were 5 of
    the 7 frame-size arrays shipped per frame)."""
    if prepared.roi is not None:
        prepared.roi = replace(prepared.roi, raw_mask=None, bore_mask=None, level_maps=None)
    if prepared.rework is not None:
        prepared.rework = replace(prepared.rework, roi=None)
    return prepared


class RayEngine:
    """Local or remote Ray, a pool of :class:`InspectWorker` actors, and the dispatch loop."""

    def __init__(
        self,
        config: Config,
        output_root: Path | str,
        oring_type: str,
        options: RayOptions | None = None,
        *,
        device: str | None = None,
        save_overlays: bool | None = None,
    ) -> None:
        self.ray = require_ray()
        self.config = config
        self.output_root = Path(output_root)
        self.oring_type = oring_type
        self.options = options or RayOptions()
        self.device = device
        self.save_overlays = save_overlays
        self.actors: list[Any] = []
        self.pids: list[int] = []
        self.models: EngineModels | None = None
        self._started_ray = False
        self._prepare: Any = None
        self._task_args: tuple[Any, Any] | None = None  # object refs: the config, the rework stage

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> EngineModels:
        """Connect to (or start) Ray, start the actors, wait until each has loaded the models."""
        ray = self.ray
        opts = self.options
        self._started_ray = connect(opts)
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        per_gpu = opts.gpus_per_actor
        if per_gpu is None:
            per_gpu = min(1.0, gpus / opts.actors) if gpus > 0 and self.device != "cpu" else 0.0
        cpus = int(resources.get("CPU", os.cpu_count() or 1))
        threads = opts.threads or int(os.environ.get("ORINGSCAN_THREADS", "0")) or max(1, cpus // opts.actors)
        # An actor takes a CPU, but never all of them: the read tasks need some (else they wait forever).
        actor_cpus = max(0.1, min(1.0, (cpus - PREPARE_TASK_CPUS) / opts.actors))
        actor_cls = ray.remote(InspectWorker).options(
            num_cpus=actor_cpus,
            num_gpus=per_gpu,
            max_restarts=opts.max_restarts,
            max_task_retries=opts.max_restarts,
        )
        self._prepare = ray.remote(prepare_task).options(
            num_returns=2, num_cpus=PREPARE_TASK_CPUS, max_retries=3
        )
        self.actors = [
            actor_cls.remote(
                self.config, str(self.output_root), self.oring_type, self.device, threads, self.save_overlays
            )
            for _ in range(opts.actors)
        ]
        # A task worker's first task imports the pipeline (seconds on a loaded machine): do it now,
        # while the actors load their models, not inside the first frames' time.
        warm = ray.remote(warm_up).options(num_cpus=PREPARE_TASK_CPUS)
        warming = [warm.remote() for _ in range(TASK_WORKERS_WARMED)]
        try:
            infos = ray.get([a.info.remote() for a in self.actors])
        except Exception as exc:  # noqa: BLE001 - an actor that could not even start
            raise WorkerError(f"inspection workers did not start: {one_line(str(exc))}") from None
        problems = [i["problem"] for i in infos if "problem" in i]
        if problems:
            raise WorkerError(problems[0])
        fingerprints = {i["fingerprint"] for i in infos}
        if len(fingerprints) != 1:
            raise WorkerError(
                f"the workers loaded different models ({', '.join(sorted(fingerprints))}): "
                "were model files changed while they started? run again"
            )
        self.pids = [int(i["pid"]) for i in infos]
        # Put once, shared by every task: the config and the rules the actors loaded (same fingerprint).
        rework = ray.get(self.actors[0].rework_stage.remote())
        self._task_args = (ray.put(self.config), ray.put(rework))
        ray.get(warming)
        first = infos[0]
        self.models = EngineModels(
            self.config, self.oring_type, first["fingerprint"], first["versions"], first["notice"]
        )
        log.info("ray: %d actor(s), %.2f GPU each, %d thread(s) each", len(self.actors), per_gpu, threads)
        return self.models

    def close(self) -> None:
        """Stop the actors; stop Ray too when this engine started it."""
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the dispatch loop ------------------------------------------------------------------------
    def run(
        self,
        jobs: Sequence[FrameJob],
        overlay_dir: Path | None,
        admit: Callable[[FrameJob, dict[str, Any]], str | None],
        on_outcome: Callable[[Outcome], None],
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        """Inspect ``jobs``; ``admit(job, description)`` returns None to inspect or why it is skipped;
        ``on_outcome`` gets every job exactly once (the driver records there)."""
        ray = self.ray
        if not self.actors:
            raise WorkerError("the Ray engine was not started")
        from ray.exceptions import RayActorError, RayTaskError

        assert self._task_args is not None
        config_ref, rework_ref = self._task_args
        out_dir = None if overlay_dir is None else str(overlay_dir)
        n_actors = len(self.actors)
        read_window = PER_ACTOR_IN_FLIGHT * n_actors + 1
        reads: dict[Any, tuple[int, Any]] = {}
        waiting: deque[tuple[int, Any, dict[str, Any]]] = deque()
        inflight: dict[Any, tuple[int, int, Any, dict[str, Any]]] = {}
        load = [0] * n_actors
        alive = [True] * n_actors
        attempts: dict[int, int] = {}
        done: set[int] = set()
        next_job = 0

        def finish(outcome: Outcome, index: int) -> None:
            if index in done:  # idempotent: a job reported twice is recorded once
                return
            done.add(index)
            on_outcome(outcome)

        def failed(index: int, meta: dict[str, Any], problem: str) -> None:
            job = jobs[index]
            result = error_result(
                path_text(job.path.absolute()), problem, oring_type=self.oring_type, sha256=meta.get("sha256")
            )
            assert self.models is not None
            finish(Outcome(job, meta.get("key"), result, None, self.models.fingerprint), index)

        while next_job < len(jobs) or reads or waiting or inflight:
            while next_job < len(jobs) and len(reads) + len(waiting) < read_window:
                meta_ref, item_ref = self._prepare.remote(str(jobs[next_job].path), config_ref, rework_ref)
                reads[meta_ref] = (next_job, item_ref)
                next_job += 1
            while waiting:
                free = [i for i in range(n_actors) if alive[i] and load[i] < PER_ACTOR_IN_FLIGHT]
                if not free:
                    break
                slot = min(free, key=lambda i: load[i])
                index, item_ref, meta = waiting.popleft()
                ref = self.actors[slot].inspect.remote(item_ref, out_dir, jobs[index].overlay_name)
                inflight[ref] = (index, slot, item_ref, meta)
                load[slot] += 1
            if not any(alive):
                raise WorkerError(
                    "every inspection worker died (see the Ray logs); the frames done are recorded"
                )
            ready, _ = ray.wait([*reads, *inflight], num_returns=1, timeout=WAIT_S)
            if on_wait is not None:
                on_wait()
            for ref in ready:
                if ref in reads:
                    index, item_ref = reads.pop(ref)
                    try:
                        meta = ray.get(ref)
                    except RayTaskError as exc:  # the task itself crashed (after Ray's retries)
                        failed(index, {}, f"cannot be read ({one_line(str(exc.cause or exc))})")
                        continue
                    why = admit(jobs[index], meta)
                    if why is not None:
                        finish(Outcome(jobs[index], meta["key"], skipped=why), index)
                    else:
                        waiting.append((index, item_ref, meta))
                    continue
                index, slot, item_ref, meta = inflight.pop(ref)
                load[slot] -= 1
                try:
                    result, shape, fingerprint = ray.get(ref)
                except RayActorError as exc:  # the worker died and Ray's restarts/retries ran out
                    attempts[index] = attempts.get(index, 0) + 1
                    if not _actor_alive(ray, self.actors[slot]):
                        alive[slot] = False
                    if attempts[index] <= 1 and any(alive):
                        log.warning(
                            "%s: worker died, trying another (%s)", jobs[index].path, one_line(str(exc))[:200]
                        )
                        waiting.appendleft((index, item_ref, meta))
                    else:
                        failed(
                            index, meta, f"inspection worker died on this frame ({one_line(str(exc))[:200]})"
                        )
                    continue
                except RayTaskError as exc:  # a bug in the worker on this frame: one error record
                    failed(
                        index,
                        meta,
                        f"internal error in the inspection worker: {one_line(str(exc.cause or exc))}",
                    )
                    continue
                finish(Outcome(jobs[index], meta["key"], result, shape, fingerprint), index)


def connect(options: RayOptions) -> bool:
    """Start a local Ray or connect to ``options.address``, unless Ray is up in this process already.

    True when this call started it (the caller then shuts it down). A cluster that cannot be reached
    is one line, never a traceback.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    if options.address:
        kwargs["address"] = options.address
    else:
        kwargs["num_cpus"] = options.num_cpus or max(os.cpu_count() or 1, options.actors + 1)
        kwargs["object_store_memory"] = options.object_store_mb * 1024 * 1024
    try:
        ray.init(**kwargs)
    except Exception as exc:  # noqa: BLE001 - connection refused, bad address: one line
        where = options.address or "a local Ray"
        raise WorkerError(f"{where}: cannot start or reach Ray ({one_line(str(exc))})") from None
    return True


def _actor_alive(ray: ModuleType, actor: Any) -> bool:
    try:
        ray.get(actor.info.remote(), timeout=60)
        return True
    except Exception:  # noqa: BLE001 - dead, or not answering: take it out of the pool
        return False


def inspect_paths_ray(
    config: Config,
    output_root: Path | str,
    oring_type: str,
    paths: Sequence[Path | str],
    store: Any | None = None,
    *,
    options: RayOptions | None = None,
    device: str | None = None,
    reinspect: bool = False,
    save_overlays: bool | None = None,
    station: str | None = None,
    on_result: Callable[[InspectionResult], None] | None = None,
    engine: RayEngine | None = None,
    progress: bool = False,
    overlay_root: Path | str | None = None,
) -> BatchSummary:
    """``oringscan inspect --engine ray``: what :func:`oringscan.pipeline.batch.inspect_paths` does,
    with the work on Ray. Returns the same :class:`BatchSummary` (results in file order).

    Models are loaded from ``output_root``; overlays go under ``overlay_root`` (default: the same).
    """
    given = [Path(p) for p in paths]
    missing = missing_inputs(given)
    files = iter_image_files([p for p in given if path_text(p) not in missing], config.frame)
    if not files:
        if missing:
            raise InputNotFoundError(missing)
        where = ", ".join(path_text(p) for p in given) or "(no paths given)"
        raise OringscanError(f"{where}: no frames found (looked for {', '.join(config.frame.extensions)})")
    for name in missing:
        log.error("%s: no such file or folder (nothing recorded for it)", name)
    jobs = [
        FrameJob(path, name, station=station) for path, name in zip(files, overlay_names(files), strict=True)
    ]
    own = engine is None
    engine = engine or RayEngine(
        config, output_root, oring_type, options, device=device, save_overlays=save_overlays
    )
    try:
        models = engine.models or engine.start()
        if models.segmentation_notice:  # as the in-process Inspector says it at its first frame
            log.warning(
                "%s: flagged parts go to suspect, segmentation calls no defect", models.segmentation_notice
            )
        return run_jobs(
            engine,
            models,
            jobs,
            store,
            output_root=output_root if overlay_root is None else overlay_root,
            reinspect=reinspect,
            missing=missing,
            on_result=on_result,
            save_overlays=save_overlays,
            progress=progress,
        )
    finally:
        if own:
            engine.close()


def run_jobs(
    engine: Any,
    models: EngineModels,
    jobs: Sequence[FrameJob],
    store: Any | None,
    *,
    output_root: Path | str,
    reinspect: bool = False,
    missing: list[str] | None = None,
    on_result: Callable[[InspectionResult], None] | None = None,
    save_overlays: bool | None = None,
    kind: str = "inspect",
    engine_name: str = "ray",
    selection: dict[str, Any] | None = None,
    note: str | None = None,
    on_skip: Callable[[FrameJob, str], None] | None = None,
    progress: bool = False,
) -> BatchSummary:
    """The driver: open the run, let ``engine`` inspect, record each frame (one transaction), close.

    ``reinspect``: record even when the frame is already inspected with these models (superseding it).
    Jobs with ``supersedes`` (``oringscan reinspect``) link their record to the one they replace.
    """
    from oringscan.pipeline.batch import _counts_text, _finish_run, _progress_bar, start_run

    run_id = start_run(store, models, kind=kind, note=note)
    if store is not None and run_id is not None:
        mark_run(store, run_id, engine_name, selection)
    overlays = models.config.pipeline.save_overlays if save_overlays is None else save_overlays
    workspace = TypeWorkspace.from_config(models.config, output_root, models.oring_type)
    overlay_dir = workspace.overlays_dir(run_folder_name(run_id))
    summary = BatchSummary(
        run_id,
        models.oring_type,
        models.fingerprint,
        overlay_dir=overlay_dir,
        missing_inputs=list(missing or []),
    )
    summary.kind = kind
    order = {id(job): i for i, job in enumerate(jobs)}
    results: list[tuple[int, InspectionResult]] = []
    last_beat = [time.monotonic()]

    def beat() -> None:
        if store is not None and run_id is not None and time.monotonic() - last_beat[0] > 30.0:
            last_beat[0] = time.monotonic()
            try:
                store.heartbeat(run_id)
            except OringscanError as exc:
                log.warning("run %s: heartbeat not written (%s)", run_id, exc)

    def admit(job: FrameJob, meta: dict[str, Any]) -> str | None:
        if job.expect_key is not None and meta.get("key") != job.expect_key:
            return "changed"
        if job.supersedes is None and not reinspect and store is not None and meta.get("key"):
            if store.find_inspected(meta["key"], models.fingerprint):
                return "inspected"
        return None

    def on_outcome(outcome: Outcome) -> None:
        job = outcome.job
        bar.advance(_counts_text(summary))
        if outcome.skipped is not None or outcome.result is None:
            summary.skipped.append(job.path)
            if on_skip is not None:
                on_skip(job, outcome.skipped or "skipped")
            return
        result = outcome.result
        if store is not None:
            start = time.perf_counter()
            frame_id = _record(store, run_id, result, models, outcome, reinspect)
            result.timings_ms["db"] = (time.perf_counter() - start) * 1000.0
            last_beat[0] = time.monotonic()
            if frame_id is None:
                summary.skipped.append(job.path)
                summary.recorded_elsewhere.append(job.path)
                return
        results.append((order[id(job)], result))
        if on_result is not None:
            on_result(result)

    start = time.perf_counter()
    failed = True
    bar = _progress_bar(len(jobs), f"{kind} {models.oring_type} ({engine_name})", enabled=progress)
    try:
        with bar, sigterm_as_interrupt():
            engine.run(jobs, overlay_dir if overlays else None, admit, on_outcome, beat)
        failed = False
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        summary.results = [r for _, r in sorted(results, key=lambda pair: pair[0])]
        summary.seconds = time.perf_counter() - start
        if store is not None and run_id is not None:
            _finish_run(store, run_id, summary, failed=failed and not summary.interrupted)
    return summary


def _record(
    store: Any, run_id: Any, result: InspectionResult, models: EngineModels, outcome: Outcome, reinspect: bool
) -> Any:
    """One frame, one transaction; None when the database has it already (a retry, another process)."""
    job = outcome.job
    if job.supersedes is None:
        fake = EngineModels(models.config, models.oring_type, outcome.fingerprint or models.fingerprint)
        return record_result(
            store,
            run_id,
            result,
            fake,
            outcome.shape,
            job.station,
            key=outcome.key,
            replace=reinspect,
        )
    from oringscan.db.store import AlreadyInspectedError

    try:
        return store.record_frame(
            run_id,
            result,
            sha256=result.sha256,
            model_fingerprint=outcome.fingerprint or models.fingerprint,
            frame_shape=outcome.shape,
            station=job.station,
            captured_at=job.captured_at,
            mm_per_px=models.config.oring_type(models.oring_type).mm_per_px,
            frame_key=outcome.key,
            supersedes=job.supersedes,
        )
    except AlreadyInspectedError:
        return None


def mark_run(store: Any, run_id: int, engine: str, selection: dict[str, Any] | None = None) -> None:
    """Record how a run ran (``in-process`` / ``ray``) and, for a re-inspection, what it selected."""
    from sqlalchemy import update

    from oringscan.db.models import Run

    with store.write_session() as session:
        session.execute(update(Run).where(Run.id == run_id).values(engine=engine, selection=selection))


class LocalEngine:
    """The same job interface in this process (re-inspection without Ray): a background reader and
    the batch's FrameRecorder, frame after frame."""

    def __init__(
        self,
        config: Config,
        output_root: Path | str,
        oring_type: str,
        *,
        device: str | None = None,
        save_overlays: bool | None = None,
        inspector: Inspector | None = None,
    ) -> None:
        self.config = config
        self.inspector = inspector or Inspector.load(config, output_root, oring_type, device=device)
        self.recorder = FrameRecorder(self.inspector, save_overlays=save_overlays)
        self.models = EngineModels(
            config,
            oring_type,
            self.inspector.fingerprint,
            self.inspector.model_versions(),
            self.inspector.segmentation_notice,
        )

    def start(self) -> EngineModels:
        return self.models

    def close(self) -> None:
        pass

    def run(
        self,
        jobs: Sequence[FrameJob],
        overlay_dir: Path | None,
        admit: Callable[[FrameJob, dict[str, Any]], str | None],
        on_outcome: Callable[[Outcome], None],
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        from oringscan.pipeline.batch import Prefetcher

        reader = Prefetcher([job.path for job in jobs], self.config.frame)
        for job, item in zip(jobs, reader, strict=True):
            meta = {"key": item.key, "sha256": item.sha256, "problem": item.problem}
            why = admit(job, meta)
            if why is not None:
                on_outcome(Outcome(job, item.key, skipped=why))
            else:
                self.recorder.overlay_dir = overlay_dir
                result = self.recorder.process(item, overlay_name=job.overlay_name)
                assert result is not None  # no store: never "recorded elsewhere"
                on_outcome(
                    Outcome(job, item.key, slim(result), frame_shape(item), self.inspector.fingerprint)
                )
            if on_wait is not None:
                on_wait()
