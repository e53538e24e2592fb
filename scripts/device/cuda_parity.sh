#!/usr/bin/env bash
# Runs pixel-vlm's parity tests (model_parity, half_precision, train_parity) on a CUDA GPU from test binaries
# built elsewhere by scripts/device/build_cuda_parity.sh, once with f32 products in full f32
# (PIXEL_VLM_F32_MATMUL=exact, what the tests use on CUDA by default) and once with burn's own TF32 tensor-core
# products (PIXEL_VLM_F32_MATMUL=tf32), and prints every difference to transformers. Needs the NVIDIA driver
# and NVRTC there, no cargo and no network.
#
# Usage, from the repository root: scripts/device/cuda_parity.sh [BIN_DIR] [OUT_DIR]
#   BIN_DIR (default .device/bin) holds the binaries, plain or xz-compressed (NAME.xz); OUT_DIR defaults to
#   $OUT (the device tool's folder) or target/cuda-parity.
#   Writes gpu.txt, exact.log, tf32.log and summary.txt to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-.device/bin}
out=${2:-${OUT:-target/cuda-parity}}
per_binary_timeout=${PARITY_TIMEOUT:-200}
mkdir -p "$out"

# The tests read their fixtures under CARGO_MANIFEST_DIR (see tests/common/mod.rs): this checkout's crate.
export CARGO_MANIFEST_DIR=$PWD/crates/pixel-vlm
export RUST_BACKTRACE=1

{
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
    nvidia-smi | sed -n 3p
} | tee "$out/gpu.txt"

# cudarc loads libnvrtc at run time: where it is not on the loader's path, add the first one found.
if ! ldconfig -p 2>/dev/null | grep -q 'libnvrtc\.so'; then
    nvrtc=$(find /usr/local /opt /usr/lib -name 'libnvrtc.so*' 2>/dev/null | head -n1)
    if [ -n "$nvrtc" ]; then
        export LD_LIBRARY_PATH=$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        echo "NVRTC: $nvrtc" | tee -a "$out/gpu.txt"
    fi
fi

# cubecl-cuda passes the toolkit's include folder to NVRTC: /usr/local/cuda, /opt/cuda, or CUDA_PATH.
if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda ] && [ ! -d /opt/cuda ] && command -v nvcc >/dev/null; then
    export CUDA_PATH=$(dirname "$(dirname "$(command -v nvcc)")")
    echo "CUDA_PATH: $CUDA_PATH" | tee -a "$out/gpu.txt"
fi

# Compressed binaries are unpacked to a temporary folder (with xz, or Python's lzma where xz is missing).
tests=(model_parity half_precision train_parity)
run_dir=$bin
if [ ! -x "$bin/${tests[0]}" ]; then
    run_dir=$(mktemp -d)
    for t in "${tests[@]}"; do
        if command -v xz >/dev/null; then
            xz -dc "$bin/$t.xz" >"$run_dir/$t"
        else
            python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$bin/$t.xz" "$run_dir/$t"
        fi
        chmod +x "$run_dir/$t"
    done
fi

for mode in exact tf32; do
    log=$out/$mode.log
    : >"$log"
    for t in "${tests[@]}"; do
        echo "=== PIXEL_VLM_F32_MATMUL=$mode $t" | tee -a "$log"
        start=$(date +%s)
        PIXEL_VLM_F32_MATMUL=$mode timeout "$per_binary_timeout" "$run_dir/$t" --nocapture >>"$log" 2>&1
        rc=$?
        echo "=== $mode $t: exit $rc after $(($(date +%s) - start)) s" | tee -a "$log"
    done
done

{
    cat "$out/gpu.txt"
    for mode in exact tf32; do
        echo
        echo "## PIXEL_VLM_F32_MATMUL=$mode"
        grep -E '^(===|PARITY|test |test result)|RMS error|same argmax|panicked|max abs diff' "$out/$mode.log" |
            grep -v '^test result: ok. 0 passed'
    done
} >"$out/summary.txt"
cat "$out/summary.txt"
