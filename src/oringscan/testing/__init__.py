"""Helpers for the project's tests and benchmarks; the product (CLI, pipeline, dashboard) never imports this.

- ``plantlike``: the independent second renderer of plant-like frames with exact truth. It must
  not import the rest of ``oringscan`` (tests/synth/test_testing_module.py checks), so the ROI,
  rework and screening code is graded on frames it did not draw.
- ``results``: complete ``InspectionResult`` objects as the pipeline makes them (no models needed).
- ``sample_db``: a realistic inspection database filled through ``InspectionStore`` with
  ``oringscan.synth`` frames, for the dashboard's tests and benchmark.

The project's own renderer is ``oringscan.synth`` (data sets for the ``synth`` and ``demo`` commands,
and ``synth.exact``: single rings of exact geometry for the measurement tests).
"""
