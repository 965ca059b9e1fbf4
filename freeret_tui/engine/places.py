"""A photo's GPS position as words a person searches with: the nearest place of 15,000 people or more, the city a
person would name it by (the largest place near it) and the country ("São Jorge de Arroios, Lisbon, Portugal";
"Sintra, Cacém, Portugal"), from GeoNames' table shipped beside this module (places.tsv.gz: 34,006 places, CC BY
4.0, built by scripts/make_places.py). Offline, like everything else: a position never leaves the machine.
"""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

TABLE = Path(__file__).with_name("places.tsv.gz")
# Farther than this from every place in the table (at sea, in a wilderness), a position is given no name: the nearest
# town would mislead more than it helps.
MAX_KM = 50.0
# The table holds a city's districts as places of their own ("São Jorge de Arroios", 17,000 people, is the nearest
# place to Lisbon's centre): the largest place this close is named too, as the city a person would search for.
CITY_KM = 10.0
_EARTH_KM = 6371.0


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Every place's position as a unit vector (float64: float32 cannot tell points a few km apart by their cosine),
    its population, and its name and country's, read once a process (50-80 ms in throwaway timings)."""
    names: list[tuple[str, str]] = []
    rows: list[tuple[float, float, float]] = []
    with gzip.open(TABLE, "rt", encoding="utf-8") as table:
        for line in table:
            name, country, lat, lon, population = line.rstrip("\n").split("\t")
            names.append((name, country))
            rows.append((float(lat), float(lon), float(population)))
    array = np.array(rows, dtype=np.float64)
    return _unit(array[:, :2]), array[:, 2], names


def _unit(degrees: np.ndarray) -> np.ndarray:
    lat, lon = np.radians(degrees[:, 0]), np.radians(degrees[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def place_name(lat: float, lon: float) -> str:
    """The place nearest to (``lat``, ``lon``) in degrees, the largest place within ``CITY_KM`` and the country, each
    once; "" when no place is within ``MAX_KM``, and for a position that is no position: out of range, or 0, 0
    (what a camera without a fix writes). 0.05-0.07 ms a call (throwaway timings)."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return ""
    points, population, names = _table()
    cosines = points @ _unit(np.array([[lat, lon]], dtype=np.float64))[0]  # distances as cosines: no arccos of all
    nearest = int(np.argmax(cosines))
    if cosines[nearest] < math.cos(MAX_KM / _EARTH_KM):
        return ""
    close = np.flatnonzero(cosines >= math.cos(CITY_KM / _EARTH_KM))
    city = int(close[np.argmax(population[close])]) if len(close) else nearest
    words = [names[nearest][0], names[city][0], names[nearest][1]]
    return ", ".join(dict.fromkeys(w for w in words if w))


def exif_position(gps: Mapping[int, Any]) -> tuple[float, float] | None:
    """(lat, lon) in degrees from an EXIF GPS IFD (GPSLatitudeRef 1, GPSLatitude 2, GPSLongitudeRef 3,
    GPSLongitude 4: degrees, minutes and seconds as rationals); None where it holds none or nonsense."""
    try:
        lat = _degrees(gps[2]) * (-1 if str(gps.get(1, "N")).upper().startswith("S") else 1)
        lon = _degrees(gps[4]) * (-1 if str(gps.get(3, "E")).upper().startswith("W") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return (lat, lon) if math.isfinite(lat) and math.isfinite(lon) else None


def _degrees(parts: Any) -> float:
    values = [float(p) for p in parts]
    return values[0] + (values[1] / 60 if len(values) > 1 else 0) + (values[2] / 3600 if len(values) > 2 else 0)


def xmp_position(lat: str, lon: str) -> tuple[float, float] | None:
    """(lat, lon) from XMP's exif:GPSLatitude and exif:GPSLongitude ("38,42.5N", "9,8,59.3W"); None for others."""
    try:
        return _xmp_degrees(lat, "S"), _xmp_degrees(lon, "W")
    except (ValueError, IndexError):
        return None


def _xmp_degrees(text: str, negative: str) -> float:
    text = text.strip()
    sign = -1 if text[-1:].upper() == negative else 1
    value = _degrees(text.rstrip("NSEWnsew").split(","))
    if not math.isfinite(value):
        raise ValueError(text)
    return sign * value
