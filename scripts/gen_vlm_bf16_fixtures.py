#!/usr/bin/env python3
"""Generate the half-precision parity fixture `crates/pixel-vlm/tests/fixtures/models/tiny_nested/expected_<case>_bf16.safetensors`.

Regenerate (from the repository root, after `scripts/gen_vlm_model_fixtures.py`; needs torch, transformers 5.24,
safetensors):

    python scripts/gen_vlm_bf16_fixtures.py

Loads the committed `tiny_nested` checkpoint (stored in bf16) with transformers in bfloat16 (eager attention,
as the f32 fixtures) and runs the inputs of the f32 fixture `expected_<case>.safetensors` again: the same input
ids, position ids, grids and `pixel_value(i, seed)` patches. Writes the vision features and logits of every
position as transformers computes them in bf16 (stored as f32), the same logits computed in f32 (so the test can
state how far bf16 itself is from f32), and greedy decoding in bf16 by full recomputation with the top-1/top-2
margin and logits of every step (bf16 logits of a tiny random model tie often, so the Rust test feeds these
tokens back and checks each step's logits, rather than expecting the same argmax at every step).
"""

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "crates/pixel-vlm/tests/fixtures/models/tiny_nested")
PATCH_DIM = 3 * 2 * 14 * 14
IMAGE_SEED, VIDEO_SEED = 0, 1_000_003
CASES = ["multi_image", "image_video"]
STEPS = 20


def pixel_values(n_patches, seed):
    """The patches of `gen_vlm_model_fixtures.py` (every value a multiple of 1/256, exact in bf16)."""
    i = torch.arange(n_patches * PATCH_DIM, dtype=torch.int64)
    v = ((i * 7919 + seed * 13 + 17) % 509 - 254).to(torch.float32) / 256.0
    return v.reshape(n_patches, PATCH_DIM)


def run(model, dtype, exp):
    kw = {}
    feats = {}
    for kind, grid_key, seed in [("image", "image_grid_thw", IMAGE_SEED), ("video", "video_grid_thw", VIDEO_SEED)]:
        if grid_key not in exp:
            continue
        grid = exp[grid_key]
        n = int(sum(int(t) * int(h) * int(w) for t, h, w in grid.tolist()))
        px = pixel_values(n, seed).to(dtype)
        kw["pixel_values" if kind == "image" else "pixel_values_videos"] = px
        kw[grid_key] = grid
        feats[f"{kind}_features"] = model.model.visual(px, grid_thw=grid).pooler_output.float()
    ids, pos = exp["input_ids"], exp["position_ids"]
    logits = model(input_ids=ids, position_ids=pos, **kw).logits[0].float()
    return feats, logits, kw


def greedy(model, exp, kw):
    seq, pos = exp["input_ids"], exp["position_ids"]
    tokens, margins, step_logits = [], [], []
    for _ in range(STEPS):
        out = model(input_ids=seq, position_ids=pos, **kw).logits[0, -1].float()
        step_logits.append(out)
        top = torch.topk(out, 2).values
        margins.append(float(top[0] - top[1]))
        nxt = int(out.argmax())
        tokens.append(nxt)
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
        pos = torch.cat([pos, torch.full((3, 1, 1), int(pos.max()) + 1)], dim=2)
    return tokens, margins, torch.stack(step_logits)


def main():
    torch.set_num_threads(2)
    models = {
        dtype: Qwen2_5_VLForConditionalGeneration.from_pretrained(
            MODEL, dtype=dtype, attn_implementation="eager").eval()
        for dtype in (torch.bfloat16, torch.float32)
    }
    assert models[torch.bfloat16].lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        for case in CASES:
            exp = load_file(os.path.join(MODEL, f"expected_{case}.safetensors"))
            feats, logits, kw = run(models[torch.bfloat16], torch.bfloat16, exp)
            _, logits_f32, _ = run(models[torch.float32], torch.float32, exp)
            # The f32 run must reproduce the committed f32 fixture (same inputs, same weights).
            assert (logits_f32 - exp["logits"]).abs().max() < 1e-5
            tokens, margins, step_logits = greedy(models[torch.bfloat16], exp, kw)
            out = {
                "logits": logits.contiguous(),
                "logits_f32": logits_f32.contiguous(),
                "greedy": torch.tensor(tokens, dtype=torch.int64),
                "greedy_margin": torch.tensor(margins, dtype=torch.float32),
                "greedy_logits": step_logits.contiguous(),
            }
            out.update({k: v.contiguous() for k, v in feats.items()})
            save_file(out, os.path.join(MODEL, f"expected_{case}_bf16.safetensors"))
            print(case, "bf16 vs f32 logits max diff", float((logits - logits_f32).abs().max()),
                  "greedy", tokens, "margins", [round(m, 4) for m in margins])


if __name__ == "__main__":
    main()
