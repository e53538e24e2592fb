#!/usr/bin/env python3
"""Times benchmark (a), one zoom-in step, with the Python reference: qwen-vl-utils + Pillow.

Writes (if missing) the shared input `target/bench-zoom/photo_4000x3000_q90.jpg` (a procedural
photo-like 4000x3000 image, JPEG quality 90, made with Pillow), then times on it:
  full step   open + decode + to_rgb + smart_resize to the official eval limits (401,408..4,014,080 pixels)
              + resize (qwen-vl-utils `fetch_image`), then the official crop of [0.40,0.35,0.55,0.50]
              padded by 0.1 and the official `resize_cropped` (smart_resize 200,704..4,014,080 + resize)
  decode      Image.open + load of the JPEG
  resize      the 4000x3000 -> 2296x1708 bicubic resize alone
  crop+resize the crop and resize of the crop on an already-loaded 2296x1708 image

Run beside the Rust bench so both see the same machine load:
    python3 scripts/bench_zoom_reference.py && cargo bench -p pixel-ops --bench zoom
Prints the median and the minimum of each timing in milliseconds.
"""

import os
import statistics
import time

import numpy as np
from PIL import Image
from qwen_vl_utils.vision_process import fetch_image, smart_resize, to_rgb

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
JPEG = os.environ.get("PIXEL_OPS_ZOOM_JPEG", os.path.join(ROOT, "target", "bench-zoom", "photo_4000x3000_q90.jpg"))
EVAL = dict(min_pixels=401408, max_pixels=4014080)
CROP = dict(min_pixels=256 * 28 * 28, max_pixels=5120 * 28 * 28)
BOX = [0.40, 0.35, 0.55, 0.50]


def procedural_photo(w: int, h: int) -> Image.Image:
    """Same recipe as the Rust bench's `procedural_photo` (the file, not this function, is what is shared)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.uint64)
    smooth = 128.0 + 100.0 * (np.sin(x / 310.0) * np.cos(y / 270.0))
    tex = (((x * 2654435761) & 0xFFFFFFFF) ^ ((y * 40503) & 0xFFFFFFFF)) >> 13
    tex = (tex % 40).astype(np.float64)
    edge = np.where(((x // 23 + y // 17) % 5) == 0, 90.0, 0.0)
    base = smooth + tex - 20.0 - edge
    chans = [np.clip(base + off, 0, 255).astype(np.uint8) for off in (0.0, -30.0, 25.0)]
    return Image.fromarray(np.stack(chans, -1), "RGB")


def official_crop(image: Image.Image, bbox, padding=0.1) -> Image.Image:
    """The official crop_image_normalized semantics for a normalized box (see crates/pixel-ops/src/crop.rs)."""
    w, h = image.size
    x1, y1, x2, y2 = (min(max(0, v), 1) for v in (bbox[0] - padding, bbox[1] - padding, bbox[2] + padding, bbox[3] + padding))
    return image.crop((x1 * w, y1 * h, x2 * w, y2 * h))


def resize_cropped(image: Image.Image) -> Image.Image:
    image = to_rgb(image)
    w, h = image.size
    rh, rw = smart_resize(h, w, factor=28, **CROP)
    return image.resize((rw, rh))


def timeit(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), min(times)


def main():
    if not os.path.exists(JPEG):
        os.makedirs(os.path.dirname(JPEG), exist_ok=True)
        procedural_photo(4000, 3000).save(JPEG, quality=90)
        print("wrote", JPEG)

    def full():
        model_input = fetch_image({"image": JPEG, **EVAL})
        return resize_cropped(official_crop(model_input, BOX))

    def decode():
        with Image.open(JPEG) as im:
            im.load()
            return im

    original = to_rgb(Image.open(JPEG))
    model_input = fetch_image({"image": JPEG, **EVAL})
    assert model_input.size == (2296, 1708), model_input.size
    assert full().size == (812, 588)
    rows = [
        ("full step", timeit(full, 10)),
        ("decode", timeit(decode, 10)),
        ("resize", timeit(lambda: original.resize((2296, 1708)), 10)),
        ("crop+resize", timeit(lambda: resize_cropped(official_crop(model_input, BOX)), 50)),
    ]
    for name, (median, best) in rows:
        print(f"{name:<12} median {median:8.2f} ms   min {best:8.2f} ms")


if __name__ == "__main__":
    main()
