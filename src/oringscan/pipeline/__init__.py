"""oringscan.pipeline: one verdict per frame from screening, segmentation and the rework rules.

Public API:
- :class:`Inspector`: ``Inspector.load(config, output_root, model)``; ``inspect_array(array, name)``
  for a camera callback (never raises for a bad frame: ``error`` verdict with the reason).
- :func:`inspect_paths`: files, folders and globs into the database, one transaction per frame,
  reruns skip what was inspected with the same models; returns a :class:`BatchSummary`.
- :func:`watch_folder`: frames as the camera software writes them.
- :func:`decide_verdict`: the policy (config ``[pipeline]``) as a pure function.
- :func:`evaluate_pipeline`, :func:`run_demo`.
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.pipeline.batch import BatchSummary, FrameRecorder, Prefetcher, inspect_paths, read_one
    from oringscan.pipeline.evaluate import evaluate_pipeline, metrics_from_confusion
    from oringscan.pipeline.inspector import FrameInspection, Inspector, model_fingerprint
    from oringscan.pipeline.policy import confident_defects, decide_verdict
    from oringscan.pipeline.watch import FolderWatcher, watch_folder

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "BatchSummary": "batch",
        "FrameRecorder": "batch",
        "Prefetcher": "batch",
        "inspect_paths": "batch",
        "read_one": "batch",
        "evaluate_pipeline": "evaluate",
        "metrics_from_confusion": "evaluate",
        "FrameInspection": "inspector",
        "Inspector": "inspector",
        "model_fingerprint": "inspector",
        "confident_defects": "policy",
        "decide_verdict": "policy",
        "FolderWatcher": "watch",
        "watch_folder": "watch",
    },
)

__all__ = [
    "BatchSummary",
    "FolderWatcher",
    "FrameInspection",
    "FrameRecorder",
    "Inspector",
    "Prefetcher",
    "confident_defects",
    "decide_verdict",
    "evaluate_pipeline",
    "inspect_paths",
    "metrics_from_confusion",
    "model_fingerprint",
    "read_one",
    "run_demo",
    "watch_folder",
]


def run_demo(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - thin lazy alias (heavy imports)
    """See :func:`oringscan.pipeline.demo.run_demo`."""
    from oringscan.pipeline.demo import run_demo as _run_demo

    return _run_demo(*args, **kwargs)
