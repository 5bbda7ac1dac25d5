"""When a segmenter may call a part ``defect``: a score calibrated on val, and a qualification.

An instance's score is no probability: an untrained Mask R-CNN scores everything about 0.5 (a
sigmoid of about zero), so a fixed ``defect_min_score = 0.5`` lets a model that has learned nothing
call good parts defective. Instead, every validation tile (never trained on; the good ones show the
false alarms) is predicted once and matched to its labels by pycocotools (the same COCOeval matching
as the AP metrics, mask IoU 0.5, a duplicate detection a false positive), and the score is set where
the detections at or above it reach ``segmentation.defect_precision`` (per class where val has
``min_class_defects`` labelled defects of it, else one global score).

A model is *not qualified* (the pipeline treats it as absent; flagged parts go to ``suspect``) when
its val segm AP50 is below ``segmentation.min_ap50``, when its *find AP* is below
``segmentation.min_find_ap``, or when no score reaches the precision. The find AP judges the
instances as inspection reports them: each tile's detections stitched (duplicates merged) and an
instance on a labelled defect (mask IoU >= ``training.recall_iou``) a find. It is reported beside
AP50 because it says whether a model *locates* defects; the threshold is not taken from it, because
on pilot-size val sets the find precision is optimistic (measured: 5-CPU-minute route models
qualified that way called 1-3 of 8 unseen good frames ``defect``; README "Segmentation").

The result is ``checkpoints/segmentation_calibration.json`` next to the checkpoint, tied to it by
the checkpoint's sha256 (a file for other weights counts as no calibration). It is written at the
end of training and by ``oringscan calibrate segmentation --model M``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config, SegmentationConfig, TrainingConfig
from oringscan.errors import ModelFileError
from oringscan.timeutil import utc_iso

log = logging.getLogger(__name__)

CALIBRATION_FILE = "segmentation_calibration.json"
FORMAT = "oringscan-segmentation-calibration/1"
SCORE_FLOOR = 0.05  # torchvision's default box_score_thresh: lower scores never leave the model


@dataclass(slots=True)
class ScoreCurve:
    """Detections at or above each score: how many, how many true, the precision and recall there."""

    scores: list[float]
    precision: list[float]
    recall: list[float]
    true_positives: list[int]


@dataclass(slots=True)
class SegmentationCalibration:
    """The score at which a segmented instance counts as a defect, and whether the model may decide."""

    qualified: bool
    reason: str  # why not qualified ("" when qualified)
    threshold: float | None  # global score (None: not qualified)
    per_class: dict[str, float] = field(default_factory=dict)
    precision_target: float = 0.9
    min_ap50: float = 0.3
    ap50: float | None = None  # COCO segm AP50 on val
    min_find_ap: float = 0.3
    find_ap: float | None = None  # AP of finding the labelled defects, as inspection reports them
    precision: float | None = None  # on val at the global score
    recall: float | None = None
    val_tiles: int = 0
    val_defects: int = 0
    checkpoint_sha256: str | None = None
    created: str = ""
    format: str = FORMAT

    @property
    def summary(self) -> str:
        """One line: what the pipeline does with this segmenter and why."""
        if not self.qualified:
            return f"segmentation model not qualified: {self.reason}"
        classes = "".join(f", {k} >= {v:.2f}" for k, v in sorted(self.per_class.items()))
        found = "" if self.find_ap is None else f"val find AP {self.find_ap:.2f}, "
        return (
            f"segmentation qualified: {found}val AP50 {self.ap50:.2f}, defect score >= "
            f"{self.threshold:.2f}{classes} (precision {self.precision:.2f} >= {self.precision_target:.2f}, "
            f"recall {self.recall:.2f} on val)"
        )

    def min_score(self, label: str) -> float | None:
        """The score an instance of ``label`` must reach (None: the model is not qualified)."""
        if not self.qualified:
            return None
        return self.per_class.get(label, self.threshold)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> SegmentationCalibration:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ModelFileError(path, "not an oringscan segmentation calibration (format marker missing)")
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ModelFileError(path, f"segmentation calibration lacks a field ({exc})") from None


def calibration_targets(settings: SegmentationConfig) -> dict[str, float]:
    """The settings a calibration is judged against (recorded in every calibration file)."""
    return {
        "precision_target": settings.defect_precision,
        "min_ap50": settings.min_ap50,
        "min_find_ap": settings.min_find_ap,
    }


def no_val_split(settings: SegmentationConfig, annotations: Path) -> SegmentationCalibration:
    """Not qualified: nothing to show that the model finds defects."""
    return SegmentationCalibration(
        False,
        f"no validation split at {annotations}",
        None,
        created=utc_iso(),
        **calibration_targets(settings),
    )


def calibration_path(checkpoint: Path | str) -> Path:
    """Where a checkpoint's calibration lives: checkpoints/segmentation_calibration.json."""
    checkpoint = Path(checkpoint)
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / CALIBRATION_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_calibration(checkpoint: Path | str) -> SegmentationCalibration | None:
    """The checkpoint's calibration; None when there is none (or it belongs to other weights)."""
    checkpoint = Path(checkpoint)
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            path, f"not valid JSON ({exc}); recreate it: oringscan calibrate segmentation"
        ) from None
    calibration = SegmentationCalibration.from_json(data, path)
    if (
        calibration.checkpoint_sha256
        and checkpoint.is_file()
        and file_sha256(checkpoint) != calibration.checkpoint_sha256
    ):
        log.warning(
            "%s: made for other weights than %s (retrained?); the segmenter counts as not calibrated",
            path,
            checkpoint.name,
        )
        return None
    return calibration


def save_calibration(calibration: SegmentationCalibration, checkpoint: Path | str) -> Path:
    path = calibration_path(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(calibration.to_json(), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


# --- from val predictions ------------------------------------------------------------------------


def score_curve(
    scores: np.ndarray, matched: np.ndarray, n_truth: int, found: np.ndarray | None = None
) -> ScoreCurve:
    """Precision and recall of the detections at or above each distinct score (highest first).

    ``found`` (optional): per detection, the index of the labelled defect it finds (-1: none); then
    recall and true positives count *distinct* defects, so duplicates on one defect count once.
    """
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], matched[order]
    tp = np.cumsum(m)
    if found is not None:  # distinct defects found among the detections so far
        first = np.zeros(len(s), dtype=bool)
        ids = found[order]
        _, at = np.unique(ids, return_index=True)
        first[at] = True
        tp_found = np.cumsum(first & (ids >= 0) & m)
    else:
        tp_found = tp
    count = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # ties: all of them or none
    return ScoreCurve(
        scores=s[last].tolist(),
        precision=(tp / count)[last].tolist(),
        recall=(tp_found / max(n_truth, 1))[last].tolist(),
        true_positives=tp_found[last].astype(int).tolist(),
    )


def average_precision(curve_precision: Sequence[float], curve_recall: Sequence[float]) -> float:
    """Area under a precision-recall curve given at descending scores (step-wise, as sklearn)."""
    ap, last = 0.0, 0.0
    for p, r in zip(curve_precision, curve_recall, strict=True):
        ap += (r - last) * p
        last = r
    return float(ap)


def lowest_score_for_precision(curve: ScoreCurve, target: float, min_true_positives: int) -> int | None:
    """Index into the curve of the lowest score whose detections reach ``target`` precision."""
    best = None
    for i, (p, tp) in enumerate(zip(curve.precision, curve.true_positives, strict=True)):
        if p >= target and tp >= min_true_positives:
            best = i
    return best


@dataclass(slots=True)
class Finds:
    """Every instance inspection would report on the val tiles: its score, class, and the labelled
    defect it lies on (index into the truth, -1 for a false alarm)."""

    scores: np.ndarray  # (N,) float
    labels: list[str]
    defect: np.ndarray  # (N,) int, -1: on no labelled defect
    truth_labels: list[str]  # the labelled defects' classes

    def curve(self, label: str | None = None) -> ScoreCurve:
        """Precision (instances on a defect) and recall (distinct defects found) at each score."""
        pick = np.array([label is None or x == label for x in self.labels], dtype=bool)
        truth_ok = np.array([label is None or t == label for t in self.truth_labels] + [False])
        defect = self.defect[pick]
        on = truth_ok[defect]  # index -1 reads the trailing False: a false alarm
        return score_curve(self.scores[pick], on, int(truth_ok.sum()), np.where(on, defect, -1))


def find_instances(
    records: Sequence[Any],
    outputs: dict[int, Any],
    class_names: Sequence[str],
    training: TrainingConfig,
    mask_threshold: float = 0.5,
) -> Finds:
    """Per val tile, the instances inspection would report (stitched) matched to the labelled ones."""
    from oringscan.segmentation.coco_eval import as_prediction
    from oringscan.segmentation.evaluation import mask_iou, truth_instances
    from oringscan.segmentation.stitching import stitch

    scores: list[float] = []
    labels: list[str] = []
    defect: list[int] = []
    truth_labels: list[str] = []
    for record in records:
        truth = truth_instances([record], list(class_names))
        pieces = as_prediction(outputs[record.image_id], mask_threshold).instances(
            class_names, (record.tile_x, record.tile_y), SCORE_FLOOR, training.min_mask_area
        )
        reported = stitch(
            pieces, training.stitch_ios, training.stitch_window_iou, min_area=training.min_mask_area
        )
        first = len(truth_labels)
        truth_labels.extend(t.label for t in truth)
        for inst in reported:
            overlaps = [mask_iou(t, inst) for t in truth]
            best = int(np.argmax(overlaps)) if overlaps else -1
            on = best >= 0 and overlaps[best] >= training.recall_iou
            scores.append(inst.score)
            labels.append(inst.label)
            defect.append(first + best if on else -1)
    return Finds(np.asarray(scores, dtype=float), labels, np.asarray(defect, dtype=np.int64), truth_labels)


def coco_matches(
    records: Sequence[Any], outputs: dict[int, Any], class_names: Sequence[str], mask_threshold: float
) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """COCO segm AP50 of the raw detections on the val tiles, and per class every detection's score,
    whether COCOeval matched it (mask IoU 0.5; a duplicate is a false positive) and the labelled count."""
    from pycocotools.cocoeval import COCOeval

    from oringscan.segmentation.coco_eval import _summary, as_prediction, ground_truth

    gt = ground_truth(records, class_names)
    results = [
        d
        for r in records
        for d in as_prediction(outputs[r.image_id], mask_threshold).coco_results(r.image_id)
    ]
    if not results or not gt.dataset["annotations"]:
        return 0.0, {}, {}, {}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(results), "segm")
        evaluator.params.imgIds = [r.image_id for r in records]
        evaluator.evaluate()
        evaluator.accumulate()
    ap50 = float(_summary(evaluator, class_names)["AP50"] or 0.0)
    return (ap50, *_matched_detections(evaluator, class_names))


def _matched_detections(
    evaluator: Any, class_names: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Per class: detection scores, whether COCOeval matched each at IoU 0.5, and the labelled count."""
    params = evaluator.params
    t = int(np.argmin(np.abs(np.asarray(params.iouThrs) - 0.5)))
    n_area, n_img = len(params.areaRng), len(params.imgIds)
    scores: dict[str, list[float]] = {}
    matched: dict[str, list[bool]] = {}
    n_truth: dict[str, int] = {}
    for k, cat_id in enumerate(params.catIds):
        name = class_names[cat_id - 1]
        s, m, g = [], [], 0
        for i in range(n_img):
            e = evaluator.evalImgs[k * n_area * n_img + i]  # area range 0: "all"
            if e is None:
                continue
            keep = ~np.asarray(e["dtIgnore"][t], dtype=bool)
            s.extend(np.asarray(e["dtScores"], dtype=float)[keep].tolist())
            m.extend((np.asarray(e["dtMatches"][t]) > 0)[keep].tolist())
            g += int(np.count_nonzero(~np.asarray(e["gtIgnore"], dtype=bool)))
        scores[name], matched[name], n_truth[name] = s, m, g
    return (
        {k: np.asarray(v, dtype=float) for k, v in scores.items()},
        {k: np.asarray(v, dtype=bool) for k, v in matched.items()},
        n_truth,
    )


def calibrate_from_outputs(
    records: Sequence[Any],
    outputs: dict[int, Any],
    class_names: Sequence[str],
    settings: SegmentationConfig,
    mask_threshold: float = 0.5,
    training: TrainingConfig | None = None,
) -> SegmentationCalibration:
    """Calibration from the raw model outputs on val tiles (``coco_eval.predict_records``).

    ``training`` holds how inspection stitches and what counts as on the defect (``stitch_ios``,
    ``stitch_window_iou``, ``recall_iou``, ``min_mask_area``) for the find AP; the defaults when None.
    """
    training = training if training is not None else TrainingConfig()
    base = {**calibration_targets(settings), "val_tiles": len(records), "created": utc_iso()}
    n_defects = sum(len(r.annotations) for r in records)
    if n_defects == 0:
        return SegmentationCalibration(
            False, "no labelled defects in the validation split to show it finds them", None, **base
        )  # type: ignore[arg-type]
    ap50, scores, matched, n_truth = coco_matches(records, outputs, class_names, mask_threshold)
    finds = find_instances(records, outputs, class_names, training, mask_threshold)
    found = finds.curve()
    common = {
        "ap50": round(ap50, 4),
        "find_ap": round(average_precision(found.precision, found.recall), 4),
        "val_defects": n_defects,
        **base,
    }
    if not scores:
        return SegmentationCalibration(
            False, f"val AP50 0.00 < {settings.min_ap50:.2f} (no detections on val)", None, **common
        )  # type: ignore[arg-type]
    if ap50 < settings.min_ap50:
        return SegmentationCalibration(
            False, f"val AP50 {ap50:.2f} < {settings.min_ap50:.2f}", None, **common
        )  # type: ignore[arg-type]
    if common["find_ap"] < settings.min_find_ap:
        return SegmentationCalibration(
            False, f"val find AP {common['find_ap']:.2f} < {settings.min_find_ap:.2f}", None, **common
        )  # type: ignore[arg-type]
    pooled = score_curve(
        np.concatenate(list(scores.values())), np.concatenate(list(matched.values())), n_defects
    )
    at = lowest_score_for_precision(pooled, settings.defect_precision, settings.min_true_positives)
    if at is None:
        best = max(pooled.precision) if pooled.precision else 0.0
        return SegmentationCalibration(
            False,
            f"no score reaches precision {settings.defect_precision:.2f} on val with at least "
            f"{settings.min_true_positives} true detections (best {best:.2f})",
            None,
            **common,
        )  # type: ignore[arg-type]
    per_class: dict[str, float] = {}
    for name in class_names:
        if n_truth.get(name, 0) < settings.min_class_defects or name not in scores:
            continue
        curve = score_curve(scores[name], matched[name], n_truth[name])
        i = lowest_score_for_precision(curve, settings.defect_precision, settings.min_true_positives)
        if i is not None:
            per_class[name] = round(float(curve.scores[i]), 4)
    return SegmentationCalibration(
        True,
        "",
        round(float(pooled.scores[at]), 4),
        per_class,
        precision=round(float(pooled.precision[at]), 4),
        recall=round(float(pooled.recall[at]), 4),
        **common,  # type: ignore[arg-type]
    )


def calibrate_segmentation(
    config: Config,
    output_root: Path | str,
    oring_type: str,
    checkpoint: Path | str | None = None,
    device: str = "auto",
    write: bool = True,
    progress: bool = False,
) -> SegmentationCalibration:
    """Predict the val split with the checkpoint, calibrate, and write the file next to it."""
    if config.segmentation.stage != "maskrcnn":  # a second stage (segmentation/stages.py)
        from oringscan.segmentation.dense_engine import calibrate_dense_stage

        return calibrate_dense_stage(config, output_root, oring_type, checkpoint, device, write, progress)
    from oringscan.segmentation.coco_eval import predict_records
    from oringscan.segmentation.engine import _val_subset
    from oringscan.segmentation.inference import Segmenter
    from oringscan.workspace import TypeWorkspace

    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    checkpoint = Path(checkpoint) if checkpoint is not None else workspace.best_checkpoint
    segmenter = Segmenter.load(checkpoint, device=device, expected_type=oring_type, config=config)
    records = workspace.read_split("val", segmenter.class_names) if workspace.has_split("val") else []
    # Every val tile by default (good ones show the false alarms), not training's per-epoch subset.
    records = _val_subset(records, config.segmentation.calibration_max_tiles)
    attach = getattr(segmenter, "attach_anomaly_maps", None)  # models that take the screening map as input
    if attach is not None and records:
        attach(records, "val", progress)
    segmenter.model.roi_heads.score_thresh = SCORE_FLOOR  # the curve needs the low scores too
    outputs = predict_records(
        segmenter.model,
        records,
        segmenter.device,
        config.pipeline.tile_batch_size,
        progress,
        segmenter.training.mask_threshold,
    )
    if records:
        calibration = calibrate_from_outputs(
            records,
            outputs,
            segmenter.class_names,
            config.segmentation,
            segmenter.training.mask_threshold,
            segmenter.training,
        )
    else:
        calibration = no_val_split(config.segmentation, workspace.annotations("val"))
    calibration.checkpoint_sha256 = file_sha256(
        checkpoint if checkpoint.is_file() else checkpoint / "best_model.pth"
    )
    if write:
        save_calibration(calibration, checkpoint)
    return calibration
