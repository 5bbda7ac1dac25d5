"""The line's false-reject budget, split between the stages that can stop a good part.

A good part leaves the line as ``good`` only if screening does not flag it, its score is not in the
marginal band a person reviews, and rework's limits pass it. Each stage calibrates its own limits to
a share of good parts; the shares add up to ``[pipeline] false_reject_budget`` (the rates of
disjoint events add; overlapping events only make the real total smaller, so the sum is a bound).

Defaults (documented in the README, "Screening"): the budget is split 20 % screening flag, 40 %
marginal review band, 40 % rework; with the default budget of 5 % that is 1 %, 2 % and 2 %. An
explicit per-stage setting (``screening.false_reject_rate``, ``screening.review_rate``,
``rework.false_reject_rate``) is used as given, and the stages left unset share what remains in
the default proportions. Explicit settings that add up to more than the budget are a ConfigError.
Pure: reads the config, touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oringscan.errors import ConfigError

STAGES: tuple[str, ...] = ("screening", "review", "rework")
DEFAULT_SHARES: dict[str, float] = {"screening": 0.2, "review": 0.4, "rework": 0.4}

# Where each stage's explicit override lives: (config section, field).
OVERRIDES: dict[str, tuple[str, str]] = {
    "screening": ("screening", "false_reject_rate"),
    "review": ("screening", "review_rate"),
    "rework": ("rework", "false_reject_rate"),
}


@dataclass(frozen=True)
class FalseRejectBudget:
    """Share of good parts each stage may stop: flagged by screening, sent to review, sent to rework."""

    screening: float
    review: float
    rework: float

    @property
    def total(self) -> float:
        return self.screening + self.review + self.rework

    def as_dict(self) -> dict[str, float]:
        return {
            "screening": self.screening,
            "review": self.review,
            "rework": self.rework,
            "total": self.total,
        }


def _explicit(config: Any, stage: str) -> float | None:
    section, name = OVERRIDES[stage]
    value = getattr(getattr(config, section, None), name, None)
    return None if value is None else float(value)


def split_budget(budget: float, explicit: dict[str, float | None]) -> FalseRejectBudget:
    """Split ``budget`` between the stages; ``explicit`` stages keep their value (the table-tested core)."""
    if not 0 < budget < 1:
        raise ConfigError(f"pipeline.false_reject_budget must be between 0 and 1 (got {budget})")
    fixed = {s: float(v) for s, v in explicit.items() if v is not None}
    unknown = sorted(set(fixed) - set(STAGES))
    if unknown:
        raise ConfigError(f"unknown false-reject budget stage(s) {unknown}; known: {list(STAGES)}")
    for stage, value in fixed.items():
        if value < 0:
            raise ConfigError(f"{'.'.join(OVERRIDES[stage])} must not be negative (got {value})")
    used = sum(fixed.values())
    if used > budget + 1e-12:
        parts = ", ".join(f"{'.'.join(OVERRIDES[s])} = {v:g}" for s, v in fixed.items())
        raise ConfigError(
            f"explicit false-reject rates add up to {used:.4g} ({parts}), more than "
            f"pipeline.false_reject_budget = {budget:g}: lower them or raise the budget"
        )
    free = [s for s in STAGES if s not in fixed]
    weight = sum(DEFAULT_SHARES[s] for s in free)
    rest = budget - used
    # Rounded so 5 % x 0.2 reads 0.01, not 0.010000000000000002, in configs and reports.
    shares = {
        s: round(fixed.get(s, rest * DEFAULT_SHARES[s] / weight if weight else 0.0), 12) for s in STAGES
    }
    return FalseRejectBudget(**shares)


def split_false_reject_budget(config: Any) -> FalseRejectBudget:
    """The stages' shares of ``config.pipeline.false_reject_budget`` (explicit stage settings win)."""
    return split_budget(float(config.pipeline.false_reject_budget), {s: _explicit(config, s) for s in STAGES})
