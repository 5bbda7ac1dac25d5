"""oringscan.screening: PatchCore (anomalib) on ring tiles, calibrated, with heatmaps.

Public API (the pipeline calls exactly these):
``fit_screening(config, output_root, model, progress=True) -> ScreeningModel``;
``ScreeningModel.load(output_root / model / "screening", expected_type=model)``;
``model.score_tiles(tiles, with_maps=False) -> ScreeningResult``; ``model.score_frame(gray)``;
``save_heatmap(path, image, result_or_map, threshold=None)``;
``evaluate_screening(config, output_root, model) -> dict``.
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.screening.evaluate import evaluate_screening
    from oringscan.screening.fit import fit_screening, screening_dir
    from oringscan.screening.heatmap import frame_anomaly_map, render_heatmap, save_heatmap
    from oringscan.screening.model import ScreeningMeta, ScreeningModel

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "evaluate_screening": "evaluate",
        "fit_screening": "fit",
        "screening_dir": "fit",
        "frame_anomaly_map": "heatmap",
        "render_heatmap": "heatmap",
        "save_heatmap": "heatmap",
        "ScreeningMeta": "model",
        "ScreeningModel": "model",
    },
)

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
