"""Hybrid pipeline vs the seed's way (Mask R-CNN on every ring tile), in one run, on one batch.

    python benchmarks/bench_pipeline.py [--workdir oringscan-demo] [--frames 10] [--minutes 3]
    python benchmarks/bench_pipeline.py --routes-workdir DIR [--route cpu_recipe --route-minutes 25]

Uses the models of an ``oringscan demo`` work dir when they are there (else trains them the
demo's way first), renders a fresh batch of full-size synthetic frames, 80% good, and inspects it
twice: the hybrid pipeline (PatchCore screening of every ring tile, Mask R-CNN only on flagged
tiles, rework rules) and the baseline (Mask R-CNN on every ring tile, nothing else). Prints
frames/s of both and their ratio, both defect recalls, false-reject rates, and the hybrid's
time per frame by stage.

``--routes-workdir`` takes the models of a ``bench_segmentation_routes.py`` run instead (one route
and budget, e.g. the CPU recipe after 25 CPU-minutes) and its unseen ``line`` frames.

Both methods are also timed in CPU seconds per frame (robust to a shared machine's load), and compared
**at equal defect recall**: the hybrid's recall is its share of defect frames called ``defect``; the
baseline's frame score is its highest defect score, and its threshold is the highest one that reaches
at least the hybrid's recall; false defects (good frames called defect) are compared there. Where the
frames have LabelMe files, a defect frame also counts "on truth" only when a reported defect's box
intersects a labelled defect's box (as in bench_segmentation_routes.py).

Goal (issue 6): hybrid >= 4x the baseline's frames/s at equal defect recall.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from oringscan.cli.common import set_threads
from oringscan.config import load_config
from oringscan.frames import read_frame
from oringscan.pipeline import Inspector, Prefetcher, confident_defects, inspect_paths
from oringscan.pipeline.demo import DEMO_MODEL, DemoPlan, build_demo_models
from oringscan.roi import find_ring
from oringscan.synth import synthesize_dataset
from oringscan.tiling import ring_tiles
from oringscan.types import Verdict


def models_ready(workdir: Path) -> bool:
    out = workdir / "output" / DEMO_MODEL
    return all(
        p.is_file()
        for p in (
            workdir / "demo.toml",
            out / "screening" / "metadata.json",
            out / "checkpoints" / "best_model.pth",
            out / "rework_rules.toml",
        )
    )


def baseline(
    inspector: Inspector, frames: list[Path]
) -> tuple[dict[Path, bool], float, int, float, dict[Path, list[Any]]]:
    """The seed's way: Mask R-CNN on every ring tile. Returns (defect found per frame, seconds, tiles,
    CPU seconds, every instance per frame)."""
    config = inspector.config
    found: dict[Path, bool] = {}
    instances_of: dict[Path, list[Any]] = {}
    n_tiles = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for item in Prefetcher(frames, config.frame):
        if item.frame is None:
            found[item.path] = False
            instances_of[item.path] = []
            continue
        roi = find_ring(item.frame.image, config.roi)
        tiles, _ = ring_tiles(item.frame.image, roi, config) if roi.usable else ([], 0)
        n_tiles += len(tiles)
        instances = inspector.segmenter.predict_tiles(tiles, batch_size=config.pipeline.tile_batch_size)
        instances_of[item.path] = instances
        found[item.path] = bool(
            confident_defects(instances, config.pipeline, inspector.gate)
        )  # calibrated score
    return found, time.perf_counter() - start, n_tiles, time.process_time() - cpu_start, instances_of


def equal_recall(
    target: float | None,
    scores: dict[Path, list[tuple[float, bool]]],
    is_defect: dict[Path, bool],
) -> dict[str, Any] | None:
    """The baseline at the highest score threshold whose frame recall reaches ``target``.

    ``scores``: per frame, (score, box on a labelled defect) of every instance."""
    if target is None:
        return None
    candidates = sorted({s for items in scores.values() for s, _ in items}, reverse=True)
    n_bad = sum(is_defect.values())
    n_good = len(is_defect) - n_bad
    for t in candidates:
        hits = [p for p in scores if is_defect[p] and any(s >= t for s, _ in scores[p])]
        if len(hits) / max(1, n_bad) >= target - 1e-9:
            return {
                "threshold": t,
                "defect_recall": len(hits) / max(1, n_bad),
                "defect_recall_on_truth": sum(any(s >= t and on for s, on in scores[p]) for p in hits)
                / max(1, n_bad),
                "false_defect_rate": rate(
                    sum(not is_defect[p] and any(s >= t for s, _ in scores[p]) for p in scores), n_good
                ),
            }
    return {"threshold": None, "defect_recall": 0.0, "note": f"never reaches recall {target:.2f}"}


def rate(hits: int, total: int) -> float | None:
    return None if total == 0 else hits / total


def inspector_root(args: argparse.Namespace) -> Path:
    if args.routes_workdir is None:
        return args.workdir / "output"
    suffix = "cpu" if args.route_clock == "cpu" else ""
    return args.routes_workdir / f"out_{args.route}_{args.route_minutes:g}{suffix}"


def _demo_setup(args: argparse.Namespace) -> tuple[Any, Inspector, list[Path], dict[Path, bool], Any]:
    """The demo's models (trained first if missing) and a fresh rendered batch, 80% good."""
    if not models_ready(args.workdir):
        print(f"no demo models in {args.workdir}: training them the demo's way first")
        build_demo_models(
            args.workdir,
            minutes=args.minutes,
            plan=DemoPlan(n_good=args.train_good, n_defect=args.train_defect, n_rework=3),
        )
    config = load_config(args.workdir / "demo.toml")
    n_defect = max(1, round(args.frames * 0.2))
    n_good = args.frames - n_defect
    batch_root = args.workdir / "bench_batch"
    synthesize_dataset(
        batch_root,
        config,
        types=(DEMO_MODEL,),
        n_good=n_good,
        n_defect=n_defect,
        n_rework=0,
        seed=2024,
        progress=False,
        size=(config.frame.width, config.frame.height),
    )
    spec = config.oring_type(DEMO_MODEL)
    config.pipeline.save_overlays = False
    inspector = Inspector.load(config, args.workdir / "output", DEMO_MODEL)
    inspector.with_maps = False
    frames, is_defect = _frames(batch_root, spec)
    return config, inspector, frames, is_defect, _label_reader(config, batch_root, spec)


def _routes_setup(args: argparse.Namespace) -> tuple[Any, Inspector, list[Path], dict[Path, bool], Any]:
    """One route's models from a bench_segmentation_routes.py work dir and its unseen line frames."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_segmentation_routes import _config

    config = _config(args.input_size)
    config.training.budget_clock = args.route_clock
    config.pipeline.save_overlays = False
    root = inspector_root(args)
    inspector = Inspector.load(config, root, "model1")
    inspector.with_maps = False
    if inspector.segmenter is not None and getattr(inspector.segmenter.spec, "anomaly_channel", False):
        raise SystemExit(
            f"{root}: the route takes screening maps as input; the every-tile baseline cannot run"
        )
    spec = config.oring_type("model1")
    line = args.routes_workdir / "line"
    frames, is_defect = _frames(line, spec)
    if args.limit:  # a quick check: the first N defect and N good frames
        frames = sorted(
            [p for p in frames if is_defect[p]][: args.limit]
            + [p for p in frames if not is_defect[p]][: args.limit]
        )
        is_defect = {p: is_defect[p] for p in frames}
    return config, inspector, frames, is_defect, _label_reader(config, line, spec)


def _frames(root: Path, spec: Any) -> tuple[list[Path], dict[Path, bool]]:
    good = sorted((root / "images" / spec.good_folder).glob("*.bmp"))
    bad = sorted((root / "images" / spec.defect_folder).glob("*.bmp"))
    frames = sorted(good + bad)
    return frames, {p: p in set(bad) for p in frames}


def _label_reader(config: Any, root: Path, spec: Any) -> Any:
    """frame path -> its labelled defects' pixels (empty where the frame has no LabelMe file)."""
    from oringscan.preprocess.labelme import load_instances

    def read(path: Path) -> list[tuple[Any, int, int]]:
        label = root / "labels" / spec.defect_folder / f"{path.stem}.json"
        if not label.is_file():
            return []
        instances, _ = load_instances(label, (config.frame.height, config.frame.width), config.classes)
        return [inst.pixels() for inst in instances]

    return read


def on_truth(defect: Any, truths: list[tuple[Any, int, int]]) -> tuple[bool, bool]:
    """(box of ``defect`` intersects a labelled defect's box, its mask shares a pixel with one)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_segmentation_routes import _on_truth

    return _on_truth(defect, truths)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("oringscan-demo"))
    parser.add_argument("--frames", type=int, default=10, help="batch size (80%% good)")
    parser.add_argument(
        "--minutes", type=float, default=3.0, help="segmentation training budget if models are missing"
    )
    parser.add_argument(
        "--train-good",
        type=int,
        default=24,
        help="good frames to train on if models are missing (more = a steadier screening threshold)",
    )
    parser.add_argument("--train-defect", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--routes-workdir",
        type=Path,
        default=None,
        help="use a bench_segmentation_routes.py work dir's models and unseen line frames",
    )
    parser.add_argument("--route", default="cpu_recipe")
    parser.add_argument("--route-minutes", type=float, default=25.0)
    parser.add_argument("--route-clock", choices=["wall", "cpu"], default="cpu")
    parser.add_argument("--input-size", type=int, default=448, help="the routes bench's --input-size")
    parser.add_argument("--limit", type=int, default=0, help="routes: only N defect and N good line frames")
    args = parser.parse_args()
    os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
    set_threads(args.threads)
    torch.set_num_threads(args.threads or torch.get_num_threads())

    if args.routes_workdir is not None:
        config, inspector, frames, is_defect, labels = _routes_setup(args)
    else:
        config, inspector, frames, is_defect, labels = _demo_setup(args)
    inspector.inspect_array(read_frame(frames[0], config.frame).image, "warm-up")  # lazy imports, allocations

    cpu_start = time.process_time()
    summary = inspect_paths(inspector, frames, None, save_overlays=False, progress=False)
    hybrid_cpu = time.process_time() - cpu_start
    hybrid_s = summary.seconds
    verdicts = {Path(r.image): r.verdict for r in summary.results}
    verdicts = {p: verdicts[p.absolute()] for p in frames}
    reported = {Path(r.image): r.defects for r in summary.results}
    reported = {p: reported[p.absolute()] for p in frames}
    seed_found, seed_s, seed_tiles, seed_cpu, seed_instances = baseline(inspector, frames)
    truths = {p: labels(p) for p in frames if is_defect[p]}
    hybrid_on_truth = sum(
        is_defect[p] and verdicts[p] is Verdict.DEFECT and any(on_truth(d, truths[p])[0] for d in reported[p])
        for p in frames
    )
    seed_scores = {
        p: [(float(d.score), bool(is_defect[p] and on_truth(d, truths[p])[0])) for d in seed_instances[p]]
        for p in frames
    }

    n_bad, n_good_frames = sum(is_defect.values()), len(frames) - sum(is_defect.values())
    hybrid = {
        "frames_per_s": len(frames) / hybrid_s,
        "cpu_s_per_frame": hybrid_cpu / len(frames),
        "defect_recall_strict_on_truth": rate(hybrid_on_truth, n_bad),
        "false_defect_rate": rate(
            sum(not is_defect[p] and verdicts[p] is Verdict.DEFECT for p in frames), n_good_frames
        ),
        "defect_recall_not_passed": rate(
            sum(is_defect[p] and verdicts[p] is not Verdict.GOOD for p in frames), n_bad
        ),
        "defect_recall_strict": rate(
            sum(is_defect[p] and verdicts[p] is Verdict.DEFECT for p in frames), n_bad
        ),
        "false_reject_rate": rate(
            sum(not is_defect[p] and verdicts[p] is not Verdict.GOOD for p in frames), n_good_frames
        ),
        "segmented_tiles": sum(
            sum(t.flagged for t in r.screening.tiles) for r in summary.results if r.screening
        ),
        "ms_per_frame_by_stage": {k: round(v, 1) for k, v in summary.mean_timings().items()},
        "verdicts": summary.counts,
    }
    seed = {
        "frames_per_s": len(frames) / seed_s,
        "cpu_s_per_frame": seed_cpu / len(frames),
        "at_hybrid_recall": equal_recall(hybrid["defect_recall_strict"], seed_scores, is_defect),
        "defect_recall": rate(sum(is_defect[p] and seed_found[p] for p in frames), n_bad),
        "false_reject_rate": rate(sum(not is_defect[p] and seed_found[p] for p in frames), n_good_frames),
        "segmented_tiles": seed_tiles,
    }
    report: dict[str, Any] = {
        "frames": len(frames),
        "good": n_good_frames,
        "defect": n_bad,
        "frame_size": [config.frame.width, config.frame.height],
        "models": str(inspector_root(args)),
        "load1": round(os.getloadavg()[0], 2),
        "threads": torch.get_num_threads(),
        "segmentation_backbone": config.training.backbone,
        "hybrid": hybrid,
        "seed_every_tile": seed,
        "speedup": hybrid["frames_per_s"] / seed["frames_per_s"],
    }

    def pct(v: float | None) -> str:
        return "   -" if v is None else f"{100 * v:5.1f}%"

    print(
        f"\nbatch: {len(frames)} frames {config.frame.width}x{config.frame.height} ({n_good_frames} good, "
        f"{n_bad} defect),"
        f" {torch.get_num_threads()} torch thread(s)"
    )
    print(
        f"{'method':34} {'frames/s':>9} {'s/frame':>8} {'tiles segm.':>11} {'recall':>8} {'false rej.':>10}"
    )
    print(
        f"{'hybrid (screen + segm. flagged)':34} {hybrid['frames_per_s']:9.3f} "
        f"{1 / hybrid['frames_per_s']:8.2f} "
        f"{hybrid['segmented_tiles']:11d} {pct(hybrid['defect_recall_not_passed']):>8} "
        f"{pct(hybrid['false_reject_rate']):>10}"
    )
    print(f"{'  strict (verdict defect)':34} {'':9} {'':8} {'':11} {pct(hybrid['defect_recall_strict']):>8}")
    print(
        f"{'seed: Mask R-CNN on every tile':34} {seed['frames_per_s']:9.3f} {1 / seed['frames_per_s']:8.2f} "
        f"{seed['segmented_tiles']:11d} {pct(seed['defect_recall']):>8} {pct(seed['false_reject_rate']):>10}"
    )
    print(f"speedup hybrid / seed: {report['speedup']:.2f}x (goal >= 4x at equal recall)")
    at = seed["at_hybrid_recall"] or {}
    print(
        f"CPU s/frame: hybrid {hybrid['cpu_s_per_frame']:.2f}, seed {seed['cpu_s_per_frame']:.2f} "
        f"({seed['cpu_s_per_frame'] / hybrid['cpu_s_per_frame']:.2f}x); strict recall hybrid "
        f"{pct(hybrid['defect_recall_strict'])} (on truth {pct(hybrid['defect_recall_strict_on_truth'])}), "
        f"false defects {pct(hybrid['false_defect_rate'])}"
    )
    print(
        f"seed at the hybrid's recall: score >= {at.get('threshold')}, recall {pct(at.get('defect_recall'))} "
        f"(on truth {pct(at.get('defect_recall_on_truth'))}), false defects {pct(at.get('false_defect_rate'))}"
        f"  [load {report['load1']}]"
    )
    print(
        "hybrid ms/frame by stage: "
        + ", ".join(f"{k} {v:.0f}" for k, v in hybrid["ms_per_frame_by_stage"].items())
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
