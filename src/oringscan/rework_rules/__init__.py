"""Rework rules: ring geometry measured from the mask, checked against editable, calibrated limits.

Rework is not learned: the plant decides it from geometry it can read and adjust.

    roi = find_ring(gray)                        # oringscan.roi
    m = measure_ring(roi, mm_per_px, gray)       # every metric, with sub-pixel edges
    checker = ReworkChecker.load(rules_path)     # output/<model>/rework_rules.toml
    result = checker.check(gray)                 # ReworkResult: verdict, reasons, every metric
    report = calibrate_rules(config, data_root, output_root, model)   # mean +/- k sigma of good parts
"""

from typing import TYPE_CHECKING

from oringscan._lazy import lazy_exports

if TYPE_CHECKING:
    from oringscan.rework_rules.calibrate import (
        CalibrationError,
        CalibrationReport,
        RuleChange,
        calibrate_from_values,
        calibrate_rules,
        limits_from_values,
        merge_rules,
        rules_path_for,
        training_good_frames,
    )
    from oringscan.rework_rules.checker import ReworkChecker, ReworkReport
    from oringscan.rework_rules.measure import MeasurementError, RingMeasurement, measure_ring
    from oringscan.rework_rules.metrics import ALL_METRICS, METRICS
    from oringscan.rework_rules.rules import Rule, RulesFile, RulesFileError, load_rules, save_rules
    from oringscan.rework_rules.vis import draw_measurement

# Names are imported on first use, so `oringscan --help` does not load torch (see oringscan/_lazy.py).
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CalibrationError": "calibrate",
        "CalibrationReport": "calibrate",
        "RuleChange": "calibrate",
        "calibrate_from_values": "calibrate",
        "calibrate_rules": "calibrate",
        "limits_from_values": "calibrate",
        "merge_rules": "calibrate",
        "rules_path_for": "calibrate",
        "training_good_frames": "calibrate",
        "ReworkChecker": "checker",
        "ReworkReport": "checker",
        "MeasurementError": "measure",
        "RingMeasurement": "measure",
        "measure_ring": "measure",
        "ALL_METRICS": "metrics",
        "METRICS": "metrics",
        "Rule": "rules",
        "RulesFile": "rules",
        "RulesFileError": "rules",
        "load_rules": "rules",
        "save_rules": "rules",
        "draw_measurement": "vis",
    },
)

__all__ = [
    "ALL_METRICS",
    "METRICS",
    "CalibrationError",
    "CalibrationReport",
    "MeasurementError",
    "ReworkChecker",
    "ReworkReport",
    "RingMeasurement",
    "Rule",
    "RuleChange",
    "RulesFile",
    "RulesFileError",
    "calibrate_from_values",
    "calibrate_rules",
    "draw_measurement",
    "limits_from_values",
    "load_rules",
    "measure_ring",
    "merge_rules",
    "rules_path_for",
    "save_rules",
    "training_good_frames",
]
