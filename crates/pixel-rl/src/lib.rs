//! Training for Pixel Reasoner (not built yet).
//!
//! This crate will hold the rollout machinery (a policy from `pixel-vlm` or a remote OpenAI-compatible
//! engine driving a `pixel-ops` episode into a token-in/token-out trajectory), the SFT trainer on
//! synthesized traces, and the GRPO trainer with the curiosity-driven reward from `pixel-reward`
//! (group filtering, selective sample replay), with atomic checkpoints and JSONL metrics.
