"""Test-wide settings: offline, pinned thread counts, no stray model caches."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORINGSCAN_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("ORINGSCAN_TEST_THREADS", "2"))
os.environ.setdefault("MPLBACKEND", "Agg")

import cv2  # noqa: E402

cv2.setNumThreads(int(os.environ.get("ORINGSCAN_TEST_THREADS", "2")))

try:  # torch is heavy: pin it only if installed
    import torch  # noqa: E402

    torch.set_num_threads(int(os.environ.get("ORINGSCAN_TEST_THREADS", "2")))
except ImportError:  # pragma: no cover
    pass


import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _oringscan_logs_reach_caplog():
    """CLI tests call setup_logging(), which stops propagation; caplog listens at the root."""
    logger = logging.getLogger("oringscan")
    propagate, handlers, level = logger.propagate, list(logger.handlers), logger.level
    logger.propagate = True
    logger.handlers[:] = []
    yield
    logger.propagate = propagate
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest leaves ``sys.modules['__main__']`` pointing at the app script; a later
    spawn-based process pool (preprocess workers) would then re-run the dashboard in each child."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
