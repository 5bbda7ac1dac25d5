"""Root command: ``oringscan <job>``. Each part registers its own commands."""

from __future__ import annotations

import importlib

import click

from oringscan.cli.common import EXIT_CODES_HELP, AppContext, OneLineErrors, common_options, setup_logging

# Parts that add commands; each module has ``register(root: click.Group) -> None``.
PART_CLIS = (
    "oringscan.synth.cli",
    "oringscan.preprocess.cli",
    "oringscan.screening.cli",
    "oringscan.segmentation.cli",
    "oringscan.rework_rules.cli",
    "oringscan.db.cli",
    "oringscan.pipeline.cli",
    "oringscan.pipeline.reinspect_cli",
    "oringscan.dashboard.cli",
    "oringscan.review.cli",
    "oringscan.export.cli",
    "oringscan.cli.models",
)
# Which part defines a top-level command, so `oringscan db ...` imports the db part only. A name not
# listed here (a new command, or the train/evaluate/calibrate groups that several parts fill) loads
# every part; listing is an optimisation, never needed for a command to work.
COMMAND_PARTS = {
    "synth": "oringscan.synth.cli",
    "preprocess": "oringscan.preprocess.cli",
    "screen": "oringscan.screening.cli",
    "predict": "oringscan.segmentation.cli",
    "pretrain": "oringscan.segmentation.cli",
    "measure": "oringscan.rework_rules.cli",
    "db": "oringscan.db.cli",
    "users": "oringscan.db.cli",
    "inspect": "oringscan.pipeline.cli",
    "watch": "oringscan.pipeline.cli",
    "demo": "oringscan.pipeline.cli",
    "reinspect": "oringscan.pipeline.reinspect_cli",
    "dashboard": "oringscan.dashboard.cli",
    "models": "oringscan.cli.models",
    "compare": "oringscan.cli.models",
}
_SHARED_GROUPS = ("train", "evaluate", "calibrate", "export")
_loaded: set[str] = set()


def _load_part(name: str) -> None:
    """Import one part's CLI module and let it register its commands (once)."""
    if name in _loaded:
        return
    _loaded.add(name)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return  # part not built yet
        raise
    module.register(cli)


def _load_parts(name: str | None = None) -> None:
    for part in (name,) if name else PART_CLIS:
        _load_part(part)


class RootGroup(OneLineErrors):
    """The root group: part commands are imported when named (or listed), not at start-up."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands or cmd_name in _SHARED_GROUPS:
            _load_parts(COMMAND_PARTS.get(cmd_name))
            if cmd_name not in self.commands:  # not where the table says (or not listed): load all
                _load_parts()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _load_parts()
        return super().list_commands(ctx)


@click.group(
    cls=RootGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=EXIT_CODES_HELP,
)
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
    """Calibrate operating points: screening thresholds, rework limits, the segmenter's defect score."""


@cli.group(name="config", cls=OneLineErrors)
def config_group() -> None:
    """Inspect the effective configuration."""


@config_group.command("show")
@common_options
def config_show(app: AppContext) -> None:
    """Print the effective config (defaults merged with --config) as TOML."""
    from oringscan.config import config_to_toml

    click.echo(f"# data: {app.data_root}\n# output: {app.output_root}\n# db: {app.db_url}")
    click.echo(config_to_toml(app.config))


def main() -> None:
    cli(prog_name="oringscan")


if __name__ == "__main__":
    main()
