"""Inspection database speed: recording a frame, and the dashboard's queries on a year-sized table.

1. ``record_frame`` (one transaction: frame + 12 tiles + rework checks, every 5th frame with two
   defect masks as RLE) in ms per frame, against the line's cadence (about one frame per second).
2. The dashboard's queries on ``--frames`` records (default 100,000, a few months of one line):
   review queue (first page, a deep page, worst first, one type), one run's frames, the runs list,
   yield per day,
   defects per class, stats, the rerun check. Each is timed with the indexes and then again with
   them dropped, in the same run: the ratio is what the indexes buy.

    python benchmarks/bench_db.py                                 # SQLite in a temp folder
    python benchmarks/bench_db.py --frames 20000 --url postgresql+psycopg://postgres@127.0.0.1:55432/bench
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from sqlalchemy import insert, inspect, text  # noqa: E402

from oringscan.db import InspectionStore  # noqa: E402
from oringscan.db.models import Base, Defect, Frame, Review, Run  # noqa: E402
from oringscan.testing.results import make_result  # noqa: E402

LINE_CADENCE_MS = 1000.0


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(samples)


def bench_record(store: InspectionStore, n: int) -> None:
    run_id = store.start_run(oring_type="model1", model_fingerprint="bench-record")
    results = [
        make_result(
            "defect" if i % 5 == 0 else "good",
            image=f"/plant/rec/{i}.bmp",
            sha256=f"r{i:063d}",
            n_tiles=12,
            score=2.0 if i % 5 == 0 else 0.4,
            defects=[("cut", 0.9), ("pit", 0.6)] if i % 5 == 0 else None,
            seed=i,
        )
        for i in range(n)
    ]
    per_kind: dict[str, list[float]] = {"good": [], "defect": []}
    for result in results:
        start = time.perf_counter()
        store.record_frame(run_id, result, frame_shape=(2048, 2448))
        per_kind[str(result.verdict)].append((time.perf_counter() - start) * 1000.0)
    store.finish_run(run_id)
    every = per_kind["good"] + per_kind["defect"]
    mean = statistics.fmean(every)
    print(
        f"record_frame: {mean:.1f} ms/frame mean ({1000 / mean:.0f} frames/s); good "
        f"{statistics.median(per_kind['good']):.1f} ms, "
        f"with 2 defect masks {statistics.median(per_kind['defect']):.1f} ms (medians); "
        f"{mean / LINE_CADENCE_MS:.3f} x the line's ~1 s/frame cadence"
    )


def fill(store: InspectionStore, n_frames: int, seed: int) -> int:
    """Bulk rows shaped like a plant's: 2 types, ~90% good, 1 run per 500 frames, 30% of flagged reviewed."""
    rng = random.Random(seed)
    start_day = datetime(2026, 1, 1, tzinfo=UTC)
    verdicts = ["good"] * 90 + ["defect"] * 5 + ["suspect"] * 3 + ["rework"] * 1 + ["error"] * 1
    runs, frames, defects, reviews = [], [], [], []
    frame_id = 1_000_000
    for r in range(n_frames // 500 + 1):
        runs.append(
            {
                "id": 10_000 + r,
                "started_at": start_day + timedelta(hours=4 * r),
                "oring_type": f"model{r % 2 + 1}",
                "status": "done",
                "model_fingerprint": f"fp{r % 2}",
                "host": "line1",
            }
        )
    for i in range(n_frames):
        run = runs[i // 500]
        verdict = rng.choice(verdicts)
        at = run["started_at"] + timedelta(seconds=i % 500)
        frame_id += 1
        frames.append(
            {
                "id": frame_id,
                "run_id": run["id"],
                "path": f"/plant/{run['oring_type']}/{i:07d}.bmp",
                "sha256": f"{i:064x}",
                "oring_type": run["oring_type"],
                "inspected_at": at,
                "verdict": verdict,
                "reasons": [],
                "timings": {"total": 900.0},
                "total_ms": 900.0,
                "screen_score": rng.random() * 2,
                "screen_threshold": 1.0,
                "n_defects": 1 if verdict == "defect" else 0,
                "max_defect_score": rng.random() if verdict == "defect" else None,
                "model_fingerprint": run["model_fingerprint"],
            }
        )
        if verdict == "defect":
            defects.append(
                {
                    "frame_id": frame_id,
                    "label": rng.choice(["cut", "pit", "flash"]),
                    "score": 0.8,
                    "x": 100,
                    "y": 100,
                    "w": 20,
                    "h": 10,
                    "area_px": 150,
                }
            )
        if verdict != "good" and rng.random() < 0.3:
            reviews.append(
                {
                    "frame_id": frame_id,
                    "operator": "anna",
                    "decision": rng.choice(["good", "defect"]),
                    "created_at": at + timedelta(hours=1),
                }
            )
    with store.engine.begin() as conn:
        conn.execute(insert(Run), runs)
        for chunk in range(0, len(frames), 5000):
            conn.execute(insert(Frame), frames[chunk : chunk + 5000])
        conn.execute(insert(Defect), defects)
        conn.execute(insert(Review), reviews)
    return runs[len(runs) // 2]["id"]


def queries(store: InspectionStore, run_id: int, n_frames: int) -> dict[str, Callable[[], object]]:
    return {
        "review queue, page 1": lambda: store.review_queue(limit=25),
        "review queue, page 40": lambda: store.review_queue(limit=25, offset=1000),
        "review queue, worst first": lambda: store.review_queue(order="worst", limit=25),
        "review queue, model2, last 7 days": lambda: store.review_queue(
            oring_type="model2",
            since=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=4 * (n_frames // 500) - 168),
        ),
        "frames of one run": lambda: store.frames(run_id=run_id, limit=500),
        "runs list with live counts": lambda: store.runs(limit=100),
        "yield per type per day": lambda: store.yield_by_day(),
        "defects per class per day": lambda: store.defects_by_class(),
        "stats (db stats)": lambda: store.stats(),
        "rerun check (find_inspected)": lambda: store.find_inspected(f"{n_frames // 2:064x}", "fp0"),
    }


def drop_indexes(store: InspectionStore) -> int:
    names = []
    for table in Base.metadata.sorted_tables:
        names += [ix["name"] for ix in inspect(store.engine).get_indexes(table.name)]
    with store.engine.begin() as conn:
        for name in names:
            conn.execute(text(f'DROP INDEX "{name}"'))  # names come from the schema, not from a user
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--record", type=int, default=100, help="frames recorded one by one")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--url", default=None, help="an EMPTY database (default: SQLite in a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{(Path(tmp) / 'bench.db').as_posix()}"
        store = InspectionStore(url)
        print(f"database: {store!r}")
        bench_record(store, args.record)
        start = time.perf_counter()
        run_id = fill(store, args.frames, args.seed)
        print(f"filled {args.frames} frames in {time.perf_counter() - start:.1f} s")
        with store.engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        checks = queries(store, run_id, args.frames)
        indexed = {name: timed(fn, args.repeats) for name, fn in checks.items()}
        n_dropped = drop_indexes(store)
        plain = {name: timed(fn, args.repeats) for name, fn in checks.items()}
        print(
            f"\n{'query':40s} {'indexed ms':>11s} {'no index ms':>12s} {'ratio':>7s}   ({n_dropped} indexes "
            "dropped)"
        )
        for name in checks:
            print(f"{name:40s} {indexed[name]:11.1f} {plain[name]:12.1f} {plain[name] / indexed[name]:6.1f}x")
        store.dispose()


if __name__ == "__main__":
    main()
