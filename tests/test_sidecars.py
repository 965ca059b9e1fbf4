"""Sidecars: the words and dates a photo manager (darktable, digiKam, Lightroom) or Google Takeout writes beside a
photo. They are read with the photo, and writing, adding or removing one re-reads its photo's words and date — in
a second index run, at a daemon's scan, and from a watcher's event — without running the model. Torch-free."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from conftest import write_xmp
from fake_model import FakeModel, fake_session
from PIL import Image

from freeret_tui.engine.daemon import Daemon
from freeret_tui.engine.photo_meta import photo_meta
from freeret_tui.engine.query import Filters, Query
from freeret_tui.engine.sidecars import photos_beside
from freeret_tui.engine.store import Store
from freeret_tui.engine.types import Kind

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
    # A second photo of one name in an album, and an edit Google Photos saved beside its original (no JSON of its
    # own: it shares the original's).
    (tmp_path / "IMG_0005.jpg(1).json").write_text(_takeout("IMG_0005.jpg", "the second one"))
    assert photo_meta(_photo(tmp_path / "IMG_0005(1).jpg")) == (TAKEN_2020, "the second one")
    (tmp_path / "IMG_0006.jpg.supplemental-metadata.json").write_text(_takeout("IMG_0006.jpg", "before the edit"))
    _photo(tmp_path / "IMG_0006.jpg")
    assert photo_meta(_photo(tmp_path / "IMG_0006-edited.jpg")) == (TAKEN_2020, "before the edit")
    names = ["IMG_0001.jpg.xmp", "IMG_0004.xmp", "Screenshot_2017-07-05-10-05-26.png.supplementa.json", "x.json",
             "IMG_0006.jpg.supplemental-metadata.json"]
    assert [p.name for p in photos_beside(tmp_path, names)] == [
        "IMG_0001.jpg", "IMG_0004.jpg", "IMG_0006-edited.jpg", "IMG_0006.jpg", "Screenshot_2017-07-05-10-05-26.png"]


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


def _words_of(store: Store, name: str) -> str:
    row = store._db.execute("SELECT items.text FROM items JOIN files ON files.id = items.file_id "
                            "WHERE files.path LIKE ?", (f"%/{name}",)).fetchone()
    return row[0] if row else ""


def test_a_sidecar_written_added_or_removed_rereads_the_photo_without_the_model(tmp_path: Path) -> None:
    """A second index run after each change: the photo is found by the sidecar's words and dated by it; a copy
    without the sidecar (its vectors reused) has no words; nothing is embedded again."""
    photos = tmp_path / "photos"
    photos.mkdir()
    photo = _photo(photos / "IMG_0001.jpg")
    session = fake_session()
    session.index([photos])
    store = session.store
    embedded = store.embedded_items

    def found(raw: str) -> list[str]:
        return [h.path.name for h in session.search(Query(raw), Filters(kinds=(Kind.IMAGE,))).hits
                if h.lexical_score is not None]

    assert found("lisbon") == []
    sidecar = photos / "IMG_0001.jpg.xmp"
    sidecar.write_text(DARKTABLE.format(keyword="Lisbon"))
    session.index([photos])
    assert found("lisbon") == ["IMG_0001.jpg"]
    [hit] = [h for h in session.search(Query("lisbon"), Filters(kinds=(Kind.IMAGE,))).hits if h.lexical_score]
    assert hit.path == photo and hit.dated == datetime(2019, 7, 14, 17, 30, tzinfo=timezone.utc).timestamp()
    (photos / "Copy").mkdir()
    (photos / "Copy" / "IMG_0001.jpg").write_bytes(photo.read_bytes())  # its vectors reused, not its words
    session.index([photos])
    assert _words_of(store, "Copy/IMG_0001.jpg") == "" and found("lisbon") == ["IMG_0001.jpg"]
    sidecar.write_text(DARKTABLE.format(keyword="Porto"))  # a keyword changed
    session.index([photos])
    assert found("lisbon") == [] and found("porto") == ["IMG_0001.jpg"]
    sidecar.unlink()
    session.index([photos])
    assert found("porto") == [] and _words_of(store, "IMG_0001.jpg") == ""
    assert store.embedded_items == embedded  # two photos of one content: embedded once, at the first run


def test_the_daemon_rereads_a_photo_whose_sidecar_changed(tmp_path: Path) -> None:
    """Running: a watcher's event on the sidecar re-reads its photo. Stopped: the next start's scan finds the
    change (the stored fingerprint differs)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "IMG_0001.jpg")
    sidecar = photos / "IMG_0001.jpg.supplemental-metadata.json"

    def run_daemon(write: str, until: str) -> None:
        """Run a daemon until the photo's words read ``until``, writing ``write`` into its sidecar once it started."""
        store = Store(tmp_path / "data" / "index.db")
        daemon = Daemon(store, FakeModel(), [photos], tmp_path / "data", debounce=0.1, rescan_seconds=3600)
        ready = threading.Event()
        thread = threading.Thread(target=daemon.run, kwargs={"ready": ready.set}, daemon=True)
        thread.start()
        try:
            assert ready.wait(60)
            if write:
                sidecar.write_text(_takeout("IMG_0001.jpg", write))
            reader = Store(tmp_path / "data" / "index.db")

            def done() -> bool:  # and nothing left queued, which the next start would take up without a scan
                return (reader.file_row(photos / "IMG_0001.jpg") is not None and reader.queue_length() == 0
                        and _words_of(reader, "IMG_0001.jpg") == until)

            deadline = time.monotonic() + 30
            while not done() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert done(), _words_of(reader, "IMG_0001.jpg")
            reader.close()
        finally:
            daemon.stop.set()
            thread.join(30)
        store.close()

    (tmp_path / "data").mkdir()
    run_daemon("", "")  # indexed with no sidecar
    sidecar.write_text(_takeout("IMG_0001.jpg", "Lunch on the pier"))  # the sidecar written while it is stopped
    run_daemon("", "Lunch on the pier")
    run_daemon("Dinner at the harbour", "Dinner at the harbour")  # and while it runs


def test_index_reads_a_changed_sidecar_without_loading_the_model(tmp_path: Path, capsys) -> None:
    """`freeret-tui index` loads no model when no file's own bytes changed; a sidecar written since is read all the
    same, and the run says so."""
    from freeret_tui.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "IMG_0001.jpg")
    fake_session().index([photos])
    (photos / "IMG_0001.jpg.xmp").write_text(DARKTABLE.format(keyword="Lisbon"))
    assert main(["index", str(photos)]) == 0
    out = capsys.readouterr()
    assert "1 unchanged (1 with their words and dates read again)" in out.out and "loading" not in out.err
    assert main(["search", "lisbon", "--mode", "lexical", "--no-rerank"]) == 0
    assert "IMG_0001.jpg" in capsys.readouterr().out


def test_an_index_of_the_schema_before_reads_its_photos_again_once(tmp_path: Path) -> None:
    """Schema 5 read neither sidecars, nor faces' names, nor XMP dates: the migration to 6 has every photo's words
    and date read again at the next run, with no model (a date in the photo's own XMP here: no sidecar's change
    would bring it)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    write_xmp(_photo(photos / "IMG_0001.jpg"), DARKTABLE.format(keyword="Lisbon"))
    session = fake_session()
    session.index([photos])
    store = session.store
    embedded = store.embedded_items
    with store.transaction():  # what schema 5 held: no fingerprint, no digest, no words from the sidecar
        store._db.execute("UPDATE items SET text = ''")
        store._db.execute("UPDATE items_fts SET text = ''")
        store._db.execute("UPDATE files SET taken = NULL")
        store._db.execute("ALTER TABLE files DROP COLUMN sidecars")
        store._db.execute("ALTER TABLE files DROP COLUMN pixels")
        store._db.execute("DELETE FROM meta WHERE key = 'reread_photos'")
        store._db.execute("PRAGMA user_version = 5")
    store.close()
    session = fake_session()  # opens it: migrates to 6
    assert session.store.photos_to_reread() is not None
    session.index([photos])
    [hit] = session.search(Query("lisbon"), Filters(kinds=(Kind.IMAGE,))).hits
    assert hit.dated == datetime(2019, 7, 14, 17, 30, tzinfo=timezone.utc).timestamp()
    assert _words_of(session.store, "IMG_0001.jpg") == "Lisbon\ntram"
    assert session.store.embedded_items == embedded and session.store.photos_to_reread() is None


def test_a_burst_of_sidecar_events_lists_their_folder_once(tmp_path: Path, monkeypatch) -> None:
    """A Takeout archive unpacking into a watched folder sends a sidecar's event a photo: the daemon waits until the
    folder is quiet and lists it once, not at every drain of its inbox."""
    from freeret_tui.engine import daemon as daemon_module

    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "IMG_0001.jpg")
    listings: list[Path] = []

    def counted(folder: Path, names: object) -> list[Path]:
        listings.append(folder)
        return photos_beside(folder, names)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon_module, "photos_beside", counted)
    (tmp_path / "data").mkdir()
    store = Store(tmp_path / "data" / "index.db")
    daemon = Daemon(store, FakeModel(), [photos], tmp_path / "data", debounce=0.1, rescan_seconds=3600)
    thread = threading.Thread(target=daemon.run, kwargs={"ready": (ready := threading.Event()).set}, daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        for n in range(20):  # 0.6 s of sidecars, closer together than SIDECAR_QUIET_SECONDS
            (photos / f"IMG_{n + 2:04d}.jpg.json").write_text(_takeout(f"IMG_{n + 2:04d}.jpg", "no photo yet"))
            time.sleep(0.03)
        (photos / "IMG_0001.jpg.json").write_text(_takeout("IMG_0001.jpg", "Dinner at the harbour"))
        deadline = time.monotonic() + 30
        while _words_of(store, "IMG_0001.jpg") != "Dinner at the harbour" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _words_of(store, "IMG_0001.jpg") == "Dinner at the harbour"
        assert listings == [photos]
    finally:
        daemon.stop.set()
        thread.join(30)
        store.close()
