#!/usr/bin/env bash
# Builds pixel-vlm's parity tests for the `cuda` backend (release) on a machine without a GPU or CUDA toolkit,
# and copies the stripped test binaries to DEST (ignored by git through .git/info/exclude), xz-compressed
# (~13 MB for the three instead of ~85 MB), ready to be carried to a GPU machine and run there by
# scripts/device/cuda_parity.sh (which needs no cargo).
#
# Usage: scripts/device/build_cuda_parity.sh [DEST]     (DEST defaults to .device/bin)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.device/bin}
tests=(model_parity half_precision train_parity)
args=(--release -p pixel-vlm --no-default-features --features cuda -j"${CARGO_BUILD_JOBS:-2}")
for t in "${tests[@]}"; do args+=(--test "$t"); done

grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
mkdir -p "$dest"
# One build; the executables' paths come from cargo's JSON messages (diagnostics still rendered on stderr).
cargo test "${args[@]}" --no-run --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    cp "$exe" "$dest/$name"
    strip "$dest/$name"
    xz -T2 -6 -f "$dest/$name"
    echo "$dest/$name.xz: $(du -h "$dest/$name.xz" | cut -f1)"
done
