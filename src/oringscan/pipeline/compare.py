"""Two model versions of one type on the same frames, before a person promotes the candidate.

Both sides inspect the same frames (the test split with its truth from the data layout, plus every
frame a person reviewed, with the review's decision as truth), so the difference is the models'
alone. The report says per verdict and per stage what got better or worse, lists the frames whose
verdict changed (with both overlays), and shows each side's operating point.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oringscan.config import Config
from oringscan.errors import OringscanError
from oringscan.pipeline.evaluate import PREDICTIONS, TRUTHS, evaluate_pipeline, split_frames
from oringscan.pipeline.inspector import Inspector
from oringscan.workspace import TypeWorkspace

# The figures a quality engineer compares first, and which direction is better.
KEY_METRICS = {
    "defect_recall": "higher",
    "defect_recall_strict": "higher",
    "rework_recall": "higher",
    "false_reject_rate": "lower",
    "suspect_rate": "lower",
    "error_rate": "lower",
    "accuracy": "higher",
}


class CompareError(OringscanError):
    pass


@dataclass(frozen=True, slots=True)
class Side:
    """One side of the comparison: a label and the version it loads (None: the models in use)."""

    label: str
    version: str | None


def compare_frames(
    config: Config,
    data_root: Path,
    output_root: Path,
    oring_type: str,
    split: str = "test",
    db_url: str | None = None,
) -> list[tuple[Path, str, str]]:
    """(frame, truth, source) for the split (truth from its folder) and the reviewed frames (truth:
    the newest review's decision; frames whose file is gone are left out)."""
    frames = {p: (t, "split") for p, t in split_frames(config, data_root, output_root, oring_type, split)}
    if db_url:
        from oringscan.db import InspectionStore

        store = InspectionStore(db_url)
        try:
            reviewed = store.frames(oring_type=oring_type, reviewed=True, limit=None).items
        finally:
            store.dispose()
        for row in reviewed:
            path = Path(row.image)
            if row.review_decision in TRUTHS and path.is_file():
                frames.setdefault(path, (row.review_decision, "review"))
    return [(p, t, src) for p, (t, src) in sorted(frames.items())]


def compare_versions(
    config: Config,
    data_root: Path,
    output_root: Path,
    oring_type: str,
    candidate: str,
    baseline: str | None = None,
    split: str = "test",
    db_url: str | None = None,
    out_dir: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Inspect the same frames with ``baseline`` (None: the models in use) and ``candidate`` (a
    version id, or "working" for the newest models); write compare.json, compare.png and
    compare.html into ``out_dir`` (default ``output/<type>/evaluation/compare-<b>-vs-<c>``)."""
    workspace = TypeWorkspace.from_config(config, output_root, oring_type)
    base_label = baseline or workspace.versions.current() or "working"
    if base_label == candidate:
        raise CompareError(f"baseline and candidate are the same models ({candidate}): nothing to compare")
    sides = [Side(base_label, baseline), Side(candidate, candidate)]
    for side in sides:  # an unknown or incomplete version fails here, before any frame is inspected
        workspace.models_for(side.version).require(oring_type)
    frames = compare_frames(config, Path(data_root), Path(output_root), oring_type, split, db_url)
    if not frames:
        raise CompareError(f"{workspace.annotations(split)}: no frames to compare on")
    out_dir = (
        Path(out_dir) if out_dir else workspace.root / "evaluation" / f"compare-{base_label}-vs-{candidate}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(p, t) for p, t, _ in frames]
    reports = {}
    for side in sides:
        inspector = Inspector.load(config, output_root, oring_type, device=device, version=side.version)
        reports[side.label] = evaluate_pipeline(
            inspector, data_root, output_root, split, out_dir / side.label, progress=progress, frames=pairs
        )
    base, cand = (reports[s.label] for s in sides)
    source = {str(p): src for p, _, src in frames}
    result = {
        "oring_type": oring_type,
        "baseline": base_label,
        "candidate": candidate,
        "frames": len(frames),
        "reviewed_frames": sum(1 for _, _, src in frames if src == "review"),
        "metrics": {
            name: _delta(base.get(name), cand.get(name), direction) for name, direction in KEY_METRICS.items()
        },
        "confusion": {base_label: base["confusion"], candidate: cand["confusion"]},
        "operating_points": {label: _operating_point(r) for label, r in reports.items()},
        "stages": _stage_changes(base, cand),
        "changed": _changed_frames(base, cand, source),
    }
    result["summary"] = _summary(result)
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    result["plot"] = _plot(result, out_dir / "compare.png")
    result["html"] = _write_html(result, out_dir)
    result["out_dir"] = str(out_dir)
    return result


def _delta(before: Any, after: Any, direction: str) -> dict[str, Any]:
    change = None if before is None or after is None else after - before
    verdict = "same"
    if change:
        verdict = "better" if (change > 0) == (direction == "higher") else "worse"
    return {"baseline": before, "candidate": after, "change": change, "verdict": verdict}


def _operating_point(report: dict[str, Any]) -> dict[str, Any]:
    stages = (report.get("false_rejects") or {}).get("stages", {})
    return {
        "screening_threshold": report.get("threshold"),
        "segmentation": report.get("segmentation") or "qualified",
        "false_rejects": {
            name: {"expected": s.get("expected"), "measured": s.get("measured")} for name, s in stages.items()
        },
        "mean_ms_per_frame": report.get("mean_ms_per_frame"),
    }


def _stage_changes(base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    """Per stage: the share of good parts it held back on each side (lower is better)."""
    out = {}
    b = (base.get("false_rejects") or {}).get("stages", {})
    c = (cand.get("false_rejects") or {}).get("stages", {})
    for name in sorted(set(b) | set(c)):
        out[name] = _delta(b.get(name, {}).get("measured"), c.get(name, {}).get("measured"), "lower")
    return out


def _changed_frames(
    base: dict[str, Any], cand: dict[str, Any], source: dict[str, str]
) -> list[dict[str, Any]]:
    after = {row["image"]: row for row in cand["frames_detail"]}
    changed = []
    for row in base["frames_detail"]:
        other = after.get(row["image"])
        if other is None or other["verdict"] == row["verdict"]:
            continue
        truth = row["truth"]
        was_right, is_right = row["verdict"] == truth, other["verdict"] == truth
        changed.append(
            {
                "image": row["image"],
                "truth": truth,
                "source": source.get(row["image"], "split"),
                "baseline": row["verdict"],
                "candidate": other["verdict"],
                "change": "better" if is_right and not was_right else "worse" if was_right else "changed",
                "baseline_overlay": row.get("overlay"),
                "candidate_overlay": other.get("overlay"),
                "candidate_reason": (other.get("reasons") or [""])[0],
            }
        )
    order = {"worse": 0, "changed": 1, "better": 2}
    return sorted(changed, key=lambda r: (order[r["change"]], r["image"]))


def _summary(result: dict[str, Any]) -> str:
    changed = result["changed"]
    worse = sum(1 for c in changed if c["change"] == "worse")
    better = sum(1 for c in changed if c["change"] == "better")
    return (
        f"{result['candidate']} against {result['baseline']} on {result['frames']} frames "
        f"({result['reviewed_frames']} reviewed): {len(changed)} verdict(s) changed, {better} better, {worse} worse"
    )


def _plot(result: dict[str, Any], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(KEY_METRICS)
    base = [result["metrics"][n]["baseline"] or 0.0 for n in names]
    cand = [result["metrics"][n]["candidate"] or 0.0 for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8.0, 3.6))
    ax.bar(x - 0.2, base, 0.4, label=result["baseline"], color="tab:gray")
    ax.bar(x + 0.2, cand, 0.4, label=result["candidate"], color="tab:blue")
    ax.set_xticks(x, [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of frames")
    ax.set_title(result["summary"], fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _write_html(result: dict[str, Any], out_dir: Path) -> str:
    """One page: the metrics, the confusion of each side, and the changed frames with overlays."""

    def img(path: str | None) -> str:
        if not path:
            return "<i>no overlay</i>"
        rel = os.path.relpath(path, out_dir)
        return f'<a href="{html.escape(rel)}"><img src="{html.escape(rel)}" width="320"></a>'

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    rows = "".join(
        f"<tr><td>{n}</td><td>{fmt(m['baseline'])}</td><td>{fmt(m['candidate'])}</td>"
        f"<td class='{m['verdict']}'>{m['verdict']}</td></tr>"
        for n, m in result["metrics"].items()
    )
    confusion = ""
    for label, matrix in result["confusion"].items():
        head = "".join(f"<th>{p}</th>" for p in PREDICTIONS)
        body = "".join(
            f"<tr><th>{t}</th>" + "".join(f"<td>{matrix[t][p]}</td>" for p in PREDICTIONS) + "</tr>"
            for t in TRUTHS
        )
        confusion += (
            f"<h3>{html.escape(label)}</h3><table><tr><th>true \\ verdict</th>{head}</tr>{body}</table>"
        )
    changed = "".join(
        f"<tr><td class='{c['change']}'>{c['change']}</td><td>{html.escape(Path(c['image']).name)}"
        f"<br>truth {c['truth']} ({c['source']})</td><td>{c['baseline']}<br>{img(c['baseline_overlay'])}</td>"
        f"<td>{c['candidate']}<br>{img(c['candidate_overlay'])}<br>{html.escape(c['candidate_reason'])}</td></tr>"
        for c in result["changed"]
    )
    page = f"""<!doctype html><meta charset="utf-8"><title>oringscan compare</title>
<style>body{{font-family:sans-serif}} td,th{{border:1px solid #ccc;padding:4px}} table{{border-collapse:collapse}}
.better{{color:#080}} .worse{{color:#b00;font-weight:bold}}</style>
<h1>{html.escape(result["summary"])}</h1><img src="compare.png">
<h2>Metrics</h2><table><tr><th>metric</th><th>{html.escape(result["baseline"])}</th>
<th>{html.escape(result["candidate"])}</th><th></th></tr>{rows}</table>
<h2>Confusion</h2>{confusion}
<h2>Frames whose verdict changed ({len(result["changed"])})</h2>
<table><tr><th></th><th>frame</th><th>{html.escape(result["baseline"])}</th>
<th>{html.escape(result["candidate"])}</th></tr>{changed}</table>"""
    path = out_dir / "compare.html"
    path.write_text(page, encoding="utf-8")
    return str(path)
