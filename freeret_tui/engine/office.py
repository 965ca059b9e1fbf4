"""Text out of office files with the standard library alone: Office Open XML (DOCX, PPTX, XLSX) and OpenDocument
(ODT, ODS, ODP). Each is a zip of XML parts, and only the parts that hold text are read, as streams, within one
budget of inflated XML per file. The
pictures and other media in a file are never read (python-docx loaded every part of a DOCX into memory, so a 38.6 MB
report with 18 photos had been refused by the budget that bounded that memory).

``Unreadable`` is how a file that opens but cannot be indexed says why (extract.py records it as the skip reason).
"""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

# Inflated XML read from one file, all its parts together; what lies beyond is not read (a 1 GB DOCX bomb: 0.13 s,
# benchmarks/hostile_files.py). 32 MiB of WordprocessingML is some thousands of pages.
MAX_XML_INFLATED = 32 << 20
# Parts read whole (a presentation's slide list, a workbook's sheet list, their relationships): small in any real file.
_MAX_INDEX_PART = 1 << 20

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_A = "{http://schemas.openxmlformats.org/drawingml/2006/main}"
_P = "{http://schemas.openxmlformats.org/presentationml/2006/main}"
_S = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"
# The elements of a Word run that stand for white space.
_RUN_BREAKS = {_W + "tab": "\t", _W + "br": "\n", _W + "cr": "\n"}
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"


class Unreadable(Exception):
    """A file that opens but cannot be indexed; the message is the skip reason."""


class _Reader:
    """One file's zip, with the budget of inflated XML its parts share and the text taken so far."""

    def __init__(self, archive: zipfile.ZipFile, text_limit: int):
        self.archive = archive
        self.names = frozenset(archive.namelist())
        self.read = 0  # inflated bytes of XML read so far
        self.text = 0  # characters of text taken so far
        self.text_limit = text_limit

    @property
    def spent(self) -> bool:
        return self.read >= MAX_XML_INFLATED or self.text >= self.text_limit

    def events(self, name: str) -> Iterator[tuple[str, ElementTree.Element]]:
        """("start" | "end", element) of the part ``name`` parsed as a stream, until the budget is spent."""
        parser = ElementTree.XMLPullParser(events=("start", "end"))
        with self.archive.open(name) as stream:
            while not self.spent and (piece := stream.read(1 << 16)):
                self.read += len(piece)
                parser.feed(piece)
                yield from parser.read_events()

    def whole(self, name: str) -> ElementTree.Element:
        return small_part(self.archive, name)

    def targets(self, part: str) -> dict[str, str]:
        """Relationship id -> the member it points to, from the part's relationships (``_rels/``)."""
        folder, file = posixpath.split(part)
        rels = posixpath.join(folder, "_rels", file + ".rels")
        if rels not in self.names:
            return {}
        # A target is relative to the part's folder, or to the package's root when it starts with "/" (openpyxl's).
        return {r.get("Id", ""): posixpath.normpath(posixpath.join(folder, r.get("Target", ""))).lstrip("/")
                for r in self.whole(rels).iter(_REL + "Relationship")}


def small_part(archive: zipfile.ZipFile, name: str) -> ElementTree.Element:
    """A part that is small in any real file (an index of slides, sheets or chapters, relationships), parsed whole."""
    size = archive.getinfo(name).file_size
    if size > _MAX_INDEX_PART:
        raise Unreadable(f"{name} inflates to {size >> 20} MiB: not a real document's")
    return ElementTree.fromstring(archive.read(name))


def _open(path: Path, main: str, what: str) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(path)
    if main not in archive.namelist():
        archive.close()
        raise Unreadable(f"not {what}: it has no {main}")
    return archive


def docx_text(path: Path, text_limit: int) -> str:
    """A Word document's body in reading order: a line per paragraph, a table row as its cells joined by " | "."""
    lines: list[str] = []
    cells: list[str] = []  # the row being read
    cell: list[str] = []  # the cell being read: its paragraphs
    tables = 0  # nesting depth of tables at the parse position
    body = ElementTree.Element("body")  # the document's, once met: emptied after each of its paragraphs and tables
    with _open(path, "word/document.xml", "a Word document") as archive:
        reader = _Reader(archive, text_limit)
        for event, element in reader.events("word/document.xml"):
            tag = element.tag
            if event == "start":
                tables += tag == _W + "tbl"
                if tag == _W + "body":
                    body = element
                continue
            if tag == _W + "p":
                text = "".join((e.text or "") if e.tag == _W + "t" else _RUN_BREAKS[e.tag]
                               for e in element.iter() if e.tag == _W + "t" or e.tag in _RUN_BREAKS)
                element.clear()  # its text is taken: the tree keeps only empty elements
                if text.strip():  # not the empty paragraphs that hold pictures or space the page
                    (cell if tables else lines).append(text)
                    reader.text += len(text)
            elif tag == _W + "tc":
                cells.append(" ".join(part.strip() for part in cell if part.strip()))
                cell = []
            elif tag == _W + "tr":
                lines.append(" | ".join(cells))
                cells = []
            elif tag == _W + "tbl":
                tables -= 1
            if not tables and tag in (_W + "p", _W + "tbl"):
                body.clear()  # what it held is read: memory stays bounded by a paragraph or a table
    if not lines and reader.read >= MAX_XML_INFLATED:  # one endless paragraph: a bomb, or nothing a person wrote
        raise Unreadable(f"DOCX has no whole paragraph in its first {MAX_XML_INFLATED >> 20} MiB")
    return "\n".join(lines)


def pptx_slides(path: Path, text_limit: int) -> list[tuple[int, str]]:
    """(slide number, its text) in the order the presentation shows them: a line per paragraph of every shape and
    table on the slide, then its speaker notes."""
    with _open(path, "ppt/presentation.xml", "a PowerPoint presentation") as archive:
        reader = _Reader(archive, text_limit)
        targets = reader.targets("ppt/presentation.xml")
        order = [targets.get(s.get(_R + "id", ""), "") for s in reader.whole("ppt/presentation.xml").iter(_P + "sldId")]
        slides: list[tuple[int, str]] = []
        for number, part in enumerate(order, start=1):
            if reader.spent:
                break
            if part not in reader.names:
                continue
            notes = [t for t in reader.targets(part).values() if "/notesSlides/" in t and t in reader.names]
            lines = [line for name in [part, *notes] for line in _drawing_paragraphs(reader, name)]
            slides.append((number, "\n".join(line for line in lines if line.strip())))
    return slides


def _drawing_paragraphs(reader: _Reader, part: str) -> Iterator[str]:
    for event, element in reader.events(part):
        if event == "end" and element.tag == _A + "p":
            text = "".join((e.text or "") if e.tag == _A + "t" else "\n"
                           for e in element.iter() if e.tag in (_A + "t", _A + "br"))
            element.clear()
            reader.text += len(text)
            yield text


def xlsx_sheets(path: Path, text_limit: int) -> list[tuple[int, str, list[int]]]:
    """(sheet number, its text, each line's row number) for every sheet in the workbook's order. The text is the
    sheet's name, then a line per row: the row's filled cells joined by " | " (shared strings resolved, numbers as
    stored); the name's line counts as the sheet's first row, so a passage's lines map to the rows a person sees."""
    with _open(path, "xl/workbook.xml", "an Excel workbook") as archive:
        reader = _Reader(archive, text_limit)
        shared: list[str] = []
        if "xl/sharedStrings.xml" in reader.names:
            table = ElementTree.Element("sst")
            for event, element in reader.events("xl/sharedStrings.xml"):
                if event == "start" and element.tag == _S + "sst":
                    table = element
                elif event == "end" and element.tag == _S + "si":
                    shared.append("".join(t.text or "" for t in element.iter(_S + "t")))
                    table.clear()  # the strings read so far, this one included: no tree of them is kept
        targets = reader.targets("xl/workbook.xml")
        sheets: list[tuple[int, str, list[int]]] = []
        for number, sheet in enumerate(reader.whole("xl/workbook.xml").iter(_S + "sheet"), start=1):
            part = targets.get(sheet.get(_R + "id", ""), "")
            if reader.spent or part not in reader.names:
                continue
            lines, rows, row = [sheet.get("name", "")], [1], 0
            cells = ElementTree.Element("sheetData")
            for event, element in reader.events(part):
                if event == "start" and element.tag == _S + "sheetData":
                    cells = element
                elif event == "end" and element.tag == _S + "row":
                    # "r" is optional in the format: a row without it follows the one before.
                    stated = element.get("r", "")
                    row = int(stated) if stated.isdigit() else row + 1
                    values = [_cell(c, shared) for c in element.iter(_S + "c")]
                    cells.clear()  # the rows read so far, this one included: memory stays bounded by a row
                    line = " | ".join(v for v in values if v)
                    if line:
                        lines.append(line)
                        rows.append(row)
                        reader.text += len(line)
            rows[0] = rows[1] if len(rows) > 1 else 1
            sheets.append((number, "\n".join(lines), rows))
    return sheets


def _cell(cell: ElementTree.Element, shared: list[str]) -> str:
    kind, value = cell.get("t"), cell.findtext(_S + "v") or ""
    if kind == "s":
        return shared[int(value)] if value.isdigit() and int(value) < len(shared) else ""
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(_S + "t"))
    if kind == "b":
        return "TRUE" if value == "1" else "FALSE"
    return value


def odf_text(path: Path, text_limit: int) -> str:
    """An OpenDocument file's text in reading order (a text document's paragraphs and headings, a presentation's
    pages, a spreadsheet's sheets): a line per paragraph, a table row as its cells joined by " | ", a sheet's or
    table's name before its rows."""
    lines: list[str] = []
    cells: list[str] = []
    cell: list[str] = []
    tables = 0
    with _open(path, "content.xml", "an OpenDocument file") as archive:
        reader = _Reader(archive, text_limit)
        for event, element in reader.events("content.xml"):
            tag = element.tag
            if event == "start":
                if tag == _TABLE + "table":
                    tables += 1
                    lines.append(element.get(_TABLE + "name", ""))
                continue
            if tag in (_TEXT + "p", _TEXT + "h"):
                for space in element.iter(_TEXT + "s"):  # runs of spaces are written as <text:s text:c="n"/>
                    space.text = " " * min(int(space.get(_TEXT + "c") or 1), 64)  # a hostile count stays small
                for tab in element.iter(_TEXT + "tab"):
                    tab.text = "\t"
                for line_break in element.iter(_TEXT + "line-break"):
                    line_break.text = "\n"
                text = "".join(element.itertext())
                element.clear()
                if text.strip():
                    (cell if tables else lines).append(text)
                    reader.text += len(text)
            elif tag == _TABLE + "table-cell":
                cells.append(" ".join(part.strip() for part in cell))
                cell = []
            elif tag == _TABLE + "table-row":
                if any(cells):
                    lines.append(" | ".join(c for c in cells if c))
                cells = []
                element.clear()
            elif tag == _TABLE + "table":
                tables -= 1
    return "\n".join(line for line in lines if line)

