"""How the whole pipeline does on parts it never trained on: a part-level confusion matrix.

Truth comes from the folder a frame sits in (the type's good, defect and rework folders); the
frames are the preprocess split's (``test`` by default: never used to fit or calibrate anything)
plus every rework frame (rework is never trained on). A defect part counts as caught when the
pipeline does not pass it as good (``suspect`` sends it to a person); the strict recall counts
only the ``defect`` verdict.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from oringscan.config import Config
from oringscan.errors import ModelFileError, OringscanError
from oringscan.frames import iter_image_files
from oringscan.pipeline.batch import FrameRecorder, Prefetcher
from oringscan.pipeline.inspector import Inspector
from oringscan.types import InspectionResult
from oringscan.workspace import TypeWorkspace

TRUTHS = ("good", "defect", "rework")
PREDICTIONS = ("good", "defect", "rework", "suspect", "error")


class EvaluationError(OringscanError):
    pass


def split_frames(
    config: Config, data_root: Path, output_root: Path, oring_type: str, split: str
) -> list[tuple[Path, str]]:
    """(frame path, truth) for the split's source frames plus the type's rework frames."""
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    try:
        out = {f.path: f.kind for f in workspace.source_frames(split, config, data_root)}
    except ModelFileError as exc:
        raise EvaluationError(str(exc)) from None
    spec = config.oring_type(oring_type)
    rework_dir = Path(data_root) / "images" / (spec.rework_folder or f"{oring_type}_rework")
    if rework_dir.is_dir():
        for path in iter_image_files([rework_dir], config.frame):
            out.setdefault(path, "rework")
    if not out:
        raise EvaluationError(f"{workspace.annotations(split)}: the {split} split lists no frames")
    return sorted(out.items())


def confusion(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    counts = Counter(pairs)
    return {t: {p: counts.get((t, p), 0) for p in PREDICTIONS} for t in TRUTHS}


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def metrics_from_confusion(matrix: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Recalls (caught = not passed as good; strict = the right verdict) and the false-reject rate."""
    n = {t: sum(matrix[t].values()) for t in TRUTHS}
    return {
        "frames": n,
        "defect_recall": _rate(n["defect"] - matrix["defect"]["good"], n["defect"]),
        "defect_recall_strict": _rate(matrix["defect"]["defect"], n["defect"]),
        "rework_recall": _rate(n["rework"] - matrix["rework"]["good"], n["rework"]),
        "rework_recall_strict": _rate(matrix["rework"]["rework"], n["rework"]),
        "false_reject_rate": _rate(n["good"] - matrix["good"]["good"], n["good"]),
        "suspect_rate": _rate(sum(matrix[t]["suspect"] for t in TRUTHS), sum(n.values())),
        "error_rate": _rate(sum(matrix[t]["error"] for t in TRUTHS), sum(n.values())),
        "accuracy": _rate(sum(matrix[t][t] for t in TRUTHS), sum(n.values())),
    }


# --- the line's false-reject budget: expected against measured, per stage --------------------------

BUDGET_STAGES = ("screening", "shape", "review", "rework", "line")
STAGE_MEANING = {
    "screening": "screening flag",  # texture score above the threshold
    "shape": "ring-shape screen",  # edge bulge over the shape threshold (screening/shape.py)
    "review": "review band",  # score in the marginal band below it
    "rework": "rework rules",  # geometry out of the limits
    "line": "line (not passed)",  # any of them: the part is not passed as good
}


def _stage_hit(stage: str, result: InspectionResult) -> bool:
    """Whether a good part was stopped by this stage (stages overlap; the line counts it once)."""
    from oringscan.types import ReworkVerdict, Verdict

    s = result.screening
    if stage == "screening":  # the texture threshold (a shape-flagged frame may pass it too)
        return s is not None and s.flagged and (s.shape_reason is None or s.score > s.threshold)
    if stage == "shape":
        return s is not None and s.shape_reason is not None
    if stage == "review":
        return s is not None and not s.flagged and s.marginal
    if stage == "rework":
        return result.rework is not None and result.rework.verdict in (
            ReworkVerdict.REWORK,
            ReworkVerdict.DEFECT,
        )
    return result.verdict is not Verdict.GOOD


def _expected_rates(inspector: Inspector) -> dict[str, tuple[float | None, list[float] | None]]:
    """What each stage's calibration expects on unseen good parts (None where it does not say)."""
    out: dict[str, tuple[float | None, list[float] | None]] = {}
    calibration = getattr(getattr(inspector.screening, "meta", None), "calibration", None) or {}
    flag = calibration.get("expected_false_reject_rate")
    out["screening"] = (flag, calibration.get("expected_false_reject_interval"))
    out["review"] = (calibration.get("expected_review_rate"), None)
    shape = _shape_screen(inspector)
    if shape is not None:
        info = shape.info
        out["shape"] = (info.get("expected_false_reject_rate"), info.get("expected_false_reject_interval"))
    meta = getattr(getattr(inspector.rework, "rules", None), "meta", None)
    rework = getattr(meta, "expected_rate", None)
    low, high = getattr(meta, "rate_low", None), getattr(meta, "rate_high", None)
    out["rework"] = (rework, None if low is None or high is None else [low, high])
    parts = [out[s][0] for s in ("screening", "shape", "review", "rework") if s in out]
    known = [float(p) for p in parts if p is not None]
    out["line"] = (sum(known) if len(known) == len(parts) else None, None)  # overlaps only lower it
    return out


def _shape_screen(inspector: Inspector) -> Any:
    """The inspector's ring-shape screen (``screening/shape.py``), None when its model has none."""
    try:
        return getattr(inspector.screening, "shape_screen", None)
    except OringscanError:  # a broken shape_screen entry: reported by inspection, not here
        return None


def false_reject_report(
    inspector: Inspector, results: list[tuple[str, InspectionResult]], confidence: float = 0.9
) -> dict[str, Any]:
    """Per stage and for the line: its budget share, what its calibration expects, what the good
    parts of this evaluation show (count, rate and a Clopper-Pearson interval).

    The ring-shape screen has a row when the model has one: its share (``screening.shape_share``)
    comes out of rework's, so the rework rules' row then holds the rest (what they were calibrated
    to, :func:`oringscan.rework_rules.calibrate.rework_target`) and the shares still add up to the line's."""
    from scipy import stats

    has_shape = _shape_screen(inspector) is not None
    try:
        from oringscan.budget import split_false_reject_budget
        from oringscan.screening.shape import flag_rates

        budget = split_false_reject_budget(inspector.config).as_dict()
        budget["line"] = budget.pop("total")
        if has_shape:
            budget["shape"] = flag_rates(inspector.config)[1]
            budget["rework"] -= budget["shape"]
    except (ImportError, OringscanError):
        budget = {}
    good = [r for truth, r in results if truth == "good"]
    n = len(good)
    expected = _expected_rates(inspector)
    alpha = 1 - confidence
    out: dict[str, Any] = {"good_parts": n, "confidence": confidence, "stages": {}}
    for stage in BUDGET_STAGES:
        if stage == "shape" and not has_shape:
            continue
        count = sum(_stage_hit(stage, r) for r in good)
        low = high = None
        if n:
            low = 0.0 if count == 0 else float(stats.beta.ppf(alpha / 2, count, n - count + 1))
            high = 1.0 if count == n else float(stats.beta.ppf(1 - alpha / 2, count + 1, n - count))
        exp, exp_interval = expected.get(stage, (None, None))
        out["stages"][stage] = {
            "meaning": STAGE_MEANING[stage],
            "budget": budget.get(stage),
            "expected": exp,
            "expected_interval": exp_interval,
            "measured": count / n if n else None,
            "count": count,
            "measured_interval": None if low is None else [low, high],
            # The calibration's expectation is consistent with what these parts show.
            "consistent": None if exp is None or low is None or high is None else bool(low <= exp <= high),
        }
    return out


def false_reject_table(data: dict[str, Any]) -> Any:
    """The budget report as a rich table (expected against measured)."""
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    table = Table(
        title=f"false rejects of good parts: expected against measured ({data['good_parts']} good parts, "
        f"{data['confidence']:.0%} interval)",
        title_justify="left",
    )
    for col in ("stage", "budget", "expected", "measured", "interval", ""):
        table.add_column(col, justify="left" if col in ("stage", "") else "right")
    for row in data["stages"].values():
        interval = row["measured_interval"]
        verdict = {True: "[green]as expected[/]", False: "[red]off[/]", None: ""}[row["consistent"]]
        table.add_row(
            row["meaning"],
            pct(row["budget"]),
            pct(row["expected"]),
            f"{row['count']} ({pct(row['measured'])})",
            "-" if interval is None else f"{pct(interval[0])} - {pct(interval[1])}",
            verdict,
        )
    return table


def _without_pixels(result: InspectionResult) -> InspectionResult:
    """The result as kept for the report: its overlay is written, so the per-tile anomaly maps
    (tile-size float32 each) go; memory then grows with the frame count, not with frame area."""
    if result.screening is not None:
        result.screening.anomaly_maps = None
    # OPS (issue 17): the defects' mask crops (~1 MB per frame from an unsure segmenter) are in the
    # overlay already; the report reads only verdicts, scores, reasons and rework, so they go too.
    result.defects = []
    return result


def evaluate_pipeline(
    inspector: Inspector,
    data_root: Path,
    output_root: Path,
    split: str = "test",
    out_dir: Path | None = None,
    progress: bool = True,
    frames: list[tuple[Path, str]] | None = None,
) -> dict[str, Any]:
    """Inspect the split's frames (or the given ``(frame, truth)`` pairs), write report.json, the
    confusion matrix and score plots."""
    from tqdm import tqdm

    model = inspector.oring_type
    if frames is None:
        frames = split_frames(inspector.config, Path(data_root), Path(output_root), model, split)
    workspace = TypeWorkspace.from_config(inspector.config, output_root, model)
    out_dir = Path(out_dir) if out_dir is not None else workspace.pipeline_evaluation_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_of = dict(frames)
    recorder = FrameRecorder(inspector, None, None, reinspect=True, overlay_dir=out_dir / "overlays")
    rows: list[dict[str, Any]] = []
    results: list[tuple[str, InspectionResult]] = []
    bar = tqdm(
        total=len(frames), desc=f"evaluate pipeline {model} ({split})", unit="frame", disable=not progress
    )
    for item in Prefetcher([p for p, _ in frames], inspector.config.frame):
        processed = recorder.process(item)
        assert processed is not None  # no store, reinspect=True: the recorder never skips a frame
        result = _without_pixels(processed)
        truth = truth_of[item.path]
        results.append((truth, result))
        rows.append(
            {
                "image": str(item.path),
                "truth": truth,
                "verdict": str(result.verdict),
                "screen_score": result.screen_score,
                "reasons": result.reasons,
                "total_ms": result.timings_ms.get("total"),
                "overlay": result.overlay_path,
            }
        )
        bar.update(1)
    bar.close()
    matrix = confusion([(t, str(r.verdict)) for t, r in results])
    report: dict[str, Any] = {
        "model": model,
        "split": split,
        "fingerprint": inspector.fingerprint,
        "confusion": matrix,
        **metrics_from_confusion(matrix),
        "threshold": next((r.screening.threshold for _, r in results if r.screening is not None), None),
        "mean_ms_per_frame": (sum(r.timings_ms.get("total", 0.0) for _, r in results) / len(results))
        if results
        else None,
        "frames_detail": rows,
    }
    report["false_rejects"] = false_reject_report(inspector, results)
    report["segmentation"] = inspector.segmentation_notice or None
    report["plots"] = _plots(matrix, results, report["threshold"], out_dir)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    report["report_path"] = str(out_dir / "report.json")
    return report


def _plots(
    matrix: dict[str, dict[str, int]],
    results: list[tuple[str, InspectionResult]],
    threshold: float | None,
    out_dir: Path,
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths: dict[str, str] = {}
    data = np.array([[matrix[t][p] for p in PREDICTIONS] for t in TRUTHS])
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(PREDICTIONS)), PREDICTIONS)
    ax.set_yticks(range(len(TRUTHS)), TRUTHS)
    ax.set_xlabel("pipeline verdict")
    ax.set_ylabel("true part")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(
                j,
                i,
                str(data[i, j]),
                ha="center",
                va="center",
                color="white" if data[i, j] > data.max() / 2 else "black",
            )
    ax.set_title("part-level confusion matrix")
    fig.tight_layout()
    paths["confusion"] = str(out_dir / "confusion_matrix.png")
    fig.savefig(paths["confusion"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for truth, color in zip(TRUTHS, ("tab:green", "tab:red", "tab:orange"), strict=True):
        scores = [r.screen_score for t, r in results if t == truth and r.screen_score is not None]
        if scores:
            ax.hist(scores, bins=20, alpha=0.6, color=color, label=f"{truth} ({len(scores)})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label="threshold")
    ax.set_xlabel("screening score (worst tile)")
    ax.set_ylabel("frames")
    ax.legend()
    ax.set_title("screening scores by true part")
    fig.tight_layout()
    paths["scores"] = str(out_dir / "screening_scores.png")
    fig.savefig(paths["scores"], dpi=110)
    plt.close(fig)
    return paths


def print_evaluation(report: dict[str, Any], err: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=err)
    table = Table(
        title=f"pipeline evaluation: {report['model']} ({report['split']} split + rework frames)",
        title_justify="left",
    )
    table.add_column("true \\ verdict")
    for p in PREDICTIONS:
        table.add_column(p, justify="right")
    for t in TRUTHS:
        table.add_row(t, *(str(report["confusion"][t][p]) for p in PREDICTIONS))
    console.print(table)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    lines = [
        f"defect recall (not passed as good): {pct(report['defect_recall'])}   strict (verdict defect): "
        f"{pct(report['defect_recall_strict'])}",
        f"rework recall (not passed as good): {pct(report['rework_recall'])}   strict (verdict rework): "
        f"{pct(report['rework_recall_strict'])}",
        f"false-reject rate (good parts not passed): {pct(report['false_reject_rate'])}   "
        f"suspect: {pct(report['suspect_rate'])}   error: {pct(report['error_rate'])}",
        f"report: {report.get('report_path')}   plots: {', '.join(report['plots'].values())}",
    ]
    for line in lines:
        click.echo(line, err=err)
    if report.get("false_rejects"):
        console.print(false_reject_table(report["false_rejects"]))
    if report.get("segmentation"):
        click.echo(f"note: {report['segmentation']}: segmentation called no defect", err=err)
