"""Which parts two runs judged differently: ``oringscan db diff RUN_A RUN_B`` and the dashboard's view.

Two runs are matched part by part on the frame key (the content's sha256): the archive run and its
re-inspection, or two inspections of the same frames with different models. With one run, each of
its records is compared with the record it superseded (``oringscan reinspect``). Reads only, in one
snapshot; the run ids reach SQL as bound parameters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import aliased

from oringscan.db.errors import StoreError
from oringscan.db.models import Frame, Run


@dataclass(slots=True)
class DiffRow:
    """One part both sides judged: its verdicts, screening scores and the newer side's first reason."""

    frame_key: str | None
    path: str
    frame_a: int
    frame_b: int
    verdict_a: str
    verdict_b: str
    score_a: float | None
    score_b: float | None
    reason_b: str

    @property
    def changed(self) -> bool:
        return self.verdict_a != self.verdict_b

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RunDiff:
    """Two runs compared: counts per side, the parts in both, and those whose verdict changed."""

    run_a: int | None  # None: "the records each frame of run_b superseded"
    run_b: int
    n_a: int = 0
    n_b: int = 0
    rows: list[DiffRow] = field(default_factory=list)

    @property
    def common(self) -> int:
        return len(self.rows)

    @property
    def changed(self) -> list[DiffRow]:
        return [r for r in self.rows if r.changed]

    def transitions(self) -> dict[str, int]:
        """``"good -> defect": 3``, ... for the changed parts, most frequent first."""
        counts = Counter(f"{r.verdict_a} -> {r.verdict_b}" for r in self.changed)
        return dict(counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "frames_a": self.n_a,
            "frames_b": self.n_b,
            "in_both": self.common,
            "changed": [r.to_dict() for r in self.changed],
            "transitions": self.transitions(),
        }


def diff_runs(store: Any, run_a: int | None, run_b: int) -> RunDiff:
    """Parts judged by both runs (matched on the frame key), or with ``run_a`` None, run_b's records
    against the records they superseded. Unknown runs are one StoreError line."""
    a, b = aliased(Frame, name="a"), aliased(Frame, name="b")
    with store.read_session() as session:
        for run_id in (run_a, run_b):
            if run_id is not None and session.get(Run, run_id) is None:
                raise StoreError(f"run {run_id}: not in the database")
        if run_a is None:
            link = and_(a.id == b.supersedes_id)
            n_a = session.scalar(
                select(func.count()).select_from(b).where(b.run_id == run_b, b.supersedes_id.is_not(None))
            )
        else:
            link = and_(a.frame_key == b.frame_key, a.run_id == run_a)
            n_a = session.scalar(select(func.count()).select_from(Frame).where(Frame.run_id == run_a))
        n_b = session.scalar(select(func.count()).select_from(Frame).where(Frame.run_id == run_b))
        stmt = (
            select(
                b.frame_key,
                b.path,
                a.id,
                b.id,
                a.verdict,
                b.verdict,
                a.screen_score,
                b.screen_score,
                b.reasons,
            )
            .join(a, link)
            .where(b.run_id == run_b)
            .order_by(b.id)
        )
        rows = [
            DiffRow(
                key,
                path,
                fa,
                fb,
                va,
                vb,
                sa,
                sb,
                str(reasons[0]) if isinstance(reasons, list) and reasons else "",
            )
            for key, path, fa, fb, va, vb, sa, sb, reasons in session.execute(stmt)
        ]
    return RunDiff(run_a, run_b, int(n_a or 0), int(n_b or 0), rows)
