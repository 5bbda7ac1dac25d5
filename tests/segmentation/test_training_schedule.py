"""The learning-rate schedule of a time budget: a budgeted run always ends at the low rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from support.segmentation import tiny_config, write_tiny_coco

from oringscan.config import TrainingConfig
from oringscan.segmentation import train_segmentation
from oringscan.segmentation.engine import BudgetSchedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _optimizer(lr: float = 0.02) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


@pytest.mark.parametrize(
    ("used_s", "expected_lr"),
    [(0.0, 0.02), (69.9, 0.02), (70.0, 0.002), (89.0, 0.002), (90.0, 0.0002), (500.0, 0.0002)],
)
def test_budget_schedule_drops_at_fractions_of_the_budget(used_s: float, expected_lr: float) -> None:
    clock = FakeClock()
    schedule = BudgetSchedule(clock, clock(), 100.0, [0.7, 0.9], 0.1)
    optimizer = _optimizer()
    clock.now += used_s
    schedule.step(optimizer)
    schedule.step(optimizer)  # a second check at the same time changes nothing
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_budget_steps_must_rise_inside_the_budget() -> None:
    with pytest.raises(ValidationError, match="lr_budget_steps"):
        TrainingConfig(lr_budget_steps=[0.9, 0.7])
    with pytest.raises(ValidationError, match="lr_budget_steps"):
        TrainingConfig(lr_budget_steps=[0.5, 1.0])


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_budgeted_run_ends_at_the_low_rate(tmp_path: Path) -> None:
    """Whatever the machine's speed: both drops are applied by a training iteration before the budget
    runs out. The steps sit early in the 3-second budget because the clock also runs through each
    epoch's validation, where nothing is checked (a step falling due there waits for the next
    iteration, and a budget that ends inside a validation would leave it unapplied)."""
    write_tiny_coco(tmp_path)
    config = tiny_config()
    config.training.lr_schedule = "budget"
    config.training.lr_budget_steps = [0.05, 0.1]
    config.training.warmup_iters = 0  # on a loaded machine the budget can end inside the warmup
    summary = train_segmentation(
        config, tmp_path, "model1", progress=False, epochs=50, max_minutes=0.05, lr=0.01
    )
    assert summary["stopped"] == "max-minutes"
    state = _state(tmp_path / "model1/checkpoints/latest.pth")
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 0.1**2)
    # StepLR did not move on top of it.
    assert state["lr_scheduler"]["last_epoch"] == 0
