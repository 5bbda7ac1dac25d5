"""``oringscan export model`` (ONNX for the line PCs) and ``oringscan evaluate compare`` (all variants)."""

from __future__ import annotations

import json

import click

from oringscan.cli.common import AppContext, OneLineErrors, common_options, model_option, set_threads


def _threads(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: all cores)."
    )(func)


@click.command("model")
@common_options
@model_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "openvino"]),
    default="onnx",
    show_default=True,
    help="openvino: the ONNX files converted to OpenVINO IR as well (pip install openvino).",
)
@click.option(
    "--stage",
    type=click.Choice(["all", "screening", "segmentation"]),
    default="all",
    show_default=True,
    help="all: screening, and segmentation when its checkpoint exists.",
)
@click.option(
    "--check-tiles",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Test tiles (defect tiles first) on which onnxruntime is compared with torch (0: no check).",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Memory bank rows per kNN step in the screening graph (largest intermediate: patches x this).",
)
@click.option("--json", "as_json", is_flag=True, help="The export summary as JSON.")
@_threads
def export_model_command(
    app: AppContext,
    oring_type: str,
    fmt: str,
    stage: str,
    check_tiles: int,
    chunk_rows: int,
    as_json: bool,
    threads: int | None,
) -> None:
    """A type's screening (any [screening] model) and segmentation (any stage) models as ONNX.

    \b
    Writes next to the torch models:
      <output>/<model>/screening/model.onnx (+ model.onnx.json)      tiles -> scores, anomaly maps
                                                                     (PatchCore, PaDiM, FastFlow,
                                                                     EfficientAD)
      <output>/<model>/checkpoints/best_model.onnx (+ .json)         Mask R-CNN: tile -> boxes, labels,
                                                                     scores, masks; semantic: tiles ->
                                                                     pixel logits; classifier: tiles -> logits
    PatchCore's graph holds the memory bank once, at its real size, and searches it in chunks;
    each file is checked against torch on test tiles (scores, maps, instances) and the result is in
    its .json. Run them with `[pipeline] runtime = "onnx"`.
      oringscan export model --model model1 --format onnx
    """
    from oringscan.export.models import export_model

    set_threads(threads or 1)
    report = export_model(
        app.config, app.output_root, oring_type, fmt, stage, check_tiles=check_tiles, chunk_rows=chunk_rows
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "files": {k: str(v) for k, v in report.files.items()},
                    **report.info,
                    "skipped": report.skipped,
                },
                indent=2,
            )
        )
        return
    for name, path in report.files.items():
        info = report.info[name]
        line = f"{name}: {path} ({info['bytes'] / 1e6:.1f} MB"
        if info.get("model", "patchcore") != "patchcore":  # PaDiM, FastFlow, EfficientAD
            line += f", {info['model']} on {info.get('backbone', '?')}"
        if name == "screening" and "bank_rows" in info:
            line += f", bank {info['bank_rows']} x {info['bank_dims']} = {info['bank_bytes'] / 1e6:.1f} MB"
        line += ")"
        parity = info.get("parity")
        if parity and "instances_torch" in parity:  # a segmentation stage: instances, tile decisions
            line += (
                f"; vs torch on {parity['tiles']} tiles: {parity['instances_onnx']} / {parity['instances_torch']} "
                f"instances, {parity['identical']} identical, scores within {parity['max_score_diff']:.1e}"
            )
            if "max_probability_diff" in parity:
                line += f", probabilities within {parity['max_probability_diff']:.1e}"
        elif parity and "max_map_diff" in parity:
            line += (
                f"; vs torch on {parity['tiles']} tiles: scores within {parity['max_score_diff']:.1e}, "
                f"maps within {parity['max_map_diff']:.1e}"
            )
        elif parity:
            line += f"; vs torch on {parity['tiles']} tiles: scores within {parity['max_score_diff']:.1e}"
        click.echo(line)
    for name, why in report.skipped.items():
        click.echo(f"{name}: not exported: {why}")


@click.command("compare")
@common_options
@model_option()
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="NAME",
    help="Only these variants (repeatable; default: all of [compare] variants or the built-in list).",
)
@click.option("--json", "as_json", is_flag=True, help="All numbers as JSON.")
@_threads
def evaluate_compare_command(
    app: AppContext, oring_type: str, variants: tuple[str, ...], as_json: bool, threads: int | None
) -> None:
    """Every variant (screening models, segmentation stages) on the same test split, in one run.

    \b
    Variants are [compare] variants in the config ([screening] or [segmentation] settings over the
    configured ones), or the built-in list: PatchCore, PaDiM, FastFlow (ringtexture and ImageNet
    Lite0), then the second stages maskrcnn, semantic and classifier. A screening variant is fitted
    on the good train tiles with thresholds cross-fitted as `train screening` does; a segmentation
    variant trains and calibrates as `train segmentation` does (its budget: max_minutes). Each goes
    to <output>/<model>/compare/<variant>/ (the production models are not touched), is loaded back
    and scores every test tile: frame AUROC, recall and false rejects at its operating point (a
    second stage: its calibrated defect gate), recall by defect size, seconds per frame (this
    machine, --threads), fit time, model size. Writes compare.json, compare.md (the table) and
    compare.png there.
      oringscan evaluate compare --model model1 --threads 1
    """
    import torch

    from oringscan.pipeline.variants import compare_variants

    set_threads(threads)
    torch.set_num_threads(threads or torch.get_num_threads())
    result = compare_variants(app.config, app.output_root, oring_type, list(variants) or None)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, default=float))
        return
    click.echo(result.markdown_path.read_text(encoding="utf-8").rstrip())
    click.echo(f"written: {result.json_path}, {result.markdown_path}, {result.png_path}")


def register(root: click.Group) -> None:
    existing = root.commands.get("export")
    if isinstance(existing, click.Group):  # another part made the group first: add to it
        existing.add_command(export_model_command)
    else:
        group = OneLineErrors(name="export", help="Export models and reviewed frames.")
        group.add_command(export_model_command)
        root.add_command(group)
    evaluate = root.commands.get("evaluate")
    if isinstance(evaluate, click.Group):
        evaluate.add_command(evaluate_compare_command)
