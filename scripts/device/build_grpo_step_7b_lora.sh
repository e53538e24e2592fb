#!/usr/bin/env bash
# Builds pixel-vlm's `grpo_step_lora` example for the `cuda` backend (release) on a machine without a GPU or
# CUDA toolkit and copies the stripped binary to DEST (ignored by git through .git/info/exclude), xz-compressed,
# ready to be carried to a GPU machine and run there by scripts/device/grpo_step_7b_lora.sh (no cargo there).
#
# Usage: scripts/device/build_grpo_step_7b_lora.sh [DEST]     (DEST defaults to .device/bin)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.device/bin}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
mkdir -p "$dest"
cargo build --release -p pixel-vlm --no-default-features --features cuda --example grpo_step_lora \
    -j"${CARGO_BUILD_JOBS:-2}"
cp target/release/examples/grpo_step_lora "$dest/grpo_step_lora"
strip "$dest/grpo_step_lora"
xz -T2 -6 -f "$dest/grpo_step_lora"
echo "$dest/grpo_step_lora.xz: $(du -h "$dest/grpo_step_lora.xz" | cut -f1)"
