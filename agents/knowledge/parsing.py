"""Turn an uploaded file into sections of text: one parser per format, bad input refused clearly.

Each parser takes the file's bytes and returns `Section`s (a heading, the text
under it, a page number for PDFs). Anything wrong with the input raises
`ParseError` with a message meant for the person who uploaded the file: the
ingestion task stores it on the document and touches nothing else.

Checks made before a parser trusts the bytes:

* the content matches the extension (a PDF renamed to .txt, a ZIP renamed to
  .pdf, an image renamed to .md are refused, not indexed as garbage);
* text is decoded as UTF-8 when it is, otherwise with charset-normalizer's best
  guess; bytes no encoding explains are refused ("unknown encoding");
* PDFs: encrypted or unreadable files are refused (pypdf);
* .docx: the ZIP directory is checked before anything is inflated (entry count,
  total uncompressed size, compression ratio per entry) so a decompression bomb
  is refused without being expanded, and the XML may not declare a DOCTYPE
  (no entity expansion).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass, replace
from html.parser import HTMLParser

from portal.text import without_nul

SUPPORTED_KINDS = ("txt", "md", "html", "pdf", "csv", "docx")
EXTENSION_KINDS = {
    "txt": "txt",
    "text": "txt",
    "md": "md",
    "markdown": "md",
    "html": "html",
    "htm": "html",
    "pdf": "pdf",
    "csv": "csv",
    "docx": "docx",
}

# .docx limits: generous for real documents, far below what a bomb expands to.
DOCX_MAX_ENTRIES = 2000
DOCX_MAX_UNCOMPRESSED = 200 * 1024 * 1024
DOCX_MAX_XML = 50 * 1024 * 1024
DOCX_MAX_RATIO = 100
MAX_PDF_PAGES = 5000
# Text a PDF may yield per byte of file (and at least MIN_PDF_TEXT_BUDGET characters): page
# contents are compressed, but text rarely packs better than about 10:1. Pages that all draw
# one shared stream make a file of 2 kB yield megabytes and minutes of extraction on the
# shared tier queue; past the budget the file is refused instead.
MAX_PDF_TEXT_PER_BYTE = 50
MIN_PDF_TEXT_BUDGET = 200_000
MAX_CSV_ROWS = 200_000

_MAGIC = (
    (b"%PDF-", "a PDF"),
    (b"PK\x03\x04", "a ZIP archive (e.g. .docx)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "a program"),
    (b"MZ", "a Windows program"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Office document (.doc/.xls)"),
)


class ParseError(Exception):
    """The file cannot be indexed; the message says why, for the uploader."""


@dataclass(frozen=True)
class Section:
    heading: str
    text: str
    page: int | None = None


def kind_for(filename: str) -> str | None:
    _, dot, ext = filename.rpartition(".")
    return EXTENSION_KINDS.get(ext.lower()) if dot else None


def sniff(data: bytes) -> str | None:
    """What the bytes really are, when they have a well-known signature."""
    for magic, label in _MAGIC:
        if data.startswith(magic):
            return label
    return None


def decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseError("The file contains binary data, not text.")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[: 2 * 1024 * 1024]).best()
    if best is None or best.encoding is None:
        raise ParseError("The text is in an unknown encoding; save it as UTF-8 and upload it again.")
    try:
        return data.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        raise ParseError("The text is in an unknown encoding; save it as UTF-8 and upload it again.")


_WS = re.compile(r"[ \t\f\v\r]+")


def clean(text: str) -> str:
    lines = [_WS.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- formats --------------------------------------------------------------------------------


def parse_txt(data: bytes) -> list[Section]:
    return [Section("", clean(decode_text(data)))]


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def parse_md(data: bytes) -> list[Section]:
    sections: list[Section] = []
    heading, lines = "", []
    for line in decode_text(data).splitlines():
        match = _MD_HEADING.match(line)
        if match:
            if "".join(lines).strip():
                sections.append(Section(heading, clean("\n".join(lines))))
            heading, lines = match.group(2).strip(), []
        else:
            lines.append(line)
    if "".join(lines).strip():
        sections.append(Section(heading, clean("\n".join(lines))))
    return sections


class _HtmlText(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote", "table", "ul", "ol", "dd", "dt"}
    HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.heading = ""
        self.parts: list[str] = []
        self.heading_parts: list[str] | None = None
        self.skip_depth = 0
        self.title = ""
        self._in_title = False

    def _flush(self):
        text = clean("".join(self.parts))
        if text:
            self.sections.append(Section(self.heading, text))
        self.parts = []

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self.skip_depth += 1
        elif tag in self.HEADINGS:
            self._flush()
            self.heading_parts = []
        elif tag in self.BLOCK:
            self.parts.append("\n\n" if tag == "p" else "\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self.HEADINGS and self.heading_parts is not None:
            self.heading = clean("".join(self.heading_parts)).replace("\n", " ")
            self.heading_parts = None
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
            return
        if self.skip_depth:
            return
        if self.heading_parts is not None:
            self.heading_parts.append(data)
        else:
            self.parts.append(data)


def parse_html(data: bytes) -> list[Section]:
    parser = _HtmlText()
    try:
        parser.feed(decode_text(data))
        parser.close()
    except ParseError:
        raise
    except Exception:
        raise ParseError("The HTML could not be read.")
    parser._flush()
    return parser.sections


def parse_csv(data: bytes) -> list[Section]:
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = next(reader, None)
        if not header:
            return []
        lines = []
        for n, row in enumerate(reader):
            if n >= MAX_CSV_ROWS:
                raise ParseError(f"The CSV file has more than {MAX_CSV_ROWS:,} rows.")
            if not any(cell.strip() for cell in row):
                continue
            pairs = enumerate(zip(header, row, strict=False))
            cells = [f"{name.strip() or f'column {i + 1}'}: {value.strip()}" for i, (name, value) in pairs]
            lines.append("; ".join(cells) + ".")
    except csv.Error as exc:
        raise ParseError(f"The CSV file is malformed ({exc}).")
    # One row per paragraph: the chunker keeps rows whole.
    return [Section("", "\n\n".join(lines))]


def parse_pdf(data: bytes) -> list[Section]:
    if not data.startswith(b"%PDF-"):
        raise ParseError("The file is not a PDF (it does not start with %PDF-).")
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ParseError("The PDF is encrypted; upload a copy without a password.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise ParseError(f"The PDF has more than {MAX_PDF_PAGES:,} pages.")
        sections = []
        budget = max(MIN_PDF_TEXT_BUDGET, MAX_PDF_TEXT_PER_BYTE * len(data))
        for number, page in enumerate(reader.pages, start=1):
            text = clean(page.extract_text() or "")
            budget -= len(text)
            if budget < 0:
                raise ParseError(
                    "The PDF yields far more text than its size allows (pages repeating compressed "
                    "content); it was not read."
                )
            if text:
                sections.append(Section("", text, page=number))
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError):
        raise ParseError("The PDF is damaged and could not be read.")
    except Exception:  # pypdf raises a zoo of errors on hostile files; none may crash the task
        raise ParseError("The PDF is damaged and could not be read.")
    if not sections:
        raise ParseError("The PDF has no extractable text (a scan? run OCR first).")
    return sections


_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


class _DeclaresDTD(Exception):
    pass


def _refuse_dtd(*_args) -> None:
    raise _DeclaresDTD


def _parse_xml_without_dtd(xml: bytes):
    """Parse a Word text part, refusing any DOCTYPE or entity declaration, whatever the
    encoding: the byte check before this sees only ASCII spellings, and a UTF-16 part
    declares entities ElementTree would expand. expat reads the part first with handlers
    that refuse a DTD (as defusedxml does, without a dependency for one call); ElementTree
    (whose C parser has no such hooks) then parses a part known to declare none."""
    import xml.etree.ElementTree as ET
    from xml.parsers import expat

    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = _refuse_dtd
    scanner.EntityDeclHandler = _refuse_dtd
    scanner.UnparsedEntityDeclHandler = _refuse_dtd
    try:
        scanner.Parse(xml, True)
    except _DeclaresDTD:
        raise ParseError("The .docx declares XML entities, which Word documents never do; it was not read.")
    except expat.ExpatError:
        raise ParseError("The .docx text part is not valid XML.")
    try:
        return ET.fromstring(xml)  # noqa: S314 (no DTD: refused above, so nothing to expand or fetch)
    except ET.ParseError:
        raise ParseError("The .docx text part is not valid XML.")


def _check_zip(archive: zipfile.ZipFile) -> None:
    entries = archive.infolist()
    if len(entries) > DOCX_MAX_ENTRIES:
        raise ParseError("The .docx has too many parts to be a document.")
    total = 0
    for entry in entries:
        total += entry.file_size
        if entry.file_size > 1024 * 1024 and entry.file_size > DOCX_MAX_RATIO * max(entry.compress_size, 1):
            raise ParseError("The .docx expands to far more than its size (a decompression bomb); it was not opened.")
    if total > DOCX_MAX_UNCOMPRESSED:
        raise ParseError("The .docx expands to more than 200 MB; it was not opened.")


def parse_docx(data: bytes) -> list[Section]:
    if not data.startswith(b"PK\x03\x04"):
        raise ParseError("The file is not a .docx (not a ZIP package).")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ParseError("The .docx is damaged (not a readable ZIP package).")
    with archive:
        _check_zip(archive)
        try:
            info = archive.getinfo("word/document.xml")
        except KeyError:
            raise ParseError("The file is a ZIP package but not a Word document (no word/document.xml).")
        if info.file_size > DOCX_MAX_XML:
            raise ParseError("The .docx text part is larger than 50 MB.")
        try:
            with archive.open(info) as handle:
                xml = handle.read(DOCX_MAX_XML + 1)  # never more than the limit, whatever the header claims
        # zipfile raises RuntimeError for an encrypted member and NotImplementedError for a
        # compression method it cannot read: both mean "not a .docx we can open".
        except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
            raise ParseError("The .docx is damaged or encrypted.")
    if len(xml) > DOCX_MAX_XML:
        raise ParseError("The .docx text part is larger than 50 MB.")
    if b"<!DOCTYPE" in xml[:4096].upper() or b"<!ENTITY" in xml.upper():
        raise ParseError("The .docx declares XML entities, which Word documents never do; it was not read.")
    root = _parse_xml_without_dtd(xml)
    sections: list[Section] = []
    heading, paragraphs = "", []
    for paragraph in root.iter(f"{_W}p"):
        style = paragraph.find(f"{_W}pPr/{_W}pStyle")
        style_name = (style.get(f"{_W}val") or "") if style is not None else ""
        pieces = []
        for node in paragraph.iter():
            if node.tag == f"{_W}t" and node.text:
                pieces.append(node.text)
            elif node.tag in (f"{_W}tab",):
                pieces.append(" ")
            elif node.tag in (f"{_W}br", f"{_W}cr"):
                pieces.append("\n")
        text = "".join(pieces).strip()
        if not text:
            continue
        if style_name.lower().startswith(("heading", "title")):
            if paragraphs:
                sections.append(Section(heading, clean("\n\n".join(paragraphs))))
            heading, paragraphs = text, []
        else:
            paragraphs.append(text)
    if paragraphs:
        sections.append(Section(heading, clean("\n\n".join(paragraphs))))
    return sections


PARSERS = {
    "txt": parse_txt,
    "md": parse_md,
    "html": parse_html,
    "csv": parse_csv,
    "pdf": parse_pdf,
    "docx": parse_docx,
}


def parse(kind: str, data: bytes) -> list[Section]:
    """Sections of text of a file of `kind`. Raises ParseError for anything it cannot index."""
    if kind not in PARSERS:
        raise ParseError(f"Files of type .{kind} are not supported.")
    if not data:
        raise ParseError("The file is empty.")
    real = sniff(data)
    if kind in ("txt", "md", "html", "csv") and real is not None:
        raise ParseError(f"The file is named .{kind} but its content is {real}.")
    if kind == "pdf" and not data.startswith(b"%PDF-"):
        raise ParseError(f"The file is named .pdf but its content is {real or 'not a PDF'}.")
    if kind == "docx" and not data.startswith(b"PK\x03\x04"):
        raise ParseError(f"The file is named .docx but its content is {real or 'not a Word document'}.")
    # A NUL can survive every parser (past decode_text's look at the first 8 kB, in UTF-16,
    # inside a PDF's text); PostgreSQL cannot store one, so it is dropped here, for all kinds.
    sections = [replace(s, heading=without_nul(s.heading), text=without_nul(s.text)) for s in PARSERS[kind](data)]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise ParseError("The file has no text to index.")
    return sections
