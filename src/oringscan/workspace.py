"""The one place that knows the layout of ``output/<type>/`` and reads the preprocess data set.

Every stage, the pipeline, the CLI and the dashboard ask a :class:`TypeWorkspace` where a file
lives instead of spelling ``output_root / model / "annotations" / ...`` themselves, so the layout
can change in one module and every reader fails the same way (one :class:`ModelFileError` naming
the file and the command that makes it)::

    output/<type>/
      dataset_summary.json            preprocess: counts, size histogram, skipped files
      annotations/{train,val,test}.json   preprocess: COCO per split (tiles + instance masks)
      images/{train,val,test}/*.png   preprocess: the tiles
      screening/                      train screening: metadata.json, memory_bank.safetensors
        evaluation/                   evaluate screening: metrics.json, roc.png, histogram.png
      checkpoints/                    train segmentation: best_model.pth, latest.pth
        segmentation_calibration.json calibrate segmentation: may it call defects, from which score
      runs/                           TensorBoard logs of segmentation training
      inference_results/              evaluate segmentation / predict: metrics.json, pictures
      evaluation/pipeline/            evaluate pipeline: report, confusion, overlays
      evaluation/compare-<a>-vs-<b>/  compare: two model versions on the same frames
      compare/<variant>/              evaluate compare: screening variants and second stages, one split
      measurements/                   measure: geometry pictures
      inspections/run-<id>_<UTC>/     inspect / watch: overlay pictures of one run
      rework_rules.toml               calibrate rework (or [rework] rules_file)
      versions/<id>/                  a snapshot of the three models (same names), version.json
      versions/current                the version in use (absent: the working copy above decides)
      versions/history.jsonl          every promotion and rollback
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from oringscan.errors import LabelError, ModelFileError

if TYPE_CHECKING:
    from oringscan.config import Config

SPLITS = ("train", "val", "test")
SUMMARY_FILE = "dataset_summary.json"
BEST_CHECKPOINT = "best_model.pth"
LATEST_CHECKPOINT = "latest.pth"
SEGMENTATION_CALIBRATION = "segmentation_calibration.json"
SCREENING_FILES = ("metadata.json", "memory_bank.safetensors")
RULES_FILE = "rework_rules.toml"
CURRENT_POINTER = "current"


@dataclass(slots=True)
class TileAnnotation:
    """One labelled instance on a tile, as preprocess wrote it."""

    class_index: int  # 1-based: 0 is background
    segmentation: Any  # COCO polygons or RLE
    area: float


@dataclass(slots=True)
class TileRecord:
    """One tile of the preprocess data set: where it is, where it came from, what is labelled on it.

    The same record serves screening (which only asks whether a tile's frame holds a defect) and
    segmentation (which decodes the masks), so both read the data set through one reader.
    """

    path: Path
    width: int
    height: int
    source_image: str = ""  # posix path of the source frame, relative to the data root
    tile_x: int = 0
    tile_y: int = 0
    annotations: list[TileAnnotation] = field(default_factory=list)
    image_id: int = 0
    # The tile's screening anomaly map scaled to uint8, when a segmenter takes it as an input channel.
    anomaly_path: Path | None = None

    @property
    def is_defect(self) -> bool:
        return bool(self.annotations)

    @property
    def source(self) -> str:
        """The source frame's name (the tile's own name when preprocess did not record one)."""
        return self.source_image or self.path.name

    @property
    def defect_areas(self) -> list[float]:
        return [a.area for a in self.annotations]

    def masks(self) -> np.ndarray:
        """(N, H, W) uint8 masks of this tile's annotations."""
        out = np.zeros((len(self.annotations), self.height, self.width), dtype=np.uint8)
        for i, ann in enumerate(self.annotations):
            out[i] = decode_segmentation(ann.segmentation, self.height, self.width)
        return out


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygons / uncompressed RLE / compressed RLE (str or bytes counts) -> HxW uint8 mask."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        polys = [p for p in segmentation if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=np.uint8)
        rles = mask_utils.frPyObjects(polys, height, width)
        return mask_utils.decode(mask_utils.merge(rles)).astype(np.uint8)
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle.get("counts"), list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        return mask_utils.decode(rle).astype(np.uint8)
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """A frame of a split, as the data root holds it, with what it truly is."""

    path: Path
    kind: str  # "good", "defect" or "rework"


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Where one o-ring type's three models live (what the Inspector loads and fingerprints)."""

    screening_dir: Path
    segmentation_checkpoint: Path
    rework_rules: Path
    version: str | None = None  # the model version these files are (None: the working copy)

    @classmethod
    def in_version(cls, directory: Path, version: str) -> ModelFiles:
        """The files of a stored version (``versions/<id>/``, same names as the working copy)."""
        return cls(
            directory / "screening",
            directory / "checkpoints" / BEST_CHECKPOINT,
            directory / RULES_FILE,
            version,
        )

    @property
    def segmentation_calibration(self) -> Path:
        """The segmenter's calibration, next to its checkpoint."""
        return self.segmentation_checkpoint.parent / SEGMENTATION_CALIBRATION

    def files(self) -> list[Path]:
        """Every file whose content decides a verdict (hashed into the model fingerprint)."""
        return [
            *(self.screening_dir / name for name in SCREENING_FILES),
            self.segmentation_checkpoint,
            self.rework_rules,
        ]

    def require(self, oring_type: str) -> None:
        """Raise :class:`ModelFileError` for the first missing file, naming the command that makes it."""
        hints = {
            **{
                self.screening_dir / n: f"oringscan train screening --model {oring_type}"
                for n in SCREENING_FILES
            },
            self.segmentation_checkpoint: f"oringscan train segmentation --model {oring_type}",
            self.rework_rules: f"oringscan calibrate rework --model {oring_type}",
        }
        for path, command in hints.items():
            if not path.is_file():
                raise ModelFileError(path, f"model file not found; make it with: {command}")


@dataclass(frozen=True, slots=True)
class TypeWorkspace:
    """One o-ring type's part of the output root."""

    output_root: Path
    oring_type: str
    rules_file: Path | None = None  # [rework] rules_file with {model} expanded, when set

    @classmethod
    def from_config(cls, config: Config, output_root: Path | str, oring_type: str) -> TypeWorkspace:
        """The type's workspace; the type must be one the config knows."""
        config.oring_type(oring_type)
        rules = config.rework.rules_file
        rules_file = Path(str(rules).replace("{model}", oring_type)) if rules is not None else None
        return cls(Path(output_root), oring_type, rules_file)

    # ------------------------------------------------------------------ layout
    @property
    def root(self) -> Path:
        return Path(self.output_root) / self.oring_type

    @property
    def dataset_summary(self) -> Path:
        return self.root / SUMMARY_FILE

    def annotations(self, split: str) -> Path:
        return self.root / "annotations" / f"{split}.json"

    def images_dir(self, split: str) -> Path:
        return self.root / "images" / split

    @property
    def screening_dir(self) -> Path:
        return self.root / "screening"

    @property
    def screening_evaluation_dir(self) -> Path:
        return self.screening_dir / "evaluation"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints_dir / BEST_CHECKPOINT

    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoints_dir / LATEST_CHECKPOINT

    @property
    def segmentation_calibration(self) -> Path:
        return self.checkpoints_dir / SEGMENTATION_CALIBRATION

    @property
    def training_history(self) -> Path:
        return self.root / "training_history.json"

    @property
    def tensorboard_dir(self) -> Path:
        return self.root / "runs"

    @property
    def inference_results(self) -> Path:
        return self.root / "inference_results"

    @property
    def variants_dir(self) -> Path:
        """evaluate compare: screening variants and second stages on the same split (production untouched)."""
        return self.root / "compare"

    @property
    def measurements_dir(self) -> Path:
        """measure: pictures of the measured geometry."""
        return self.root / "measurements"

    def overlays_dir(self, run_folder: str) -> Path:
        """inspect/watch: one run's overlay pictures (``run_folder`` from ``batch.run_folder_name``)."""
        return self.root / "inspections" / run_folder

    @property
    def pipeline_evaluation_dir(self) -> Path:
        """evaluate pipeline: report, confusion, overlays."""
        return self.root / "evaluation" / "pipeline"

    @property
    def rework_rules(self) -> Path:
        return self.rules_file if self.rules_file is not None else self.root / RULES_FILE

    @property
    def working_models(self) -> ModelFiles:
        """The files training writes (the newest models, whichever version is in use)."""
        return ModelFiles(self.screening_dir, self.best_checkpoint, self.rework_rules)

    @property
    def models(self) -> ModelFiles:
        """The models that decide parts: the promoted version when one is, else the working copy."""
        current = self.versions.current()
        return self.versions.files(current) if current is not None else self.working_models

    def models_for(self, version: str | None) -> ModelFiles:
        """A version's files; None: the models in use (:attr:`models`); "working": the working copy."""
        if version is None:
            return self.models
        if version == "working":
            return self.working_models
        return self.versions.files(version)

    @property
    def versions(self) -> ModelVersions:
        return ModelVersions(self)

    # ------------------------------------------------------------------ the data set
    def has_split(self, split: str) -> bool:
        return self.annotations(split).is_file()

    def read_coco(self, split: str) -> dict[str, Any]:
        """The split's COCO document; missing or unreadable is one clear error."""
        path = self.annotations(split)
        if not path.is_file():
            raise ModelFileError(
                path, f"no {split} split; make it with: oringscan preprocess --model {self.oring_type}"
            )
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(path, f"not valid JSON ({exc})") from None
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            raise ModelFileError(path, "not a COCO annotation file (no 'images' list)")
        return coco

    def read_split(self, split: str, class_names: list[str] | None = None) -> list[TileRecord]:
        """The split's tiles with their annotations, in image-id order.

        With ``class_names`` every COCO category must be one of them (its index becomes the
        annotation's 1-based class); without, categories keep their COCO id (screening only asks
        whether a tile holds a defect).
        """
        path = self.annotations(split)
        coco = self.read_coco(split)
        cat_to_index: dict[int, int] = {}
        for cat in coco.get("categories", []):
            if class_names is None:
                cat_to_index[int(cat["id"])] = int(cat["id"])
            elif cat["name"] not in class_names:
                raise LabelError(
                    path,
                    f"category {cat['name']!r} is not in classes.names {class_names}; "
                    "re-run preprocess with this config",
                )
            else:
                cat_to_index[int(cat["id"])] = class_names.index(cat["name"]) + 1
        records: dict[int, TileRecord] = {}
        try:
            for img in coco["images"]:
                records[int(img["id"])] = TileRecord(
                    path=self.tile_path(split, str(img["file_name"])),
                    width=int(img.get("width", 0)),
                    height=int(img.get("height", 0)),
                    source_image=str(img.get("source_image") or ""),
                    tile_x=int(img.get("tile_x", 0)),
                    tile_y=int(img.get("tile_y", 0)),
                    image_id=int(img["id"]),
                )
            for ann in coco.get("annotations", []):
                record = records.get(int(ann["image_id"]))
                if record is None or int(ann.get("iscrowd", 0)):
                    continue
                category = int(ann["category_id"])
                if category not in cat_to_index:
                    raise LabelError(path, f"annotation {ann.get('id')} has unknown category_id {category}")
                record.annotations.append(
                    TileAnnotation(cat_to_index[category], ann["segmentation"], float(ann.get("area", 0)))
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(path, f"not a COCO annotation file ({type(exc).__name__}: {exc})") from None
        return [records[k] for k in sorted(records)]

    def tile_path(self, split: str, file_name: str) -> Path:
        """A tile named in a COCO file: relative to images/<split>/ (as preprocess writes it), to
        the type's folder, or absolute."""
        name = Path(file_name)
        if name.is_absolute():
            return name
        candidates = [
            self.images_dir(split) / name,
            self.root / name,
            self.root / "images" / name,
            self.images_dir(split) / name.name,
        ]
        return next((c for c in candidates if c.is_file()), candidates[0])

    def source_frames(self, split: str, config: Config, data_root: Path | str) -> list[SourceFrame]:
        """The split's source frames under ``data_root``, each with its truth (good or defect) by
        the folder it sits in (or the kind preprocess recorded)."""
        spec = config.oring_type(self.oring_type)
        folders = {spec.good_folder: "good", spec.defect_folder: "defect"}
        out: dict[Path, str] = {}
        for img in self.read_coco(split)["images"]:
            source = img.get("source_image")
            if not source:
                continue
            path = self.source_frame(str(source), data_root)
            kind = folders.get(path.parent.name) or (
                "defect" if img.get("frame_kind") == "defect" else "good"
            )
            out.setdefault(path, kind)
        return [SourceFrame(p, k) for p, k in sorted(out.items())]

    def source_frame(self, source_image: str, data_root: Path | str | None) -> Path:
        """Where a tile's source frame is: absolute, under the data root (or its images/), or the
        path as written when none of them exists (the caller reports it missing)."""
        path = Path(source_image)
        if path.is_absolute():
            return path
        roots = [Path(data_root), Path(data_root) / "images"] if data_root is not None else []
        candidates = [root / path for root in roots] + [self.root / path, path]
        return next((c for c in candidates if c.is_file()), candidates[0])


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One stored snapshot of a type's three models."""

    id: str
    created: str
    note: str
    files: dict[str, str]  # relative path -> sha256

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "note": self.note, "files": self.files}


class ModelVersions:
    """Versions of a type's models under ``versions/``: snapshot, list, promote, roll back.

    Training writes the working copy; :meth:`snapshot` stores it as a new version (``v0001``,
    ``v0002``...). Until a version is promoted the working copy decides parts (a fresh plant trains
    and inspects); once one is, the Inspector loads that version and a retrained model is only a
    candidate until ``oringscan models promote``.
    """

    def __init__(self, workspace: TypeWorkspace) -> None:
        self.workspace = workspace
        self.root = workspace.root / "versions"

    def files(self, version: str) -> ModelFiles:
        directory = self.root / version
        if not (directory / "version.json").is_file():
            raise ModelFileError(directory, f"no model version {version!r} of {self.workspace.oring_type}")
        return ModelFiles.in_version(directory, version)

    def stored(self) -> list[ModelVersion]:
        """Every stored version, oldest first."""
        out = []
        for path in sorted(self.root.glob("v*/version.json")):
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                out.append(ModelVersion(raw["id"], raw["created"], raw.get("note", ""), dict(raw["files"])))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ModelFileError(path, f"not a model version file ({exc})") from None
        return out

    def current(self) -> str | None:
        """The promoted version (None: the working copy decides)."""
        pointer = self.root / CURRENT_POINTER
        if not pointer.is_file():
            return None
        version = pointer.read_text(encoding="utf-8").strip()
        return version or None

    def snapshot(self, note: str = "") -> ModelVersion:
        """Store the working copy as a new version (the newest one again when nothing changed)."""
        import shutil

        from oringscan.timeutil import utc_iso

        working = self.workspace.working_models
        working.require(self.workspace.oring_type)
        sources = {
            **{f"screening/{n}": working.screening_dir / n for n in SCREENING_FILES},
            f"checkpoints/{BEST_CHECKPOINT}": working.segmentation_checkpoint,
            RULES_FILE: working.rework_rules,
        }
        if working.segmentation_calibration.is_file():
            sources[f"checkpoints/{SEGMENTATION_CALIBRATION}"] = working.segmentation_calibration
        digests = {rel: file_sha256(path) for rel, path in sources.items()}
        existing = self.stored()
        if existing and existing[-1].files == digests:
            return existing[-1]
        number = max((int(v.id[1:]) for v in existing if v.id[1:].isdigit()), default=0) + 1
        version = ModelVersion(f"v{number:04d}", utc_iso(), note, digests)
        staging = self.root / f".{version.id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        for rel, path in sources.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / rel)
        (staging / "version.json").write_text(json.dumps(version.to_json(), indent=2), encoding="utf-8")
        staging.replace(self.root / version.id)
        return version

    def promote(
        self, version: str, operator: str = "", reason: str = "", *, action: str = "promote"
    ) -> tuple[str | None, str]:
        """Make ``version`` the one in use (its files checked against version.json); returns
        (previous, new). Recorded in ``versions/history.jsonl`` (``action``: promote or rollback)."""

        from oringscan.timeutil import utc_iso

        stored = {v.id: v for v in self.stored()}
        if version not in stored:
            known = ", ".join(stored) or "none yet (oringscan models snapshot)"
            raise ModelFileError(self.root / version, f"no such model version; stored: {known}")
        for rel, digest in stored[version].files.items():
            path = self.root / version / rel
            if not path.is_file() or file_sha256(path) != digest:
                raise ModelFileError(path, f"version {version} is damaged (file missing or changed)")
        previous = self.current()
        pointer = self.root / CURRENT_POINTER
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(version + "\n", encoding="utf-8")
        tmp.replace(pointer)
        event = {
            "at": utc_iso(),
            "from": previous,
            "to": version,
            "operator": operator,
            "reason": reason,
            "action": action,
        }
        with open(self.root / "history.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")
        return previous, version

    def history(self) -> list[dict[str, Any]]:
        path = self.root / "history.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def rollback(self, operator: str = "", reason: str = "") -> tuple[str | None, str]:
        """Back to the version that was in use before the current one was promoted; rolling back
        twice walks the promotions back twice (a rollback is not a promotion to return to)."""
        current = self.current()
        for event in reversed(self.history()):
            if _history_action(event) != "promote" or event["to"] != current:
                continue
            if event["from"]:
                return self.promote(
                    event["from"], operator, reason or f"rollback from {current}", action="rollback"
                )
            break
        raise ModelFileError(self.root / CURRENT_POINTER, "nothing to roll back to (no earlier promotion)")


def _history_action(event: dict[str, Any]) -> str:
    """A history line's action; lines written before actions were recorded say so in their reason."""
    action = event.get("action")
    if action:
        return str(action)
    return "rollback" if str(event.get("reason", "")).startswith("rollback from") else "promote"


def file_sha256(path: Path) -> str:
    """Content hash of a file, read in 1 MiB pieces (checkpoints are tens of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_db_url(output_root: Path | str) -> str:
    """The inspection database when none is configured: SQLite in the output root, shared by types."""
    return f"sqlite:///{(Path(output_root) / 'inspections.db').as_posix()}"
