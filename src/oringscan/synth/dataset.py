"""A synthetic data set in the plant's layout: images/<folder>/*.bmp, labels/<folder>/*.json.

Every frame has its own child seed (seed, type, kind, index), so frame ``model1_good_0003`` is the
same whether 4 or 400 good frames are asked for. Good frames alternate between no JSON and a JSON
with no shapes (the plant has both). Rework frames go to the type's rework folder (default
``<type>_rework``) with their measured truth in ``<stem>.truth.json`` next to the label; good and
defect truth lives only in ``manifest.json`` so the label folders hold nothing but LabelMe files.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from oringscan.config import Config
from oringscan.errors import ConfigError, OringscanError
from oringscan.frames import write_frame
from oringscan.synth.render import FULL_SIZE, FrameKind, render_frame


class SynthError(OringscanError):
    """The data set cannot be written where asked (one line naming the path)."""


KIND_CODES: dict[str, int] = {"good": 0, "defect": 1, "rework": 2}
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True, slots=True)
class FrameJob:
    """Everything needed to render and write one frame (picklable for worker processes)."""

    oring_type: str
    kind: FrameKind
    index: int
    folder: str
    seed: int
    color_fraction: float
    size: tuple[int, int]

    @property
    def stem(self) -> str:
        return f"{self.oring_type}_{self.kind}_{self.index:04d}"

    def rngs(self) -> tuple[np.random.Generator, np.random.Generator]:
        """The frame's own generator and a separate one for per-frame choices (colour or gray)."""
        key = (zlib.crc32(self.oring_type.encode("utf-8")), KIND_CODES[self.kind], self.index)
        frame_seq = np.random.SeedSequence(self.seed, spawn_key=(*key, 0))
        choice_seq = np.random.SeedSequence(self.seed, spawn_key=(*key, 1))
        return np.random.default_rng(frame_seq), np.random.default_rng(choice_seq)


def rework_folder_for(config: Config, oring_type: str) -> tuple[str, bool]:
    """The type's rework folder and whether it is the ``<type>_rework`` default."""
    folder = config.oring_type(oring_type).rework_folder
    if folder:
        return folder, False
    return f"{oring_type}_rework", True


def _dump_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # LabelMe writes indent=2, ensure_ascii=False, UTF-8.
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def _write_one(out_root: Path, job: FrameJob) -> dict[str, Any]:
    """Render and write one frame; returns its manifest entry."""
    rng, choice = job.rngs()
    color = bool(choice.random() < job.color_fraction)
    with_json = job.kind != "good" or job.index % 2 == 1
    image_rel = Path("images") / job.folder / f"{job.stem}.bmp"
    label_rel = Path("labels") / job.folder / f"{job.stem}.json"
    image_path_in_json = (Path("..") / ".." / image_rel).as_posix()
    frame = render_frame(
        job.kind, rng, oring_type=job.oring_type, color=color, size=job.size, image_path=image_path_in_json
    )
    truth_rel = label_rel.with_name(f"{job.stem}.truth.json") if job.kind == "rework" else None
    target = out_root / image_rel
    try:
        write_frame(target, frame.image)
        if with_json:
            target = out_root / label_rel
            _dump_json(target, frame.labelme)
        if truth_rel is not None:
            target = out_root / truth_rel
            _dump_json(target, frame.truth)
    except OSError as exc:
        raise SynthError(f"{target}: cannot write: {exc.strerror or exc}") from None
    return {
        "stem": job.stem,
        "type": job.oring_type,
        "kind": job.kind,
        "image": image_rel.as_posix(),
        "label": label_rel.as_posix() if with_json else None,
        "truth_file": truth_rel.as_posix() if truth_rel else None,
        "color": color,
        "polarity": frame.truth["polarity"],
        "defects": [d["label"] for d in frame.truth["defects"]],
        "rework_kind": frame.truth["rework"]["kind"] if frame.truth["rework"] else None,
        "truth": frame.truth,
    }


def _write_one_star(args: tuple[Path, FrameJob]) -> dict[str, Any]:
    return _write_one(*args)


def plan_jobs(
    config: Config,
    types: Sequence[str],
    n_good: int,
    n_defect: int,
    n_rework: int,
    seed: int,
    color_fraction: float,
    size: tuple[int, int] = FULL_SIZE,
) -> list[FrameJob]:
    jobs: list[FrameJob] = []
    for oring_type in types:
        spec = config.oring_type(oring_type)
        rework_folder, _ = rework_folder_for(config, oring_type)
        for kind, count, folder in (
            ("good", n_good, spec.good_folder),
            ("defect", n_defect, spec.defect_folder),
            ("rework", n_rework, rework_folder),
        ):
            jobs.extend(
                FrameJob(oring_type, kind, i, folder, seed, color_fraction, size) for i in range(count)
            )
    return jobs


def synthesize_dataset(
    out_root: Path,
    config: Config | None = None,
    types: Sequence[str] = ("model1", "model2"),
    n_good: int = 20,
    n_defect: int = 10,
    n_rework: int = 4,
    seed: int = 42,
    color_fraction: float = 0.25,
    progress: bool = True,
    *,
    workers: int = 1,
    size: tuple[int, int] = FULL_SIZE,
) -> dict[str, Any]:
    """Write a synthetic data set under ``out_root`` and return its summary (also in manifest.json).

    ``workers`` > 1 renders in that many processes; the files are identical either way.
    """
    config = config or Config()
    out_root = Path(out_root)
    types = list(types)
    if not types:
        raise ConfigError("synth: no o-ring types given")
    for name in types:
        config.oring_type(name)  # clear error for an unknown type
    for name, value in (("good", n_good), ("defect", n_defect), ("rework", n_rework)):
        if value < 0:
            raise ConfigError(f"synth: --{name} must be >= 0 (got {value})")
    if not 0.0 <= color_fraction <= 1.0:
        raise ConfigError(f"synth: colour fraction must be between 0 and 1 (got {color_fraction})")
    if out_root.exists() and not out_root.is_dir():
        raise SynthError(f"{out_root}: exists and is not a folder; give a folder for the synthetic data set")
    jobs = plan_jobs(config, types, n_good, n_defect, n_rework, seed, color_fraction, size)
    start = time.perf_counter()
    entries: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="synth frames", unit="frame", disable=not progress)
    try:
        for entry in _run_jobs(out_root, jobs, workers):
            entries.append(entry)
            bar.update(1)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    type_summary: dict[str, Any] = {}
    for name in types:
        spec = config.oring_type(name)
        rework_folder, is_default = rework_folder_for(config, name)
        mine = [e for e in entries if e["type"] == name]
        type_summary[name] = {
            "folders": {"good": spec.good_folder, "defect": spec.defect_folder, "rework": rework_folder},
            "rework_folder_is_default": is_default,
            "frames": dict(Counter(e["kind"] for e in mine)),
        }
    labels = Counter(label for e in entries for label in e["defects"])
    summary: dict[str, Any] = {
        "generator": "oringscan.synth",
        "out_root": str(out_root),
        "seed": seed,
        "size": list(size),
        "color_fraction": color_fraction,
        "frames": len(entries),
        "color_frames": sum(e["color"] for e in entries),
        "dark_polarity_frames": sum(e["polarity"] == "dark" for e in entries),
        "defects_by_label": dict(sorted(labels.items())),
        "rework_by_kind": dict(Counter(e["rework_kind"] for e in entries if e["rework_kind"])),
        "types": type_summary,
        "seconds": round(seconds, 3),
        "frames_per_s": round(len(entries) / seconds, 3) if seconds > 0 else None,
        "manifest": MANIFEST_NAME,
    }
    manifest = {k: v for k, v in summary.items() if k not in ("seconds", "frames_per_s", "out_root")}
    manifest["entries"] = entries
    _dump_json(out_root / MANIFEST_NAME, manifest)
    return summary


def _run_jobs(out_root: Path, jobs: list[FrameJob], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield _write_one(out_root, job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_one_star, [(out_root, job) for job in jobs], chunksize=1)
