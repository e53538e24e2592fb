#!/usr/bin/env bash
# The main demo: installs what is missing, builds in release mode and trains the mini Pixel Reasoner from
# scratch on the CPU (vision warm-up, SFT, GRPO with and without curiosity, evaluation). The report goes to
# ./out/mini/report.md (docs/demo.md explains it). Extra arguments go to the example (`--quick`, `--seed N`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release --features vlm --example mini_pixel_reasoner
./target/release/examples/mini_pixel_reasoner --out out/mini "$@"
echo "report: out/mini/report.md"
