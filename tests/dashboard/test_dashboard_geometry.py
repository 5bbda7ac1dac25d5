"""The dashboard's ring drawing is the stored measurement, made with the run's own [roi]/[rework].

Regression: the frame view used to re-run find_ring/measure_ring with *default* settings, so a
plant with tuned settings saw a drawing that disagreed with the numbers in its measurement table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oringscan.config import Config
from oringscan.dashboard.overlays import GeometrySettings, OverlayLayers, render_overlay, ring_geometry
from oringscan.db import InspectionStore
from oringscan.frames import write_frame
from oringscan.rework_rules.checker import ReworkChecker
from oringscan.rework_rules.rules import RulesFile
from oringscan.synth import render_frame
from oringscan.types import InspectionResult, Verdict

SIZE = (612, 512)
COMPARED = ("outer_radius", "inner_radius", "wall_min", "wall_max", "concentricity_px", "outer_protrusion_px")


def tuned_config() -> Config:
    """Settings a plant might tune; each moves the measured edges by a fraction of a pixel."""
    config = Config()
    config.frame.width, config.frame.height = SIZE
    config.roi.full_res_blur = 9
    config.roi.lint_max_width_px = 30.0
    config.rework.subpixel = False
    config.rework.max_excursion_px = 5.0
    config.rework.profile_median_deg = 10.0
    return config


def test_dashboard_geometry_agrees_with_the_stored_measurement(tmp_path: Path) -> None:
    config = tuned_config()
    gray = render_frame("rework", np.random.default_rng(5), size=SIZE).image
    image = tmp_path / "frame.bmp"
    write_frame(image, gray)
    # What `oringscan inspect` stores: the run's effective config and the checker's measurements.
    checker = ReworkChecker(RulesFile(), None, None, config.rework, config.roi)
    store = InspectionStore(f"sqlite:///{(tmp_path / 'i.db').as_posix()}")
    run_id = store.start_run("model1", config=config)
    result = InspectionResult(image=str(image), verdict=Verdict.GOOD, reasons=[], rework=checker.check(gray))
    frame_id = store.record_frame(run_id, result, frame_shape=gray.shape[:2])
    detail = store.frame_detail(frame_id)
    stored = {m.metric: m.value for m in detail.measurements}
    assert set(COMPARED) <= set(stored)

    # What the frame view draws (page_frame._geometry): the run's settings, labelled with the stored numbers.
    settings = GeometrySettings.from_run_config(store.run_config(run_id), detail.frame.oring_type)
    assert settings.roi.full_res_blur == 9 and settings.rework.subpixel is False and not settings.notes
    geometry = ring_geometry(gray, settings=settings, stored=stored)
    for name in COMPARED:
        assert geometry.values[name] == pytest.approx(stored[name], abs=1e-4), name
    assert not any("differs" in note for note in geometry.notes), geometry.notes
    canvas, notes = render_overlay(
        gray, [], OverlayLayers(masks=False, boxes=False, geometry=True), geometry=geometry
    )
    assert canvas.shape[:2] == gray.shape[:2] and not notes

    # With default settings (the old behaviour) the drawing is a different ring than the stored one.
    default = ring_geometry(gray, stored=stored)
    assert max(abs(default.values[name] - stored[name]) for name in COMPARED) > 0.05
    store.dispose()


def test_geometry_settings_from_a_run_without_config_say_so() -> None:
    settings = GeometrySettings.from_run_config(None, "model1")
    assert settings.roi is None and "default settings" in settings.notes[0]
    unreadable = GeometrySettings.from_run_config({"roi": {"blur_ksize": -3}, "rework": {}}, "model1")
    assert unreadable.roi is None and unreadable.rework is not None and "[roi]" in unreadable.notes[0]
    typed = GeometrySettings.from_run_config({"types": {"model1": {"mm_per_px": 0.02}}}, "model1")
    assert typed.mm_per_px == pytest.approx(0.02)
