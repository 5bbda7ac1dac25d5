"""oringscan.preprocess: plant frames + LabelMe labels -> 640 px ring tiles in COCO, split by frame.

Public API:
- :func:`preprocess_type` / :func:`preprocess_all`: write ``output/<model>/annotations/*.json``,
  ``images/<split>/`` and ``dataset_summary.json``; return the summary.
- :func:`load_instances`: one LabelMe file -> (list of :class:`LabelInstance`, warnings).
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.preprocess.labelme import LabelInstance, load_instances, mask_to_geometry, read_labelme
    from oringscan.preprocess.runner import DatasetError, discover_frames, preprocess_all, preprocess_type
    from oringscan.preprocess.split import SPLITS, split_frames

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "LabelInstance": "labelme",
        "load_instances": "labelme",
        "mask_to_geometry": "labelme",
        "read_labelme": "labelme",
        "DatasetError": "runner",
        "discover_frames": "runner",
        "preprocess_all": "runner",
        "preprocess_type": "runner",
        "SPLITS": "split",
        "split_frames": "split",
    },
)

__all__ = [
    "SPLITS",
    "DatasetError",
    "LabelInstance",
    "discover_frames",
    "load_instances",
    "mask_to_geometry",
    "preprocess_all",
    "preprocess_type",
    "read_labelme",
    "split_frames",
]
