"""oringscan.screening: PatchCore (anomalib) on ring tiles, calibrated, with heatmaps.

Public API (the pipeline calls exactly these):
``fit_screening(config, output_root, model, progress=True) -> ScreeningModel``;
``ScreeningModel.load(output_root / model / "screening", expected_type=model)``;
``model.score_tiles(tiles, with_maps=False) -> ScreeningResult``; ``model.score_frame(gray)``;
``save_heatmap(path, image, result_or_map, threshold=None)``;
``evaluate_screening(config, output_root, model) -> dict``.
"""

from oringscan.screening.evaluate import evaluate_screening
from oringscan.screening.fit import fit_screening, screening_dir
from oringscan.screening.heatmap import frame_anomaly_map, render_heatmap, save_heatmap
from oringscan.screening.model import ScreeningMeta, ScreeningModel

__all__ = [
    "ScreeningMeta",
    "ScreeningModel",
    "evaluate_screening",
    "fit_screening",
    "frame_anomaly_map",
    "render_heatmap",
    "save_heatmap",
    "screening_dir",
]
