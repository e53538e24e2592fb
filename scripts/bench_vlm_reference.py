#!/usr/bin/env python3
"""Qwen2.5-VL prefill/decode throughput: transformers (torch, f32) against the Rust crate, in one run.

Run from the repository root (needs torch + transformers 5.24; builds the Rust benchmark with cargo):

    python scripts/bench_vlm_reference.py [--threads 2] [--decode 16] [--skip-rust]

Config: Qwen2.5-VL-3B widths (text hidden 2048, MLP 11008, 16 heads / 2 KV heads, vocab 151936 tied;
vision hidden 1280, MLP 3420, 16 heads) with 2 text layers and 4 vision blocks (~0.58 B parameters), random
weights, f32. Prompt: one 448x448 image (32x32 patches -> 256 tokens) inside 64 text tokens = 320 tokens.
Decode: greedy at batch 1 with the KV cache after a 16-token text prompt. The machine's memory bandwidth
(numpy copy of 1 GiB) gives the decode bound: bytes of the text weights read per token / bandwidth.
The Rust side is `crates/pixel-vlm/benches/vlm_throughput.rs`, run for the `ndarray` and `flex` backends.
"""

import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_LAYERS, VISION_DEPTH = 2, 4


def config():
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=16, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
            rope_parameters=dict(rope_type="default", mrope_section=[16, 24, 24], rope_theta=1e6),
            tie_word_embeddings=True),
        vision_config=dict(depth=VISION_DEPTH, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=2048, fullatt_block_indexes=[VISION_DEPTH - 1], window_size=112),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def prompt():
    ids = list(range(1000, 1032)) + [151652] + [151655] * 256 + [151653] + list(range(2000, 2030))
    patches = 32 * 32
    i = torch.arange(patches * 1176, dtype=torch.int64)
    pixel_values = (((i * 7919) % 509) - 254).to(torch.float32).reshape(patches, 1176) / 256.0
    return torch.tensor([ids]), pixel_values, torch.tensor([[1, 32, 32]])


def bandwidth_gbs():
    a = np.ones(1 << 28, dtype=np.float32)  # 1 GiB
    b = np.empty_like(a)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(b, a)
        dt = time.perf_counter() - t
        best = max(best, 2 * a.nbytes / dt / 1e9)  # read + write
    return best


def bench_torch(threads, decode):
    torch.set_num_threads(threads)
    cfg = config()
    cfg._attn_implementation = "sdpa"
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    text_bytes = sum(p.numel() * 4 for n, p in model.named_parameters() if "visual" not in n)
    ids, pixel_values, grid = prompt()
    mm = (ids == 151655).int()
    pos, _ = model.model.get_rope_index(ids, mm, image_grid_thw=grid)
    out = {"params": params, "text_bytes": text_bytes}
    with torch.no_grad():
        model.model.visual(pixel_values, grid_thw=grid)
        t = time.perf_counter()
        model.model.visual(pixel_values, grid_thw=grid)
        out["vision_seconds"] = time.perf_counter() - t
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            model(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, position_ids=pos, use_cache=True)
            best = min(best, time.perf_counter() - t)
        out["prefill_seconds"] = best
        # Decode with the KV cache.
        text = torch.arange(3000, 3016).reshape(1, -1)
        res = model(input_ids=text, use_cache=True)
        cache = res.past_key_values if hasattr(res, "past_key_values") else res.cache
        nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        steps = decode - 1
        t = time.perf_counter()
        for k in range(steps):
            p = torch.full((3, 1, 1), 16 + k)
            res = model(input_ids=nxt, position_ids=p, past_key_values=cache, use_cache=True)
            cache = res.past_key_values if hasattr(res, "past_key_values") else res.cache
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
        out["decode_tok_s"] = steps / (time.perf_counter() - t)
    return out


def bench_rust(backend, threads, decode):
    cmd = ["cargo", "bench", "-q", "-p", "pixel-vlm", "--bench", "vlm_throughput"]
    if backend == "flex":
        cmd += ["--no-default-features", "--features", "flex"]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), VLM_BENCH_DECODE=str(decode))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    return {l["what"]: l for l in lines}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--skip-rust", action="store_true")
    args = ap.parse_args()
    bw = bandwidth_gbs()
    ref = bench_torch(args.threads, args.decode)
    bound = bw * 1e9 / ref["text_bytes"]
    print(f"parameters {ref['params'] / 1e6:.0f} M; text weights read per token {ref['text_bytes'] / 1e9:.2f} GB; "
          f"copy bandwidth {bw:.1f} GB/s -> decode bound {bound:.1f} tok/s")
    print(f"transformers: prefill {ref['prefill_seconds']:.2f} s (vision {ref['vision_seconds']:.2f} s), "
          f"decode {ref['decode_tok_s']:.2f} tok/s")
    if args.skip_rust:
        return
    for backend in ["ndarray", "flex"]:
        r = bench_rust(backend, args.threads, args.decode)
        pf, dc = r["prefill"], r["decode"]
        print(f"burn-{backend}: prefill {pf['seconds']:.2f} s (vision {pf['vision_seconds']:.2f} s) = "
              f"{ref['prefill_seconds'] / pf['seconds']:.2f}x transformers; decode {dc['tok_per_s']:.2f} tok/s = "
              f"{dc['tok_per_s'] / ref['decode_tok_s']:.2f}x transformers, {dc['tok_per_s'] / bound:.0%} of the bound")


if __name__ == "__main__":
    main()
