#!/usr/bin/env bash
# Trainer benchmark: pixel-rl's SftTrainer / GrpoTrainer (burn, CPU) against TRL's SFTTrainer / GRPOTrainer
# (torch, CPU) on the same checkpoint folder, token ids and settings, in one go; prints the ratios.
# A BENCHMARK, NOT A TEST: CI never runs it (it needs Python with torch 2.15, transformers 5.24, trl 1.16 and
# datasets, and takes ~15-30 minutes on 2 cores). Results: docs/performance.md, "Trainers vs TRL (CPU)".
#
#   scripts/bench_trainers.sh [--configs a,b] [--rounds 2] [--rounds-b 1] [--warmup 1] [--steps 5] [--steps-b 1]
#                             [--sft-batch-b 1] [--malloc-tuned] [--nice -10] [--idle-wait 60]
#                             [--dir target/bench-trainers] [--out FILE.jsonl] [--rust-bin PATH]
#   PYTHON=/path/to/venv/bin/python scripts/bench_trainers.sh      # the Python with torch/transformers/trl
#
# What it does:
#  1. builds `crates/pixel-rl/benches/trainers.rs` (cargo bench --no-run, 2 jobs) unless --rust-bin is given;
#  2. per config, writes the tiny checkpoint folder + SFT token ids + GRPO prompt ids once (`--prepare`);
#  3. per config and round, for SFT then GRPO, runs burn and TRL one after the other, each in its own process,
#     alternating which goes first (round 1: burn first, round 2: TRL first, ...) to spread the bias of a load
#     that changes over time; before each run it waits (up to --idle-wait seconds) until /proc/stat shows the
#     machine >= 90 % idle over 5 s, and it records `uptime`'s load before and after each run;
#     both implementations run under `nice -n --nice` (default -10 as root, else 0): on a shared 2-core machine
#     a busy process at equal priority makes torch's OpenMP threads wait for each other at every operation
#     (one busy loop beside it took TRL's config-a SFT step from 1.6 s to 33-41 s; at nice -10, 1.6-1.8 s);
#  4. appends every measurement (a JSON line with round, load and idle share added) to --out and prints the
#     table and ratios (TRL time / burn time: > 1 means burn is faster) with
#     `scripts/bench_trainers_reference.py --summarize`.
#
# Threads: RAYON_NUM_THREADS / OMP_NUM_THREADS = 2 and torch.set_num_threads(2). --malloc-tuned runs both with
# glibc malloc keeping freed memory (see docs/performance.md, training step). Configs: `a` = the CPU demo's model
# (SFT batch 8 traces), `b` = ~0.58 B Qwen2.5-VL-3B widths with 2 text layers (SFT batch --sft-batch-b traces;
# a 0.5 B step takes minutes on 2 cores, so b gets --steps-b timed steps and --rounds-b rounds).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
CONFIGS="a,b"
ROUNDS=2
ROUNDS_B=1
WARMUP=1
STEPS=5
STEPS_B=1
SFT_BATCH_B=1
MALLOC_TUNED=0
IDLE_WAIT=60
NICE=$([[ $(id -u) == 0 ]] && echo -10 || echo 0)
DIR="target/bench-trainers"
OUT=""
RUST_BIN=""
THREADS=2
MALLOC_TUNABLES="glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184:glibc.malloc.top_pad=268435456"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --configs) CONFIGS="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rounds-b) ROUNDS_B="$2"; shift 2 ;;
        --warmup) WARMUP="$2"; shift 2 ;;
        --steps) STEPS="$2"; shift 2 ;;
        --steps-b) STEPS_B="$2"; shift 2 ;;
        --sft-batch-b) SFT_BATCH_B="$2"; shift 2 ;;
        --malloc-tuned) MALLOC_TUNED=1; shift ;;
        --idle-wait) IDLE_WAIT="$2"; shift 2 ;;
        --nice) NICE="$2"; shift 2 ;;
        --dir) DIR="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --rust-bin) RUST_BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
OUT="${OUT:-$DIR/results-$(date +%Y%m%d-%H%M%S).jsonl}"
mkdir -p "$DIR"

"$PY" -c "import torch, transformers, trl, datasets" 2>/dev/null || {
    echo "$PY lacks torch/transformers/trl/datasets: set PYTHON to a venv that has them" >&2
    exit 1
}

if [[ -z "$RUST_BIN" ]]; then
    echo "building the Rust benchmark (cargo bench --no-run, 2 jobs)..." >&2
    RUST_BIN="$(cargo bench -p pixel-rl --bench trainers --no-run -j2 2>&1 \
        | sed -n 's/.*Executable benches\/trainers.rs (\(.*\))/\1/p' | tail -1)"
    [[ -x "$RUST_BIN" ]] || { echo "could not find the built benchmark binary" >&2; exit 1; }
fi

export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
if [[ $MALLOC_TUNED == 1 ]]; then
    export GLIBC_TUNABLES="$MALLOC_TUNABLES"
fi

# Idle share (percent) of all CPUs over 5 s, from /proc/stat.
idle_share() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 5
    read -r -a b < <(head -1 /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $(((100 * (b[4] - a[4] + b[5] - a[5])) / (total > 0 ? total : 1)))
}

# Waits until the machine is >= 90 % idle (or IDLE_WAIT seconds passed); prints the last idle share.
wait_idle() {
    local start=$SECONDS share
    while :; do
        share=$(idle_share)
        if (( share >= 90 || SECONDS - start >= IDLE_WAIT )); then
            echo "$share"
            return
        fi
    done
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# run ROUND IMPL CMD...: one measurement, its JSON lines tagged and appended to $OUT.
run() {
    local round="$1" impl="$2"
    shift 2
    local idle before after
    idle=$(wait_idle)
    before=$(load1)
    echo "== round $round, $impl: $* (idle ${idle} %, uptime: $(uptime | sed 's/.*load/load/'))" >&2
    local lines
    lines="$(nice -n "$NICE" "$@" | grep '^{"' || true)"
    after=$(load1)
    echo "   after: $(uptime | sed 's/.*load/load/')" >&2
    if [[ -z "$lines" ]]; then
        echo "   no result from $impl" >&2
        return
    fi
    while IFS= read -r line; do
        line="${line%\}}, \"round\": $round, \"load_before\": $before, \"load_after\": $after, \"idle_before\": $idle, \"malloc_tuned\": $MALLOC_TUNED, \"nice\": $NICE}"
        echo "$line" | tee -a "$OUT"
    done <<< "$lines"
}

IFS=',' read -r -a configs <<< "$CONFIGS"
for config in "${configs[@]}"; do
    "$RUST_BIN" --config "$config" --dir "$DIR" --prepare
done

for config in "${configs[@]}"; do
    if [[ $config == b ]]; then
        rounds=$ROUNDS_B steps=$STEPS_B sft_batch=$SFT_BATCH_B
    else
        rounds=$ROUNDS steps=$STEPS sft_batch=8
    fi
    for ((r = 1; r <= rounds; r++)); do
        for what in sft grpo; do
            burn=("$RUST_BIN" --config "$config" --dir "$DIR" --what "$what" --warmup "$WARMUP"
                --steps "$steps" --sft-batch "$sft_batch")
            trl=("$PY" scripts/bench_trainers_reference.py --dir "$DIR/$config" --config "$config"
                --what "$what" --threads "$THREADS" --warmup "$WARMUP" --steps "$steps" --sft-batch "$sft_batch")
            if (( r % 2 == 1 )); then
                run "$r" burn "${burn[@]}"
                run "$r" trl "${trl[@]}"
            else
                run "$r" trl "${trl[@]}"
                run "$r" burn "${burn[@]}"
            fi
        done
    done
done

echo >&2
echo "results: $OUT" >&2
"$PY" scripts/bench_trainers_reference.py --summarize "$OUT"
