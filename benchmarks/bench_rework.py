"""Rework rules benchmark: recall, false rework, accuracy and seconds per frame on one core.

    python benchmarks/bench_rework.py                       # both generators, default sizes
    python benchmarks/bench_rework.py --source synth --train 30 --good 60 --per-kind 20

For each generator (``synth``: the project's plant-like frames, ``rings``: exact analytic rings of
``oringscan.synth.exact``), limits are calibrated (mean +/- k sigma) from ``--train``
good frames, then held-out good frames give the false-rework rate and ``--per-kind`` frames of each
rework kind (bore off-centre >= 10 px, ovality >= 3 %, flash >= 6 px) give the recall. Accuracy is
measured against the generator's truth. The baseline, run on the same frames in the same run, is the
mask-edge measurement (``subpixel = false``): its edge noise and time are printed as ratios. Time is
the thread's CPU time (one core's cost, OpenCV and BLAS pinned to one thread) and wall time, which
inflates on a shared machine.

Targets (issue 5): recall >= 0.95 per kind, false rework <= 2 %, radii within +/- 1 px, flash
height within +/- 2 px, <= 0.3 s per frame on one core (ROI included).

Operating point (issue 11), old and new calibration side by side on the same measured frames::

    python benchmarks/bench_rework.py --operating-point --train 40 --good 120 --per-kind 20

For each renderer (``synth``: oringscan.synth model1; ``plantlike``: the independent renderer of
oringscan.testing.plantlike, one nominal ring size with moulding scatter, flash and ovality as rework),
limits are calibrated from ``--train`` good frames the old way (k = 2.5 per rule, Student-t
widened) and the new way (one common k for the whole rule set, rework's 2 % share of the line's
false-reject budget); unseen good frames give the false-rework rate against the expected rate and
its interval, rework frames the recall. Target: unseen good not passed <= 2.5 % at recall >= 0.95.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from oringscan.config import Config, ReworkConfig  # noqa: E402
from oringscan.rework_rules import ReworkChecker, RulesFile, calibrate_from_values, measure_ring  # noqa: E402
from oringscan.roi import find_ring  # noqa: E402
from oringscan.synth.exact import draw_ring, random_scene, random_spec  # noqa: E402

KINDS = ("offset", "oval", "flash")
EXPECTED = {
    "offset": ("concentricity_px", "concentricity_pct"),
    "oval": ("outer_ovality", "inner_ovality"),
    "flash": ("outer_protrusion_px", "inner_protrusion_px"),
}


@dataclass
class Sample:
    kind: str  # good / offset / oval / flash
    gray: np.ndarray
    truth: dict[
        str, Any
    ]  # outer_radius, inner_radius, concentricity_px, ovality (ratio), flash_edge, flash_px


@dataclass
class Tally:
    times: list[float] = field(default_factory=list)  # wall clock
    cpu_times: list[float] = field(default_factory=list)  # this thread's CPU time: one core's cost
    base_times: list[float] = field(default_factory=list)
    base_cpu_times: list[float] = field(default_factory=list)
    edge_noise: list[float] = field(default_factory=list)
    base_edge_noise: list[float] = field(default_factory=list)
    err: dict[str, list[float]] = field(default_factory=dict)

    def add_err(self, name: str, value: float) -> None:
        self.err.setdefault(name, []).append(value)


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def synth_samples(kind: str, n: int, rng: np.random.Generator) -> Iterator[Sample]:
    from oringscan.synth import render_frame

    rework_kind = {"offset": "bore_offset", "oval": "ovality", "flash": "flash"}.get(kind)
    for i in range(n):
        frame = render_frame(
            "good" if kind == "good" else "rework",
            rng,
            oring_type=("model1", "model2")[i % 2],
            color=bool(rng.random() < 0.2),
            rework_kind=rework_kind,
        )
        t = frame.truth
        e = t["ovality_pct"] / 100
        truth = {
            "outer_radius": t["outer_radius"],
            "inner_radius": t["inner_radius"],
            "concentricity_px": t["bore_offset_px"],
            "ovality": (1 + e / 2) / (1 - e / 2),
        }
        flash = (t.get("rework") or {}).get("flash")
        if flash:
            truth["flash_edge"], truth["flash_px"] = flash["edge"], flash["height_px"]
        yield Sample(kind, _gray(frame.image), truth)


def ring_samples(kind: str, n: int, rng: np.random.Generator) -> Iterator[Sample]:
    for _ in range(n):
        spec = random_spec("good" if kind == "good" else kind, rng)  # type: ignore[arg-type]
        image = draw_ring(spec, random_scene(rng), seed=int(rng.integers(1 << 30)))
        t = spec.truth()
        truth = {k: t[k] for k in ("outer_radius", "inner_radius", "concentricity_px")}
        truth["ovality"] = t["outer_ovality"]
        for edge in ("outer", "inner"):
            if t[f"{edge}_protrusion_px"] > 0:
                truth["flash_edge"], truth["flash_px"] = edge, t[f"{edge}_protrusion_px"]
        yield Sample(kind, _gray(image), truth)


def _measure(sample: Sample, config: Config, tally: Tally) -> dict[str, float] | None:
    t0, c0 = time.perf_counter(), time.thread_time()
    roi = find_ring(sample.gray, config.roi)
    try:
        m = measure_ring(roi, None, sample.gray, config.rework)
    except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, it does not stop
        print(f"  measurement failed ({sample.kind}): {exc}", file=sys.stderr)
        return None
    tally.times.append(time.perf_counter() - t0)
    tally.cpu_times.append(time.thread_time() - c0)
    t1, c1 = time.perf_counter(), time.thread_time()
    roi_b = find_ring(sample.gray, config.roi)
    base = measure_ring(
        roi_b, None, sample.gray, ReworkConfig(**{**config.rework.model_dump(), "subpixel": False})
    )
    tally.base_times.append(time.perf_counter() - t1)
    tally.base_cpu_times.append(time.thread_time() - c1)
    if sample.kind == "good":  # per-ray edge scatter about the fit: what sub-pixel edges buy
        tally.edge_noise.append(float(np.nanstd(m.outer.radius - m.outer.fit_radius)))
        tally.base_edge_noise.append(float(np.nanstd(base.outer.radius - base.outer.fit_radius)))
    v, t = m.values, sample.truth
    tally.add_err("outer_radius", v["outer_radius"] - t["outer_radius"])
    tally.add_err("inner_radius", v["inner_radius"] - t["inner_radius"])
    tally.add_err("concentricity_px", v["concentricity_px"] - t["concentricity_px"])
    tally.add_err("ovality_pct", 100 * (v["outer_ovality"] - t["ovality"]))
    if "flash_px" in t:
        tally.add_err("flash_px", v[f"{t['flash_edge']}_protrusion_px"] - t["flash_px"])
    return v


def run_source(
    name: str, make: Callable[[str, int, np.random.Generator], Iterator[Sample]], args: argparse.Namespace
) -> dict[str, Any]:
    config = Config()
    rng = np.random.default_rng(args.seed)
    tally = Tally()
    print(f"[{name}] measuring {args.train} training good frames ...", file=sys.stderr)
    train = [v for s in make("good", args.train, rng) if (v := _measure(s, config, tally)) is not None]
    report = calibrate_from_values(
        train, config, "model1", rules_path=None, source=f"{name} training frames", write=False
    )
    checker = ReworkChecker(report.rules, config=config.rework)
    out: dict[str, Any] = {"rules": len(report.rules.rule)}
    for kind in ("good", *KINDS):
        n = args.good if kind == "good" else args.per_kind
        print(f"[{name}] {kind}: {n} frames ...", file=sys.stderr)
        flagged = by_expected = total = genuine = 0
        fired_on_good: dict[str, int] = {}
        for s in make(kind, n, rng):
            v = _measure(s, config, tally)
            total += 1
            if v is None:
                flagged += 1
                continue
            result = _judge(checker, v)
            if result.verdict != "pass":
                flagged += 1
            if kind == "good":
                for f in result.fired:
                    fired_on_good[f] = fired_on_good.get(f, 0) + 1
                if result.fired and _truth_also_fires(checker, s.truth, result.fired):
                    genuine += 1
            elif any(f in EXPECTED[kind] for f in result.fired):
                by_expected += 1
        out[kind] = {
            "n": total,
            "flagged": flagged,
            "by_expected": by_expected,
            "fired_on_good": fired_on_good,
            "genuine": genuine,
        }
    out["tally"] = tally
    return out


def _truth_also_fires(checker: ReworkChecker, truth: dict[str, Any], fired: list[str]) -> bool:
    """A good part whose *true* size is outside the calibrated band: the rule, not the
    measurement, flags it (the band comes from a finite sample of good parts)."""
    o, i = truth["outer_radius"], truth["inner_radius"]
    true_values = {"outer_radius": o, "inner_radius": i, "mean_radius": (o + i) / 2, "wall_mean": o - i}
    rules = [r for r in checker.rules.rule if r.metric in fired]
    return any(r.metric in true_values and r.fires(true_values[r.metric]) for r in rules)


def _judge(checker: ReworkChecker, values: dict[str, float]):  # noqa: ANN202
    class _M:  # the checker only reads .values
        pass

    m = _M()
    m.values = values  # type: ignore[attr-defined]
    return checker.judge(m)  # type: ignore[arg-type]


def _stats(values: list[float]) -> str:
    a = np.abs(np.asarray(values))
    if len(a) == 0:
        return "-"
    return f"mean {a.mean():.3f}  p95 {np.percentile(a, 95):.3f}  max {a.max():.3f}"


def print_report(name: str, res: dict[str, Any]) -> None:
    t: Tally = res["tally"]
    print(f"\n== {name}: {res['rules']} calibrated rules ==")
    print(f"{'kind':8s} {'frames':>6s} {'flagged':>8s} {'rate':>6s}  {'by expected metric':>18s}   target")
    for kind in ("good", *KINDS):
        r = res[kind]
        rate = r["flagged"] / max(r["n"], 1)
        target = "false rework <= 0.02" if kind == "good" else "recall >= 0.95"
        # Good parts whose true size lies outside the band calibrated from a finite sample are
        # flagged by the rule as the plant defines it, not by a measurement error.
        measured_rate = (r["flagged"] - r.get("genuine", 0)) / max(r["n"], 1)
        ok = measured_rate <= 0.02 if kind == "good" else rate >= 0.95
        exp = "" if kind == "good" else f"{r['by_expected'] / max(r['n'], 1):.3f}"
        print(
            f"{kind:8s} {r['n']:6d} {r['flagged']:8d} {rate:6.3f}  {exp:>18s}   {target} "
            f"{'OK' if ok else 'MISSED'}"
        )
    if res["good"]["fired_on_good"]:
        g = res["good"]
        print("  rules fired on good frames:", g["fired_on_good"])
        print(
            f"  of the {g['flagged']} flagged good frames, {g['genuine']} have a true size outside the "
            "calibrated band "
            f"(measurement-caused false rework: {(g['flagged'] - g['genuine']) / max(g['n'], 1):.3f})"
        )
    print("accuracy (|measured - truth|):")
    for key, limit in (
        ("outer_radius", 1.0),
        ("inner_radius", 1.0),
        ("concentricity_px", None),
        ("ovality_pct", None),
        ("flash_px", 2.0),
    ):
        vals = t.err.get(key, [])
        ok = "" if limit is None or not vals else ("OK" if np.max(np.abs(vals)) <= limit else "MISSED")
        lim = f"(target +/- {limit:g} px)" if limit else ""
        print(f"  {key:17s} {_stats(vals)}  {lim} {ok}")
    tm, tc = np.asarray(t.times), np.asarray(t.cpu_times)
    tb, tbc = np.asarray(t.base_times), np.asarray(t.base_cpu_times)
    print(
        f"seconds per frame, ROI + measurement, 1 thread: CPU median {np.median(tc):.3f}  p95 "
        f"{np.percentile(tc, 95):.3f}  "
        f"max {tc.max():.3f}  (target <= 0.3) {'OK' if np.percentile(tc, 95) <= 0.3 else 'MISSED'}; "
        f"wall median {np.median(tm):.3f} (wall inflates when the machine is shared)"
    )
    print(
        f"baseline (mask edges, no sub-pixel): CPU median {np.median(tbc):.3f} s; ratio sub-pixel/baseline "
        f"{np.median(tc) / np.median(tbc):.2f} (CPU), {np.median(tm) / np.median(tb):.2f} (wall)"
    )
    if t.edge_noise:
        en, eb = float(np.median(t.edge_noise)), float(np.median(t.base_edge_noise))
        print(
            f"per-ray edge scatter on good frames: sub-pixel {en:.3f} px, mask edges {eb:.3f} px (ratio "
            f"{en / eb:.2f})"
        )


# --- operating point (issue 11) ---------------------------------------------------------------------


def _plantlike_scene(kind: str, rng: np.random.Generator) -> Any:
    """A plant-like scene of one o-ring type: nominal 650/390 px with moulding scatter (sizes move
    together), slight natural ovality; rework: flash 6-20 px on 10-90 deg, or ovality 3-8 %."""
    import math

    from oringscan.testing.plantlike import random_plant_scene

    scene = random_plant_scene(rng, "dark" if rng.random() < 0.2 else "light")
    shrink = rng.normal(0, 1)
    scene.r_out = 650 + 3.0 * shrink + rng.normal(0, 0.6)
    scene.r_in = 390 + 1.8 * shrink + rng.normal(0, 0.6)
    scene.cx = 1224 + rng.uniform(-120, 120)
    scene.cy = 1024 + rng.uniform(-120, 120)
    scene.ellipticity = float(rng.uniform(-0.004, 0.004))
    scene.n_pits = scene.n_scratches = 0  # surface defects are not geometry
    if kind == "oval":
        scene.ellipticity = float(rng.uniform(0.03, 0.08))
    elif kind == "flash":
        edge = "outer" if rng.random() < 0.5 else "inner"
        scene.flash = [
            (
                float(rng.uniform(0, 2 * math.pi)),
                math.radians(rng.uniform(10, 90)),
                float(rng.uniform(6, 20)),
                edge,
            )
        ]
    return scene


def op_frames(source: str, kind: str, n: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    if source == "synth":
        from oringscan.synth import render_frame

        rework_kind = {"offset": "bore_offset", "oval": "ovality", "flash": "flash"}.get(kind)
        for _ in range(n):
            frame = render_frame(
                "good" if kind == "good" else "rework",
                rng,
                oring_type="model1",
                color=bool(rng.random() < 0.2),
                rework_kind=rework_kind,
            )
            yield _gray(frame.image)
    else:
        from oringscan.testing.plantlike import render_plant_frame

        for _ in range(n):
            yield render_plant_frame(_plantlike_scene(kind, rng), seed=int(rng.integers(1 << 30))).image


def run_operating_point(source: str, args: argparse.Namespace) -> dict[str, Any]:
    from oringscan.rework_rules.calibrate import budgeted_limits, rate_lines

    config = Config()
    rng = np.random.default_rng(args.seed)
    probe = ReworkChecker(RulesFile(), config=config.rework, roi_config=config.roi)
    kinds = ("offset", "oval", "flash") if source == "synth" else ("oval", "flash")

    def measure(kind: str, n: int) -> list[dict[str, float] | None]:
        print(f"[{source}] {kind}: rendering and measuring {n} frames ...", file=sys.stderr, flush=True)
        out = []
        for gray in op_frames(source, kind, n, rng):
            report = probe.inspect(gray)
            out.append(None if report.measurement is None else report.measurement.values)
        return out

    train = [v for v in measure("good", args.train) if v is not None]
    unseen = {
        kind: measure(kind, args.good if kind == "good" else args.per_kind) for kind in ("good", *kinds)
    }
    results: dict[str, Any] = {"source": source, "train": len(train)}
    for name, cfg, target in (
        ("old: k = 2.5 per rule", ReworkConfig(k_sigma=2.5), None),
        ("new: budgeted rule set (2 %)", ReworkConfig(), 0.02),
    ):
        rules, rates = budgeted_limits(train, cfg, target)
        checker = ReworkChecker(RulesFile(rule=rules), config=config.rework)
        row: dict[str, Any] = {
            "k": rates.k_sigma,
            "expected": rates.expected,
            "low": rates.low,
            "high": rates.high,
            "loo": rates.loo_flagged,
            "notes": rate_lines(rates)[2:],
        }
        fired: dict[str, int] = {}
        for kind, values in unseen.items():
            flagged = 0
            for v in values:
                result = None if v is None else _judge(checker, v)
                flagged += result is None or result.verdict != "pass"
                if kind == "good" and result is not None:
                    for metric in result.fired:
                        fired[metric] = fired.get(metric, 0) + 1
            row[kind] = (flagged, len(values))
        row["notes"] = row["notes"] + ([f"rules fired on unseen good frames: {fired}"] if fired else [])
        results[name] = row
    return results


def print_operating_point(res: dict[str, Any]) -> None:
    print(f"\n== rework operating point: {res['source']}, calibrated on {res['train']} good frames ==")
    for name, row in res.items():
        if not isinstance(row, dict):
            continue
        g, n = row["good"]
        rate = g / max(n, 1)
        recalls = {k: v[0] / max(v[1], 1) for k, v in row.items() if k in ("offset", "oval", "flash")}
        from scipy import stats

        m_low = 0.0 if g == 0 else float(stats.beta.ppf(0.05, g, n - g + 1))
        m_high = 1.0 if g == n else float(stats.beta.ppf(0.95, g + 1, n - g))
        # The expectation against what the unseen frames show (their own 90 % interval), and the
        # stated interval against it (overlap: both can hold the true rate).
        agrees = m_low <= row["expected"] <= m_high
        overlap = row["low"] <= m_high and m_low <= row["high"]
        ok = rate <= 0.025 and min(recalls.values()) >= 0.95
        print(
            f"{name:30s} k={row['k']:.2f}  unseen good not passed {g}/{n} = {rate:.3f} (90% "
            f"{m_low:.3f}-{m_high:.3f}; "
            f"expected {row['expected']:.3f} {'inside' if agrees else 'OUTSIDE'}, stated interval "
            f"{row['low']:.3f}-{row['high']:.3f} {'overlaps' if overlap else 'DISJOINT'}; held-out "
            f"{row['loo']}/{res['train']})  "
            + "  ".join(f"recall {k} {v:.2f}" for k, v in recalls.items())
            + f"   target <=0.025 at recall >=0.95: {'OK' if ok else 'MISSED'}"
        )
        for note in row["notes"]:
            print(f"    note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", choices=("synth", "rings", "plantlike", "both"), default="both")
    parser.add_argument("--train", type=int, default=30, help="good frames to calibrate from")
    parser.add_argument("--good", type=int, default=60, help="held-out good frames (false rework)")
    parser.add_argument("--per-kind", type=int, default=20, help="frames per rework kind (recall)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--operating-point",
        action="store_true",
        help="old vs new calibration on unseen frames of both renderers (issue 11)",
    )
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    if args.operating_point:
        chosen_op = ["synth", "plantlike"] if args.source == "both" else [args.source]
        for source in chosen_op:
            print_operating_point(run_operating_point(source, args))
        return 0
    sources = {"synth": synth_samples, "rings": ring_samples}
    chosen = list(sources) if args.source == "both" else [args.source]
    for name in chosen:
        print_report(name, run_source(name, sources[name], args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
