#!/usr/bin/env python3
"""Fixtures for pixel-vlm's tokenizer on the real Qwen2 vocabulary: a Qwen2.5-VL `tokenizer.json` built from
the 151,643 Qwen BPE ranks, and the ids Python gives for a few hundred strings.

Decision: how CI gets the vocabulary
------------------------------------
The ranks come from `dashscope` on PyPI (Alibaba Cloud's SDK, Apache License 2.0), file
`dashscope/resources/qwen.tiktoken` (sha256 pinned below). It is Qwen's own vocabulary file (first shipped
with Qwen-7B; Qwen2 / Qwen2.5 / Qwen2.5-VL use the same 151,643 ranks as vocab.json + merges.txt). The vocab
and merges this script derives were checked equal, line for line, to a released Qwen2 vocab.json and
merges.txt (see `--check-qwen2-files`; sha256 of those files below).

We do NOT commit the full vocabulary. Its licence would allow it (Apache-2.0 via dashscope, and Qwen2.5-VL-7B
itself is Apache-2.0), but the full tokenizer.json is 5.2 MB of compact JSON (the released one, indented, ~7 MB;
1.8 MB gzipped, and the test crates have no decompressor), in a repository whose fixtures are otherwise small,
and the test does not need it. Instead we commit a
*reduced* tokenizer.json: every one of the 256 byte tokens, plus each token the test strings produce together
with its whole merge tree (the two tokens it is merged from, theirs, ...), all at their real ids, and the real
merges between them in their real order. With one merge per token (as in Qwen's merges.txt) every token BPE
forms while encoding a string is in the merge tree of a token of its output, so the reduced file takes the
same merge steps as the full one on every test string: the ids are exactly the real ones. The script checks
that (reduced ids == full ids for every string) and, independently, that `tiktoken` with the same ranks and
Qwen's pattern gives the same ids as HF `tokenizers` on the full file. The reduced file keeps the Apache-2.0
notice of its source (LICENSE.dashscope beside it). Ids in the reduced vocabulary have holes, so its
`get_vocab_size` is the count of kept tokens, not 151,665, and the added tokens are also listed in model.vocab
(`tokenizers` would otherwise number them from that count).

To run the same cases against the real file: `--full-out /tmp/qwen25vl/tokenizer.json` writes the full
tokenizer.json built here, and the Rust test reads `PIXEL_QWEN_TOKENIZER_JSON` (any Qwen2.5-VL tokenizer.json,
for instance the one released on the Hugging Face hub).

Regenerate (from the repository root):

    python3 -m venv /tmp/qvenv
    /tmp/qvenv/bin/pip install dashscope==2.0.2 tiktoken==0.14.0 tokenizers==0.23.3
    /tmp/qvenv/bin/python scripts/gen_vlm_tokenizer_fixtures.py
    # optional: --full-out /tmp/qwen25vl/tokenizer.json
    #           --check-qwen2-files DIR   (DIR with a Qwen2 vocab.json and merges.txt)

Reads the protocol strings of crates/pixel-ops/tests/fixtures/protocol/ (system prompts, tool blocks, user and
observation texts). Writes crates/pixel-vlm/tests/fixtures/tokenizer_qwen/ (README.md there is written by hand):
  tokenizer.json     the reduced Qwen2.5-VL tokenizer (real ids, real merges, real added tokens and pipeline)
  cases.json         for each string: text, ids, decoded, decoded_skip_special (HF tokenizers)
  LICENSE.dashscope  the licence of the source of the ranks
Read by crates/pixel-vlm/tests/tokenizer_qwen_vocab.rs.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import shutil
import unicodedata
from pathlib import Path

import tiktoken
import tokenizers

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "crates/pixel-vlm/tests/fixtures/tokenizer_qwen"
PROTOCOL = ROOT / "crates/pixel-ops/tests/fixtures/protocol"

QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
N_RANKS = 151_643
# A released Qwen2 vocab.json / merges.txt (GitHub YuxuanBai1/Qwen2-Boundless-GUI, a Qwen2 fine-tune that
# ships them unchanged); what this script derives was equal to both, entry by entry.
QWEN2_VOCAB_JSON_SHA256 = "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910"
QWEN2_MERGES_TXT_SHA256 = "b8e04af9c950e393054010dcef499c3f005e803e9b2da1a09b96a26c33266eb1"

# Qwen2 / tiktoken's pre-tokenizer pattern (dashscope's PAT_STR is the same string; asserted below).
PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The added tokens of Qwen2.5-VL's tokenizer.json, ids 151643.. in this order; the boolean is `special`.
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


# ------------------------------------------------------------------------------------------------ vocabulary


def find_qwen_tiktoken() -> Path:
    spec = importlib.util.find_spec("dashscope")
    if spec is None or spec.origin is None:
        raise SystemExit("dashscope is not installed: pip install dashscope==2.0.2")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != QWEN_TIKTOKEN_SHA256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {QWEN_TIKTOKEN_SHA256}")
    return path


def check_dashscope_agrees() -> None:
    """dashscope's own Qwen tokenizer: same pattern, and its special ids agree with Qwen2.5-VL's."""
    from dashscope.tokenizers import qwen_tokenizer as qt

    assert qt.PAT_STR == PATTERN, qt.PAT_STR
    theirs = dict(qt.SPECIAL_TOKENS)
    for i, name in ((N_RANKS, "<|endoftext|>"), (N_RANKS + 1, "<|im_start|>"), (N_RANKS + 2, "<|im_end|>")):
        assert theirs[i] == name, (i, theirs[i], name)
        assert ADDED_TOKENS[i - N_RANKS][0] == name


def load_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    assert sorted(ranks.values()) == list(range(N_RANKS)), "ranks are not 0..151642"
    assert all(len(t) == 1 for t, r in ranks.items() if r < 256) and len({t for t in ranks if len(t) == 1}) == 256
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_CHAR = bytes_to_unicode()


def byte_level(token: bytes) -> str:
    return "".join(BYTE_TO_CHAR[b] for b in token)


def bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """tiktoken's BPE of `token` using only ranks below `max_rank` (lowest rank first, leftmost on ties)."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def derive_merges(ranks: dict[bytes, int]) -> dict[int, tuple[bytes, bytes]]:
    """The merge of each multi-byte token: the two parts BPE reaches with the lower ranks (the standard
    tiktoken -> merges.txt conversion; it reproduces Qwen2's merges.txt exactly)."""
    merges = {}
    for token, rank in ranks.items():
        if len(token) > 1:
            parts = bpe_parts(ranks, token, rank)
            assert len(parts) == 2, (token, rank, parts)
            merges[rank] = (parts[0], parts[1])
    return merges


def tokenizer_json(vocab: dict[str, int], merges: list[str]) -> dict:
    """A tokenizer.json laid out as Qwen2.5-VL's."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": N_RANKS + i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": special,
            }
            for i, (content, special) in enumerate(ADDED_TOKENS)
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }


def check_qwen2_files(directory: Path, vocab: dict[str, int], merges: list[str]) -> None:
    theirs_vocab = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
    assert theirs_vocab == vocab, "vocab.json differs from the ranks"
    lines = (directory / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version"), lines[0]
    assert [line for line in lines[1:] if line] == merges, "merges.txt differs from the derived merges"
    print(f"{directory}: vocab.json and merges.txt equal the ones derived from qwen.tiktoken")


# ------------------------------------------------------------------------------------------------ strings


def lcg_strings(count: int, seed: int, pool: str, lo: int, hi: int) -> list[str]:
    """Deterministic pseudo-random strings drawn from `pool` (a 64-bit LCG: stable across Python versions)."""
    state = seed
    out = []

    def nxt() -> int:
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return state >> 33

    for _ in range(count):
        n = lo + nxt() % (hi - lo + 1)
        out.append("".join(pool[nxt() % len(pool)] for _ in range(n)))
    return out


def test_strings() -> list[tuple[str, str]]:
    """(group, text) pairs."""
    cases: list[tuple[str, str]] = []

    def add(group: str, *texts: str) -> None:
        cases.extend((group, t) for t in texts)

    # The official Pixel Reasoner system prompt and tool blocks, and the user/observation texts of the protocol.
    pixel_system = (PROTOCOL / "system_prompt_pixel_reasoner.txt").read_text(encoding="utf-8")
    deepeyes_system = (PROTOCOL / "system_prompt_deepeyes.txt").read_text(encoding="utf-8")
    add("protocol", pixel_system, deepeyes_system)
    add("protocol", *json.loads((PROTOCOL / "tools_block_unicode.json").read_text(encoding="utf-8")).values())
    user_texts = [u["text"] for u in json.loads((PROTOCOL / "user_text.json").read_text(encoding="utf-8"))]
    add("protocol", *user_texts)
    observations = json.loads((PROTOCOL / "observation_texts.json").read_text(encoding="utf-8"))
    add("protocol", *(o["text"] for group in observations.values() for o in group))
    add(
        "protocol",
        '<tool_call>\n{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.1, 0.2, 0.5, 0.6], "target_image": 1}}\n</tool_call>',
        '<tool_call>\n{"name": "select_frames", "arguments": {"target_frames": [1, 4, 7, 12]}}\n</tool_call>',
        "The sign reads 42.\n\n\\boxed{42}",
        "\\boxed{B}",
        "\\boxed{\\frac{3}{4}}",
        "<think>I should zoom in on the top-left corner.</think>",
    )

    # Rendered chats: added tokens next to text, runs of image/video pads.
    pads = "<|image_pad|>" * 16
    chat = (
        f"<|im_start|>system\n{pixel_system}<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|>{pads}<|vision_end|>{user_texts[0]}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    add("chat", chat)
    add(
        "chat",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nPicture 1: <|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>Picture 2: <|vision_start|>"
        + "<|image_pad|>" * 9 + "<|vision_end|>Compare them.<|im_end|>\n",
        "<|im_start|>user\nVideo 1: <|vision_start|>" + "<|video_pad|>" * 12 + "<|vision_end|>Which frame shows the cat?<|im_end|>\n",
        "<|im_start|>assistant\n<tool_call>\n{\"name\": \"select_frames\", \"arguments\": {\"target_frames\": [3, 5]}}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>\n</tool_response><|im_end|>\n",
        "<|im_start|>assistant\nThe answer is \\boxed{C}.<|im_end|><|endoftext|>",
        "<|object_ref_start|>the red car<|object_ref_end|><|box_start|>(120,45),(388,270)<|box_end|>",
        "<|quad_start|>(1,2),(3,4),(5,6),(7,8)<|quad_end|>",
        "<|vision_start|><|vision_pad|><|vision_end|>",
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c<|fim_middle|>c = a + b",
        "<|repo_name|>pixel-reasoner\n<|file_sep|>src/main.rs\nfn main() {}\n<|fim_pad|>",
        "text<|im_end|>text",
        "a<|im_start|>b<|im_end|>c",
        " <|im_start|> spaced <|im_end|> ",
        "\n<|im_end|>\n",
        "<|endoftext|><|endoftext|>",
        "x<tool_call>y</tool_call>z",
        "<tool_call></tool_call>",
        "<|image_pad|>" * 300,
        "<|im_start|",
        "<|im_end",
        "< |im_end|>",
        "<|IM_END|>",
        "<|im_end|>>",
        "<<|im_end|>",
        "<|extra_0|>",
        "<tool_call >",
        "<tool_response>",
        "</tool_call",
        "<|endoftext|",
        "<|vision_start|><|image_pad|><|vision_end|>cafe\u0301",
    )

    # Multilingual.
    add(
        "multilingual",
        "图片中的文字是什么？",
        "这张图片里有一只猫坐在红色的沙发上，旁边是一盏台灯。",
        "请放大图片左上角的区域，然后告诉我标志上的数字。",
        "中华人民共和国成立于1949年10月1日。",
        "繁體中文：這是一個測試句子，包含「引號」和『雙引號』。",
        "日本語のテキスト：東京は日本の首都です。ひらがな、カタカナ、漢字。",
        "ｶﾀｶﾅ（半角）とカタカナ（全角）",
        "한국어 텍스트: 서울은 대한민국의 수도입니다.",
        "العربية: مرحبا بالعالم، كيف حالك؟",
        "हिन्दी: नमस्ते दुनिया, आप कैसे हैं?",
        "Русский текст: Привет, мир! Как дела?",
        "Ελληνικά: Καλημέρα κόσμε",
        "עברית: שלום עולם",
        "ไทย: สวัสดีชาวโลก",
        "Tiếng Việt: Xin chào thế giới, tôi là một trợ lý.",
        "Türkçe: İstanbul'da ıslak ılık",
        "Deutsch: Straße, Größe, Übermaß — „Anführungszeichen“",
        "Français : « Bonjour » à l'hôpital, c'est l'été.",
        "Español: ¿Dónde está el baño? ¡Olé!",
        "Português: ação, coração, pão",
        "Polski: Zażółć gęślą jaźń",
        "ქართული ენა",
        "Հայերեն",
        "বাংলা ভাষা",
        "தமிழ் மொழி",
        "ᚠᚢᚦᚨᚱᚲ",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝟘𝟙𝟚",
        "Mixed 中文 and English 和 日本語 in one line.",
        "中文，English，한국어。",
        "数字：１２３４５６７８９０（全角）",
    )

    # Emoji: single, presentation selectors, skin tones, ZWJ sequences, flags, keycaps.
    add(
        "emoji",
        "🙂",
        "🙂🙂🙂",
        "Hello 👋 world 🌍!",
        "👍🏽 👍🏿 👋🏻",
        "👨‍👩‍👧‍👦",
        "👩🏽‍💻",
        "🏳️‍🌈",
        "🧑‍🤝‍🧑",
        "❤️ ❤ ♥️",
        "🇯🇵🇺🇸🇩🇪",
        "1️⃣ #️⃣ *️⃣",
        "😀😃😄😁😆😅🤣😂",
        "🐈‍⬛ black cat",
        "emoji👀inside",
        "✅ done ❌ failed ⚠️ warning",
        "🙂" * 60,
        "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
    )

    # Code.
    add(
        "code",
        "def crop(image, bbox):\n    x0, y0, x1, y1 = bbox\n    return image[y0:y1, x0:x1]\n",
        "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{v:?}\");\n}\n",
        "impl<'a> Iterator for Tokens<'a> {\n\ttype Item = &'a str;\n}",
        '{"bbox_2d": [0.25, 0.5, 0.75, 1.0], "target_image": 2}',
        "<div class=\"box\" id='main'>&nbsp;&lt;x&gt;</div>",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "#!/bin/bash\nset -euo pipefail\nfor f in *.png; do echo \"$f\"; done\n",
        r"^(?:[a-z0-9!#$%&'*+/=?^_`{|}~-]+)@example\.com$",
        r"\frac{a}{b} + \sqrt{x^2 + y^2} = \int_0^\infty e^{-t}\,dt",
        "if (x != y && y <= z || !w) { return -1; }",
        "x+=1;y-=2;z*=3;w/=4;a%=5;b**=6;c//=7",
        "// comment\n/* block */\n# hash\n-- sql\n",
        "    indented four\n\tindented tab\n        indented eight\n",
        "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case",
        "https://github.com/TIGER-AI-Lab/Pixel-Reasoner?tab=readme#usage",
        "C:\\Users\\name\\Documents\\file.txt",
        "a=b&c=d;e:f|g^h~i`j",
        "print('it''s')",
        "...---...",
        "=== ### *** +++ ___ ~~~",
    )

    # Numbers: Qwen splits every digit.
    add(
        "numbers",
        "0",
        "12",
        "123",
        "1234567",
        "12345678901234567890",
        "3.14159265358979323846264338327950288419716939937510",
        "-42",
        "+1 (555) 010-9999",
        "1,000,000.00",
        "1e-10 6.022e23",
        "0x1F 0b1010 0o777",
        "2024-12-31T23:59:59Z",
        "v1.2.3-rc.4",
        "x1y2z3",
        "Image Size: 3000x28",
        "٠١٢٣٤٥٦٧٨٩",
        "०१२३४५६७८९",
        "Ⅻ ⅻ ½ ¾ ² ³ ⁴ ₅",
        "一二三四五六七八九十百千万",
        "9" * 200,
        "".join(str(i % 10) for i in range(1000)),
        "[0.1, 0.2, 0.5, 0.6]",
        "(120,45),(388,270)",
        "1234 apples and 5678 oranges",
        "１２３ and 123",
    )

    # Whitespace and newlines.
    add(
        "whitespace",
        "",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        "\r\n",
        "\r\n\r\n",
        "\r",
        " \n",
        "\n ",
        " \n \n ",
        "a  b",
        "a   b",
        "a\tb",
        "a\t\tb",
        "a \t b",
        "   leading",
        "trailing   ",
        "trailing   \n",
        "word\n\n\nword",
        "line1\nline2\r\nline3\rline4",
        "x" + " " * 50 + "y",
        " " * 100,
        "\n" * 40,
        "\t" * 20 + "tabs",
        "a\u00a0b",
        "a\u3000b",
        "a\u2028b\u2029c",
        "a\u200bb",
        "\ufeffBOM",
        "a\u0085b",
        "a\x0bb\x0cc",
        "end.  \n  \n",
        ".\n\n",
        "!!!\n\n\n",
        "x \n\n y",
    )

    # Contractions with odd casing, apostrophes.
    add(
        "contractions",
        "it's",
        "IT'S",
        "It'S",
        "we'LL go",
        "I'M here",
        "they'Re",
        "you'VE",
        "she'D",
        "don't",
        "DON'T",
        "'s",
        "'S'",
        "''s",
        "'ll'll'll",
        "rock 'n' roll",
        "it’s curly",
        "itʼs modifier",
        "o'clock O'Brien",
        "'re're",
        "'",
        "''",
        "the cat's hat's",
    )

    # Normalisation: NFD input is composed by the NFC normalizer.
    add(
        "normalization",
        "café",
        "cafe\u0301",
        "Å",
        "A\u030a",
        "\u212b",
        "\u2126",
        "\u1112\u1161\u11ab\u1100\u1173\u11af",
        "ﬁ ligature",
        "e\u0301\u0301\u0301",
        "\u0301",
        "n\u0303o",
        unicodedata.normalize("NFD", "Tiếng Việt: Xin chào thế giới"),
        unicodedata.normalize("NFD", "Größe über Öl"),
        unicodedata.normalize("NFD", "한국어"),
        unicodedata.normalize("NFD", "がぎぐげご"),
        "ｶﾞ",
        "x\u0000y",
        "\x7f\x01\x1f",
    )

    # Long texts and long pieces.
    add(
        "long",
        "supercalifragilisticexpialidocious",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" * 500,
        "ab" * 200,
        "The quick brown fox jumps over the lazy dog. " * 20,
        "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
        "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
        "aliquip ex ea commodo consequat.",
        "猫" * 100,
        "-" * 120,
        "=" * 64 + "\n" + "#" * 64,
        "Thisisaverylongwordwithoutanyspacesthatgoesonandonandontotestthebpemergesonasinglepiece",
        "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßàáâãäåæçèéêëìíîïðñòóôõö÷øùúûüýþÿ",
    )

    # English prose.
    add(
        "english",
        "Hello world! How are you?",
        "You are a helpful assistant.",
        "What is the number on the red sign?",
        "Zoom in on the image based on the bounding box coordinates.",
        "Reason with the visual information step by step, and put your final answer within \\boxed{}.",
        "The Answer Is: (B) Forty-Two.",
        "HELLO WORLD",
        "hello world",
        "Hello World",
        "hElLo WoRlD",
        "U.S.A. e.g. i.e. etc.",
        "Mr. O'Neil's dog—a terrier—barked.",
        "“Smart quotes” and ‘single ones’ … ellipsis",
        "A man, a plan, a canal: Panama!",
    )

    # Pseudo-random mixes of scripts, digits, punctuation, spaces and added-token fragments.
    pool = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        "     \t\n\n\r'''\".,;:!?-_()[]{}<>/\\|@#$%^&*+=~`"
        "éüßñçøåÉ中文字图片猫日本語カタ한국어абвгдежαβγעבעربي१२٣🙂👍🏽\u200d❤️\u0301"
    )
    add("random", *lcg_strings(60, 20250611, pool, 1, 40))
    add("random", *lcg_strings(20, 7, pool, 60, 200))
    specials = [t for t, _ in ADDED_TOKENS]
    mixes = lcg_strings(20, 99, pool, 5, 30)
    for i, text in enumerate(mixes):
        cut = len(text) // 2
        mixes[i] = text[:cut] + specials[i % len(specials)] + text[cut:]
    add("random", *mixes)
    return cases


# ------------------------------------------------------------------------------------------------ main


def encode_all(tok: tokenizers.Tokenizer, texts: list[str]) -> list[list[int]]:
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-out", type=Path, help="also write the full tokenizer.json here")
    parser.add_argument("--check-qwen2-files", type=Path, help="a folder with Qwen2's vocab.json and merges.txt")
    args = parser.parse_args()

    source = find_qwen_tiktoken()
    check_dashscope_agrees()
    ranks = load_ranks(source)
    merges_by_rank = derive_merges(ranks)
    vocab = {byte_level(t): r for t, r in ranks.items()}
    merges = [f"{byte_level(a)} {byte_level(b)}" for _, (a, b) in sorted(merges_by_rank.items())]
    assert len(vocab) == N_RANKS and len(merges) == N_RANKS - 256
    if args.check_qwen2_files:
        check_qwen2_files(args.check_qwen2_files, vocab, merges)

    full_json = tokenizer_json(vocab, merges)
    full_text = json.dumps(full_json, ensure_ascii=False)
    full = tokenizers.Tokenizer.from_str(full_text)
    assert full.get_vocab_size(with_added_tokens=True) == N_RANKS + len(ADDED_TOKENS)
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert full.token_to_id(content) == N_RANKS + i
    if args.full_out:
        args.full_out.parent.mkdir(parents=True, exist_ok=True)
        args.full_out.write_text(full_text, encoding="utf-8")
        print(f"wrote {args.full_out}")

    cases = test_strings()
    texts = [t for _, t in cases]
    assert len(set(texts)) == len(texts), [t for t in texts if texts.count(t) > 1]
    ids = encode_all(full, texts)

    # The independent reference: tiktoken with the same ranks, Qwen's pattern, NFC as Qwen's own tokenizer
    # applies, and the added tokens as its special tokens.
    enc = tiktoken.Encoding(
        "qwen2.5-vl",
        pat_str=PATTERN,
        mergeable_ranks=ranks,
        special_tokens={content: N_RANKS + i for i, (content, _) in enumerate(ADDED_TOKENS)},
    )
    mismatches = []
    for text, want in zip(texts, ids):
        got = enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        if got != want:
            mismatches.append((text, want, got))
    for text, want, got in mismatches:
        print(f"tokenizers != tiktoken on {text!r}:\n  tokenizers {want}\n  tiktoken   {got}")
    assert not mismatches, f"{len(mismatches)} strings differ between tokenizers and tiktoken"

    # The reduced vocabulary: the byte tokens and the merge trees of every token the strings produce.
    id_to_bytes = {r: t for t, r in ranks.items()}
    keep = set(range(256))
    stack = [i for row in ids for i in row if i < N_RANKS]
    while stack:
        rank = stack.pop()
        if rank in keep:
            continue
        keep.add(rank)
        a, b = merges_by_rank[rank]
        stack += [ranks[a], ranks[b]]
    reduced_vocab = {byte_level(id_to_bytes[r]): r for r in sorted(keep)}
    # `tokenizers` gives an added token the id it has in the model's vocab, else the next id after the
    # model's vocab *size* (a count): with holes in the vocab that would be a wrong id, so the reduced file
    # also lists the added tokens in model.vocab at their real ids (no merge makes them, so BPE never
    # produces them; the full file, like Qwen's, does not need this).
    reduced_vocab.update({content: N_RANKS + i for i, (content, _) in enumerate(ADDED_TOKENS)})
    reduced_merges = [
        f"{byte_level(a)} {byte_level(b)}" for r, (a, b) in sorted(merges_by_rank.items()) if r in keep
    ]
    reduced_json = tokenizer_json(reduced_vocab, reduced_merges)
    reduced = tokenizers.Tokenizer.from_str(json.dumps(reduced_json, ensure_ascii=False))
    reduced_ids = encode_all(reduced, texts)
    bad = [(t, a, b) for t, a, b in zip(texts, ids, reduced_ids) if a != b]
    assert not bad, f"the reduced tokenizer differs on {len(bad)} strings, first {bad[0]!r}"

    records = []
    for (group, text), row in zip(cases, ids):
        decoded = full.decode(row, skip_special_tokens=False)
        decoded_skip = full.decode(row, skip_special_tokens=True)
        assert reduced.decode(row, skip_special_tokens=False) == decoded
        assert reduced.decode(row, skip_special_tokens=True) == decoded_skip
        # Byte-level BPE is lossless up to the NFC normaliser; recorded so the test can say so.
        assert decoded == unicodedata.normalize("NFC", text), (text, decoded)
        records.append(
            {
                "group": group,
                "text": text,
                "ids": row,
                "decoded": decoded,
                "decoded_skip_special": decoded_skip,
            }
        )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with open(OUT_DIR / "tokenizer.json", "w", encoding="utf-8") as f:
        # One vocab entry / merge per line, as the released files; small enough to diff.
        text = json.dumps(reduced_json, ensure_ascii=False, indent=1)
        f.write(text + "\n")
    with open(OUT_DIR / "cases.json", "w", encoding="utf-8") as f:
        meta = {
            "source": "dashscope 2.0.2 resources/qwen.tiktoken, sha256 " + QWEN_TIKTOKEN_SHA256,
            "generator": "scripts/gen_vlm_tokenizer_fixtures.py",
            "python_tokenizers": tokenizers.__version__,
            "tiktoken": tiktoken.__version__,
            "tiktoken_agrees": True,
            "full_vocab_size_with_added": N_RANKS + len(ADDED_TOKENS),
            "reduced_vocab_size": len(reduced_vocab),
            "special_ids": {content: N_RANKS + i for i, (content, _) in enumerate(ADDED_TOKENS)},
            "cases": records,
        }
        json.dump(meta, f, ensure_ascii=False, indent=1)
        f.write("\n")
    license_src = Path(importlib.util.find_spec("dashscope").origin).parent.parent
    licences = sorted(license_src.glob("dashscope-*.dist-info/licenses/LICENSE")) + sorted(
        license_src.glob("dashscope-*.dist-info/LICENSE")
    )
    if licences:
        shutil.copyfile(licences[0], OUT_DIR / "LICENSE.dashscope")
    sizes = {p.name: p.stat().st_size for p in sorted(OUT_DIR.iterdir())}
    print(f"{len(records)} strings, {sum(map(len, ids))} ids; kept {len(keep)} of {N_RANKS} ranks")
    print(f"tokenizers == tiktoken on every string; reduced == full on every string; sizes {sizes}")


if __name__ == "__main__":
    main()
