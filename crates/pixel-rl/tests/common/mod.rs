//! The committed tiny checkpoint as a complete folder, shared by the end-to-end tests.

/// The committed tiny checkpoint as one folder (`pixel-testkit`).
pub fn checkpoint() -> tempfile::TempDir {
    pixel_testkit::tiny_checkpoint()
}

/// A text-only query answered in a few tokens: a short system prompt keeps rollouts fast (the tool block
/// is ~800 tokens with the test tokenizer).
#[allow(dead_code)]
pub fn short_rollout(max_new_tokens: usize) -> pixel_agent::RolloutConfig {
    pixel_agent::RolloutConfig {
        first_turn: pixel_vlm::sampling::SamplingParams::with_temperature(1.0).top_k(2),
        max_new_tokens,
        system: Some("You are a helpful assistant.".into()),
        ..pixel_agent::RolloutConfig::default()
    }
}

/// Text-only tasks `Pick one. (k)`.
#[allow(dead_code)]
pub fn text_tasks(n: usize) -> Vec<pixel_rl::data::Task> {
    (0..n)
        .map(|k| pixel_rl::data::Task {
            id: format!("t{k}"),
            query: pixel_agent::Query {
                media: pixel_agent::Media::Images(Vec::new()),
                question: format!("Pick one. ({k})"),
            },
            answers: vec!["x".into()],
            options: Vec::new(),
        })
        .collect()
}
