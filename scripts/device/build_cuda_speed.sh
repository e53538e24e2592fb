#!/usr/bin/env bash
# Builds pixel-vlm's throughput benchmark (crates/pixel-vlm/benches/vlm_throughput.rs) for the `cuda` backend
# (release) on a machine without a GPU or CUDA toolkit, and copies the stripped binary to DEST (ignored by git
# through .git/info/exclude) as DEST/vlm_throughput.xz, ready to be carried to a GPU machine and run there by
# scripts/device/cuda_speed.sh (which needs no cargo).
#
# Usage: scripts/device/build_cuda_speed.sh [DEST]     (DEST defaults to .device/bin)
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.device/bin}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
mkdir -p "$dest"
# One build; the executable's path comes from cargo's JSON messages (diagnostics still rendered on stderr).
exe=$(cargo bench -p pixel-vlm --no-default-features --features cuda --bench vlm_throughput --no-run \
    -j"${CARGO_BUILD_JOBS:-2}" --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "vlm_throughput":
        print(m["executable"])
')
[ -n "$exe" ] || { echo "build_cuda_speed: cargo reported no vlm_throughput executable" >&2; exit 1; }
cp "$exe" "$dest/vlm_throughput"
strip "$dest/vlm_throughput"
xz -T2 -6 -f "$dest/vlm_throughput"
echo "$dest/vlm_throughput.xz: $(du -h "$dest/vlm_throughput.xz" | cut -f1)"
