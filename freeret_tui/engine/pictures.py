"""Pictures as the model and the screen get them: image files decoded (EXIF-rotated, first frame, downscaled, with
decompression-bomb guards, transparent ones on white), scanned PDF pages rendered, and pixels encoded to travel to
a served model. What a photo says about itself (its date, caption, keywords) is photo_meta.py's."""

from __future__ import annotations

import io
import warnings
from typing import Any

from freeret_tui.engine.office import Unreadable
from freeret_tui.engine.types import EncodedImage, PageImage, Picture

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic",
                              ".heif", ".avif"})
# Images are downscaled before the model sees them: every supported processor resizes to ≤ 1 k pixels a side
# anyway, and a 48 MP photo decoded at full size costs ~150 MB.
MAX_IMAGE_SIDE = 1024
# Decompression-bomb guard: refuse images above this many pixels (a 20k × 20k image is already 1.2 GB RGB).
MAX_IMAGE_PIXELS = 200_000_000
# JPEGs decode at a reduced scale (draft), so a 108 MP phone photo is cheap; other formats decode whole, three
# bytes a pixel and a copy or two more: above this they are refused (a 14000 x 14000 PNG took 2.6 GB RSS).
MAX_DECODED_PIXELS = 64_000_000


def register_heif() -> None:
    """Let PIL open HEIC/HEIF photos where pi-heif is installed."""
    try:
        from pi_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def load_image(source: Picture, max_side: int = MAX_IMAGE_SIDE) -> Any:
    """An RGB PIL image, EXIF-rotated, first frame only, no side above ``max_side`` (PDF pages rendered)."""
    from PIL import Image, ImageOps

    if isinstance(source, PageImage):
        return render_page(source, max_side)
    # Sent pixels go through the same guards as a file (they come from another machine).
    path = io.BytesIO(source.data) if isinstance(source, EncodedImage) else source

    register_heif()
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.seek(0)
            width, height = img.size
            if img.format != "JPEG" and width * height > MAX_DECODED_PIXELS:
                raise Unreadable(f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                                  f"{MAX_DECODED_PIXELS // 1_000_000} MP decoding budget")
            img.draft("RGB", (max_side, max_side))  # JPEG decodes at reduced scale: cheap downscale
            rotated = ImageOps.exif_transpose(img)
            if rotated.mode in ("RGBA", "LA", "PA") or "transparency" in rotated.info:
                return _on_white(rotated.convert("RGBA"), max_side)
            rgb = rotated.convert("RGB")
    rgb.thumbnail((max_side, max_side))
    return rgb


def _on_white(rgba: Any, max_side: int) -> Any:
    """A transparent image as a viewer shows it, on white. Dropping the alpha channel kept the colour under the
    transparent pixels, which exporters leave black: black writing on a transparent background (a signature, a
    diagram, a logo) became a black square for the model and the thumbnail."""
    from PIL import Image

    rgba.thumbnail((max_side, max_side))
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def encode_image(source: Picture) -> EncodedImage:
    """``source`` as the model will read it, losslessly encoded (PNG) to travel: decoded there, the pixels are
    the same as ``load_image`` gives here, so a served model's vectors equal a local one's."""
    buffer = io.BytesIO()
    # Level 1: 2-2.5x faster than the default 6 and 6-18 % larger (20-90 ms a sample photo, 0.4-1.7 MB).
    load_image(source).save(buffer, format="PNG", compress_level=1)
    return EncodedImage(buffer.getvalue())


def load_image_or_reason(source: Picture, max_side: int = MAX_IMAGE_SIDE) -> Any:
    """``load_image``, or the reason it failed as a string (a file broken or gone since it was indexed)."""
    try:
        return load_image(source, max_side)
    except Exception as err:  # noqa: BLE001 - PIL and pdfium raise many types for broken files
        return f"{type(err).__name__}: {err}"


def render_page(source: PageImage, max_side: int = MAX_IMAGE_SIDE) -> Any:
    """One PDF page as an RGB PIL image whose longer side is ``max_side`` pixels."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(source.pdf)
    try:
        page = document[source.page - 1]
        width, height = page.get_size()  # PDF points
        bitmap = page.render(scale=max_side / max(width, height, 1.0))
        return bitmap.to_pil().convert("RGB")
    finally:
        document.close()
