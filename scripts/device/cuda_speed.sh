#!/usr/bin/env bash
# Speed of pixel-vlm on a CUDA GPU beside transformers on the same GPU and the same weights, in one run (issue
# 14, item 2): checkpoint load time and GB/s; prefill at 128 tokens (64 image tokens) and 1,433 tokens (1,369
# image tokens); greedy decode at batch 1 and batch 8, each cold (first pass over the lengths in a fresh
# process) and warm (the same lengths again); the ratios, and the batch-1 decode bound (bytes of the text
# weights per token / the GPU's read bandwidth). Builds nothing: it runs the benchmark binary that
# scripts/device/build_cuda_speed.sh built elsewhere, and scripts/bench_vlm_reference.py (python3 with torch +
# transformers) for the reference and the table. Needs the NVIDIA driver and NVRTC there; no cargo, no network.
#
# The checkpoint: Qwen2.5-VL-7B's shape (8.29 B parameters, 16.6 GB) with random bf16 weights, written here by
# transformers' save_pretrained (scripts/gen_vlm_speed_checkpoint.py) unless CKPT already holds one.
#
# Usage, from the repository root: scripts/device/cuda_speed.sh [BIN_DIR] [OUT_DIR]
#   BIN_DIR (default .device/bin) holds vlm_throughput or vlm_throughput.xz; OUT_DIR defaults to $OUT (the
#   device tool's folder) or target/cuda-speed. Settings from the environment:
#     SPEED_LAYERS        text layers (default 28, the 7B shape); also the vision depth unless
#                         SPEED_VISION_DEPTH is set (SPEED_LAYERS=4: 2.15 B parameters, 4.3 GB)
#     SPEED_VISION_DEPTH  vision blocks (default 32, or SPEED_LAYERS when that is set)
#     CKPT                checkpoint folder (default /tmp/qwen25vl-speed-<preset>-L<layers>-V<depth>; written
#                         if missing)
#     DECODE (64 new tokens per row), BATCHES (1,8), IMAGES (16x16,74x74 patches), PASSES (2),
#     RUN_TIMEOUT (seconds for the comparison, default 540)
#     SPEED_DEVICE        cuda (default); `cpu` checks the script without a GPU, given a CPU build of the
#                         binary in BIN_DIR and SPEED_PRESET=tiny (the figures then mean nothing)
#     SPEED_PRESET        7b (default) or tiny (scripts/gen_vlm_speed_checkpoint.py --preset)
#   Writes gpu.txt, checkpoint.json, run.log, speed.json and summary.txt to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-.device/bin}
out=${2:-${OUT:-target/cuda-speed}}
mkdir -p "$out"
export RUST_BACKTRACE=1
layers=${SPEED_LAYERS:-28}
depth=${SPEED_VISION_DEPTH:-${SPEED_LAYERS:-32}}
device=${SPEED_DEVICE:-cuda}
preset=${SPEED_PRESET:-7b}
ckpt=${CKPT:-/tmp/qwen25vl-speed-$preset-L$layers-V$depth}
python=${PYTHON:-python3}

{
    echo "date: $(date -u +%FT%TZ)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
        nvidia-smi | sed -n 3p
    else
        echo "no nvidia-smi"
    fi
    "$python" -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")'
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

exe=$bin/vlm_throughput
if [ ! -x "$exe" ]; then
    exe=$(mktemp -d)/vlm_throughput
    if command -v xz >/dev/null; then
        xz -dc "$bin/vlm_throughput.xz" >"$exe"
    else
        "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$bin/vlm_throughput.xz" "$exe"
    fi
    chmod +x "$exe"
fi

if [ ! -f "$ckpt/config.json" ]; then
    echo "=== writing the $preset checkpoint ($layers text layers, $depth vision blocks, bf16) to $ckpt" |
        tee -a "$out/gpu.txt"
    "$python" scripts/gen_vlm_speed_checkpoint.py "$ckpt" --preset "$preset" --text-layers "$layers" \
        --vision-depth "$depth" --dtype bf16 --device "$device" 2>&1 | grep -v 'Writing model shards' | tee "$out/checkpoint.json"
else
    echo "=== using the checkpoint in $ckpt" | tee -a "$out/gpu.txt"
fi

args=(--model "$ckpt" --device "$device" --dtype bf16 --rust-bin "$exe" --images "${IMAGES:-16x16,74x74}"
    --decode "${DECODE:-64}" --batches "${BATCHES:-1,8}" --passes "${PASSES:-2}" --json "$out/speed.json")
echo "=== bench_vlm_reference.py ${args[*]}" | tee "$out/run.log"
start=$(date +%s)
timeout "${RUN_TIMEOUT:-540}" "$python" scripts/bench_vlm_reference.py "${args[@]}" 2>&1 | tee -a "$out/run.log"
rc=${PIPESTATUS[0]}
{
    cat "$out/gpu.txt"
    cat "$out/checkpoint.json" 2>/dev/null
    echo "comparison: exit $rc after $(($(date +%s) - start)) s"
    grep -E '^(device:|\|)|rror|panicked|out of memory|failed' "$out/run.log"
} >"$out/summary.txt"
cat "$out/summary.txt"
