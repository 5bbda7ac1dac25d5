"""Data and config for the README's comparison table: screening models and second stages, one command.

    python benchmarks/bench_compare_variants.py --workdir /tmp/variants [--minutes 2] [--run]

Synthesises quarter-size frames (612 x 512, ``--good`` good and ``--defect`` defect frames of
model1, seed 5), preprocesses them (160 px tiles, split 50/20/30), writes ``compare.toml`` (the
tile grid, a CPU training recipe for the second stages with ``--minutes`` of CPU time each, and the
variants) and prints the one command that makes the table; ``--run`` runs it too and prints the load
average before and after (``/proc/loadavg``).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import time
from pathlib import Path

VARIANTS = """
[[compare.variants]]
name = "patchcore / ringtexture"
screening = { model = "patchcore", backbone = "ringtexture" }
[[compare.variants]]
name = "patchcore / lite0"
screening = { model = "patchcore", backbone = "lite0" }
[[compare.variants]]
name = "padim / ringtexture"
screening = { model = "padim", backbone = "ringtexture" }
[[compare.variants]]
name = "fastflow / ringtexture"
screening = { model = "fastflow", backbone = "ringtexture", train_steps = 100 }
[[compare.variants]]
name = "maskrcnn / lite0_fpn"
segmentation = { stage = "maskrcnn" }
[[compare.variants]]
name = "semantic / lite0_fpn"
segmentation = { stage = "semantic" }
[[compare.variants]]
name = "classifier / lite0"
segmentation = { stage = "classifier" }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=2.0, help="CPU minutes of training per second stage")
    parser.add_argument("--good", type=int, default=30)
    parser.add_argument("--defect", type=int, default=20)
    parser.add_argument("--run", action="store_true", help="run the comparison after preparing")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from oringscan.config import Config, config_to_toml
    from oringscan.preprocess import preprocess_type
    from oringscan.synth import synthesize_dataset

    work, size = args.workdir, (612, 512)
    config = Config()
    config.frame.width, config.frame.height = size
    config.tiling.tile_size, config.tiling.overlap = 160, 20
    config.preprocess.workers = 1
    config.split = type(config.split)(train=0.5, val=0.2, test=0.3)
    config.screening.calibration_folds = 3
    t = config.segmentation
    t.backbone, t.input_size, t.lr, t.batch_size, t.num_workers, t.amp = "lite0_fpn", 160, 0.02, 2, 0, False
    t.epochs, t.patience, t.paste_prob, t.budget_clock, t.max_minutes = 100, 100, 0.5, "cpu", args.minutes
    data, out = work / "dataset", work / "out"
    if not (out / "model1" / "annotations").is_dir():
        synthesize_dataset(
            data, config, types=("model1",), n_good=args.good, n_defect=args.defect, n_rework=0, seed=5,
            progress=False, size=size,
        )  # fmt: skip
        preprocess_type(config, data, out, "model1", progress=False, workers=1)
    toml = work / "compare.toml"
    toml.write_text(config_to_toml(config).replace("\n[compare]\n", "\n") + VARIANTS, encoding="utf-8")
    command = [
        "oringscan", "evaluate", "compare", "--model", "model1",
        "--config", str(toml), "--output", str(out), "--threads", "1",
    ]  # fmt: skip
    print(shlex.join(command), flush=True)
    if args.run:
        print("load average before:", Path("/proc/loadavg").read_text().split()[:3], flush=True)
        start = time.monotonic()
        subprocess.run(command, check=True)
        print(f"{(time.monotonic() - start) / 60:.1f} min", flush=True)
        print("load average after:", Path("/proc/loadavg").read_text().split()[:3], flush=True)


if __name__ == "__main__":
    main()
