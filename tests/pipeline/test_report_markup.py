"""The batch summary prints file names and reasons as they are, even with rich markup in them."""

from __future__ import annotations

import io

from rich.console import Console

from oringscan.pipeline.batch import BatchSummary
from oringscan.pipeline.report import print_summary
from oringscan.types import InspectionResult, Verdict


def test_file_names_with_markup_print_as_written() -> None:
    odd = "line3 [red]x[bold].bmp"  # as markup this would print "line3 x.bmp" in bold red
    reason = "cannot be decoded: /frames/[/]/x"  # as markup: a MarkupError
    summary = BatchSummary(
        run_id=1,
        oring_type="model1",
        fingerprint="f",
        results=[InspectionResult(f"/frames/{odd}", Verdict.ERROR, [reason], error=reason)],
    )
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert odd in text and reason in text
