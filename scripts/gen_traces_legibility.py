#!/usr/bin/env python3
"""Legibility check of the `needle` dataset (docs/traces.md, synthetic datasets): can a small classifier, told where the
tag is, read the digit from the global view, and from the cropped view?

A measurement, not a fixture: it prints accuracies (and optionally writes them as JSON) for docs/traces.md.
The targets of §8 are <= 30 % at the global view and >= 85 % in the crop.

Regenerate (from the repository root; needs torch and numpy):
    cargo run --release -p pixel-traces --example dump_needles -- /tmp/needles 3000 0
    python3 scripts/gen_traces_legibility.py /tmp/needles --train 2400   # the run in docs/traces.md

The dump holds, per sample, a 48x48 window of the global view centred on the tag for two model-input
limits (the official evaluation's 401,408..4,014,080 pixels, and a 256-token CPU budget of 200,704), a
96x96 window of the cropped view (official padded crop, resized as an observation), and the digit.
"""

import argparse
import json
import pathlib

import numpy as np
import torch
from torch import nn


def load(directory: pathlib.Path):
    meta = json.loads((directory / "meta.json").read_text())
    n, g, c = meta["n"], meta["global_window"], meta["crop_window"]
    labels = np.frombuffer((directory / "labels.u8").read_bytes(), dtype=np.uint8).astype(np.int64)
    views = {}
    for k, limits in enumerate(meta["global_limits"]):
        raw = np.frombuffer((directory / f"global_{k}.u8").read_bytes(), dtype=np.uint8)
        views[f"global max_pixels={limits[1]}"] = raw.reshape(n, g, g, 3)
    crop = np.frombuffer((directory / "crop.u8").read_bytes(), dtype=np.uint8).reshape(n, c, c, 3)
    views["crop"] = crop
    return meta, labels, views


def to_tensor(images: np.ndarray, crop_size: int) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2)
    if x.shape[-1] > crop_size:  # the crop-view window: keep its centre at full resolution
        o = (x.shape[-1] - crop_size) // 2
        x = x[:, :, o:o + crop_size, o:o + crop_size]
    # Per-image standardization (§8: plain scaling starves a from-scratch model on textured images).
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True) + 1e-3
    return (x - mean) / std


def classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


def accuracy(x: torch.Tensor, y: torch.Tensor, train: int, epochs: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = classifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt, xv, yv = x[:train], y[:train], x[train:], y[train:]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(train)
        for i in range(0, train, 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(xv).argmax(-1) == yv).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", type=pathlib.Path)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--json", type=pathlib.Path)
    parser.add_argument("--crop-size", type=int, default=64, help="centre of the crop-view window kept")
    parser.add_argument("--views", default="", help="comma-separated view names to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    meta, labels, views = load(args.dump)
    y = torch.from_numpy(labels)
    results = {}
    wanted = [v for v in args.views.split(",") if v]
    for name, images in views.items():
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        acc = accuracy(to_tensor(images, args.crop_size), y, args.train, args.epochs, seed=0)
        results[name] = acc
        print(f"{name:40s} accuracy {acc * 100:5.1f} % on {len(y) - args.train} held-out samples")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "accuracy": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
