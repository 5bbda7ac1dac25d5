"""The dashboard in a real browser: a served instance and headless Chromium (Debian's, via Playwright).

Used by the end-to-end test and to take the README's screenshots:

    python -m oringscan.dashboard.browser --db sqlite:///oringscan-demo/output/inspections.db \\
        --data oringscan-demo/data --output oringscan-demo/output --out docs/img
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from oringscan.errors import OringscanError

CHROMIUM_ENV = "ORINGSCAN_CHROMIUM"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class BrowserError(OringscanError):
    pass


def chromium_path() -> Path | None:
    """Debian's chromium: $ORINGSCAN_CHROMIUM, else `chromium` on PATH; None when there is none."""
    configured = os.environ.get(CHROMIUM_ENV)
    candidates = [configured] if configured else [shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served_dashboard(
    db_url: str,
    data_root: Path,
    output_root: Path,
    *,
    port: int | None = None,
    startup_timeout: float = 60.0,
    config: Path | None = None,
) -> Iterator[str]:
    """Run ``oringscan dashboard`` as a subprocess on a free loopback port; yields its base URL."""
    port = port or free_port()
    command = [
        sys.executable,
        "-m",
        "oringscan.cli.main",
        "dashboard",
        "--db",
        db_url,
        "--data",
        str(data_root),
        "--output",
        str(output_root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if config is not None:
        command += ["--config", str(config)]
    errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server can never block on it
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                errors.seek(0)
                lines = errors.read().decode(errors="replace").strip().splitlines()
                raise BrowserError(
                    f"oringscan dashboard exited with {process.returncode}: {lines[-1] if lines else ''}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BrowserError(
                        f"oringscan dashboard did not listen on 127.0.0.1:{port} within {startup_timeout:.0f} s"
                    ) from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        errors.close()


@contextmanager
def chromium(executable: Path | None = None) -> Iterator[Any]:
    """A headless Chromium browser (Playwright's API driving the system's binary)."""
    from playwright.sync_api import sync_playwright

    executable = executable or chromium_path()
    if executable is None:
        raise BrowserError(f"no chromium binary: install Debian's chromium or set {CHROMIUM_ENV}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


def wait_for_page(page: Any, heading: str, timeout_ms: int = 60_000) -> None:
    """Until the page's title heading shows ``heading`` and Streamlit has been idle for a moment.

    Streamlit shows its status widget ("Running...", "Stop") while the script runs; the page is
    done when that widget has stayed away for a second (charts and tables then draw in the browser).
    """
    page.get_by_role("heading", name=heading).first.wait_for(timeout=timeout_ms)
    status = page.get_by_test_id("stStatusWidget")
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        if status.count() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                break
        else:
            quiet_since = None
        page.wait_for_timeout(100)
    page.wait_for_timeout(700)


def screenshot_pages(
    base_url: str,
    out_dir: Path,
    frame_id: int | None,
    executable: Path | None = None,
    width: int = 1500,
    only: set[str] | None = None,
) -> list[Path]:
    """One PNG per page (queue, hot spots, frame, overview, runs) for the README; ``only``: these names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shots = [
        ("dashboard_queue.png", "/", "Review queue", 1450),
        ("dashboard_hot_spots.png", f"/spots?frame={frame_id}" if frame_id else "/spots", "Frame", 1500),
        ("dashboard_frame.png", f"/frame?frame={frame_id}" if frame_id else "/frame", "Frame", 2000),
        ("dashboard_overview.png", "/overview", "Overview", 1500),
        ("dashboard_runs.png", "/runs", "Runs", 1150),
    ]
    written = []
    shots = [shot for shot in shots if only is None or shot[0] in only]
    with chromium(executable) as browser:
        for name, path, heading, height in shots:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(base_url + path)
            wait_for_page(page, heading)
            target = out_dir / name
            page.screenshot(path=str(target))
            page.close()
            written.append(target)
    return written


@click.command()
@click.option("--db", "db_url", required=True, help="Database URL to show.")
@click.option("--data", "data_root", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--output", "output_root", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("docs/img"),
    show_default=True,
)
@click.option(
    "--frame", "frame_id", type=int, default=None, help="Frame for the frame view (default: worst waiting)."
)
@click.option("--only", "only", multiple=True, help="Only these file names (e.g. dashboard_hot_spots.png).")
def main(
    db_url: str,
    data_root: Path,
    output_root: Path,
    out_dir: Path,
    frame_id: int | None,
    only: tuple[str, ...],
) -> None:
    """Screenshots of every dashboard page, taken in headless Chromium."""
    from oringscan.db import InspectionStore

    if frame_id is None:
        store = InspectionStore(db_url)
        page = store.review_queue(order="worst", limit=1)
        frame_id = page.items[0].id if page.items else None
        store.dispose()
    # Screenshots of the pages themselves, served on loopback only: login switched off for them.
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "screenshots.toml"
        config.write_text("[dashboard]\nrequire_login = false\n", encoding="utf-8")
        with served_dashboard(db_url, data_root, output_root, config=config) as base_url:
            for path in screenshot_pages(base_url, out_dir, frame_id, only=set(only) or None):
                click.echo(path)


if __name__ == "__main__":
    main()
