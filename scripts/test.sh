#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the workspace
# (unit, integration, property and fixture tests with nextest, then doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo nextest run --workspace --features ffmpeg --no-fail-fast
cargo test --workspace --features ffmpeg --doc
# The mini Pixel Reasoner's pipeline end to end in a few steps per stage (its numbers mean nothing).
quick="$(mktemp -d)"
PIXEL_PROGRESS=0 cargo run --features vlm --example mini_pixel_reasoner -- --quick --out "$quick"
for f in report.md summary.json plots/grpo_rapr.png plots/grpo_rapr_by_kind.png plots/sft_loss.png grpo-curiosity/config.json grpo-curiosity/tokenizer.json runs/grpo-curiosity/groups_by_kind.jsonl; do
  test -s "$quick/$f" || { echo "mini_pixel_reasoner --quick did not write $f" >&2; exit 1; }
done
grep -q "Results on held-out legible questions" "$quick/report.md" || { echo "mini_pixel_reasoner --quick: no legible questions in the report" >&2; exit 1; }
# The later stages again from that run's warmed folder: the report must say the warm-up was reused.
PIXEL_PROGRESS=0 cargo run --features vlm --example mini_pixel_reasoner -- --quick --out "$quick/again" --from-warmed "$quick/warmed"
grep -q "Stage (a) reused" "$quick/again/report.md" || { echo "--from-warmed: the report does not say the warm-up was reused" >&2; exit 1; }
# GRPO and the evaluation again from the first run's SFT model (another GRPO draw, groups of 4): the report
# must say the warm-up and SFT were reused.
PIXEL_PROGRESS=0 cargo run --features vlm --example mini_pixel_reasoner -- --quick --out "$quick/grpo" --from-sft "$quick" --grpo-seed 1 --grpo-group 4
grep -q "Stages (a) and (b) reused" "$quick/grpo/report.md" || { echo "--from-sft: the report does not say the warm-up and SFT were reused" >&2; exit 1; }
# The options kept for their measured runs (docs/demo-findings.md, "Where the second box goes") must still run.
PIXEL_PROGRESS=0 cargo run --features vlm --example mini_pixel_reasoner -- --quick --out "$quick/variants" --fine-grid 4 --crop-cut 0.25 --sft-jitter 0 --sft-read-cut 0.25 --grpo-kl 0.04 --curiosity-alpha 2 --warmup-legible-every 2 --read-digit-only --read-digit-weight 0.25 --sft-trace-read-jitter 0.2 --warmup-batch 6 --warmup-globals 2
test -s "$quick/variants/report.md" || { echo "mini_pixel_reasoner --quick with the variant options did not write its report" >&2; exit 1; }
rm -rf "$quick"
