"""``oringscan train screening``, ``screen``, ``evaluate screening``, ``calibrate screening``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from oringscan.cli.common import (
    EXIT_CODES_HELP,
    AppContext,
    InputErrorStop,
    common_options,
    exit_for_input_errors,
    model_option,
    require_paths,
    set_threads,
    strict_option,
)
from oringscan.errors import FrameError, OringscanError

log = logging.getLogger(__name__)


def _threads_option(func: Any) -> Any:
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for torch/OpenCV (default: all cores).",
    )(func)


@click.command("screening")
@common_options
@model_option()
@_threads_option
@click.option("--no-progress", is_flag=True, help="No progress bars (for logs and CI).")
def train_screening_command(app: AppContext, oring_type: str, threads: int | None, no_progress: bool) -> None:
    """Fit PatchCore on the good train tiles; thresholds cross-fitted on every good frame.

    \b
    Reads the preprocess output (run `oringscan preprocess --model NAME` first):
      <output>/<model>/annotations/{train,val}.json and images/{train,val}/
    Writes:
      <output>/<model>/screening/memory_bank.safetensors   the memory bank (and extractor weights)
      <output>/<model>/screening/metadata.json             backbone, thresholds, calibration, history
    Every good train+val frame is scored by a bank fitted without it (screening.calibration_folds
    folds); the tail of those scores sets the threshold so that screening's share of
    [pipeline] false_reject_budget (1 % by default) of unseen good frames is flagged, and a lower
    marginal threshold sends its review share (2 %) to a person. The summary states the expected
    rate with its interval and whether the frames support the target.

    \b
    Example:
      oringscan train screening --model model1
    """
    import torch

    from oringscan.screening.fit import fit_screening, screening_dir

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    screen = fit_screening(
        app.config, app.output_root, oring_type, progress=not no_progress, data_root=app.data_root
    )
    m = screen.meta
    click.echo(
        f"{oring_type}: backbone {m.backbone} ({'ImageNet weights' if m.pretrained else 'no pretrained weights'}), "
        f"{m.n_train_tiles} good tiles from {m.n_train_frames} frames, bank {m.bank_size} patches"
    )
    _echo_calibration(m.calibration)
    click.echo(f"saved to {screening_dir(app.output_root, oring_type)}")
    from oringscan.cli.models import snapshot_after_training

    snapshot_after_training(app, oring_type, "train screening")


def _echo_calibration(c: dict[str, Any]) -> None:
    """The thresholds and what they promise, in the operator's words."""
    low = c.get("marginal_threshold")
    how = (
        f"{c['folds']} folds"
        if c.get("folds") and not c.get("recalibrated")
        else "frames scored by the kept bank"
    )
    click.echo(
        f"threshold {c['threshold']:.4f} ({c['method']}, {how}; target "
        f"{c['false_reject_rate_target']:.1%} of good frames flagged)"
        + (
            f"; marginal band from {low:.4f} ({c['marginal_band']})"
            if low is not None
            else "; no marginal band"
        )
    )
    click.echo(c["statement"])
    if c.get("expected_review_rate") is not None:
        click.echo(
            f"expected share of good frames sent to review: {c['expected_review_rate']:.1%} "
            f"(target {c['review_rate_target']:.1%})"
        )
    for o in c.get("outlier_frames", []):
        click.echo(
            f"warning: good frame {o['frame']} scores {o['score']:.4f}, far above the others: "
            "left out of the threshold fit; check it"
        )
    shape = c.get("shape_screen")
    if shape:
        click.echo(f"{shape['statement']} ({shape['method']})")
    if c.get("frame_recall_at_threshold") is not None:
        best = c.get("best_f1_frame")
        click.echo(
            f"val defect frames flagged: {c['frame_recall_at_threshold']:.1%}"
            + (f"; best F1 (frames) {best['f1']:.3f} at {best['threshold']:.4f}" if best else "")
        )


def _screen_one(screen: Any, path: Path, app: AppContext, heatmaps: Path | None) -> dict[str, Any]:
    import cv2
    import numpy as np

    from oringscan.frames import read_frame
    from oringscan.roi import find_ring
    from oringscan.screening.heatmap import save_heatmap
    from oringscan.tiling import ring_tiles
    from oringscan.types import Tile, TileBox

    tile_size = screen.meta.tile_size
    data = np.fromfile(path, dtype=np.uint8) if path.is_file() else None
    probe = None if data is None else cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if probe is not None and max(probe.shape) <= tile_size:
        gray = probe
        tiles = [Tile(TileBox(0, 0, gray.shape[1], gray.shape[0]), gray, 1.0)]
        kind = "tile"
    else:
        gray = read_frame(path, app.config.frame).image
        roi = find_ring(gray, app.config.roi)
        if not roi.usable:
            raise FrameError(path, f"no usable ring: {roi.reason or roi.status}")
        tiles, _ = ring_tiles(gray, roi, app.config)
        kind = "frame"
    result = screen.score_tiles(tiles, with_maps=heatmaps is not None)
    row = {"image": str(path), "kind": kind, **result.to_json()}
    if heatmaps is not None:
        row["heatmap"] = str(save_heatmap(heatmaps / f"{path.stem}_heatmap.png", gray, result))
    return row


@click.command("screen", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.option(
    "--image", "image", type=click.Path(path_type=Path, dir_okay=False), help="One frame or tile image."
)
@click.option(
    "--folder",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    help="Every image in a folder (recursive).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON array (one object per image) instead of a table."
)
@click.option(
    "--heatmaps",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write a heatmap overlay PNG per image into this folder.",
)
@_threads_option
@strict_option
def screen_command(
    app: AppContext,
    oring_type: str,
    image: Path | None,
    folder: Path | None,
    as_json: bool,
    heatmaps: Path | None,
    threads: int | None,
    strict: bool = False,
) -> None:
    """Anomaly-screen full frames (ring found, tiled as in preprocess) or single tiles.

    \b
    An image no larger than a tile (640 px) is scored as one tile; anything else is read as a
    camera frame. A frame scores as its worst tile and is flagged above the stored threshold.
    Images that cannot be read are reported with the reason and the rest go on.
    --json prints: [{"image", "score", "threshold", "flagged", "marginal",
                     "tiles": [{"x", "y", "w", "h", "score", "flagged"}]}, ...]

    \b
    Examples:
      oringscan screen --model model1 --image frame.bmp
      oringscan screen --model model1 --folder new_frames/ --json --heatmaps heat/
    """
    import torch

    from oringscan.frames import iter_image_files
    from oringscan.screening.fit import screening_dir
    from oringscan.screening.model import ScreeningModel

    if (image is None) == (folder is None):
        raise click.UsageError("give exactly one of --image FILE or --folder DIR")
    require_paths(image, folder)
    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    screen = ScreeningModel.load(screening_dir(app.output_root, oring_type), expected_type=oring_type)
    if folder is not None:
        if not folder.is_dir():
            raise FrameError(folder, "folder not found")
        paths = iter_image_files([folder], app.config.frame)
        if not paths:
            raise FrameError(folder, f"no images ({', '.join(app.config.frame.extensions)}) in folder")
    else:
        paths = [image]
    rows = []
    for path in paths:
        try:
            rows.append(_screen_one(screen, Path(path), app, heatmaps))
        except OringscanError as exc:
            if strict:
                raise InputErrorStop(str(exc)) from None
            rows.append({"image": str(path), "error": str(exc)})
            if not as_json:
                click.echo(f"error: {exc}", err=True)
    n_errors = sum("error" in r for r in rows)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        exit_for_input_errors(n_errors, len(rows))
        return
    width = max(len(Path(r["image"]).name) for r in rows)
    click.echo(f"{'image':<{width}}  {'score':>9}  {'threshold':>9}  verdict   tiles flagged")
    for r in rows:
        name = Path(r["image"]).name
        if "error" in r:
            click.echo(f"{name:<{width}}  {'-':>9}  {'-':>9}  ERROR     {r['error']}")
            continue
        verdict = "FLAGGED" if r["flagged"] else ("marginal" if r["marginal"] else "ok")
        n_flag = sum(t["flagged"] for t in r["tiles"])
        click.echo(
            f"{name:<{width}}  {r['score']:>9.4f}  {r['threshold']:>9.4f}  {verdict:<8}  {n_flag}/{len(r['tiles'])}"
        )
    if heatmaps is not None:
        click.echo(f"heatmaps in {heatmaps}")
    exit_for_input_errors(n_errors, len(rows))


@click.command("screening", epilog=EXIT_CODES_HELP)
@common_options
@model_option()
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@_threads_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate_screening_command(
    app: AppContext, oring_type: str, split: str, threads: int | None, no_progress: bool
) -> None:
    """Tile- and frame-level AUROC, recall and false rejects at the stored threshold.

    \b
    Writes <output>/<model>/screening/evaluation/{metrics.json, roc.png, histogram.png}; recall is
    also broken down by labelled defect area: few_px (< 100 px^2), tens_of_px (< 2500 px^2), large.
    """
    import torch

    from oringscan.screening.evaluate import evaluate_screening

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    m = evaluate_screening(app.config, app.output_root, oring_type, split=split, progress=not no_progress)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for level in ("frames", "tiles"):
        d = m[level]
        click.echo(
            f"{level:<6} n={d['n']:<5} defect={d['n_defect']:<4} AUROC {num(d['auroc'])}  "
            f"recall {pct(d['recall_at_threshold'])}  false rejects {pct(d['false_reject_rate_at_threshold'])}"
        )
    sizes = ", ".join(f"{k} {pct(v['recall'])} (n={v['n']})" for k, v in m["recall_by_defect_size"].items())
    click.echo(f"recall by defect size: {sizes}")
    click.echo(f"metrics: {m['metrics_json']}")


@click.command("screening")
@common_options
@model_option()
@click.option(
    "--frames",
    "frames",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder of new GOOD full frames (recursive).",
)
@click.option(
    "--model-dir",
    "model_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Screening model folder (default: <output>/<model>/screening).",
)
@_threads_option
def calibrate_screening_command(
    app: AppContext, oring_type: str, frames: Path, model_dir: Path | None, threads: int | None
) -> None:
    """Re-derive the screening thresholds from new good frames, keeping the memory bank.

    \b
    For drifting light or a new camera of the same o-ring type. Each frame goes through ROI and
    tiling as inspection does and scores as its worst tile; the thresholds are fitted to these
    scores as in training (the [pipeline] false_reject_budget shares), and metadata.json records
    old and new thresholds, the frames and the date under "history".
    Refused, nothing written: fewer than 10 usable frames; another type's folder; rings whose size
    differs from the fitted type's by more than 3 %; frames most of which score above the current
    threshold (another type, or a change only a refit fixes).
    Fewer frames than the target needs: written, with a warning saying what they support.

    \b
    Example:
      oringscan calibrate screening --model model1 --frames new_good_frames/
    """
    import torch

    from oringscan.frames import iter_image_files
    from oringscan.screening.calibration import check_frames_folder, recalibrate, score_frame_files
    from oringscan.screening.fit import screening_dir
    from oringscan.screening.model import ScreeningModel

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    if not frames.is_dir():
        raise FrameError(frames, "folder not found")
    check_frames_folder(app.config, oring_type, frames)
    directory = model_dir or screening_dir(app.output_root, oring_type)
    screen = ScreeningModel.load(directory, expected_type=oring_type)
    paths = iter_image_files([frames], app.config.frame)
    if not paths:
        raise FrameError(frames, f"no images ({', '.join(app.config.frame.extensions)}) in folder")
    names, scores, skipped, sizes = score_frame_files(screen, [Path(p) for p in paths], app.config)
    for line in skipped:
        click.echo(f"skipped: {line}", err=True)
    old = screen.meta.threshold
    info = recalibrate(
        screen,
        names,
        scores,
        app.config,
        source=f"calibrate screening --frames {frames}",
        where=frames,
        sizes=sizes,
    )
    screen.save_meta(directory)
    click.echo(f"{oring_type}: {len(names)} good frames; threshold {old:.4f} -> {info['threshold']:.4f}")
    _echo_calibration(info)
    click.echo(f"recorded in {directory / 'metadata.json'} (history)")


def register(root: click.Group) -> None:
    root.commands["train"].add_command(train_screening_command, "screening")
    root.commands["evaluate"].add_command(evaluate_screening_command, "screening")
    root.add_command(screen_command, "screen")
    root.commands["calibrate"].add_command(calibrate_screening_command, "screening")
