"""Tiny real models for the pipeline's tests (the ``tiny_models`` fixture): about a minute, once a session.

Quarter-size frames (612x512, configured as the full size) with 160 px tiles make every stage
about sixteen times cheaper than on the plant's frames while running exactly the same code: synth, preprocess,
PatchCore screening (small coreset), the light Mask R-CNN (resnet18-FPN, a few seconds of
training), rework calibration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from oringscan.config import Config

MODEL = "model1"
SIZE = (612, 512)


def tiny_config() -> Config:
    """Quarter-size frames and tiles, light models, single worker: fast and deterministic."""
    config = Config()
    config.frame.width, config.frame.height = SIZE
    config.tiling.tile_size, config.tiling.overlap = 160, 20
    config.screening.coreset_ratio = 0.02
    config.preprocess.workers = 1
    # 8 good frames support no false-rework budget (the budgeted calibration would widen the limits
    # to a union bound): the plant's k as written. tests/rework/test_rework_rules.py covers the budget.
    config.rework.k_sigma = 2.5
    t = config.training
    t.backbone = "resnet18_fpn"
    t.epochs = 1
    t.max_minutes = 0.15
    t.batch_size = 2
    t.num_workers = 0
    t.amp = False
    t.val_max_tiles = 2
    return config


@dataclass(frozen=True, slots=True)
class TinyModels:
    config: Config
    data_root: Path
    output_root: Path
    config_path: Path
    model: str = MODEL


def build_tiny_models(
    root: Path, n_good: int = 8, n_defect: int = 4, n_rework: int = 2, seed: int = 0
) -> TinyModels:
    """Synthesise, preprocess, fit screening, train segmentation briefly, calibrate rework."""
    from oringscan.config import config_to_toml
    from oringscan.preprocess import preprocess_type
    from oringscan.rework_rules import calibrate_rules
    from oringscan.screening import fit_screening
    from oringscan.segmentation import train_segmentation
    from oringscan.synth import synthesize_dataset

    logging.getLogger("oringscan").setLevel(logging.ERROR)
    config = tiny_config()
    root = Path(root)
    data_root, output_root = root / "dataset", root / "output"
    synthesize_dataset(
        data_root,
        config,
        types=(MODEL,),
        n_good=n_good,
        n_defect=n_defect,
        n_rework=n_rework,
        seed=seed,
        color_fraction=0.25,
        progress=False,
        size=SIZE,
    )
    preprocess_type(config, data_root, output_root, MODEL, progress=False, workers=1)
    fit_screening(config, output_root, MODEL, progress=False)
    train_segmentation(config, output_root, MODEL, progress=False, echo=lambda _line: None)
    calibrate_rules(config, data_root, output_root, MODEL, progress=False)
    config_path = root / "tiny.toml"
    config_path.write_text(config_to_toml(config), encoding="utf-8")
    return TinyModels(config, data_root, output_root, config_path)


if __name__ == "__main__":  # time it: python tests/support/pipeline.py /tmp/somewhere
    import sys
    import time

    start = time.perf_counter()
    built = build_tiny_models(Path(sys.argv[1]))
    print(f"built {built} in {time.perf_counter() - start:.1f} s")
