"""``export model``: a type's screening and segmentation models as ONNX, each checked against torch.

Segmentation is whichever stage the checkpoint holds (Mask R-CNN: ``segmentation_onnx``; the
semantic segmenter or the tile classifier: ``dense_onnx``).

Also the runtime switch the pipeline uses (``[pipeline] runtime = "onnx"``): :func:`load_screening_stage`
and :func:`onnx_segmenter` give the onnxruntime twins of the torch models, which answer the same calls
(``score_tiles`` / ``predict_tiles``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oringscan.config import Config
from oringscan.errors import ModelFileError, OringscanError

log = logging.getLogger(__name__)

STAGES = ("screening", "segmentation", "all")


@dataclass
class ExportReport:
    """What ``export model`` wrote, with each file's parity check against the torch model."""

    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _check_tiles(config: Config, output_root: Path, oring_type: str, n: int) -> list[np.ndarray]:
    """Up to ``n`` tiles of the type's test split (val, train when absent), defect tiles first."""
    from oringscan.screening.data import read_tile
    from oringscan.workspace import TypeWorkspace

    ws = TypeWorkspace.from_config(config, output_root, oring_type)
    for split in ("test", "val", "train"):
        if ws.has_split(split):
            records = ws.read_split(split)
            records = sorted(records, key=lambda r: not r.is_defect)[:n]
            return [read_tile(r.path) for r in records]
    return []


def export_model(
    config: Config,
    output_root: Path,
    oring_type: str,
    fmt: str = "onnx",
    stage: str = "all",
    check_tiles: int = 8,
    chunk_rows: int = 2048,
) -> ExportReport:
    """Export one o-ring type's models; ``check_tiles`` test tiles compare onnxruntime with torch."""
    from oringscan.workspace import TypeWorkspace

    if fmt not in ("onnx", "openvino"):
        raise OringscanError(f"--format {fmt}: choose onnx or openvino")
    if stage not in STAGES:
        raise OringscanError(f"--stage {stage}: choose one of {', '.join(STAGES)}")
    config.oring_type(oring_type)
    ws = TypeWorkspace.from_config(config, output_root, oring_type)
    # The models in use (a promoted version's, else the working copy): what the Inspector loads.
    files = ws.models
    tiles = _check_tiles(config, output_root, oring_type, check_tiles) if check_tiles else []
    report = ExportReport()
    if stage in ("screening", "all"):
        from oringscan.screening.model import ScreeningModel
        from oringscan.screening.onnx_export import ONNX_FILE, export_screening_onnx

        # PatchCore or an alternative (PaDiM, FastFlow, EfficientAD: export/alt_onnx.py).
        screen = ScreeningModel.load(files.screening_dir, expected_type=oring_type, device="cpu")
        info = export_screening_onnx(screen, files.screening_dir, chunk_rows=chunk_rows, check_tiles=tiles)
        report.files["screening"] = files.screening_dir / ONNX_FILE
        report.info["screening"] = info
        if fmt == "openvino":
            xml, ov_info = to_openvino(files.screening_dir / ONNX_FILE, screen, tiles)
            report.files["screening (openvino)"] = xml
            report.info["screening (openvino)"] = ov_info
    if stage in ("segmentation", "all"):
        ckpt = files.segmentation_checkpoint
        if not ckpt.is_file() and stage == "all":
            report.skipped["segmentation"] = f"{ckpt} not found (run: oringscan train segmentation)"
        else:
            from oringscan.export.segmentation_onnx import ONNX_FILE as SEG_FILE
            from oringscan.export.segmentation_onnx import export_segmenter_onnx
            from oringscan.segmentation.stages import DenseStage, load_stage

            # Whichever stage the checkpoint holds: Mask R-CNN, the semantic segmenter or the classifier.
            seg = load_stage(ckpt, device="cpu", expected_type=oring_type, config=config)
            out = ckpt.with_name(SEG_FILE)
            if isinstance(seg, DenseStage):
                from oringscan.export.dense_onnx import export_dense_onnx

                info = export_dense_onnx(seg, out, check_images=tiles[:4])
            else:
                info = export_segmenter_onnx(
                    seg, out, score_threshold=_lowest_score(seg, config), check_images=tiles[:4]
                )
            report.files["segmentation"] = out
            report.info["segmentation"] = info
            if fmt == "openvino":
                try:
                    xml, ov_info = to_openvino(out)
                    report.files["segmentation (openvino)"] = xml
                    report.info["segmentation (openvino)"] = ov_info
                except Exception as exc:  # noqa: BLE001 - the converter's own errors: reported, ONNX stays
                    report.skipped["segmentation (openvino)"] = (
                        f"conversion failed: {type(exc).__name__}: {exc}"
                    )
    return report


def to_openvino(
    onnx_path: Path, screen: Any = None, tiles: list[np.ndarray] | None = None
) -> tuple[Path, dict[str, Any]]:
    """OpenVINO IR (``.xml`` + ``.bin``) converted from the ONNX file; with ``screen`` and ``tiles``
    its scores are compared with the torch model's."""
    try:
        import openvino as ov
    except ImportError:
        raise OringscanError("--format openvino: pip install openvino") from None
    xml = Path(onnx_path).with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml))
    info: dict[str, Any] = {
        "format": "openvino",
        "file": xml.name,
        "bytes": xml.with_suffix(".bin").stat().st_size,
    }
    if screen is not None and tiles:
        compiled = ov.Core().compile_model(
            str(xml), "CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        )
        x = screen.preprocess(tiles).cpu().numpy()
        out = compiled(x)
        ref, _ = screen.score_images(tiles, batch_size=len(tiles))
        info["parity"] = {"tiles": len(tiles), "max_score_diff": float(np.abs(out[0] - ref).max())}
    return xml, info


def _lowest_score(segmenter: Any, config: Config) -> float:
    """The lowest score the pipeline may ask the segmenter for (calibrated per class, or configured)."""
    scores = [float(segmenter.training.score_threshold)]
    if config.pipeline.defect_min_score is not None:
        scores.append(float(config.pipeline.defect_min_score))
    cal = getattr(segmenter, "calibration", None)
    if isinstance(getattr(cal, "threshold", None), int | float):
        scores.append(float(cal.threshold))  # type: ignore[union-attr]
    per_class = getattr(cal, "per_class", None)
    if isinstance(per_class, dict):
        scores += [float(v) for v in per_class.values() if isinstance(v, int | float)]
    return min(scores)


# ------------------------------------------------------------------------------------ runtimes
def load_screening_stage(
    screening_dir: Path, oring_type: str, config: Config, device: str = "cpu", runtime: str | None = None
) -> Any:
    """The type's screening model for ``[pipeline] runtime`` (``torch``: PatchCore or an alternative
    from :mod:`oringscan.screening.alternatives`; ``onnx``: the exported graph under onnxruntime)."""
    runtime = runtime or getattr(config.pipeline, "runtime", "torch")
    if runtime == "onnx":
        from oringscan.screening.onnx_export import OnnxScreeningModel

        return OnnxScreeningModel.load(Path(screening_dir), expected_type=oring_type)
    from oringscan.screening.alternatives import load_any_screening

    return load_any_screening(Path(screening_dir), expected_type=oring_type, device=device)


def onnx_segmenter(segmenter: Any) -> Any:
    """The torch segmenter's exported twin (best_model.onnx next to its checkpoint) under onnxruntime:
    an :class:`OnnxSegmenter` for Mask R-CNN, the same second stage with an onnxruntime network else."""
    from oringscan.export.segmentation_onnx import ONNX_FILE, OnnxSegmenter
    from oringscan.segmentation.stages import DenseStage

    if isinstance(segmenter, DenseStage):
        from oringscan.export.dense_onnx import onnx_dense_stage

        return onnx_dense_stage(segmenter)

    path = Path(segmenter.checkpoint)
    onnx_path = (path if path.is_dir() else path.parent) / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelFileError(onnx_path, "not found (run: oringscan export model --format onnx)")
    return OnnxSegmenter.from_torch(segmenter, onnx_path)
