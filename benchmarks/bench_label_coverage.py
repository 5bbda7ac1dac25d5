"""How many labelled pixels reach the training data: LabelMe fill vs re-assembled tile annotations.

Renders defect frames with two independent renderers (``oringscan.testing.plantlike``: bulges 30-70 px proud,
one of them shaded below the ring threshold, a narrow finger, an inner bulge, twelve 3-20 px pits;
``oringscan.synth``: its random defects, bites included), preprocesses them, and measures, per
defect kind, the share of the labelled pixels (``cv2.fillPoly`` of the rounded LabelMe points, as
the labelling tool fills them) that are (a) in a tile annotation and (b) also shown in the tile
(not blanked as belt). Reads polygon or RLE annotations, so it measures any version of preprocess.

    python benchmarks/bench_label_coverage.py                 # 4 plant-like + 16 synthetic frames
    python benchmarks/bench_label_coverage.py --plant 2 --synth 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from oringscan.config import Config  # noqa: E402
from oringscan.frames import write_frame  # noqa: E402
from oringscan.preprocess import preprocess_type  # noqa: E402
from oringscan.preprocess.coverage import reassemble  # noqa: E402
from oringscan.synth import render_frame  # noqa: E402
from oringscan.testing.plantlike import labelme_json, random_plant_scene, render_plant_frame  # noqa: E402

H, W = 2048, 2448


def build(root: Path, n_plant: int, n_synth: int) -> None:
    images, labels = root / "images" / "model1defect", root / "labels" / "model1defect"
    labels.mkdir(parents=True)
    variants = ["light", "low_contrast", "dark", "light"]
    for k in range(n_plant):
        scene = random_plant_scene(np.random.default_rng(200 + k), variants[k % len(variants)])
        scene.n_pits = 0
        scene.labelled_bulges = [
            (0.05 * k, 70.0, 60.0, "outer", 1.0),
            (math.pi / 2, 70.0, 50.0, "outer", 0.45),
            (2.5 + k, 70.0, 16.0, "outer", 1.0),
            (4.0 + k, 40.0, 50.0, "outer", 0.5),
            (5.2 + k, 30.0, 40.0, "inner", 1.0),
        ]
        scene.labelled_pits = [
            (0.5 * j + k, 0.2 + 0.06 * ((j * 37) % 10), 3 + j * 17 / 11) for j in range(12)
        ]
        frame = render_plant_frame(scene, seed=300 + k)
        write_frame(images / f"plant{k}.bmp", frame.image)
        (labels / f"plant{k}.json").write_text(
            json.dumps(labelme_json(frame, f"../../images/model1defect/plant{k}.bmp"))
        )
    for k in range(n_synth):
        synth = render_frame(
            "defect", np.random.default_rng(1000 + k), image_path=f"../../images/model1defect/synth{k}.bmp"
        )
        write_frame(images / f"synth{k}.bmp", synth.image)
        (labels / f"synth{k}.json").write_text(json.dumps(synth.labelme))


def measure(root: Path, out: Path) -> dict[tuple[str, str], list]:
    frames = reassemble(root, out, (H, W))
    rows: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, 0, []])
    for path in sorted((root / "labels" / "model1defect").glob("*.json")):
        src = f"images/model1defect/{path.stem}.bmp"
        groups: dict[object, list[dict]] = defaultdict(list)
        for i, shape in enumerate(json.loads(path.read_text())["shapes"]):
            groups[shape["group_id"] if shape["group_id"] is not None else ("shape", i)].append(shape)
        for members in groups.values():
            canvas = np.zeros((H, W), np.uint8)
            for shape in members:
                cv2.fillPoly(canvas, [np.round(np.array(shape["points"])).astype(np.int32)], 1)
            truth = canvas.astype(bool)
            n, label = int(truth.sum()), members[0]["label"]
            kind = (
                "pit/hole < 400 px"
                if label in ("pit", "hole") and n < 400
                else label
                if label in ("bulge", "bite")
                else "other"
            )
            row = rows[("plant" if path.stem.startswith("plant") else "synth", kind)]
            got = truth & frames.annotated[src]
            row[0] += n
            row[1] += int(got.sum())
            row[2] += int((got & frames.shown[src]).sum())
            row[3].append(frames.coverage(src, truth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plant", type=int, default=4, help="plant-like frames (oringscan.testing.plantlike)"
    )
    parser.add_argument("--synth", type=int, default=16, help="synthetic frames (oringscan.synth)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        build(root, args.plant, args.synth)
        start = time.perf_counter()
        preprocess_type(Config(), root, Path(tmp) / "out", "model1", progress=False, workers=args.workers)
        print(f"preprocess: {time.perf_counter() - start:.1f} s for {args.plant + args.synth} frames")
        rows = measure(root, Path(tmp) / "out" / "model1")
    print(
        f"{'renderer':8s} {'defects':18s} {'n':>4s} {'pixels':>8s} {'in annotations':>15s} "
        f"{'and shown':>10s} {'worst':>6s}"
    )
    for (renderer, kind), (n, ann, shown, per) in sorted(rows.items()):
        print(
            f"{renderer:8s} {kind:18s} {len(per):4d} {n:8d} {ann / n:15.4f} {shown / n:10.4f} {min(per):6.3f}"
        )
    for renderer in ("plant", "synth"):
        n, ann, shown = (sum(v[i] for k, v in rows.items() if k[0] == renderer) for i in range(3))
        if n:
            print(
                f"{renderer}: all {n} labelled px: {ann / n:.4f} in annotations, {shown / n:.4f} also shown "
                "in the tile"
            )


if __name__ == "__main__":
    main()
