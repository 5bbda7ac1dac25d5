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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from oringscan.config import Config
from oringscan.errors import FrameError, ModelFileError, OringscanError
from oringscan.frames import LoadedFrame, normalize_frame
from oringscan.pipeline.policy import DefectGate, confident_defects, decide_verdict
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

log = logging.getLogger(__name__)


class ScreeningStage(Protocol):
    def score_tiles(self, tiles: list[Tile], with_maps: bool = False) -> ScreeningResult: ...


class SegmentationStage(Protocol):
    def predict_tiles(self, tiles: list[Tile], batch_size: int = 4) -> list[Instance]: ...


class ReworkStage(Protocol):
    def check(self, image_or_roi: np.ndarray | RingROI, gray: np.ndarray | None = None) -> ReworkResult: ...


@dataclass(frozen=True, slots=True)
class ModelPaths:
    """Where one o-ring type's three models live under the output root."""

    screening_dir: Path
    segmentation_checkpoint: Path
    rework_rules: Path

    @classmethod
    def for_type(cls, config: Config, output_root: Path, model: str) -> ModelPaths:
        from oringscan.rework_rules import rules_path_for

        type_root = Path(output_root) / model
        rules = rules_path_for(config, Path(output_root), model)
        return cls(type_root / "screening", type_root / "checkpoints" / "best_model.pth", Path(rules))

    @property
    def segmentation_calibration(self) -> Path:
        """The segmenter's calibration (segmentation/calibration.py), next to its checkpoint."""
        return self.segmentation_checkpoint.parent / "segmentation_calibration.json"

    def files(self) -> list[Path]:
        """Every file whose content decides a verdict (hashed into the model fingerprint)."""
        return [
            self.screening_dir / "metadata.json",
            self.screening_dir / "memory_bank.safetensors",
            self.segmentation_checkpoint,
            self.rework_rules,
        ]


def model_fingerprint(paths: ModelPaths, config: Config, model: str) -> str:
    """Content hash of the three models and the settings that change a verdict.

    A frame already inspected with the same fingerprint is skipped by reruns; retraining any stage,
    editing the rules file or the pipeline policy makes a new fingerprint.
    """
    digest = hashlib.sha256()
    digest.update(model.encode())
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
class FrameInspection:
    """A result plus what the overlay needs (the frame, the ring, the tiles' heatmaps)."""

    result: InspectionResult
    gray: np.ndarray | None = None
    roi: RingROI | None = None
    scale: float = 1.0
    raw_defects: list[Instance] = field(default_factory=list)
    segmented_boxes: list[Any] = field(default_factory=list)
    geometry: Any = None  # the rework stage's RingMeasurement, when it measured the ring


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
    """One o-ring type's three stages plus the verdict policy; cheap to call per frame."""

    def __init__(
        self,
        config: Config,
        model: str,
        screening: ScreeningStage,
        segmenter: SegmentationStage,
        rework: ReworkStage,
        fingerprint: str = "unversioned",
        paths: ModelPaths | None = None,
        gate: DefectGate | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.screening = screening
        self.segmenter = segmenter
        self.rework = rework
        self.fingerprint = fingerprint
        self.paths = paths
        self.with_maps = config.pipeline.save_overlays
        # Whether segmentation may call defects, and from which score: its val calibration (carried
        # by the segmenter) or an explicit [pipeline] defect_min_score. Not qualified: never runs.
        self.gate = (
            gate
            if gate is not None
            else DefectGate.from_calibration(getattr(segmenter, "calibration", None), config.pipeline)
        )
        self._warned = False
        training = getattr(segmenter, "training", None)
        lowest = self.gate.lowest
        if lowest is not None and training is not None and getattr(training, "score_threshold", 0.0) > lowest:
            # The segmenter must report instances down to the lowest calibrated score (a copy:
            # the config's training section stays as it is).
            segmenter.training = training.model_copy(update={"score_threshold": lowest})  # type: ignore[attr-defined]

    def _warn_once(self) -> None:
        """One warning line when the first frame is inspected: segmentation will not (or, overridden, will) decide."""
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
        cls, config: Config, output_root: Path | str, model: str, device: str | None = None
    ) -> Inspector:
        """Load the type's screening model, segmenter (checkpoints/best_model.pth) and rework rules.

        A missing or wrong model file is a :class:`ModelFileError` naming the file and the command
        that makes it.
        """
        from oringscan.rework_rules import ReworkChecker
        from oringscan.screening import ScreeningModel
        from oringscan.segmentation import Segmenter

        config.oring_type(model)
        paths = ModelPaths.for_type(config, Path(output_root), model)
        hints = {
            paths.screening_dir / "metadata.json": f"oringscan train screening --model {model}",
            paths.screening_dir / "memory_bank.safetensors": f"oringscan train screening --model {model}",
            paths.segmentation_checkpoint: f"oringscan train segmentation --model {model}",
            paths.rework_rules: f"oringscan calibrate rework --model {model}",
        }
        for path, command in hints.items():
            if not path.is_file():
                raise ModelFileError(path, f"model file not found; make it with: {command}")
        screen_device = _resolve(device or config.screening.device)
        screening = ScreeningModel.load(paths.screening_dir, expected_type=model, device=screen_device)
        segmenter = Segmenter.load(
            paths.segmentation_checkpoint,
            device=device or config.training.device,
            expected_type=model,
            config=config,
        )
        checker = ReworkChecker.load(
            paths.rework_rules,
            mm_per_px=config.oring_type(model).mm_per_px,
            config=config.rework,
            roi_config=config.roi,
        )
        return cls(
            config, model, screening, segmenter, checker, model_fingerprint(paths, config, model), paths
        )

    def model_versions(self) -> dict[str, Any]:
        """What each stage was made from (stored with every run)."""
        out: dict[str, Any] = {"fingerprint": self.fingerprint}
        meta = getattr(self.screening, "meta", None)
        if meta is not None:
            out["screening"] = {
                k: getattr(meta, k, None)
                for k in ("backbone", "threshold", "marginal_threshold", "train_fingerprint", "created")
            }
        seg_meta = getattr(self.segmenter, "meta", None)
        if isinstance(seg_meta, dict):
            out["segmentation"] = {
                k: v for k, v in seg_meta.items() if isinstance(v, str | int | float | None)
            }
        out.setdefault("segmentation", {}).update(
            {
                "qualified": self.gate.qualified,
                "defect_score": self.gate.min_score,
                "decides": self.gate.reason,
            }
        )
        if self.paths is not None:
            out["files"] = {
                k: str(v)
                for k, v in (
                    ("screening", self.paths.screening_dir),
                    ("segmentation", self.paths.segmentation_checkpoint),
                    ("rework_rules", self.paths.rework_rules),
                )
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
                error_result(name, exc.problem, timings, oring_type=self.model, sha256=sha256)
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
        timings = timings if timings is not None else {}
        start = started if started is not None else time.perf_counter()
        self._warn_once()
        try:
            inspection = self._run_stages(loaded, name, timings)
        except OringscanError as exc:
            inspection = FrameInspection(error_result(name, str(exc), timings), loaded.image)
        except Exception as exc:  # noqa: BLE001 - one frame's bug must not stop the line
            log.exception("%s: inspection failed", name)
            inspection = FrameInspection(
                error_result(name, f"internal error: {type(exc).__name__}: {exc}", timings), loaded.image
            )
        result = inspection.result
        result.oring_type = self.model
        result.sha256 = sha256
        # How the frame was brought to size matters to a reviewer; a colour-to-gray conversion does not.
        result.reasons.extend(f"note: {n}" for n in loaded.notes if "colour" not in n)
        timings["total"] = (time.perf_counter() - start) * 1000.0 + timings.get("read", 0.0)
        result.timings_ms = timings
        inspection.scale = loaded.scale
        return inspection

    # ----------------------------------------------------------------------------- stages
    def _run_stages(self, loaded: LoadedFrame, name: str, timings: dict[str, float]) -> FrameInspection:
        timer = _Timer(timings)
        gray = loaded.image
        policy = self.config.pipeline
        with timer.stage("roi"):
            roi = find_ring(gray, self.config.roi)
        if not roi.usable:
            verdict, reasons = decide_verdict(roi, None, [], None, policy)
            return FrameInspection(InspectionResult(name, verdict, reasons, error=reasons[0]), gray, roi)
        with timer.stage("tiles"):
            tiles, _ = ring_tiles(gray, roi, self.config)
        with timer.stage("screening"):
            # An anomaly-guided segmenter takes the flagged tiles' screening maps as an input channel.
            guided = bool(getattr(self.segmenter, "needs_anomaly_maps", False))
            screening = self.screening.score_tiles(tiles, with_maps=self.with_maps or guided)
        # A segmenter that is not qualified is absent: it neither confirms nor clears anything.
        to_segment = self._tiles_to_segment(tiles, screening) if self.gate.qualified else []
        raw: list[Instance] = []
        if to_segment:
            extra: dict[str, Any] = {}
            if guided and screening.anomaly_maps is not None:
                maps = {id(t): m for t, m in zip(tiles, screening.anomaly_maps, strict=True)}
                extra["anomaly_maps"] = [maps[id(t)] for t in to_segment]
            with timer.stage("segmentation"):
                raw = list(
                    self.segmenter.predict_tiles(to_segment, batch_size=policy.tile_batch_size, **extra)
                )
        defects = confident_defects(raw, policy, self.gate)
        with timer.stage("rework"):
            rework, geometry = self._check_rework(roi, gray)
        verdict, reasons = decide_verdict(roi, screening, defects, rework, policy, self.gate)
        result = InspectionResult(
            image=name,
            verdict=verdict,
            reasons=reasons,
            screening=screening,
            defects=defects,
            rework=rework,
            error=reasons[0] if verdict is Verdict.ERROR and reasons else None,
        )
        return FrameInspection(
            result, gray, roi, raw_defects=raw, segmented_boxes=[t.box for t in to_segment], geometry=geometry
        )

    def _tiles_to_segment(self, tiles: list[Tile], screening: ScreeningResult) -> list[Tile]:
        """Flagged tiles; for a marginal frame also the tiles in the marginal band (a defect there
        turns "a person must look" into a confirmed defect)."""
        if screening.flagged:
            return [t for t, s in zip(tiles, screening.tiles, strict=True) if s.flagged]
        if screening.marginal:
            low = self._marginal_threshold(screening)
            return [t for t, s in zip(tiles, screening.tiles, strict=True) if s.score > low]
        return []

    def _marginal_threshold(self, screening: ScreeningResult) -> float:
        meta = getattr(self.screening, "meta", None)
        low = getattr(meta, "marginal_threshold", None)
        if low is None:
            fraction = self.config.screening.marginal_fraction or 1.0
            low = screening.threshold * fraction
        return float(low)

    def _check_rework(self, roi: RingROI, gray: np.ndarray) -> tuple[ReworkResult, Any]:
        """The rules' result and, when the checker offers it, the measured geometry (for overlays)."""
        try:
            inspect = getattr(self.rework, "inspect", None)
            if inspect is not None:
                report = inspect(roi, gray)
                return report.result, getattr(report, "measurement", None)
            return self.rework.check(roi, gray), None
        except OringscanError as exc:
            return ReworkResult(ReworkVerdict.ERROR, [str(exc)]), None


def _resolve(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
