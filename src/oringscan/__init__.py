"""oringscan: hybrid inspection of o-rings (screening, segmentation, rework rules, records)."""

__version__ = "0.1.0"
