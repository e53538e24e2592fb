#!/usr/bin/env bash
# The main demo: installs what is missing, builds in release mode and runs it. Output goes to ./out/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo run --release --features ffmpeg --example demo -- --out out/demo "$@"
