"""``evaluate compare``: every configured variant on the same test split, in one run.

A variant is one stage's settings over the configured ones (``[compare] variants``, or
:func:`default_variants`): a **screening** variant (``screening = {...}``: PatchCore, PaDiM,
FastFlow, EfficientAD on a backbone; fitted, calibrated and scored by
:mod:`oringscan.screening.compare`) or a **segmentation** variant (``segmentation = {stage = ...}``:
Mask R-CNN, the semantic segmenter or the tile classifier). A segmentation variant trains as
``oringscan train segmentation`` does (same tiles, recipe, budget; calibrated on val at the end), but
in a workspace of its own under ``output/<type>/compare/<variant>/`` whose data set is the type's
(linked, not copied), so the production checkpoint is never touched. It is then loaded back and
predicts every test tile, standalone (not only the tiles screening flags), so each row measures one
stage:

- frame score: the frame's best tile score (screening: the tile score; a second stage: its best
  instance score on the tile, down to the evaluation floor);
- the operating point: screening's stored threshold; a second stage's calibrated defect gate
  (:class:`~oringscan.pipeline.policy.DefectGate`: what the Inspector lets it call, per class), so a
  stage that did not qualify on val calls nothing (``qualified`` false, recall 0);
- recall by defect size: per labelled defect, whether its tile is called at the operating point;
- seconds per frame: all the frame's test tiles through the loaded model (tiles in memory);
- fit seconds (fit + calibration, or training + calibration) and model size (screening: its folder;
  a second stage: its weights, without the optimizer state its checkpoint also holds).

Writes ``compare.json`` (all numbers), ``compare.md`` (the table) and ``compare.png``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from oringscan.config import Config, SegmentationConfig
from oringscan.errors import ConfigError
from oringscan.workspace import TypeWorkspace

log = logging.getLogger(__name__)

Kind = Literal["screening", "segmentation"]

# The second stages beside the screening defaults; each trains with the configured [segmentation]
# settings (its budget: max_minutes) and the stage's default network.
DEFAULT_STAGE_VARIANTS: list[dict[str, Any]] = [
    {"name": "maskrcnn", "segmentation": {"stage": "maskrcnn"}},
    {"name": "semantic", "segmentation": {"stage": "semantic"}},
    {"name": "classifier", "segmentation": {"stage": "classifier"}},
]


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: its name, which stage it varies and the full config it runs with."""

    name: str
    kind: Kind
    config: Config

    @property
    def slug(self) -> str:
        """Its folder name under ``output/<type>/compare/``."""
        from oringscan.screening.compare import slug

        return slug(self.name)


@dataclass
class CompareResult:
    """What one ``evaluate compare`` run measured (one row per variant) and where it wrote it."""

    oring_type: str
    rows: list[dict[str, Any]]
    json_path: Path
    markdown_path: Path
    png_path: Path
    split: str = "test"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.oring_type,
            "split": self.split,
            "variants": self.rows,
            "json": str(self.json_path),
            "markdown": str(self.markdown_path),
            "png": str(self.png_path),
        }


def default_variants() -> list[dict[str, Any]]:
    """The built-in list: the screening defaults, then the three segmentation stages."""
    from oringscan.screening.compare import DEFAULT_VARIANTS

    return [*DEFAULT_VARIANTS, *DEFAULT_STAGE_VARIANTS]


def _segmentation_variant(config: Config, name: str, settings: dict[str, Any]) -> Config:
    try:
        seg = SegmentationConfig.model_validate({**config.segmentation.model_dump(), **settings})
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, one line
        first = str(exc).splitlines()
        raise ConfigError(f"[compare] variant {name!r}: {' '.join(first[:3])}") from None
    return config.model_copy(update={"segmentation": seg})


def configured_variants(config: Config) -> list[Variant]:
    """The variants to run, each with its full config; a bad setting or a repeated name is one
    ConfigError line."""
    from oringscan.screening.compare import screening_variant, slug

    raw = (
        [v.model_dump() for v in config.compare.variants]
        if config.compare.variants is not None
        else default_variants()
    )
    out: list[Variant] = []
    seen: set[str] = set()
    for v in raw:
        name = str(v["name"])
        if slug(name) in seen:
            raise ConfigError(f"[compare] variants: two variants named {name!r}")
        seen.add(slug(name))
        if v.get("segmentation") is not None:
            if v.get("screening"):
                raise ConfigError(f"[compare] variant {name!r}: give screening or segmentation settings")
            out.append(Variant(name, "segmentation", _segmentation_variant(config, name, v["segmentation"])))
        else:
            out.append(Variant(name, "screening", screening_variant(config, name, v.get("screening", {}))))
    return out


# --- a segmentation variant -----------------------------------------------------------------------


def variant_workspace(source: TypeWorkspace, directory: Path) -> TypeWorkspace:
    """A workspace of the variant's own (output root ``directory``) whose data set is the type's:
    the split files, tiles, summary and screening model are linked, so training writes its
    checkpoints, history and calibration there and never into the production folders."""
    own = TypeWorkspace(Path(directory), source.oring_type)
    own.root.mkdir(parents=True, exist_ok=True)
    shared = {
        source.annotations("train").parent,
        source.images_dir("train").parent,
        source.dataset_summary,
        source.screening_dir,  # an anomaly-guided Mask R-CNN reads the type's screening maps
    }
    for target in sorted(shared):
        if not target.exists():
            continue
        link = own.root / target.relative_to(source.root)
        if link.is_symlink() or link.exists():
            continue
        try:
            link.symlink_to(target.resolve(), target_is_directory=target.is_dir())
        except OSError:  # no symlinks here (some Windows accounts): a copy, read-only in spirit
            (shutil.copytree if target.is_dir() else shutil.copy2)(target, link)
    return own


def _weights_bytes(model: Any) -> int:
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    return int(sum(t.numel() * t.element_size() for t in state.values()))


def tile_decisions(per_tile: list[list[Any]], gate: Any) -> tuple[np.ndarray, np.ndarray]:
    """(best instance score per tile, 0 when none; 1.0 where the gate calls the tile a defect)."""
    best = np.array([max((i.score for i in found), default=0.0) for found in per_tile], dtype=float)
    called = np.zeros(len(per_tile), dtype=float)
    for k, found in enumerate(per_tile):
        for inst in found:
            need = gate.threshold(inst.label)
            if need is not None and inst.score >= need:
                called[k] = 1.0
                break
    return best, called


def evaluate_stage_variant(
    variant: Variant,
    output_root: Path,
    oring_type: str,
    directory: Path,
    records: list[Any],
    grays: list[np.ndarray],
) -> dict[str, Any]:
    """Train one segmentation stage into ``directory``, load it back, predict the test tiles; its row."""
    from oringscan.pipeline.policy import DefectGate
    from oringscan.screening.metrics import auroc, frame_scores, recall_at, recall_by_size
    from oringscan.segmentation import stage_from_config, train_segmentation
    from oringscan.segmentation.stages import SCORE_FLOOR

    config = variant.config
    if config.pipeline.runtime != "torch":  # the variant just trained has no exported graph
        config = config.model_copy(
            update={"pipeline": config.pipeline.model_copy(update={"runtime": "torch"})}
        )
    own = variant_workspace(TypeWorkspace.from_config(config, output_root, oring_type), directory)
    shutil.rmtree(own.checkpoints_dir, ignore_errors=True)  # an earlier run's files never leak in
    t0 = time.perf_counter()
    summary = train_segmentation(
        config, own.output_root, oring_type, progress=False, echo=lambda line: log.info("%s", line)
    )
    fit_s = time.perf_counter() - t0
    stage = stage_from_config(config, own, version="working")
    seg_name = config.segmentation.stage
    # Every instance down to the evaluation floor (a classifier's probability down to 0): the ranking.
    stage.report_scores_from(SCORE_FLOOR if seg_name == "maskrcnn" else 0.0)
    batch = config.pipeline.tile_batch_size
    stage.predict_arrays(grays[:2], batch_size=batch)  # warm-up (lazy imports, allocator)
    t1 = time.perf_counter()
    per_tile = stage.predict_arrays(grays, batch_size=batch)
    score_s = time.perf_counter() - t1
    gate = DefectGate.from_calibration(stage.calibration, config.pipeline)
    best, called = tile_decisions(per_tile, gate)
    fs, fd, _ = frame_scores(records, best)
    frames_called, _, _ = frame_scores(records, called)
    sizes = recall_by_size(records, called, 0.5)
    checkpoint = own.best_checkpoint
    return {
        "name": variant.name,
        "kind": "segmentation",
        "model": seg_name,
        "backbone": str(stage.describe().get("backbone") or config.segmentation.backbone),
        "pretrained": str(summary.get("pretrained", "")),
        "epochs": summary.get("epochs_run"),
        "stopped": summary.get("stopped"),
        "frames": int(len(fs)),
        "defect_frames": int(fd.sum()),
        "frame_auroc": auroc(fs, fd),
        "tile_auroc": auroc(best, np.array([r.is_defect for r in records], dtype=bool)),
        "qualified": gate.qualified,
        "operating_point": gate.reason,
        "threshold": gate.lowest,
        "recall_at_threshold": recall_at(frames_called, fd, 0.5),
        "false_rejects": int((frames_called[~fd] > 0.5).sum()),
        "good_frames": int((~fd).sum()),
        "recall_by_size": {k: v["recall"] for k, v in sizes.items()},
        "defects_by_size": {k: v["n"] for k, v in sizes.items()},
        "seconds_per_frame": score_s / max(1, len(fs)),
        "fit_seconds": fit_s,
        "model_bytes": _weights_bytes(stage.model),
        "checkpoint_bytes": checkpoint.stat().st_size if checkpoint.is_file() else None,
    }


# --- the run -------------------------------------------------------------------------------------


def compare_variants(
    config: Config, output_root: Path, oring_type: str, only: list[str] | None = None, progress: bool = True
) -> CompareResult:
    """Every variant on the same test split; writes compare.json, compare.md and compare.png."""
    from oringscan.screening.compare import evaluate_variant, slug
    from oringscan.screening.data import load_split, read_tile

    config.oring_type(oring_type)
    variants = configured_variants(config)
    if only:
        wanted = {slug(x) for x in only}
        variants = [v for v in variants if v.slug in wanted]
        if not variants:
            raise ConfigError(f"--variant {', '.join(only)}: no such variant")
    root = TypeWorkspace.from_config(config, output_root, oring_type).variants_dir
    records = load_split(output_root, oring_type, "test")
    test_images = [read_tile(r.path) for r in records]
    rows: list[dict[str, Any]] = []
    for variant in variants:
        if progress:
            log.warning("compare %s: %s ...", oring_type, variant.name)
        directory = root / variant.slug
        try:
            if variant.kind == "screening":
                row = evaluate_variant(
                    variant.name, variant.config, output_root, oring_type, directory, test_images
                )
                row["kind"] = "screening"
                row["qualified"] = True
            else:
                row = evaluate_stage_variant(
                    variant, output_root, oring_type, directory, records, test_images
                )
            rows.append(row)
        except Exception as exc:  # noqa: BLE001 - one failing variant is a row, the others still run
            log.warning("compare %s: %s failed: %s", oring_type, variant.name, exc)
            rows.append({"name": variant.name, "kind": variant.kind, "error": f"{type(exc).__name__}: {exc}"})
        _write(root, oring_type, rows)  # after every variant: a long run that is stopped keeps its rows
    plot(root / "compare.png", rows, oring_type)
    return CompareResult(oring_type, rows, root / "compare.json", root / "compare.md", root / "compare.png")


def _write(root: Path, oring_type: str, rows: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    result = {"model": oring_type, "split": "test", "variants": rows}
    (root / "compare.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    (root / "compare.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: one line per variant (a failed one says why; an unqualified second stage
    says so in its recall cell, since the line would not let it call defects)."""
    head = (
        "| variant | stage | frame AUROC | recall @ operating point | false rejects | few px | tens px "
        "| large | s / frame | fit s | model size |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        kind = "2nd stage" if r.get("kind") == "segmentation" else "screening"
        if "error" in r:
            lines.append(f"| {r['name']} | {kind} | failed: {r['error'][:80]} | | | | | | | | |")
            continue
        by = r["recall_by_size"]
        size = r["model_bytes"]
        size_s = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"
        recall = _f(r["recall_at_threshold"], 2)
        if not r.get("qualified", True):
            recall = "not qualified"
        lines.append(
            f"| {r['name']} | {kind} | {_f(r['frame_auroc'])} | {recall} "
            f"| {r['false_rejects']} / {r['good_frames']} | {_f(by.get('few_px'), 2)} "
            f"| {_f(by.get('tens_of_px'), 2)} | {_f(by.get('large'), 2)} | {r['seconds_per_frame']:.2f} "
            f"| {r['fit_seconds']:.0f} | {size_s} |"
        )
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]], oring_type: str) -> None:
    """Frame AUROC and recall at the operating point per variant, with seconds per frame beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if "error" not in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.6 * max(3, len(ok)) + 1.5), sharey=True)
    y = np.arange(len(ok))
    names = [r["name"] + ("" if r.get("kind") != "segmentation" else " (2nd stage)") for r in ok]
    ax.barh(y - 0.2, [r["frame_auroc"] or 0 for r in ok], 0.4, label="frame AUROC", color="tab:blue")
    ax.barh(
        y + 0.2,
        [r["recall_at_threshold"] or 0 for r in ok],
        0.4,
        label="recall @ operating point",
        color="tab:red",
    )
    for k, r in enumerate(ok):
        if not r.get("qualified", True):
            ax.text(0.02, k + 0.2, "not qualified", va="center", fontsize=7)
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.05)
    ax.invert_yaxis()
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"{oring_type}: test split")
    ax2.barh(y, [r["seconds_per_frame"] for r in ok], 0.5, color="tab:gray")
    ax2.set_xlabel("seconds per frame (all test tiles)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
