#!/usr/bin/env python3
"""Qwen2.5-VL training step on CPU: transformers (torch autograd, f32) against burn (`Autodiff<Flex>`), in one run.

Run from the repository root (needs torch + transformers 5.24; builds the Rust benchmark with cargo):

    python scripts/bench_train_reference.py [--threads 2] [--configs a,b] [--steps 5] [--steps-b 3]
        [--optimizer] [--freeze-vision] [--rollout-tokens 32] [--malloc-tuned] [--rust-bin PATH] [--skip-rust]

What is timed, per config, for each implementation (median of the timed steps after --warmup untimed ones):
forward to the loss, backward, their sum (the step), and with --optimizer an AdamW step (lr 1e-5, no weight
decay). Loss: minus the sum of the target log-probs (log_softmax of the logits, gathered at the next token)
over the positions that predict a text token (not an image pad or a vision start/end marker): an SFT loss,
or a GRPO loss with unit advantages. Random weights, f32, `torch.set_num_threads(threads)` and
`RAYON_NUM_THREADS=threads`. Both sides build the same token ids, M-RoPE positions (each library's own
`get_rope_index`), targets, mask and pixel values from the same formulas.

Configs:
  a: the CPU demo's model: 4 text layers, hidden 192, 4 query / 2 KV heads (head_dim 48, M-RoPE sections
     [6, 9, 9]), MLP 512, vocabulary 1,024 (tied); vision 2 blocks (hidden 128, 2 heads, MLP 256, the second
     full attention, window 112). Batch 32 x 80 tokens, each row with two 112x112 images (8x8 patches -> 16
     merged tokens each): 2.66 M parameters.
  b: Qwen2.5-VL-3B widths (text hidden 2048, MLP 11008, 16 query / 2 KV heads, tied 151936 vocabulary; vision
     hidden 1280, MLP 3420, 16 heads) with 2 text layers and 4 vision blocks (the config of
     scripts/bench_vlm_reference.py, ~0.58 B parameters). Batch 1 x 320 tokens with one 448x448 image
     (32x32 patches -> 256 tokens). --batch-b changes the batch.

Rollout (--rollout-tokens N > 0, config a only): prefill each row's prompt (its first 52 tokens, both images)
and sample N tokens per row at temperature 1 with the KV cache (transformers `generate`, the crate's
`Session`), batch 32: trajectories per second.

--malloc-tuned runs both implementations with glibc's malloc keeping freed memory (GLIBC_TUNABLES below):
by default every buffer over 32 MiB is a fresh mmap whose pages the kernel zeroes on first touch, which is a
large share of a 0.5 B step (config b) for both.

Each implementation runs in its own process (torch in a child of this script, burn as the
`crates/pixel-vlm/benches/train_step.rs` binary), one after the other, config by config, so that memory is
returned between them; the 1-minute load average is printed next to each measurement.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184:"
                   "glibc.malloc.top_pad=268435456")

SPECIAL = {
    "a": dict(vision_start=1000, vision_end=1001, image=1002, video=1003),
    "b": dict(vision_start=151652, vision_end=151653, image=151655, video=151656),
}
# Segments of a row: (text tokens, image side in patches), then the trailing text tokens.
LAYOUT = {"a": ([(8, 8), (8, 8)], 28), "b": ([(32, 32)], 30)}
DEFAULT_BATCH = {"a": 32, "b": 1}


def config(which):
    from transformers import Qwen2_5_VLConfig

    sp = SPECIAL[which]
    if which == "a":
        text = dict(vocab_size=1024, hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
                    rope_parameters=dict(rope_type="default", mrope_section=[6, 9, 9], rope_theta=1e6),
                    tie_word_embeddings=True, bos_token_id=None, eos_token_id=None)
        vision = dict(depth=2, hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=192,
                      fullatt_block_indexes=[1], window_size=112)
    else:
        text = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=2,
                    num_attention_heads=16, num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=4096,
                    rope_parameters=dict(rope_type="default", mrope_section=[16, 24, 24], rope_theta=1e6),
                    tie_word_embeddings=True)
        vision = dict(depth=4, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                      fullatt_block_indexes=[3], window_size=112)
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=sp["image"],
                           video_token_id=sp["video"], vision_start_token_id=sp["vision_start"],
                           vision_end_token_id=sp["vision_end"], tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return cfg


def text_token(which, r, i):
    v = r * 131 + i * 17 + 3
    return v % 1000 if which == "a" else 1000 + v % 50000


def build_batch(which, batch):
    """Token ids [b, s], pixel values [patches, 1176], grids, targets [b, s], score mask [b, s], prompt length."""
    import torch

    sp = SPECIAL[which]
    segments, tail = LAYOUT[which]
    rows, grids, pixels = [], [], []
    prompt_len = 0
    for r in range(batch):
        ids, t = [], 0
        for text, side in segments:
            for _ in range(text):
                t += 1
                ids.append(text_token(which, r, t))
            ids += [sp["vision_start"]] + [sp["image"]] * (side * side // 4) + [sp["vision_end"]]
            k = len(grids)
            grids.append([1, side, side])
            i = torch.arange(side * side * 1176, dtype=torch.int64)
            pixels.append((((i * 7919 + k * 104729) % 509).to(torch.float32) / 256.0 - 254.0 / 256.0)
                          .reshape(side * side, 1176))
        prompt_len = len(ids)
        for _ in range(tail):
            t += 1
            ids.append(text_token(which, r, t))
        rows.append(ids)
    ids = torch.tensor(rows)
    special = set(sp[k] for k in ("vision_start", "vision_end", "image"))
    targets = torch.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    score = torch.zeros(ids.shape, dtype=torch.float32)
    for r in range(batch):
        for i in range(ids.shape[1] - 1):
            score[r, i] = float(int(ids[r, i + 1]) not in special)
    return ids, torch.cat(pixels), torch.tensor(grids), targets, score, prompt_len


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def torch_worker(args):
    """Runs in a child process: one config's torch measurements, printed as JSON lines."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    which = args.worker
    batch = args.batch_b if which == "b" else DEFAULT_BATCH[which]
    model = Qwen2_5_VLForConditionalGeneration(config(which))
    if args.freeze_vision:
        model.model.visual.requires_grad_(False)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids, pixel_values, grid, targets, score, prompt_len = build_batch(which, batch)
    mm = (ids == SPECIAL[which]["image"]).int()
    pos, _ = model.model.get_rope_index(ids, mm, image_grid_thw=grid)
    if not args.no_train:
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.0)
        fwd, bwd, step, optim = [], [], [], []
        loss_value = 0.0
        steps = args.steps_b if which == "b" else args.steps
        for i in range(args.warmup + steps):
            t = time.perf_counter()
            logits = model(input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, position_ids=pos,
                           use_cache=False).logits
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            loss = -(logp * score).sum()
            loss_value = loss.item()
            t_fwd = time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            t_bwd = time.perf_counter() - t
            t_opt = 0.0
            if args.optimizer:
                t = time.perf_counter()
                opt.step()
                t_opt = time.perf_counter() - t
            opt.zero_grad(set_to_none=True)
            del logits, logp, loss
            print(f"torch step {i}: forward {t_fwd:.3f} s, backward {t_bwd:.3f} s, optimizer {t_opt:.3f} s, "
                  f"loss {loss_value:.3f}", file=sys.stderr)
            if i >= args.warmup:
                fwd.append(t_fwd)
                bwd.append(t_bwd)
                step.append(t_fwd + t_bwd)
                optim.append(t_opt)
        print(json.dumps(dict(impl="torch", what="train_step", config=which, batch=batch, seq=ids.shape[1],
                              images=len(grid), params=params, trainable=trainable, freeze_vision=args.freeze_vision,
                              loss=loss_value, forward_s=median(fwd), backward_s=median(bwd), step_s=median(step),
                              optimizer_s=median(optim) if args.optimizer else None, steps_s=step)), flush=True)
        del opt
    if args.rollout_tokens > 0 and which == "a":
        model.eval()
        n = args.rollout_tokens
        prompt = ids[:, :prompt_len]
        gen = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=1.0, top_k=0,
                               top_p=1.0, eos_token_id=None, pad_token_id=0, use_cache=True)
        times, prefills = [], []
        with torch.no_grad():
            for i in range(1 + min(args.steps, 3)):
                t = time.perf_counter()
                out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                     pixel_values=pixel_values, image_grid_thw=grid, generation_config=gen)
                total = time.perf_counter() - t
                # The prefill alone (one forward of the prompts), for the split.
                t = time.perf_counter()
                model(input_ids=prompt, attention_mask=torch.ones_like(prompt), pixel_values=pixel_values,
                      image_grid_thw=grid, use_cache=True, logits_to_keep=1)
                t_prefill = time.perf_counter() - t
                assert out.shape[1] == prompt_len + n, out.shape
                print(f"torch rollout {i}: prefill {t_prefill:.3f} s, total {total:.3f} s", file=sys.stderr)
                if i >= 1:
                    times.append(total)
                    prefills.append(t_prefill)
        secs = median(times)
        print(json.dumps(dict(impl="torch", what="rollout", config=which, batch=batch, prompt=prompt_len,
                              new_tokens=n, seconds=secs, prefill_s=median(prefills),
                              decode_s=secs - median(prefills), trajectories_per_s=batch / secs,
                              tokens_per_s=batch * n / secs)), flush=True)


def child_env(args, **extra):
    env = dict(os.environ, **extra)
    if args.malloc_tuned:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    return env


def run_lines(cmd, env):
    """Runs a command, echoing its stderr; returns its JSON stdout lines."""
    res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def common_args(args, which):
    steps = args.steps_b if which == "b" else args.steps
    out = ["--warmup", str(args.warmup), "--steps", str(steps)]
    if args.optimizer:
        out.append("--optimizer")
    if args.freeze_vision:
        out.append("--freeze-vision")
    return out


def run_torch(args, which, rollout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", which, "--threads", str(args.threads),
           "--batch-b", str(args.batch_b), "--rollout-tokens", str(args.rollout_tokens if rollout else 0)]
    cmd += common_args(args, which) + ["--steps-b", str(args.steps_b)]
    if args.no_train:
        cmd.append("--no-train")
    return run_lines(cmd, child_env(args))


def run_rust(args, which, rollout):
    env = child_env(args, RAYON_NUM_THREADS=str(args.threads))
    if args.rust_bin:
        cmd = [args.rust_bin]
    else:
        cmd = ["cargo", "bench", "-q", "-p", "pixel-vlm", "--bench", "train_step", "--"]
    cmd += ["--config", which] + common_args(args, which)
    if which == "b":
        cmd += ["--batch", str(args.batch_b)]
    if rollout:
        cmd += ["--rollout-tokens", str(args.rollout_tokens)]
    if args.no_train:
        cmd.append("--no-train")
    return run_lines(cmd, env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="a,b")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (a 0.5 B step needs ~3 to warm the heap)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--steps-b", type=int, default=3, help="timed steps of config b")
    ap.add_argument("--batch-b", type=int, default=1)
    ap.add_argument("--optimizer", action="store_true", help="also time an AdamW step")
    ap.add_argument("--freeze-vision", action="store_true", help="vision tower excluded from gradients")
    ap.add_argument("--no-train", action="store_true", help="only the rollout")
    ap.add_argument("--rollout-tokens", type=int, default=0, help="rollout of config a with N new tokens per row")
    ap.add_argument("--malloc-tuned", action="store_true", help="both sides with GLIBC_TUNABLES (see above)")
    ap.add_argument("--rust-bin", help="a built train_step binary instead of `cargo bench`")
    ap.add_argument("--skip-rust", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        torch_worker(args)
        return
    if not args.skip_rust and not args.rust_bin:
        # Build first, so that compiling never overlaps a measurement.
        subprocess.run(["cargo", "bench", "-q", "-p", "pixel-vlm", "--bench", "train_step", "--no-run"], cwd=ROOT,
                       check=True)
    results = []
    for which in args.configs.split(","):
        rollout = args.rollout_tokens > 0 and which == "a"
        for name, run in [("torch", run_torch), ("burn", run_rust)]:
            if name == "burn" and args.skip_rust:
                continue
            load = os.getloadavg()[0]
            lines = run(args, which, rollout)
            for line in lines:
                line["load_before"] = load
                line["load_after"] = os.getloadavg()[0]
                print(json.dumps(line), flush=True)
            results += lines

    def find(impl, what, which):
        return next((r for r in results if r["impl"].startswith(impl) and r["what"] == what
                     and r["config"] == which), None)

    print()
    print(f"threads {args.threads}; {args.steps} (a) / {args.steps_b} (b) timed steps after {args.warmup} warm-up; "
          f"median seconds; malloc_tuned={args.malloc_tuned}; "
          f"freeze_vision={args.freeze_vision}; ratio = torch time / burn time (> 1: burn faster)")
    print("| config | impl | params (trainable) | batch x seq | forward | backward | fwd+bwd | AdamW | "
          "steps/s (fwd+bwd) | ratio fwd+bwd | ratio with AdamW | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for which in args.configs.split(","):
        ref = find("torch", "train_step", which)
        for impl in ["torch", "burn"]:
            r = find(impl, "train_step", which)
            if r is None:
                continue
            has_opt = r.get("optimizer_s") is not None
            opt = f"{r['optimizer_s']:.3f}" if has_opt else "-"
            ratio = f"{ref['step_s'] / r['step_s']:.2f}x" if ref else "-"
            ratio_opt = (f"{(ref['step_s'] + ref['optimizer_s']) / (r['step_s'] + r['optimizer_s']):.2f}x"
                         if ref and has_opt else "-")
            print(f"| {which} | {r['impl']} | {r['params'] / 1e6:.2f} M ({r['trainable'] / 1e6:.2f} M) | "
                  f"{r['batch']} x {r['seq']} | {r['forward_s']:.3f} | {r['backward_s']:.3f} | {r['step_s']:.3f} | "
                  f"{opt} | {1 / r['step_s']:.3f} | {ratio} | {ratio_opt} | "
                  f"{r['load_before']:.2f}-{r['load_after']:.2f} |")
    for which in args.configs.split(","):
        ref = find("torch", "rollout", which)
        for impl in ["torch", "burn"]:
            r = find(impl, "rollout", which)
            if r is None:
                continue
            ratio = f"{ref['seconds'] / r['seconds']:.2f}x" if ref else "-"
            print(f"rollout {which} {r['impl']}: batch {r['batch']}, prompt {r['prompt']} + {r['new_tokens']} "
                  f"tokens: {r['seconds']:.3f} s (prefill {r['prefill_s']:.3f} s), "
                  f"{r['trajectories_per_s']:.2f} trajectories/s, {r['tokens_per_s']:.1f} tok/s = {ratio} torch; "
                  f"load {r['load_before']:.2f}-{r['load_after']:.2f}")


if __name__ == "__main__":
    main()
