"""The fault catalogue: every way a batch can go wrong, and what the user sees and what is recorded.

Each case ends one of two ways, never a traceback, never a silent pass:

- ``record``: the input is a file of the batch; it gets its own record (an ``error`` record with
  the reason, or a real verdict), and the batch goes on;
- ``Error``: the command stops with exactly one ``Error: ...`` line naming the file and the problem,
  and the database has no frame record of it.

File cases run as ONE ``oringscan inspect`` batch per database backend (a folder holding all of
them), so the catalogue stays fast; command cases run one command each. SQLite always;
PostgreSQL when ORINGSCAN_TEST_PG_URL is set (see tests/conftest.py). README "What happens when
things go wrong" is this table in prose.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.engine import make_url
from support.pipeline import TinyModels

from oringscan.cli.main import cli
from oringscan.db import InspectionStore
from oringscan.db.models import Frame, Run
from oringscan.errors import path_text
from oringscan.frames import write_frame

ROOT = Path(__file__).resolve().parents[2]  # the repository
NON_UTF8 = b"cam\xff\xfe frame.bmp"  # a Latin-1 / Windows-1252 name copied onto Linux
MARKER = "PWNED_BY_PICKLE"


# -- shared material ----------------------------------------------------------------------------------


def _frames(tiny_models: TinyModels, folder: str) -> list[Path]:
    return sorted((tiny_models.data_root / "images" / folder).glob("*.bmp"))


def _distinct(src: Path, k: int) -> np.ndarray:
    """A real frame with one belt pixel changed: a new content (sha256), the same picture."""
    image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    image = image.copy()
    image[0, 0] = (int(np.asarray(image[0, 0]).ravel()[0]) + 1 + k) % 256
    return image


def _copy_models(tiny_models: TinyModels, out: Path) -> Path:
    shutil.copytree(
        tiny_models.output_root / tiny_models.model,
        out / tiny_models.model,
        ignore=shutil.ignore_patterns(
            "images", "annotations", "runs", "inspections", "evaluation", "inference_results", "measurements"
        ),
    )
    return out


def _bmp_header(width: int, height: int, bpp: int = 8) -> bytes:
    row = ((width * bpp + 31) // 32) * 4
    offset = 54 + (1024 if bpp == 8 else 0)
    size = offset + row * height
    header = b"BM" + struct.pack("<IHHI", size & 0xFFFFFFFF, 0, 0, offset)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, 0, 0, 2835, 2835, 0, 0)
    return header + dib + bytes(1024 if bpp == 8 else 0) + bytes(4096)


def _png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + bytes(64)
    )


def _ring(size: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    w, h = size
    image = np.full((h, w), 18, np.uint8)
    cv2.circle(image, centre, radius, 175, -1)
    cv2.circle(image, centre, int(radius * 0.6), 18, -1)
    return image


def run_cli(*args: str, input: str | None = None) -> Result:  # noqa: A002 - click's name
    result = CliRunner().invoke(cli, list(args), input=input)
    assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def one_error_line(result: Result) -> str:
    """The command failed with exactly one ``Error:`` line (the last line), and no traceback."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    return errors[0]


def _frames_in(url: str) -> list[Any]:
    store = InspectionStore(url)
    try:
        return list(store.frames(limit=None))
    finally:
        store.dispose()


# -- file cases: one batch per backend -------------------------------------------------------------


@dataclass(frozen=True)
class FileCase:
    """One input file of the batch and what its record must say."""

    name: str
    build: Callable[[TinyModels, Path], Path]  # writes the input into the folder, returns its path
    expect: (
        str  # "inspected": a real verdict; "skipped": one record shared with identical content; else a reason
    )


def _copy(kind: str, index: int, name: str) -> Callable[[TinyModels, Path], Path]:
    def build(tiny_models: TinyModels, folder: Path) -> Path:
        target = folder / name
        write_frame(target, _distinct(_frames(tiny_models, kind)[index], index))
        return target

    return build


def _write(name: str, data: bytes | Callable[[TinyModels], bytes]) -> Callable[[TinyModels, Path], Path]:
    def build(tiny_models: TinyModels, folder: Path) -> Path:
        (folder / name).write_bytes(data(tiny_models) if callable(data) else data)
        return folder / name

    return build


def _image(name: str, make: Callable[[TinyModels], np.ndarray]) -> Callable[[TinyModels, Path], Path]:
    def build(tiny_models: TinyModels, folder: Path) -> Path:
        write_frame(folder / name, make(tiny_models))
        return folder / name

    return build


def _special(name: str, make: Callable[[Path], None]) -> Callable[[TinyModels, Path], Path]:
    def build(_tiny: TinyModels, folder: Path) -> Path:
        make(folder / name)
        return folder / name

    return build


def _non_utf8(tiny_models: TinyModels, folder: Path) -> Path:
    target = os.path.join(os.fsencode(folder), NON_UTF8)
    ok, buf = cv2.imencode(".bmp", _distinct(_frames(tiny_models, "model1good")[3], 3))
    with open(target, "wb") as fh:
        fh.write(buf.tobytes())
    return Path(os.fsdecode(target))


def _symlink_to_frame(tiny_models: TinyModels, folder: Path) -> Path:
    real = folder / "sub" / "real_target.bmp.orig"
    real.parent.mkdir(exist_ok=True)
    write_frame(real.with_suffix(".bmp"), _distinct(_frames(tiny_models, "model1good")[4], 4))
    real.with_suffix(".bmp").rename(real)
    (folder / "q_link_to_frame.bmp").symlink_to(real)
    return folder / "q_link_to_frame.bmp"


def _duplicate_content(tiny_models: TinyModels, folder: Path) -> Path:
    shutil.copy(folder / "a_good.bmp", folder / "a_good_copy.bmp")
    return folder / "a_good_copy.bmp"


def _binned(tiny_models: TinyModels) -> np.ndarray:
    image = _distinct(_frames(tiny_models, "model1good")[2], 2)
    return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def _colour(tiny_models: TinyModels) -> np.ndarray:
    image = _distinct(_frames(tiny_models, "model1good")[1], 1)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def _sixteen_bit(tiny_models: TinyModels) -> np.ndarray:
    image = cv2.imread(str(_frames(tiny_models, "model1good")[0]), cv2.IMREAD_GRAYSCALE)
    return image.astype(np.uint16) * 257


def _truncated(tiny_models: TinyModels) -> bytes:
    data = _frames(tiny_models, "model1good")[0].read_bytes()
    return data[: len(data) // 2]


SIZE = (612, 512)
FILE_CASES = [
    FileCase("good frame", _copy("model1good", 0, "a_good.bmp"), "inspected"),
    FileCase("defect frame", _copy("model1defect", 0, "b_defect.bmp"), "inspected"),
    FileCase("PNG frame", _copy("model1defect", 1, "c_defect.png"), "inspected"),
    FileCase("24-bit colour BMP", _image("d_colour.bmp", _colour), "inspected"),
    FileCase("2x2-binned frame", _image("e_binned.bmp", _binned), "inspected"),
    FileCase("file name not valid UTF-8", _non_utf8, "inspected"),
    FileCase("upper-case extension", _copy("model1good", 5, "f_UPPER.BMP"), "inspected"),
    FileCase(
        "markdown and unicode in the name", _copy("model1good", 6, "g_**bold** [x](y) ä.bmp"), "inspected"
    ),
    FileCase("symlink to a frame", _symlink_to_frame, "inspected"),
    FileCase("same content twice", _duplicate_content, "skipped"),
    FileCase("zero-byte file", _write("h_zero.bmp", b""), "empty file (0 bytes)"),
    FileCase("truncated BMP", _write("i_truncated.bmp", _truncated), "truncated BMP"),
    FileCase("folder named x.bmp", _special("j_folder.bmp", lambda p: p.mkdir()), "is a directory"),
    FileCase("16-bit PNG", _image("k_16bit.png", _sixteen_bit), "16-bit frame"),
    FileCase(
        "wrong size",
        _image("l_wrong_size.bmp", lambda _t: np.zeros((600, 800), np.uint8)),
        "expected 612x512",
    ),
    FileCase(
        "text file renamed .bmp",
        _write("m_text.bmp", b"camera log line, not a frame\n" * 20),
        "not a BMP file",
    ),
    FileCase(
        "text file renamed .png",
        _write("n_text.png", b"another log line, not a frame\n" * 20),
        "cannot be decoded",
    ),
    FileCase("FIFO named x.bmp", _special("o_fifo.bmp", lambda p: os.mkfifo(p)), "is a FIFO"),
    FileCase("looping symlink", _special("p_loop.bmp", lambda p: p.symlink_to(p.name)), "symlink loop"),
    FileCase(
        "dangling symlink", _special("r_dangling.bmp", lambda p: p.symlink_to("gone.bmp")), "dangling symlink"
    ),
    FileCase(
        "40000x40000 BMP header",
        _write("s_huge.bmp", _bmp_header(40000, 40000)),
        "image header says 40000x40000, larger than",
    ),
    FileCase(
        "40000x40000 PNG header",
        _write("t_huge.png", _png_header(40000, 40000)),
        "image header says 40000x40000, larger than",
    ),
    FileCase("BMP header with no pixels", _write("u_empty_header.bmp", _bmp_header(0, 512)), "no pixels"),
    FileCase(
        "blank frame (no ring)", _image("v_blank.bmp", lambda _t: np.full((512, 612), 18, np.uint8)), "ring"
    ),
    FileCase(
        "ring cut by the frame edge", _image("w_edge.bmp", lambda _t: _ring(SIZE, (60, 256), 200)), "ring"
    ),
]
assert len({c.name for c in FILE_CASES}) == len(FILE_CASES)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg_database: str | None
) -> Iterator[str]:
    """One database per backend for this module (the batch is shared by all file cases)."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path_factory.mktemp('catalogue db') / 'inspections.db').as_posix()}"
        return
    if pg_database is None:
        pytest.skip("PostgreSQL tests need a server: set ORINGSCAN_TEST_PG_URL (.ci/run starts one)")
    schema = f"c_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_database, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield (
            make_url(pg_database)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@dataclass
class BatchRun:
    url: str
    folder: Path
    inputs: dict[str, Path]
    json: list[dict[str, Any]]
    records: list[Any]
    output: str
    rerun_output: str
    records_after_rerun: int


@pytest.fixture(scope="module")
def batch(tiny_models: TinyModels, backend_url: str, tmp_path_factory: pytest.TempPathFactory) -> BatchRun:
    root = tmp_path_factory.mktemp("catalogue")
    folder = root / "line 3 frames"
    folder.mkdir()
    inputs = {case.name: case.build(tiny_models, folder) for case in FILE_CASES}
    out = _copy_models(tiny_models, root / "out")
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        tiny_models.model,
        str(folder),
        "--db",
        backend_url,
        "--json",
        "--no-progress",
        "--no-save-vis",
    ]
    first = run_cli(*args)
    assert first.exit_code in (0, 3), first.output  # 3: some inputs were errors (they are, on purpose)
    records = _frames_in(backend_url)
    rerun = run_cli(*args)  # nothing new: every file is known, the FIFO and the links included
    return BatchRun(
        backend_url,
        folder,
        inputs,
        json.loads(first.stdout),
        records,
        first.output,
        rerun.output,
        len(_frames_in(backend_url)),
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.name)
def test_file_case(case: FileCase, batch: BatchRun) -> None:
    name = path_text(batch.inputs[case.name].absolute())
    records = [r for r in batch.records if r.image == name]
    answers = [r for r in batch.json if r["image"] == name]
    if case.expect == "skipped":  # identical content: one record, of the first file with it
        assert records == [] and answers == []
        assert "skipped" in batch.output
        return
    assert len(records) == 1, f"{name}: {len(records)} records"
    assert len(answers) == 1
    record = records[0]
    if case.expect == "inspected":
        assert record.verdict != "error", record.reasons
        assert record.screen_score is not None  # it really went through the models
    else:
        assert record.verdict == "error"
        assert case.expect in (record.error or ""), record.error
        assert "\n" not in record.error and "Traceback" not in record.error
        assert answers[0]["error"] == record.error


@pytest.mark.slow
def test_the_batch_records_every_file_once_and_a_rerun_adds_nothing(batch: BatchRun) -> None:
    expected = sum(1 for c in FILE_CASES if c.expect != "skipped")
    assert len(batch.records) == expected
    assert batch.records_after_rerun == expected  # the FIFO, the loop, the folder: no second error record
    assert len({r.image for r in batch.records}) == expected
    assert "Traceback" not in batch.output + batch.rerun_output


@pytest.mark.slow
def test_non_utf8_name_is_stored_safely(batch: BatchRun) -> None:
    name = path_text(batch.inputs["file name not valid UTF-8"].absolute())
    assert name.endswith("cam\\xff\\xfe frame.bmp")
    assert any(r["image"] == name for r in batch.json)
    json.dumps(batch.json, ensure_ascii=False).encode("utf-8")  # printable and storable


@pytest.mark.slow
def test_reinspect_keeps_one_current_record(tiny_models: TinyModels, tmp_path: Path) -> None:
    folder = tmp_path / "again"
    folder.mkdir()
    write_frame(folder / "a_good.bmp", _distinct(_frames(tiny_models, "model1good")[0], 80))
    os.mkfifo(folder / "fifo.bmp")
    url = f"sqlite:///{(tmp_path / 'i.db').as_posix()}"
    out = _copy_models(tiny_models, tmp_path / "out")
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        tiny_models.model,
        str(folder),
        "--db",
        url,
        "--no-progress",
        "--no-save-vis",
    ]
    run_cli(*args)
    run_cli(*args, "--reinspect")
    store = InspectionStore(url)
    try:
        with store.read_session() as s:
            rows = s.execute(select(Frame.path, Frame.superseded_at)).all()
        assert len(rows) == 4
        current = [p for p, superseded in rows if superseded is None]
        assert sorted(Path(p).name for p in current) == ["a_good.bmp", "fifo.bmp"]
    finally:
        store.dispose()


# -- command cases: one command each ----------------------------------------------------------------


@dataclass(frozen=True)
class CommandCase:
    """A broken setup or input; ``prepare`` returns extra CLI args (or replaces the path list)."""

    name: str
    prepare: Callable[
        [TinyModels, Path, Path], list[str]
    ]  # (tiny_models, output root, work dir) -> paths/args
    expect: str  # substring of the one Error: line


def _good_folder(tiny_models: TinyModels, work: Path) -> Path:
    folder = work / "frames"
    if not folder.exists():
        folder.mkdir()
        write_frame(folder / "one.bmp", _distinct(_frames(tiny_models, "model1good")[7], 7))
    return folder


def _break(relative: str, data: bytes | None) -> Callable[[TinyModels, Path, Path], list[str]]:
    def prepare(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
        target = out / tiny_models.model / relative
        if data is None:
            target.unlink()
        else:
            target.write_bytes(data)
        return [str(_good_folder(tiny_models, work))]

    return prepare


def _edit_json(
    relative: str, change: Callable[[dict[str, Any]], None]
) -> Callable[[TinyModels, Path, Path], list[str]]:
    def prepare(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
        target = out / tiny_models.model / relative
        data = json.loads(target.read_text(encoding="utf-8"))
        change(data)
        target.write_text(json.dumps(data), encoding="utf-8")
        return [str(_good_folder(tiny_models, work))]

    return prepare


def _malicious_checkpoint(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    import pickle

    marker = work / MARKER

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch '{marker}'",))

    with open(out / tiny_models.model / "checkpoints" / "best_model.pth", "wb") as fh:
        pickle.dump({"model": Exploit()}, fh)
    return [str(_good_folder(tiny_models, work))]


def _torch_pickle_checkpoint(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    import torch

    marker = work / MARKER

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch '{marker}'",))

    torch.save({"model": Exploit()}, out / tiny_models.model / "checkpoints" / "best_model.pth")
    return [str(_good_folder(tiny_models, work))]


def _paths(*names: str) -> Callable[[TinyModels, Path, Path], list[str]]:
    def prepare(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
        return [str(work / n) if not n.startswith("--") else n for n in names]

    return prepare


def _empty_folder(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    (work / "empty").mkdir()
    return [str(work / "empty")]


def _rules(text_: str) -> Callable[[TinyModels, Path, Path], list[str]]:
    return _break("rework_rules.toml", text_.encode())


def _corrupt_db(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    bad = work / "inspections.db"
    bad.write_bytes(b"SQLite format 2\x00" + os.urandom(4096))
    return [str(_good_folder(tiny_models, work)), "--db", f"sqlite:///{bad.as_posix()}"]


def _bad_url(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    return [str(_good_folder(tiny_models, work)), "--db", "not a url ://"]


def _unknown_model(tiny_models: TinyModels, out: Path, work: Path) -> list[str]:
    return [str(_good_folder(tiny_models, work)), "--model", "model9"]


COMMAND_CASES = [
    CommandCase("mistyped folder", _paths("fram3s"), "no such file or folder"),
    CommandCase("two mistyped paths", _paths("fram3s", "line 4/x.bmp"), "no such files or folders"),
    CommandCase("glob matching nothing", _paths("*.tif"), "no frames found"),
    CommandCase("empty folder", _empty_folder, "no frames found"),
    CommandCase("screening bank missing", _break("screening/memory_bank.safetensors", None), "memory_bank"),
    CommandCase(
        "screening bank truncated",
        _break("screening/memory_bank.safetensors", b"\x08\x00\x00\x00"),
        "memory_bank",
    ),
    CommandCase(
        "screening metadata not JSON", _break("screening/metadata.json", b"{not json"), "metadata.json"
    ),
    CommandCase(
        "screening metadata of another type",
        _edit_json("screening/metadata.json", lambda d: d.update(oring_type="model2")),
        "metadata.json",
    ),
    CommandCase(
        "segmentation checkpoint missing", _break("checkpoints/best_model.pth", None), "best_model.pth"
    ),
    CommandCase(
        "segmentation checkpoint garbage",
        _break("checkpoints/best_model.pth", b"\x00garbage" * 100),
        "best_model.pth",
    ),
    CommandCase("malicious pickle in the checkpoint", _malicious_checkpoint, "best_model.pth"),
    CommandCase("malicious torch.save checkpoint", _torch_pickle_checkpoint, "best_model.pth"),
    CommandCase("rules file missing", _break("rework_rules.toml", None), "rework_rules.toml"),
    CommandCase("rules file empty", _rules(""), "no [[rule]]"),
    CommandCase("rules file with only [meta]", _rules('[meta]\nmodel = "model1"\n'), "no [[rule]]"),
    CommandCase("rules file not TOML", _rules("[[rule]\nmetric = "), "not valid TOML"),
    CommandCase(
        "rules lower above upper",
        _rules('[[rule]]\nmetric = "outer_radius"\nlower = 700.0\nupper = 600.0\n'),
        "above upper",
    ),
    CommandCase(
        "rules unknown metric", _rules('[[rule]]\nmetric = "bore_colour"\nupper = 1.0\n'), "unknown metric"
    ),
    CommandCase(
        "rules limit not finite", _rules('[[rule]]\nmetric = "outer_radius"\nupper = nan\n'), "finite"
    ),
    CommandCase("database file damaged", _corrupt_db, "not a SQLite database, or a damaged one"),
    CommandCase("database URL not a URL", _bad_url, "not a database URL"),
    CommandCase("unknown o-ring type", _unknown_model, "model9"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda c: c.name)
def test_command_case(case: CommandCase, tiny_models: TinyModels, tmp_path: Path, db_url: str) -> None:
    out = _copy_models(tiny_models, tmp_path / "out")
    work = tmp_path / "work"
    work.mkdir()
    extra = case.prepare(tiny_models, out, work)
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--no-progress",
        "--no-save-vis",
    ]
    if "--model" not in extra:
        args += ["--model", tiny_models.model]
    if "--db" not in extra:
        args += ["--db", db_url]
    line = one_error_line(run_cli(*args, *extra))
    assert case.expect in line, line
    assert not (work / MARKER).exists(), "a pickle in a model file ran code"
    if "--db" not in extra and db_url.startswith("sqlite:///") and not Path(db_url[10:]).exists():
        return  # stopped before the database was opened: nothing recorded anywhere
    if "--db" not in extra:
        assert _frames_in(db_url) == []  # no record of anything


@pytest.mark.slow
def test_rework_switched_off_on_purpose_inspects(tiny_models: TinyModels, tmp_path: Path) -> None:
    out = _copy_models(tiny_models, tmp_path / "out")
    (out / tiny_models.model / "rework_rules.toml").write_text(
        "[settings]\nrework_disabled = true\n", encoding="utf-8"
    )
    url = f"sqlite:///{(tmp_path / 'i.db').as_posix()}"
    result = run_cli(
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        tiny_models.model,
        str(_good_folder(tiny_models, tmp_path)),
        "--db",
        url,
        "--no-progress",
        "--no-save-vis",
    )
    assert result.exit_code == 0, result.output
    assert [r.verdict != "error" for r in _frames_in(url)] == [True]


@pytest.mark.slow
def test_a_missing_path_beside_real_frames(tiny_models: TinyModels, tmp_path: Path, db_url: str) -> None:
    """The real frames are recorded; the typo is named and recorded nowhere, and the batch API says so."""
    from oringscan.pipeline.batch import inspect_paths
    from oringscan.pipeline.inspector import Inspector

    out = _copy_models(tiny_models, tmp_path / "out")
    folder = _good_folder(tiny_models, tmp_path)
    inspector = Inspector.load(tiny_models.config, out, tiny_models.model)
    store = InspectionStore(db_url)
    try:
        summary = inspect_paths(
            inspector,
            [folder, tmp_path / "fram3s"],
            store,
            output_root=out,
            progress=False,
            save_overlays=False,
        )
        assert summary.missing_inputs == [str(tmp_path / "fram3s")] and summary.n_errors == 1
        assert len(summary.results) == 1 and len(store.frames(limit=None).items) == 1
        assert store.runs()[0].status == "done"
    finally:
        store.dispose()


# -- processes: liveness, SIGTERM, two batches at once, the watcher ---------------------------------


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "ORINGSCAN_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }


def test_a_run_whose_process_died_is_shown_interrupted(tmp_path: Path, db_url: str) -> None:
    store = InspectionStore(db_url)
    run_id = store.start_run(oring_type="model1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.write_session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(pid=dead.pid))
    store.dispose()
    result = run_cli("db", "runs", "--db", db_url, "--json")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json.loads(result.stdout)] == ["interrupted"]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_closes_the_run_as_interrupted(tiny_models: TinyModels, tmp_path: Path, db_url: str) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, src in enumerate(_frames(tiny_models, "model1good")[:6]):
        write_frame(folder / f"{i:02d}.bmp", _distinct(src, 20 + i))
    out = _copy_models(tiny_models, tmp_path / "out")
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        tiny_models.model,
        str(folder),
        "--db",
        db_url,
        "--no-progress",
        "--no-save-vis",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "oringscan.cli.main", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                if _frames_in(db_url):
                    break
            except Exception:  # noqa: BLE001 - the database is being created
                continue
        assert proc.poll() is None, "the batch ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"Traceback" not in err, err.decode()[-2000:]
    store = InspectionStore(db_url)
    try:
        runs = store.runs()
        assert [r.status for r in runs] == ["interrupted"]
        assert runs[0].n_frames == len(store.frames(limit=None).items) < 6
    finally:
        store.dispose()


@pytest.mark.slow
def test_two_inspect_processes_on_the_same_frames_record_each_once(
    tiny_models: TinyModels, tmp_path: Path, db_url: str
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, src in enumerate(_frames(tiny_models, "model1good")[:3]):
        write_frame(folder / f"{i:02d}.bmp", _distinct(src, 40 + i))
    out = _copy_models(tiny_models, tmp_path / "out")
    InspectionStore(db_url).dispose()  # created and migrated once, before the race
    args = [
        "inspect",
        "--config",
        str(tiny_models.config_path),
        "--output",
        str(out),
        "--model",
        tiny_models.model,
        str(folder),
        "--db",
        db_url,
        "--no-progress",
        "--no-save-vis",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "oringscan.cli.main", *args],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=300)[1].decode() for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    records = _frames_in(db_url)
    assert sorted(Path(r.image).name for r in records) == ["00.bmp", "01.bmp", "02.bmp"]


@pytest.mark.slow
def test_the_watcher_records_a_non_utf8_name_and_keeps_watching(
    tiny_models: TinyModels, tmp_path: Path
) -> None:
    from oringscan.pipeline.batch import FrameRecorder, start_run
    from oringscan.pipeline.inspector import Inspector
    from oringscan.pipeline.watch import watch_folder

    out = _copy_models(tiny_models, tmp_path / "out")
    folder = tmp_path / "camera"
    folder.mkdir()
    _non_utf8(tiny_models, folder)
    os.mkfifo(folder / "fifo.bmp")
    store = InspectionStore(f"sqlite:///{(tmp_path / 'i.db').as_posix()}")
    inspector = Inspector.load(tiny_models.config, out, tiny_models.model)
    run_id = start_run(store, inspector, kind="watch")
    recorder = FrameRecorder(inspector, store, run_id, save_overlays=False)
    stop = threading.Event()
    seen: list[str] = []

    def on_result(result: Any) -> None:
        seen.append(result.image)
        if len(seen) == 1:  # a second frame arrives after the first one was taken
            write_frame(folder / "later.bmp", _distinct(_frames(tiny_models, "model1good")[6], 60))
        if len(seen) == 2:
            stop.set()

    timer = threading.Timer(120, stop.set)
    timer.start()
    try:
        summary = watch_folder(
            recorder, folder, poll_s=0.05, stable_polls=1, give_up_s=0.0, stop=stop, on_result=on_result
        )
    finally:
        timer.cancel()
    names = sorted(Path(r.image).name for r in summary.results)
    assert names == ["cam\\xff\\xfe frame.bmp", "later.bmp"], names
    assert summary.results[0].verdict != "error"  # the FIFO beside it was never opened (it would block)
    store.dispose()


def test_the_catalogue_is_big_enough() -> None:
    cases = len(FILE_CASES) + len(COMMAND_CASES) + 10  # + the process / rerun / API cases above
    assert cases >= 40, cases


def test_a_rules_file_turns_rework_off_only_when_it_says_so(tmp_path: Path) -> None:
    from oringscan.rework_rules.rules import RulesFileError, dump_rules, load_rules

    path = tmp_path / "rework_rules.toml"
    for text_ in ("", "# all rules deleted\n", '[meta]\nmodel = "model1"\n'):
        path.write_text(text_, encoding="utf-8")
        with pytest.raises(RulesFileError, match="no \\[\\[rule\\]\\] in the rules file"):
            load_rules(path)
    path.write_text("[settings]\nrework_disabled = true\n", encoding="utf-8")
    off = load_rules(path)
    assert off.rule == [] and off.settings.rework_disabled
    path.write_text(dump_rules(off), encoding="utf-8")  # written back, it still says so
    assert load_rules(path).settings.rework_disabled
    path.write_text(
        '[settings]\nrework_disabled = true\n[[rule]]\nmetric = "outer_radius"\nupper = 700.0\n',
        encoding="utf-8",
    )
    with pytest.raises(RulesFileError, match="remove one or the other"):
        load_rules(path)
