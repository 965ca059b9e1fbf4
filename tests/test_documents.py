"""PDF, DOCX and HTML extraction with real files made in the test: text per page, tables, and recorded skips."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from freeret_tui.engine.chunking import word_spans
from freeret_tui.engine.extract import extract
from freeret_tui.engine.types import Skip


def make_pdf(pages: list[str]) -> bytes:
    """A minimal, valid PDF with one line of Helvetica text per page (an empty string: a page with no text)."""
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_text_is_chunked_per_page(tmp_path: Path) -> None:
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(make_pdf(["Quarterly bicycle sales rose in spring.", "", "Rainfall data for the city of Porto."]))
    chunks = extract(pdf, word_spans)
    assert isinstance(chunks, list)
    # page 2 has no text: it becomes a page item the model reads as an image
    assert [(c.page, c.kind.value, c.location) for c in chunks] == [(1, "text", "p. 1"), (2, "page", "p. 2"),
                                                                     (3, "text", "p. 3")]
    assert "bicycle" in chunks[0].text and "Porto" in chunks[2].text
    assert [c.chunk_no for c in chunks] == [0, 1, 2]


def test_bad_pdfs_are_skipped_with_reasons(tmp_path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    good = make_pdf(["Some text that is long enough to count."])
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    (tmp_path / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (tmp_path / "ok.pdf").write_bytes(good)
    writer = PdfWriter()
    writer.append(PdfReader(tmp_path / "ok.pdf"))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    with (tmp_path / "locked.pdf").open("wb") as f:
        writer.write(f)
    expected = {"garbage.pdf": "cannot decode PDF", "truncated.pdf": "cannot decode PDF",
                "locked.pdf": "encrypted PDF"}
    for name, reason in expected.items():
        result = extract(tmp_path / name, word_spans)
        assert isinstance(result, Skip) and reason in result.reason, (name, result)


def test_docx_paragraphs_and_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("Packing list for the hiking trip.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "item", "weight"
    table.cell(1, 0).text, table.cell(1, 1).text = "tent", "2.1 kg"
    document.save(str(tmp_path / "trip.docx"))
    [chunk] = extract(tmp_path / "trip.docx", word_spans)
    assert "Packing list" in chunk.text and "tent | 2.1 kg" in chunk.text
    assert chunk.location == ""  # its lines are the extracted text's: no viewer numbers them
    (tmp_path / "fake.docx").write_bytes(b"PK\x03\x04 not a zip")
    result = extract(tmp_path / "fake.docx", word_spans)
    assert isinstance(result, Skip) and "cannot decode DOCX" in result.reason
    with zipfile.ZipFile(tmp_path / "other.docx", "w") as archive:  # a zip, but not a Word document
        archive.writestr("content.xml", "<x/>")
    result = extract(tmp_path / "other.docx", word_spans)
    assert isinstance(result, Skip) and result.reason == "not a Word document: it has no word/document.xml"


def test_a_docx_full_of_photos_is_read_without_its_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the body's XML counts against the budget: a report whose pictures are over it still gives its text
    (a 38.6 MB report with 18 photos was refused while the budget counted every part of the file)."""
    import docx

    from freeret_tui.engine import office

    picture = io.BytesIO()
    Image.effect_noise((600, 400), 64).convert("RGB").save(picture, "PNG")  # noise: does not deflate
    picture.seek(0)
    document = docx.Document()
    document.add_paragraph("Site visit: the north wall shows cracks near the window.")
    document.add_picture(picture)
    document.add_paragraph("Photo 1: the crack, seen from the garden.")
    document.save(str(tmp_path / "report.docx"))
    assert (tmp_path / "report.docx").stat().st_size > 200_000
    monkeypatch.setattr(office, "MAX_XML_INFLATED", 65536)
    [chunk] = extract(tmp_path / "report.docx", word_spans)
    # The picture's paragraph holds no text: no line of its own.
    assert chunk.text == ("Site visit: the north wall shows cracks near the window.\n"
                          "Photo 1: the crack, seen from the garden.")


def test_pptx_slides_are_pages_in_show_order_with_their_notes(tmp_path: Path) -> None:
    """Each slide's text (titles, bodies, tables) and its speaker notes, a slide a page, in the order the deck shows
    them, which is not the order their files were made in."""
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    first = deck.slides.add_slide(deck.slide_layouts[1])
    first.shapes.title.text = "Quarterly review"
    first.placeholders[1].text = "Revenue up 12%\nNew office in Lyon"
    second = deck.slides.add_slide(deck.slide_layouts[5])
    second.shapes.title.text = "Team"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for (row, col), text in {(0, 0): "name", (0, 1): "role", (1, 0): "Ana", (1, 1): "indexing"}.items():
        table.cell(row, col).text = text
    second.notes_slide.notes_text_frame.text = "Mention the hiring plan."
    order = deck.slides._sldIdLst  # the team slide moved first, as a person drags it in PowerPoint
    moved = order[1]
    order.remove(moved)
    order.insert(0, moved)
    deck.save(str(tmp_path / "deck.pptx"))
    chunks = extract(tmp_path / "deck.pptx", word_spans)
    assert not isinstance(chunks, Skip)
    assert [(c.page, c.text) for c in chunks] == [
        (1, "Team\nname\nrole\nAna\nindexing\nMention the hiring plan."),
        (2, "Quarterly review\nRevenue up 12%\nNew office in Lyon")]
    assert chunks[0].location == "slide 1"  # where a person looks for it in the deck


def test_xlsx_sheets_give_their_names_and_rows(tmp_path: Path) -> None:
    """Every sheet in order: its name, then a line per row of its filled cells (shared strings, numbers and
    booleans as a person reads them); a zip that is no workbook is a recorded skip."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Budget"
    for row in (["item", "cost", "paid"], ["bike chain", 85, True], ["tyre", 42.5, False]):
        sheet.append(row)
    book.create_sheet("Notes")["B3"] = "call the shop on Monday"
    book.save(str(tmp_path / "budget.xlsx"))
    budget, notes = extract(tmp_path / "budget.xlsx", word_spans)
    assert budget.text == "Budget\nitem | cost | paid\nbike chain | 85 | TRUE\ntyre | 42.5 | FALSE"
    assert notes.text == "Notes\ncall the shop on Monday"
    # A sheet is a page and a passage's lines are the rows a person sees (the note is in row 3).
    assert [budget.location, notes.location] == ["sheet 1, rows 1-3", "sheet 2, row 3"]
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(tmp_path / "bare.xlsx", "w") as archive:  # rows without "r", as the format allows
        archive.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                                            '<sheet name="Log" sheetId="1" r:id="rId1"/></sheets></workbook>')
        archive.writestr("xl/_rels/workbook.xml.rels",
                         '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                         '<Relationship Id="rId1" Target="worksheets/sheet1.xml"/></Relationships>')
        archive.writestr("xl/worksheets/sheet1.xml", f'<worksheet xmlns="{main}"><sheetData>'
                         + "".join(f'<row><c t="inlineStr"><is><t>{w}</t></is></c></row>' for w in ("", "oil", "tea"))
                         + "</sheetData></worksheet>")
    [log] = extract(tmp_path / "bare.xlsx", word_spans)
    assert log.text == "Log\noil\ntea" and log.location == "sheet 1, rows 2-3"
    with zipfile.ZipFile(tmp_path / "other.xlsx", "w") as archive:
        archive.writestr("content.xml", "<x/>")
    result = extract(tmp_path / "other.xlsx", word_spans)
    assert isinstance(result, Skip) and result.reason == "not an Excel workbook: it has no xl/workbook.xml"


def test_opendocument_text_and_tables(tmp_path: Path) -> None:
    """An ODT (LibreOffice's format) as its XML is written: headings, paragraphs with spans, runs of spaces and tabs,
    then a table under its name; a space count far too large stays small."""
    office = ('<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
              'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
              'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"><office:body><office:text>'
              '<text:h>Dear landlord</text:h><text:p>The heating<text:s text:c="3"/>broke on '
              '<text:span>Monday</text:span>.<text:tab/>Please fix it.</text:p>'
              '<table:table table:name="Costs"><table:table-row><table:table-cell><text:p>plumber</text:p>'
              '</table:table-cell><table:table-cell/><table:table-cell><text:p>120</text:p></table:table-cell>'
              '</table:table-row></table:table><text:p>a<text:s text:c="999999999"/>b</text:p>'
              '</office:text></office:body></office:document-content>')
    with zipfile.ZipFile(tmp_path / "letter.odt", "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", office)
    [chunk] = extract(tmp_path / "letter.odt", word_spans)
    assert chunk.text == ("Dear landlord\nThe heating   broke on Monday.\tPlease fix it.\nCosts\nplumber | 120\n"
                          f"a{' ' * 64}b")


def test_an_epub_reads_its_chapters_in_spine_order(tmp_path: Path) -> None:
    """A book's chapters in the order its spine lists them (not their files' order), each as a browser shows it;
    a zip that is no book is a recorded skip."""
    container = ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                 '<rootfile full-path="OEBPS/content.opf"/></rootfiles></container>')
    package = ('<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
               '<item id="a" href="ch%201.xhtml"/><item id="b" href="text/ch2.xhtml"/></manifest>'
               '<spine><itemref idref="b"/><itemref idref="a"/></spine></package>')
    with zipfile.ZipFile(tmp_path / "book.epub", "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr("META-INF/container.xml", container)
        archive.writestr("OEBPS/content.opf", package)
        archive.writestr("OEBPS/ch 1.xhtml", "<html><body><h1>Chapter two</h1><p>The storm passed.</p></body></html>")
        archive.writestr("OEBPS/text/ch2.xhtml",
                         "<html><head><title>One</title><script>x()</script></head><body><p>It began at sea."
                         "</p></body></html>")
    [chunk] = extract(tmp_path / "book.epub", word_spans)
    assert chunk.text == "One\nIt began at sea.\n\nChapter two\nThe storm passed."
    with zipfile.ZipFile(tmp_path / "notes.epub", "w") as archive:
        archive.writestr("readme.txt", "not a book")
    result = extract(tmp_path / "notes.epub", word_spans)
    assert isinstance(result, Skip) and result.reason == "not an EPUB book: it has no META-INF/container.xml"


def test_html_pages_give_the_text_a_browser_shows(tmp_path: Path) -> None:
    """A saved page or a note exported as HTML: its title and body text, entities decoded, a line per block; not
    its scripts, styles or head; a page whose head is never closed still gives its body; broken markup is read."""
    (tmp_path / "trip.html").write_text(
        "<!doctype html><html><head><title>Porto &amp; Foz</title><style>p { color: red }</style>"
        "<script>var token = 'secret-token';</script></head><body><h1>Day one</h1><p>Grilled <b>sardines</b>"
        "&nbsp;by the Douro.</p><ul><li>tram 1</li><li>lighthouse</li></ul><div>no closing tags <p>here",
        encoding="utf-8")
    [chunk] = extract(tmp_path / "trip.html", word_spans)
    assert chunk.text == ("Porto & Foz\nDay one\nGrilled sardines by the Douro.\ntram 1\nlighthouse\n"
                          "no closing tags\nhere")
    (tmp_path / "keep.htm").write_text("<html><head><title>Shopping</title><meta charset=utf-8><body>eggs, milk")
    [chunk] = extract(tmp_path / "keep.htm", word_spans)
    assert chunk.text == "Shopping\neggs, milk"
    (tmp_path / "empty.html").write_text("<html><head><script>only(code)</script></head></html>")
    assert isinstance(extract(tmp_path / "empty.html", word_spans), Skip)


def test_scanned_pdf_pages_become_page_images(tmp_path: Path, photos: Path) -> None:
    from PIL import Image

    from freeret_tui.engine.indexer import text_only
    from freeret_tui.engine.pictures import load_image
    from freeret_tui.engine.types import Kind, PageImage

    scan = tmp_path / "scan.pdf"  # what a scanner writes: pages that are pictures, no text layer
    pages = [Image.open(photos / "chelsea.png").convert("RGB"), Image.open(photos / "rocket.jpg").convert("RGB")]
    pages[0].save(scan, save_all=True, append_images=pages[1:])
    mixed = tmp_path / "mixed.pdf"
    mixed.write_bytes(make_pdf(["A typed first page about the bicycle trip to Porto.", ""]))

    chunks = extract(scan, word_spans)
    assert isinstance(chunks, list) and [(c.kind, c.page) for c in chunks] == [(Kind.PAGE, 1), (Kind.PAGE, 2)]
    assert chunks[1].content().image == PageImage(scan, 2)
    picture = load_image(chunks[1].content().image, max_side=256)
    assert max(picture.size) == 256 and picture.mode == "RGB"
    assert abs(picture.size[0] / picture.size[1] - 640 / 427) < 0.02  # the page keeps the photo's shape

    kinds = [c.kind for c in extract(mixed, word_spans)]
    assert kinds == [Kind.TEXT, Kind.PAGE]
    passages = text_only(extract(mixed, word_spans), "text-model")
    assert isinstance(passages, list) and [c.kind for c in passages] == [Kind.TEXT]
    skip = text_only(chunks, "text-model")
    assert isinstance(skip, Skip) and "scanned pages" in skip.reason


def test_a_scanned_pdf_is_indexed_searched_and_reranked_by_a_vlm(tmp_path: Path, photos: Path, idefics3) -> None:
    from PIL import Image

    from freeret_tui.engine.indexer import index_files
    from freeret_tui.engine.search import Query, Searcher, SearchOptions
    from freeret_tui.engine.store import Store
    from freeret_tui.engine.types import Kind, PageImage

    folder = tmp_path / "docs"
    folder.mkdir()
    Image.open(photos / "coins.png").convert("RGB").save(folder / "scan.pdf")
    (folder / "note.txt").write_text("Coins from the old collection.\n")
    store = Store(tmp_path / "index.db")
    stats = index_files(store, idefics3, [(folder, folder / "scan.pdf"), (folder, folder / "note.txt")])
    assert stats.skipped == () and stats.items_added == 2
    result = Searcher(store, idefics3).search(Query("coins"), SearchOptions(mode="dense", k=2, rerank=True))
    page = next(h for h in result.hits if h.kind is Kind.PAGE)
    assert page.image == PageImage(folder / "scan.pdf", 1) and page.location == "p. 1"
    assert result.reranked and page.rerank_prob is not None
