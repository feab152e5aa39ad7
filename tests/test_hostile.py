"""Issue 15 (parts 1, 2 and 7): bad input never stalls or crashes an ingest run.

Every hostile file here is made by the test, in tmp_path: each must cost its own one
`path: reason` line and nothing else, the good files beside them are stored, and the whole
folder finishes in seconds."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import ingest, store
from pipeline.cli import app
from pipeline.ingest import InputError, Limits, ingest_paths, parse_bytes, parse_document

from .conftest import SAMPLES

runner = CliRunner()
IN_PROCESS = Limits(parse_budget_s=0)
GOOD_HTML = "westhaven-decision-commissioner.html"
GOOD_TEXT = "eastfield-early-help.txt"
MINUTES_TEXT = ("Agenda item\n\nSchool Places Review\n\nMinutes:\n\nThe committee noted the report on "
                "school places and agreed to consult on two new primary schools.\n")


def pdf_with_text(lines: list[str], pages: int = 1) -> bytes:
    """A small valid PDF, written by hand: every page shows the same lines in Helvetica."""
    content = "BT /F1 11 Tf 50 750 Td 14 TL " + " ".join(f"({line}) '" for line in lines) + " ET"
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
    ] + ["<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
         "/Contents 4 0 R >>"] * pages
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def docx_bytes(paragraphs: list[str]) -> bytes:
    import docx

    document = docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def with_member(data: bytes, name: str, size: int) -> bytes:
    """The zip again with one more member of `size` zero bytes, written in 16 MiB chunks."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            chunk = bytes(16 * 1048576)
            for _ in range(size // len(chunk)):
                member.write(chunk)
    return buffer.getvalue()


def flip_a_byte_of(data: bytes, member_name: str) -> bytes:
    """One byte of a member's compressed data changed, in the middle of it."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member_name)
    header = data[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    middle = start + info.compress_size // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]


MINUTES_DOCX = ["Children's Select Committee - 5th February 2025", "12. Youth Service Review",
                "The committee noted the youth service review and agreed the new outreach model."]


def hostile_folder(root: Path) -> tuple[Path, dict[str, str], list[str]]:
    """The folder, {file name: a word its reason must contain}, and the good files' names."""
    folder = root / "in"
    folder.mkdir()
    bad: dict[str, str] = {}

    def write(name: str | bytes, data: bytes, reason: str | None = None) -> None:
        path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
        with open(path, "wb") as handle:
            handle.write(data)
        if reason is not None:
            bad[os.fsdecode(name)] = reason

    rng = random.Random(15)
    write("empty.txt", b"", "empty file")
    write("nul.txt", b"\x00" * 4096, "binary")
    write("random.pdf", rng.randbytes(20000), "not a PDF")
    pdf = pdf_with_text(["Cabinet - 14th November 2024"] + [f"{i}. Item {i} was noted" for i in range(1, 200)])
    write("truncated.pdf", pdf[: len(pdf) // 2], "PDF")
    write("pages.pdf", pdf_with_text(["Page"], pages=501), "(limit 500)")
    write("notzip.docx", b"These are not the minutes you are looking for.", "not a Word")
    good_docx = docx_bytes(MINUTES_DOCX)
    write("flipped.docx", flip_a_byte_of(good_docx, "word/document.xml"), "damaged Word file")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b" " * (120 * 1048576))
    write("bomb.docx", bomb.getvalue(), "(limit 100 MB)")
    parts = io.BytesIO()
    with zipfile.ZipFile(parts, "w") as archive:
        for i in range(2500):
            archive.writestr(f"word/part{i}.xml", "")
    write("parts.docx", parts.getvalue(), "(limit 2000)")
    write("utf16cut.txt", MINUTES_TEXT.encode("utf-16")[:-1], "UTF-16")
    with open(folder / "huge.txt", "wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # sparse: 60 MB without writing them
    bad["huge.txt"] = "too large"
    write("longline.txt", b"word " * (16 * 1048576 // 5), "longer than")
    write("longitem.txt", ("Agenda item\n\nLong\n\n" + "The committee noted it.\n" * 12000).encode(), "item 1 longer than")
    write("unclosed.html", b"<html><body>" + b"<div>x" * 50000, "nested too deep")
    attributes = " ".join(f"a{i}=1" for i in range(200000))
    write("attributes.html", f"<html><body><div {attributes}>x</div></body></html>".encode(), "attributes")
    write("nested.html", b"<html><body>" + b"<div>" * 200000 + b"x" + b"</div>" * 200000, "nested too deep")
    os.symlink(".", folder / "cycle")  # a folder link back to itself: read once, no line
    os.symlink("self.txt", folder / "self.txt")
    bad["self.txt"] = "link loop"
    os.symlink("nowhere.txt", folder / "gone.txt")
    bad["gone.txt"] = "broken link"
    os.mkfifo(folder / "pipe.txt")  # reading it would wait forever
    bad["pipe.txt"] = "not a regular file"
    os.symlink("/dev/zero", folder / "zero.txt")  # a link to a device: endless bytes
    bad["zero.txt"] = "not a regular file"
    write("new\nline.txt", b"", "empty file")
    write("spaces in name.txt", b"", "empty file")
    write("café – minutes.txt", bytes(range(32)) * 100, "binary")
    write("-leading-dash.txt", b"\x00\x01", "binary")
    write(b"not-utf8-\xff.txt", b"", "empty file")
    write("\x1b[31mred.txt", b"", "empty file")

    # The good ones: two samples, a page of scripts, a UTF-16 export, and a Word file with a
    # 600 MiB picture that must never be read.
    shutil.copy(SAMPLES / GOOD_HTML, folder / GOOD_HTML)
    shutil.copy(SAMPLES / GOOD_TEXT, folder / GOOD_TEXT)
    write("scripts.html", (
        "<html><head><title><script>alert('title')</script> Cabinet</title>"
        "<script>window.evil = 1</script></head><body><main>"
        "<h2>Agenda item</h2><h2>Budget <img src=x onerror=\"alert('img')\"></h2>"
        "<p>The Cabinet noted the &lt;script&gt; tag in the council's old web form and agreed the "
        "budget monitoring report.</p><script>document.write('injected')</script>"
        "<iframe src='https://example.invalid'>framed text</iframe></main></body></html>").encode())
    write("utf16.txt", MINUTES_TEXT.encode("utf-16"))
    write("media.docx", with_member(good_docx, "word/media/image1.png", 600 * 1048576))
    return folder, bad, [GOOD_HTML, GOOD_TEXT, "scripts.html", "utf16.txt", "media.docx"]


ESCAPES = {"\n": "\\n", "\x1b": "\\x1b", "\udcff": "\\xff"}


def printed(name: str) -> str:
    """How a file name appears in its error line: control characters and undecodable bytes as
    escapes, so a name can never split or forge a line."""
    return "".join(ESCAPES.get(ch, ch) for ch in name)


def run_ingest(env, *args, timeout=120):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "ingest", *map(str, args)], env=env,
                            capture_output=True, text=True, errors="backslashreplace", timeout=timeout)
    return result, time.monotonic() - started


def test_a_hostile_folder_costs_each_bad_file_one_line_and_stores_the_good(tmp_path, env):
    folder, bad, good = hostile_folder(tmp_path)
    result, seconds = run_ingest(env, folder)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    lines = result.stderr.splitlines()
    for name, reason in bad.items():
        prefix = f"{folder}/{printed(name)}: "
        mine = [line for line in lines if line.startswith(prefix)]
        assert len(mine) == 1, (name, lines)
        assert reason in mine[0], mine[0]
    summary = [line for line in lines if line.startswith("ingested ")]
    assert len(lines) == len(bad) + 1 and len(summary) == 1, lines
    assert f"{len(good)} new" in summary[0] and f"{len(bad)} failed" in summary[0], summary
    assert seconds < 60, seconds
    print(f"\n{len(bad)} bad and {len(good)} good files in {seconds:.1f} s:\n" + result.stderr)

    db = store.connect(env["MINUTES_DB"])
    items = store.items(db)
    assert sorted({Path(i["source"]).name for i in items}) == sorted(good)
    scripts = next(i for i in items if i["source"].endswith("scripts.html"))
    assert "Budget" in scripts["title"] and "<script> tag" in scripts["text"]
    for word in ("evil", "injected", "alert", "onerror", "framed text"):
        assert word not in scripts["text"]
    assert any("Youth Service Review" in i["text"] for i in items if i["source"].endswith("media.docx"))
    counts = [db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("documents", "items")]
    db.close()

    # Twice: nothing stored twice, the same lines again.
    again, _ = run_ingest(env, folder)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"0 new and 0 changed documents (0 items), {len(good)} unchanged" in again.stderr
    db = store.connect(env["MINUTES_DB"])
    assert [db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("documents", "items")] == counts


def test_a_parse_over_its_budget_is_stopped_and_the_next_file_still_read(tmp_path, env):
    folder = tmp_path / "in"
    folder.mkdir()
    # Legal, under max_file_mb, and seconds of work: 19 MB of short lines in one item.
    line = ("Members discussed the placement costs and asked officers for a further report " * 2)[:150] + "\n"
    (folder / "a-slow.txt").write_text(line * (19 * 1048576 // len(line)))
    shutil.copy(SAMPLES / GOOD_TEXT, folder / f"b-{GOOD_TEXT}")
    shutil.copy(SAMPLES / GOOD_HTML, folder / f"c-{GOOD_HTML}")
    result, seconds = run_ingest({**env, "MINUTES_PARSE_BUDGET_S": "1"}, folder)
    assert result.returncode == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if "a-slow.txt" in line] == [
        f"{folder / 'a-slow.txt'}: parse took longer than its budget (limit 1 s)"]
    assert "2 new" in result.stderr and "1 failed" in result.stderr
    assert seconds < 30


def test_a_parser_that_dies_is_one_line_and_the_next_document_is_read():
    data = MINUTES_TEXT.encode()
    parse_document("first.txt", data)  # starts the worker
    ingest._PARSER._process.kill()
    with pytest.raises(InputError, match=r"the parser stopped unexpectedly \(killed by SIGKILL\)"):
        parse_document("second.txt", data)
    assert parse_document("third.txt", data)[0] == "text"


def test_an_unexpected_error_in_a_reader_is_that_files_line_and_the_run_goes_on(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text(MINUTES_TEXT)
    (tmp_path / "b.txt").write_text(MINUTES_TEXT.replace("School Places", "Youth Service"))
    real_split = ingest.split_document

    def split_with_a_bug(text, page_title=None):
        if "School Places" in text:
            raise ValueError("a reader's bug\nover two lines")
        return real_split(text, page_title)

    # Parsed in this process (budget 0), where the patched splitter is the one that runs.
    monkeypatch.setattr(ingest, "split_document", split_with_a_bug)
    report = ingest_paths(store.connect(tmp_path / "m.db"), [tmp_path], limits=IN_PROCESS)
    assert report.failed == [{"path": str(tmp_path / "a.txt"),
                              "error": "unexpected error (ValueError: a reader's bug over two lines)"}]
    assert report.documents_new == 1


def test_word_files_are_checked_before_they_are_unzipped_and_pictures_never_read():
    good = docx_bytes(MINUTES_DOCX)
    tracemalloc.start()
    fmt, parsed = parse_bytes("media.docx", with_member(good, "word/media/big.bin", 200 * 1048576), IN_PROCESS)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert fmt == "docx" and parsed["items"]
    assert peak < 60 * 1048576, peak  # the 200 MiB picture was not read (the zip itself is ~1 MB)
    with pytest.raises(InputError, match=r"^Word file has 17 parts \(limit 10\)$"):
        parse_bytes("m.docx", good, Limits(max_docx_members=10, parse_budget_s=0))
    with pytest.raises(InputError, match=r"^Word file's text parts unzip to 0.8 MB \(limit 0.5 MB\)$"):
        parse_bytes("m.docx", good, Limits(max_docx_unzipped_mb=0.5, parse_budget_s=0))
    with pytest.raises(InputError, match=r"^truncated or damaged Word file \((zlib.error|BadZipFile)"):
        parse_bytes("m.docx", flip_a_byte_of(good, "word/document.xml"), IN_PROCESS)


def test_pdf_limits_and_item_length():
    pdf = pdf_with_text(["Cabinet - 14th November 2024", "61. Statutory Direction",
                         "The Cabinet noted the statutory direction and agreed the improvement plan."], pages=3)
    assert parse_bytes("c.pdf", pdf, IN_PROCESS)[0] == "pdf"
    with pytest.raises(InputError, match=r"^PDF has 3 pages \(limit 2\)$"):
        parse_bytes("c.pdf", pdf, Limits(max_pdf_pages=2, parse_budget_s=0))
    with pytest.raises(InputError, match=r"\(limit 100 characters\)$"):
        parse_bytes("c.pdf", pdf, Limits(max_pdf_chars=100, parse_budget_s=0))
    # Every line fits in 110 characters, the item does not.
    with pytest.raises(InputError, match=r"^item 1 longer than limit \(limit 110 characters\)$"):
        parse_bytes("m.txt", MINUTES_TEXT.encode(), Limits(max_item_chars=110, parse_budget_s=0))
    with pytest.raises(InputError, match=r"^line 7 longer than an item may be \(limit 60 characters\)$"):
        parse_bytes("m.txt", MINUTES_TEXT.encode(), Limits(max_item_chars=60, parse_budget_s=0))


def test_html_limits_are_checked_before_the_tree_is_built():
    started = time.perf_counter()
    for html in ("<div>" * 200000, "<span>" * 200000, "<span><div>x</span></div>" * 3000, "<b>" * 50000):
        with pytest.raises(InputError, match=r"^HTML elements nested too deep \(limit 2000\)$"):
            parse_bytes("deep.html", html.encode(), IN_PROCESS)
    with pytest.raises(InputError, match=r"^too many HTML elements \(limit 1000\)$"):
        parse_bytes("wide.html", b"<p>x</p>" * 1001, Limits(max_html_elements=1000, parse_budget_s=0))
    assert time.perf_counter() - started < 5
    # Elements a page leaves open but HTML closes are not depth: 5,000 unclosed <p>s, <li>s,
    # table cells and <option>s, and 3,000 self-closed SVG paths, read.
    page = ("<html><body><h2>Agenda item</h2><h2>Paragraphs</h2>" + "<p>The committee noted it." * 5000
            + "<ul>" + "<li>An item" * 5000 + "</ul><table>" + "<tr><td>a<td>b" * 5000 + "</table>"
            + "<select>" + "<option>x" * 5000 + "</select><svg>" + "<path d='M0 0'/>" * 3000 + "</svg>")
    assert parse_bytes("open.html", page.encode(), Limits(max_item_chars=10**6, parse_budget_s=0))[0] == "html"


def test_folders_that_cannot_be_listed_or_hold_no_minutes_are_named(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("not minutes")
    locked = tmp_path / "minutes" / "locked"
    locked.mkdir(parents=True)
    (tmp_path / "minutes" / "item.txt").write_text(MINUTES_TEXT)
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(ingest.os, "scandir", scandir)
    db = store.connect(tmp_path / "m.db")
    report = ingest_paths(db, [tmp_path / "empty", tmp_path / "minutes"], limits=IN_PROCESS)
    assert report.documents_new == 1
    assert {(Path(f["path"]).name, f["error"]) for f in report.failed} == {
        ("empty", "no minutes files in this folder (looked for .aspx, .docx, .htm, .html, .pdf, .text, .txt)"),
        ("locked", "cannot read folder (Permission denied)"),
    }


def test_an_unreadable_file_on_the_command_line_is_its_line_and_the_rest_are_read(tmp_path, env, monkeypatch):
    # Run as root, permissions do not stop a read: the refusal is made where the file is opened.
    locked, good = tmp_path / "locked.txt", tmp_path / "good.txt"
    locked.write_text(MINUTES_TEXT)
    good.write_text(MINUTES_TEXT.replace("School Places", "Home to School Transport"))
    real_open = open

    def refusing_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(ingest, "open", refusing_open, raising=False)
    result = runner.invoke(app, ["ingest", str(locked), str(good)], env=env)
    assert result.exit_code == 1, result.output
    assert f"{locked}: cannot read (Permission denied)" in result.stderr.splitlines()
    assert [i["title"] for i in store.items(store.connect(env["MINUTES_DB"]))] == ["Home to School Transport Review"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_a_file_without_read_permission(tmp_path, env):
    locked = tmp_path / "locked.txt"
    locked.write_text(MINUTES_TEXT)
    locked.chmod(0)
    result = runner.invoke(app, ["ingest", str(locked), str(SAMPLES / GOOD_TEXT)], env=env)
    assert result.exit_code == 1 and f"{locked}: cannot read (Permission denied)" in result.stderr
