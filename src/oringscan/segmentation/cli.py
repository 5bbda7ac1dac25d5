"""``oringscan train segmentation``, ``oringscan predict`` and ``oringscan evaluate segmentation``.

The seed's ``train.py`` and ``inference.py`` options, as subcommands; a thin shell over the API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    InputErrorLine,
    InputErrorStop,
    OneLineErrors,
    common_options,
    exit_for_input_errors,
    model_option,
    require_paths,
    set_threads,
    strict_option,
)
from oringscan.errors import OringscanError, one_line

BACKBONE_CHOICES = [
    "auto",
    "resnet50_fpn",
    "resnet50_fpn_v2",
    "resnet18_fpn",
    "mobilenet_v3_fpn",
    "lite0_fpn",
]
TILE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")


@click.command("segmentation")
@common_options
@model_option()
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs (config default 50; early stopping may end sooner).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Tiles per batch (default 4).")
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="SGD learning rate (default 0.005).",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONE_CHOICES),
    default=None,
    help="resnet50_fpn (the seed's), resnet50_fpn_v2, or a light one for CPU: resnet18_fpn, mobilenet_v3_fpn.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help="auto (default) takes the CUDA GPU when present; AMP is used only on CUDA.",
)
@click.option(
    "--resume", is_flag=True, help="Continue from checkpoints/latest.pth (same epochs, schedule and seed)."
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many minutes (the running epoch is cut short, evaluated and saved).",
)
@click.option(
    "--workers",
    "num_workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes (default 2).",
)
@click.option(
    "--init-from",
    "init_from",
    default=None,
    metavar="synthetic|FILE",
    help="Start from these weights, not ImageNet alone: 'synthetic' (the starting model shipped with "
    "oringscan, learnt from synthetic frames), a file of `oringscan pretrain segmentation`, or another "
    "run's best_model.pth. Only the weights: the schedule starts fresh.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all cores)."
)
def train_segmentation_cmd(
    app: AppContext, oring_type: str, threads: int | None, resume: bool, **options: Any
) -> None:
    """Train the Mask R-CNN of one o-ring type on its preprocess tiles.

    \b
    Reads   output/<model>/annotations/{train,val}.json and images/ (run `oringscan preprocess` first).
    Writes  output/<model>/checkpoints/{best_model,latest}.pth, training_history.json,
            runs/ (TensorBoard: `tensorboard --logdir output/<model>/runs`).
    \b
    Examples:
      oringscan train segmentation --model model1
      oringscan train segmentation --model model1 --epochs 80 --batch-size 2 --lr 0.003
      oringscan train segmentation --model model1 --backbone resnet18_fpn --device cpu --max-minutes 20
      oringscan train segmentation --model model1 --resume
      oringscan train segmentation --model model1 --device cpu --max-minutes 10 --init-from synthetic
    """
    import torch  # noqa: F401 - imported first so set_threads pins its thread count

    from oringscan.segmentation.engine import train_segmentation

    set_threads(threads)
    summary = train_segmentation(
        app.config, app.output_root, oring_type, resume=resume, echo=click.echo, **options
    )
    best, metric = summary["best_segm_AP"], summary.get("metric", "val segm AP")  # second stages name theirs
    click.echo(
        f"done ({summary['stopped']}): {summary['epochs_run']} epoch(s), best {metric} "
        f"{'n/a' if best is None else f'{best:.3f}'} at epoch {summary['best_epoch'] + 1}; "
        f"checkpoint {summary['checkpoint']}"
    )
    from oringscan.cli.models import snapshot_after_training

    snapshot_after_training(app, oring_type, "train segmentation")


def _list_folder(folder: Path) -> list[Path]:
    if not folder.exists():
        raise OringscanError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise OringscanError(f"{folder}: not a folder (use --image for one file)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TILE_EXTENSIONS)
    if not files:
        raise OringscanError(f"{folder}: no image files ({', '.join(TILE_EXTENSIONS)}) in this folder")
    return files


def _is_frame_size(shape: tuple[int, ...], app: AppContext) -> bool:
    fc = app.config.frame
    h, w = shape[:2]
    return (w, h) == (fc.width, fc.height) or (fc.accept_binned and (2 * w, 2 * h) == (fc.width, fc.height))


@click.command("predict", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.option(
    "--image",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="One tile (a patch of a frame).",
)
@click.option(
    "--folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Every image in a folder.",
)
@click.option(
    "--full-image",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A whole camera frame: ROI, tile grid, stitching; writes overlay PNG + LabelMe JSON.",
)
@click.option(
    "--evaluate", is_flag=True, help="AP per class on the test split and frame-level defect recall."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON array (image, instances) instead of text."
)
@click.option("--save-vis", is_flag=True, help="Also write overlays (and LabelMe JSON) for --image/--folder.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file (default output/<model>/checkpoints/best_model.pth).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--vis-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where overlays go (default output/<model>/inference_results).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all cores)."
)
@strict_option
def predict_cmd(
    app: AppContext,
    oring_type: str,
    image: Path | None,
    folder: Path | None,
    full_image: Path | None,
    evaluate: bool,
    as_json: bool,
    save_vis: bool,
    checkpoint: Path | None,
    device: str,
    vis_dir: Path | None,
    threads: int | None,
    strict: bool = False,
) -> None:
    """Find defects with the trained segmentation model (the seed's inference.py).

    \b
    Exactly one of:
      --image TILE        one tile                  oringscan predict --model model1 --image patch.bmp
      --folder DIR        every image in DIR        oringscan predict --model model1 --folder tiles/ --save-vis
      --full-image FRAME  a whole 2448x2048 frame   oringscan predict --model model1 --full-image frame.bmp
      --evaluate          test split metrics        oringscan predict --model model1 --evaluate
    Images of the camera's frame size given to --image/--folder are treated as whole frames.
    Overlays and LabelMe JSON (open in LabelMe to correct and retrain) go to inference_results/.
    """
    chosen = [
        name
        for name, value in (
            ("--image", image),
            ("--folder", folder),
            ("--full-image", full_image),
            ("--evaluate", evaluate),
        )
        if value
    ]
    if len(chosen) != 1:
        raise click.UsageError(
            "give exactly one of --image, --folder, --full-image, --evaluate"
            + (f" (got {', '.join(chosen)})" if chosen else "")
        )
    require_paths(image, folder, full_image)
    import torch  # noqa: F401 - imported first so set_threads pins its thread count

    set_threads(threads)
    app.config.oring_type(oring_type)
    workspace = app.workspace(oring_type)
    checkpoint = checkpoint or workspace.best_checkpoint
    if evaluate:
        from oringscan.segmentation.evaluation import evaluate_segmentation

        metrics = evaluate_segmentation(
            app.config, app.output_root, oring_type, app.data_root, checkpoint, device, progress=not as_json
        )
        if as_json:
            click.echo(json.dumps(metrics, indent=2))
        else:
            _echo_metrics(metrics)
        return

    from oringscan.segmentation.stages import load_stage  # Mask R-CNN or a second stage, as the file holds

    segmenter = load_stage(checkpoint, device=device, expected_type=oring_type, config=app.config)
    out_dir = vis_dir or workspace.inference_results
    if full_image is not None:
        files, force_frame = [full_image], True
    elif image is not None:
        files, force_frame = [image], False
    else:
        assert folder is not None
        files, force_frame = _list_folder(folder), False
    # Text output is printed image by image and only counts are kept; --json keeps the entries
    # (polygons, no masks) for its one array. Either way an image's tensors go with the image.
    results, errors, found = [], 0, 0
    for path in files:
        try:
            entry = _predict_one(segmenter, app, path, force_frame, save_vis or force_frame, out_dir, as_json)
        except OringscanError as exc:
            if strict:
                raise InputErrorStop(str(exc)) from None
            if len(files) == 1:
                raise InputErrorLine(one_line(str(exc))) from None
            errors += 1
            entry = {"image": str(path), "instances": [], "error": str(exc)}
            click.echo(f"error: {exc}", err=True)
        found += bool(entry["instances"])
        if as_json:
            results.append(entry)
        elif "error" not in entry:
            _echo_entry(entry)
    if as_json:
        click.echo(json.dumps(results, indent=2))
    elif len(files) > 1:
        click.echo(f"{len(files)} image(s): {found} with defects, {errors} error(s)")
    exit_for_input_errors(errors, len(files))


def _predict_one(
    segmenter: Any, app: AppContext, path: Path, force_frame: bool, save: bool, out_dir: Path, quiet: bool
) -> dict[str, Any]:
    import cv2

    from oringscan.frames import normalize_frame, read_frame
    from oringscan.segmentation.dataset import read_gray
    from oringscan.segmentation.labelme_export import write_labelme
    from oringscan.segmentation.visualize import overlay

    entry: dict[str, Any] = {"image": str(path)}
    if force_frame:
        gray = read_frame(path, app.config.frame).image
        is_frame = True
    else:
        if path.suffix.lower() not in TILE_EXTENSIONS:
            from oringscan.errors import FrameError

            raise FrameError(path, f"not an image file type oringscan reads ({', '.join(TILE_EXTENSIONS)})")
        gray = read_gray(path)
        is_frame = _is_frame_size(gray.shape, app)
        if is_frame:
            gray = normalize_frame(gray, app.config.frame, path).image
    if is_frame:
        prediction = segmenter.predict_frame(
            gray, app.config, app.config.pipeline.tile_batch_size, progress=not quiet
        )
        instances = prediction.instances
        if not prediction.roi.usable:
            entry["note"] = f"no usable ring: {prediction.roi.reason}"
        entry["tiles"] = len(prediction.tiles)
    else:
        instances = segmenter.predict_arrays([gray])[0]
    entry["instances"] = [inst.to_json() for inst in instances]
    if save:
        out_dir.mkdir(parents=True, exist_ok=True)
        picture = out_dir / f"{path.stem}_overlay.png"
        ok, buf = cv2.imencode(".png", overlay(gray, instances, segmenter.class_names))
        if ok:
            buf.tofile(picture)
        labelme = write_labelme(instances, path, out_dir / f"{path.stem}.json", gray.shape[0], gray.shape[1])
        entry["overlay"] = str(picture)
        entry["labelme"] = str(labelme)
    return entry


def _echo_entry(entry: dict[str, Any]) -> None:
    instances = entry["instances"]
    head = f"{entry['image']}: " + (f"{len(instances)} defect(s)" if instances else "no defect found")
    if entry.get("note"):
        head += f" ({entry['note']})"
    click.echo(head)
    for inst in instances:
        x, y, w, h = inst["bbox"]
        click.echo(
            f"  {inst['label']:<12} score {inst['score']:.2f}  box x={x} y={y} w={w} h={h}  area {inst['area']} px"
        )
    for key in ("overlay", "labelme"):
        if key in entry:
            click.echo(f"  {key}: {entry[key]}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _echo_metrics(metrics: dict[str, Any]) -> None:
    tiles = metrics["tiles"]
    click.echo(f"test split of {metrics['model']} ({metrics['backbone']}, {metrics['test_tiles']} tiles)")
    if tiles is None:
        click.echo("  tiles: no labelled defects in the test split, AP undefined")
    else:
        for iou_type in ("segm", "bbox"):
            m = tiles[iou_type]
            click.echo(f"  {iou_type:<4} AP {_fmt(m['AP'])}  AP50 {_fmt(m['AP50'])}  AP75 {_fmt(m['AP75'])}")
            for name, pc in m["per_class"].items():
                click.echo(
                    f"       {name:<12} AP {_fmt(pc['AP'])}  AP50 {_fmt(pc['AP50'])}  AP75 {_fmt(pc['AP75'])}"
                )
    f = metrics["frames"]
    click.echo(
        f"  frames: {f['defects_found']}/{f['defects']} defects found "
        f"(recall {_fmt(f['defect_recall'])}, IoU >= {f['match_iou']}), "
        f"{f['defect_frames_caught']}/{f['defect_frames']} defect frames caught, "
        f"{f['good_frames_flagged']}/{f['good_frames']} good frames flagged, {f['false_positives']} false positive(s)"
    )
    click.echo(f"  metrics: {metrics['path']}")
    for plot in metrics["plots"]:
        click.echo(f"  plot: {plot}")


@click.command("segmentation", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Default output/<model>/checkpoints/best_model.pth.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_segmentation_cmd(
    app: AppContext, oring_type: str, checkpoint: Path | None, device: str, as_json: bool
) -> None:
    """Segmentation metrics on the test split (same as `oringscan predict --evaluate`)."""
    from oringscan.segmentation.evaluation import evaluate_segmentation

    set_threads(None)
    app.config.oring_type(oring_type)
    metrics = evaluate_segmentation(
        app.config, app.output_root, oring_type, app.data_root, checkpoint, device, progress=not as_json
    )
    click.echo(json.dumps(metrics, indent=2)) if as_json else _echo_metrics(metrics)


@click.command("segmentation")
@common_options
@model_option()
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Default output/<model>/checkpoints/best_model.pth.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the calibration as JSON.")
def calibrate_segmentation_cmd(
    app: AppContext, oring_type: str, checkpoint: Path | None, device: str, as_json: bool
) -> None:
    """Calibrate when the segmenter may call a defect, from its val predictions.

    \b
    Predicts every val tile (segmentation.calibration_max_tiles caps it), sets the defect score at
    segmentation.defect_precision (COCO matching, per class where val has enough defects of it) and
    qualifies the model: val segm AP50 below segmentation.min_ap50, a find AP (its instances as
    inspection stitches them, on the labelled defects) below segmentation.min_find_ap, or no score
    reaching the precision means it has not learned and the pipeline never lets it call a defect
    (flagged parts go to suspect).
    Writes checkpoints/segmentation_calibration.json (training writes it too; this is for
    checkpoints made before, or after changing the targets).
    """
    from oringscan.segmentation.calibration import calibrate_segmentation, calibration_path

    set_threads(None)
    app.config.oring_type(oring_type)
    ckpt = checkpoint or app.workspace(oring_type).best_checkpoint
    calibration = calibrate_segmentation(
        app.config, app.output_root, oring_type, ckpt, device=device, progress=not as_json
    )
    if as_json:
        click.echo(json.dumps(calibration.to_json(), indent=2))
        return
    click.echo(calibration.summary)
    click.echo(f"wrote {calibration_path(ckpt)}")


@click.group("pretrain", cls=OneLineErrors)
def pretrain_group() -> None:
    """Learn a starting model from synthetic frames and your good frames (no labelling), for `train --init-from`."""


@pretrain_group.command("segmentation")
@common_options
@model_option(
    required=False,
    help_text="O-ring type whose style is rendered and whose good frames --plant-good takes "
    "(default: the first configured type).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The init file to write (for `train segmentation --init-from FILE`).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("oringscan-pretrain"),
    show_default=True,
    help="Where the synthetic frames, tiles and the training run go.",
)
@click.option(
    "--minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Training budget.",
)
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="What --minutes counts: wall time, or the process's CPU time (the same model on a busy machine).",
)
@click.option(
    "--defect",
    "n_defect",
    type=click.IntRange(min=3),
    default=60,
    show_default=True,
    help="Defect frames to render.",
)
@click.option(
    "--good",
    "n_good",
    type=click.IntRange(min=3),
    default=20,
    show_default=True,
    help="Good frames (negatives).",
)
@click.option(
    "--plant-good",
    "plant_good",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also learn from this many of your own good frames of --model (under --data; a seeded "
    "choice), with synthetic defects pasted onto half the tiles: a start that knows your rubber and "
    "light. 0: synthetic frames only.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all cores)."
)
def pretrain_segmentation_cmd(
    app: AppContext,
    oring_type: str | None,
    plant_good: int,
    out_file: Path,
    workdir: Path,
    minutes: float,
    clock: str,
    n_defect: int,
    n_good: int,
    seed: int,
    threads: int | None,
) -> None:
    """Train the segmenter on synthetic frames and write it as a starting model.

    \b
    Renders --defect/--good frames with `oringscan synth` (every defect kind, pits of a few px to half
    a tile), cuts them into tiles, trains the configured recipe (`auto`: the CPU recipe on a CPU) for
    --minutes and writes the weights that training changed (float16, with how they were made) to
    --out. A plant's own run then fine-tunes it on its labelled frames:
      oringscan pretrain segmentation --out start.pt --minutes 60
      oringscan train segmentation --model model1 --init-from start.pt --max-minutes 10
    With --plant-good N it also takes N of your good frames (--data, --model) and pastes synthetic
    defects onto them, no labelling needed:
      oringscan pretrain segmentation --model model2 --data dataset --plant-good 40 --out start2.pt
    oringscan ships one such file ('--init-from synthetic'; README "Segmentation").
    """
    import torch  # noqa: F401 - imported first so set_threads pins its thread count

    from oringscan.segmentation.pretrain import pretrain_synthetic

    set_threads(threads)
    result = pretrain_synthetic(
        workdir,
        out_file,
        minutes=minutes,
        clock=clock,
        n_defect=n_defect,
        n_good=n_good,
        seed=seed,
        echo=click.echo,
        config=app.config,
        oring_type=oring_type,
        plant_data=app.data_root if plant_good else None,
        plant_good=plant_good,
    )
    made = result["made_by"]
    cal = made["calibration"]
    click.echo(
        f"done: {made['epochs_run']} epoch(s); on its synthetic val: qualified {cal['qualified']}, "
        f"AP50 {cal['ap50']}, find AP {cal['find_ap']}; {result['file']} ({result['megabytes']} MB)"
    )


def register(root: click.Group) -> None:
    root.add_command(pretrain_group, "pretrain")
    root.commands["train"].add_command(train_segmentation_cmd, "segmentation")
    root.commands["evaluate"].add_command(evaluate_segmentation_cmd, "segmentation")
    root.commands["calibrate"].add_command(calibrate_segmentation_cmd, "segmentation")  # type: ignore[attr-defined]
    root.add_command(predict_cmd, "predict")
