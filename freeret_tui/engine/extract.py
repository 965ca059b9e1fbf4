"""Turns a file into searchable chunks, or into a recorded skip with its reason (never an exception).

Covers images (jpg, png, webp, gif, bmp, tiff; HEIC/HEIF when pi-heif is installed), plain-text documents
(txt, md, rst, org), HTML (the text a browser shows: saved pages, notes exported as HTML), EPUB (its chapters as
HTML), PDF (pypdf text per page; chunks carry their page), and DOCX, PPTX (a slide is a page), XLSX and
OpenDocument files, read by office.py.
A PDF page with no real text layer (a scan) becomes a page item that the model reads as an image, rendered by
pypdfium2 when it is embedded (``pictures.load_image``), so nothing large is held between extraction and embedding.
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from freeret_tui.engine import office
from freeret_tui.engine.chunking import Spans, chunk_text
from freeret_tui.engine.office import Unreadable
from freeret_tui.engine.pictures import IMAGE_EXTENSIONS, load_image
from freeret_tui.engine.types import Chunk, Kind, Skip, title_of

TEXT_EXTENSIONS = frozenset({".txt", ".md", ".markdown", ".rst", ".text", ".org", ".html", ".htm", ".pdf", ".docx",
                             ".pptx", ".xlsx", ".odt", ".ods", ".odp", ".epub"})
# A page with fewer characters of text than this has no real text layer (a scan, a photo page).
MIN_PAGE_CHARS = 20

# Per-file budgets (benchmarks/hostile_files.py): text beyond its first 8 MiB is not read (a 200 MB file took
# 12 GB while tokenised), at most 2,000 passages a file are kept (~500k tokens); of an Office file, the XML that
# holds its text is parsed as a stream up to office.MAX_XML_INFLATED (python-docx held a DOCX's whole tree: 1 GB
# inflated took 2.4 GB).
MAX_TEXT_BYTES = 8 << 20
MAX_ITEMS_PER_FILE = 2000
# HTML beyond its first 4 Mi characters is not parsed: Python's HTML parser read 8 MiB of dense markup in 5.0 s on
# 2 cores (benchmarks/hostile_files.py), half the 10 s a file may cost; 4 MiB of a page is ~1 MiB of text.
MAX_HTML_CHARS = 4 << 20


def kind_of(path: Path) -> Kind | None:
    """The item kind for a file name, or None when freeret-tui does not index it."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return Kind.IMAGE
    if suffix in TEXT_EXTENSIONS:
        return Kind.TEXT
    return None


# Byte-order marks of the encodings a text file may announce, longest first (UTF-32's starts with UTF-16's).
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"),
         (b"\xfe\xff", "utf-16"))
# A NUL byte in a file's first 8 KB makes it binary, not text (git's rule): a file named .txt or .md that holds
# binary data, decoded as Latin-1, made MAX_ITEMS_PER_FILE passages of noise (3 MB of random bytes: over 15
# minutes of SmolLM2 on 2 cores before it was stopped, and 2,000 nonsense items in the index).
_BINARY_SNIFF = 8192


def read_text(path: Path) -> str:
    """File text: UTF-16 or UTF-32 where a byte-order mark says so, else UTF-8 (with or without BOM), else cp1252,
    else Latin-1 (which never fails). Binary data (a NUL byte near the start, with no such mark) is refused."""
    with path.open("rb") as f:
        raw = f.read(MAX_TEXT_BYTES)
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            # Cut at the budget mid-character at worst: the decoder replaces that one.
            return raw.decode(encoding, errors="replace")
    if b"\0" in raw[:_BINARY_SNIFF]:
        raise Unreadable("binary data, not text (NUL bytes)")
    if len(raw) == MAX_TEXT_BYTES:
        # Cut at the budget: drop a multi-byte UTF-8 character split there, so UTF-8 is still recognised.
        for cut in range(4):
            try:
                return raw[: len(raw) - cut].decode("utf-8-sig")
            except UnicodeDecodeError:
                continue
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def _pdf_pages(path: Path) -> list[tuple[int, str]]:
    """(1-based page number, text) for every page; a scan's text is empty or a few stray characters."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    reader = PdfReader(path)
    if reader.is_encrypted:
        reader.decrypt("")  # many "encrypted" PDFs only restrict printing and open with an empty password
    try:
        pages = [(n, page.extract_text() or "") for n, page in enumerate(reader.pages, start=1)]
    except FileNotDecryptedError:
        raise Unreadable("encrypted PDF (password required)") from None
    return pages


def _too_big_to_render(path: Path, pages: list[int]) -> int | None:
    """The first of ``pages`` (1-based) whose content or image streams inflate beyond pypdf's per-stream limit
    (75 MB): pdfium would inflate all of it to render the page (a 1 GB Flate stream took 1.9 GB RSS)."""
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError

    reader = PdfReader(path)
    for number in pages:
        page = reader.pages[number - 1]
        try:
            contents = page.get_contents()
            if contents is not None:
                contents.get_data()
            resources = page.get("/Resources")
            xobjects = resources.get_object().get("/XObject") if resources is not None else None
            for xobject in (xobjects.get_object().values() if xobjects is not None else ()):
                xobject.get_object().get_data()
        except LimitReachedError:
            return number
    return None


def _page_count(path: Path) -> int:
    """Pages as pdfium sees them: proves the renderer can open the file before its pages are queued."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(path)
    try:
        return len(document)
    finally:
        document.close()


class _ShownText(HTMLParser):
    """The text of an HTML page as a browser shows it: not its scripts, styles or other hidden parts, a line break
    at each block (paragraph, heading, list item, table row), entities decoded; the title first."""

    _HIDDEN = frozenset({"script", "style", "noscript", "template", "svg", "math", "head"})
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
                         "header", "footer", "blockquote", "pre", "table", "ul", "ol", "dt", "dd", "hr", "main",
                         "nav", "aside", "figcaption", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0  # depth inside hidden elements (tags left open in broken pages just keep it raised)
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag == "body":
            self._hidden = 0  # the head ends where the body starts, closed or not
        elif tag in self._HIDDEN:
            self._hidden += 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in ("".join(self.title) + "\n" + "".join(self.parts)).splitlines())
        return "\n".join(line for line in lines if line)


def _html_text(raw: str) -> str:
    parser = _ShownText()
    parser.feed(raw[:MAX_HTML_CHARS])
    parser.close()
    return parser.text()


def _epub_text(path: Path) -> str:
    """An EPUB book's chapters in reading order (its spine), each as the text a browser shows (``_html_text``),
    until ``MAX_TEXT_BYTES`` of text; its package files are small parts parsed whole."""
    container = "{urn:oasis:names:tc:opendocument:xmlns:container}"
    opf = "{http://www.idpf.org/2007/opf}"
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        if "META-INF/container.xml" not in names:
            raise Unreadable("not an EPUB book: it has no META-INF/container.xml")

        rootfile = next(office.small_part(archive, "META-INF/container.xml").iter(container + "rootfile"), None)
        package = rootfile.get("full-path", "") if rootfile is not None else ""
        if package not in names:
            raise Unreadable("EPUB names no package file that it holds")
        root = office.small_part(archive, package)
        folder = posixpath.dirname(package)
        hrefs = {item.get("id"): posixpath.normpath(posixpath.join(folder, unquote(item.get("href", ""))))
                 for item in root.iter(opf + "item")}
        chapters: list[str] = []
        size = 0
        for ref in root.iter(opf + "itemref"):
            name = hrefs.get(ref.get("idref"), "")
            if name not in names or size >= MAX_TEXT_BYTES:
                continue
            with archive.open(name) as chapter:  # a chapter's markup read up to the HTML budget only
                raw = chapter.read(MAX_HTML_CHARS)
            text = _html_text(raw.decode("utf-8", errors="replace"))
            chapters.append(text)
            size += len(text)
    return "\n\n".join(chapters)


def _text_chunks(path: Path, text: str, tokenize: Callable[[str], Spans], chunk_tokens: int, overlap: int,
                 page: int | None, first: int, rows: Sequence[int] | None = None) -> list[Chunk]:
    """``rows``: the number a person sees for each line of ``text`` (a sheet's rows), where they are not 1, 2…"""
    # Passages of nothing but white space (a file of newlines made thousands) are not items.
    windows = [w for w in chunk_text(text, tokenize, chunk_tokens, overlap) if text[w.start : w.end].strip()]
    return [
        Chunk(
            path=path,
            kind=Kind.TEXT,
            text=text[w.start : w.end],
            title=title_of(path),
            page=page,
            line_start=rows[w.line_start - 1] if rows else w.line_start,
            line_end=rows[w.line_end - 1] if rows else w.line_end,
            chunk_no=first + n,
        )
        for n, w in enumerate(windows[: max(0, MAX_ITEMS_PER_FILE - first)])
    ]


def extract(
    path: Path, tokenize: Callable[[str], Spans], chunk_tokens: int = 256, overlap: int = 32
) -> list[Chunk] | Skip:
    """Chunks of ``path`` or the reason it was skipped."""
    kind = kind_of(path)
    if kind is None:
        return Skip(path, f"unsupported file type {path.suffix or '(none)'}")
    suffix = path.suffix.lower()
    documents = {".pdf", ".docx", ".pptx", ".xlsx", ".odt", ".ods", ".odp", ".epub"}
    what = suffix.lstrip(".").upper() if suffix in documents else kind.value  # "cannot decode PDF: …"
    try:
        if kind is Kind.IMAGE:
            load_image(path, max_side=64)  # decodes the file: a corrupt image is caught here, not in a batch
            # Its words (photo_meta.py) are the indexer's to give: it reads them with the date, for this path.
            return [Chunk(path=path, kind=Kind.IMAGE, text="", title=title_of(path))]
        if suffix == ".pdf":
            chunks: list[Chunk] = []
            pages = _pdf_pages(path)
            for page, text in pages:
                if len(chunks) >= MAX_ITEMS_PER_FILE:
                    break
                if len(text.strip()) >= MIN_PAGE_CHARS:
                    chunks += _text_chunks(path, text, tokenize, chunk_tokens, overlap, page, len(chunks))
                else:
                    chunks.append(Chunk(path=path, kind=Kind.PAGE, title=title_of(path), page=page,
                                        chunk_no=len(chunks)))
            scanned = [c.page for c in chunks if c.kind is Kind.PAGE and c.page is not None]
            if scanned and _page_count(path) < len(pages):
                return Skip(path, "cannot render the PDF's pages", failed=True)
            if scanned and (bomb := _too_big_to_render(path, scanned)) is not None:
                return Skip(path, f"page {bomb} inflates beyond 75 MB: not rendered", failed=True)
            return chunks or Skip(path, "PDF has no pages")
        if suffix == ".pptx":  # a slide is a page: its passages point back to it
            chunks = []
            for slide, text in office.pptx_slides(path, MAX_TEXT_BYTES):
                if len(chunks) < MAX_ITEMS_PER_FILE:
                    chunks += _text_chunks(path, text, tokenize, chunk_tokens, overlap, slide, len(chunks))
            return chunks or Skip(path, "no text")
        if suffix == ".xlsx":  # a sheet is a page too, and its passages' lines are its rows
            chunks = []
            for number, text, rows in office.xlsx_sheets(path, MAX_TEXT_BYTES):
                if len(chunks) < MAX_ITEMS_PER_FILE:
                    chunks += _text_chunks(path, text, tokenize, chunk_tokens, overlap, number, len(chunks), rows)
            return chunks or Skip(path, "no text")
        if suffix == ".docx":
            text = office.docx_text(path, MAX_TEXT_BYTES)
        elif suffix in (".odt", ".ods", ".odp"):
            text = office.odf_text(path, MAX_TEXT_BYTES)
        elif suffix == ".epub":
            text = _epub_text(path)
        elif suffix in (".html", ".htm"):
            text = _html_text(read_text(path))
        else:
            text = read_text(path)
    except Unreadable as err:
        return Skip(path, str(err), failed=True)
    except OSError as err:
        if err.errno is not None:  # the file system refused (permission, vanished, I/O error)
            return Skip(path, f"cannot read: {err.strerror or err}", failed=True)
        return Skip(path, f"cannot decode {what}: {err}", failed=True)  # PIL reports broken data as OSError too
    except Exception as err:  # noqa: BLE001 - PIL, pypdf, zipfile and the XML parser raise many types for broken files
        return Skip(path, f"cannot decode {what}: {type(err).__name__}: {err}", failed=True)
    chunks = _text_chunks(path, text, tokenize, chunk_tokens, overlap, None, 0)
    return chunks or Skip(path, "no text")
