"""Inspecting files: a background reader decodes the next frames while the models work on this one.

Each frame is recorded in its own database transaction as soon as it is done, so a batch killed
halfway leaves only whole records; a rerun skips frames already inspected with the same content
(sha256) and the same models (fingerprint) unless ``reinspect``. A file that cannot be read is an
``error`` record with the reason, and the batch goes on. The database backs "one record per frame
and models" with a unique index, so two processes on the same frames record each frame once.

File names are carried as paths (any bytes the file system allows) and stored as
:func:`oringscan.errors.path_text`. A path named by the caller that does not exist is no record:
it is reported in ``BatchSummary.missing_inputs`` (or, when nothing was found at all, raised as
:class:`InputNotFoundError`). SIGTERM ends a batch like Ctrl-C: the run is closed ``interrupted``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from oringscan.config import Config, FrameConfig
from oringscan.errors import FrameError, InputNotFoundError, OringscanError, path_text
from oringscan.frames import LoadedFrame, iter_image_files, read_frame, sha256_of
from oringscan.pipeline.inspector import FrameInspection, Inspector, error_result
from oringscan.timeutil import utc_stamp
from oringscan.types import InspectionResult, Verdict
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

VERDICT_ORDER = [Verdict.GOOD, Verdict.DEFECT, Verdict.REWORK, Verdict.SUSPECT, Verdict.ERROR]
# The run record's heartbeat is refreshed at least this often while a batch or watcher lives.
HEARTBEAT_S = 30.0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``kill``): handled like Ctrl-C, the run is closed ``interrupted``."""


def frame_key(path: Path, sha256: str | None) -> str:
    """What makes a frame "the same frame" for the rerun rule: its content, or for a file without
    readable content (a FIFO, a looping link) its path, so a rerun does not record it again."""
    if sha256:
        return sha256
    return hashlib.sha256(b"path:" + os.fsencode(str(Path(path).absolute()))).hexdigest()


@dataclass(slots=True)
class ReadFrame:
    """One file as the background reader left it: decoded, or the reason it could not be."""

    path: Path
    frame: LoadedFrame | None
    sha256: str | None
    problem: str | None
    read_ms: float

    @property
    def key(self) -> str:
        return frame_key(self.path, self.sha256)


def read_one(path: Path, frame_cfg: FrameConfig) -> ReadFrame:
    """Hash and decode one file; never raises for a bad file (the problem is kept instead)."""
    start = time.perf_counter()
    sha = None
    try:
        if path.is_file():
            sha = sha256_of(path)
        frame = read_frame(path, frame_cfg)
        return ReadFrame(path, frame, sha, None, (time.perf_counter() - start) * 1000.0)
    except FrameError as exc:
        problem = exc.problem
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or exc})"
    except Exception as exc:  # noqa: BLE001 - a decoder crash on one file must not stop the batch
        problem = f"cannot be read ({type(exc).__name__}: {exc})"
    return ReadFrame(path, None, sha, problem, (time.perf_counter() - start) * 1000.0)


class Prefetcher:
    """Reads frames on a background thread, ``depth`` ahead of the consumer.

    OpenCV's decoder and file reads release the GIL, so decoding frame n+1 overlaps the model work
    on frame n. Stop early with :meth:`close` (also on garbage collection of the iterator).
    """

    _DONE = object()

    def __init__(self, paths: Sequence[Path], frame_cfg: FrameConfig, depth: int = 2) -> None:
        self.paths = list(paths)
        self.frame_cfg = frame_cfg
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="oringscan-prefetch", daemon=True)
        self._started = False

    def _run(self) -> None:
        try:
            for path in self.paths:
                if self._stop.is_set():
                    return
                item = read_one(path, self.frame_cfg)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        finally:
            while not self._stop.is_set():
                try:
                    self._queue.put(self._DONE, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def __iter__(self) -> Iterator[ReadFrame]:
        if not self._started:
            self._started = True
            self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is self._DONE:
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


@dataclass(slots=True)
class BatchSummary:
    """What a batch did: counts per verdict, skipped frames, speed and time per stage."""

    run_id: Any
    oring_type: str
    fingerprint: str
    results: list[InspectionResult] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    overlay_dir: Path | None = None
    interrupted: bool = False
    kind: str = "inspect"
    # Paths the caller named that do not exist: no record, but the batch is not all right.
    missing_inputs: list[str] = field(default_factory=list)
    # Frames another process recorded first (with the same models) while this one inspected them.
    recorded_elsewhere: list[Path] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        """Inputs that were errors: error records plus named paths that do not exist."""
        return sum(1 for r in self.results if r.verdict is Verdict.ERROR) + len(self.missing_inputs)

    @property
    def counts(self) -> dict[str, int]:
        counter = Counter(str(r.verdict) for r in self.results)
        return {str(v): counter.get(str(v), 0) for v in VERDICT_ORDER}

    @property
    def frames_per_s(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else 0.0

    def mean_timings(self) -> dict[str, float]:
        """Mean ms per inspected frame for each stage (frames that skipped a stage count as 0)."""
        inspected = [r for r in self.results if r.verdict is not Verdict.ERROR or r.screening is not None]
        if not inspected:
            return {}
        keys: list[str] = []
        for r in inspected:
            keys.extend(k for k in r.timings_ms if k not in keys)
        return {k: sum(r.timings_ms.get(k, 0.0) for r in inspected) / len(inspected) for k in keys}


class FrameRecorder:
    """Turns one read frame into a verdict, an overlay and one database record.

    Shared by the batch runner and the folder watcher so both behave the same frame by frame.
    """

    def __init__(
        self,
        inspector: Inspector,
        store: Any | None = None,
        run_id: Any = None,
        *,
        reinspect: bool = False,
        save_overlays: bool | None = None,
        overlay_dir: Path | None = None,
        station: str | None = None,
    ) -> None:
        self.inspector = inspector
        self.store = store
        self.run_id = run_id
        self.reinspect = reinspect
        self.save_overlays = (
            inspector.config.pipeline.save_overlays if save_overlays is None else save_overlays
        )
        # Heatmaps are computed for the overlays only: --save-vis/--no-save-vis decides both.
        inspector.with_maps = self.save_overlays
        self.overlay_dir = overlay_dir
        self.station = station
        self._used_names: set[str] = set()
        self._last_beat = time.monotonic()

    def already_inspected(self, key: str | None) -> bool:
        """Whether the database has this frame (content sha256, or :func:`frame_key`) with these models."""
        if self.reinspect or self.store is None or key is None:
            return False
        return bool(self.store.find_inspected(key, self.inspector.fingerprint))

    def beat(self, force: bool = False) -> None:
        """Refresh the run's heartbeat (at most every HEARTBEAT_S): a live run is never taken for dead."""
        if self.store is None or self.run_id is None:
            return
        now = time.monotonic()
        if force or now - self._last_beat >= HEARTBEAT_S:
            self._last_beat = now
            try:
                self.store.heartbeat(self.run_id)
            except OringscanError as exc:
                log.warning("run %s: heartbeat not written (%s)", self.run_id, exc)

    def process(
        self,
        item: ReadFrame,
        *,
        inspection: FrameInspection | None = None,
        overlay_name: str | None = None,
    ) -> InspectionResult | None:
        """Inspect (or record the read problem of) one frame, save its overlay, record it.

        None when another process recorded the same frame with the same models meanwhile.
        ``inspection``: the frame inspected already (the Ray engine's actors finish frames that tasks
        cut into tiles); ``overlay_name``: the overlay's file name, decided by the caller (several
        workers writing one folder) instead of from the frame's name.
        """
        name = path_text(item.path.absolute())
        if inspection is not None:
            pass
        elif item.frame is None:
            result = error_result(
                name,
                item.problem or "unreadable",
                {"read": item.read_ms, "total": item.read_ms},
                oring_type=self.inspector.oring_type,
                sha256=item.sha256,
            )
            inspection = FrameInspection(result)
        else:
            inspection = self.inspector.inspect_loaded(
                item.frame, name, sha256=item.sha256, timings={"read": item.read_ms}
            )
        result = inspection.result
        if (
            self.save_overlays
            and self.overlay_dir is not None
            and result.verdict is not Verdict.GOOD
            and inspection.gray is not None
        ):
            start = time.perf_counter()
            try:
                from oringscan.pipeline.overlays import save_overlay

                path = self.overlay_dir / (overlay_name or self._overlay_name(item))
                save_overlay(inspection, path, self.inspector.config)
                result.overlay_path = path_text(path.absolute())
            except Exception as exc:  # noqa: BLE001 - a picture must never cost the record
                log.warning("%s: overlay not saved (%s)", name, exc)
            result.timings_ms["overlay"] = (time.perf_counter() - start) * 1000.0
        if self.store is not None:
            start = time.perf_counter()
            shape = None if inspection.gray is None else tuple(inspection.gray.shape[:2])
            frame_id = record_result(
                self.store,
                self.run_id,
                result,
                self.inspector,
                shape,
                self.station,
                key=item.key,
                replace=self.reinspect,
            )
            result.timings_ms["db"] = (time.perf_counter() - start) * 1000.0
            self._last_beat = time.monotonic()  # recording a frame refreshes the heartbeat
            if frame_id is None:
                return None
        return result

    def _overlay_name(self, item: ReadFrame) -> str:
        stem = item.path.stem or "frame"
        name = f"{stem}.png"
        if name in self._used_names:
            name = f"{stem}_{(item.sha256 or str(len(self._used_names)))[:8]}.png"
        self._used_names.add(name)
        return name


class ModelIdentity(Protocol):
    """What recording a frame needs to know of the models: the Inspector, or a driver that only
    knows what its workers loaded (the Ray engine)."""

    @property
    def config(self) -> Config: ...

    @property
    def oring_type(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def model_versions(self) -> dict[str, Any]: ...


def record_result(
    store: Any,
    run_id: Any,
    result: InspectionResult,
    inspector: ModelIdentity,
    frame_shape: tuple[int, int] | None = None,
    station: str | None = None,
    *,
    key: str | None = None,
    replace: bool = False,
) -> Any:
    """One frame, one transaction (the store's ``record_frame`` commits or rolls back as a whole).

    Returns the frame id, or None when the database already has this frame with these models
    (another process got there first); ``replace`` (--reinspect) supersedes the current record.
    """
    from oringscan.db.store import AlreadyInspectedError

    try:
        return store.record_frame(
            run_id,
            result,
            sha256=result.sha256,
            model_fingerprint=inspector.fingerprint,
            frame_shape=frame_shape,
            station=station,
            mm_per_px=inspector.config.oring_type(inspector.oring_type).mm_per_px,
            frame_key=key,
            replace=replace,
        )
    except AlreadyInspectedError:
        return None


def start_run(
    store: Any | None, inspector: ModelIdentity, *, kind: str = "inspect", note: str | None = None
) -> Any:
    """A run record for this batch (None without a store): config and model fingerprints, host, start."""
    if store is None:
        return None
    return store.start_run(
        oring_type=inspector.oring_type,
        model_fingerprint=inspector.fingerprint,
        model_versions=inspector.model_versions(),
        config=inspector.config,
        command=kind if note is None else f"{kind} {note}",
    )


def run_folder_name(run_id: Any) -> str:
    """``run-<id>_<UTC start>``: unique even when two databases share one output folder."""
    stamp = utc_stamp()
    return f"run_{stamp}" if run_id is None else f"run-{run_id}_{stamp}"


def inspect_paths(
    inspector: Inspector,
    paths: Iterable[Path | str],
    store: Any | None = None,
    *,
    output_root: Path | str = Path("output"),
    reinspect: bool = False,
    save_overlays: bool | None = None,
    progress: bool = True,
    prefetch: int = 2,
    station: str | None = None,
    on_result: Callable[[InspectionResult], None] | None = None,
) -> BatchSummary:
    """Inspect files, folders and globs; every frame ends as one record (or is skipped as done).

    Overlays of every non-good frame go to ``<output_root>/<model>/inspections/run-<id>_<time>/``.
    """
    given = [Path(p) for p in paths]
    missing = missing_inputs(given)
    files = iter_image_files([p for p in given if path_text(p) not in missing], inspector.config.frame)
    if not files:
        if missing:
            raise InputNotFoundError(missing)
        where = ", ".join(path_text(p) for p in given) or "(no paths given)"
        raise OringscanError(
            f"{where}: no frames found (looked for {', '.join(inspector.config.frame.extensions)})"
        )
    for name in missing:
        log.error("%s: no such file or folder (nothing recorded for it)", name)
    run_id = start_run(store, inspector)
    workspace = TypeWorkspace.from_config(inspector.config, output_root, inspector.oring_type)
    overlay_dir = workspace.overlays_dir(run_folder_name(run_id))
    recorder = FrameRecorder(
        inspector,
        store,
        run_id,
        reinspect=reinspect,
        save_overlays=save_overlays,
        overlay_dir=overlay_dir,
        station=station,
    )
    summary = BatchSummary(
        run_id, inspector.oring_type, inspector.fingerprint, overlay_dir=overlay_dir, missing_inputs=missing
    )
    start = time.perf_counter()
    bar = _progress_bar(len(files), f"inspect {inspector.oring_type}", enabled=progress)
    reader = Prefetcher(files, inspector.config.frame, depth=prefetch)
    failed = True
    try:
        with bar, sigterm_as_interrupt():
            for item in reader:
                if recorder.already_inspected(item.key):
                    summary.skipped.append(item.path)
                    recorder.beat()
                else:
                    result = recorder.process(item)
                    if result is None:
                        summary.skipped.append(item.path)
                        summary.recorded_elsewhere.append(item.path)
                    else:
                        summary.results.append(result)
                        if on_result is not None:
                            on_result(result)
                bar.advance(_counts_text(summary))
        failed = False
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        reader.close()
        summary.seconds = time.perf_counter() - start
        if store is not None and run_id is not None:
            _finish_run(store, run_id, summary, failed=failed and not summary.interrupted)
    return summary


def missing_inputs(paths: Sequence[Path]) -> list[str]:
    """The named paths (not globs) that do not exist at all, as text; a dangling link exists."""
    return [path_text(p) for p in paths if not any(ch in str(p) for ch in "*?[") and not os.path.lexists(p)]


class sigterm_as_interrupt:  # noqa: N801 - used like a function: ``with sigterm_as_interrupt():``
    """While inside, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread.

    A no-op off the main thread (signal handlers can only be set there).
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> sigterm_as_interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(f"signal {signum}")


def _finish_run(store: Any, run_id: Any, summary: BatchSummary, *, failed: bool = False) -> None:
    status = "interrupted" if summary.interrupted else "failed" if failed else "done"
    try:
        store.finish_run(run_id, status=status, n_skipped=len(summary.skipped))
    except OringscanError as exc:
        log.warning("run %s: could not close the run record (%s)", run_id, exc)


def _counts_text(summary: BatchSummary) -> str:
    counts = summary.counts
    text = " ".join(f"{k} {v}" for k, v in counts.items() if v)
    if summary.skipped:
        text += f" skipped {len(summary.skipped)}"
    return text


class _Bar:
    """A rich progress bar on stderr (stdout stays clean for --json), or nothing."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.description, total=self.total, counts="")
        return self

    def advance(self, counts: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, counts=counts)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def _progress_bar(total: int, description: str, enabled: bool) -> _Bar:
    return _Bar(total, description, enabled)
