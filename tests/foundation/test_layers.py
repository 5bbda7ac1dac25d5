"""The package's layers (docs/ARCHITECTURE.md): a module-level import never goes up a layer.

Imports inside functions (lazy, for start-up time) and under ``TYPE_CHECKING`` are not counted:
they do not make a lower layer load a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import oringscan

PACKAGE = Path(oringscan.__file__).parent

LAYERS = {
    0: {
        "types",
        "errors",
        "config",
        "workspace",
        "frames",
        "roi",
        "tiling",
        "budget",
        "devices",
        "timeutil",
        "_lazy",
        "_deps",
        "__init__",
    },
    1: {"preprocess", "screening", "segmentation", "rework_rules", "synth"},
    2: {"db"},
    3: {"pipeline", "review", "export"},
    4: {"cli", "dashboard", "testing"},
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}
# Every command module registers with the root group: a part's cli.py may use the shared CLI helpers.
CLI_HELPERS = "cli"


def _part(module: str) -> str:
    """'oringscan.screening.fit' -> 'screening'; 'oringscan.types' -> 'types'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_level_imports(tree: ast.Module) -> list[str]:
    """oringscan modules imported at module level (not in functions, not under TYPE_CHECKING)."""
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("oringscan"):
                found.append(node.module)
            elif isinstance(node, ast.Import):
                found.extend(a.name for a in node.names if a.name.startswith("oringscan"))
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []) or []:
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return found


def test_every_part_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts.discard("__pycache__")
    assert parts <= set(LAYER_OF), (
        f"put these in a layer (and in docs/ARCHITECTURE.md): {parts - set(LAYER_OF)}"
    )


def test_no_module_level_import_goes_up_a_layer() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        module = ".".join(("oringscan", *path.relative_to(PACKAGE).with_suffix("").parts))
        own = _part(module)
        is_cli_shell = path.name == "cli.py" or path.stem.endswith("_cli")
        for imported in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            target = _part(imported)
            if target == own or (is_cli_shell and target == CLI_HELPERS):
                continue
            if LAYER_OF[target] > LAYER_OF[own]:
                violations.append(
                    f"{module} imports {imported} (layer {LAYER_OF[own]} -> {LAYER_OF[target]})"
                )
    assert not violations, "\n".join(violations)
