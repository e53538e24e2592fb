#!/usr/bin/env python3
"""Writes the torchvision-resize fixtures of `crates/pixel-ops/tests/torchvision_resize.rs`.

Reference: `torchvision.transforms.v2.functional.resize(t, [h, w], InterpolationMode.BICUBIC,
antialias=True)` on the `uint8` CPU tensor `t` (3 x H x W) of each image, i.e. PyTorch's
`_upsample_bicubic2d_aa` uint8 path. Nothing here re-implements it: the expected outputs are torchvision's.

Regenerate (from the repository root; needs torch and a torchvision built for it, numpy, Pillow):
    pip install "torchvision==0.29.2"     # the release matching the torch in use (here torch 2.15)
    python3 scripts/gen_torchvision_resize_fixtures.py

PyTorch compiles this kernel once per CPU capability and picks one at run time: the AVX2 build has its own
uint8 code (`UpSampleKernelAVXAntialias.h`), the others run the generic separable loops. The script runs
every case under each capability this CPU has (`ATEN_CPU_CAPABILITY=default|avx2|avx512`, in child
processes) and with both tensor layouts (contiguous CHW and channels-last), and records the largest
difference between them in the manifest (`isa_max_diff`); it stops if any path disagrees. The expected
outputs are the generic path's (`default`) on a channels-last tensor. Measured with torch 2.15 /
torchvision 0.29.2: every path agrees byte for byte, except two layout bugs of torch on a contiguous CHW
tensor resized to width 1 (the AVX build fails an internal assert for a 1x1 output; the generic build
repeats the first output row for an Nx1 output), which no `smart_resize` size reaches (sides are at least
28); they are listed in `torch_path_bugs`.

Outputs (under crates/pixel-ops/tests/fixtures/images/torchvision/, a few KB):
  manifest.json   every case: source (a seeded noise image or a structured image the Rust test rebuilds),
                  target size, FNV-1a 64 of torchvision's RGB bytes, and for small outputs the file
                  holding them; also Pillow 13's max difference from torchvision on the case
  *.png           torchvision's outputs of the small cases (lossless)
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "pixel-ops", "tests", "fixtures", "images", "torchvision")

# Full outputs are stored for cases with at most this many pixels; larger ones only by hash.
FULL_MAX_PIXELS = 64 * 64


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def noise(w: int, h: int, seed: int) -> np.ndarray:
    """Seeded noise the Rust test rebuilds: a 64-bit LCG, one byte (bits 56..63) per sample, RGB order."""
    out = bytearray(w * h * 3)
    s = seed & 0xFFFFFFFFFFFFFFFF
    for i in range(len(out)):
        s = (s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        out[i] = s >> 56
    return np.frombuffer(bytes(out), dtype=np.uint8).reshape(h, w, 3)


def structured(w: int, h: int) -> np.ndarray:
    """Smooth ramps, xor texture and hard-edged stripes (the same image as the Pillow fixtures' `procedural`)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * x + y * 3) % 256
    g = (x ^ y) & 255
    b = (((x // 7) + (y // 5)) % 2) * 255
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def checker(w: int, h: int) -> np.ndarray:
    """Black and white 3x3 blocks with one red channel edge: where Pillow and torchvision differ most."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    v = (((x // 3) + (y // 3)) % 2) * 255
    r = np.where(x < w // 2, 255, v)
    return np.stack([r, v, v], axis=-1).astype(np.uint8)


def source(spec) -> np.ndarray:
    kind, w, h = spec[0], spec[1], spec[2]
    if kind == "noise":
        return noise(w, h, spec[3])
    if kind == "structured":
        return structured(w, h)
    if kind == "checker":
        return checker(w, h)
    raise ValueError(kind)


# (source spec, (out_w, out_h)): upscales, downscales, odd sizes, one axis only, 1-pixel edges, extreme
# ratios, identity, and the sizes of the official pipeline's second stage.
CASES = [
    (["noise", 37, 23, 1], (80, 50)),
    (["noise", 37, 23, 1], (11, 7)),
    (["noise", 37, 23, 1], (13, 29)),
    (["noise", 37, 23, 1], (37, 9)),
    (["noise", 37, 23, 1], (5, 23)),
    (["noise", 37, 23, 1], (37, 23)),
    (["noise", 37, 23, 1], (1, 1)),
    (["noise", 1, 1, 2], (5, 3)),
    (["noise", 1, 1, 2], (1, 40)),
    (["noise", 1, 17, 3], (9, 4)),
    (["noise", 19, 1, 4], (3, 7)),
    (["noise", 300, 2, 5], (7, 1)),
    (["noise", 2, 300, 6], (1, 40)),
    (["noise", 600, 3, 7], (2, 2)),
    (["noise", 3, 5, 8], (64, 60)),
    (["noise", 64, 64, 9], (63, 65)),
    (["noise", 64, 64, 9], (17, 16)),
    (["noise", 97, 61, 10], (61, 97)),
    (["checker", 30, 30], (28, 28)),
    (["checker", 30, 30], (56, 56)),
    (["checker", 45, 31], (20, 13)),
    (["structured", 60, 48], (32, 64)),
    (["structured", 33, 29], (28, 28)),
    # Larger cases (hash only).
    (["structured", 300, 200], (308, 196)),
    (["structured", 1000, 750], (644, 476)),
    (["structured", 812, 588], (812, 784)),
    (["noise", 400, 300, 11], (56, 1204)),
    (["checker", 2296, 1708], (812, 588)),
    (["noise", 4000, 7, 12], (1000, 28)),
    # What transformers' Qwen2-VL processor does to a raw 1000x750 image at the official engine bounds, and
    # a 420x300 crop scaled up to the engine minimum.
    (["structured", 1000, 750], (1008, 756)),
    (["noise", 420, 300, 13], (756, 532)),
]


def torchvision_resize(arr: np.ndarray, w: int, h: int, channels_last: bool) -> np.ndarray:
    import torch
    from torchvision.transforms.v2 import functional as F

    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)  # a channels-last view
    if not channels_last:
        t = t.contiguous()
    out = F.resize(t, [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    return out.permute(1, 2, 0).contiguous().numpy()


def child(out_path: str) -> None:
    """Writes every case's outputs under this process's capability, both layouts, to `out_path` (npz).

    A case torch refuses is left out and reported (see `torch_path_bugs` in the module docs)."""
    import torch

    results = {}
    for layout in (False, True):
        for i, (spec, (w, h)) in enumerate(CASES):
            try:
                results[f"{int(layout)}_{i}"] = torchvision_resize(source(spec), w, h, layout)
            except RuntimeError as e:
                cap = torch.backends.cpu.get_cpu_capability()
                layout_name = "channels-last" if layout else "contiguous"
                print(f"{cap} {layout_name} {spec} -> {w}x{h}: torch fails: {str(e).splitlines()[0][:90]}")
    np.savez(out_path, capability=torch.backends.cpu.get_cpu_capability(), **results)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return

    import tempfile

    import torch
    import torchvision
    from PIL import Image

    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))

    # Every capability of this CPU, each in its own process (ATEN_CPU_CAPABILITY is read once at start).
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cap in ("default", "avx2", "avx512"):
            path = os.path.join(tmp, f"{cap}.npz")
            env = dict(os.environ, ATEN_CPU_CAPABILITY=cap)
            subprocess.run([sys.executable, __file__, "--child", path], env=env, check=True)
            data = np.load(path)
            got = str(data["capability"])
            if got.lower() != cap:
                print(f"capability {cap}: not available here (ran {got}), skipped")
                continue
            outputs[cap] = {k: data[k] for k in data.files if k != "capability"}
    caps = sorted(outputs)
    assert caps, "no capability ran"
    ref_cap = "default" if "default" in outputs else caps[0]
    ref = [outputs[ref_cap].get(f"1_{i}") for i in range(len(CASES))]
    assert all(r is not None for r in ref), "the reference path must run every case"
    isa_max = 0
    torch_bugs = []
    for cap in caps:
        for i, (spec, (w, h)) in enumerate(CASES):
            for layout in ("0", "1"):
                where = f"{cap}, {'channels-last' if layout == '1' else 'contiguous'} CHW, {spec} -> {w}x{h}"
                a = outputs[cap].get(f"{layout}_{i}")
                if a is None:
                    torch_bugs.append(f"{where}: fails an internal assert")
                    continue
                d = int(np.abs(a.astype(np.int16) - ref[i].astype(np.int16)).max())
                if d and layout == "0" and w == 1:
                    # A width-1 output of a contiguous tensor is also channels-last-contiguous: torch's
                    # generic loop then coalesces the wrong dimensions (every output row repeats the first).
                    # A layout bug of torch, not arithmetic: the channels-last input of the case agrees.
                    torch_bugs.append(f"{where}: rows repeated (max diff {d})")
                    continue
                isa_max = max(isa_max, d)
    for bug in torch_bugs:
        print("torch bug, left out of the comparison:", bug)
    print(f"capabilities {caps}, both layouts: max difference {isa_max} elsewhere")
    assert isa_max == 0, "torchvision is not deterministic across CPU paths here: record a tolerance"

    cases = []
    for i, (spec, (w, h)) in enumerate(CASES):
        expected = ref[i]
        src = source(spec)
        pil = np.asarray(Image.fromarray(src, "RGB").resize((w, h), Image.BICUBIC))
        case = {
            "source": spec,
            "width": w,
            "height": h,
            "fnv1a64": fnv1a64(expected.tobytes()),
            "pillow_max_diff": int(np.abs(pil.astype(np.int16) - expected.astype(np.int16)).max()),
        }
        if w * h <= FULL_MAX_PIXELS:
            name = f"{spec[0]}_{spec[1]}x{spec[2]}_to_{w}x{h}.png"
            Image.fromarray(expected, "RGB").save(os.path.join(OUT, name), optimize=True)
            case["expected"] = name
        cases.append(case)

    manifest = {
        "reference": "torchvision.transforms.v2.functional.resize(uint8 CHW tensor, [h, w], BICUBIC, antialias=True)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": Image.__version__,
        "capabilities": caps,
        "isa_max_diff": isa_max,
        "isa_note": "largest difference between the capabilities and layouts, over every case but torch_path_bugs",
        "torch_path_bugs": torch_bugs,
        "generator": "scripts/gen_torchvision_resize_fixtures.py",
        "cases": cases,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"{len(cases)} cases written to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
