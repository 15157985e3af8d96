"""One reader per file format; each turns a file into a `Document`: its text, title, and the character offsets
of its pages (PDF) and sections (Markdown and HTML headings, DOCX Heading styles).

A file that cannot be read raises `UnreadableDocument` with a named reason (`unreadable`, `encrypted`, `no_text`,
`unsupported_type`, `not_utf8`); the extract_text stage turns it into a reject. HTML goes through trafilatura's
Markdown output, so its headings become `#` lines and are found like a Markdown file's. The heavy readers
(pypdf, trafilatura, python-docx) are imported inside their functions: `pip install 'synthgen[docs]'`.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthgen.errors import InputError

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
PAGE_BREAK = "\n\n"  # between the pages of a PDF in `Document.text`
_DOCX_HEADING = re.compile(r"heading\s*(\d)", re.IGNORECASE)


class UnreadableDocument(InputError):
    """A file that yields no text; `reason` names why (a reject reason), the message says what was found."""

    def __init__(self, path: str, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(path, None, message)


@dataclass
class Document:
    """Extracted text; `pages` [{page, start, end}] and `sections` [{heading, level, start, end}] are spans in it."""

    text: str
    title: str
    pages: list[dict[str, Any]] = field(default_factory=list)
    sections: list[dict[str, Any]] = field(default_factory=list)
    sha256: str = ""  # of the file's bytes, set by `pool.extract`


def read_document(path: Path) -> Document:
    """The document in `path`, read by the reader for its suffix."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise UnreadableDocument(str(path), "unsupported_type",
                                 f"no reader for {path.suffix or 'files without a suffix'}; readable: {sorted(READERS)}")
    document = reader(path)
    if not document.text.strip():
        raise UnreadableDocument(str(path), "no_text", "no text could be extracted (a scanned or empty file?)")
    return document


def markdown_sections(text: str) -> list[dict[str, Any]]:
    """Sections of Markdown `text` from its ATX headings (outside code fences); a section ends where the next
    heading of the same or a higher level starts."""
    fenced = _fenced_ranges(text)
    heads = [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _HEADING.finditer(text)
             if not any(a <= m.start() < b for a, b in fenced)]
    return nested_sections(heads, text)


def nested_sections(heads: list[tuple[int, int, str]], text: str) -> list[dict[str, Any]]:
    """Sections from (start, level, heading) triples in order: each ends at the next heading of its level or higher
    (trailing whitespace left out)."""
    sections = []
    for index, (start, level, heading) in enumerate(heads):
        end = next((other for other, lvl, _ in heads[index + 1:] if lvl <= level), len(text))
        end = start + len(text[start:end].rstrip())
        sections.append({"heading": heading, "level": level, "start": start, "end": end})
    return sections


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _FENCE.finditer(text)]
    return [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]


def _decoded(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.start + 1].hex()
        raise UnreadableDocument(str(path), "not_utf8", f"byte 0x{bad} at offset {exc.start} is not UTF-8 ({exc.reason}); "
                                                        "convert the file to UTF-8 (iconv -f latin1 -t utf-8?)") from None


def _title(sections: list[dict[str, Any]], path: Path) -> str:
    top = min((s["level"] for s in sections), default=None)
    return next((s["heading"] for s in sections if s["level"] == top), path.stem)


def read_text(path: Path) -> Document:
    """Plain text, UTF-8; its title is the file name."""
    return Document(_decoded(path), path.stem)


def read_markdown(path: Path) -> Document:
    """Markdown, UTF-8, kept as written; sections from its headings, title from the top-level one."""
    text = _decoded(path)
    sections = markdown_sections(text)
    return Document(text, _title(sections, path), sections=sections)


def read_html(path: Path) -> Document:
    """The page's main text (trafilatura, boilerplate removed) as Markdown, headings kept."""
    import trafilatura

    html = path.read_bytes()
    text = trafilatura.extract(html, output_format="markdown", include_formatting=True, include_comments=False)
    if not text or not text.strip():
        raise UnreadableDocument(str(path), "no_text", "no main text found in the HTML (a navigation or script-only page?)")
    metadata = trafilatura.extract_metadata(html)
    sections = markdown_sections(text)
    return Document(text, (metadata.title if metadata and metadata.title else None) or _title(sections, path),
                    sections=sections)


def read_pdf(path: Path) -> Document:
    """Each page's text, pages joined by a blank line; `pages` holds each page's span."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument(str(path), "encrypted", "the PDF is encrypted with a password")
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
        title = (reader.metadata.title if reader.metadata else None) or ""
    except UnreadableDocument:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(str(path), "unreadable", f"not a readable PDF (truncated or damaged?): {exc}") from None
    pages: list[dict[str, Any]] = []
    parts: list[str] = []
    offset = 0
    for number, page_text in enumerate(texts, start=1):
        if page_text:
            if parts:
                offset += len(PAGE_BREAK)
            pages.append({"page": number, "start": offset, "end": offset + len(page_text)})
            parts.append(page_text)
            offset += len(page_text)
    text = PAGE_BREAK.join(parts)
    return Document(text, title.strip() or path.stem, pages=pages)


def read_docx(path: Path) -> Document:
    """Paragraphs joined by blank lines; paragraphs in Heading styles start sections, the Title style names it."""
    import docx

    if not zipfile.is_zipfile(path):
        raise UnreadableDocument(str(path), "unreadable", "not a DOCX file (a DOCX is a zip archive; an old .doc?)")
    try:
        paragraphs = docx.Document(str(path)).paragraphs
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise UnreadableDocument(str(path), "unreadable", f"not a readable DOCX: {exc}") from None
    parts: list[str] = []
    heads: list[tuple[int, int, str]] = []
    title, offset = "", 0
    for paragraph in paragraphs:
        text = paragraph.text.strip()
        if not text:
            continue
        style = paragraph.style.name if paragraph.style is not None else ""
        if parts:
            offset += 2
        level = _DOCX_HEADING.match(style or "")
        if style == "Title" and not title:
            title = text
        elif level:
            heads.append((offset, int(level.group(1)), text))
        parts.append(text)
        offset += len(text)
    text = "\n\n".join(parts)
    sections = nested_sections(heads, text)
    return Document(text, title or _title(sections, path), sections=sections)


READERS: dict[str, Callable[[Path], Document]] = {
    ".txt": read_text, ".text": read_text, ".md": read_markdown, ".markdown": read_markdown,
    ".html": read_html, ".htm": read_html, ".pdf": read_pdf, ".docx": read_docx,
}
