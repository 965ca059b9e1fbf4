"""How far Qwen-VL's torchvision image processor and its PIL one (what freeret-tui uses without torchvision) differ.

Needs torchvision beside torch (a separate environment: `pip install torch==2.14.1 torchvision==0.29.1
transformers==5.24.0 pillow numpy`), so it is not part of the test suite. Prints JSON: per sample photo the patch
grid (must match) and the largest and mean absolute difference of the normalised pixel values.

    python benchmarks/processor_parity.py [PHOTO_DIR] [--max-pixels N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "samples" / "photos"


def main() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", nargs="?", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--max-pixels", type=int, default=256 * 28 * 28, help="the image budget (default: the index's)")
    args = parser.parse_args()
    fast = Qwen2VLImageProcessor(max_pixels=args.max_pixels)
    pil = Qwen2VLImageProcessorPil(max_pixels=args.max_pixels)
    rows = []
    for path in sorted(args.photos.iterdir()):
        image = Image.open(path).convert("RGB")
        a, b = fast(images=[image], return_tensors="np"), pil(images=[image], return_tensors="np")
        if not np.array_equal(a["image_grid_thw"], b["image_grid_thw"]):
            raise SystemExit(f"{path.name}: the two processors cut different patch grids")
        diff = np.abs(a["pixel_values"].astype(np.float64) - b["pixel_values"].astype(np.float64))
        rows.append({"photo": path.name, "grid": a["image_grid_thw"][0].tolist(),
                     "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "share_off_by_a_level": float((diff > 1e-3).mean())})
    # One 8-bit level after Qwen's normalisation (std ~0.27) is 1 / 255 / 0.27 = 0.0145.
    print(json.dumps({"torchvision": type(fast).__name__, "pil": type(pil).__name__,
                      "max_pixels": args.max_pixels, "photos": rows,
                      "max_abs": max(r["max_abs"] for r in rows),
                      "mean_abs": float(np.mean([r["mean_abs"] for r in rows]))}))


if __name__ == "__main__":
    main()
