"""Reviewed frames into the data set: the operators' decisions become labelled training data.

``export_reviews`` writes every reviewed frame (its newest review counts) into the seed layout
that ``preprocess`` reads::

    <data>/images/<good|defect|rework folder of the type>/<frame file>
    <data>/labels/<same folder>/<frame stem>.json        LabelMe 5.x
    <data>/reviews_manifest.json                         which file came from which review

The LabelMe file holds the machine defects the review confirmed (their masks, as LabelMe ``mask``
shapes, with the reviewer's class) and the operator's boxes (``rectangle``) and polygons; a
``defect`` review that marked nothing confirms every machine defect. ``good`` and ``rework``
frames get a file without shapes. Idempotent: a frame whose newest review was exported already is
left alone, a newer review rewrites (and, when the decision changed, moves) the files this export
wrote, never anyone else's. A frame already in the data set (same file name and content in one of
its type's folders) is not copied again. A frame whose picture is gone is reported in one line and
skipped, unless an earlier export kept a copy, which is then relabelled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from oringscan.errors import OringscanError, path_text

MANIFEST = "reviews_manifest.json"
MANIFEST_VERSION = 1


class ExportError(OringscanError):
    """The export cannot run at all (data folder not writable, manifest unreadable)."""


@dataclass(slots=True)
class ExportEntry:
    """What happened to one reviewed frame."""

    frame_id: int
    review_id: int
    decision: str
    oring_type: str | None
    status: str  # written | updated | unchanged | in data set | skipped
    image: str | None = None  # relative to the data root
    label: str | None = None
    source: str | None = None
    shapes: int = 0
    reason: str = ""


@dataclass(slots=True)
class ExportReport:
    data_root: Path
    entries: list[ExportEntry] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for e in self.entries if e.status == status)

    @property
    def skipped(self) -> list[ExportEntry]:
        return [e for e in self.entries if e.status == "skipped"]

    def summary(self) -> str:
        parts = [
            f"{self.count(s)} {s}"
            for s in ("written", "updated", "unchanged", "in data set", "skipped")
            if self.count(s)
        ]
        return f"{len(self.entries)} reviewed frame(s): " + (", ".join(parts) or "nothing to do")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": MANIFEST_VERSION, "frames": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("frames"), dict):
            raise ValueError("no 'frames' object")
        return data
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"{path_text(path)}: unreadable review manifest ({exc}); move it away to export afresh"
        ) from None


def _write_json(path: Path, data: Any) -> None:
    """Written to a temporary file and renamed: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _rle_mask(rle: dict[str, Any] | None) -> np.ndarray | None:
    if not rle or rle.get("counts") is None or rle.get("size") is None:
        return None
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    obj = {
        "size": [int(v) for v in rle["size"]],
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }
    try:
        if isinstance(obj["counts"], list):
            obj = mask_utils.frPyObjects(obj, obj["size"][0], obj["size"][1])
        return mask_utils.decode(obj).astype(bool)
    except (ValueError, TypeError, KeyError):
        return None


def mask_shape(label: str, mask: np.ndarray, x0: int, y0: int) -> dict[str, Any]:
    """A LabelMe 5.x ``mask`` shape: top-left and bottom-right pixel, the crop as a base64 PNG."""
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8
        raise ExportError(f"{label}: could not encode a mask")
    h, w = mask.shape
    return {
        "label": label,
        "points": [[float(x0), float(y0)], [float(x0 + w - 1), float(y0 + h - 1)]],
        "group_id": None,
        "description": "confirmed machine defect",
        "shape_type": "mask",
        "flags": {},
        "mask": base64.b64encode(png.tobytes()).decode("ascii"),
    }


def _scaled_mask_shape(label: str, full: np.ndarray, factor: float) -> dict[str, Any] | None:
    ys, xs = np.nonzero(full)
    if len(xs) == 0:
        return None
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    crop = full[y0:y1, x0:x1]
    if factor != 1.0:
        size = (max(1, int(round((x1 - x0) * factor))), max(1, int(round((y1 - y0) * factor))))
        crop = cv2.resize(crop.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        x0, y0 = int(round(x0 * factor)), int(round(y0 * factor))
    return mask_shape(label, crop, int(x0), int(y0))


def labelme_shapes(detail: Any, review: Any, factor: float = 1.0) -> tuple[list[dict[str, Any]], list[str]]:
    """LabelMe shapes of a review (image px = frame px x ``factor``) and notes on what was left out."""
    from oringscan.preprocess.labelme import polygon_shape

    if review.decision != "defect":
        return [], []
    defects = {d.id: d for d in detail.defects}
    marks = list(review.shapes) or [
        _Implicit(d.id, d.label) for d in detail.defects
    ]  # a defect review that marked nothing confirms every machine defect
    shapes: list[dict[str, Any]] = []
    notes: list[str] = []
    for mark in marks:
        if mark.defect_id is not None:
            defect = defects.get(mark.defect_id)
            full = None if defect is None else _rle_mask(defect.mask_rle)
            shape = None if full is None else _scaled_mask_shape(mark.label, full, factor)
            if shape is None and defect is not None:  # no readable mask: its box is the best we have
                x, y, w, h = (v * factor for v in (defect.x, defect.y, defect.w, defect.h))
                shape = _rectangle(mark.label, x, y, w, h)
                notes.append(f"defect {mark.defect_id}: no readable mask, its box exported")
            if shape is not None:
                shapes.append(shape)
            continue
        if mark.points:
            pts = [(float(px) * factor, float(py) * factor) for px, py in mark.points]
            shapes.append({**polygon_shape(mark.label, pts), "description": "marked in review"})
        else:
            shapes.append(
                _rectangle(mark.label, mark.x * factor, mark.y * factor, mark.w * factor, mark.h * factor)
            )
    if not shapes:
        notes.append("defect decision without a marked or machine defect: exported without shapes")
    return shapes, notes


@dataclass(slots=True)
class _Implicit:
    defect_id: int
    label: str
    points: Any = None


def _rectangle(label: str, x: float, y: float, w: float, h: float) -> dict[str, Any]:
    return {
        "label": label,
        "points": [[float(x), float(y)], [float(x + w), float(y + h)]],
        "group_id": None,
        "description": "marked in review",
        "shape_type": "rectangle",
        "flags": {},
        "mask": None,
    }


def _folder(config: Any, oring_type: str, decision: str) -> str:
    spec = config.oring_type(oring_type)
    if decision == "good":
        return spec.good_folder
    if decision == "defect":
        return spec.defect_folder
    return spec.rework_folder or f"{oring_type}_rework"


def _source_path(stored: str, roots: list[Path]) -> Path:
    raw = Path(stored)
    if raw.is_absolute():
        return raw
    for candidate in [Path.cwd() / raw, *(r / raw for r in roots)]:
        if candidate.is_file():
            return candidate
    return Path.cwd() / raw


def export_reviews(
    store: Any,
    data_root: Path,
    config: Any,
    *,
    since: datetime | None = None,
    oring_type: str | None = None,
    image_roots: list[Path] | None = None,
) -> ExportReport:
    """Every reviewed frame (newest review) into ``data_root``'s seed layout; see the module doc."""
    data_root = Path(data_root)
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{path_text(data_root)}: cannot create the data folder ({exc.strerror})") from None
    manifest_path = data_root / MANIFEST
    manifest = _read_manifest(manifest_path)
    frames: dict[str, Any] = manifest["frames"]
    report = ExportReport(data_root)
    roots = [Path(r) for r in (image_roots or [])]
    try:
        for frame_id, review_id in store.reviewed_frame_ids(since=since, oring_type=oring_type):
            entry = _export_one(store, data_root, config, frame_id, review_id, frames, roots)
            report.entries.append(entry)
    finally:  # whatever was written so far is in the manifest, even when a later frame fails
        manifest["exported_at"] = datetime.now(UTC).isoformat()
        _write_json(manifest_path, manifest)
    return report


def _export_one(
    store: Any,
    data_root: Path,
    config: Any,
    frame_id: int,
    review_id: int,
    frames: dict[str, Any],
    roots: list[Path],
) -> ExportEntry:
    detail = store.frame_detail(frame_id)
    review = next(r for r in detail.reviews if r.id == review_id)
    f = detail.frame
    entry = ExportEntry(frame_id, review_id, review.decision, f.oring_type, "skipped", source=f.image)
    if not f.oring_type or f.oring_type not in config.types:
        entry.reason = f"frame {frame_id}: o-ring type {f.oring_type!r} is not in the config's [types]"
        return entry
    key = f.sha256 or f"frame-{frame_id}"
    previous = frames.get(key)
    if (
        previous
        and previous.get("review_id") == review_id
        and (data_root / previous["image"]).is_file()
        and (data_root / previous["label"]).is_file()
    ):
        entry.status, entry.image, entry.label = "unchanged", previous["image"], previous["label"]
        entry.shapes = int(previous.get("shapes", 0))
        return entry
    source = _source_path(f.image, roots)
    ours_before = None if previous is None else data_root / previous["image"]
    if not source.is_file():
        if ours_before is not None and ours_before.is_file():
            source = ours_before  # the line's copy is gone, the one we exported is not
        else:
            entry.reason = (
                f"{path_text(source)}: image file is gone (moved or deleted since the inspection); "
                f"frame {frame_id} not exported, its review {review_id} stays in the database"
            )
            return entry
    folder = _folder(config, f.oring_type, review.decision)
    image = cv2.imdecode(np.fromfile(source, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        entry.reason = f"{path_text(source)}: cannot be decoded as an image; frame {frame_id} not exported"
        return entry
    height, width = image.shape[:2]
    frame_w = (detail.frame_shape or (height, width))[1]
    factor = width / float(frame_w) if frame_w else 1.0
    shapes, notes = labelme_shapes(detail, review, factor)
    entry.shapes, entry.reason = len(shapes), "; ".join(notes)

    source_sha = _sha256(source)
    existing = _already_in_dataset(data_root, config, f.oring_type, source.name, source_sha, frames)
    if existing is not None and (previous is None or existing != previous.get("image")):
        entry.status, entry.image = "in data set", existing
        entry.reason = f"already in the data set as {existing}: not copied again, its labels kept"
        return entry

    target_dir = data_root / "images" / folder
    name = source.name
    target = target_dir / name
    ours = {v.get("image") for v in frames.values()}
    rel = target.relative_to(data_root).as_posix()
    if target.exists() and rel not in ours and _sha256(target) != source_sha:
        name = f"{source.stem}__f{frame_id}{source.suffix}"  # another frame of the same name
        target = target_dir / name
        rel = target.relative_to(data_root).as_posix()
    label_path = data_root / "labels" / folder / f"{Path(name).stem}.json"
    label_rel = label_path.relative_to(data_root).as_posix()
    target_dir.mkdir(parents=True, exist_ok=True)
    if source.resolve() != target.resolve():
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    from oringscan.preprocess.labelme import labelme_document

    image_in_json = (Path("..") / ".." / "images" / folder / name).as_posix()
    _write_json(label_path, labelme_document(shapes, image_in_json, width, height))
    if previous is not None:  # an earlier export of this frame under another folder or name: ours, removed
        for old in (previous.get("image"), previous.get("label")):
            if old and old not in (rel, label_rel):
                (data_root / old).unlink(missing_ok=True)
    entry.status = "written" if previous is None else "updated"
    entry.image, entry.label = rel, label_rel
    frames[key] = {
        "frame_id": frame_id,
        "review_id": review_id,
        "decision": review.decision,
        "operator": review.operator,
        "reviewed_at": None if review.created_at is None else review.created_at.isoformat(),
        "comment": review.comment,
        "oring_type": f.oring_type,
        "source": path_text(f.image),
        "sha256": source_sha,
        "image": rel,
        "label": label_rel,
        "shapes": len(shapes),
        "exported_at": datetime.now(UTC).isoformat(),
    }
    return entry


def _already_in_dataset(
    data_root: Path, config: Any, oring_type: str, name: str, sha: str, frames: dict[str, Any]
) -> str | None:
    """The data-set file (relative) with this name and content in one of the type's folders that an
    earlier export did not write, or None."""
    spec = config.oring_type(oring_type)
    ours = {v.get("image") for v in frames.values()}
    for folder in {spec.good_folder, spec.defect_folder, spec.rework_folder or f"{oring_type}_rework"}:
        candidate = data_root / "images" / folder / name
        rel = candidate.relative_to(data_root).as_posix()
        if rel in ours or not candidate.is_file():
            continue
        if _sha256(candidate) == sha:
            return rel
    return None


def entry_dict(entry: ExportEntry) -> dict[str, Any]:
    return asdict(entry)
