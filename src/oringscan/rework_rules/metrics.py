"""The measured quantities: one registry, so rules files, tables and calibration agree on names.

``side`` says which limit calibration sets: ``both`` for sizes (too big and too small are both
wrong), ``upper`` for quantities whose ideal is zero or one (eccentricity, ovality, flash), ``lower``
for circularity (1 is perfect). One-sided limits keep good parts from failing for being *too*
perfect and halve the false-rework rate of a k-sigma rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Side = Literal["both", "upper", "lower"]
Kind = Literal["length", "area", "ratio", "percent"]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str
    kind: Kind
    description: str
    side: Side | None  # None: reported, not calibrated by default
    verdict: Literal["rework", "defect"] = "rework"
    message: str = ""  # what a fired rule tells the operator

    @property
    def reason(self) -> str:
        return self.message or f"{self.description} out of limits"


_METRICS = [
    MetricInfo(
        "outer_radius",
        "length",
        "outer radius (mean semi-axis of the robust ellipse fit)",
        "both",
        message="outer radius out of tolerance",
    ),
    MetricInfo(
        "inner_radius",
        "length",
        "inner (bore) radius (mean semi-axis of the robust ellipse fit)",
        "both",
        message="inner radius out of tolerance",
    ),
    MetricInfo(
        "mean_radius",
        "length",
        "mean of outer and inner radius",
        "both",
        message="mean radius out of tolerance",
    ),
    MetricInfo(
        "wall_min",
        "length",
        "thinnest wall along the radial profile",
        "both",
        message="thinnest wall out of tolerance",
    ),
    MetricInfo(
        "wall_max",
        "length",
        "thickest wall along the radial profile",
        "both",
        message="thickest wall out of tolerance",
    ),
    MetricInfo("wall_mean", "length", "mean wall thickness", "both"),
    MetricInfo("wall_range", "length", "wall max - min", "upper", message="uneven wall thickness"),
    MetricInfo("wall_ratio", "ratio", "wall max / min", "upper", message="uneven wall thickness"),
    MetricInfo(
        "concentricity_px",
        "length",
        "distance between inner and outer centres (robust ellipses)",
        "upper",
        message="bore off-centre",
    ),
    MetricInfo(
        "concentricity_pct",
        "percent",
        "centre distance as % of the mean radius",
        "upper",
        message="bore off-centre",
    ),
    MetricInfo(
        "outer_circularity",
        "ratio",
        "4*pi*area/perimeter^2 of the outer edge (1 = circle)",
        "lower",
        message="outer edge not round",
    ),
    MetricInfo("annular_area", "area", "ring area between the edges (bore excluded)", "both"),
    MetricInfo("outer_ovality", "ratio", "outer ellipse major/minor axis", "upper", message="ring oval"),
    MetricInfo("inner_ovality", "ratio", "inner ellipse major/minor axis", "upper", message="bore oval"),
    MetricInfo(
        "outer_protrusion_px",
        "length",
        "highest material proud of the outer edge (flash, bulge)",
        "upper",
        message="excess flash on the outer edge",
    ),
    MetricInfo("outer_protrusion_arc", "length", "arc length of that protrusion", None),
    MetricInfo(
        "inner_protrusion_px",
        "length",
        "highest material proud of the inner edge into the bore",
        "upper",
        message="excess flash on the inner edge",
    ),
    MetricInfo("inner_protrusion_arc", "length", "arc length of that protrusion", None),
    MetricInfo(
        "outer_indentation_px",
        "length",
        "deepest missing material at the outer edge (bite)",
        "upper",
        "defect",
        "bite in the outer edge",
    ),
    MetricInfo("outer_indentation_arc", "length", "arc length of that indentation", None),
    MetricInfo(
        "inner_indentation_px",
        "length",
        "deepest missing material at the inner edge (bite)",
        "upper",
        "defect",
        "bite in the inner edge",
    ),
    MetricInfo("inner_indentation_arc", "length", "arc length of that indentation", None),
]

METRICS: dict[str, MetricInfo] = {m.name: m for m in _METRICS}


def mm_name(name: str) -> str:
    """The millimetre twin of a pixel metric (``outer_protrusion_px`` -> ``outer_protrusion_mm``)."""
    return name[:-3] + "_mm" if name.endswith("_px") else name + "_mm"


MM_METRICS: dict[str, MetricInfo] = {
    mm_name(m.name): MetricInfo(mm_name(m.name), m.kind, m.description, m.side, m.verdict, m.message)
    for m in _METRICS
    if m.kind in ("length", "area")
}

ALL_METRICS: dict[str, MetricInfo] = {**METRICS, **MM_METRICS}


def unit_of(name: str) -> str:
    info = ALL_METRICS[name]
    mm = name in MM_METRICS
    return {"length": "mm" if mm else "px", "area": "mm2" if mm else "px2", "ratio": "", "percent": "%"}[
        info.kind
    ]
