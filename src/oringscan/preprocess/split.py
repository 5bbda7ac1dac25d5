"""Train/val/test split by source frame, stratified good/defect, seeded.

Tiles of one frame are strongly correlated (same ring, same lighting), so the unit of the split is
the frame: no frame ever has tiles in two splits, otherwise validation would flatter the model.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from oringscan.config import SplitConfig

SPLITS = ("train", "val", "test")


def split_counts(n: int, cfg: SplitConfig) -> dict[str, int]:
    """How many of ``n`` frames go to each split (largest remainder, ties to train, val, test).

    A split with a non-zero fraction gets at least one frame whenever there are enough frames to
    go round, so a small data set still has defect frames to validate and test on.
    """
    quotas = {name: n * getattr(cfg, name) for name in SPLITS}
    counts = {name: int(q + 1e-9) for name, q in quotas.items()}
    left = n - sum(counts.values())
    by_remainder = sorted(SPLITS, key=lambda s: (-(quotas[s] - counts[s]), SPLITS.index(s)))
    for name in by_remainder[:left]:
        counts[name] += 1
    wanted = [name for name in SPLITS if getattr(cfg, name) > 0]
    if n >= len(wanted):
        for name in wanted:
            if counts[name] == 0:
                donor = max(wanted, key=lambda d: counts[d])
                counts[donor] -= 1
                counts[name] += 1
    return counts


def split_frames(strata: Mapping[str, str], cfg: SplitConfig) -> dict[str, str]:
    """Split name for every frame key, stratified by its stratum (e.g. "good"/"defect").

    Deterministic for a given seed and set of keys, whatever order they arrive in.
    """
    assignment: dict[str, str] = {}
    for stratum in sorted(set(strata.values())):
        keys = sorted(k for k, s in strata.items() if s == stratum)
        # One generator per stratum: adding defect frames does not reshuffle the good ones.
        random.Random(f"{cfg.seed}/{stratum}").shuffle(keys)
        counts = split_counts(len(keys), cfg)
        start = 0
        for name in SPLITS:
            for key in keys[start : start + counts[name]]:
                assignment[key] = name
            start += counts[name]
    return assignment
