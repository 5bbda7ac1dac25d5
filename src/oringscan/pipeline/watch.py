"""Inspecting frames as the camera software writes them into a folder.

A file is taken once it is complete: its size and modification time did not change across
``stable_polls`` polls and it decodes. A file that keeps failing to decode after it settled for
``give_up_s`` is recorded as an ``error`` (it will not get better by waiting). Frames already in
the database with the same content and models are skipped, so restarting the watcher is safe.
A file that cannot be recorded (a database error) is logged in one line and the watcher goes on;
the run's heartbeat is refreshed while it waits, so a live watcher is never shown as dead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oringscan.errors import OringscanError, path_text
from oringscan.frames import iter_image_files
from oringscan.pipeline.batch import BatchSummary, FrameRecorder, ReadFrame, read_one
from oringscan.types import InspectionResult

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    size: int
    mtime_ns: int
    stable: int = 0
    settled_at: float | None = None


@dataclass(slots=True)
class FolderWatcher:
    """Polls ``folder`` and hands every complete new frame to ``recorder`` exactly once."""

    recorder: FrameRecorder
    folder: Path
    poll_s: float = 1.0
    stable_polls: int = 2
    give_up_s: float = 30.0
    pending: dict[Path, _Pending] = field(default_factory=dict)
    done: set[Path] = field(default_factory=set)

    def _ready(self, path: Path, now: float) -> bool:
        try:
            stat = path.stat()
        except OSError:  # vanished between listing and stat
            self.pending.pop(path, None)
            return False
        state = self.pending.get(path)
        if state is None or (stat.st_size, stat.st_mtime_ns) != (state.size, state.mtime_ns):
            self.pending[path] = _Pending(stat.st_size, stat.st_mtime_ns)
            return False
        state.stable += 1
        if state.stable >= self.stable_polls and state.settled_at is None:
            state.settled_at = now
        return state.stable >= self.stable_polls and stat.st_size > 0

    def poll_once(self) -> list[InspectionResult]:
        """One pass over the folder: inspect whatever became complete since the last pass."""
        now = time.monotonic()
        out: list[InspectionResult] = []
        candidates = iter_image_files([self.folder], self.recorder.inspector.config.frame)
        for path in candidates:
            if path in self.done or not path.is_file() or not self._ready(path, now):
                continue
            item: ReadFrame = read_one(path, self.recorder.inspector.config.frame)
            settled = self.pending[path].settled_at or now
            if item.frame is None and now - settled < self.give_up_s:
                continue  # still being written (or renamed into place): try again next poll
            self.done.add(path)
            self.pending.pop(path, None)
            try:
                if self.recorder.already_inspected(item.key):
                    continue
                result = self.recorder.process(item)
            except OringscanError as exc:  # one frame's database trouble must not end the watch
                log.error("%s: not recorded (%s)", path_text(path), exc)
                continue
            if result is not None:
                out.append(result)
        return out


def watch_folder(
    recorder: FrameRecorder,
    folder: Path | str,
    *,
    poll_s: float = 1.0,
    stable_polls: int = 2,
    give_up_s: float = 30.0,
    stop: threading.Event | None = None,
    on_result: Callable[[InspectionResult], None] | None = None,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Inspect frames arriving in ``folder`` until ``stop`` is set or Ctrl-C."""
    folder = Path(folder)
    inspector = recorder.inspector
    summary = summary or BatchSummary(
        recorder.run_id,
        inspector.oring_type,
        inspector.fingerprint,
        overlay_dir=recorder.overlay_dir,
        kind="watch",
    )
    watcher = FolderWatcher(recorder, folder, poll_s, stable_polls, give_up_s)
    stop = stop or threading.Event()
    start = time.perf_counter()
    try:
        while not stop.is_set():
            for result in watcher.poll_once():
                summary.results.append(result)
                if on_result is not None:
                    on_result(result)
            recorder.beat()
            stop.wait(poll_s)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - start
    return summary
