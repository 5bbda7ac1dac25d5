"""Copy-paste of labelled defects and crops around defects (segmentation/pasting.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.segmentation import tiny_config, write_tiny_coco

from oringscan.segmentation import train_segmentation
from oringscan.segmentation.dataset import load_coco_split
from oringscan.segmentation.engine import _train_input_size
from oringscan.segmentation.pasting import (
    DefectPatch,
    PastingTileDataset,
    Sample,
    crop_sample,
    defect_bank,
    paste_defects,
)


def _patch(ring: int = 150, defect: int = 80, side: int = 9) -> DefectPatch:
    """A ``side`` px patch of ring material (``ring``) around a plus-shaped defect (``defect``)."""
    gray = np.full((side, side), ring, dtype=np.uint8)
    mask = np.zeros((side, side), dtype=bool)
    mask[side // 2, 2:-2] = mask[2:-2, side // 2] = True
    gray[mask] = defect
    return DefectPatch(gray, mask, 1)


def _good(value: int = 100, size: int = 64) -> Sample:
    return Sample(np.full((size, size), value, dtype=np.uint8), np.zeros((0, size, size), np.uint8), [])


def test_paste_is_deterministic_given_the_seed_and_leaves_the_input_alone() -> None:
    rng_tile = np.random.default_rng(0)
    sample = Sample(
        rng_tile.integers(90, 110, (64, 64)).astype(np.uint8), np.zeros((0, 64, 64), np.uint8), []
    )
    before = sample.gray.copy()
    bank = [_patch(), _patch(160, 40, 11)]
    a = paste_defects(sample, bank, np.random.default_rng(5), 3)
    b = paste_defects(sample, bank, np.random.default_rng(5), 3)
    c = paste_defects(sample, bank, np.random.default_rng(6), 3)
    assert np.array_equal(a.gray, b.gray) and np.array_equal(a.masks, b.masks) and a.classes == b.classes
    assert not np.array_equal(a.masks, c.masks)
    assert np.array_equal(sample.gray, before) and sample.masks.shape[0] == 0


def test_pasted_pixels_are_the_defects_shifted_to_the_local_level_and_only_under_their_masks() -> None:
    sample = _good(100)
    out = paste_defects(sample, [_patch(150, 80)], np.random.default_rng(1), 1)
    assert out.classes == [1] and out.masks.shape == (1, 64, 64)
    new = out.masks[0].astype(bool)
    assert new.sum() == _patch().mask.sum()  # every pixel of the defect, turned or flipped
    assert np.all(out.gray[new] == 30)  # 80 + (100 - 150): the defect's contrast on this tile's level
    assert np.all(out.gray[~new] == 100)


def test_defects_land_on_ring_material_and_never_on_an_existing_defect() -> None:
    gray = np.zeros((64, 64), dtype=np.uint8)
    gray[:, 32:] = 150  # left: blanked background, right: ring
    existing = np.zeros((1, 64, 64), dtype=np.uint8)
    existing[0, 20:44, 40:56] = 1
    sample = Sample(gray, existing, [1])
    for seed in range(10):
        out = paste_defects(sample, [_patch(150, 60)], np.random.default_rng(seed), 2)
        pasted = out.masks[1:].astype(bool)
        assert pasted.shape[0] >= 1
        ys, xs = np.nonzero(pasted.any(0))
        assert xs.min() >= 30, f"seed {seed}: a defect pasted on the background"
        assert not (pasted.any(0) & existing[0].astype(bool)).any()
        assert np.array_equal(out.masks[0], existing[0])


def test_crop_holds_a_defect_whole_and_keeps_masks_and_pixels_aligned() -> None:
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 255, (200, 200)).astype(np.uint8)
    masks = np.zeros((2, 200, 200), dtype=np.uint8)
    masks[0, 150:160, 170:185] = 1
    masks[1, 10:14, 10:12] = 1
    for seed in range(8):
        out = crop_sample(Sample(gray, masks, [1, 2]), 64, np.random.default_rng(seed))
        assert out.gray.shape == (64, 64) and out.masks.shape[1:] == (64, 64)
        assert len(out.classes) == out.masks.shape[0] >= 1
        for m, cls in zip(out.masks, out.classes, strict=True):
            assert m.sum() == masks[cls - 1].sum()  # whole: each defect fits the window
        # the pixels under a kept mask are the tile's pixels under the same defect
        k = out.classes[0] - 1
        assert np.array_equal(np.sort(out.gray[out.masks[0] > 0]), np.sort(gray[masks[k] > 0]))
    good = crop_sample(Sample(gray, masks[:0], []), 64, np.random.default_rng(0))
    assert good.gray.shape == (64, 64) and good.classes == []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("paste")
    write_tiny_coco(root, tile=96, counts={"train": (4, 4), "val": (2, 1)})
    return root, load_coco_split(root / "model1" / "annotations" / "train.json", ["defect"])


def test_dataset_pastes_and_crops_the_same_way_for_the_same_seed_and_epoch(tiny) -> None:
    _, records = tiny
    assert len(defect_bank(records)) >= 4
    make = lambda: PastingTileDataset(records, None, 1.0, 7, paste_prob=1.0, paste_max=2, crop=64)  # noqa: E731
    a, b = make(), make()
    a.set_epoch(3)
    b.set_epoch(3)
    more = 0
    for i in range(len(a)):
        (ia, ta), (ib, tb) = a[i], b[i]
        assert ia.shape == (3, 64, 64) and torch.equal(ia, ib) and torch.equal(ta["masks"], tb["masks"])
        # boxes re-derived from the (pasted, cropped) masks
        for m, box in zip(ta["masks"], ta["boxes"], strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert box.tolist() == [
                xs.min().item(),
                ys.min().item(),
                xs.max().item() + 1,
                ys.max().item() + 1,
            ]
        more += len(ta["labels"]) > len(a.items[i].annotations)
    assert more >= 1  # pasting added defects (good tiles became positives)
    a.set_epoch(4)
    assert any(not torch.equal(a[i][0], ib) for i, ib in ((i, b[i][0]) for i in range(len(b))))


def test_training_with_paste_and_crop_runs_and_restores_the_model_input_size(tiny) -> None:
    torch.set_num_threads(1)
    root, _ = tiny
    config = tiny_config(96)
    summary = train_segmentation(
        config, root, "model1", progress=False, echo=lambda _: None, epochs=1, paste_prob=0.5, train_crop=64
    )
    assert summary["epochs_run"] == 1

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transform = type("T", (), {"min_size": (448,), "max_size": 448})()

    net = Net()
    with _train_input_size(net, 320, 640):
        assert net.transform.min_size == (224,) and net.transform.max_size == 224
    assert net.transform.min_size == (448,) and net.transform.max_size == 448


def test_the_cpu_recipe_trains_whole_tiles_and_the_demo_pins_the_fast_variant() -> None:
    from oringscan.config import TrainingConfig
    from oringscan.pipeline.demo import DemoPlan, demo_config
    from oringscan.segmentation.models import FAST_CPU_RECIPE, cpu_recipe_overrides

    # auto on CPU: Lite0 with its last 3 stages training (the seed's default), whole tiles, lr 0.01.
    recipe = cpu_recipe_overrides(TrainingConfig(backbone="auto"), "cpu")
    # It starts from the synthetic starting model shipped with oringscan.
    assert recipe == {
        "input_size": 448,
        "batch_size": 2,
        "warmup_iters": 10,
        "lr": 0.01,
        "init_from": "synthetic",
    }
    mine = cpu_recipe_overrides(
        TrainingConfig(backbone="auto", lr=0.003, batch_size=8, init_from="none"), "cpu"
    )
    assert "lr" not in mine and "batch_size" not in mine  # what the config set stays
    assert "init_from" not in mine  # "none": ImageNet alone
    # The demo's fixed short schedule fine-tunes the shipped synthetic start in the fast variant:
    # frozen backbone, copy-paste, crops, at a fine-tuning lr.
    plan = DemoPlan()
    demo = demo_config(plan).training
    assert all(getattr(demo, key) == value for key, value in FAST_CPU_RECIPE.items() if key != "lr")
    assert demo.lr == plan.lr < FAST_CPU_RECIPE["lr"] and demo.init_from == "synthetic"
    assert demo.trainable_backbone_layers == 0 and demo.paste_prob > 0 and demo.train_crop == 448
    assert cpu_recipe_overrides(TrainingConfig(backbone="lite0_fpn"), "cpu") == {}
