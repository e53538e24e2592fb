#!/usr/bin/env python3
"""Writes the image fixtures of `crates/pixel-ops/tests/` from the Python reference pipeline.

References (nothing here re-implements them; they are imported or loaded from their own source):
  * qwen-vl-utils (`smart_resize`, `to_rgb`) and Pillow 13.0 (`Image.resize` BICUBIC, `crop`, JPEG decode);
  * the official Pixel Reasoner `CropImageNormalized.call` (TIGER-AI-Lab/Pixel-Reasoner,
    curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py), verl's
    `ImageZoomInTool._maybe_resize_bbox` (volcengine/verl, verl/tools/image_zoom_in_tool.py) and DeepEyes'
    `VisualToolBoxV5.maybe_resize_bbox` (Visual-Agent/DeepEyes, verl/workers/agent/envs/mm_process_engine/
    visual_toolbox_v5.py): the methods are extracted from those files with `ast` and executed as written.

Regenerate (from the repository root; needs Pillow 13.0, qwen-vl-utils, numpy):
    git clone https://github.com/TIGER-AI-Lab/Pixel-Reasoner /tmp/Pixel-Reasoner
    git clone https://github.com/volcengine/verl /tmp/verl
    git clone https://github.com/Visual-Agent/DeepEyes /tmp/DeepEyes
    python3 scripts/gen_image_fixtures.py \
        --official /tmp/Pixel-Reasoner/curiosity_driven_rl/openrlhf/trainer/ppo_utils/experience_maker.py \
        --verl /tmp/verl/verl/tools/image_zoom_in_tool.py \
        --deepeyes /tmp/DeepEyes/verl/workers/agent/envs/mm_process_engine/visual_toolbox_v5.py

Outputs (under crates/pixel-ops/tests/fixtures/images/, all small):
  smart_resize.json   >= 1000 smart_resize cases (ties, extreme ratios, error cases)
  resize/             small source PNGs, Pillow's resized PNGs, and FNV-1a hashes for larger
                      procedurally generated cases (both pass orders, up and down)
  alpha/              RGBA source and qwen-vl-utils `to_rgb` result
  jpeg/               a q90 JPEG and Pillow's decode of it
  crop.json           official crop_image_normalized, verl and DeepEyes zoom-in results on a procedural image
  broken/             broken inputs: truncated PNG/JPEG, zero bytes, bomb headers, garbage
"""

import argparse
import ast
import contextlib
import io
import json
import logging
import math
import os
import random
import struct
import textwrap
import zlib

import numpy as np

logging.disable(logging.CRITICAL)  # verl logs every rejected box
import PIL
from PIL import Image
from qwen_vl_utils.vision_process import smart_resize, to_rgb

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "pixel-ops", "tests", "fixtures", "images")


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def fnv_fast(arr: np.ndarray) -> str:
    """FNV-1a 64 of the bytes of `arr` (pure Python: keep the arrays a few MB at most)."""
    data = arr.tobytes()
    assert len(data) < 4_000_000, "too large to hash in Python quickly"
    return fnv1a64(data)


def procedural(w: int, h: int) -> Image.Image:
    """The image the Rust tests rebuild: smooth ramps, xor texture and hard-edged stripes."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * x + y * 3) % 256
    g = (x ^ y) & 255
    b = (((x // 7) + (y // 5)) % 2) * 255
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


def gen_smart_resize(rng: random.Random):
    limits = [
        (4 * 784, 16384 * 784),
        (512 * 784, 5120 * 784),
        (256 * 784, 5120 * 784),
        (4 * 784, 2000 * 784),
        (4 * 784, 1000 * 784),
        (4 * 784, 400 * 784),
        (56 * 56, 28 * 28 * 1280),
    ]
    sizes = set()
    for _ in range(500):
        h = int(math.exp(rng.uniform(0, math.log(30000))))
        w = int(math.exp(rng.uniform(0, math.log(30000))))
        sizes.add((max(h, 1), max(w, 1)))
    for k in range(0, 80):  # exact .5 ties: 28k + 14
        sizes.add((28 * k + 14, 28 * rng.randint(1, 60) + 14))
        sizes.add((28 * rng.randint(1, 60) + 14, 28 * k + 14))
    for h in [1, 2, 3, 5, 7, 13, 14, 15, 27, 28, 29, 41, 42, 43, 100]:
        for ratio_w in [h * 200 - 1, h * 200, h * 200 + 1]:
            sizes.add((h, ratio_w))
            sizes.add((ratio_w, h))
    sizes |= {(3000, 4000), (1708, 2296), (598, 804), (1, 1), (28, 28), (0, 10), (10, 0)}
    cases = []
    for h, w in sorted(sizes):
        for mn, mx in rng.sample(limits, 2) + [limits[1]]:
            try:
                rh, rw = smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx)
                res = [rh, rw] if rh > 0 and rw > 0 else "zero"
            except ValueError:
                res = "aspect"
            except ZeroDivisionError:
                res = "zero"
            cases.append([h, w, mn, mx, res])
    # Deduplicate while keeping order.
    seen, uniq = set(), []
    for c in cases:
        key = json.dumps(c)
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    with open(os.path.join(OUT, "smart_resize.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(c) for c in uniq) + "\n]\n")
    return len(uniq)


def gen_resize(nprng: np.random.Generator):
    d = os.path.join(OUT, "resize")
    os.makedirs(d, exist_ok=True)
    # Small sources stored as PNG: noise with hard edges (worst case for rounding).
    a = nprng.integers(0, 256, size=(47, 61, 3), dtype=np.uint8)
    a[10:20, 5:40] = [255, 255, 255]
    a[25:30, :, 0] = 0
    src_a = Image.fromarray(a, "RGB")
    yy, xx = np.mgrid[0:90, 0:130]
    b = np.stack([(xx * 2) % 256, (yy * 3) % 256, ((xx // 9 + yy // 9) % 2) * 255], -1).astype(np.uint8)
    b[30:60, 40:100] = nprng.integers(0, 256, size=(30, 60, 3), dtype=np.uint8)
    src_b = Image.fromarray(b, "RGB")
    src_a.save(os.path.join(d, "src_a.png"))
    src_b.save(os.path.join(d, "src_b.png"))
    cases = []
    small = [
        ("src_a.png", src_a, [(97, 71), (33, 29), (61, 20), (20, 47), (120, 30), (30, 60), (7, 5), (1, 1),
                              (300, 2), (2, 200), (62, 46), (60, 48)]),
        ("src_b.png", src_b, [(138, 86), (65, 45), (128, 30), (40, 89), (13, 90), (131, 91), (390, 20)]),
    ]
    for name, img, sizes in small:
        for w, h in sizes:
            out = img.resize((w, h), Image.Resampling.BICUBIC)
            fn = f"{name[:-4]}_{w}x{h}.png"
            out.save(os.path.join(d, fn))
            cases.append({"src": name, "width": w, "height": h, "expected": fn})
    # Larger procedural cases, checked by hash.
    big = [
        ((1000, 750), (644, 476)),
        ((300, 200), (308, 196)),
        ((804, 598), (812, 588)),
        ((640, 480), (896, 672)),
        ((500, 900), (252, 448)),
        ((1200, 300), (1190, 100)),
        ((97, 1000), (84, 868)),
    ]
    for (sw, sh), (w, h) in big:
        out = np.asarray(procedural(sw, sh).resize((w, h), Image.Resampling.BICUBIC))
        cases.append({"procedural": [sw, sh], "width": w, "height": h, "fnv1a64": fnv_fast(out)})
    # Default resample of `Image.resize` (what qwen-vl-utils calls) must be BICUBIC in this Pillow.
    p = procedural(300, 200)
    assert np.array_equal(np.asarray(p.resize((308, 196))), np.asarray(p.resize((308, 196), Image.Resampling.BICUBIC)))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump({"pillow": PIL.__version__, "cases": cases}, f, indent=1)
    return len(cases)


def gen_alpha(nprng: np.random.Generator):
    d = os.path.join(OUT, "alpha")
    os.makedirs(d, exist_ok=True)
    rgba = nprng.integers(0, 256, size=(16, 32, 4), dtype=np.uint8)
    rgba[:, :4, 3] = 0
    rgba[:, 4:8, 3] = 255
    rgba[0, :, 3] = np.arange(32) * 8
    src = Image.fromarray(rgba, "RGBA")
    src.save(os.path.join(d, "rgba.png"))
    reloaded = Image.open(os.path.join(d, "rgba.png"))
    to_rgb(reloaded).save(os.path.join(d, "rgba_to_rgb.png"))


def gen_jpeg():
    d = os.path.join(OUT, "jpeg")
    os.makedirs(d, exist_ok=True)
    img = procedural(96, 64)
    img.save(os.path.join(d, "q90.jpg"), quality=90)
    Image.open(os.path.join(d, "q90.jpg")).convert("RGB").save(os.path.join(d, "q90_pillow.png"))


def extract_method(path: str, cls: str, names: list[str]) -> dict:
    """Returns the named methods of class `cls` in the Python file at `path`, compiled as written."""
    src = open(path).read()
    tree = ast.parse(src)
    ns = {"math": math, "floor": math.floor, "ceil": math.ceil, "logger": logging.getLogger("ref"),
          "Optional": __import__("typing").Optional, "Image": Image}
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in names:
                    code = textwrap.dedent(ast.get_source_segment(src, item))
                    exec(code, ns)
                    out[item.name] = ns[item.name]
    missing = set(names) - set(out)
    if missing:
        raise SystemExit(f"{path}: {cls} has no {missing}")
    return out


def gen_crops(official: str, verl: str, deepeyes: str, rng: random.Random):
    crop_call = extract_method(official, "CropImageNormalized", ["call"])["call"]
    zoom = extract_method(verl, "ImageZoomInTool", ["_validate_bbox", "_maybe_resize_bbox"])

    class Zoom:
        MIN_DIMENSION = 28
        _validate_bbox = zoom["_validate_bbox"]
        _maybe_resize_bbox = zoom["_maybe_resize_bbox"]

    z = Zoom()
    de = extract_method(deepeyes, "VisualToolBoxV5", ["validate_bbox", "maybe_resize_bbox"])

    class DeepEyes:
        validate_bbox = de["validate_bbox"]
        maybe_resize_bbox = de["maybe_resize_bbox"]
    sizes = [(812, 588), (100, 100), (57, 1000), (2296, 1708), (30, 30)]
    fixed = [
        [0.4, 0.35, 0.55, 0.5], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.1, 0.9],
        [0.1, 0.9, 0.9, 0.1], [-0.2, 0.0, 0.5, 0.5], [0.2, 0.2, 0.4, 0.6], [0.5, 0.5, 1.0, 0.9],
        [0.25, 0.25, 0.75, 0.75], [100, 50, 300, 200], [0, 0, 812, 588], [10, 10, 20, 20],
        [700, 500, 900, 700], [0.999, 0.999, 0.9999, 0.9999], [1, 1, 1, 1], [0.05, 0.05, 0.06, 0.06],
        [400, 300, 100, 200], [0.3, 0.3, 0.3, 1.5], [-50, -50, 30, 30], [0.1, 0.1, 0.2, 0.2],
    ]
    crop_cases, zoom_cases, deepeyes_cases = [], [], []
    for w, h in sizes:
        img = procedural(w, h)
        boxes = list(fixed)
        for _ in range(40):
            kind = rng.random()
            if kind < 0.4:
                x1, y1 = rng.uniform(-0.1, 1.0), rng.uniform(-0.1, 1.0)
                box = [round(x1, 3), round(y1, 3), round(x1 + rng.uniform(-0.3, 0.6), 3),
                       round(y1 + rng.uniform(-0.3, 0.6), 3)]
            elif kind < 0.8:
                x1, y1 = rng.randint(-20, w), rng.randint(-20, h)
                box = [x1, y1, x1 + rng.randint(-30, w), y1 + rng.randint(-30, h)]
            else:
                x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
                box = [round(x1, 2), round(y1, 2), round(x1 + rng.uniform(0, 60), 2),
                       round(y1 + rng.uniform(0, 60), 2)]
            boxes.append(box)
        for box in boxes:
            try:
                out = crop_call(None, img, box)
                res = {"size": list(out.size), "fnv1a64": fnv1a64(out.tobytes())}
            except (AssertionError, ValueError) as e:
                res = {"error": str(e)}
            crop_cases.append({"image": [w, h], "bbox": box, **res})
            resized = z._maybe_resize_bbox(box, image_width=w, image_height=h)
            if resized is None:
                zres = {"error": True}
            else:
                out = img.crop(resized)
                zres = {"box": [float(v) for v in resized], "size": list(out.size),
                        "fnv1a64": fnv1a64(out.tobytes())}
            zoom_cases.append({"image": [w, h], "bbox": box, **zres})
            d = DeepEyes()
            d.width, d.height = w, h
            with contextlib.redirect_stdout(io.StringIO()):  # DeepEyes prints every rejected box
                resized = d.maybe_resize_bbox(*box)
            if resized is None:
                dres = {"error": True}
            else:
                out = img.crop(resized)
                dres = {"box": [float(v) for v in resized], "size": list(out.size),
                        "fnv1a64": fnv1a64(out.tobytes())}
            deepeyes_cases.append({"image": [w, h], "bbox": box, **dres})
    with open(os.path.join(OUT, "crop.json"), "w") as f:
        json.dump({"crop_image_normalized": crop_cases, "image_zoom_in_tool": zoom_cases,
                   "image_zoom_in_tool_deepeyes": deepeyes_cases}, f)
    return len(crop_cases), len(zoom_cases), len(deepeyes_cases)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def gen_broken():
    d = os.path.join(OUT, "broken")
    os.makedirs(d, exist_ok=True)
    sig = b"\x89PNG\r\n\x1a\n"

    def png(w, h, color_type=2, idat=b""):
        ihdr = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
        return sig + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")

    # A header claiming 100000x100000 RGB, with a valid (tiny) compressed stream.
    open(os.path.join(d, "bomb_header_100000.png"), "wb").write(png(100000, 100000, idat=zlib.compress(b"\0" * 1024)))
    # Inside the per-side limit but 400 M pixels: a decompression bomb by pixel count (1 KiB file).
    open(os.path.join(d, "bomb_pixels_20000.png"), "wb").write(png(20000, 20000, 0, zlib.compress(b"\0" * 4096)))
    good = io.BytesIO()
    procedural(64, 48).save(good, "PNG")
    open(os.path.join(d, "truncated.png"), "wb").write(good.getvalue()[: len(good.getvalue()) // 2])
    jpg = io.BytesIO()
    procedural(64, 48).save(jpg, "JPEG", quality=90)
    open(os.path.join(d, "truncated.jpg"), "wb").write(jpg.getvalue()[: len(jpg.getvalue()) // 3])
    open(os.path.join(d, "header_only.jpg"), "wb").write(jpg.getvalue()[:20])
    open(os.path.join(d, "empty.png"), "wb").write(b"")
    open(os.path.join(d, "garbage.bin"), "wb").write(bytes(random.Random(7).randrange(256) for _ in range(512)))
    open(os.path.join(d, "text.png"), "wb").write(b"this is not an image, whatever the extension says\n")
    # A JPEG whose SOF claims 65500x65500: keep the real tables, patch the frame size.
    data = bytearray(jpg.getvalue())
    i = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, i + 5, 65500, 65500)
    open(os.path.join(d, "bomb_header_65500.jpg"), "wb").write(bytes(data))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="path to the official experience_maker.py")
    ap.add_argument("--verl", required=True, help="path to verl's verl/tools/image_zoom_in_tool.py")
    ap.add_argument("--deepeyes", required=True,
                    help="path to DeepEyes' verl/workers/agent/envs/mm_process_engine/visual_toolbox_v5.py")
    args = ap.parse_args()
    assert PIL.__version__.startswith("13."), f"fixtures are for Pillow 13.x, found {PIL.__version__}"
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20260525)
    nprng = np.random.default_rng(20260525)
    print("smart_resize cases:", gen_smart_resize(rng))
    print("resize cases:", gen_resize(nprng))
    gen_alpha(nprng)
    gen_jpeg()
    print("crop cases (official, verl, DeepEyes):", gen_crops(args.official, args.verl, args.deepeyes, rng))
    gen_broken()


if __name__ == "__main__":
    main()
