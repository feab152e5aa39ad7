"""Readers: turn a document's bytes (HTML, text, PDF, Word) into normalised plain text.

Every failure a user's file can cause becomes an ``InputError`` with a one-line reason.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zipfile

from selectolax.lexbor import LexborHTMLParser as HTMLParser


class InputError(Exception):
    """This input cannot be read; the message is the reason, for a `path: reason` line."""


FORMATS = ("html", "text", "pdf", "docx")

# Bullet glyphs councils' pages use (middle dot from Word, Symbol-font bullets, dashes as bullets).
_BULLETS = "·•▪◦‣●○■□➢➤►–\uf0b7\uf0a7\uf076\uf0d8"
_BULLET_LINE = re.compile(rf"^\s*[{re.escape(_BULLETS)}]\s*")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\ufeff\u00ad]")


def detect_format(name: str, data: bytes) -> str:
    """By content first (a misnamed file still reads), then by extension."""
    head = data[:1024].lstrip()
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        if name.lower().endswith(".docx") or b"word/" in data[:4096] or _zip_has_word(data):
            return "docx"
        raise InputError("a zip archive, not minutes (expected .html, .txt, .pdf or .docx)")
    lower = name.lower()
    if lower.endswith((".pdf",)):
        raise InputError("not a PDF (no %PDF- header): truncated or mislabelled")
    if lower.endswith(".docx"):
        raise InputError("not a Word .docx file (no zip header): truncated or mislabelled")
    if lower.endswith((".html", ".htm", ".aspx")) or head[:15].lower().startswith(
        (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body", b"<div", b"<meta")
    ):
        return "html"
    return "text"


def _zip_has_word(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return "word/document.xml" in z.namelist()
    except zipfile.BadZipFile:
        return False


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252 (what most council exports are), else
    Latin-1, which never fails. Text with NUL bytes or mostly control characters is binary."""
    if b"\x00" in data[:65536]:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            try:
                return _check_text(data.decode("utf-16"))
            except UnicodeDecodeError as exc:
                raise InputError(f"truncated or damaged UTF-16 text ({exc.reason})") from None
        raise InputError("binary file, not text (contains NUL bytes)")
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return _check_text(data.decode(encoding))
        except UnicodeDecodeError:
            continue
    raise InputError("cannot decode text")  # unreachable: latin-1 decodes anything


def _check_text(text: str) -> str:
    sample = text[:20000]
    if sample:
        control = sum(1 for ch in sample if unicodedata.category(ch) == "Cc" and ch not in "\r\n\t\f")
        if control / len(sample) > 0.05:
            raise InputError("binary file, not text (too many control characters)")
    return text


def normalise(text: str) -> str:
    """Non-breaking and odd spaces to plain spaces, bullet glyphs to '• ', tidy blank lines.
    Words are never changed."""
    text = _ZERO_WIDTH.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = []
    for raw in text.split("\n"):
        line = _SPACES.sub(" ", raw).strip()
        if _BULLET_LINE.match(line) and not re.match(r"^–\s*\d", line):
            line = "• " + _BULLET_LINE.sub("", line)
            if line == "• ":
                continue
        lines.append(line)
    out = "\n".join(lines)
    out = re.sub(r"\n{3,}", "\n\n", out)
    return out.strip()


# Block-level tags: each starts a new line in the extracted text.
_BLOCK_TAGS = (
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
    "section", "article", "header", "footer", "dd", "dt", "blockquote", "td", "th",
)
_DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg",
              "form", "nav", "button", "select", "input", "head")
# ModernGov wraps the page body in one of these; the rest is the council's site chrome.
_CONTENT_SELECTORS = ("#modgov", ".mgContent", "#mgContent", "main", "#content", "body")


def html_to_text(html: str) -> str:
    tree = HTMLParser(html)
    for tag in _DROP_TAGS:
        for node in tree.css(tag):
            node.decompose()
    root = None
    for selector in _CONTENT_SELECTORS:
        root = tree.css_first(selector)
        if root is not None and root.text(strip=True):
            break
    if root is None:
        root = tree.root
    if root is None:
        return ""
    # Mark block boundaries so the flat text keeps the page's line structure.
    for tag in _BLOCK_TAGS:
        for node in root.css(tag):
            if tag in ("li",):
                node.insert_before("\n• ")
            elif tag in ("td", "th"):
                node.insert_after(" ")
            else:
                node.insert_before("\n")
                node.insert_after("\n")
    return root.text(separator="", strip=False)


def html_title(html: str) -> str | None:
    node = HTMLParser(html).css_first("title")
    return node.text(strip=True) if node else None


def pdf_to_text(data: bytes) -> str:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PdfStreamError

    # pypdf logs its repairs ("EOF marker not found"); the user gets our one line instead.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise InputError("encrypted PDF: cannot read its text")
        pages = [page.extract_text() or "" for page in reader.pages]
    except InputError:
        raise
    except (PdfReadError, PdfStreamError, ValueError, KeyError, OSError, TypeError) as exc:
        raise InputError(f"truncated or damaged PDF ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # pypdf raises many types on broken files; all mean the same here
        raise InputError(f"damaged PDF ({type(exc).__name__}: {exc})") from None
    return "\n\n".join(reflow(page) for page in pages)


_HEADING_OR_BULLET = re.compile(r"^(?:\d{1,3}\.?\s+[A-Z(]|[•·▪\-–]\s|\(?[a-z]\)\s|\(?[ivx]+\)\s|[A-Z][A-Z ]{3,}$)")


def reflow(page: str) -> str:
    """PDF text breaks lines where the page did: join a line to the one before it unless that
    one ended a sentence or this one starts a heading or a bullet."""
    out: list[str] = []
    for line in page.split("\n"):
        stripped = line.strip()
        if (stripped and out and out[-1].strip() and not out[-1].rstrip().endswith((".", ":", ";", "?", "!"))
                and not _HEADING_OR_BULLET.match(stripped) and not _HEADING_OR_BULLET.match(out[-1].strip())):
            out[-1] = out[-1].rstrip() + " " + stripped
        else:
            out.append(line)
    return "\n".join(out)


def docx_to_text(data: bytes) -> str:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InputError(f"truncated or damaged Word file ({exc})") from None
    lines = []
    for para in document.paragraphs:
        style = (para.style.name or "").lower() if para.style is not None else ""
        prefix = "• " if "list" in style else ""
        lines.append(prefix + para.text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" ".join(cell.text for cell in row.cells))
    return "\n\n".join(lines)


def read_document(name: str, data: bytes) -> tuple[str, str, str | None]:
    """Bytes to (format, normalised text, page title if any)."""
    if not data.strip():
        raise InputError("empty file")
    fmt = detect_format(name, data)
    page_title = None
    if fmt == "pdf":
        text = pdf_to_text(data)
    elif fmt == "docx":
        text = docx_to_text(data)
    elif fmt == "html":
        html = decode_text(data)
        page_title = html_title(html)
        text = html_to_text(html)
    else:
        text = decode_text(data)
    text = normalise(text)
    if not text:
        raise InputError(f"no text found in this {fmt} document")
    return fmt, text, page_title
