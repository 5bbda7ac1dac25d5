"""Ray engine against the in-process engine on the same frames, in one run; actors 1 and 2; a killed worker.

    python benchmarks/bench_ray.py [--workdir bench-ray] [--frames 24] [--threads 1] [--json-out r.json]

Builds small models the demo's way in ``--workdir`` when they are not there (quarter-size frames,
160 px tiles: every stage runs the plant's code at 1/16 of the pixels), renders a fresh batch of
frames (80 % good), then inspects it, each time into a fresh SQLite database with overlays on:

1. in-process (``oringscan inspect``), 2. Ray with 1 actor, 3. Ray with 2 actors,
4. Ray with 2 actors, one actor process SIGKILLed after the first frame, 5. in-process again.

On Ray, a task per frame reads it and cuts it into ring tiles (ROI, tiles, rework geometry) while the
actors run screening and segmentation, so those stages' times in the Ray rows were spent in tasks.
Throughput is frames / seconds of the batch, after Ray is up and the actors have loaded their models
(that start-up is printed on its own: it is paid once per batch, seconds against an archive's hours).
The in-process runs before and after bracket the Ray runs, so a machine whose load changes
meanwhile shows up as a gap between them. Each run checks one record per frame.

Goal (issue 14): Ray with 1 actor >= 0.8x the in-process frames/s (the overhead stays small).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from oringscan.cli.common import set_threads
from oringscan.config import load_config
from oringscan.db import InspectionStore
from oringscan.pipeline import Inspector, inspect_paths
from oringscan.pipeline.demo import DEMO_MODEL, DemoPlan, build_demo_models
from oringscan.pipeline.ray_engine import RayEngine, RayOptions, connect, inspect_paths_ray, require_ray
from oringscan.synth import synthesize_dataset

# Quarter-size frames, the light resnet18-FPN from scratch (no weights to fetch), one preprocess worker.
SMALL = DemoPlan(
    n_good=10,
    n_defect=6,
    n_rework=2,
    size=(612, 512),
    tile_size=160,
    overlap=20,
    backbone="resnet18_fpn",
    input_size=None,
    workers=1,
)


def models_ready(workdir: Path) -> bool:
    out = workdir / "output" / DEMO_MODEL
    files = ("screening/metadata.json", "checkpoints/best_model.pth", "rework_rules.toml")
    return (workdir / "demo.toml").is_file() and all((out / f).is_file() for f in files)


def one_record_per_frame(store: InspectionStore, run_id: int, n: int) -> bool:
    rows = store.frames(run_id=run_id, limit=None)
    paths = [r.image for r in rows.items]
    return rows.total == n and len(set(paths)) == n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("bench-ray"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads per engine worker")
    parser.add_argument(
        "--minutes", type=float, default=0.5, help="segmentation training if models are missing"
    )
    parser.add_argument(
        "--defect-min-score",
        type=float,
        default=None,
        help="[pipeline] defect_min_score: a not-qualified segmenter then runs on the flagged tiles",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
    os.environ["ORINGSCAN_THREADS"] = str(args.threads)
    set_threads(args.threads)
    ray = require_ray()
    load_at_start = os.getloadavg()

    if not models_ready(args.workdir):
        print(f"no models in {args.workdir}: building small ones the demo's way first")
        build_demo_models(args.workdir, minutes=args.minutes, plan=SMALL, progress=False)
    config = load_config(args.workdir / "demo.toml")
    if args.defect_min_score is not None:
        config.pipeline.defect_min_score = args.defect_min_score
    output = args.workdir / "output"
    n_defect = max(1, round(args.frames * 0.2))
    batch = args.workdir / "bench_batch"
    synthesize_dataset(
        batch,
        config,
        types=(DEMO_MODEL,),
        n_good=args.frames - n_defect,
        n_defect=n_defect,
        n_rework=0,
        seed=2026,
        progress=False,
        size=(config.frame.width, config.frame.height),
    )
    frames = sorted((batch / "images").rglob("*.bmp"))
    scratch = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    runs: list[dict[str, Any]] = []

    def record(
        name: str, summary: Any, store: InspectionStore, startup_s: float | None = None, **extra: Any
    ) -> None:
        ok = one_record_per_frame(store, summary.run_id, len(frames))
        runs.append(
            {
                "engine": name,
                "frames": len(summary.results),
                "seconds": round(summary.seconds, 2),
                "frames_per_s": round(len(summary.results) / summary.seconds, 3),
                "startup_s": None if startup_s is None else round(startup_s, 1),
                "one_record_per_frame": ok,
                "verdicts": summary.counts,
                "ms_per_frame_by_stage": {k: round(v, 1) for k, v in summary.mean_timings().items()},
                **extra,
            }
        )
        print(f"{name:28} {runs[-1]['frames_per_s']:7.3f} frames/s  one record per frame: {ok}", flush=True)

    def in_process(name: str) -> None:
        store = InspectionStore(f"sqlite:///{scratch / (name + '.db')}")
        start = time.perf_counter()
        inspector = Inspector.load(config, output, DEMO_MODEL)
        loaded = time.perf_counter() - start
        summary = inspect_paths(inspector, frames, store, output_root=scratch / name, progress=False)
        record(name, summary, store, loaded)
        store.dispose()

    in_process("in-process (before)")
    started_ray = connect(RayOptions(actors=2))
    try:
        for actors, kill in ((1, False), (2, False), (2, True)):
            name = f"ray, {actors} actor(s)" + (", one killed" if kill else "")
            store = InspectionStore(f"sqlite:///{scratch / (name + '.db')}")
            start = time.perf_counter()
            engine = RayEngine(config, output, DEMO_MODEL, RayOptions(actors=actors, threads=args.threads))
            engine.start()
            startup = time.perf_counter() - start
            victim, killed = engine.pids[0], []

            def kill_once(
                _result: Any, victim: int = victim, killed: list[int] = killed, kill: bool = kill
            ) -> None:
                if kill and not killed:
                    os.kill(victim, signal.SIGKILL)
                    killed.append(victim)

            try:
                summary = inspect_paths_ray(
                    config, output, DEMO_MODEL, frames, store, engine=engine, on_result=kill_once,
                    overlay_root=scratch / name,
                )  # fmt: skip
            finally:
                engine.close()
            record(name, summary, store, startup, killed_pid=killed[0] if killed else None)
            store.dispose()
    finally:
        if started_ray:
            ray.shutdown()
    in_process("in-process (after)")

    base = sum(r["frames_per_s"] for r in runs if r["engine"].startswith("in-process")) / 2
    for r in runs:
        r["vs_in_process"] = round(r["frames_per_s"] / base, 2)
    report = {
        "frames": len(frames),
        "frame_size": [config.frame.width, config.frame.height],
        "threads_per_worker": args.threads,
        "cpus": os.cpu_count(),
        "load_average_start": load_at_start,
        "load_average": os.getloadavg(),
        "runs": runs,
    }
    print(
        f"\n{len(frames)} frames {config.frame.width}x{config.frame.height}, "
        f"{args.threads} thread(s) per worker"
    )
    print(f"{'engine':28} {'frames/s':>9} {'vs in-proc':>10} {'startup s':>9} {'1 rec/frame':>11}")
    for r in runs:
        startup = "" if r["startup_s"] is None else f"{r['startup_s']:.1f}"
        print(
            f"{r['engine']:28} {r['frames_per_s']:9.3f} {r['vs_in_process']:9.2f}x {startup:>9} "
            f"{r['one_record_per_frame']!s:>11}"
        )
    for r in (runs[0], runs[1]):
        stages = r["ms_per_frame_by_stage"]
        print(f"{r['engine']} ms/frame by stage: " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    print(
        f"load average at the start: {' '.join(f'{x:.1f}' for x in load_at_start)}, "
        f"at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
