#!/usr/bin/env python3
"""Gradient parity fixture of `pixel-vlm`'s training surface, computed by transformers' autograd.

Regenerate (from the repository root; needs torch, transformers 5.24, safetensors):

    python scripts/gen_vlm_grad_fixtures.py

It loads the committed tiny checkpoint `crates/pixel-vlm/tests/fixtures/models/tiny_flat` (f32, untied head;
written by `gen_vlm_model_fixtures.py`) into transformers' `Qwen2_5_VLForConditionalGeneration`, builds a
right-padded batch of two rows (row 0: a chat turn with one image of grid 1x4x6 and text after it; row 1: a
shorter text-only turn, padded), and computes

    loss = sum over scored positions p of log_softmax(logits[p] / T[p])[target[p]]

with `target[p] = input_ids[p + 1]`, scored positions = the real tokens after the image (row 0) and the
second half of row 1, and temperatures 1.0 (row 0) and 0.9 (row 1), like the rollout settings. It backpropagates
and writes `tiny_flat/expected_grad.safetensors`: input_ids, attention_mask, position_ids (transformers' own
`get_rope_index` with the attention mask), the per-position log-probs, the score mask, temperatures, the
loss, and the gradients of a handful of parameters (a vision block's qkv, the merger's first linear, a text
attention projection, an MLP down projection, the LM head, the token embedding), under their checkpoint names
(torch layout `[out, in]`). Pixel values follow `pixel_values(n, seed)` of `gen_vlm_model_fixtures.py`.
"""

import os

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "crates/pixel-vlm/tests/fixtures/models/tiny_flat")

IMAGE, VSTART, VEND, IM_START, IM_END = 652, 649, 650, 641, 642
PATCH_DIM = 3 * 2 * 14 * 14
SEED = 0  # IMAGE_SEED of gen_vlm_model_fixtures.py, so the tests share `Fixture::visual`
GRID = (1, 4, 6)
GRADS = [
    "visual.blocks.0.attn.qkv.weight",
    "visual.merger.mlp.0.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "lm_head.weight",
    "model.embed_tokens.weight",
]


def pixel_values(n_patches, seed):
    """((i*7919 + seed*13 + 17) % 509 - 254) / 256, as in gen_vlm_model_fixtures.py."""
    i = torch.arange(n_patches * PATCH_DIM, dtype=torch.int64)
    v = ((i * 7919 + seed * 13 + 17) % 509 - 254).to(torch.float32) / 256.0
    return v.reshape(n_patches, PATCH_DIM)


def load_model():
    import json

    with open(os.path.join(MODEL, "config.json")) as f:
        flat = json.load(f)
    text_keys = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "rms_norm_eps", "hidden_act", "max_position_embeddings"]
    text_config = {k: flat[k] for k in text_keys}
    text_config["rope_parameters"] = dict(rope_type="default", mrope_section=flat["rope_scaling"]["mrope_section"],
                                          rope_theta=flat["rope_theta"])
    text_config["tie_word_embeddings"] = flat["tie_word_embeddings"]
    vision = dict(flat["vision_config"])
    vision["in_channels"] = vision.pop("in_chans", 3)
    vision.pop("model_type", None)
    config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision, image_token_id=IMAGE,
                              video_token_id=flat["video_token_id"], vision_start_token_id=VSTART,
                              vision_end_token_id=VEND, tie_word_embeddings=flat["tie_word_embeddings"])
    config._attn_implementation = "eager"
    for key in ("bos_token_id", "eos_token_id"):
        setattr(config, key, flat[key])
        setattr(config.text_config, key, flat[key])
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    state = load_file(os.path.join(MODEL, "model.safetensors"))
    renamed = {}
    for k, v in state.items():
        if k.startswith("model."):
            k = "model.language_model." + k[len("model."):]
        elif k.startswith("visual."):
            k = "model.visual." + k[len("visual."):]
        renamed[k] = v
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in m for m in missing), missing
    return model


def hf_name(name):
    if name.startswith("model."):
        return "model.language_model." + name[len("model."):]
    if name.startswith("visual."):
        return "model.visual." + name[len("visual."):]
    return name


def main():
    torch.manual_seed(0)
    model = load_model()
    t, h, w = GRID
    row0 = [IM_START, 10, 11, 12, VSTART] + [IMAGE] * (t * h * w // 4) + [VEND] + \
        [20, 21, 22, 23, 24, 25, 26, 27, IM_END, 30, IM_START, 31, 32, 33, 34, 35, 36, IM_END]
    row1 = [IM_START, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, IM_END, 50, 51, 52]
    seq = max(len(row0), len(row1))
    ids = torch.zeros(2, seq, dtype=torch.long)
    attention = torch.zeros(2, seq, dtype=torch.long)
    for r, row in enumerate([row0, row1]):
        ids[r, : len(row)] = torch.tensor(row)
        attention[r, : len(row)] = 1
    pixels = pixel_values(t * h * w, SEED)
    grid = torch.tensor([GRID])

    mm = (ids == IMAGE).to(torch.int32)
    position_ids, _ = model.model.get_rope_index(ids, mm, image_grid_thw=grid, attention_mask=attention)
    out = model(input_ids=ids, attention_mask=attention, pixel_values=pixels, image_grid_thw=grid,
                mm_token_type_ids=mm, position_ids=position_ids, use_cache=False)
    logits = out.logits.float()  # [2, seq, vocab]
    temperature = torch.tensor([[1.0] * seq, [0.9] * seq])
    logp = torch.log_softmax(logits / temperature[..., None], dim=-1)
    targets = torch.zeros(2, seq, dtype=torch.long)
    targets[:, :-1] = ids[:, 1:]
    picked = logp.gather(2, targets[..., None])[..., 0]  # [2, seq]
    score = torch.zeros(2, seq, dtype=torch.bool)
    first_text = row0.index(VEND) + 1
    score[0, first_text: len(row0) - 1] = True
    score[1, len(row1) // 2: len(row1) - 1] = True
    loss = (picked * score).sum()
    loss.backward()

    params = dict(model.named_parameters())
    tensors = {
        "input_ids": ids.to(torch.int64),
        "attention_mask": attention.to(torch.int64),
        "position_ids": position_ids.to(torch.int64),
        "image_grid_thw": grid.to(torch.int64),
        "targets": targets,
        "score_mask": score.to(torch.int64),
        "temperature": temperature,
        "logprobs": picked.detach(),
        "loss": loss.detach().reshape(1),
    }
    for name in GRADS:
        g = params[hf_name(name)].grad
        assert g is not None and g.abs().max() > 0, name
        tensors["grad." + name] = g.detach().contiguous()
    save_file(tensors, os.path.join(MODEL, "expected_grad.safetensors"), metadata={"seed": str(SEED)})
    print("loss", loss.item(), "wrote", os.path.join(MODEL, "expected_grad.safetensors"))


if __name__ == "__main__":
    main()
