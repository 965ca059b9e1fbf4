"""Sidecars: the words and dates a photo manager (darktable, digiKam, Lightroom) or Google Takeout writes beside a
photo, read with the photo. Torch-free."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from freeret_tui.engine.photo_meta import photo_meta
from freeret_tui.engine.sidecars import photos_beside

# What darktable writes beside IMG_0001.jpg (as IMG_0001.jpg.xmp): the date as an attribute, keywords as a bag.
DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/"
 exif:DateTimeOriginal="2019-07-14T18:30:00+01:00">
<dc:subject><rdf:Bag><rdf:li>{keyword}</rdf:li><rdf:li>tram</rdf:li></rdf:Bag></dc:subject>
</rdf:Description></rdf:RDF></x:xmpmeta>"""
# Lightroom's, beside IMG_0004.CR2 and its JPEG as IMG_0004.xmp: a date without a time.
LIGHTROOM = """<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"><photoshop:DateCreated>2018-03-02
</photoshop:DateCreated><photoshop:Headline>Harbour at dawn</photoshop:Headline></rdf:Description></rdf:RDF>
</x:xmpmeta>"""
TAKEN_2020 = datetime(2020, 8, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def _takeout(title: str, description: str = "", people: tuple[str, ...] = ()) -> str:
    return json.dumps({"title": title, "description": description, "imageViews": "3",
                       "photoTakenTime": {"timestamp": str(int(TAKEN_2020)), "formatted": "1 Aug 2020, 12:00:00 UTC"},
                       "people": [{"name": n} for n in people], "url": "https://photos.google.com/photo/x"})


def _photo(path: Path, colour: str = "orange", taken: str = "") -> Path:
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    Image.new("RGB", (48, 32), colour).save(path, exif=exif.tobytes())
    return path


def test_a_photo_s_sidecars_give_its_words_and_date(tmp_path: Path) -> None:
    """darktable's and Takeout's beside one photo (each word once; XMP's date before Takeout's); the camera's EXIF
    date before either; Lightroom's by the photo's stem; Takeout's names cut to 51 characters."""
    one = _photo(tmp_path / "IMG_0001.jpg")
    (tmp_path / "IMG_0001.jpg.xmp").write_text(DARKTABLE.format(keyword="Lisbon"))
    (tmp_path / "IMG_0001.jpg.supplemental-metadata.json").write_text(
        _takeout("IMG_0001.jpg", "Ana waving from tram 28", ("Ana", "Rui", "ana")))
    taken, words = photo_meta(one)
    assert words.splitlines() == ["Lisbon", "tram", "Ana waving from tram 28", "Ana", "Rui"]  # not its file name
    assert taken == datetime(2019, 7, 14, 17, 30, tzinfo=timezone.utc).timestamp()

    camera = _photo(tmp_path / "IMG_0002.jpg", taken="2001:02:03 04:05:06")
    (tmp_path / "IMG_0002.jpg.json").write_text(_takeout("Grandma's garden"))  # Takeout's older name
    assert photo_meta(camera) == (datetime(2001, 2, 3, 4, 5, 6).timestamp(), "Grandma's garden")
    alone = _photo(tmp_path / "IMG_0003.jpg")
    (tmp_path / "IMG_0003.jpg.json").write_text(_takeout("IMG_0003.jpg", people=("Rui",)))
    assert photo_meta(alone) == (TAKEN_2020, "Rui")

    lightroom = _photo(tmp_path / "IMG_0004.jpg")
    (tmp_path / "IMG_0004.xmp").write_text(LIGHTROOM)
    assert photo_meta(lightroom) == (datetime(2018, 3, 2).timestamp(), "Harbour at dawn")

    for name, sidecar in (("Screenshot_2017-07-05-10-05-26.png", "Screenshot_2017-07-05-10-05-26.png.supplementa.json"),
                          ("Urlaub in Knaufspesch in der Schneifel (38).JPG",
                           "Urlaub in Knaufspesch in der Schneifel (38).JP.json")):
        (tmp_path / sidecar).write_text(_takeout(name, f"caption of {name[:6]}"))
        assert photo_meta(_photo(tmp_path / name)) == (TAKEN_2020, f"caption of {name[:6]}")
    names = ["IMG_0001.jpg.xmp", "IMG_0004.xmp", "Screenshot_2017-07-05-10-05-26.png.supplementa.json", "x.json"]
    assert [p.name for p in photos_beside(tmp_path, names)] == ["IMG_0001.jpg", "IMG_0004.jpg",
                                                               "Screenshot_2017-07-05-10-05-26.png"]


def test_hostile_sidecars_give_nothing_and_never_hang(tmp_path: Path) -> None:
    """A FIFO named like a sidecar is not opened (a read would wait for ever), nor a link; broken, deep, huge or odd
    JSON and XML give no words and no date; the photo's own words stay."""
    cases = {
        "broken.jpg.json": "{not json",
        "deep.jpg.json": "[" * 100_000,
        "list.jpg.json": json.dumps(["Ana"]),
        "odd.jpg.json": json.dumps({"description": 5, "people": "Ana", "photoTakenTime": {"timestamp": "soon"}}),
        "huge.jpg.json": json.dumps({"description": "x" * (2 << 20)}),
        "bad.jpg.xmp": "<x:xmpmeta><unclosed>",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        assert photo_meta(_photo(tmp_path / name.rsplit(".", 1)[0])) == (None, ""), name
    os.mkfifo(tmp_path / "fifo.jpg.xmp")
    (tmp_path / "elsewhere.xmp").write_text(DARKTABLE.format(keyword="linked"))
    (tmp_path / "link.jpg.xmp").symlink_to(tmp_path / "elsewhere.xmp")
    started = time.monotonic()
    assert photo_meta(_photo(tmp_path / "fifo.jpg")) == (None, "")
    assert photo_meta(_photo(tmp_path / "link.jpg")) == (None, "")
    assert time.monotonic() - started < 5
