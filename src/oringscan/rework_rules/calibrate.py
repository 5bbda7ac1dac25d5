"""Limits from good parts, the plant's way: mean +/- k standard deviations per metric.

Twelve-plus metrics with two sides each add up: with k = 2.5 per rule, the rule set as a whole
sends several percent of good parts to rework. So by default (``rework.k_sigma`` unset) one common
k is chosen for the whole set: the smallest k at which the share of *unseen* good parts that any
rule fires on meets rework's share of the line's false-reject budget (``rework.allocation =
"balanced"`` instead gives every rule the same held-out share, each at its own k). That share is estimated by
leave-one-out over the calibration frames (each frame judged by limits calibrated without it: an
unbiased sample of unseen parts, with the metrics' skew and correlation as they are: radii, walls
and area move together) and an exponential fit of the tail of those held-out results, so rates
below 1/n can be set; the held-out count itself must not be significantly above the target. A
good frame whose held-out deviation is far beyond any normal scatter is named and left out. The
rules file records the expected rate and its interval per rule and for the whole set.
"""

from __future__ import annotations

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
from oringscan.errors import FrameError, ModelFileError, OringscanError
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
from oringscan.workspace import TypeWorkspace

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
class RuleRate:
    """What one calibrated rule costs on unseen good parts."""

    metric: str
    verdict: str
    expected: float  # Student-t predictive share of unseen good parts it fires on
    loo_flagged: int  # calibration frames it flagged when each was held out
    low: float  # confidence interval of the share (Clopper-Pearson on the held-out count)
    high: float
    k_sigma: float = math.nan  # this rule's k (balanced allocation: its own)


@dataclass(slots=True)
class RateEstimate:
    """The calibrated rule set's false-rework rate on unseen good parts, and what the data support."""

    target: float | None  # None: k given explicitly (rework.k_sigma)
    k_sigma: float
    k_effective: float  # k after the small-sample (Student-t) widening for n frames
    expected: float
    low: float
    high: float
    confidence: float
    n: int
    loo_flagged: int
    supported_rate: float  # about the smallest rate n frames can show (1/n)
    rules: list[RuleRate] = field(default_factory=list)
    outliers: list[tuple[str, str]] = field(default_factory=list)  # (frame, why): left out
    notes: list[str] = field(default_factory=list)  # plain statements (target not supported, ...)
    allocation: str = "common"  # "balanced": each rule its own k, from one common held-out share
    rule_share: float | None = None  # balanced: the held-out share every rule is set to

    @property
    def supported(self) -> bool:
        return self.target is None or self.target >= self.supported_rate * (1 - 1e-9)


@dataclass(slots=True)
class CalibrationReport:
    rules_path: Path | None
    rules: RulesFile
    changes: list[RuleChange]
    source: str
    frames_used: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    written: bool = False
    rates: RateEstimate | None = None

    @property
    def kept_edits(self) -> list[RuleChange]:
        return [c for c in self.changes if c.change in ("kept-manual", "kept-hand-edited")]


def rules_path_for(config: Config, output_root: Path, oring_type: str) -> Path:
    """Where a type's rules live: ``config.rework.rules_file`` ({model} expands) or output/<model>/."""
    return TypeWorkspace.from_config(config, output_root, oring_type).rework_rules


def training_good_frames(
    config: Config, data_root: Path, output_root: Path, oring_type: str
) -> tuple[list[Path], str]:
    """Good frames of the training split when one exists, else every frame in the good folder.

    The split is read from the ``source_image`` fields of output/<model>/annotations/train.json;
    a frame counts as good when it sits in the type's good folder.
    """
    otype = config.oring_type(oring_type)
    data_root, output_root = Path(data_root), Path(output_root)
    good_dir = data_root / "images" / otype.good_folder
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    train_json = workspace.annotations("train")
    if workspace.has_split("train"):
        try:
            coco = workspace.read_coco("train")
        except ModelFileError as exc:
            raise CalibrationError(str(exc)) from None
        sources = sorted({img["source_image"] for img in coco.get("images", []) if img.get("source_image")})
        if sources:
            frames, found = [], 0
            for src in sources:
                path = _resolve_source(workspace.source_frame(src, data_root), good_dir)
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
        raise CalibrationError(
            f"{good_dir}: good folder of {oring_type!r} not found (and no training split at {train_json})"
        )
    frames = iter_image_files([good_dir], config.frame)
    return (
        frames,
        f"all {len(frames)} frames in the good folder {good_dir} (no training split at {train_json})",
    )


def _resolve_source(path: Path, good_dir: Path) -> Path | None:
    """The source frame where the workspace found it, else by name in the good folder (data moved)."""
    if path.is_file():
        return path
    moved = good_dir / path.name
    return moved if moved.is_file() else (path if path.is_absolute() else None)


def _in_folder(path: Path, good_dir: Path, good_folder: str) -> bool:
    try:
        path.resolve().relative_to(good_dir.resolve())
        return True
    except ValueError:
        return path.parent.name == good_folder


def measure_frames(
    frames: Sequence[Path],
    config: Config,
    oring_type: str,
    progress: bool = True,
    names: list[str] | None = None,
) -> tuple[list[dict[str, float]], list[tuple[str, str]]]:
    """Metrics of each measurable frame; the others are listed with their reason.

    ``names``, when given, receives the file name of each measured frame (same order as the values).
    """
    checker = ReworkChecker(
        RulesFile(),
        mm_per_px=config.oring_type(oring_type).mm_per_px,
        config=config.rework,
        roi_config=config.roi,
    )
    values: list[dict[str, float]] = []
    skipped: list[tuple[str, str]] = []
    for path in tqdm(frames, desc=f"measuring good {oring_type} frames", unit="frame", disable=not progress):
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
        if names is not None:
            names.append(Path(path).name)
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


DEFAULT_K_SIGMA = 2.5  # the plant's k, used where no target is known
OUTLIER_ALPHA = 0.001  # family-wise chance that a normal good frame is called an outlier
MIN_TAIL_POINTS = 5  # fewest held-out critical k values a tail is fitted to
MAX_K = 8.0  # k beyond this: the floors, not sigma, set the limits


def effective_k(cfg: ReworkConfig, n: int, k: float | None = None) -> float:
    """k widened for a small calibration set (a prediction interval with the same coverage).

    mean +/- k*s from n samples underestimates the spread of the next part; for large n this is k.
    ``k`` defaults to ``cfg.k_sigma``.
    """
    k = _k_or_default(cfg, k)
    if not cfg.small_sample_correction or n < 3:
        return k
    from scipy import stats

    # Tail form (sf/isf): stays finite where the coverage rounds to 1 (k of 8 and more).
    return float(stats.t.isf(stats.norm.sf(k), df=n - 1) * math.sqrt(1.0 + 1.0 / n))


def _k_or_default(cfg: ReworkConfig, k: float | None) -> float:
    if k is not None:
        return float(k)
    return float(cfg.k_sigma) if cfg.k_sigma is not None else DEFAULT_K_SIGMA


@dataclass(slots=True)
class _MetricData:
    """One calibrated metric's samples and what its limits are made of."""

    base: str
    name: str
    side: str
    verdict: str
    message: str
    data: np.ndarray  # finite samples
    rows: np.ndarray  # which frames they came from
    floor: float  # the margin never goes below this (in the metric's own units)
    excursion_floor: float | None  # flash/bite upper limit never below this
    # Range-type metrics (see LOG_SCALE): ``data`` holds log(value - log_offset) and mean, sigma and
    # k are taken on that scale; None: the metric's own scale.
    log_offset: float | None = None

    @property
    def scale_name(self) -> str | None:
        """How the rules file names the calibration scale (None: the metric's own)."""
        if self.log_offset is None:
            return None
        return "log(x)" if self.log_offset == 0 else f"log(x - {self.log_offset:g})"

    def to_value(self, t: float) -> float:
        """A point of the calibration scale back in the metric's units."""
        # exp of a pilot's enormous k (3 frames): the largest finite value, not an overflow
        return t if self.log_offset is None else self.log_offset + math.exp(min(t, 700.0))

    def floor_at(self, mean: np.ndarray | float) -> np.ndarray | float:
        """The margin floor on the calibration scale around ``mean`` (that scale's mean)."""
        if self.log_offset is None:
            return self.floor
        return np.log1p(self.floor * np.exp(-np.asarray(mean, dtype=np.float64)))


# Range-type metrics: a max - min (>= 0) or a max / min (>= 1) of a profile is skewed to the right
# with a hard bound, so mean +/- k sigma of the raw values puts the upper limit far too close (on the
# plant-like benchmark the good parts' wall range has sigma 0.4 px but a tail to 2.5 px in 40 parts).
# Their limits are mean + k sigma of log(value - bound): a log-normal model of the same two numbers.
LOG_SCALE: dict[str, float] = {"wall_range": 0.0, "wall_ratio": 1.0}


def _metric_data(
    values: Sequence[dict[str, float]], cfg: ReworkConfig, mm_per_px: float | None
) -> list[_MetricData]:
    mean_radius = float(np.mean([v["mean_radius"] for v in values]))
    out: list[_MetricData] = []
    for base, info in METRICS.items():
        if info.side is None:
            continue
        name = mm_name(base) if (mm_per_px and info.kind in ("length", "area")) else base
        raw = np.array([v.get(name, math.nan) for v in values], dtype=np.float64)
        rows = np.flatnonzero(np.isfinite(raw))
        if len(rows) < MIN_FRAMES:
            continue
        excursion = None
        if base.endswith(("_protrusion_px", "_indentation_px")) and info.side in ("both", "upper"):
            excursion = cfg.min_excursion_limit_px * (mm_per_px if name != base else 1.0)
        data, offset = raw[rows], LOG_SCALE.get(base)
        if offset is not None:
            # A value at the bound (a perfectly even wall) is held a little above it: log 0 is -inf.
            above = data - offset
            tiny = max(float(np.median(above)) * 1e-3, 1e-12) if np.any(above > 0) else 1e-12
            data = np.log(np.maximum(above, tiny))
        out.append(
            _MetricData(
                base,
                name,
                info.side,
                info.verdict,
                info.reason,
                data,
                rows,
                _margin_floor(name, cfg, mm_per_px, mean_radius),
                excursion,
                offset,
            )
        )
    return out


def _limits(m: _MetricData, mean: float, std: float, k_eff: float) -> tuple[float | None, float | None]:
    """Limits in the metric's units from the calibration scale's mean and sigma (floors in units)."""
    if m.log_offset is not None:
        centre = m.to_value(mean)
        lower = min(m.to_value(mean - k_eff * std), centre - m.floor) if m.side in ("both", "lower") else None
        upper = max(m.to_value(mean + k_eff * std), centre + m.floor) if m.side in ("both", "upper") else None
        return lower, upper
    margin = max(k_eff * std, m.floor)
    lower = mean - margin if m.side in ("both", "lower") else None
    upper = mean + margin if m.side in ("both", "upper") else None
    if m.excursion_floor is not None and upper is not None:
        upper = max(upper, m.excursion_floor)  # flash and bites are absolute: never tighter than this
    return lower, upper


def limits_from_values(
    values: Sequence[dict[str, float]],
    cfg: ReworkConfig,
    mm_per_px: float | None = None,
    k: float | None = None,
) -> list[Rule]:
    """One calibrated rule per calibrated metric (millimetre names when ``mm_per_px`` is set).

    Limits at mean +/- k sigma (widened for small sets, see :func:`effective_k`); ``k`` defaults to
    ``cfg.k_sigma``, and when that is unset too, to the k :func:`budgeted_limits` chooses for
    ``cfg.false_reject_rate`` (or the default rework share, 2 %).
    """
    if len(values) < MIN_FRAMES:
        raise CalibrationError(
            f"need at least {MIN_FRAMES} measurable good frames to calibrate, got {len(values)}"
        )
    if k is None and cfg.k_sigma is None:
        target = cfg.false_reject_rate if cfg.false_reject_rate is not None else DEFAULT_REWORK_RATE
        return budgeted_limits(values, cfg, target, mm_per_px)[0]
    return _rules_at(_metric_data(values, cfg, mm_per_px), cfg, _k_or_default(cfg, k))


def _rules_at(metrics: Sequence[_MetricData], cfg: ReworkConfig, k: float | Sequence[float]) -> list[Rule]:
    """Calibrated rules at one common k, or at each rule's own k (a sequence, one per metric)."""
    ks = [float(k)] * len(metrics) if isinstance(k, int | float) else [float(v) for v in k]
    rules: list[Rule] = []
    for m, k_rule in zip(metrics, ks, strict=True):
        mean, std = float(m.data.mean()), float(m.data.std(ddof=1))
        lower, upper = _limits(m, mean, std, effective_k(cfg, len(m.data), k_rule))
        lower, upper = rounded(lower), rounded(upper)
        record = CalibrationRecord(
            lower=lower,
            upper=upper,
            mean=rounded(mean),
            std=rounded(std),
            n=len(m.data),
            k_sigma=rounded(k_rule, 4),
            scale=m.scale_name,
        )
        rules.append(
            Rule(
                metric=m.name,
                lower=lower,
                upper=upper,
                verdict=m.verdict,
                message=m.message,  # type: ignore[arg-type]
                source="calibrated",
                calibrated=record,
            )
        )
    return rules


DEFAULT_REWORK_RATE = 0.02  # rework's share of the default 5 % line budget


# --- the rule set's false-rework rate on unseen good parts --------------------------------------


def _complete_rows(metrics: Sequence[_MetricData], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames x metrics matrix of the frames measured on every metric, and those frames' indices."""
    full = np.full((n, len(metrics)), np.nan)
    for j, m in enumerate(metrics):
        full[m.rows, j] = m.data
    keep = np.flatnonzero(np.isfinite(full).all(axis=1))
    return full[keep], keep


def _critical(
    dev: np.ndarray,
    std: np.ndarray,
    values: np.ndarray,
    metrics: Sequence[_MetricData],
    means: np.ndarray | None = None,
) -> np.ndarray:
    """Per sample and rule, the effective k below which the rule fires on it (-inf: never fires).

    ``dev`` = value - mean of the calibration frames, ``std`` their sigma (broadcastable): a rule
    with margin max(k*std, floor) fires when the deviation passes the margin on a ruled side (and,
    for flash/bites, the value passes the absolute floor too). All on the calibration scale
    (``means``: the calibration means there, for the floors of log-scale metrics).
    """
    floor = np.array([m.floor for m in metrics], dtype=np.float64)
    if means is not None and any(m.log_offset is not None for m in metrics):
        floor = np.broadcast_to(floor, np.broadcast_shapes(floor.shape, np.shape(means))).copy()
        for j, m in enumerate(metrics):
            if m.log_offset is not None:
                floor[..., j] = m.floor_at(np.asarray(means)[..., j])
    has_lower = np.array([m.side in ("both", "lower") for m in metrics])
    has_upper = np.array([m.side in ("both", "upper") for m in metrics])
    exc = np.array([-np.inf if m.excursion_floor is None else m.excursion_floor for m in metrics])
    with np.errstate(divide="ignore", invalid="ignore"):
        z = dev / std
    up = has_upper & (dev > floor) & (values > exc)
    down = has_lower & (-dev > floor)
    crit = np.where(up, z, np.where(down, -z, -np.inf))
    return np.where(np.isnan(crit), np.inf, crit)  # sigma 0 and beyond the floor: fires at any k


def _loo_critical(x: np.ndarray, metrics: Sequence[_MetricData]) -> np.ndarray:
    """frames x rules: :func:`_critical` of each frame against the other frames' mean and sigma."""
    n = x.shape[0]
    total, total_sq = x.sum(axis=0), (x * x).sum(axis=0)
    means = (total - x) / (n - 1)
    std = np.sqrt(np.clip(((total_sq - x * x) - (n - 1) * means * means) / (n - 2), 0, None))
    return _critical(x - means, std, x, metrics, means)


def _clopper_pearson(count: int, n: int, confidence: float) -> tuple[float, float]:
    from scipy import stats

    alpha = 1 - confidence
    low = 0.0 if count == 0 else float(stats.beta.ppf(alpha / 2, count, n - count + 1))
    high = 1.0 if count == n else float(stats.beta.ppf(1 - alpha / 2, count + 1, n - count))
    return low, high


@dataclass(slots=True)
class _TailFit:
    """The share of unseen good parts whose critical k exceeds a given k, from leave-one-out.

    Each calibration frame, held out in turn, gives the effective k below which the rules
    calibrated on the others fire on it: an unbiased draw of an unseen good part's critical k,
    with the metrics' skew and correlation as they are. Above the median of these draws the tail is
    fitted as exponential (peaks over threshold; the mean excess is its scale), so rates below 1/n
    can be read off; frames no rule can fire on (every deviation inside the floors) never count.
    """

    finite: np.ndarray  # critical k of the frames some rule could fire on
    n: int
    start: float = math.inf  # tail threshold (median of the finite draws)
    share: float = 0.0  # share of all frames above it
    scale: float = 0.0  # mean excess above it

    @classmethod
    def fit(cls, critical: np.ndarray) -> _TailFit:
        finite = np.sort(critical[np.isfinite(critical)])
        out = cls(finite, len(critical))
        if len(finite) >= 2 * MIN_TAIL_POINTS:
            start = float(finite[len(finite) // 2 - 1])
            top = finite[finite > start]
            if len(top) >= MIN_TAIL_POINTS and float((top - start).mean()) > 0:
                out.start, out.share, out.scale = start, len(top) / len(critical), float((top - start).mean())
        return out

    @property
    def fitted(self) -> bool:
        return self.scale > 0

    def rate(self, k_eff: float) -> float:
        if self.scale <= 0 or k_eff <= self.start:  # no tail (too few points) or inside the data
            return float(np.count_nonzero(self.finite > k_eff)) / self.n
        return self.share * math.exp(-(k_eff - self.start) / self.scale)

    def interval(
        self, k_eff: float, confidence: float, seed: int = 0, resamples: int = 200
    ) -> tuple[float, float]:
        """Bootstrap over the held-out frames, widened to the Clopper-Pearson interval of the count."""
        rng = np.random.default_rng(seed)
        critical = np.r_[self.finite, np.full(self.n - len(self.finite), -np.inf)]
        rates = [
            _TailFit.fit(critical[rng.integers(0, self.n, self.n)]).rate(k_eff) for _ in range(resamples)
        ]
        alpha = 1 - confidence
        low, high = np.quantile(rates, [alpha / 2, 1 - alpha / 2])
        c_low, c_high = _clopper_pearson(int(np.count_nonzero(self.finite > k_eff)), self.n, confidence)
        return float(min(low, c_low)), float(max(high, c_high))


@dataclass(slots=True)
class _GaussianSet:
    """The rule set's rate on a new part if the metrics were jointly normal with the calibration
    frames' correlation (Monte Carlo, fixed seed): the parametric floor under the held-out tail.

    Limits sit at k in the nominal (Student-t widened) scale, so a draw from N(0, R) crossing k (or
    a rule's floor, in the same scale) is a new part the rule fires on.
    """

    draws: np.ndarray  # samples x rules, standard normal with the frames' correlation
    floors: np.ndarray  # per rule, the nominal k its margin floor amounts to (0: none)
    upper: np.ndarray
    lower: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, metrics: Sequence[_MetricData], cfg: ReworkConfig) -> _GaussianSet:
        n, p = x.shape
        std = x.std(axis=0, ddof=1) if n > 1 else np.zeros(p)
        live = std > 0
        floors = np.full(p, np.inf)
        for j, m in enumerate(metrics):
            if not live[j]:
                continue
            z_floor = float(m.floor_at(float(x[:, j].mean()))) / std[j]
            if m.excursion_floor is not None:
                z_floor = max(z_floor, (m.excursion_floor - float(x[:, j].mean())) / std[j])
            floors[j] = nominal_k(cfg, n, z_floor)
        corr = np.eye(p)
        if n > 2 and live.sum() > 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                sub = np.corrcoef(x[:, live], rowvar=False)
            corr[np.ix_(live, live)] = np.nan_to_num(sub)
        rng = np.random.default_rng(0)
        try:
            draws = rng.multivariate_normal(np.zeros(p), corr, size=20000, method="eigh")
        except (np.linalg.LinAlgError, ValueError):
            draws = rng.standard_normal((20000, p))
        upper = np.array([m.side in ("both", "upper") for m in metrics]) & live
        lower = np.array([m.side in ("both", "lower") for m in metrics]) & live
        return cls(draws, floors, upper, lower)

    def rate(self, k: float) -> float:
        limit = np.maximum(k, self.floors)
        fires = (self.upper & (self.draws > limit)) | (self.lower & (-self.draws > limit))
        return float(fires.any(axis=1).mean())


def _allowed_count(n: int, target: float) -> int:
    """Most held-out frames the rules may flag before the count says the rate is above target (5 %)."""
    from scipy import stats

    c = 0
    while c < n and stats.binom.sf(c, n, target) >= 0.05:  # P(X >= c + 1)
        c += 1
    return c


def budgeted_limits(
    values: Sequence[dict[str, float]],
    cfg: ReworkConfig,
    target: float | None,
    mm_per_px: float | None = None,
    names: Sequence[str] | None = None,
) -> tuple[list[Rule], RateEstimate]:
    """Rules whose whole set sends about ``target`` of unseen good parts to rework, with the rates.

    ``target`` None: k is ``cfg.k_sigma`` as given (the rates are still estimated). Otherwise one
    common k: the smallest at which the rate of the whole set (the leave-one-out tail fit, see
    :class:`_TailFit`; with too few frames for one, the sum of the rules' normal tails) is at most
    ``target`` and the leave-one-out count is not significantly above it. Gross outliers (a
    held-out deviation a normal good part shows with probability < 0.1 % over all frames and rules)
    are left out and named.
    """
    if len(values) < MIN_FRAMES:
        raise CalibrationError(
            f"need at least {MIN_FRAMES} measurable good frames to calibrate, got {len(values)}"
        )
    names = list(names) if names is not None else [f"frame {i + 1}" for i in range(len(values))]
    metrics = _metric_data(values, cfg, mm_per_px)
    outliers: list[tuple[str, str]] = []
    if target is not None:
        values, names, outliers = _drop_outliers(list(values), names, metrics)
        if outliers:
            metrics = _metric_data(values, cfg, mm_per_px)
    x, _rows = _complete_rows(metrics, len(values))
    n = x.shape[0]
    confidence = cfg.confidence
    notes: list[str] = []
    if n < MIN_FRAMES:
        raise CalibrationError(
            f"need at least {MIN_FRAMES} good frames measured on every metric to estimate the "
            f"false-rework rate, got {n}"
        )
    loo_crit = _loo_critical(x, metrics)  # frames x rules, effective k for n - 1 frames
    whole = _TailFit.fit(loo_crit.max(axis=1))
    per_rule_fits = [_TailFit.fit(loo_crit[:, j]) for j in range(len(metrics))]
    sides = np.array([2.0 if m.side == "both" else 1.0 for m in metrics])
    live = np.array([float(np.std(m.data)) > 0 for m in metrics])

    def normal_rates(k_value: float) -> np.ndarray:
        """Per rule, its sides' normal tail at k (the Student-t widening makes this its coverage)."""
        from scipy import stats

        return sides * live * float(stats.norm.sf(k_value))

    gaussian = _GaussianSet.of(x, metrics, cfg)

    def whole_rate(k_value: float) -> float:
        if whole.fitted:
            # The held-out tail, but never below what the metrics' own scatter and correlation
            # predict for a new part: 40 frames can hold no size outlier by chance.
            return max(whole.rate(effective_k(cfg, n - 1, k_value)), gaussian.rate(k_value))
        return min(1.0, float(normal_rates(k_value).sum()))  # too few frames for a tail: the union bound

    if not whole.fitted:
        notes.append(
            f"too few frames for a tail fit ({len(whole.finite)} held-out results beyond the floors, "
            f"{2 * MIN_TAIL_POINTS} needed): the expected rate is the sum of the rules' normal tails, an upper bound"
        )

    if target is not None and cfg.allocation == "balanced":
        balanced = _balanced_k(loo_crit, per_rule_fits, sides * live, cfg, n, target)
        if balanced is not None:
            return _balanced_result(
                balanced, metrics, loo_crit, per_rule_fits, cfg, n, target, outliers, notes
            )
        notes.append("no rule could be given its own share: one common k for all (allocation = common)")
    if target is None:
        k = _k_or_default(cfg, None)
    else:
        allowed = _allowed_count(n, target)

        def meets(k_value: float) -> bool:
            k_eff = effective_k(cfg, n - 1, k_value)
            return (
                whole_rate(k_value) <= target
                and int(np.count_nonzero(loo_crit.max(axis=1) > k_eff)) <= allowed
            )

        lo_k, hi_k = 0.5, MAX_K
        if not meets(hi_k):
            k = hi_k
            notes.append(
                f"even k = {hi_k:g} does not bring the rule set to {target:.1%}: the floors "
                "(rework.min_margin_*, min_excursion_limit_px) or the data decide"
            )
        else:
            for _ in range(30):  # bisection: the rates fall as k grows
                mid = (lo_k + hi_k) / 2
                lo_k, hi_k = (lo_k, mid) if meets(mid) else (mid, hi_k)
            k = hi_k
    k_loo = effective_k(cfg, n - 1, k)
    expected = whole_rate(k)
    loo = loo_crit > k_loo
    loo_any = int(loo.any(axis=1).sum())
    low, high = whole.interval(k_loo, confidence)
    supported = 1.0 / n
    rule_rates = []
    for j, m in enumerate(metrics):
        r_low, r_high = per_rule_fits[j].interval(k_loo, confidence, resamples=50)
        fit = per_rule_fits[j]
        rule_expected = fit.rate(k_loo) if fit.fitted else float(normal_rates(k)[j])
        rule_rates.append(RuleRate(m.name, m.verdict, rule_expected, int(loo[:, j].sum()), r_low, r_high, k))
    if target is not None and target < supported * (1 - 1e-9):
        notes.append(_support_note(n, target))
    rules = _rules_at(metrics, cfg, k)
    _record_rates(rules, rule_rates)
    estimate = RateEstimate(
        target,
        k,
        effective_k(cfg, n, k),
        expected,
        low,
        high,
        confidence,
        n,
        loo_any,
        supported,
        rule_rates,
        outliers,
        notes,
    )
    return rules, estimate


def _support_note(n: int, target: float) -> str:
    return (
        f"{n} good frames support a false-rework target of about {1.0 / n:.1%}; asked {target:.1%} "
        "(the limits extrapolate the fitted tail; calibrate from more good frames to confirm it)"
    )


def _record_rates(rules: Sequence[Rule], rule_rates: Sequence[RuleRate]) -> None:
    for rule, rate in zip(rules, rule_rates, strict=True):
        assert rule.calibrated is not None
        rule.calibrated.expected_rate = rounded(rate.expected, 4)
        rule.calibrated.rate_low = rounded(rate.low, 4)
        rule.calibrated.rate_high = rounded(rate.high, 4)


# --- balanced allocation: every rule the same held-out share ------------------------------------


def nominal_k(cfg: ReworkConfig, n: int, k_eff: float) -> float:
    """Inverse of :func:`effective_k`: the k whose small-sample widening for ``n`` frames is ``k_eff``."""
    if not cfg.small_sample_correction or n < 3 or not math.isfinite(k_eff):
        return float(k_eff)
    from scipy import stats

    return float(stats.norm.isf(stats.t.sf(k_eff / math.sqrt(1.0 + 1.0 / n), df=n - 1)))


@dataclass(slots=True)
class _RuleTail:
    """One rule's share of unseen good parts it fires on, as a function of its held-out k."""

    fit: _TailFit
    normal_sides: float  # sides of the rule (0: a metric without scatter) for the normal fallback
    cfg: ReworkConfig
    n_loo: int  # frames each held-out limit was calibrated from (n - 1)

    def rate(self, k_eff: float) -> float:
        if self.fit.fitted:
            return self.fit.rate(k_eff)
        from scipy import stats

        return self.normal_sides * float(stats.norm.sf(nominal_k(self.cfg, self.n_loo, k_eff)))

    def k_for(self, share: float) -> float:
        """The smallest held-out k at which the rule fires on at most ``share`` (closed form)."""
        fit = self.fit
        if fit.fitted:
            if share < fit.share:  # on the fitted exponential tail
                return fit.start + fit.scale * math.log(fit.share / share)
            above = int(math.floor(share * fit.n + 1e-9))  # frames that may lie above k
            ranked = fit.finite[::-1]
            return float(ranked[above]) if above < len(ranked) else 0.0
        if self.normal_sides <= 0:
            return 0.0
        from scipy import stats

        k = float(stats.norm.isf(min(share / self.normal_sides, 0.5)))
        return effective_k(self.cfg, self.n_loo, k)


@dataclass(slots=True)
class _Balanced:
    share: float  # held-out share every rule is set to
    k_eff: np.ndarray  # per rule, the held-out (n - 1 frames) k
    tails: list[_RuleTail]
    level: _TailFit  # the tail of the frames' most extreme rule level, -log(share)
    expected: float


def _balanced_k(
    loo_crit: np.ndarray,
    per_rule_fits: Sequence[_TailFit],
    sides: np.ndarray,
    cfg: ReworkConfig,
    n: int,
    target: float,
) -> _Balanced | None:
    """Each rule set to the same share s of unseen good parts, s the largest at which the whole set
    meets ``target``.

    Each held-out frame's per-rule critical k is turned into that rule's share at it (its own
    fitted tail: a probability integral transform), so a heavy-tailed metric gets a wide k and a
    tight one a narrow k. A frame is flagged at share s when its most extreme rule level
    -log(share) passes -log s; the tail of those levels (exponential above their median, as for the
    common k) gives the whole set's rate below 1/n, and the held-out count must not be significantly
    above the target.
    """
    tails = [_RuleTail(fit, float(sd), cfg, n - 1) for fit, sd in zip(per_rule_fits, sides, strict=True)]
    if not any(t.fit.fitted or t.normal_sides > 0 for t in tails):
        return None
    with np.errstate(divide="ignore"):
        levels = np.full(loo_crit.shape, -np.inf)
        for j, tail in enumerate(tails):
            for i, c in enumerate(loo_crit[:, j]):
                if c == np.inf:
                    levels[i, j] = np.inf
                elif np.isfinite(c):
                    levels[i, j] = -math.log(max(min(tail.rate(float(c)), 1.0), 1e-300))
    per_frame = levels.max(axis=1)
    level_fit = _TailFit.fit(np.where(per_frame > 0, per_frame, -np.inf))
    allowed = _allowed_count(n, target)

    def k_at(share: float) -> np.ndarray:
        return np.array([t.k_for(share) for t in tails])

    def whole(share: float, k_eff: np.ndarray) -> float:
        if level_fit.fitted:
            return level_fit.rate(-math.log(share))
        return min(1.0, sum(t.rate(float(k)) for t, k in zip(tails, k_eff, strict=True)))

    def meets(share: float) -> tuple[bool, np.ndarray, float]:
        k_eff = k_at(share)
        rate = whole(share, k_eff)
        flagged = int(np.count_nonzero((loo_crit > k_eff[None, :]).any(axis=1)))
        return rate <= target and flagged <= allowed, k_eff, rate

    lo, hi = math.log(1e-9), math.log(target)  # bisection on log(share): rates grow with the share
    ok, k_eff, rate = meets(math.exp(hi))
    if ok:
        return _Balanced(target, k_eff, tails, level_fit, rate)
    best = None
    for _ in range(30):
        mid = (lo + hi) / 2
        ok, k_mid, r_mid = meets(math.exp(mid))
        if ok:
            lo, best = mid, (math.exp(mid), k_mid, r_mid)
        else:
            hi = mid
    if best is None:
        return None
    share, k_eff, rate = best
    return _Balanced(share, k_eff, tails, level_fit, rate)


def _balanced_result(
    b: _Balanced,
    metrics: Sequence[_MetricData],
    loo_crit: np.ndarray,
    per_rule_fits: Sequence[_TailFit],
    cfg: ReworkConfig,
    n: int,
    target: float,
    outliers: list[tuple[str, str]],
    notes: list[str],
) -> tuple[list[Rule], RateEstimate]:
    """Rules at each rule's own k and the rates, for :func:`budgeted_limits`."""
    confidence = cfg.confidence
    ks = np.minimum([nominal_k(cfg, n - 1, float(k)) for k in b.k_eff], MAX_K)
    loo = loo_crit > b.k_eff[None, :]
    loo_any = int(loo.any(axis=1).sum())
    if b.level.fitted:
        low, high = b.level.interval(-math.log(b.share), confidence)
    else:
        low, high = _clopper_pearson(loo_any, n, confidence)
    rule_rates = []
    for j, m in enumerate(metrics):
        r_low, r_high = per_rule_fits[j].interval(float(b.k_eff[j]), confidence, resamples=50)
        rule_rates.append(
            RuleRate(
                m.name,
                m.verdict,
                b.tails[j].rate(float(b.k_eff[j])),
                int(loo[:, j].sum()),
                r_low,
                r_high,
                float(ks[j]),
            )
        )
    if not b.level.fitted:
        notes.append(
            "too few held-out results beyond the floors for a tail fit: the expected rate is the sum of "
            "the rules' tails, an upper bound"
        )
    if target < (1.0 / n) * (1 - 1e-9):
        notes.append(_support_note(n, target))
    rules = _rules_at(metrics, cfg, ks)
    _record_rates(rules, rule_rates)
    k_widest = float(ks.max())
    estimate = RateEstimate(
        target,
        k_widest,
        effective_k(cfg, n, k_widest),
        b.expected,
        low,
        high,
        confidence,
        n,
        loo_any,
        1.0 / n,
        rule_rates,
        outliers,
        notes,
        allocation="balanced",
        rule_share=b.share,
    )
    return rules, estimate


def _drop_outliers(
    values: list[dict[str, float]], names: list[str], metrics: Sequence[_MetricData]
) -> tuple[list[dict[str, float]], list[str], list[tuple[str, str]]]:
    """Leave out good frames no normal scatter explains (at most 10 % of them, the worst first)."""
    from scipy import stats

    x, rows = _complete_rows(metrics, len(values))
    n, p = x.shape
    if n < 6 or p == 0:
        return values, names, []
    z = np.clip(_loo_critical(x, metrics), 0, None) / math.sqrt(1 + 1 / (n - 1))  # held-out prediction sigmas
    # Two-sided Student-t tail of the held-out deviation, Bonferroni over every frame and rule.
    cut = float(stats.t.isf(OUTLIER_ALPHA / (2 * n * p), df=n - 2))
    worst = z.max(axis=1)
    order = [int(i) for i in np.argsort(-worst) if worst[i] > cut][: max(1, n // 10)]
    if not order:
        return values, names, []
    drop = {int(rows[i]) for i in order}
    why = []
    for i in order:
        j = int(np.argmax(z[i]))
        why.append(
            (
                names[int(rows[i])],
                f"{metrics[j].name} = {x[i, j]:.6g} is {z[i, j]:.1f} sigma from the other "
                f"good frames (cut {cut:.1f}): left out",
            )
        )
    keep = [i for i in range(len(values)) if i not in drop]
    return [values[i] for i in keep], [names[i] for i in keep], why


def merge_rules(
    previous: RulesFile | None, calibrated: Iterable[Rule]
) -> tuple[list[Rule], list[RuleChange]]:
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
            note = "manual rule kept as it is" + (
                f"; calibration would set {_span(suggested)}" if suggested else ""
            )
            changes.append(
                RuleChange(old.metric, old.verdict, "kept-manual", limits, limits, suggested, note)
            )
        elif old.hand_edited:
            kept = old.model_copy(update={"source": "manual"})
            out.append(kept)
            blocked.add(key)
            was = (old.calibrated.lower, old.calibrated.upper) if old.calibrated else None
            note = f"hand-edited (calibration had written {_span(was)}): kept, now source = manual"
            if suggested:
                note += f"; calibration would set {_span(suggested)}"
            changes.append(
                RuleChange(old.metric, old.verdict, "kept-hand-edited", limits, limits, suggested, note)
            )
        elif new is None:
            changes.append(
                RuleChange(
                    old.metric, old.verdict, "removed", limits, None, None, "metric no longer calibrated"
                )
            )
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
            changes.append(
                RuleChange(
                    new.metric,
                    new.verdict,
                    "unchanged" if same else "updated",
                    (prev.lower, prev.upper),
                    (new.lower, new.upper),
                )
            )
    order = {name: i for i, name in enumerate(ALL_METRICS)}
    out.sort(key=lambda r: order.get(r.metric, len(order)))
    changes.sort(key=lambda c: order.get(c.metric, len(order)))
    return out, changes


def _span(limits: tuple[float | None, float | None] | None) -> str:
    if limits is None:
        return "-"
    lo, up = limits
    return f"{'-inf' if lo is None else f'{lo:.6g}'} .. {'+inf' if up is None else f'{up:.6g}'}"


def rework_target(config: Config) -> float | None:
    """The false-rework rate calibration aims at: None when ``rework.k_sigma`` is given explicitly.

    An explicit ``rework.false_reject_rate`` is the rules' rate as given; otherwise rework's share of
    the budget less the ring-shape screen's part of it (``screening.shape_share``: the screen measures
    what the flash rule measures, see ``screening/shape.py``).
    """
    if config.rework.k_sigma is not None:
        return None
    if config.rework.false_reject_rate is not None:
        return float(config.rework.false_reject_rate)
    from oringscan.budget import split_false_reject_budget  # a moved module must fail loudly, not fall back

    return float(split_false_reject_budget(config).rework) * (1.0 - float(config.screening.shape_share))


def calibrate_from_values(
    values: Sequence[dict[str, float]],
    config: Config,
    oring_type: str,
    rules_path: Path | None = None,
    source: str = "",
    skipped: Sequence[tuple[str, str]] = (),
    write: bool = True,
    names: Sequence[str] | None = None,
) -> CalibrationReport:
    """Calibrate from already measured good parts (merging with ``rules_path`` if it exists).

    ``names`` (one per value) name the frames in the report (outliers left out).
    """
    mm_per_px = config.oring_type(oring_type).mm_per_px
    target = rework_target(config)
    calibrated, rates = budgeted_limits(values, config.rework, target, mm_per_px, names)
    previous = load_rules(rules_path) if rules_path is not None and rules_path.is_file() else None
    merged, changes = merge_rules(previous, calibrated)
    meta = RulesMeta(
        oring_type=oring_type,
        k_sigma=rounded(rates.k_sigma, 4),
        calibrated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source=source or None,
        n_frames=rates.n,
        false_reject_target=target,
        expected_rate=rounded(rates.expected, 4),
        rate_low=rounded(rates.low, 4),
        rate_high=rounded(rates.high, 4),
        confidence=rates.confidence,
        loo_flagged=rates.loo_flagged,
        allocation=rates.allocation if target is not None else None,
    )
    rules = RulesFile(meta=meta, rule=merged)
    report = CalibrationReport(rules_path, rules, changes, source, rates.n, list(skipped), rates=rates)
    if write and rules_path is not None:
        save_rules(rules_path, rules, header=_header(oring_type, rates, source))
        report.written = True
    return report


def calibrate_rules(
    config: Config,
    data_root: Path,
    output_root: Path,
    oring_type: str,
    rules_path: Path | None = None,
    frames: Sequence[Path] | None = None,
    progress: bool = True,
    write: bool = True,
) -> CalibrationReport:
    """Measure the good training frames of ``model`` and write its rules file (see module doc)."""
    rules_path = rules_path or rules_path_for(config, output_root, oring_type)
    if frames is None:
        frames, source = training_good_frames(config, data_root, output_root, oring_type)
    else:
        source = f"{len(frames)} frames given"
    if not frames:
        raise CalibrationError(f"no good frames of {oring_type!r} to calibrate from ({source})")
    names: list[str] = []
    values, skipped = measure_frames(frames, config, oring_type, progress, names)
    if len(values) < MIN_FRAMES:
        why = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        raise CalibrationError(
            f"only {len(values)} of {len(frames)} good frames could be measured (need {MIN_FRAMES})"
            + (f": {why}" if why else "")
        )
    return calibrate_from_values(values, config, oring_type, rules_path, source, skipped, write, names)


def rate_lines(rates: RateEstimate) -> list[str]:
    """What the whole rule set costs on unseen good parts, in words (CLI and the file header)."""
    how = (
        f"one common k = {rates.k_sigma:.3g} chosen for a false-rework target of {rates.target:.1%}"
        if rates.target is not None
        else f"k = {rates.k_sigma:g} as configured"
    )
    if rates.allocation == "balanced" and rates.rules and rates.target is not None:
        ks = [r.k_sigma for r in rates.rules if math.isfinite(r.k_sigma)]
        how = (
            f"each rule its own k ({min(ks):.3g} - {max(ks):.3g}), all at the same share "
            f"{rates.rule_share or 0:.2%} of held-out good parts, chosen for a false-rework target of "
            f"{rates.target:.1%}; the widest"
        )
    lines = [
        f"limits = mean +/- k standard deviations, {how} (k = {rates.k_effective:.3g} after the "
        f"small-sample widening for {rates.n} frames)",
        f"expected share of unseen good parts sent to rework by the whole rule set: {rates.expected:.2%} "
        f"({rates.confidence:.0%} interval {rates.low:.1%} - {rates.high:.1%}; leave-one-out: {rates.loo_flagged} of "
        f"{rates.n} held-out good frames flagged)",
    ]
    return lines + rates.notes


def _header(oring_type: str, rates: RateEstimate, source: str) -> str:
    summary = "\n".join(rate_lines(rates))
    return (
        f"oringscan rework rules for o-ring type {oring_type}\n"
        f"Calibrated from {rates.n} good frames ({source}).\n{summary}\n"
        'Edit lower/upper freely: recalibration keeps hand-edited rules (they become source = "manual")\n'
        'and never changes manual rules. verdict = "rework" or "defect"; add rules with any metric\n'
        "from `oringscan measure --help`."
    )
