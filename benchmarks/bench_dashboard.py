"""Dashboard render times with 10,000 frames in the database (target: queue and frame view < 2 s).

Fills a SQLite database through the project's own DB layer (``InspectionStore.record_frame``, full
2448x2048 frames), then renders pages with Streamlit's AppTest, the same script the server runs.
Baseline in the same run: the same pages on a 100-frame database; the ratio shows whether a page
slows down as the database grows (it should not: queries are paginated in SQL).

    python benchmarks/bench_dashboard.py                 # 10,000 frames, database kept for reruns
    python benchmarks/bench_dashboard.py --frames 2000 --repeat 3
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import click  # noqa: E402

TARGET_S = 2.0


def _database(workdir: Path, n_frames: int, seed: int) -> tuple[str, Path]:
    """A database with ``n_frames`` sample frames, reused when an earlier run left one."""
    from oringscan.db import InspectionStore
    from oringscan.testing.sample_db import fill_sample_database

    folder = workdir / f"frames{n_frames}-seed{seed}"
    url = f"sqlite:///{(folder / 'inspections.db').as_posix()}"
    marker = folder / "complete"
    if marker.is_file():
        return url, folder
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    store = InspectionStore(url)
    start = time.perf_counter()
    fill_sample_database(
        store, folder / "images", n_frames, seed=seed, days=30, runs_per_type=5, progress=True
    )
    store.dispose()
    click.echo(
        f"filled {n_frames} frames in {time.perf_counter() - start:.0f} s through "
        "InspectionStore.record_frame"
    )
    marker.write_text("ok")
    return url, folder


def _measure(url: str, root: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds per page render (AppTest script run), after one warm-up run of each."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from oringscan.dashboard.server import APP_SCRIPT
    from oringscan.dashboard.settings import DashboardSettings
    from oringscan.db import InspectionStore

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # no "missing ScriptRunContext" chatter
    DashboardSettings(url, [root], page_size=25).export()
    store = InspectionStore(url)
    defect = store.frames(verdict="defect", order="worst", limit=1).items[0].id
    suspect = store.frames(verdict="suspect", limit=1).items[0].id
    rework = store.frames(verdict="rework", limit=1).items[0].id
    store.dispose()

    def queue(at: AppTest) -> None:
        at.switch_page("views/review_queue.py")

    def queue_worst_page3(at: AppTest) -> None:
        queue(at)
        at.run()
        at.radio(key="q_order").set_value("worst")
        at.run()
        at.number_input(key="q_page").set_value(3)

    def queue_uncertain(at: AppTest) -> None:
        queue(at)
        at.run()
        at.radio(key="q_order").set_value("uncertain")

    def spots(frame_id: int):
        def go(at: AppTest) -> None:
            at.query_params["frame"] = str(frame_id)
            at.switch_page("views/hot_spots.py")

        return go

    def frame(frame_id: int, layers: bool):
        def go(at: AppTest) -> None:
            at.query_params["frame"] = str(frame_id)
            at.switch_page("views/frame_view.py")
            if layers:
                at.run()
                at.toggle(key="f_heat").set_value(True)
                at.toggle(key="f_geometry").set_value(True)

        return go

    cases = {
        "review queue": queue,
        "review queue, worst first, page 3": queue_worst_page3,
        "frame view (defect, masks+boxes)": frame(defect, False),
        "frame view (+heatmap+geometry)": frame(suspect, True),
        "review queue, closest to a threshold": queue_uncertain,
        "hot spots (defect: crops + reference)": spots(defect),
        "hot spots (rework: fired rule located)": spots(rework),
        "overview": lambda at: at.switch_page("views/overview.py"),
        "runs": lambda at: at.switch_page("views/runs.py"),
    }
    times: dict[str, list[float]] = {}
    for name, prepare in cases.items():
        samples = []
        for i in range(repeat + 1):
            at = AppTest.from_file(str(APP_SCRIPT), default_timeout=120)
            at.run()  # the app's first (default) page, as a browser session would start
            prepare(at)
            st.cache_data.clear()  # a frame seen for the first time: no cached ring geometry
            start = time.perf_counter()
            at.run()
            elapsed = time.perf_counter() - start
            if at.exception:
                raise SystemExit(f"{name}: page raised {at.exception[0].message}")
            if i:  # the first one warms caches (imports, SQLite pages)
                samples.append(elapsed)
        times[name] = samples
    return times


@click.command()
@click.option(
    "--frames", "n_frames", default=10_000, show_default=True, help="Frames in the measured database."
)
@click.option("--baseline-frames", default=100, show_default=True, help="Frames in the baseline database.")
@click.option("--repeat", default=5, show_default=True, help="Timed renders per page (after one warm-up).")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(tempfile.gettempdir()) / "oringscan-bench-dashboard",
    show_default=True,
    help="Where the databases are kept between runs.",
)
@click.option("--seed", default=0, show_default=True)
def main(n_frames: int, baseline_frames: int, repeat: int, workdir: Path, seed: int) -> None:
    """Render time per dashboard page, big database vs. small baseline."""
    big_url, big_root = _database(workdir, n_frames, seed)
    small_url, small_root = _database(workdir, baseline_frames, seed)
    small = _measure(small_url, small_root, repeat)
    big = _measure(big_url, big_root, repeat)
    click.echo(
        f"\nmedian render seconds (AppTest, {repeat} runs each); target < {TARGET_S:.0f} s for queue and "
        "frame view"
    )
    click.echo(f"{'page':40s} {baseline_frames:>8d} fr {n_frames:>8d} fr  ratio  max      verdict")
    failed = False
    for name in big:
        b, s = statistics.median(big[name]), statistics.median(small[name])
        gated = name.startswith(("review queue", "frame view"))
        ok = max(big[name]) < TARGET_S
        failed |= gated and not ok
        verdict = ("PASS" if ok else "FAIL") if gated else "-"
        click.echo(f"{name:40s} {s:10.3f}  {b:10.3f}  {b / s:5.2f}  {max(big[name]):6.3f}  {verdict}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
