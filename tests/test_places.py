"""Where a photo was taken, as words: its GPS position (EXIF, XMP, Takeout's JSON) named by the nearest place of
GeoNames' table, the city a person would name and the country; found by those words. Torch-free."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import words_of
from fake_model import fake_session
from PIL import Image

from freeret_tui.engine.places import place_name
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.types import Kind


def _photo(path: Path, gps: dict[int, object] | None = None) -> Path:
    exif = Image.Exif()
    if gps:
        exif.get_ifd(0x8825).update(gps)
    Image.new("RGB", (32, 32), "teal").save(path, exif=exif.tobytes())
    return path


def test_a_position_is_named_by_the_nearest_place_its_city_and_country() -> None:
    """A city's district is named with its city; a town with its own name; nothing at sea, for 0, 0 (no fix) or
    for a position that is none."""
    assert place_name(38.7223, -9.1393) == "São Jorge de Arroios, Lisbon, Portugal"  # Lisbon's centre
    assert place_name(38.8, -9.38) == "Sintra, Cacém, Portugal"
    assert place_name(-33.8568, 151.2153) == "Sydney Central Business District, Sydney, Australia"
    assert place_name(64.1466, -21.9426) == "Reykjavík, Iceland"
    for nowhere in ((30.0, -40.0), (0.0, 0.0), (91.0, 0.0), (float("nan"), 1.0), (10.0, float("inf"))):
        assert place_name(*nowhere) == "", nowhere


def test_a_photo_s_gps_position_gives_it_words(tmp_path: Path) -> None:
    """EXIF's GPS block (south and west negative), an XMP sidecar's exif:GPSLatitude/Longitude, Takeout's geoData;
    the photo's own position first; a broken GPS block or Takeout's 0, 0 give none."""
    lisbon = _photo(tmp_path / "a.jpg", {1: "N", 2: (38.0, 43.0, 20.0), 3: "W", 4: (9.0, 8.0, 21.0)})
    assert words_of(lisbon) == "São Jorge de Arroios, Lisbon, Portugal"
    sydney = _photo(tmp_path / "b.jpg", {1: "S", 2: (33.0, 51.0, 24.0), 3: "E", 4: (151.0, 12.0, 55.0)})
    assert "Sydney, Australia" in words_of(sydney)
    (tmp_path / "b.jpg.json").write_text(json.dumps({"geoData": {"latitude": 64.1466, "longitude": -21.9426}}))
    assert "Iceland" not in words_of(sydney)  # the photo's own position wins
    broken = _photo(tmp_path / "c.jpg", {1: "N", 3: "W", 4: (9.0, 8.0, 21.0)})  # no latitude
    assert words_of(broken) == ""
    (tmp_path / "d.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="64,8.796N" '
        'exif:GPSLongitude="21,56.556W"/></rdf:RDF></x:xmpmeta>')
    assert words_of(_photo(tmp_path / "d.jpg")) == "Reykjavík, Iceland"
    (tmp_path / "e.jpg.json").write_text(json.dumps({"geoData": {"latitude": 41.1496, "longitude": -8.611}}))
    assert words_of(_photo(tmp_path / "e.jpg")) == "Porto, Portugal"
    (tmp_path / "f.jpg.json").write_text(json.dumps({"geoData": {"latitude": 0.0, "longitude": 0.0}}))
    assert words_of(_photo(tmp_path / "f.jpg")) == ""


def test_photos_are_found_by_where_they_were_taken(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "IMG_0001.jpg", {1: "N", 2: (41.0, 8.0, 58.0), 3: "W", 4: (8.0, 36.0, 40.0)})  # Porto
    _photo(photos / "IMG_0002.jpg")  # no position
    session = fake_session()
    session.index([photos])
    found = [h.path.name for h in session.search(Query("porto"), Filters(kinds=(Kind.IMAGE,))).hits
             if h.lexical_score is not None]
    assert found == ["IMG_0001.jpg"]
