"""Peak memory (RSS) of training, evaluation and inspection per backbone at plant scale (issue 17).

One command, one table (~40 CPU-minutes of one core; 58 minutes wall on 2 cores at load 3-9;
each row is written to ``--json-out`` as its case ends, and ``--resume-from`` that file skips the
cases it holds, so a cut-short run can be continued)::

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py [--backbones lite0_fpn resnet50_fpn]
        [--tiles 100 500 2000] [--cases eval,train,inspect,pipeline] [--train-cpu-minutes 1]
        [--train-backbones lite0_fpn resnet50_fpn] [--pipeline-backbones lite0_fpn]
        [--distinct-tiles lite0_fpn=20 resnet50_fpn=4] [--workdir /tmp/oringscan-bench-memory]
        [--json-out rows.json] [--resume-from rows.json]

Data: the project's generator (``oringscan.synth``) renders 14 full-size frames (2448x2048; 6
defect, 8 good) of ``model1``; ``preprocess`` cuts them into the default 640 px tiles; screening
and the rework rules are fitted on them. Larger sets re-use those files: an N-tile split lists the
real tiles again and again (each copy its own image id and frame name), a pipeline split of F frames
lists links to the real frames. Models: untrained Mask R-CNNs saved once per backbone, the CPU
recipe's ``lite0_fpn`` (ImageNet EfficientNet-Lite0, random heads, input 448, what ``backbone =
"auto"`` builds on CPU) and ``resnet50_fpn`` (the CUDA default; random init, no weights here, input
800). Untrained, they emit the maximum of 100 detections per tile (every box above the COCO score
floor 0.05 for evaluation; inspection is run with ``score_threshold = 0`` and ``[pipeline]
defect_min_score = 0`` and the screening threshold forced to ~0, so every ring tile is segmented and
every detection is reported): the worst case for memory.

Every case runs in a fresh process, one thread (``OMP_NUM_THREADS=1``); its peak resident memory
is the child's ``ru_maxrss`` from ``os.wait4``. Cases, per backbone:

  eval      ``evaluate_segmentation`` (what ``predict --evaluate`` / ``evaluate segmentation`` run) on
            a test split of N tiles; the frame-level part re-assembles frames from the tiles' RLEs
            (``full_frames=False``; a whole-frame pass is inspection, measured by ``inspect``).
  train     ``train_segmentation`` (what ``oringscan train segmentation`` runs): lite0_fpn with the CPU
            recipe (``backbone = "auto"`` on CPU), resnet50_fpn with its defaults (random init, input
            800, whole tiles, batch 4); ``--train-cpu-minutes`` of CPU time (``budget_clock = "cpu"``,
            checked after each iteration) on the real train tiles, then its validation on a val split
            of ``--train-val-tiles`` tiles; ``untrained``: a fresh start, ``resumed``: ``resume=True``
            from the first run's checkpoint (a trained model: another budget, another validation).
  inspect   ``inspect_paths`` (what ``oringscan inspect`` runs; SQLite store, overlays written) of
            ``--inspect-frames`` full-size frames.
  pipeline  ``evaluate_pipeline`` (what ``oringscan evaluate pipeline`` runs) on F frames with F x
            (ring tiles per frame) ~ N tiles; ``--pipeline-backbones`` (default the CPU recipe only:
            ~4.5 CPU-s per frame after the network, 223 frames for 2,000 tiles).

CPU time: a 640 px tile costs ~1.3 s (lite0_fpn, input 448) and ~9 s (resnet50_fpn, input 800) of
one core through the network, plus ~0.15 s to paste, threshold and encode its 100 masks. To fit
2,000-tile cases on a shared machine, the network runs on the first ``--distinct-tiles`` distinct
tiles (``--distinct-frames`` frames for inspect/pipeline) of each case; later copies of the same tile
replay its detections (boxes, scores and 28x28 mask logits, ~0.4 MB per distinct tile, kept) from a
cache keyed by the input's bytes and the weights' version. Everything after the network (pasting
every mask at tile size, RLE, COCOeval, stitching, overlays) runs for every tile: that is the part
that grew with N before issue 17; the network's own peak (weights + one batch) is reached on the
real forwards. ``evaluate pipeline`` cases replay screening likewise: a repeated frame gets fresh
copies of its tile scores and anomaly maps (~2.5 CPU-s per frame saved). ``--distinct-tiles 0``
runs the network on every tile (``--distinct-frames BACKBONE=0``: every frame).

Target (issue 17): flat in N apart from the model and one batch, <= 4 GB for the CPU recipe at
2,000 val tiles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "model1"
INPUT_SIZE = {"lite0_fpn": 448, "resnet50_fpn": 800}
DEFAULT_DISTINCT = {"lite0_fpn": 20, "resnet50_fpn": 4}
DEFAULT_DISTINCT_FRAMES = {"lite0_fpn": 2, "resnet50_fpn": 1}
N_DEFECT, N_GOOD = 6, 8


# ----------------------------------------------------------------------------- config and data
def base_config(backbone: str | None = None) -> Any:
    """Defaults (640 px tiles) on CPU; ``backbone`` fixes the model (None: the CPU recipe via auto)."""
    from oringscan.config import Config

    config = Config()
    update: dict[str, Any] = {"device": "cpu", "num_workers": 0, "amp": False}
    if backbone is not None:
        update |= {"backbone": backbone, "input_size": INPUT_SIZE.get(backbone)}
    config.segmentation = config.training.model_copy(update=update)
    config.preprocess.workers = 1
    return config


def worst_case(config: Any) -> Any:
    """Inspection reports every detection: the segmenter keeps every box, every instance is a defect."""
    config.segmentation = config.training.model_copy(update={"score_threshold": 0.0, "min_mask_area": 1})
    config.pipeline.defect_min_score = 0.0
    return config


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Frames, tiles, screening, rework rules and one untrained checkpoint per backbone (cached)."""
    import torch

    from oringscan.preprocess import preprocess_type
    from oringscan.rework_rules import calibrate_rules
    from oringscan.screening import fit_screening
    from oringscan.segmentation.checkpoints import save_checkpoint
    from oringscan.segmentation.models import create_model
    from oringscan.synth import synthesize_dataset
    from oringscan.workspace import TypeWorkspace

    work = Path(args.workdir).resolve()
    data_root, output_root = work / "dataset", work / "output"
    config = base_config()
    workspace = TypeWorkspace.from_config(config, output_root, MODEL)
    marker = work / "prepared.json"
    if not marker.is_file():
        synthesize_dataset(
            data_root,
            config,
            types=(MODEL,),
            n_good=N_GOOD,
            n_defect=N_DEFECT,
            n_rework=0,
            seed=0,
            progress=False,
        )
        summary = preprocess_type(config, data_root, output_root, MODEL, progress=False, workers=1)
        fit_screening(config, output_root, MODEL, progress=False)
        calibrate_rules(config, data_root, output_root, MODEL, progress=False)
        marker.write_text(json.dumps({"preprocess": summary}, default=str), encoding="utf-8")
    names = list(config.classes.names)
    for backbone in args.backbones:
        path = work / f"untrained_{backbone}.pth"
        if path.is_file():
            continue
        bb_config = base_config(backbone)
        torch.manual_seed(0)
        model, spec, pretrained = create_model(bb_config.training, len(names) + 1, config.tiling.tile_size)
        save_checkpoint(
            path,
            {
                "model": model.state_dict(),
                "spec": spec.to_dict(),
                "class_names": names,
                "oring_type": MODEL,
                "epoch": 0,
                "config": bb_config.model_dump(mode="json"),
                "pretrained": pretrained,
                "backbone": spec.backbone,
            },
        )
    tiles = [
        (split, image) for split in ("train", "val", "test") for image in workspace.read_coco(split)["images"]
    ]
    frames = sorted({image["source_image"] for _split, image in tiles})
    return {"tiles": len(tiles), "frames": len(frames), "tiles_per_frame": len(tiles) / len(frames)}


def tile_pool(
    workspace: Any,
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """All real tiles as COCO images (absolute file names), their annotations, the categories;
    defect tiles first."""
    entries: list[tuple[bool, dict[str, Any], list[dict[str, Any]]]] = []
    categories: list[dict[str, Any]] = []
    for split in ("test", "val", "train"):
        coco = workspace.read_coco(split)
        categories = coco["categories"]
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        for image in coco["images"]:
            anns = by_image.get(int(image["id"]), [])
            path = str(workspace.tile_path(split, image["file_name"]).resolve())
            entries.append((not anns, dict(image, file_name=path), anns))
    entries.sort(key=lambda entry: entry[0])  # stable: defect tiles first
    return [e[1] for e in entries], [e[2] for e in entries], categories


def write_tile_split(
    work: Path, case_dir: Path, split: str, n: int, distinct: int, train: bool = False
) -> None:
    """An N-tile COCO split cycling over the first ``distinct`` real tiles (all with 0), each copy
    with its own image id and frame name; with ``train`` also the real train split."""
    from oringscan.workspace import TypeWorkspace

    source = TypeWorkspace.from_config(base_config(), work / "output", MODEL)
    images, annotations, categories = tile_pool(source)
    pool = list(range(len(images)))[: distinct or None]
    out_images, out_anns = [], []
    for k in range(n):
        index = pool[k % len(pool)]
        copy = k // len(pool)
        image = dict(images[index], id=k + 1, source_image=f"copy{copy:04d}/{images[index]['source_image']}")
        out_images.append(image)
        for ann in annotations[index]:
            out_anns.append(dict(ann, id=len(out_anns) + 1, image_id=k + 1))
    target = TypeWorkspace.from_config(base_config(), case_dir, MODEL)
    target.annotations(split).parent.mkdir(parents=True, exist_ok=True)
    target.annotations(split).write_text(
        json.dumps({"images": out_images, "annotations": out_anns, "categories": categories}),
        encoding="utf-8",
    )
    if train:
        coco = source.read_coco("train")
        for image in coco["images"]:
            image["file_name"] = str(source.tile_path("train", image["file_name"]).resolve())
        target.annotations("train").write_text(json.dumps(coco), encoding="utf-8")


def frame_pool(work: Path, distinct: int) -> list[Path]:
    """The rendered frames, defect frames first, the first ``distinct`` of them (all with 0)."""
    from oringscan.config import Config

    spec = Config().oring_type(MODEL)
    frames = []
    for folder in (spec.defect_folder, spec.good_folder):
        frames += sorted(
            p for p in (work / "dataset" / "images" / folder).iterdir() if not p.name.startswith("bench_")
        )
    return frames[: distinct or None]


def frame_links(work: Path, count: int, distinct: int) -> list[Path]:
    """``count`` distinct frame files (links next to the rendered ones) cycling over the pool."""
    pool = frame_pool(work, distinct)
    links = []
    for i in range(count):
        source = pool[i % len(pool)]
        link = source.parent / f"bench_{i:05d}_{source.name}"
        if not link.exists():
            link.symlink_to(source.name)
        links.append(link)
    return links


# ----------------------------------------------------------------------------- child side
class Counter:
    """Counts tiles and detections through the network stage, and real forwards vs replays."""

    def __init__(self) -> None:
        self.tiles = self.detections = self.forwards = self.replays = 0
        self.cached_bytes = 0
        self.train_iterations = 0
        self.screened = self.screen_replays = 0


def install_replay(distinct: bool, counter: Counter) -> None:
    """Wrap ``run_model_streamed`` (the network stage of evaluation and inspection): count, and with
    ``distinct`` replay the detections of an input already seen with the same weights."""
    import torch

    import oringscan.segmentation.coco_eval as coco_eval
    import oringscan.segmentation.inference as inference

    original = inference.run_model_streamed
    cache: dict[tuple[str, int], Any] = {}

    def key(model: torch.nn.Module, image: torch.Tensor) -> tuple[str, int]:
        version = sum(p._version for p in model.parameters())  # changes when training updates weights
        digest = hashlib.blake2b(image.detach().cpu().contiguous().numpy().tobytes(), digest_size=16)
        return digest.hexdigest(), version

    def streamed(model: torch.nn.Module, images: Any, device: torch.device) -> Any:
        keys = [key(model, image) for image in images] if distinct else []
        if distinct and all(k in cache for k in keys):
            out = [cache[k] for k in keys]
            counter.replays += len(out)
        else:
            out = original(model, images, device)
            counter.forwards += len(images)
            if distinct and out is not None:
                for k, det in zip(keys, out, strict=True):
                    if k not in cache:
                        cache[k] = det
                        tensors = (det.boxes, det.labels, det.scores, det._masks, det._paste_boxes)
                        counter.cached_bytes += sum(t.nbytes for t in tensors)
        if out is not None:
            counter.tiles += len(out)
            counter.detections += sum(len(det.scores) for det in out)
        return out

    inference.run_model_streamed = streamed
    coco_eval.run_model_streamed = streamed

    step = torch.optim.SGD.step

    def counted_step(self: torch.optim.SGD, *a: Any, **k: Any) -> Any:
        counter.train_iterations += 1
        return step(self, *a, **k)

    torch.optim.SGD.step = counted_step  # type: ignore[method-assign]


def install_screening_replay(screening: Any, counter: Counter) -> None:
    """``evaluate pipeline`` cases: replay the screening scores and anomaly maps of a frame already
    seen (fresh copies, so whatever the pipeline keeps of them still costs memory per frame)."""
    import numpy as np

    original = screening.score_images
    cache: dict[tuple[str, bool], tuple[Any, Any]] = {}

    def score_images(images: list[Any], with_maps: bool = False, batch_size: int = 8) -> Any:
        digest = hashlib.blake2b(digest_size=16)
        for image in images:
            digest.update(repr(image.shape).encode())
            digest.update(np.ascontiguousarray(image).tobytes())
        key = (digest.hexdigest(), with_maps)
        if key not in cache:
            cache[key] = original(images, with_maps=with_maps, batch_size=batch_size)
            counter.screened += 1
        else:
            counter.screen_replays += 1
        scores, maps = cache[key]
        return scores.copy(), None if maps is None else [m.copy() for m in maps]

    screening.score_images = score_images


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("oringscan").setLevel(logging.ERROR)
    counter = Counter()
    install_replay(args.distinct > 0, counter)
    work = Path(args.workdir).resolve()
    case_dir = work / f"{args.case}_{args.backbone}_{args.n}"
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    if args.case == "eval":
        from oringscan.segmentation.evaluation import evaluate_segmentation

        metrics = evaluate_segmentation(
            base_config(args.backbone),
            case_dir,
            MODEL,
            checkpoint=work / f"untrained_{args.backbone}.pth",
            device="cpu",
            full_frames=False,
            progress=False,
        )
        extra = {"segm_AP": metrics["tiles"]["segm"]["AP"] if metrics["tiles"] else None}
    elif args.case == "train":
        from oringscan.segmentation.engine import train_segmentation

        # lite0_fpn: backbone "auto" on CPU, the CPU recipe (lite0_fpn, input 448, crops, ...);
        # others: that backbone with its defaults (resnet50_fpn: input 800, whole tiles, batch 4).
        config = base_config(None if args.backbone == "lite0_fpn" else args.backbone)
        config.segmentation = config.training.model_copy(
            update={"max_minutes": args.minutes, "budget_clock": "cpu", "epochs": 50, "patience": 50}
        )
        summary = train_segmentation(
            config,
            work / f"train_{args.backbone}_{args.val_tiles}",
            MODEL,
            resume=args.n == 1,
            progress=False,
            echo=lambda _line: None,
        )
        extra = {k: summary.get(k) for k in ("val_tiles", "epochs_run", "backbone")}
        extra["iterations"] = counter.train_iterations
    elif args.case in ("inspect", "pipeline"):
        from oringscan.pipeline.inspector import Inspector

        config = worst_case(base_config(args.backbone))
        inspector = Inspector.load(config, work / "output", MODEL, device="cpu")
        inspector.screening.meta.threshold = 1e-12  # every tile flagged: all of them are segmented
        inspector.screening.meta.marginal_threshold = None
        frames = frame_links(work, args.n, args.distinct_frames)
        if args.case == "inspect":
            from oringscan.pipeline.batch import inspect_paths
            from oringscan.pipeline.cli import open_store

            store = open_store(f"sqlite:///{case_dir}/inspections.db")
            summary = inspect_paths(
                inspector,
                frames,
                store,
                output_root=case_dir,
                save_overlays=True,
                progress=False,
                reinspect=True,
            )
            extra = {"frames": len(summary.results)}
        else:
            from oringscan.pipeline import evaluate_pipeline

            if args.distinct_frames:
                install_screening_replay(inspector.screening, counter)

            truth = [(f, "defect" if "defect" in f.parent.name else "good") for f in frames]
            report = evaluate_pipeline(
                inspector, work / "dataset", work / "output", out_dir=case_dir, progress=False, frames=truth
            )
            extra = {
                "frames": len(report["frames_detail"]),
                "frames_screened": counter.screened,
                "screening_replays": counter.screen_replays,
            }
    else:
        raise SystemExit(f"unknown case {args.case}")
    return {
        "case": args.case,
        "backbone": args.backbone,
        "n": args.n,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time(),
        "tiles": counter.tiles,
        "detections_per_tile": counter.detections / counter.tiles if counter.tiles else None,
        "forwards": counter.forwards,
        "replays": counter.replays,
        "cache_mb": counter.cached_bytes / 2**20,
        **extra,
    }


# ----------------------------------------------------------------------------- parent side
def child(args: argparse.Namespace, case: str, backbone: str, n: int, distinct: int) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--case", case, "--backbone", backbone, "--n", str(n),
        "--workdir", str(args.workdir), "--distinct", str(distinct),
        "--distinct-frames-one", str(args.distinct_frames.get(backbone, 1)),
        "--minutes", str(args.train_cpu_minutes), "--val-tiles", str(args.train_val_tiles),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ORINGSCAN_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        problem = (err.read().strip().splitlines() or ["no output"])[-1]
    if code != 0 or not lines:
        return {"case": case, "backbone": backbone, "n": n, "error": f"exit {code}: {problem}"}
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    return result


def plan(args: argparse.Namespace, tiles_per_frame: float) -> list[tuple[str, str, int]]:
    """(case, backbone, N) in priority order: the CPU recipe first, the expensive cases last."""
    wanted = args.cases.split(",")
    frames = {n: max(1, math.ceil(n / tiles_per_frame)) for n in args.tiles}
    first, *others = args.backbones
    train = [b for b in args.backbones if b in args.train_backbones]
    pipeline = [b for b in args.backbones if b in args.pipeline_backbones]
    steps: list[tuple[str, str, int]] = []
    steps += [("eval", first, n) for n in args.tiles]
    steps += [("train", train[0], 0)] if train else []
    steps += [("inspect", b, args.inspect_frames) for b in args.backbones]
    for other in others:
        steps += [("eval", other, n) for n in args.tiles if n <= 500]
    steps += [("train", b, 0) for b in train[1:]]
    steps += [("train", b, 1) for b in train]
    for backbone in pipeline[:1]:
        steps += [("pipeline", backbone, frames[n]) for n in args.tiles if n <= 500]
    for other in others:
        steps += [("eval", other, n) for n in args.tiles if n > 500]
    for backbone in pipeline[:1]:
        steps += [("pipeline", backbone, frames[n]) for n in args.tiles if n > 500]
    for backbone in pipeline[1:]:
        steps += [("pipeline", backbone, frames[n]) for n in args.tiles]
    return [s for s in steps if s[0] in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", nargs="+", default=["lite0_fpn", "resnet50_fpn"])
    parser.add_argument("--tiles", type=int, nargs="+", default=[100, 500, 2000])
    parser.add_argument("--cases", default="eval,train,inspect,pipeline")
    parser.add_argument("--train-cpu-minutes", type=float, default=1.0)
    parser.add_argument("--train-backbones", nargs="+", default=["lite0_fpn", "resnet50_fpn"])
    parser.add_argument(
        "--pipeline-backbones",
        nargs="+",
        default=["lite0_fpn"],
        help="evaluate pipeline per backbone (CPU time: ~4.5 CPU-s per frame after the network)",
    )
    parser.add_argument("--train-val-tiles", type=int, default=100)
    parser.add_argument("--inspect-frames", type=int, default=3)
    parser.add_argument(
        "--distinct-tiles", nargs="*", default=[], help="BACKBONE=K: network on the first K distinct tiles"
    )
    parser.add_argument("--distinct-frames", nargs="*", default=[], help="BACKBONE=K for inspect/pipeline")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "oringscan-bench-memory"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        help="rows JSON of a cut-short run: its cases are not re-run",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--backbone", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--distinct", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--distinct-frames-one", dest="distinct_frames_one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--minutes", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--val-tiles", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        args.distinct_frames = args.distinct_frames_one
        print(json.dumps(run_case(args)), flush=True)
        return

    os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
    args.workdir = args.workdir.resolve()
    distinct = dict(DEFAULT_DISTINCT, **{k: int(v) for k, v in (s.split("=") for s in args.distinct_tiles)})
    args.distinct_frames = dict(
        DEFAULT_DISTINCT_FRAMES, **{k: int(v) for k, v in (s.split("=") for s in args.distinct_frames)}
    )
    started = time.perf_counter()
    data = prepare(args)
    steps = plan(args, data["tiles_per_frame"])
    for case, backbone, n in steps:  # the splits (cheap JSON)
        if case == "eval":
            write_tile_split(
                args.workdir, args.workdir / f"eval_{backbone}_{n}", "test", n, distinct[backbone]
            )
    for backbone in sorted({b for case, b, _ in steps if case == "train"}):
        write_tile_split(
            args.workdir,
            args.workdir / f"train_{backbone}_{args.train_val_tiles}",
            "val",
            args.train_val_tiles,
            distinct[backbone],
            train=True,
        )
    print(
        f"data ready in {time.perf_counter() - started:.0f} s: {data['frames']} frames 2448x2048, "
        f"{data['tiles']} real 640 px tiles ({data['tiles_per_frame']:.1f} per frame); load "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        flush=True,
    )
    rows = json.loads(args.resume_from.read_text(encoding="utf-8")) if args.resume_from else []
    rows = [r for r in rows if "error" not in r]
    done = {(r["case"], r["backbone"], r["n"]) for r in rows}
    for case, backbone, n in steps:
        if (case, backbone, n) in done:
            continue
        if case in ("inspect", "pipeline"):  # what Inspector.load reads: this backbone's untrained model
            from oringscan.workspace import TypeWorkspace

            paths = TypeWorkspace.from_config(base_config(), args.workdir / "output", MODEL).models
            paths.segmentation_checkpoint.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.workdir / f"untrained_{backbone}.pth", paths.segmentation_checkpoint)
        row = child(args, case, backbone, n, distinct[backbone])
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        if "error" in row:
            print(f"{case:<8} {backbone:<13} {n:>5}  ERROR {row['error']}", flush=True)
        else:
            print(
                f"{case:<8} {backbone:<13} {n:>5}  peak {row['peak_rss_mb']:7.0f} MB  tiles {row['tiles']:>5} "
                f"({row['forwards']} through the network)  {row['detections_per_tile'] or 0:5.1f} det/tile  "
                f"{row['seconds']:6.0f} s (cpu {row['cpu_seconds']:.0f} s, load {row['load']:.1f})",
                flush=True,
            )
        if args.json_out:
            args.json_out.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(
        f"\n{'case':<10} {'backbone':<13} {'N':>5} {'tiles':>6} {'peak RSS MB':>12} {'det/tile':>9} {'s':>6}"
    )
    for r in rows:
        if "error" not in r:
            label = (
                {0: "untrained", 1: "resumed"}.get(r["n"], str(r["n"]))
                if r["case"] == "train"
                else str(r["n"])
            )
            print(
                f"{r['case']:<10} {r['backbone']:<13} {label:>9} {r['tiles']:>6} {r['peak_rss_mb']:>12.0f} "
                f"{r['detections_per_tile'] or 0:>9.1f} {r['seconds']:>6.0f}"
            )


if __name__ == "__main__":
    main()
