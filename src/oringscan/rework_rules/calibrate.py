"""Limits from good parts, the plant's way: mean +/- k standard deviations per metric.

Hand edits are the quality engineer's, never calibration's to undo: ``source = "manual"`` rules are
left exactly as they are, and a calibrated rule whose limits differ from what the last calibration
wrote (its ``calibrated`` record) was edited by hand, so it is kept and becomes ``manual``. Either
way the report says what calibration would have set instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from oringscan.config import Config, ReworkConfig
from oringscan.errors import FrameError, OringscanError
from oringscan.frames import iter_image_files, read_frame
from oringscan.rework_rules.checker import ReworkChecker
from oringscan.rework_rules.metrics import ALL_METRICS, METRICS, mm_name
from oringscan.rework_rules.rules import (
    CalibrationRecord,
    Rule,
    RulesFile,
    RulesMeta,
    load_rules,
    rounded,
    save_rules,
)

log = logging.getLogger(__name__)

MIN_FRAMES = 3
Change = Literal["added", "updated", "unchanged", "kept-manual", "kept-hand-edited", "removed"]


class CalibrationError(OringscanError):
    pass


@dataclass(slots=True)
class RuleChange:
    metric: str
    verdict: str
    change: Change
    old: tuple[float | None, float | None] | None = None
    new: tuple[float | None, float | None] | None = None
    suggested: tuple[float | None, float | None] | None = None
    note: str = ""


@dataclass(slots=True)
class CalibrationReport:
    rules_path: Path | None
    rules: RulesFile
    changes: list[RuleChange]
    source: str
    frames_used: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: bool = False

    @property
    def kept_edits(self) -> list[RuleChange]:
        return [c for c in self.changes if c.change in ("kept-manual", "kept-hand-edited")]


def rules_path_for(config: Config, output_root: Path, model: str) -> Path:
    """Where a type's rules live: ``config.rework.rules_file`` ({model} expands) or output/<model>/."""
    if config.rework.rules_file is not None:
        return Path(str(config.rework.rules_file).replace("{model}", model))
    return Path(output_root) / model / "rework_rules.toml"


def training_good_frames(config: Config, data_root: Path, output_root: Path, model: str) -> tuple[list[Path], str]:
    """Good frames of the training split when one exists, else every frame in the good folder.

    The split is read from the ``source_image`` fields of output/<model>/annotations/train.json;
    a frame counts as good when it sits in the type's good folder.
    """
    otype = config.oring_type(model)
    data_root, output_root = Path(data_root), Path(output_root)
    good_dir = data_root / "images" / otype.good_folder
    train_json = output_root / model / "annotations" / "train.json"
    if train_json.is_file():
        try:
            coco = json.loads(train_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{train_json}: not valid JSON: {exc}") from None
        sources = sorted({img["source_image"] for img in coco.get("images", []) if img.get("source_image")})
        if sources:
            frames, found = [], 0
            for src in sources:
                path = _resolve_source(Path(src), data_root, output_root / model, good_dir)
                found += path is not None and path.is_file()
                if path is not None and _in_folder(path, good_dir, otype.good_folder):
                    frames.append(path)
            if found == 0:
                raise CalibrationError(
                    f"{train_json}: none of its {len(sources)} source images exist under the data root {data_root} "
                    "(pass the --data that preprocess used)"
                )
            return frames, f"{len(frames)} good frames of the training split ({train_json})"
        log.warning("%s: no source_image fields; using all good frames in %s", train_json, good_dir)
    if not good_dir.is_dir():
        raise CalibrationError(f"{good_dir}: good folder of {model!r} not found (and no training split at {train_json})")
    frames = iter_image_files([good_dir], config.frame)
    return frames, f"all {len(frames)} frames in the good folder {good_dir} (no training split at {train_json})"


def _resolve_source(src: Path, data_root: Path, type_out: Path, good_dir: Path) -> Path | None:
    candidates = [src] if src.is_absolute() else [data_root / src, data_root / "images" / src, type_out / src, good_dir / src.name, src]
    for cand in candidates:
        if cand.is_file():
            return cand
    return candidates[0] if src.is_absolute() else None


def _in_folder(path: Path, good_dir: Path, good_folder: str) -> bool:
    try:
        path.resolve().relative_to(good_dir.resolve())
        return True
    except ValueError:
        return path.parent.name == good_folder


def measure_frames(
    frames: Sequence[Path], config: Config, model: str, progress: bool = True
) -> tuple[list[dict[str, float]], list[tuple[str, str]]]:
    """Metrics of each measurable frame; the others are listed with their reason."""
    checker = ReworkChecker(RulesFile(), mm_per_px=config.oring_type(model).mm_per_px, config=config.rework, roi_config=config.roi)
    values: list[dict[str, float]] = []
    skipped: list[tuple[str, str]] = []
    for path in tqdm(frames, desc=f"measuring good {model} frames", unit="frame", disable=not progress):
        try:
            gray = read_frame(path, config.frame).image
        except FrameError as exc:
            skipped.append((str(path), exc.problem))
            continue
        report = checker.inspect(gray)
        if report.measurement is None:
            skipped.append((str(path), "; ".join(report.result.reasons)))
            continue
        values.append(report.measurement.values)
    return values, skipped


def _margin_floor(name: str, cfg: ReworkConfig, mm_per_px: float | None, mean_radius: float) -> float:
    info = ALL_METRICS[name]
    scale = mm_per_px if name not in METRICS and mm_per_px else 1.0
    if info.kind == "length":
        return cfg.min_margin_px * scale
    if info.kind == "area":
        return 2 * math.pi * mean_radius * cfg.min_margin_px * scale * scale
    if info.kind == "percent":
        return cfg.min_margin_percent
    return cfg.min_margin_ratio


def effective_k(cfg: ReworkConfig, n: int) -> float:
    """k widened for a small calibration set (a prediction interval with the same coverage).

    mean +/- k*s from n samples underestimates the spread of the next part; for large n this is k.
    """
    if not cfg.small_sample_correction or n < 3:
        return cfg.k_sigma
    from scipy import stats

    coverage = stats.norm.cdf(cfg.k_sigma)
    return float(stats.t.ppf(coverage, df=n - 1) * math.sqrt(1.0 + 1.0 / n))


def limits_from_values(
    values: Sequence[dict[str, float]], cfg: ReworkConfig, mm_per_px: float | None = None
) -> list[Rule]:
    """One calibrated rule per calibrated metric (millimetre names when ``mm_per_px`` is set)."""
    if len(values) < MIN_FRAMES:
        raise CalibrationError(f"need at least {MIN_FRAMES} measurable good frames to calibrate, got {len(values)}")
    mean_radius = float(np.mean([v["mean_radius"] for v in values]))
    rules: list[Rule] = []
    for base, info in METRICS.items():
        if info.side is None:
            continue
        name = mm_name(base) if (mm_per_px and info.kind in ("length", "area")) else base
        data = np.array([v[name] for v in values if math.isfinite(v.get(name, math.nan))], dtype=np.float64)
        if len(data) < MIN_FRAMES:
            continue
        mean, std = float(data.mean()), float(data.std(ddof=1))
        margin = max(effective_k(cfg, len(data)) * std, _margin_floor(name, cfg, mm_per_px, mean_radius))
        lower = mean - margin if info.side in ("both", "lower") else None
        upper = mean + margin if info.side in ("both", "upper") else None
        if base.endswith(("_protrusion_px", "_indentation_px")) and upper is not None:
            floor = cfg.min_excursion_limit_px * (mm_per_px if name != base else 1.0)
            upper = max(upper, floor)  # flash and bites are absolute: never tighter than this
        lower, upper = rounded(lower), rounded(upper)
        record = CalibrationRecord(lower=lower, upper=upper, mean=rounded(mean), std=rounded(std), n=len(data))
        rules.append(Rule(metric=name, lower=lower, upper=upper, verdict=info.verdict, message=info.reason, source="calibrated", calibrated=record))
    return rules


def merge_rules(previous: RulesFile | None, calibrated: Iterable[Rule]) -> tuple[list[Rule], list[RuleChange]]:
    """New calibrated rules merged with the previous file; hand edits kept, every change listed."""
    new_by_key = {(r.metric, r.verdict): r for r in calibrated}
    out: list[Rule] = []
    changes: list[RuleChange] = []
    blocked: set[tuple[str, str]] = set()
    for old in previous.rule if previous else []:
        key = (old.metric, old.verdict)
        new = new_by_key.get(key)
        suggested = None if new is None else (new.lower, new.upper)
        limits = (old.lower, old.upper)
        if old.source == "manual":
            out.append(old)
            blocked.add(key)
            note = "manual rule kept as it is" + (f"; calibration would set {_span(suggested)}" if suggested else "")
            changes.append(RuleChange(old.metric, old.verdict, "kept-manual", limits, limits, suggested, note))
        elif old.hand_edited:
            kept = old.model_copy(update={"source": "manual"})
            out.append(kept)
            blocked.add(key)
            was = (old.calibrated.lower, old.calibrated.upper) if old.calibrated else None
            note = f"hand-edited (calibration had written {_span(was)}): kept, now source = manual"
            if suggested:
                note += f"; calibration would set {_span(suggested)}"
            changes.append(RuleChange(old.metric, old.verdict, "kept-hand-edited", limits, limits, suggested, note))
        elif new is None:
            changes.append(RuleChange(old.metric, old.verdict, "removed", limits, None, None, "metric no longer calibrated"))
        # plain calibrated rules are replaced below
    for key, new in new_by_key.items():
        if key in blocked:
            continue
        prev = next((r for r in (previous.rule if previous else []) if (r.metric, r.verdict) == key), None)
        out.append(new)
        if prev is None:
            changes.append(RuleChange(new.metric, new.verdict, "added", None, (new.lower, new.upper)))
        else:
            same = prev.lower == new.lower and prev.upper == new.upper
            changes.append(RuleChange(new.metric, new.verdict, "unchanged" if same else "updated", (prev.lower, prev.upper), (new.lower, new.upper)))
    order = {name: i for i, name in enumerate(ALL_METRICS)}
    out.sort(key=lambda r: order.get(r.metric, len(order)))
    changes.sort(key=lambda c: order.get(c.metric, len(order)))
    return out, changes


def _span(limits: tuple[float | None, float | None] | None) -> str:
    if limits is None:
        return "-"
    lo, up = limits
    return f"{'-inf' if lo is None else f'{lo:.6g}'} .. {'+inf' if up is None else f'{up:.6g}'}"


def calibrate_from_values(
    values: Sequence[dict[str, float]],
    config: Config,
    model: str,
    rules_path: Path | None = None,
    source: str = "",
    skipped: Sequence[tuple[str, str]] = (),
    write: bool = True,
) -> CalibrationReport:
    """Calibrate from already measured good parts (merging with ``rules_path`` if it exists)."""
    mm_per_px = config.oring_type(model).mm_per_px
    calibrated = limits_from_values(values, config.rework, mm_per_px)
    previous = load_rules(rules_path) if rules_path is not None and rules_path.is_file() else None
    merged, changes = merge_rules(previous, calibrated)
    meta = RulesMeta(
        model=model,
        k_sigma=config.rework.k_sigma,
        calibrated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=source or None,
        n_frames=len(values),
    )
    rules = RulesFile(meta=meta, rule=merged)
    report = CalibrationReport(rules_path, rules, changes, source, len(values), list(skipped))
    if write and rules_path is not None:
        save_rules(rules_path, rules, header=_header(model, config.rework.k_sigma, len(values), source))
        report.written = True
    return report


def calibrate_rules(
    config: Config,
    data_root: Path,
    output_root: Path,
    model: str,
    rules_path: Path | None = None,
    frames: Sequence[Path] | None = None,
    progress: bool = True,
    write: bool = True,
) -> CalibrationReport:
    """Measure the good training frames of ``model`` and write its rules file (see module doc)."""
    rules_path = rules_path or rules_path_for(config, output_root, model)
    if frames is None:
        frames, source = training_good_frames(config, data_root, output_root, model)
    else:
        source = f"{len(frames)} frames given"
    if not frames:
        raise CalibrationError(f"no good frames of {model!r} to calibrate from ({source})")
    values, skipped = measure_frames(frames, config, model, progress)
    if len(values) < MIN_FRAMES:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise CalibrationError(f"only {len(values)} of {len(frames)} good frames could be measured (need {MIN_FRAMES}){': ' + why if why else ''}")
    return calibrate_from_values(values, config, model, rules_path, source, skipped, write)


def _header(model: str, k: float, n: int, source: str) -> str:
    return (
        f"oringscan rework rules for o-ring type {model}\n"
        f"Calibrated from {n} good frames ({source}): limits = mean +/- {k:g} standard deviations.\n"
        "Edit lower/upper freely: recalibration keeps hand-edited rules (they become source = \"manual\")\n"
        "and never changes manual rules. verdict = \"rework\" or \"defect\"; add rules with any metric\n"
        "from `oringscan measure --help`."
    )
