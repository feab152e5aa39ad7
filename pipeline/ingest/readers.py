"""Readers: turn a document's bytes (HTML, text, PDF, Word) into normalised plain text.

Every failure a user's file can cause becomes an ``InputError`` with a one-line reason, and every
reader works within ``Limits``: over one, the reason ends "(limit N)".
"""

from __future__ import annotations

import io
import logging
import re
import unicodedata
import zipfile
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from pipeline.config import Settings


class InputError(Exception):
    """This input cannot be read; the message is the reason, for a `path: reason` line."""


# The defaults live in one place, the Settings; a Limits is the part of them a parser reads.
_DEFAULTS = Settings()


@dataclass(frozen=True)
class Limits:
    """What one document may cost to read (the Settings fields of the same names)."""

    max_file_mb: float = _DEFAULTS.max_file_mb
    max_html_depth: int = _DEFAULTS.max_html_depth
    max_html_elements: int = _DEFAULTS.max_html_elements
    max_pdf_pages: int = _DEFAULTS.max_pdf_pages
    max_pdf_chars: int = _DEFAULTS.max_pdf_chars
    max_docx_unzipped_mb: float = _DEFAULTS.max_docx_unzipped_mb
    max_docx_members: int = _DEFAULTS.max_docx_members
    max_item_chars: int = _DEFAULTS.max_item_chars
    parse_budget_s: float = _DEFAULTS.parse_budget_s


DEFAULT_LIMITS = Limits()


def one_line(text: object) -> str:
    """An exception's message as one line: a reason must never split the `path: reason` line."""
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    """"Type: message" on one line; zlib's and binascii's bare `error` named with its module."""
    kind = type(exc).__name__
    if kind == "error":
        kind = f"{type(exc).__module__}.error"
    detail = one_line(exc)
    return f"{kind}: {detail}" if detail else kind


FORMATS = ("html", "text", "pdf", "docx")

# Bullet glyphs councils' pages use (middle dot from Word, Symbol-font bullets, dashes as bullets).
_BULLETS = "·•▪◦‣●○■□➢➤►–\uf0b7\uf0a7\uf076\uf0d8"
_BULLET_LINE = re.compile(rf"^\s*[{re.escape(_BULLETS)}]\s*")
_OTHER_SPACES = r"\t\x1f\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
# Runs of spaces, and single odd ones: a single plain space is left alone (matching it costs a
# third of the time on a long text and changes nothing).
_SPACES = re.compile(rf"[{_OTHER_SPACES}][ {_OTHER_SPACES}]*| [ {_OTHER_SPACES}]+")
# What else Python counts as a line break: as newlines, no line keeps a run of whitespace (runs
# cost the splitter's patterns time quadratic in their length).
_LINE_BREAKS = re.compile(r"\r\n?|[\v\f\x1c-\x1e\x85\u2028\u2029]")
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
    except Exception:  # any damage: not recognisably Word, which is the answer here
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
    text = _ZERO_WIDTH.sub("", _LINE_BREAKS.sub("\n", text))
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


# Block-level tags: each starts a new line in the extracted text. (before, after) markers; a
# list item starts a bullet line, a table cell ends with a space.
_BLOCK_TAGS = (
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
    "section", "article", "header", "footer", "dd", "dt", "blockquote", "td", "th",
)
_MARKERS = {tag: ("\n", "\n") for tag in _BLOCK_TAGS} | {"li": ("\n• ", None), "td": (None, " "),
                                                        "th": (None, " ")}
_DROP_TAGS = frozenset(("script", "style", "noscript", "template", "iframe", "object", "embed", "svg",
                        "form", "nav", "button", "select", "input", "head"))
# ModernGov wraps the page body in one of these; the rest is the council's site chrome.
_CONTENT_SELECTORS = ("#modgov", ".mgContent", "#mgContent", "main", "#content", "body")
# Lexbor checks each attribute against the element's others, so one element with 200,000 of them
# takes minutes to parse; no page's element has more than a few dozen.
MAX_HTML_ATTRIBUTES = 1000


def html_text_and_title(html: str, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str | None]:
    """A page's text (block elements on lines of their own, scripts and site chrome dropped) and
    its <title>, from one parse."""
    check_html_shape(html, limits)
    tree = HTMLParser(html)
    title = tree.css_first("title")
    return _tree_text(tree, limits), (title.text(strip=True) if title is not None else None)


def _tree_text(tree, limits: Limits) -> str:
    """One walk over the tree, in document order, with an explicit stack (no recursion, no
    per-tag searches of the tree: linear in its size whatever its depth).

    The text is that of the first content element (by _CONTENT_SELECTORS) that has any, with
    <script> and the like left out. The walk writes the whole page's text as a list of pieces and
    notes where each candidate's own text starts and ends; the chosen one's is joined."""
    root = tree.root
    if root is None:
        return ""
    # Which elements match a content selector: lexbor's own matching (class names, quirks mode).
    ranks: dict[int, list[int]] = {}
    for rank, selector in enumerate(_CONTENT_SELECTORS):
        for node in tree.css(selector):
            ranks.setdefault(node.mem_id, []).append(rank)
    pieces: list[str] = []
    nonblank = 0  # text pieces so far with something other than whitespace
    spans: dict[int, list[int]] = {}  # rank -> [first piece, end piece, nonblank at start, at end]
    stack: list[tuple] = []  # open elements: (node, after marker, ranks it opened)
    elements = 1
    node = root.child
    while True:
        if node is None:
            if not stack:
                break
            parent, after, opened = stack.pop()
            for rank in opened:
                spans[rank][1], spans[rank][3] = len(pieces), nonblank
            if after:
                pieces.append(after)
            node = parent.next
            continue
        if node.is_element_node:
            tag = node.tag
            if tag in _DROP_TAGS:
                node = node.next
                continue
            elements += 1
            if elements > limits.max_html_elements:
                raise _too_many_elements(limits)
            if len(stack) + 2 > limits.max_html_depth:  # this node's depth; <html> is 1
                raise _too_deep(limits)
            before, after = _MARKERS.get(tag, (None, None))
            if before:
                pieces.append(before)
            opened = [r for r in ranks.get(node.mem_id, ()) if r not in spans]
            for rank in opened:
                spans[rank] = [len(pieces), len(pieces), nonblank, nonblank]
            stack.append((node, after, opened))
            node = node.child
            continue
        if node.is_text_node:
            text = node.text_content or ""
            pieces.append(text)
            if text.strip():
                nonblank += 1
        node = node.next
    chosen = next((spans[r] for r in range(len(_CONTENT_SELECTORS))
                   if r in spans and spans[r][3] > spans[r][2]), None)
    if chosen is None:  # no content element has text: the body's (whitespace) or the page's
        chosen = spans.get(len(_CONTENT_SELECTORS) - 1, [0, len(pieces)])
    return "".join(pieces[chosen[0]:chosen[1]])


def _too_deep(limits: Limits) -> InputError:
    return InputError(f"HTML elements nested too deep (limit {limits.max_html_depth})")


def _too_many_elements(limits: Limits) -> InputError:
    return InputError(f"too many HTML elements (limit {limits.max_html_elements})")


# The pre-parse scan. Lexbor's tree builder looks down the stack of open elements at each
# block-level start tag, so 64,000 nested <div>s take 22 s and 200,000 take minutes; this scan
# reads the tags once, with the HTML rules that close elements implicitly (a <p> by the next
# block, an <li> by the next item, cells and rows by the next), and stops at the first limit.
# Its depth is an estimate that errs low (it closes generously); the walk over the tree checks
# the real depth after.
# One piece of markup: a start or end tag (name, then the rest up to its '>', where quoted
# values may hold '>'; possessive, so it never backtracks; an empty last group is the page ending
# inside the tag), a comment, or a doctype or other bogus comment.
_MARKUP = re.compile(r"""<(?:(/?)([A-Za-z][^\t\n\f\r />]*)"""
                     r"""((?:[^>="']++|=[\t\n\f\r ]*+(?:"[^"]*+"|'[^']*+')?+|["'])*+)(>?)|(!--)|[!?/])""")
_ATTRIBUTE = re.compile(r"""[^\t\n\f\r />="']+(?:[\t\n\f\r ]*=[\t\n\f\r ]*(?:"[^"]*"|'[^']*'|[^\t\n\f\r >]*))?""")
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr keygen "
                  "basefont bgsound frame image".split())
# Their content is text, not tags, up to their end tag.
_RAW_TEXT = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.I)
             for name in "script style textarea title xmp iframe noembed noframes".split()}
_CLOSES_P = frozenset("address article aside blockquote center details dialog dir div dl fieldset "
                      "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr main menu nav "
                      "ol p pre section summary table ul li dd dt listing xmp plaintext".split())
_SCOPE = ("button", "table", "td", "th", "caption", "marquee", "object", "applet", "template")
_TABLE_PARTS = (("td", "th"), ("tr",), ("tbody", "thead", "tfoot"))
# Start tag -> [(elements it closes, elements that shield them)], applied in order.
_IMPLIED_CLOSE = {
    "li": [(("li",), ("ul", "ol", "menu", "table", "td", "th"))],
    "dd": [(("dd", "dt"), ("dl", "table", "td", "th"))],
    "dt": [(("dd", "dt"), ("dl", "table", "td", "th"))],
    "td": [(_TABLE_PARTS[0], ("table",))],
    "th": [(_TABLE_PARTS[0], ("table",))],
    "tr": [(parts, ("table",)) for parts in _TABLE_PARTS[:2]],
    "tbody": [(parts, ("table",)) for parts in _TABLE_PARTS],
    "thead": [(parts, ("table",)) for parts in _TABLE_PARTS],
    "tfoot": [(parts, ("table",)) for parts in _TABLE_PARTS],
    # A table straight inside a table (not in a cell) ends the first one.
    "table": [(("table",), ("td", "th", "caption"))],
    "option": [(("option",), ("select", "datalist"))],
    "optgroup": [(("option",), ("select", "datalist")), (("optgroup",), ("select",))],
    "a": [(("a",), _SCOPE[2:])],
    "nobr": [(("nobr",), _SCOPE[2:])],
    "button": [(("button",), _SCOPE[1:])],
}
_HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
# Rows and cells sit in a <tbody> and a <tr> the parser adds when the page has none.
_IMPLIED_PARENTS = {"tr": {"table": ("tbody",)}, "td": {"table": ("tbody", "tr"), "tbody": ("tr",),
                                                         "thead": ("tr",), "tfoot": ("tr",)}}
_IMPLIED_PARENTS["th"] = _IMPLIED_PARENTS["td"]
# An end tag is ignored when one of these is open inside the element it would close.
_SPECIAL = frozenset("address applet area article aside base basefont bgsound blockquote body br "
                     "button caption center col colgroup dd details dir div dl dt embed fieldset "
                     "figcaption figure footer form frame frameset h1 h2 h3 h4 h5 h6 head header "
                     "hgroup hr html iframe img input keygen li link listing main marquee menu meta "
                     "nav noembed noframes noscript object ol p param plaintext pre script section "
                     "select source style summary table tbody td template textarea tfoot th thead "
                     "title tr track ul wbr xmp".split())
_FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
# HTML start tags that end an <svg> or <math> element they appear in.
_BREAKOUT = frozenset("b big blockquote body br center code dd div dl dt em embed h1 h2 h3 h4 h5 h6 "
                      "head hr i img li listing menu meta nobr ol p pre ruby s small span strong "
                      "strike sub sup table tt u ul var".split())


def check_html_shape(html: str, limits: Limits = DEFAULT_LIMITS) -> None:
    """Before the tree is built: too many elements, elements nested too deep, or one element with
    too many attributes is an InputError. Linear in the page's length."""
    stack: list[str] = []
    open_at: dict[str, list[int]] = {}  # tag -> stack indexes where it is open, innermost last
    specials: list[int] = []  # stack indexes of the open _SPECIAL elements
    max_depth, max_elements = limits.max_html_depth - 2, limits.max_html_elements  # <html>, <body>

    def top(names) -> int:
        return max((open_at[n][-1] for n in names if open_at.get(n)), default=-1)

    def close_through(index: int) -> None:
        while len(stack) > index:
            open_at[stack.pop()].pop()
            if specials and specials[-1] >= len(stack):
                specials.pop()

    def push(name: str) -> None:
        open_at.setdefault(name, []).append(len(stack))
        if name in _SPECIAL:
            specials.append(len(stack))
        stack.append(name)

    elements, pos, search = 0, 0, _MARKUP.search
    while True:
        markup = search(html, pos)
        if markup is None:
            return
        slash, name, attributes, closed, comment = markup.groups()
        if name is None:  # a comment, doctype or bogus comment: skip to its end
            end = html.find("-->", markup.end()) if comment else html.find(">", markup.end())
            if end < 0:
                return
            pos = end + (3 if comment else 1)
            continue
        if not closed:
            return  # the page ends inside this tag: the parser drops it
        pos = markup.end()
        name = name.lower()
        if slash:  # an end tag closes the innermost open element of its name...
            index = open_at[name][-1] if open_at.get(name) else -1
            # ...but an inline one not past a block open inside it (<span><div></span>: the span
            # stays open).
            if index >= 0 and (name in _SPECIAL or name in _FORMATTING or not specials
                               or specials[-1] <= index):
                close_through(index)
            continue
        if len(attributes) > 2 * MAX_HTML_ATTRIBUTES and (
                len(_ATTRIBUTE.findall(attributes)) > MAX_HTML_ATTRIBUTES):
            raise InputError(f"too many attributes on one HTML element (limit {MAX_HTML_ATTRIBUTES})")
        if name in ("html", "head", "body") or (name == "form" and open_at.get("form")):
            continue  # merged into the one the parser already has
        elements += 1
        if elements > max_elements:
            raise _too_many_elements(limits)
        foreign = top(("svg", "math")) if open_at.get("svg") or open_at.get("math") else -1
        if foreign >= 0 and name in _BREAKOUT:
            close_through(foreign)
            foreign = -1
        if foreign >= 0:
            if attributes.endswith("/"):  # <path/>: self-closing in SVG and MathML
                continue
        else:
            if name in _CLOSES_P and open_at.get("p") and open_at["p"][-1] > top(_SCOPE):
                close_through(open_at["p"][-1])
            if name in _IMPLIED_CLOSE:
                for closes, shields in _IMPLIED_CLOSE[name]:
                    index = top(closes)
                    if index > top(shields):
                        close_through(index)
            if name in _HEADINGS and stack and stack[-1] in _HEADINGS:
                close_through(len(stack) - 1)
            if name in _VOID:
                continue
            if name in _IMPLIED_PARENTS and stack:
                for parent in _IMPLIED_PARENTS[name].get(stack[-1], ()):
                    push(parent)
        push(name)
        if len(stack) > max_depth:
            raise _too_deep(limits)
        if name == "plaintext":
            return
        if name in _RAW_TEXT and foreign < 0:
            end = _RAW_TEXT[name].search(html, pos)
            if end is None:
                return
            pos = end.start()


def pdf_to_text(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    from pypdf import PdfReader

    # pypdf logs its repairs ("EOF marker not found") and some errors; the user gets our one line.
    logging.getLogger("pypdf").setLevel(logging.CRITICAL + 1)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise InputError("encrypted PDF: cannot read its text")
        count = len(reader.pages)
        if count > limits.max_pdf_pages:
            raise InputError(f"PDF has {count} pages (limit {limits.max_pdf_pages})")
        pages, chars = [], 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            chars += len(pages[-1])
            if chars > limits.max_pdf_chars:
                raise InputError(f"more text in this PDF than the limit (limit {limits.max_pdf_chars} characters)")
    except InputError:
        raise
    except Exception as exc:  # pypdf raises many types on broken files; all mean the same here
        raise InputError(f"truncated or damaged PDF ({describe(exc)})") from None
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


def docx_to_text(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    import docx

    package = _docx_text_parts(data, limits)
    try:
        document = docx.Document(io.BytesIO(package))
        lines = []
        for para in document.paragraphs:
            style = (para.style.name or "").lower() if para.style is not None else ""
            prefix = "• " if "list" in style else ""
            lines.append(prefix + para.text)
        for table in document.tables:
            for row in table.rows:
                lines.append(" ".join(cell.text for cell in row.cells))
    except Exception as exc:  # lxml, zipfile, python-docx's own: all a damaged file to the user
        raise InputError(f"truncated or damaged Word file ({describe(exc)})") from None
    return "\n\n".join(lines)


def _docx_text_parts(data: bytes, limits: Limits) -> bytes:
    """The .docx again with only its XML parts filled in, checked against the limits from the
    zip's directory before anything is decompressed. python-docx reads every part whole, so a
    600 MB picture would be read for nothing; pictures, fonts and embedded files become empty
    parts of the same name (their relationships still resolve, and no text is lost)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > limits.max_docx_members:
                raise InputError(f"Word file has {len(members)} parts (limit {limits.max_docx_members})")
            text_parts = [m for m in members if m.filename.lower().endswith((".xml", ".rels"))]
            unzipped = sum(m.file_size for m in text_parts)
            if unzipped > limits.max_docx_unzipped_mb * 1048576:
                raise InputError(f"Word file's text parts unzip to {unzipped / 1048576:.1f} MB "
                                 f"(limit {limits.max_docx_unzipped_mb:g} MB)")
            keep = {id(m) for m in text_parts}
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as copy:
                for member in members:
                    # zipfile stops at the declared size, so the limit holds even if it lies.
                    copy.writestr(member.filename, archive.read(member) if id(member) in keep else b"")
            return out.getvalue()
    except InputError:
        raise
    except Exception as exc:  # zlib.error, BadZipFile (bad CRC), an encrypted or odd member
        raise InputError(f"truncated or damaged Word file ({describe(exc)})") from None


def read_document(name: str, data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str, str | None]:
    """Bytes to (format, normalised text, page title if any)."""
    if not data.strip():
        raise InputError("empty file")
    fmt = detect_format(name, data)
    page_title = None
    if fmt == "pdf":
        text = pdf_to_text(data, limits)
    elif fmt == "docx":
        text = docx_to_text(data, limits)
    elif fmt == "html":
        text, page_title = html_text_and_title(decode_text(data), limits)
    else:
        text = decode_text(data)
    text = normalise(text)
    if not text:
        raise InputError(f"no text found in this {fmt} document")
    return fmt, text, page_title
