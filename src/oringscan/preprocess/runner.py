"""Frames + LabelMe labels of one o-ring type -> 640 px ring tiles and COCO train/val/test files.

Each frame is handled end to end by one worker process (read, labels, ring ROI, the shared tile
grid, clipping, tile images), so both cores stay busy and a broken file only costs its own frame:
it is recorded with its reason and the batch goes on. The split is drawn over the frames that
made it, then everything is moved into place from a staging folder, so a re-run (or a crash)
never leaves old and new tiles mixed.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from shapely.errors import ShapelyError
from tqdm import tqdm

from oringscan.config import Config
from oringscan.errors import FrameError, LabelError, OringscanError, one_line, path_text
from oringscan.frames import read_frame
from oringscan.preprocess.coco import coco_document, tile_annotations, write_json_atomic
from oringscan.preprocess.labelme import LabelInstance, load_instances
from oringscan.preprocess.split import SPLITS, split_frames
from oringscan.roi import RoiStatus, find_ring
from oringscan.tiling import ring_tiles_and_keep
from oringscan.workspace import SUMMARY_FILE as WORKSPACE_SUMMARY_FILE
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

STAGING_DIR = ".preprocess-staging"
SUMMARY_FILE = WORKSPACE_SUMMARY_FILE
# Defect size histogram: longest side of each labelled defect's bounding box, frame pixels.
SIZE_BIN_EDGES = (0, 4, 8, 16, 32, 64, 128, 256, 512)
# Files that file managers leave in folders; not worth a warning.
IGNORED_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}


class DatasetError(OringscanError):
    """A data set that cannot be preprocessed at all (missing folders, no frames)."""


@dataclass(frozen=True, slots=True)
class FrameJob:
    """One frame to convert, as found on disk."""

    image_path: Path
    label_path: Path | None  # None: no LabelMe file (a good frame)
    source_image: str  # posix path relative to the data root
    kind: str  # "good" or "defect": which configured folder it came from
    tile_prefix: str  # unique per frame; tile file names start with it


@dataclass(slots=True)
class FrameOutcome:
    """What one frame produced, small enough to send back from a worker."""

    source_image: str
    kind: str
    error: str | None = None  # why the frame was not used
    error_file: str | None = None  # the file at fault (the frame or its label file), data-root relative
    warnings: list[str] = field(default_factory=list)
    tiles: list[dict[str, Any]] = field(default_factory=list)  # COCO image records + "annotations"
    skipped_tiles: int = 0
    slivers: int = 0
    outside_tiles: int = 0
    instances: list[tuple[str, float, float]] = field(default_factory=list)  # class, longest side, area


# --- finding the frames ---------------------------------------------------------------------

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def entry_problem(path: Path) -> str | None:
    """Why a folder entry is no file to read (None: a regular file, symlinks followed).

    Only stats, never opens: opening a FIFO would block the whole batch.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (the link points back at itself); skipped"
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"dangling symbolic link (points to {path_text(os.readlink(path))}, which does not exist); skipped"
        return f"cannot be read ({exc.strerror or exc}); skipped"
    if stat.S_ISDIR(info.st_mode):
        if os.path.islink(path):
            return "symbolic link to a folder: not followed (copy or move the frames into the folder)"
        return (
            f"a folder named like a {path.suffix} file, not a frame (what is inside it is searched as usual)"
        )
    if not stat.S_ISREG(info.st_mode):
        return f"{_KINDS.get(stat.S_IFMT(info.st_mode), 'not a regular file')}, not a frame file; skipped"
    return None


def discover_frames(
    config: Config, data_root: Path, oring_type: str
) -> tuple[list[FrameJob], list[dict[str, str]], list[str]]:
    """Frames of one type with their label files; plus skipped files and folder-level warnings."""
    oring = config.oring_type(oring_type)
    jobs: list[FrameJob] = []
    skipped: list[dict[str, str]] = []
    warnings: list[str] = []
    extensions = {e.lower() for e in config.frame.extensions}
    folders = [(oring.good_folder, "good"), (oring.defect_folder, "defect")]
    missing = [data_root / "images" / f for f, _ in folders if not (data_root / "images" / f).is_dir()]
    if len(missing) == len(folders):
        raise DatasetError(
            f"{path_text(data_root)}: no frames for {oring_type}: neither "
            + " nor ".join(f"images/{f}" for f, _ in folders)
            + " exists (folders come from the config's [types] section)"
        )
    rework_dir = data_root / "images" / (oring.rework_folder or f"{oring_type}_rework")
    if rework_dir.is_dir():
        n_rework = sum(1 for p in rework_dir.rglob("*") if p.suffix.lower() in extensions)
        if n_rework:
            warnings.append(
                f"{rework_dir}: {n_rework} rework frame(s) left out: rework is judged by geometry, never trained on"
            )
    for folder, kind in folders:
        images_dir = data_root / "images" / folder
        labels_dir = data_root / "labels" / folder
        if not images_dir.is_dir():
            warnings.append(f"{images_dir}: folder not found; no {kind} frames for {oring_type}")
            continue
        used_stems: dict[str, str] = {}
        for path in sorted(images_dir.rglob("*")):
            rel = path.relative_to(images_dir)
            source = (Path("images") / folder / rel).as_posix()
            if path.name.lower() in IGNORED_NAMES or path.name.startswith("."):
                continue
            suffix = path.suffix.lower()
            if path.is_dir() and not path.is_symlink() and suffix not in extensions and suffix != ".json":
                continue  # an ordinary sub-folder: rglob searches it
            problem = entry_problem(path)
            if problem is not None:
                skipped.append({"file": path_text(source), "reason": problem})
                continue
            if suffix == ".json":
                continue  # LabelMe's default: labels beside the images; paired below
            if suffix not in extensions:
                skipped.append(
                    {
                        "file": path_text(source),
                        "reason": f"not a frame file type ({', '.join(sorted(extensions))})",
                    }
                )
                continue
            stem_key = rel.with_suffix("").as_posix()
            if stem_key in used_stems:
                skipped.append(
                    {
                        "file": path_text(source),
                        "reason": f"another frame with the same name ({path_text(used_stems[stem_key])}) "
                        "is used; labels are matched by name",
                    }
                )
                continue
            used_stems[stem_key] = source
            label_path: Path | None = labels_dir / rel.with_suffix(".json")
            if not os.path.lexists(label_path):
                beside = path.with_suffix(".json")
                label_path = beside if os.path.lexists(beside) else None
            if label_path is not None and (problem := entry_problem(label_path)) is not None:
                rel_label = label_path.relative_to(data_root).as_posix()
                skipped.append(
                    {
                        "file": path_text(rel_label),
                        "frame": path_text(source),
                        "reason": f"label file: {problem}",
                    }
                )
                continue
            # Tile names are ours: a name that is not valid UTF-8 gets its bytes written as \xNN.
            prefix = path_text(f"{folder}__" + "__".join(rel.with_suffix("").parts))
            jobs.append(FrameJob(path, label_path, source, kind, prefix))
        for label_dir in (labels_dir, images_dir):
            if not label_dir.is_dir():
                continue
            for json_path in sorted(label_dir.rglob("*.json")):
                stem_key = json_path.relative_to(label_dir).with_suffix("").as_posix()
                if stem_key not in used_stems:
                    rel_label = json_path.relative_to(data_root).as_posix()
                    if label_dir == images_dir and (
                        entry_problem(json_path) is not None or json_path.is_dir()
                    ):
                        continue  # reported above with the frames
                    problem = entry_problem(json_path)
                    reason = (
                        f"label file without image: no frame images/{folder}/{stem_key}.* to go with it"
                        if problem is None
                        else f"label file: {problem}"
                    )
                    skipped.append({"file": path_text(rel_label), "reason": path_text(reason)})
    return jobs, skipped, warnings


# --- one frame, in a worker -------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(config: Config, data_root: str, tiles_dir: str, single_thread: bool) -> None:
    """Per-process state: the config and where tiles go; one OpenCV thread per process."""
    if single_thread:
        cv2.setNumThreads(1)
    _WORKER["config"] = config
    _WORKER["data_root"] = Path(data_root)
    _WORKER["tiles_dir"] = Path(tiles_dir)
    _WORKER["category_ids"] = {name: i for i, name in enumerate(config.classes.names, start=1)}


def _relative(path: Path | None, data_root: Path) -> str:
    if path is None:
        return ""
    try:
        return path.relative_to(data_root).as_posix()
    except ValueError:
        return str(path)


def _process_job(job: FrameJob) -> FrameOutcome:
    data_root = _WORKER["data_root"]
    try:
        return process_frame(job, _WORKER["config"], data_root, _WORKER["tiles_dir"], _WORKER["category_ids"])
    except (FrameError, LabelError) as exc:
        return FrameOutcome(
            job.source_image, job.kind, error=exc.problem, error_file=_relative(exc.path, data_root)
        )
    except OringscanError as exc:
        return FrameOutcome(job.source_image, job.kind, error=str(exc), error_file=job.source_image)
    except OSError as exc:  # unreadable (permissions, I/O error, removed meanwhile): this frame only
        where = _relative(Path(exc.filename), data_root) if exc.filename else job.source_image
        return FrameOutcome(
            job.source_image, job.kind, error=f"cannot be read ({exc.strerror or exc})", error_file=where
        )
    except (ValueError, cv2.error, ShapelyError, MemoryError, RecursionError) as exc:  # too odd for a library
        return FrameOutcome(
            job.source_image,
            job.kind,
            error=f"{type(exc).__name__}: {one_line(str(exc))}",
            error_file=job.source_image,
        )
    except Exception as exc:  # noqa: BLE001 - whatever else breaks one frame must not stop the batch
        log.debug("unexpected error on %s", path_text(job.source_image), exc_info=True)
        return FrameOutcome(
            job.source_image,
            job.kind,
            error=f"unexpected {type(exc).__name__}: {one_line(str(exc))}",
            error_file=job.source_image,
        )


def process_frame(
    job: FrameJob, config: Config, data_root: Path, tiles_dir: Path, category_ids: dict[str, int]
) -> FrameOutcome:
    """Read, label, find the ring, tile, clip and write one frame's tiles.

    Raises FrameError/LabelError for a frame that cannot be used; warnings name files relative to
    ``data_root``.
    """
    outcome = FrameOutcome(job.source_image, job.kind)
    frame = read_frame(job.image_path, config.frame)
    if frame.scale != 1.0 or any("unexpected size" in n for n in frame.notes):
        outcome.warnings.extend(f"{job.source_image}: {note}" for note in frame.notes if "colour" not in note)
    instances: list[LabelInstance] = []
    label_name = _relative(job.label_path, data_root)
    if job.label_path is not None:
        instances, label_warnings = load_instances(
            job.label_path, frame.image.shape, config.classes, image_name=job.source_image
        )
        prefix = str(job.label_path)
        outcome.warnings.extend(
            label_name + w[len(prefix) :] if w.startswith(prefix) else w for w in label_warnings
        )
    if job.kind == "good" and instances:
        outcome.warnings.append(
            f"{label_name}: a frame in the good folder with {len(instances)} labelled defect(s); used as a defect frame"
        )
    if job.kind == "defect" and not instances:
        why = "no label file" if job.label_path is None else f"no usable shapes in {label_name}"
        raise FrameError(
            job.image_path,
            f"defect frame with {why}; skipped so that unlabelled defects are not learned as good",
        )
    roi = find_ring(frame.image, config.roi)
    if not roi.usable:
        raise FrameError(
            job.image_path, f"no single ring found ({roi.status}: {roi.reason}); frame not tiled"
        )
    if roi.status is not RoiStatus.OK:
        outcome.warnings.append(f"{job.source_image}: ring {roi.status}: {roi.reason}; tiled anyway")
    tiles, outcome.skipped_tiles, keep = ring_tiles_and_keep(frame.image, roi, config)
    if not tiles:
        raise FrameError(job.image_path, "no tile of the grid contains ring; frame not tiled")
    outcome.instances = [(inst.class_name, inst.longest_side, inst.area) for inst in instances]
    fmt = config.preprocess.tile_format
    records = []
    for tile in tiles:
        b = tile.box
        clipped = tile_annotations(instances, b, category_ids, config.preprocess.min_instance_area)
        outcome.slivers += clipped.slivers
        file_name = f"{job.tile_prefix}__x{b.x:04d}_y{b.y:04d}.{fmt}"
        _write_tile(tiles_dir / file_name, tile.image)
        records.append(
            {
                "file_name": file_name,
                "width": b.w,
                "height": b.h,
                "source_image": job.source_image,
                "tile_x": b.x,
                "tile_y": b.y,
                "frame_kind": "defect" if instances else "good",
                "ring_fraction": round(tile.ring_fraction, 4),
                "annotations": clipped.annotations,
            }
        )
    outcome.tiles = records
    if instances:
        # Labelled pixels in no tile, or blanked as background in every tile that holds them.
        covered = np.zeros(frame.image.shape[:2], bool)
        for t in tiles:
            covered[t.box.slices()] = True
        if keep is not None:
            covered &= keep
        for k, inst in enumerate(instances):
            pixels, ox, oy = inst.pixels()
            inside = covered[oy : oy + pixels.shape[0], ox : ox + pixels.shape[1]]
            total = int(np.count_nonzero(pixels))
            missing = total - int(np.count_nonzero(pixels & inside))
            if missing > 0:
                outcome.outside_tiles += 1
                outcome.warnings.append(
                    f"{label_name}: instance {k} ({inst.label!r}, shapes {list(inst.shape_indices)}) has "
                    f"{missing} of {total} px outside the ring's tiles or blanked as belt (label off the ring?)"
                )
    return outcome


def _write_tile(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"{path}: could not encode tile")
    buf.tofile(path)


def _run_jobs(
    jobs: Sequence[FrameJob],
    config: Config,
    data_root: Path,
    tiles_dir: Path,
    workers: int,
    progress: bool,
    desc: str,
) -> Iterator[FrameOutcome]:
    bar = tqdm(total=len(jobs), desc=desc, unit="frame", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(jobs) <= 1:
            _init_worker(config, str(data_root), str(tiles_dir), single_thread=False)
            for job in jobs:
                yield _process_job(job)
                bar.update()
            return
        # spawn: identical on Linux and Windows, and safe when the caller has torch threads running.
        context = multiprocessing.get_context("spawn")
        chunksize = max(1, min(8, len(jobs) // (workers * 4)))
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(config, str(data_root), str(tiles_dir), True),
        ) as pool:
            for outcome in pool.map(_process_job, jobs, chunksize=chunksize):
                yield outcome
                bar.update()
    finally:
        bar.close()


# --- one o-ring type ----------------------------------------------------------------------------


def preprocess_type(
    config: Config,
    data_root: Path | str,
    output_root: Path | str,
    oring_type: str,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Any]:
    """Convert one o-ring type's frames and labels to tiles + COCO; returns the data set summary.

    Writes ``output/<model>/annotations/{train,val,test}.json``, ``images/{train,val,test}/`` and
    ``dataset_summary.json``, replacing what a previous run left there (nothing else in
    ``output/<model>/`` is touched).
    """
    data_root, output_root = Path(data_root), Path(output_root)
    config.oring_type(oring_type)
    if not data_root.is_dir():
        raise DatasetError(
            f"{path_text(data_root)}: data root not found (expected images/<folder>/ and labels/<folder>/ in it)"
        )
    jobs, skipped, warnings = discover_frames(config, data_root, oring_type)
    if not jobs:
        oring = config.oring_type(oring_type)
        raise DatasetError(
            f"{path_text(data_root)}: no frames for {oring_type} in images/{oring.good_folder} "
            f"or images/{oring.defect_folder} "
            f"(extensions {', '.join(config.frame.extensions)})"
        )
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    out_dir = workspace.root
    staging = out_dir / STAGING_DIR  # built in the workspace layout, then moved in place
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    tiles_dir = staging / "tiles"
    tiles_dir.mkdir(parents=True)
    try:
        outcomes = list(
            _run_jobs(
                jobs,
                config,
                data_root,
                tiles_dir,
                workers or config.preprocess.workers,
                progress,
                f"preprocess {oring_type}",
            )
        )
        summary = _assemble(config, oring_type, data_root, out_dir, staging, outcomes, skipped, warnings)
        for name in ("images", "annotations"):
            target = out_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
        write_json_atomic(workspace.dataset_summary, summary, indent=2)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "%s: %d frames used, %d tiles", oring_type, summary["frames"]["used"], summary["tiles"]["written"]
    )
    return summary


def preprocess_all(
    config: Config,
    data_root: Path | str,
    output_root: Path | str,
    oring_type: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every configured type (or just ``model``); a type whose folders are missing gets an
    ``error`` entry instead of stopping the others (an explicitly named type raises)."""
    summaries: dict[str, dict[str, Any]] = {}
    for name in config.select_types(oring_type):
        try:
            summaries[name] = preprocess_type(config, data_root, output_root, name, progress, workers)
        except DatasetError as exc:
            if oring_type is not None:
                raise
            summaries[name] = {"model": name, "error": str(exc)}
    return summaries


def _assemble(
    config: Config,
    oring_type: str,
    data_root: Path,
    out_dir: Path,
    staging: Path,
    outcomes: list[FrameOutcome],
    skipped: list[dict[str, str]],
    warnings: list[str],
) -> dict[str, Any]:
    """Split the frames, move tiles into their split folders, write COCO files, build the summary."""
    used = [o for o in outcomes if o.error is None]
    # Names as printable text (a file name that is not valid UTF-8 shows its odd bytes as \xNN).
    skipped = skipped + [
        {
            "file": path_text(o.error_file or o.source_image),
            "frame": path_text(o.source_image),
            "reason": path_text(o.error),
        }
        for o in outcomes
        if o.error is not None
    ]
    warnings = [path_text(w) for w in warnings] + [path_text(w) for o in outcomes for w in o.warnings]
    strata = {o.source_image: "defect" if (o.kind == "defect" or o.instances) else "good" for o in used}
    assignment = split_frames(strata, config.split)
    class_names = list(config.classes.names)
    names_by_id = dict(enumerate(class_names, start=1))

    images: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    annotations: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    frames_per_split = {s: Counter() for s in SPLITS}
    labelled = {c: Counter() for c in class_names}
    annotated = {c: Counter() for c in class_names}
    tiles_with_defects: Counter[str] = Counter()
    for s in SPLITS:
        (staging / "images" / s).mkdir(parents=True, exist_ok=True)
    for outcome in used:
        split = assignment[outcome.source_image]
        frames_per_split[split][strata[outcome.source_image]] += 1
        for class_name, _, _ in outcome.instances:
            labelled[class_name][split] += 1
        for record in outcome.tiles:
            image = {k: v for k, v in record.items() if k != "annotations"}
            image["id"] = len(images[split]) + 1
            images[split].append(image)
            os.replace(
                staging / "tiles" / image["file_name"], staging / "images" / split / image["file_name"]
            )
            if record["annotations"]:
                tiles_with_defects[split] += 1
            for ann in record["annotations"]:
                annotations[split].append({"id": len(annotations[split]) + 1, "image_id": image["id"], **ann})
                annotated[names_by_id[ann["category_id"]]][split] += 1

    info = {
        "description": f"oringscan {oring_type}: {config.tiling.tile_size} px ring tiles, split by source frame",
        "tile_size": config.tiling.tile_size,
        "overlap": config.tiling.overlap,
        "data_root": str(data_root),
    }
    for s in SPLITS:
        coco = coco_document(images[s], annotations[s], class_names, {**info, "split": s})
        write_json_atomic(staging / "annotations" / f"{s}.json", coco)

    edges = list(SIZE_BIN_EDGES)
    histogram = {}
    for c in class_names:
        sizes = [side for o in used for cls, side, _ in o.instances if cls == c]
        counts, _ = np.histogram(sizes, bins=[*edges, np.inf])
        histogram[c] = [int(n) for n in counts]
    kinds = ("good", "defect")
    found_by_kind = Counter(o.kind for o in outcomes)
    used_by_kind = Counter(o.kind for o in used)
    return {
        "model": oring_type,
        "data_root": path_text(data_root),
        "output": path_text(out_dir),
        "settings": {
            "tile_size": config.tiling.tile_size,
            "overlap": config.tiling.overlap,
            "min_ring_fraction": config.tiling.min_ring_fraction,
            "min_instance_area": config.preprocess.min_instance_area,
            "tile_format": config.preprocess.tile_format,
            "split": config.split.model_dump(),
            "classes": class_names,
        },
        "frames": {
            "found": len(outcomes),
            "used": len(used),
            "skipped": len(outcomes) - len(used),
            "by_folder_kind": {k: {"found": found_by_kind[k], "used": used_by_kind[k]} for k in kinds},
            "per_split": {s: {k: frames_per_split[s][k] for k in kinds} for s in SPLITS},
        },
        "tiles": {
            "written": sum(len(images[s]) for s in SPLITS),
            "per_split": {s: len(images[s]) for s in SPLITS},
            "with_defects_per_split": {s: tiles_with_defects[s] for s in SPLITS},
            "skipped_without_ring": sum(o.skipped_tiles for o in used),
        },
        "instances": {
            "labelled": sum(len(o.instances) for o in used),
            "per_class_and_split": {c: {s: labelled[c][s] for s in SPLITS} for c in class_names},
            "tile_annotations_per_class_and_split": {
                c: {s: annotated[c][s] for s in SPLITS} for c in class_names
            },
            "slivers_dropped": sum(o.slivers for o in used),
            "outside_ring_tiles": sum(o.outside_tiles for o in used),
        },
        "defect_size_histogram": {
            "measure": "longest side of each labelled defect's bounding box, frame pixels",
            "bin_edges": [*edges, None],
            "per_class": histogram,
        },
        "skipped": skipped,
        "warnings": warnings,
    }
