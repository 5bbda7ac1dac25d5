"""Thresholds whose false-reject rate holds on unseen good frames, and recalibration without refitting.

Why: the old threshold was the 99th percentile of ~6 good val frames, i.e. their maximum, which a new
good frame exceeds about 1 time in 7. Here every good frame is scored by a bank that did not see it
(cross-fitting, in ``fit.py``), and the tail of those out-of-fold frame scores (a frame scores as its
worst tile) is fitted by peaks over threshold: a generalized Pareto distribution (``scipy.stats.
genpareto``) fitted to the exceedances of the highest ``tail_fraction`` of the scores by probability-
weighted moments (Hosking & Wallis 1987: closed form, steadier than maximum likelihood on the 8-60
exceedances a pilot gives). When the fit is unstable or there are too few frames, the threshold is
the empirical quantile, and its expected rate is what an order statistic really gives (a new frame
exceeds the j-th highest of n with probability j / (n + 1)). Intervals: a bootstrap of the whole
tail fit at the chosen threshold (GPD), or the exact Beta law of an order statistic (empirical).

Two thresholds (Cognex T1/T2 style): ``threshold`` flags ``false_reject_rate`` of good frames, the
lower ``marginal_threshold`` sends another ``review_rate`` of them to a person.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from oringscan.errors import OringscanError
from oringscan.timeutil import utc_iso

log = logging.getLogger(__name__)

# A good frame scoring this many robust sigmas (1.4826 x MAD) above the median is an outlier and is
# left out of the tail fit (at most OUTLIER_MAX_SHARE of the frames, at least one may go).
OUTLIER_MAD_Z = 8.0
OUTLIER_MAX_SHARE = 0.05
BOOTSTRAP_ROUNDS = 400
# Recalibration refuses frames when more than this share of them score above the model's current
# flag threshold: the bank does not describe them (another type, or a camera change only a refit fixes).
MISMATCH_SHARE = 0.5


class CalibrationError(OringscanError):
    """Frames that cannot calibrate this model (another type, too few, unreadable): one line."""

    def __init__(self, path: Path | str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}" if self.path is not None else self.problem)


@dataclass(frozen=True)
class TailThreshold:
    """A threshold for a target exceedance rate, how it was found and what it is expected to do."""

    threshold: float
    target_rate: float
    expected_rate: float  # P(an unseen good frame scores above the threshold)
    interval: tuple[float, float]  # confidence interval of expected_rate
    method: str  # "gpd" (tail fit) or "empirical" (order statistic)
    n_frames: int
    n_exceed: int = 0  # exceedances the GPD was fitted to
    tail_start: float | None = None  # u: the peaks-over-threshold level
    shape: float | None = None  # GPD shape (xi; scipy's c)
    scale: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["interval"] = [float(self.interval[0]), float(self.interval[1])]
        return d


# --------------------------------------------------------------------------------------- tail fit
def gpd_pwm(excess: np.ndarray) -> tuple[float, float]:
    """(shape xi, scale) of a generalized Pareto by probability-weighted moments (location 0)."""
    y = np.sort(np.asarray(excess, dtype=np.float64))
    n = y.size
    if n < 3:
        return math.nan, math.nan
    a0 = float(y.mean())
    a1 = float(np.sum((n - np.arange(1, n + 1)) / (n - 1) * y) / n)
    den = a0 - 2.0 * a1
    if den <= 0 or a0 <= 0:
        return math.nan, math.nan
    k = a0 / den - 2.0
    return -k, 2.0 * a0 * a1 / den


def _tail(
    scores: np.ndarray, tail_fraction: float, min_tail_points: int
) -> tuple[float, int, float, float] | None:
    """(u, n_exceed, xi, scale) of the peaks-over-threshold fit, None when it is not usable."""
    s = np.sort(scores)
    n = s.size
    n_u = max(min_tail_points, math.ceil(tail_fraction * n))
    if 2 * n_u > n:
        return None  # not a tail any more: fewer than 2 x min_tail_points frames
    u = float(s[n - n_u - 1])
    excess = s[n - n_u :] - u
    if float(excess.max()) <= 0:
        return None
    xi, scale = gpd_pwm(excess)
    # Stable region: finite, positive scale, shape where PWM is trustworthy (xi < 0.5: finite variance).
    if not (math.isfinite(xi) and math.isfinite(scale) and scale > 0 and -1.0 < xi < 0.5):
        return None
    return u, n_u, xi, scale


def _rate_at(t: float, scores: np.ndarray, fit: tuple[float, int, float, float]) -> float:
    u, n_u, xi, scale = fit
    if t <= u:
        return float((scores > t).mean())
    return float(n_u / scores.size * stats.genpareto.sf(t - u, xi, loc=0.0, scale=scale))


def order_statistic_rate(
    scores: np.ndarray, t: float, confidence: float
) -> tuple[float, tuple[float, float]]:
    """Exceedance rate of a threshold at a sample value: j / (n + 1) and the exact Beta(j, n + 1 - j) interval."""
    n = scores.size
    j = int((scores >= t).sum()) if math.isfinite(t) else 0
    if j == 0:
        return 0.0, (0.0, 1.0 - (1.0 - confidence) ** (1.0 / (n + 1)) if n else 1.0)
    a = (1.0 - confidence) / 2.0
    beta = stats.beta(j, n + 1 - j)
    return j / (n + 1), (float(beta.ppf(a)), float(beta.ppf(1.0 - a)))


def supported_rate(n_frames: int) -> float:
    """The smallest false-reject rate n good frames show without extrapolating: 1 / (n + 1)."""
    return 1.0 / (n_frames + 1)


def tail_threshold(
    scores: Sequence[float] | np.ndarray,
    rate: float,
    *,
    tail_fraction: float = 0.3,
    min_tail_points: int = 8,
    confidence: float = 0.9,
    bootstrap: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
    source: str = "screening calibration",
) -> TailThreshold:
    """The score an unseen good frame exceeds with probability ``rate`` (see the module docstring).

    ``source`` starts the warning when the tail cannot be fitted (which screen is calibrating).
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    n = s.size
    if n == 0:
        raise CalibrationError(None, "no good frame scores to calibrate a threshold on")
    fit = _tail(s, tail_fraction, min_tail_points)
    note = ""
    if fit is not None and rate < fit[1] / n:
        u, n_u, xi, scale = fit
        t = u + float(stats.genpareto.isf(rate * n / n_u, xi, loc=0.0, scale=scale))
        if math.isfinite(t):
            lo, hi = _bootstrap_interval(s, t, tail_fraction, min_tail_points, confidence, bootstrap, seed)
            return TailThreshold(t, rate, _rate_at(t, s, fit), (lo, hi), "gpd", n, n_u, u, xi, scale)
        note = "tail fit gave no finite threshold"
    elif fit is None:
        note = (
            f"too few frames for a tail fit ({n} < {2 * min_tail_points})"
            if n < 2 * min_tail_points
            else "tail fit unstable"
        )
    else:
        note = "target inside the data: empirical quantile"
    t = _empirical_threshold(s, rate)
    expected, interval = order_statistic_rate(s, t, confidence)
    if fit is None:
        log.warning(
            "%s: %s; using the empirical quantile of %d good frames "
            "(expected false-reject rate %.1f%%, asked %.1f%%)",
            source,
            note,
            n,
            100 * expected,
            100 * rate,
        )
    return TailThreshold(t, rate, expected, interval, "empirical", n, note=note)


def _empirical_threshold(s: np.ndarray, rate: float) -> float:
    """The sample value a new frame exceeds with probability closest to ``rate`` without going over
    it where the data allow (j-th highest: j / (n + 1))."""
    v = np.sort(s)[::-1]
    j = max(1, min(v.size, math.floor(rate * (v.size + 1))))
    return float(v[j - 1])


def _bootstrap_interval(
    s: np.ndarray,
    t: float,
    tail_fraction: float,
    min_tail_points: int,
    confidence: float,
    rounds: int,
    seed: int,
) -> tuple[float, float]:
    """Percentile interval of the fitted exceedance rate at ``t`` over resampled score sets."""
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(rounds):
        b = rng.choice(s, size=s.size, replace=True)
        fit = _tail(b, tail_fraction, min_tail_points)
        rates.append(float((b > t).mean()) if fit is None else _rate_at(t, b, fit))
    a = (1.0 - confidence) / 2.0
    lo, hi = float(np.quantile(rates, a)), float(np.quantile(rates, 1.0 - a))
    # The bootstrap alone covers too rarely with tens of frames; the Clopper-Pearson interval of the
    # out-of-fold exceedances of t (distribution-free) widens it where the data are thin.
    k, n = int((s > t).sum()), s.size
    cp_lo = float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0
    cp_hi = float(stats.beta.ppf(1.0 - a, k + 1, n - k)) if k < n else 1.0
    return min(lo, cp_lo), max(hi, cp_hi)


# --------------------------------------------------------------------------------------- outliers
def robust_outliers(
    scores: np.ndarray, z: float = OUTLIER_MAD_Z, max_share: float = OUTLIER_MAX_SHARE
) -> np.ndarray:
    """Indices of good frames scoring far above the rest (a mislabelled or broken frame)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 5:
        return np.zeros(0, dtype=int)
    med = float(np.median(s))
    mad = 1.4826 * float(np.median(np.abs(s - med)))
    if mad <= 0:
        return np.zeros(0, dtype=int)
    zs = (s - med) / mad
    order = np.argsort(-zs)
    cap = max(1, int(max_share * s.size))
    return np.array([i for i in order[:cap] if zs[i] > z], dtype=int)


# --------------------------------------------------------------------------------------- both thresholds
def calibrate_good_scores(
    scores: Sequence[float] | np.ndarray,
    names: Sequence[str],
    flag_rate: float,
    review_rate: float | None,
    *,
    marginal_fraction: float | None = None,
    tail_fraction: float = 0.3,
    min_tail_points: int = 8,
    confidence: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Flag and marginal thresholds from good frame scores nobody fitted on, with what they promise.

    ``review_rate`` None with ``marginal_fraction`` set keeps the old fixed band (old configs);
    ``review_rate`` 0 (or both None) means no marginal band.
    """
    s = np.asarray(scores, dtype=np.float64)
    names = list(names)
    out_idx = robust_outliers(s)
    keep = np.ones(s.size, dtype=bool)
    keep[out_idx] = False
    outliers = [{"frame": names[i], "score": float(s[i])} for i in out_idx]
    for o in outliers:
        log.warning(
            "screening calibration: good frame %s scores %.4g, far above the other good frames "
            "(median %.4g): left out of the threshold fit; check it",
            o["frame"],
            o["score"],
            float(np.median(s)),
        )
    good = s[keep]
    n = int(good.size)
    kw = {
        "tail_fraction": tail_fraction,
        "min_tail_points": min_tail_points,
        "confidence": confidence,
        "seed": seed,
    }
    flag = tail_threshold(good, flag_rate, **kw)
    marginal: TailThreshold | None = None
    marginal_threshold: float | None = None
    band = "none"
    if review_rate is not None and review_rate > 0:
        marginal = tail_threshold(good, min(0.99, flag_rate + review_rate), **kw)
        marginal_threshold = min(marginal.threshold, flag.threshold)
        band = "calibrated"
    elif review_rate is None and marginal_fraction is not None:
        marginal_threshold = flag.threshold * marginal_fraction
        band = f"fixed {marginal_fraction:g} x threshold (screening.marginal_fraction)"
    support = supported_rate(n)
    info: dict[str, Any] = {
        "method": "cross-fitted tail fit" if flag.method == "gpd" else "cross-fitted empirical quantile",
        "false_reject_rate_target": flag_rate,
        "review_rate_target": review_rate,
        "threshold": flag.threshold,
        "marginal_threshold": marginal_threshold,
        "marginal_band": band,
        "expected_false_reject_rate": flag.expected_rate,
        "expected_false_reject_interval": list(flag.interval),
        "confidence": confidence,
        "n_good_frames": n,
        "supported_false_reject_rate": support,
        "flag_fit": flag.to_json(),
        "outlier_frames": outliers,
        "oof_frame_false_reject_rate": float((good > flag.threshold).mean()),
        "good_frame_score_p50": float(np.median(good)),
        "good_frame_score_max": float(good.max()),
    }
    if marginal is not None:
        info["expected_review_rate"] = max(0.0, marginal.expected_rate - flag.expected_rate)
        # Distribution-free: Clopper-Pearson of the good frames that fall in the band.
        k = int(((good > marginal_threshold) & (good <= flag.threshold)).sum())
        a = (1.0 - confidence) / 2.0
        info["expected_review_interval"] = [
            float(stats.beta.ppf(a, k, n - k + 1)) if k > 0 else 0.0,
            float(stats.beta.ppf(1.0 - a, k + 1, n - k)) if k < n else 1.0,
        ]
        info["review_fit"] = marginal.to_json()
    info["statement"] = support_statement(flag, support)
    return info


def support_statement(flag: TailThreshold, support: float) -> str:
    """One plain sentence: what the threshold is expected to do and whether the data support the target."""
    lo, hi = flag.interval
    head = (
        f"expected false-reject rate on unseen good frames {flag.expected_rate:.1%} "
        f"({lo:.1%}-{hi:.1%}), from {flag.n_frames} good frames"
    )
    if flag.target_rate >= support:
        return head
    if flag.method == "gpd":
        return (
            f"{head}; {flag.n_frames} good frames support a false-reject target of about {support:.1%}; "
            f"asked {flag.target_rate:.1%}: the threshold extrapolates the fitted tail beyond the data"
        )
    return (
        f"{head}; {flag.n_frames} good frames support a false-reject target of about {support:.1%}; "
        f"asked {flag.target_rate:.1%}: the threshold is the highest good score, so expect {flag.expected_rate:.1%}"
    )


def history_entry(
    old: dict[str, Any], new: dict[str, Any], frames: Sequence[str], source: str
) -> dict[str, Any]:
    """One line of metadata history: what changed, from which frames, when."""
    return {
        "date": utc_iso(),
        "source": source,
        "old_threshold": old.get("threshold"),
        "new_threshold": new.get("threshold"),
        "old_marginal_threshold": old.get("marginal_threshold"),
        "new_marginal_threshold": new.get("marginal_threshold"),
        "n_frames": len(frames),
        "frames": list(frames)[:500],
        "expected_false_reject_rate": new.get("expected_false_reject_rate"),
        "expected_false_reject_interval": new.get("expected_false_reject_interval"),
    }


# --------------------------------------------------------------------------------------- recalibration
MIN_RECALIBRATION_FRAMES = 10


def check_frames_folder(config: Any, oring_type: str, folder: Path) -> None:
    """Refuse a folder the config names as another type's (or this type's defect/rework) folder."""
    name = Path(folder).name
    own = config.oring_type(oring_type)
    if name in {own.defect_folder, own.rework_folder}:
        raise CalibrationError(
            folder, f"is {oring_type}'s defect/rework folder; recalibration needs good frames"
        )
    if name == own.good_folder:
        return
    for other, t in config.types.items():
        if other != oring_type and name in {t.good_folder, t.defect_folder, t.rework_folder}:
            raise CalibrationError(
                folder,
                f"is o-ring type {other!r}'s folder; this screening model is for {oring_type!r} "
                f"(fit a model for {other!r} with: oringscan train screening --model {other})",
            )


def score_frame_files(
    screen: Any, paths: Sequence[Path], config: Any
) -> tuple[list[str], list[float], list[str], list[tuple[float, float]]]:
    """Worst-tile score and ring size of each full frame (ROI + ring_tiles, as inspection does);
    unreadable frames or frames without a usable ring are skipped with the reason (third list)."""
    from oringscan.frames import read_frame
    from oringscan.roi import find_ring
    from oringscan.tiling import ring_tiles

    names: list[str] = []
    scores: list[float] = []
    skipped: list[str] = []
    sizes: list[tuple[float, float]] = []
    for path in paths:
        try:
            gray = read_frame(path, config.frame).image
        except OringscanError as exc:
            skipped.append(str(exc))
            continue
        roi = find_ring(gray, config.roi)
        if not roi.usable:
            skipped.append(f"{path}: no usable ring ({roi.reason or roi.status})")
            continue
        tiles, _ = ring_tiles(gray, roi, config)
        if not tiles:
            skipped.append(f"{path}: no ring tiles")
            continue
        names.append(str(path))
        scores.append(float(screen.score_tiles(tiles).score))
        sizes.append(ring_size([(t.box.x, t.box.y, t.image) for t in tiles]))
    for line in skipped:
        log.warning("recalibration: skipped %s", line)
    return names, scores, skipped, sizes


def recalibrate(
    screen: Any,
    names: Sequence[str],
    scores: Sequence[float],
    config: Any,
    *,
    source: str = "calibrate screening",
    where: Path | None = None,
    sizes: Sequence[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """New thresholds for ``screen`` (bank kept) from good frames' scores; records the change in its history.

    Refuses (CalibrationError) fewer than MIN_RECALIBRATION_FRAMES frames, and frames most of which
    score above the model's current flag threshold (the bank does not describe them: another o-ring
    type, or a camera change only a refit can follow), and frames whose rings (``sizes``, from
    ``ring_size``) are not the size of the fitted type's. Fewer frames than the target needs is allowed
    with a warning: the statement in the result says what the threshold is expected to do.
    """
    from oringscan.budget import split_false_reject_budget

    sc = config.screening
    s = np.asarray(scores, dtype=np.float64)
    if s.size < MIN_RECALIBRATION_FRAMES:
        raise CalibrationError(
            where,
            f"{s.size} usable good frame(s); recalibration needs at least "
            f"{MIN_RECALIBRATION_FRAMES} (the threshold would be their maximum)",
        )
    profile = None
    if sizes is not None:
        profile = size_profile(sizes)
        check_same_type(screen.meta.calibration.get("ring_size"), profile, screen.meta.oring_type, where)
    old_thr = float(screen.meta.threshold)
    above = float((s > old_thr).mean())
    if above > MISMATCH_SHARE:
        good_median = screen.meta.calibration.get("good_frame_score_p50", float("nan"))
        raise CalibrationError(
            where,
            f"{above:.0%} of these {s.size} frames score above the model's threshold {old_thr:.4g} "
            f"(median {float(np.median(s)):.4g}; its good frames: {good_median:.4g}): "
            f"they are not the {screen.meta.oring_type!r} parts its bank was fitted on (another o-ring type, "
            f"or a camera change beyond recalibration): refit with oringscan train screening",
        )
    budget = split_false_reject_budget(config)
    review = budget.review if (sc.review_rate is not None or sc.marginal_fraction is None) else None
    # A model with a ring-shape screen keeps it (a measurement of the ring, not of the bank's scores).
    info = calibrate_good_scores(
        s,
        list(names),
        budget.screening,
        review,
        marginal_fraction=sc.marginal_fraction,
        tail_fraction=sc.tail_fraction,
        min_tail_points=sc.min_tail_points,
        confidence=sc.confidence,
        seed=sc.seed,
    )
    info["method"] = info["method"].replace("cross-fitted", "new frames,")
    info["false_reject_budget"] = budget.as_dict()
    info["old_threshold_flags"] = above
    if budget.screening < info["supported_false_reject_rate"]:
        log.warning("recalibration: %s", info["statement"])
    old = {"threshold": old_thr, "marginal_threshold": screen.meta.marginal_threshold}
    meta = screen.meta
    meta.threshold = float(info["threshold"])
    meta.marginal_threshold = (
        None if info["marginal_threshold"] is None else float(info["marginal_threshold"])
    )
    kept = {
        k: v
        for k, v in meta.calibration.items()
        if k in ("patches_seen", "patches_per_tile", "bank_size", "folds", "ring_size", "shape_screen")
    }
    meta.calibration = {**kept, **info, "recalibrated": True}
    meta.oof_scores = {str(n): round(float(v), 6) for n, v in zip(names, s, strict=True)}
    meta.history = [*meta.history, history_entry(old, info, list(names), source)]
    return info


# --------------------------------------------------------------------------------------- ring size from tiles
PROFILE_SCALE = 4
# Recalibration frames whose median ring size (outer radius, or inner/outer ratio) differs from the
# fitted frames' by more than this (relative) are another type: one o-ring type's parts and camera
# vary by about 1-2 % in size.
TYPE_TOLERANCE = 0.03


def ring_size(tiles: Sequence[tuple[int, int, np.ndarray]]) -> tuple[float, float]:
    """(outer, inner) equivalent-circle radius in px of the non-zero (ring + margin) region of one
    frame's ring tiles (x, y, image). Training reads tiles, recalibration makes them with ring_tiles:
    the same measure on both sides, so the sizes compare even though the margin is included."""
    from scipy.ndimage import binary_fill_holes

    f = PROFILE_SCALE
    w = max(x + img.shape[1] for x, _, img in tiles) // f + 1
    h = max(y + img.shape[0] for _, y, img in tiles) // f + 1
    canvas = np.zeros((h, w), dtype=bool)
    for x, y, img in tiles:
        small = img[::f, ::f] > 0
        canvas[y // f : y // f + small.shape[0], x // f : x // f + small.shape[1]] |= small
    filled = binary_fill_holes(canvas)
    a_out = float(filled.sum()) * f * f
    a_in = float((filled & ~canvas).sum()) * f * f
    return math.sqrt(a_out / math.pi), math.sqrt(a_in / math.pi)


def size_profile(sizes: Sequence[tuple[float, float]]) -> dict[str, float]:
    """Median and spread of frames' ring sizes (stored in the model's metadata)."""
    a = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    ratio = a[:, 1] / np.maximum(a[:, 0], 1e-9)
    return {
        "n_frames": int(a.shape[0]),
        "outer_radius_px": float(np.median(a[:, 0])),
        "outer_radius_mad": float(np.median(np.abs(a[:, 0] - np.median(a[:, 0])))),
        "inner_ratio": float(np.median(ratio)),
        "inner_ratio_mad": float(np.median(np.abs(ratio - np.median(ratio)))),
    }


def check_same_type(
    fitted: dict[str, Any] | None,
    new: dict[str, float],
    oring_type: str,
    where: Path | None,
    tolerance: float = TYPE_TOLERANCE,
) -> None:
    """CalibrationError when the new frames' rings are not the size of the fitted type's."""
    if not fitted or not fitted.get("n_frames"):
        log.warning(
            "recalibration: the model has no ring size profile (fitted by an older oringscan); "
            "the o-ring type of the frames is checked by their scores only"
        )
        return
    d_out = new["outer_radius_px"] / fitted["outer_radius_px"] - 1.0
    d_ratio = new["inner_ratio"] / fitted["inner_ratio"] - 1.0
    if abs(d_out) > tolerance or abs(d_ratio) > tolerance:
        raise CalibrationError(
            where,
            f"these frames' rings (outer radius {new['outer_radius_px']:.0f} px, inner/outer "
            f"{new['inner_ratio']:.3f}, median of {new['n_frames']}) are not the size of the "
            f"{oring_type!r} rings the model was fitted on ({fitted['outer_radius_px']:.0f} px, "
            f"{fitted['inner_ratio']:.3f}): another o-ring type? fit its own model "
            f"(oringscan train screening), or refit after a camera change",
        )
