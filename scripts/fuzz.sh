#!/usr/bin/env bash
# Runs the pixel-ops fuzz target (model text through parse + Episode execution) for a bounded time.
#   ./scripts/fuzz.sh [seconds]     (default 60)
# cargo-fuzz needs nightly compiler features; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them.
# Findings (crashing inputs) land in fuzz/artifacts/parse_execute/; the corpus grows in fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

# Seed the corpus with well-formed turns once (selector byte, then turns separated by NUL).
corpus=fuzz/corpus/parse_execute
if [ ! -d "$corpus" ] || [ -z "$(ls -A "$corpus")" ]; then
    mkdir -p "$corpus"
    crop='<tool_call>\n{"name": "crop_image_normalized", "arguments": {"bbox_2d": [0.2, 0.2, 0.6, 0.7], "target_image": 1}}\n</tool_call>'
    abs='<tool_call>\n{"name": "crop_image_normalized", "arguments": {"bbox_2d": [10, 5, 60, 50], "target_image": 2}}\n</tool_call>'
    frames='<tool_call>\n{"name": "select_frames", "arguments": {"target_frames": [1, 4, 9, 16]}}\n</tool_call>'
    zoom='<tool_call>\n{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 10, 20, 30], "label": "cat"}}\n</tool_call>'
    printf '\x00Let me zoom.\n%b\x00%b<|im_end|>\x00\\boxed{A}' "$crop" "$abs" > "$corpus/image"
    printf '\x01Frames first.\n%b\x00%b\x00done' "$frames" "$crop" > "$corpus/video"
    printf '\x02%b\x00%b' "$zoom" "$zoom" > "$corpus/deepeyes"
    printf '\x00%b\x00%b\x00%b\x00%b\x00%b' "$crop" "$crop" "$crop" "$crop" "$crop" > "$corpus/limit"
fi

cargo fuzz run parse_execute --fuzz-dir fuzz -- -max_total_time="$seconds" -max_len=4096 -timeout=10
