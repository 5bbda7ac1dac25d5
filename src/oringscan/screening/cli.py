"""``oringscan train screening``, ``oringscan screen``, ``oringscan evaluate screening``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from oringscan.cli.common import AppContext, common_options, model_option, set_threads
from oringscan.errors import FrameError, OringscanError

log = logging.getLogger(__name__)


def _threads_option(func: Any) -> Any:
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch/OpenCV (default: all cores)."
    )(func)


@click.command("screening")
@common_options
@model_option()
@_threads_option
@click.option("--no-progress", is_flag=True, help="No progress bars (for logs and CI).")
def train_screening_command(app: AppContext, model: str, threads: int | None, no_progress: bool) -> None:
    """Fit PatchCore on the good train tiles and calibrate its threshold on val.

    \b
    Reads the preprocess output (run `oringscan preprocess --model NAME` first):
      <output>/<model>/annotations/{train,val}.json and images/{train,val}/
    Writes:
      <output>/<model>/screening/memory_bank.safetensors   the memory bank (and extractor weights)
      <output>/<model>/screening/metadata.json             backbone, threshold, calibration, data fingerprint
    The threshold lets screening.false_reject_rate (default 1 %) of good val frames through as
    flagged; a frame scores as its worst tile. Settings: the [screening] section of --config.

    \b
    Example:
      oringscan train screening --model model1
    """
    import torch

    from oringscan.screening.fit import fit_screening, screening_dir

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    screen = fit_screening(app.config, app.output_root, model, progress=not no_progress)
    c, m = screen.meta.calibration, screen.meta
    click.echo(f"{model}: backbone {m.backbone} ({'ImageNet weights' if m.pretrained else 'no pretrained weights'}), "
               f"{m.n_train_tiles} good tiles from {m.n_train_frames} frames, bank {m.bank_size} patches")
    click.echo(f"threshold {m.threshold:.4f} (good val frames flagged: {c['frame_false_reject_rate']:.1%} of "
               f"{c['n_good_frames']}; target {c['false_reject_rate_target']:.1%})")
    if c.get("frame_recall_at_threshold") is not None:
        click.echo(f"val defect frames flagged: {c['frame_recall_at_threshold']:.1%}; "
                   f"best F1 (frames) {c['best_f1_frame']['f1']:.3f} at {c['best_f1_frame']['threshold']:.4f}")
    click.echo(f"saved to {screening_dir(app.output_root, model)}")


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


@click.command("screen")
@common_options
@model_option()
@click.option("--image", "image", type=click.Path(path_type=Path, dir_okay=False), help="One frame or tile image.")
@click.option("--folder", "folder", type=click.Path(path_type=Path, file_okay=False), help="Every image in a folder (recursive).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array (one object per image) instead of a table.")
@click.option("--heatmaps", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write a heatmap overlay PNG per image into this folder.")
@_threads_option
def screen_command(
    app: AppContext, model: str, image: Path | None, folder: Path | None, as_json: bool, heatmaps: Path | None,
    threads: int | None,
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
    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    screen = ScreeningModel.load(screening_dir(app.output_root, model), expected_type=model)
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
            rows.append({"image": str(path), "error": str(exc)})
            if not as_json:
                click.echo(f"error: {exc}", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
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
        click.echo(f"{name:<{width}}  {r['score']:>9.4f}  {r['threshold']:>9.4f}  {verdict:<8}  {n_flag}/{len(r['tiles'])}")
    if heatmaps is not None:
        click.echo(f"heatmaps in {heatmaps}")
    if all("error" in r for r in rows):
        raise SystemExit(1)


@click.command("screening")
@common_options
@model_option()
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@_threads_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def evaluate_screening_command(app: AppContext, model: str, split: str, threads: int | None, no_progress: bool) -> None:
    """Tile- and frame-level AUROC, recall and false rejects at the stored threshold.

    \b
    Writes <output>/<model>/screening/evaluation/{metrics.json, roc.png, histogram.png}; recall is
    also broken down by labelled defect area: few_px (< 100 px^2), tens_of_px (< 2500 px^2), large.
    """
    import torch

    from oringscan.screening.evaluate import evaluate_screening

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    m = evaluate_screening(app.config, app.output_root, model, split=split, progress=not no_progress)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1%}"

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    for level in ("frames", "tiles"):
        d = m[level]
        click.echo(f"{level:<6} n={d['n']:<5} defect={d['n_defect']:<4} AUROC {num(d['auroc'])}  "
                   f"recall {pct(d['recall_at_threshold'])}  false rejects {pct(d['false_reject_rate_at_threshold'])}")
    sizes = ", ".join(f"{k} {pct(v['recall'])} (n={v['n']})" for k, v in m["recall_by_defect_size"].items())
    click.echo(f"recall by defect size: {sizes}")
    click.echo(f"metrics: {m['metrics_json']}")


def register(root: click.Group) -> None:
    root.commands["train"].add_command(train_screening_command, "screening")
    root.commands["evaluate"].add_command(evaluate_screening_command, "screening")
    root.add_command(screen_command, "screen")
