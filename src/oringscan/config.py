"""One validated configuration for every stage.

The defaults reproduce the seed pipeline (two o-ring types, tile 640/overlap 100, split 70/15/15,
seed 42, its training defaults). A TOML file overrides any subset; ``oringscan config show`` prints
the effective result. Each stage reads only its own section.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oringscan.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class OringType(_Section):
    """Where one o-ring type's frames live and how big a pixel is."""

    good_folder: str
    defect_folder: str
    rework_folder: str | None = None
    mm_per_px: float | None = Field(default=None, gt=0)


class FrameConfig(_Section):
    """What a camera frame must look like."""

    width: int = 2448
    height: int = 2048
    # 2x2 binned frames (1224x1024) are scaled up to the full size so one model serves both.
    accept_binned: bool = True
    # Any other size is refused unless this is on (then it is processed as it is).
    accept_any_size: bool = False
    extensions: list[str] = Field(default_factory=lambda: [".bmp", ".png", ".tif", ".tiff"])


class RoiConfig(_Section):
    """Ring region of interest: Otsu, polarity by the frame border, largest component."""

    blur_ksize: int = Field(default=5, ge=1)
    min_ring_area_fraction: float = Field(default=0.01, gt=0, lt=1)
    # Holes in the ring mask smaller than this fraction of the ring are filled (pits, not the bore).
    fill_holes_max_fraction: float = Field(default=0.05, gt=0, lt=1)
    # A second component at least this fraction of the largest means "two rings".
    second_ring_fraction: float = Field(default=0.3, gt=0, le=1)
    # Background subtraction keeps this margin around the ring so edge defects stay visible.
    background_margin_px: int = Field(default=24, ge=0)
    open_ksize: int = Field(default=3, ge=1)


class TilingConfig(_Section):
    tile_size: int = Field(default=640, ge=32)
    overlap: int = Field(default=100, ge=0)
    # A tile is kept when at least this fraction of it is ring (after the background margin).
    min_ring_fraction: float = Field(default=0.001, ge=0, le=1)

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> TilingConfig:
        if self.overlap >= self.tile_size:
            raise ValueError(f"tiling.overlap ({self.overlap}) must be smaller than tiling.tile_size ({self.tile_size})")
        return self


class SplitConfig(_Section):
    train: float = Field(default=0.70, ge=0, le=1)
    val: float = Field(default=0.15, ge=0, le=1)
    test: float = Field(default=0.15, ge=0, le=1)
    seed: int = 42

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1 (got {total:.3f})")
        return self


class ClassesConfig(_Section):
    """Label names in LabelMe files are free text; the map says which class each becomes."""

    names: list[str] = Field(default_factory=lambda: ["defect"], min_length=1)
    # label (case-insensitive) -> class name; labels not listed go to default_class.
    label_map: dict[str, str] = Field(default_factory=dict)
    # None: unmapped labels are reported and skipped instead.
    default_class: str | None = "defect"

    @model_validator(mode="after")
    def _targets_known(self) -> ClassesConfig:
        if self.default_class == "":
            self.__dict__["default_class"] = None
        unknown = sorted({v for v in self.label_map.values() if v not in self.names})
        if unknown:
            raise ValueError(f"classes.label_map targets unknown classes {unknown}; known: {self.names}")
        if self.default_class is not None and self.default_class not in self.names:
            raise ValueError(f"classes.default_class {self.default_class!r} is not in classes.names {self.names}")
        return self

    def class_for(self, label: str) -> str | None:
        lowered = {k.lower(): v for k, v in self.label_map.items()}
        return lowered.get(label.strip().lower(), self.default_class)


class PreprocessConfig(_Section):
    min_instance_area: float = Field(default=16.0, ge=0)
    workers: int = Field(default=2, ge=1)
    tile_format: Literal["png", "bmp", "jpg"] = "png"


class ScreeningConfig(_Section):
    backbone: str = "resnet18"
    layers: list[str] = Field(default_factory=lambda: ["layer2", "layer3"])
    input_size: int = Field(default=320, ge=32)
    coreset_ratio: float = Field(default=0.1, gt=0, le=1)
    max_bank_size: int = Field(default=200_000, ge=100)
    num_neighbors: int = Field(default=9, ge=1)
    batch_size: int = Field(default=8, ge=1)
    false_reject_rate: float = Field(default=0.01, gt=0, lt=1)
    # Frames scoring between marginal_fraction*threshold and threshold are "marginal".
    marginal_fraction: float | None = Field(default=0.9, gt=0, lt=1)
    weights: Path | None = None
    representation: str = "tile"
    device: str = "auto"


class TrainingConfig(_Section):
    """The seed's training defaults."""

    backbone: Literal["resnet50_fpn", "resnet50_fpn_v2", "resnet18_fpn", "mobilenet_v3_fpn"] = "resnet50_fpn"
    weights: Path | None = None
    batch_size: int = Field(default=4, ge=1)
    epochs: int = Field(default=50, ge=1)
    lr: float = Field(default=0.005, gt=0)
    momentum: float = Field(default=0.9, ge=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    lr_step_size: int = Field(default=15, ge=1)
    lr_gamma: float = Field(default=0.1, gt=0)
    warmup_iters: int = Field(default=100, ge=0)
    patience: int = Field(default=10, ge=1)
    trainable_backbone_layers: int = Field(default=3, ge=0, le=5)
    amp: bool = True
    negative_ratio: float = Field(default=0.25, ge=0)
    num_workers: int = Field(default=2, ge=0)
    hflip: float = Field(default=0.5, ge=0, le=1)
    vflip: float = Field(default=0.5, ge=0, le=1)
    rot90: float = Field(default=0.5, ge=0, le=1)
    rotation_degrees: float = Field(default=10.0, ge=0)
    brightness: float = Field(default=0.2, ge=0)
    contrast: float = Field(default=0.2, ge=0)
    score_threshold: float = Field(default=0.5, ge=0, le=1)
    mask_threshold: float = Field(default=0.5, ge=0, le=1)
    seed: int = 42
    device: str = "auto"


class ReworkConfig(_Section):
    k_sigma: float = Field(default=2.5, gt=0)
    angles: int = Field(default=720, ge=90)
    subpixel: bool = True
    # Rules files live at output/<model>/rework_rules.toml unless a path is given here.
    rules_file: Path | None = None


class PipelineConfig(_Section):
    """Which stage wins when they disagree."""

    defect_min_score: float = Field(default=0.5, ge=0, le=1)
    # Screening flagged it but segmentation found nothing: "suspect" (a person looks) or "good".
    unconfirmed_flag: Literal["suspect", "good"] = "suspect"
    marginal_verdict: Literal["suspect", "good"] = "suspect"
    # A defect found by segmentation beats rework; rework beats good.
    rework_overrides_defect: bool = False
    save_overlays: bool = True
    tile_batch_size: int = Field(default=4, ge=1)


class DbConfig(_Section):
    url: str | None = None  # None: sqlite:///<output>/inspections.db


class DashboardConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8501
    # Images are served only from under these roots (the data and output roots are always added).
    image_roots: list[Path] = Field(default_factory=list)
    page_size: int = Field(default=25, ge=1, le=500)


def _default_types() -> dict[str, OringType]:
    return {
        "model1": OringType(good_folder="model1good", defect_folder="model1defect"),
        "model2": OringType(good_folder="good", defect_folder="notok"),
    }


class Config(_Section):
    types: dict[str, OringType] = Field(default_factory=_default_types, min_length=1)
    frame: FrameConfig = Field(default_factory=FrameConfig)
    roi: RoiConfig = Field(default_factory=RoiConfig)
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    classes: ClassesConfig = Field(default_factory=ClassesConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    rework: ReworkConfig = Field(default_factory=ReworkConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    db: DbConfig = Field(default_factory=DbConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    def oring_type(self, name: str) -> OringType:
        try:
            return self.types[name]
        except KeyError:
            raise ConfigError(f"unknown o-ring type {name!r}; configured types: {', '.join(self.types)}") from None

    def select_types(self, name: str | None) -> list[str]:
        """All configured types when ``name`` is None, else just that one (validated)."""
        if name is None:
            return list(self.types)
        self.oring_type(name)
        return [name]


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "types":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | str | None = None) -> Config:
    """Defaults, overridden by the TOML file at ``path`` when given.

    ``[types]`` in a file replaces the whole type list (so a plant with one type lists one).
    """
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Config.model_validate(_deep_merge(Config().model_dump(), data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)") from None


def config_to_toml(config: Config) -> str:
    import tomli_w

    data = config.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)
