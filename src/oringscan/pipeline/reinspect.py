"""Archive re-inspection: select recorded frames, inspect them again with the models in use now.

A model was retrained; the quality engineer wants last month's frames judged again with it. The
selection reads the database (type, station, inspection time, verdict, model fingerprint, run);
each selected record's file is inspected again, in this process or on Ray, and the new record is
written in one transaction that also marks the old one superseded and links the new one to it
(``frames.supersedes_id``). ``oringscan db diff`` then lists the parts whose verdict changed.

Frames are not silently lost or duplicated: a file that is gone, or that holds another frame now
(its content hash changed), is reported and left as it was; a record already superseded (a second
re-inspection at the same time, a retry) is not re-inspected twice; a record already made with the
current models is up to date and skipped (``force`` re-inspects it anyway).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from oringscan.config import Config
from oringscan.errors import OringscanError
from oringscan.pipeline.batch import BatchSummary
from oringscan.pipeline.ray_engine import (
    FrameJob,
    LocalEngine,
    RayEngine,
    RayOptions,
    connect,
    overlay_names,
    require_ray,
    run_jobs,
)
from oringscan.types import InspectionResult

log = logging.getLogger(__name__)

ENGINES = ("in-process", "ray")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which recorded frames to inspect again; every field optional, combined with AND.

    Only current records (not superseded) are selected. ``model_fingerprints`` match by prefix (the
    first characters ``oringscan db runs`` shows are enough); ``until`` is exclusive.
    """

    oring_types: tuple[str, ...] = ()
    stations: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    verdicts: tuple[str, ...] = ()
    run_ids: tuple[int, ...] = ()
    model_fingerprints: tuple[str, ...] = ()
    limit: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What was selected, stored with the re-inspection run (``runs.selection``)."""
        out: dict[str, Any] = {}
        for name in ("oring_types", "stations", "verdicts", "run_ids", "model_fingerprints"):
            value = getattr(self, name)
            if value:
                out[name] = list(value)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat()
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    def describe(self) -> str:
        parts = [
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.to_json().items()
        ]
        return " ".join(parts) or "all current records"


@dataclass(frozen=True, slots=True)
class SelectedFrame:
    """One current record chosen for re-inspection."""

    id: int
    run_id: int
    path: str
    frame_key: str | None
    oring_type: str | None
    station: str | None
    captured_at: datetime | None
    verdict: str
    model_fingerprint: str | None


def select_frames(store: Any, selection: Selection) -> list[SelectedFrame]:
    """The current records matching ``selection``, oldest first (bound parameters only)."""
    from sqlalchemy import or_, select

    from oringscan.db.models import Frame
    from oringscan.db.vocab import VERDICTS

    conds: list[Any] = [Frame.superseded_at.is_(None)]
    if selection.oring_types:
        conds.append(Frame.oring_type.in_(selection.oring_types))
    if selection.stations:
        conds.append(Frame.station.in_(selection.stations))
    if selection.since is not None:
        conds.append(Frame.inspected_at >= selection.since)
    if selection.until is not None:
        conds.append(Frame.inspected_at < selection.until)
    if selection.verdicts:
        unknown = [v for v in selection.verdicts if v not in VERDICTS]
        if unknown:
            raise OringscanError(f"unknown verdict {unknown[0]!r}; expected one of {', '.join(VERDICTS)}")
        conds.append(Frame.verdict.in_(selection.verdicts))
    if selection.run_ids:
        conds.append(Frame.run_id.in_([int(r) for r in selection.run_ids]))
    if selection.model_fingerprints:
        conds.append(
            or_(
                *(
                    Frame.model_fingerprint.startswith(fp, autoescape=True)
                    for fp in selection.model_fingerprints
                )
            )
        )
    if selection.limit is not None and selection.limit < 1:
        raise OringscanError(f"--limit must be at least 1 (got {selection.limit})")
    stmt = select(Frame).where(*conds).order_by(Frame.id)
    if selection.limit is not None:
        stmt = stmt.limit(selection.limit)
    with store.read_session() as session:
        return [
            SelectedFrame(
                f.id,
                f.run_id,
                f.path,
                f.frame_key or f.sha256,
                f.oring_type,
                f.station,
                f.captured_at,
                f.verdict,
                f.model_fingerprint,
            )
            for f in session.scalars(stmt)
        ]


@dataclass(slots=True)
class ReinspectReport:
    """What a re-inspection did: one batch summary per o-ring type, and every frame it left alone."""

    selected: int = 0
    summaries: list[BatchSummary] = field(default_factory=list)
    gone: list[SelectedFrame] = field(default_factory=list)  # the file is not there any more
    changed: list[SelectedFrame] = field(default_factory=list)  # the file holds another frame now
    up_to_date: list[SelectedFrame] = field(default_factory=list)  # made with the current models already
    already_superseded: list[SelectedFrame] = field(default_factory=list)  # another re-inspection was first
    untyped: list[SelectedFrame] = field(default_factory=list)  # no o-ring type recorded: no models to use

    @property
    def run_ids(self) -> list[int]:
        return [s.run_id for s in self.summaries if s.run_id is not None]

    @property
    def results(self) -> list[InspectionResult]:
        return [r for s in self.summaries for r in s.results]

    def to_json(self) -> dict[str, Any]:
        def frames(rows: list[SelectedFrame]) -> list[dict[str, Any]]:
            return [{"frame_id": r.id, "path": r.path} for r in rows]

        return {
            "selected": self.selected,
            "runs": self.run_ids,
            "reinspected": len(self.results),
            "gone": frames(self.gone),
            "changed": frames(self.changed),
            "up_to_date": frames(self.up_to_date),
            "already_superseded": frames(self.already_superseded),
            "untyped": frames(self.untyped),
        }


def reinspect(
    store: Any,
    config: Config,
    output_root: Path | str,
    selection: Selection,
    *,
    engine: str = "in-process",
    ray_options: RayOptions | None = None,
    device: str | None = None,
    save_overlays: bool | None = None,
    force: bool = False,
    progress: bool = False,
    on_result: Callable[[InspectionResult], None] | None = None,
    inspectors: dict[str, Any] | None = None,
) -> ReinspectReport:
    """Inspect the selected records' frames again with the current models; one run per o-ring type.

    ``inspectors`` (type -> loaded Inspector) reuses models already loaded (in-process engine only).
    """
    if engine not in ENGINES:
        raise OringscanError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "ray":
        require_ray()
    rows = select_frames(store, selection)
    report = ReinspectReport(selected=len(rows))
    by_type: dict[str, list[SelectedFrame]] = {}
    for row in rows:
        if not row.oring_type:
            report.untyped.append(row)
        elif not os.path.lexists(row.path):
            report.gone.append(row)
        else:
            by_type.setdefault(row.oring_type, []).append(row)
    for row in report.gone:
        log.warning("frame %s: %s is gone; not re-inspected", row.id, row.path)
    started_ray = False
    try:
        if engine == "ray" and by_type:
            started_ray = connect(ray_options or RayOptions())
        for oring_type, typed in by_type.items():
            config.oring_type(oring_type)  # an unknown type is one line
            _reinspect_type(
                store,
                config,
                output_root,
                oring_type,
                typed,
                selection,
                report,
                engine=engine,
                ray_options=ray_options,
                device=device,
                save_overlays=save_overlays,
                force=force,
                progress=progress,
                on_result=on_result,
                inspector=(inspectors or {}).get(oring_type),
            )
    finally:
        if started_ray:
            require_ray().shutdown()
    return report


def _reinspect_type(
    store: Any,
    config: Config,
    output_root: Path | str,
    oring_type: str,
    rows: Sequence[SelectedFrame],
    selection: Selection,
    report: ReinspectReport,
    *,
    engine: str,
    ray_options: RayOptions | None,
    device: str | None,
    save_overlays: bool | None,
    force: bool,
    progress: bool,
    on_result: Callable[[InspectionResult], None] | None,
    inspector: Any,
) -> None:
    runner: Any
    if engine == "ray":
        runner = RayEngine(
            config, output_root, oring_type, ray_options, device=device, save_overlays=save_overlays
        )
    else:
        runner = LocalEngine(
            config, output_root, oring_type, device=device, save_overlays=save_overlays, inspector=inspector
        )
    try:
        models = runner.start()
        todo: list[SelectedFrame] = []
        for row in rows:
            if not force and (
                row.model_fingerprint == models.fingerprint or _has_current(store, row, models)
            ):
                report.up_to_date.append(row)
            else:
                todo.append(row)
        if not todo:
            return
        paths = [Path(row.path) for row in todo]
        jobs = [
            FrameJob(
                path,
                name,
                expect_key=row.frame_key,
                supersedes=row.id,
                station=row.station,
                captured_at=row.captured_at,
            )
            for path, name, row in zip(paths, overlay_names(paths), todo, strict=True)
        ]
        by_job = {id(job): row for job, row in zip(jobs, todo, strict=True)}

        def on_skip(job: FrameJob, why: str) -> None:
            row = by_job[id(job)]
            if why == "changed":
                report.changed.append(row)
                log.warning("frame %s: %s holds another frame now; not re-inspected", row.id, row.path)

        summary = run_jobs(
            runner,
            models,
            jobs,
            store,
            output_root=output_root,
            on_result=on_result,
            save_overlays=save_overlays,
            kind="reinspect",
            engine_name=engine,
            selection=selection.to_json(),
            note=selection.describe(),
            on_skip=on_skip,
            progress=progress,
        )
        elsewhere = set(summary.recorded_elsewhere)
        report.already_superseded.extend(by_job[id(j)] for j in jobs if j.path in elsewhere)
        report.summaries.append(summary)
    finally:
        runner.close()


def _has_current(store: Any, row: SelectedFrame, models: Any) -> bool:
    """Whether the frame already has a current record made with the current models (a later inspect)."""
    return bool(row.frame_key) and store.find_inspected(row.frame_key, models.fingerprint) is not None
