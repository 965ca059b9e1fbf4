"""What a photo says about itself, read from its header without decoding its pixels and from its sidecars
(sidecars.py finds them): when it was taken (EXIF, XMP, Takeout's JSON), the words a person or their photo
manager gave it — title, caption, keywords, place, people (XMP, IPTC, EXIF/Windows, Takeout) — and where it was
taken, as the name of the nearest town (its GPS position: places.py).

The words go into the full-text index, onto the screen, and beside the photo when the model reranks or answers over
it (a hit is what its owner sees), never into its vector: that is its pixels' alone, as FreeRet embeds an image,
while "Lisbon" typed by its owner finds the photos they tagged so by words.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, NamedTuple
from xml.etree import ElementTree

from freeret_tui.engine.pictures import IMAGE_EXTENSIONS, register_heif
from freeret_tui.engine.places import exif_position, place_name, xmp_position
from freeret_tui.engine.sidecars import MAX_SIDECAR_BYTES, sidecars

_GPS_IFD = 0x8825  # EXIF's GPS block: where the picture was taken (places.py names it)
# EXIF tags (Exif IFD): when the picture was taken, when it was digitised, and their UTC offsets ("+02:00").
_EXIF_IFD, _TAKEN, _DIGITISED, _TAKEN_OFFSET, _DIGITISED_OFFSET = 0x8769, 36867, 36868, 36881, 36882
# IFD0: ImageDescription, Make, Model; Windows' XPTitle, XPComment, XPKeywords, XPSubject (UTF-16LE).
_DESCRIPTION, _MAKE, _MODEL = 270, 271, 272
_WINDOWS = (40091, 40095, 40092, 40094)
# What cameras write as ImageDescription when nobody described the photo: words that would match every query about
# a camera and describe nothing.
_CAMERA_DEFAULTS = frozenset({"olympus digital camera", "sony dsc", "digital camera", "kodak digital still camera",
                              "minolta digital camera", "default", "exif_jpeg_picture", "dcf 1.0", "image", "picture",
                              "photo", "samsung", "lg", "hdr", "dsc", "jpeg", "untitled"})
# XMP properties (namespace, name) holding words: Dublin Core title, description, subject (keywords); Photoshop's
# headline, city, state and country; IPTC Core's sublocation; Lightroom's and digiKam's tag paths; people's names.
_XMP = {
    ("http://purl.org/dc/elements/1.1/", name) for name in ("title", "description", "subject")
} | {
    ("http://ns.adobe.com/photoshop/1.0/", name) for name in ("Headline", "City", "State", "Country")
} | {
    ("http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/", "Location"),
    ("http://ns.adobe.com/lightroom/1.0/", "hierarchicalSubject"),
    ("http://www.digikam.org/ns/1.0/", "TagsList"),
    # The names of the faces a photo manager marked (Metadata Working Group regions: Picasa, digiKam, Lightroom,
    # darktable; Windows Photo Gallery's own), so "Ana" finds the photos she is in.
    ("http://www.metadataworkinggroup.com/schemas/regions/", "Name"),
    ("http://ns.microsoft.com/photo/1.2/t/Region#", "PersonDisplayName"),
}
_RDF_LI = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}li"
# XMP properties holding when the photo was taken, the first found wins: EXIF's copy (what darktable and digiKam
# write), Photoshop's (Lightroom's), XMP's own creation date.
_XMP_DATES = (("http://ns.adobe.com/exif/1.0/", "DateTimeOriginal"), ("http://ns.adobe.com/photoshop/1.0/",
              "DateCreated"), ("http://ns.adobe.com/xap/1.0/", "CreateDate"))
_XMP_GPS = (("http://ns.adobe.com/exif/1.0/", "GPSLatitude"), ("http://ns.adobe.com/exif/1.0/", "GPSLongitude"))
# IPTC IIM datasets: object name (title), headline, keywords, city, sublocation, state, country, caption.
_IPTC = ((2, 5), (2, 105), (2, 25), (2, 90), (2, 92), (2, 95), (2, 101), (2, 120))
# What a JPEG and a PNG say about themselves, left out of ``pixels_digest``: APP1 (EXIF, XMP), APP13 (IPTC) and
# comments; text, time and EXIF chunks. APP2 (the colour profile) and APP14 (Adobe's colour transform) change the
# decoded picture and stay in. EXIF's orientation tag is added back by value.
_JPEG_METADATA = frozenset({0xE1, 0xED, 0xFE})
_PNG_METADATA = frozenset({b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"})
_ORIENTATION = 274
# ``pixels_digest`` reads the whole file at once (a 48 MP JPEG is ~25 MB): a larger one is embedded again on a
# change, as every photo was.
MAX_DIGEST_BYTES = 64 << 20
# An XMP packet is at most 64 KB in a JPEG segment; one larger than this is not parsed.
MAX_XMP_BYTES = 1 << 20
# The words kept of one photo: a caption is a sentence or two, keywords a few dozen.
MAX_WORDS_CHARS = 2000


def photo_meta(path: Path) -> tuple[float | None, str]:
    """When a photo was taken, as a timestamp, and its own words, from one read of the header and of each sidecar
    (sidecars.py); (None, "") for a file that is no image or says nothing usable.

    The date: its EXIF (DateTimeOriginal, else DateTimeDigitized, at its UTC offset where one is stored, else in
    local time, as a camera's clock reads), else its XMP's, else its sidecars' (an XMP sidecar's before Takeout's).
    A copied photo's modification time is the copy's, so filters and the date shown use this where it exists.

    The words (title, caption, keywords, place, people), one field a line, each once, as the file holds them: XMP,
    then IPTC, then EXIF and Windows' fields, then its sidecars', then the place its GPS position names
    (places.py). A camera's default description ("OLYMPUS DIGITAL CAMERA", its make or model) is not a word
    anybody gave it."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None, ""

    def both(img: Any) -> _Said:
        exif = _exif(img)
        xmp = _xmp(_xmp_packet(img))
        taken, where = _taken(exif), exif_position(exif.get_ifd(_GPS_IFD))
        return _Said(xmp.taken if taken is None else taken, xmp.fields + _fields(img, exif), where or xmp.where)

    said = _header(path, both) or _Said(None, [], None)
    for sidecar, _ in sidecars(path):
        side = _sidecar(sidecar, path.name)
        said = _Said(side.taken if said.taken is None else said.taken, said.fields + side.fields,
                     said.where or side.where)
    place = place_name(*said.where) if said.where else ""  # "Sintra, Portugal": what a GPS position is to a person
    return said.taken, _joined([*said.fields, place])


class _Said(NamedTuple):
    """What a photo's header or one of its sidecars says: when it was taken, its words, where it was taken."""

    taken: float | None
    fields: list[str]
    where: tuple[float, float] | None


def pixels_digest(path: Path) -> str | None:
    """A digest of a JPEG or PNG without what it says about itself: every byte but its EXIF, XMP, IPTC, comment and
    text chunks, plus its EXIF orientation (which turns the picture the model sees). A photo manager writing a
    keyword, a caption or a corrected date into the file changes its content hash but not this, so the indexer keeps
    its vectors and reads its words and date again (a VLM takes seconds a photo; tagging a few hundred photos in
    digiKam re-embedded every one). None for other formats, and for a file that does not parse as its suffix says
    (it is embedded again, as before)."""
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".jfif", ".png"):
        return None
    try:
        if path.stat().st_size > MAX_DIGEST_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    digest = hashlib.sha256()
    parts = _png_parts(data) if suffix == ".png" else _jpeg_parts(data)
    if parts is None:
        return None
    for part in parts:
        digest.update(part)
    digest.update(str(_header(path, lambda img: _exif(img).get(_ORIENTATION))).encode())
    return digest.hexdigest()


def _jpeg_parts(data: bytes) -> list[memoryview] | None:
    """A JPEG's segments but APP1 (EXIF, XMP), APP13 (IPTC) and comments, then everything from its first scan on
    (compressed pixels, which no metadata edit touches); None if it is not a JPEG."""
    view = memoryview(data)
    if data[:2] != b"\xff\xd8":
        return None
    parts, at = [view[:2]], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xDA:  # start of scan: the rest is pixels
            return [*parts, view[at:]]
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker not in _JPEG_METADATA:
            parts.append(view[at:end])
        at = end
    return None


def _png_parts(data: bytes) -> list[memoryview] | None:
    """A PNG's chunks but its text, time and EXIF ones; None if it is not a PNG."""
    view = memoryview(data)
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    parts, at = [view[:8]], 8
    while at + 8 <= len(data):
        end = at + 12 + int.from_bytes(data[at : at + 4], "big")
        if bytes(data[at + 4 : at + 8]) not in _PNG_METADATA:
            parts.append(view[at:end])
        at = end
    return parts


def _sidecar(sidecar: Path, photo: str) -> _Said:
    """What one sidecar says: its date and its words; nothing for one that is too large or will not parse, or that
    became a link or something other than a file since it was found (opened without following a link or waiting
    on a FIFO, then checked)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(sidecar, flags)
    except OSError:
        return _Said(None, [], None)
    with open(fd, "rb") as f:
        try:
            data = f.read(MAX_SIDECAR_BYTES + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        except OSError:
            data = b""
    if not data or len(data) > MAX_SIDECAR_BYTES:
        return _Said(None, [], None)
    if sidecar.suffix.lower() == ".xmp":
        return _xmp(data)
    return _takeout(data, photo)


def _takeout(data: bytes, photo: str) -> _Said:
    """Google Takeout's JSON: its "photoTakenTime" (UTC seconds), its description, its title where a person gave
    one (Takeout writes the file's name there otherwise), the names of the people in it, and its "geoData"."""
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        return _Said(None, [], None)
    if not isinstance(meta, dict):
        return _Said(None, [], None)
    title = meta.get("title")
    if isinstance(title, str) and (title.strip() == photo or Path(title.strip()).suffix.lower() in IMAGE_EXTENSIONS):
        title = None  # a file's name: Takeout's, unless a person gave one ("IMG_0001.jpg" for "IMG_0001(1).jpg" too)
    fields = [meta.get("description"), title]
    people = meta.get("people")
    fields += [p.get("name") for p in people if isinstance(p, dict)] if isinstance(people, list) else []
    kept = [f for f in fields if isinstance(f, str)]
    taken = meta.get("photoTakenTime")
    stamp = taken.get("timestamp") if isinstance(taken, dict) else None
    try:
        when = float(stamp) if isinstance(stamp, str | int | float) else None
    except ValueError:
        when = None
    geo = meta.get("geoData")
    try:
        where = (float(geo["latitude"]), float(geo["longitude"])) if isinstance(geo, dict) else None
    except (KeyError, TypeError, ValueError):
        where = None
    return _Said(when if when is not None and 0 < when < 1e11 else None, kept, where)


def _taken(exif: Any) -> float | None:
    taken = exif.get_ifd(_EXIF_IFD)
    for tag, offset_tag in ((_TAKEN, _TAKEN_OFFSET), (_DIGITISED, _DIGITISED_OFFSET)):
        stamp = _exif_time(taken.get(tag), taken.get(offset_tag))
        if stamp is not None:
            return stamp
    return None


def _joined(fields: list[str]) -> str:
    kept: list[str] = []
    seen: set[str] = set()
    for value in fields:
        line = " ".join(value.split())
        if line and line.lower() not in seen:
            seen.add(line.lower())
            kept.append(line)
    return "\n".join(kept)[:MAX_WORDS_CHARS]


def _header(path: Path, read: Any) -> Any:
    """``read(img)`` over the opened image's header, or None for a file that is no image or will not open. PIL
    raises many types for broken headers; indexing records a broken image when it decodes it, so none is kept
    here."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    from PIL import Image

    register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image refuses those pixels
            with Image.open(path) as img:
                return read(img)
    except Exception:  # noqa: BLE001 - see the docstring: a broken header means no date and no words, not a crash
        return None


def _exif(img: Any) -> Any:
    """The EXIF block as the header holds it. Not ``img.getexif()``: for a PNG without an eXIf chunk before its
    pixels, PIL decodes the whole image to look after them (5 ms for a 0.2 MP sample photo, and a 200 MP PNG that
    load_image refuses to decode would be decoded here)."""
    from PIL import Image

    raw = img.info.get("exif")
    if isinstance(raw, bytes) and raw:
        exif = Image.Exif()
        exif.load(raw)
        return exif
    return img.getexif() if img.format == "TIFF" else Image.Exif()  # a TIFF's EXIF is its own header


def _fields(img: Any, exif: Any) -> list[str]:
    """IPTC's and EXIF's words (XMP's come first, from ``_xmp``)."""
    camera = {str(exif.get(_MAKE, "")).strip().lower(), str(exif.get(_MODEL, "")).strip().lower()}
    fields = _iptc_fields(img)
    description = exif.get(_DESCRIPTION)
    if isinstance(description, str):
        text = description.strip("\x00 ")
        if text.lower() not in _CAMERA_DEFAULTS | camera and re.search(r"[^\W\d_]", text):
            fields.append(text)
    for tag in _WINDOWS:
        value = exif.get(tag)
        if isinstance(value, bytes):
            fields.append(value.decode("utf-16-le", "replace").strip("\x00 "))
    return fields


def _xmp_packet(img: Any) -> bytes:
    """The XMP packet where PIL leaves it: JPEG, WebP and HEIC in ``info["xmp"]``, PNG in an iTXt chunk, TIFF in
    tag 700."""
    packet = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    if not packet and hasattr(img, "tag_v2"):
        packet = img.tag_v2.get(700, b"")
    return packet.encode() if isinstance(packet, str) else bytes(packet)


def _xmp(packet: bytes) -> _Said:
    """An XMP packet's (or sidecar's) date (``_XMP_DATES``, the first it holds), the words of its properties in
    ``_XMP``, written as elements (their rdf:li items, or their text) or as attributes of an rdf:Description, and
    its GPS position."""
    if not packet or len(packet) > MAX_XMP_BYTES:
        return _Said(None, [], None)
    try:
        root = ElementTree.fromstring(packet.strip(b"\x00 \r\n\t"))
    except ElementTree.ParseError:
        return _Said(None, [], None)
    fields: list[str] = []
    values: dict[tuple[str, str], str] = {}  # dates and GPS coordinates, the first of each
    for element in root.iter():
        for key, value in element.attrib.items():
            if _qualified(key) in _XMP:
                fields.append(value)
            elif _qualified(key) in _XMP_DATES or _qualified(key) in _XMP_GPS:
                values.setdefault(_qualified(key), value)
        if _qualified(element.tag) in _XMP:
            items = [li.text or "" for li in element.iter(_RDF_LI)]
            fields += items if items else [element.text or ""]
        elif _qualified(element.tag) in _XMP_DATES or _qualified(element.tag) in _XMP_GPS:
            values.setdefault(_qualified(element.tag), element.text or "")
    taken = next((t for key in _XMP_DATES if (t := _iso_time(values.get(key, ""))) is not None), None)
    where = xmp_position(*(values.get(key, "") for key in _XMP_GPS))
    return _Said(taken, [f.replace("|", " ") for f in fields], where)  # "People|Family|Ana": a path's levels


def _iso_time(text: str) -> float | None:
    """An XMP date ("2019-07-14T18:30:00+01:00", "2019-07-14T18:30:00.25Z", "2019-07-14") as a timestamp, local
    time where it gives no offset; None for anything else."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when.timestamp() if when.year >= 1900 else None


def _qualified(tag: str) -> tuple[str, str]:
    namespace, _, name = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return namespace, name


def _iptc_fields(img: Any) -> list[str]:
    from PIL import IptcImagePlugin

    info = IptcImagePlugin.getiptcinfo(img) or {}
    fields: list[str] = []
    for key in _IPTC:
        values = info.get(key, [])
        for value in values if isinstance(values, list) else [values]:
            try:
                fields.append(value.decode("utf-8"))
            except UnicodeDecodeError:  # IPTC's older records are Latin-1 unless they say otherwise
                fields.append(value.decode("latin-1"))
    return fields


def _exif_time(value: object, offset: object) -> float | None:
    """An EXIF "YYYY:MM:DD HH:MM:SS" (and "+HH:MM") as a timestamp; None for blanks and zeros ("0000:00:00 …")."""
    from datetime import datetime

    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ")[:19]
    if isinstance(offset, str) and len(offset.strip("\x00 ")) == 6:
        text += offset.strip("\x00 ")
    try:
        when = datetime.strptime(text, "%Y:%m:%d %H:%M:%S%z" if len(text) > 19 else "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return when.timestamp() if when.year >= 1900 else None
