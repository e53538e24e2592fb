#!/usr/bin/env python3
"""Write a Qwen2.5-VL checkpoint with random weights for speed measurements (scripts/device/cuda_speed.sh).

Run (from the repository root; needs torch + transformers, no network):

    python3 scripts/gen_vlm_speed_checkpoint.py OUT_DIR [--text-layers N] [--vision-depth N] [--preset 7b|tiny]
                                                        [--dtype bf16|f32] [--device cuda|cpu]

`--preset 7b` (default) is Qwen2.5-VL-7B-Instruct's shape (text: hidden 3584, MLP 18944, 28 layers, 28 query /
4 KV heads, vocabulary 152,064, untied head; vision: 32 blocks, hidden 1280, MLP 3420, 16 heads, full
attention in blocks 7/15/23/31, window 112; 8.29 B parameters, 16.6 GB in bf16). `--text-layers` and
`--vision-depth` shrink it (e.g. 4 and 4, so a run fits in a few minutes; full-attention blocks are those of
7/15/23/31 below the depth, else the last). `--preset tiny` has the same vocabulary and token ids with
hidden 64, for a CPU check of the scripts. The weights are transformers' own initialisation (normal,
std 0.02), drawn on `--device` (default: cuda when available) in `--dtype` (default bf16), and written by
`save_pretrained` (safetensors shards + index). The folder has no tokenizer: the benchmarks feed token ids.
Prints one JSON line: the folder, parameters, text-weight bytes and seconds taken.
"""

import argparse
import json
import os
import time

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

SHAPES = {
    "7b": dict(hidden=3584, mlp=18944, layers=28, heads=28, kv=4, v_hidden=1280, v_mlp=3420, v_heads=16,
               depth=32),
    "tiny": dict(hidden=64, mlp=128, layers=2, heads=4, kv=2, v_hidden=32, v_mlp=64, v_heads=2, depth=2),
}


def config(preset, text_layers=None, vision_depth=None):
    s = SHAPES[preset]
    layers = text_layers or s["layers"]
    depth = vision_depth or s["depth"]
    full = [i for i in (7, 15, 23, 31) if i < depth] or [depth - 1]
    head_dim = s["hidden"] // s["heads"]
    # M-RoPE sections of Qwen2.5-VL-7B (head dim 128); scaled to the head dim for smaller shapes.
    section = [16, 24, 24] if head_dim == 128 else [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=152064, hidden_size=s["hidden"], intermediate_size=s["mlp"], num_hidden_layers=layers,
            num_attention_heads=s["heads"], num_key_value_heads=s["kv"], rms_norm_eps=1e-6,
            max_position_embeddings=128000,
            rope_parameters=dict(rope_type="default", mrope_section=section, rope_theta=1e6),
            tie_word_embeddings=False),
        vision_config=dict(depth=depth, hidden_size=s["v_hidden"], intermediate_size=s["v_mlp"],
                           num_heads=s["v_heads"], out_hidden_size=s["hidden"], fullatt_block_indexes=full,
                           window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           tokens_per_second=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=False,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(SHAPES), default="7b")
    ap.add_argument("--text-layers", type=int)
    ap.add_argument("--vision-depth", type=int)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    cfg = config(args.preset, args.text_layers, args.vision_depth)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=dtype)
    model.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    text_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "visual" not in n)
    print(json.dumps(dict(dir=os.path.abspath(args.out), preset=args.preset, params=params,
                          text_weight_bytes=text_bytes, dtype=args.dtype,
                          seconds=round(time.perf_counter() - t0, 1))))


if __name__ == "__main__":
    main()
