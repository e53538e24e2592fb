#!/usr/bin/env python3
"""Fixtures for pixel-vlm's processor side: tokenizer, chat template, image/video processor, M-RoPE index.

Regenerate (from the repository root):

    pip install --target /tmp/tf4 "transformers==4.51.3"      # only for the 4.x M-RoPE rule
    python3 scripts/gen_vlm_processor_fixtures.py --tf4-path /tmp/tf4

Needs Python 3.11 with tokenizers, transformers 5.x (tested: 5.24), torch, Pillow (tested: 13.0), numpy,
qwen-vl-utils and safetensors. Without `--tf4-path` the 4.x rope fixtures are left as they are.

Writes (all small, committed):
  crates/pixel-vlm/tests/fixtures/tokenizer/   a tiny byte-level BPE tokenizer trained here, with the real
      Qwen2.5-VL added tokens in their real order, a chat template written for this project in the style of
      Qwen2.5-VL's (default system prompt, image/video placeholders, add_vision_id, a tools block, tool calls),
      a preprocessor_config.json, and encode/render expectations from transformers.
  crates/pixel-vlm/tests/fixtures/processor/   source images, pixel_values from transformers' processor fed
      images already resized by qwen-vl-utils + PIL, expanded input ids, and M-RoPE position ids from
      transformers 5.x and 4.51.3, and the kept tokens / probabilities of transformers' temperature, top-k
      and top-p warpers (sampling_cases.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOK_DIR = ROOT / "crates/pixel-vlm/tests/fixtures/tokenizer"
PROC_DIR = ROOT / "crates/pixel-vlm/tests/fixtures/processor"

# The added tokens of Qwen2.5-VL's tokenizer.json, in their real order (ids 151643.. there; here they follow
# the tiny vocabulary). The boolean is the `special` flag of the real file.
ADDED_TOKENS = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]

PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Written for this project in the style of Qwen2.5-VL's template, with a Nous-style tools block (the one the
# Pixel-Reasoner system prompt uses), tool calls on assistant turns and tool responses. Whitespace is spelled
# out in string literals so the template does not depend on trim_blocks/lstrip_blocks subtleties.
CHAT_TEMPLATE = r"""{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_message = messages[0].content -%}
  {%- set rest = messages[1:] -%}
{%- else -%}
  {%- set system_message = 'You are a helpful assistant.' -%}
  {%- set rest = messages -%}
{%- endif -%}
{{- '<|im_start|>system\n' -}}
{%- if system_message is string -%}
  {{- system_message -}}
{%- else -%}
  {%- for item in system_message -%}
    {%- if 'text' in item -%}{{- item.text -}}{%- endif -%}
  {%- endfor -%}
{%- endif -%}
{%- if tools -%}
  {{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
  {%- for tool in tools -%}
    {{- '\n' -}}{{- tool | tojson -}}
  {%- endfor -%}
  {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for message in rest -%}
  {%- if message.role == 'tool' -%}
    {%- if loop.first or rest[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' -}}{{- message.content.strip() -}}{{- '\n</tool_response>' -}}
    {%- if loop.last or rest[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' -}}
    {%- if message.content is string -%}
      {{- message.content -}}
    {%- elif message.content is not none -%}
      {%- for item in message.content -%}
        {%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}
          {%- set image_count.value = image_count.value + 1 -%}
          {%- if add_vision_id -%}{{- 'Picture ' + image_count.value | string + ': ' -}}{%- endif -%}
          {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
        {%- elif item.type == 'video' or 'video' in item -%}
          {%- set video_count.value = video_count.value + 1 -%}
          {%- if add_vision_id -%}{{- 'Video ' + video_count.value | string + ': ' -}}{%- endif -%}
          {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
        {%- elif 'text' in item -%}
          {{- item.text -}}
        {%- endif -%}
      {%- endfor -%}
    {%- endif -%}
    {%- if message.tool_calls -%}
      {%- for tool_call in message.tool_calls -%}
        {%- set call = tool_call.function if tool_call.function is defined else tool_call -%}
        {{- '\n<tool_call>\n{"name": "' + call.name + '", "arguments": ' -}}{{- call.arguments | tojson -}}{{- '}\n</tool_call>' -}}
      {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

PREPROCESSOR_CONFIG = {
    "min_pixels": 3136,
    "max_pixels": 28 * 28 * 12,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}

CORPUS = [
    "You are a helpful assistant.",
    "You may call one or more functions to assist with the user query.",
    "Guidelines: Understand the given visual information and the user query. Determine if it is beneficial "
    "to employ the given visual operations (tools). For a video, we can look closer by `select_frames`. For an "
    "image, we can look closer by `crop_image`. Reason with the visual information step by step, and put your "
    "final answer within \\boxed{}.",
    '{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.25, 0.1, 0.75, 0.6], "target_image": 1}}',
    '{"name": "select_frames", "arguments": {"target_frames": [1, 4, 8, 12]}}',
    "Here is the cropped image (Image Size: 812x588):",
    "Here are the selected frames (Frame Size: 640x360, Numbered 1 to 16):",
    "Execution error:\nThe bounding box is too small.",
    "What is the color of the car in the picture? The car is red, so the answer is \\boxed{A}.",
    "The number written on the sign is 42, and there are 3 people standing next to it.",
    "I'll zoom in on the upper-left region to read the small text. It's hard to see; let's look closer.",
    "Question: How many frames show the dog jumping?\nOptions:\n(A) 1\n(B) 2\n(C) 3\n(D) 4",
    "def crop(image, bbox):\n    x1, y1, x2, y2 = bbox\n    return image[y1:y2, x1:x2]\n",
    "图片中的文字是什么？答案在这里。视频里有几只猫？",
    "Ünïcödé façade naïve café — «quotes» and emoji 🙂🚗.",
    "   leading spaces, trailing spaces   \n\n\ttabs\r\nwindows newlines",
]


def train_tokenizer() -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=640,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    for content, special in ADDED_TOKENS:
        added = AddedToken(content, special=special, normalized=False, single_word=False, lstrip=False, rstrip=False)
        if special:
            tok.add_special_tokens([added])
        else:
            tok.add_tokens([added])

    data = json.loads(tok.to_str())
    # Real Qwen files write merges as "a b" strings; byte-level tokens never hold a literal space.
    data["model"]["merges"] = [" ".join(pair) if isinstance(pair, list) else pair for pair in data["model"]["merges"]]
    TOK_DIR.mkdir(parents=True, exist_ok=True)
    (TOK_DIR / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n")

    vocab_size = tok.get_vocab_size(with_added_tokens=False)
    added_decoder = {}
    for i, (content, special) in enumerate(ADDED_TOKENS):
        added_decoder[str(vocab_size + i)] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added_decoder,
        "additional_special_tokens": [
            "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
            "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        ],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (TOK_DIR / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    (TOK_DIR / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    (TOK_DIR / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")


ENCODE_TEXTS = [
    "Hello world! How are you?",
    "You are a helpful assistant.",
    "<|im_start|>user\nWhat is in <|vision_start|><|image_pad|><|vision_end|> this image?<|im_end|>\n",
    '<tool_call>\n{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.5, 0.6]}}\n</tool_call>',
    "图片中的文字是什么？ 🙂 café naïve",
    "e\u0301 composed by NFC, numbers 1234567 and   spaces\t\n\n  end ",
    "<|endoftext|><|im_end|>plain<|fim_prefix|>x",
    "",
]


def write_encode_fixtures() -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    lib = Tokenizer.from_file(str(TOK_DIR / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(TOK_DIR))
    cases = []
    for text in ENCODE_TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        assert ids == lib.encode(text, add_special_tokens=False).ids, text
        cases.append(
            {
                "text": text,
                "ids": ids,
                "decoded": hf.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": hf.decode(ids, skip_special_tokens=True),
            }
        )
    special_ids = {content: hf.convert_tokens_to_ids(content) for content, _ in ADDED_TOKENS}
    out = {"vocab_size_with_added": len(hf), "special_ids": special_ids, "cases": cases}
    (TOK_DIR / "encode_cases.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")


CROP_TOOL = {
    "type": "function",
    "function": {
        "name": "crop_image_normalized",
        "description": "Zoom in on the image based on the bounding box coordinates. It is useful when the object "
        "or text in the image is too small to be seen.",
        "parameters": {
            "type": "object",
            "properties": {
                "bbox_2d": {
                    "type": "array",
                    "description": "normalized coordinates for bounding box of the region you want to zoom in. "
                    "Values should be within [0.0,1.0].",
                    "items": {"type": "number"},
                },
                "target_image": {
                    "type": "number",
                    "description": "The index of the image to crop. Index from 1 to the number of images. Choose 1 "
                    "to operate on original image.",
                },
            },
            "required": ["bbox_2d", "target_image"],
        },
    },
}
SELECT_TOOL = {
    "type": "function",
    "function": {
        "name": "select_frames",
        "description": "Select frames from a video to look closer <at most 8> & keep their order — it's 1-based.",
        "parameters": {
            "type": "object",
            "properties": {
                "target_frames": {"type": "array", "description": "List of frame indices.", "items": {"type": "integer"}}
            },
            "required": ["target_frames"],
        },
    },
}
GUIDE = (
    "\n\nGuidelines: Understand the given visual information and the user query. Determine if it is beneficial to "
    "employ the given visual operations (tools). Reason step by step, and put your final answer within \\boxed{}."
)

CONVERSATIONS = [
    {"name": "text_only", "messages": [{"role": "user", "content": "What is 2+2?"}], "add_generation_prompt": True},
    {
        "name": "image_custom_system",
        "messages": [
            {"role": "system", "content": "You are a careful visual assistant."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the car?" + GUIDE}]},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "images_video_vision_id",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "a.png"},
                    {"type": "text", "text": "and "},
                    {"type": "image_url", "image_url": "b.png"},
                    {"type": "video", "video": "c.mp4"},
                    {"type": "text", "text": "Compare them."},
                ],
            }
        ],
        "add_generation_prompt": True,
        "add_vision_id": True,
    },
    {
        "name": "multi_turn_pixel_reasoner",
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Read the sign." + GUIDE}]},
            {
                "role": "assistant",
                "content": "The sign is small; I will zoom in.\n<tool_call>\n{\"name\": \"crop_image_normalized\", "
                "\"arguments\": {\"bbox_2d\": [0.4, 0.35, 0.55, 0.5], \"target_image\": 1}}\n</tool_call>",
            },
            {
                "role": "user",
                "content": [{"type": "text", "text": "\nHere is the cropped image (Image Size: 812x588):"}, {"type": "image"}],
            },
            {"role": "assistant", "content": "The sign reads STOP. \\boxed{STOP}"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "tools_block",
        "messages": [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "How many dogs jump?"}]}
        ],
        "tools": [CROP_TOOL, SELECT_TOOL],
        "add_generation_prompt": True,
    },
    {
        "name": "tool_calls_and_responses",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Zoom twice."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"type": "function", "function": {"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.3, 0.4], "target_image": 1}}},
                    {"name": "select_frames", "arguments": {"target_frames": [1, 3, 5], "note": "ünï <&'>"}},
                ],
            },
            {"role": "tool", "content": "  first result \n"},
            {"role": "tool", "content": "second result"},
            {"role": "assistant", "content": "Done: \\boxed{7}"},
        ],
        "tools": [CROP_TOOL],
        "add_generation_prompt": True,
    },
    {
        "name": "system_list_unicode",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "系统："}, {"type": "text", "text": " be brief 🙂"}]},
            {"role": "user", "content": [{"type": "text", "text": "图片中的文字是什么？"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "café"}]},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "two_images_no_vision_id",
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
            {"role": "assistant", "content": "No."},
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And this?"}]},
        ],
        "add_generation_prompt": True,
        "add_vision_id": False,
    },
]


def write_chat_template_fixtures() -> None:
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(TOK_DIR))
    out = []
    for conv in CONVERSATIONS:
        kwargs = {"add_generation_prompt": conv["add_generation_prompt"]}
        if "add_vision_id" in conv:
            kwargs["add_vision_id"] = conv["add_vision_id"]
        if "tools" in conv:
            kwargs["tools"] = conv["tools"]
        text = processor.apply_chat_template(conv["messages"], tokenize=False, **kwargs)
        ids = processor.tokenizer.encode(text, add_special_tokens=False)
        out.append({**conv, "rendered": text, "ids": ids})
    (TOK_DIR / "chat_cases.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")


def synth_image(seed: int, h: int, w: int, rgba: bool = False) -> "Image.Image":
    """Smooth gradients, hard-edged boxes and a little noise: cheap to store, hard for a resize."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack(
        [255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1), 127 + 100 * np.sin((xx + yy) / 5.0)], axis=-1
    )
    for _ in range(4):
        y0, x0 = rng.randint(0, h - 4), rng.randint(0, w - 4)
        img[y0 : y0 + rng.randint(3, h // 2 + 4), x0 : x0 + rng.randint(3, w // 2 + 4)] = rng.randint(0, 256, 3)
    img += rng.randint(-6, 7, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if rgba:
        alpha = np.clip(255 * xx / max(w - 1, 1) + rng.randint(-20, 21, (h, w)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.dstack([img, alpha]), "RGBA")
    return Image.fromarray(img, "RGB")


# (name, height, width, rgba): a plain round, a downscale past max_pixels, an upscale below min_pixels, and an
# RGBA image whose width 70 = 2.5 * 28 rounds half to even.
IMAGES = [("img_a", 61, 97, False), ("img_b", 150, 200, False), ("img_c", 30, 41, False), ("img_d", 45, 70, True)]
# Video frames already at a multiple of 28 (qwen-vl-utils resizes video frames with torchvision, not PIL: out of
# scope here), 4 frames at 3 fps -> grid t 2 and second_per_grid_t 2/3.
VIDEO = ("vid_a", 4, 56, 56, 3.0)


def write_processor_fixtures() -> None:
    import torch
    from PIL import Image
    from qwen_vl_utils import fetch_image
    from safetensors.numpy import save_file
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    PROC_DIR.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(str(TOK_DIR))
    cfg = PREPROCESSOR_CONFIG
    images, resized = [], []
    meta = {"images": [], "videos": []}
    for seed, (name, h, w, rgba) in enumerate(IMAGES):
        img = synth_image(seed, h, w, rgba)
        img.save(PROC_DIR / f"{name}.png", optimize=True)
        images.append(img)
        r = fetch_image({"image": img, "min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"]})
        resized.append(r)
        # The resized image is stored too, so patchify can be tested apart from the resize.
        r.save(PROC_DIR / f"{name}_resized.png", optimize=True)
        meta["images"].append({"name": name, "height": h, "width": w, "rgba": rgba, "resized": [r.height, r.width]})

    vname, vt, vh, vw, vfps = VIDEO
    frames = np.stack([np.asarray(synth_image(100 + i, vh, vw)) for i in range(vt)])
    Image.fromarray(frames.reshape(vt * vh, vw, 3)).save(PROC_DIR / f"{vname}_frames.png", optimize=True)
    meta["videos"].append({"name": vname, "frames": vt, "height": vh, "width": vw, "fps": vfps})

    # One prompt holding all four images and the video, rendered by the checkpoint's template.
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Look."}, {"type": "video"}],
        },
        {"role": "assistant", "content": "I see."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And?"}, {"type": "image"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    out = processor(
        text=[text],
        images=resized,
        videos=[frames],
        videos_kwargs={
            "do_sample_frames": False,
            "video_metadata": [VideoMetadata(total_num_frames=vt, fps=vfps, frames_indices=list(range(vt)))],
        },
        return_tensors="pt",
    )

    # The processor's own resize must be a no-op on these inputs: check against a direct computation in the
    # processor's fused f32 arithmetic, (x - mean*255) / (std*255).
    mean = (torch.tensor(cfg["image_mean"]) * 255.0).numpy()
    std = (torch.tensor(cfg["image_std"]) * 255.0).numpy()

    def patchify(fr: np.ndarray) -> np.ndarray:
        x = (fr.astype(np.float32) - mean) / std
        if x.shape[0] % 2:
            x = np.concatenate([x, x[-1:]], 0)
        t, hh, ww, c = x.shape
        gt, gh, gw = t // 2, hh // 14, ww // 14
        x = x.transpose(0, 3, 1, 2).reshape(gt, 2, c, gh // 2, 2, 14, gw // 2, 2, 14)
        return x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, c * 2 * 14 * 14)

    direct = np.concatenate([patchify(np.stack([np.asarray(r)] * 2)) for r in resized], 0)
    assert np.array_equal(direct, out["pixel_values"].numpy())
    assert np.array_equal(patchify(frames), out["pixel_values_videos"].numpy())

    save_file(
        {
            "pixel_values": out["pixel_values"].numpy().astype(np.float32),
            "pixel_values_videos": out["pixel_values_videos"].numpy().astype(np.float32),
        },
        str(PROC_DIR / "pixel_values.safetensors"),
    )
    meta.update(
        {
            "messages": messages,
            "rendered": text,
            "input_ids": out["input_ids"][0].tolist(),
            "image_grid_thw": out["image_grid_thw"].tolist(),
            "video_grid_thw": out["video_grid_thw"].tolist(),
            "second_per_grid_ts": out["second_per_grid_ts"].tolist(),
        }
    )
    (PROC_DIR / "processor_case.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")


# M-RoPE index cases: ("text", n) | ("image", t, h, w) | ("video", t, h, w, second_per_grid_t), grids in patches.
ROPE_CASES = {
    "text_only": [("text", 7)],
    "one_image": [("text", 5), ("image", 1, 4, 6), ("text", 4)],
    "two_images": [("text", 3), ("image", 1, 4, 6), ("text", 2), ("image", 1, 6, 8), ("text", 5)],
    "video_then_text": [("text", 4), ("video", 3, 4, 6, 1.0), ("text", 3)],
    "video_fractional_interval": [("text", 2), ("video", 4, 4, 4, 2.0 / 3.0), ("text", 6)],
    "video_long": [("text", 1), ("video", 8, 2, 2, 0.5), ("text", 2)],
    "video_slow_fps": [("text", 3), ("video", 3, 2, 4, 2.0 / 0.7), ("text", 2)],
    "multi_turn_mixed": [
        ("text", 6), ("image", 1, 4, 4), ("text", 9), ("video", 2, 4, 4, 2.0 / 3.0), ("text", 5),
        ("image", 1, 2, 4), ("text", 7), ("video", 2, 2, 2, 1.0), ("text", 3),
    ],
    "vision_at_edges": [("image", 1, 2, 2), ("text", 3), ("image", 1, 4, 2)],
}

TF4_ROPE = r"""
import json, sys, types, torch
import transformers
assert transformers.__version__.startswith("4."), transformers.__version__
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration as M
req = json.load(open(sys.argv[1]))
cfg = Qwen2_5_VLConfig(**req["config"])
fake = types.SimpleNamespace(config=cfg)
out = {"version": transformers.__version__, "cases": {}}
for name, case in req["cases"].items():
    ids = torch.tensor([case["input_ids"]])
    img = torch.tensor(case["image_grid_thw"]) if case["image_grid_thw"] else None
    vid = torch.tensor(case["video_grid_thw"]) if case["video_grid_thw"] else None
    spg = torch.tensor(case["second_per_grid_ts"], dtype=torch.float32) if case["second_per_grid_ts"] else None
    pos, delta = M.get_rope_index(fake, ids, img, vid, spg, torch.ones_like(ids))
    out["cases"][name] = {"position_ids": pos[:, 0].tolist(), "rope_delta": int(delta[0, 0])}
json.dump(out, open(sys.argv[2], "w"))
"""


def build_rope_cases(special: dict[str, int]) -> dict:
    cases = {}
    for name, segments in ROPE_CASES.items():
        ids, images, videos, spg = [], [], [], []
        word = 100
        for seg in segments:
            if seg[0] == "text":
                for _ in range(seg[1]):
                    ids.append(word)
                    word = 100 + (word - 99) % 400
                continue
            t, h, w = seg[1:4]
            pad = special["<|image_pad|>"] if seg[0] == "image" else special["<|video_pad|>"]
            ids += [special["<|vision_start|>"]] + [pad] * (t * h * w // 4) + [special["<|vision_end|>"]]
            if seg[0] == "image":
                images.append([t, h, w])
            else:
                videos.append([t, h, w])
                spg.append(float(np.float32(seg[4])))  # the processor hands these over as f32
        cases[name] = {"input_ids": ids, "image_grid_thw": images, "video_grid_thw": videos, "second_per_grid_ts": spg}
    case = json.loads((PROC_DIR / "processor_case.json").read_text())
    cases["processor_case"] = {
        k: case[k] for k in ("input_ids", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
    }
    return cases


def write_rope_fixtures(tf4_path: str | None) -> None:
    import types

    import torch
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    enc = json.loads((TOK_DIR / "encode_cases.json").read_text())
    special = enc["special_ids"]
    config = {
        "vision_config": {"spatial_merge_size": 2, "tokens_per_second": 2, "depth": 1, "hidden_size": 16,
                          "out_hidden_size": 16, "num_heads": 2, "intermediate_size": 16},
        "image_token_id": special["<|image_pad|>"],
        "video_token_id": special["<|video_pad|>"],
        "vision_start_token_id": special["<|vision_start|>"],
        "vocab_size": enc["vocab_size_with_added"],
    }
    cases = build_rope_cases(special)
    cfg = Qwen2_5_VLConfig(**config)
    fake = types.SimpleNamespace(config=cfg)
    fake.get_vision_position_ids = types.MethodType(Qwen2_5_VLModel.get_vision_position_ids, fake)
    v5 = {}
    for name, case in cases.items():
        ids = torch.tensor([case["input_ids"]])
        mm = torch.zeros_like(ids)
        mm[ids == special["<|image_pad|>"]] = 1
        mm[ids == special["<|video_pad|>"]] = 2
        img = torch.tensor(case["image_grid_thw"]) if case["image_grid_thw"] else None
        vid = torch.tensor(case["video_grid_thw"]) if case["video_grid_thw"] else None
        spg = torch.tensor(case["second_per_grid_ts"], dtype=torch.float32) if case["second_per_grid_ts"] else None
        pos, delta = Qwen2_5_VLModel.get_rope_index(fake, ids, mm, img, vid, spg)
        v5[name] = {"position_ids": pos[:, 0].tolist(), "rope_delta": int(delta[0, 0])}
    import transformers

    out_path = PROC_DIR / "rope_cases.json"
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    v4 = previous.get("v4")
    v4_version = previous.get("v4_version")
    if tf4_path:
        req = PROC_DIR / "_rope_request.json"
        res = PROC_DIR / "_rope_v4.json"
        req.write_text(json.dumps({"config": config, "cases": cases}))
        env = dict(os.environ, PYTHONPATH=str(Path(tf4_path).resolve()))
        subprocess.run([sys.executable, "-c", TF4_ROPE, str(req), str(res)], check=True, env=env)
        got = json.loads(res.read_text())
        req.unlink()
        res.unlink()
        v4, v4_version = got["cases"], got["version"]
    out = {
        "config": config,
        "cases": cases,
        "v5_version": transformers.__version__,
        "v5": v5,
        "v4_version": v4_version,
        "v4": v4,
    }
    out_path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    if v4:
        for name in cases:
            if v4[name] != v5[name]:
                print(f"rope case {name}: 4.x and 5.x rules differ (deltas {v4[name]['rope_delta']} vs {v5[name]['rope_delta']})")


# (temperature, top_k, top_p): transformers' generation order is temperature, then top-k, then top-p.
SAMPLING_SETTINGS = [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.0, 0, 0.9), (1.3, 10, 0.8), (0.5, 0, 0.5), (2.0, 3, 0.95)]


def write_sampling_fixtures() -> None:
    """Kept tokens and renormalised probabilities of transformers' logits warpers, and full log-softmax."""
    import torch
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.RandomState(7)
    rows = []
    for r in range(3):
        logits = (rng.randn(40) * 2.5).astype(np.float32)
        if r == 2:
            logits[[3, 17]] = -np.inf  # masked tokens must never be drawn
        for temperature, top_k, top_p in SAMPLING_SETTINGS:
            scores = torch.tensor(logits)[None]
            warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
            if top_k:
                warped = TopKLogitsWarper(top_k)(None, warped)
            if top_p < 1.0:
                warped = TopPLogitsWarper(top_p)(None, warped)
            probs = torch.softmax(warped.double(), -1)[0]
            kept = [int(i) for i in torch.nonzero(probs > 0).flatten()]
            logprobs = torch.log_softmax(torch.tensor(logits, dtype=torch.float64) / temperature, -1)
            rows.append(
                {
                    "logits": [float(x) if np.isfinite(x) else None for x in logits],
                    "temperature": temperature,
                    "top_k": top_k,
                    "top_p": top_p,
                    "kept": kept,
                    "probs": [float(probs[i]) for i in kept],
                    "logprobs": [float(x) if np.isfinite(x) else None for x in logprobs.tolist()],
                }
            )
    (PROC_DIR / "sampling_cases.json").write_text(json.dumps(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tf4-path", help="folder holding transformers==4.51.3 (pip install --target)")
    parser.add_argument("--skip-tokenizer", action="store_true", help="keep the committed tokenizer files")
    args = parser.parse_args()
    if not args.skip_tokenizer:
        train_tokenizer()
    write_encode_fixtures()
    write_chat_template_fixtures()
    write_processor_fixtures()
    write_rope_fixtures(args.tf4_path)
    write_sampling_fixtures()


if __name__ == "__main__":
    main()
