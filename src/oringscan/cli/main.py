"""Root command: ``oringscan <job>``. Each part registers its own commands."""

from __future__ import annotations

import importlib

import click

from oringscan.cli.common import AppContext, OneLineErrors, common_options, setup_logging
from oringscan.config import config_to_toml

# Parts that add commands; each module has ``register(root: click.Group) -> None``.
PART_CLIS = (
    "oringscan.synth.cli",
    "oringscan.preprocess.cli",
    "oringscan.screening.cli",
    "oringscan.segmentation.cli",
    "oringscan.rework_rules.cli",
    "oringscan.db.cli",
    "oringscan.pipeline.cli",
    "oringscan.dashboard.cli",
)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="oringscan")
def cli(verbose: int) -> None:
    """oringscan: o-ring inspection (good / defect / rework) for the plant's line cameras.

    \b
    Typical day, per o-ring type (model1, model2, ...):
      oringscan synth dataset --good 20 --defect 10      # synthetic frames to try things
      oringscan preprocess --model model1                # frames -> 640px tiles + COCO
      oringscan train screening --model model1           # PatchCore on good tiles
      oringscan train segmentation --model model1        # Mask R-CNN on defect tiles
      oringscan calibrate rework --model model1          # geometry limits from good parts
      oringscan inspect --model model1 frames/           # verdicts into the database
      oringscan dashboard                                # review flagged parts
    Or all of it on synthetic data: oringscan demo
    """
    setup_logging(verbose)


@cli.group(cls=OneLineErrors)
def train() -> None:
    """Train a stage's model (screening, segmentation)."""


@cli.group(cls=OneLineErrors)
def evaluate() -> None:
    """Evaluate a stage on the test split (screening, segmentation, pipeline)."""


@cli.group(cls=OneLineErrors)
def calibrate() -> None:
    """Calibrate limits from good parts (rework)."""


@cli.group(name="config", cls=OneLineErrors)
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@common_options
def config_show(app: AppContext) -> None:
    """Print the effective config (defaults merged with --config) as TOML."""
    click.echo(f"# data: {app.data_root}\n# output: {app.output_root}\n# db: {app.db_url}")
    click.echo(config_to_toml(app.config))


def _register_parts() -> None:
    for name in PART_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # part not built yet
            raise
        module.register(cli)


_register_parts()


def main() -> None:
    cli(prog_name="oringscan")


if __name__ == "__main__":
    main()
