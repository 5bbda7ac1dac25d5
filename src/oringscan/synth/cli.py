"""``oringscan synth OUT``: a thin shell over :func:`oringscan.synth.synthesize_dataset`."""

from __future__ import annotations

from pathlib import Path

import click

from oringscan.cli.common import AppContext, common_options
from oringscan.errors import ConfigError


def _parse_types(value: str | None, app: AppContext) -> list[str]:
    if not value:
        return list(app.config.types)
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError("synth: --types is empty; give e.g. --types model1,model2")
    for name in names:
        app.config.oring_type(name)
    return names


@click.command("synth")
@click.argument("out", type=click.Path(path_type=Path), required=False)
@click.option(
    "--types",
    "types_",
    default=None,
    metavar="A,B",
    help="Comma-separated o-ring types from the config (default: all configured types).",
)
@click.option(
    "--good",
    "n_good",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Good frames per type.",
)
@click.option(
    "--defect",
    "n_defect",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Defect frames per type (1-4 labelled defects each).",
)
@click.option(
    "--rework",
    "n_rework",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Rework frames per type (off-centre bore, out-of-round or flash; truth in <stem>.truth.json).",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Same seed, same bytes.")
@click.option(
    "--color-fraction",
    type=click.FloatRange(0.0, 1.0),
    default=0.25,
    show_default=True,
    help="Share of frames saved as 24-bit colour BMP (the rest 8-bit gray).",
)
@click.option("--binned", is_flag=True, help="Write 2x2-binned 1224x1024 frames instead of 2448x2048.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes rendering frames (files are identical for any value).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@common_options
def synth_command(
    app: AppContext,
    out: Path | None,
    types_: str | None,
    n_good: int,
    n_defect: int,
    n_rework: int,
    seed: int,
    color_fraction: float,
    binned: bool,
    workers: int,
    quiet: bool,
) -> None:
    """Render synthetic frames into OUT (default: the --data root) in the plant's layout.

    \b
    OUT/images/<folder>/*.bmp       frames (folders from the config: model1good, model1defect, good, notok)
    OUT/labels/<folder>/*.json      LabelMe 5.x polygons (hole, pit, scratch, cut, bite, bulge, particle)
    OUT/labels/<rework>/*.truth.json  measured geometry of rework frames (default folder <type>_rework)
    OUT/manifest.json               every frame's truth: ring centre, radii, bore offset, ovality, defects
    Example: oringscan synth dataset --types model1 --good 40 --defect 20 --rework 8 --seed 7
    """
    from oringscan.synth.dataset import synthesize_dataset  # NumPy/OpenCV: not for --help

    out = out if out is not None else app.data_root
    names = _parse_types(types_, app)
    size = (
        (app.config.frame.width // 2, app.config.frame.height // 2)
        if binned
        else (app.config.frame.width, app.config.frame.height)
    )
    summary = synthesize_dataset(
        out,
        app.config,
        types=names,
        n_good=n_good,
        n_defect=n_defect,
        n_rework=n_rework,
        seed=seed,
        color_fraction=color_fraction,
        progress=not quiet,
        workers=workers,
        size=size,
    )
    click.echo(
        f"wrote {summary['frames']} frames to {out} in {summary['seconds']:.1f} s "
        f"({summary['frames_per_s'] or 0:.2f} frames/s); {summary['color_frames']} colour, "
        f"{summary['dark_polarity_frames']} dark-ring"
    )
    for name, info in summary["types"].items():
        counts = ", ".join(f"{k} {v}" for k, v in info["frames"].items()) or "none"
        folders = info["folders"]
        note = " (default name: the config has no rework_folder)" if info["rework_folder_is_default"] else ""
        click.echo(
            f"  {name}: {counts} -> {folders['good']}/, {folders['defect']}/, {folders['rework']}/{note}"
        )
    if summary["defects_by_label"]:
        click.echo("  defects: " + ", ".join(f"{k} {v}" for k, v in summary["defects_by_label"].items()))
    if summary["rework_by_kind"]:
        click.echo("  rework: " + ", ".join(f"{k} {v}" for k, v in summary["rework_by_kind"].items()))
    click.echo(f"  manifest: {out / summary['manifest']}")


def register(root: click.Group) -> None:
    root.add_command(synth_command)
