#!/usr/bin/env python3
"""Qwen2.5-VL prefill/decode throughput: transformers (torch, f32) against the Rust crate, in one run.

Run from the repository root (needs torch + transformers 5.24; builds the Rust benchmark with cargo):

    python scripts/bench_vlm_reference.py [--threads 2] [--decode 16] [--batches 1,4] [--skip-rust]

With `--model DIR` it measures a checkpoint folder instead (the GPU comparison of issue 14; see
`scripts/device/cuda_speed.sh` and `bench_vlm_checkpoint.py` beside this file): load, prefill and greedy decode,
cold and warm, on `--device` (cuda or cpu), transformers and the Rust benchmark on the same weights.

Config: Qwen2.5-VL-3B widths (text hidden 2048, MLP 11008, 16 heads / 2 KV heads, vocab 151936 tied;
vision hidden 1280, MLP 3420, 16 heads) with 2 text layers and 4 vision blocks (~0.58 B parameters), random
weights, f32. Prompt: one 448x448 image (32x32 patches -> 256 tokens) inside 64 text tokens = 320 tokens.
Decode: greedy with the KV cache after a 16-token text prompt per row, at each batch size of `--batches`.
The machine's memory bandwidth gives the batch-1 decode bound: bytes of the text weights read per token /
read bandwidth, where the read bandwidth is a threaded sum over 1 GiB of f32 (a pure read stream, like a GEMV
over the weights) probed right before each implementation's decode (`torch.sum` for transformers, the same
sum in the Rust benchmark), because this machine's bandwidth drifts between runs.
The Rust side is `crates/pixel-vlm/benches/vlm_throughput.rs`, run for the `ndarray` and `flex` backends.
"""

import argparse
import json
import os
import subprocess
import sys
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


def bandwidth_gbs(threads):
    """(read GB/s of a threaded 1 GiB torch.sum, read+write GB/s of a 1 GiB numpy copy), best of 5 each."""
    torch.set_num_threads(threads)
    x = torch.ones(1 << 28, dtype=torch.float32)  # 1 GiB
    read = 0.0
    for _ in range(5):
        t = time.perf_counter()
        float(x.sum())
        read = max(read, x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    del x
    a = np.ones(1 << 28, dtype=np.float32)
    b = np.empty_like(a)
    copy = 0.0
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        copy = max(copy, 2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return read, copy


def bench_torch(threads, decode, batches):
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
        # Decode with the KV cache, one row per batch entry (different prompts), with the bandwidth probed just
        # before (the Rust benchmark does the same in-process).
        out["decode_read_gbs"] = bandwidth_gbs(threads)[0]
        out["decode_tok_s"] = {}
        for batch in batches:
            text = torch.stack([torch.arange(3000, 3016) + r for r in range(batch)])
            res = model(input_ids=text, use_cache=True)
            cache = res.past_key_values
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            steps = decode - 1
            t = time.perf_counter()
            for k in range(steps):
                p = torch.full((3, batch, 1), 16 + k)
                res = model(input_ids=nxt, position_ids=p, past_key_values=cache, use_cache=True)
                cache = res.past_key_values
                nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            out["decode_tok_s"][batch] = steps * batch / (time.perf_counter() - t)
    return out


def bench_rust(backend, threads, decode, batches):
    cmd = ["cargo", "bench", "-q", "-p", "pixel-vlm", "--bench", "vlm_throughput",
           "--no-default-features", "--features", backend]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), VLM_BENCH_DECODE=str(decode),
               VLM_BENCH_BATCHES=",".join(map(str, batches)))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    # Best of the prefill passes (2 by default), with the vision tower's time.
    prefill = min((l for l in lines if l["what"] == "prefill"), key=lambda l: l["seconds"])
    prefill["vision_seconds"] = next(l["seconds"] for l in lines if l["what"] == "vision")
    decode = {l["batch"]: l["tok_per_s"] for l in lines if l["what"] == "decode"}
    read_gbs = max(l["read_gbs"] for l in lines if l["what"] == "decode")
    return prefill, decode, read_gbs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", type=int, default=16)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--skip-rust", action="store_true")
    if any(a == "--model" or a.startswith("--model=") for a in sys.argv[1:]):
        # A checkpoint folder: the checkpoint comparison, with its own options (bench_vlm_checkpoint.py).
        import bench_vlm_checkpoint
        return bench_vlm_checkpoint.main(sys.argv[1:])
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    # This VM's memory bandwidth drifts from minute to minute (32-63 GB/s read seen on one day), so each
    # implementation's decode is compared with the bandwidth probed right before it (torch.sum here, the same
    # kind of threaded sum inside the Rust benchmark); probes around the runs are printed too.
    probes = [bandwidth_gbs(args.threads)]
    ref = bench_torch(args.threads, args.decode, batches)
    probes.append(bandwidth_gbs(args.threads))
    rust = {}
    if not args.skip_rust:
        for backend in ["ndarray", "flex"]:
            rust[backend] = bench_rust(backend, args.threads, args.decode, batches)
            probes.append(bandwidth_gbs(args.threads))
    gb = ref["text_bytes"] / 1e9
    print(f"parameters {ref['params'] / 1e6:.0f} M; text weights read per token {gb:.2f} GB; read bandwidth probes "
          f"(torch.sum, GB/s) {', '.join(f'{p[0]:.0f}' for p in probes)}; copy (numpy, read+write) "
          f"{max(p[1] for p in probes):.0f}")

    def vs_bound(tok_s, gbs):
        return f"{tok_s * gb / gbs:.0%} of the bound ({gbs:.0f} GB/s probed before it -> {gbs / gb:.1f} tok/s)"

    decode_ref = ", ".join(f"batch {b}: {v:.2f} tok/s" for b, v in ref["decode_tok_s"].items())
    print(f"transformers: prefill {ref['prefill_seconds']:.2f} s (vision {ref['vision_seconds']:.2f} s), "
          f"decode {decode_ref}; batch 1 = {vs_bound(ref['decode_tok_s'][batches[0]], ref['decode_read_gbs'])}")
    for backend, (pf, dc, read_gbs) in rust.items():
        print(f"burn-{backend}: prefill {pf['seconds']:.2f} s (vision {pf['vision_seconds']:.2f} s) = "
              f"{ref['prefill_seconds'] / pf['seconds']:.2f}x transformers")
        for b in batches:
            line = (f"  decode batch {b}: {dc[b]:.2f} tok/s = {dc[b] / ref['decode_tok_s'][b]:.2f}x transformers")
            if b == 1:
                line += ", " + vs_bound(dc[b], read_gbs)
            print(line)

if __name__ == "__main__":
    main()
