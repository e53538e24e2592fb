#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the workspace
# (unit, integration, property and fixture tests with nextest, then doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo nextest run --workspace --features ffmpeg --no-fail-fast
cargo test --workspace --features ffmpeg --doc
