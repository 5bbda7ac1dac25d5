"""``evaluate compare``: every configured screening variant fitted, calibrated and tested on one split.

Each variant is ``[screening]`` settings over the configured ones (``[compare] variants``, or
:data:`DEFAULT_VARIANTS`). All are fitted on the same good train tiles, get thresholds the same way
(cross-fitted, the line's budget), are saved and loaded back (what the line would run), and score
the same test tiles in this process: frame AUROC, recall and false rejects at the stored threshold,
recall by defect size, seconds per frame (scoring only, tiles in memory, this machine's threads),
fit time, model size on disk. The production model (``output/<type>/screening``) is not touched:
variants go to ``output/<type>/compare/<variant>/``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config, ScreeningConfig
from oringscan.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_VARIANTS: list[dict[str, Any]] = [
    {"name": "patchcore / ringtexture", "screening": {"model": "patchcore", "backbone": "ringtexture"}},
    {"name": "patchcore / lite0", "screening": {"model": "patchcore", "backbone": "lite0"}},
    {"name": "padim / ringtexture", "screening": {"model": "padim", "backbone": "ringtexture"}},
    {"name": "padim / lite0", "screening": {"model": "padim", "backbone": "lite0"}},
    {"name": "fastflow / ringtexture", "screening": {"model": "fastflow", "backbone": "ringtexture"}},
]
# Not in the default list, because they are too slow for one CPU thread (add them under [compare] variants):
# FastFlow on lite0 and EfficientAD (its PDNs cost seconds per 256 px tile on one CPU thread).


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "variant"


def variant_configs(config: Config) -> list[tuple[str, Config]]:
    """(name, config) per variant; a setting [screening] does not know is one ConfigError line."""
    raw = (
        [v.model_dump() for v in config.compare.variants]
        if config.compare.variants is not None
        else DEFAULT_VARIANTS
    )
    out: list[tuple[str, Config]] = []
    seen: set[str] = set()
    for v in raw:
        name = str(v["name"])
        if slug(name) in seen:
            raise ConfigError(f"[compare] variants: two variants named {name!r}")
        seen.add(slug(name))
        try:
            sc = ScreeningConfig.model_validate({**config.screening.model_dump(), **v.get("screening", {})})
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, one line
            first = str(exc).splitlines()
            raise ConfigError(f"[compare] variant {name!r}: {' '.join(first[:3])}") from None
        out.append((name, config.model_copy(update={"screening": sc})))
    return out


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


def evaluate_variant(
    name: str,
    config: Config,
    output_root: Path,
    oring_type: str,
    directory: Path,
    test_images: list[np.ndarray],
) -> dict[str, Any]:
    """Fit one variant into ``directory``, load it back, score the test tiles; its row of the table."""
    from .data import load_split
    from .fit import fit_screening
    from .metrics import auroc, frame_scores, recall_at, recall_by_size
    from .model import ScreeningModel

    t0 = time.perf_counter()
    fit_screening(config, output_root, oring_type, progress=False, directory=directory)
    fit_s = time.perf_counter() - t0
    screen = ScreeningModel.load(directory, expected_type=oring_type)
    records = load_split(output_root, oring_type, "test")
    screen.score_images(test_images[:2])  # warm-up (lazy imports, allocator)
    t1 = time.perf_counter()
    scores, _ = screen.score_images(test_images, batch_size=config.screening.batch_size)
    score_s = time.perf_counter() - t1
    thr = screen.threshold
    fs, fd, _ = frame_scores(records, scores)
    n_good = int((~fd).sum())
    sizes = recall_by_size(records, scores, thr)
    return {
        "name": name,
        "model": screen.meta.model,
        "backbone": screen.meta.backbone,
        "pretrained": bool(screen.meta.pretrained),
        "input_size": screen.meta.input_size,
        "frames": int(len(fs)),
        "defect_frames": int(fd.sum()),
        "frame_auroc": auroc(fs, fd),
        "tile_auroc": auroc(scores, np.array([r.is_defect for r in records], dtype=bool)),
        "threshold": thr,
        "recall_at_threshold": recall_at(fs, fd, thr),
        "false_rejects": int((fs[~fd] > thr).sum()),
        "good_frames": n_good,
        "recall_by_size": {k: v["recall"] for k, v in sizes.items()},
        "defects_by_size": {k: v["n"] for k, v in sizes.items()},
        "seconds_per_frame": score_s / max(1, len(fs)),
        "fit_seconds": fit_s,
        "model_bytes": _dir_bytes(directory),
        "expected_false_reject_rate": screen.meta.calibration.get("expected_false_reject_rate"),
    }


def compare_variants(
    config: Config, output_root: Path, oring_type: str, only: list[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Every variant on the same split; writes compare.json, compare.md and compare.png."""
    from oringscan.workspace import TypeWorkspace

    from .data import load_split, read_tile

    config.oring_type(oring_type)
    variants = variant_configs(config)
    if only:
        wanted = {slug(x) for x in only}
        variants = [(n, c) for n, c in variants if slug(n) in wanted]
        if not variants:
            raise ConfigError(f"--variant {', '.join(only)}: no such variant")
    root = TypeWorkspace(Path(output_root), oring_type).variants_dir
    records = load_split(output_root, oring_type, "test")
    test_images = [read_tile(r.path) for r in records]
    rows = []
    for name, cfg in variants:
        if progress:
            log.warning("compare %s: %s ...", oring_type, name)
        try:
            rows.append(evaluate_variant(name, cfg, output_root, oring_type, root / slug(name), test_images))
        except Exception as exc:  # noqa: BLE001 - one failing variant is a row, the others still run
            if isinstance(exc, KeyboardInterrupt):
                raise
            log.warning("compare %s: %s failed: %s", oring_type, name, exc)
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
        _write(root, oring_type, rows)  # after every variant: a long run that is stopped keeps its rows
    result = {"model": oring_type, "split": "test", "variants": rows}
    plot(root / "compare.png", rows, oring_type)
    result.update(
        json=str(root / "compare.json"), markdown=str(root / "compare.md"), png=str(root / "compare.png")
    )
    return result


def _write(root: Path, oring_type: str, rows: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    result = {"model": oring_type, "split": "test", "variants": rows}
    (root / "compare.json").write_text(json.dumps(result, indent=2, default=float), encoding="utf-8")
    (root / "compare.md").write_text(markdown_table(rows) + "\n", encoding="utf-8")


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | frame AUROC | recall @ threshold | false rejects | few px | tens px | large "
        "| s / frame | fit s | model size |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:80]} | | | | | | | | |")
            continue
        by = r["recall_by_size"]
        size = r["model_bytes"]
        size_s = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"
        lines.append(
            f"| {r['name']} | {_f(r['frame_auroc'])} | {_f(r['recall_at_threshold'], 2)} "
            f"| {r['false_rejects']} / {r['good_frames']} | {_f(by.get('few_px'), 2)} | {_f(by.get('tens_of_px'), 2)} "
            f"| {_f(by.get('large'), 2)} | {r['seconds_per_frame']:.2f} | {r['fit_seconds']:.0f} | {size_s} |"
        )
    return "\n".join(lines)


def plot(path: Path, rows: list[dict[str, Any]], oring_type: str) -> None:
    """Frame AUROC and recall at the threshold per variant, with seconds per frame beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 0.6 * max(3, len(ok)) + 1.2), sharey=True)
    y = np.arange(len(ok))
    names = [r["name"] for r in ok]
    ax.barh(y - 0.2, [r["frame_auroc"] or 0 for r in ok], 0.4, label="frame AUROC", color="tab:blue")
    ax.barh(
        y + 0.2, [r["recall_at_threshold"] or 0 for r in ok], 0.4, label="recall @ threshold", color="tab:red"
    )
    ax.set_yticks(y, names)
    ax.set_xlim(0, 1.05)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{oring_type}: test split")
    ax2.barh(y, [r["seconds_per_frame"] for r in ok], 0.5, color="tab:gray")
    ax2.set_xlabel("seconds per frame (scoring)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
