"""``oringscan demo``: the whole job on synthetic frames, end to end, in minutes on a laptop.

Every step is the real one a plant runs (the same functions the CLI commands call), only smaller:
a few dozen frames, a light segmentation model trained for a fixed time budget. The result is a
filled database the dashboard opens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from oringscan.config import Config, SplitConfig, config_to_toml

log = logging.getLogger(__name__)

DEMO_MODEL = "model1"


@dataclass(slots=True)
class DemoPlan:
    """How big the demo is; the defaults take under 5 minutes on 2 idle CPU cores."""

    n_good: int = 12
    # 20 defect frames (~40 labelled defects), so that the val split below holds 6 defect frames: the
    # segmenter's calibration needs precision 0.9 with >= 3 true hits on val (4-6 val defects before).
    n_defect: int = 20
    n_rework: int = 3
    line_good: int = 8  # the batch inspected at the end: 80% good
    line_defect: int = 1
    line_rework: int = 1
    size: tuple[int, int] = (2448, 2048)
    tile_size: int = 640
    overlap: int = 100
    # Train / val / test share of the frames (split by frame, seeded). The demo evaluates nothing on
    # test, so val gets a larger share than a plant's 0.15: it is what calibrates the segmenter.
    split: tuple[float, float, float] = (0.6, 0.3, 0.1)
    # "auto": on CPU ImageNet EfficientNet-Lite0 in the fast variant of the CPU recipe (see
    # demo_config), on CUDA the seed's ResNet50-FPN.
    backbone: str = "auto"
    input_size: int | None = None  # None: the recipe's (448 px on CPU)
    # A fixed schedule, not a time budget: the same seed gives the same model on any machine. It
    # fine-tunes the synthetic starting model (init_from below): 4 epochs of ~32 iterations at lr
    # 0.002, cut 10x for the last one (from ImageNet alone, 7 epochs at 0.02 reached val AP50 ~0.2
    # and did not qualify; 0.02 from the start swung val AP50 0.39-0.63 and kept a weaker epoch).
    epochs: int = 4
    lr_step_size: int = 3
    lr: float = 0.002
    # Validated every epoch on 10 tiles (labelled first); the calibration that qualifies the model
    # predicts all of val (~90 tiles), the good ones included.
    val_max_tiles: int = 10
    # Copy-paste (segmentation/pasting.py) at the CPU recipe's rate: 1-2 pasted defects on half the
    # tiles (0.75 x 1-3 measured worse on the demo: val AP50 0.18 against 0.32).
    paste_prob: float = 0.5
    paste_max: int = 2
    # Where segmentation starts on a CPU: "synthetic" (the starting model shipped with oringscan,
    # learnt from other synthetic frames) or "none" (ImageNet Lite0 alone: too little to call a
    # defect in minutes).
    init_from: str = "synthetic"
    workers: int = 2
    timings_s: dict[str, float] = field(default_factory=dict)


def demo_config(plan: DemoPlan) -> Config:
    config = Config()
    config.frame.width, config.frame.height = plan.size
    config.tiling.tile_size, config.tiling.overlap = plan.tile_size, plan.overlap
    train, val, test = plan.split
    config.split = SplitConfig(train=train, val=val, test=test, seed=config.split.seed)
    config.preprocess.workers = plan.workers
    config.screening.coreset_ratio = 0.05
    t = config.training
    t.backbone = plan.backbone  # type: ignore[assignment]
    if _trains_on_cpu(t.backbone, t.device):
        # Not ``auto``'s CPU recipe but its fast variant (models.FAST_CPU_RECIPE): frozen backbone
        # (FPN and heads train), labelled defects copy-pasted onto half the train tiles, crops
        # around defects; 1.5x the iterations per second (README "Segmentation").
        from oringscan.segmentation.models import FAST_CPU_RECIPE

        for key, value in FAST_CPU_RECIPE.items():
            setattr(t, key, value)
        # Fine-tuned from the starting model shipped with oringscan (learnt from synthetic frames
        # of other seeds; segmentation/pretrain.py), as a plant would start: see README "Segmentation".
        t.init_from = plan.init_from
    if plan.input_size is not None:
        t.input_size = plan.input_size
    t.epochs = plan.epochs
    t.lr_step_size = plan.lr_step_size
    if _trains_on_cpu(t.backbone, t.device):
        t.lr = plan.lr  # a fine-tuning rate (the fast variant trains from ImageNet at 0.02)
    t.batch_size = 2
    t.num_workers = 0
    t.amp = False
    t.val_max_tiles = plan.val_max_tiles
    t.paste_prob, t.paste_max = plan.paste_prob, plan.paste_max
    t.patience = plan.epochs  # no early stop: the schedule ends with the low learning rate
    # The demo's dashboard runs on this machine only (127.0.0.1), where login may be off; a plant
    # dashboard keeps [dashboard] require_login on and creates users with `oringscan users add`.
    config.dashboard.require_login = False
    return config


def write_demo_config(workdir: Path | str, plan: DemoPlan) -> tuple[Config, Path]:
    """The demo's config, also written to ``<workdir>/demo.toml`` (what the printed commands use)."""
    config = demo_config(plan)
    path = Path(workdir) / "demo.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_toml(config), encoding="utf-8")
    return config, path


def _step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True, err=True)


def build_demo_models(
    workdir: Path | str,
    minutes: float | None = None,
    seed: int = 42,
    plan: DemoPlan | None = None,
    progress: bool = True,
) -> tuple[Config, Path, Path, dict[str, Any]]:
    """Steps 1-5 of the demo: data, tiles, screening, segmentation, rework rules.

    Segmentation trains the plan's fixed schedule (``plan.epochs``); ``minutes`` also caps it at
    that many wall minutes (then how far it gets depends on the machine). Returns (config, data
    root, output root, segmentation summary); the config is also written to
    ``<workdir>/demo.toml`` so the CLI commands can be run on the result.
    """
    from oringscan.preprocess import preprocess_type
    from oringscan.rework_rules import calibrate_rules
    from oringscan.screening import fit_screening
    from oringscan.segmentation import train_segmentation
    from oringscan.synth import synthesize_dataset

    plan = plan or DemoPlan()
    workdir = Path(workdir)
    data_root, output_root = workdir / "dataset", workdir / "output"
    config, _ = write_demo_config(workdir, plan)
    timings = plan.timings_s

    def mark(name: str, since: float) -> None:
        timings[name] = round(time.perf_counter() - since, 1)

    _step(
        f"1/6 synthesising {plan.n_good} good, {plan.n_defect} defect, {plan.n_rework} rework frames of {DEMO_MODEL}"
    )
    t = time.perf_counter()
    synthesize_dataset(
        data_root,
        config,
        types=(DEMO_MODEL,),
        n_good=plan.n_good,
        n_defect=plan.n_defect,
        n_rework=plan.n_rework,
        seed=seed,
        progress=progress,
        workers=plan.workers,
        size=plan.size,
    )
    mark("synth", t)

    _step(f"2/6 preprocessing: ring ROI, {plan.tile_size} px tiles, COCO split by frame")
    t = time.perf_counter()
    prep = preprocess_type(
        config, data_root, output_root, DEMO_MODEL, progress=progress, workers=plan.workers
    )
    mark("preprocess", t)
    tiles = prep.get("tiles", {}).get("written")
    if tiles is not None:
        click.echo(f"   {tiles} tiles written to {output_root / DEMO_MODEL}", err=True)

    _step("3/6 fitting the PatchCore screening model on the good tiles (and the ring-shape screen)")
    t = time.perf_counter()
    # data_root: the same good frames are measured for the ring-shape screen (screening/shape.py).
    screen = fit_screening(config, output_root, DEMO_MODEL, progress=progress, data_root=data_root)
    mark("screening", t)
    click.echo(
        f"   threshold {screen.threshold:.4g} ({screen.meta.calibration.get('statement', '')})", err=True
    )

    cap = "" if minutes is None else f", at most {minutes:g} min"
    _step(
        f"4/6 training the segmentation model ({plan.backbone}: {_recipe(config)}), "
        f"{config.training.epochs} epochs{cap}"
    )
    t = time.perf_counter()
    seg = train_segmentation(
        config,
        output_root,
        DEMO_MODEL,
        progress=progress,
        max_minutes=minutes,
        echo=lambda line: click.echo(f"   {line}", err=True),
    )
    mark("segmentation", t)

    _step("5/6 calibrating the rework rules on the good frames")
    t = time.perf_counter()
    # Every good frame of the small set (not just the train split's few): steadier k-sigma limits.
    good_frames = sorted((data_root / "images" / config.oring_type(DEMO_MODEL).good_folder).glob("*.bmp"))
    calib = calibrate_rules(config, data_root, output_root, DEMO_MODEL, frames=good_frames, progress=progress)
    mark("rework", t)
    click.echo(
        f"   {len(calib.rules.rule)} rules from {calib.frames_used} frames -> {calib.rules_path}", err=True
    )
    return config, data_root, output_root, seg


def run_demo(
    workdir: Path | str,
    minutes: float | None = None,
    seed: int = 42,
    plan: DemoPlan | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesise, preprocess, fit screening, train segmentation, calibrate rework, inspect a batch."""
    from rich.console import Console

    from oringscan.db import InspectionStore
    from oringscan.pipeline.batch import inspect_paths
    from oringscan.pipeline.inspector import Inspector
    from oringscan.pipeline.report import print_summary
    from oringscan.synth import synthesize_dataset

    plan = plan or DemoPlan()
    workdir = Path(workdir)
    started = time.perf_counter()
    config, _data_root, output_root, seg = build_demo_models(workdir, minutes, seed, plan, progress)
    line_root = workdir / "line"
    config_path = workdir / "demo.toml"
    db_url = f"sqlite:///{(output_root / 'inspections.db').absolute().as_posix()}"
    timings = plan.timings_s

    _step(
        f"6/6 inspecting a fresh line batch ({plan.line_good} good, {plan.line_defect} defect, "
        f"{plan.line_rework} rework) into {db_url}"
    )
    t = time.perf_counter()
    synthesize_dataset(
        line_root,
        config,
        types=(DEMO_MODEL,),
        n_good=plan.line_good,
        n_defect=plan.line_defect,
        n_rework=plan.line_rework,
        seed=seed + 1,
        progress=False,
        size=plan.size,
    )
    inspector = Inspector.load(config, output_root, DEMO_MODEL)
    store = InspectionStore(db_url)
    summary = inspect_paths(
        inspector,
        [line_root / "images"],
        store,
        output_root=output_root,
        reinspect=True,
        progress=progress,
        station="demo",
    )
    store.dispose()
    timings["inspect"] = round(time.perf_counter() - t, 1)
    timings["total"] = round(time.perf_counter() - started, 1)

    console = Console()
    print_summary(summary, console, db_url=db_url)
    steps = "  ".join(f"{k} {v:.0f}s" for k, v in timings.items())
    console.print(f"demo finished in {timings['total'] / 60:.1f} min ({steps})")
    console.print("Open the review dashboard with:")
    console.print(
        f"  oringscan dashboard --config {_quote(config_path)} --db {db_url} --data {_quote(line_root)} "
        f"--output {_quote(output_root)}",
        soft_wrap=True,
        markup=False,
    )
    console.print(
        f"Inspect more frames with:\n  oringscan inspect --config {_quote(config_path)} "
        f"--output {_quote(output_root)} --model {DEMO_MODEL} FRAMES...",
        soft_wrap=True,
        markup=False,
    )
    return {
        "workdir": str(workdir),
        "db_url": db_url,
        "config": str(config_path),
        "run_id": summary.run_id,
        "counts": summary.counts,
        "segmentation": {k: seg.get(k) for k in ("epochs_run", "best_segm_AP", "stopped", "calibration")},
        "verdicts": {Path(r.image).name: str(r.verdict) for r in summary.results},
        "timings_s": dict(timings),
    }


def _trains_on_cpu(backbone: str, device: str) -> bool:
    """Whether ``backbone`` (``auto`` included) trains the CPU backbone on this machine."""
    from oringscan.segmentation.inference import resolve_device
    from oringscan.segmentation.models import CPU_BACKBONE, resolve_backbone

    return resolve_backbone(backbone, resolve_device(device)) == CPU_BACKBONE


def _recipe(config: Config) -> str:
    """What ``backbone = "auto"`` becomes on this machine, in words."""
    from oringscan.segmentation.inference import resolve_device
    from oringscan.segmentation.models import (
        CPU_BACKBONE,
        FAST_CPU_RECIPE,
        resolve_anomaly_channel,
        resolve_backbone,
    )

    t = config.training
    backbone = resolve_backbone(t.backbone, resolve_device(t.device))
    guided = resolve_anomaly_channel(t.anomaly_channel, backbone, t.backbone)
    fast = (
        f", frozen backbone, copy-paste, 448 px crops (the fast CPU recipe) at lr {t.lr:g}"
        if backbone == CPU_BACKBONE
        and all(getattr(t, k) == v for k, v in FAST_CPU_RECIPE.items() if k != "lr")
        else ""
    )
    start = (
        f", from the {t.init_from} starting model"
        if t.init_from and t.init_from.lower() != "none" and backbone == CPU_BACKBONE
        else ""
    )
    return backbone + (" guided by the screening anomaly map" if guided else "") + fast + start


def _quote(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if " " in text else text
