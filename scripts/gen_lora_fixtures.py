#!/usr/bin/env python3
"""LoRA parity fixtures of `pixel-vlm` (`pixel_vlm::lora`), computed by PEFT over transformers.

Regenerate (from the repository root; needs torch, transformers 5.24, peft 0.21 and safetensors; cargo builds
the Rust side of step 3):

    pip install peft                                  # into the same environment as transformers
    python scripts/gen_lora_fixtures.py               # or --no-cargo to skip step 3

1. Loads the committed tiny checkpoint `crates/pixel-vlm/tests/fixtures/models/tiny_flat` into transformers
   (`gen_vlm_grad_fixtures.load_model`, f32, eager attention) and wraps it with PEFT: rank 4, lora_alpha 8
   (scaling 2), on every projection of both decoder layers (q/k/v/o, gate/up/down) and of the three vision
   blocks (attn.qkv, attn.proj, mlp gate/up/down). PEFT initialises A (kaiming-uniform) and B (zeros); B is then
   drawn from N(0, 0.1^2) with `torch.manual_seed(0)` so the adapter changes the outputs. Writes the adapter
   with `save_pretrained` to `crates/pixel-vlm/tests/fixtures/lora/tiny_flat_peft/` (adapter_model.safetensors,
   adapter_config.json).
2. Runs the batch of `tiny_flat/expected_grad.safetensors` (two right-padded rows, one with an image; ids,
   mask, positions, targets, temperatures and score mask from that file) through the adapted model in eval
   mode and writes `tiny_flat_peft/expected.safetensors`: the logits `[2, seq, vocab]`, the per-position target
   log-probs, the loss `sum(score_mask * logprobs)`, the gradients of that loss (autograd) with respect to a
   few lora_A / lora_B weights (PEFT's names, torch layout), the logits after `merge_and_unload()`, and the
   logits of the same adapter over the base in bf16 (PEFT keeps the adapter in f32 there).
3. Runs the Rust test `our_saved_adapter_is_the_committed_folder_and_peft_reads_it` with
   `PIXEL_VLM_WRITE_LORA_FIXTURE=1`: pixel-vlm loads `tiny_flat_peft` and writes it back with its own
   `save_lora` into `tests/fixtures/lora/tiny_flat_ours/`. Then loads that folder with
   `PeftModel.from_pretrained` on a fresh base, asserts that every lora tensor equals PEFT's own, and writes the
   logits PEFT computes with it to `tiny_flat_ours/expected_peft.safetensors`.

CI never runs this: the folders are committed, and the Rust tests (`crates/pixel-vlm/tests/lora.rs`) check
logits, gradients and merging against PEFT, and that our save is byte-identical to what PEFT read.
"""

import argparse
import os
import subprocess
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_vlm_grad_fixtures as grad  # noqa: E402  (load_model, pixel_values, GRID, SEED)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAD = os.path.join(ROOT, "crates/pixel-vlm/tests/fixtures/models/tiny_flat/expected_grad.safetensors")
LORA = os.path.join(ROOT, "crates/pixel-vlm/tests/fixtures/lora")
PEFT_DIR = os.path.join(LORA, "tiny_flat_peft")
OURS_DIR = os.path.join(LORA, "tiny_flat_ours")

TARGETS = (r"^model\.(language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
           r"|visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj))$")
GRADS = [
    "model.language_model.layers.0.self_attn.q_proj.lora_A",
    "model.language_model.layers.1.self_attn.o_proj.lora_A",
    "model.language_model.layers.1.mlp.down_proj.lora_B",
    "model.visual.blocks.0.attn.qkv.lora_B",
    "model.visual.blocks.2.mlp.up_proj.lora_A",
]


def batch():
    t = load_file(GRAD)
    n = int(t["image_grid_thw"].prod())
    return dict(
        input_ids=t["input_ids"], attention_mask=t["attention_mask"], position_ids=t["position_ids"],
        image_grid_thw=t["image_grid_thw"], pixel_values=grad.pixel_values(n, grad.SEED),
        mm_token_type_ids=(t["input_ids"] == grad.IMAGE).to(torch.int32),
    ), t


def run(model, inputs, t):
    """Logits, target log-probs and the masked loss of the fixture batch."""
    out = model(**inputs, use_cache=False)
    logits = out.logits.float()
    logp = torch.log_softmax(logits / t["temperature"][..., None], dim=-1)
    picked = logp.gather(2, t["targets"][..., None])[..., 0]
    loss = (picked * t["score_mask"]).sum()
    return logits, picked, loss


def adapted_model():
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS)
    model = get_peft_model(grad.load_model(), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    return model.eval()


def write_peft_fixture():
    model = adapted_model()
    os.makedirs(PEFT_DIR, exist_ok=True)
    model.save_pretrained(PEFT_DIR)
    readme = os.path.join(PEFT_DIR, "README.md")
    if os.path.exists(readme):
        os.remove(readme)  # PEFT's model card template, not needed
    inputs, t = batch()
    logits, picked, loss = run(model, inputs, t)
    loss.backward()
    params = dict(model.named_parameters())
    tensors = {"logits": logits.detach(), "logprobs": picked.detach(), "loss": loss.detach().reshape(1)}
    for name in GRADS:
        g = params[f"base_model.model.{name}.default.weight"].grad
        assert g is not None and g.abs().max() > 0, name
        tensors[f"grad.{name}.weight"] = g.detach().contiguous()
    with torch.no_grad():
        merged = model.merge_and_unload()
        merged_logits, _, _ = run(merged, inputs, t)
    tensors["merged_logits"] = merged_logits
    # A bf16 base under the same adapter: PEFT upcasts the adapter to f32 (autocast_adapter_dtype=True).
    bf16 = PeftModel.from_pretrained(grad.load_model().to(torch.bfloat16), PEFT_DIR).eval()
    assert all(p.dtype == torch.float32 for n, p in bf16.named_parameters() if "lora_" in n)
    with torch.no_grad():
        bf16_logits, _, _ = run(bf16, inputs, t)
    tensors["bf16_logits"] = bf16_logits
    print(f"PEFT bf16 base vs f32: max abs diff {(bf16_logits - logits).abs().max().item():.3e}")
    diff = (merged_logits - logits).abs().max().item()
    print(f"PEFT merged vs adapted logits: max abs diff {diff:.3e}")
    save_file(tensors, os.path.join(PEFT_DIR, "expected.safetensors"))
    print("loss", loss.item(), "wrote", PEFT_DIR)


def check_ours(no_cargo):
    if not no_cargo:
        env = dict(os.environ, PIXEL_VLM_WRITE_LORA_FIXTURE="1")
        subprocess.run(["cargo", "test", "-p", "pixel-vlm", "--test", "lora", "--",
                        "our_saved_adapter_is_the_committed_folder_and_peft_reads_it"], cwd=ROOT, env=env,
                       check=True)
    theirs = load_file(os.path.join(PEFT_DIR, "adapter_model.safetensors"))
    ours = load_file(os.path.join(OURS_DIR, "adapter_model.safetensors"))
    assert sorted(ours) == sorted(theirs), (sorted(set(ours) ^ set(theirs)))
    for k in theirs:
        assert torch.equal(ours[k], theirs[k].float()), k
    model = PeftModel.from_pretrained(grad.load_model(), OURS_DIR).eval()
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(theirs), (len(loaded), len(theirs))
    for k in theirs:
        assert torch.equal(loaded[k.replace(".weight", ".default.weight")], theirs[k].float()), k
    inputs, t = batch()
    with torch.no_grad():
        logits, _, _ = run(model, inputs, t)
    expected = load_file(os.path.join(PEFT_DIR, "expected.safetensors"))["logits"]
    print(f"PEFT on our saved adapter vs its own: max abs diff {(logits - expected).abs().max().item():.3e}")
    save_file({"logits": logits}, os.path.join(OURS_DIR, "expected_peft.safetensors"))
    print("wrote", os.path.join(OURS_DIR, "expected_peft.safetensors"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-cargo", action="store_true", help="tiny_flat_ours is written already")
    args = parser.parse_args()
    write_peft_fixture()
    check_ours(args.no_cargo)


if __name__ == "__main__":
    main()
