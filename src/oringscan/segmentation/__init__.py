"""oringscan.segmentation: per-type Mask R-CNN on 640 px tiles, stitched back into whole frames.

Public API (what the pipeline calls):
    train_segmentation(config, output_root, model, **overrides) -> dict
    Segmenter.load(checkpoint, device="auto", expected_type=model)
    segmenter.predict_tiles(tiles) -> list[Instance]     # frame coordinates, stitched
    stitch(instances) -> list[Instance]
    evaluate_segmentation(config, output_root, model, data_root) -> dict
    pretrain_synthetic(workdir, out_file, minutes=30) -> dict   # a starting model (init_from)
    stage_from_config(config, workspace) -> Segmenter | SemanticSegmenter | TileClassifier
        # [segmentation] stage: "maskrcnn" (default), "semantic" or "classifier" (segmentation/stages.py)
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.segmentation.classifier import TileClassifier
    from oringscan.segmentation.engine import TrainingError, train_segmentation
    from oringscan.segmentation.evaluation import evaluate_segmentation
    from oringscan.segmentation.inference import FramePrediction, Segmenter
    from oringscan.segmentation.pretrain import pretrain_synthetic
    from oringscan.segmentation.semantic import SemanticSegmenter
    from oringscan.segmentation.stages import load_stage, stage_from_config
    from oringscan.segmentation.stitching import stitch

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainingError": "engine",
        "train_segmentation": "engine",
        "evaluate_segmentation": "evaluation",
        "FramePrediction": "inference",
        "Segmenter": "inference",
        "pretrain_synthetic": "pretrain",
        "stitch": "stitching",
        "SemanticSegmenter": "semantic",
        "TileClassifier": "classifier",
        "load_stage": "stages",
        "stage_from_config": "stages",
    },
)

__all__ = [
    "FramePrediction",
    "Segmenter",
    "SemanticSegmenter",
    "TileClassifier",
    "TrainingError",
    "evaluate_segmentation",
    "load_stage",
    "pretrain_synthetic",
    "stage_from_config",
    "stitch",
    "train_segmentation",
]
