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
      transformers 5.x and 4.51.3.
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
    "max_pixels": 28 * 28 * 20,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tf4-path", help="folder holding transformers==4.51.3 (pip install --target)")
    parser.add_argument("--skip-tokenizer", action="store_true", help="keep the committed tokenizer files")
    args = parser.parse_args()
    if not args.skip_tokenizer:
        train_tokenizer()
    write_encode_fixtures()


if __name__ == "__main__":
    main()
