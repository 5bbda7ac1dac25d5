"""``oringscan.testing`` stays what it claims: helpers for tests and benchmarks, kept apart.

The second renderer (``oringscan.testing.plantlike``) grades the ROI, rework and screening code on
frames that code did not draw, so it must import nothing else of ``oringscan``; and the product
(CLI, pipeline, dashboard) must never depend on test helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import oringscan
import oringscan.testing

PACKAGE = Path(oringscan.__file__).resolve().parent
TESTING = Path(oringscan.testing.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved against oringscan)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("oringscan.<relative>")
            elif node.module:
                names.add(node.module)
    return names


def test_the_second_renderer_imports_nothing_of_oringscan() -> None:
    used = imported_modules(TESTING / "plantlike.py")
    assert used, "the parser found no imports at all: the check itself is broken"
    assert "cv2" in used  # it does draw with OpenCV
    ours = sorted(m for m in used if m == "oringscan" or m.startswith("oringscan."))
    assert ours == [], f"plantlike.py must stay independent of oringscan, imports {ours}"


def test_one_renderer_of_ours_besides_the_independent_one() -> None:
    """Ring frames come from ``oringscan.synth`` (data sets and ``synth.exact`` rings) or from the
    independent ``plantlike``; the other testing helpers take their frames from synth."""
    assert {p.stem for p in TESTING.glob("*.py")} == {"__init__", "plantlike", "results", "sample_db"}
    assert "oringscan.synth" in imported_modules(TESTING / "sample_db.py")
    exact = imported_modules(PACKAGE / "synth" / "exact.py")
    assert not [m for m in exact if m.startswith("oringscan.testing")], exact


def test_the_product_never_imports_the_testing_helpers() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if TESTING in path.parents:
            continue
        used = imported_modules(path)
        if any(m == "oringscan.testing" or m.startswith("oringscan.testing.") for m in used):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert offenders == []


def test_the_independence_check_catches_an_import(tmp_path: Path) -> None:
    """The AST check above is real: a file importing oringscan is seen as doing so."""
    sample = tmp_path / "x.py"
    sample.write_text("import cv2\nfrom oringscan.synth import render_frame\n", encoding="utf-8")
    assert "oringscan.synth" in imported_modules(sample)
