"""Helpers for the project's tests and benchmarks; the product (CLI, pipeline, dashboard) never imports this.

- ``plantlike``: the independent second renderer of plant-like frames with exact truth. It must
  not import the rest of ``oringscan`` (tests/synth/test_testing_module.py checks), so the ROI,
  rework and screening code is graded on frames it did not draw.
- ``rings``: single rings of exact, known geometry (analytic edges, flash and bites): the
  yardstick for the rework measurement's sub-pixel accuracy.
- ``results``: complete ``InspectionResult`` objects as the pipeline makes them (no models needed).
- ``sample_db``: a realistic inspection database filled through ``InspectionStore`` with
  ``oringscan.synth`` frames, for the dashboard's tests and benchmark.

The data-set renderer itself is ``oringscan.synth`` (the ``synth`` and ``demo`` commands use it).
"""
