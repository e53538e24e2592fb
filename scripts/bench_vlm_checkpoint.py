#!/usr/bin/env python3
"""Qwen2.5-VL on a checkpoint folder: transformers against pixel-vlm on the same device and weights, one run.

Run from the repository root (torch + transformers; the Rust side is a prebuilt benchmark binary, or cargo):

    python3 scripts/bench_vlm_reference.py --model DIR [--device cuda] [--dtype bf16] [--rust-bin PATH]
        [--images 16x16,74x74] [--decode 64] [--batches 1,8] [--passes 2] [--json OUT.json]

(`bench_vlm_reference.py --model ...` hands its arguments to this file; running this file directly is the
same.) `scripts/device/cuda_speed.sh` runs it on a GPU machine with the binary of
`scripts/device/build_cuda_speed.sh`, on a checkpoint written by `scripts/gen_vlm_speed_checkpoint.py`.

What is measured, on each side, in this order, in one process per side (transformers first, then the Rust
binary `crates/pixel-vlm/benches/vlm_throughput.rs` with `VLM_BENCH_MODEL`):
- load: `from_pretrained` of the folder in `--dtype` onto the device, to the device's completion; GB/s =
  bytes of its `*.safetensors` files / seconds. The folder was usually just written, so it is read from the
  page cache by both (this measures parsing and copying to the device, not the disk).
- prefill: one image of `HxW` patches (`H·W/4` image tokens) inside 64 text tokens (`16x16`: 128 tokens with
  64 image tokens; `74x74`: 1,433 with 1,369), vision tower included, KV cache filled, next-token logits
  only; `--passes` times in a row (at least 2): pass 1 is cold (first time this process sees the shape).
- decode: greedy, a 16-token text prompt per row (rows differ), `--decode` new tokens of which `decode - 1`
  forwards are timed, at each batch size; `--passes` times over the same lengths: pass 1 cold, later warm.
- the decode bound (batch 1): bytes of the text weights (everything but the vision tower, the head included)
  read once per token / the device's read bandwidth (a `sum` over 2 GiB on the device, best of 10).
Ratios are pixel-vlm vs transformers, > 1 meaning pixel-vlm is faster.
"""

import argparse
import json
import os
import subprocess
import time

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}
TEXT_BEFORE, TEXT_AFTER = 32, 30  # as in vlm_throughput.rs


def grids(spec):
    out = []
    for part in spec.split(","):
        h, w = (int(v) for v in part.lower().split("x"))
        if h < 2 or w < 2 or h % 2 or w % 2:
            raise SystemExit(f"--images: {part} must be HxW with even sides >= 2")
        out.append((h, w))
    return out


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def read_gbs(device, threads):
    """Read bandwidth of the device: sum over 2 GiB, best of 10 (GPU), or of 1 GiB with `threads` (CPU)."""
    n = (1 << 30) if device.startswith("cuda") else (1 << 28)
    x = torch.ones(n, dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32, device=device)
    best = 0.0
    for _ in range(10):
        sync(device)
        t = time.perf_counter()
        float(x.sum())
        best = max(best, x.numel() * x.element_size() / (time.perf_counter() - t) / 1e9)
    del x
    return best


def prompt(config, grid, device, dtype):
    """The prompt of vlm_throughput.rs: token ids, pixel values and the grid of one image."""
    h, w = grid
    n = h * w // 4
    ids = (list(range(1000, 1000 + TEXT_BEFORE)) + [config.vision_start_token_id] + [config.image_token_id] * n
           + [config.vision_end_token_id] + list(range(2000, 2000 + TEXT_AFTER)))
    i = torch.arange(h * w * 1176, dtype=torch.int64)
    pixels = (((i * 7919) % 509) - 254).to(torch.float32).reshape(h * w, 1176) / 256.0
    return (torch.tensor([ids], device=device), pixels.to(device=device, dtype=dtype),
            torch.tensor([[1, h, w]], device=device))


def checkpoint_bytes(model_dir):
    return sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)
               if f.endswith(".safetensors"))


def bench_transformers(args):
    device, dtype = args.device, DTYPES[args.dtype]
    if not device.startswith("cuda"):
        torch.set_num_threads(args.threads)
    out = {"prefill": [], "decode": []}
    sync(device)
    t = time.perf_counter()
    how = "device_map"
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            args.model, dtype=dtype, device_map=device, attn_implementation="sdpa")
    except (ImportError, ValueError) as e:  # device_map needs accelerate in some versions
        print(f"transformers: device_map={device!r} refused ({e}); loading on the host, then .to()")
        how = "host then .to()"
        t = time.perf_counter()
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            args.model, dtype=dtype, attn_implementation="sdpa").to(device)
    model.eval()
    sync(device)
    out["load"] = {"seconds": time.perf_counter() - t, "bytes": checkpoint_bytes(args.model), "how": how}
    out["params"] = sum(p.numel() for p in model.parameters())
    out["text_bytes"] = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "visual" not in n)
    cfg = model.config
    with torch.no_grad():
        for grid in grids(args.images):
            ids, pixels, thw = prompt(cfg, grid, device, dtype)
            mm = (ids == cfg.image_token_id).int()
            pos, _ = model.model.get_rope_index(ids, mm, image_grid_thw=thw)
            for p in range(1, max(2, args.passes) + 1):
                sync(device)
                t = time.perf_counter()
                model(input_ids=ids, pixel_values=pixels, image_grid_thw=thw, position_ids=pos, use_cache=True,
                      logits_to_keep=1)
                sync(device)
                out["prefill"].append({"pass": p, "tokens": ids.shape[1], "image_tokens": grid[0] * grid[1] // 4,
                                       "seconds": time.perf_counter() - t})
        for batch in batches(args):
            for p in range(1, args.passes + 1):
                text = torch.stack([torch.arange(3000, 3016, device=device) + r for r in range(batch)])
                res = model(input_ids=text, use_cache=True, logits_to_keep=1)
                cache = res.past_key_values
                nxt = res.logits[:, -1].argmax(-1, keepdim=True)
                steps = args.decode - 1
                sync(device)
                t = time.perf_counter()
                for k in range(steps):
                    pos = torch.full((3, batch, 1), 16 + k, device=device)
                    res = model(input_ids=nxt, position_ids=pos, past_key_values=cache, use_cache=True)
                    cache = res.past_key_values
                    nxt = res.logits[:, -1].argmax(-1, keepdim=True)
                sync(device)
                secs = time.perf_counter() - t
                out["decode"].append({"pass": p, "batch": batch, "tokens": steps * batch, "seconds": secs,
                                      "tok_per_s": steps * batch / secs})
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def batches(args):
    return [int(b) for b in args.batches.split(",") if b.strip()]


def bench_rust(args):
    env = dict(os.environ, VLM_BENCH_MODEL=os.path.abspath(args.model), VLM_BENCH_DTYPE=args.dtype,
               VLM_BENCH_IMAGES=args.images, VLM_BENCH_PASSES=str(args.passes), VLM_BENCH_DECODE=str(args.decode),
               VLM_BENCH_BATCHES=args.batches, RAYON_NUM_THREADS=str(args.threads))
    if args.rust_bin:
        cmd = [args.rust_bin]
    else:
        features = "cuda" if args.device.startswith("cuda") else "flex"
        cmd = ["cargo", "bench", "-q", "-p", "pixel-vlm", "--bench", "vlm_throughput", "--no-default-features",
               "--features", features]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    out = {"prefill": [l for l in lines if l["what"] == "prefill"],
           "decode": [l for l in lines if l["what"] == "decode"]}
    load = [l for l in lines if l["what"] == "load"]
    out["load"] = load[0] if load else None
    return out


def table(ref, rust, bw, device_name):
    gb = ref["text_bytes"] / 1e9
    rows = [f"device: {device_name}; {ref['params'] / 1e9:.2f} B parameters, text weights {gb:.2f} GB read per "
            f"token; read bandwidth {bw:.0f} GB/s -> batch-1 decode bound {bw / gb:.1f} tok/s",
            "", "| | transformers | pixel-vlm | pixel-vlm vs transformers |", "|---|---|---|---|"]
    lr, lo = ref["load"], rust["load"]
    ours = ratio = "—"
    if lo:
        ours = f"{lo['seconds']:.1f} s ({lo['bytes'] / lo['seconds'] / 1e9:.2f} GB/s)"
        ratio = f"{lr['seconds'] / lo['seconds']:.2f}x"
    rows.append(f"| load {lr['bytes'] / 1e9:.2f} GB | {lr['seconds']:.1f} s ({lr['bytes'] / lr['seconds'] / 1e9:.2f} "
                f"GB/s) | {ours} | {ratio} |")
    for a in ref["prefill"]:
        b = next((x for x in rust["prefill"] if x["tokens"] == a["tokens"] and x["pass"] == a["pass"]), None)
        what = f"prefill {a['tokens']} tokens ({a['image_tokens']} image), {'cold' if a['pass'] == 1 else 'warm'}"
        ours, ratio = (f"{b['seconds']:.3f} s", f"{a['seconds'] / b['seconds']:.2f}x") if b else ("—", "—")
        rows.append(f"| {what} | {a['seconds']:.3f} s | {ours} | {ratio} |")
    for a in ref["decode"]:
        b = next((x for x in rust["decode"] if x["batch"] == a["batch"] and x["pass"] == a["pass"]), None)
        what = f"greedy decode batch {a['batch']}, {'cold' if a['pass'] == 1 else 'warm'}"
        bound = ""
        if a["batch"] == 1:
            bound = f" (of the bound: transformers {a['tok_per_s'] * gb / bw:.1%}" + (
                f", pixel-vlm {b['tok_per_s'] * gb / bw:.1%})" if b else ")")
        ours, ratio = (f"{b['tok_per_s']:.1f} tok/s", f"{b['tok_per_s'] / a['tok_per_s']:.2f}x") if b else ("—", "—")
        rows.append(f"| {what} | {a['tok_per_s']:.1f} tok/s | {ours} | {ratio}{bound} |")
    return "\n".join(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (config.json + safetensors)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--rust-bin", help="the vlm_throughput binary (default: cargo bench)")
    ap.add_argument("--images", default="16x16,74x74", help="image grids in patches, HxW comma-separated")
    ap.add_argument("--decode", type=int, default=64, help="new tokens per row")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--passes", type=int, default=2, help="runs over the same lengths: 1 cold, then warm")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (CPU runs only)")
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args(argv)
    if args.decode < 2 or args.passes < 1:
        raise SystemExit("--decode must be >= 2 and --passes >= 1")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    bw = read_gbs(args.device, args.threads)
    ref = bench_transformers(args)
    rust = {"prefill": [], "decode": [], "load": None} if args.skip_rust else bench_rust(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "read_gbs": bw, "transformers": ref, "pixel_vlm": rust,
                       "args": vars(args)}, f, indent=1)
    print(table(ref, rust, bw, device_name))


if __name__ == "__main__":
    main()
