"""A real ``oringscan inspect`` process killed with SIGKILL halfway, then rerun: every frame ends
with exactly one whole record, and a reader can query the database while the batch writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.pipeline import TinyModels

from oringscan.cli.main import cli
from oringscan.db import InspectionStore, StoreError
from oringscan.frames import sha256_of

N_FRAMES = 6


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX only")
def test_sigkill_halfway_then_rerun_leaves_one_record_per_frame(
    tiny_models: TinyModels, tmp_path: Path, db_url: str
):
    batch = tmp_path / "frames"
    batch.mkdir()
    sources = sorted((tiny_models.data_root / "images").rglob("*.bmp"))[:N_FRAMES]
    assert len(sources) == N_FRAMES
    for i, src in enumerate(sources):
        shutil.copy(src, batch / f"{i:02d}_{src.name}")
    shas = {sha256_of(p) for p in batch.iterdir()}
    assert len(shas) == N_FRAMES
    url = db_url
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(tiny_models.output_root),
        "--model",
        "model1",
        str(batch),
        "--db",
        url,
        "--no-progress",
        "--no-save-vis",
    ]
    env = {**os.environ, "ORINGSCAN_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "oringscan.cli.main", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reader: InspectionStore | None = None
    seen_counts: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if reader is None:
                try:
                    reader = InspectionStore(url)  # opening a database the writer is creating
                except StoreError:
                    continue
            # The reader reads while the batch writes: never locked out, never a half frame.
            frames = reader.frames(limit=None)
            seen_counts.append(len(frames))
            for f in frames:
                detail = reader.frame_detail(f.id)
                assert detail is not None
                if f.verdict != "error":
                    assert detail.tiles and detail.measurements
            reader.verdict_counts()
            if len(frames) >= 2:
                break
        assert proc.poll() is None, (
            f"the batch ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert seen_counts == sorted(seen_counts)
    killed_at = seen_counts[-1]
    assert 2 <= killed_at < N_FRAMES

    assert reader is not None
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    frames = reader.frames(limit=None)
    per_sha = Counter(f.sha256 for f in frames)
    assert set(per_sha) == shas
    assert all(n == 1 for n in per_sha.values()), per_sha
    for f in frames:
        detail = reader.frame_detail(f.id)
        if f.verdict != "error":
            assert detail.tiles and detail.measurements, f
    runs = reader.runs()
    assert len(runs) == 2
    assert sorted(r.status for r in runs) == ["done", "interrupted"]  # the killed run's process is gone
    reader.dispose()
