"""More defects per CPU-second: labelled defects pasted onto other tiles, and crops around defects.

A CPU iteration is expensive, and a 640 px tile holds a handful of small defects, so the detector
sees few positives per second of training. Two cheap ways to show it more (both seeded, applied
before the joint augmentations, so masks and boxes follow):

- **copy-paste** (the "Simple Copy-Paste" idea, Ghiasi et al. 2021): the pixels of a labelled
  defect of another train tile, with its mask, are pasted onto a tile (a good one too), at a place
  whose surrounding gray level matches the defect's own surroundings (so it lands on ring material,
  not on the blanked background), shifted to that local level. Masks it covers are cut.
- **crops around defects**: training on a ``crop`` px window that contains a labelled defect
  (random windows on good tiles) at the same scale as inspection; the engine sets the model's
  input size to the crop's share of ``input_size``, so an iteration costs a fraction of a tile's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oringscan.segmentation.dataset import TileDataset, read_anomaly, read_gray
from oringscan.workspace import TileRecord


@dataclass(slots=True, frozen=True)
class DefectPatch:
    """One labelled defect cut from a train tile: its box (plus a margin) of pixels and its mask."""

    gray: np.ndarray  # (h, w) uint8
    mask: np.ndarray  # (h, w) bool, the defect
    class_index: int
    anomaly: np.ndarray | None = None  # (h, w) uint8 when the tiles carry anomaly maps


@dataclass(slots=True)
class Sample:
    """A tile before augmentation: pixels, (N, H, W) uint8 masks, 1-based classes, anomaly map."""

    gray: np.ndarray
    masks: np.ndarray
    classes: list[int]
    anomaly: np.ndarray | None = None


def defect_bank(records: list[TileRecord], margin: int = 3, min_area: int = 4) -> list[DefectPatch]:
    """Every labelled defect of ``records`` as a pasteable patch (in record order: deterministic)."""
    bank: list[DefectPatch] = []
    for record in records:
        if not record.is_defect:
            continue
        gray, anomaly = read_gray(record.path), read_anomaly(record)
        for mask, ann in zip(record.masks().astype(bool), record.annotations, strict=True):
            if mask.sum() < min_area:
                continue
            ys, xs = np.nonzero(mask)
            y0, y1 = max(0, ys.min() - margin), min(mask.shape[0], ys.max() + 1 + margin)
            x0, x1 = max(0, xs.min() - margin), min(mask.shape[1], xs.max() + 1 + margin)
            bank.append(
                DefectPatch(
                    gray[y0:y1, x0:x1].copy(),
                    mask[y0:y1, x0:x1].copy(),
                    ann.class_index,
                    None if anomaly is None else anomaly[y0:y1, x0:x1].copy(),
                )
            )
    return bank


def _turn(patch: DefectPatch, rng: np.random.Generator) -> DefectPatch:
    """A random one of the 8 flips/quarter turns (exact pixel permutations)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))

    def move(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        a = np.rot90(a, k)
        return np.ascontiguousarray(a[:, ::-1] if flip else a)

    return DefectPatch(move(patch.gray), move(patch.mask), patch.class_index, move(patch.anomaly))  # type: ignore[arg-type]


def paste_defects(
    sample: Sample, bank: list[DefectPatch], rng: np.random.Generator, count: int, tries: int = 24
) -> Sample:
    """``count`` defects of ``bank`` pasted onto ``sample`` (a new Sample; the input is not changed).

    Each goes where the gray level around it is closest to the level around it in its own tile,
    among ``tries`` random places that do not touch an existing defect; its pixels are shifted by
    the difference of those levels. Existing masks lose the pixels a paste covers.
    """
    gray = sample.gray.copy()
    masks = [m.copy() for m in sample.masks.astype(np.uint8)]
    classes = list(sample.classes)
    anomaly = None if sample.anomaly is None else sample.anomaly.copy()
    height, width = gray.shape
    taken = np.zeros((height, width), dtype=bool)
    for m in masks:
        taken |= m.astype(bool)
    for _ in range(count if bank else 0):
        patch = _turn(bank[int(rng.integers(len(bank)))], rng)
        h, w = patch.mask.shape
        if h >= height or w >= width:
            continue
        ring = ~patch.mask
        source_level = float(patch.gray[ring].mean()) if ring.any() else float(patch.gray.mean())
        best: tuple[float, int, int] | None = None
        for _ in range(tries):
            y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
            if taken[y : y + h, x : x + w][patch.mask].any():
                continue
            region = gray[y : y + h, x : x + w]
            cost = abs(float(region.mean()) - source_level) + 0.5 * float(region.std())
            if best is None or cost < best[0]:
                best = (cost, y, x)
        if best is None:
            continue
        _, y, x = best
        window = (slice(y, y + h), slice(x, x + w))
        shift = float(gray[window][ring].mean()) - source_level if ring.any() else 0.0
        pixels = np.clip(patch.gray.astype(np.float32) + shift, 0, 255).astype(np.uint8)
        gray[window][patch.mask] = pixels[patch.mask]
        if anomaly is not None and patch.anomaly is not None:
            anomaly[window][patch.mask] = patch.anomaly[patch.mask]
        for m in masks:
            m[window][patch.mask] = 0
        full = np.zeros((height, width), dtype=np.uint8)
        full[window][patch.mask] = 1
        masks.append(full)
        classes.append(patch.class_index)
        taken[window] |= patch.mask
    keep = [i for i, m in enumerate(masks) if m.any()]
    stacked = np.stack([masks[i] for i in keep]) if keep else np.zeros((0, height, width), dtype=np.uint8)
    return Sample(gray, stacked, [classes[i] for i in keep], anomaly)


def crop_sample(sample: Sample, size: int, rng: np.random.Generator) -> Sample:
    """A ``size`` px window of the tile that holds one of its defects whole where it fits (random on good tiles)."""
    height, width = sample.gray.shape
    ch, cw = min(size, height), min(size, width)
    if len(sample.classes):
        ys, xs = np.nonzero(sample.masks[int(rng.integers(len(sample.classes)))])
        y, x = _origin(ys, ch, height, rng), _origin(xs, cw, width, rng)
    else:
        y, x = int(rng.integers(height - ch + 1)), int(rng.integers(width - cw + 1))
    window = (slice(y, y + ch), slice(x, x + cw))
    masks = sample.masks[:, window[0], window[1]]
    keep = [i for i in range(masks.shape[0]) if masks[i].any()]
    return Sample(
        np.ascontiguousarray(sample.gray[window]),
        np.ascontiguousarray(masks[keep]),
        [sample.classes[i] for i in keep],
        None if sample.anomaly is None else np.ascontiguousarray(sample.anomaly[window]),
    )


def _origin(coords: np.ndarray, side: int, limit: int, rng: np.random.Generator) -> int:
    """A window start on one axis that holds ``coords`` whole, or centres one of them if it cannot."""
    lo, hi = max(0, int(coords.max()) + 1 - side), min(int(coords.min()), limit - side)
    if lo <= hi:
        return int(rng.integers(lo, hi + 1))
    centre = int(coords[int(rng.integers(len(coords)))])
    return int(np.clip(centre - side // 2, 0, limit - side))


class PastingTileDataset(TileDataset):
    """``TileDataset`` whose tiles get defects pasted in (``paste_prob``) and are cropped (``crop``).

    Seeded per (seed, epoch, index), so a run and its resumed twin see the same samples, whatever
    the DataLoader's worker count.
    """

    def __init__(
        self,
        records: list[TileRecord],
        transforms: object | None = None,
        negative_ratio: float | None = None,
        seed: int = 0,
        *,
        paste_prob: float = 0.0,
        paste_max: int = 2,
        crop: int | None = None,
    ) -> None:
        self.epoch = 0
        super().__init__(records, transforms, negative_ratio, seed)  # type: ignore[arg-type]
        self.paste_prob, self.paste_max, self.crop = paste_prob, paste_max, crop
        self.bank = defect_bank(self.positives) if paste_prob > 0 else []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        super().set_epoch(epoch)

    def raw_sample(self, index: int) -> tuple[np.ndarray, np.ndarray, list[int], np.ndarray | None]:
        gray, masks, classes, anomaly = super().raw_sample(index)
        sample = Sample(gray, masks, classes, anomaly)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.bank and rng.random() < self.paste_prob:
            sample = paste_defects(sample, self.bank, rng, int(rng.integers(1, self.paste_max + 1)))
        if self.crop is not None:
            sample = crop_sample(sample, self.crop, rng)
        return sample.gray, sample.masks, sample.classes, sample.anomaly
