"""Per-frame time of the torch and onnxruntime paths (one thread), and their agreement.

Screening: a fitted screening folder (``--screening DIR``, PatchCore) is exported (``model.onnx``) and
both runtimes score the same frames' tiles (the tiles of ``--split`` of ``--output``/``--model``).
Segmentation: a checkpoint (``--checkpoint``), or with none a lite0_fpn Mask R-CNN with random heads at
the tile size (its timing only: an untrained model's detections are not the plant's). Second stages:
each ``--stage-checkpoint`` (a semantic segmenter or tile classifier, e.g. from ``evaluate compare``)
is exported and both runtimes predict every tile of the same frames (batches of 4, as the pipeline).

    python benchmarks/bench_onnx_runtime.py --output output --model model1 \
        --screening output/model1/screening --frames 8 \
        [--stage-checkpoint output/model1/compare/semantic/model1/checkpoints/best_model.pth ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _frames(output: Path, oring_type: str, split: str, n: int) -> list[list[np.ndarray]]:
    from oringscan.screening.data import load_split, read_tile

    by: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in load_split(output, oring_type, split):
        if len(by) >= n and r.source not in by:
            continue
        by[r.source].append(read_tile(r.path))
    return list(by.values())[:n]


def _time(fn, frames: list[list[np.ndarray]]) -> tuple[float, list]:  # type: ignore[no-untyped-def]
    fn(frames[0])  # warm-up
    out = []
    t0 = time.perf_counter()
    for tiles in frames:
        out.append(fn(tiles))
    return (time.perf_counter() - t0) / len(frames), out


def _second_stage(path: Path, frames: list[list[np.ndarray]]) -> dict:
    """A semantic segmenter / tile classifier: torch and onnxruntime per frame, and their agreement."""
    from oringscan.export.dense_onnx import export_dense_onnx, onnx_dense_stage
    from oringscan.segmentation.stages import load_stage

    stage = load_stage(path, device="cpu")
    out = Path("/tmp") / "bench_onnx_stage" / f"{stage.stage}.onnx"
    info = export_dense_onnx(stage, out, check_images=frames[0][:4])  # type: ignore[arg-type]
    twin = onnx_dense_stage(stage, out)  # type: ignore[arg-type]
    t_torch, i_torch = _time(lambda t: stage.predict_arrays(t, batch_size=4), frames)
    t_onnx, i_onnx = _time(lambda t: twin.predict_arrays(t, batch_size=4), frames)
    return {
        "stage": stage.stage,
        "arch": stage.spec.arch,
        "input_size": stage.spec.input_size,
        "onnx_bytes": info["bytes"],
        "torch_s_per_frame": round(t_torch, 3),
        "onnx_s_per_frame": round(t_onnx, 3),
        "parity_4_tiles": info["parity"],
        "instances_torch": sum(len(x) for f in i_torch for x in f),
        "instances_onnx": sum(len(x) for f in i_onnx for x in f),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--model", default="model1")
    ap.add_argument("--split", default="test")
    ap.add_argument("--screening", type=Path, required=True)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tile-size", type=int, default=640)
    ap.add_argument("--stage-checkpoint", type=Path, action="append", default=[])
    ap.add_argument("--skip-mask-rcnn", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from oringscan.screening.model import ScreeningModel
    from oringscan.screening.onnx_export import OnnxScreeningModel, export_screening_onnx

    frames = _frames(args.output, args.model, args.split, args.frames)
    screen = ScreeningModel.load(args.screening)
    check = [t for f in frames for t in f][:8]  # parity of scores and maps, as `export model` checks
    info = export_screening_onnx(screen, args.screening, check_tiles=check)
    onnx_screen = OnnxScreeningModel.load(args.screening)
    t_torch, s_torch = _time(lambda t: screen.score_images(t, with_maps=True)[0], frames)
    t_onnx, s_onnx = _time(lambda t: onnx_screen.score_images(t, with_maps=True)[0], frames)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(s_torch, s_onnx, strict=True))
    result: dict = {
        "screening": {
            "frames": len(frames),
            "tiles_per_frame": float(np.mean([len(f) for f in frames])),
            "model": info.get("model", "patchcore"),
            "bank": [info["bank_rows"], info["bank_dims"]] if "bank_rows" in info else None,
            "max_map_diff_check": info.get("parity", {}).get("max_map_diff"),
            "onnx_bytes": info["bytes"],
            "torch_s_per_frame": round(t_torch, 3),
            "onnx_s_per_frame": round(t_onnx, 3),
            "max_score_diff": diff,
        }
    }
    for path in args.stage_checkpoint:
        result[f"second stage {path}"] = _second_stage(path, frames)
    if args.skip_mask_rcnn:
        print(json.dumps(result, indent=2))
        return
    from oringscan.config import Config
    from oringscan.export.segmentation_onnx import OnnxSegmenter, export_segmenter_onnx
    from oringscan.segmentation.inference import Segmenter

    if args.checkpoint is not None:
        seg = Segmenter.load(args.checkpoint, device="cpu")
        label = str(args.checkpoint)
    else:
        from oringscan.segmentation.models import ModelSpec, build_model

        torch.manual_seed(0)
        spec = ModelSpec("lite0_fpn", 2, args.tile_size, None, True, 3)
        seg = Segmenter(
            build_model(spec), spec, ["defect"], args.model, Config().training, torch.device("cpu")
        )
        label = "lite0_fpn, random heads (timing only)"
    out = Path("/tmp") / "bench_onnx_seg" / "best_model.onnx"
    export_segmenter_onnx(seg, out)
    onnx_seg = OnnxSegmenter.from_torch(seg, out)
    tiles = [t for f in frames for t in f][: 2 * len(frames)]
    per = [[t] for t in tiles]
    t_torch, i_torch = _time(lambda t: seg.predict_arrays(t, batch_size=1)[0], per)
    t_onnx, i_onnx = _time(lambda t: onnx_seg.predict_arrays(t)[0], per)
    result["segmentation"] = {
        "model": label,
        "tiles": len(per),
        "torch_s_per_tile": round(t_torch, 3),
        "onnx_s_per_tile": round(t_onnx, 3),
        "instances_torch": sum(len(x) for x in i_torch),
        "instances_onnx": sum(len(x) for x in i_onnx),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
