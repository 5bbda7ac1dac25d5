"""A batch writer run as a real subprocess by the database reliability tests.

``python tests/support/db_writer.py URL N_FRAMES FINGERPRINT [--slow-commit SECONDS]`` records frames
``frame-0 .. frame-N-1`` through ``InspectionStore`` with the pipeline's rerun rule (skip a frame
already recorded with the same sha256 and model fingerprint) and prints ``recorded I`` or
``skipped I`` per frame. ``--slow-commit S`` sleeps S seconds between writing each frame's rows
and committing them; ``--stall-at I`` prints ``in-transaction I`` there for frame I and waits, so
a test can kill it inside that frame's transaction. ``--no-check`` skips the application's check
and relies on the database's uniqueness rule alone (``AlreadyInspectedError`` -> ``skipped I``).
"""

from __future__ import annotations

import argparse
import time

from sqlalchemy import event
from sqlalchemy.orm import Session

from oringscan.db import InspectionStore
from oringscan.db.store import AlreadyInspectedError
from oringscan.testing.results import make_result

TILES_PER_FRAME = 12


def frame_sha(index: int) -> str:
    return f"{index:064x}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("n_frames", type=int)
    parser.add_argument("fingerprint")
    parser.add_argument("--slow-commit", type=float, default=0.0)
    parser.add_argument("--stall-at", type=int, default=None)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    current = {"index": -1}

    @event.listens_for(Session, "after_flush")
    def _linger(session: Session, _context: object) -> None:
        if args.stall_at is not None and current["index"] == args.stall_at:
            print(f"in-transaction {args.stall_at}", flush=True)  # rows written, not committed yet
            time.sleep(60)
        time.sleep(args.slow_commit)

    store = InspectionStore(args.url)
    run_id = store.start_run(oring_type="model1", model_fingerprint=args.fingerprint, command="db_writer")
    print(f"run {run_id}", flush=True)
    skipped = 0
    for index in range(args.n_frames):
        current["index"] = index
        sha = frame_sha(index)
        if not args.no_check and store.find_inspected(sha, args.fingerprint) is not None:
            skipped += 1
            print(f"skipped {index}", flush=True)
            continue
        verdict = ("good", "defect", "suspect", "rework")[index % 4]
        result = make_result(
            verdict,
            image=f"/plant/batch/frame {index:03d}.bmp",
            sha256=sha,
            n_tiles=TILES_PER_FRAME,
            score=1.5 if verdict != "good" else 0.4,
            defects=[("cut", 0.9), ("pit", 0.7)] if verdict == "defect" else None,
            fired=["ovality"] if verdict == "rework" else None,
            seed=index,
        )
        try:
            store.record_frame(run_id, result, frame_shape=(2048, 2448))
        except AlreadyInspectedError:
            skipped += 1
            print(f"skipped {index}", flush=True)
            continue
        print(f"recorded {index}", flush=True)
    store.finish_run(run_id, n_skipped=skipped)
    print("done", flush=True)
    store.dispose()


if __name__ == "__main__":
    main()
