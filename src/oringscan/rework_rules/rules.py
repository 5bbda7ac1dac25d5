"""The rules file: one TOML per o-ring type that a quality engineer reads and edits.

```toml
[meta]
model = "model1"
k_sigma = 2.5

[[rule]]
metric = "outer_radius"
lower = 641.2
upper = 659.8
verdict = "rework"
message = "outer radius out of tolerance"
source = "calibrated"            # "manual" rules are never touched by calibration
calibrated = { lower = 641.2, upper = 659.8, mean = 650.5, std = 3.72, n = 35 }
```

``calibrated`` records what the last calibration wrote; a calibrated rule whose ``lower``/``upper``
no longer match it was edited by hand, and recalibration keeps it (see :mod:`calibrate`).

A file without rules is refused (an emptied file must not pass every ring without a word) unless it
says so: ``[settings]`` ``rework_disabled = true``.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from oringscan.errors import ModelFileError
from oringscan.rework_rules.metrics import ALL_METRICS, unit_of


class RulesFileError(ModelFileError):
    """A rules file that is missing, not TOML, or not valid rules."""


class CalibrationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lower: float | None = None
    upper: float | None = None
    mean: float
    std: float
    n: int
    # Share of unseen good parts this rule sends to rework: expected (Student-t predictive) and its
    # interval (from the leave-one-out check over the calibration frames).
    expected_rate: float | None = None
    rate_low: float | None = None
    rate_high: float | None = None
    # This rule's own k (balanced allocation: each rule its own; common: the set's k).
    k_sigma: float | None = None
    # The scale mean and std are taken on (None: the metric's own): "log(x)" or "log(x - 1)" for the
    # range-type metrics (wall range, wall max/min), whose limits are mean + k std of that log.
    scale: str | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    lower: float | None = None
    upper: float | None = None
    verdict: Literal["rework", "defect"] = "rework"
    message: str = ""
    source: Literal["calibrated", "manual"] = "manual"
    calibrated: CalibrationRecord | None = None

    @model_validator(mode="after")
    def _sane(self) -> Rule:
        if self.metric not in ALL_METRICS:
            known = ", ".join(ALL_METRICS)
            raise ValueError(f"unknown metric {self.metric!r}; known metrics: {known}")
        if self.lower is None and self.upper is None:
            raise ValueError(f"rule for {self.metric!r} has neither lower nor upper limit")
        for name in ("lower", "upper"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"rule for {self.metric!r}: {name} must be a finite number")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"rule for {self.metric!r}: lower {self.lower} is above upper {self.upper}")
        return self

    @property
    def hand_edited(self) -> bool:
        """A calibrated rule whose limits are not what calibration wrote."""
        if self.source == "manual":
            return True
        if self.calibrated is None:
            return False
        return not (_same(self.lower, self.calibrated.lower) and _same(self.upper, self.calibrated.upper))

    def fires(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return True  # a metric that could not be measured is out of any limit
        return (self.lower is not None and value < self.lower) or (
            self.upper is not None and value > self.upper
        )

    def default_message(self) -> str:
        if self.message:
            return self.message
        return f"{self.metric.replace('_', ' ')} out of limits"


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


class RulesMeta(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    # The o-ring type; files written before the rename say "model".
    oring_type: str | None = Field(default=None, validation_alias=AliasChoices("oring_type", "model"))
    k_sigma: float | None = None
    calibrated_at: str | None = None
    source: str | None = None
    n_frames: int | None = None
    # The whole calibrated rule set on unseen good parts (README "Rework rules"): the target it was
    # calibrated to, the expected share sent to rework, its interval and confidence, and how many of
    # the calibration frames, each held out in turn, the rules calibrated without it flagged.
    false_reject_target: float | None = None
    expected_rate: float | None = None
    rate_low: float | None = None
    rate_high: float | None = None
    confidence: float | None = None
    loo_flagged: int | None = None
    # "common": one k for every rule (k_sigma); "balanced": each rule its own k (k_sigma: the widest).
    allocation: str | None = None


class RulesSettings(BaseModel):
    """What a file says about itself: ``rework_disabled = true`` turns rework off on purpose."""

    model_config = ConfigDict(extra="forbid")

    rework_disabled: bool = False


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meta: RulesMeta = Field(default_factory=RulesMeta)
    settings: RulesSettings = Field(default_factory=RulesSettings)
    rule: list[Rule] = Field(default_factory=list)

    @property
    def rules(self) -> list[Rule]:
        return self.rule


def load_rules(path: Path | str) -> RulesFile:
    """Read and validate a rules file; every problem is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RulesFileError(
            path, "rules file not found (run `oringscan calibrate rework --model NAME` to create it)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesFileError(path, f"not valid TOML: {exc}") from None
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _location(err["loc"], data)
        msg = err["msg"].removeprefix("Value error, ")
        more = f" ({exc.error_count()} problems in all)" if exc.error_count() > 1 else ""
        raise RulesFileError(path, f"{where}: {msg}{more}") from None
    if not rules.rule and not rules.settings.rework_disabled:
        # An empty (or emptied) file would pass every ring: that must be said, never happen silently.
        raise RulesFileError(
            path,
            "no [[rule]] in the rules file, so rework would never fire; recalibrate "
            "(`oringscan calibrate rework`) or write `[settings]` `rework_disabled = true` "
            "to switch rework off on purpose",
        )
    if rules.rule and rules.settings.rework_disabled:
        raise RulesFileError(path, "rework_disabled = true but the file has rules; remove one or the other")
    return rules


def _location(loc: tuple, data: dict) -> str:
    """'rule 3 (outer_radius) field lower' rather than pydantic's tuple."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "rule" and isinstance(parts[1], int):
        idx = parts[1]
        metric = ""
        try:
            metric = f" ({data['rule'][idx]['metric']})"
        except (KeyError, IndexError, TypeError):
            pass
        rest = ".".join(str(p) for p in parts[2:])
        return f"rule {idx + 1}{metric}" + (f" field {rest}" if rest else "")
    return ".".join(str(p) for p in parts) or "file"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    return json.dumps(str(value), ensure_ascii=False)  # JSON string escapes are valid TOML


def dump_rules(rules: RulesFile, header: str = "") -> str:
    """TOML text: a commented header, [meta], then one [[rule]] per rule with its meaning."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    lines.append(tomli_w.dumps({"meta": rules.meta.model_dump(exclude_none=True)}).rstrip())
    if rules.settings.rework_disabled:
        lines += ["", tomli_w.dumps({"settings": rules.settings.model_dump()}).rstrip()]
    for r in rules.rule:
        info = ALL_METRICS[r.metric]
        lines += [
            "",
            f"# {info.description} [{unit_of(r.metric) or 'ratio'}]",
            "[[rule]]",
            f"metric = {_toml_value(r.metric)}",
        ]
        if r.lower is not None:
            lines.append(f"lower = {_toml_value(r.lower)}")
        if r.upper is not None:
            lines.append(f"upper = {_toml_value(r.upper)}")
        lines += [
            f"verdict = {_toml_value(r.verdict)}",
            f"message = {_toml_value(r.message)}",
            f"source = {_toml_value(r.source)}",
        ]
        if r.calibrated is not None:
            items = ", ".join(
                f"{k} = {_toml_value(v)}" for k, v in r.calibrated.model_dump(exclude_none=True).items()
            )
            lines.append(f"calibrated = {{ {items} }}")
    return "\n".join(lines) + "\n"


def save_rules(path: Path | str, rules: RulesFile, header: str = "") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_rules(rules, header), encoding="utf-8")
    tmp.replace(path)


def rounded(value: float | None, digits: int = 6) -> float | None:
    """Limits as written to the file (so a reread rule compares equal to what was written)."""
    return None if value is None else float(f"{value:.{digits}g}")
