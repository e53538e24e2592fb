#!/usr/bin/env python3
"""Check pixel-vlm's `save_pretrained` against transformers and record the fixture of that check.

Regenerate (from the repository root; needs torch, transformers 5.24 and safetensors; cargo builds the Rust
side):

    python scripts/gen_vlm_save_fixtures.py            # or --no-cargo if the folder is already written

1. Runs the Rust test `saved_folder_matches_the_committed_fixture_and_transformers_logits` with
   `PIXEL_VLM_WRITE_SAVE_FIXTURE=1`, which makes pixel-vlm load `tests/fixtures/models/tiny_flat` and save it
   into `tests/fixtures/models/tiny_flat_saved/` (bf16, shards of at most 200 kB: `config.json`,
   `model-0000k-of-0000n.safetensors`, `model.safetensors.index.json`).
2. Loads that folder with transformers' `Qwen2_5_VLForConditionalGeneration.from_pretrained` (computing in
   f32) and asserts that no key is missing, unexpected or mis-shaped, that every tensor equals tiny_flat's
   original weight rounded to bf16 (round to nearest even), and that transformers' own `save_pretrained` of
   the loaded model holds the same tensors under the same (canonical) names.
3. Runs the `multi_image` prompt of tiny_flat (input ids and image grids from
   `tiny_flat/expected_multi_image.safetensors`, pixel values from the shared deterministic formula) and
   writes `tiny_flat_saved/expected_transformers.safetensors`: input_ids, position_ids (transformers'
   `get_rope_index`), image_grid_thw and the logits of every position (f32).

CI never runs this: the folder and the expected logits are committed, and the Rust test checks that our save
of tiny_flat is byte-identical to the folder and that our logits on it equal transformers'.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "crates/pixel-vlm/tests/fixtures/models")
SOURCE = os.path.join(MODELS, "tiny_flat")
SAVED = os.path.join(MODELS, "tiny_flat_saved")
PATCH_DIM = 3 * 2 * 14 * 14
IMAGE_SEED = 0
IMAGE = 652


def pixel_values(n_patches, seed):
    """The deterministic patches of every model fixture: ((i*7919 + seed*13 + 17) % 509 - 254) / 256."""
    i = torch.arange(n_patches * PATCH_DIM, dtype=torch.int64)
    v = ((i * 7919 + seed * 13 + 17) % 509 - 254).to(torch.float32) / 256.0
    return v.reshape(n_patches, PATCH_DIM)


def canonical(key):
    """transformers-5 keys to the flat layout (what pixel-vlm writes)."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    if key.startswith("model.visual."):
        return "visual." + key[len("model.visual."):]
    return key


def folder_tensors(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors") and not name.startswith("expected_"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                for key in f.keys():
                    out[canonical(key)] = f.get_tensor(key)
    return out


def write_folder_with_cargo():
    env = dict(os.environ, PIXEL_VLM_WRITE_SAVE_FIXTURE="1")
    subprocess.run(
        ["cargo", "test", "-p", "pixel-vlm", "--test", "saving", "--",
         "saved_folder_matches_the_committed_fixture_and_transformers_logits", "--exact"],
        cwd=ROOT, env=env, check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-cargo", action="store_true", help="use the folder as it is")
    args = parser.parse_args()
    if not args.no_cargo:
        write_folder_with_cargo()

    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        SAVED, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(kind), (kind, info.get(kind))
    cfg = model.config
    assert not cfg.tie_word_embeddings
    assert cfg.text_config.rope_parameters["mrope_section"] == [2, 2, 2], cfg.text_config.rope_parameters
    assert cfg.vision_config.window_size == 56 and cfg.vision_config.fullatt_block_indexes == [1]

    # Our bf16 tensors are tiny_flat's f32 weights rounded to nearest even, under the flat names.
    original = load_file(os.path.join(SOURCE, "model.safetensors"))
    ours = folder_tensors(SAVED)
    assert sorted(ours) == sorted(original), set(ours) ^ set(original)
    for key, value in original.items():
        assert ours[key].dtype == torch.bfloat16, key
        assert torch.equal(ours[key], value.to(torch.bfloat16)), key

    with safe_open(os.path.join(SOURCE, "expected_multi_image.safetensors"), "pt") as f:
        input_ids = f.get_tensor("input_ids")
        grid = f.get_tensor("image_grid_thw")
    n = int(grid.prod(dim=1).sum())
    pixels = pixel_values(n, IMAGE_SEED)
    mm = (input_ids == IMAGE).to(torch.int64)
    with torch.no_grad():
        position_ids, _ = model.model.get_rope_index(input_ids, mm, image_grid_thw=grid)
        logits = model(input_ids=input_ids, position_ids=position_ids, pixel_values=pixels,
                       image_grid_thw=grid).logits[0]
    # transformers saves the same tensors (in its own key layout) after loading ours (last: the cast to bf16
    # also rounds the rotary buffers).
    state = model.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        model.to(torch.bfloat16).save_pretrained(tmp)
        theirs = folder_tensors(tmp)
    assert sorted(theirs) == sorted(ours), set(theirs) ^ set(ours)
    for key in ours:
        assert torch.equal(theirs[key], ours[key]), key
    assert len(state) == len(ours)

    save_file({
        "input_ids": input_ids.to(torch.int64).contiguous(),
        "position_ids": position_ids.to(torch.int64).contiguous(),
        "image_grid_thw": grid.to(torch.int64).contiguous(),
        "logits": logits.float().contiguous(),
    }, os.path.join(SAVED, "expected_transformers.safetensors"))
    print("tiny_flat_saved:", sorted(os.listdir(SAVED)), "logits", tuple(logits.shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
