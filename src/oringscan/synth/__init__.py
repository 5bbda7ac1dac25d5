"""Synthetic plant frames: mottled rings on a textured belt, exact LabelMe polygons, rework truth.

Public API (the pipeline and the tests call exactly these):
``render_frame(kind, rng, ...) -> SynthFrame(image, labelme, truth)`` and
``synthesize_dataset(out_root, config, types, n_good, n_defect, n_rework, seed, color_fraction)``
for data sets; ``draw_ring(RingSpec, Scene, seed)`` (module ``exact``) for one ring of exact, known
geometry, the yardstick of the rework measurement. The project's one renderer besides the
independent ``oringscan.testing.plantlike``.
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.synth.dataset import MANIFEST_NAME, SynthError, rework_folder_for, synthesize_dataset
    from oringscan.synth.exact import EdgeArc, RingSpec, Scene, draw_ring, random_scene, random_spec
    from oringscan.synth.render import (
        DEFECT_LABELS,
        FULL_SIZE,
        REWORK_KINDS,
        STYLES,
        SynthFrame,
        TypeStyle,
        labelme_document,
        render_frame,
        render_with_reference,
        style_for,
    )

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MANIFEST_NAME": "dataset",
        "SynthError": "dataset",
        "rework_folder_for": "dataset",
        "synthesize_dataset": "dataset",
        "DEFECT_LABELS": "render",
        "FULL_SIZE": "render",
        "REWORK_KINDS": "render",
        "STYLES": "render",
        "SynthFrame": "render",
        "TypeStyle": "render",
        "labelme_document": "render",
        "render_frame": "render",
        "render_with_reference": "render",
        "style_for": "render",
        "EdgeArc": "exact",
        "RingSpec": "exact",
        "Scene": "exact",
        "draw_ring": "exact",
        "random_scene": "exact",
        "random_spec": "exact",
    },
)

__all__ = [
    "DEFECT_LABELS",
    "FULL_SIZE",
    "EdgeArc",
    "RingSpec",
    "Scene",
    "MANIFEST_NAME",
    "REWORK_KINDS",
    "STYLES",
    "SynthError",
    "SynthFrame",
    "TypeStyle",
    "draw_ring",
    "labelme_document",
    "render_frame",
    "random_scene",
    "random_spec",
    "render_with_reference",
    "rework_folder_for",
    "style_for",
    "synthesize_dataset",
]
