"""Rework operating point on unseen parts over several seeds: means and spreads (issue 11).

    python benchmarks/bench_rework_seeds.py [--seeds 3 4 5] [--train 40] [--good 120] [--per-kind 20]

The frames are those of ``bench_rework.py --operating-point --source plantlike`` (same scene recipe
and random stream per seed, so seeds 3 and 4 are the frames of the README's earlier two runs): the
independent renderer ``oringscan.testing.plantlike``, one nominal 650/390 px ring with moulding
scatter, lint over the edges, rework = ovality 3-8 % or flash 6-20 px on 10-90 degree arcs. Each
seed's measurements (metric vectors and the edges' excess profiles) are cached under
/tmp/oringscan_bench_rework/ (rendering and measuring is the slow part: ~1.3 s of CPU per full-size
frame), measured with the current ``[rework]`` settings (``flash_min_arc_deg`` included), so the
calibration variants compare on identical measurements.

Calibrations compared on the same frames:
  old       k = 2.5 per rule (Student-t widened), no budget;
  common    one common k for the whole rule set at the 2 % target (``allocation = "common"``, default);
  balanced  every rule at the same held-out share, the share set so the whole set meets the 2 %
            target (``allocation = "balanced"``);
  default   one common k at the default target: rework's 2 % less the ring-shape screen's share
            (``screening.shape_share``: 1.5 %). Range-type metrics (wall range, max/min) are
            calibrated on a log scale in every variant (``rework_rules.calibrate.LOG_SCALE``).
``--flash-arcs A B`` re-reads the protrusion heights from the cached profiles at those
``flash_min_arc_deg`` values (walls as measured). Target: unseen good not passed <= 2.5 % at
recall >= 0.95 (oval and flash), with 40 good frames.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

# Run as a script, so its own folder (benchmarks/) is first on the path: bench_rework imports as is.
from bench_rework import _judge, _plantlike_scene  # noqa: E402

from oringscan.config import Config, ReworkConfig  # noqa: E402
from oringscan.rework_rules import ReworkChecker, RulesFile  # noqa: E402
from oringscan.rework_rules.calibrate import budgeted_limits  # noqa: E402

CACHE = Path("/tmp/oringscan_bench_rework")
KINDS = ("good", "oval", "flash")


def measured(seed: int, n_train: int, n_good: int, per_kind: int) -> dict[str, list[Any]]:
    """Per kind, one entry per frame: {"values": metrics or None, "truth": scene facts}; cached."""
    path = CACHE / f"plantlike_v3_seed{seed}_{n_train}_{n_good}_{per_kind}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    from oringscan.testing.plantlike import render_plant_frame

    config = Config()
    probe = ReworkChecker(RulesFile(), config=config.rework, roi_config=config.roi)
    rng = np.random.default_rng(seed)  # the same stream as bench_rework.run_operating_point
    out: dict[str, list[Any]] = {}
    t0 = time.perf_counter()
    for kind, n in (("train", n_train), ("good", n_good), ("oval", per_kind), ("flash", per_kind)):
        rows = []
        for _ in range(n):
            scene = _plantlike_scene(kind, rng)
            image = render_plant_frame(scene, seed=int(rng.integers(1 << 30))).image
            report = probe.inspect(image)
            m = report.measurement
            rows.append(
                {
                    "values": None if m is None else m.values,
                    "truth": {"ellipticity": scene.ellipticity, "flash": [list(f) for f in scene.flash]},
                    # The excess profiles (px beyond the fit, per ray), so protrusion variants can be
                    # recomputed without rendering again (see ``protrusions``).
                    "excess": None
                    if m is None
                    else {e: np.round(getattr(m, e).excess, 2).tolist() for e in ("outer", "inner")},
                }
            )
        out[kind] = rows
        print(f"  seed {seed}: {kind} {n} frames measured ({time.perf_counter() - t0:.0f} s)", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out), encoding="utf-8")
    return out


def with_flash_arc(data: dict[str, list[Any]], arc_deg: float) -> dict[str, list[Any]]:
    """The same frames with the protrusion heights read as ``rework.flash_min_arc_deg = arc_deg``
    would (the opening of the stored excess profiles; 720 rays)."""
    from oringscan.rework_rules.measure import _held

    step = 2 * np.pi / 720
    out: dict[str, list[Any]] = {}
    for kind, rows in data.items():
        new_rows = []
        for r in rows:
            if r["values"] is None or r.get("excess") is None:
                new_rows.append(r)
                continue
            values = dict(r["values"])
            for edge in ("outer", "inner"):
                held = _held(np.asarray(r["excess"][edge], dtype=np.float64), arc_deg, step)
                values[f"{edge}_protrusion_px"] = float(max(held.max(), 0.0))
            new_rows.append({**r, "values": values})
        out[kind] = new_rows
    return out


def evaluate(data: dict[str, list[Any]], cfg: ReworkConfig, target: float | None) -> dict[str, Any]:
    train = [r["values"] for r in data["train"] if r["values"] is not None]
    rules, rates = budgeted_limits(train, cfg, target)
    checker = ReworkChecker(RulesFile(rule=rules), config=Config().rework)
    row: dict[str, Any] = {
        "k": rates.k_sigma,
        "expected": rates.expected,
        "low": rates.low,
        "high": rates.high,
    }
    missed: list[str] = []
    for kind in KINDS:
        flagged, fired = 0, {}
        for r in data[kind]:
            res = None if r["values"] is None else _judge(checker, r["values"])
            hit = res is None or res.verdict != "pass"
            flagged += hit
            if res is not None and kind == "good":
                for m in res.fired:
                    fired[m] = fired.get(m, 0) + 1
            if kind == "flash" and not hit:
                f = r["truth"]["flash"][0]
                missed.append(f"{f[3]} {f[2]:.1f} px over {np.degrees(f[1]):.0f} deg")
        row[kind] = flagged / max(1, len(data[kind]))
        if kind == "good":
            row["fired_on_good"] = fired
    row["flash_missed"] = missed
    limits = {r.metric: (r.lower, r.upper) for r in rules if "protrusion" in r.metric}
    row["protrusion_limits"] = limits
    return row


def variant_configs() -> list[tuple[str, ReworkConfig, float | None]]:
    from oringscan.rework_rules.calibrate import rework_target

    default = rework_target(Config())  # rework's 2 % less the ring-shape screen's share (1.5 %)
    assert default is not None
    return [
        ("old: k = 2.5 per rule", ReworkConfig(k_sigma=2.5), None),
        ("common k, set at 2 %", ReworkConfig(allocation="common"), 0.02),
        ("balanced, set at 2 %", ReworkConfig(allocation="balanced"), 0.02),
        (f"common k, default target {default:.1%}", ReworkConfig(allocation="common"), default),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5, 6])
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--good", type=int, default=120)
    ap.add_argument("--per-kind", type=int, default=20)
    ap.add_argument(
        "--flash-arcs",
        type=float,
        nargs="*",
        default=[],
        help="re-read the protrusion heights at these rework.flash_min_arc_deg values (walls stay as "
        "measured); default: the values as measured with the current config",
    )
    ap.add_argument("--measure-only", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    variants = [] if args.measure_only else variant_configs()
    arcs: list[float | None] = list(args.flash_arcs) or [None]
    variants = [
        (name if arc is None else f"{name}, flash arc {arc:g} deg", cfg, target, arc)
        for arc in arcs
        for name, cfg, target in variants
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in variants}
    for seed in args.seeds:
        data = measured(seed, args.train, args.good, args.per_kind)
        if args.measure_only:
            continue
        for name, cfg, target, arc in variants:
            row = evaluate(data if arc is None else with_flash_arc(data, arc), cfg, target)
            row["seed"] = seed
            results[name].append(row)
            print(
                f"seed {seed} {name:24s} k={row['k']:.2f} good not passed {row['good']:.1%} "
                f"(expected {row['expected']:.1%}, {row['low']:.1%}-{row['high']:.1%}) "
                f"oval {row['oval']:.2f} "
                f"flash {row['flash']:.2f} fired {row['fired_on_good']} missed {row['flash_missed']} "
                f"limits {row['protrusion_limits']}",
                flush=True,
            )
    if args.measure_only:
        return
    print(
        f"\n| calibration ({len(args.seeds)} seeds: {' '.join(map(str, args.seeds))}) "
        "| unseen good not passed, "
        "mean (min-max) | per seed | expected (mean) | recall oval, mean (min) | recall flash, mean (min) |"
    )
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        good = np.array([r["good"] for r in rows])
        oval = np.array([r["oval"] for r in rows])
        flash = np.array([r["flash"] for r in rows])
        exp = np.array([r["expected"] for r in rows])
        print(
            f"| {name} | {good.mean():.1%} ({good.min():.1%}-{good.max():.1%}) | "
            f"{' / '.join(f'{g:.1%}' for g in good)} | {exp.mean():.1%} "
            f"| {oval.mean():.2f} ({oval.min():.2f}) | "
            f"{flash.mean():.2f} ({flash.min():.2f}) |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
