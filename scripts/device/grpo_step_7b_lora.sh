#!/usr/bin/env bash
# One GRPO update of a Qwen2.5-VL-7B-shaped LoRA policy on a CUDA GPU: a group of 8 rollouts of 2,048 tokens
# (256 prompt + 1,792 trained), LoRA rank 64 on every decoder projection over a bf16 base with random weights,
# per-layer activation recompute, AdamW on the adapters. Prints the time of each phase per step (the first
# step also compiles kernels) and the peak GPU memory (nvidia-smi, sampled every 100 ms: what the process
# holds, including the allocator's reserve). Builds nothing: it runs the binary that
# scripts/device/build_grpo_step_7b_lora.sh built elsewhere. Needs the NVIDIA driver and NVRTC there.
#
# Usage, from the repository root: scripts/device/grpo_step_7b_lora.sh [BIN_DIR] [OUT_DIR]
#   BIN_DIR (default .device/bin) holds grpo_step_lora or grpo_step_lora.xz; OUT_DIR defaults to $OUT (the
#   device tool's folder) or target/grpo-step-7b. Settings from the environment: MICRO (rollouts per
#   forward/backward, default 4), RECOMPUTE (layer | balanced | none, default layer), RANK (64), STEPS (2),
#   TOKENS (2048), GROUP (8), RUN_TIMEOUT (seconds, default 540).
#   Writes gpu.txt, run.log, memory.csv and summary.txt to OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-.device/bin}
out=${2:-${OUT:-target/grpo-step-7b}}
mkdir -p "$out"
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

exe=$bin/grpo_step_lora
if [ ! -x "$exe" ]; then
    exe=$(mktemp -d)/grpo_step_lora
    if command -v xz >/dev/null; then
        xz -dc "$bin/grpo_step_lora.xz" >"$exe"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
            "$bin/grpo_step_lora.xz" "$exe"
    fi
    chmod +x "$exe"
fi

baseline=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$out/memory.csv" &
sampler=$!
args=(--preset 7b --group "${GROUP:-8}" --tokens "${TOKENS:-2048}" --prompt 256 --micro "${MICRO:-4}"
    --rank "${RANK:-64}" --recompute "${RECOMPUTE:-layer}" --steps "${STEPS:-2}")
echo "=== grpo_step_lora ${args[*]}" | tee "$out/run.log"
start=$(date +%s)
timeout "${RUN_TIMEOUT:-540}" "$exe" "${args[@]}" 2>&1 | tee -a "$out/run.log"
rc=${PIPESTATUS[0]}
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
peak=$(sort -n "$out/memory.csv" | tail -n1)
{
    cat "$out/gpu.txt"
    echo "command: grpo_step_lora ${args[*]}"
    echo "exit $rc after $(($(date +%s) - start)) s"
    grep -E 'model built|step [0-9]|panicked|out of memory|rror' "$out/run.log"
    echo "GPU memory: ${baseline} MiB before, peak ${peak} MiB while running (nvidia-smi, 100 ms samples)"
} >"$out/summary.txt"
cat "$out/summary.txt"
