"""What a photo says about itself: its EXIF date, and the words its owner or photo manager gave it (XMP, IPTC,
EXIF and Windows' fields) — searchable by words and shown, never part of its vector. Torch-free."""

from __future__ import annotations

import hashlib
import io
import struct
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import taken_of, wait_for, words_of, write_xmp
from fake_model import FakeModel, fake_session
from PIL import Image, PngImagePlugin

from freeret_tui.engine.prompts import Side
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.types import Content, Kind

XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
 xmlns:lr="http://ns.adobe.com/lightroom/1.0/" photoshop:City="Lisbon">
<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Tram 28</rdf:li></rdf:Alt></dc:title>
<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Ana waving from the yellow tram</rdf:li></rdf:Alt>
</dc:description>
<dc:subject><rdf:Bag><rdf:li>tram</rdf:li><rdf:li>holiday</rdf:li><rdf:li>Lisbon</rdf:li></rdf:Bag></dc:subject>
<lr:hierarchicalSubject><rdf:Bag><rdf:li>People|Family|Ana</rdf:li></rdf:Bag></lr:hierarchicalSubject>
</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"""


def _iptc_segment(**datasets: bytes) -> bytes:
    """A JPEG APP13 segment (Photoshop 3.0, resource 0x0404) holding IPTC IIM datasets of record 2."""
    numbers = {"keywords": 25, "caption": 120, "city": 90}
    iim = b"".join(b"\x1c\x02" + bytes([numbers[name.rstrip("_0123456789")]]) + struct.pack(">H", len(value)) + value
                   for name, value in datasets.items())
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iim)) + iim
    body = b"Photoshop 3.0\x00" + resource + (b"\x00" if len(iim) % 2 else b"")
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def _jpeg(path: Path, *, xmp: str = "", exif: Image.Exif | None = None, app13: bytes = b"",
          colour: str = "orange") -> Path:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(out, "JPEG", xmp=xmp.encode(), exif=b"" if exif is None else exif.tobytes())
    data = out.getvalue()
    path.write_bytes(data[:2] + app13 + data[2:])  # APP13 right after the start-of-image marker
    return path


def test_a_photo_s_own_words_from_xmp_iptc_and_exif(tmp_path: Path) -> None:
    assert words_of(_jpeg(tmp_path / "xmp.jpg", xmp=XMP)).splitlines() == [
        "Lisbon", "Tram 28", "Ana waving from the yellow tram", "tram", "holiday", "People Family Ana"]
    iptc = _jpeg(tmp_path / "iptc.jpg", app13=_iptc_segment(keywords=b"garden", keywords_2=b"roses",
                                                            caption="Grand-mère's roses".encode()))
    assert words_of(iptc).splitlines() == ["garden", "roses", "Grand-mère's roses"]
    exif = Image.Exif()
    exif[271], exif[272] = "OLYMPUS", "E-M10"
    exif[270] = "OLYMPUS DIGITAL CAMERA"  # what the camera wrote: not a description
    exif[40094] = "kayak;river".encode("utf-16-le") + b"\x00\x00"  # Windows' XPKeywords
    assert words_of(_jpeg(tmp_path / "camera.jpg", exif=exif)) == "kayak;river"
    exif[270] = "E-M10"  # the model's name is no description either
    exif[40094] = b""
    assert words_of(_jpeg(tmp_path / "model.jpg", exif=exif)) == ""
    exif[270] = "First snow on the balcony"
    assert words_of(_jpeg(tmp_path / "described.jpg", exif=exif)) == "First snow on the balcony"
    # A PNG keeps XMP in an iTXt chunk; a broken packet, a broken file and a note say nothing.
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    Image.new("RGB", (8, 8)).save(tmp_path / "tagged.png", pnginfo=info)
    assert "Tram 28" in words_of(tmp_path / "tagged.png")
    assert words_of(_jpeg(tmp_path / "bad-xmp.jpg", xmp="<x:xmpmeta><unclosed>")) == ""
    # Faces marked by name: Metadata Working Group regions (as an attribute, as an element) and Microsoft's.
    faces = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/" xmlns:MP=
"http://ns.microsoft.com/photo/1.2/" xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#" xmlns:MPReg=
"http://ns.microsoft.com/photo/1.2/t/Region#"><mwg-rs:Regions rdf:parseType="Resource"><mwg-rs:RegionList><rdf:Bag>
<rdf:li><rdf:Description mwg-rs:Name="Rui" mwg-rs:Type="Face"/></rdf:li>
<rdf:li rdf:parseType="Resource"><mwg-rs:Name>Marta</mwg-rs:Name><mwg-rs:Type>Face</mwg-rs:Type></rdf:li>
</rdf:Bag></mwg-rs:RegionList></mwg-rs:Regions><MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag>
<rdf:li MPReg:PersonDisplayName="Ana Lopes"/></rdf:Bag></MPRI:Regions></MP:RegionInfo></rdf:Description></rdf:RDF>
</x:xmpmeta>"""
    assert words_of(_jpeg(tmp_path / "faces.jpg", xmp=faces)).splitlines() == ["Rui", "Marta", "Ana Lopes"]
    # Entities expanding to a billion "lol"s: expat refuses the amplification, and the photo has no words.
    entities = '<!ENTITY a0 "lol">' + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    laughs = XMP.replace("Tram 28", "&a9;").replace('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
                                                    f"<!DOCTYPE x [{entities}]>")
    assert "<!DOCTYPE" in laughs and words_of(_jpeg(tmp_path / "laughs.jpg", xmp=laughs)) == ""
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe1 not an image")
    (tmp_path / "note.txt").write_text("Lisbon")
    assert words_of(tmp_path / "broken.jpg") == words_of(tmp_path / "note.txt") == ""


def test_exif_dates_with_and_without_an_offset(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:00"
    assert taken_of(_jpeg(tmp_path / "local.jpg", exif=exif)) == datetime(2019, 7, 14, 18, 30).timestamp()
    exif.get_ifd(0x8769)[36881] = "+02:00"  # 18:30 in UTC+02:00 is 16:30 UTC, whatever this machine's zone
    assert taken_of(_jpeg(tmp_path / "offset.jpg", exif=exif)) == datetime(2019, 7, 14, 16, 30,
                                                                         tzinfo=timezone.utc).timestamp()
    blank = Image.Exif()
    blank.get_ifd(0x8769)[36867] = "0000:00:00 00:00:00"  # cameras without a clock set write zeros
    assert taken_of(_jpeg(tmp_path / "blank.jpg", exif=blank)) is None
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe1 not an image")
    assert taken_of(tmp_path / "broken.jpg") is None


def test_reading_a_png_s_header_does_not_decode_its_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL's own getexif() decodes a whole PNG to look for EXIF after its pixels: a 200 MP PNG that load_image
    refuses would be decoded just to read its date."""
    from PIL import ImageFile

    loads: list[object] = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real(self))
    Image.new("RGB", (64, 64)).save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:00"
    Image.new("RGB", (64, 64)).save(tmp_path / "dated.png", exif=exif.tobytes())
    assert taken_of(tmp_path / "plain.png") is None and words_of(tmp_path / "plain.png") == ""
    assert taken_of(tmp_path / "dated.png") == datetime(2019, 7, 14, 18, 30).timestamp()
    assert loads == []


def test_a_tagged_photo_is_found_by_its_words_and_its_vector_is_its_pixels(tmp_path: Path) -> None:
    (tmp_path / "tagged").mkdir()
    (tmp_path / "plain").mkdir()
    _jpeg(tmp_path / "tagged" / "IMG_0042.jpg", xmp=XMP)
    _jpeg(tmp_path / "plain" / "IMG_0042.jpg")  # the same pixels, no words
    _jpeg(tmp_path / "plain" / "IMG_0043.jpg", colour="navy")
    session = fake_session()
    session.index([tmp_path / "tagged", tmp_path / "plain"])
    hits = session.search(Query("lisbon tram"), Filters(kinds=(Kind.IMAGE,))).hits
    assert hits[0].path == tmp_path / "tagged" / "IMG_0042.jpg" and hits[0].lexical_score is not None
    assert "Ana waving from the yellow tram" in hits[0].text  # shown with the hit
    # The words never reach the vector: both copies of the pixels sit at cosine 1 from the pixels' own vector.
    pixels = FakeModel().embed([Content(image=tmp_path / "plain" / "IMG_0042.jpg")], Side.CANDIDATE)[0]
    nearest = session.store.dense(pixels, 2)
    assert [s for _, s in nearest] == [pytest.approx(1.0, abs=1e-5)] * 2


def test_the_tui_shows_a_photo_s_words_as_text(tmp_path: Path) -> None:
    """On the hit's row and under the picture in the preview, as text: markup and escapes stay visible."""
    import asyncio

    from rich.console import Console

    from freeret_tui.settings import load_settings
    from freeret_tui.tui.app import create_app
    from freeret_tui.tui.widgets import Preview, ResultList

    exif = Image.Exif()
    exif[270] = "Sunset [b]over[/b] the bay \x1b[31m"
    (tmp_path / "photos").mkdir()
    _jpeg(tmp_path / "photos" / "IMG_0042.jpg", exif=exif)
    app = create_app([tmp_path / "photos"], load_settings({"model": "fake-model", "rerank": False}),
                     opener=lambda p: None, image_mode="halfcell", loader=lambda _c: FakeModel())

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: app.backend.model is not None
                           and app.backend.status().counts["indexed"] == 1)
            await pilot.press(*"sunset", "enter")
            await wait_for(pilot, lambda: bool(app.screen.query(".preview-image")))
            console = Console(width=200, record=True, file=io.StringIO())
            console.print(app.screen.query_one(ResultList).get_option_at_index(0).prompt)
            row = console.export_text()
            body = str(app.screen.query_one(Preview).query_one("#preview-body").render())
            for shown in (row, body):
                assert "Sunset [b]over[/b] the bay \\x1b[31m" in shown, shown

    asyncio.run(scenario())


def test_an_older_index_reads_its_photos_words_and_dates_once_without_the_model(tmp_path: Path) -> None:
    """An index made before photos' dates and words were read (schema 4: the migration asks for them) gets them
    at the next start, from the headers alone: the model embeds nothing again."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:07:14 18:30:00"
    (tmp_path / "photos").mkdir()
    _jpeg(tmp_path / "photos" / "IMG_0042.jpg", xmp=XMP, exif=exif)
    session = fake_session()
    session.index([tmp_path / "photos"])
    store = session.store
    assert store.photos_to_reread() is None  # a new index: read as indexed
    embedded = store.embedded_items
    with store.transaction():  # what an index of schema 4 holds, and what its migration to 5 adds
        store._db.execute("UPDATE files SET taken = NULL")
        store._db.execute("UPDATE items SET text = ''")
        store._db.execute("UPDATE items_fts SET text = ''")
        store._db.execute("INSERT INTO meta(key, value) VALUES ('reread_photos', '1')")
    assert session.search(Query("lisbon"), Filters(kinds=(Kind.IMAGE,))).hits[0].lexical_score is None
    session.index([tmp_path / "photos"])
    [hit] = session.search(Query("lisbon"), Filters(kinds=(Kind.IMAGE,))).hits
    assert hit.lexical_score is not None and "Tram 28" in hit.text
    assert hit.dated == datetime(2019, 7, 14, 18, 30).timestamp()
    assert store.embedded_items == embedded and store.photos_to_reread() is None


def test_the_pixels_digest_leaves_out_what_a_photo_says_about_itself(tmp_path: Path) -> None:
    """Keywords, captions and comments written into a JPEG or PNG keep its digest; other pixels, another
    orientation (the model sees the picture turned) or a file that does not parse do not."""
    from freeret_tui.engine.photo_meta import pixels_digest

    photo = _jpeg(tmp_path / "a.jpg")
    digest = pixels_digest(photo)
    write_xmp(photo, XMP)
    data = photo.read_bytes()
    photo.write_bytes(data[:2] + b"\xff\xfe\x00\x07hello" + _iptc_segment(keywords=b"tram") + data[2:])  # COM, IPTC
    assert digest is not None and pixels_digest(photo) == digest and "Tram 28" in words_of(photo)
    assert pixels_digest(_jpeg(tmp_path / "b.jpg", colour="navy")) != digest
    turned = Image.Exif()
    turned[274] = 6  # rotated 90 degrees
    assert pixels_digest(_jpeg(tmp_path / "c.jpg", exif=turned)) != digest
    Image.new("RGB", (48, 32), "orange").save(tmp_path / "d.png")
    png = pixels_digest(tmp_path / "d.png")
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    Image.new("RGB", (48, 32), "orange").save(tmp_path / "e.png", pnginfo=info)
    assert png is not None and pixels_digest(tmp_path / "e.png") == png
    (tmp_path / "f.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (8, 8)).save(tmp_path / "g.webp")
    assert pixels_digest(tmp_path / "f.jpg") is None and pixels_digest(tmp_path / "g.webp") is None


def test_words_written_into_a_photo_keep_its_vectors(tmp_path: Path) -> None:
    """A photo manager writes a keyword into the file (its content hash changes, its pixels do not): found by it,
    dated by it, nothing embedded again; the same photo with other pixels is embedded again."""
    (tmp_path / "photos").mkdir()
    photo = _jpeg(tmp_path / "photos" / "IMG_0042.jpg")
    session = fake_session()
    session.index([tmp_path / "photos"])
    store = session.store
    embedded = store.embedded_items
    write_xmp(photo, XMP.replace('photoshop:City="Lisbon"', 'photoshop:City="Lisbon" '
                                 'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:DateTimeOriginal="2019-07-14"'))
    stats, _ = session.index([tmp_path / "photos"])
    [hit] = session.search(Query("lisbon"), Filters(kinds=(Kind.IMAGE,))).hits
    assert hit.lexical_score is not None and hit.dated == datetime(2019, 7, 14).timestamp()
    assert (stats.files_unchanged, stats.files_reread, store.embedded_items) == (1, 1, embedded)
    assert store.file_row(photo).sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
    _jpeg(photo, colour="navy")  # edited pixels (and no words)
    session.index([tmp_path / "photos"])
    assert store.embedded_items == embedded + 1
