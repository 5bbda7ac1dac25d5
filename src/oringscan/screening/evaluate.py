"""Test-split evaluation: AUROC, recall and false rejects at the stored threshold, by defect size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config
from oringscan.workspace import TypeWorkspace

from .data import load_split
from .fit import score_records, screening_dir
from .metrics import auroc, frame_scores, recall_at, recall_by_size, roc_curve
from .model import ScreeningModel


def _plot(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float | None]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {'n/a' if auc is None else f'{auc:.3f}'})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate (good flagged)")
    ax.set_ylabel("true positive rate (defects flagged)")
    ax.set_title("Screening ROC (test split)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _histogram(path: Path, scores: np.ndarray, positive: np.ndarray, threshold: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(float(scores.min()), float(max(scores.max(), threshold)) * 1.02, 40)
    ax.hist(
        scores[~positive], bins=bins, alpha=0.6, label=f"good ({int((~positive).sum())})", color="tab:green"
    )
    if positive.any():
        ax.hist(
            scores[positive], bins=bins, alpha=0.6, label=f"defect ({int(positive.sum())})", color="tab:red"
        )
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_screening(
    config: Config, output_root: Path, oring_type: str, split: str = "test", progress: bool = True
) -> dict[str, Any]:
    """Score ``split`` with the stored model; write metrics.json, roc.png and histogram.png."""
    directory = screening_dir(output_root, oring_type)
    screen = ScreeningModel.load(directory, expected_type=oring_type)
    records = load_split(output_root, oring_type, split)
    scores = score_records(
        screen, records, config.screening.batch_size, progress, desc=f"evaluating {oring_type}"
    )
    thr = screen.threshold
    tile_pos = np.array([r.is_defect for r in records], dtype=bool)
    fs, fd, names = frame_scores(records, scores)
    metrics: dict[str, Any] = {
        "model": oring_type,
        "split": split,
        "threshold": thr,
        "marginal_threshold": screen.meta.marginal_threshold,
        "backbone": screen.meta.backbone,
        "pretrained": screen.meta.pretrained,
        "tiles": {
            "n": int(len(records)),
            "n_defect": int(tile_pos.sum()),
            "auroc": auroc(scores, tile_pos),
            "recall_at_threshold": recall_at(scores, tile_pos, thr),
            "false_reject_rate_at_threshold": float((scores[~tile_pos] > thr).mean())
            if (~tile_pos).any()
            else None,
        },
        "frames": {
            "n": int(len(fs)),
            "n_defect": int(fd.sum()),
            "auroc": auroc(fs, fd),
            "recall_at_threshold": recall_at(fs, fd, thr),
            "false_reject_rate_at_threshold": float((fs[~fd] > thr).mean()) if (~fd).any() else None,
            "marginal": int(((fs > (screen.meta.marginal_threshold or thr)) & (fs <= thr)).sum()),
        },
        "recall_by_defect_size": recall_by_size(records, scores, thr),
        "frame_scores": {n: round(float(s), 6) for n, s in zip(names, fs, strict=True)},
    }
    out = TypeWorkspace(Path(output_root), oring_type).screening_evaluation_dir
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    if tile_pos.any() and (~tile_pos).any():
        fpr, tpr, _ = roc_curve(scores, tile_pos)
        curves["tiles"] = (fpr, tpr, metrics["tiles"]["auroc"])
    if fd.any() and (~fd).any():
        fpr, tpr, _ = roc_curve(fs, fd)
        curves["frames"] = (fpr, tpr, metrics["frames"]["auroc"])
    if curves:
        _plot(out / "roc.png", curves)
        metrics["roc_png"] = str(out / "roc.png")
    if len(scores):
        _histogram(out / "histogram.png", fs, fd, thr, f"{oring_type}: frame scores ({split})")
        metrics["histogram_png"] = str(out / "histogram.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    metrics["metrics_json"] = str(out / "metrics.json")
    return metrics
