"""The record's fixed words (verdicts, review decisions, frame orders), without SQLAlchemy.

The CLI builds its ``--verdict``/``--decision``/``--order`` choices from these at import time;
keeping them apart from the models lets ``oringscan db --help`` start without loading SQLAlchemy.
"""

from __future__ import annotations

VERDICTS = ("good", "defect", "rework", "suspect", "error")
# What an operator may decide about a frame.
REVIEW_DECISIONS = ("good", "defect", "rework")
# How frame listings can be sorted ("worst" first: what a person must fix first).
# "uncertain": screening score closest to its threshold first (what a review teaches the most).
FRAME_ORDERS = ("newest", "oldest", "worst", "score", "uncertain")
