#!/usr/bin/env bash
# The seed's ResNet50-FPN Mask R-CNN on a CUDA GPU: 2 epochs on synthetic data, AMP on and off.
#
#   bash benchmarks/gpu_check.sh [WORKDIR]          # WORKDIR default: a fresh temporary folder
#
# Renders synthetic frames (oringscan synth), preprocesses them into tiles, then trains
# resnet50_fpn (backbone pinned, not "auto") for 2 epochs with AMP on and again with AMP off, and
# prints per run: seconds per epoch, peak GPU memory and the validation segm/bbox AP. Pretrained
# weights are used only if they are already in the torch hub cache (nothing is downloaded), so on
# a bare machine AP after 2 epochs from random init is low: the check is about speed, memory and
# a clean run. Exit status: 0 done, 2 no CUDA GPU on this machine, other: a failing step.
set -euo pipefail

if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False, or torch is missing); nothing was run." >&2
    exit 2
fi

WORK="${1:-$(mktemp -d -t oringscan-gpu-XXXXXX)}"
DEFECT="${GPU_CHECK_DEFECT:-16}"
GOOD="${GPU_CHECK_GOOD:-8}"
mkdir -p "$WORK"
echo "gpu_check: workdir $WORK ($(python -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)'))"

if [ ! -f "$WORK/output/model1/annotations/train.json" ]; then
    oringscan synth "$WORK/dataset" --types model1 --good "$GOOD" --defect "$DEFECT" --rework 0 --seed 7
    oringscan preprocess --data "$WORK/dataset" --output "$WORK/output" --model model1
fi

python - "$WORK" <<'PY'
import json
import sys
import time
from pathlib import Path

import torch

from oringscan.config import Config
from oringscan.segmentation import train_segmentation

work = Path(sys.argv[1])
rows = []
for amp in (True, False):
    out = work / f"output_amp_{'on' if amp else 'off'}"
    (out / "model1").mkdir(parents=True, exist_ok=True)
    for name in ("annotations", "images"):
        link = out / "model1" / name
        if not link.exists():
            link.symlink_to((work / "output" / "model1" / name).resolve())
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    summary = train_segmentation(Config(), out, "model1", progress=False, backbone="resnet50_fpn", device="cuda",
                                 amp=amp, epochs=2, num_workers=2, echo=print)
    wall = time.perf_counter() - start
    history = json.loads(Path(summary["history"]).read_text())["epochs"]
    val = (history[-1].get("val") or {}) if history else {}
    rows.append({
        "amp": amp,
        "seconds_per_epoch": [e["seconds"] for e in history],
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "val_segm_AP": (val.get("segm") or {}).get("AP"),
        "val_bbox_AP": (val.get("bbox") or {}).get("AP"),
        "pretrained": summary["pretrained"],
        "wall_s": round(wall, 1),
    })
print("\ngpu_check results")
for r in rows:
    print(f"  AMP {'on ' if r['amp'] else 'off'}: s/epoch {r['seconds_per_epoch']}  peak GPU mem {r['peak_gpu_mem_gib']} GiB"
          f"  val segm AP {r['val_segm_AP']}  bbox AP {r['val_bbox_AP']}  ({r['pretrained']}, {r['wall_s']} s in all)")
(work / "gpu_check.json").write_text(json.dumps(rows, indent=2))
print(f"  written to {work / 'gpu_check.json'}")
PY
