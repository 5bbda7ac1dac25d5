"""The hybrid inspection of one frame: ring ROI, tiles, screening, segmentation of the flagged
tiles only, rework rules, one verdict.

Screening (PatchCore) is cheap and sees every ring tile; the expensive Mask R-CNN only runs on the
few tiles screening flags (or finds marginal), which is what makes the line rate. The inspector
never raises for a bad frame: a camera callback gets an ``error`` result with the reason instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from oringscan.config import Config
from oringscan.errors import FrameError, ModelFileError, OringscanError
from oringscan.frames import LoadedFrame, normalize_frame
from oringscan.pipeline.policy import DefectGate, confident_defects, decide_verdict
from oringscan.rework_rules.checker import ReworkReport
from oringscan.roi import RingROI, find_ring
from oringscan.tiling import ring_tiles
from oringscan.types import (
    InspectionResult,
    Instance,
    ReworkResult,
    ReworkVerdict,
    ScreeningResult,
    Tile,
    Verdict,
)
from oringscan.workspace import ModelFiles, TypeWorkspace

if TYPE_CHECKING:
    from oringscan.rework_rules.measure import RingMeasurement
    from oringscan.screening.shape import ShapeScreen
    from oringscan.segmentation.calibration import SegmentationCalibration

log = logging.getLogger(__name__)


class ScreeningStage(Protocol):
    """Scores a frame's ring tiles; the result carries everything the Inspector decides from
    (frame score, threshold, flag, marginal band and, when asked, the tiles' anomaly maps)."""

    def score_tiles(self, tiles: list[Tile], with_maps: bool = False) -> ScreeningResult: ...

    @property
    def shape_screen(self) -> ShapeScreen | None:
        """The ring-shape screen fitted with it (None: a model without one)."""
        ...

    def describe(self) -> dict[str, Any]: ...


class SegmentationStage(Protocol):
    """Segments the tiles screening flagged; says itself whether (and from which score) it may call
    defects (``calibration``) and whether it takes the screening maps as an input."""

    calibration: SegmentationCalibration | None

    @property
    def needs_anomaly_maps(self) -> bool: ...

    def predict_tiles(
        self, tiles: Sequence[Tile], batch_size: int = 4, *, anomaly_maps: Sequence[np.ndarray] | None = None
    ) -> list[Instance]: ...

    def report_scores_from(self, score: float) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class ReworkStage(Protocol):
    """Measures the ring found by the ROI and applies the geometry rules (never raises)."""

    def inspect(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkReport: ...


def model_fingerprint(paths: ModelFiles, config: Config, oring_type: str) -> str:
    """Content hash of the three models and the settings that change a verdict.

    A frame already inspected with the same fingerprint is skipped by reruns; retraining any stage,
    editing the rules file or the pipeline policy makes a new fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(oring_type.encode())
    for path in paths.files():
        if not path.is_file():
            raise ModelFileError(path, "model file not found")
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    # Optional: whether (and from which score) segmentation may call a defect.
    calibration = paths.segmentation_calibration
    digest.update(calibration.read_bytes() if calibration.is_file() else b"no segmentation calibration")
    for section in (config.pipeline, config.roi, config.tiling, config.frame):
        digest.update(section.model_dump_json().encode())
    return digest.hexdigest()[:16]


@dataclass(slots=True)
class PreparedFrame:
    """A decoded frame cut for the models: its ring, the ring tiles and the rework geometry, that is
    everything before screening. :func:`prepare_frame` makes it without the models, so the Ray engine
    does it in tasks and ships it to the actors that hold them; :meth:`Inspector.inspect_prepared`
    finishes it."""

    loaded: LoadedFrame
    timings: dict[str, float]
    roi: RingROI | None = None
    tiles: list[Tile] = field(default_factory=list)
    rework: ReworkReport | None = None
    failure: str | None = None  # a stage raised: the frame's error reason (the in-process wording)
    seconds: float = 0.0  # wall time spent preparing (part of the frame's total)


@dataclass(slots=True)
class FrameInspection:
    """A result plus what the overlay needs (the frame, the ring, the measured geometry)."""

    result: InspectionResult
    gray: np.ndarray | None = None
    roi: RingROI | None = None
    scale: float = 1.0
    geometry: RingMeasurement | None = None  # the rework stage's measurement, when it measured the ring


class _Timer:
    """Per-stage wall times in ms, accumulated into one dict."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


def prepare_frame(
    loaded: LoadedFrame,
    name: str,
    config: Config,
    rework: ReworkStage,
    timings: dict[str, float] | None = None,
) -> PreparedFrame:
    """Ring ROI, ring tiles and rework geometry of a decoded frame: the stages that need no model.

    Never raises: a stage that fails leaves ``failure`` set (the frame becomes an ``error`` result).
    """
    timings = timings if timings is not None else {}
    timer = _Timer(timings)
    start = time.perf_counter()
    prepared = PreparedFrame(loaded, timings)
    gray = loaded.image
    try:
        with timer.stage("roi"):
            roi = prepared.roi = find_ring(gray, config.roi)
        if roi.usable:
            with timer.stage("tiles"):
                prepared.tiles, _ = ring_tiles(gray, roi, config)
            with timer.stage("rework"):
                try:
                    prepared.rework = rework.inspect(roi, gray)
                except OringscanError as exc:  # e.g. a rules file that went bad: the geometry is unmeasured
                    prepared.rework = ReworkReport(ReworkResult(ReworkVerdict.ERROR, [str(exc)]))
    except OringscanError as exc:
        prepared.failure = str(exc)
    except Exception as exc:  # noqa: BLE001 - one frame's bug must not stop the line
        log.exception("%s: inspection failed", name)
        prepared.failure = f"internal error: {type(exc).__name__}: {exc}"
    prepared.seconds = time.perf_counter() - start
    return prepared


def error_result(
    image: str, problem: str, timings: dict[str, float] | None = None, **extra: Any
) -> InspectionResult:
    """An ``error`` verdict that says why (the batch records it and goes on)."""
    return InspectionResult(
        image=image,
        verdict=Verdict.ERROR,
        reasons=[problem],
        error=problem,
        timings_ms=dict(timings or {}),
        **extra,
    )


class Inspector:
    """One o-ring type's three stages plus the verdict policy; cheap to call per frame.

    The stages are anything that keeps the Protocols above (a test runs it on fakes);
    :meth:`load` builds the real ones from the config and the type's workspace.
    """

    def __init__(
        self,
        config: Config,
        oring_type: str,
        screening: ScreeningStage,
        segmenter: SegmentationStage,
        rework: ReworkStage,
        fingerprint: str = "unversioned",
        paths: ModelFiles | None = None,
        gate: DefectGate | None = None,
    ) -> None:
        self.config = config
        self.oring_type = oring_type
        self.screening = screening
        self.segmenter = segmenter
        self.rework = rework
        self.fingerprint = fingerprint
        self.paths = paths
        # Heatmaps cost time: computed when overlays are saved (the batch sets it from --save-vis).
        self.with_maps = config.pipeline.save_overlays
        # Whether segmentation may call defects, and from which score: its val calibration (carried
        # by the segmenter) or an explicit [pipeline] defect_min_score. Not qualified: never runs.
        self.gate = (
            gate if gate is not None else DefectGate.from_calibration(segmenter.calibration, config.pipeline)
        )
        self._warned = False
        if self.gate.lowest is not None:
            segmenter.report_scores_from(self.gate.lowest)

    def _warn_once(self) -> None:
        """One warning line at the first frame: segmentation will not (or, overridden, will) decide."""
        if self._warned:
            return
        self._warned = True
        if not self.gate.qualified:
            log.warning("%s: flagged parts go to suspect, segmentation calls no defect", self.gate.reason)
        elif "overrides" in self.gate.reason:
            log.warning("%s", self.gate.reason)

    @property
    def segmentation_notice(self) -> str:
        """Why segmentation calls no defect ("" when it may): printed by inspect, stored with runs."""
        return "" if self.gate.qualified else self.gate.reason

    @classmethod
    def load(
        cls,
        config: Config,
        output_root: Path | str,
        oring_type: str,
        device: str | None = None,
        version: str | None = None,
    ) -> Inspector:
        """The type's screening model, segmenter and rework rules, from its workspace: the models in
        use, or ``version`` (a stored version such as ``v0002``, or ``"working"``: the newest).

        A missing or wrong model file is a :class:`ModelFileError` naming the file and the command
        that makes it.
        """
        from oringscan.rework_rules import ReworkChecker
        from oringscan.screening import ScreeningModel
        from oringscan.segmentation import stage_from_config

        workspace = TypeWorkspace.from_config(config, output_root, oring_type)
        paths = workspace.models_for(version)
        paths.require(oring_type)
        screening = ScreeningModel.from_config(config, workspace, device, version)
        segmenter = stage_from_config(config, workspace, device, version)  # [segmentation] stage
        checker = ReworkChecker.from_config(config, workspace, version)
        return cls(
            config,
            oring_type,
            screening,
            segmenter,
            checker,
            model_fingerprint(paths, config, oring_type),
            paths,
        )

    def model_versions(self) -> dict[str, Any]:
        """What each stage was made from (stored with every run)."""
        out: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "screening": self.screening.describe(),
            "segmentation": {
                **self.segmenter.describe(),
                "qualified": self.gate.qualified,
                "defect_score": self.gate.min_score,
                "decides": self.gate.reason,
            },
        }
        if self.paths is not None:
            out["version"] = self.paths.version  # None: the working copy (nothing promoted yet)
            out["files"] = {
                "screening": str(self.paths.screening_dir),
                "segmentation": str(self.paths.segmentation_checkpoint),
                "rework_rules": str(self.paths.rework_rules),
            }
        return out

    # ----------------------------------------------------------------------------- public API
    def inspect_array(self, array: np.ndarray, name: str = "frame") -> InspectionResult:
        """Inspect one in-memory frame (8-bit gray or colour, full or binned size): the camera callback."""
        return self.inspect(array, name).result

    def inspect(self, array: np.ndarray, name: str = "frame", sha256: str | None = None) -> FrameInspection:
        """Like :meth:`inspect_array`, keeping the frame, ring and heatmaps for the overlay."""
        timings: dict[str, float] = {}
        timer = _Timer(timings)
        start = time.perf_counter()
        try:
            with timer.stage("normalize"):
                loaded = normalize_frame(array, self.config.frame)
        except FrameError as exc:
            timings["total"] = (time.perf_counter() - start) * 1000.0
            return FrameInspection(
                error_result(name, exc.problem, timings, oring_type=self.oring_type, sha256=sha256)
            )
        return self.inspect_loaded(loaded, name, sha256=sha256, timings=timings, started=start)

    def inspect_loaded(
        self,
        loaded: LoadedFrame,
        name: str,
        sha256: str | None = None,
        timings: dict[str, float] | None = None,
        started: float | None = None,
    ) -> FrameInspection:
        """Inspect a frame :func:`oringscan.frames.read_frame` already decoded."""
        start = started if started is not None else time.perf_counter()
        prepared = prepare_frame(loaded, name, self.config, self.rework, timings)
        return self.inspect_prepared(prepared, name, sha256=sha256, started=start)

    def inspect_prepared(
        self, prepared: PreparedFrame, name: str, sha256: str | None = None, started: float | None = None
    ) -> FrameInspection:
        """Inspect a frame :func:`prepare_frame` cut into ring tiles, here or in another process:
        screening, segmentation of the flagged tiles, verdict (``started``: this process's clock)."""
        loaded, timings = prepared.loaded, prepared.timings
        start = started if started is not None else time.perf_counter() - prepared.seconds
        self._warn_once()
        try:
            if prepared.failure is not None:
                inspection = FrameInspection(error_result(name, prepared.failure, timings), loaded.image)
            else:
                inspection = self._run_stages(prepared, name, timings)
        except OringscanError as exc:
            inspection = FrameInspection(error_result(name, str(exc), timings), loaded.image)
        except Exception as exc:  # noqa: BLE001 - one frame's bug must not stop the line
            log.exception("%s: inspection failed", name)
            inspection = FrameInspection(
                error_result(name, f"internal error: {type(exc).__name__}: {exc}", timings), loaded.image
            )
        result = inspection.result
        result.oring_type = self.oring_type
        result.sha256 = sha256
        # How the frame was brought to size matters to a reviewer; a colour-to-gray conversion does not.
        result.reasons.extend(f"note: {n}" for n in loaded.notes if "colour" not in n)
        timings["total"] = (time.perf_counter() - start) * 1000.0 + timings.get("read", 0.0)
        result.timings_ms = timings
        inspection.scale = loaded.scale
        return inspection

    # ----------------------------------------------------------------------------- stages
    def _run_stages(self, prepared: PreparedFrame, name: str, timings: dict[str, float]) -> FrameInspection:
        timer = _Timer(timings)
        gray, roi, tiles = prepared.loaded.image, prepared.roi, prepared.tiles
        policy = self.config.pipeline
        assert roi is not None  # prepare_frame sets it or a failure
        if not roi.usable:
            verdict, reasons = decide_verdict(roi, None, [], None, policy)
            return FrameInspection(InspectionResult(name, verdict, reasons, error=reasons[0]), gray, roi)
        guided = self.segmenter.needs_anomaly_maps
        with timer.stage("screening"):
            # An anomaly-guided segmenter takes the flagged tiles' screening maps as an input channel.
            screening = self.screening.score_tiles(tiles, with_maps=self.with_maps or guided)
        # The ring-shape screen (screening/shape.py): a measured edge bulge flags the frame and the
        # tiles at it, so segmentation looks there (a screen without one: None).
        shape = self.screening.shape_screen
        if shape is not None and prepared.rework is not None:
            from oringscan.screening.shape import apply_shape_flag

            screening = apply_shape_flag(screening, shape.judge(prepared.rework.measurement))
        # A segmenter that is not qualified is absent: it neither confirms nor clears anything.
        to_segment = tiles_to_segment(tiles, screening) if self.gate.qualified else []
        raw: list[Instance] = []
        if to_segment:
            maps = None
            if guided and screening.anomaly_maps is not None:
                by_tile = {id(t): m for t, m in zip(tiles, screening.anomaly_maps, strict=True)}
                maps = [by_tile[id(t)] for t in to_segment]
            with timer.stage("segmentation"):
                raw = self.segmenter.predict_tiles(
                    to_segment, batch_size=policy.tile_batch_size, anomaly_maps=maps
                )
        defects = confident_defects(raw, policy, self.gate)
        report = prepared.rework
        assert report is not None  # prepare_frame measured the usable ring
        verdict, reasons = decide_verdict(roi, screening, defects, report.result, policy, self.gate)
        result = InspectionResult(
            image=name,
            verdict=verdict,
            reasons=reasons,
            screening=screening,
            defects=defects,
            rework=report.result,
            error=reasons[0] if verdict is Verdict.ERROR and reasons else None,
        )
        return FrameInspection(result, gray, roi, geometry=report.measurement)


def tiles_to_segment(tiles: list[Tile], screening: ScreeningResult) -> list[Tile]:
    """Flagged tiles; for a marginal frame also the tiles in the marginal band (a defect there
    turns "a person must look" into a confirmed defect)."""
    if screening.flagged:
        return [t for t, s in zip(tiles, screening.tiles, strict=True) if s.flagged]
    if screening.marginal and screening.marginal_threshold is not None:
        low = screening.marginal_threshold
        return [t for t, s in zip(tiles, screening.tiles, strict=True) if s.score > low]
    return []
